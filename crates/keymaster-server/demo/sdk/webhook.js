// Generated from sdk/typescript/src/webhook.ts (keymaster-client 0.1.0) by sdk/typescript/scripts/demo-assets.mjs; do not edit.
// Verifying the key master's webhooks: Standard Webhooks signatures (`webhook-id`,
// `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`) under the tenant's
// `whsec_` secret, with WebCrypto's HMAC (whose verify compares in constant time) and the
// specification's 5-minute timestamp tolerance.
import { fromBase64 } from "./bytes.js";
import { InvalidSignature } from "./errors.js";
/** How far a webhook's timestamp may be from now, either way (the Standard Webhooks default). */
export const WEBHOOK_TOLERANCE_SECONDS = 5 * 60;
function header(headers, name) {
    if (typeof headers.get === "function")
        return headers.get(name) ?? undefined;
    const entries = Symbol.iterator in headers
        ? headers
        : Object.entries(headers);
    for (const [key, value] of entries) {
        if (key.toLowerCase() === name)
            return Array.isArray(value) ? value.join(", ") : value;
    }
    return undefined;
}
/**
 * The event a webhook delivered, after checking its signature with the tenant's
 * `webhook_secret` (`whsec_…`). `body` is the raw body exactly as received (a string or bytes).
 * Throws {@link InvalidSignature} when a header is missing, the timestamp is more than 5
 * minutes off, or no `v1` signature matches.
 */
export async function verifyWebhook(secret, headers, body, options = {}) {
    const id = header(headers, "webhook-id");
    const timestamp = header(headers, "webhook-timestamp");
    const signatures = header(headers, "webhook-signature");
    if (!id || !timestamp || !signatures)
        throw new InvalidSignature("missing webhook headers");
    if (!/^\d+$/.test(timestamp))
        throw new InvalidSignature("invalid webhook timestamp");
    const now = Math.floor((options.now ?? new Date()).getTime() / 1000);
    const age = now - Number(timestamp);
    if (age > WEBHOOK_TOLERANCE_SECONDS)
        throw new InvalidSignature("message timestamp too old");
    if (age < -WEBHOOK_TOLERANCE_SECONDS)
        throw new InvalidSignature("message timestamp too new");
    let keyBytes;
    try {
        keyBytes = fromBase64(secret.startsWith("whsec_") ? secret.slice(6) : secret);
    }
    catch {
        throw new InvalidSignature("the webhook secret is not base64");
    }
    if (keyBytes.length === 0)
        throw new InvalidSignature("the webhook secret is empty");
    const key = await crypto.subtle.importKey("raw", keyBytes, { name: "HMAC", hash: "SHA-256" }, false, [
        "verify",
    ]);
    const bodyBytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
    const signed = new Uint8Array([...new TextEncoder().encode(`${id}.${timestamp}.`), ...bodyBytes]);
    for (const versioned of signatures.split(" ")) {
        const [version, signature] = versioned.split(",", 2);
        if (version !== "v1" || !signature)
            continue;
        let mac;
        try {
            mac = fromBase64(signature);
        }
        catch {
            continue;
        }
        if (await crypto.subtle.verify("HMAC", key, mac, signed)) {
            let event;
            try {
                event = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bodyBytes));
            }
            catch {
                throw new InvalidSignature("webhook body is not JSON");
            }
            if (typeof event !== "object" || event === null)
                throw new InvalidSignature("webhook body is not an event");
            return event;
        }
    }
    throw new InvalidSignature("no matching webhook signature");
}
