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

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ring::rand::SystemRandom;
use ring::signature::{self as ring_signature, KeyPair as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::Timestamp;
use crate::store::{Change, ChangeListener, SigningKeySource, Store, StoreError};

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

    fn jose(self) -> Algorithm {
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

    fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<(Vec<u8>, Sealing), KeyError> {
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

    fn open(&self, kid: &str, sealed: &[u8], sealing: &Sealing) -> Result<Vec<u8>, KeyError> {
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

fn corrupt(kid: &str, why: impl fmt::Display) -> KeyError {
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
    fn of(algorithm: SigningAlgorithm, public_key: &[u8]) -> Result<Self, String> {
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
    fn decoding_key(&self) -> Result<DecodingKey, String> {
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
enum PrivateKey {
    Ed25519(ring_signature::Ed25519KeyPair),
    P256(ring_signature::EcdsaKeyPair),
    Rsa(ring_signature::RsaKeyPair),
}

impl PrivateKey {
    /// Reads a PKCS#8 document. Ed25519 documents may be v1 (no public key inside, as keygate
    /// stored them before it signed with `ring`) or v2.
    fn from_pkcs8(algorithm: SigningAlgorithm, document: &[u8]) -> Result<Self, String> {
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
    fn public_key(&self) -> Vec<u8> {
        match self {
            Self::Ed25519(key) => key.public_key().as_ref().to_vec(),
            Self::P256(key) => key.public_key().as_ref().to_vec(),
            Self::Rsa(key) => key.public_key().as_ref().to_vec(),
        }
    }

    /// The JWS signature of `message` (for ES256, `r || s` as RFC 7518 §3.4 wants it).
    fn sign(&self, message: &[u8], random: &SystemRandom) -> Result<Vec<u8>, KeyError> {
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

/// The deployment's rules for access tokens and their keys.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    /// The `iss` of every token, and the one accepted.
    pub issuer: String,
    /// The audiences tokens may be issued for and are accepted with; the first is the default.
    /// Never empty.
    pub audiences: Vec<String>,
    /// The algorithm new keys are made for. A signing key of another one is replaced at once.
    pub algorithm: SigningAlgorithm,
    /// How long access tokens live: also how long a replaced key stays published.
    pub access_ttl: Duration,
    /// Replace the signing key once it is this old; never, if `None`.
    pub rotate_after: Option<Duration>,
}

struct Published {
    algorithm: SigningAlgorithm,
    decoding: DecodingKey,
    jwk: PublicJwk,
    retired_at: Option<Timestamp>,
    /// The opened private key, kept so a reload does not open (and derive) it again.
    private: Option<Arc<PrivateKey>>,
}

struct Signer {
    kid: String,
    generation: i64,
    algorithm: SigningAlgorithm,
    created_at: Timestamp,
    key: Arc<PrivateKey>,
    /// The base64url of the JWS header, the same for every token this key signs.
    header: String,
}

#[derive(Default)]
struct KeySet {
    loaded_at: Option<Timestamp>,
    keys: HashMap<String, Published>,
    signer: Option<Signer>,
    newest_generation: i64,
}

/// The node's signing keys: which one signs, and the decoded public keys tokens are checked with.
pub struct KeyRing {
    policy: KeyPolicy,
    sealer: Option<KeySealer>,
    set: RwLock<Arc<KeySet>>,
    /// A change to the key set was announced, or the announcements may have been missed.
    stale: AtomicBool,
    /// What tokens are checked against, one per algorithm (as [`SigningAlgorithm::ALL`]):
    /// `jsonwebtoken` wants the key and every accepted algorithm of one family.
    validations: [Validation; 3],
    random: SystemRandom,
}

impl KeyRing {
    pub fn new(policy: KeyPolicy, sealer: Option<KeySealer>) -> Self {
        let validations = SigningAlgorithm::ALL.map(|algorithm| {
            let mut validation = Validation::new(algorithm.jose());
            // Expiry is judged against keygate's clock (which tests move), not the system's.
            validation.validate_exp = false;
            validation.leeway = 0;
            validation.validate_aud = true;
            validation.set_audience(&policy.audiences);
            validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
            validation.set_issuer(&[policy.issuer.as_str()]);
            validation
        });
        Self {
            policy,
            sealer,
            set: RwLock::new(Arc::default()),
            stale: AtomicBool::new(true),
            validations,
            random: SystemRandom::new(),
        }
    }

    pub fn policy(&self) -> &KeyPolicy {
        &self.policy
    }

    fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.set.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Rereads the key set from the store, decoding only keys this node has not seen.
    pub async fn reload(
        &self,
        source: &dyn SigningKeySource,
        now: Timestamp,
    ) -> Result<(), KeyError> {
        self.stale.store(false, Ordering::Release);
        let stored = match source.signing_keys().await {
            Ok(stored) => stored,
            Err(error) => {
                self.stale.store(true, Ordering::Release);
                return Err(error.into());
            }
        };
        let previous = self.current();
        let mut next = KeySet {
            loaded_at: Some(now),
            ..KeySet::default()
        };
        for key in &stored {
            let known = previous.keys.get(&key.kid);
            let private = match known.and_then(|k| k.private.clone()) {
                Some(private) => Some(private),
                // Only a key that may sign is opened: opening derives a key with Argon2id.
                None if key.retired_at.is_none() => Some(Arc::new(self.open(key)?)),
                None => None,
            };
            let jwk =
                PublicJwk::of(key.algorithm, &key.public_key).map_err(|e| corrupt(&key.kid, e))?;
            if jwk.kid != key.kid {
                return Err(corrupt(
                    &key.kid,
                    "its id is not its public key's thumbprint",
                ));
            }
            let decoding = jwk.decoding_key().map_err(|e| corrupt(&key.kid, e))?;
            next.newest_generation = next.newest_generation.max(key.generation);
            if key.retired_at.is_none()
                && next
                    .signer
                    .as_ref()
                    .is_none_or(|s| s.generation < key.generation)
                && let Some(private) = &private
            {
                next.signer = Some(Signer {
                    kid: key.kid.clone(),
                    generation: key.generation,
                    algorithm: key.algorithm,
                    created_at: key.created_at,
                    key: Arc::clone(private),
                    header: jws_header(key.algorithm, &key.kid),
                });
            }
            next.keys.insert(
                key.kid.clone(),
                Published {
                    algorithm: key.algorithm,
                    decoding,
                    jwk,
                    retired_at: key.retired_at,
                    private,
                },
            );
        }
        *self.set.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(())
    }

    fn open(&self, key: &StoredSigningKey) -> Result<PrivateKey, KeyError> {
        let document = match (&key.sealing, &self.sealer) {
            (None, _) => key.private_key.clone(),
            (Some(_), None) => return Err(KeyError::NoSecret(key.kid.clone())),
            (Some(sealing), Some(sealer)) => sealer.open(&key.kid, &key.private_key, sealing)?,
        };
        let private =
            PrivateKey::from_pkcs8(key.algorithm, &document).map_err(|e| corrupt(&key.kid, e))?;
        if private.public_key() != key.public_key {
            return Err(corrupt(
                &key.kid,
                "its private key does not match its public key",
            ));
        }
        Ok(private)
    }

    /// Makes sure this node signs with the current key: rereads the set if it changed or is old,
    /// creates the first key, and replaces one older than the policy allows or made for another
    /// algorithm than the configured one (the replaced key goes on verifying its tokens).
    pub async fn prepare(&self, store: &dyn Store, now: Timestamp) -> Result<(), KeyError> {
        self.refresh_if_stale(store, now).await?;
        let set = self.current();
        let rotate = match (&set.signer, self.policy.rotate_after) {
            (None, _) => true,
            (Some(signer), _) if signer.algorithm != self.policy.algorithm => true,
            (Some(signer), Some(age)) => now >= signer.created_at.saturating_add(age),
            (Some(_), None) => false,
        };
        if rotate {
            self.add_key(store, set.newest_generation + 1, now).await?;
        }
        Ok(())
    }

    /// Replaces the signing key now, whatever its age (`keygate oauth rotate-key`). Returns the
    /// new key's id.
    pub async fn rotate(&self, store: &dyn Store, now: Timestamp) -> Result<String, KeyError> {
        self.reload(store, now).await?;
        let generation = self.current().newest_generation + 1;
        self.add_key(store, generation, now).await?;
        self.current()
            .signer
            .as_ref()
            .map(|s| s.kid.clone())
            .ok_or(KeyError::NoSigningKey)
    }

    async fn add_key(
        &self,
        store: &dyn Store,
        generation: i64,
        now: Timestamp,
    ) -> Result<(), KeyError> {
        let key = generate_key(self.policy.algorithm, generation, now, self.sealer.as_ref())?;
        // Keys retired longer ago than any token they signed can live are of no more use.
        let keep = i64::try_from((self.policy.access_ttl + RELOAD_EVERY).as_secs());
        let expired_before =
            Timestamp::from_unix(now.unix().saturating_sub(keep.unwrap_or(i64::MAX)));
        // `false`: another node took this generation first; its key is the one to use.
        store.add_signing_key(&key, now, expired_before).await?;
        self.reload(store, now).await
    }

    /// Signs `claims` with the current key ([`Self::prepare`] first): a compact JWS (RFC 7515
    /// §7.1), signed by `ring`.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, KeyError> {
        let set = self.current();
        let signer = set.signer.as_ref().ok_or(KeyError::NoSigningKey)?;
        let payload = serde_json::to_vec(claims).map_err(|e| KeyError::Signing(e.to_string()))?;
        let mut token = String::with_capacity(512);
        token.push_str(&signer.header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);
        let signature = signer.key.sign(token.as_bytes(), &self.random)?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }

    /// Checks a token's header, signature, issuer, audience and expiry at `now`, without the
    /// store. The algorithm is the one of the key its `kid` names, never one the token chooses.
    pub fn decode(&self, token: &str, now: Timestamp) -> Result<AccessClaims, JwtRefusal> {
        if token.len() > MAX_LEN {
            return Err(JwtRefusal::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtRefusal::Malformed)?;
        if header.typ.as_deref() != Some(TOKEN_TYPE) {
            return Err(JwtRefusal::Malformed);
        }
        let kid = header.kid.ok_or(JwtRefusal::Malformed)?;
        let set = self.current();
        let key = set.keys.get(&kid).ok_or(JwtRefusal::UnknownKey)?;
        if header.alg != key.algorithm.jose() {
            return Err(JwtRefusal::Malformed);
        }
        let validation = match key.algorithm {
            SigningAlgorithm::Es256 => &self.validations[0],
            SigningAlgorithm::EdDsa => &self.validations[1],
            SigningAlgorithm::Rs256 => &self.validations[2],
        };
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, validation).map_err(
            |e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidSignature => JwtRefusal::BadSignature,
                    ErrorKind::InvalidIssuer => JwtRefusal::WrongIssuer,
                    ErrorKind::InvalidAudience => JwtRefusal::WrongAudience,
                    _ => JwtRefusal::Malformed,
                }
            },
        )?;
        if data.claims.exp <= now.unix() {
            return Err(JwtRefusal::Expired);
        }
        Ok(data.claims)
    }

    /// Whether an unknown `kid` might be a key this node has not read yet: a change was
    /// announced, or the set was read in an earlier second (a token signed with a new key can
    /// arrive before the announcement of that key; a forged `kid` costs a read a second at most).
    pub fn may_be_behind(&self, now: Timestamp) -> bool {
        self.stale.load(Ordering::Acquire) || self.current().loaded_at.is_none_or(|at| at < now)
    }

    /// Rereads the set if a change was announced or it is older than [`RELOAD_EVERY`].
    pub async fn refresh_if_stale(
        &self,
        source: &dyn SigningKeySource,
        now: Timestamp,
    ) -> Result<(), KeyError> {
        let due = self
            .current()
            .loaded_at
            .is_none_or(|at| now >= at.saturating_add(RELOAD_EVERY) || now < at);
        if self.stale.load(Ordering::Acquire) || due {
            self.reload(source, now).await?;
        }
        Ok(())
    }

    /// The keys to publish at `now`: the signing key, and replaced ones whose tokens may still be
    /// alive, newest first.
    pub fn published(&self, now: Timestamp) -> Vec<PublicJwk> {
        let keep = self.policy.access_ttl + RELOAD_EVERY;
        let set = self.current();
        let mut keys: Vec<(&Published, Option<Timestamp>)> = set
            .keys
            .values()
            .filter(|k| k.retired_at.is_none_or(|at| now < at.saturating_add(keep)))
            .map(|k| (k, k.retired_at))
            .collect();
        keys.sort_by_key(|(_, retired)| {
            std::cmp::Reverse(retired.map_or(i64::MAX, Timestamp::unix))
        });
        keys.into_iter().map(|(k, _)| k.jwk.clone()).collect()
    }
}

/// The base64url JWS header of tokens signed by key `kid`: `alg`, `typ` (RFC 9068 §2.1), `kid`.
fn jws_header(algorithm: SigningAlgorithm, kid: &str) -> String {
    #[derive(Serialize)]
    struct Header<'a> {
        alg: &'static str,
        typ: &'static str,
        kid: &'a str,
    }
    let header = Header {
        alg: algorithm.as_str(),
        typ: TOKEN_TYPE,
        kid,
    };
    // Three strings always serialize.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default())
}

impl ChangeListener for KeyRing {
    fn changed(&self, change: &Change) {
        if *change == Change::SigningKeys {
            self.stale.store(true, Ordering::Release);
        }
    }

    fn may_have_missed_changes(&self) {
        self.stale.store(true, Ordering::Release);
    }

    fn resynced(&self) {
        self.stale.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    const NOW: Timestamp = Timestamp::from_unix(1_800_000_000);
    const ISSUER: &str = "https://keygate.example";
    const API: &str = "https://api.example.com";

    /// A key set in memory: all a key ring reads.
    #[derive(Default)]
    struct Keys(Mutex<Vec<StoredSigningKey>>);

    #[async_trait::async_trait]
    impl SigningKeySource for Keys {
        async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
            Ok(self.0.lock().unwrap().clone())
        }
    }

    fn policy(algorithm: SigningAlgorithm) -> KeyPolicy {
        KeyPolicy {
            issuer: ISSUER.into(),
            audiences: vec![ISSUER.into(), API.into()],
            algorithm,
            access_ttl: Duration::from_secs(900),
            rotate_after: None,
        }
    }

    /// A key ring reading `keys`, which it signs with (the newest unretired one).
    async fn ring(algorithm: SigningAlgorithm, keys: &Keys) -> KeyRing {
        let ring = KeyRing::new(policy(algorithm), None);
        ring.reload(keys, NOW).await.unwrap();
        ring
    }

    fn claims(audience: &[&str]) -> AccessClaims {
        AccessClaims {
            iss: ISSUER.into(),
            aud: Audience::new(audience.iter().map(|a| (*a).to_owned()).collect()).unwrap(),
            sub: "cli_x".into(),
            client_id: "cli_x".into(),
            tenant: "tnt_x".into(),
            scope: "tokens:read".into(),
            iat: NOW.unix(),
            exp: NOW.unix() + 900,
            jti: "atk_x".into(),
        }
    }

    fn part(token: &str, index: usize) -> serde_json::Value {
        let piece = token.split('.').nth(index).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(piece).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn each_algorithm_signs_tokens_it_verifies_and_refuses_tampered_ones() {
        for algorithm in SigningAlgorithm::ALL {
            let keys = Keys::default();
            let key = generate_key(algorithm, 1, NOW, None).unwrap();
            assert_eq!(key.algorithm, algorithm);
            keys.0.lock().unwrap().push(key.clone());
            let ring = ring(algorithm, &keys).await;
            let token = ring.sign(&claims(&[API])).unwrap();

            let header = part(&token, 0);
            assert_eq!(header["alg"], algorithm.as_str());
            assert_eq!(header["typ"], "at+jwt");
            assert_eq!(header["kid"], key.kid.as_str());
            assert_eq!(part(&token, 1)["aud"], API, "one audience is a string");
            assert_eq!(ring.decode(&token, NOW), Ok(claims(&[API])), "{algorithm}");

            let published = ring.published(NOW);
            assert_eq!(published.len(), 1);
            let jwk = serde_json::to_value(&published[0]).unwrap();
            assert_eq!(jwk["alg"], algorithm.as_str());
            assert_eq!(jwk["use"], "sig");
            assert_eq!(jwk["kid"], key.kid.as_str());
            assert_eq!(published[0].thumbprint(), key.kid);
            let members: Vec<&str> = jwk
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            match algorithm {
                SigningAlgorithm::Es256 => {
                    assert_eq!(
                        (jwk["kty"].as_str(), jwk["crv"].as_str()),
                        (Some("EC"), Some("P-256"))
                    );
                    assert_eq!(members, ["alg", "crv", "kid", "kty", "use", "x", "y"]);
                }
                SigningAlgorithm::EdDsa => {
                    assert_eq!(
                        (jwk["kty"].as_str(), jwk["crv"].as_str()),
                        (Some("OKP"), Some("Ed25519"))
                    );
                    assert_eq!(members, ["alg", "crv", "kid", "kty", "use", "x"]);
                }
                SigningAlgorithm::Rs256 => {
                    assert_eq!(jwk["kty"], "RSA");
                    assert_eq!(jwk["e"], "AQAB");
                    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
                    assert_eq!(n.len() * 8, RSA_BITS);
                    assert_eq!(members, ["alg", "e", "kid", "kty", "n", "use"]);
                }
            }

            // Claims widened after signing, or a signature of another token: refused.
            let pieces: Vec<&str> = token.split('.').collect();
            let mut widened = claims(&[API]);
            widened.scope = "tokens:write".into();
            let widened = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&widened).unwrap());
            let tampered = format!("{}.{widened}.{}", pieces[0], pieces[2]);
            assert_eq!(
                ring.decode(&tampered, NOW),
                Err(JwtRefusal::BadSignature),
                "{algorithm}"
            );
            let mut signature = URL_SAFE_NO_PAD.decode(pieces[2]).unwrap();
            signature[0] ^= 1;
            let flipped = format!(
                "{}.{}.{}",
                pieces[0],
                pieces[1],
                URL_SAFE_NO_PAD.encode(signature)
            );
            assert_eq!(
                ring.decode(&flipped, NOW),
                Err(JwtRefusal::BadSignature),
                "{algorithm}"
            );

            // Not for this deployment, not from it, expired.
            let elsewhere = ring.sign(&claims(&["https://elsewhere.example"])).unwrap();
            assert_eq!(ring.decode(&elsewhere, NOW), Err(JwtRefusal::WrongAudience));
            let several = ring
                .sign(&claims(&["https://elsewhere.example", API]))
                .unwrap();
            assert!(
                part(&several, 1)["aud"].is_array(),
                "several audiences are an array"
            );
            assert!(ring.decode(&several, NOW).is_ok(), "one of them is ours");
            let mut foreign = claims(&[API]);
            foreign.iss = "https://other.example".into();
            let foreign = ring.sign(&foreign).unwrap();
            assert_eq!(ring.decode(&foreign, NOW), Err(JwtRefusal::WrongIssuer));
            assert_eq!(
                ring.decode(&token, Timestamp::from_unix(NOW.unix() + 900)),
                Err(JwtRefusal::Expired)
            );
        }
    }

    #[tokio::test]
    async fn a_token_cannot_choose_another_algorithm_than_its_key() {
        let keys = Keys::default();
        keys.0
            .lock()
            .unwrap()
            .push(generate_key(SigningAlgorithm::Es256, 1, NOW, None).unwrap());
        let ring = ring(SigningAlgorithm::Es256, &keys).await;
        let token = ring.sign(&claims(&[ISSUER])).unwrap();
        let pieces: Vec<&str> = token.split('.').collect();
        for alg in ["EdDSA", "RS256", "HS256", "none"] {
            let mut header = part(&token, 0);
            header["alg"] = alg.into();
            let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
            let forged = format!("{header}.{}.{}", pieces[1], pieces[2]);
            assert_eq!(
                ring.decode(&forged, NOW),
                Err(JwtRefusal::Malformed),
                "{alg}"
            );
        }
        let mut header = part(&token, 0);
        header["typ"] = "JWT".into();
        let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap());
        let id_token = format!("{header}.{}.{}", pieces[1], pieces[2]);
        assert_eq!(ring.decode(&id_token, NOW), Err(JwtRefusal::Malformed));
    }

    #[tokio::test]
    async fn a_key_of_another_algorithm_is_replaced_and_keeps_verifying_its_tokens() {
        // An Ed25519 key as keygate made them before it signed with ring (PKCS#8 v1, by
        // ed25519-dalek), and a token it signed.
        let dalek = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let document = {
            use ed25519_dalek::pkcs8::EncodePrivateKey;
            dalek.to_pkcs8_der().unwrap().as_bytes().to_vec()
        };
        let public_key = dalek.verifying_key().to_bytes().to_vec();
        let old = StoredSigningKey {
            kid: thumbprint(SigningAlgorithm::EdDsa, &public_key).unwrap(),
            generation: 1,
            algorithm: SigningAlgorithm::EdDsa,
            public_key,
            private_key: document,
            sealing: None,
            created_at: NOW,
            retired_at: None,
        };
        let keys = Keys::default();
        keys.0.lock().unwrap().push(old.clone());
        let before = ring(SigningAlgorithm::EdDsa, &keys).await;
        let token = before.sign(&claims(&[ISSUER])).unwrap();
        assert_eq!(part(&token, 0)["alg"], "EdDSA");

        // Started again with ES256: the store retires the EdDSA key when the new one is added.
        let after = ring(SigningAlgorithm::Es256, &keys).await;
        let new = generate_key(after.policy().algorithm, 2, NOW, None).unwrap();
        {
            let mut stored = keys.0.lock().unwrap();
            stored[0].retired_at = Some(NOW);
            stored.push(new.clone());
        }
        after.reload(&keys, NOW).await.unwrap();
        let fresh = after.sign(&claims(&[ISSUER])).unwrap();
        assert_eq!(part(&fresh, 0)["alg"], "ES256");
        assert_eq!(
            after.decode(&token, NOW),
            Ok(claims(&[ISSUER])),
            "the old token verifies"
        );
        assert!(after.decode(&fresh, NOW).is_ok());
        let published: Vec<(&str, String)> = after
            .published(NOW)
            .iter()
            .map(|k| (k.alg, k.kid.clone()))
            .collect();
        assert_eq!(published, [("ES256", new.kid), ("EdDSA", old.kid)]);
        // Gone once its tokens cannot be alive any more.
        let later = Timestamp::from_unix(NOW.unix() + 900 + 60);
        assert_eq!(after.published(later).len(), 1);
    }

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
