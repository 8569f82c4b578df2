// The package against a live `keymaster serve`: every method and error kind of the spec's
// "Client libraries" section, the code URI check with a dispute, device keys made with
// WebCrypto and proven, the event stream and its resumption, webhook verification with the
// tenant's secret, and rate limiting with retryAfter.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer, connect } from "node:net";
import { createHash, createHmac, generateKeyPairSync, randomBytes } from "node:crypto";
import {
  AdminClient,
  DeviceClient,
  ServiceClient,
  KeymasterError,
  InvalidRequest,
  InvalidCode,
  Unauthorized,
  Forbidden,
  NotFound,
  RateLimited,
  KeyMismatch,
  SasMismatch,
  SasTimeout,
  InvalidSignature,
  checkCode,
  keyCommitment,
  generateDeviceKey,
  signProof,
  verifyWebhook,
  sasNonce,
  sasCommitment,
  commitmentMatches,
  decodeNonce,
  toBase64Url,
  sas,
  formatSas,
} from "keymaster-client";
import { startServer, startReceiver, randomDigitsCode, FAILED_PER_MINUTE } from "./helpers.mjs";

let server, receiver, admin, tenant, device;

before(async () => {
  server = await startServer();
  receiver = await startReceiver();
  admin = new AdminClient(server.url, server.adminToken);
  tenant = await admin.createTenant("acme", receiver.url);
  const appKey = await admin.createAppKey(tenant.id);
  device = new DeviceClient(server.url, appKey.token);
});

after(async () => {
  await receiver?.close();
  await server?.stop();
});

/** A freshly enrolled service (its own failure budget) and its client. */
async function newService(name = "svc", domains, cidrs) {
  const created = await admin.createService(`${name}-${randomBytes(3).toString("hex")}`, domains, cidrs);
  return [created, new ServiceClient(server.url, created.token)];
}

async function rejectsWith(promise, Kind, code) {
  await assert.rejects(promise, (err) => {
    assert.ok(err instanceof Kind, `${err} is not a ${Kind.name}`);
    if (code !== undefined) assert.equal(err.code, code);
    return true;
  });
}

test("a WebCrypto device key is deposited with a proof, previewed and retrieved by code URI", async () => {
  for (const algorithm of ["p256", "ed25519"]) {
    const key = await generateDeviceKey(algorithm);
    const deposit = await device.deposit({
      publicKey: key.publicKeyPem,
      label: `laptop-${algorithm}`,
      proof: await signProof(key.privateKey, key.fingerprint),
    });
    // The server's fingerprint and commitment are those of the key the device made.
    assert.equal(deposit.fingerprint, key.fingerprint);
    assert.equal(deposit.code_uri, `keymaster:${deposit.code}?fp=${await keyCommitment(key.spki)}`);
    assert.equal(checkCode(deposit.code_display), deposit.code);
    const [, service] = await newService();

    const preview = await service.preview(deposit.code_uri);
    assert.equal(preview.key_id, deposit.id);
    assert.equal(preview.label, `laptop-${algorithm}`);
    assert.deepEqual(preview.tenant, { id: tenant.id, name: "acme" });
    assert.equal(preview.origin.network, "127.0.0.0/24");
    assert.equal(preview.proven, true);
    assert.equal((await device.status(deposit.id, deposit.holder_token)).status, "active");

    const retrieved = await service.retrieve(deposit.code_uri);
    assert.equal(retrieved.key_id, deposit.id);
    assert.equal(retrieved.proven, true);
    assert.equal(retrieved.public_key_pem.trim(), key.publicKeyPem.trim());
    const status = await device.status(deposit.id, deposit.holder_token);
    assert.equal(status.status, "retrieved");
    assert.deepEqual(
      status.history.map((e) => e.type).slice(0, 3),
      ["key.deposited", "key.previewed", "key.retrieved"],
    );
    await rejectsWith(service.retrieve(deposit.code_display), NotFound, "not_found");
  }
});

