// The offline helpers against the server's rules: check symbols, normalisation, code URIs, the
// published test vector of docs/security.md, SSE-independent encodings, the proof's DER form.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash, createPublicKey, generateKeyPairSync, verify } from "node:crypto";
import {
  checkCode,
  parseCodeUri,
  matchesKey,
  keyCommitment,
  fingerprint,
  InvalidCode,
  InvalidRequest,
  ServiceClient,
  KeymasterError,
  generateDeviceKey,
  signProof,
  PROOF_PREFIX,
  spkiFromJwk,
  spkiFromOpenssh,
  spkiFromPem,
  sas,
  formatSas,
  sasNonce,
  sasCommitment,
  commitmentMatches,
  decodeNonce,
  toBase64Url,
} from "keymaster-client";
import { randomDigitsCode, randomBase32Code, CROCKFORD, CHECK } from "./helpers.mjs";

const VECTOR_SPKI = Buffer.from(
  "302a300506032b6570032100d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
  "hex",
);
const VECTOR_FP = "BuP9j9opu2CrWVV95h7bCuzbIxE0vjDnW0Vfjht5L6k";

function assertInvalid(text, match) {
  assert.throws(
    () => checkCode(text),
    (err) => err instanceof InvalidCode && err.code === "invalid_code" && (!match || match.test(err.detail)),
    text,
  );
}

test("digits: known values and normalisation", () => {
  assert.equal(checkCode("4729-1047-5518-2035"), "4729104755182035");
  assert.equal(checkCode(" 4729 1047-5518 2035\n"), "4729104755182035");
  assert.equal(checkCode("4-7-2-9-1-0-4-7-5-5-1-8-2-0-3-5"), "4729104755182035");
  assertInvalid("4729-1047-5518-2036", /check symbol/);
  assertInvalid("4729-1047-5518-203", /16 digits/);
  assertInvalid("4729-1047-5518-20355", /16 digits/);
  assertInvalid("4729-1047-5518-203A", /character/);
  assertInvalid("4729-1O47-5518-2035", /character/); // look-alikes only in base32 codes
  assertInvalid("4729_1047_5518_2035", /16 digits/);
  assertInvalid("472910475518203é", /character/);
  assertInvalid("", /16 digits/);
  assert.ok(new InvalidCode("x") instanceof InvalidRequest);
});

test("base32: case, look-alikes, extra check symbols", () => {
  const canonical = "0".repeat(22) + "11";
  assert.equal(checkCode(canonical), canonical);
  assert.equal(checkCode("o".repeat(22) + "iL"), canonical);
  assert.equal(checkCode("O".repeat(22) + "lI"), canonical);
  assertInvalid("0".repeat(21) + "U11", /character/);
  assertInvalid("0".repeat(22) + "1*", /check symbol/);
  assertInvalid("0".repeat(22) + "é1", /character/);
  const found = new Set();
  while (found.size < 5) {
    const code = randomBase32Code();
    if ("*~$=U".includes(code.at(-1))) {
      found.add(code.at(-1));
      assert.equal(checkCode(code.toLowerCase()), code);
    }
  }
});

test("every substitution and adjacent swap is caught", () => {
  for (const make of [randomDigitsCode, randomBase32Code]) {
    for (let n = 0; n < 20; n++) {
      const code = make();
      assert.equal(checkCode(code), code);
      for (let i = 0; i < code.length; i++) {
        const symbols = code.length === 16 ? "0123456789" : i === code.length - 1 ? CHECK : CROCKFORD;
        for (const s of symbols) {
          if (s !== code[i]) assertInvalid(code.slice(0, i) + s + code.slice(i + 1));
        }
      }
      for (let i = 0; i < code.length - 1; i++) {
        if (code[i] !== code[i + 1]) assertInvalid(code.slice(0, i) + code[i + 1] + code[i] + code.slice(i + 2));
      }
    }
  }
});

