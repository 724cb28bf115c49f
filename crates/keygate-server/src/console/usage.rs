//! Usage in the console (API.md §12): the charts the tokens table and a token's page show. Each is one read of the store's usage through the same permission
//! (`usage:read`) and scope (the tenant acted for and those below it) as `GET /v1/usage`, so the
//! console shows no count the API would not, and a page never reads once per row.

use std::collections::HashMap;

use keygate_core::access::{Caller, perm};
use keygate_core::id::CredentialId;
use keygate_core::store::{UsageBucket, UsageFilter, UsageOutcome};

use super::chart::{Chart, Period, Range, Sparkline, Split, Tally};
use crate::problem::ApiError;
use crate::state::AppState;

/// A link of the period switch.
pub(super) struct PeriodLink {
    pub(super) href: String,
    pub(super) label: &'static str,
    pub(super) current: bool,
}

/// A page's usage: the period switch, and the chart of the period asked for, or the message that
/// says why there is none.
pub(super) struct UsageSection {
    pub(super) periods: Vec<PeriodLink>,
    /// The period shown; `None` when the address asked for one there is not.
    pub(super) period: Option<Period>,
    pub(super) message: Option<String>,
    pub(super) chart: Option<Chart>,
    /// The request log's refusals of what the section shows, for a person who may read it.
    pub(super) log: Option<String>,
}

impl UsageSection {
    /// The section for the period `asked` (the address's value), its switch linking to `path`
    /// with `parameter` set to each period (and `fragment`, to come back to the section).
    fn new(asked: Option<&str>, path: &str, parameter: &str, fragment: &str) -> Self {
        let (period, message) = match Period::parse(asked) {
            Ok(period) => (Some(period), None),
            Err(message) => (None, Some(message)),
        };
        Self {
            periods: Period::ALL
                .into_iter()
                .map(|p| PeriodLink {
                    href: format!("{path}?{parameter}={}{fragment}", p.key()),
                    label: p.name(),
                    current: Some(p) == period,
                })
                .collect(),
            period,
            message,
            chart: None,
            log: None,
        }
    }

    fn unreadable(&mut self, error: &ApiError) {
        tracing::error!(detail = ?error.detail, "the console could not read usage");
        self.message =
            Some("keygate could not read the usage just now; reload in a moment.".into());
    }
}

/// The store's filter for `range` (of these credentials, or all when none are named), split by
/// outcome, and by credential when `by_credential`.
fn filter(range: &Range, credential_ids: Vec<CredentialId>, by_credential: bool) -> UsageFilter {
    UsageFilter {
        credential_ids,
        tenant_ids: Vec::new(),
        since: range.since,
        until: range.until(),
        granularity: range.granularity,
        by_credential,
        by_outcome: true,
        by_tenant: false,
    }
}

/// A bucket as a tally counts it; every read here groups by outcome.
fn counted(bucket: &UsageBucket) -> Option<(keygate_core::Timestamp, UsageOutcome, u64)> {
    Some((bucket.start, bucket.outcome?, bucket.count))
}

/// The last 24 hours of each of these credentials, hour by hour, valid and refused, in one read:
/// the sparklines of a page of the tokens table, by credential id. `None` when the person may
/// not read usage; a credential without requests has a flat line.
pub(super) async fn last_day(
    state: &AppState,
    caller: &Caller,
    ids: &[CredentialId],
) -> Option<Result<HashMap<String, Sparkline>, ApiError>> {
    caller.require::<perm::UsageRead>().ok()?;
    let range = Period::Day.range(state.clock().now());
    if ids.is_empty() {
        return Some(Ok(HashMap::new()));
    }
    let selection = filter(&range, ids.to_vec(), true);
    let read = crate::routes::usage::read_usage(state, caller, &selection).await;
    Some(read.map(|buckets| {
        let mut by_credential: HashMap<&str, Vec<&UsageBucket>> = HashMap::new();
        for bucket in &buckets {
            if let Some(id) = bucket.credential_id.as_deref() {
                by_credential.entry(id).or_default().push(bucket);
            }
        }
        ids.iter()
            .map(|id| {
                let mine = by_credential
                    .get(id.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let tally = Tally::new(
                    range,
                    Split::ValidRefused,
                    mine.iter().filter_map(|bucket| counted(bucket)),
                );
                (id.to_string(), tally.sparkline())
            })
            .collect()
    }))
}

/// The usage section of a token's page, by outcome, for the period the address asks for
/// (`?usage=`); `None` when the person may not read usage.
pub(super) async fn token_section(
    state: &AppState,
    caller: &Caller,
    token: &CredentialId,
    asked: Option<&str>,
) -> Option<UsageSection> {
    caller.require::<perm::UsageRead>().ok()?;
    let path = format!("/console/tokens/{token}");
    let mut section = UsageSection::new(asked, &path, "usage", "#usage");
    let Some(period) = section.period else {
        return Some(section);
    };
    let range = period.range(state.clock().now());
    if caller.require::<perm::AuditRead>().is_ok() {
        section.log = Some(format!(
            "/console/log?token_id={token}&outcome=denied&from={}",
            range.since
        ));
    }
    let read = crate::routes::usage::read_usage(
        state,
        caller,
        &filter(&range, vec![token.clone()], false),
    )
    .await;
    match read {
        Ok(buckets) => {
            let tally = Tally::new(range, Split::ByOutcome, buckets.iter().filter_map(counted));
            section.chart = Some(tally.chart());
        }
        Err(error) => section.unreadable(&error),
    }
    Some(section)
}
