-- Quotas (API.md §13): a number of requests per period, on a credential (a token or an OAuth
-- client) or on a tenant (a pool shared by its credentials and its descendants'). One row each,
-- keyed by what it limits; it goes with its tenant.
--
-- `used` counts the credits *taken* in the window starting at `window_start`, by every node
-- together, spent or still held in a node's reserve (core's reserve.rs has the design). One UPDATE
-- takes credits and never lets `used` pass `lim`, so a window admits at most `lim` however many
-- nodes share the database; `last_take` is what that UPDATE took, for its RETURNING. The take that
-- first sees a newer window starts it at zero.
CREATE TABLE quotas (
    subject_id   TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    lim          BIGINT NOT NULL CHECK (lim > 0),
    period       TEXT NOT NULL CHECK (period IN ('hour', 'day', 'month', 'total')),
    anchor       BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    used         BIGINT NOT NULL DEFAULT 0 CHECK (used >= 0),
    last_take    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX quotas_by_tenant ON quotas (tenant_id);
