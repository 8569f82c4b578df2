// Generated from sdk/typescript/src/sas.ts (keymaster-client 0.1.0) by sdk/typescript/scripts/demo-assets.mjs; do not edit.
// The short authentication string (SAS) of the verified handoff, for either end: the device's
// nonce and its commitment (deposited as `sas_commitment`), the check that a revealed nonce
// opens a commitment, and the six digits both ends show. The same arithmetic as the server's
// (keymaster_core::handoff); nothing here sends a request.
import { bytesEqual, concat, fromBase64, sha256, toBase64Url } from "./bytes.js";
const NONCE_LEN = 32;
const SAS_DOMAIN = new TextEncoder().encode("keymaster-sas-v1");
const SAS_MODULUS = 1_000_000;
/** 32 random bytes: a device's `nd` or a service's `ns`. */
export function sasNonce() {
    return crypto.getRandomValues(new Uint8Array(NONCE_LEN));
}
/** The 32 bytes of a base64url nonce or commitment from the API; throws TypeError for anything else. */
export function decodeNonce(text) {
    let bytes;
    try {
        bytes = text.length <= 44 ? fromBase64(text) : new Uint8Array(0);
    }
    catch {
        throw new TypeError("not a base64url nonce");
    }
    if (bytes.length !== NONCE_LEN)
        throw new TypeError("a nonce has 32 bytes");
    return bytes;
}
/** The deposit's `sas_commitment` for the device nonce `nd`: base64url of SHA-256(`nd`). */
export async function sasCommitment(nd) {
    return toBase64Url(await sha256(nd));
}
/**
 * Whether the revealed nonce `nd` opens `commitment` (the `sas_commitment` of a retrieval, as
 * base64url). False for a commitment that is not 32 bytes of base64url.
 */
export async function commitmentMatches(commitment, nd) {
    let expected;
    try {
        expected = decodeNonce(commitment);
    }
    catch {
        return false;
    }
    return bytesEqual(await sha256(nd), expected);
}
/**
 * `SAS = u32_be(SHA-256("keymaster-sas-v1" ‖ K ‖ nd ‖ ns)[0..4]) mod 10⁶`, where `key` (K) is
 * the DER SPKI of the key (or a secret's bytes), `nd` the device's nonce and `ns` the
 * service's. Both ends compute it from the key bytes they hold; see {@link formatSas}.
 */
export async function sas(key, nd, ns) {
    if (nd.length !== NONCE_LEN || ns.length !== NONCE_LEN)
        throw new TypeError("a nonce has 32 bytes");
    const d = await sha256(concat(SAS_DOMAIN, key, nd, ns));
    const first = ((d[0] << 24) | (d[1] << 16) | (d[2] << 8) | d[3]) >>> 0;
    return first % SAS_MODULUS;
}
/** Six digits in two groups with leading zeros, as both ends show them: `004 271`. */
export function formatSas(value) {
    const digits = String(value).padStart(6, "0");
    return `${digits.slice(0, 3)} ${digits.slice(3)}`;
}
