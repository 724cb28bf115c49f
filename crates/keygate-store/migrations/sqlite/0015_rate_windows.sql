-- Rate limits across nodes (API.md §9): each rate-limited credential's count in the current fixed
-- window of its limit's length (aligned to the epoch), shared by every node. Nodes take a few
-- credits at a time, as they do from quotas (core's reserve.rs): one UPSERT never lets `used`
-- pass `lim` in a window, so the nodes together admit at most the limit per window. The first take
-- makes the row; the take that first sees a newer window starts it at zero. Rows are a credential's
-- id and five numbers, left when a credential goes and pruned once their window is over.
CREATE TABLE rate_windows (
    subject_id   TEXT PRIMARY KEY,
    lim          INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    window_end   INTEGER NOT NULL,
    used         INTEGER NOT NULL CHECK (used >= 0),
    last_take    INTEGER NOT NULL
) STRICT;
CREATE INDEX rate_windows_by_end ON rate_windows (window_end);
