-- Rolling an OAuth client's secret (API.md §14): the client keeps its id, takes a new secret, and
-- its previous secret keeps working beside it until `previous_secret_until`. Only the hash of the
-- previous secret is kept, as of the current one. Verification looks a presented secret up by
-- either hash, so the previous one has an index too (a partial one: few credentials have it).
ALTER TABLE credentials ADD COLUMN previous_secret_hash BLOB
    CHECK (previous_secret_hash IS NULL OR length(previous_secret_hash) = 32);
ALTER TABLE credentials ADD COLUMN previous_secret_until INTEGER;
CREATE INDEX credentials_by_previous_secret ON credentials (previous_secret_hash)
    WHERE previous_secret_hash IS NOT NULL;
