// Shared by both demo pages: the check of what was typed or scanned as the page shows it (the
// rules themselves are the keymaster-client package's, served under ./sdk/), a JSON POST to the
// demo's server side that turns problem+json into an Error, a QR code as SVG, and the pages'
// constants.

import qrcodegen from "./qrcodegen.js";
import { parseCodeUri } from "./sdk/index.js";

// Checks what was typed or scanned: a code, or a code URI `keymaster:<code>?fp=<commitment>`
// (what the authenticator's QR code holds). Returns {ok: true, uri, send}: the package's parsed
// code URI ({code, fp}: the normalised code and the key commitment, or null when there was
// none) and the text to send to the server (which takes the URI as it is and ignores fp); or
// {ok: false, message} saying what looks mistyped. Nothing is sent anywhere.
export function checkCodeInput(typed) {
  try {
    const uri = parseCodeUri(typed);
    const send = typed.trim().toLowerCase().startsWith("keymaster:") ? typed.trim() : uri.code;
    return { ok: true, uri, send };
  } catch (e) {
    const detail = e.detail || e.message;
    return { ok: false, message: detail.charAt(0).toUpperCase() + detail.slice(1) + "." };
  }
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

// The QR code of `text` as an SVG element, with `label` as its accessible name.
export function qrSvg(text, label) {
  const qr = qrcodegen.QrCode.encodeText(text, qrcodegen.QrCode.Ecc.MEDIUM);
  const border = 4;
  const size = qr.size + border * 2;
  let path = "";
  for (let y = 0; y < qr.size; y++) {
    for (let x = 0; x < qr.size; x++) {
      if (qr.getModule(x, y)) path += `M${x + border},${y + border}h1v1h-1z`;
    }
  }
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${size} ${size}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const bg = document.createElementNS(ns, "rect");
  bg.setAttribute("width", "100%");
  bg.setAttribute("height", "100%");
  bg.setAttribute("fill", "#fff");
  const dark = document.createElementNS(ns, "path");
  dark.setAttribute("d", path);
  dark.setAttribute("fill", "#000");
  svg.append(bg, dark);
  return svg;
}
