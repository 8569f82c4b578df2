"""What the sync and async clients share: the base URL and bearer token of one credential
(:class:`_Target`), turning a 2xx answer into its JSON body, and the timing constants. Sending
requests is the clients' business (``_client`` with ``httpx.Client``, ``_aio`` with
``httpx.AsyncClient``)."""

from __future__ import annotations

from typing import Any, Dict, Optional
from urllib.parse import quote

import httpx

from . import __version__
from ._errors import KeymasterError

Body = Dict[str, Any]

#: How long an ordinary call may take, in seconds.
DEFAULT_TIMEOUT = 30.0
#: The server sends a keep-alive comment every 15 s; a stream silent for this long is dead.
STREAM_READ_TIMEOUT = 60.0
USER_AGENT = {"user-agent": f"keymaster-client-python/{__version__}"}


class _Target:
    """A key master's base URL and one credential."""

    def __init__(self, url: str, token: str, timeout: float) -> None:
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"invalid server URL {url!r}: expected http:// or https://")
        self._base = url.rstrip("/")
        self._token = token
        self._timeout = timeout

    def __repr__(self) -> str:  # the token is a credential: never print it
        return f"<{type(self).__name__} {self._base} token=<redacted>>"

    def url(self, *segments: str) -> str:
        """The URL of ``segments`` below the base URL; each segment is percent-encoded, so an id
        can never change the path's shape."""
        return self._base + "".join("/" + quote(s, safe="") for s in segments)

    def headers(self, token: Optional[str] = None) -> Dict[str, str]:
        return {"authorization": f"Bearer {token or self._token}"}

    def stream_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self._timeout, read=STREAM_READ_TIMEOUT)


def decode(response: httpx.Response) -> Optional[Body]:
    """The JSON object of a 2xx answer whose body has been read; ``None`` for an empty one."""
    if response.status_code == 204 or not response.content:
        return None
    try:
        body = response.json()
    except ValueError:
        raise KeymasterError(
            "unexpected answer from the key master: not JSON", status=response.status_code
        ) from None
    if not isinstance(body, dict):
        raise KeymasterError("unexpected answer from the key master: not an object")
    return body


def require(body: Optional[Body]) -> Body:
    if body is None:
        raise KeymasterError("unexpected answer from the key master: no body")
    return body


def drop_none(**fields: Any) -> Body:
    """``fields`` without the ``None`` ones (the API refuses unknown fields, and ``null`` is
    not "absent" everywhere)."""
    return {k: v for k, v in fields.items() if v is not None}


def reconnect_delay(failures: int) -> float:
    """Seconds before reconnecting an event stream after ``failures`` failures in a row:
    0.25 s, doubling, at most 5 s."""
    return float(min(0.25 * 2 ** (failures - 1), 5.0))
