//! Usage (API.md §12): how many requests each credential made, per minute, hour or day and per
//! outcome, summed over whatever the caller does not group by. Read-only; the counts come from
//! every node's hot path, and only retention (`usage.*`) removes them.
//!
//! A tenant sees its own credentials' usage and its sub-customers', never its parent's or its
//! siblings'. A `credential_id` or `tenant_id` outside that subtree matches nothing, as a
//! `token_id` of another tenant does in the audit log: an empty answer, which says nothing about
//! whether it exists.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use keygate_core::Timestamp;
use keygate_core::access::{Caller, perm};
use keygate_core::id::{CredentialId, TenantId};
use keygate_core::store::{Granularity, StoreError, UsageBucket, UsageFilter};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Authenticated;
use crate::config::UsageConfig;
use crate::problem::{ApiError, FieldError};
use crate::request::Query;
use crate::state::AppState;

/// The most values one of `credential_id` and `tenant_id` may have.
pub const MAX_IDS: usize = 100;

/// The range read when `since` is not given: the day before `until`.
const DEFAULT_RANGE: Duration = Duration::from_secs(24 * 3600);

/// The header row of the CSV export: every column, whether grouped by or not.
const CSV_HEADER: &str = "start,credential_id,tenant_id,outcome,count\n";

/// The size of a bucket, as `granularity` names it.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Documents the parameter; the value is read by `Granularity::from_name`.
enum GranularityName {
    Minute,
    Hour,
    Day,
}

/// What a bucket is split by, as `group_by` names it.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // Documents the parameter; the value is read by `UsageSelection::filter`.
enum GroupName {
    Credential,
    Outcome,
    Tenant,
}

/// The selection, shared by the read and the export. `credential_id` and `tenant_id` may repeat
/// (alternatives), and so may `group_by` (each splits the buckets further).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageSelection {
    /// Only these credentials (`tok_…`, `key_…`, `cli_…`; at most 100).
    #[serde(default)]
    credential_id: Vec<String>,
    /// Only the credentials of these tenants: the caller's or ones below it (at most 100). A
    /// tenant's own credentials, not its sub-customers'.
    #[serde(default)]
    tenant_id: Vec<String>,
    /// Buckets starting at or after this time (RFC 3339), moved back to the start of its
    /// bucket. Default: a day before `until`.
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Buckets starting before this time (RFC 3339), moved on to the end of its bucket.
    /// Default: now. At most 48 hours after `since` for minute buckets, 90 days for hour
    /// buckets (the retention of each).
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
    /// The size of a bucket (default `hour`).
    #[param(inline, value_type = Option<GranularityName>)]
    granularity: Option<String>,
    /// Split each bucket by credential, by outcome and/or by tenant; without it, a bucket counts
    /// everything selected.
    #[param(inline, value_type = Vec<GroupName>)]
    #[serde(default)]
    group_by: Vec<String>,
}

