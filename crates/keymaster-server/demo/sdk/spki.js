// Generated from sdk/typescript/src/spki.ts (keymaster-client 0.1.0) by sdk/typescript/scripts/demo-assets.mjs; do not edit.
// The DER SubjectPublicKeyInfo of a retrieved key, from each form the retrieval carries (PEM,
// OpenSSH line, JWK), so that the code URI's commitment is checked against the key bytes
// themselves rather than a fingerprint the server sent. Ed25519, X25519 and EC keys have a
// fixed SPKI prefix before their public bytes; RSA goes through WebCrypto's JWK import.
import { concat, fromBase64, toBase64, toBase64Url } from "./bytes.js";
function hex(text) {
    return new Uint8Array(text.match(/../g).map((h) => parseInt(h, 16)));
}
// The DER of everything before the public bytes, per key type (RFC 8410, RFC 5480).
const PREFIX = {
    Ed25519: { der: hex("302a300506032b6570032100"), len: 32 },
    X25519: { der: hex("302a300506032b656e032100"), len: 32 },
    "P-256": { der: hex("3059301306072a8648ce3d020106082a8648ce3d030107034200"), len: 65 },
    "P-384": { der: hex("3076301006072a8648ce3d020106052b81040022036200"), len: 97 },
};
function withPrefix(curve, raw) {
    const { der, len } = PREFIX[curve];
    if (raw.length !== len || ((curve === "P-256" || curve === "P-384") && raw[0] !== 4)) {
        throw new TypeError(`not a ${curve} public key`);
    }
    return concat(der, raw);
}
async function rsaSpki(n, e) {
    const key = await crypto.subtle.importKey("jwk", { kty: "RSA", n: toBase64Url(n), e: toBase64Url(e), ext: true }, { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" }, true, ["verify"]);
    return new Uint8Array(await crypto.subtle.exportKey("spki", key));
}
/** The DER SPKI inside a PEM `PUBLIC KEY` block. */
export function spkiFromPem(pem) {
    const match = /-----BEGIN PUBLIC KEY-----([A-Za-z0-9+/=\s]+)-----END PUBLIC KEY-----/.exec(pem);
    if (!match)
        throw new TypeError("not a PEM PUBLIC KEY block");
    return fromBase64(match[1].replace(/\s+/g, ""));
}
/** Reads the SSH wire format's length-prefixed strings. */
function sshStrings(blob) {
    const out = [];
    let at = 0;
    while (at < blob.length) {
        if (at + 4 > blob.length)
            throw new TypeError("truncated OpenSSH key");
        const len = ((blob[at] << 24) | (blob[at + 1] << 16) | (blob[at + 2] << 8) | blob[at + 3]) >>> 0;
        at += 4;
        if (at + len > blob.length)
            throw new TypeError("truncated OpenSSH key");
        out.push(blob.subarray(at, at + len));
        at += len;
    }
    return out;
}
function stripZeros(mpint) {
    let i = 0;
    while (i < mpint.length - 1 && mpint[i] === 0)
        i++;
    return mpint.subarray(i);
}
/** The DER SPKI of one OpenSSH public key line (`ssh-ed25519`, `ecdsa-sha2-nistp256/384`, `ssh-rsa`). */
export async function spkiFromOpenssh(line) {
    const [type, data] = line.trim().split(/\s+/);
    const parts = sshStrings(fromBase64(data ?? ""));
    const name = new TextDecoder().decode(parts[0]);
    if (name !== type)
        throw new TypeError("OpenSSH key type does not match its blob");
    if (type === "ssh-ed25519" && parts.length === 2)
        return withPrefix("Ed25519", parts[1]);
    if (type === "ecdsa-sha2-nistp256" && parts.length === 3)
        return withPrefix("P-256", parts[2]);
    if (type === "ecdsa-sha2-nistp384" && parts.length === 3)
        return withPrefix("P-384", parts[2]);
    if (type === "ssh-rsa" && parts.length === 3)
        return rsaSpki(stripZeros(parts[2]), stripZeros(parts[1]));
    throw new TypeError(`unsupported OpenSSH key type ${type}`);
}
/** The DER SPKI of a public JWK (OKP Ed25519/X25519, EC P-256/P-384, RSA). */
export async function spkiFromJwk(jwk) {
    const field = (name) => {
        const value = jwk[name];
        if (typeof value !== "string")
            throw new TypeError(`JWK member ${name} missing`);
        return fromBase64(value);
    };
    const { kty, crv } = jwk;
    if (kty === "OKP" && (crv === "Ed25519" || crv === "X25519"))
        return withPrefix(crv, field("x"));
    if (kty === "EC" && (crv === "P-256" || crv === "P-384")) {
        return withPrefix(crv, concat(new Uint8Array([4]), field("x"), field("y")));
    }
    if (kty === "RSA")
        return rsaSpki(field("n"), field("e"));
    throw new TypeError(`unsupported JWK kty=${String(kty)} crv=${String(crv)}`);
}
/** PEM `PUBLIC KEY` of DER SPKI bytes, lines of 64 characters. */
export function spkiToPem(spki) {
    const lines = toBase64(spki).match(/.{1,64}/g) ?? [];
    return `-----BEGIN PUBLIC KEY-----\n${lines.join("\n")}\n-----END PUBLIC KEY-----\n`;
}
