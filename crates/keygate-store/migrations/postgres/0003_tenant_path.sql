-- Each tenant's path from the root (`/tnt_root/tnt_child/`): its whole ancestry in one column, so
-- verification reads a credential's tenant line in one step however deep the reseller tree is,
-- and a subtree is one range of an index. Filled in here for the tenants that already exist.
-- COLLATE "C": paths compare byte by byte, as the subtree ranges assume, whatever the database's
-- own collation.
ALTER TABLE tenants ADD COLUMN path TEXT COLLATE "C" NOT NULL DEFAULT '';

WITH RECURSIVE tree (id, path) AS (
    SELECT id, '/' || id || '/' FROM tenants WHERE parent_id IS NULL
    UNION ALL
    SELECT t.id, tree.path || t.id || '/' FROM tenants t JOIN tree ON t.parent_id = tree.id
)
UPDATE tenants SET path = tree.path FROM tree WHERE tree.id = tenants.id;

CREATE INDEX tenants_by_path ON tenants (path);
