//! The periods of quotas (API.md §13): which period a moment falls in, and when it refills. Pure
//! arithmetic on a [`Timestamp`]; counting what a period used is the store's.
//!
//! A period starts at the quota's anchor and repeats, all in UTC:
//!
//! - **hour**: every 3 600 seconds from the anchor, so an anchor at 10:20:30 refills at 20:30 past
//!   every hour.
//! - **day**: every 86 400 seconds from the anchor, so at the anchor's time of day. UTC has no
//!   daylight saving, so a day is always 24 hours.
//! - **month**: once each calendar month, on the anchor's day of the month at its time of day. A
//!   month too short for that day refills on its last day instead: anchored on the 31st, a quota
//!   refills on Jan 31, Feb 28 (Feb 29 in a leap year), Mar 31, Apr 30, and so on. Every month's
//!   refill is worked out from the anchor itself, never from the refill before it, so a short
//!   month does not pull the following ones earlier.
//! - **total**: one period from the anchor that never ends.
//!
//! Before its anchor a quota is in its first period: the window is the one that starts at the
//! anchor, so what is used before the anchor counts towards the first period rather than opening
//! an extra one, and `resets_at` is still the first refill after the anchor.
//!
//! A quota given to the API is checked by [`Quota::new`]: a limit from 1 to [`MAX_LIMIT`], and an
//! anchor (by default when the quota is set) at most one period ahead, so that the first period,
//! which also holds what comes before the anchor, is never more than two periods long.
//!
//! Any moment is placed in its period in constant time, however far from the anchor: the number of
//! whole periods (or calendar months) is computed, not counted. Nothing here panics, whatever the
//! timestamps: a refill past the last date the calendar can name (year 9999) is never.

use serde::{Deserialize, Serialize};
use time::{Date, Month, OffsetDateTime, Time};

use crate::Timestamp;
use crate::validate::Invalid;

/// How often a quota refills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaPeriod {
    Hour,
    Day,
    Month,
    Total,
}

impl QuotaPeriod {
    pub const ALL: [QuotaPeriod; 4] = [
        QuotaPeriod::Hour,
        QuotaPeriod::Day,
        QuotaPeriod::Month,
        QuotaPeriod::Total,
    ];

    /// The name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaPeriod::Hour => "hour",
            QuotaPeriod::Day => "day",
            QuotaPeriod::Month => "month",
            QuotaPeriod::Total => "total",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|period| period.as_str() == name)
    }

    /// A period named in a request, refused naming `period`.
    pub fn parse(name: &str) -> Result<Self, QuotaError> {
        Self::from_name(name).ok_or(QuotaError::UnknownPeriod)
    }
}

const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

/// A number of requests a credential (or a tenant) may make per period. [`Quota::new`] checks one
/// given to the API; one read back from the store is built as it was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u64,
    pub period: QuotaPeriod,
    /// Where the first period starts; every later one is counted from it.
    pub anchor: Timestamp,
}

/// One period of a quota: from `start`, until `resets_at` (excluded), or forever for `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Timestamp,
    pub resets_at: Option<Timestamp>,
}

/// The largest limit a quota takes: 2^53 - 1, the largest integer that a JSON client reading
/// numbers as doubles (JavaScript's `Number`) still reads exactly, so `limit`, `used` and
/// `remaining` never come back rounded.
pub const MAX_LIMIT: u64 = (1 << 53) - 1;

/// Why a quota given to the API is refused. Each names its field ([`QuotaError::field`]); the
/// message says what the field must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    #[error("must be at least 1")]
    LimitZero,
    #[error(
        "must be at most {MAX_LIMIT} (2^53 - 1, the largest integer every JSON client reads exactly)"
    )]
    LimitTooLarge,
    #[error("must be `hour`, `day`, `month` or `total`")]
    UnknownPeriod,
    /// A `total` quota has one period, which begins at its anchor.
    #[error("must not be in the future for a `total` quota")]
    AnchorInFuture,
    #[error("may be at most one {} in the future", .0.as_str())]
    AnchorTooFarAhead(QuotaPeriod),
}

