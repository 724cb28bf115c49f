//! keygate's domain, free of HTTP and SQL.
//!
//! Everything a rule can be decided on lives here, so that a unit test reaches it without a server
//! or a database: the credential format, permissions and roles, the access decision, the cache of
//! verified credentials, and the storage traits the store crate implements. This crate must never
//! depend on a web framework or a database driver.

pub mod access;
pub mod account;
pub mod allowlist;
pub mod base62;
pub mod bootstrap;
pub mod cache;
pub mod clients;
pub mod clock;
pub mod credential;
pub mod gate;
pub mod grants;
pub mod id;
pub mod jwt;
pub mod keyring;
pub mod leaks;
pub mod misses;
pub mod model;
pub mod oauth;
pub mod password;
pub mod permission;
pub mod quota;
pub mod ratelimit;
pub mod reserve;
pub mod roles;
pub mod routes;
pub mod rule;
pub mod share;
pub mod signin;
pub mod store;
pub mod tenants;
#[cfg(test)]
pub(crate) mod testing;
pub mod throttle;
pub mod tokens;
pub mod usage;
pub mod users;
pub mod validate;
pub mod verified;
pub mod verify;
pub mod webhooks;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};

/// Drawing from the operating system's randomness failed (ids, credentials, passwords).
pub use getrandom::Error as RandomError;
