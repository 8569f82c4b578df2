// The example outside service ("example-web"): a settings page that takes the code or the code
// URI of the QR code (checked here first, so that a typo never reaches the server), shows who
// deposited the key and asks before claiming it (declining is the default), checks the key it
// received against the code URI's commitment, runs the SAS exchange and asks the person whether
// both pages show the same six digits; "Enrol by scanning": an enrolment request shown as QR code
// and text, waited for until the authenticator answers it; and a sign-in with a challenge that
// the authenticator signs. Its server side holds the demo's service key; this page never does. The checks of the
// verified handoff are made here, from the key bytes received, never from a fingerprint the
// key master sent. The code check, the key's fingerprint and commitment, and the SAS are the
// keymaster-client package's (./sdk/); the calls with the service key go through the demo's
// server side.

import {
  commitmentMatches, decodeNonce, fingerprint, formatSas, matchesKey, sas, sasNonce, spkiFromPem,
  toBase64Url,
} from "./sdk/index.js";
import { CHANNEL, checkCodeInput, postJson, qrSvg, show } from "./common.js";

const $ = (id) => document.getElementById(id);
const channel = "BroadcastChannel" in window ? new BroadcastChannel(CHANNEL) : null;
let current = null; // the open challenge: {challenge_id, challenge}
let pending = null; // the code waiting for "Add this key": {send, uri}
let comparing = null; // the account waiting for "They match": {enrolled, sas, checks}
let waiting = null; // the enrolment request shown: {id, cancelled}

// How long one long-poll of the request waits, in seconds (the server holds it that long).
const REQUEST_WAIT_S = 20;

// How long the page waits for the authenticator to reveal its nonce.
const SAS_WAIT_MS = 120_000;

function account() {
  return sessionStorage.getItem("example-web-account");
}

function resetSettings() {
  for (const id of ["preview", "compare", "refused", "enabled", "request"]) $(id).hidden = true;
  if (waiting) waiting.cancelled = true;
  waiting = null;
  $("progress").textContent = "";
  $("code-error").hidden = true;
  $("code").removeAttribute("aria-invalid");
  pending = null;
  comparing = null;
}

function showEnabled(e) {
  $("enrolled-fingerprint").textContent = e.fingerprint;
  $("enrolled-alg").textContent = e.algorithm;
  $("enrolled-proven").textContent = e.proven ? "yes, the depositor proved it holds the private key" : "no";
  $("enrolled-checked").textContent = e.checked || "—";
  $("enabled").hidden = false;
  $("signin-needs").hidden = true;
  $("start-signin").disabled = false;
}

function showRefused(title, detail) {
  $("progress").textContent = "";
  $("compare").hidden = true;
  $("refused-title").textContent = title;
  $("refused-detail").textContent = detail;
  $("refused").hidden = false;
}

function codeError(message) {
  const input = $("code");
  input.setAttribute("aria-invalid", "true");
  show($("code-error"), message);
  input.focus();
}

function ago(when) {
  const s = Math.max(0, Math.round((Date.now() - new Date(when).getTime()) / 1000));
  if (s < 60) return s < 10 ? "just now" : `${s} seconds ago`;
  const m = Math.round(s / 60);
  return m === 1 ? "a minute ago" : `${m} minutes ago`;
}

// Step 1: check the code on the page, then ask keymaster who deposited the key, without
// claiming it, and ask the person.
async function enrol(ev) {
  ev.preventDefault();
  resetSettings();
  const checked = checkCodeInput($("code").value);
  if (!checked.ok) {
    // Caught on the page: nothing is sent, and the key's owner is not bothered.
    codeError(checked.message);
    return;
  }
  $("enable").disabled = true;
  try {
    const p = await postJson("/demo/api/preview", { code: checked.send });
    const label = p.label ? `“${p.label}”` : "a key without a name";
    const from = p.origin && p.origin.network ? ` from ${p.origin.network}` : "";
    $("preview-q").textContent =
      `Add the key ${label} from ${p.tenant.name}, deposited ${ago(p.deposited_at)}${from}?`;
    $("preview-fingerprint").textContent = p.fingerprint || "none (a secret)";
    $("preview-proven").textContent = p.proven ? "yes" : "no";
    pending = { send: checked.send, uri: checked.uri };
    $("preview").hidden = false;
    // Declining is the default: Enter on the focused button does not claim the key.
    $("decline").focus();
  } catch (e) {
    codeError(e.status === 404
      ? "No key is waiting under that code: it may have expired or been used already."
      : e.message);
  } finally {
    $("enable").disabled = false;
  }
}

function decline() {
  pending = null;
  $("preview").hidden = true;
  $("progress").textContent = "Not added. The key stays with keymaster until it expires.";
  $("code").focus();
}

