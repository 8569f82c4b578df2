// Generated from sdk/typescript/src/code.ts (keymaster-client 0.1.0) by sdk/typescript/scripts/demo-assets.mjs; do not edit.
// Offline checks of what a person typed or scanned: the code's check symbol (Damm for 16
// digits, Crockford's mod-37 for 24 base32 symbols), the `keymaster:<code>?fp=…` code URI, and
// the key commitment/fingerprint of DER SPKI bytes. The same rules as the server's
// (keymaster_core::code and keymaster_core::handoff); nothing here sends a request.
import { bytesEqual, fromBase64, sha256, toBase64, toBase64Url } from "./bytes.js";
import { InvalidCode } from "./errors.js";
const DIGITS_LEN = 16;
const BASE32_LEN = 24;
const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const CROCKFORD_CHECK = CROCKFORD + "*~$=U";
const LOOKALIKE = { O: "0", I: "1", L: "1" };
const SCHEME = "keymaster:";
// What the server removes: `-` and ASCII whitespace (space, tab, LF, FF, CR).
const SEPARATORS = new Set([" ", "\t", "\n", "\r", "\f", "-"]);
// The standard Damm quasigroup of order 10 (H. Michael Damm, 2004): row = interim, column = digit.
const DAMM = [
    [0, 3, 1, 7, 5, 9, 8, 6, 4, 2],
    [7, 0, 9, 2, 1, 5, 4, 8, 6, 3],
    [4, 2, 0, 6, 8, 7, 1, 3, 5, 9],
    [1, 7, 5, 0, 9, 8, 3, 4, 2, 6],
    [6, 1, 2, 3, 0, 4, 5, 9, 7, 8],
    [3, 6, 7, 4, 2, 0, 9, 5, 8, 1],
    [5, 8, 6, 9, 7, 2, 0, 1, 3, 4],
    [8, 9, 4, 5, 3, 6, 2, 0, 1, 7],
    [9, 4, 3, 8, 6, 1, 7, 2, 0, 5],
    [2, 5, 8, 1, 4, 3, 6, 7, 9, 0],
];
const WRONG_LENGTH = "the code looks mistyped: it should have 16 digits or 24 letters and digits";
const BAD_CHARACTER = "the code looks mistyped: it contains a character that is not part of any code";
const CHECK_FAILED = "the code looks mistyped: its check symbol does not match; please compare it again";
const BAD_FP = "the key commitment (fp) of the code URI is not valid";
function invalid(detail) {
    return new InvalidCode(detail, { code: "invalid_code" });
}
function checkBareCode(text) {
    const chars = [...text].filter((c) => !SEPARATORS.has(c));
    if (chars.length === DIGITS_LEN) {
        let interim = 0;
        for (const c of chars) {
            if (c < "0" || c > "9" || c.length !== 1)
                throw invalid(BAD_CHARACTER);
            interim = DAMM[interim][c.charCodeAt(0) - 48];
        }
        if (interim !== 0)
            throw invalid(CHECK_FAILED);
        return chars.join("");
    }
    if (chars.length === BASE32_LEN) {
        let out = "";
        let remainder = 0;
        chars.forEach((c, i) => {
            // Only ASCII letters change case here: a non-ASCII character must not become one.
            const upper = /^[a-z]$/.test(c) ? c.toUpperCase() : c;
            const canonical = LOOKALIKE[upper] ?? upper;
            const last = i + 1 === BASE32_LEN;
            const value = canonical.length === 1 ? (last ? CROCKFORD_CHECK : CROCKFORD).indexOf(canonical) : -1;
            if (value < 0)
                throw invalid(BAD_CHARACTER);
            if (!last) {
                remainder = (remainder * 32 + value) % 37;
                out += CROCKFORD[value];
            }
            else {
                if (value !== remainder)
                    throw invalid(CHECK_FAILED);
                out += CROCKFORD_CHECK[value];
            }
        });
        return out;
    }
    throw invalid(WRONG_LENGTH);
}
function decodeFp(text) {
    const bare = text.replace(/=+$/, "");
    if (text.length > 44 || !/^[A-Za-z0-9_-]*$/.test(bare))
        throw invalid(BAD_FP);
    let raw;
    try {
        raw = fromBase64(bare);
    }
    catch {
        throw invalid(BAD_FP);
    }
    // Refuse non-zero trailing bits, as the server's decoder does: one value, one spelling.
    if (raw.length !== 32 || toBase64Url(raw) !== bare)
        throw invalid(BAD_FP);
    return raw;
}
/**
 * Parses a bare code (as {@link checkCode} takes it) or a code URI
 * `keymaster:<code>[?fp=<base64url>]`. The scheme is matched without regard to case; query
 * parameters other than `fp` are ignored; `fp` must be base64url of 32 bytes and appear at most
 * once. A `keymaster:request:` URI (an enrolment request) is refused. Throws {@link InvalidCode}.
 */
export function parseCodeUri(text) {
    const trimmed = text.trim();
    if (trimmed.slice(0, SCHEME.length).toLowerCase() !== SCHEME) {
        return { code: checkBareCode(trimmed), fp: null };
    }
    const rest = trimmed.slice(SCHEME.length);
    if (rest.slice(0, 8).toLowerCase() === "request:") {
        throw invalid("this is the code of an enrolment request, not of a key");
    }
    const q = rest.indexOf("?");
    const code = q < 0 ? rest : rest.slice(0, q);
    const query = q < 0 ? "" : rest.slice(q + 1);
    let fp = null;
    for (const pair of query ? query.split("&") : []) {
        const eq = pair.indexOf("=");
        const name = eq < 0 ? pair : pair.slice(0, eq);
        if (name !== "fp")
            continue;
        if (fp !== null)
            throw invalid(BAD_FP);
        fp = decodeFp(eq < 0 ? "" : pair.slice(eq + 1));
    }
    return { code: checkBareCode(code), fp };
}
/**
 * The normalised code of what a person typed (spaces and `-` removed; for base32 upper case,
 * `O` read as `0`, `I`/`L` as `1`) or of a code URI. Throws {@link InvalidCode} ("looks
 * mistyped") for a wrong length, a bad character or a failing check symbol — what the server
 * would answer with `400 invalid_code`.
 *
 * @example checkCode("4729 1047 5518 2035") // "4729104755182035"
 */
export function checkCode(text) {
    return parseCodeUri(text).code;
}
/** Whether the key with DER SPKI `spki` is the one `uri` commits to (true when it commits to nothing). */
export async function matchesKey(uri, spki) {
    if (uri.fp === null)
        return true;
    return bytesEqual(await sha256(spki), uri.fp);
}
/** The `fp` of a code URI: unpadded base64url of SHA-256 over the DER SPKI. */
export async function keyCommitment(spki) {
    return toBase64Url(await sha256(spki));
}
/** The key's `fingerprint`: `SHA256:` + unpadded base64 of SHA-256 over the DER SPKI. */
export async function fingerprint(spki) {
    return "SHA256:" + toBase64(await sha256(spki)).replace(/=+$/, "");
}
