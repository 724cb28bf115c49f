//! The opaque credential format (API.md §2): `<prefix>_<kind>_<env>_<body>`, where the body is 30
//! random base62 characters and 6 base62 characters of a CRC32 over everything before them.
//!
//! The checksum lets a mistyped or truncated credential be refused without a store access, and lets
//! secret scanners recognise keygate credentials with few false positives. It is not a secret and
//! gives no security by itself: the 30 random characters (178 bits) do. Only the SHA-256 of a
//! credential is ever stored; the full value exists in memory while it is created or checked.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::base62;

const RANDOM_LEN: usize = 30;
const CHECKSUM_LEN: usize = 6;
const BODY_LEN: usize = RANDOM_LEN + CHECKSUM_LEN;
/// Far above any credential this format produces; longer input is refused before any work.
pub const MAX_LEN: usize = 128;
/// How many trailing characters of a credential lists show to tell credentials apart.
pub const HINT_LEN: usize = 4;

/// `live` or `test`: a server accepts only its own environment's credentials, so a test key pasted
/// into production fails loudly instead of working against the wrong data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Live,
    Test,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Live => "live",
            Environment::Test => "test",
        }
    }

    fn from_segment(segment: &str) -> Option<Self> {
        match segment {
            "live" => Some(Environment::Live),
            "test" => Some(Environment::Test),
            _ => None,
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a credential is, which decides who it acts for and where it is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A user's own token; acts with the user's role at request time.
    Personal,
    /// A tenant's token for automation; acts with an explicit role and outlives its creator.
    Service,
    /// One of a tenant's (at most two) account keys; acts with the `admin` role.
    AccountKey,
    /// A user's signed-in browser session.
    Session,
    /// An OAuth client's secret; only accepted at the token endpoint.
    OauthSecret,
    /// An OAuth refresh token; only accepted at the token endpoint.
    Refresh,
    /// An OAuth access token: a JWT signed by keygate (see [`crate::jwt`]), never stored and never
    /// in the opaque format; its id is the token's `jti`.
    AccessToken,
}

impl CredentialKind {
    pub const ALL: [CredentialKind; 7] = [
        CredentialKind::Personal,
        CredentialKind::Service,
        CredentialKind::AccountKey,
        CredentialKind::Session,
        CredentialKind::OauthSecret,
        CredentialKind::Refresh,
        CredentialKind::AccessToken,
    ];

    /// Whether credentials of this kind are in the opaque format (everything but access tokens).
    pub fn is_opaque(self) -> bool {
        self != CredentialKind::AccessToken
    }

    /// The `<kind>` segment of the credential text; personal tokens have none.
    pub fn segment(self) -> Option<&'static str> {
        match self {
            CredentialKind::Personal => None,
            CredentialKind::Service => Some("service"),
            CredentialKind::AccountKey => Some("key"),
            CredentialKind::Session => Some("session"),
            CredentialKind::OauthSecret => Some("secret"),
            CredentialKind::Refresh => Some("refresh"),
            CredentialKind::AccessToken => Some("access"),
        }
    }

    /// The prefix of this kind's ids (API.md §1).
    pub fn id_prefix(self) -> &'static str {
        match self {
            CredentialKind::Personal | CredentialKind::Service => "tok",
            CredentialKind::AccountKey => "key",
            CredentialKind::Session => "ses",
            CredentialKind::OauthSecret => "cli",
            CredentialKind::Refresh => "rft",
            CredentialKind::AccessToken => "atk",
        }
    }

    /// The name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Personal => "personal",
            CredentialKind::Service => "service",
            CredentialKind::AccountKey => "account_key",
            CredentialKind::Session => "session",
            CredentialKind::OauthSecret => "oauth_secret",
            CredentialKind::Refresh => "refresh",
            CredentialKind::AccessToken => "access_token",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    fn from_segment(segment: Option<&str>) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.is_opaque() && kind.segment() == segment)
    }
}

/// Why a presented credential was refused before any store access.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("the credential is not in keygate's format")]
    Malformed,
    #[error("the credential's checksum does not match: it was mistyped, truncated or altered")]
    BadChecksum,
    #[error("the credential was not issued by this deployment")]
    ForeignPrefix,
    #[error("this is a {credential} credential and this server only accepts {server} credentials")]
    WrongEnvironment {
        credential: Environment,
        server: Environment,
    },
}

/// The deployment's credential format: its brand prefix and its environment.
#[derive(Debug, Clone)]
pub struct CredentialFormat {
    prefix: String,
    environment: Environment,
}

/// Why a configured prefix cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("token_prefix must be 1 to 16 lowercase ASCII letters or digits, got `{0}`")]
pub struct BadPrefix(pub String);

