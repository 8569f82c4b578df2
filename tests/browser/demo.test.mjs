// End-to-end test of the browser demo (`/demo/`) in Debian's headless Chromium, driven by
// playwright-core (no browser download). Builds and starts `keymaster serve --demo` on a free
// port with a fresh database, then walks the demo as a person would and saves a screenshot of each
// step to docs/screenshots/: the typed code, the verified handoff (the QR code's code URI with
// the key commitment, the preview before claiming, the six digits on both pages), a key and a
// SAS commitment swapped between the example app and keymaster, the sign-in, and "Enrol by
// scanning" (the example app's enrolment request as QR code, the authenticator's "Scan a code").
//
// Run: npm ci && npm test (in tests/browser), or .ci/browser.sh from the repository root.
// KEYMASTER_BIN=path skips the cargo build; CHROMIUM=path picks another browser binary.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { createHash, generateKeyPairSync, randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import net from "node:net";
import { chromium } from "playwright-core";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const shots = join(root, "docs/screenshots");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const ADMIN_TOKEN = "browser-test-admin-token-0123456789";
const STEP = 20_000; // longest wait for any one thing on a page, in ms

let server, base, browser, tmp;
const problems = []; // console errors, CSP violations and page errors, from every page

function keymasterBinary() {
  if (process.env.KEYMASTER_BIN) return process.env.KEYMASTER_BIN;
  const out = execFileSync(
    "cargo", ["build", "--quiet", "--bin", "keymaster", "--message-format=json"],
    { cwd: root, encoding: "utf8", maxBuffer: 64 << 20, stdio: ["ignore", "pipe", "inherit"] });
  for (const line of out.trim().split("\n").reverse()) {
    const msg = JSON.parse(line);
    if (msg.reason === "compiler-artifact" && msg.executable && msg.target.name === "keymaster") {
      return msg.executable;
    }
  }
  throw new Error("cargo build did not report the keymaster binary");
}

function freePort() {
  return new Promise((ok, fail) => {
    const s = net.createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

async function startServer(bin) {
  const port = await freePort();
  tmp = mkdtempSync(join(tmpdir(), "keymaster-browser-"));
  const env = { ...process.env, KEYMASTER_ADMIN_TOKEN: ADMIN_TOKEN };
  delete env.KEYMASTER_DEMO;
  // The demo is off unless asked for.
  server = spawn(bin, ["serve", "--demo", "--listen", `127.0.0.1:${port}`, "--database", join(tmp, "km.db")],
    { cwd: tmp, env, stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`keymaster did not start:\n${log}`)), 30_000);
    server.stderr.on("data", (d) => {
      log += d;
      if (log.includes("keymaster listening on")) { clearTimeout(timer); ok(); }
    });
    server.once("exit", (code) => { clearTimeout(timer); fail(new Error(`keymaster exited ${code}:\n${log}`)); });
  });
  server.removeAllListeners("exit");
  return `http://127.0.0.1:${port}`;
}

