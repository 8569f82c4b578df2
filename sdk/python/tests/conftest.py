"""Fixtures that start a real `keymaster serve` (a fresh temporary data directory, a free port
chosen by the server, an admin token) and a local webhook receiver. The binary is
$KEYMASTER_BIN, or target/debug/keymaster of this repository."""

from __future__ import annotations

import json
import os
import queue
import secrets
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from keymaster_client import AdminClient, DeviceClient, ServiceClient

REPO = Path(__file__).resolve().parents[3]
#: Failed retrievals a service may make per minute on the test server: small, so that the
#: rate-limit test needs few requests; every other test uses a service of its own.
FAILED_PER_MINUTE = 5


@dataclass
class Server:
    url: str
    admin_token: str
    process: subprocess.Popen
    log: List[str] = field(default_factory=list)


def _binary() -> str:
    path = os.environ.get("KEYMASTER_BIN") or str(REPO / "target" / "debug" / "keymaster")
    if not os.access(path, os.X_OK):
        pytest.exit(f"no keymaster binary at {path}: build it (cargo build --bin keymaster) or set KEYMASTER_BIN", 2)
    return path


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("keymaster")
    token = "adm_" + secrets.token_urlsafe(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYMASTER_")}
    env.update(
        KEYMASTER_ADMIN_TOKEN=token,
        KEYMASTER_ALLOW_PRIVATE_WEBHOOKS="true",
        KEYMASTER_WEBHOOK_BACKOFF_BASE="100ms",
        KEYMASTER_FAILED_RETRIEVALS_PER_MINUTE=str(FAILED_PER_MINUTE),
    )
    process = subprocess.Popen(
        [_binary(), "serve", "--listen", "127.0.0.1:0", "--database", str(data / "keymaster.db")],
        cwd=data,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    found: "queue.Queue[str]" = queue.Queue()
    log: List[str] = []

    def drain() -> None:
        # Keep reading stderr so that the server never blocks on a full pipe.
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            if "listening on http://" in line:
                found.put(line.split("listening on ", 1)[1].split()[0])

    threading.Thread(target=drain, daemon=True).start()
    try:
        url = found.get(timeout=30)
    except queue.Empty:
        process.kill()
        pytest.exit("keymaster serve did not start:\n" + "".join(log), 2)
    yield Server(url, token, process, log)
    process.terminate()
    process.wait(timeout=15)


@dataclass
class Hook:
    headers: Dict[str, str]
    body: bytes


class Receiver:
    """A local HTTP endpoint that answers 204 to every POST and keeps what it got."""

    def __init__(self) -> None:
        self.received: "queue.Queue[Hook]" = queue.Queue()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                received.put(Hook({k: v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait_for(self, event_type: str, key_id: str, timeout: float = 20.0) -> Hook:
        """The first delivery of `event_type` for `key_id` (others are skipped)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {event_type} webhook for {key_id} within {timeout}s")
            try:
                hook = self.received.get(timeout=left)
            except queue.Empty:
                continue
            event = json.loads(hook.body)
            if event["type"] == event_type and event["data"]["key_id"] == key_id:
                return hook


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.httpd.shutdown()


@dataclass
class World:
    """A tenant (with its webhook secret), one of its app keys as a DeviceClient, and helpers."""

    server: Server
    admin: AdminClient
    tenant: Dict[str, str]
    device: DeviceClient

    def service(self, name: str = "svc", **kw: List[str]) -> Tuple[Dict[str, str], ServiceClient]:
        """A freshly enrolled service (its own failure budget) and its client."""
        created = self.admin.create_service(f"{name}-{secrets.token_hex(3)}", **kw)
        return created, ServiceClient(self.server.url, created["token"])


@pytest.fixture(scope="session")
def world(server: Server, receiver: Receiver) -> Iterator[World]:
    admin = AdminClient(server.url, server.admin_token)
    tenant = admin.create_tenant("acme", webhook_url=receiver.url)
    app_key = admin.create_app_key(tenant["id"])
    device = DeviceClient(server.url, app_key["token"])
    yield World(server, admin, tenant, device)
    device.close()
    admin.close()
