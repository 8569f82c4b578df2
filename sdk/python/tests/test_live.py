"""The SDK against a live `keymaster serve`: every method and error kind of docs/api.md's "Client
libraries" section, the code URI check with a dispute, the SAS exchange (reveal, verify_sas and
its refusals), the event stream and its resumption, webhook verification with the tenant's
secret, and rate limiting with `retry_after`."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from standardwebhooks.webhooks import Webhook

from keymaster_client import (
    AdminClient,
    DeviceClient,
    Forbidden,
    InvalidCode,
    InvalidRequest,
    InvalidSignature,
    KeymasterError,
    KeyMismatch,
    NotFound,
    RateLimited,
    SasMismatch,
    SasTimeout,
    ServiceClient,
    Unauthorized,
    check_code,
    commitment_matches,
    decode_nonce,
    fingerprint,
    format_sas,
    key_commitment,
    sas,
    sas_commitment,
    sas_nonce,
    verify_webhook,
)

from conftest import FAILED_PER_MINUTE, Receiver, World
from keys import ed25519_key, proof, random_digits_code


def test_deposit_preview_retrieve_with_code_uri(world: World) -> None:
    private, pem, spki = ed25519_key()
    deposit = world.device.deposit(public_key=pem, label="laptop", proof=proof(private, spki))
    # The server's fingerprint and commitment are those of the key the device made.
    assert deposit["fingerprint"] == fingerprint(spki)
    assert deposit["code_uri"] == f"keymaster:{deposit['code']}?fp={key_commitment(spki)}"
    assert check_code(deposit["code_display"]) == deposit["code"]
    _, service = world.service()

    preview = service.preview(deposit["code_uri"])
    assert preview["key_id"] == deposit["id"]
    assert preview["label"] == "laptop"
    assert preview["tenant"] == {"id": world.tenant["id"], "name": "acme"}
    assert preview["origin"]["network"] == "127.0.0.0/24"
    assert preview["proven"] is True
    # A preview consumes nothing.
    assert world.device.status(deposit["id"], deposit["holder_token"])["status"] == "active"

    key = service.retrieve(deposit["code_uri"])
    assert key["key_id"] == deposit["id"]
    assert key["proven"] is True
    assert key["public_key_pem"].strip() == pem.strip()
    status = world.device.status(deposit["id"], deposit["holder_token"])
    assert status["status"] == "retrieved"
    assert [e["type"] for e in status["history"]][:3] == ["key.deposited", "key.previewed", "key.retrieved"]
    # Retrieved once (the default), the code is dead.
    with pytest.raises(NotFound) as err:
        service.retrieve(deposit["code_display"])
    assert (err.value.status, err.value.code) == (404, "not_found")


def test_a_swapped_key_is_refused_and_disputed(world: World) -> None:
    _, pem, _ = ed25519_key()
    _, _, other_spki = ed25519_key()
    deposit = world.device.deposit(public_key=pem, label="swap")
    # A code URI that commits to another key: what a service sees when the key master hands over
    # a key other than the one the device deposited.
    forged = f"keymaster:{deposit['code']}?fp={key_commitment(other_spki)}"
    _, service = world.service()
    with pytest.raises(KeyMismatch) as err:
        service.retrieve(forged)
    assert err.value.code == "key_mismatch"
    assert err.value.disputed is True
    assert isinstance(err.value, KeymasterError)
    status = world.device.status(deposit["id"], deposit["holder_token"])
    disputed = [e for e in status["history"] if e["type"] == "key.disputed"]
    assert len(disputed) == 1
    assert disputed[0]["data"]["reason"] == "key_mismatch"
    assert disputed[0]["data"]["retrieval_id"] == err.value.retrieval_id


def test_a_mistyped_code_is_refused_offline() -> None:
    # Port 1 has nothing listening: an InvalidCode (rather than a transport error) shows that no
    # request was sent.
    service = ServiceClient("http://127.0.0.1:1", "kms_unused")
    for typed in ["4729-1047-5518-2036", "4729-1047-5518", "keymaster:request:4729104755182035"]:
        with pytest.raises(InvalidCode) as err:
            service.retrieve(typed)
        assert err.value.code == "invalid_code"
        assert isinstance(err.value, InvalidRequest)
        with pytest.raises(InvalidCode):
            service.preview(typed)
    with pytest.raises(KeymasterError, match="cannot reach"):
        service.retrieve("4729-1047-5518-2035")


def test_invalid_request_kinds(world: World) -> None:
    cases: List[Dict[str, Any]] = [
        ({"generate": "dsa"}, "invalid_request"),
        ({"public_key": "ssh-ed25519 AAAA not-a-key"}, "invalid_key"),
        ({"generate": "ed25519", "proof": base64.b64encode(b"x" * 64).decode()}, "invalid_proof"),
        ({"public_key": "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n"}, "private_key_rejected"),
        ({"generate": "ed25519", "notify": {"email": "me@example.net"}}, "email_not_configured"),
    ]
    for fields, code in cases:
        with pytest.raises(InvalidRequest) as err:
            world.device.deposit(**fields)
        assert (err.value.status, err.value.code) == (400, code), fields
        assert err.value.detail


def test_jwk_secret_and_sas_commitment_deposits(world: World) -> None:
    _, service = world.service()
    private = ec.generate_private_key(ec.SECP256R1())
    numbers = private.public_key().public_numbers()
    b64 = lambda n: base64.urlsafe_b64encode(n.to_bytes(32, "big")).decode().rstrip("=")  # noqa: E731
    jwk = {"kty": "EC", "crv": "P-256", "x": b64(numbers.x), "y": b64(numbers.y)}
    commitment = base64.urlsafe_b64encode(hashlib.sha256(b"n" * 32).digest()).decode().rstrip("=")
    deposit = world.device.deposit(jwk=jwk, label="jwk", sas_commitment=commitment)
    key = service.retrieve(deposit["code_uri"])
    assert key["jwk"]["x"] == jwk["x"] and key["jwk"]["y"] == jwk["y"]
    assert key["sas_commitment"] == commitment

    secret = base64.b64encode(b"s" * 32).decode()
    deposit = world.device.deposit(secret=secret, label="totp")
    assert deposit["kind"] == "secret" and deposit.get("code_uri") is None
    key = service.retrieve(deposit["code_display"])
    assert key["secret"] == secret


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_reveal_sas_is_409_before_the_service_asks_then_the_service_reads_the_nonce(world: World) -> None:
    _, service = world.service()
    _, pem, _ = ed25519_key()
    nd = sas_nonce()
    deposit = world.device.deposit(public_key=pem, sas_commitment=sas_commitment(nd))
    key = service.retrieve(deposit["code_uri"])
    rid = key["retrieval_id"]
    with pytest.raises(KeymasterError) as err:
        world.device.reveal_sas(deposit["id"], deposit["holder_token"], rid, nd)
    assert (err.value.status, err.value.code) == (409, "sas_not_requested")
    assert service.sas_nonces(rid).get("device_nonce") is None
    ns = sas_nonce()
    service.request_sas(rid, ns)
    world.device.reveal_sas(deposit["id"], deposit["holder_token"], rid, nd)
    nonces = service.sas_nonces(rid)
    revealed = decode_nonce(nonces["device_nonce"])
    assert commitment_matches(key["sas_commitment"], revealed)
    assert revealed == nd
    assert nonces["service_nonce"] == _b64url(ns)


def _reveal_when_asked(world: World, deposit: Dict[str, Any], rid: str, nd: bytes) -> None:
    """The device's side of a SAS exchange: reveals ``nd`` as soon as the service has asked."""
    for _ in range(100):
        try:
            world.device.reveal_sas(deposit["id"], deposit["holder_token"], rid, nd)
            return
        except KeymasterError as err:
            if err.code != "sas_not_requested":
                raise
        time.sleep(0.05)
    raise AssertionError("the service never asked for the SAS")


