//! Configuration, layered as API.md §10 says: defaults < a TOML file (`--config`) < `KEYGATE_*`
//! environment variables (nested keys joined with `__`) < `KEYGATE_*_FILE` secrets read from files
//! < command-line flags. Unknown keys are an error that names the key and where it came from, so a
//! typo never silently falls back to a default.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ipnet::IpNet;
use keygate_core::Timestamp;
use keygate_core::credential::{CredentialFormat, Environment};
use keygate_core::jwt::SigningAlgorithm;
use keygate_core::permission::Catalog;
use keygate_core::routes::{RouteSpec, RouteTable};
use keygate_core::store::Granularity;
use serde::{Deserialize, Deserializer, Serialize};

const ENV_PREFIX: &str = "KEYGATE_";
const FILE_SUFFIX: &str = "_FILE";
/// Read by the command line itself (`--config`), not a configuration key.
const CONFIG_PATH_VAR: &str = "KEYGATE_CONFIG";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port the HTTP server listens on.
    pub listen: SocketAddr,
    /// `sqlite://PATH` (the embedded default) or `postgres://…`.
    pub database_url: String,
    /// The brand prefix of every credential (`kg_live_…`).
    pub token_prefix: String,
    /// Which credentials this server accepts: `live` or `test`.
    pub environment: Environment,
    /// Proxies whose `X-Forwarded-For`/`Forwarded` headers are believed.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub trusted_proxies: Vec<Network>,
    pub limits: Limits,
    pub server: ServerConfig,
    /// Extra permissions for the APIs keygate protects (`zones:read`).
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub permissions: Vec<String>,
    /// The default per-credential rate limit; unlimited when unset.
    pub rate_limit: RateLimitConfig,
    pub tokens: TokensConfig,
    pub session: SessionConfig,
    pub audit: AuditConfig,
    pub usage: UsageConfig,
    pub store: StoreConfig,
    pub cache: CacheConfig,
    pub oauth: OauthConfig,
    pub log: LogConfig,
    /// How long a shutdown waits for in-flight requests before closing them.
    pub shutdown_grace_seconds: u64,
    pub api: ApiConfig,
    pub webhooks: WebhooksConfig,
    pub leaks: LeaksConfig,
    pub gateway: GatewayConfig,
    pub tls: TlsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://keygate-data/keygate.db".to_owned(),
            token_prefix: "kg".to_owned(),
            environment: Environment::Live,
            trusted_proxies: Vec::new(),
            limits: Limits::default(),
            server: ServerConfig::default(),
            permissions: Vec::new(),
            rate_limit: RateLimitConfig::default(),
            tokens: TokensConfig::default(),
            session: SessionConfig::default(),
            audit: AuditConfig::default(),
            usage: UsageConfig::default(),
            store: StoreConfig::default(),
            cache: CacheConfig::default(),
            oauth: OauthConfig::default(),
            log: LogConfig::default(),
            shutdown_grace_seconds: 30,
            api: ApiConfig::default(),
            webhooks: WebhooksConfig::default(),
            leaks: LeaksConfig::default(),
            gateway: GatewayConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

/// Webhook deliveries (API.md §15).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Private, loopback or link-local networks webhooks may still reach (an internal receiver).
    /// Every other non-public address is refused, at creation and at each delivery.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub allowed_private_targets: Vec<Network>,
    /// How many deliveries a node sends at once.
    pub max_in_flight: u32,
    /// Finished deliveries (delivered or failed) older than this are deleted.
    pub retention_days: u32,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allowed_private_targets: Vec::new(),
            max_in_flight: 16,
            retention_days: 30,
        }
    }
}

impl WebhooksConfig {
    /// Whether a delivery may reach `ip`: a public address, or one the operator allowed.
    pub fn may_reach(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        keygate_core::webhooks::is_public(ip)
            || self
                .allowed_private_targets
                .iter()
                .any(|n| n.0.contains(&ip))
    }
}

/// keygate as the gateway itself (API.md §16): routes to the APIs it protects. Read again on
/// SIGHUP.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    pub routes: Vec<RouteSpec>,
}

/// TLS on keygate's own listener, for the API, the console and the gateway alike. Both paths or
/// neither; the files are read again on SIGHUP.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain, PEM, the server's certificate first.
    pub cert_path: Option<std::path::PathBuf>,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_path: Option<std::path::PathBuf>,
}