impl QuotaError {
    /// The field of the quota object this is about: `limit`, `period` or `anchor`.
    pub fn field(self) -> &'static str {
        match self {
            QuotaError::LimitZero | QuotaError::LimitTooLarge => "limit",
            QuotaError::UnknownPeriod => "period",
            QuotaError::AnchorInFuture | QuotaError::AnchorTooFarAhead(_) => "anchor",
        }
    }

    /// The error for a quota nested in a request under `parent` (`quota.limit`).
    pub fn invalid_in(self, parent: &str) -> Invalid {
        Invalid::new(format!("{parent}.{}", self.field()), self.to_string())
    }
}

impl From<QuotaError> for Invalid {
    fn from(error: QuotaError) -> Self {
        Invalid::new(error.field(), error.to_string())
    }
}

impl Quota {
    /// A quota as a request gives it, set at `created` (a credential's creation, or the request
    /// replacing its quota): the anchor defaults to `created` and may lie any time before it, but
    /// at most one period after it (not at all for `total`), no later than the first refill of a
    /// quota anchored at `created`. A later anchor would make a first period, which also holds
    /// what is used before the anchor, longer than two periods; an earlier anchor at the same
    /// time of day (or day of the month) gives the same refills.
    ///
    /// Reports the first field found wrong, in the order `limit`, `anchor`; `period` is checked
    /// where its name is read ([`QuotaPeriod::parse`]).
    pub fn new(
        limit: u64,
        period: QuotaPeriod,
        anchor: Option<Timestamp>,
        created: Timestamp,
    ) -> Result<Quota, QuotaError> {
        if limit == 0 {
            return Err(QuotaError::LimitZero);
        }
        if limit > MAX_LIMIT {
            return Err(QuotaError::LimitTooLarge);
        }
        let quota = Quota {
            limit,
            period,
            anchor: created,
        };
        let Some(anchor) = anchor.filter(|&anchor| anchor > created) else {
            return Ok(Quota {
                anchor: anchor.unwrap_or(created),
                ..quota
            });
        };
        if period == QuotaPeriod::Total {
            return Err(QuotaError::AnchorInFuture);
        }
        // `None` only past the calendar's end, where no anchor is any use.
        let first_refill = quota.window(created).resets_at;
        if first_refill.is_none_or(|refill| anchor > refill) {
            return Err(QuotaError::AnchorTooFarAhead(period));
        }
        Ok(Quota { anchor, ..quota })
    }

    /// The period `now` falls in; before the anchor, the first period (see the module's doc).
    pub fn window(&self, now: Timestamp) -> Window {
        match self.period {
            QuotaPeriod::Total => Window {
                start: self.anchor,
                resets_at: None,
            },
            QuotaPeriod::Month => month_window(self.anchor, now),
            QuotaPeriod::Day => fixed_window(self.anchor, DAY, now),
            QuotaPeriod::Hour => fixed_window(self.anchor, HOUR, now),
        }
    }

    /// Seconds from `now` until the quota refills, at least 1 (for `Retry-After`); `None` when it
    /// never does.
    pub fn retry_after(&self, now: Timestamp) -> Option<u64> {
        let resets_at = self.window(now).resets_at?;
        let seconds = resets_at.unix().saturating_sub(now.unix());
        Some(u64::try_from(seconds).unwrap_or(0).max(1))
    }
}

/// Periods of `length` seconds from `anchor`, in i128 so that no distance between two
/// timestamps overflows.
fn fixed_window(anchor: Timestamp, length: i64, now: Timestamp) -> Window {
    let (anchor, length) = (i128::from(anchor.unix()), i128::from(length));
    let periods = (i128::from(now.unix()) - anchor).div_euclid(length).max(0);
    // Never past `now` or the anchor, so it fits; its end may not.
    let start = anchor + periods * length;
    Window {
        start: Timestamp::from_unix(i64::try_from(start).unwrap_or(i64::MAX)),
        resets_at: i64::try_from(start + length).ok().map(Timestamp::from_unix),
    }
}

