//! The node's signing keys: which one signs access tokens, and the decoded public keys tokens are
//! checked with, read from the store and kept current by its change notifications.
//!
//! The token format, the keys themselves (generation, sealing, JWKs) and what a refusal means live
//! in [`crate::jwt`]; this module is the service that holds them, and must never parse a key or the
//! key set on a request: each key is decoded once, when the node first sees it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, Validation};
use ring::rand::SystemRandom;
use serde::Serialize;

use crate::Timestamp;
use crate::jwt::{
    AccessClaims, JwtRefusal, KeyError, KeySealer, MAX_LEN, PrivateKey, PublicJwk, RELOAD_EVERY,
    SigningAlgorithm, StoredSigningKey, TOKEN_TYPE, corrupt, generate_key,
};
use crate::store::{Change, ChangeListener, SigningKeySource, Store};

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
    use crate::jwt::{Audience, RSA_BITS, thumbprint};
    use crate::store::StoreError;

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
            grant: None,
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
}
