//! Quotas in the console (API.md §13). The Quota section of a token's, an OAuth client's and a
//! sub-customer's page: what is used of the quota as a bar and, for a person who may set it, a
//! form to set, change or remove it, which is the API's `PUT …/quota` with its checks and its
//! audit event. And the quota fields of the forms that make a token or a client.

use std::future::Future;

use askama::Template;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keygate_core::Timestamp;
use serde::Deserialize;

use super::frame::{capitalised, day, problem_text, render};
use super::{html, refusal};

use crate::problem::{ApiError, FieldError};
use crate::routes::quotas::Set;
use crate::views::{QuotaBody, QuotaView};

/// A quota as a page shows it: a bar of what is used, and when it refills, in words.
pub(super) struct QuotaBar {
    pub(super) limit: u64,
    pub(super) used: u64,
    pub(super) remaining: u64,
    /// "this hour", "today", "this month", "in all".
    pub(super) period: &'static str,
    /// "Refills on 2027-01-01 00:00 UTC", or that it never does.
    pub(super) refill: String,
    /// Nine tenths or more used: shown as a warning.
    pub(super) nearly_spent: bool,
}

impl QuotaBar {
    pub(super) fn new(quota: &QuotaView) -> Self {
        Self {
            limit: quota.limit,
            used: quota.used,
            remaining: quota.remaining,
            period: match quota.period {
                "hour" => "this hour",
                "day" => "today",
                "month" => "this month",
                _ => "in all",
            },
            refill: match quota.resets_at {
                Some(at) => format!("Refills on {}", day(at)),
                None => "One-off credits: it never refills".to_owned(),
            },
            nearly_spent: quota.used.saturating_mul(10) >= quota.limit.saturating_mul(9),
        }
    }
}

/// The periods the form offers: (value, label).
pub(super) const PERIODS: [(&str, &str); 4] = [
    ("hour", "an hour"),
    ("day", "a day"),
    ("month", "a month (calendar months)"),
    ("total", "in all (one-off credits, never refilled)"),
];

/// The quota fields of a form that makes a credential (`quota_limit`, `quota_period`) as the
/// API's body: none when the limit is left empty; the message for the quota's fields when the
/// limit is not a whole number (the API checks the rest, naming `quota.limit` or `quota.period`).
pub(super) fn quota_at_creation(limit: &str, period: &str) -> Result<Option<QuotaBody>, String> {
    match limit.trim().replace([',', '_', ' '], "") {
        limit if limit.is_empty() => Ok(None),
        limit => limit
            .parse::<u64>()
            .map(|limit| {
                Some(QuotaBody {
                    limit,
                    period: period.to_owned(),
                    anchor: None,
                })
            })
            .map_err(|_| {
                "requests: a whole number, 1 or more (or leave it empty for no quota)".to_owned()
            }),
    }
}

/// The quota form as sent: `remove=yes` is its Remove button.
#[derive(Debug, Default, Deserialize)]
pub(super) struct QuotaForm {
    #[serde(default)]
    limit: String,
    #[serde(default)]
    period: String,
    #[serde(default)]
    remove: String,
}

/// What a page's quota section shows.
pub(super) struct QuotaSection {
    /// The quota in place, if one is.
    pub(super) bar: Option<QuotaBar>,
    /// Whether the person may set it; the form is shown only then.
    pub(super) may_set: bool,
    /// Where the form is sent.
    pub(super) action: String,
    /// The form's values: the quota in place, or what was sent.
    pub(super) limit: String,
    pub(super) period: String,
    pub(super) periods: [(&'static str, &'static str); 4],
    pub(super) errors: Vec<(String, String)>,
    pub(super) notice: Option<String>,
    /// What the quota is of, in a sentence under the heading; empty for none.
    pub(super) about: &'static str,
    /// The period and anchor of the quota in place.
    kept: Option<(&'static str, Timestamp)>,
}

impl QuotaSection {
    pub(super) fn new(current: Option<&QuotaView>, may_set: bool, action: String) -> Self {
        Self {
            bar: current.map(QuotaBar::new),
            may_set,
            action,
            limit: current.map(|q| q.limit.to_string()).unwrap_or_default(),
            period: current.map_or("month", |q| q.period).to_owned(),
            periods: PERIODS,
            errors: Vec::new(),
            notice: None,
            about: "",
            kept: current.map(|q| (q.period, q.anchor)),
        }
    }

    pub(super) fn error_for(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, message)| message.as_str())
    }

    /// The form as the API's body: `None` to remove the quota. A period left as it is keeps its
    /// anchor, so what the current period used goes on counting (a new anchor would start it
    /// afresh). A limit that is not a whole number is refused here, naming the field as the API
    /// would.
    pub(super) fn body_of(&self, form: &QuotaForm) -> Result<Option<QuotaBody>, ApiError> {
        if form.remove == "yes" {
            return Ok(None);
        }
        let limit = form.limit.trim().replace(['_', ',', ' '], "");
        let Ok(limit) = limit.parse::<u64>() else {
            return Err(ApiError::invalid_fields(vec![FieldError {
                field: "limit".into(),
                message: "a whole number of requests, 1 or more".into(),
            }]));
        };
        let anchor = self
            .kept
            .filter(|(period, _)| *period == form.period)
            .map(|(_, anchor)| anchor);
        Ok(Some(QuotaBody {
            limit,
            period: form.period.clone(),
            anchor,
        }))
    }

    /// The section after `form` was sent, with what it came to.
    pub(super) fn answered(&mut self, form: QuotaForm, outcome: &Result<Set, ApiError>) {
        match outcome {
            Ok(Some(set)) => {
                self.notice = Some(format!(
                    "Quota set: {} {} {}. {} used so far.",
                    set.limit,
                    if set.limit == 1 {
                        "request"
                    } else {
                        "requests"
                    },
                    match set.period {
                        "hour" => "an hour",
                        "day" => "a day",
                        "month" => "a month",
                        _ => "in all",
                    },
                    set.used
                ));
            }
            Ok(None) => {
                self.notice =
                    Some("Quota removed: requests are no longer counted against one.".into())
            }
            Err(error) => {
                self.errors = error
                    .errors
                    .iter()
                    .map(|e| (e.field.clone(), format!("{}.", capitalised(&e.message))))
                    .collect();
                if self.errors.is_empty() {
                    self.errors.push(("quota".into(), problem_text(error)));
                }
                self.limit = form.limit;
                self.period = form.period;
            }
        }
    }
}

/// The answer to a quota form on `page`: once set or removed, the page read again (`reread`)
/// with a notice; for bad input, the page with the form as sent and the message beside its
/// field; a refusal of the person (a permission, an object out of reach) is a page of its own.
pub(super) async fn quota_answer<P: Template>(
    outcome: Result<Set, ApiError>,
    form: QuotaForm,
    page: P,
    reread: impl Future<Output = Result<P, Response>>,
    section: fn(&mut P) -> &mut QuotaSection,
) -> Response {
    let mut page = match &outcome {
        Err(error) if error.errors.is_empty() => {
            return refusal(
                error.code.status(),
                &format!("The quota was not set: {}", problem_text(error)),
            );
        }
        Err(_) => page,
        Ok(_) => match reread.await {
            Ok(page) => page,
            Err(refused) => return refused,
        },
    };
    let status = match &outcome {
        Ok(_) => StatusCode::OK,
        Err(error) => error.code.status(),
    };
    section(&mut page).answered(form, &outcome);
    (status, html(render(&page))).into_response()
}
