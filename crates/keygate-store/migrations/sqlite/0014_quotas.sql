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
    lim          INTEGER NOT NULL CHECK (lim > 0),
    period       TEXT NOT NULL CHECK (period IN ('hour', 'day', 'month', 'total')),
    anchor       INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    used         INTEGER NOT NULL DEFAULT 0 CHECK (used >= 0),
    last_take    INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX quotas_by_tenant ON quotas (tenant_id);