test("the published vector", async () => {
  assert.equal(await keyCommitment(VECTOR_SPKI), VECTOR_FP);
  const uri = parseCodeUri(`keymaster:4729104755182035?fp=${VECTOR_FP}`);
  assert.equal(uri.code, "4729104755182035");
  assert.ok(await matchesKey(uri, VECTOR_SPKI));
  const tampered = Buffer.from(VECTOR_SPKI);
  tampered[20] ^= 1;
  assert.ok(!(await matchesKey(uri, tampered)));
  assert.equal(await fingerprint(VECTOR_SPKI), "SHA256:" + Buffer.from(VECTOR_FP, "base64url").toString("base64").replace(/=+$/, ""));
});

// docs/security.md, "Test vector": nd = 00..1f, ns = 20..3f.
const VECTOR_ND = Uint8Array.from({ length: 32 }, (_, i) => i);
const VECTOR_NS = Uint8Array.from({ length: 32 }, (_, i) => 0x20 + i);

test("the SAS and its commitment: the published vector", async () => {
  assert.equal(await sasCommitment(VECTOR_ND), "Yw3NKWbEM2aRElRIu7JbT_QSpJxzLbLIq8G4WBvXEN0");
  assert.ok(await commitmentMatches("Yw3NKWbEM2aRElRIu7JbT_QSpJxzLbLIq8G4WBvXEN0", VECTOR_ND));
  assert.equal(await sas(VECTOR_SPKI, VECTOR_ND, VECTOR_NS), 119503);
  assert.equal(formatSas(119503), "119 503");
  assert.equal(formatSas(4271), "004 271");
  assert.equal(formatSas(0), "000 000");
});

test("the SAS changes with any byte of the key or a nonce; commitments open only with their nonce", async () => {
  const base = await sas(VECTOR_SPKI, VECTOR_ND, VECTOR_NS);
  for (const [which, bytes] of [["key", VECTOR_SPKI], ["nd", VECTOR_ND], ["ns", VECTOR_NS]]) {
    const changed = Uint8Array.from(bytes);
    changed[changed.length - 1] ^= 1;
    const args = [VECTOR_SPKI, VECTOR_ND, VECTOR_NS].map((b) => (b === bytes ? changed : b));
    assert.notEqual(await sas(...args), base, which);
  }
  // Both ends agree on random inputs, as node:crypto computes it.
  const nd = sasNonce();
  const ns = sasNonce();
  assert.equal(nd.length, 32);
  assert.notDeepEqual(nd, ns);
  const digest = createHash("sha256").update("keymaster-sas-v1").update(VECTOR_SPKI).update(nd).update(ns).digest();
  assert.equal(await sas(VECTOR_SPKI, nd, ns), digest.readUInt32BE(0) % 1_000_000);

  const commitment = await sasCommitment(nd);
  assert.equal(commitment, createHash("sha256").update(nd).digest("base64url"));
  assert.ok(await commitmentMatches(commitment, nd));
  assert.ok(!(await commitmentMatches(commitment, ns)));
  assert.ok(!(await commitmentMatches("not base64!", nd)));
  assert.ok(!(await commitmentMatches(commitment.slice(0, 40), nd)));

  assert.deepEqual(decodeNonce(toBase64Url(nd)), nd);
  assert.deepEqual(decodeNonce(toBase64Url(nd) + "="), nd);
  for (const bad of ["", "AAAA", toBase64Url(new Uint8Array(33)), "!".repeat(43)]) {
    assert.throws(() => decodeNonce(bad), TypeError, JSON.stringify(bad));
  }
  await assert.rejects(sas(VECTOR_SPKI, nd.subarray(1), ns), TypeError);
});

