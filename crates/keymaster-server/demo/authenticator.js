// The demo authenticator: a key pair made with WebCrypto (Ed25519 where the browser has it,
// else ECDSA P-256), the private key non-extractable in IndexedDB, a deposit with a proof of
// possession and a commitment to a SAS nonce, the code as text and its code URI (with the key
// commitment) as QR code, the key's live event stream, the device's side of the SAS exchange
// (reveal the nonce when the service asks, show the six digits), and signing of sign-in
// challenges.

import qrcodegen from "./qrcodegen.js";
import {
  CHALLENGE_PATTERN, CHANNEL, fingerprintOf, formatSas, fromBase64Url, p1363ToDer, postJson,
  randomNonce, sasOf, sha256, show, spkiToPem, toBase64, toBase64Url,
} from "./common.js";

const $ = (id) => document.getElementById(id);
const channel = "BroadcastChannel" in window ? new BroadcastChannel(CHANNEL) : null;

// ---- IndexedDB: one record, the current key ----

function openDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open("keymaster-demo-authenticator", 1);
    req.onupgradeneeded = () => req.result.createObjectStore("keys");
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function dbRequest(mode, fn) {
  const db = await openDb();
  return new Promise((resolve, reject) => {
    const tx = db.transaction("keys", mode);
    const req = fn(tx.objectStore("keys"));
    tx.oncomplete = () => resolve(req.result);
    tx.onerror = () => reject(tx.error);
  });
}

const loadKey = () => dbRequest("readonly", (s) => s.get("current"));
const saveKey = (rec) => dbRequest("readwrite", (s) => s.put(rec, "current"));

// ---- Keys ----

function forcedAlgorithm() {
  return new URLSearchParams(location.search).get("alg");
}