async function dispute(enrolled, reason) {
  try {
    await postJson("/demo/api/dispute", { account: enrolled.account, reason });
    return "example-web refused it and reported it to keymaster; your authenticator is told.";
  } catch (e) {
    return `example-web refused it, but could not report it (${e.message}).`;
  }
}

// Step 2: the person said yes. Claim the key, check it against the code URI's commitment, and
// run the SAS exchange when the authenticator committed to a nonce.
async function accept() {
  if (!pending) return;
  const { send, uri } = pending;
  pending = null;
  $("preview").hidden = true;
  $("progress").textContent = "Fetching the key…";
  let enrolled;
  try {
    enrolled = await postJson("/demo/api/enrol", { code: send });
  } catch (e) {
    $("progress").textContent = "";
    codeError(e.status === 404
      ? "No key is waiting under that code: it may have expired or been used already."
      : e.message);
    return;
  }
  $("code").value = "";
  let spki;
  try {
    spki = spkiFromPem(enrolled.public_key_pem);
  } catch (e) {
    showRefused("The key received is unreadable", await dispute(enrolled, "key_mismatch"));
    return;
  }
  // From here on, what is shown is computed from the key bytes received.
  enrolled.fingerprint = await fingerprint(spki);
  const checks = [];
  if (uri.fp) {
    if (!(await matchesKey(uri, spki))) {
      showRefused(
        "This is not the key your QR code stands for",
        "The key keymaster handed over does not match the commitment in the QR code. "
          + await dispute(enrolled, "key_mismatch"));
      return;
    }
    checks.push("the key matches the QR code’s commitment");
  }
  if (!enrolled.sas_commitment) {
    if (uri.fp) {
      finish(enrolled, checks);
      return;
    }
    showRefused(
      "This key cannot be checked",
      "It came without your authenticator’s commitment, so nothing shows that it is yours. "
        + await dispute(enrolled, "sas_mismatch"));
    return;
  }
  await compare(enrolled, spki, checks);
}

