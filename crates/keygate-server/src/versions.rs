//! The headers of the API versioning policy (README, "Versions"). Once the operator announces that
//! a version is deprecated or going away (config `api.v1.*`), every response under its prefix says
//! so: `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and `Link`s to the policy page, so clients
//! and their monitoring notice long before the version stops answering.
//!
//! The values are made once, at start-up; a response only gets clones of them. Nothing here
//! decides anything about the request: it is labelling, never refusal.

use axum::http::header::LINK;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use keygate_core::Timestamp;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::config::VersionLifecycle;

const DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
const SUNSET: HeaderName = HeaderName::from_static("sunset");

/// What one announced version adds to each of its responses.
#[derive(Debug, Clone)]
pub struct VersionNotice {
    /// `/v1`: the path itself and everything below it.
    prefix: &'static str,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl VersionNotice {
    /// The notice for `/v1`, if the operator announced anything.
    pub fn v1(lifecycle: &VersionLifecycle) -> Option<Self> {
        Self::new("/v1", lifecycle)
    }

    fn new(prefix: &'static str, lifecycle: &VersionLifecycle) -> Option<Self> {
        let link = |rel: &str| {
            let url = lifecycle.policy_url.as_deref()?;
            Some((LINK, format!("<{url}>; rel=\"{rel}\"; type=\"text/html\"")))
        };
        let mut headers = Vec::new();
        if let Some(at) = lifecycle.deprecated_at {
            headers.push(Some((DEPRECATION, structured_date(at))));
            headers.push(link("deprecation"));
        }
        if let Some(at) = lifecycle.sunset_at {
            headers.push(Some((SUNSET, http_date(at))));
            headers.push(link("sunset"));
        }
        // Config validation keeps every value header-safe; anything else is left out.
        let headers: Vec<_> = headers
            .into_iter()
            .flatten()
            .filter_map(|(name, value)| Some((name, HeaderValue::try_from(value).ok()?)))
            .collect();
        (!headers.is_empty()).then_some(Self { prefix, headers })
    }

    pub fn applies_to(&self, path: &str) -> bool {
        path.strip_prefix(self.prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    pub fn add_to(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// RFC 9651's Date, as `Deprecation` takes it: `@` and Unix seconds.
fn structured_date(at: Timestamp) -> String {
    format!("@{}", at.unix())
}

/// RFC 9110's IMF-fixdate, as `Sunset` takes it: `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(at: Timestamp) -> String {
    let format = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    OffsetDateTime::from_unix_timestamp(at.unix())
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_written_as_each_rfc_says() {
        let at = Timestamp::parse("1994-11-06T08:49:37Z").unwrap();
        assert_eq!(http_date(at), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(structured_date(at), "@784111777");
    }

    #[test]
    fn only_the_version_prefix_is_labelled() {
        let notice = VersionNotice::v1(&VersionLifecycle {
            sunset_at: Some(Timestamp::from_unix(0)),
            ..VersionLifecycle::default()
        })
        .unwrap();
        for path in ["/v1", "/v1/", "/v1/whoami", "/v1/forward-auth/x"] {
            assert!(notice.applies_to(path), "{path}");
        }
        for path in ["/", "/v10/x", "/v1x", "/healthz", "/docs/", "/v2/whoami"] {
            assert!(!notice.applies_to(path), "{path}");
        }
        assert!(VersionNotice::v1(&VersionLifecycle::default()).is_none());
    }
}
