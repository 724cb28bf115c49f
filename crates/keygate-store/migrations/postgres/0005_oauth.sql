-- OAuth 2.0 client credentials (API.md §7); the same as migrations/sqlite/0005_oauth.sql in
-- PostgreSQL's types.
--
-- A client is a credential of kind `oauth_secret` (its id is the client_id). A refresh token is a
-- credential of kind `refresh` that belongs to a client and to a family: every refresh token
-- descended from one grant carries the id of the grant's first, so presenting one that was already
-- spent can revoke them all in one statement. Deleting a client deletes its refresh tokens.
ALTER TABLE credentials ADD COLUMN client_id TEXT REFERENCES credentials (id) ON DELETE CASCADE;
ALTER TABLE credentials ADD COLUMN family_id TEXT;
ALTER TABLE credentials ADD COLUMN spent_at BIGINT;
CREATE INDEX credentials_by_client ON credentials (client_id);
CREATE INDEX credentials_by_family ON credentials (family_id);
-- Expired refresh tokens are deleted every hour; an expired one is refused whatever its state.
CREATE INDEX credentials_refresh_by_expiry ON credentials (expires_at) WHERE kind = 'refresh';

-- Access tokens are JWTs and never stored; one revoked before it expires (RFC 7009) is remembered
-- until then, by its jti.
CREATE TABLE revoked_access_tokens (
    jti        TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL REFERENCES credentials (id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_access_tokens_by_client ON revoked_access_tokens (client_id);
CREATE INDEX revoked_access_tokens_by_expiry ON revoked_access_tokens (expires_at);

-- The Ed25519 keys access tokens are signed with. The newest generation signs; the unique
-- generation makes two nodes rotating at once collide instead of both adding a key. A retired key
-- stays, to verify and publish, until the tokens it signed have expired. The private key is a
-- PKCS#8 document, sealed (encryption names how, with its salt and nonce) when the operator
-- configured a key-encryption secret, so a copy of the database alone cannot sign.
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    generation  BIGINT NOT NULL CONSTRAINT signing_keys_generation_unique UNIQUE,
    algorithm   TEXT NOT NULL CHECK (algorithm IN ('EdDSA')),
    public_key  BYTEA NOT NULL CHECK (octet_length(public_key) = 32),
    private_key BYTEA NOT NULL,
    encryption  TEXT,
    salt        BYTEA,
    nonce       BYTEA,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);
