//! OAuth access tokens as JWTs (the RFC 9068 profile): signed by keygate with the algorithm the
//! operator chose (`ES256` by default, `EdDSA` or `RS256`), checkable by anyone holding the
//! published keys (`/.well-known/jwks.json`), and meant for the audiences the operator configured.
//!
//! Every signature is made by `ring`: its ECDSA and Ed25519 are constant-time and its RSA signing
//! is blinded, where the `rsa` crate's is not (RUSTSEC-2023-0071, a timing side channel on the
//! private key). The `rsa` crate only makes new RSA keys here, once per rotation, with no one
//! timing it on demand; `jsonwebtoken` verifies tokens, which touches public keys alone.
//!
//! The keys live in the store: the first start generates one, and the private half is sealed with
//! XChaCha20-Poly1305 under a key derived with Argon2id from `oauth.key_encryption_secret` when the
//! operator configures one. The newest key signs. A key that is replaced stays published, and
//! accepted, until every token it signed has expired, so rotation never cuts a client off.
//!
//! Each node decodes a key once, when it first sees it; verification looks the `kid` up in a map
//! and never parses a key or the key set per request. A node learns of a new key from the store's
//! change notifications, and in any case rereads the (tiny) key set before signing once
//! [`RELOAD_EVERY`] has passed, so a rotation made elsewhere (another node, `keygate oauth
//! rotate-key` beside a SQLite node) takes over everywhere within that time. This module must never
//! accept a token whose signature, issuer or expiry it has not checked.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use jsonwebtoken::{Algorithm, DecodingKey};
use ring::rand::SystemRandom;
use ring::signature::{self as ring_signature, KeyPair as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::Timestamp;
use crate::store::StoreError;

/// The size of the RSA keys keygate makes: NIST's floor until 2030, and what every library reads.
pub const RSA_BITS: usize = 2048;
/// The `typ` header of access tokens (RFC 9068 §2.1), so no other JWT can pass for one.
pub const TOKEN_TYPE: &str = "at+jwt";
/// Longer text is not a token keygate issued; refused before any work.
pub const MAX_LEN: usize = 4096;
/// How long a node signs with the key set it has before rereading it from the store.
pub const RELOAD_EVERY: Duration = Duration::from_secs(60);
/// The only way keys are sealed today, as the store names it.
pub const SEALING_SCHEME: &str = "xchacha20poly1305-argon2id-m19456-t2-p1";

/// Whether `text` has the shape of a JWT (three base64url parts) rather than an opaque
/// credential, which never contains a dot.
pub fn looks_like_jwt(text: &str) -> bool {
    text.starts_with("eyJ") && text.bytes().filter(|&b| b == b'.').count() == 2
}

/// The JWS algorithms keygate signs access tokens with (`oauth.signing_algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum SigningAlgorithm {
    /// ECDSA over P-256 with SHA-256: small, fast, and read by every JOSE library (the default).
    #[default]
    #[serde(rename = "ES256")]
    Es256,
    /// Ed25519 (RFC 8037). Some libraries now refuse the name `EdDSA` (RFC 9864 deprecates it).
    #[serde(rename = "EdDSA")]
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256 and a 2048-bit key, for verifiers that know nothing else.
    #[serde(rename = "RS256")]
    Rs256,
}

impl SigningAlgorithm {
    pub const ALL: [SigningAlgorithm; 3] = [Self::Es256, Self::EdDsa, Self::Rs256];

