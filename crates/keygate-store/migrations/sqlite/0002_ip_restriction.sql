-- Each tenant's IP restriction (API.md §6): when enabled, the tenant's credentials only work from
-- addresses its allowlist covers. Off and empty until the tenant sets it. The allowlist is a JSON
-- array of normalised networks (`["10.0.0.0/8", "2001:db8::/32"]`).
ALTER TABLE tenants ADD COLUMN allowlist_enabled INTEGER NOT NULL DEFAULT 0
    CHECK (allowlist_enabled IN (0, 1));
ALTER TABLE tenants ADD COLUMN allowlist TEXT NOT NULL DEFAULT '[]';

-- Deleting a role asks which credentials still hold it (PostgreSQL has this index from 0001).
CREATE INDEX credentials_by_role ON credentials (role_id);
