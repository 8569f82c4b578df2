-- A service may be confined to one tenant: the retrieval transaction then treats a code of any
-- other tenant's key as unknown. The demo's service ("example-web"), whose endpoints act
-- without credentials, is confined to the demo tenant; services enrolled by an operator are
-- not (NULL).
ALTER TABLE services ADD COLUMN confined_tenant_id TEXT REFERENCES tenants(id);
