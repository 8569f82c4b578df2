"""The offline helpers against the server's rules: check symbols (Damm, mod-37), normalisation,
code URIs, the SAS and its commitment, and the published test vector of docs/security.md
("Verified handoff")."""

from __future__ import annotations

import base64
import hashlib
import secrets

import pytest

from keymaster_client import (
    CodeUri,
    InvalidCode,
    check_code,
    commitment_matches,
    decode_nonce,
    fingerprint,
    format_sas,
    key_commitment,
    parse_code_uri,
    sas,
    sas_commitment,
    sas_nonce,
)

from keys import random_digits_code

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CHECK = CROCKFORD + "*~$=U"
# RFC 8032's first Ed25519 test key as DER SPKI: the vector of docs/security.md.
VECTOR_SPKI = bytes.fromhex(
    "302a300506032b6570032100d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
)
VECTOR_FP = "BuP9j9opu2CrWVV95h7bCuzbIxE0vjDnW0Vfjht5L6k"
VECTOR_ND = bytes(range(0x00, 0x20))
VECTOR_NS = bytes(range(0x20, 0x40))
VECTOR_COMMITMENT = "Yw3NKWbEM2aRElRIu7JbT_QSpJxzLbLIq8G4WBvXEN0"


def random_base32_code() -> str:
    body = [secrets.randbelow(32) for _ in range(23)]
    remainder = 0
    for v in body:
        remainder = (remainder * 32 + v) % 37
    return "".join(CROCKFORD[v] for v in body) + CHECK[remainder]


def test_digits_known_values_and_normalisation() -> None:
    assert check_code("4729-1047-5518-2035") == "4729104755182035"
    assert check_code(" 4729 1047-5518 2035\n") == "4729104755182035"
    assert check_code("4-7-2-9-1-0-4-7-5-5-1-8-2-0-3-5") == "4729104755182035"
    for bad, why in [
        ("4729-1047-5518-2036", "check symbol"),
        ("4729-1047-5518-203", "16 digits"),
        ("4729-1047-5518-20355", "16 digits"),
        ("4729-1047-5518-203A", "character"),
        ("4729-1O47-5518-2035", "character"),  # look-alikes are read only in base32 codes
        ("4729_1047_5518_2035", "16 digits"),
        ("472910475518203é", "character"),
        ("", "16 digits"),
    ]:
        with pytest.raises(InvalidCode, match=why) as err:
            check_code(bad)
        assert err.value.code == "invalid_code"
        assert "looks mistyped" in err.value.detail


def test_base32_case_lookalikes_and_check_symbols() -> None:
    canonical = "0" * 22 + "11"
    assert check_code(canonical) == canonical
    assert check_code("o" * 22 + "iL") == canonical
    assert check_code("O" * 22 + "lI") == canonical
    with pytest.raises(InvalidCode, match="character"):
        check_code("0" * 21 + "U11")  # U is only a check symbol
    with pytest.raises(InvalidCode, match="check symbol"):
        check_code("0" * 22 + "1*")
    # Each of the five extra check symbols, in lower case too.
    found = set()
    while len(found) < 5:
        code = random_base32_code()
        if code[-1] in "*~$=U":
            found.add(code[-1])
            assert check_code(code.lower()) == code


@pytest.mark.parametrize("make", [random_digits_code, random_base32_code])
def test_every_substitution_and_adjacent_swap_is_caught(make) -> None:  # type: ignore[no-untyped-def]
    for _ in range(20):
        code = make()
        assert check_code(code) == code
        alphabet = "0123456789" if len(code) == 16 else None
        for i, original in enumerate(code):
            symbols = alphabet or (CHECK if i == len(code) - 1 else CROCKFORD)
            for s in symbols:
                if s != original:
                    with pytest.raises(InvalidCode):
                        check_code(code[:i] + s + code[i + 1 :])
        for i in range(len(code) - 1):
            if code[i] != code[i + 1]:
                with pytest.raises(InvalidCode):
                    check_code(code[:i] + code[i + 1] + code[i] + code[i + 2 :])


