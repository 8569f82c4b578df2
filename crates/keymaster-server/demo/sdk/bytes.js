// Generated from sdk/typescript/src/bytes.ts (keymaster-client 0.1.0) by sdk/typescript/scripts/demo-assets.mjs; do not edit.
// Base64 and base64url of byte arrays with what every platform has (btoa/atob), and SHA-256
// through WebCrypto. Not responsible for any format beyond these encodings.
/** Standard base64, padded. */
export function toBase64(bytes) {
    let binary = "";
    for (const b of bytes)
        binary += String.fromCharCode(b);
    return btoa(binary);
}
/** Unpadded base64url. */
export function toBase64Url(bytes) {
    return toBase64(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
/** Decodes standard base64 or base64url, padded or not; throws on anything else. */
export function fromBase64(text) {
    const standard = text.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
    if (!/^[A-Za-z0-9+/]*$/.test(standard) || standard.length % 4 === 1) {
        throw new TypeError("not base64");
    }
    const binary = atob(standard + "=".repeat((4 - (standard.length % 4)) % 4));
    const out = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++)
        out[i] = binary.charCodeAt(i);
    return out;
}
/** SHA-256 of `bytes`. */
export async function sha256(bytes) {
    return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}
/** Whether two byte arrays are equal (both public values here, so no constant time needed). */
export function bytesEqual(a, b) {
    return a.length === b.length && a.every((v, i) => v === b[i]);
}
/** `parts` one after the other. */
export function concat(...parts) {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
        out.set(p, at);
        at += p.length;
    }
    return out;
}
