-- Where each credential was last used from (API.md §12: `last_used_ip` beside `last_used_at`),
-- written by the same batch, off the request path. Text, as an address prints (`203.0.113.7`,
-- `2001:db8::1`); NULL until a use whose address was known.
ALTER TABLE credentials ADD COLUMN last_used_ip TEXT;
