-- The last creating form each console session sent (its one-time value), so that a reload of the
-- page a post answered does not make a second token, user or key. One row per session, which goes
-- with it.
CREATE TABLE console_forms (
    session_id TEXT PRIMARY KEY REFERENCES credentials (id) ON DELETE CASCADE,
    form       TEXT NOT NULL
);
