// Test helpers: a real `keymaster serve` (fresh temporary data directory, a free port chosen by
// the server, an admin token; the binary is $KEYMASTER_BIN or the repository's
// target/debug/keymaster), a local webhook receiver, and codes with valid check digits.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, accessSync, constants } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { randomBytes, randomInt } from "node:crypto";

const here = dirname(fileURLToPath(import.meta.url));
/** Failed retrievals per minute on the test server: small, so the rate-limit test is quick. */
export const FAILED_PER_MINUTE = 5;

export async function startServer() {
  const bin = process.env.KEYMASTER_BIN || join(here, "..", "..", "..", "target", "debug", "keymaster");
  accessSync(bin, constants.X_OK);
  const dir = mkdtempSync(join(tmpdir(), "keymaster-ts-"));
  const adminToken = "adm_" + randomBytes(18).toString("base64url");
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("KEYMASTER_")));
  Object.assign(env, {
    KEYMASTER_ADMIN_TOKEN: adminToken,
    KEYMASTER_ALLOW_PRIVATE_WEBHOOKS: "true",
    KEYMASTER_WEBHOOK_BACKOFF_BASE: "100ms",
    KEYMASTER_FAILED_RETRIEVALS_PER_MINUTE: String(FAILED_PER_MINUTE),
  });
  const child = spawn(bin, ["serve", "--listen", "127.0.0.1:0", "--database", join(dir, "keymaster.db")], {
    cwd: dir,
    env,
    stdio: ["ignore", "ignore", "pipe"],
  });
  const log = [];
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("keymaster serve did not start:\n" + log.join("\n"))), 30_000);
    child.on("exit", (code) => reject(new Error(`keymaster serve exited (${code}):\n${log.join("\n")}`)));
    // Keep reading stderr so that the server never blocks on a full pipe.
    createInterface({ input: child.stderr }).on("line", (line) => {
      log.push(line);
      const at = line.indexOf("listening on http://");
      if (at >= 0) {
        clearTimeout(timer);
        resolve(line.slice(at + "listening on ".length).split(/\s/)[0]);
      }
    });
  });
  return {
    url,
    adminToken,
    async stop() {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A local HTTP endpoint that answers 204 to every POST and keeps the raw requests. */
export async function startReceiver() {
  const received = [];
  const waiters = new Set();
  const server = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(204).end();
      for (const w of waiters) w();
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/hook`,
    /** The first delivery of `type` for `keyId`. */
    async waitFor(type, keyId, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const hit = received.find((h) => {
          const event = JSON.parse(h.body.toString());
          return event.type === type && event.data.key_id === keyId;
        });
        if (hit) return hit;
        if (Date.now() > deadline) throw new Error(`no ${type} webhook for ${keyId}`);
        await new Promise((resolve) => {
          waiters.add(resolve);
          setTimeout(resolve, 200);
        });
      }
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

const DAMM = [
  [0, 3, 1, 7, 5, 9, 8, 6, 4, 2], [7, 0, 9, 2, 1, 5, 4, 8, 6, 3], [4, 2, 0, 6, 8, 7, 1, 3, 5, 9],
  [1, 7, 5, 0, 9, 8, 3, 4, 2, 6], [6, 1, 2, 3, 0, 4, 5, 9, 7, 8], [3, 6, 7, 4, 2, 0, 9, 5, 8, 1],
  [5, 8, 6, 9, 7, 2, 0, 1, 3, 4], [8, 9, 4, 5, 3, 6, 2, 0, 1, 7], [9, 4, 3, 8, 6, 1, 7, 2, 0, 5],
  [2, 5, 8, 1, 4, 3, 6, 7, 9, 0],
];
export const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
export const CHECK = CROCKFORD + "*~$=U";

/** A digits code with a valid Damm check digit that (almost surely) belongs to no key. */
export function randomDigitsCode() {
  const body = Array.from({ length: 15 }, () => randomInt(10));
  const check = body.reduce((i, d) => DAMM[i][d], 0);
  return body.join("") + check;
}

/** A base32 code with a valid mod-37 check symbol. */
export function randomBase32Code() {
  const body = Array.from({ length: 23 }, () => randomInt(32));
  const remainder = body.reduce((r, v) => (r * 32 + v) % 37, 0);
  return body.map((v) => CROCKFORD[v]).join("") + CHECK[remainder];
}
