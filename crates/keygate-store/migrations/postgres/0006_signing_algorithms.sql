-- Access tokens are signed with the algorithm the operator chooses (oauth.signing_algorithm);
-- the same as migrations/sqlite/0006_signing_algorithms.sql, where PostgreSQL can simply swap
-- the CHECKs: ES256 (the default for new keys), EdDSA (every key made before) or RS256, each
-- public key as long as its algorithm makes it (32 bytes of Ed25519, a 65-byte uncompressed
-- P-256 point, a DER RSAPublicKey of a 2048- to 4096-bit modulus). Existing rows are kept.
ALTER TABLE signing_keys
    DROP CONSTRAINT signing_keys_algorithm_check,
    DROP CONSTRAINT signing_keys_public_key_check,
    ADD CONSTRAINT signing_keys_algorithm_check
        CHECK (algorithm IN ('ES256', 'EdDSA', 'RS256')),
    ADD CONSTRAINT signing_keys_public_key_check
        CHECK (CASE algorithm
                   WHEN 'EdDSA' THEN octet_length(public_key) = 32
                   WHEN 'ES256' THEN octet_length(public_key) = 65
                   ELSE octet_length(public_key) BETWEEN 266 AND 530
               END);
