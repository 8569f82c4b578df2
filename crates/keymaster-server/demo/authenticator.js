// The demo authenticator: a key pair made with WebCrypto (Ed25519 where the browser has it,
// else ECDSA P-256), the private key non-extractable in IndexedDB, a deposit with a proof of
// possession and a commitment to a SAS nonce, the code as text and its code URI (with the key
// commitment) as QR code, the key's live event stream, the device's side of the SAS exchange
// (reveal the nonce when the service asks, show the six digits), and signing of sign-in
// challenges; and "Scan a code": the answer to a service's enrolment request, after showing who
// asks and the person saying yes. The key, the proof, the SAS and the holder's calls under /v1 are the
// keymaster-client package's (./sdk/); the deposit goes through the demo's server side, which
// holds the app key.

import {
  DeviceClient, decodeNonce, formatSas, generateDeviceKey, sas, sasCommitment, sasNonce,
  signMessage, signProof, toBase64,
} from "./sdk/index.js";
import { CHALLENGE_PATTERN, CHANNEL, postJson, qrSvg, show } from "./common.js";

const $ = (id) => document.getElementById(id);
const channel = "BroadcastChannel" in window ? new BroadcastChannel(CHANNEL) : null;
// Only the holder's calls (with the holder token of the deposit) are made from this page: it has
// no app key, so the client's own token is empty and never sent.
const holder = new DeviceClient(location.origin, "");

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

// A non-extractable key pair: Ed25519 where the browser has it, else ECDSA P-256.
async function makeKeyPair() {
  if (forcedAlgorithm() !== "p256") {
    try {
      return await generateDeviceKey("ed25519");
    } catch (e) {
      // No Ed25519 in this browser: fall back to P-256.
    }
  }
  return generateDeviceKey("p256");
}

// Signs text with the stored private key, in the format keymaster expects (Ed25519 raw,
// ECDSA in DER); returns base64.
async function signText(rec, text) {
  return toBase64(await signMessage(rec.privateKey, new TextEncoder().encode(text)));
}

// ---- The code and its QR code ----

