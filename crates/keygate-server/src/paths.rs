//! The paths the front service answers itself, recognised without the router: forward-auth, which
//! proxies call for every request they pass on, and `POST /v1/verify`. Known here, below the handlers and the metrics,
//! so both name its routes without importing each other.

/// Forward-auth's two route templates: the check itself and any path below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardAuthRoute {
    Check,
    Below,
}

impl ForwardAuthRoute {
    pub const ALL: [ForwardAuthRoute; 2] = [ForwardAuthRoute::Check, ForwardAuthRoute::Below];

    /// The template requests are counted under, as the router would name it.
    pub fn template(self) -> &'static str {
        match self {
            ForwardAuthRoute::Check => FORWARD_AUTH,
            ForwardAuthRoute::Below => "/v1/forward-auth/{*path}",
        }
    }
}

/// The forward-auth route a path is served and counted under, if it is one.
pub fn forward_auth(path: &str) -> Option<ForwardAuthRoute> {
    match path.strip_prefix(FORWARD_AUTH)? {
        "" => Some(ForwardAuthRoute::Check),
        below if below.starts_with('/') => Some(ForwardAuthRoute::Below),
        _ => None,
    }
}

pub const FORWARD_AUTH: &str = "/v1/forward-auth";

/// `POST` on it is answered by the front service; other methods reach the router (a 405).
pub const VERIFY: &str = "/v1/verify";
