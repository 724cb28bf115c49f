//! The gateway's routes (API.md §16): which upstream a path goes to and what a request there
//! needs. Pure: the server proxies, this decides where and on what terms.
//!
//! A route's prefix matches whole path segments (`/zones` matches `/zones` and `/zones/1`, never
//! `/zonesx`), the longest prefix wins, and no prefix may overlap keygate's own paths: a route
//! there would either never be reached or hide an endpoint, and both are mistakes to refuse at
//! start-up rather than discover in production. A method a route's `require` does not name, when
//! it names no `*` either, is not allowed: a route fails closed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::permission::Catalog;
use crate::reserve::MAX_COST;

/// The paths keygate answers itself; a route may not overlap them.
pub const KEYGATE_PATHS: [&str; 8] = [
    "/v1",
    "/console",
    "/docs",
    "/.well-known",
    "/openapi.json",
    "/healthz",
    "/readyz",
    "/metrics",
];

/// A route as configured (`[[gateway.routes]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// The path prefix, whole segments: `/zones`.
    pub prefix: String,
    /// `http://host:port`, optionally with a base path the request path is appended to.
    pub upstream: String,
    /// Whether the prefix is removed before the path is appended to the upstream's.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Permissions per method (`GET`, `POST`, …), and `*` for any other method.
    #[serde(default)]
    pub require: BTreeMap<String, Vec<String>>,
    /// What a request spends from quotas.
    #[serde(default = "default_cost")]
    pub cost: u64,
    /// How long the upstream has to answer (its response head).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// No credential needed: the request is proxied without being checked.
    #[serde(default)]
    pub public: bool,
}

fn default_cost() -> u64 {
    1
}

fn default_timeout_ms() -> u64 {
    30_000
}

/// Why the routes cannot be used; the message names the route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gateway route `{prefix}`: {why}")]
pub struct RouteError {
    pub prefix: String,
    pub why: String,
}

/// Where a route's requests go: `http://{authority}{base_path}…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `host:port` (a port is always there: 80 when the URL gives none).
    pub authority: String,
    /// The upstream URL's path without its trailing `/`; empty for none.
    pub base_path: String,
}

/// What a request on a route needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Needs<'a> {
    /// Nothing: the route is public.
    Nothing,
    /// A credential holding these permissions (none: any valid credential).
    Credential(&'a [String]),
    /// The method is not one the route names; these are.
    MethodNotAllowed(Vec<&'a str>),
}

/// A checked route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub prefix: String,
    pub upstream: Upstream,
    pub strip_prefix: bool,
    /// By upper-case method name; `*` for the rest.
    require: BTreeMap<String, Vec<String>>,
    pub cost: u64,
    pub timeout: Duration,
    pub public: bool,
}

impl Route {
    fn new(spec: &RouteSpec, catalog: &Catalog) -> Result<Self, RouteError> {
        let fail = |why: String| RouteError {
            prefix: spec.prefix.clone(),
            why,
        };
        let prefix = normalise_prefix(&spec.prefix).map_err(fail)?;
        if let Some(own) = KEYGATE_PATHS
            .iter()
            .find(|own| within(&prefix, own) || within(own, &prefix))
        {
            return Err(fail(format!(
                "overlaps keygate's own `{own}`; keygate's paths ({}) are not routed",
                KEYGATE_PATHS.join(", ")
            )));
        }
        let upstream = parse_upstream(&spec.upstream).map_err(fail)?;
        let mut require = BTreeMap::new();
        for (method, permissions) in &spec.require {
            let method = method.trim().to_ascii_uppercase();
            if method != "*" && (method.is_empty() || !method.bytes().all(is_token_byte)) {
                return Err(fail(format!("require: `{method}` is not an HTTP method")));
            }
            if let Some(unknown) = permissions.iter().find(|p| !catalog.contains(p)) {
                return Err(fail(format!(
                    "require.{method}: `{unknown}` is not a known permission; declare it in \
                     `permissions`"
                )));
            }
            if require
                .insert(method.clone(), permissions.clone())
                .is_some()
            {
                return Err(fail(format!("require: `{method}` is given twice")));
            }
        }
        if spec.public && !require.is_empty() {
            return Err(fail(
                "a public route needs no credential, so it cannot require permissions".into(),
            ));
        }
        if spec.cost > MAX_COST {
            return Err(fail(format!("cost must be at most {MAX_COST}")));
        }
        if !(1..=3_600_000).contains(&spec.timeout_ms) {
            return Err(fail(
                "timeout_ms must be between 1 and 3600000 (an hour)".into(),
            ));
        }
        Ok(Self {
            prefix,
            upstream,
            strip_prefix: spec.strip_prefix,
            require,
            cost: spec.cost,
            timeout: Duration::from_millis(spec.timeout_ms),
            public: spec.public,
        })
    }

    /// Whether `path` is on this route: the prefix, followed by nothing or by a `/`.
    pub fn matches(&self, path: &str) -> bool {
        within(path, &self.prefix)
    }