def test_the_published_vector() -> None:
    assert key_commitment(VECTOR_SPKI) == VECTOR_FP
    uri = parse_code_uri(f"keymaster:4729104755182035?fp={VECTOR_FP}")
    assert uri.code == "4729104755182035"
    assert uri.matches_key(VECTOR_SPKI)
    tampered = bytearray(VECTOR_SPKI)
    tampered[20] ^= 1
    assert not uri.matches_key(bytes(tampered))
    assert fingerprint(VECTOR_SPKI) == "SHA256:" + VECTOR_FP.replace("-", "+").replace("_", "/")
    assert "4729" not in repr(uri)


def test_the_sas_and_its_commitment_the_published_vector() -> None:
    assert sas_commitment(VECTOR_ND) == VECTOR_COMMITMENT
    assert commitment_matches(VECTOR_COMMITMENT, VECTOR_ND)
    assert sas(VECTOR_SPKI, VECTOR_ND, VECTOR_NS) == 119503
    assert format_sas(119503) == "119 503"
    assert format_sas(4271) == "004 271"
    assert format_sas(0) == "000 000"


def test_the_sas_changes_with_any_byte_commitments_open_only_with_their_nonce() -> None:
    base = sas(VECTOR_SPKI, VECTOR_ND, VECTOR_NS)
    # Any change of a byte, anywhere in the key or either nonce, changes the six digits.
    for which in range(3):
        inputs = [VECTOR_SPKI, VECTOR_ND, VECTOR_NS]
        for i in range(len(inputs[which])):
            changed = bytearray(inputs[which])
            changed[i] ^= 1 << (i % 8)
            args = list(inputs)
            args[which] = bytes(changed)
            assert sas(*args) != base, (which, i)
    # Both ends agree on random inputs, as hashlib computes it by hand.
    nd, ns = sas_nonce(), sas_nonce()
    assert len(nd) == 32 and nd != ns
    digest = hashlib.sha256(b"keymaster-sas-v1" + VECTOR_SPKI + nd + ns).digest()
    assert sas(VECTOR_SPKI, nd, ns) == int.from_bytes(digest[:4], "big") % 1_000_000

    commitment = sas_commitment(nd)
    assert commitment == base64.urlsafe_b64encode(hashlib.sha256(nd).digest()).decode().rstrip("=")
    assert commitment_matches(commitment, nd)
    assert not commitment_matches(commitment, ns)
    assert not commitment_matches("not base64!", nd)
    assert not commitment_matches(commitment[:40], nd)

    b64url = base64.urlsafe_b64encode(nd).decode().rstrip("=")
    assert decode_nonce(b64url) == nd
    assert decode_nonce(b64url + "=") == nd
    assert decode_nonce(base64.b64encode(nd).decode()) == nd  # standard base64, padded
    for bad in ["", "AAAA", base64.urlsafe_b64encode(bytes(33)).decode(), "!" * 43, b64url + "A"]:
        with pytest.raises(ValueError):
            decode_nonce(bad)
    with pytest.raises(ValueError):
        sas(VECTOR_SPKI, nd[1:], ns)
    with pytest.raises(ValueError):
        sas(VECTOR_SPKI, nd, ns + b"\0")


def test_code_uris_lenient_where_harmless_strict_where_not() -> None:
    for ok in [
        "4729-1047-5518-2035",
        "keymaster:4729-1047-5518-2035",
        f"KEYMASTER:4729104755182035?fp={VECTOR_FP}",
        f"keymaster:4729104755182035?fp={VECTOR_FP}=",
        f"keymaster:4729104755182035?v=2&fp={VECTOR_FP}",
        f"  keymaster:4729104755182035?fp={VECTOR_FP}\n",
    ]:
        assert check_code(ok) == "4729104755182035", ok
    assert parse_code_uri("keymaster:4729104755182035") == CodeUri("4729104755182035", None)
    for bad in [
        "keymaster:request:4729104755182035",
        "keymaster:4729104755182036",
        f"keymaster:4729104755182035?fp={VECTOR_FP}&fp={VECTOR_FP}",
        f"keymaster:4729104755182035?fp={VECTOR_FP[:-1]}",
        f"keymaster:4729104755182035?fp={VECTOR_FP}AAAA",
        "keymaster:4729104755182035?fp=" + VECTOR_FP[:10] + "+" + VECTOR_FP[11:],
        "keymaster:4729104755182035?fp=" + VECTOR_FP[:-1] + "l",  # non-zero trailing bits
        "keymaster:4729104755182035?fp=",
    ]:
        with pytest.raises(InvalidCode):
            check_code(bad)
