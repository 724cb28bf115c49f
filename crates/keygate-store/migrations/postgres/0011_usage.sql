-- Usage (API.md §12); the same as migrations/sqlite/0011_usage.sql in PostgreSQL's types, where
-- the reasons are given: three tables (minute, hour, day buckets), each keyed by
-- (start, credential_id, outcome) and summed by an upsert that adds, so what several nodes counted
-- for the same bucket is one exact sum; rows go with their tenant, never with their credential.
--
-- COLLATE "C" on the ids and the outcome: reads are ordered by them, byte by byte as on SQLite,
-- whatever the database's own collation. Each node writes its rows in key order, so two nodes
-- adding to the same buckets at once take their row locks in the same order and never deadlock.
CREATE TABLE usage_minutes (
    credential_id TEXT COLLATE "C" NOT NULL,
    tenant_id     TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    start         BIGINT NOT NULL,
    outcome       TEXT COLLATE "C" NOT NULL CHECK (outcome IN ('valid', 'expired', 'revoked',
                      'ip_not_allowed', 'forbidden', 'rate_limited', 'quota_exceeded')),
    count         BIGINT NOT NULL CHECK (count > 0),
    PRIMARY KEY (start, credential_id, outcome)
);
CREATE INDEX usage_minutes_by_credential ON usage_minutes (credential_id, start);
CREATE INDEX usage_minutes_by_tenant ON usage_minutes (tenant_id, start);

CREATE TABLE usage_hours (
    credential_id TEXT COLLATE "C" NOT NULL,
    tenant_id     TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    start         BIGINT NOT NULL,
    outcome       TEXT COLLATE "C" NOT NULL CHECK (outcome IN ('valid', 'expired', 'revoked',
                      'ip_not_allowed', 'forbidden', 'rate_limited', 'quota_exceeded')),
    count         BIGINT NOT NULL CHECK (count > 0),
    PRIMARY KEY (start, credential_id, outcome)
);
CREATE INDEX usage_hours_by_credential ON usage_hours (credential_id, start);
CREATE INDEX usage_hours_by_tenant ON usage_hours (tenant_id, start);

CREATE TABLE usage_days (
    credential_id TEXT COLLATE "C" NOT NULL,
    tenant_id     TEXT COLLATE "C" NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    start         BIGINT NOT NULL,
    outcome       TEXT COLLATE "C" NOT NULL CHECK (outcome IN ('valid', 'expired', 'revoked',
                      'ip_not_allowed', 'forbidden', 'rate_limited', 'quota_exceeded')),
    count         BIGINT NOT NULL CHECK (count > 0),
    PRIMARY KEY (start, credential_id, outcome)
);
CREATE INDEX usage_days_by_credential ON usage_days (credential_id, start);
CREATE INDEX usage_days_by_tenant ON usage_days (tenant_id, start);
