-- The built-in roles were dated 0 (1970-01-01), which every list of roles showed. They exist since
-- the deployment's first tenant: bootstrap dates them so from now on, and a store bootstrapped
-- before is dated here by its oldest tenant.
UPDATE roles SET created_at = (SELECT min(created_at) FROM tenants)
WHERE tenant_id IS NULL AND created_at = 0 AND EXISTS (SELECT 1 FROM tenants);
