"""Offline checks of what a person typed or scanned: the code's check symbol (Damm for 16
digits, Crockford's mod-37 for 24 base32 symbols), the ``keymaster:<code>?fp=…`` code URI, and
the key commitment/fingerprint of DER SPKI bytes. The same rules as the server's
(``keymaster_core::code`` and ``keymaster_core::handoff``); nothing here sends a request."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Optional

from ._errors import InvalidCode

__all__ = ["CodeUri", "check_code", "parse_code_uri", "key_commitment", "fingerprint"]

_DIGITS_LEN = 16
_BASE32_LEN = 24
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_CHECK = _CROCKFORD + "*~$=U"
_LOOKALIKE = {"O": "0", "I": "1", "L": "1"}
_SCHEME = "keymaster:"
_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
# What Rust's `is_ascii_whitespace` removes, and `-`.
_SEPARATORS = frozenset(" \t\n\r\x0c-")

# The standard Damm quasigroup of order 10 (H. Michael Damm, 2004): row = interim, column = digit.
_DAMM = (
    (0, 3, 1, 7, 5, 9, 8, 6, 4, 2),
    (7, 0, 9, 2, 1, 5, 4, 8, 6, 3),
    (4, 2, 0, 6, 8, 7, 1, 3, 5, 9),
    (1, 7, 5, 0, 9, 8, 3, 4, 2, 6),
    (6, 1, 2, 3, 0, 4, 5, 9, 7, 8),
    (3, 6, 7, 4, 2, 0, 9, 5, 8, 1),
    (5, 8, 6, 9, 7, 2, 0, 1, 3, 4),
    (8, 9, 4, 5, 3, 6, 2, 0, 1, 7),
    (9, 4, 3, 8, 6, 1, 7, 2, 0, 5),
    (2, 5, 8, 1, 4, 3, 6, 7, 9, 0),
)

_WRONG_LENGTH = "the code looks mistyped: it should have 16 digits or 24 letters and digits"
_BAD_CHARACTER = "the code looks mistyped: it contains a character that is not part of any code"
_CHECK_FAILED = "the code looks mistyped: its check symbol does not match; please compare it again"


def _invalid(detail: str) -> InvalidCode:
    return InvalidCode(detail, code="invalid_code")


def _check_bare_code(text: str) -> str:
    chars = [c for c in text if c not in _SEPARATORS]
    if len(chars) == _DIGITS_LEN:
        interim = 0
        for c in chars:
            if c not in "0123456789":
                raise _invalid(_BAD_CHARACTER)
            interim = _DAMM[interim][ord(c) - 48]
        if interim != 0:
            raise _invalid(_CHECK_FAILED)
        return "".join(chars)
    if len(chars) == _BASE32_LEN:
        out = []
        remainder = 0
        for i, c in enumerate(chars):
            if not c.isascii():
                raise _invalid(_BAD_CHARACTER)
            upper = c.upper()
            canonical = _LOOKALIKE.get(upper, upper)
            if i + 1 < _BASE32_LEN:
                value = _CROCKFORD.find(canonical)
                if value < 0:
                    raise _invalid(_BAD_CHARACTER)
                remainder = (remainder * 32 + value) % 37
                out.append(_CROCKFORD[value])
            else:
                value = _CROCKFORD_CHECK.find(canonical)
                if value < 0:
                    raise _invalid(_BAD_CHARACTER)
                if value != remainder:
                    raise _invalid(_CHECK_FAILED)
                out.append(_CROCKFORD_CHECK[value])
        return "".join(out)
    raise _invalid(_WRONG_LENGTH)


def _decode_fp(text: str) -> bytes:
    """Unpadded (or padded) base64url of exactly 32 bytes, in canonical form."""
    bare = text.rstrip("=")
    if len(text) > 44 or not _B64URL.match(bare):
        raise _invalid("the key commitment (fp) of the code URI is not valid")
    try:
        raw = base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4))
    except ValueError:
        raise _invalid("the key commitment (fp) of the code URI is not valid") from None
    # Refuse non-zero trailing bits, as the server's decoder does: one value, one spelling.
    if len(raw) != 32 or _b64url(raw) != bare:
        raise _invalid("the key commitment (fp) of the code URI is not valid")
    return raw


@dataclass(frozen=True)
class CodeUri:
    """A code or code URI, checked: the normalised ``code`` and, when the URI carried one, the
    key commitment ``fp`` (SHA-256 over the key's DER SPKI)."""

    code: str
    fp: Optional[bytes] = None

    def __repr__(self) -> str:  # the code is a one-time secret: keep it out of reprs and logs
        return f"CodeUri(code=<redacted>, fp={'set' if self.fp else None})"

    def matches_key(self, spki_der: bytes) -> bool:
        """Whether the key with DER SPKI ``spki_der`` is the one this URI commits to (``True``
        when it commits to nothing). Compute ``spki_der`` from the key bytes received, never
        from a fingerprint the server sent."""
        if self.fp is None:
            return True
        return hashlib.sha256(spki_der).digest() == self.fp


def parse_code_uri(text: str) -> CodeUri:
    """Parses a bare code (as :func:`check_code` takes it) or a code URI
    ``keymaster:<code>[?fp=<base64url>]``. The scheme is matched without regard to case; query
    parameters other than ``fp`` are ignored; ``fp`` must be base64url of 32 bytes and appear at
    most once. A ``keymaster:request:`` URI (an enrolment request) is refused. Raises
    :class:`InvalidCode`."""
    text = text.strip()
    if text[: len(_SCHEME)].lower() != _SCHEME:
        return CodeUri(_check_bare_code(text))
    rest = text[len(_SCHEME) :]
    if rest[:8].lower() == "request:":
        raise _invalid("this is the code of an enrolment request, not of a key")
    code, _, query = rest.partition("?")
    fp: Optional[bytes] = None
    for pair in query.split("&") if query else []:
        name, _, value = pair.partition("=")
        if name != "fp":
            continue
        if fp is not None:
            raise _invalid("the key commitment (fp) of the code URI is not valid")
        fp = _decode_fp(value)
    return CodeUri(_check_bare_code(code), fp)


def check_code(text: str) -> str:
    """The normalised code of what a person typed (spaces and ``-`` removed; for base32 upper
    case, ``O`` read as ``0``, ``I``/``L`` as ``1``) or of a code URI. Raises
    :class:`InvalidCode` ("looks mistyped") for a wrong length, a bad character or a failing
    check symbol — what the server would answer with ``400 invalid_code``.

    >>> check_code("4729 1047 5518 2035")
    '4729104755182035'
    """
    return parse_code_uri(text).code


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def key_commitment(spki_der: bytes) -> str:
    """The ``fp`` of a code URI: unpadded base64url of SHA-256 over the DER SPKI."""
    return _b64url(hashlib.sha256(spki_der).digest())


def fingerprint(spki_der: bytes) -> str:
    """The key's ``fingerprint``: ``SHA256:`` + unpadded base64 of SHA-256 over the DER SPKI."""
    digest = hashlib.sha256(spki_der).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")