test("a swapped key is refused and disputed", async () => {
  const deposit = await device.deposit({ generate: "ed25519", label: "swap" });
  const other = await generateDeviceKey("p256");
  // A code URI committing to another key: what a service sees when the key master hands over a
  // key other than the one the device deposited.
  const forged = `keymaster:${deposit.code}?fp=${await keyCommitment(other.spki)}`;
  const [, service] = await newService();
  let mismatch;
  await assert.rejects(service.retrieve(forged), (err) => {
    mismatch = err;
    return err instanceof KeyMismatch && err instanceof KeymasterError && err.code === "key_mismatch";
  });
  assert.equal(mismatch.disputed, true);
  const status = await device.status(deposit.id, deposit.holder_token);
  const disputed = status.history.filter((e) => e.type === "key.disputed");
  assert.equal(disputed.length, 1);
  assert.equal(disputed[0].data.reason, "key_mismatch");
  assert.equal(disputed[0].data.retrieval_id, mismatch.retrievalId);
});

test("every form of other key types passes the code URI check", async () => {
  for (const [type, options, algorithm] of [
    ["rsa", { modulusLength: 2048 }, "rsa-2048"],
    ["x25519", {}, "x25519"],
    ["ec", { namedCurve: "P-384" }, "p384"],
  ]) {
    const { publicKey } = generateKeyPairSync(type, options);
    const deposit = await device.deposit({ publicKey: publicKey.export({ type: "spki", format: "pem" }) });
    const [, service] = await newService();
    const retrieved = await service.retrieve(deposit.code_uri);
    assert.equal(retrieved.algorithm, algorithm);
    assert.ok(retrieved.jwk);
  }
});

test("InvalidRequest kinds", async () => {
  const cases = [
    [{ generate: "dsa" }, "invalid_request"],
    [{ publicKey: "ssh-ed25519 AAAA not-a-key" }, "invalid_key"],
    [{ generate: "ed25519", proof: Buffer.alloc(64, 1).toString("base64") }, "invalid_proof"],
    [
      {
        publicKey:
          "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n",
      },
      "private_key_rejected",
    ],
    [{ generate: "ed25519", notify: { email: "me@example.net" } }, "email_not_configured"],
  ];
  for (const [options, code] of cases) {
    await assert.rejects(device.deposit(options), (err) => {
      assert.ok(err instanceof InvalidRequest, String(err));
      assert.equal(err.status, 400);
      assert.equal(err.code, code);
      assert.ok(err.detail);
      return true;
    });
  }
});