async function newPage(context, path) {
  const page = await context.newPage();
  page.setDefaultTimeout(STEP);
  page.on("console", (m) => {
    // Refused loads the test provokes (a used code, a wrong signature) are expected; any
    // other error, such as a CSP violation, is a failure.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push(`${path}: console: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`${path}: ${e.message}`));
  await page.goto(base + path);
  return page;
}

// The challenge the example app shows, once its request has come back.
async function challengeOf(app) {
  await app.locator("#challenge-box").waitFor();
  await app.waitForFunction(() => document.getElementById("challenge").value.length > 0);
  return app.locator("#challenge").inputValue();
}

const shot = (page, name) => page.screenshot({ path: join(shots, name), fullPage: true });

const b64url = (bytes) => Buffer.from(bytes).toString("base64url");

// The authenticator's QR code, read back with zbarimg (Debian's zbar-tools).
async function scanQr(auth, name) {
  const png = join(tmp, name);
  await auth.locator("#qr").screenshot({ path: png });
  return execFileSync("zbarimg", ["-q", "--raw", png], {
    encoding: "utf8", stdio: ["ignore", "pipe", "ignore"],
  }).trim();
}

// Makes a key in the authenticator and returns its code, fingerprint and what its QR code holds.
async function makeKey(auth) {
  await auth.getByRole("button", { name: "Make key and get code" }).click();
  await auth.locator("#code").filter({ hasText: /\d{4}-/ }).waitFor();
  await auth.locator("#qr svg path").waitFor();
  await auth.locator("#events li[data-type='key.deposited']").waitFor();
  const code = (await auth.locator("#code").textContent()).trim();
  const fingerprint = (await auth.locator("#fingerprint").textContent()).trim();
  return { code, fingerprint, uri: await scanQr(auth, `qr-${code}.png`) };
}

// The example app takes `code` (typed or scanned) up to the question "Add the key …?".
async function previewIn(app, code) {
  await app.getByLabel("Code from your authenticator").fill(code);
  await app.getByRole("button", { name: "Enable two-factor sign-in" }).click();
  await app.locator("#preview").waitFor();
}

// The six digits both pages show, once both show them; asserts they are equal.
async function sasOnBothPages(app, auth) {
  await app.locator("#compare").waitFor();
  await auth.locator("#sas-box").waitFor();
  const shown = (await app.locator("#sas").textContent()).trim();
  assert.match(shown, /^\d{3} \d{3}$/);
  assert.equal((await auth.locator("#sas").textContent()).trim(), shown);
  return shown;
}

// Claims the key after the preview, compares the six digits and confirms them.
async function addAndConfirm(app, auth) {
  await app.getByRole("button", { name: "Add this key" }).click();
  const sas = await sasOnBothPages(app, auth);
  await app.getByRole("button", { name: "They match" }).click();
  await app.getByText("Two-factor sign-in enabled").waitFor();
  return sas;
}

// Answers the example app's calls to `path` with `change` applied to the JSON body keymaster
// gave: a party in the middle between the example service and the key master.
async function tamper(app, path, change) {
  await app.route(`**${path}`, async (route) => {
    const resp = await route.fetch();
    const body = await resp.json();
    if (resp.ok()) change(body);
    await route.fulfill({ response: resp, json: body });
  });
}

before(async () => {
  mkdirSync(shots, { recursive: true });
  base = await startServer(keymasterBinary());
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
});

after(async () => {
  if (browser) await browser.close();
  if (server) {
    server.kill("SIGTERM");
    await new Promise((ok) => (server.exitCode !== null ? ok() : server.once("exit", ok)));
  }
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test("enrol, see the live retrieval, sign in, and catch a typo (Ed25519, pages talk)", async () => {
  const context = await browser.newContext({
    viewport: { width: 412, height: 860 }, userDataDir: undefined,
  });
  const auth = await newPage(context, "/demo/authenticator.html");

  // 1. The authenticator makes a key and deposits it.
  const { code, fingerprint, uri } = await makeKey(auth);
  assert.match(code, /^\d{4}-\d{4}-\d{4}-\d{4}$/);
  assert.equal(await auth.locator("#alg").textContent(), "Ed25519");
  assert.match(fingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/);
  await shot(auth, "1-authenticator-code.png");
  // The QR code holds the code URI: the code and the key's commitment.
  assert.equal(uri, `keymaster:${code.replace(/-/g, "")}?fp=${fingerprint.slice(7).replace(/\+/g, "-").replace(/\//g, "_")}`);

  // 2. A mistyped code is caught on the page: no request leaves it.
  const app = await newPage(context, "/demo/example-app.html");
  const enrolRequests = [];
  app.on("request", (r) => { if (r.url().endsWith("/demo/api/enrol")) enrolRequests.push(r); });
  const digits = code.replace(/-/g, "");
  const swapped = digits.slice(0, 5) + digits[6] + digits[5] + digits.slice(7);
  const typo = swapped !== digits ? swapped
    : digits.slice(0, 5) + ((+digits[5] + 1) % 10) + digits.slice(6);
  await app.getByLabel("Code from your authenticator").fill(typo);
  await app.getByRole("button", { name: "Enable two-factor sign-in" }).click();
  await app.locator("#code-error").filter({ hasText: "mistyped" }).waitFor();
  assert.equal(await app.getByLabel("Code from your authenticator").getAttribute("aria-invalid"), "true");
  await app.waitForTimeout(300);
  assert.equal(enrolRequests.length, 0, "a mistyped code must not be sent");
  await shot(app, "2-example-app-typo-caught.png");

  // 3. The right code, typed: the example app asks first, claims the key, and both pages show
  //    the same six digits (the typed path has no key commitment); confirmed, sign-in is on.
  await previewIn(app, code);
  assert.equal(enrolRequests.length, 0, "the key was claimed before the person said yes");
  const sas = await addAndConfirm(app, auth);
  assert.equal((await app.locator("#enrolled-fingerprint").textContent()).trim(), fingerprint);
  assert.match(await app.locator("#enrolled-checked").textContent(), new RegExp(`six digits ${sas}`));
  assert.doesNotMatch(await app.locator("#enrolled-checked").textContent(), /QR code/);
  assert.equal(enrolRequests.length, 1);
  await shot(app, "3-example-app-enabled.png");

  // 4. The authenticator hears about it, live.
  await auth.locator("#key-status").filter({ hasText: "Retrieved by example-web" }).waitFor();
  await auth.locator("#events li[data-type='key.retrieved']").waitFor();
  await shot(auth, "4-authenticator-retrieved.png");

  // 5. Sign in: the example app issues a challenge; the authenticator gets it over the
  //    pages' BroadcastChannel, signs it, and the signature comes back the same way.
  await app.getByRole("button", { name: "Sign in with my authenticator" }).click();
  const challenge = await challengeOf(app);
  assert.match(challenge, /^keymaster-demo-sign-in:[A-Za-z0-9_-]{43}$/);
  await shot(app, "5-example-app-challenge.png");
  await auth.locator("#challenge-note").filter({ hasText: "sign-in request" }).waitFor();
  assert.equal(await auth.locator("#challenge").inputValue(), challenge);
  await auth.getByRole("button", { name: "Sign", exact: true }).click();
  await auth.locator("#signature-box").waitFor();
  await shot(auth, "6-authenticator-signed.png");
  await app.waitForFunction(() => document.getElementById("signature").value.length > 0);
  await app.getByRole("button", { name: "Verify and sign in" }).click();
  await app.getByText("Signed in with your authenticator").waitFor();
  await shot(app, "7-example-app-signed-in.png");

  // 6. The same code a second time: the key is gone; the authenticator reports the attempt.
  await app.getByLabel("Code from your authenticator").fill(code);
  await app.getByRole("button", { name: "Enable two-factor sign-in" }).click();
  await app.locator("#code-error").filter({ hasText: "No key is waiting" }).waitFor();
  await context.close();
  assert.deepEqual(problems, []);
});

test("ECDSA P-256 key, a blocked attempt, challenge and signature copied by hand", async () => {
  const context = await browser.newContext({ viewport: { width: 1000, height: 900 } });
  const auth = await newPage(context, "/demo/authenticator.html?alg=p256");
  await auth.getByRole("button", { name: "Make key and get code" }).click();
  await auth.locator("#code").filter({ hasText: /\d{4}-/ }).waitFor();
  assert.equal(await auth.locator("#alg").textContent(), "ECDSA P-256");
  const code = (await auth.locator("#code").textContent()).trim();

  // Another enrolled service tries the code: the demo key is only for example-web, so the
  // authenticator reports a blocked attempt, live.
  const admin = { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" };
  const svc = await (await fetch(`${base}/v1/admin/services`, {
    method: "POST", headers: admin, body: JSON.stringify({ name: "intruder", domains: [], allowed_cidrs: [] }),
  })).json();
  const denied = await fetch(`${base}/v1/retrievals`, {
    method: "POST",
    headers: { authorization: `Bearer ${svc.token}`, "content-type": "application/json" },
    body: JSON.stringify({ code }),
  });
  assert.equal(denied.status, 403);
  await auth.locator("#key-status").filter({ hasText: "Blocked attempt by intruder" }).waitFor();

  const app = await newPage(context, "/demo/example-app.html");
  await previewIn(app, code.replace(/-/g, " "));
  await addAndConfirm(app, auth);
  assert.equal(await app.locator("#enrolled-alg").textContent(), "p256");
  assert.match(await app.locator("#enrolled-proven").textContent(), /^yes/);
  await auth.locator("#key-status").filter({ hasText: "Retrieved by example-web" }).waitFor();

  // A signature that does not match is refused.
  await app.getByRole("button", { name: "Sign in with my authenticator" }).click();
  await app.getByLabel("Signature from your authenticator").fill("A".repeat(96));
  await app.getByRole("button", { name: "Verify and sign in" }).click();
  await app.locator("#signin-error").filter({ hasText: "Sign-in failed" }).waitFor();

  // By hand: copy the challenge into the authenticator, the signature back.
  await app.getByRole("button", { name: "Sign in with my authenticator" }).click();
  const challenge = await challengeOf(app);
  await auth.getByLabel("Challenge shown by the example app").fill(challenge);
  await auth.getByRole("button", { name: "Sign", exact: true }).click();
  await auth.locator("#signature-box").waitFor();
  const signature = await auth.locator("#signature").inputValue();
  await app.getByLabel("Signature from your authenticator").fill(signature);
  await app.getByRole("button", { name: "Verify and sign in" }).click();
  await app.getByText("Signed in with your authenticator").waitFor();

  // The authenticator signs only sign-in challenges.
  await auth.getByLabel("Challenge shown by the example app").fill("keymaster-proof-of-possession:SHA256:x");
  await auth.getByRole("button", { name: "Sign", exact: true }).click();
  await auth.locator("#sign-error").filter({ hasText: "nothing was signed" }).waitFor();
  await context.close();
  assert.deepEqual(problems, []);
});

test("verified handoff: QR code with the key commitment, preview first, six digits on both pages", async () => {
  const context = await browser.newContext({ viewport: { width: 412, height: 860 } });
  const auth = await newPage(context, "/demo/authenticator.html");
  const { code, fingerprint, uri } = await makeKey(auth);

  // The QR code holds the code URI with the commitment to the key: SHA-256 over its SPKI,
  // which is what the fingerprint is, in base64url.
  const digits = code.replace(/-/g, "");
  const fp = Buffer.from(fingerprint.slice("SHA256:".length), "base64");
  assert.equal(uri, `keymaster:${digits}?fp=${b64url(fp)}`);
  assert.equal((await auth.locator("#code-uri").textContent()).trim(), uri);

  // The pages' SAS is the published test vector's (docs/security.md, "Verified handoff").
  const vector = await auth.evaluate(async () => {
    const m = await import("/demo/sdk/index.js");
    const hex = (h) => Uint8Array.from(h.match(/../g), (x) => parseInt(x, 16));
    const spki = hex("302a300506032b6570032100d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
    const nd = Uint8Array.from({ length: 32 }, (_, i) => i);
    const ns = Uint8Array.from({ length: 32 }, (_, i) => 0x20 + i);
    return [m.formatSas(await m.sas(spki, nd, ns)), await m.keyCommitment(spki), await m.sasCommitment(nd)];
  });
  assert.deepEqual(vector, [
    "119 503", "BuP9j9opu2CrWVV95h7bCuzbIxE0vjDnW0Vfjht5L6k", "Yw3NKWbEM2aRElRIu7JbT_QSpJxzLbLIq8G4WBvXEN0",
  ]);

  // Scanned into the example app: it shows who deposited the key, and declining is the
  // default (the focused button); declining claims nothing.
  const app = await newPage(context, "/demo/example-app.html");
  const enrolRequests = [];
  app.on("request", (r) => { if (r.url().endsWith("/demo/api/enrol")) enrolRequests.push(r); });
  await previewIn(app, uri);
  const question = await app.locator("#preview-q").textContent();
  assert.match(question, /^Add the key “demo phone” from keymaster demo, deposited (just now|\d+ seconds ago) from 127\.0\.0\.0\/24\?$/);
  assert.equal((await app.locator("#preview-fingerprint").textContent()).trim(), fingerprint);
  assert.equal(await app.evaluate(() => document.activeElement.id), "decline");
  await shot(app, "8-example-app-preview.png");
  await app.keyboard.press("Enter");
  await app.locator("#progress").filter({ hasText: "Not added" }).waitFor();
  assert.equal(enrolRequests.length, 0, "declining claimed the key");
  await auth.locator("#events li[data-type='key.previewed']").waitFor();
  assert.equal(await auth.locator("#events li[data-type='key.retrieved']").count(), 0);

  // Asked again and accepted: the key is claimed and checked against the QR code's commitment,
  // and both pages show the same six digits; the example app asks the person to compare.
  await previewIn(app, uri);
  await app.getByRole("button", { name: "Add this key" }).click();
  const sas = await sasOnBothPages(app, auth);
  assert.match(await app.locator("#compare-q").textContent(), /Are they these\?/);
  assert.equal(await app.getByRole("button", { name: "Enable two-factor sign-in" }).isDisabled(), false);
  assert.equal(await app.locator("#start-signin").isDisabled(), true, "sign-in on before the digits were confirmed");
  await auth.locator("#events li[data-type='sas.requested']").waitFor();
  await shot(app, "9-example-app-compare.png");
  await shot(auth, "10-authenticator-compare.png");
  await app.getByRole("button", { name: "They match" }).click();
  await app.getByText("Two-factor sign-in enabled").waitFor();
  const checked = await app.locator("#enrolled-checked").textContent();
  assert.match(checked, /the key matches the QR code’s commitment/);
  assert.match(checked, new RegExp(`you confirmed the six digits ${sas}`));
  assert.equal((await app.locator("#enrolled-fingerprint").textContent()).trim(), fingerprint);
  assert.equal(enrolRequests.length, 1);
  await shot(app, "11-example-app-verified.png");
  assert.equal(await auth.locator("#events li[data-type='key.disputed']").count(), 0);

  // And the key signs the person in.
  await app.getByRole("button", { name: "Sign in with my authenticator" }).click();
  await challengeOf(app);
  await auth.locator("#challenge-note").filter({ hasText: "sign-in request" }).waitFor();
  await auth.getByRole("button", { name: "Sign", exact: true }).click();
  await app.waitForFunction(() => document.getElementById("signature").value.length > 0);
  await app.getByRole("button", { name: "Verify and sign in" }).click();
  await app.getByText("Signed in with your authenticator").waitFor();
  await context.close();
  assert.deepEqual(problems, []);
});

test("a key swapped in the middle is refused and disputed; the authenticator is told", async () => {
  const context = await browser.newContext({ viewport: { width: 412, height: 860 } });
  const auth = await newPage(context, "/demo/authenticator.html");
  const { uri } = await makeKey(auth);
  const app = await newPage(context, "/demo/example-app.html");
  // Between the example service and keymaster, someone hands over another key, with every
  // fingerprint field made to fit it.
  const other = generateKeyPairSync("ed25519").publicKey;
  const otherSpki = other.export({ type: "spki", format: "der" });
  await tamper(app, "/demo/api/enrol", (body) => {
    body.public_key_pem = other.export({ type: "spki", format: "pem" });
    body.fingerprint = "SHA256:" + createHash("sha256").update(otherSpki).digest("base64").replace(/=+$/, "");
  });
  await previewIn(app, uri);
  await app.getByRole("button", { name: "Add this key" }).click();
  await app.locator("#refused").filter({ hasText: "This is not the key your QR code stands for" }).waitFor();
  await app.locator("#refused").filter({ hasText: "reported it to keymaster" }).waitFor();
  assert.equal(await app.locator("#enabled").isHidden(), true);
  assert.equal(await app.locator("#compare").isHidden(), true);
  assert.equal(await app.locator("#start-signin").isDisabled(), true);
  await shot(app, "12-example-app-key-mismatch.png");
  await auth.locator("#events li[data-type='key.disputed']").waitFor();
  await auth.locator("#key-status").filter({ hasText: "Disputed by example-web: the key it received is not the one your QR code commits to" }).waitFor();
  await shot(auth, "13-authenticator-disputed.png");
  await context.close();
  assert.deepEqual(problems, []);
});

test("a swapped SAS commitment is refused and disputed; differing digits are too", async () => {
  const context = await browser.newContext({ viewport: { width: 1000, height: 900 } });

  // The commitment the retrieval carries is replaced by one the party in the middle can open.
  const auth = await newPage(context, "/demo/authenticator.html");
  const { code } = await makeKey(auth);
  const app = await newPage(context, "/demo/example-app.html");
  await tamper(app, "/demo/api/enrol", (body) => {
    body.sas_commitment = b64url(createHash("sha256").update(randomBytes(32)).digest());
  });
  await previewIn(app, code);
  await app.getByRole("button", { name: "Add this key" }).click();
  await app.locator("#refused").filter({ hasText: "This is not the exchange your authenticator started" }).waitFor();
  assert.equal(await app.locator("#start-signin").isDisabled(), true);
  // The dispute comes after the authenticator revealed its nonce: it reads it from the key's
  // history once its event stream has ended.
  await auth.locator("#key-status").filter({ hasText: "Disputed by example-web: the six digits did not match" }).waitFor();
  await app.close();

  // The person says the digits differ: refused and disputed alike.
  const { code: second } = await makeKey(auth);
  const app2 = await newPage(context, "/demo/example-app.html");
  await previewIn(app2, second);
  await app2.getByRole("button", { name: "Add this key" }).click();
  await sasOnBothPages(app2, auth);
  await app2.getByRole("button", { name: "They differ" }).click();
  await app2.locator("#refused").filter({ hasText: "Refused: the six digits differ" }).waitFor();
  assert.equal(await app2.locator("#start-signin").isDisabled(), true);
  await auth.locator("#key-status").filter({ hasText: "Disputed by example-web: the six digits did not match" }).waitFor();
  assert.equal(await auth.locator("#sas-box").isHidden(), true);
  await context.close();
  assert.deepEqual(problems, []);
});

test("enrol by scanning: the example app shows a request, the authenticator says who asks and answers", async () => {
  const context = await browser.newContext({ viewport: { width: 1000, height: 900 } });
  const app = await newPage(context, "/demo/example-app.html");
  const auth = await newPage(context, "/demo/authenticator.html");

  // 1. example-web makes a request and shows its code URI as QR code and its code as text.
  await app.getByRole("button", { name: "Enrol by scanning" }).click();
  await app.locator("#request-qr svg path").waitFor();
  const shown = (await app.locator("#request-code").textContent()).trim();
  assert.match(shown, /^\d{4}-\d{4}-\d{4}-\d{4}$/);
  const png = join(tmp, "request-qr.png");
  await app.locator("#request-qr").screenshot({ path: png });
  const uri = execFileSync("zbarimg", ["-q", "--raw", png], {
    encoding: "utf8", stdio: ["ignore", "pipe", "ignore"],
  }).trim();
  assert.equal(uri, `keymaster:request:${shown.replace(/-/g, "")}`);
  assert.equal((await app.locator("#request-uri").textContent()).trim(), uri);
  await app.locator("#progress").filter({ hasText: "Waiting for your authenticator" }).waitFor();
  await shot(app, "14-example-app-request.png");

  // 2. A mistyped code is refused and nothing is asked.
  await auth.getByLabel("Scanned code").fill(uri.slice(0, -1) + ((+uri.slice(-1) + 1) % 10));
  await auth.getByRole("button", { name: "Scan a code" }).click();
  await auth.locator("#scan-error").waitFor();
  assert.equal(await auth.locator("#send-ask").isHidden(), true);

  // 3. The scanned URI, typed into the authenticator: it says who asks, and waits for a yes.
  await auth.getByLabel("Scanned code").fill(uri);
  await auth.getByRole("button", { name: "Scan a code" }).click();
  await auth.locator("#send-ask").waitFor();
  assert.equal((await auth.locator("#send-q").textContent()).trim(), "Send your key to example-web (example-web.localhost)?");
  assert.equal((await auth.locator("#send-label").textContent()).trim(), "example-web sign-in");
  assert.equal(await app.locator("#request").isVisible(), true, "nothing reached example-web before the yes");
  await shot(auth, "15-authenticator-send-ask.png");
  await auth.getByRole("button", { name: "Send my key" }).click();
  await auth.getByText("Key sent to example-web (example-web.localhost)").waitFor();
  const fingerprint = (await auth.locator("#sent-fingerprint").textContent()).trim();
  assert.match(fingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/);
  await shot(auth, "16-authenticator-sent.png");

  // 4. example-web's long-poll brings the key; sign-in is on with the key the authenticator made.
  await app.getByText("Two-factor sign-in enabled").waitFor();
  assert.equal((await app.locator("#enrolled-fingerprint").textContent()).trim(), fingerprint);
  assert.match(await app.locator("#enrolled-checked").textContent(), /you said yes/);
  assert.equal(await app.locator("#request").isHidden(), true);
  await shot(app, "17-example-app-enabled-by-scanning.png");

  // 5. Sign in with the key that answered the request.
  await app.getByRole("button", { name: "Sign in with my authenticator" }).click();
  const challenge = await challengeOf(app);
  await auth.locator("#challenge-note").filter({ hasText: "sign-in request" }).waitFor();
  assert.equal(await auth.locator("#challenge").inputValue(), challenge);
  await auth.getByRole("button", { name: "Sign", exact: true }).click();
  await app.waitForFunction(() => document.getElementById("signature").value.length > 0);
  await app.getByRole("button", { name: "Verify and sign in" }).click();
  await app.getByText("Signed in with your authenticator").waitFor();
  assert.equal((await app.locator("#signed-in-key").textContent()).trim(), fingerprint);

  // 6. The same code again: the request is answered, nobody is asked.
  await auth.getByLabel("Scanned code").fill(uri);
  await auth.getByRole("button", { name: "Scan a code" }).click();
  await auth.locator("#scan-error").filter({ hasText: "No service is waiting" }).waitFor();
  assert.equal(await auth.locator("#send-ask").isHidden(), true);
  await context.close();
  assert.deepEqual(problems, []);
});