    /// What a request with `method` needs. `HEAD` is a `GET` unless named itself; a route that
    /// requires nothing accepts any valid credential for any method.
    pub fn needs(&self, method: &str) -> Needs<'_> {
        if self.public {
            return Needs::Nothing;
        }
        if self.require.is_empty() {
            return Needs::Credential(&[]);
        }
        let named = self
            .require
            .get(method)
            .or_else(|| {
                (method == "HEAD")
                    .then(|| self.require.get("GET"))
                    .flatten()
            })
            .or_else(|| self.require.get("*"));
        match named {
            Some(permissions) => Needs::Credential(permissions),
            None => {
                let mut allowed: Vec<&str> = self.require.keys().map(String::as_str).collect();
                if allowed.contains(&"GET") && !allowed.contains(&"HEAD") {
                    allowed.push("HEAD");
                }
                Needs::MethodNotAllowed(allowed)
            }
        }
    }

    /// The path the upstream is asked for, `path` being on this route: the upstream's base path,
    /// then the path, without the prefix if it is stripped.
    pub fn upstream_path(&self, path: &str) -> String {
        let rest = if self.strip_prefix {
            &path[self.prefix.len().min(path.len())..]
        } else {
            path
        };
        let rest = if rest.is_empty() { "/" } else { rest };
        let mut joined = String::with_capacity(self.upstream.base_path.len() + rest.len());
        joined.push_str(&self.upstream.base_path);
        joined.push_str(rest);
        joined
    }
}

/// The routes, longest prefix first.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// Checks every route; the first problem found is the error.
    pub fn new(specs: &[RouteSpec], catalog: &Catalog) -> Result<Self, RouteError> {
        let mut routes: Vec<Arc<Route>> = Vec::with_capacity(specs.len());
        for spec in specs {
            let route = Route::new(spec, catalog)?;
            if routes.iter().any(|r| r.prefix == route.prefix) {
                return Err(RouteError {
                    prefix: spec.prefix.clone(),
                    why: "the prefix is given to two routes".into(),
                });
            }
            routes.push(Arc::new(route));
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Self { routes })
    }

    /// The route `path` takes: the longest prefix it is on.
    pub fn find(&self, path: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|route| route.matches(path))
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }
}

/// Whether `path` is `prefix` or below it, by whole segments.
fn within(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// `/zones/` → `/zones`; refused: empty, relative, `/` alone, dot segments, a query or fragment.
fn normalise_prefix(prefix: &str) -> Result<String, String> {
    let trimmed = prefix.trim_end_matches('/');
    if !prefix.starts_with('/') {
        return Err("the prefix must start with `/`".into());
    }
    if trimmed.is_empty() {
        return Err(format!(
            "`/` would take keygate's own paths ({}); give the API a prefix of its own",
            KEYGATE_PATHS.join(", ")
        ));
    }
    if trimmed
        .bytes()
        .any(|b| matches!(b, b'?' | b'#' | b'%' | b'"' | b'\\') || !b.is_ascii_graphic())
        || trimmed
            .split('/')
            .skip(1)
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(
            "the prefix must be a plain path: visible characters, no `?`, `#`, `%`, `\"`, `\\`, \
             empty, `.` or `..` segments"
                .into(),
        );
    }
    Ok(trimmed.to_owned())
}

/// `http://host[:port][/base]`; HTTPS upstreams are not supported (keygate and its upstreams
/// share a private network; TLS ends at keygate).
fn parse_upstream(url: &str) -> Result<Upstream, String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "upstream `{url}` must be an http:// URL (keygate ends TLS; the upstream is reached \
             over the private network)"
        ));
    };
    let (authority, base_path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    let bad = || format!("upstream `{url}` is not `http://host[:port][/path]`");
    if authority.is_empty()
        || authority.contains('@')
        || !authority.bytes().all(|b| b.is_ascii_graphic())
        || base_path
            .bytes()
            .any(|b| matches!(b, b'?' | b'#') || !b.is_ascii_graphic())
    {
        return Err(bad());
    }
    let has_port = match authority.rfind(':') {
        // An IPv6 literal's colons are inside its brackets.
        Some(colon) => !authority[colon..].contains(']'),
        None => false,
    };
    if has_port {
        let port = &authority[authority.rfind(':').unwrap_or(0) + 1..];
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad());
        }
    }
    let authority = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok(Upstream {
        authority,
        base_path: base_path.trim_end_matches('/').to_owned(),
    })
}

