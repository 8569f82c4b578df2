// Generated from sdk/typescript/src/device.ts (keymaster-client 0.1.0) by sdk/typescript/scripts/demo-assets.mjs; do not edit.
// Helpers for a device (a browser page or a Node process) that makes its own key pair with
// WebCrypto: generate a non-extractable private key, export the public half as DER SPKI and
// PEM, and sign the proof of possession the key master checks at deposit. ECDSA signatures
// come out of WebCrypto as r‖s (IEEE P1363); the proof format wants DER, so they are re-encoded.
import { concat, toBase64 } from "./bytes.js";
import { fingerprint } from "./code.js";
import { spkiToPem } from "./spki.js";
/** What a proof of possession signs, followed by the key's `fingerprint`. */
export const PROOF_PREFIX = "keymaster-proof-of-possession:";
const PARAMS = {
    p256: { name: "ECDSA", namedCurve: "P-256" },
    p384: { name: "ECDSA", namedCurve: "P-384" },
    ed25519: { name: "Ed25519" },
};
/**
 * Makes a key pair with WebCrypto. The private key is not extractable unless asked for, so a
 * page can keep it in IndexedDB without its bytes ever being readable by script.
 */
export async function generateDeviceKey(algorithm = "p256", options = {}) {
    const pair = (await crypto.subtle.generateKey(PARAMS[algorithm], options.extractable ?? false, [
        "sign",
        "verify",
    ]));
    const spki = await exportSpki(pair.publicKey);
    return {
        algorithm,
        privateKey: pair.privateKey,
        publicKey: pair.publicKey,
        spki,
        publicKeyPem: spkiToPem(spki),
        fingerprint: await fingerprint(spki),
    };
}
/** The DER SPKI of a public CryptoKey. */
export async function exportSpki(publicKey) {
    return new Uint8Array(await crypto.subtle.exportKey("spki", publicKey));
}
/** One DER INTEGER of an unsigned big-endian number. */
function derInteger(bytes) {
    let i = 0;
    while (i < bytes.length - 1 && bytes[i] === 0)
        i++;
    let value = bytes.subarray(i);
    if (value[0] & 0x80)
        value = concat(new Uint8Array([0]), value);
    return concat(new Uint8Array([0x02, value.length]), value);
}
/** An ECDSA signature r‖s as DER `SEQUENCE { INTEGER r, INTEGER s }` (short lengths: P-256/P-384 only). */
export function p1363ToDer(signature) {
    const half = signature.length / 2;
    const body = concat(derInteger(signature.subarray(0, half)), derInteger(signature.subarray(half)));
    return concat(new Uint8Array([0x30, body.length]), body);
}
/** Signs `message` with a device key as the key master verifies it: Ed25519, or ECDSA with SHA-256 (P-256) / SHA-384 (P-384) in DER. */
export async function signMessage(privateKey, message) {
    const algorithm = privateKey.algorithm;
    if (algorithm.name === "Ed25519") {
        return new Uint8Array(await crypto.subtle.sign("Ed25519", privateKey, message));
    }
    if (algorithm.name === "ECDSA") {
        const hash = algorithm.namedCurve === "P-384" ? "SHA-384" : "SHA-256";
        const raw = await crypto.subtle.sign({ name: "ECDSA", hash }, privateKey, message);
        return p1363ToDer(new Uint8Array(raw));
    }
    throw new TypeError(`unsupported key algorithm ${algorithm.name}`);
}
/**
 * The proof of possession for `deposit({proof})`: base64 of the signature over
 * `keymaster-proof-of-possession:` + the key's fingerprint.
 */
export async function signProof(privateKey, keyFingerprint) {
    const message = new TextEncoder().encode(PROOF_PREFIX + keyFingerprint);
    return toBase64(await signMessage(privateKey, message));
}
