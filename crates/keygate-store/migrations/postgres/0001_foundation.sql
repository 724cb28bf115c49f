-- keygate's foundation: tenants, roles, users, credentials and the audit log.
--
-- The same schema as migrations/sqlite/0001_foundation.sql, in PostgreSQL's types: times are
-- BIGINT unix seconds in UTC (as on SQLite, so both backends compare times the same way), the
-- credential hash is BYTEA. Unique constraints are named after what they protect, which is how
-- keygate tells a client which value is taken.

CREATE TABLE tenants (
    id         TEXT PRIMARY KEY,
    parent_id  TEXT REFERENCES tenants (id) ON DELETE RESTRICT,
    name       TEXT NOT NULL,
    slug       TEXT NOT NULL CONSTRAINT tenants_slug_unique UNIQUE,
    status     TEXT NOT NULL CHECK (status IN ('active', 'suspended')),
    created_at BIGINT NOT NULL
);
CREATE INDEX tenants_by_parent ON tenants (parent_id);

-- Built-in roles have no tenant and no stored permissions: the catalog decides what they grant.
CREATE TABLE roles (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    permissions TEXT NOT NULL DEFAULT '[]', -- JSON array of patterns (`tokens:*`)
    created_at  BIGINT NOT NULL,
    CONSTRAINT roles_tenant_name_unique UNIQUE (tenant_id, name)
);

INSERT INTO roles (id, tenant_id, name, permissions, created_at) VALUES
    ('rol_owner', NULL, 'owner', '[]', 0),
    ('rol_admin', NULL, 'admin', '[]', 0),
    ('rol_member', NULL, 'member', '[]', 0),
    ('rol_viewer', NULL, 'viewer', '[]', 0);

-- Emails are unique deployment-wide, case-insensitively: email_key is the lower-cased address,
-- computed by keygate so every backend agrees.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email         TEXT NOT NULL,
    email_key     TEXT NOT NULL CONSTRAINT users_email_unique UNIQUE,
    name          TEXT NOT NULL,
    role_id       TEXT NOT NULL REFERENCES roles (id) ON DELETE RESTRICT,
    password_hash TEXT NOT NULL, -- argon2id, PHC string
    status        TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
    created_at    BIGINT NOT NULL
);
CREATE INDEX users_by_tenant ON users (tenant_id);

-- Only the SHA-256 of a secret and its last four characters are kept. created_by has no foreign
-- key on purpose: a service token outlives the user who made it.
CREATE TABLE credentials (
    id                     TEXT PRIMARY KEY,
    tenant_id              TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind                   TEXT NOT NULL CHECK (kind IN
                               ('personal', 'service', 'account_key', 'session', 'oauth_secret', 'refresh')),
    secret_hash            BYTEA NOT NULL UNIQUE CHECK (octet_length(secret_hash) = 32),
    hint                   TEXT NOT NULL,
    name                   TEXT NOT NULL,
    description            TEXT,
    user_id                TEXT REFERENCES users (id) ON DELETE CASCADE,
    created_by             TEXT,
    role_id                TEXT REFERENCES roles (id) ON DELETE RESTRICT,
    permissions            TEXT, -- JSON array narrowing the role, or NULL
    allowed_ips            TEXT, -- JSON array of networks, or NULL
    rate_limit_requests    BIGINT,
    rate_limit_per_seconds BIGINT,
    created_at             BIGINT NOT NULL,
    expires_at             BIGINT,
    revoked_at             BIGINT,
    last_used_at           BIGINT
);
CREATE INDEX credentials_by_tenant ON credentials (tenant_id, kind, id);
CREATE INDEX credentials_by_user ON credentials (user_id);
CREATE INDEX credentials_by_role ON credentials (role_id);

-- Events outlive the objects they describe: no foreign keys, and nothing updates or deletes an
-- event except retention. count > 1 when identical refusals were coalesced.
CREATE TABLE audit_events (
    id               TEXT PRIMARY KEY,
    time             BIGINT NOT NULL,
    tenant_id        TEXT NOT NULL,
    acting_tenant_id TEXT,
    actor_type       TEXT NOT NULL,
    actor_id         TEXT NOT NULL,
    token_id         TEXT,
    action           TEXT NOT NULL,
    target_type      TEXT,
    target_id        TEXT,
    outcome          TEXT NOT NULL CHECK (outcome IN ('success', 'denied', 'failed')),
    status           BIGINT NOT NULL,
    ip               TEXT,
    user_agent       TEXT,
    request_id       TEXT,
    count            BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX audit_events_by_tenant ON audit_events (tenant_id, id);
CREATE INDEX audit_events_by_token ON audit_events (token_id, id);
CREATE INDEX audit_events_by_time ON audit_events (time);