/// Calendar months from `anchor`: the month of `now` is found from the difference in years and
/// months, then its refill is compared with `now` (it may still be ahead, later in the month).
fn month_window(anchor: Timestamp, now: Timestamp) -> Window {
    let Ok(from) = OffsetDateTime::from_unix_timestamp(anchor.unix()) else {
        // An anchor the calendar cannot name has no months to count.
        return Window {
            start: anchor,
            resets_at: None,
        };
    };
    let schedule = Monthly {
        month: month_number(from.date()),
        day: from.day(),
        time: from.time(),
    };
    // A moment past the calendar's end is in the calendar's last month at best.
    let at = OffsetDateTime::from_unix_timestamp(now.unix())
        .map(|t| t.date())
        .unwrap_or(if now > anchor { Date::MAX } else { Date::MIN });
    let mut months = (month_number(at) - schedule.month).max(0);
    if schedule.refill(months).is_some_and(|refill| refill > now) {
        months -= 1;
    }
    let months = months.max(0);
    Window {
        start: schedule.refill(months).unwrap_or(anchor),
        resets_at: schedule.refill(months + 1),
    }
}

/// A monthly quota's refills: the anchor's day of the month (or the month's last day, when it is
/// shorter) at the anchor's time of day, in the anchor's month and every one after.
struct Monthly {
    /// The anchor's month, counted from the start of year 0.
    month: i64,
    day: u8,
    time: Time,
}

impl Monthly {
    /// The refill `months` calendar months after the anchor's (0 is the anchor), if the
    /// calendar can name it.
    fn refill(&self, months: i64) -> Option<Timestamp> {
        let number = self.month.checked_add(months)?;
        let year = i32::try_from(number.div_euclid(12)).ok()?;
        let month = Month::try_from(u8::try_from(number.rem_euclid(12) + 1).ok()?).ok()?;
        let day = self.day.min(month.length(year));
        let date = Date::from_calendar_date(year, month, day).ok()?;
        Some(Timestamp::from_unix(
            date.with_time(self.time).assume_utc().unix_timestamp(),
        ))
    }
}

/// Months since the start of year 0, so two dates' difference in calendar months is a subtraction.
fn month_number(date: Date) -> i64 {
    i64::from(date.year()) * 12 + i64::from(u8::from(date.month())) - 1
}

/// A quota as a request gives it, not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRequest {
    pub limit: u64,
    pub period: String,
    pub anchor: Option<Timestamp>,
}

impl QuotaRequest {
    /// The quota it asks for, set at `created` ([`Quota::new`]).
    pub fn check_at(&self, created: Timestamp) -> Result<Quota, QuotaError> {
        QuotaPeriod::parse(&self.period)
            .and_then(|period| Quota::new(self.limit, period, self.anchor, created))
    }

    /// [`QuotaRequest::check_at`] for a quota nested in a request: errors name
    /// `{parent}.{field}`.
    pub fn check(&self, parent: &str, created: Timestamp) -> Result<Quota, Invalid> {
        self.check_at(created)
            .map_err(|error| error.invalid_in(parent))
    }
}

/// A quota as the store keeps it: on what (`subject`, a credential's or a tenant's id), its
/// definition, and how much the window it last counted has used (credits *taken* by the nodes,
/// spent or still held in a reserve; see [`crate::reserve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredQuota {
    pub subject: String,
    pub quota: Quota,
    pub window_start: Timestamp,
    pub used: u64,
}

impl StoredQuota {
    /// A new quota on `subject`, nothing used yet.
    pub fn fresh(subject: &str, quota: Quota, now: Timestamp) -> Self {
        Self {
            subject: subject.to_owned(),
            quota,
            window_start: quota.window(now).start,
            used: 0,
        }
    }