impl CredentialFormat {
    pub fn new(prefix: &str, environment: Environment) -> Result<Self, BadPrefix> {
        let valid = (1..=16).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid {
            return Err(BadPrefix(prefix.to_owned()));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            environment,
        })
    }

    pub fn environment(&self) -> Environment {
        self.environment
    }

    /// A new credential of `kind`, from the operating system's randomness.
    pub fn generate(&self, kind: CredentialKind) -> Result<Secret, getrandom::Error> {
        let mut text = String::with_capacity(self.prefix.len() + 16 + BODY_LEN);
        text.push_str(&self.prefix);
        text.push('_');
        if let Some(segment) = kind.segment() {
            text.push_str(segment);
            text.push('_');
        }
        text.push_str(self.environment.as_str());
        text.push('_');
        base62::push_random(&mut text, RANDOM_LEN)?;
        let mut checksum = [0u8; CHECKSUM_LEN];
        base62::encode_fixed(u64::from(crc32fast::hash(text.as_bytes())), &mut checksum);
        text.extend(checksum.iter().map(|&b| b as char));
        Ok(Secret(text))
    }

    /// Checks the shape, checksum, prefix and environment of `text`, without any store access and
    /// without allocating.
    pub fn parse(&self, text: &str) -> Result<CredentialKind, FormatError> {
        // `<head>_<body>`, the body being the last BODY_LEN characters and free of `_`. Every
        // byte is looked at without an early exit, which the compiler turns into a few vector
        // instructions: this runs on every request.
        let bytes = text.as_bytes();
        let well_formed = bytes.len() <= MAX_LEN
            && bytes.len() > BODY_LEN
            && bytes[bytes.len() - BODY_LEN - 1] == b'_'
            && bytes.iter().fold(true, |ok, &b| {
                ok & (b.is_ascii_alphanumeric() | (b == b'_'))
            })
            && bytes[bytes.len() - BODY_LEN..]
                .iter()
                .fold(true, |ok, &b| ok & (b != b'_'));
        if !well_formed {
            return Err(FormatError::Malformed);
        }
        // `<prefix>_<environment>` or `<prefix>_<kind>_<environment>`: the head is a few
        // bytes, for which a byte loop is cheaper than `split`'s searcher.
        let head = &text[..text.len() - BODY_LEN - 1];
        let mut underscores = head
            .bytes()
            .enumerate()
            .filter_map(|(i, b)| (b == b'_').then_some(i));
        let (prefix, kind_segment, env_segment) =
            match (underscores.next(), underscores.next(), underscores.next()) {
                (Some(first), None, _) => (&head[..first], None, &head[first + 1..]),
                (Some(first), Some(second), None) => (
                    &head[..first],
                    Some(&head[first + 1..second]),
                    &head[second + 1..],
                ),
                _ => return Err(FormatError::Malformed),
            };

        let (signed, checksum) = text.split_at(text.len() - CHECKSUM_LEN);
        let mut expected = [0u8; CHECKSUM_LEN];
        base62::encode_fixed(u64::from(crc32fast::hash(signed.as_bytes())), &mut expected);
        if checksum.as_bytes() != expected {
            return Err(FormatError::BadChecksum);
        }
        if prefix != self.prefix {
            return Err(FormatError::ForeignPrefix);
        }
        let environment = Environment::from_segment(env_segment).ok_or(FormatError::Malformed)?;
        if environment != self.environment {
            return Err(FormatError::WrongEnvironment {
                credential: environment,
                server: self.environment,
            });
        }
        CredentialKind::from_segment(kind_segment).ok_or(FormatError::Malformed)
    }
}

/// A credential's full value, held only while it is being handed out. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The full value, for the one response that shows it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_exposed(self) -> String {
        self.0
    }

    pub fn hash(&self) -> CredentialHash {
        CredentialHash::of(&self.0)
    }

    pub fn hint(&self) -> String {
        hint(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(…{})", hint(&self.0))
    }
}

/// The last characters of a credential, shown in lists so people can tell their credentials apart.
pub fn hint(text: &str) -> String {
    let start = text
        .char_indices()
        .rev()
        .nth(HINT_LEN - 1)
        .map_or(0, |(index, _)| index);
    text[start..].to_owned()
}

/// The SHA-256 of a credential: all the store keeps of it, and the key it is looked up by.
///
/// A fast hash is right here, unlike for passwords: credentials carry 178 random bits, so there is
/// nothing to brute-force, and verification must stay cheap.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CredentialHash([u8; 32]);