    /// The JWS `alg` name, as tokens, the JWKS, the store and the configuration spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Rs256 => "RS256",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    pub(crate) fn jose(self) -> Algorithm {
        match self {
            Self::Es256 => Algorithm::ES256,
            Self::EdDsa => Algorithm::EdDSA,
            Self::Rs256 => Algorithm::RS256,
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An access token's `aud` (RFC 7519 §4.1.3): the resource servers it is meant for. One is written
/// as a string, several as an array; both are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience(Vec<String>);

impl Audience {
    /// `None` if `members` is empty: a token is always meant for someone.
    pub fn new(members: Vec<String>) -> Option<Self> {
        (!members.is_empty()).then_some(Self(members))
    }

    pub fn members(&self) -> &[String] {
        &self.0
    }
}

impl Serialize for Audience {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => serializer.serialize_str(one),
            many => many.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let members = match Raw::deserialize(deserializer)? {
            Raw::One(one) => vec![one],
            Raw::Many(many) => many,
        };
        Self::new(members).ok_or_else(|| serde::de::Error::custom("`aud` is empty"))
    }
}

/// What an access token says. `sub` and `client_id` are both the client's id (RFC 9068 §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    /// The resource servers the token is for (RFC 9068 §2.2 makes it required).
    pub aud: Audience,
    pub sub: String,
    pub client_id: String,
    /// The client's tenant id.
    pub tenant: String,
    /// The permissions granted, space-separated (RFC 6749 §3.3).
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// The grant it descends from (its refresh tokens' family, [`crate::oauth`]): revoking the
    /// grant revokes it too. Absent from tokens issued before it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
}

impl AccessClaims {
    pub fn scope_items(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ').filter(|s| !s.is_empty())
    }
}

/// A signing key as the store keeps it. `Debug` never shows the private half.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSigningKey {
    /// The RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// 1, 2, 3…: the newest signs. Unique, so two nodes rotating at once cannot both win.
    pub generation: i64,
    pub algorithm: SigningAlgorithm,
    /// The public key: 32 raw bytes (Ed25519), an uncompressed SEC1 point of 65 bytes (P-256), or
    /// a DER `RSAPublicKey` (RSA).
    pub public_key: Vec<u8>,
    /// The PKCS#8 document, or its ciphertext when `sealing` is set.
    pub private_key: Vec<u8>,
    pub sealing: Option<Sealing>,
    pub created_at: Timestamp,
    /// When a newer key took over signing.
    pub retired_at: Option<Timestamp>,
}

impl fmt::Debug for StoredSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredSigningKey")
            .field("kid", &self.kid)
            .field("generation", &self.generation)
            .field("algorithm", &self.algorithm)
            .field("sealed", &self.sealing.is_some())
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// How a private key was sealed: the Argon2id salt and the XChaCha20-Poly1305 nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealing {
    pub salt: Vec<u8>,
    pub nonce: Vec<u8>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    #[error(
        "signing key {0} is sealed, and no oauth.key_encryption_secret is configured to open it"
    )]
    NoSecret(String),
    #[error("signing key {0} cannot be opened with the configured oauth.key_encryption_secret")]
    WrongSecret(String),
    #[error("oauth.key_encryption_secret must be at least 16 characters")]
    WeakSecret,
    #[error("signing key {kid} is unusable: {why}")]
    Corrupt { kid: String, why: String },
    #[error("there is no signing key yet")]
    NoSigningKey,
    #[error("cannot sign: {0}")]
    Signing(String),
    #[error("no randomness: {0}")]
    Random(#[from] getrandom::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Seals and opens private keys with a secret the operator keeps outside the store.
pub struct KeySealer {
    secret: Vec<u8>,
}

impl fmt::Debug for KeySealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySealer(…)")
    }
}

impl KeySealer {
    pub fn new(secret: &str) -> Result<Self, KeyError> {
        if secret.chars().count() < 16 {
            return Err(KeyError::WeakSecret);
        }
        Ok(Self {
            secret: secret.as_bytes().to_vec(),
        })
    }

    /// Argon2id with fixed parameters (they are part of [`SEALING_SCHEME`]): the secret may be a
    /// passphrase, and this runs once per key a node loads, not per request.
    fn derive(&self, salt: &[u8], kid: &str) -> Result<XChaCha20Poly1305, KeyError> {
        let params = argon2::Params::new(19_456, 2, 1, Some(32)).map_err(|e| corrupt(kid, e))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = [0u8; 32];
        argon
            .hash_password_into(&self.secret, salt, &mut key)
            .map_err(|e| corrupt(kid, e))?;
        let cipher = XChaCha20Poly1305::new(&key.into());
        key.fill(0);
        Ok(cipher)
    }

