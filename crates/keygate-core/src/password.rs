//! Password hashing with argon2id (the argon2 crate's defaults: 19 MiB, 2 passes, OWASP's
//! recommendation). Passwords are low-entropy, so unlike credentials they get a slow, salted hash.

use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, PasswordHash};

use crate::base62;

pub const MIN_LEN: usize = 12;
/// Hashing cost grows with length; a megabyte "password" is an attack, not a password.
pub const MAX_LEN: usize = 1024;
const GENERATED_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("a password must be at least {MIN_LEN} characters long")]
    TooShort,
    #[error("a password must be at most {MAX_LEN} bytes long")]
    TooLong,
    #[error("could not hash the password: {0}")]
    Hashing(String),
    #[error("could not draw randomness: {0}")]
    Random(#[from] getrandom::Error),
}

/// An argon2id hash in PHC string form, as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHashString(String);

impl PasswordHashString {
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PasswordHashString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHashString(…)")
    }
}

/// Checks a new password's length; the rest is the user's business.
pub fn validate(password: &str) -> Result<(), PasswordError> {
    if password.chars().count() < MIN_LEN {
        return Err(PasswordError::TooShort);
    }
    if password.len() > MAX_LEN {
        return Err(PasswordError::TooLong);
    }
    Ok(())
}

pub fn hash(password: &str) -> Result<PasswordHashString, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| PasswordHashString(hash.to_string()))
        .map_err(|e| PasswordError::Hashing(e.to_string()))
}

/// Whether `password` matches `stored`. The comparison inside argon2 is constant-time.
pub fn verify(password: &str, stored: &PasswordHashString) -> bool {
    if password.len() > MAX_LEN {
        return false;
    }
    PasswordHash::new(&stored.0).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Spends the time of a real verification and fails: used when the email is unknown, so a wrong
/// email and a wrong password cannot be told apart by timing.
pub fn verify_against_dummy(password: &str) -> bool {
    static DUMMY: OnceLock<Option<PasswordHashString>> = OnceLock::new();
    if let Some(dummy) = DUMMY.get_or_init(|| hash("keygate dummy password").ok()) {
        let _ = verify(password, dummy);
    }
    false
}

/// A random password for a user created without one; shown once.
pub fn generate() -> Result<String, PasswordError> {
    let mut password = String::with_capacity(GENERATED_LEN);
    base62::push_random(&mut password, GENERATED_LEN)?;
    Ok(password)
}

/// Where argon2 runs. One hash or check takes tens of milliseconds of CPU, which must not hold up
/// the async workers that serve every other request: the server runs the work on a blocking
/// thread; [`Inline`] runs it where it is called (the command line, tests). Every rule that hashes
/// or checks a password takes one, so none can do it on a worker by mistake.
#[async_trait::async_trait]
pub trait Hasher: Send + Sync {
    /// The hash of `password`, to store.
    async fn hash(&self, password: String) -> Result<PasswordHashString, PasswordError>;

    /// Whether `candidate` matches each of `stored`, in order. With none stored, spends the time
    /// of one check anyway ([`verify_against_dummy`]), so an unknown account answers as slowly
    /// as a wrong password.
    async fn verify_each(&self, candidate: String, stored: Vec<PasswordHashString>) -> Vec<bool>;
}

/// The work a [`Hasher`] runs: the same, wherever it runs.
pub fn verify_each(candidate: &str, stored: &[PasswordHashString]) -> Vec<bool> {
    if stored.is_empty() {
        verify_against_dummy(candidate);
        return Vec::new();
    }
    stored.iter().map(|hash| verify(candidate, hash)).collect()
}

/// Runs argon2 on the calling thread: for callers with no async workers to spare it from.
pub struct Inline;

#[async_trait::async_trait]
impl Hasher for Inline {
    async fn hash(&self, password: String) -> Result<PasswordHashString, PasswordError> {
        hash(&password)
    }

    async fn verify_each(&self, candidate: String, stored: Vec<PasswordHashString>) -> Vec<bool> {
        verify_each(&candidate, &stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash("correct horse battery").unwrap();
        let b = hash("correct horse battery").unwrap();
        assert!(a.as_str().starts_with("$argon2id$"));
        assert_ne!(a, b);
        assert!(verify("correct horse battery", &a));
        assert!(!verify("correct horse batterY", &a));
        assert!(!verify(
            "x",
            &PasswordHashString::from_stored("garbage".into())
        ));
        assert!(!verify_against_dummy("keygate dummy password"));
    }

    #[test]
    fn generated_passwords_are_long_enough_and_lengths_are_checked() {
        let generated = generate().unwrap();
        assert!(validate(&generated).is_ok());
        assert!(matches!(validate("short"), Err(PasswordError::TooShort)));
        assert!(matches!(
            validate(&"x".repeat(MAX_LEN + 1)),
            Err(PasswordError::TooLong)
        ));
    }
}