impl TlsConfig {
    /// Whether keygate terminates TLS.
    pub fn enabled(&self) -> bool {
        self.cert_path.is_some()
    }
}

/// Leaked credentials reported by secret-scanning programmes (API.md §15).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaksConfig {
    /// GitHub's secret-scanning public keys, as the JSON document GitHub publishes them; reports
    /// to `POST /v1/leaks/github` are refused without it. Read again on SIGHUP.
    pub github_public_keys_path: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body accepted (413 above).
    pub body_bytes: usize,
    /// Largest total size of a request's header names and values (431 above).
    pub header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 1024 * 1024,
            header_bytes: 8 * 1024,
        }
    }
}

/// The connections keygate holds open (see `connections.rs`): slow and idle clients are closed,
/// and there are never more open than the process can afford.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// How long a client may take to send a request's head, from the connection's opening or,
    /// on a kept-alive connection, from the request's first byte.
    pub header_read_timeout_ms: u64,
    /// How long a kept-alive connection may wait for its next request (and a request may go
    /// without a byte moving either way) before it is closed.
    pub idle_timeout_ms: u64,
    /// Connections open at once; lowered at start-up to what the open-files limit allows.
    pub max_connections: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 10_000,
            // Longer than the idle timeouts of the pools that call keygate (nginx's upstream
            // keepalive_timeout, 60 s; Go's and so Traefik's, 90 s; Caddy's, 2 min), so the proxy
            // drops an idle connection first and never reuses one keygate is closing.
            idle_timeout_ms: 125_000,
            max_connections: 10_000,
        }
    }
}

impl ServerConfig {
    /// Shortest and longest timeouts accepted: below 100 ms a client on a slow network could
    /// not finish a head; above an hour the timeout defends nothing.
    const TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;
    const MAX_CONNECTIONS: std::ops::RangeInclusive<u32> = 1..=1_000_000;

    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            if !Self::TIMEOUT_MS.contains(&value) {
                return Err(ConfigError::Invalid(format!(
                    "server.{key} must be between {} and {} (an hour), got {value}",
                    Self::TIMEOUT_MS.start(),
                    Self::TIMEOUT_MS.end()
                )));
            }
        }
        if !Self::MAX_CONNECTIONS.contains(&self.max_connections) {
            return Err(ConfigError::Invalid(format!(
                "server.max_connections must be between {} and {}, got {}",
                Self::MAX_CONNECTIONS.start(),
                Self::MAX_CONNECTIONS.end(),
                self.max_connections
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub requests: Option<u32>,
    pub per_seconds: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokensConfig {
    /// The longest lifetime a personal token may be given.
    pub personal_max_days: u32,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            personal_max_days: 366,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// How long a signed-in session lasts.
    pub lifetime_hours: u32,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self { lifetime_hours: 12 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Events older than this are deleted, in small batches in the background.
    pub retention_days: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention_days: 365,
        }
    }
}

/// How long usage counts (API.md §12) are kept, per bucket size; older buckets are deleted in
/// small batches in the background. The longest range `GET /v1/usage` answers in minute or hour
/// buckets is their retention.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    pub minute_retention_hours: u32,
    pub hour_retention_days: u32,
    pub day_retention_days: u32,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            minute_retention_hours: 48,
            hour_retention_days: 90,
            day_retention_days: 730,
        }
    }
}

impl UsageConfig {
    /// How long buckets of `granularity` are kept.
    pub fn retention(&self, granularity: Granularity) -> std::time::Duration {
        let hours = match granularity {
            Granularity::Minute => u64::from(self.minute_retention_hours),
            Granularity::Hour => u64::from(self.hour_retention_days) * 24,
            Granularity::Day => u64::from(self.day_retention_days) * 24,
        };
        std::time::Duration::from_secs(hours * 3600)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        // A coarser bucket is kept at least as long as a finer one: a read falling back from
        // minutes to hours must find them.
        if self.minute_retention_hours == 0
            || u64::from(self.hour_retention_days) * 24 < u64::from(self.minute_retention_hours)
            || self.day_retention_days < self.hour_retention_days
        {
            return Err(ConfigError::Invalid(format!(
                "usage.minute_retention_hours, usage.hour_retention_days and \
                 usage.day_retention_days must be positive, each bucket size kept at least as \
                 long as the finer one; got {} hours, {} days, {} days",
                self.minute_retention_hours, self.hour_retention_days, self.day_retention_days
            )));
        }
        Ok(())
    }
}

