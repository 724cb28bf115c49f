//! Leak reports from GitHub's secret-scanning partner programme (API.md §15): the public keys
//! GitHub signs its reports with, and the check of a report's signature.
//!
//! GitHub publishes its keys as a JSON document (`{"public_keys": [{"key_identifier", "key",
//! "is_current"}]}`, each key a PEM `PUBLIC KEY` on the P-256 curve) and signs the raw body of each
//! report with ECDSA P-256 and SHA-256, the signature in ASN.1 DER, base64-encoded, in
//! `Github-Public-Key-Signature`; `Github-Public-Key-Identifier` names the key. A report that does
//! not verify must change nothing.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use serde::Deserialize;

/// The DER of a P-256 `SubjectPublicKeyInfo` up to its point: the algorithm (id-ecPublicKey,
/// prime256v1) and the bit string's header. What follows is the 65-byte uncompressed point.
const P256_SPKI_HEADER: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// Why GitHub's key document could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    #[error("not GitHub's public-key document: {0}")]
    Document(String),
    #[error("key `{0}` is not a P-256 public key in PEM")]
    Key(String),
}

/// Why a report was refused. Each message is safe to show the reporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the report names no key, or one keygate does not know")]
    UnknownKey,
    #[error("the report's signature does not verify with the key it names")]
    BadSignature,
}

#[derive(Deserialize)]
struct Document {
    public_keys: Vec<DocumentKey>,
}

#[derive(Deserialize)]
struct DocumentKey {
    key_identifier: String,
    key: String,
}

/// GitHub's secret-scanning public keys, by identifier.
#[derive(Debug, Clone, Default)]
pub struct GithubKeys {
    keys: Vec<(String, Vec<u8>)>,
}

impl GithubKeys {
    /// Reads GitHub's document. Every key must be usable: a document with one bad key is refused
    /// whole, so an operator learns of it when loading, not when a report arrives.
    pub fn parse(document: &str) -> Result<Self, KeysError> {
        let document: Document =
            serde_json::from_str(document).map_err(|e| KeysError::Document(e.to_string()))?;
        if document.public_keys.is_empty() {
            return Err(KeysError::Document("it lists no key".into()));
        }
        let keys = document
            .public_keys
            .into_iter()
            .map(|k| {
                let point =
                    p256_point(&k.key).ok_or_else(|| KeysError::Key(k.key_identifier.clone()))?;
                Ok((k.key_identifier, point))
            })
            .collect::<Result<_, KeysError>>()?;
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks `signature` (base64 of an ASN.1 DER ECDSA signature) over `body` with key `key_id`.
    pub fn verify(&self, key_id: &str, signature: &str, body: &[u8]) -> Result<(), SignatureError> {
        let point = self
            .keys
            .iter()
            .find(|(id, _)| id == key_id)
            .map(|(_, point)| point)
            .ok_or(SignatureError::UnknownKey)?;
        let signature = STANDARD
            .decode(signature.trim())
            .map_err(|_| SignatureError::BadSignature)?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point)
            .verify(body, &signature)
            .map_err(|_| SignatureError::BadSignature)
    }
}

/// The uncompressed point of a PEM P-256 public key, or `None` if it is not one.
fn p256_point(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|line| *line != "-----BEGIN PUBLIC KEY-----")
        .skip(1)
        .take_while(|line| *line != "-----END PUBLIC KEY-----")
        .collect();
    let der = STANDARD.decode(body).ok()?;
    let point = der.strip_prefix(&P256_SPKI_HEADER[..])?;
    (point.len() == 65 && point[0] == 0x04).then(|| point.to_vec())
}

/// A P-256 public key as PEM, for tests and tools that make their own key pair.
pub fn p256_public_pem(point: &[u8]) -> String {
    let mut der = P256_SPKI_HEADER.to_vec();
    der.extend_from_slice(point);
    let text = STANDARD.encode(der);
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    use super::*;

    fn document(id: &str, pem: &str) -> String {
        serde_json::json!({"public_keys": [{"key_identifier": id, "key": pem, "is_current": true}]})
            .to_string()
    }

    #[test]
    fn a_report_verifies_only_with_the_key_it_names() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let keys = GithubKeys::parse(&document(
            "k1",
            &p256_public_pem(pair.public_key().as_ref()),
        ))
        .unwrap();
        assert_eq!(keys.len(), 1);
        let body = br#"[{"token":"kg_live_x","type":"keygate_token","url":"https://x"}]"#;
        let signature = STANDARD.encode(pair.sign(&rng, body).unwrap().as_ref());
        assert_eq!(keys.verify("k1", &signature, body), Ok(()));
        assert_eq!(
            keys.verify("k1", &signature, b"[]"),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            keys.verify("k2", &signature, body),
            Err(SignatureError::UnknownKey)
        );
        assert_eq!(
            keys.verify("k1", "not base64!", body),
            Err(SignatureError::BadSignature)
        );
    }

    #[test]
    fn a_document_with_a_bad_key_is_refused() {
        assert!(matches!(
            GithubKeys::parse(&document("k1", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")),
            Err(KeysError::Key(id)) if id == "k1"
        ));
        assert!(GithubKeys::parse("{}").is_err());
        assert!(GithubKeys::parse(r#"{"public_keys": []}"#).is_err());
    }
}
