//! keygate's one integration-test binary: every module boots the real server and speaks HTTP to
//! it (or runs the real binary). One binary, because each extra one costs a link: the tests that
//! hold on either store run on both from here (`on_every_backend!`), and `nodes` holds what only
//! several nodes sharing one PostgreSQL can show.

// A test binary: panicking is how it reports a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// Runs each named test once per store, as `name::sqlite` and `name::postgres`; each is an
/// `async fn name(backend: Backend)` of the module that names it. Where PostgreSQL is not
/// installed the `postgres` variants say so and pass, except under CI (`CI` set), where they fail.
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn sqlite() {
                    super::$test($crate::harness::Backend::Sqlite).await
                }

                #[tokio::test]
                async fn postgres() {
                    if keygate_testkit::postgres_or_skip() {
                        super::$test($crate::harness::Backend::Postgres).await
                    }
                }
            }
        )*
    };
}

mod harness;

mod account;
mod audit;
mod auth;
mod binary;
mod browser;
mod connections;
mod console;
mod console_clients;
mod console_log;
mod console_people;
mod console_quotas;
mod console_tenants;
mod console_usage;
mod console_webhooks;
mod document;
mod explorer;
mod gateway;
mod identity;
mod limits;
mod lists;
mod nodes;
mod oauth;
mod oauth_interop;
mod ops;
mod problems;
mod proxies;
mod quotas;
mod tenants;
mod tools;
mod usage;
mod verify;
mod versions;
mod webhooks;
