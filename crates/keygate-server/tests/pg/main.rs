//! The integration suite again, on PostgreSQL, and what only several nodes sharing one database
//! can show. A second binary, compiled from the same modules, so every test runs on both stores
//! in one `cargo test`.

// A test binary: panicking is how it reports a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../it/harness.rs"]
mod harness;

pub const BACKEND: harness::Backend = harness::Backend::Postgres;

#[path = "../it/account.rs"]
mod account;
#[path = "../it/audit.rs"]
mod audit;
#[path = "../it/auth.rs"]
mod auth;
#[path = "../it/identity.rs"]
mod identity;
#[path = "../it/limits.rs"]
mod limits;
mod nodes;
#[path = "../it/oauth.rs"]
mod oauth;
#[path = "../it/ops.rs"]
mod ops;
#[path = "../it/problems.rs"]
mod problems;
#[path = "../it/tenants.rs"]
mod tenants;
#[path = "../it/verify.rs"]
mod verify;