impl UsageSelection {
    /// The store's filter for this selection at `now`, or the parameters that are wrong.
    pub(crate) fn filter(
        self,
        now: Timestamp,
        config: &UsageConfig,
    ) -> Result<UsageFilter, ApiError> {
        let mut errors = Vec::new();
        let credential_ids = ids(
            "credential_id",
            &self.credential_id,
            CredentialId::parse_any,
            "is not a credential id (tok_…, key_…, cli_…)",
            &mut errors,
        );
        let tenant_ids = ids(
            "tenant_id",
            &self.tenant_id,
            TenantId::parse,
            "is not a tenant id (tnt_…)",
            &mut errors,
        );
        let granularity = match self.granularity.as_deref() {
            None => Some(Granularity::Hour),
            Some(name) => Granularity::from_name(name).or_else(|| {
                errors.push(field("granularity", "must be `minute`, `hour` or `day`"));
                None
            }),
        };
        let (mut by_credential, mut by_outcome, mut by_tenant) = (false, false, false);
        for (i, group) in self.group_by.iter().enumerate() {
            match group.as_str() {
                "credential" => by_credential = true,
                "outcome" => by_outcome = true,
                "tenant" => by_tenant = true,
                _ => errors.push(field(
                    &format!("group_by[{i}]"),
                    "must be `credential`, `outcome` or `tenant`",
                )),
            }
        }
        let mut time = |name: &str, text: Option<&str>| {
            let text = text?;
            Timestamp::parse(text)
                .map_err(|_| {
                    errors.push(field(
                        name,
                        "must be an RFC 3339 time, e.g. 2026-11-22T10:00:00Z",
                    ))
                })
                .ok()
        };
        let since = time("since", self.since.as_deref());
        let until = time("until", self.until.as_deref());
        let (Some(granularity), true) = (granularity, errors.is_empty()) else {
            return Err(ApiError::invalid_fields(errors));
        };

        let longest = match granularity {
            Granularity::Minute | Granularity::Hour => Some(config.retention(granularity)),
            Granularity::Day => None,
        };
        let until = until.unwrap_or(now);
        let since = since.unwrap_or_else(|| {
            until.saturating_sub(longest.map_or(DEFAULT_RANGE, |l| l.min(DEFAULT_RANGE)))
        });
        if until <= since {
            // Name what the caller wrote: `until`, or `since` against a default `until` of now.
            let (name, message) = match self.until {
                Some(_) => ("until", "must be after since"),
                None => ("since", "must be before until, which is now by default"),
            };
            return Err(ApiError::invalid_fields(vec![field(name, message)]));
        }
        if let Some(longest) = longest
            && until.unix() - since.unix() > i64::try_from(longest.as_secs()).unwrap_or(i64::MAX)
        {
            // As the retention is configured: minutes in hours, hours in days.
            let hours = longest.as_secs() / 3600;
            let (span, coarser) = match granularity {
                Granularity::Minute => (format!("{hours} hours"), "hour"),
                _ => (format!("{} days", hours / 24), "day"),
            };
            return Err(ApiError::invalid_fields(vec![field(
                "since",
                &format!(
                    "must be at most {span} before until for {} buckets, as long as they are \
                     kept; ask for granularity={coarser} or a shorter range",
                    granularity.as_str()
                ),
            )]));
        }
        // Whole buckets: `since` back to the start of its bucket, `until` on to the end of its.
        let last = granularity.bucket(Timestamp::from_unix(until.unix() - 1));
        let until = Timestamp::from_unix(last.unix() + granularity.seconds());
        // The end of the last bucket of year 9999 is past what RFC 3339 can write.
        if Timestamp::parse(&until.to_string()) != Ok(until) {
            return Err(ApiError::invalid_fields(vec![field(
                "until",
                "must be before the year 9999 ends",
            )]));
        }
        Ok(UsageFilter {
            credential_ids,
            tenant_ids,
            since: granularity.bucket(since),
            until,
            granularity,
            by_credential,
            by_outcome,
            by_tenant,
        })
    }
}

fn field(name: &str, message: &str) -> FieldError {
    FieldError {
        field: name.into(),
        message: message.into(),
    }
}

/// The ids of a repeated parameter, each checked for its shape; at most [`MAX_IDS`] of them.
fn ids<T>(
    name: &str,
    values: &[String],
    parse: impl Fn(&str) -> Option<T>,
    message: &str,
    errors: &mut Vec<FieldError>,
) -> Vec<T> {
    if values.len() > MAX_IDS {
        errors.push(field(
            name,
            &format!("at most {MAX_IDS} values, got {}", values.len()),
        ));
        return Vec::new();
    }
    let mut parsed = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        match parse(value) {
            Some(id) => parsed.push(id),
            None => errors.push(field(&format!("{name}[{i}]"), message)),
        }
    }
    parsed
}

/// One bucket: the requests that started in it, split by what was grouped by. A key not grouped
/// by is left out.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageRow {
    /// The start of the bucket.
    #[schema(value_type = String, format = DateTime, example = "2026-11-22T10:00:00Z")]
    pub start: Timestamp,
    /// With `group_by=credential`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "tok_0VbgiQA4b2D33bZBLrLual")]
    pub credential_id: Option<String>,
    /// With `group_by=tenant`: the credential's own tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "tnt_0VbgiQA4b2D33bZBLrLual")]
    pub tenant_id: Option<String>,
    /// With `group_by=outcome`: `valid`, `expired`, `revoked`, `ip_not_allowed`, `forbidden`,
    /// `rate_limited` or `quota_exceeded`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = "valid")]
    pub outcome: Option<&'static str>,
    #[schema(example = 42)]
    pub count: u64,
}

impl From<UsageBucket> for UsageRow {
    fn from(bucket: UsageBucket) -> Self {
        Self {
            start: bucket.start,
            credential_id: bucket.credential_id,
            tenant_id: bucket.tenant_id,
            outcome: bucket.outcome.map(|o| o.as_str()),
            count: bucket.count,
        }
    }
}

