// The example outside service ("example-web"): a settings page that takes the code (checked
// here first, so that a typo never reaches the server), and a sign-in with a challenge that
// the authenticator signs. Its server side holds the demo's service key; this page never does.

import { CHANNEL, checkCode, postJson, show } from "./common.js";

const $ = (id) => document.getElementById(id);
const channel = "BroadcastChannel" in window ? new BroadcastChannel(CHANNEL) : null;
let current = null; // the open challenge: {challenge_id, challenge}

function account() {
  return sessionStorage.getItem("example-web-account");
}

function showEnabled(e) {
  $("enrolled-fingerprint").textContent = e.fingerprint;
  $("enrolled-alg").textContent = e.algorithm;
  $("enrolled-proven").textContent = e.proven ? "yes, the depositor proved it holds the private key" : "no";
  $("enabled").hidden = false;
  $("signin-needs").hidden = true;
  $("start-signin").disabled = false;
}

async function enrol(ev) {
  ev.preventDefault();
  const input = $("code");
  const err = $("code-error");
  err.hidden = true;
  input.removeAttribute("aria-invalid");
  const checked = checkCode(input.value);
  if (!checked.ok) {
    // Caught on the page: nothing is sent, and the key's owner is not bothered.
    input.setAttribute("aria-invalid", "true");
    show(err, checked.message);
    input.focus();
    return;
  }
  $("enable").disabled = true;
  try {
    const e = await postJson("/demo/api/enrol", { code: checked.code });
    sessionStorage.setItem("example-web-account", e.account);
    sessionStorage.setItem("example-web-enrolled", JSON.stringify(e));
    input.value = "";
    showEnabled(e);
    $("start-signin").focus();
  } catch (e) {
    const msg = e.status === 404
      ? "No key is waiting under that code: it may have expired or been used already."
      : e.message;
    input.setAttribute("aria-invalid", "true");
    show(err, msg);
    input.focus();
  } finally {
    $("enable").disabled = false;
  }
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
