-- Each tenant's IP restriction (API.md §6): when enabled, the tenant's credentials only work from
-- addresses its allowlist covers. Off and empty until the tenant sets it. The allowlist is a JSON
-- array of normalised networks (`["10.0.0.0/8", "2001:db8::/32"]`).
ALTER TABLE tenants ADD COLUMN allowlist_enabled BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE tenants ADD COLUMN allowlist TEXT NOT NULL DEFAULT '[]';
