-- Rolling a token (API.md §14): the new token names the one it replaced (`rolled_from`), the old
-- one its successor (`rolled_to`), so a person can follow a secret's line of replacements and an
-- audit can tell a roll from an unrelated new token. Both are credential ids, not foreign keys:
-- a revoked token is kept, and a tenant's deletion takes both sides with it.
ALTER TABLE credentials ADD COLUMN rolled_from TEXT;
ALTER TABLE credentials ADD COLUMN rolled_to TEXT;
