// Generated from sdk/typescript/src/client.ts (keymaster-client 0.1.0) by sdk/typescript/scripts/demo-assets.mjs; do not edit.
// The three clients of the API — operator (AdminClient), client application and key holder
// (DeviceClient), outside service (ServiceClient) — on one piece of HTTP plumbing (Conn: base
// URL, bearer token, timeouts, problem bodies to errors) over the platform's fetch. Response
// bodies are returned as the API's JSON objects, with the API's field names.
import { matchesKey, parseCodeUri } from "./code.js";
import { fromBase64, toBase64Url } from "./bytes.js";
import { errorFromResponse, KeymasterError, KeyMismatch, SasMismatch, SasTimeout } from "./errors.js";
import { commitmentMatches, decodeNonce, sas, sasNonce } from "./sas.js";
import { spkiFromJwk, spkiFromOpenssh, spkiFromPem } from "./spki.js";
import { SseParser } from "./sse.js";
const DEFAULT_TIMEOUT_MS = 30_000;
/** The server sends a keep-alive comment every 15 s; a stream silent for this long is dead. */
const STREAM_IDLE_MS = 60_000;
class Conn {
    base;
    timeoutMs;
    fetch;
    #token;
    constructor(url, token, options) {
        let parsed;
        try {
            parsed = new URL(url);
        }
        catch {
            throw new TypeError(`invalid server URL ${JSON.stringify(url)}`);
        }
        if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
            throw new TypeError(`invalid server URL ${JSON.stringify(url)}: expected http:// or https://`);
        }
        this.base = url.replace(/\/+$/, "");
        this.#token = token;
        this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
        this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    }
    /** The URL of `segments` below the base; each is percent-encoded, so an id cannot change the path's shape. */
    url(segments, query) {
        let url = this.base + segments.map((s) => "/" + encodeURIComponent(s)).join("");
        const params = Object.entries(query ?? {}).filter((e) => e[1] !== undefined);
        if (params.length > 0)
            url += "?" + new URLSearchParams(params.map(([k, v]) => [k, String(v)])).toString();
        return url;
    }
    headers(token) {
        return { authorization: `Bearer ${token ?? this.#token}` };
    }
    /** Sends a request; the JSON body of a 2xx answer (undefined for 204), or throws the answer's error. */
    async call(method, segments, options = {}) {
        const headers = this.headers(options.token);
        if (options.body !== undefined)
            headers["content-type"] = "application/json";
        let response;
        try {
            response = await this.fetch(this.url(segments, options.query), {
                method,
                headers,
                body: options.body !== undefined ? JSON.stringify(options.body) : null,
                signal: AbortSignal.timeout(this.timeoutMs),
            });
        }
        catch (err) {
            throw new KeymasterError(`cannot reach the key master: ${String(err)}`, { cause: err });
        }
        if (!response.ok)
            throw await errorFromResponse(response);
        const text = await response.text();
        if (response.status === 204 || text === "")
            return undefined;
        try {
            return JSON.parse(text);
        }
        catch {
            throw new KeymasterError("unexpected answer from the key master: not JSON", { status: response.status });
        }
    }
}
/** `fields` without the undefined ones (the API refuses unknown fields, and `null` is not "absent" everywhere). */
function defined(fields) {
    return Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined));
}
/** The operator's calls under `/v1/admin`, with the admin token. */
export class AdminClient {
    #conn;
    constructor(url, token, options = {}) {
        this.#conn = new Conn(url, token, options);
    }
    /** `POST /v1/admin/tenants` → `{id, name, webhook_secret}`. */
    createTenant(name, webhookUrl) {
        return this.#conn.call("POST", ["v1", "admin", "tenants"], { body: defined({ name, webhook_url: webhookUrl }) });
    }
    /** `POST /v1/admin/tenants/{id}/app-keys` → `{id, token}` (a `kma_` key). */
    createAppKey(tenantId) {
        return this.#conn.call("POST", ["v1", "admin", "tenants", tenantId, "app-keys"]);
    }
    /** `DELETE /v1/admin/app-keys/{id}`. */
    async deleteAppKey(appKeyId) {
        await this.#conn.call("DELETE", ["v1", "admin", "app-keys", appKeyId]);
    }
    /** `POST /v1/admin/services` → `{id, name, token}` (a `kms_` key). */
    createService(name, domains = [], allowedCidrs = []) {
        return this.#conn.call("POST", ["v1", "admin", "services"], {
            body: { name, domains, allowed_cidrs: allowedCidrs },
        });
    }
    /** `DELETE /v1/admin/services/{id}`. */
    async deleteService(serviceId) {
        await this.#conn.call("DELETE", ["v1", "admin", "services", serviceId]);
    }
    /** `GET /v1/admin/audit` → `{entries}`, newest first. */
    audit(limit = 100, before) {
        return this.#conn.call("GET", ["v1", "admin", "audit"], { query: { limit, before } });
    }
}
/**
 * A client application: deposits keys with its tenant's `kma_` app key, and follows, re-codes
 * and revokes each key with the `holder_token` its deposit returned.
 */
