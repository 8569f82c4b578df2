"""Key material for the tests, made with `cryptography` the way a device would make it."""

from __future__ import annotations

import base64
import secrets
from typing import Tuple

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from keymaster_client import PROOF_PREFIX, fingerprint

DAMM = (
    (0, 3, 1, 7, 5, 9, 8, 6, 4, 2), (7, 0, 9, 2, 1, 5, 4, 8, 6, 3),
    (4, 2, 0, 6, 8, 7, 1, 3, 5, 9), (1, 7, 5, 0, 9, 8, 3, 4, 2, 6),
    (6, 1, 2, 3, 0, 4, 5, 9, 7, 8), (3, 6, 7, 4, 2, 0, 9, 5, 8, 1),
    (5, 8, 6, 9, 7, 2, 0, 1, 3, 4), (8, 9, 4, 5, 3, 6, 2, 0, 1, 7),
    (9, 4, 3, 8, 6, 1, 7, 2, 0, 5), (2, 5, 8, 1, 4, 3, 6, 7, 9, 0),
)


def ed25519_key() -> Tuple[ed25519.Ed25519PrivateKey, str, bytes]:
    """A fresh pair: the private key, the public PEM, the DER SPKI."""
    private = ed25519.Ed25519PrivateKey.generate()
    public = private.public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, pem.decode(), der


def proof(private: ed25519.Ed25519PrivateKey, spki: bytes) -> str:
    """The proof of possession: a signature over the prefix and the key's fingerprint."""
    message = (PROOF_PREFIX + fingerprint(spki)).encode()
    return base64.b64encode(private.sign(message)).decode()


def random_digits_code() -> str:
    """A code with a valid Damm check digit that (almost surely) belongs to no key."""
    body = [secrets.randbelow(10) for _ in range(15)]
    interim = 0
    for d in body:
        interim = DAMM[interim][d]
    return "".join(map(str, body)) + str(interim)
