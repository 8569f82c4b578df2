"""The short authentication string (SAS) of the verified handoff, for either end: the device's
nonce and its commitment (deposited as ``sas_commitment``), the check that a revealed nonce
opens a commitment, and the six digits both ends show. The same arithmetic as the server's
(``keymaster_core::handoff``) and the TypeScript package's ``sas.ts``; nothing here sends a
request."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from typing import Optional

__all__ = ["sas_nonce", "sas_commitment", "commitment_matches", "decode_nonce", "sas", "format_sas"]

NONCE_LEN = 32
_SAS_DOMAIN = b"keymaster-sas-v1"
_SAS_MODULUS = 1_000_000
# Standard base64 or base64url, padded or not: what the API and the TypeScript package accept.
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*=*")


def sas_nonce() -> bytes:
    """32 random bytes: a device's ``nd`` or a service's ``ns``."""
    return secrets.token_bytes(NONCE_LEN)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_nonce(text: str) -> bytes:
    """The 32 bytes of a base64url (or base64, padded or not) nonce or commitment from the API;
    raises :class:`ValueError` for anything else."""
    if not isinstance(text, str) or len(text) > 44 or not _BASE64.fullmatch(text):
        raise ValueError("not a base64url nonce")
    bare = text.rstrip("=").replace("-", "+").replace("_", "/")
    if len(bare) % 4 == 1:
        raise ValueError("not a base64url nonce")
    try:
        raw = base64.b64decode(bare + "=" * (-len(bare) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not a base64url nonce") from None
    if len(raw) != NONCE_LEN:
        raise ValueError("a nonce has 32 bytes")
    return raw


def sas_commitment(nd: bytes) -> str:
    """The deposit's ``sas_commitment`` for the device nonce ``nd``: unpadded base64url of
    SHA-256(``nd``)."""
    return b64url(hashlib.sha256(nd).digest())


def commitment_matches(commitment: str, nd: bytes) -> bool:
    """Whether the revealed nonce ``nd`` opens ``commitment`` (the ``sas_commitment`` of a
    retrieval, as base64url). False for a commitment that is not 32 bytes of base64url."""
    try:
        expected = decode_nonce(commitment)
    except ValueError:
        return False
    return hmac.compare_digest(hashlib.sha256(nd).digest(), expected)


def sas(key: bytes, nd: bytes, ns: bytes) -> int:
    """``SAS = u32_be(SHA-256("keymaster-sas-v1" ‖ K ‖ nd ‖ ns)[0..4]) mod 10⁶``, where ``key``
    (K) is the DER SPKI of the key (or a secret's bytes), ``nd`` the device's nonce and ``ns``
    the service's. Both ends compute it from the key bytes they hold; see :func:`format_sas`.
    Raises :class:`ValueError` for a nonce that is not 32 bytes."""
    if len(nd) != NONCE_LEN or len(ns) != NONCE_LEN:
        raise ValueError("a nonce has 32 bytes")
    digest = hashlib.sha256(_SAS_DOMAIN + bytes(key) + bytes(nd) + bytes(ns)).digest()
    return int.from_bytes(digest[:4], "big") % _SAS_MODULUS


def format_sas(value: int) -> str:
    """Six digits in two groups with leading zeros, as both ends show them: ``004 271``."""
    digits = f"{value:06d}"
    return f"{digits[:3]} {digits[3:]}"


# What verify_sas says when it refuses, in either client.
NO_COMMITMENT = "the key was deposited without a SAS commitment"
NOT_OPENED = "the device's SAS nonce does not open its commitment"
#: Seconds between two looks for the device's nonce.
POLL_INTERVAL = 0.5


def opened_nonce(commitment: bytes, revealed: object) -> Optional[bytes]:
    """The device's nonce ``revealed`` (as the API sent it) if it is 32 bytes of base64url that
    open ``commitment`` (32 bytes), else ``None``."""
    if not isinstance(revealed, str):
        return None
    try:
        nd = decode_nonce(revealed)
    except ValueError:
        return None
    return nd if hmac.compare_digest(hashlib.sha256(nd).digest(), commitment) else None


def decoded_commitment(retrieved_commitment: object) -> Optional[bytes]:
    """The 32 bytes of a retrieval's ``sas_commitment``, or ``None`` when it is absent or
    malformed (both refused alike: a stripped commitment would let a key master search nonces
    offline)."""
    if not isinstance(retrieved_commitment, str):
        return None
    try:
        return decode_nonce(retrieved_commitment)
    except ValueError:
        return None
