-- Rate limits across nodes (API.md §9): each rate-limited credential's GCRA state, shared by every
-- node: `tat`, the theoretical arrival time (unix milliseconds) of its next request, as core's
-- ratelimit.rs keeps it on one node. Nodes take a few requests' worth at a time (core's
-- reserve.rs): one UPSERT moves `tat` on by what it takes and never past what the limit allows,
-- so the nodes together admit what one node would, plus what they hold unspent (at most one
-- reserve each). The first take makes the row. A row whose `tat` has passed says no more than no
-- row (a full burst), so such rows are pruned.
CREATE TABLE rate_limits (
    subject_id TEXT PRIMARY KEY,
    tat        INTEGER NOT NULL,
    last_take  INTEGER NOT NULL
) STRICT;
CREATE INDEX rate_limits_by_tat ON rate_limits (tat);
