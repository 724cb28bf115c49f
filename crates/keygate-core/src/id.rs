//! Typed, prefixed object ids (`tnt_…`, `usr_…`): the prefix tells a reader what an id names, and
//! the newtypes stop a `UserId` from being passed where a `TenantId` is meant.
//!
//! An id is the type prefix, `_`, eight base62 digits of the creation time in milliseconds (so ids
//! sort by creation, which cursors rely on) and fourteen random base62 digits (83 bits, so ids
//! cannot be guessed or enumerated).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::base62;

const TIME_DIGITS: usize = 8;
const RANDOM_DIGITS: usize = 14;

/// The time part of the last id this process made. Clocks here have whole seconds, so ids made
/// within one second would sort at random; instead each id takes at least the previous one's time
/// part plus one (in the manner of monotonic ULIDs), so a process's ids sort in creation order.
static LAST_TIME_PART: AtomicU64 = AtomicU64::new(0);

fn next_time_part(now_millis: u64) -> u64 {
    let mut last = LAST_TIME_PART.load(Ordering::Relaxed);
    loop {
        let next = now_millis.max(last + 1);
        match LAST_TIME_PART.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => return next,
            Err(current) => last = current,
        }
    }
}

fn generate(prefix: &str, now_millis: u64) -> Result<String, getrandom::Error> {
    let now_millis = next_time_part(now_millis);
    let mut id = String::with_capacity(prefix.len() + 1 + TIME_DIGITS + RANDOM_DIGITS);
    id.push_str(prefix);
    id.push('_');
    let mut time = [0u8; TIME_DIGITS];
    base62::encode_fixed(now_millis, &mut time);
    id.extend(time.iter().map(|&b| b as char));
    base62::push_random(&mut id, RANDOM_DIGITS)?;
    Ok(id)
}

/// Whether `text` is shaped like an id with this prefix. Generated ids always are; fixed ids of
/// built-in objects (`rol_owner`) are too.
fn well_formed(prefix: &str, text: &str) -> bool {
    text.len() <= 64
        && text
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('_'))
            .is_some_and(|body| !body.is_empty() && body.bytes().all(|b| b.is_ascii_alphanumeric()))
}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        // A boxed `str`, not a `String`: ids never grow, and a million cached credentials each
        // hold a few.
        pub struct $name(Box<str>);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new, unique id whose order follows `now`.
            pub fn generate(now: crate::Timestamp) -> Result<Self, getrandom::Error> {
                let millis = u64::try_from(now.unix()).unwrap_or(0).saturating_mul(1000);
                generate($prefix, millis).map(|id| Self(id.into_boxed_str()))
            }

            /// Accepts `text` if it is shaped like an id of this type; says nothing about existence.
            pub fn parse(text: &str) -> Option<Self> {
                well_formed($prefix, text).then(|| Self(text.into()))
            }

            /// Wraps a value read back from the store, which only ever holds ids it was given.
            pub fn from_trusted(text: String) -> Self {
                Self(text.into_boxed_str())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

define_id!(
    /// A tenant: a customer, or a reseller's sub-customer.
    TenantId,
    "tnt"
);
define_id!(
    /// A user who signs in with email and password.
    UserId,
    "usr"
);
define_id!(
    /// A role: a named set of permissions.
    RoleId,
    "rol"
);
define_id!(
    /// A webhook endpoint a tenant registered (API.md §15).
    WebhookId,
    "whk"
);
define_id!(
    /// One message owed to one webhook endpoint: its `webhook-id`, the same on every attempt.
    DeliveryId,
    "msg"
);
define_id!(
    /// Any stored credential (tokens, sessions, account keys, …). Its prefix is the one of its kind:
    /// see [`crate::credential::CredentialKind::id_prefix`].
    CredentialId,
    "tok"
);
define_id!(
    /// An audit event.
    EventId,
    "evt"
);

impl CredentialId {
    /// A new id for a credential of `kind`, with that kind's prefix (`tok_`, `key_`, `cli_`, …).
    pub fn generate_for(
        kind: crate::credential::CredentialKind,
        now: crate::Timestamp,
    ) -> Result<Self, getrandom::Error> {
        let millis = u64::try_from(now.unix()).unwrap_or(0).saturating_mul(1000);
        generate(kind.id_prefix(), millis).map(|id| Self(id.into_boxed_str()))
    }

    /// Accepts an id of any credential kind.
    pub fn parse_any(text: &str) -> Option<Self> {
        crate::credential::CredentialKind::ALL
            .iter()
            .any(|kind| well_formed(kind.id_prefix(), text))
            .then(|| Self(text.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Timestamp;

    #[test]
    fn ids_carry_their_prefix_and_sort_by_time() {
        let a = TenantId::generate(Timestamp::from_unix(1_800_000_000)).unwrap();
        let b = TenantId::generate(Timestamp::from_unix(1_800_000_001)).unwrap();
        assert!(a.as_str().starts_with("tnt_"));
        assert_eq!(a.as_str().len(), 4 + TIME_DIGITS + RANDOM_DIGITS);
        assert!(a < b);
        assert_ne!(
            TenantId::generate(Timestamp::from_unix(0)).unwrap(),
            TenantId::generate(Timestamp::from_unix(0)).unwrap()
        );
    }

    #[test]
    fn ids_made_in_the_same_second_keep_their_order() {
        let now = Timestamp::from_unix(1_900_000_000);
        let ids: Vec<UserId> = (0..500).map(|_| UserId::generate(now).unwrap()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn parse_checks_the_prefix_and_alphabet() {
        assert!(TenantId::parse("tnt_abc123").is_some());
        assert!(RoleId::parse("rol_owner").is_some());
        assert!(TenantId::parse("usr_abc123").is_none());
        assert!(TenantId::parse("tnt_").is_none());
        assert!(TenantId::parse("tnt_a/b").is_none());
        assert!(TenantId::parse(&format!("tnt_{}", "a".repeat(100))).is_none());
    }
}
