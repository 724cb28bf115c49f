-- An email is unique within a tenant, no longer across the deployment (API.md §2): the same
-- person may have an account with two sub-customers, and a tenant must not learn, from a refused
-- create, that another tenant uses an address. Sign-in finds every account with the address and
-- asks for the organization when the password matches more than one.
--
-- As on SQLite (which cannot drop the constraint in place): the unique `email_key` now holds
-- `<tenant id>:<lower-cased address>`, so it means "once per tenant", and `email_folded` holds the
-- lower-cased address alone, for sign-in to look it up across tenants. Both are computed by
-- keygate so every backend agrees.
ALTER TABLE users ADD COLUMN email_folded TEXT NOT NULL DEFAULT '';
UPDATE users SET email_folded = email_key, email_key = tenant_id || ':' || email_key;
CREATE INDEX users_by_email ON users (email_folded);
