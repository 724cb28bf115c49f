//! What the hot paths derive from a cached verification for their answers: forward-auth's (and
//! the gateway's) identity headers and `POST /v1/verify`'s body for a valid credential. Each is
//! made on first use and kept with the verification, so it lives exactly as long as the cache
//! trusts what it was made from: a change to the credential, its role, user or tenants drops the
//! verification, and with it what was rendered.

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::http::HeaderMap;
use keygate_core::verified::Verified;

#[derive(Default)]
pub(crate) struct Rendered {
    pub identity: OnceLock<HeaderMap>,
    pub verify_valid: OnceLock<Bytes>,
}

/// What is kept with `verified`; `None` only if something else claimed its slot first.
pub(crate) fn of(verified: &Verified) -> Option<&Rendered> {
    verified.rendered(|_| Rendered::default())
}