impl UsageRow {
    /// The row as a CSV line, every column present, the ones not grouped by empty. Ids and
    /// outcomes never hold a comma, a quote or a line break, so nothing needs quoting.
    fn csv_line(&self) -> String {
        format!(
            "{},{},{},{},{}\n",
            self.start,
            self.credential_id.as_deref().unwrap_or_default(),
            self.tenant_id.as_deref().unwrap_or_default(),
            self.outcome.unwrap_or_default(),
            self.count
        )
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageView {
    /// `minute`, `hour` or `day`.
    #[schema(example = "hour")]
    pub granularity: &'static str,
    /// The start of the first bucket read: `since`, moved back to its bucket's start.
    #[schema(value_type = String, format = DateTime, example = "2026-11-21T10:00:00Z")]
    pub since: Timestamp,
    /// The end of the last bucket read: `until`, moved on to its bucket's end.
    #[schema(value_type = String, format = DateTime, example = "2026-11-22T10:00:00Z")]
    pub until: Timestamp,
    /// Oldest bucket first, then by the grouped keys; buckets with no requests are left out.
    pub data: Vec<UsageRow>,
}

/// Read usage
///
/// Request counts per bucket (minute, hour or day), split by credential, outcome and/or tenant,
/// of the caller's tenant and the tenants below it. Buckets with no requests are left out.
/// Needs `usage:read`.
#[utoipa::path(get, path = "/v1/usage", tag = "usage", operation_id = "getUsage",
    params(UsageSelection),
    responses(
        (status = 200, body = UsageView),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Query(selection): Query<UsageSelection>,
) -> Result<axum::Json<UsageView>, ApiError> {
    let filter = selection.filter(state.clock().now(), &state.config().usage)?;
    let buckets = read_usage(&state, &caller, &filter).await?;
    Ok(axum::Json(UsageView {
        granularity: filter.granularity.as_str(),
        since: filter.since,
        until: filter.until,
        data: buckets.into_iter().map(UsageRow::from).collect(),
    }))
}

/// The buckets `caller` may read that match `filter` (API and console alike): the caller's
/// tenant's and those below it. Needs `usage:read`.
pub(crate) async fn read_usage(
    state: &AppState,
    caller: &Caller,
    filter: &UsageFilter,
) -> Result<Vec<UsageBucket>, ApiError> {
    let grant = caller.require::<perm::UsageRead>()?;
    Ok(state.store().usage(&grant.reads(), filter).await?)
}

/// Export usage as CSV or newline-delimited JSON
///
/// The same selection as the read, as CSV when the request accepts `text/csv` (a header row,
/// then every column on every line, empty where not grouped by), else as newline-delimited
/// JSON (one bucket per line, as in the read's `data`). Streamed: read from the store as it is
/// sent. Needs `usage:read`.
#[utoipa::path(get, path = "/v1/usage/export", tag = "usage", operation_id = "exportUsage",
    params(UsageSelection),
    responses(
        (status = 200, description = "One bucket per line",
            content(
                (UsageRow = "application/x-ndjson"),
                (String = "text/csv", example = "start,credential_id,tenant_id,outcome,count\n2026-11-22T10:00:00Z,tok_0VbgiQA4b2D33bZBLrLual,,valid,42\n"),
            )),
    ))]
pub async fn export(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    Query(selection): Query<UsageSelection>,
) -> Result<Response, ApiError> {
    let grant = caller.require::<perm::UsageRead>()?;
    let filter = selection.filter(state.clock().now(), &state.config().usage)?;
    let csv = accepts_csv(&headers);
    let rows = state
        .store()
        .export_usage(&grant.reads(), &filter)
        .map(move |bucket| {
            let bucket = bucket.inspect_err(|error| {
                // Too late for a problem response: the status is sent. The body ends early,
                // which the client sees as a broken transfer, not as the end of the data.
                tracing::error!(%error, "the usage export stopped");
            })?;
            let row = UsageRow::from(bucket);
            let line = if csv {
                row.csv_line().into_bytes()
            } else {
                let mut line =
                    serde_json::to_vec(&row).map_err(|e| StoreError::Internal(e.to_string()))?;
                line.push(b'\n');
                line
            };
            Ok::<_, StoreError>(Bytes::from(line))
        });
    if csv {
        let header =
            futures_util::stream::once(async { Ok(Bytes::from_static(CSV_HEADER.as_bytes())) });
        Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            Body::from_stream(header.chain(rows)),
        )
            .into_response())
    } else {
        Ok((
            [(header::CONTENT_TYPE, "application/x-ndjson")],
            Body::from_stream(rows),
        )
            .into_response())
    }
}

/// Whether `Accept` names `text/csv` (with any parameters, at any quality above zero).
fn accepts_csv(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("text/csv") && !refused
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, value.parse().unwrap());
        headers
    }

    #[test]
    fn csv_is_chosen_only_when_accepted() {
        assert!(accepts_csv(&accept("text/csv")));
        assert!(accepts_csv(&accept("application/json, text/csv;q=0.5")));
        assert!(accepts_csv(&accept("TEXT/CSV; charset=utf-8")));
        assert!(!accepts_csv(&accept("text/csv;q=0")));
        assert!(!accepts_csv(&accept("*/*")));
        assert!(!accepts_csv(&HeaderMap::new()));
    }
}
