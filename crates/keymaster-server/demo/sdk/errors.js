// Generated from sdk/typescript/src/errors.ts (keymaster-client 0.1.0) by sdk/typescript/scripts/demo-assets.mjs; do not edit.
// The SDK's errors: one base class that keeps the server's problem body (status, error
// code, detail, Retry-After) and one subclass per kind docs/api.md names, so that callers branch
// on classes or codes, never on message text.
/**
 * Any failure of a call: a problem answer of the server, or a check done on this side.
 * `status` is the HTTP status (undefined when no answer came or none was asked for), `code` the
 * API's error code (`not_found`, `rate_limited`, `key_mismatch`, …), `detail` the explanation,
 * `retryAfter` the seconds of a `Retry-After` header.
 */
export class KeymasterError extends Error {
    status;
    code;
    detail;
    retryAfter;
    problem;
    constructor(detail, options = {}) {
        super(`${options.status !== undefined ? `${options.status} ` : ""}${options.code ?? "error"}: ${detail}`, options.cause !== undefined ? { cause: options.cause } : undefined);
        this.name = new.target.name;
        this.status = options.status;
        this.code = options.code;
        this.detail = detail;
        this.retryAfter = options.retryAfter;
        this.problem = options.problem ?? {};
    }
}
/** 400: a malformed request (`invalid_request`, `invalid_key`, `invalid_proof`, `private_key_rejected`, …). */
export class InvalidRequest extends KeymasterError {
}
/** The code looks mistyped (length, alphabet, check symbol): found offline before any request was sent, or answered `400 invalid_code`. */
export class InvalidCode extends InvalidRequest {
}
/** 401: the token is missing, unknown or revoked. */
export class Unauthorized extends KeymasterError {
}
/** 403: a rule refused the request; `code` names it (`password_required`, `service_not_allowed`, …). */
export class Forbidden extends KeymasterError {
}
/** 404: no such key, code or retrieval for this credential. */
export class NotFound extends KeymasterError {
}
/** 429: too many failed retrievals (or streams, or generations); try again after `retryAfter` seconds. */
export class RateLimited extends KeymasterError {
}
/** The key handed over is not the one the code URI commits to: it was refused and, if `disputed`, reported with a dispute. */
export class KeyMismatch extends KeymasterError {
    retrievalId;
    disputed;
    constructor(retrievalId, disputed) {
        super(`the key received is not the one the code commits to (retrieval ${retrievalId}, ${disputed ? "disputed" : "the dispute could not be sent"}); it was refused`, { code: "key_mismatch" });
        this.retrievalId = retrievalId;
        this.disputed = disputed;
    }
}
/**
 * The SAS exchange cannot vouch for the key: it was deposited without a commitment, or the
 * nonce the device revealed does not open it. The retrieval was disputed (`sas_mismatch`) if
 * `disputed`; do not use the key.
 */
export class SasMismatch extends KeymasterError {
    retrievalId;
    disputed;
    constructor(retrievalId, why, disputed) {
        super(`${why} (retrieval ${retrievalId}, ${disputed ? "disputed" : "the dispute could not be sent"})`, {
            code: "sas_mismatch",
        });
        this.retrievalId = retrievalId;
        this.disputed = disputed;
    }
}
/** The device did not reveal its SAS nonce in time; nothing was disputed. */
export class SasTimeout extends KeymasterError {
    retrievalId;
    constructor(retrievalId) {
        super(`the device did not reveal its SAS nonce in time (retrieval ${retrievalId})`, { code: "sas_timeout" });
        this.retrievalId = retrievalId;
    }
}
/** A webhook whose signature, timestamp or headers do not verify. */
export class InvalidSignature extends KeymasterError {
    constructor(detail) {
        super(detail, { code: "invalid_signature" });
    }
}
const BY_STATUS = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    429: RateLimited,
};
/** The error for a non-2xx answer, reading its body. */
export async function errorFromResponse(response) {
    const status = response.status;
    const header = response.headers.get("retry-after");
    const retryAfter = header !== null && /^\s*\d+\s*$/.test(header) ? Number(header) : undefined;
    let problem;
    try {
        const body = await response.json();
        if (typeof body !== "object" || body === null || Array.isArray(body))
            throw new Error("not an object");
        problem = body;
    }
    catch {
        return new KeymasterError(`the key master answered ${status} without a problem body`, { status, retryAfter });
    }
    const code = typeof problem.code === "string" ? problem.code : undefined;
    const Kind = code === "invalid_code" ? InvalidCode : (BY_STATUS[status] ?? KeymasterError);
    const detail = problem.detail || problem.title || "no detail";
    return new Kind(String(detail), { status, code, retryAfter, problem });
}
