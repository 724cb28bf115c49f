-- Room in every page of credentials for the usage batch's updates of `last_used_at` and
-- `last_used_ip`: neither is indexed, so with free space on the row's page PostgreSQL updates it
-- in place (a heap-only tuple) instead of writing a new row version elsewhere and a new entry in
-- each of the table's ten indexes. A node writes the last use of every credential used since its
-- previous batch, every few seconds, so this is most of the writes credentials see. Pages written
-- from now on keep a fifth free; pages already full get there as their rows are updated and
-- vacuumed (no rewrite here, which would lock the table).
ALTER TABLE credentials SET (fillfactor = 80);
