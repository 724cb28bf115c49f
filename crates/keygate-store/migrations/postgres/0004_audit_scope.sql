-- Where each event happened: the path of the tenant acted in (the acting tenant's when a reseller
-- acted for a sub-customer, the actor's own otherwise). A tenant's audit log is every event whose
-- scope lies in its subtree, one index range, and it stays readable after a sub-customer is deleted.
-- COLLATE "C" on the path and the id: subtree ranges and cursors compare byte by byte, whatever the
-- database's own collation.
ALTER TABLE audit_events ADD COLUMN scope_path TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE audit_events ALTER COLUMN id TYPE TEXT COLLATE "C";

UPDATE audit_events SET scope_path = COALESCE(
    (SELECT path FROM tenants WHERE tenants.id = COALESCE(audit_events.acting_tenant_id, audit_events.tenant_id)),
    '/' || COALESCE(acting_tenant_id, tenant_id) || '/'
);

CREATE INDEX audit_events_by_scope ON audit_events (scope_path, id);
