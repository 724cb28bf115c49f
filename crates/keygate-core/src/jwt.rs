//! OAuth access tokens as JWTs (the RFC 9068 profile): signed by keygate with Ed25519 (`EdDSA`),
//! checkable by anyone holding the published keys (`/.well-known/jwks.json`).
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
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Timestamp;
use crate::store::{Change, ChangeListener, CredentialSource, Store, StoreError};

/// The JWS algorithm of every token keygate signs.
pub const ALGORITHM: &str = "EdDSA";
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

/// What an access token says. `sub` and `client_id` are both the client's id (RFC 9068 §2.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
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
    /// The raw 32-byte Ed25519 public key.
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

/// The RFC 7638 thumbprint of an Ed25519 public key: a `kid` anyone can recompute from the JWK.
pub fn thumbprint(public_key: &[u8]) -> String {
    let x = URL_SAFE_NO_PAD.encode(public_key);
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// A fresh Ed25519 key of `generation`, sealed if a sealer is given.
pub fn generate_key(
    generation: i64,
    now: Timestamp,
    sealer: Option<&KeySealer>,
) -> Result<StoredSigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)?;
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    seed.fill(0);
    let public_key = signing.verifying_key().to_bytes().to_vec();
    let kid = thumbprint(&public_key);
    let document = signing.to_pkcs8_der().map_err(|e| corrupt(&kid, e))?;
    let (private_key, sealing) = match sealer {
        Some(sealer) => {
            let (sealed, sealing) = sealer.seal(&kid, document.as_bytes())?;
            (sealed, Some(sealing))
        }
        None => (document.as_bytes().to_vec(), None),
    };
    Ok(StoredSigningKey {
        kid,
        generation,
        public_key,
        private_key,
        sealing,
        created_at: now,
        retired_at: None,
    })
}

/// A public key as `/.well-known/jwks.json` shows it (RFC 8037 `OKP`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicJwk {
    pub kty: &'static str,
    pub crv: &'static str,
    pub x: String,
    pub kid: String,
    #[serde(rename = "use")]
    pub usage: &'static str,
    pub alg: &'static str,
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
    #[error("the credential has expired")]
    Expired,
}

/// The deployment's rules for access tokens and their keys.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    /// The `iss` of every token, and the one accepted.
    pub issuer: String,
    /// How long access tokens live: also how long a replaced key stays published.
    pub access_ttl: Duration,
    /// Replace the signing key once it is this old; never, if `None`.
    pub rotate_after: Option<Duration>,
}

struct Published {
    decoding: DecodingKey,
    jwk: PublicJwk,
    retired_at: Option<Timestamp>,
    /// The opened private key, kept so a reload does not open (and derive) it again.
    private: Option<Arc<EncodingKey>>,
}

struct Signer {
    kid: String,
    generation: i64,
    created_at: Timestamp,
    encoding: Arc<EncodingKey>,
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
    validation: Validation,
}

