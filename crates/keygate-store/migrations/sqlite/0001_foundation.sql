-- keygate's foundation: tenants, roles, users, credentials and the audit log.
--
-- Times are INTEGER unix seconds in UTC: compact, comparable, and the same on every backend.
-- Tables are STRICT so a value of the wrong type is an error, not a silent conversion.

-- Customers and their sub-customers. A tenant with children cannot be deleted (RESTRICT), so a
-- reseller's customers are never removed by accident.
CREATE TABLE tenants (
    id         TEXT PRIMARY KEY,
    parent_id  TEXT REFERENCES tenants (id) ON DELETE RESTRICT,
    name       TEXT NOT NULL,
    slug       TEXT NOT NULL UNIQUE,
    status     TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX tenants_by_parent ON tenants (parent_id);

-- Roles. Built-in roles have no tenant and no stored permissions: what they grant is computed
-- from the permission catalog, which the operator can extend. A role in use cannot be deleted.
CREATE TABLE roles (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    permissions TEXT NOT NULL DEFAULT '[]', -- JSON array of patterns (`tokens:*`)
    created_at  INTEGER NOT NULL
) STRICT;
-- Built-in roles (NULL tenant) are fixed rows; custom role names are unique within their tenant.
CREATE UNIQUE INDEX roles_by_tenant_and_name ON roles (tenant_id, name);

INSERT INTO roles (id, tenant_id, name, permissions, created_at) VALUES
    ('rol_owner', NULL, 'owner', '[]', 0),
    ('rol_admin', NULL, 'admin', '[]', 0),
    ('rol_member', NULL, 'member', '[]', 0),
    ('rol_viewer', NULL, 'viewer', '[]', 0);

-- People. Emails are unique across the deployment, case-insensitively (sign-in takes no tenant):
-- email_key is the lower-cased address, computed by keygate so every backend agrees.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email         TEXT NOT NULL,
    email_key     TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    role_id       TEXT NOT NULL REFERENCES roles (id) ON DELETE RESTRICT,
    password_hash TEXT NOT NULL, -- argon2id, PHC string
    status        TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX users_by_tenant ON users (tenant_id);

-- Every kind of credential. Only the SHA-256 of the secret and its last four characters are kept.
-- created_by has no foreign key on purpose: a service token outlives the user who made it.
CREATE TABLE credentials (
    id                     TEXT PRIMARY KEY,
    tenant_id              TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind                   TEXT NOT NULL CHECK (kind IN
                               ('personal', 'service', 'account_key', 'session', 'oauth_secret', 'refresh')),
    secret_hash            BLOB NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    hint                   TEXT NOT NULL,
    name                   TEXT NOT NULL,
    description            TEXT,
    user_id                TEXT REFERENCES users (id) ON DELETE CASCADE,
    created_by             TEXT,
    role_id                TEXT REFERENCES roles (id) ON DELETE RESTRICT,
    permissions            TEXT, -- JSON array narrowing the role, or NULL
    allowed_ips            TEXT, -- JSON array of networks, or NULL
    rate_limit_requests    INTEGER,
    rate_limit_per_seconds INTEGER,
    created_at             INTEGER NOT NULL,
    expires_at             INTEGER,
    revoked_at             INTEGER,
    last_used_at           INTEGER
) STRICT;
CREATE INDEX credentials_by_tenant ON credentials (tenant_id, kind, id);
CREATE INDEX credentials_by_user ON credentials (user_id);

-- The audit log. No foreign keys: events outlive the objects they describe, and nothing ever
-- updates or deletes an event except retention. count > 1 when identical refusals were coalesced.
CREATE TABLE audit_events (
    id               TEXT PRIMARY KEY,
    time             INTEGER NOT NULL,
    tenant_id        TEXT NOT NULL,
    acting_tenant_id TEXT,
    actor_type       TEXT NOT NULL,
    actor_id         TEXT NOT NULL,
    token_id         TEXT,
    action           TEXT NOT NULL,
    target_type      TEXT,
    target_id        TEXT,
    outcome          TEXT NOT NULL CHECK (outcome IN ('success', 'denied', 'failed')),
    status           INTEGER NOT NULL,
    ip               TEXT,
    user_agent       TEXT,
    request_id       TEXT,
    count            INTEGER NOT NULL DEFAULT 1
) STRICT;
CREATE INDEX audit_events_by_tenant ON audit_events (tenant_id, id);
CREATE INDEX audit_events_by_token ON audit_events (token_id, id);
CREATE INDEX audit_events_by_time ON audit_events (time);