async function compare(enrolled, spki, checks) {
  const ns = sasNonce();
  $("progress").textContent = "Asking your authenticator for the six digits…";
  try {
    await postJson("/demo/api/sas", { account: enrolled.account, nonce: toBase64Url(ns) });
    let nd = null;
    const until = Date.now() + SAS_WAIT_MS;
    while (!nd) {
      const nonces = await postJson("/demo/api/sas/nonces", { account: enrolled.account });
      if (nonces.device_nonce) {
        try {
          nd = decodeNonce(nonces.device_nonce);
        } catch (e) {
          nd = new Uint8Array(0); // opens no commitment: refused below
        }
        break;
      }
      if (Date.now() > until) {
        showRefused("Your authenticator did not answer",
          "Open the authenticator page and enable two-factor sign-in again with a new code.");
        return;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    if (!(await commitmentMatches(enrolled.sas_commitment, nd))) {
      showRefused(
        "This is not the exchange your authenticator started",
        "Its nonce does not open the commitment it made when it deposited the key. "
          + await dispute(enrolled, "sas_mismatch"));
      return;
    }
    const digits = formatSas(await sas(spki, nd, ns));
    comparing = { enrolled, sas: digits, checks };
    $("progress").textContent = "";
    $("sas").textContent = digits;
    $("compare").hidden = false;
    $("sas").focus();
  } catch (e) {
    showRefused("The comparison failed", e.message);
  }
}

async function sasMatch() {
  if (!comparing) return;
  const { enrolled, sas, checks } = comparing;
  comparing = null;
  $("compare").hidden = true;
  try {
    await postJson("/demo/api/activate", { account: enrolled.account });
  } catch (e) {
    showRefused("Two-factor sign-in could not be turned on", e.message);
    return;
  }
  finish(enrolled, [...checks, `you confirmed the six digits ${sas}`]);
}

async function sasDiffer() {
  if (!comparing) return;
  const { enrolled } = comparing;
  comparing = null;
  showRefused(
    "Refused: the six digits differ",
    "The key example-web received is not the one your authenticator holds. "
      + await dispute(enrolled, "sas_mismatch"));
}

// "Enrol by scanning": example-web asks keymaster for a request, shows its code URI as QR code
// and its code as text, and waits for the authenticator's answer. The authenticator showed the
// person who asks before it sent its key, so the key is taken as it comes.
async function scanEnrol() {
  resetSettings();
  $("scan-enrol").disabled = true;
  let req;
  try {
    req = await postJson("/demo/api/request", {});
  } catch (e) {
    showRefused("No code could be made", e.message);
    return;
  } finally {
    $("scan-enrol").disabled = false;
  }
  const w = { id: req.id, cancelled: false };
  waiting = w;
  $("request-qr").replaceChildren(qrSvg(req.code_uri, "QR code of example-web's enrolment request"));
  $("request-code").textContent = req.code_display;
  $("request-uri").textContent = req.code_uri;
  $("request-expires").textContent = new Date(req.expires_at).toLocaleString();
  $("request").hidden = false;
  $("progress").textContent = "Waiting for your authenticator…";
  let got;
  try {
    for (;;) {
      got = await postJson("/demo/api/request/wait", { request_id: w.id, wait: REQUEST_WAIT_S });
      if (w.cancelled) return;
      if (got.status !== "pending") break;
    }
  } catch (e) {
    if (!w.cancelled) showRefused("Waiting for your authenticator failed", e.message);
    return;
  }
  waiting = null;
  $("request").hidden = true;
  if (got.status === "expired") {
    showRefused("The code expired", "Nobody answered it in time. Enrol by scanning again for a new code.");
    return;
  }
  if (!got.enrolled) {
    showRefused("The key is gone", "The answer was read already. Enrol by scanning again for a new code.");
    return;
  }
  const enrolled = got.enrolled;
  try {
    // From here on, what is shown is computed from the key bytes received.
    enrolled.fingerprint = await fingerprint(spkiFromPem(enrolled.public_key_pem));
  } catch (e) {
    showRefused("The key received is unreadable", await dispute(enrolled, "key_mismatch"));
    return;
  }
  finish(enrolled, ["your authenticator showed you that example-web asks, and you said yes"]);
}

function cancelRequest() {
  if (waiting) waiting.cancelled = true;
  waiting = null;
  $("request").hidden = true;
  $("progress").textContent = "Stopped waiting. The code expires by itself.";
}

function finish(enrolled, checks) {
  const e = { ...enrolled, checked: checks.join("; ") };
  delete e.public_key_pem;
  sessionStorage.setItem("example-web-account", e.account);
  sessionStorage.setItem("example-web-enrolled", JSON.stringify(e));
  $("progress").textContent = "";
  showEnabled(e);
  $("start-signin").focus();
}

async function startSignin() {
  $("signin-error").hidden = true;
  $("signed-in").hidden = true;
  $("challenge-box").hidden = true;
  $("challenge").value = "";
  try {
    current = await postJson("/demo/api/challenge", { account: account() });
    $("challenge").value = current.challenge;
    $("signature").value = "";
    $("challenge-box").hidden = false;
    if (channel) channel.postMessage({ type: "challenge", challenge: current.challenge });
    $("challenge").focus();
    $("challenge").select();
  } catch (e) {
    show($("signin-error"), e.status === 404
      ? "This demo account is gone (the server restarted or it expired); enable two-factor sign-in again."
      : e.message);
  }
}

async function verify(ev) {
  ev.preventDefault();
  $("signin-error").hidden = true;
  if (!current) return;
  const signature = $("signature").value.trim();
  if (!signature) {
    show($("signin-error"), "Paste the signature from your authenticator first.");
    $("signature").focus();
    return;
  }
  const id = current.challenge_id;
  current = null; // a challenge answers once, right or wrong
  try {
    const ok = await postJson("/demo/api/verify", { challenge_id: id, signature });
    $("challenge-box").hidden = true;
    $("signed-in-key").textContent = ok.fingerprint;
    $("signed-in").hidden = false;
  } catch (e) {
    $("challenge-box").hidden = true;
    show($("signin-error"), e.status === 401
      ? "Sign-in failed: the signature does not match your key. Start again."
      : `Sign-in failed: ${e.message}`);
  }
}

async function copyChallenge() {
  try {
    await navigator.clipboard.writeText($("challenge").value);
  } catch (e) {
    $("challenge").select();
  }
}

window.addEventListener("DOMContentLoaded", () => {
  $("enrol-form").addEventListener("submit", enrol);
  $("decline").addEventListener("click", decline);
  $("scan-enrol").addEventListener("click", scanEnrol);
  $("request-cancel").addEventListener("click", cancelRequest);
  $("accept").addEventListener("click", accept);
  $("sas-match").addEventListener("click", sasMatch);
  $("sas-differ").addEventListener("click", sasDiffer);
  $("start-signin").addEventListener("click", startSignin);
  $("verify-form").addEventListener("submit", verify);
  $("copy-challenge").addEventListener("click", copyChallenge);
  if (channel) {
    channel.onmessage = (m) => {
      if (m.data && m.data.type === "signature" && current && m.data.challenge === current.challenge) {
        $("signature").value = m.data.signature;
        $("verify").focus();
      }
    };
  }
  const saved = sessionStorage.getItem("example-web-enrolled");
  if (account() && saved) showEnabled(JSON.parse(saved));
});
