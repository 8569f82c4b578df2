"""keymaster-client: talk to a keymaster key escrow service from Python.

- :class:`AdminClient` — the operator: tenants, app keys, services, audit.
- :class:`DeviceClient` — a client application: deposit a key, then follow (``events``),
  re-code and revoke it with its holder token, and reveal its SAS nonce (``reveal_sas``).
- :class:`ServiceClient` — an outside service: ``preview``, ``retrieve`` (checking a code URI's
  key commitment), ``confirm``, ``dispute``; the SAS exchange: ``verify_sas`` (the whole of it),
  ``request_sas``, ``sas_nonces``.
- :class:`AsyncAdminClient`, :class:`AsyncDeviceClient`, :class:`AsyncServiceClient` — the
  same for asyncio.
- :func:`check_code`, :func:`parse_code_uri`, :func:`fingerprint`, :func:`key_commitment` —
  offline checks; :func:`verify_webhook` — Standard Webhooks verification.
- :func:`sas_nonce`, :func:`sas_commitment`, :func:`commitment_matches`, :func:`decode_nonce`,
  :func:`sas`, :func:`format_sas` — the verified handoff's SAS, for either end (the published
  test vector of docs/security.md holds).
- :class:`KeymasterError` and its kinds (:class:`SasMismatch` and :class:`SasTimeout` from
  ``verify_sas``).
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
    SasMismatch,
    SasTimeout,
    Unauthorized,
)
from ._sas import commitment_matches, decode_nonce, format_sas, sas, sas_commitment, sas_nonce  # noqa: E402
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
    "sas_nonce",
    "sas_commitment",
    "commitment_matches",
    "decode_nonce",
    "sas",
    "format_sas",
    "PROOF_PREFIX",
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
