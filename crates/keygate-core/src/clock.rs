//! Time as a parameter: every rule that depends on "now" reads a [`Clock`], so tests move time
//! instead of sleeping. Nothing else in keygate reads the system clock.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An instant with whole-second precision, written as RFC 3339 in UTC with `Z`
/// (`2026-11-22T10:00:00Z`), the only time format on keygate's wire.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The last second RFC 3339's four-digit year can write, 9999-12-31T23:59:59Z: no time keygate
    /// keeps or shows is later.
    pub const MAX: Self = Self(253_402_300_799);

    pub const fn from_unix(seconds: i64) -> Self {
        Self(seconds)
    }

    pub const fn unix(self) -> i64 {
        self.0
    }

    /// Later by `duration`, or [`Timestamp::MAX`] if that is later still.
    pub fn saturating_add(self, duration: Duration) -> Self {
        let secs = i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(secs).min(Self::MAX.0))
    }

    pub fn saturating_sub(self, duration: Duration) -> Self {
        let secs = i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(secs))
    }

    /// Parses RFC 3339 with any offset, normalised to UTC and truncated to the second.
    pub fn parse(text: &str) -> Result<Self, time::error::Parse> {
        OffsetDateTime::parse(text, &Rfc3339).map(|t| Self(t.unix_timestamp()))
    }

    /// A time past [`Timestamp::MAX`] (stored before it was the limit) is written as the limit:
    /// far in the future either way, never as 1970.
    fn to_datetime(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(self.0.min(Self::MAX.0))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.to_datetime();
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Timestamp::parse(&text).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{text}` is not an RFC 3339 time such as 2026-11-22T10:00:00Z"
            ))
        })
    }
}

/// The source of "now".
pub trait Clock: Send + Sync + 'static {
    /// Now, to the second: what expiry and every stored time use.
    fn now(&self) -> Timestamp {
        Timestamp(self.now_millis().div_euclid(1000))
    }

    /// Now in milliseconds since the epoch: for rate limits, which count within a second.
    fn now_millis(&self) -> i64;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    // The one place the wall clock is read (clippy.toml forbids it everywhere else).
    #[allow(clippy::disallowed_methods)]
    fn now_millis(&self) -> i64 {
        // Straight from the system clock: going through a calendar date costs more than the
        // read itself, on a path taken for every request.
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug)]
pub struct ManualClock(Mutex<i64>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self(Mutex::new(start.unix().saturating_mul(1000)))
    }

    pub fn advance(&self, by: Duration) {
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let mut now = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *now = now.saturating_add(millis);
    }

    pub fn set(&self, to: Timestamp) {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = to.unix().saturating_mul(1000);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> i64 {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_z_and_parses_offsets() {
        let t = Timestamp::parse("2026-11-22T11:00:00.750+01:00").unwrap();
        assert_eq!(t.to_string(), "2026-11-22T10:00:00Z");
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2026-11-22T10:00:00Z\""
        );
        let back: Timestamp = serde_json::from_str("\"2026-11-22T10:00:00Z\"").unwrap();
        assert_eq!(back, t);
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }

    #[test]
    fn no_time_is_later_than_the_last_rfc_3339_can_write() {
        assert_eq!(Timestamp::MAX.to_string(), "9999-12-31T23:59:59Z");
        assert_eq!(
            Timestamp::parse("9999-12-31T23:59:59Z").unwrap(),
            Timestamp::MAX
        );
        let now = Timestamp::parse("2026-12-05T10:00:00Z").unwrap();
        let far = now.saturating_add(Duration::from_secs(300_000_000_000));
        assert_eq!(far, Timestamp::MAX);
        assert_eq!(now.saturating_add(Duration::MAX), Timestamp::MAX);
        // A later one stored before there was a limit is written as the limit, not as 1970.
        assert_eq!(
            Timestamp::from_unix(317_156_474_437).to_string(),
            "9999-12-31T23:59:59Z"
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp::from_unix(1000));
        assert_eq!(clock.now().unix(), 1000);
        clock.advance(Duration::from_secs(60));
        assert_eq!(clock.now().unix(), 1060);
        clock.advance(Duration::from_millis(999));
        assert_eq!(clock.now().unix(), 1060);
        assert_eq!(clock.now_millis(), 1_060_999);
        clock.advance(Duration::from_millis(1));
        assert_eq!(clock.now().unix(), 1061);
    }
}