test("code URIs: lenient where harmless, strict where not", () => {
  for (const ok of [
    "4729-1047-5518-2035",
    "keymaster:4729-1047-5518-2035",
    `KEYMASTER:4729104755182035?fp=${VECTOR_FP}`,
    `keymaster:4729104755182035?fp=${VECTOR_FP}=`,
    `keymaster:4729104755182035?v=2&fp=${VECTOR_FP}`,
    `  keymaster:4729104755182035?fp=${VECTOR_FP}\n`,
  ]) {
    assert.equal(checkCode(ok), "4729104755182035", ok);
  }
  assert.equal(parseCodeUri("keymaster:4729104755182035").fp, null);
  for (const bad of [
    "keymaster:request:4729104755182035",
    "keymaster:4729104755182036",
    `keymaster:4729104755182035?fp=${VECTOR_FP}&fp=${VECTOR_FP}`,
    `keymaster:4729104755182035?fp=${VECTOR_FP.slice(0, -1)}`,
    `keymaster:4729104755182035?fp=${VECTOR_FP}AAAA`,
    `keymaster:4729104755182035?fp=${VECTOR_FP.slice(0, 10)}+${VECTOR_FP.slice(11)}`,
    `keymaster:4729104755182035?fp=${VECTOR_FP.slice(0, -1)}l`, // non-zero trailing bits
    "keymaster:4729104755182035?fp=",
  ]) {
    assertInvalid(bad);
  }
});

test("a mistyped code is refused before any request", async () => {
  // Nothing listens on port 1: InvalidCode rather than a transport error shows nothing was sent.
  const service = new ServiceClient("http://127.0.0.1:1", "kms_unused");
  for (const typed of ["4729-1047-5518-2036", "4729-1047", "keymaster:request:4729104755182035"]) {
    await assert.rejects(service.retrieve(typed), InvalidCode);
    await assert.rejects(service.preview(typed), InvalidCode);
  }
  await assert.rejects(
    service.retrieve("4729-1047-5518-2035"),
    (err) => err instanceof KeymasterError && !(err instanceof InvalidCode) && /cannot reach/.test(err.message),
  );
});

test("device keys: SPKI, fingerprint and a proof that node:crypto verifies", async () => {
  for (const algorithm of ["p256", "p384", "ed25519"]) {
    const key = await generateDeviceKey(algorithm);
    const nodeKey = createPublicKey(key.publicKeyPem);
    assert.deepEqual(new Uint8Array(nodeKey.export({ type: "spki", format: "der" })), key.spki);
    const digest = createHash("sha256").update(key.spki).digest("base64").replace(/=+$/, "");
    assert.equal(key.fingerprint, "SHA256:" + digest);
    const proof = Buffer.from(await signProof(key.privateKey, key.fingerprint), "base64");
    const message = Buffer.from(PROOF_PREFIX + key.fingerprint);
    const hash = algorithm === "ed25519" ? null : algorithm === "p384" ? "sha384" : "sha256";
    // node:crypto verifies ECDSA signatures in DER by default: the proof's format.
    assert.ok(verify(hash, message, nodeKey, proof), algorithm);
    assert.ok(!verify(hash, Buffer.from("other"), nodeKey, proof), algorithm);
    await assert.rejects(crypto.subtle.exportKey("pkcs8", key.privateKey)); // not extractable
  }
});

test("SPKI from every form agrees with node:crypto", async () => {
  for (const [type, options] of [
    ["ed25519", {}],
    ["x25519", {}],
    ["ec", { namedCurve: "P-256" }],
    ["ec", { namedCurve: "P-384" }],
    ["rsa", { modulusLength: 2048 }],
  ]) {
    const { publicKey } = generateKeyPairSync(type, options);
    const spki = new Uint8Array(publicKey.export({ type: "spki", format: "der" }));
    assert.deepEqual(spkiFromPem(publicKey.export({ type: "spki", format: "pem" })), spki);
    assert.deepEqual(await spkiFromJwk(publicKey.export({ format: "jwk" })), spki, `${type} jwk`);
  }
  // OpenSSH lines, checked against the fingerprints ssh-keygen would print (RFC 8032 key).
  const ed = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea test";
  assert.deepEqual(await spkiFromOpenssh(ed), new Uint8Array(VECTOR_SPKI));
  await assert.rejects(spkiFromOpenssh("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea"));
});
