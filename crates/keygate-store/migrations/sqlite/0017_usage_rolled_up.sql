-- Hours and days rolled up from minutes once the hour is over, instead of added to by every usage
-- batch. A credential in use all day had its hour and day buckets rewritten by every batch (every
-- few seconds: hundreds of row versions an hour, each with new entries in every index of the
-- table); the hour and day tables were most of what a batch cost the database, on the request
-- path's store. Now a batch adds to minutes alone, and once an hour is over its minutes are
-- summed into their hours and days, a few thousand credentials at a time.
--
-- `usage_rolled` is how far the roll-up has come: every minute whose (hour, credential_id) is at
-- or before its one row is in the hour and day tables. A read of hours or days adds the minutes
-- past it, so counts stay exact at every moment. A batch that brings a minute at or before it (a
-- node that could not write for a while) adds that minute to its hour and day itself.
--
-- The minute key now leads with the minute's hour, so one hour of one credential is one range of
-- the key: the roll-up reads an hour in credential order, and each credential's hour and day rows
-- are written once. `hour` is the start's hour, which the writer gives (a column of the key,
-- checked here). SQLite cannot change a key in place: the table is copied.
CREATE TABLE usage_minutes_keyed_by_hour (
    credential_id TEXT NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    start         INTEGER NOT NULL,
    outcome       TEXT NOT NULL CHECK (outcome IN ('valid', 'expired', 'revoked',
                      'ip_not_allowed', 'forbidden', 'rate_limited', 'quota_exceeded')),
    count         INTEGER NOT NULL CHECK (count > 0),
    hour          INTEGER NOT NULL CHECK (hour = start - start % 3600),
    PRIMARY KEY (hour, credential_id, start, outcome)
) STRICT, WITHOUT ROWID;
INSERT INTO usage_minutes_keyed_by_hour (credential_id, tenant_id, start, outcome, count, hour)
    SELECT credential_id, tenant_id, start, outcome, count, start - start % 3600
    FROM usage_minutes;
DROP TABLE usage_minutes;
ALTER TABLE usage_minutes_keyed_by_hour RENAME TO usage_minutes;
CREATE INDEX usage_minutes_by_credential ON usage_minutes (credential_id, start, tenant_id, count);
CREATE INDEX usage_minutes_by_tenant ON usage_minutes (tenant_id, start);

CREATE TABLE usage_rolled (
    one           INTEGER PRIMARY KEY DEFAULT 1 CHECK (one = 1),
    hour          INTEGER NOT NULL,
    credential_id TEXT NOT NULL
) STRICT;
-- Minutes already written were added to their hours and days by the batch that wrote them.
INSERT INTO usage_rolled (hour, credential_id)
    SELECT coalesce(max(hour) + 3600, 0), '' FROM usage_minutes;
