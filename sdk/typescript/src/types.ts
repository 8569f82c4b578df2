// Names for the API's bodies, taken from the generated src/api.ts (openapi-typescript over the
// server's /openapi.json), so that a change of the API changes these types.

import type { components } from "./api.js";

type Schemas = components["schemas"];

export type DepositRequest = Schemas["DepositRequest"];
export type DepositResponse = Schemas["DepositResponse"];
export type PolicyInput = Schemas["PolicyInput"];
export type Notify = Schemas["Notify"];
export type CodeFormat = Schemas["CodeFormat"];
export type RetrievalContext = Schemas["RetrievalContext"];
export type RetrievalRequest = Schemas["RetrievalRequest"];
export type RetrievalResponse = Schemas["RetrievalResponse"];
export type PreviewResponse = Schemas["PreviewResponse"];
export type DisputeReason = Schemas["DisputeReason"];
export type SasNonces = Schemas["SasNonces"];
export type KeyStatus = Schemas["KeyStatus"];
export type RecodeResponse = Schemas["RecodeResponse"];
export type Event = Schemas["Event"];
export type EventData = Schemas["EventData"];
export type TenantCreated = Schemas["TenantCreated"];
export type AppKeyCreated = Schemas["AppKeyCreated"];
export type ServiceCreated = Schemas["ServiceCreated"];
export type AuditPage = Schemas["AuditPage"];
export type AuditEntry = Schemas["AuditEntry"];
export type Problem = Schemas["Problem"];
export type { components, paths } from "./api.js";