    /// Where it stands at `now`, when this node holds `held` of the credits counted as used:
    /// nothing used yet if the stored count is of an earlier window.
    pub fn status_at(&self, now: Timestamp, held: u64) -> QuotaStatus {
        let window = self.quota.window(now);
        let used = if self.window_start >= window.start {
            self.used.saturating_sub(held).min(self.quota.limit)
        } else {
            0
        };
        QuotaStatus {
            limit: self.quota.limit,
            used,
            remaining: self.quota.limit - used,
            resets_at: window.resets_at,
        }
    }
}

/// Where a quota stands: for reads, and for an allowed request's answer (the tightest of the
/// quotas it spent from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaStatus {
    pub limit: u64,
    pub used: u64,
    pub remaining: u64,
    /// `None` for a `total` quota, which never refills.
    pub resets_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap()
    }

    fn quota(period: QuotaPeriod, anchor: &str) -> Quota {
        Quota {
            limit: 1000,
            period,
            anchor: at(anchor),
        }
    }

    fn window(start: &str, resets_at: &str) -> Window {
        Window {
            start: at(start),
            resets_at: Some(at(resets_at)),
        }
    }

    #[test]
    fn periods_have_their_wire_names() {
        for period in QuotaPeriod::ALL {
            let json = serde_json::to_string(&period).unwrap();
            assert_eq!(json, format!("\"{}\"", period.as_str()));
            assert_eq!(serde_json::from_str::<QuotaPeriod>(&json).unwrap(), period);
            assert_eq!(QuotaPeriod::from_name(period.as_str()), Some(period));
        }
        assert_eq!(
            QuotaPeriod::ALL.map(QuotaPeriod::as_str),
            ["hour", "day", "month", "total"]
        );
        assert_eq!(QuotaPeriod::from_name("Hour"), None);
        assert_eq!(QuotaPeriod::from_name("week"), None);
    }

    #[test]
    fn an_hour_turns_exactly_at_the_anchors_minute_and_second() {
        let q = quota(QuotaPeriod::Hour, "2026-03-01T10:20:30Z");
        let first = window("2026-03-01T10:20:30Z", "2026-03-01T11:20:30Z");
        let second = window("2026-03-01T11:20:30Z", "2026-03-01T12:20:30Z");
        assert_eq!(q.window(at("2026-03-01T10:20:30Z")), first);
        assert_eq!(q.window(at("2026-03-01T11:20:29Z")), first);
        assert_eq!(q.window(at("2026-03-01T11:20:30Z")), second);
        assert_eq!(q.window(at("2026-03-01T11:20:31Z")), second);
        assert_eq!(
            q.window(at("2027-07-15T04:20:29Z")),
            window("2027-07-15T03:20:30Z", "2027-07-15T04:20:30Z"),
            "a year and more later"
        );
    }

    #[test]
    fn a_day_turns_exactly_at_the_anchors_time_of_day() {
        let q = quota(QuotaPeriod::Day, "2026-03-01T13:45:10Z");
        let first = window("2026-03-01T13:45:10Z", "2026-03-02T13:45:10Z");
        let second = window("2026-03-02T13:45:10Z", "2026-03-03T13:45:10Z");
        assert_eq!(q.window(at("2026-03-01T13:45:10Z")), first);
        assert_eq!(q.window(at("2026-03-02T13:45:09Z")), first);
        assert_eq!(q.window(at("2026-03-02T13:45:10Z")), second);
        assert_eq!(q.window(at("2026-03-02T13:45:11Z")), second);
        // Across Europe's and America's daylight saving changes, and a leap day: still 24 hours.
        assert_eq!(
            q.window(at("2028-03-01T00:00:00Z")),
            window("2028-02-29T13:45:10Z", "2028-03-01T13:45:10Z")
        );
        assert_eq!(
            q.window(at("2036-11-05T13:45:10Z")),
            window("2036-11-05T13:45:10Z", "2036-11-06T13:45:10Z"),
            "ten years later"
        );
    }

    #[test]
    fn a_month_anchored_on_the_31st_refills_on_the_last_day_of_shorter_months() {
        // Through a leap year (2028) and a common one (2029), a refill at a time: each is the
        // start of the window around it and the end of the one before.
        let q = quota(QuotaPeriod::Month, "2027-12-31T13:45:10Z");
        let refills = [
            "2027-12-31",
            "2028-01-31",
            "2028-02-29",
            "2028-03-31",
            "2028-04-30",
            "2028-05-31",
            "2028-06-30",
            "2028-07-31",
            "2028-08-31",
            "2028-09-30",
            "2028-10-31",
            "2028-11-30",
            "2028-12-31",
            "2029-01-31",
            "2029-02-28",
            "2029-03-31",
            "2029-04-30",
            "2029-05-31",
            "2029-06-30",
            "2029-07-31",
            "2029-08-31",
            "2029-09-30",
            "2029-10-31",
            "2029-11-30",
            "2029-12-31",
            "2030-01-31",
        ]
        .map(|day| at(&format!("{day}T13:45:10Z")));
        for pair in refills.windows(2) {
            let (start, next) = (pair[0], pair[1]);
            let expected = Window {
                start,
                resets_at: Some(next),
            };
            assert_eq!(q.window(start), expected, "at {start:?}");
            assert_eq!(q.window(Timestamp::from_unix(start.unix() + 1)), expected);
            assert_eq!(q.window(Timestamp::from_unix(next.unix() - 1)), expected);
        }
    }

    #[test]
    fn a_month_anchored_on_a_leap_day_refills_on_the_28th_of_common_februaries() {
        let q = quota(QuotaPeriod::Month, "2028-02-29T00:00:00Z");
        for (now, start, resets_at) in [
            ("2028-03-01T00:00:00Z", "2028-02-29", "2028-03-29"),
            ("2028-03-29T00:00:00Z", "2028-03-29", "2028-04-29"),
            ("2029-02-28T00:00:00Z", "2029-02-28", "2029-03-29"),
            ("2029-03-28T23:59:59Z", "2029-02-28", "2029-03-29"),
            ("2030-02-27T23:59:59Z", "2030-01-29", "2030-02-28"),
            ("2031-03-01T00:00:00Z", "2031-02-28", "2031-03-29"),
            ("2032-02-28T23:59:59Z", "2032-01-29", "2032-02-29"),
            ("2032-02-29T00:00:00Z", "2032-02-29", "2032-03-29"),
        ] {
            assert_eq!(
                q.window(at(now)),
                window(
                    &format!("{start}T00:00:00Z"),
                    &format!("{resets_at}T00:00:00Z")
                ),
                "at {now}"
            );
        }
    }

    #[test]
    fn a_month_keeps_the_anchors_time_of_day_to_the_second() {
        let q = quota(QuotaPeriod::Month, "2026-01-31T13:45:10Z");
        let january = window("2026-01-31T13:45:10Z", "2026-02-28T13:45:10Z");
        let february = window("2026-02-28T13:45:10Z", "2026-03-31T13:45:10Z");
        assert_eq!(q.window(at("2026-02-28T13:45:09Z")), january);
        assert_eq!(q.window(at("2026-02-28T13:45:10Z")), february);
        // Late on the refill day but before its time: still the month before.
        let q = quota(QuotaPeriod::Month, "2026-01-15T23:59:59Z");
        assert_eq!(
            q.window(at("2026-03-15T23:59:58Z")),
            window("2026-02-15T23:59:59Z", "2026-03-15T23:59:59Z")
        );
        // Early in a month, before the anchor's day: the window began the month before.
        assert_eq!(
            q.window(at("2026-03-01T00:00:00Z")),
            window("2026-02-15T23:59:59Z", "2026-03-15T23:59:59Z")
        );
    }

    #[test]
    fn a_month_far_from_its_anchor_is_computed_not_drifted() {
        let q = quota(QuotaPeriod::Month, "2026-01-31T06:00:00Z");
        assert_eq!(
            q.window(at("2126-05-01T00:00:00Z")),
            window("2126-04-30T06:00:00Z", "2126-05-31T06:00:00Z"),
            "a century on, still the 31st wherever a month has one"
        );
        assert_eq!(
            q.window(at("2400-02-29T07:00:00Z")),
            window("2400-02-29T06:00:00Z", "2400-03-31T06:00:00Z"),
            "2400 is a leap year"
        );
        assert_eq!(
            q.window(at("2100-02-28T05:59:59Z")),
            window("2100-01-31T06:00:00Z", "2100-02-28T06:00:00Z"),
            "2100 is not"
        );
        assert_eq!(
            q.window(at("9999-12-31T23:59:59Z")),
            Window {
                start: at("9999-12-31T06:00:00Z"),
                resets_at: None,
            },
            "a refill the calendar cannot name never comes"
        );
    }

    #[test]
    fn before_its_anchor_a_quota_is_in_its_first_period() {
        let before = at("2025-06-01T00:00:00Z");
        for (period, resets_at) in [
            (QuotaPeriod::Hour, Some("2026-01-31T13:00:00Z")),
            (QuotaPeriod::Day, Some("2026-02-01T12:00:00Z")),
            (QuotaPeriod::Month, Some("2026-02-28T12:00:00Z")),
            (QuotaPeriod::Total, None),
        ] {
            let q = quota(period, "2026-01-31T12:00:00Z");
            let first = Window {
                start: q.anchor,
                resets_at: resets_at.map(at),
            };
            assert_eq!(q.window(before), first, "{period:?}");
            assert_eq!(
                q.window(Timestamp::from_unix(q.anchor.unix() - 1)),
                first,
                "{period:?}"
            );
            assert_eq!(q.window(q.anchor), first, "{period:?}");
        }
    }

    #[test]
    fn a_total_quota_never_refills() {
        let q = quota(QuotaPeriod::Total, "2026-01-31T12:00:00Z");
        let forever = Window {
            start: q.anchor,
            resets_at: None,
        };
        assert_eq!(q.window(q.anchor), forever);
        assert_eq!(q.window(at("2090-01-01T00:00:00Z")), forever);
        assert_eq!(q.retry_after(at("2090-01-01T00:00:00Z")), None);
    }

    #[test]
    fn retry_after_counts_the_seconds_to_the_refill() {
        let q = quota(QuotaPeriod::Hour, "2026-03-01T10:00:00Z");
        assert_eq!(q.retry_after(at("2026-03-01T10:00:00Z")), Some(3_600));
        assert_eq!(q.retry_after(at("2026-03-01T10:59:59Z")), Some(1));
        assert_eq!(q.retry_after(at("2026-03-01T11:00:00Z")), Some(3_600));
        assert_eq!(
            q.retry_after(at("2026-03-01T09:00:00Z")),
            Some(7_200),
            "before the anchor: until the first period ends"
        );
        let q = quota(QuotaPeriod::Month, "2026-01-31T00:00:00Z");
        assert_eq!(
            q.retry_after(at("2026-02-27T00:00:00Z")),
            Some(86_400),
            "the refill on Feb 28, a day away"
        );
        let q = quota(QuotaPeriod::Day, "2026-01-31T00:00:00Z");
        assert_eq!(q.retry_after(at("2026-02-27T00:00:01Z")), Some(86_399));
    }

    #[test]
    fn limits_run_from_one_to_the_largest_integer_json_reads_exactly() {
        let created = at("2026-03-01T10:00:00Z");
        let new = |limit| Quota::new(limit, QuotaPeriod::Day, None, created);
        assert_eq!(new(0), Err(QuotaError::LimitZero));
        assert_eq!(new(1).unwrap().limit, 1);
        assert_eq!(new(MAX_LIMIT).unwrap().limit, 9_007_199_254_740_991);
        assert_eq!(new(MAX_LIMIT + 1), Err(QuotaError::LimitTooLarge));
        assert_eq!(new(u64::MAX), Err(QuotaError::LimitTooLarge));
        // A JavaScript client reads the number into an f64: the largest limit survives, and past
        // it some integers come back as their neighbours.
        assert_eq!((MAX_LIMIT as f64) as u64, MAX_LIMIT);
        assert_ne!(((MAX_LIMIT + 2) as f64) as u64, MAX_LIMIT + 2);
    }

    #[test]
    fn the_anchor_defaults_to_creation_and_may_lie_at_most_one_period_ahead() {
        let created = at("2026-01-31T13:45:10Z");
        let new = |period, anchor: Option<&str>| Quota::new(10, period, anchor.map(at), created);
        assert_eq!(
            new(QuotaPeriod::Month, None),
            Ok(Quota {
                limit: 10,
                period: QuotaPeriod::Month,
                anchor: created,
            })
        );
        for period in QuotaPeriod::ALL {
            let past = new(period, Some("2019-05-31T00:00:00Z")).unwrap();
            assert_eq!(
                past.anchor,
                at("2019-05-31T00:00:00Z"),
                "years before: {period:?}"
            );
        }
        for (period, latest, too_late) in [
            (
                QuotaPeriod::Hour,
                "2026-01-31T14:45:10Z",
                "2026-01-31T14:45:11Z",
            ),
            (
                QuotaPeriod::Day,
                "2026-02-01T13:45:10Z",
                "2026-02-01T13:45:11Z",
            ),
            // The first refill of a quota anchored at creation, on the last day of February.
            (
                QuotaPeriod::Month,
                "2026-02-28T13:45:10Z",
                "2026-02-28T13:45:11Z",
            ),
        ] {
            assert_eq!(new(period, Some(latest)).unwrap().anchor, at(latest));
            assert_eq!(
                new(period, Some(too_late)),
                Err(QuotaError::AnchorTooFarAhead(period))
            );
        }
        assert!(new(QuotaPeriod::Total, Some("2026-01-31T13:45:10Z")).is_ok());
        assert_eq!(
            new(QuotaPeriod::Total, Some("2026-01-31T13:45:11Z")),
            Err(QuotaError::AnchorInFuture)
        );
    }

    #[test]
    fn errors_name_their_field_for_a_problem_response() {
        assert_eq!(QuotaPeriod::parse("month"), Ok(QuotaPeriod::Month));
        let period = QuotaPeriod::parse("week").unwrap_err();
        assert_eq!(
            Invalid::from(period),
            Invalid::new("period", "must be `hour`, `day`, `month` or `total`")
        );
        assert_eq!(
            QuotaError::LimitZero.invalid_in("quota"),
            Invalid::new("quota.limit", "must be at least 1")
        );
        assert_eq!(
            QuotaError::AnchorTooFarAhead(QuotaPeriod::Day).invalid_in("quota"),
            Invalid::new("quota.anchor", "may be at most one day in the future")
        );
        assert_eq!(QuotaError::AnchorInFuture.field(), "anchor");
        assert!(
            QuotaError::LimitTooLarge
                .to_string()
                .contains("9007199254740991")
        );
        // The limit is reported before the anchor.
        let both = Quota::new(
            0,
            QuotaPeriod::Total,
            Some(at("2030-01-01T00:00:00Z")),
            at("2026-01-01T00:00:00Z"),
        );
        assert_eq!(both, Err(QuotaError::LimitZero));
    }

    /// splitmix64: a few lines of deterministic randomness, so a failure replays exactly.
    struct Random(u64);

    impl Random {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// A number in `low..high`.
        fn between(&mut self, low: i64, high: i64) -> i64 {
            let span = u64::try_from(high - low).unwrap();
            low + i64::try_from(self.next() % span).unwrap()
        }
    }

    /// Whether `t` is one of a monthly quota's refills: the anchor's time of day, on the anchor's
    /// day or the last day of a shorter month.
    fn is_monthly_refill(anchor: OffsetDateTime, t: Timestamp) -> bool {
        let t = OffsetDateTime::from_unix_timestamp(t.unix()).unwrap();
        t.time() == anchor.time() && t.day() == anchor.day().min(t.month().length(t.year()))
    }

    #[test]
    fn every_moment_is_in_exactly_one_period_that_starts_and_ends_on_refills() {
        let mut random = Random(0x006b_6579_6761_7465);
        // 1950 to 2100, and up to sixty years on.
        let (earliest, latest) = (-631_152_000, 4_102_444_800);
        let sixty_years = 60 * 366 * 86_400;
        for case in 0..20_000 {
            let period = QuotaPeriod::ALL[case % 4];
            let anchor = Timestamp::from_unix(random.between(earliest, latest));
            let q = Quota {
                limit: 1,
                period,
                anchor,
            };
            let now = Timestamp::from_unix(anchor.unix() + random.between(0, sixty_years));
            let w = q.window(now);
            let context = format!("{period:?} anchored {anchor:?} at {now:?}: {w:?}");

            assert!(w.start >= anchor && w.start <= now, "{context}");
            assert_eq!(q.window(w.start), w, "{context}");
            let Some(resets_at) = w.resets_at else {
                assert_eq!(period, QuotaPeriod::Total, "{context}");
                assert_eq!(w.start, anchor, "{context}");
                continue;
            };
            assert!(now < resets_at, "{context}");
            assert_eq!(q.window(resets_at).start, resets_at, "{context}");
            let last_second = Timestamp::from_unix(resets_at.unix() - 1);
            assert_eq!(q.window(last_second), w, "{context}");
            assert_eq!(
                q.retry_after(now),
                Some(u64::try_from(resets_at.unix() - now.unix()).unwrap()),
                "{context}"
            );
            match period {
                QuotaPeriod::Hour | QuotaPeriod::Day => {
                    let length = if period == QuotaPeriod::Hour {
                        HOUR
                    } else {
                        DAY
                    };
                    assert_eq!((w.start.unix() - anchor.unix()) % length, 0, "{context}");
                    assert_eq!(resets_at.unix() - w.start.unix(), length, "{context}");
                }
                QuotaPeriod::Month => {
                    let from = OffsetDateTime::from_unix_timestamp(anchor.unix()).unwrap();
                    assert!(is_monthly_refill(from, w.start), "{context}");
                    assert!(is_monthly_refill(from, resets_at), "{context}");
                    let month = |t: Timestamp| {
                        month_number(
                            OffsetDateTime::from_unix_timestamp(t.unix())
                                .unwrap()
                                .date(),
                        )
                    };
                    assert_eq!(month(resets_at), month(w.start) + 1, "{context}");
                }
                QuotaPeriod::Total => unreachable!("{context}"),
            }

            // Any moment before the anchor is in the first period.
            let before = Timestamp::from_unix(anchor.unix() - random.between(1, sixty_years));
            assert_eq!(q.window(before), q.window(anchor), "{context}");
        }
    }

    #[test]
    fn no_timestamp_makes_it_panic() {
        let extremes =
            [i64::MIN, -62_167_219_200, -1, 0, 253_402_300_799, i64::MAX].map(Timestamp::from_unix);
        for period in QuotaPeriod::ALL {
            for anchor in extremes {
                for now in extremes {
                    let q = Quota {
                        limit: 1,
                        period,
                        anchor,
                    };
                    let window = q.window(now);
                    assert!(window.resets_at.is_none_or(|end| end > window.start));
                    let _ = q.retry_after(now);
                }
            }
        }
    }
}
