"""keymaster-client: talk to a keymaster key escrow service from Python.

- :class:`AdminClient` — the operator: tenants, app keys, services, audit.
- :class:`DeviceClient` — a client application: deposit a key, then follow (``events``),
  re-code and revoke it with its holder token.
- :class:`ServiceClient` — an outside service: ``preview``, ``retrieve`` (checking a code URI's
  key commitment), ``confirm``, ``dispute``.
- :class:`AsyncAdminClient`, :class:`AsyncDeviceClient`, :class:`AsyncServiceClient` — the
  same for asyncio.
- :func:`check_code`, :func:`parse_code_uri`, :func:`fingerprint`, :func:`key_commitment` —
  offline checks; :func:`verify_webhook` — Standard Webhooks verification.
- :class:`KeymasterError` and its kinds.
"""

__version__ = "0.1.0"

from ._aio import AsyncAdminClient, AsyncDeviceClient, AsyncServiceClient  # noqa: E402
from ._client import AdminClient, DeviceClient, ServiceClient  # noqa: E402
from ._codes import CodeUri, check_code, fingerprint, key_commitment, parse_code_uri  # noqa: E402
from ._errors import (  # noqa: E402
    Forbidden,
    InvalidCode,
    InvalidRequest,
    InvalidSignature,
    KeymasterError,
    KeyMismatch,
    NotFound,
    RateLimited,
    Unauthorized,
)
from ._webhooks import verify_webhook  # noqa: E402

PROOF_PREFIX = "keymaster-proof-of-possession:"
"""What a proof of possession signs, followed by the key's ``fingerprint``."""

__all__ = [
    "AdminClient",
    "DeviceClient",
    "ServiceClient",
    "AsyncAdminClient",
    "AsyncDeviceClient",
    "AsyncServiceClient",
    "CodeUri",
    "check_code",
    "parse_code_uri",
    "fingerprint",
    "key_commitment",
    "verify_webhook",
    "PROOF_PREFIX",
    "KeymasterError",
    "InvalidRequest",
    "InvalidCode",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "RateLimited",
    "KeyMismatch",
    "InvalidSignature",
]
