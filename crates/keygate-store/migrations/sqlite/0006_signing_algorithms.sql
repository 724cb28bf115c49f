-- Access tokens are signed with the algorithm the operator chooses (oauth.signing_algorithm):
-- ES256 (the default for new keys, read by every JOSE library), EdDSA (every key made before) or
-- RS256. A key's public half is as long as its algorithm makes it: 32 bytes of Ed25519, a 65-byte
-- uncompressed P-256 point, or a DER RSAPublicKey of a 2048- to 4096-bit modulus.
--
-- SQLite cannot change a CHECK, so the table is rebuilt with the wider ones and its rows copied:
-- the EdDSA keys already there go on verifying the tokens they signed. Nothing refers to it.
CREATE TABLE signing_keys_0006 (
    kid         TEXT PRIMARY KEY,
    generation  INTEGER NOT NULL UNIQUE,
    algorithm   TEXT NOT NULL CHECK (algorithm IN ('ES256', 'EdDSA', 'RS256')),
    public_key  BLOB NOT NULL CHECK (CASE algorithm
                                         WHEN 'EdDSA' THEN length(public_key) = 32
                                         WHEN 'ES256' THEN length(public_key) = 65
                                         ELSE length(public_key) BETWEEN 266 AND 530
                                     END),
    private_key BLOB NOT NULL,
    encryption  TEXT,
    salt        BLOB,
    nonce       BLOB,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
) STRICT;
INSERT INTO signing_keys_0006 (kid, generation, algorithm, public_key, private_key, encryption,
                               salt, nonce, created_at, retired_at)
SELECT kid, generation, algorithm, public_key, private_key, encryption, salt, nonce, created_at,
       retired_at
FROM signing_keys;
DROP TABLE signing_keys;
ALTER TABLE signing_keys_0006 RENAME TO signing_keys;
