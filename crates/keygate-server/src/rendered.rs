//! What the hot paths derive from a cached verification for their answers: forward-auth's (and
//! the gateway's) identity headers and `POST /v1/verify`'s body for a valid credential. Each is
//! made on first use and kept with the verification, so it lives exactly as long as the cache
//! trusts what it was made from: a change to the credential, its role, user or tenants drops the
//! verification, and with it what was rendered.

use std::sync::{Arc, LazyLock, OnceLock};

use axum::body::Bytes;
use axum::http::HeaderValue;
use keygate_core::share::Interner;
use keygate_core::verified::Verified;

use crate::routes::forward_auth::Identity;

#[derive(Default)]
pub(crate) struct Rendered {
    pub identity: OnceLock<Identity>,
    pub verify_valid: OnceLock<Bytes>,
}

/// The header values many credentials render alike (a tenant's id, a role's permission list),
/// one of each: cloning a `HeaderValue` shares its bytes, so each credential's rendered headers
/// hold a reference, not a copy.
pub(crate) fn shared_value(value: HeaderValue) -> Arc<HeaderValue> {
    static VALUES: LazyLock<Interner<HeaderValue>> = LazyLock::new(Interner::default);
    VALUES.share(Arc::new(value))
}

/// What is kept with `verified`; `None` only if something else claimed its slot first.
pub(crate) fn of(verified: &Verified) -> Option<&Rendered> {
    verified.rendered(|_| Rendered::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_rendered_alike_share_their_bytes() {
        let first = shared_value(HeaderValue::from_static("zones:read,zones:write"));
        let again = shared_value(HeaderValue::from_str("zones:read,zones:write").unwrap());
        assert!(Arc::ptr_eq(&first, &again));
        // What a credential's headers hold is a clone: the same bytes, not a copy.
        let held = HeaderValue::clone(&again);
        assert_eq!(held.as_bytes().as_ptr(), first.as_bytes().as_ptr());
        let other = shared_value(HeaderValue::from_static("zones:read"));
        assert!(!Arc::ptr_eq(&first, &other));
    }
}