function renderQr(text) {
  $("qr").replaceChildren(qrSvg(text, "QR code of the code and its key commitment"));
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

// ---- The key's event stream (the client reads it with fetch: EventSource cannot send the holder token) ----

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
  let ns;
  try {
    ns = decodeNonce(d.nonce || "");
  } catch (e) {
    return;
  }
  revealed.add(d.retrieval_id);
  try {
    await holder.revealSas(rec.deposit.id, rec.deposit.holder_token, d.retrieval_id, rec.nd);
  } catch (e) {
    revealed.delete(d.retrieval_id);
    $("key-status").textContent = `Could not answer the comparison request: ${e.detail || e.message}`;
    return;
  }
  const who = d.service ? d.service.name : "the service";
  $("sas").textContent = formatSas(await sas(rec.spki, rec.nd, ns));
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

// The client resumes a dropped stream by itself (Last-Event-ID) and ends when the key is gone
// and its last event was sent; a refusal (the key is unknown, the token wrong) ends it too.
async function follow(rec) {
  if (following) following.abort();
  const ctl = new AbortController();
  following = ctl;
  try {
    const events = holder.events(rec.deposit.id, rec.deposit.holder_token, {
      signal: ctl.signal, maxReconnects: 20,
    });
    for await (const evt of events) addEvent(evt, rec);
  } catch (e) {
    return;
  }
  if (!ctl.signal.aborted) watchHistory(rec, ctl);
}

// After the stream ends (the key is gone and, with a SAS, the nonce revealed), a dispute can
// still come: the service disputes when the person says the six digits differ. Read the key's
// history for a while to show it.
async function watchHistory(rec, ctl) {
  const until = Date.now() + 10 * 60 * 1000;
  while (!ctl.signal.aborted && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 2000));
    if (ctl.signal.aborted) return;
    try {
      const status = await holder.status(rec.deposit.id, rec.deposit.holder_token);
      for (const evt of status.history || []) addEvent(evt, rec);
    } catch (e) {
      // A refusal (the key's record is gone) ends the watch; a network error is tried again.
      if (e.status !== undefined) return;
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
    const key = await makeKeyPair();
    const alg = key.algorithm;
    // The SAS nonce: committed to now, revealed only when the service that took the key asks.
    const nd = sasNonce();
    const rec = { privateKey: key.privateKey, publicKey: key.publicKey, alg, spki: key.spki, nd };
    const proof = await signProof(key.privateKey, key.fingerprint);
    status.textContent = "Depositing the public key…";
    rec.deposit = await postJson("/demo/api/deposit", {
      public_key: key.publicKeyPem, proof, label: $("label").value.trim() || undefined,
      sas_commitment: await sasCommitment(nd),
    });
    await saveKey(rec);
    $("sent").hidden = true;
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

// ---- Scan a code: answer a service's enrolment request ----

let asked = null; // the request waiting for "Send my key": {send, preview}

function scanError(message) {
  $("scan").setAttribute("aria-invalid", "true");
  show($("scan-error"), message);
  $("scan").focus();
}

function domainsOf(service) {
  return service.domains && service.domains.length ? ` (${service.domains.join(", ")})` : "";
}

// Asks keymaster who asks for a key under the scanned code; nothing is sent but the code.
async function lookUp(ev) {
  if (ev) ev.preventDefault();
  asked = null;
  for (const id of ["send-ask", "sent", "scan-error"]) $(id).hidden = true;
  $("scan").removeAttribute("aria-invalid");
  $("scan-status").textContent = "";
  const send = $("scan").value.trim();
  if (!send) {
    scanError("Scan or paste the service’s code first.");
    return;
  }
  $("scan-look").disabled = true;
  try {
    const p = await postJson("/demo/api/request/preview", { code: send });
    asked = { send, preview: p };
    $("send-q").textContent = `Send your key to ${p.service.name}${domainsOf(p.service)}?`;
    $("send-label").textContent = p.label || "—";
    $("send-expires").textContent = new Date(p.expires_at).toLocaleString();
    $("send-ask").hidden = false;
    // Declining is the default: Enter on the focused button sends nothing.
    $("send-no").focus();
  } catch (e) {
    scanError(e.status === 404
      ? "No service is waiting under that code: it may have expired or been answered already."
      : e.message);
  } finally {
    $("scan-look").disabled = false;
  }
}

function sendNo() {
  asked = null;
  $("send-ask").hidden = true;
  $("scan-status").textContent = "Nothing was sent.";
  $("scan").focus();
}

// The person said yes: make a key and deposit it as the answer to the request.
async function sendYes() {
  if (!asked) return;
  const { send, preview } = asked;
  asked = null;
  $("send-ask").hidden = true;
  $("send-yes").disabled = true;
  $("scan-status").textContent = "Making a key pair…";
  try {
    const key = await makeKeyPair();
    const proof = await signProof(key.privateKey, key.fingerprint);
    $("scan-status").textContent = `Sending the public key to ${preview.service.name}…`;
    const deposit = await postJson("/demo/api/deposit", {
      public_key: key.publicKeyPem, proof, label: $("label").value.trim() || undefined,
      request: send,
    });
    const rec = {
      privateKey: key.privateKey, publicKey: key.publicKey, alg: key.algorithm, spki: key.spki,
      deposit, sentTo: preview.service,
    };
    await saveKey(rec);
    $("scan").value = "";
    $("scan-status").textContent = "";
    showSent(rec);
  } catch (e) {
    $("scan-status").textContent = "";
    scanError(e.code === "request_fulfilled"
      ? "That service already received a key for this code; ask it for a new one."
      : `Could not send the key: ${e.message}`);
  } finally {
    $("send-yes").disabled = false;
  }
}

function showSent(rec) {
  $("sent-title").textContent = `Key sent to ${rec.sentTo.name}${domainsOf(rec.sentTo)}`;
  $("sent-alg").textContent = rec.alg === "ed25519" ? "Ed25519" : "ECDSA P-256";
  $("sent-fingerprint").textContent = rec.deposit.fingerprint;
  $("sent").hidden = false;
}

// Reads QR codes with the browser's BarcodeDetector, where it has one, into the text field.
async function useCamera() {
  const video = $("camera-view");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
  } catch (e) {
    scanError(`No camera: ${e.message}`);
    return;
  }
  const detector = new BarcodeDetector({ formats: ["qr_code"] });
  video.srcObject = stream;
  video.hidden = false;
  await video.play();
  const until = Date.now() + 60_000;
  try {
    while (Date.now() < until) {
      const found = await detector.detect(video).catch(() => []);
      const text = found.map((c) => c.rawValue).find((v) => v.startsWith("keymaster:"));
      if (text) {
        $("scan").value = text;
        await lookUp();
        return;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  } finally {
    for (const t of stream.getTracks()) t.stop();
    video.hidden = true;
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
  $("scan-form").addEventListener("submit", lookUp);
  $("send-no").addEventListener("click", sendNo);
  $("send-yes").addEventListener("click", sendYes);
  if ("BarcodeDetector" in window && navigator.mediaDevices) {
    $("camera").hidden = false;
    $("camera").addEventListener("click", useCamera);
  }
  if (channel) {
    channel.onmessage = (m) => {
      if (m.data && m.data.type === "challenge" && CHALLENGE_PATTERN.test(m.data.challenge)) {
        $("challenge").value = m.data.challenge;
        show($("challenge-note"), "A sign-in request from example-web arrived. Press Sign to approve it.");
      }
    };
  }
  const rec = await loadKey().catch(() => null);
  if (rec && rec.sentTo) {
    showSent(rec);
  } else if (rec && rec.deposit) {
    showDeposit(rec);
    follow(rec);
  }
});