export class DeviceClient {
    #conn;
    constructor(url, appKey, options = {}) {
        this.#conn = new Conn(url, appKey, options);
    }
    /** `POST /v1/keys` → the deposit body (`id`, `code`, `code_display`, `code_uri`, `holder_token`, …). */
    deposit(options) {
        const body = defined({
            public_key: options.publicKey,
            jwk: options.jwk,
            secret: options.secret,
            generate: options.generate,
            label: options.label,
            policy: options.policy,
            notify: options.notify,
            code_format: options.codeFormat,
            proof: options.proof,
            sas_commitment: options.sasCommitment,
        });
        return this.#conn.call("POST", ["v1", "keys"], { body });
    }
    /** `GET /v1/keys/{id}`: status, counters and `history`. */
    status(keyId, holderToken) {
        return this.#conn.call("GET", ["v1", "keys", keyId], { token: holderToken });
    }
    /** `POST /v1/keys/{id}/code`: a fresh code (and `code_uri`); the old one dies at once. */
    recode(keyId, holderToken) {
        return this.#conn.call("POST", ["v1", "keys", keyId, "code"], { token: holderToken });
    }
    /**
     * `POST /v1/keys/{id}/sas`: reveals the device nonce `nd` (the one whose commitment went with
     * the deposit) for the retrieval a `sas.requested` event named. Before the service asked, the
     * answer is `409 sas_not_requested`.
     */
    async revealSas(keyId, holderToken, retrievalId, nd) {
        await this.#conn.call("POST", ["v1", "keys", keyId, "sas"], {
            token: holderToken,
            body: { retrieval_id: retrievalId, nonce: toBase64Url(nd) },
        });
    }
    /** `DELETE /v1/keys/{id}`: the key is gone at once. */
    async revoke(keyId, holderToken) {
        await this.#conn.call("DELETE", ["v1", "keys", keyId], { token: holderToken });
    }
    /**
     * `GET /v1/keys/{id}/events`: the key's events as they happen.
     *
     * A dropped connection is resumed with `Last-Event-ID` (after 250 ms, doubling to at most
     * 5 s; after `maxReconnects` failures in a row the error is thrown). When the server ends the
     * stream, it is asked once more from the last event: an empty answer means the key is gone
     * and its last event was sent, and the iterator ends. A refusal (401, 404, 429) is thrown as
     * the matching error. Breaking out of the loop closes the connection.
     *
     * @example
     * for await (const event of device.events(key.id, key.holder_token)) {
     *   if (event.type === "key.retrieved") console.log("retrieved by", event.data.service?.name);
     * }
     */
    async *events(keyId, holderToken, options = {}) {
        const conn = this.#conn;
        let last = options.lastEventId;
        let failures = 0;
        const maxReconnects = options.maxReconnects ?? 5;
        for (;;) {
            if (options.signal?.aborted)
                return;
            const headers = { ...conn.headers(holderToken), accept: "text/event-stream" };
            if (last !== undefined)
                headers["last-event-id"] = last;
            const abort = new AbortController();
            const stop = () => abort.abort();
            options.signal?.addEventListener("abort", stop);
            let idle;
            const watch = () => {
                clearTimeout(idle);
                idle = setTimeout(() => abort.abort(new Error("the event stream was silent too long")), STREAM_IDLE_MS);
            };
            let received = false;
            let reader;
            try {
                watch();
                let response;
                try {
                    response = await conn.fetch(conn.url(["v1", "keys", keyId, "events"]), { headers, signal: abort.signal });
                }
                catch (err) {
                    throw new StreamBroke(err);
                }
                if (!response.ok)
                    throw await errorFromResponse(response);
                const type = response.headers.get("content-type") ?? "";
                if (!type.startsWith("text/event-stream") || !response.body) {
                    throw new KeymasterError(`the key master answered the event stream with ${JSON.stringify(type)}`);
                }
                reader = response.body.getReader();
                const parser = new SseParser();
                for (;;) {
                    let chunk;
                    try {
                        chunk = await reader.read();
                    }
                    catch (err) {
                        throw new StreamBroke(err);
                    }
                    if (chunk.done)
                        break;
                    watch();
                    for (const message of parser.push(chunk.value)) {
                        let event;
                        try {
                            event = JSON.parse(message.data);
                        }
                        catch {
                            throw new KeymasterError("unreadable event from the key master");
                        }
                        if (message.id !== null)
                            last = message.id;
                        received = true;
                        failures = 0;
                        yield event;
                    }
                }
            }
            catch (err) {
                if (!(err instanceof StreamBroke))
                    throw err;
                if (options.signal?.aborted)
                    return;
                failures += 1;
                if (failures > maxReconnects) {
                    throw new KeymasterError(`the event stream broke off: ${String(err.cause)}`, { cause: err.cause });
                }
                await new Promise((resolve) => setTimeout(resolve, Math.min(250 * 2 ** (failures - 1), 5000)));
                continue;
            }
            finally {
                clearTimeout(idle);
                options.signal?.removeEventListener("abort", stop);
                // Closes the connection when the consumer stops early or the stream failed.
                abort.abort();
                reader?.releaseLock();
            }
            if (!received)
                return;
        }
    }
}
/** A transport failure of the event stream, to be answered by reconnecting. */
class StreamBroke extends Error {
    constructor(cause) {
        super("event stream broke off", { cause });
    }
}
/**
 * An outside service: previews and retrieves keys by code or code URI with its `kms_` service
 * key, checks the key received against the code URI, confirms and disputes.
 */