    pub(crate) fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<(Vec<u8>, Sealing), KeyError> {
        let mut salt = vec![0u8; 16];
        let mut nonce = vec![0u8; 24];
        getrandom::fill(&mut salt)?;
        getrandom::fill(&mut nonce)?;
        let sealed = self
            .derive(&salt, kid)?
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|e| corrupt(kid, e))?;
        Ok((sealed, Sealing { salt, nonce }))
    }

    pub(crate) fn open(
        &self,
        kid: &str,
        sealed: &[u8],
        sealing: &Sealing,
    ) -> Result<Vec<u8>, KeyError> {
        if sealing.nonce.len() != 24 {
            return Err(corrupt(kid, "the nonce is not 24 bytes"));
        }
        self.derive(&sealing.salt, kid)?
            .decrypt(
                XNonce::from_slice(&sealing.nonce),
                Payload {
                    msg: sealed,
                    aad: kid.as_bytes(),
                },
            )
            .map_err(|_| KeyError::WrongSecret(kid.to_owned()))
    }
}

pub(crate) fn corrupt(kid: &str, why: impl fmt::Display) -> KeyError {
    KeyError::Corrupt {
        kid: kid.to_owned(),
        why: why.to_string(),
    }
}

/// A public key as `/.well-known/jwks.json` shows it: RFC 7518 `EC` (P-256) or `RSA`, or
/// RFC 8037 `OKP` (Ed25519). Only the members of its type are present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicJwk {
    pub kty: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crv: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    pub kid: String,
    #[serde(rename = "use")]
    pub usage: &'static str,
    pub alg: &'static str,
}

