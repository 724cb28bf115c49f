-- Rate limits across nodes (API.md §9): each rate-limited credential's count in the current fixed
-- window of its limit's length (aligned to the epoch), shared by every node. Nodes take a few
-- credits at a time, as they do from quotas (core's reserve.rs): one UPSERT never lets `used`
-- pass `lim` in a window, so the nodes together admit at most the limit per window. The first take
-- makes the row; the take that first sees a newer window starts it at zero. Rows are a credential's
-- id and five numbers, left when a credential goes and pruned once their window is over.
CREATE TABLE rate_windows (
    subject_id   TEXT PRIMARY KEY,
    lim          BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    window_end   BIGINT NOT NULL,
    used         BIGINT NOT NULL CHECK (used >= 0),
    last_take    BIGINT NOT NULL
);
CREATE INDEX rate_windows_by_end ON rate_windows (window_end);
