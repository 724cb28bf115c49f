//! One module per resource. Handlers are thin: extract, make one domain call, map the result.

pub mod account;
pub mod audit;
pub mod forward_auth;
pub mod leaks;
pub mod metrics;
pub mod oauth;
pub mod ops;
pub mod quotas;
pub mod roles;
pub mod sessions;
pub mod tenants;
pub mod tokens;
pub mod usage;
pub mod users;
pub mod verify;
pub mod webhooks;
pub mod whoami;
