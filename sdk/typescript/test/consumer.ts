// Compiled (not run) as a consumer of the published package would compile it: the
// declarations resolve through package.json's "exports" and docs/api.md's call shapes type-check.
import {
  AdminClient,
  DeviceClient,
  ServiceClient,
  KeymasterError,
  RateLimited,
  checkCode,
  generateDeviceKey,
  signProof,
  verifyWebhook,
  sas,
  formatSas,
  sasNonce,
  sasCommitment,
  type DepositResponse,
  type Event,
  type RetrievalResponse,
  type PreviewResponse,
} from "keymaster-client";

export async function walkthrough(url: string): Promise<void> {
  const admin = new AdminClient(url, "token");
  const tenant = await admin.createTenant("acme", "https://example.net/hook");
  const service = await admin.createService("web", ["example.com"], []);
  const device = new DeviceClient(url, (await admin.createAppKey(tenant.id)).token);
  const key = await generateDeviceKey("p256");
  const nd = sasNonce();
  const deposit: DepositResponse = await device.deposit({
    publicKey: key.publicKeyPem,
    label: "laptop",
    codeFormat: "base32",
    policy: { ttl_seconds: 600 },
    proof: await signProof(key.privateKey, key.fingerprint),
    sasCommitment: await sasCommitment(nd),
  });
  // A deposit that answers an enrolment request has no code; this one answers none.
  if (deposit.code === undefined) throw new Error("a deposit without a request has a code");
  const services = new ServiceClient(url, service.token);
  const preview: PreviewResponse = await services.preview(deposit.code_uri ?? deposit.code);
  const retrieved: RetrievalResponse = await services.retrieve(checkCode(deposit.code), { password: "p" });
  // @ts-expect-error: options are named as docs/api.md names them
  await services.retrieve(deposit.code, { pasword: "p" });
  // @ts-expect-error: a dispute reason is one of the API's
  await services.dispute(retrieved.retrieval_id, "because");
  await device.revealSas(deposit.id, deposit.holder_token, retrieved.retrieval_id, nd);
  const digits: string = formatSas(await sas(key.spki, nd, sasNonce()));
  void digits;
  for await (const event of device.events(deposit.id, deposit.holder_token, { lastEventId: "evt_1" })) {
    const e: Event = event;
    void e.data.key_id;
  }
  const hook: Event = await verifyWebhook(tenant.webhook_secret, new Headers(), "{}");
  try {
    await services.retrieve("x");
  } catch (err) {
    if (err instanceof RateLimited) void (err.retryAfter satisfies number | undefined);
    if (err instanceof KeymasterError) void (err.code satisfies string | undefined);
  }
  void preview.origin.network;
  void hook;
}
