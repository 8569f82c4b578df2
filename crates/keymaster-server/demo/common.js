// Shared by both demo pages: the code check (the same rules as keymaster-core's `code`
// module), the code URI and the SAS of the verified handoff (the same as keymaster-core's
// `handoff` module), base64 and PEM helpers, and a JSON POST that turns problem+json into an
// Error.

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
const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const CROCKFORD_CHECK = "0123456789ABCDEFGHJKMNPQRSTVWXYZ*~$=U";

function crockfordValue(c) {
  const canonical = c === "O" ? "0" : c === "I" || c === "L" ? "1" : c;
  const i = CROCKFORD.indexOf(canonical);
  return i < 0 ? null : i;
}

// Checks a code as typed. Returns {ok: true, code} with the normalised code, or
// {ok: false, message} saying what looks mistyped. Nothing is sent anywhere.
export function checkCode(typed) {
  const chars = Array.from(typed.replace(/[\s-]/g, ""));
  if (chars.length === 16) {
    let interim = 0;
    for (const c of chars) {
      if (c < "0" || c > "9") {
        return { ok: false, message: "The code looks mistyped: a 16-symbol code has only digits." };
      }
      interim = DAMM[interim][c.charCodeAt(0) - 48];
    }
    if (interim !== 0) {
      return {
        ok: false,
        message: "The code looks mistyped: its check digit does not match. Please compare it again.",
      };
    }
    return { ok: true, code: chars.join("") };
  }
  if (chars.length === 24) {
    let remainder = 0;
    let out = "";
    for (let i = 0; i < 24; i++) {
      const upper = chars[i].toUpperCase();
      let value = crockfordValue(upper);
      if (i === 23 && value === null) {
        const j = CROCKFORD_CHECK.indexOf(upper, 32);
        value = j < 0 ? null : j;
      }
      if (value === null) {
        return { ok: false, message: "The code looks mistyped: it contains a character that is not part of any code." };
      }
      if (i < 23) {
        remainder = (remainder * 32 + value) % 37;
        out += CROCKFORD[value];
      } else if (value !== remainder) {
        return {
          ok: false,
          message: "The code looks mistyped: its check symbol does not match. Please compare it again.",
        };
      } else {
        out += CROCKFORD_CHECK[value];
      }
    }
    return { ok: true, code: out };
  }
  return { ok: false, message: "The code looks mistyped: it should have 16 digits (or 24 letters and digits)." };
}

const CODE_URI_SCHEME = "keymaster:";

// Checks what was typed or scanned: a code, or a code URI `keymaster:<code>?fp=<commitment>`
// (what the authenticator's QR code holds). Returns {ok: true, code, fp, send}: the normalised
// code, the key commitment (32 bytes, or null when there was none) and the text to send to the
// server (which takes the URI as it is and ignores fp); or {ok: false, message}.
export function checkCodeInput(typed) {
  const text = typed.trim();
  if (text.slice(0, CODE_URI_SCHEME.length).toLowerCase() !== CODE_URI_SCHEME) {
    const checked = checkCode(text);
    return checked.ok ? { ...checked, fp: null, send: checked.code } : checked;
  }
  const rest = text.slice(CODE_URI_SCHEME.length);
  if (rest.slice(0, 8).toLowerCase() === "request:") {
    return { ok: false, message: "This is the QR code of an enrolment request, not of a key." };
  }
  const q = rest.indexOf("?");
  const codePart = q < 0 ? rest : rest.slice(0, q);
  let fp = null;
  for (const pair of (q < 0 ? "" : rest.slice(q + 1)).split("&")) {
    const eq = pair.indexOf("=");
    if ((eq < 0 ? pair : pair.slice(0, eq)) !== "fp") continue;
    const bytes = fp === null ? fromBase64Url(eq < 0 ? "" : pair.slice(eq + 1)) : null;
    if (!bytes || bytes.length !== 32) {
      return { ok: false, message: "The key commitment (fp) in this code URI is damaged; scan the QR code again." };
    }
    fp = bytes;
  }
  const checked = checkCode(codePart);
  return checked.ok ? { ...checked, fp, send: text } : checked;
}

