//! The first start (API.md §3): `keygate init` and the first `keygate serve` on an empty store.

use keygate_core::Timestamp;
use keygate_core::credential::CredentialFormat;
use keygate_core::password::PasswordError;
use keygate_core::store::{DynStore, StoreError};
use serde::Serialize;

use crate::views::TenantView;

/// What is printed once, and never again: the only copy of the password and token.
#[derive(Serialize)]
pub struct Report {
    pub tenant: TenantView,
    pub user: ReportUser,
    pub password: String,
    pub token: String,
}

#[derive(Serialize)]
pub struct ReportUser {
    pub id: String,
    pub email: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("the store already holds a root tenant; nothing was changed")]
    AlreadyInitialized,
    #[error("cannot prepare the first user: {0}")]
    Prepare(#[from] PasswordError),
    #[error(transparent)]
    Store(StoreError),
}

/// Creates the root tenant, its owner and an owner service token, all or nothing.
pub async fn run(
    store: &DynStore,
    format: &CredentialFormat,
    email: &str,
    now: Timestamp,
) -> Result<Report, BootstrapError> {
    if store
        .is_initialized()
        .await
        .map_err(BootstrapError::Store)?
    {
        return Err(BootstrapError::AlreadyInitialized);
    }
    let (plan, secrets) = keygate_core::bootstrap::plan(format, email, now)?;
    store.bootstrap(&plan).await.map_err(|e| match e {
        StoreError::AlreadyInitialized => BootstrapError::AlreadyInitialized,
        other => BootstrapError::Store(other),
    })?;
    Ok(Report {
        tenant: TenantView::new(&plan.tenant, None),
        user: ReportUser {
            id: plan.user.id.to_string(),
            email: plan.user.email.clone(),
        },
        password: secrets.password,
        token: secrets.token.into_exposed(),
    })
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The same facts for a person reading a terminal, with where to use them: `base` is the
    /// address keygate answers on (`http://127.0.0.1:8080`).
    pub fn to_text(&self, base: &str) -> String {
        format!(
            "keygate is initialised. Keep these; they are shown only once.\n\
             \n  tenant:   {} (slug `{}`)\n  user:     {} ({})\n  password: {}\n  token:    {}\n\
             \nSign in to the console at {base}/ as {} with that password,\n\
             or try the token: curl -H 'Authorization: Bearer {}' {base}/v1/whoami\n",
            self.tenant.id,
            self.tenant.slug,
            self.user.email,
            self.user.id,
            self.password,
            self.token,
            self.user.email,
            self.token,
        )
    }
}

/// The address a person on this machine reaches a listener at: a wildcard becomes loopback.
pub fn local_base(address: std::net::SocketAddr) -> String {
    let ip = match address.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, address.port()))
}