test("JWK, secret and SAS-commitment deposits", async () => {
  const [, service] = await newService();
  const { publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const jwk = publicKey.export({ format: "jwk" });
  const commitment = createHash("sha256").update(Buffer.alloc(32, 7)).digest("base64url");
  let deposit = await device.deposit({ jwk, label: "jwk", sasCommitment: commitment });
  let key = await service.retrieve(deposit.code_uri);
  assert.equal(key.jwk.x, jwk.x);
  assert.equal(key.jwk.y, jwk.y);
  assert.equal(key.sas_commitment, commitment);

  const secret = Buffer.alloc(32, 5).toString("base64");
  deposit = await device.deposit({ secret, label: "totp" });
  assert.equal(deposit.kind, "secret");
  assert.equal(deposit.code_uri ?? null, null);
  key = await service.retrieve(deposit.code_display);
  assert.equal(key.secret, secret);
});

test("revealSas: 409 before the service asks, then the service reads the nonce that opens the commitment", async () => {
  const [, service] = await newService();
  const { publicKey } = generateKeyPairSync("ed25519");
  const nd = sasNonce();
  const deposit = await device.deposit({
    publicKey: publicKey.export({ format: "pem", type: "spki" }),
    sasCommitment: await sasCommitment(nd),
  });
  const key = await service.retrieve(deposit.code_uri);
  const rid = key.retrieval_id;
  await rejectsWith(device.revealSas(deposit.id, deposit.holder_token, rid, nd), KeymasterError, "sas_not_requested");
  assert.equal((await service.sasNonces(rid)).device_nonce ?? null, null);
  const ns = sasNonce();
  await service.requestSas(rid, ns);
  await device.revealSas(deposit.id, deposit.holder_token, rid, nd);
  const nonces = await service.sasNonces(rid);
  const revealed = decodeNonce(nonces.device_nonce);
  assert.ok(await commitmentMatches(key.sas_commitment, revealed));
  assert.deepEqual(revealed, nd);
  assert.equal(nonces.service_nonce, toBase64Url(ns));
});

/** The device's side of a SAS exchange: reveals `nd` as soon as the service has asked. */
async function revealWhenAsked(deposit, rid, nd) {
  for (let i = 0; i < 100; i++) {
    try {
      await device.revealSas(deposit.id, deposit.holder_token, rid, nd);
      return;
    } catch (err) {
      if (!(err instanceof KeymasterError) || err.code !== "sas_not_requested") throw err;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error("the service never asked for the SAS");
}

test("verifySas: both ends compute the same six digits over the key", async () => {
  const [, service] = await newService();
  const { publicKey } = generateKeyPairSync("ed25519");
  const nd = sasNonce();
  const deposit = await device.deposit({
    publicKey: publicKey.export({ format: "pem", type: "spki" }),
    sasCommitment: await sasCommitment(nd),
  });
  const key = await service.retrieve(deposit.code_uri);
  const [digits] = await Promise.all([
    service.verifySas(key, { timeoutMs: 10_000 }),
    revealWhenAsked(deposit, key.retrieval_id, nd),
  ]);
  const ns = decodeNonce((await service.sasNonces(key.retrieval_id)).service_nonce);
  const spki = publicKey.export({ format: "der", type: "spki" });
  assert.equal(digits, await sas(new Uint8Array(spki), nd, ns));
  assert.match(formatSas(digits), /^\d{3} \d{3}$/);
});

test("verifySas: a revealed nonce swapped on the way is SasMismatch and disputed", async () => {
  // The server refuses a reveal that does not open the commitment, so the swap is done where a
  // key master in the middle would: in the answer of GET …/sas (through the client's fetch).
  const [created] = await newService();
  const swapping = async (input, init) => {
    const response = await fetch(input, init);
    if ((init?.method ?? "GET") !== "GET" || !String(input).endsWith("/sas")) return response;
    const body = await response.json();
    if (body.device_nonce) body.device_nonce = toBase64Url(sasNonce());
    return new Response(JSON.stringify(body), { status: response.status, headers: response.headers });
  };
  const service = new ServiceClient(server.url, created.token, { fetch: swapping });
  const { publicKey } = generateKeyPairSync("ed25519");
  const nd = sasNonce();
  const deposit = await device.deposit({
    publicKey: publicKey.export({ format: "pem", type: "spki" }),
    sasCommitment: await sasCommitment(nd),
  });
  const key = await service.retrieve(deposit.code_uri);
  const [outcome, revealed] = await Promise.allSettled([
    service.verifySas(key, { timeoutMs: 10_000 }),
    revealWhenAsked(deposit, key.retrieval_id, nd),
  ]);
  assert.equal(revealed.status, "fulfilled", String(revealed.reason));
  assert.equal(outcome.status, "rejected");
  assert.ok(outcome.reason instanceof SasMismatch, String(outcome.reason));
  assert.equal(outcome.reason.code, "sas_mismatch");
  assert.equal(outcome.reason.disputed, true);
  const history = (await device.status(deposit.id, deposit.holder_token)).history;
  assert.ok(history.some((e) => e.type === "key.disputed"), JSON.stringify(history));
});

test("verifySas: no commitment is SasMismatch at once, no reveal in time is SasTimeout", async () => {
  const [, service] = await newService();
  const { publicKey } = generateKeyPairSync("ed25519");
  const pem = publicKey.export({ format: "pem", type: "spki" });
  let deposit = await device.deposit({ publicKey: pem });
  let key = await service.retrieve(deposit.code_uri);
  await rejectsWith(service.verifySas(key, { timeoutMs: 10_000 }), SasMismatch, "sas_mismatch");

  deposit = await device.deposit({ publicKey: pem, sasCommitment: await sasCommitment(sasNonce()) });
  key = await service.retrieve(deposit.code_uri);
  await rejectsWith(service.verifySas(key, { timeoutMs: 300 }), SasTimeout, "sas_timeout");
});

test("other refusals are KeymasterErrors with status and code", async () => {
  await assert.rejects(device.deposit({ generate: "ed25519", label: "x".repeat(70_000) }), (err) => {
    assert.equal(err.constructor, KeymasterError);
    assert.equal(err.status, 413);
    assert.equal(err.code, "payload_too_large");
    return true;
  });
});

test("a refused event stream throws the refusal", async () => {
  const deposit = await device.deposit({ generate: "ed25519" });
  const events = device.events(deposit.id, "kmh_wrong");
  await rejectsWith(events.next(), Unauthorized, "unauthorized");
});

test("Unauthorized", async () => {
  await rejectsWith(new DeviceClient(server.url, "kma_nope").deposit({ generate: "ed25519" }), Unauthorized, "unauthorized");
  await rejectsWith(new ServiceClient(server.url, "kms_nope").retrieve(randomDigitsCode()), Unauthorized, "unauthorized");
  await rejectsWith(new AdminClient(server.url, "wrong").audit(), Unauthorized);
  const deposit = await device.deposit({ generate: "ed25519" });
  await rejectsWith(device.status(deposit.id, "kmh_wrong"), Unauthorized);
});

test("Forbidden names the rule", async () => {
  const [allowed] = await newService("allowed");
  const [, other] = await newService("other");
  let deposit = await device.deposit({ generate: "ed25519", policy: { services: [allowed.id] } });
  await rejectsWith(other.preview(deposit.code), Forbidden, "service_not_allowed");

  const [, service] = await newService("pw");
  deposit = await device.deposit({ generate: "p256", policy: { password: "hunter2" } });
  await rejectsWith(service.retrieve(deposit.code), Forbidden, "password_required");
  await rejectsWith(service.retrieve(deposit.code, { password: "wrong" }), Forbidden, "password_incorrect");
  const key = await service.retrieve(deposit.code_uri, { password: "hunter2", context: { country: "DE" } });
  assert.equal(key.algorithm, "p256");
});

test("RateLimited with retryAfter", async () => {
  const [, service] = await newService("limited");
  for (let i = 0; i < FAILED_PER_MINUTE; i++) {
    await rejectsWith(service.retrieve(randomDigitsCode()), NotFound, "not_found");
  }
  const deposit = await device.deposit({ generate: "ed25519" });
  for (const call of [(c) => service.retrieve(c), (c) => service.preview(c)]) {
    await assert.rejects(call(deposit.code), (err) => {
      assert.ok(err instanceof RateLimited, String(err));
      assert.equal(err.status, 429);
      assert.equal(err.code, "rate_limited");
      assert.ok(err.retryAfter >= 1 && err.retryAfter <= 60, String(err.retryAfter));
      return true;
    });
  }
  const [, fresh] = await newService("fresh");
  assert.equal((await fresh.retrieve(deposit.code)).key_id, deposit.id);
});

test("admin calls", async () => {
  const beta = await admin.createTenant("beta");
  assert.equal(beta.name, "beta");
  assert.match(beta.webhook_secret, /^whsec_/);
  const appKey = await admin.createAppKey(beta.id);
  assert.match(appKey.token, /^kma_/);
  const svc = await admin.createService("web", ["example.com"], ["127.0.0.0/8"]);
  assert.match(svc.token, /^kms_/);
  const { entries } = await admin.audit(5);
  assert.ok(entries.length >= 1 && entries.length <= 5);
  await admin.deleteAppKey(appKey.id);
  await rejectsWith(new DeviceClient(server.url, appKey.token).deposit({ generate: "ed25519" }), Unauthorized);
  await admin.deleteService(svc.id);
  await rejectsWith(admin.deleteService(svc.id), NotFound);
});

test("recode, revoke and confirm", async () => {
  const [, service] = await newService();
  const deposit = await device.deposit({ generate: "ed25519", codeFormat: "base32" });
  assert.equal(deposit.code.length, 24);
  const recoded = await device.recode(deposit.id, deposit.holder_token);
  assert.notEqual(recoded.code, deposit.code);
  assert.match(recoded.code_uri, /^keymaster:/);
  await rejectsWith(service.retrieve(deposit.code.toLowerCase()), NotFound);
  await device.revoke(deposit.id, deposit.holder_token);
  assert.equal((await device.status(deposit.id, deposit.holder_token)).status, "revoked");
  await rejectsWith(service.retrieve(recoded.code_uri), NotFound);

  const held = await device.deposit({ generate: "ed25519", policy: { require_confirmation: true } });
  const key = await service.retrieve(held.code_uri);
  assert.ok(key.confirm_by);
  assert.equal((await device.status(held.id, held.holder_token)).status, "awaiting_confirmation");
  await service.confirm(key.retrieval_id);
  const status = await device.status(held.id, held.holder_token);
  assert.equal(status.status, "retrieved");
  assert.ok(status.history.some((e) => e.type === "key.confirmed"));
});

test("the event stream: live, ended with the key, resumed by id", async () => {
  const deposit = await device.deposit({ generate: "ed25519", label: "events" });
  const [, service] = await newService();
  const seen = [];
  for await (const event of device.events(deposit.id, deposit.holder_token)) {
    seen.push(event);
    if (event.type === "key.deposited") await service.retrieve(deposit.code);
  }
  // The key is gone after its one retrieval: the stream sent key.retrieved and ended.
  assert.deepEqual(seen.map((e) => e.type), ["key.deposited", "key.retrieved"]);
  assert.match(seen[1].data.service.name, /^svc-/);
  assert.equal(seen[1].data.code, undefined);
  const resumed = [];
  for await (const e of device.events(deposit.id, deposit.holder_token, { lastEventId: seen[0].id })) resumed.push(e);
  assert.deepEqual(resumed.map((e) => e.id), [seen[1].id]);
});

test("breaking out of the stream closes it; an AbortSignal ends it", async () => {
  const deposit = await device.deposit({ generate: "ed25519" });
  // Four streams per key at most: five rounds would fail if a stream outlived its loop.
  for (let i = 0; i < 5; i++) {
    for await (const event of device.events(deposit.id, deposit.holder_token)) {
      assert.equal(event.type, "key.deposited");
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const controller = new AbortController();
  const types = [];
  const done = (async () => {
    for await (const event of device.events(deposit.id, deposit.holder_token, { signal: controller.signal })) {
      types.push(event.type);
      controller.abort();
    }
  })();
  await done;
  assert.deepEqual(types, ["key.deposited"]);
});

/**
 * A TCP proxy to the server that cuts its first connection (without a clean end of the HTTP
 * body) right after forwarding the first event; later connections pass through.
 */
async function cuttingProxy(target) {
  const { hostname, port } = new URL(target);
  const requests = [];
  const proxy = createServer((client) => {
    const cut = requests.length === 0;
    const upstream = connect(Number(port), hostname);
    client.once("data", (head) => requests.push(head.toString()));
    client.pipe(upstream);
    upstream.on("data", (data) => {
      client.write(data);
      if (cut && data.includes("key.deposited")) {
        client.destroy();
        upstream.destroy();
      }
    });
    upstream.on("end", () => client.end());
    upstream.on("error", () => client.destroy());
    client.on("error", () => upstream.destroy());
  });
  await new Promise((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${proxy.address().port}`, requests, close: () => proxy.close() };
}

test("the event stream resumes after a dropped connection", async () => {
  const deposit = await device.deposit({ generate: "ed25519", label: "resume" });
  const proxy = await cuttingProxy(server.url);
  const viaProxy = new DeviceClient(proxy.url, "kma_unused-for-streams");
  const [, service] = await newService();
  const seen = [];
  for await (const event of viaProxy.events(deposit.id, deposit.holder_token)) {
    seen.push(event);
    if (event.type === "key.deposited") await service.retrieve(deposit.code);
  }
  proxy.close();
  // No event lost, none twice, and the second connection asked to resume after the first.
  assert.deepEqual(seen.map((e) => e.type), ["key.deposited", "key.retrieved"]);
  assert.ok(proxy.requests.length >= 2);
  assert.ok(proxy.requests[1].toLowerCase().includes(`last-event-id: ${seen[0].id}`.toLowerCase()));
});

test("a webhook verified with the tenant's secret", async () => {
  const deposit = await device.deposit({ generate: "ed25519", label: "hooked" });
  const hook = await receiver.waitFor("key.deposited", deposit.id);
  const event = await verifyWebhook(tenant.webhook_secret, hook.headers, hook.body);
  assert.equal(event.type, "key.deposited");
  assert.equal(event.data.key_id, deposit.id);
  assert.equal(event.data.tenant_id, tenant.id);
  assert.equal(hook.headers["webhook-id"], event.id);
  // Also from a fetch-style Headers object and a string body.
  const asHeaders = new Headers(Object.entries(hook.headers).filter(([, v]) => typeof v === "string"));
  assert.equal((await verifyWebhook(tenant.webhook_secret, asHeaders, hook.body.toString())).id, event.id);

  const tampered = Buffer.from(hook.body.toString().replace("hooked", "hacked"));
  await rejectsWith(verifyWebhook(tenant.webhook_secret, hook.headers, tampered), InvalidSignature, "invalid_signature");
  const other = (await admin.createTenant("other")).webhook_secret;
  await rejectsWith(verifyWebhook(other, hook.headers, hook.body), InvalidSignature);
  const { ["webhook-signature"]: _, ...missing } = hook.headers;
  await rejectsWith(verifyWebhook(tenant.webhook_secret, missing, hook.body), InvalidSignature);
  await rejectsWith(
    verifyWebhook(tenant.webhook_secret, { ...hook.headers, "webhook-signature": "garbage" }, hook.body),
    InvalidSignature,
  );
  // A correctly signed but stale delivery (a replay) is refused by the timestamp tolerance.
  const stale = String(Math.floor(Date.now() / 1000) - 600);
  const key = Buffer.from(tenant.webhook_secret.slice("whsec_".length), "base64");
  const mac = createHmac("sha256", key).update(`${hook.headers["webhook-id"]}.${stale}.`).update(hook.body).digest("base64");
  await assert.rejects(
    verifyWebhook(tenant.webhook_secret, { ...hook.headers, "webhook-timestamp": stale, "webhook-signature": `v1,${mac}` }, hook.body),
    /too old/,
  );
  // The same signature is accepted when "now" is within 5 minutes of it: only the age failed.
  const then = new Date((Number(stale) + 60) * 1000);
  const replay = { ...hook.headers, "webhook-timestamp": stale, "webhook-signature": `v2,xx v1,${mac}` };
  assert.equal((await verifyWebhook(tenant.webhook_secret, replay, hook.body, { now: then })).id, event.id);
});
