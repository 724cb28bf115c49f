//! Usage in the console (API.md §12): the tenant's usage page, and the charts the tokens table
//! and a token's page show. Each is one read of the store's usage through the same permission
//! (`usage:read`) and scope (the tenant acted for and those below it) as `GET /v1/usage`, so the
//! console shows no count the API would not, and a page never reads once per row.

use std::collections::HashMap;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use keygate_core::access::{Caller, perm};
use keygate_core::credential::CredentialKind;
use keygate_core::id::{CredentialId, TenantId};
use keygate_core::store::{Page, TokenFilter, UsageBucket, UsageFilter, UsageOutcome};

use super::chart::{Chart, Period, Range, Sparkline, Split, Tally, grouped};
use super::filters;
use super::frame::{Frame, SignedIn, render};
use super::{html, refusal};
use crate::problem::ApiError;
use crate::state::AppState;

const HERE: &str = "/console/usage";

/// How many credentials the usage page lists.
const TOP: usize = 20;

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

/// One credential of the usage page's table.
struct CredentialRow {
    id: String,
    name: String,
    /// Its page in the console, where there is one the person may see.
    link: Option<String>,
    kind: String,
    organization: String,
    valid: String,
    refused: String,
    total: String,
    share: String,
}

#[derive(Template)]
#[template(path = "console/usage.html")]
struct UsagePage {
    frame: Frame,
    /// The tenant whose usage this is.
    tenant: String,
    usage: UsageSection,
    rows: Vec<CredentialRow>,
    /// Credentials with requests that the table leaves out.
    more: usize,
    /// "in the last 7 days"
    during: String,
}

/// The period as the address carries it, read leniently: anything else in it is ignored.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct UsageQuery {
    period: Option<String>,
}

pub(super) async fn usage(
    State(state): State<AppState>,
    SignedIn { caller, session }: SignedIn,
    uri: axum::http::Uri,
) -> Response {
    let query: UsageQuery =
        serde_html_form::from_str(uri.query().unwrap_or_default()).unwrap_or_default();
    if caller.require::<perm::UsageRead>().is_err() {
        return refusal(
            StatusCode::FORBIDDEN,
            "Your role does not let you see usage (it needs usage:read).",
        );
    }
    let tenant = caller
        .acting_as()
        .map_or(&caller.verified().tenant().name, |t| &t.name)
        .clone();
    let mut page = UsagePage {
        frame: Frame::new(&caller, &session, HERE, "usage"),
        tenant,
        usage: UsageSection::new(query.period.as_deref(), HERE, "period", ""),
        rows: Vec::new(),
        more: 0,
        during: String::new(),
    };
    let Some(period) = page.usage.period else {
        return html(render(&page));
    };
    let range = period.range(state.clock().now());
    page.during = format!("in the {}", range.title().to_lowercase());
    // Each credential with its tenant, for the table's organization column.
    let selection = UsageFilter {
        by_tenant: true,
        ..filter(&range, Vec::new(), true)
    };
    let buckets = match crate::routes::usage::read_usage(&state, &caller, &selection).await {
        Ok(buckets) => buckets,
        Err(error) => {
            page.usage.unreadable(&error);
            return html(render(&page));
        }
    };
    let tally = Tally::new(
        range,
        Split::ValidRefused,
        buckets.iter().filter_map(counted),
    );
    page.usage.chart = Some(tally.chart());

    // The same read, summed per credential: the table adds up to the chart.
    let mut sums: HashMap<&str, Sums> = HashMap::new();
    for bucket in &buckets {
        let (Some(id), Some(outcome)) = (bucket.credential_id.as_deref(), bucket.outcome) else {
            continue;
        };
        let sum = sums.entry(id).or_insert_with(|| Sums {
            tenant: bucket.tenant_id.clone().unwrap_or_default(),
            ..Sums::default()
        });
        if outcome == UsageOutcome::Valid {
            sum.valid += bucket.count;
        } else {
            sum.refused += bucket.count;
        }
    }
    let mut ranked: Vec<(&str, Sums)> = sums.into_iter().collect();
    ranked.sort_by(|(a_id, a), (b_id, b)| b.total().cmp(&a.total()).then(a_id.cmp(b_id)));
    page.more = ranked.len().saturating_sub(TOP);
    ranked.truncate(TOP);
    let all = tally.valid() + tally.refused();
    let ids: Vec<CredentialId> = ranked
        .iter()
        .filter_map(|(id, _)| CredentialId::parse_any(id))
        .collect();
    let names = Names::read(&state, &caller, &ids).await;
    let tenants = TenantNames::read(
        &state,
        &caller,
        ranked.iter().map(|(_, s)| s.tenant.as_str()),
    )
    .await;
    page.rows = ranked
        .into_iter()
        .map(|(id, sum)| {
            let known = names.get(id);
            CredentialRow {
                id: id.to_owned(),
                name: known.map_or_else(|| id.to_owned(), |k| k.name.clone()),
                link: known.and_then(|k| k.link.clone()),
                kind: known.map_or_else(|| kind_of(id).to_owned(), |k| k.kind.to_owned()),
                organization: tenants.name(&sum.tenant),
                valid: grouped(sum.valid),
                refused: grouped(sum.refused),
                total: grouped(sum.total()),
                share: share(sum.total(), all),
            }
        })
        .collect();
    html(render(&page))
}

/// One credential's requests over the period.
#[derive(Debug, Default)]
struct Sums {
    tenant: String,
    valid: u64,
    refused: u64,
}

impl Sums {
    fn total(&self) -> u64 {
        self.valid.saturating_add(self.refused)
    }
}