/// RFC 9110's `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        Catalog::new(&["zones:read", "zones:write"]).unwrap()
    }

    fn spec(prefix: &str) -> RouteSpec {
        RouteSpec {
            prefix: prefix.into(),
            upstream: "http://127.0.0.1:9000".into(),
            strip_prefix: false,
            require: BTreeMap::new(),
            cost: 1,
            timeout_ms: 30_000,
            public: false,
        }
    }

    fn table(specs: &[RouteSpec]) -> Result<RouteTable, RouteError> {
        RouteTable::new(specs, &catalog())
    }

    #[test]
    fn the_longest_prefix_wins_by_whole_segments() {
        let table = table(&[spec("/zones"), spec("/zones/archive/"), spec("/zone")]).unwrap();
        let found = |path| table.find(path).map(|r| r.prefix.as_str());
        assert_eq!(found("/zones"), Some("/zones"));
        assert_eq!(found("/zones/1/subnets"), Some("/zones"));
        assert_eq!(found("/zones/archive"), Some("/zones/archive"));
        assert_eq!(found("/zones/archive/2"), Some("/zones/archive"));
        assert_eq!(found("/zones/archived"), Some("/zones"));
        assert_eq!(found("/zonesx"), None);
        assert_eq!(found("/zone/1"), Some("/zone"));
        assert_eq!(found("/other"), None);
    }

    #[test]
    fn routes_overlapping_keygates_paths_are_refused_by_name() {
        for prefix in [
            "/v1",
            "/v1/zones",
            "/console/x",
            "/metrics",
            "/",
            "/.well-known/a",
        ] {
            let error = table(&[spec("/zones"), spec(prefix)]).unwrap_err();
            assert_eq!(error.prefix, prefix);
            assert!(error.to_string().contains(prefix), "{error}");
        }
        // Whole segments: these are not keygate's.
        table(&[spec("/v10"), spec("/v"), spec("/metricsx"), spec("/doc")]).unwrap();
    }

    #[test]
    fn bad_routes_are_refused_naming_what_is_wrong() {
        let with = |f: fn(&mut RouteSpec)| {
            let mut s = spec("/zones");
            f(&mut s);
            table(&[s]).unwrap_err().why
        };
        assert!(with(|s| s.prefix = "zones".into()).contains("start with"));
        assert!(with(|s| s.prefix = "/a/../v1".into()).contains("plain path"));
        assert!(with(|s| s.upstream = "https://x".into()).contains("http://"));
        assert!(with(|s| s.upstream = "http://".into()).contains("not `http://"));
        assert!(with(|s| s.upstream = "http://h:0".into()).contains("not `http://"));
        assert!(with(|s| s.upstream = "http://u:p@h".into()).contains("not `http://"));
        assert!(
            with(|s| {
                s.require.insert("GET".into(), vec!["zones:delete".into()]);
            })
            .contains("zones:delete")
        );
        assert!(
            with(|s| {
                s.require.insert("GE T".into(), vec![]);
            })
            .contains("not an HTTP method")
        );
        assert!(
            with(|s| {
                s.public = true;
                s.require.insert("GET".into(), vec!["zones:read".into()]);
            })
            .contains("public")
        );
        assert!(with(|s| s.timeout_ms = 0).contains("timeout_ms"));
        assert!(with(|s| s.cost = MAX_COST + 1).contains("cost"));
        let twice = table(&[spec("/zones"), spec("/zones/")]).unwrap_err();
        assert!(twice.why.contains("two routes"));
    }

    #[test]
    fn methods_need_what_the_route_requires_and_others_are_refused() {
        let mut s = spec("/zones");
        s.require.insert("get".into(), vec!["zones:read".into()]);
        s.require.insert("POST".into(), vec!["zones:write".into()]);
        let table = table(&[s]).unwrap();
        let route = table.find("/zones").unwrap();
        assert_eq!(
            route.needs("GET"),
            Needs::Credential(&["zones:read".into()])
        );
        assert_eq!(
            route.needs("HEAD"),
            Needs::Credential(&["zones:read".into()])
        );
        assert_eq!(
            route.needs("POST"),
            Needs::Credential(&["zones:write".into()])
        );
        assert_eq!(
            route.needs("DELETE"),
            Needs::MethodNotAllowed(vec!["GET", "POST", "HEAD"])
        );

        let mut any = spec("/any");
        any.require.insert("*".into(), vec!["zones:read".into()]);
        let mut public = spec("/public");
        public.public = true;
        let table = RouteTable::new(&[any, public, spec("/open")], &catalog()).unwrap();
        assert_eq!(
            table.find("/any").unwrap().needs("PATCH"),
            Needs::Credential(&["zones:read".into()])
        );
        assert_eq!(table.find("/public").unwrap().needs("PUT"), Needs::Nothing);
        assert_eq!(
            table.find("/open").unwrap().needs("PUT"),
            Needs::Credential(&[])
        );
    }

    #[test]
    fn upstream_paths_keep_or_strip_the_prefix_below_the_base_path() {
        let mut stripped = spec("/zones");
        stripped.strip_prefix = true;
        stripped.upstream = "http://[::1]:9000/api/".into();
        let mut kept = spec("/kept");
        kept.upstream = "http://backend".into();
        let table = table(&[stripped, kept]).unwrap();
        let route = table.find("/zones").unwrap();
        assert_eq!(route.upstream.authority, "[::1]:9000");
        assert_eq!(route.upstream_path("/zones"), "/api/");
        assert_eq!(route.upstream_path("/zones/1/subnets"), "/api/1/subnets");
        let route = table.find("/kept/x").unwrap();
        assert_eq!(route.upstream.authority, "backend:80");
        assert_eq!(route.upstream_path("/kept/x"), "/kept/x");
    }
}