impl KeyRing {
    pub fn new(policy: KeyPolicy, sealer: Option<KeySealer>) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Expiry is judged against keygate's clock (which tests move), not the system's.
        validation.validate_exp = false;
        validation.leeway = 0;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.set_issuer(&[policy.issuer.as_str()]);
        Self {
            policy,
            sealer,
            set: RwLock::new(Arc::default()),
            stale: AtomicBool::new(true),
            validation,
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
        source: &dyn CredentialSource,
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
            let x = URL_SAFE_NO_PAD.encode(&key.public_key);
            let decoding = DecodingKey::from_ed_components(&x).map_err(|e| corrupt(&key.kid, e))?;
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
                    created_at: key.created_at,
                    encoding: Arc::clone(private),
                });
            }
            next.keys.insert(
                key.kid.clone(),
                Published {
                    decoding,
                    jwk: PublicJwk {
                        kty: "OKP",
                        crv: "Ed25519",
                        x,
                        kid: key.kid.clone(),
                        usage: "sig",
                        alg: ALGORITHM,
                    },
                    retired_at: key.retired_at,
                    private,
                },
            );
        }
        *self.set.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(())
    }

    fn open(&self, key: &StoredSigningKey) -> Result<EncodingKey, KeyError> {
        let document = match (&key.sealing, &self.sealer) {
            (None, _) => key.private_key.clone(),
            (Some(_), None) => return Err(KeyError::NoSecret(key.kid.clone())),
            (Some(sealing), Some(sealer)) => sealer.open(&key.kid, &key.private_key, sealing)?,
        };
        Ok(EncodingKey::from_ed_der(&document))
    }

    /// Makes sure this node signs with the current key: rereads the set if it changed or is old,
    /// creates the first key, and rotates one older than the policy allows.
    pub async fn prepare(&self, store: &dyn Store, now: Timestamp) -> Result<(), KeyError> {
        self.refresh_if_stale(store, now).await?;
        let set = self.current();
        let rotate = match (&set.signer, self.policy.rotate_after) {
            (None, _) => true,
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
        let key = generate_key(generation, now, self.sealer.as_ref())?;
        // Keys retired longer ago than any token they signed can live are of no more use.
        let keep = i64::try_from((self.policy.access_ttl + RELOAD_EVERY).as_secs());
        let expired_before =
            Timestamp::from_unix(now.unix().saturating_sub(keep.unwrap_or(i64::MAX)));
        // `false`: another node took this generation first; its key is the one to use.
        store.add_signing_key(&key, now, expired_before).await?;
        self.reload(store, now).await
    }

    /// Signs `claims` with the current key ([`Self::prepare`] first).
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, KeyError> {
        let set = self.current();
        let signer = set.signer.as_ref().ok_or(KeyError::NoSigningKey)?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(signer.kid.clone());
        jsonwebtoken::encode(&header, claims, &signer.encoding)
            .map_err(|e| KeyError::Signing(e.to_string()))
    }

    /// Checks a token's header, signature, issuer and expiry at `now`, without the store.
    pub fn decode(&self, token: &str, now: Timestamp) -> Result<AccessClaims, JwtRefusal> {
        if token.len() > MAX_LEN {
            return Err(JwtRefusal::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtRefusal::Malformed)?;
        if header.alg != Algorithm::EdDSA || header.typ.as_deref() != Some(TOKEN_TYPE) {
            return Err(JwtRefusal::Malformed);
        }
        let kid = header.kid.ok_or(JwtRefusal::Malformed)?;
        let set = self.current();
        let key = set.keys.get(&kid).ok_or(JwtRefusal::UnknownKey)?;
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &self.validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidSignature => JwtRefusal::BadSignature,
                    ErrorKind::InvalidIssuer => JwtRefusal::WrongIssuer,
                    _ => JwtRefusal::Malformed,
                }
            })?;
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
        source: &dyn CredentialSource,
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
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_their_secret_and_kid() {
        let sealer = KeySealer::new("correct horse battery staple").unwrap();
        let key = generate_key(1, Timestamp::from_unix(0), Some(&sealer)).unwrap();
        let sealing = key.sealing.clone().unwrap();
        let document = sealer.open(&key.kid, &key.private_key, &sealing).unwrap();
        let opened =
            <ed25519_dalek::SigningKey as ed25519_dalek::pkcs8::DecodePrivateKey>::from_pkcs8_der(
                &document,
            )
            .unwrap();
        assert_eq!(opened.verifying_key().to_bytes().as_slice(), key.public_key);
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
            thumbprint(&x),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn only_jwt_shapes_look_like_jwts() {
        assert!(looks_like_jwt("eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln"));
        assert!(!looks_like_jwt("kg_live_abc"));
        assert!(!looks_like_jwt("eyJ.only-one-dot"));
        assert!(!looks_like_jwt("eyJ.a.b.c"));
    }
}