export class ServiceClient {
    #conn;
    constructor(url, serviceKey, options = {}) {
        this.#conn = new Conn(url, serviceKey, options);
    }
    /**
     * `POST /v1/retrievals` → the retrieval body. `code` is a code as typed or a code URI
     * (`keymaster:<code>?fp=…`, what the QR code holds). It is checked offline first: a mistyped
     * code throws {@link InvalidCode} and nothing is sent. When the URI carries `fp`, SHA-256 over
     * the SPKI of the key received (from its PEM, OpenSSH and JWK forms, each) must equal it;
     * otherwise the retrieval is disputed (`key_mismatch`) and {@link KeyMismatch} is thrown: the
     * key is never returned.
     */
    async retrieve(code, options = {}) {
        const uri = parseCodeUri(code);
        const body = defined({ code, password: options.password, context: options.context });
        const retrieved = await this.#conn.call("POST", ["v1", "retrievals"], { body });
        if (uri.fp === null || (await retrievalMatches(uri, retrieved)))
            return retrieved;
        let disputed = true;
        try {
            await this.dispute(retrieved.retrieval_id, "key_mismatch");
        }
        catch {
            disputed = false;
        }
        throw new KeyMismatch(retrieved.retrieval_id, disputed);
    }
    /**
     * `POST /v1/retrievals/preview` → who deposited the key, when and from which network,
     * consuming nothing. It fails exactly as the retrieval would and counts against the same
     * failure budget.
     */
    async preview(code, options = {}) {
        parseCodeUri(code);
        const body = defined({ code, password: options.password, context: options.context });
        return this.#conn.call("POST", ["v1", "retrievals", "preview"], { body });
    }
    /** `POST /v1/retrievals/{id}/confirm`: receipt of a key held for confirmation. */
    async confirm(retrievalId) {
        await this.#conn.call("POST", ["v1", "retrievals", retrievalId, "confirm"]);
    }
    /** `POST /v1/retrievals/{id}/dispute`: the holder is told with `key.disputed`. */
    async dispute(retrievalId, reason) {
        await this.#conn.call("POST", ["v1", "retrievals", retrievalId, "dispute"], { body: { reason } });
    }
    /**
     * `POST /v1/retrievals/{id}/sas`: asks the device for its SAS nonce, sending the service's
     * nonce `ns` (32 bytes, {@link sasNonce}); the device is told with `sas.requested`.
     */
    async requestSas(retrievalId, ns) {
        await this.#conn.call("POST", ["v1", "retrievals", retrievalId, "sas"], { body: { nonce: toBase64Url(ns) } });
    }
    /**
     * `GET /v1/retrievals/{id}/sas`: both nonces as far as they are known (`device_nonce` is
     * absent until the device reveals it). Check the device's nonce against the retrieval's
     * `sas_commitment` before computing the SAS ({@link verifySas} does all of it).
     */
    sasNonces(retrievalId) {
        return this.#conn.call("GET", ["v1", "retrievals", retrievalId, "sas"]);
    }
    /**
     * The service's whole side of the SAS exchange for a key just retrieved: sends a fresh nonce,
     * waits up to `timeoutMs` (default 120 000) for the device to reveal its own, checks it
     * against the retrieval's `sas_commitment` and returns the six digits over the key bytes
     * received (the DER SPKI, or a `secret`'s bytes) — show them ({@link formatSas}) and have the
     * person compare them with the device's before using the key.
     *
     * A retrieval without a commitment is refused like a nonce that does not open it (a stripped
     * commitment would let a key master search nonces offline): the retrieval is disputed
     * (`sas_mismatch`) and {@link SasMismatch} is thrown. No reveal in time throws
     * {@link SasTimeout}.
     */
    async verifySas(retrieved, options = {}) {
        const rid = retrieved.retrieval_id;
        const commitment = retrieved.sas_commitment;
        // A commitment that is not 32 bytes of base64url is refused like none at all, before asking.
        if (!commitment || !isNonce(commitment)) {
            throw await this.#refuseSas(rid, "the key was deposited without a SAS commitment");
        }
        const key = retrievedKeyBytes(retrieved);
        const ns = sasNonce();
        await this.requestSas(rid, ns);
        const deadline = Date.now() + (options.timeoutMs ?? 120_000);
        let revealed;
        for (;;) {
            revealed = (await this.sasNonces(rid)).device_nonce;
            if (revealed)
                break;
            if (Date.now() >= deadline)
                throw new SasTimeout(rid);
            await new Promise((resolve) => setTimeout(resolve, 500));
        }
        let nd = null;
        try {
            nd = decodeNonce(revealed);
        }
        catch {
            nd = null;
        }
        if (nd === null || !(await commitmentMatches(commitment, nd))) {
            throw await this.#refuseSas(rid, "the device's SAS nonce does not open its commitment");
        }
        return sas(key, nd, ns);
    }
    async #refuseSas(retrievalId, why) {
        let disputed = true;
        try {
            await this.dispute(retrievalId, "sas_mismatch");
        }
        catch {
            disputed = false;
        }
        return new SasMismatch(retrievalId, why, disputed);
    }
}
function isNonce(text) {
    try {
        decodeNonce(text);
        return true;
    }
    catch {
        return false;
    }
}
/** The bytes a SAS is computed over: the DER SPKI of a public key, or a secret's bytes. */
function retrievedKeyBytes(retrieved) {
    if (retrieved.public_key_pem)
        return spkiFromPem(retrieved.public_key_pem);
    if (retrieved.secret)
        return fromBase64(retrieved.secret);
    throw new KeymasterError("the retrieval holds no key", { code: "decode" });
}
/**
 * Whether every form of the key in `retrieved` is the key `uri` commits to. A retrieval without
 * a PEM (a `secret`) cannot match a commitment; a form that cannot be read does not match.
 */
async function retrievalMatches(uri, retrieved) {
    if (!retrieved.public_key_pem)
        return false;
    try {
        const forms = [Promise.resolve(spkiFromPem(retrieved.public_key_pem))];
        if (retrieved.openssh)
            forms.push(spkiFromOpenssh(retrieved.openssh));
        if (retrieved.jwk)
            forms.push(spkiFromJwk(retrieved.jwk));
        for (const spki of await Promise.all(forms)) {
            if (!(await matchesKey(uri, spki)))
                return false;
        }
        return true;
    }
    catch {
        return false;
    }
}