impl CredentialHash {
    pub fn of(text: &str) -> Self {
        Self(Sha256::digest(text.as_bytes()).into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Lowercase hex, as GitHub's secret-scanning feedback names a token (`token_hash`).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Equality that takes the same time wherever the hashes differ.
    pub fn ct_eq(&self, other: &CredentialHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for CredentialHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialHash({:02x}{:02x}…)", self.0[0], self.0[1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> CredentialFormat {
        CredentialFormat::new("kg", Environment::Live).unwrap()
    }

    #[test]
    fn generated_credentials_have_the_documented_shape() {
        let format = live();
        let personal = format.generate(CredentialKind::Personal).unwrap();
        let service = format.generate(CredentialKind::Service).unwrap();
        assert!(personal.expose().starts_with("kg_live_"));
        assert!(service.expose().starts_with("kg_service_live_"));
        assert_eq!(personal.expose().len(), "kg_live_".len() + BODY_LEN);
        let lynk = CredentialFormat::new("lynk", Environment::Test).unwrap();
        let key = lynk.generate(CredentialKind::AccountKey).unwrap();
        assert!(key.expose().starts_with("lynk_key_test_"));
        assert_ne!(personal, format.generate(CredentialKind::Personal).unwrap());
    }

    #[test]
    fn every_kind_round_trips() {
        let format = live();
        for kind in CredentialKind::ALL.into_iter().filter(|k| k.is_opaque()) {
            let secret = format.generate(kind).unwrap();
            assert_eq!(format.parse(secret.expose()), Ok(kind), "{kind:?}");
        }
        // Access tokens are JWTs: the opaque shape of that kind means nothing.
        let access = format.generate(CredentialKind::AccessToken).unwrap();
        assert_eq!(format.parse(access.expose()), Err(FormatError::Malformed));
    }

    #[test]
    fn any_single_changed_character_fails_the_checksum_or_shape() {
        let format = live();
        let secret = format.generate(CredentialKind::Service).unwrap();
        let text = secret.expose();
        for index in 0..text.len() {
            let mut bytes = text.as_bytes().to_vec();
            bytes[index] = if bytes[index] == b'x' { b'y' } else { b'x' };
            let altered = String::from_utf8(bytes).unwrap();
            assert!(format.parse(&altered).is_err(), "accepted {altered}");
        }
        let mut flipped = text.to_owned();
        let last_random = flipped.len() - CHECKSUM_LEN - 1;
        let replacement = if &text[last_random..=last_random] == "A" {
            "B"
        } else {
            "A"
        };
        flipped.replace_range(last_random..=last_random, replacement);
        assert_eq!(format.parse(&flipped), Err(FormatError::BadChecksum));
    }

    #[test]
    fn the_other_environment_is_refused_with_a_reason() {
        let test = CredentialFormat::new("kg", Environment::Test).unwrap();
        let secret = test.generate(CredentialKind::Personal).unwrap();
        let error = live().parse(secret.expose()).unwrap_err();
        assert_eq!(
            error,
            FormatError::WrongEnvironment {
                credential: Environment::Test,
                server: Environment::Live
            }
        );
        assert!(error.to_string().contains("test credential"));
    }

    /// The format as first written: split on underscores, then check. `parse` does the same work
    /// without searching, and must agree with this on every input.
    fn parse_by_splitting(
        format: &CredentialFormat,
        text: &str,
    ) -> Result<CredentialKind, FormatError> {
        if text.len() > MAX_LEN || !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(FormatError::Malformed);
        }
        let (head, body) = text.rsplit_once('_').ok_or(FormatError::Malformed)?;
        if body.len() != BODY_LEN {
            return Err(FormatError::Malformed);
        }
        let mut segments = head.split('_');
        let (Some(prefix), Some(second)) = (segments.next(), segments.next()) else {
            return Err(FormatError::Malformed);
        };
        let (kind_segment, env_segment) = match (segments.next(), segments.next()) {
            (None, _) => (None, second),
            (Some(third), None) => (Some(second), third),
            (Some(_), Some(_)) => return Err(FormatError::Malformed),
        };
        let (signed, checksum) = text.split_at(text.len() - CHECKSUM_LEN);
        let mut expected = [0u8; CHECKSUM_LEN];
        base62::encode_fixed(u64::from(crc32fast::hash(signed.as_bytes())), &mut expected);
        if checksum.as_bytes() != expected {
            return Err(FormatError::BadChecksum);
        }
        if prefix != format.prefix {
            return Err(FormatError::ForeignPrefix);
        }
        let environment = Environment::from_segment(env_segment).ok_or(FormatError::Malformed)?;
        if environment != format.environment {
            return Err(FormatError::WrongEnvironment {
                credential: environment,
                server: format.environment,
            });
        }
        CredentialKind::from_segment(kind_segment).ok_or(FormatError::Malformed)
    }

    proptest::proptest! {
        #[test]
        fn parse_agrees_with_splitting(
            text in "[a-z]{0,3}(_[a-z]{0,5}){0,3}_[A-Za-z0-9_]{34,38}|[A-Za-z0-9_ü]{0,60}",
            valid_kind in 0..CredentialKind::ALL.len(),
            cut in 0usize..60,
        ) {
            let format = live();
            proptest::prop_assert_eq!(format.parse(&text), parse_by_splitting(&format, &text));
            // And on real credentials, whole and cut short.
            let kind = CredentialKind::ALL[valid_kind];
            if kind.is_opaque() {
                let secret = format.generate(kind).unwrap();
                let real = secret.expose();
                proptest::prop_assert_eq!(format.parse(real), parse_by_splitting(&format, real));
                let short = &real[..real.len().saturating_sub(cut)];
                proptest::prop_assert_eq!(format.parse(short), parse_by_splitting(&format, short));
            }
        }
    }

    // What a network sends: any text at all, and real credentials with a character changed,
    // added or taken away (any character: multi-byte ones must not split a slice). Parsing
    // never panics, agrees with the plain reading of the format, and accepts nothing but a
    // credential this server issues, unchanged.
    proptest::proptest! {
        #[test]
        fn any_text_is_parsed_without_panic_and_as_documented(text in proptest::prelude::any::<String>()) {
            let format = live();
            let parsed = format.parse(&text);
            proptest::prop_assert_eq!(&parsed, &parse_by_splitting(&format, &text));
            if let Ok(kind) = parsed {
                proptest::prop_assert!(kind.is_opaque());
            }
        }

        #[test]
        fn a_credential_changed_anywhere_is_refused(
            valid_kind in 0..CredentialKind::ALL.len(),
            at in 0usize..80,
            with in proptest::prelude::any::<char>(),
            how in 0u8..3,
        ) {
            let format = live();
            let kind = CredentialKind::ALL[valid_kind];
            proptest::prop_assume!(kind.is_opaque());
            let secret = format.generate(kind).unwrap();
            let real = secret.expose();
            let at = at % real.len();
            let mut changed = real.to_owned();
            match how {
                0 => changed.replace_range(at..=at, with.encode_utf8(&mut [0; 4])),
                1 => changed.insert(at, with),
                _ => {
                    changed.remove(at);
                }
            }
            let parsed = format.parse(&changed);
            proptest::prop_assert_eq!(&parsed, &parse_by_splitting(&format, &changed));
            if changed != real {
                proptest::prop_assert!(parsed.is_err(), "{} accepted", changed);
            }
        }
    }

    #[test]
    fn foreign_prefix_and_garbage_are_refused() {
        let other = CredentialFormat::new("lynk", Environment::Live).unwrap();
        let secret = other.generate(CredentialKind::Personal).unwrap();
        assert_eq!(
            live().parse(secret.expose()),
            Err(FormatError::ForeignPrefix)
        );
        for garbage in [
            "",
            "kg",
            "kg_live_",
            "kg_live_short",
            "kg__live_x",
            "kg_live_ünï",
        ] {
            assert!(live().parse(garbage).is_err(), "{garbage}");
        }
        assert_eq!(
            live().parse(&"a".repeat(10_000)),
            Err(FormatError::Malformed)
        );
        assert_eq!(
            live().parse(&format!("kg_a_b_live_{}", "0".repeat(BODY_LEN))),
            Err(FormatError::Malformed)
        );
    }

    #[test]
    fn prefixes_are_validated() {
        assert!(CredentialFormat::new("", Environment::Live).is_err());
        assert!(CredentialFormat::new("a_b", Environment::Live).is_err());
        assert!(CredentialFormat::new("KG", Environment::Live).is_err());
        assert!(CredentialFormat::new("lynk2", Environment::Live).is_ok());
    }

    #[test]
    fn secrets_do_not_leak_through_debug_and_hints_are_the_tail() {
        let secret = live().generate(CredentialKind::Personal).unwrap();
        let debug = format!("{secret:?}");
        assert!(!debug.contains(secret.expose()));
        assert_eq!(secret.hint(), &secret.expose()[secret.expose().len() - 4..]);
        assert_eq!(hint("ab"), "ab");
        assert!(secret.hash().ct_eq(&CredentialHash::of(secret.expose())));
        assert!(!secret.hash().ct_eq(&CredentialHash::of("other")));
    }
}
