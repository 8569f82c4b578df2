"""The DER SubjectPublicKeyInfo of a retrieved key, read by ``cryptography`` from each form the
retrieval carries (PEM, OpenSSH line, JWK), so that the code URI's commitment is checked
against the key bytes themselves rather than a fingerprint the server sent."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Tuple

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from ._errors import KeymasterError

if TYPE_CHECKING:
    from ._codes import CodeUri

_DER = serialization.Encoding.DER
_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
_CURVES = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1}


def _b64url_bytes(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("JWK member is not a string")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _b64url_int(value: Any) -> int:
    return int.from_bytes(_b64url_bytes(value), "big")


def spki_from_pem(pem: str) -> bytes:
    return serialization.load_pem_public_key(pem.encode()).public_bytes(_DER, _SPKI)


def spki_from_openssh(line: str) -> bytes:
    return serialization.load_ssh_public_key(line.encode()).public_bytes(_DER, _SPKI)


def spki_from_jwk(jwk: Mapping[str, Any]) -> bytes:
    kty, crv = jwk.get("kty"), jwk.get("crv")
    key: PublicKeyTypes
    if kty == "OKP" and crv == "Ed25519":
        key = ed25519.Ed25519PublicKey.from_public_bytes(_b64url_bytes(jwk.get("x")))
    elif kty == "OKP" and crv == "X25519":
        key = x25519.X25519PublicKey.from_public_bytes(_b64url_bytes(jwk.get("x")))
    elif kty == "EC" and crv in _CURVES:
        numbers = ec.EllipticCurvePublicNumbers(
            _b64url_int(jwk.get("x")), _b64url_int(jwk.get("y")), _CURVES[str(crv)]()
        )
        key = numbers.public_key()
    elif kty == "RSA":
        key = rsa.RSAPublicNumbers(_b64url_int(jwk.get("e")), _b64url_int(jwk.get("n"))).public_key()
    else:
        raise ValueError(f"unsupported JWK kty={kty!r} crv={crv!r}")
    return key.public_bytes(_DER, _SPKI)


def retrieval_matches(uri: "CodeUri", retrieved: Dict[str, Any]) -> bool:
    """Whether every form of the key in ``retrieved`` is the key ``fp_check`` (a
    :class:`~keymaster_client.CodeUri`) commits to. A retrieval without a PEM (a ``secret``)
    cannot match a commitment; a form that cannot be read does not match."""
    pem: Optional[str] = retrieved.get("public_key_pem")
    if not pem:
        return False
    checks: List[Tuple[Callable[[Any], bytes], Any]] = [(spki_from_pem, pem)]
    if retrieved.get("openssh"):
        checks.append((spki_from_openssh, retrieved["openssh"]))
    if retrieved.get("jwk"):
        checks.append((spki_from_jwk, retrieved["jwk"]))
    for read, form in checks:
        try:
            spki = read(form)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return False
        if not uri.matches_key(spki):
            return False
    return True


def retrieved_key_bytes(retrieved: Mapping[str, Any]) -> bytes:
    """The bytes a SAS is computed over: the DER SPKI of the public key received (read from its
    PEM), or a ``secret``'s bytes. Raises :class:`KeymasterError` (``decode``) for a retrieval
    that holds neither in a readable form."""
    pem = retrieved.get("public_key_pem")
    if pem:
        try:
            return spki_from_pem(str(pem))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise KeymasterError("the public key received cannot be read", code="decode") from None
    secret = retrieved.get("secret")
    if secret:
        bare = str(secret).rstrip("=")
        try:
            return base64.b64decode(bare + "=" * (-len(bare) % 4), validate=True)
        except ValueError:  # binascii.Error is a ValueError
            raise KeymasterError("the secret received is not base64", code="decode") from None
    raise KeymasterError("the retrieval holds no key", code="decode")