def test_verify_sas_both_ends_compute_the_same_six_digits(world: World) -> None:
    _, service = world.service()
    _, pem, spki = ed25519_key()
    nd = sas_nonce()
    deposit = world.device.deposit(public_key=pem, sas_commitment=sas_commitment(nd))
    key = service.retrieve(deposit["code_uri"])
    with ThreadPoolExecutor(1) as pool:
        device_side = pool.submit(_reveal_when_asked, world, deposit, key["retrieval_id"], nd)
        digits = service.verify_sas(key, timeout=10)
        device_side.result()
    ns = decode_nonce(service.sas_nonces(key["retrieval_id"])["service_nonce"])
    assert digits == sas(spki, nd, ns)
    assert re.fullmatch(r"\d{3} \d{3}", format_sas(digits))


class _SwapDeviceNonce(httpx.BaseTransport):
    """Where a key master in the middle would swap the device's nonce: in the answer of
    GET …/sas (the server itself refuses a reveal that does not open the commitment)."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if request.method != "GET" or not request.url.path.endswith("/sas"):
            return response
        body = json.loads(response.read())
        if body.get("device_nonce"):
            body["device_nonce"] = _b64url(sas_nonce())
        return httpx.Response(response.status_code, json=body)

    def close(self) -> None:
        self._inner.close()


def test_verify_sas_refuses_and_disputes_a_revealed_nonce_swapped_on_the_way(world: World) -> None:
    created, _ = world.service()
    _, pem, _ = ed25519_key()
    nd = sas_nonce()
    deposit = world.device.deposit(public_key=pem, sas_commitment=sas_commitment(nd))
    with httpx.Client(transport=_SwapDeviceNonce()) as http:
        service = ServiceClient(world.server.url, created["token"], http=http)
        key = service.retrieve(deposit["code_uri"])
        with ThreadPoolExecutor(1) as pool:
            device_side = pool.submit(_reveal_when_asked, world, deposit, key["retrieval_id"], nd)
            with pytest.raises(SasMismatch) as err:
                service.verify_sas(key, timeout=10)
            device_side.result()
    assert err.value.code == "sas_mismatch"
    assert "does not open its commitment" in err.value.detail
    assert err.value.disputed is True
    assert err.value.retrieval_id == key["retrieval_id"]
    assert isinstance(err.value, KeymasterError)
    history = world.device.status(deposit["id"], deposit["holder_token"])["history"]
    disputed = [e for e in history if e["type"] == "key.disputed"]
    assert len(disputed) == 1, history
    assert disputed[0]["data"]["reason"] == "sas_mismatch"
    assert disputed[0]["data"]["retrieval_id"] == key["retrieval_id"]


def test_verify_sas_no_commitment_is_sas_mismatch_no_reveal_in_time_is_sas_timeout(world: World) -> None:
    _, service = world.service()
    _, pem, _ = ed25519_key()
    deposit = world.device.deposit(public_key=pem)
    key = service.retrieve(deposit["code_uri"])
    with pytest.raises(SasMismatch) as mismatch:
        service.verify_sas(key, timeout=10)
    assert mismatch.value.code == "sas_mismatch" and mismatch.value.disputed is True
    assert "without a SAS commitment" in mismatch.value.detail
    history = world.device.status(deposit["id"], deposit["holder_token"])["history"]
    assert [e["data"]["reason"] for e in history if e["type"] == "key.disputed"] == ["sas_mismatch"]

    deposit = world.device.deposit(public_key=pem, sas_commitment=sas_commitment(sas_nonce()))
    key = service.retrieve(deposit["code_uri"])
    started = time.monotonic()
    with pytest.raises(SasTimeout) as timeout:
        service.verify_sas(key, timeout=0.3)
    assert time.monotonic() - started < 5
    assert (timeout.value.code, timeout.value.retrieval_id) == ("sas_timeout", key["retrieval_id"])
    # A timeout disputes nothing.
    history = world.device.status(deposit["id"], deposit["holder_token"])["history"]
    assert not [e for e in history if e["type"] == "key.disputed"]


def test_other_refusals_are_keymaster_errors(world: World) -> None:
    # 413 has no kind of its own: it is a KeymasterError with the status and the API's code.
    with pytest.raises(KeymasterError) as err:
        world.device.deposit(generate="ed25519", label="x" * 70_000)
    assert type(err.value) is KeymasterError
    assert (err.value.status, err.value.code) == (413, "payload_too_large")


def test_unauthorized(world: World) -> None:
    for client in [
        DeviceClient(world.server.url, "kma_not-a-key"),
        ServiceClient(world.server.url, "kms_not-a-key"),
    ]:
        with pytest.raises(Unauthorized) as err:
            if isinstance(client, DeviceClient):
                client.deposit(generate="ed25519")
            else:
                client.retrieve(random_digits_code())
        assert (err.value.status, err.value.code) == (401, "unauthorized")
    with pytest.raises(Unauthorized):
        AdminClient(world.server.url, "wrong").audit()
    deposit = world.device.deposit(generate="ed25519")
    with pytest.raises(Unauthorized):
        world.device.status(deposit["id"], "kmh_wrong")


def test_forbidden_names_the_rule(world: World) -> None:
    allowed, _ = world.service("allowed")
    _, other = world.service("other")
    deposit = world.device.deposit(generate="ed25519", policy={"services": [allowed["id"]]})
    with pytest.raises(Forbidden) as err:
        other.preview(deposit["code"])
    assert (err.value.status, err.value.code) == (403, "service_not_allowed")

    _, service = world.service("pw")
    deposit = world.device.deposit(generate="p256", policy={"password": "hunter2"})
    with pytest.raises(Forbidden) as err:
        service.retrieve(deposit["code"])
    assert err.value.code == "password_required"
    with pytest.raises(Forbidden) as err:
        service.retrieve(deposit["code"], password="wrong")
    assert err.value.code == "password_incorrect"
    key = service.retrieve(deposit["code_uri"], password="hunter2", context={"country": "DE"})
    assert key["algorithm"] == "p256"


def test_rate_limited_with_retry_after(world: World) -> None:
    _, service = world.service("limited")
    for _ in range(FAILED_PER_MINUTE):
        with pytest.raises(NotFound):
            service.retrieve(random_digits_code())
    # The budget is spent: whatever the code, the next retrieval and preview are refused.
    deposit = world.device.deposit(generate="ed25519")
    for call in (service.retrieve, service.preview):
        with pytest.raises(RateLimited) as err:
            call(deposit["code"])
        assert (err.value.status, err.value.code) == (429, "rate_limited")
        assert err.value.retry_after is not None and 1 <= err.value.retry_after <= 60
    # Another service is not affected.
    _, fresh = world.service("fresh")
    assert fresh.retrieve(deposit["code"])["key_id"] == deposit["id"]


def test_admin_calls(world: World) -> None:
    tenant = world.admin.create_tenant("beta")
    assert tenant["name"] == "beta" and tenant["webhook_secret"].startswith("whsec_")
    app_key = world.admin.create_app_key(tenant["id"])
    assert app_key["token"].startswith("kma_")
    service = world.admin.create_service("web", domains=["example.com"], allowed_cidrs=["127.0.0.0/8"])
    assert service["token"].startswith("kms_")
    entries = world.admin.audit(limit=5)["entries"]
    assert 1 <= len(entries) <= 5
    assert entries[0]["action"]
    world.admin.delete_app_key(app_key["id"])
    with pytest.raises(Unauthorized):
        DeviceClient(world.server.url, app_key["token"]).deposit(generate="ed25519")
    world.admin.delete_service(service["id"])
    with pytest.raises(NotFound):
        world.admin.delete_service(service["id"])


def test_recode_revoke_and_confirm(world: World) -> None:
    _, service = world.service()
    deposit = world.device.deposit(generate="ed25519", code_format="base32")
    assert len(deposit["code"]) == 24
    recoded = world.device.recode(deposit["id"], deposit["holder_token"])
    assert recoded["code"] != deposit["code"] and recoded["code_uri"].startswith("keymaster:")
    with pytest.raises(NotFound):
        service.retrieve(deposit["code"].lower())
    world.device.revoke(deposit["id"], deposit["holder_token"])
    assert world.device.status(deposit["id"], deposit["holder_token"])["status"] == "revoked"
    with pytest.raises(NotFound):
        service.retrieve(recoded["code_uri"])

    held = world.device.deposit(generate="ed25519", policy={"require_confirmation": True})
    key = service.retrieve(held["code_uri"])
    assert key["confirm_by"] is not None
    assert world.device.status(held["id"], held["holder_token"])["status"] == "awaiting_confirmation"
    service.confirm(key["retrieval_id"])
    status = world.device.status(held["id"], held["holder_token"])
    assert status["status"] == "retrieved"
    assert "key.confirmed" in [e["type"] for e in status["history"]]


def test_event_stream_live_and_resumed_by_id(world: World) -> None:
    deposit = world.device.deposit(generate="ed25519", label="events")
    _, service = world.service()
    seen: List[Dict[str, Any]] = []

    def follow() -> None:
        for event in world.device.events(deposit["id"], deposit["holder_token"]):
            seen.append(event)

    follower = threading.Thread(target=follow)
    follower.start()
    _wait(lambda: len(seen) >= 1)
    assert seen[0]["type"] == "key.deposited"
    service.retrieve(deposit["code"])
    # The key is gone after its one retrieval: the stream sends key.retrieved and ends.
    follower.join(timeout=20)
    assert not follower.is_alive()
    assert [e["type"] for e in seen] == ["key.deposited", "key.retrieved"]
    assert seen[1]["data"]["service"]["name"].startswith("svc-")
    assert "code" not in seen[1]["data"]
    # Resuming after the first event yields only what came after it.
    resumed = list(world.device.events(deposit["id"], deposit["holder_token"], last_event_id=seen[0]["id"]))
    assert [e["id"] for e in resumed] == [seen[1]["id"]]
    # A refused stream is the refusal's error, not an empty iterator.
    with pytest.raises(Unauthorized):
        next(world.device.events(deposit["id"], "kmh_wrong"))


class CuttingProxy:
    """A TCP proxy to the server that cuts its first connection (without a clean end of the
    HTTP body) right after forwarding the first event, so that the client sees a dropped
    connection; later connections pass through. Records each request's head."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: List[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            cut = not self.requests
            upstream = socket.create_connection(self.target)
            head = client.recv(65536)
            self.requests.append(head)
            upstream.sendall(head)
            threading.Thread(target=self._pump, args=(upstream, client, cut), daemon=True).start()
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, cut: bool) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if cut and b"key.deposited" in data:
                    break
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.listener.close()


