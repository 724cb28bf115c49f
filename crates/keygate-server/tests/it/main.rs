//! keygate's one integration-test binary: every module boots the real server and speaks HTTP to
//! it (or runs the real binary). One binary, because each extra one costs a link.

// A test binary: panicking is how it reports a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

/// The store this binary runs the suite on; `tests/pg` runs it again on PostgreSQL.
pub const BACKEND: harness::Backend = harness::Backend::Sqlite;

mod account;
mod audit;
mod auth;
mod binary;
mod connections;
mod document;
mod explorer;
mod identity;
mod limits;
mod oauth;
mod oauth_interop;
mod ops;
mod problems;
mod proxies;
mod tenants;
mod tools;
mod verify;
mod versions;