/// How keygate uses its database connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long a request waits for a connection before answering 503.
    pub acquire_timeout_ms: u64,
    /// How long a PostgreSQL statement may run before it is cancelled (and answered 503).
    pub statement_timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout_ms: 5000,
            statement_timeout_ms: 5000,
        }
    }
}

impl StoreConfig {
    pub fn options(&self) -> keygate_store::StoreOptions {
        keygate_store::StoreOptions {
            max_connections: self.max_connections,
            acquire_timeout: std::time::Duration::from_millis(self.acquire_timeout_ms),
            statement_timeout: std::time::Duration::from_millis(self.statement_timeout_ms),
            ..keygate_store::StoreOptions::default()
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// While the database is unreachable, keep answering verifications of credentials already
    /// cached. Off by default: a credential revoked during the outage would keep working.
    pub serve_stale_on_store_outage: bool,
    /// How many verified credentials a node keeps in memory; when full, the least recently used
    /// eighth makes room and is read from the store again on its next use.
    pub max_credentials: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            serve_stale_on_store_outage: false,
            max_credentials: keygate_core::cache::DEFAULT_CAPACITY,
        }
    }
}

/// OAuth 2.0 client credentials (API.md §7).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OauthConfig {
    /// The `iss` of access tokens and the base of the metadata's URLs; `http://<listen>` if unset.
    pub issuer: Option<String>,
    /// The audiences (`aud`) access tokens may be issued for: the identifiers of the resource
    /// servers that accept them, absolute URIs. A token request names them with RFC 8707's
    /// `resource`; without it, a token is for the first. The issuer alone if unset.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub audience: Vec<String>,
    /// What new signing keys are made for: `ES256`, `EdDSA` or `RS256`. A signing key of
    /// another algorithm is replaced on start; it stays published until its tokens expire.
    pub signing_algorithm: SigningAlgorithm,
    /// How long an access token (a JWT) lives.
    pub access_token_ttl_seconds: u64,
    /// How long a refresh token lives, from the grant or refresh that issued it.
    pub refresh_token_ttl_days: u32,
    /// Replace the signing key once it is this old (the old one stays published until its tokens
    /// have expired); 0 never replaces it but by `keygate oauth rotate-key`.
    pub signing_key_rotation_days: u32,
    /// Seals the signing keys in the store; without it they are stored as they are.
    pub key_encryption_secret: Option<SecretText>,
}

impl Default for OauthConfig {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: Vec::new(),
            signing_algorithm: SigningAlgorithm::default(),
            access_token_ttl_seconds: 900,
            refresh_token_ttl_days: 30,
            signing_key_rotation_days: 90,
            key_encryption_secret: None,
        }
    }
}

