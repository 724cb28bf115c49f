-- Hours and days rolled up from minutes once the hour is over, instead of added to by every usage
-- batch: the same as migrations/sqlite/0017_usage_rolled_up.sql, where the reasons are given.
--
-- The minute key leads with the minute's hour, so one hour of one credential is one range of the
-- key, and the roll-up reads an hour credential by credential. `hour` is the start's hour, which
-- the writer gives (a column of the key, checked here).
ALTER TABLE usage_minutes ADD COLUMN hour BIGINT;
UPDATE usage_minutes SET hour = start - start % 3600;
ALTER TABLE usage_minutes
    ALTER COLUMN hour SET NOT NULL,
    ADD CONSTRAINT usage_minutes_hour CHECK (hour = start - start % 3600),
    DROP CONSTRAINT usage_minutes_pkey,
    ADD PRIMARY KEY (hour, credential_id, start, outcome);

CREATE TABLE usage_rolled (
    one           BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    hour          BIGINT NOT NULL,
    credential_id TEXT COLLATE "C" NOT NULL
);
-- Minutes already written were added to their hours and days by the batch that wrote them.
INSERT INTO usage_rolled (hour, credential_id)
    SELECT coalesce(max(hour) + 3600, 0), '' FROM usage_minutes;
