"""The SDK's errors: one base class that keeps the server's problem body (status, error code,
detail) and one subclass per kind docs/api.md names, so that callers branch on types or codes,
never on message text."""

from __future__ import annotations

import json
from typing import Any, Dict, Optional, Type

import httpx

__all__ = [
    "KeymasterError",
    "InvalidRequest",
    "InvalidCode",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "RateLimited",
    "KeyMismatch",
    "SasMismatch",
    "SasTimeout",
    "InvalidSignature",
]


class KeymasterError(Exception):
    """Any failure of a call: a problem answer of the server, or a check done on this side.

    ``status`` is the HTTP status (``None`` when no answer came or none was asked for), ``code``
    the API's error code (``not_found``, ``rate_limited``, ``key_mismatch``, …), ``detail`` the
    human-readable explanation, ``retry_after`` the seconds of a ``Retry-After`` header.
    """

    def __init__(
        self,
        detail: str,
        *,
        status: Optional[int] = None,
        code: Optional[str] = None,
        retry_after: Optional[int] = None,
        problem: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after
        self.problem = problem or {}

    def __str__(self) -> str:
        where = f"{self.status} " if self.status is not None else ""
        return f"{where}{self.code or 'error'}: {self.detail}"


class InvalidRequest(KeymasterError):
    """400: the request was refused as malformed (``invalid_request``, ``invalid_key``,
    ``invalid_proof``, ``private_key_rejected``, ``email_not_configured``, …)."""


class InvalidCode(InvalidRequest):
    """The code looks mistyped (length, alphabet or check symbol), found offline before any
    request was sent, or answered ``400 invalid_code``. It never counts as a guess."""


class Unauthorized(KeymasterError):
    """401: the token is missing, unknown or revoked."""


class Forbidden(KeymasterError):
    """403: a rule refused the request; ``code`` names it (``password_required``,
    ``service_not_allowed``, ``key_locked``, …)."""


class NotFound(KeymasterError):
    """404: no such key, code or retrieval for this credential (the same answer whatever the
    reason)."""


class RateLimited(KeymasterError):
    """429: too many failed retrievals (or streams, or generations); try again after
    ``retry_after`` seconds."""


class KeyMismatch(KeymasterError):
    """The key handed over is not the one the code URI commits to: it was refused and, if
    ``disputed``, reported to the key master with a dispute."""

    def __init__(self, retrieval_id: str, disputed: bool) -> None:
        how = "disputed" if disputed else "the dispute could not be sent"
        super().__init__(
            f"the key received is not the one the code commits to (retrieval {retrieval_id}, "
            f"{how}); it was refused",
            code="key_mismatch",
        )
        self.retrieval_id = retrieval_id
        self.disputed = disputed


class SasMismatch(KeymasterError):
    """The SAS exchange cannot vouch for the key: it was deposited without a commitment, or the
    nonce the device revealed does not open it. The retrieval was disputed (``sas_mismatch``)
    if ``disputed``; do not use the key."""

    def __init__(self, retrieval_id: str, why: str, disputed: bool) -> None:
        how = "disputed" if disputed else "the dispute could not be sent"
        super().__init__(f"{why} (retrieval {retrieval_id}, {how})", code="sas_mismatch")
        self.retrieval_id = retrieval_id
        self.why = why
        self.disputed = disputed


class SasTimeout(KeymasterError):
    """The device did not reveal its SAS nonce in time; nothing was disputed."""

    def __init__(self, retrieval_id: str) -> None:
        super().__init__(
            f"the device did not reveal its SAS nonce in time (retrieval {retrieval_id})",
            code="sas_timeout",
        )
        self.retrieval_id = retrieval_id


class InvalidSignature(KeymasterError):
    """A webhook whose signature, timestamp or headers do not verify."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, code="invalid_signature")


_BY_STATUS: Dict[int, Type[KeymasterError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    429: RateLimited,
}


def _retry_after(response: httpx.Response) -> Optional[int]:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None  # an HTTP-date, which the key master never sends


def from_response(response: httpx.Response) -> KeymasterError:
    """The error for a non-2xx answer whose body has been read."""
    status = response.status_code
    try:
        problem = json.loads(response.content)
        if not isinstance(problem, dict):
            raise ValueError("not an object")
    except ValueError:
        return KeymasterError(
            f"the key master answered {status} without a problem body", status=status
        )
    code = problem.get("code")
    detail = problem.get("detail") or problem.get("title") or "no detail"
    cls = _BY_STATUS.get(status, KeymasterError)
    if code == "invalid_code":
        cls = InvalidCode
    return cls(
        str(detail),
        status=status,
        code=str(code) if code is not None else None,
        retry_after=_retry_after(response),
        problem=problem,
    )
