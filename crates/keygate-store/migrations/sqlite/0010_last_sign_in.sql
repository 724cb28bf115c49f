-- When each user last signed in (a session made by POST /v1/auth/login or the console), for the
-- users list: a provider asks "who still uses this account?". Unix seconds; NULL until the first.
ALTER TABLE users ADD COLUMN last_sign_in_at INTEGER;