impl PublicJwk {
    /// The JWK of a stored public key, with an empty `kid` (see [`Self::thumbprint`]).
    pub(crate) fn of(algorithm: SigningAlgorithm, public_key: &[u8]) -> Result<Self, String> {
        let mut jwk = PublicJwk {
            kty: "",
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
            kid: String::new(),
            usage: "sig",
            alg: algorithm.as_str(),
        };
        match algorithm {
            SigningAlgorithm::EdDsa => {
                if public_key.len() != 32 {
                    return Err("an Ed25519 public key is 32 bytes".into());
                }
                jwk.kty = "OKP";
                jwk.crv = Some("Ed25519");
                jwk.x = Some(URL_SAFE_NO_PAD.encode(public_key));
            }
            SigningAlgorithm::Es256 => {
                let point = match public_key {
                    [0x04, point @ ..] if point.len() == 64 => point,
                    _ => return Err("a P-256 public key is an uncompressed point".into()),
                };
                jwk.kty = "EC";
                jwk.crv = Some("P-256");
                jwk.x = Some(URL_SAFE_NO_PAD.encode(&point[..32]));
                jwk.y = Some(URL_SAFE_NO_PAD.encode(&point[32..]));
            }
            SigningAlgorithm::Rs256 => {
                use rsa::pkcs1::DecodeRsaPublicKey;
                use rsa::traits::PublicKeyParts;
                let key = rsa::RsaPublicKey::from_pkcs1_der(public_key)
                    .map_err(|e| format!("not an RSA public key: {e}"))?;
                jwk.kty = "RSA";
                jwk.n = Some(URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()));
                jwk.e = Some(URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()));
            }
        }
        jwk.kid = jwk.thumbprint();
        Ok(jwk)
    }

    /// The RFC 7638 thumbprint: SHA-256 of the required members in lexicographic order, so anyone
    /// can recompute the `kid` from the JWK.
    pub fn thumbprint(&self) -> String {
        let member = |name: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(|v| format!(r#""{name}":"{v}""#))
                .unwrap_or_default()
        };
        let canonical = match self.kty {
            "RSA" => format!(
                r#"{{{},"kty":"RSA",{}}}"#,
                member("e", &self.e),
                member("n", &self.n)
            ),
            "EC" => format!(
                r#"{{"crv":"{}","kty":"EC",{},{}}}"#,
                self.crv.unwrap_or_default(),
                member("x", &self.x),
                member("y", &self.y)
            ),
            _ => format!(
                r#"{{"crv":"{}","kty":"{}",{}}}"#,
                self.crv.unwrap_or_default(),
                self.kty,
                member("x", &self.x)
            ),
        };
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// What `jsonwebtoken` checks signatures with.
    pub(crate) fn decoding_key(&self) -> Result<DecodingKey, String> {
        let part = |value: &Option<String>| value.clone().unwrap_or_default();
        match self.kty {
            "OKP" => DecodingKey::from_ed_components(&part(&self.x)),
            "EC" => DecodingKey::from_ec_components(&part(&self.x), &part(&self.y)),
            _ => DecodingKey::from_rsa_components(&part(&self.n), &part(&self.e)),
        }
        .map_err(|e| e.to_string())
    }
}

/// The RFC 7638 thumbprint of a public key as the store keeps it.
pub fn thumbprint(algorithm: SigningAlgorithm, public_key: &[u8]) -> Result<String, String> {
    PublicJwk::of(algorithm, public_key).map(|jwk| jwk.kid)
}

/// A private key opened for signing, by `ring`.
pub(crate) enum PrivateKey {
    Ed25519(ring_signature::Ed25519KeyPair),
    P256(ring_signature::EcdsaKeyPair),
    Rsa(ring_signature::RsaKeyPair),
}

impl PrivateKey {
    /// Reads a PKCS#8 document. Ed25519 documents may be v1 (no public key inside, as keygate
    /// stored them before it signed with `ring`) or v2.
    pub(crate) fn from_pkcs8(algorithm: SigningAlgorithm, document: &[u8]) -> Result<Self, String> {
        let rejected = |e: ring::error::KeyRejected| format!("not a {algorithm} key: {e}");
        Ok(match algorithm {
            SigningAlgorithm::EdDsa => Self::Ed25519(
                ring_signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(document)
                    .map_err(rejected)?,
            ),
            SigningAlgorithm::Es256 => Self::P256(
                ring_signature::EcdsaKeyPair::from_pkcs8(
                    &ring_signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    document,
                    &SystemRandom::new(),
                )
                .map_err(rejected)?,
            ),
            SigningAlgorithm::Rs256 => {
                Self::Rsa(ring_signature::RsaKeyPair::from_pkcs8(document).map_err(rejected)?)
            }
        })
    }

    /// The public key, as [`StoredSigningKey::public_key`] keeps it.
    pub(crate) fn public_key(&self) -> Vec<u8> {
        match self {
            Self::Ed25519(key) => key.public_key().as_ref().to_vec(),
            Self::P256(key) => key.public_key().as_ref().to_vec(),
            Self::Rsa(key) => key.public_key().as_ref().to_vec(),
        }
    }

    /// The JWS signature of `message` (for ES256, `r || s` as RFC 7518 §3.4 wants it).
    pub(crate) fn sign(&self, message: &[u8], random: &SystemRandom) -> Result<Vec<u8>, KeyError> {
        let failed = |_| KeyError::Signing("the signing key refused to sign".into());
        match self {
            Self::Ed25519(key) => Ok(key.sign(message).as_ref().to_vec()),
            Self::P256(key) => Ok(key.sign(random, message).map_err(failed)?.as_ref().to_vec()),
            Self::Rsa(key) => {
                let mut signature = vec![0u8; key.public().modulus_len()];
                key.sign(
                    &ring_signature::RSA_PKCS1_SHA256,
                    random,
                    message,
                    &mut signature,
                )
                .map_err(failed)?;
                Ok(signature)
            }
        }
    }
}

/// A fresh PKCS#8 document for `algorithm`.
fn new_pkcs8(algorithm: SigningAlgorithm) -> Result<Vec<u8>, KeyError> {
    let random = SystemRandom::new();
    let failed = |what: &str| KeyError::Signing(format!("cannot make a {algorithm} key: {what}"));
    match algorithm {
        SigningAlgorithm::EdDsa => ring_signature::Ed25519KeyPair::generate_pkcs8(&random)
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| failed("no randomness")),
        SigningAlgorithm::Es256 => ring_signature::EcdsaKeyPair::generate_pkcs8(
            &ring_signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &random,
        )
        .map(|d| d.as_ref().to_vec())
        .map_err(|_| failed("no randomness")),
        // ring cannot make RSA keys; the rsa crate makes one, and never signs with it.
        SigningAlgorithm::Rs256 => {
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, RSA_BITS)
                .map_err(|e| failed(&e.to_string()))?;
            let document = key.to_pkcs8_der().map_err(|e| failed(&e.to_string()))?;
            Ok(document.as_bytes().to_vec())
        }
    }
}

