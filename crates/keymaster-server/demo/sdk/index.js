// Generated from sdk/typescript/src/index.ts (keymaster-client 0.1.0) by sdk/typescript/scripts/demo-assets.mjs; do not edit.
// keymaster-client: talk to a keymaster key escrow service from TypeScript/JavaScript (Node 18+
// and browsers), with nothing but the platform's fetch, WebCrypto and streams.
export { AdminClient, DeviceClient, ServiceClient } from "./client.js";
export { checkCode, parseCodeUri, matchesKey, keyCommitment, fingerprint } from "./code.js";
export { verifyWebhook, WEBHOOK_TOLERANCE_SECONDS } from "./webhook.js";
export { generateDeviceKey, exportSpki, signProof, signMessage, p1363ToDer, PROOF_PREFIX } from "./device.js";
export { sas, formatSas, sasNonce, sasCommitment, commitmentMatches, decodeNonce } from "./sas.js";
export { toBase64, toBase64Url, fromBase64 } from "./bytes.js";
export { spkiFromPem, spkiFromOpenssh, spkiFromJwk, spkiToPem } from "./spki.js";
export { KeymasterError, InvalidRequest, InvalidCode, Unauthorized, Forbidden, NotFound, RateLimited, KeyMismatch, SasMismatch, SasTimeout, InvalidSignature, } from "./errors.js";
