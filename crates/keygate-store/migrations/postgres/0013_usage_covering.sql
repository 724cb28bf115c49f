-- A read of one credential's usage (`credential_id=…`, the console's token page) answered from
-- the index alone (an index-only scan): the index by credential also carries the outcome, the
-- tenant (for the scope) and the count, so 30 days of hour buckets among millions of rows cost one
-- range of one index, not a visit to the table per bucket.
DROP INDEX usage_minutes_by_credential;
CREATE INDEX usage_minutes_by_credential ON usage_minutes (credential_id, start)
    INCLUDE (outcome, tenant_id, count);
DROP INDEX usage_hours_by_credential;
CREATE INDEX usage_hours_by_credential ON usage_hours (credential_id, start)
    INCLUDE (outcome, tenant_id, count);
DROP INDEX usage_days_by_credential;
CREATE INDEX usage_days_by_credential ON usage_days (credential_id, start)
    INCLUDE (outcome, tenant_id, count);