/// A fresh key of `algorithm` and `generation`, sealed if a sealer is given.
pub fn generate_key(
    algorithm: SigningAlgorithm,
    generation: i64,
    now: Timestamp,
    sealer: Option<&KeySealer>,
) -> Result<StoredSigningKey, KeyError> {
    let document = new_pkcs8(algorithm)?;
    let public_key = PrivateKey::from_pkcs8(algorithm, &document)
        .map_err(KeyError::Signing)?
        .public_key();
    let kid = thumbprint(algorithm, &public_key).map_err(KeyError::Signing)?;
    let (private_key, sealing) = match sealer {
        Some(sealer) => {
            let (sealed, sealing) = sealer.seal(&kid, &document)?;
            (sealed, Some(sealing))
        }
        None => (document, None),
    };
    Ok(StoredSigningKey {
        kid,
        generation,
        algorithm,
        public_key,
        private_key,
        sealing,
        created_at: now,
        retired_at: None,
    })
}

/// Why a JWT was refused before any store access. Each message is safe to show the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtRefusal {
    #[error("the access token is not a JWT keygate can read")]
    Malformed,
    #[error("the access token was signed with a key keygate does not know")]
    UnknownKey,
    #[error("the access token's signature does not verify")]
    BadSignature,
    #[error("the access token was not issued by this keygate")]
    WrongIssuer,
    #[error("the access token is meant for another audience")]
    WrongAudience,
    #[error("the credential has expired")]
    Expired,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_unix(1_800_000_000);

    #[test]
    fn sealed_keys_open_only_with_their_secret_and_kid() {
        let sealer = KeySealer::new("correct horse battery staple").unwrap();
        let key = generate_key(SigningAlgorithm::Es256, 1, NOW, Some(&sealer)).unwrap();
        let sealing = key.sealing.clone().unwrap();
        let document = sealer.open(&key.kid, &key.private_key, &sealing).unwrap();
        let opened = PrivateKey::from_pkcs8(SigningAlgorithm::Es256, &document).unwrap();
        assert_eq!(opened.public_key(), key.public_key);
        assert!(
            key.private_key.len() > document.len(),
            "sealed, with its tag"
        );
        let other = KeySealer::new("another secret, long enough").unwrap();
        assert!(matches!(
            other.open(&key.kid, &key.private_key, &sealing),
            Err(KeyError::WrongSecret(_))
        ));
        assert!(
            sealer
                .open("another kid", &key.private_key, &sealing)
                .is_err(),
            "the ciphertext is bound to its kid"
        );
        assert!(matches!(KeySealer::new("short"), Err(KeyError::WeakSecret)));
        assert!(!format!("{key:?}").contains("private_key"));
    }

    #[test]
    fn kids_are_rfc_7638_thumbprints() {
        // RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        assert_eq!(
            thumbprint(SigningAlgorithm::EdDsa, &x).unwrap(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        // RFC 7638 §3.1: its example RSA key.
        let rsa = PublicJwk {
            kty: "RSA",
            crv: None,
            x: None,
            y: None,
            n: Some("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into()),
            e: Some("AQAB".into()),
            kid: String::new(),
            usage: "sig",
            alg: "RS256",
        };
        assert_eq!(
            rsa.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        assert!(thumbprint(SigningAlgorithm::Es256, &[4u8; 33]).is_err());
        assert!(thumbprint(SigningAlgorithm::Rs256, b"not DER").is_err());
    }

    #[test]
    fn algorithms_are_named_as_jose_names_them() {
        for algorithm in SigningAlgorithm::ALL {
            assert_eq!(SigningAlgorithm::parse(algorithm.as_str()), Some(algorithm));
            let json = serde_json::to_string(&algorithm).unwrap();
            assert_eq!(json, format!("\"{algorithm}\""));
        }
        assert_eq!(SigningAlgorithm::default(), SigningAlgorithm::Es256);
        assert_eq!(SigningAlgorithm::parse("es256"), None);
    }

    #[test]
    fn only_jwt_shapes_look_like_jwts() {
        assert!(looks_like_jwt("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln"));
        assert!(!looks_like_jwt("kg_live_abc"));
        assert!(!looks_like_jwt("eyJ.only-one-dot"));
        assert!(!looks_like_jwt("eyJ.a.b.c"));
    }
}