def test_event_stream_resumes_after_a_dropped_connection(world: World) -> None:
    deposit = world.device.deposit(generate="ed25519", label="resume")
    proxy = CuttingProxy(world.server.url)
    device = DeviceClient(proxy.url, "kma_unused-for-streams")
    events = device.events(deposit["id"], deposit["holder_token"])
    first = next(events)
    assert first["type"] == "key.deposited"
    _, service = world.service()
    service.retrieve(deposit["code"])
    rest = list(events)
    proxy.close()
    # No event lost, none twice, and the second connection asked to resume after the first.
    assert [e["type"] for e in rest] == ["key.retrieved"]
    assert len(proxy.requests) >= 2
    assert f"last-event-id: {first['id']}".encode() in proxy.requests[1].lower()


def test_webhook_verified_with_the_tenants_secret(world: World, receiver: Receiver) -> None:
    deposit = world.device.deposit(generate="ed25519", label="hooked")
    hook = receiver.wait_for("key.deposited", deposit["id"])
    secret = world.tenant["webhook_secret"]
    event = verify_webhook(secret, hook.headers, hook.body)
    assert event["type"] == "key.deposited"
    assert event["data"]["key_id"] == deposit["id"]
    assert event["data"]["tenant_id"] == world.tenant["id"]
    assert hook.headers["webhook-id"] == event["id"]

    with pytest.raises(InvalidSignature):
        verify_webhook(secret, hook.headers, hook.body.replace(b"hooked", b"hacked"))
    other = world.admin.create_tenant("other")["webhook_secret"]
    with pytest.raises(InvalidSignature):
        verify_webhook(other, hook.headers, hook.body)
    missing = {k: v for k, v in hook.headers.items() if k.lower() != "webhook-signature"}
    with pytest.raises(InvalidSignature):
        verify_webhook(secret, missing, hook.body)
    with pytest.raises(InvalidSignature):
        verify_webhook(secret, {**hook.headers, "webhook-signature": "garbage"}, hook.body)
    # A correctly signed but stale delivery (a replay) is refused by the timestamp tolerance.
    stale = datetime.now(timezone.utc) - timedelta(minutes=10)
    headers = {
        "webhook-id": hook.headers["webhook-id"],
        "webhook-timestamp": str(int(stale.timestamp())),
        "webhook-signature": Webhook(secret).sign(hook.headers["webhook-id"], stale, hook.body.decode()),
    }
    with pytest.raises(InvalidSignature, match="too old"):
        verify_webhook(secret, headers, hook.body)


def test_code_uri_commitment_is_sha256_of_spki(world: World) -> None:
    _, pem, spki = ed25519_key()
    deposit = world.device.deposit(public_key=pem)
    fp = deposit["code_uri"].split("fp=")[1]
    assert base64.urlsafe_b64decode(fp + "=") == hashlib.sha256(spki).digest()


@pytest.mark.parametrize("algorithm", ["rsa-2048", "x25519", "p384"])
def test_every_form_of_other_key_types_passes_the_code_uri_check(world: World, algorithm: str) -> None:
    # PEM, OpenSSH (where the type has one) and JWK of each retrieval are read back to SPKI.
    private: Any = {
        "rsa-2048": lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "x25519": x25519.X25519PrivateKey.generate,
        "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
    }[algorithm]()
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    deposit = world.device.deposit(public_key=pem.decode())
    _, service = world.service()
    key = service.retrieve(deposit["code_uri"])
    assert key["algorithm"] == algorithm
    assert key["jwk"]


def _wait(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