/// A secret in the configuration: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(pub String);

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter (`info`, `keygate=debug,warn`); `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The API's versions, as the README's versioning policy describes them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    pub v1: VersionLifecycle,
}

/// An operator's announcement that a version is going away: once set, every response of that
/// version says so (`Deprecation`, `Sunset`, `Link`). Unset, the version is simply current.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VersionLifecycle {
    /// When the version was (or will be) deprecated.
    pub deprecated_at: Option<Timestamp>,
    /// When the version stops answering.
    pub sunset_at: Option<Timestamp>,
    /// A page for people: what replaces the version and how to move.
    pub policy_url: Option<String>,
}

impl VersionLifecycle {
    /// `key` is where the settings live (`api.v1`), for the messages.
    fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if let (Some(deprecated), Some(sunset)) = (self.deprecated_at, self.sunset_at)
            && sunset < deprecated
        {
            return Err(ConfigError::Invalid(format!(
                "{key}.sunset_at ({sunset}) is before {key}.deprecated_at ({deprecated})"
            )));
        }
        if let Some(url) = &self.policy_url {
            if self.deprecated_at.is_none() && self.sunset_at.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "{key}.policy_url needs {key}.deprecated_at or {key}.sunset_at: \
                     it is announced with them"
                )));
            }
            let (scheme, rest) = url.split_once("://").unwrap_or_default();
            // Sent inside `Link: <…>`: no spaces, controls, quotes or angle brackets.
            let header_safe = url
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"'));
            if !matches!(scheme, "http" | "https") || rest.is_empty() || !header_safe {
                return Err(ConfigError::Invalid(format!(
                    "{key}.policy_url `{url}` is not an absolute http(s) URL"
                )));
            }
        }
        Ok(())
    }
}

/// A network in config: CIDR, or a bare address meaning just that address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct Network(pub IpNet);

impl From<Network> for String {
    fn from(network: Network) -> String {
        network.0.to_string()
    }
}

impl std::str::FromStr for Network {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        text.parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
            .map(|net| Network(net.trunc()))
            .map_err(|_| format!("`{text}` is not an IP address or network"))
    }
}

/// Command-line flags, the last layer.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    #[serde(rename = "database_url", skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}", described(.0))]
    Load(Box<figment::Error>),
    #[error("cannot read {var} ({path}): {source}")]
    SecretFile {
        var: String,
        path: String,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Each of a load's errors on a line, the key as its source spells it (`tls.cert_path` in a file,
/// `KEYGATE_TLS__CERT_PATH` in the environment) and where it came from; an unknown key with the
/// keys known at its place.
fn described(error: &figment::Error) -> String {
    use figment::error::Kind;
    error
        .clone()
        .into_iter()
        .map(|error| {
            let dotted = error.path.join(".");
            let (key, from) = match &error.metadata {
                Some(metadata) => match &metadata.source {
                    // The layers made in code: the flags, and the `KEYGATE_…_FILE` secrets.
                    Some(figment::Source::Code(_)) => (
                        dotted,
                        " (from a command-line flag or a KEYGATE_…_FILE)".to_owned(),
                    ),
                    Some(source) => (dotted, format!(" in {source}")),
                    None if metadata.name.contains("environment") => (
                        format!("{ENV_PREFIX}{}", error.path.join("__").to_ascii_uppercase()),
                        " in the environment".to_owned(),
                    ),
                    None => (dotted, format!(" from {}", metadata.name)),
                },
                None => (dotted, String::new()),
            };
            match &error.kind {
                Kind::UnknownField(_, known) => format!(
                    "unknown key `{key}`{from}; the keys there are: {}",
                    known.join(", ")
                ),
                kind => format!("`{key}`{from}: {kind}"),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Loads the layers, reading `KEYGATE_*` from this process's environment.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::Invalid(format!(
                    "the config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|key| {
                    let key = key.as_str().to_ascii_uppercase();
                    !key.ends_with(FILE_SUFFIX) && key != CONFIG_PATH_VAR[ENV_PREFIX.len()..]
                })
                .split("__"),
        );
        for (var, path) in std::env::vars().filter(|(k, _)| {
            k.starts_with(ENV_PREFIX) && k.ends_with(FILE_SUFFIX) && k != CONFIG_PATH_VAR
        }) {
            let key = var[ENV_PREFIX.len()..var.len() - FILE_SUFFIX.len()]
                .to_ascii_lowercase()
                .replace("__", ".");
            let value =
                std::fs::read_to_string(&path).map_err(|source| ConfigError::SecretFile {
                    var: var.clone(),
                    path: path.clone(),
                    source,
                })?;
            figment = figment.merge(Serialized::default(
                &key,
                value.trim_end_matches(['\n', '\r']),
            ));
        }
        figment = figment.merge(Serialized::defaults(overrides));
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot: that the prefix, permissions and limits make sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.credential_format()?;
        self.routes()?;
        if self.tls.cert_path.is_some() != self.tls.key_path.is_some() {
            return Err(ConfigError::Invalid(
                "tls.cert_path and tls.key_path go together: give both, or neither for plain HTTP"
                    .into(),
            ));
        }
        if self.limits.body_bytes == 0 || self.limits.header_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "limits.body_bytes must be positive and limits.header_bytes at least 1024".into(),
            ));
        }
        self.server.validate()?;
        self.usage.validate()?;
        if self.webhooks.max_in_flight == 0 || self.webhooks.retention_days == 0 {
            return Err(ConfigError::Invalid(
                "webhooks.max_in_flight and webhooks.retention_days must be positive".into(),
            ));
        }
        match (self.rate_limit.requests, self.rate_limit.per_seconds) {
            (None, None) => {}
            (Some(r), Some(s)) if r > 0 && s > 0 => {}
            _ => {
                return Err(ConfigError::Invalid(
                    "rate_limit needs both requests and per_seconds, each positive".into(),
                ));
            }
        }
        if self.cache.max_credentials == 0 {
            return Err(ConfigError::Invalid(
                "cache.max_credentials must be positive".into(),
            ));
        }
        if self.store.max_connections == 0 || self.store.acquire_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "store.max_connections and store.acquire_timeout_ms must be positive".into(),
            ));
        }
        if self.tokens.personal_max_days == 0
            || self.session.lifetime_hours == 0
            || self.audit.retention_days == 0
        {
            return Err(ConfigError::Invalid(
                "tokens.personal_max_days, session.lifetime_hours and audit.retention_days must be positive".into(),
            ));
        }
        if self.oauth.access_token_ttl_seconds == 0 || self.oauth.refresh_token_ttl_days == 0 {
            return Err(ConfigError::Invalid(
                "oauth.access_token_ttl_seconds and oauth.refresh_token_ttl_days must be positive"
                    .into(),
            ));
        }
        if let Some(issuer) = &self.oauth.issuer
            && !(issuer.starts_with("https://") || issuer.starts_with("http://"))
        {
            return Err(ConfigError::Invalid(format!(
                "oauth.issuer must be an http(s) URL, got `{issuer}`"
            )));
        }
        for audience in &self.oauth.audience {
            // RFC 8707 §2: a resource is an absolute URI without a fragment.
            let scheme = audience.split_once(':').map(|(scheme, _)| scheme);
            let absolute = scheme.is_some_and(|s| {
                s.starts_with(|c: char| c.is_ascii_alphabetic())
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            });
            if !absolute
                || audience.contains('#')
                || audience
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ConfigError::Invalid(format!(
                    "oauth.audience `{audience}` is not an absolute URI without a fragment"
                )));
            }
        }
        if let Some(secret) = &self.oauth.key_encryption_secret {
            keygate_core::jwt::KeySealer::new(&secret.0)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        self.api.v1.validate("api.v1")
    }

    /// The issuer of access tokens: configured, or this server's own address; without a trailing
    /// `/`, so endpoint URLs are made by appending paths.
    pub fn issuer(&self) -> String {
        match &self.oauth.issuer {
            Some(issuer) => issuer.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }

    /// The audiences access tokens may be issued for, the default first: configured, or the
    /// issuer alone.
    pub fn audiences(&self) -> Vec<String> {
        if self.oauth.audience.is_empty() {
            vec![self.issuer()]
        } else {
            self.oauth.audience.clone()
        }
    }

    pub fn credential_format(&self) -> Result<CredentialFormat, ConfigError> {
        CredentialFormat::new(&self.token_prefix, self.environment)
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// The gateway's routes, checked against the permissions declared.
    pub fn routes(&self) -> Result<RouteTable, ConfigError> {
        RouteTable::new(&self.gateway.routes, &self.catalog()?)
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    pub fn catalog(&self) -> Result<Catalog, ConfigError> {
        Catalog::new(&self.permissions)
            .map_err(|e| ConfigError::Invalid(format!("permissions: {e}")))
    }

    /// The configuration as TOML, with any password in the database URL masked.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database_url = redact_url(&self.database_url);
        if shown.oauth.key_encryption_secret.is_some() {
            shown.oauth.key_encryption_secret = Some(SecretText("***".to_owned()));
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Accepts a list (TOML) or one comma-separated string (environment variables).
fn list_or_comma_separated<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        One(String),
    }
    let items = match Raw::deserialize(deserializer)? {
        Raw::List(items) => items,
        Raw::One(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    items
        .iter()
        .map(|item| item.parse::<T>().map_err(serde::de::Error::custom))
        .collect()
}

#[cfg(test)]
// figment's Jail fixes the closures' error type to its own (large) one.
#[allow(clippy::result_large_err)]
mod tests {
    use figment::Jail;

    use super::*;

    fn load(jail: &Jail, file: Option<&str>, flags: &Overrides) -> Result<Config, String> {
        let path = file.map(|f| jail.directory().join(f));
        Config::load(path.as_deref(), flags).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_match_the_contract() {
        Jail::expect_with(|jail| {
            let config = load(jail, None, &Overrides::default())?;
            assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
            assert_eq!(config.database_url, "sqlite://keygate-data/keygate.db");
            assert_eq!(config.token_prefix, "kg");
            assert_eq!(config.environment, Environment::Live);
            assert_eq!(config.limits.body_bytes, 1_048_576);
            assert_eq!(config.limits.header_bytes, 8192);
            assert!(config.trusted_proxies.is_empty() && config.permissions.is_empty());
            assert_eq!(config.rate_limit.requests, None);
            assert_eq!(config.server.header_read_timeout_ms, 10_000);
            assert_eq!(config.server.idle_timeout_ms, 125_000);
            assert_eq!(config.server.max_connections, 10_000);
            assert_eq!(config.usage.minute_retention_hours, 48);
            assert_eq!(config.usage.hour_retention_days, 90);
            assert_eq!(config.usage.day_retention_days, 730);
            Ok(())
        });
    }

    #[test]
    fn layers_apply_in_order() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "keygate.toml",
                "listen = \"0.0.0.0:9000\"\ntoken_prefix = \"lynk\"\n\
                 permissions = [\"zones:read\"]\n\
                 [limits]\nbody_bytes = 10\n[rate_limit]\nrequests = 5\nper_seconds = 1\n",
            )?;
            jail.create_file("db-url", "sqlite:///from/file.db\n")?;
            jail.set_env("KEYGATE_TOKEN_PREFIX", "env");
            jail.set_env("KEYGATE_LIMITS__BODY_BYTES", "20");
            jail.set_env(
                "KEYGATE_TRUSTED_PROXIES",
                "10.0.0.1, 192.168.0.0/16,2001:db8::/32",
            );
            jail.set_env(
                "KEYGATE_DATABASE_URL_FILE",
                jail.directory().join("db-url").display(),
            );
            jail.set_env("KEYGATE_CONFIG", "read by the command line, not a key");
            let flags = Overrides {
                listen: Some("127.0.0.1:7000".into()),
                database: None,
            };
            let config = load(jail, Some("keygate.toml"), &flags)?;
            assert_eq!(
                config.listen.to_string(),
                "127.0.0.1:7000",
                "flag beats file"
            );
            assert_eq!(config.token_prefix, "env", "env beats file");
            assert_eq!(config.limits.body_bytes, 20);
            assert_eq!(
                config.limits.header_bytes, 8192,
                "untouched keys keep defaults"
            );
            assert_eq!(config.permissions, ["zones:read"]);
            assert_eq!(config.rate_limit.requests, Some(5));
            assert_eq!(
                config.database_url, "sqlite:///from/file.db",
                "secret file beats env"
            );
            let proxies: Vec<String> = config
                .trusted_proxies
                .iter()
                .map(|n| n.0.to_string())
                .collect();
            assert_eq!(proxies, ["10.0.0.1/32", "192.168.0.0/16", "2001:db8::/32"]);

            jail.set_env("KEYGATE_DATABASE_URL", "sqlite://env.db");
            let flag_db = Overrides {
                listen: None,
                database: Some("sqlite://flag.db".into()),
            };
            assert_eq!(load(jail, None, &flag_db)?.database_url, "sqlite://flag.db");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_named() {
        Jail::expect_with(|jail| {
            jail.set_env("KEYGATE_LISTN", "x");
            let error = load(jail, None, &Overrides::default()).unwrap_err();
            assert!(
                error.contains("`KEYGATE_LISTN` in the environment"),
                "{error}"
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file("k.toml", "[limits]\nbody_byte = 1\n")?;
            let error = load(jail, Some("k.toml"), &Overrides::default()).unwrap_err();
            assert!(error.contains("body_byte"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_refused_with_reasons() {
        for (var, value, needle) in [
            ("KEYGATE_TOKEN_PREFIX", "Bad_Prefix", "token_prefix"),
            ("KEYGATE_PERMISSIONS", "zones", "zones"),
            ("KEYGATE_TRUSTED_PROXIES", "10.0.0.0/99", "10.0.0.0/99"),
            ("KEYGATE_ENVIRONMENT", "staging", "staging"),
            ("KEYGATE_RATE_LIMIT__REQUESTS", "10", "rate_limit"),
            ("KEYGATE_USAGE__MINUTE_RETENTION_HOURS", "0", "usage.minute"),
            ("KEYGATE_USAGE__HOUR_RETENTION_DAYS", "1", "usage.hour"),
            ("KEYGATE_USAGE__DAY_RETENTION_DAYS", "30", "usage.day"),
        ] {
            Jail::expect_with(|jail| {
                jail.set_env(var, value);
                let error = load(jail, None, &Overrides::default()).unwrap_err();
                assert!(error.contains(needle), "{var}={value}: {error}");
                Ok(())
            });
        }
        Jail::expect_with(|jail| {
            let error = load(jail, Some("missing.toml"), &Overrides::default()).unwrap_err();
            assert!(error.contains("does not exist"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn oauth_settings_have_defaults_and_the_secret_can_come_from_a_file() {
        Jail::expect_with(|jail| {
            let config = load(jail, None, &Overrides::default())?;
            assert_eq!(config.oauth.access_token_ttl_seconds, 900);
            assert_eq!(config.oauth.refresh_token_ttl_days, 30);
            assert_eq!(config.issuer(), "http://127.0.0.1:8080");
            assert_eq!(config.audiences(), ["http://127.0.0.1:8080"]);
            assert_eq!(config.oauth.signing_algorithm, SigningAlgorithm::Es256);
            assert!(config.oauth.key_encryption_secret.is_none());

            jail.create_file("kek", "a long enough key-encryption secret\n")?;
            jail.set_env(
                "KEYGATE_OAUTH__KEY_ENCRYPTION_SECRET_FILE",
                jail.directory().join("kek").display(),
            );
            jail.set_env("KEYGATE_OAUTH__ISSUER", "https://auth.example.com/");
            jail.set_env("KEYGATE_OAUTH__ACCESS_TOKEN_TTL_SECONDS", "3600");
            let config = load(jail, None, &Overrides::default())?;
            assert_eq!(
                config
                    .oauth
                    .key_encryption_secret
                    .as_ref()
                    .map(|s| s.0.as_str()),
                Some("a long enough key-encryption secret")
            );
            assert_eq!(config.issuer(), "https://auth.example.com");
            assert_eq!(
                config.audiences(),
                ["https://auth.example.com"],
                "the issuer, once set"
            );
            assert_eq!(config.oauth.access_token_ttl_seconds, 3600);
            assert!(!format!("{config:?}").contains("long enough"));
            assert!(!config.to_redacted_toml().contains("long enough"));

            jail.set_env(
                "KEYGATE_OAUTH__KEY_ENCRYPTION_SECRET_FILE",
                "/nonexistent/kek",
            );
            let error = load(jail, None, &Overrides::default()).unwrap_err();
            assert!(
                error.contains("KEYGATE_OAUTH__KEY_ENCRYPTION_SECRET_FILE"),
                "{error}"
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("KEYGATE_OAUTH__KEY_ENCRYPTION_SECRET", "short");
            let error = load(jail, None, &Overrides::default()).unwrap_err();
            assert!(error.contains("at least 16"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn audiences_and_the_signing_algorithm_are_configured_and_checked() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "k.toml",
                "[oauth]\nsigning_algorithm = \"RS256\"\n\
                 audience = [\"https://api.example.com\", \"urn:example:billing\"]\n",
            )?;
            let config = load(jail, Some("k.toml"), &Overrides::default())?;
            assert_eq!(config.oauth.signing_algorithm, SigningAlgorithm::Rs256);
            assert_eq!(
                config.audiences(),
                ["https://api.example.com", "urn:example:billing"]
            );
            assert!(
                config
                    .to_redacted_toml()
                    .contains("signing_algorithm = \"RS256\"")
            );
            jail.set_env("KEYGATE_OAUTH__AUDIENCE", "https://one.example.com");
            jail.set_env("KEYGATE_OAUTH__SIGNING_ALGORITHM", "EdDSA");
            let config = load(jail, Some("k.toml"), &Overrides::default())?;
            assert_eq!(
                config.audiences(),
                ["https://one.example.com"],
                "one string"
            );
            assert_eq!(config.oauth.signing_algorithm, SigningAlgorithm::EdDsa);
            Ok(())
        });
        for (var, value, needle) in [
            ("KEYGATE_OAUTH__SIGNING_ALGORITHM", "HS256", "HS256"),
            ("KEYGATE_OAUTH__SIGNING_ALGORITHM", "es256", "es256"),
            (
                "KEYGATE_OAUTH__AUDIENCE",
                "api.example.com",
                "api.example.com",
            ),
            (
                "KEYGATE_OAUTH__AUDIENCE",
                "https://a.example/#x",
                "fragment",
            ),
        ] {
            Jail::expect_with(|jail| {
                jail.set_env(var, value);
                let error = load(jail, None, &Overrides::default()).unwrap_err();
                assert!(error.contains(needle), "{var}={value}: {error}");
                Ok(())
            });
        }
    }

    #[test]
    fn a_version_sunset_is_announced_in_config_and_checked() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "k.toml",
                "[api.v1]\ndeprecated_at = \"2027-01-01T00:00:00Z\"\n\
                 policy_url = \"https://example.com/api/v2-migration\"\n",
            )?;
            jail.set_env("KEYGATE_API__V1__SUNSET_AT", "2027-07-01T00:00:00+02:00");
            let config = load(jail, Some("k.toml"), &Overrides::default())?;
            let v1 = &config.api.v1;
            assert_eq!(v1.deprecated_at, Some(Timestamp::from_unix(1_798_761_600)));
            assert_eq!(
                v1.sunset_at.map(|t| t.to_string()).as_deref(),
                Some("2027-06-30T22:00:00Z")
            );
            assert_eq!(
                v1.policy_url.as_deref(),
                Some("https://example.com/api/v2-migration")
            );
            Ok(())
        });
        for (vars, needle) in [
            (
                &[("KEYGATE_API__V1__DEPRECATED_AT", "next year")][..],
                "keygate_api__v1__deprecated_at",
            ),
            (
                &[("KEYGATE_API__V1__SUNSETAT", "2027-01-01T00:00:00Z")],
                "sunsetat",
            ),
            (
                &[
                    ("KEYGATE_API__V1__DEPRECATED_AT", "2027-01-01T00:00:00Z"),
                    ("KEYGATE_API__V1__SUNSET_AT", "2026-01-01T00:00:00Z"),
                ],
                "api.v1.sunset_at",
            ),
            (
                &[("KEYGATE_API__V1__POLICY_URL", "https://example.com/")],
                "api.v1.policy_url needs",
            ),
            (
                &[
                    ("KEYGATE_API__V1__SUNSET_AT", "2027-01-01T00:00:00Z"),
                    ("KEYGATE_API__V1__POLICY_URL", "example.com/migrate"),
                ],
                "api.v1.policy_url `example.com/migrate`",
            ),
        ] {
            Jail::expect_with(|jail| {
                for (var, value) in vars {
                    jail.set_env(var, value);
                }
                // A variable's key is named as the variable (the checks after loading, as the key).
                let error = load(jail, None, &Overrides::default()).unwrap_err();
                assert!(error.to_lowercase().contains(needle), "{vars:?}: {error}");
                Ok(())
            });
        }
    }

    #[test]
    fn connection_limits_come_from_every_layer_and_are_bounded() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "k.toml",
                "[server]\nheader_read_timeout_ms = 2500\nmax_connections = 300\n",
            )?;
            jail.set_env("KEYGATE_SERVER__IDLE_TIMEOUT_MS", "65000");
            jail.set_env("KEYGATE_SERVER__MAX_CONNECTIONS", "400");
            let config = load(jail, Some("k.toml"), &Overrides::default())?;
            assert_eq!(config.server.header_read_timeout_ms, 2500);
            assert_eq!(config.server.idle_timeout_ms, 65_000);
            assert_eq!(config.server.max_connections, 400, "env beats file");
            Ok(())
        });
        for (var, value, needle) in [
            (
                "KEYGATE_SERVER__HEADER_READ_TIMEOUT_MS",
                "0",
                "server.header_read_timeout_ms",
            ),
            (
                "KEYGATE_SERVER__HEADER_READ_TIMEOUT_MS",
                "99",
                "server.header_read_timeout_ms",
            ),
            (
                "KEYGATE_SERVER__IDLE_TIMEOUT_MS",
                "3600001",
                "server.idle_timeout_ms",
            ),
            ("KEYGATE_SERVER__IDLE_TIMEOUT_MS", "-5", "idle_timeout_ms"),
            (
                "KEYGATE_SERVER__MAX_CONNECTIONS",
                "0",
                "server.max_connections",
            ),
            (
                "KEYGATE_SERVER__MAX_CONNECTIONS",
                "1000001",
                "server.max_connections",
            ),
            ("KEYGATE_SERVER__MAX_CONECTIONS", "10", "max_conections"),
        ] {
            Jail::expect_with(|jail| {
                jail.set_env(var, value);
                let error = load(jail, None, &Overrides::default()).unwrap_err();
                assert!(
                    error.to_lowercase().contains(needle),
                    "{var}={value}: {error}"
                );
                Ok(())
            });
        }
    }

    #[test]
    fn redaction_hides_database_passwords() {
        assert_eq!(
            redact_url("postgres://kg:hunter2@db:5432/kg"),
            "postgres://kg:***@db:5432/kg"
        );
        assert_eq!(redact_url("sqlite://a/b.db"), "sqlite://a/b.db");
    }
}