async function makeKeyPair() {
  if (forcedAlgorithm() !== "p256") {
    try {
      const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
      return { pair, alg: "ed25519" };
    } catch (e) {
      // No Ed25519 in this browser: fall back to P-256.
    }
  }
  const pair = await crypto.subtle.generateKey(
    { name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
  return { pair, alg: "p256" };
}

// Signs text with the stored private key, in the format keymaster expects (Ed25519 raw,
// ECDSA in DER); returns base64.
async function signText(rec, text) {
  const data = new TextEncoder().encode(text);
  if (rec.alg === "ed25519") {
    return toBase64(await crypto.subtle.sign({ name: "Ed25519" }, rec.privateKey, data));
  }
  const raw = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, rec.privateKey, data);
  return toBase64(p1363ToDer(raw));
}

// ---- The code and its QR code ----

function renderQr(text) {
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
  svg.setAttribute("aria-label", "QR code of the code and its key commitment");
  const bg = document.createElementNS(ns, "rect");
  bg.setAttribute("width", "100%");
  bg.setAttribute("height", "100%");
  bg.setAttribute("fill", "#fff");
  const dark = document.createElementNS(ns, "path");
  dark.setAttribute("d", path);
  dark.setAttribute("fill", "#000");
  svg.append(bg, dark);
  $("qr").replaceChildren(svg);
}

function showDeposit(rec) {
  $("code").textContent = rec.deposit.code_display;
  // The code URI carries the key's commitment, so that a service that scans it can check the
  // key it receives from the key master.
  const uri = rec.deposit.code_uri || rec.deposit.code;
  renderQr(uri);
  $("code-uri").textContent = uri;
  $("sas-box").hidden = true;
  $("alg").textContent = rec.alg === "ed25519" ? "Ed25519" : "ECDSA P-256";
  $("fingerprint").textContent = rec.deposit.fingerprint;
  $("expires").textContent = new Date(rec.deposit.expires_at).toLocaleString();
  $("events").replaceChildren();
  seen.clear();
  revealed.clear();
  $("key-status").textContent = "Waiting for the code to be used…";
  $("key-status").classList.remove("error");
  $("code-section").hidden = false;
}

// ---- The key's event stream (fetch, because EventSource cannot send the holder token) ----

let following = null;

function describe(evt) {
  const d = evt.data || {};
  const who = d.service ? d.service.name : "a service";
  switch (evt.type) {
    case "key.deposited": return "Deposited; waiting for the code to be used";
    case "key.retrieved": return `Retrieved by ${who}`;
    case "key.confirmed": return `Confirmed by ${who}`;
    case "key.unconfirmed": return `Not confirmed by ${who} in time; the key is gone`;
    case "key.denied": return `Blocked attempt by ${who}${d.reason ? ` (${d.reason})` : ""}`;
    case "code.stale_used": return `Blocked attempt: someone used the old code${d.service ? ` (${who})` : ""}`;
    case "key.expired": return "Expired: the code no longer works";
    case "key.revoked": return "Revoked";
    case "key.locked": return "Locked after wrong passwords";
    case "code.reissued": return "A new code was issued";
    case "key.previewed": return `${who} looked at who deposited the key, before taking it`;
    case "sas.requested": return `${who} asks you to compare six digits`;
    case "key.disputed": return `Disputed by ${who}: ${DISPUTES[d.reason] || d.reason || "refused"}`;
    default: return evt.type;
  }
}

const DISPUTES = {
  key_mismatch: "the key it received is not the one your QR code commits to; it refused it",
  sas_mismatch: "the six digits did not match; it refused the key",
  not_requested: "the person there says nobody asked for this key",
};

// The device's side of the SAS exchange: reveal the nonce committed to at deposit for the
// retrieval that asks, and show the six digits computed here from this key and both nonces.
const revealed = new Set();

async function answerSas(rec, d) {
  if (!rec.nd || !rec.spki || !d.retrieval_id || revealed.has(d.retrieval_id)) return;
  const ns = fromBase64Url(d.nonce || "");
  if (!ns || ns.length !== 32) return;
  revealed.add(d.retrieval_id);
  try {
    const resp = await fetch(`/v1/keys/${rec.deposit.id}/sas`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${rec.deposit.holder_token}`, "content-type": "application/json",
      },
      body: JSON.stringify({ retrieval_id: d.retrieval_id, nonce: toBase64Url(rec.nd) }),
    });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
  } catch (e) {
    revealed.delete(d.retrieval_id);
    $("key-status").textContent = `Could not answer the comparison request: ${e.message}`;
    return;
  }
  const who = d.service ? d.service.name : "the service";
  $("sas").textContent = formatSas(await sasOf(rec.spki, rec.nd, ns));
  $("sas-who").textContent = who;
  $("sas-box").hidden = false;
}

const seen = new Set(); // event ids shown, so that the history read after the stream adds only news

function addEvent(evt, rec) {
  if (evt.id) {
    if (seen.has(evt.id)) return;
    seen.add(evt.id);
  }
  const li = document.createElement("li");
  const time = document.createElement("time");
  time.dateTime = evt.timestamp;
  time.textContent = new Date(evt.timestamp).toLocaleTimeString();
  li.append(time, " ", describe(evt));
  li.dataset.type = evt.type;
  $("events").append(li);
  // The SAS request shows in its own box; the status line keeps what happened to the key.
  if (evt.type !== "key.deposited" && evt.type !== "sas.requested") {
    $("key-status").textContent = describe(evt);
  }
  if (evt.type === "sas.requested") answerSas(rec, evt.data || {});
  if (evt.type === "key.disputed") {
    $("sas-box").hidden = true;
    $("key-status").classList.add("error");
  }
}

async function follow(rec) {
  if (following) following.abort();
  const ctl = new AbortController();
  following = ctl;
  let lastId = null;
  for (let attempt = 0; attempt < 20 && !ctl.signal.aborted; attempt++) {
    try {
      const headers = { authorization: `Bearer ${rec.deposit.holder_token}` };
      if (lastId) headers["last-event-id"] = lastId;
      const resp = await fetch(`/v1/keys/${rec.deposit.id}/events`, { headers, signal: ctl.signal });
      if (!resp.ok) return;
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return watchHistory(rec, ctl); // the key is gone and its last event was sent
        buf += value;
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("data:")) data += line.slice(5).trim();
            else if (line.startsWith("id:")) lastId = line.slice(3).trim();
          }
          if (data) addEvent(JSON.parse(data), rec);
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}

// After the stream ends (the key is gone and, with a SAS, the nonce revealed), a dispute can
// still come: the service disputes when the person says the six digits differ. Read the key's
// history for a while to show it.
async function watchHistory(rec, ctl) {
  const until = Date.now() + 10 * 60 * 1000;
  while (!ctl.signal.aborted && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 2000));
    try {
      const resp = await fetch(`/v1/keys/${rec.deposit.id}`, {
        headers: { authorization: `Bearer ${rec.deposit.holder_token}` }, signal: ctl.signal,
      });
      if (!resp.ok) return;
      for (const evt of (await resp.json()).history || []) addEvent(evt, rec);
    } catch (e) {
      if (ctl.signal.aborted) return;
    }
  }
}

// ---- Page ----

async function makeKey(ev) {
  ev.preventDefault();
  const button = $("make");
  button.disabled = true;
  const status = $("make-status");
  status.textContent = "Making a key pair…";
  try {
    const { pair, alg } = await makeKeyPair();
    const spki = await crypto.subtle.exportKey("spki", pair.publicKey);
    const fingerprint = await fingerprintOf(spki);
    // The SAS nonce: committed to now, revealed only when the service that took the key asks.
    const nd = randomNonce();
    const rec = {
      privateKey: pair.privateKey, publicKey: pair.publicKey, alg, spki: new Uint8Array(spki), nd,
    };
    const proof = await signText(rec, "keymaster-proof-of-possession:" + fingerprint);
    status.textContent = "Depositing the public key…";
    rec.deposit = await postJson("/demo/api/deposit", {
      public_key: spkiToPem(spki), proof, label: $("label").value.trim() || undefined,
      sas_commitment: toBase64Url(await sha256(nd)),
    });
    await saveKey(rec);
    status.textContent = `Key made (${alg === "ed25519" ? "Ed25519" : "ECDSA P-256"}); the private key stays in this browser.`;
    showDeposit(rec);
    follow(rec);
    $("code").focus();
  } catch (e) {
    status.textContent = `Could not make the key: ${e.message}`;
  } finally {
    button.disabled = false;
  }
}

async function sign(ev) {
  ev.preventDefault();
  const err = $("sign-error");
  err.hidden = true;
  const challenge = $("challenge").value.trim();
  if (!CHALLENGE_PATTERN.test(challenge)) {
    show(err, "That is not a sign-in challenge of the example app; nothing was signed.");
    $("challenge").focus();
    return;
  }
  const rec = await loadKey();
  if (!rec) {
    show(err, "Make a key first.");
    return;
  }
  const signature = await signText(rec, challenge);
  $("signature").value = signature;
  $("signature-box").hidden = false;
  $("sign-status").textContent = channel
    ? "Signed, and sent to the example app open in this browser."
    : "Signed. Copy the signature into the example app.";
  if (channel) channel.postMessage({ type: "signature", challenge, signature });
}

async function copySignature() {
  try {
    await navigator.clipboard.writeText($("signature").value);
    $("sign-status").textContent = "Signature copied.";
  } catch (e) {
    $("signature").select();
  }
}

window.addEventListener("DOMContentLoaded", async () => {
  $("make-form").addEventListener("submit", makeKey);
  $("sign-form").addEventListener("submit", sign);
  $("copy-signature").addEventListener("click", copySignature);
  if (channel) {
    channel.onmessage = (m) => {
      if (m.data && m.data.type === "challenge" && CHALLENGE_PATTERN.test(m.data.challenge)) {
        $("challenge").value = m.data.challenge;
        show($("challenge-note"), "A sign-in request from example-web arrived. Press Sign to approve it.");
      }
    };
  }
  const rec = await loadKey().catch(() => null);
  if (rec && rec.deposit) {
    showDeposit(rec);
    follow(rec);
  }
});
