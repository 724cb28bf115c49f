-- Usage (API.md §12): how many requests each credential made, per bucket and per outcome. Each
-- node counts in memory and adds its counts every few seconds; an upsert that adds
-- (`count = count + excluded.count`) makes what several nodes counted for the same credential,
-- bucket and outcome one exact sum. Every count lands in its minute, hour and day bucket at once.
--
-- Three tables, one per bucket size, rather than one table with a granularity column: each size
-- has its own retention (48 hours, 90 days, 2 years) and is pruned on its own; the minute table,
-- by far the largest and the one that churns, never bloats or slows the reads of the other two;
-- and every key and index stays one column narrower. A read names its table from the granularity.
--
-- The key starts with the bucket's start, so the counts of the current minute, which is where
-- every write goes, land at one end of the tree, and pruning the oldest buckets reads the key in
-- order. Reads by credential and by tenant have their own indexes; the tenant's also serves the
-- cascade below.
--
-- A usage row goes with its tenant (ON DELETE CASCADE), never with its credential: an account key
-- or an OAuth client that is deleted was still used, and its usage is kept (for billing) until
-- retention removes it. A bucket with no requests is never written (count > 0). WITHOUT ROWID:
-- the key is the row, no second tree to keep.
CREATE TABLE usage_minutes (
    credential_id TEXT NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    start         INTEGER NOT NULL,
    outcome       TEXT NOT NULL CHECK (outcome IN ('valid', 'expired', 'revoked',
                      'ip_not_allowed', 'forbidden', 'rate_limited', 'quota_exceeded')),
    count         INTEGER NOT NULL CHECK (count > 0),
    PRIMARY KEY (start, credential_id, outcome)
) STRICT, WITHOUT ROWID;
CREATE INDEX usage_minutes_by_credential ON usage_minutes (credential_id, start);
CREATE INDEX usage_minutes_by_tenant ON usage_minutes (tenant_id, start);

CREATE TABLE usage_hours (
    credential_id TEXT NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    start         INTEGER NOT NULL,
    outcome       TEXT NOT NULL CHECK (outcome IN ('valid', 'expired', 'revoked',
                      'ip_not_allowed', 'forbidden', 'rate_limited', 'quota_exceeded')),
    count         INTEGER NOT NULL CHECK (count > 0),
    PRIMARY KEY (start, credential_id, outcome)
) STRICT, WITHOUT ROWID;
CREATE INDEX usage_hours_by_credential ON usage_hours (credential_id, start);
CREATE INDEX usage_hours_by_tenant ON usage_hours (tenant_id, start);

CREATE TABLE usage_days (
    credential_id TEXT NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    start         INTEGER NOT NULL,
    outcome       TEXT NOT NULL CHECK (outcome IN ('valid', 'expired', 'revoked',
                      'ip_not_allowed', 'forbidden', 'rate_limited', 'quota_exceeded')),
    count         INTEGER NOT NULL CHECK (count > 0),
    PRIMARY KEY (start, credential_id, outcome)
) STRICT, WITHOUT ROWID;
CREATE INDEX usage_days_by_credential ON usage_days (credential_id, start);
CREATE INDEX usage_days_by_tenant ON usage_days (tenant_id, start);
