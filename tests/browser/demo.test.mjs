// End-to-end test of the browser demo (`/demo/`) in Debian's headless Chromium, driven by
// playwright-core (no browser download). Builds and starts `keymaster serve --demo` on a free
// port with a fresh database, then walks the demo as a person would and saves a screenshot of each
// step to docs/screenshots/.
//
// Run: npm ci && npm test (in tests/browser), or .ci/browser.sh from the repository root.
// KEYMASTER_BIN=path skips the cargo build; CHROMIUM=path picks another browser binary.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
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
  await auth.getByRole("button", { name: "Make key and get code" }).click();
  await auth.locator("#code").filter({ hasText: /\d{4}-\d{4}-\d{4}-\d{4}/ }).waitFor();
  const code = (await auth.locator("#code").textContent()).trim();
  const fingerprint = (await auth.locator("#fingerprint").textContent()).trim();
  assert.equal(await auth.locator("#alg").textContent(), "Ed25519");
  assert.match(fingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/);
  await auth.locator("#qr svg path").waitFor();
  await auth.locator("#events li[data-type='key.deposited']").waitFor();
  await shot(auth, "1-authenticator-code.png");
  // The QR code holds the code alone (zbarimg, from Debian's zbar-tools, reads it).
  const qrPng = join(tmp, "qr.png");
  await auth.locator("#qr").screenshot({ path: qrPng });
  const decoded = execFileSync("zbarimg", ["-q", "--raw", qrPng], {
    encoding: "utf8", stdio: ["ignore", "pipe", "ignore"],
  }).trim();
  assert.equal(decoded, code.replace(/-/g, ""));

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

  // 3. The right code enables two-factor sign-in with the authenticator's key.
  await app.getByLabel("Code from your authenticator").fill(code);
  await app.getByRole("button", { name: "Enable two-factor sign-in" }).click();
  await app.getByText("Two-factor sign-in enabled").waitFor();
  assert.equal((await app.locator("#enrolled-fingerprint").textContent()).trim(), fingerprint);
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
  await app.getByLabel("Code from your authenticator").fill(code.replace(/-/g, " "));
  await app.getByRole("button", { name: "Enable two-factor sign-in" }).click();
  await app.getByText("Two-factor sign-in enabled").waitFor();
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