/// `part` of `whole` as a percentage to a tenth, "<0.1 %" rather than a misleading "0.0 %".
fn share(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "0 %".to_owned();
    }
    let tenths = (part as f64 * 1000.0 / whole as f64).round();
    if tenths < 1.0 && part > 0 {
        return "<0.1 %".to_owned();
    }
    format!("{:.1} %", tenths / 10.0)
}

/// What a credential is, from its id alone: for one the person cannot look up.
fn kind_of(id: &str) -> &'static str {
    match id.split('_').next().unwrap_or_default() {
        "tok" => "Token",
        "key" => "Account key",
        "cli" => "OAuth client",
        "ses" => "Console session",
        "rft" => "Refresh token",
        _ => "Credential",
    }
}

/// What a table says of a credential the person may look up in this tenant.
pub(super) struct Known {
    pub(super) name: String,
    kind: &'static str,
    pub(super) link: Option<String>,
}

/// The names of the credentials of the tenant acted for that the person may see, each kind in
/// one read (a client each: the table lists at most [`TOP`]). The sub-customers' credentials are
/// not here: they show by id.
pub(super) struct Names(HashMap<String, Known>);

impl Names {
    pub(super) fn get(&self, id: &str) -> Option<&Known> {
        self.0.get(id)
    }

    pub(super) async fn read(state: &AppState, caller: &Caller, ids: &[CredentialId]) -> Self {
        let mut known = HashMap::new();
        let of_kind = |prefix: &str| -> Vec<CredentialId> {
            ids.iter()
                .filter(|id| id.as_str().starts_with(prefix))
                .cloned()
                .collect()
        };
        let tokens = of_kind("tok_");
        if let (Ok(grant), false) = (caller.require::<perm::TokensRead>(), tokens.is_empty()) {
            let filter = TokenFilter {
                personal: crate::routes::tokens::personal_visibility(caller),
                ..TokenFilter::default()
            };
            let page = Page {
                ids: tokens.iter().map(|id| id.as_str().to_owned()).collect(),
                ..Page::first(Page::MAX_LIMIT)
            };
            let now = state.clock().now();
            match state
                .store()
                .list_tokens(&grant.reads(), &filter, &page, now)
                .await
            {
                Ok(listed) => {
                    for token in listed.items {
                        let link = format!("/console/tokens/{}", token.id);
                        known.insert(
                            token.id.to_string(),
                            Known {
                                name: token.name,
                                kind: match token.kind {
                                    CredentialKind::Personal => "Personal token",
                                    _ => "Service token",
                                },
                                link: Some(link),
                            },
                        );
                    }
                }
                Err(error) => tracing::error!(%error, "the console could not name tokens"),
            }
        }
        let keys = of_kind("key_");
        if let (Ok(grant), false) = (caller.require::<perm::KeysRead>(), keys.is_empty()) {
            match state.store().list_account_keys(&grant.reads()).await {
                Ok(listed) => {
                    for key in listed.into_iter().filter(|key| keys.contains(&key.id)) {
                        known.insert(
                            key.id.to_string(),
                            Known {
                                name: format!("Key ending …{}", key.hint),
                                kind: "Account key",
                                link: Some("/console/account/keys".to_owned()),
                            },
                        );
                    }
                }
                Err(error) => tracing::error!(%error, "the console could not name account keys"),
            }
        }
        if let Ok(grant) = caller.require::<perm::OauthClientsRead>() {
            let scope = grant.reads();
            for id in of_kind("cli_") {
                if let Ok(Some(client)) = state.store().get_client(&scope, &id).await {
                    known.insert(
                        id.to_string(),
                        Known {
                            name: client.name,
                            kind: "OAuth client",
                            link: Some(format!("/console/oauth/clients/{id}")),
                        },
                    );
                }
            }
        }
        // The person's own session is the one thing of theirs the table cannot look up.
        let mine = caller.verified().id();
        if ids.contains(mine) {
            known.insert(
                mine.to_string(),
                Known {
                    name: "Your session".to_owned(),
                    kind: "Console session",
                    link: None,
                },
            );
        }
        Self(known)
    }
}

/// The names of the tenants a table shows: the one acted for, and the sub-customers the person
/// may see (else by id).
pub(super) struct TenantNames {
    here: (TenantId, String),
    names: HashMap<String, String>,
}

impl TenantNames {
    pub(super) async fn read<'a>(
        state: &AppState,
        caller: &Caller,
        tenants: impl Iterator<Item = &'a str>,
    ) -> Self {
        let here = match caller.acting_as() {
            Some(tenant) => (tenant.id.clone(), tenant.name.clone()),
            None => {
                let tenant = caller.verified().tenant();
                (tenant.id.clone(), tenant.name.clone())
            }
        };
        let mut names = HashMap::new();
        if let Ok(grant) = caller.require::<perm::TenantsRead>() {
            let scope = grant.reads();
            for id in tenants {
                if id == here.0.as_str() || names.contains_key(id) {
                    continue;
                }
                if let Ok(Some(tenant)) = state.store().get_tenant(&scope, id).await {
                    names.insert(id.to_owned(), tenant.name);
                }
            }
        }
        Self { here, names }
    }

    pub(super) fn name(&self, id: &str) -> String {
        if id == self.here.0.as_str() {
            return self.here.1.clone();
        }
        self.names.get(id).cloned().unwrap_or_else(|| id.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_read_as_a_person_expects() {
        assert_eq!(share(0, 0), "0 %");
        assert_eq!(share(1, 3), "33.3 %");
        assert_eq!(share(3, 3), "100.0 %");
        assert_eq!(share(1, 100_000), "<0.1 %");
        assert_eq!(share(0, 10), "0.0 %");
    }
}