export function toBase64Url(bytes) {
  return toBase64(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// Base64url, padded or not, to bytes; null when it is not base64url.
export function fromBase64Url(text) {
  const t = text.replace(/=+$/, "");
  if (!/^[A-Za-z0-9_-]*$/.test(t) || t.length % 4 === 1) return null;
  return fromBase64(t.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((t.length + 3) % 4));
}

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

export function equalBytes(a, b) {
  const x = new Uint8Array(a);
  const y = new Uint8Array(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

// 32 random bytes: a SAS nonce.
export function randomNonce() {
  return crypto.getRandomValues(new Uint8Array(32));
}

// DER SubjectPublicKeyInfo from PEM "PUBLIC KEY".
export function pemToDer(pem) {
  const m = /-----BEGIN PUBLIC KEY-----([A-Za-z0-9+/=\s]+)-----END PUBLIC KEY-----/.exec(pem);
  if (!m) throw new Error("the key received is not a PEM public key");
  return fromBase64(m[1].replace(/\s+/g, ""));
}

const SAS_DOMAIN = new TextEncoder().encode("keymaster-sas-v1");

// SAS = u32_be(SHA-256("keymaster-sas-v1" ‖ K ‖ nd ‖ ns)[0..4]) mod 10⁶, where K is the DER
// SPKI, nd the authenticator's nonce and ns the service's. Returns the number.
export async function sasOf(spki, nd, ns) {
  const parts = [SAS_DOMAIN, new Uint8Array(spki), new Uint8Array(nd), new Uint8Array(ns)];
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { all.set(p, at); at += p.length; }
  const d = await sha256(all);
  return (((d[0] << 24) >>> 0) + (d[1] << 16) + (d[2] << 8) + d[3]) % 1000000;
}

// Six digits in two groups, with leading zeros: "004 271".
export function formatSas(n) {
  const s = String(n).padStart(6, "0");
  return `${s.slice(0, 3)} ${s.slice(3)}`;
}

export function toBase64(bytes) {
  let s = "";
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s);
}

export function fromBase64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

// PEM "PUBLIC KEY" from DER SubjectPublicKeyInfo.
export function spkiToPem(spki) {
  const b64 = toBase64(spki).replace(/(.{64})/g, "$1\n");
  return `-----BEGIN PUBLIC KEY-----\n${b64.replace(/\n$/, "")}\n-----END PUBLIC KEY-----\n`;
}

// The key's fingerprint as keymaster computes it: "SHA256:" + unpadded base64 of SHA-256
// over the DER SubjectPublicKeyInfo.
export async function fingerprintOf(spki) {
  const digest = await crypto.subtle.digest("SHA-256", spki);
  return "SHA256:" + toBase64(digest).replace(/=+$/, "");
}

// WebCrypto's ECDSA signatures are r||s (IEEE P1363); keymaster expects DER
// (SEQUENCE { INTEGER r, INTEGER s }). Integers are minimal and positive.
export function p1363ToDer(raw) {
  const bytes = new Uint8Array(raw);
  const half = bytes.length / 2;
  const integer = (part) => {
    let i = 0;
    while (i < part.length - 1 && part[i] === 0) i++;
    let v = Array.from(part.slice(i));
    if (v[0] & 0x80) v = [0, ...v];
    return [0x02, v.length, ...v];
  };
  const body = [...integer(bytes.slice(0, half)), ...integer(bytes.slice(half))];
  // P-256 and P-384 signatures are below 128 bytes of body, so the length fits one byte.
  return new Uint8Array([0x30, body.length, ...body]);
}

// POSTs JSON to the demo's server side; a problem+json answer becomes an Error whose
// message is the problem's detail or title and whose `code` is the problem's code.
export async function postJson(path, body) {
  const resp = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error(data.detail || data.title || `HTTP ${resp.status}`);
    err.code = data.code;
    err.status = resp.status;
    throw err;
  }
  return data;
}

// What every sign-in challenge starts with; the authenticator signs nothing else.
export const CHALLENGE_PREFIX = "keymaster-demo-sign-in:";
export const CHALLENGE_PATTERN = /^keymaster-demo-sign-in:[A-Za-z0-9_-]{43}$/;

// The two pages talk to each other through this channel when both are open in one browser
// (the user can also copy and paste instead).
export const CHANNEL = "keymaster-demo";

export function show(el, text) {
  el.textContent = text;
  el.hidden = false;
}
