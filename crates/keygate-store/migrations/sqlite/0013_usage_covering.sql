-- A read of one credential's usage (`credential_id=…`, the console's token page) answered from
-- the index alone: the index by credential also carries the tenant (for the scope) and the count,
-- so 30 days of hour buckets among millions of rows cost one range of one index, not a lookup of
-- the table per bucket. The count changes on every batch that adds to a bucket; the batch writes
-- the index entry with the row, a cost paid off the request path. (The table's key, start,
-- credential_id and outcome, is in every index of a WITHOUT ROWID table already.)
DROP INDEX usage_minutes_by_credential;
CREATE INDEX usage_minutes_by_credential ON usage_minutes (credential_id, start, tenant_id, count);
DROP INDEX usage_hours_by_credential;
CREATE INDEX usage_hours_by_credential ON usage_hours (credential_id, start, tenant_id, count);
DROP INDEX usage_days_by_credential;
CREATE INDEX usage_days_by_credential ON usage_days (credential_id, start, tenant_id, count);
