//! Usage charts (API.md §12) for the console: bars per bucket, drawn as SVG on the server so they
//! need no script, with the same numbers as text beside them for a screen reader, a text browser
//! or a reader without the stylesheet.
//!
//! Everything here is a pure function of the buckets read, the range and its granularity: it reads
//! no store and no clock, so unit tests reach every case. The range is filled bucket by bucket,
//! oldest left, so an hour without requests is a bar of zero and never a gap that shifts the rest.
//! Each outcome has one fixed colour (Okabe and Ito's palette, told apart with the common
//! colour-vision deficiencies), written as SVG attributes so the bars keep it without the
//! stylesheet, and repeated in the legend beside its total. Text reaches the markup only through
//! the templates' escaping: nothing here builds markup from strings.

use askama::Template;
use keygate_core::Timestamp;
use keygate_core::store::{Granularity, UsageOutcome};

/// A period the console shows usage for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    pub(super) const ALL: [Period; 3] = [Period::Day, Period::Week, Period::Month];

    /// Its value in an address (`?usage=7d`).
    pub(super) fn key(self) -> &'static str {
        match self {
            Period::Day => "24h",
            Period::Week => "7d",
            Period::Month => "30d",
        }
    }

    /// Its name on the period switch.
    pub(super) fn name(self) -> &'static str {
        match self {
            Period::Day => "24 hours",
            Period::Week => "7 days",
            Period::Month => "30 days",
        }
    }

    /// The period an address asks for: the last 24 hours when it names none, and a sentence for
    /// the page when it names one there is not (quoted, shortened: it is the visitor's text).
    pub(super) fn parse(value: Option<&str>) -> Result<Self, String> {
        let value = value.map(str::trim).unwrap_or_default();
        if value.is_empty() {
            return Ok(Period::Day);
        }
        Self::ALL
            .into_iter()
            .find(|period| period.key() == value)
            .ok_or_else(|| {
                let shown: String = value.chars().take(40).collect();
                format!(
                    "There is no period “{shown}” to show usage for: pick 24 hours, 7 days or \
                     30 days."
                )
            })
    }

    /// The buckets the period covers at `now`, up to and including the one `now` falls in: hours
    /// for a day or a week, days for a month.
    pub(super) fn range(self, now: Timestamp) -> Range {
        match self {
            Period::Day => Range::ending_at(now, Granularity::Hour, 24),
            Period::Week => Range::ending_at(now, Granularity::Hour, 7 * 24),
            Period::Month => Range::ending_at(now, Granularity::Day, 30),
        }
    }
}

/// Consecutive buckets of one size: what a chart spans, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Range {
    /// The start of the first bucket.
    pub(super) since: Timestamp,
    pub(super) granularity: Granularity,
    /// How many buckets; at least one.
    pub(super) buckets: usize,
}

impl Range {
    /// The `buckets` buckets that end with the one `now` falls in.
    pub(super) fn ending_at(now: Timestamp, granularity: Granularity, buckets: usize) -> Self {
        let buckets = buckets.max(1);
        let last = granularity.bucket(now).unix();
        let back = granularity
            .seconds()
            .saturating_mul(i64::try_from(buckets - 1).unwrap_or(i64::MAX));
        Self {
            since: Timestamp::from_unix(last.saturating_sub(back)),
            granularity,
            buckets,
        }
    }

    /// The start of bucket `index`.
    fn start(&self, index: usize) -> Timestamp {
        let offset = i64::try_from(index).unwrap_or(i64::MAX);
        Timestamp::from_unix(
            self.since
                .unix()
                .saturating_add(offset.saturating_mul(self.granularity.seconds())),
        )
    }

    /// The end of the last bucket: what a read's `until` is.
    pub(super) fn until(&self) -> Timestamp {
        self.start(self.buckets)
    }

    /// The bucket a start falls in, if it is inside the range.
    fn index(&self, start: Timestamp) -> Option<usize> {
        let offset = start.unix().checked_sub(self.since.unix())?;
        let index = usize::try_from(offset.div_euclid(self.granularity.seconds())).ok()?;
        (offset >= 0 && index < self.buckets).then_some(index)
    }

    /// "Last 24 hours", "Last 7 days", "Last 30 days".
    pub(super) fn title(&self) -> String {
        let n = self.buckets;
        match self.granularity {
            Granularity::Hour if n > 24 && n.is_multiple_of(24) => format!("Last {} days", n / 24),
            Granularity::Hour if n == 1 => "This hour".to_owned(),
            Granularity::Hour => format!("Last {n} hours"),
            Granularity::Day if n == 1 => "Today".to_owned(),
            Granularity::Day => format!("Last {n} days"),
            Granularity::Minute if n == 1 => "This minute".to_owned(),
            Granularity::Minute => format!("Last {n} minutes"),
        }
    }

    /// A bucket's start as its row of the numbers reads it (UTC).
    fn label(&self, start: Timestamp) -> String {
        let text = start.to_string();
        match self.granularity {
            Granularity::Day => text[..10].to_owned(),
            _ => format!("{} {}", &text[..10], &text[11..16]),
        }
    }

    /// The label under bucket `index` on the time axis, if it has one: a few per chart, at
    /// round times (every 6 hours in a day, each midnight in a week, every 7th day back from
    /// today in a month).
    fn tick(&self, index: usize) -> Option<String> {
        let at = time::OffsetDateTime::from_unix_timestamp(self.start(index).unix()).ok()?;
        let date = || {
            format!(
                "{} {}",
                at.day(),
                MONTHS[usize::from(u8::from(at.month())) - 1]
            )
        };
        match self.granularity {
            Granularity::Hour if self.buckets <= 48 => match at.hour() {
                0 => Some(date()),
                hour if hour.is_multiple_of(6) => Some(format!("{hour:02}:00")),
                _ => None,
            },
            Granularity::Hour => (at.hour() == 0).then(date),
            Granularity::Day => (self.buckets - 1 - index).is_multiple_of(7).then(date),
            Granularity::Minute => {
                let every = (self.buckets / 6).max(1);
                (self.buckets - 1 - index)
                    .is_multiple_of(every)
                    .then(|| format!("{:02}:{:02}", at.hour(), at.minute()))
            }
        }
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// How a chart splits each bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Split {
    /// Valid requests below, refused ones (every other outcome) above.
    ValidRefused,
    /// One part per outcome, in the order of [`UsageOutcome::ALL`], valid at the bottom.
    ByOutcome,
}

/// One part of the bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Series {
    /// Its name in the markup (`data-series`): an outcome as the API names it, or `refused`.
    pub(super) key: &'static str,
    /// Its name in a sentence ("5 valid, 2 rate limited").
    pub(super) label: &'static str,
    pub(super) colour: &'static str,
}

/// Every refused outcome together; vermilion against valid's blue, the pair every common
/// colour-vision deficiency tells apart.
const REFUSED: Series = Series {
    key: "refused",
    label: "refused",
    colour: "#D55E00",
};

fn outcome_series(outcome: UsageOutcome) -> Series {
    let (label, colour) = match outcome {
        UsageOutcome::Valid => ("valid", "#0072B2"),
        UsageOutcome::Expired => ("expired", "#E69F00"),
        UsageOutcome::Revoked => ("revoked", "#000000"),
        UsageOutcome::IpNotAllowed => ("IP not allowed", "#CC79A7"),
        UsageOutcome::Forbidden => ("forbidden", "#D55E00"),
        UsageOutcome::RateLimited => ("rate limited", "#56B4E9"),
        UsageOutcome::QuotaExceeded => ("quota exceeded", "#F0E442"),
    };
    Series {
        key: outcome.as_str(),
        label,
        colour,
    }
}

impl Split {
    pub(super) fn series(self) -> Vec<Series> {
        match self {
            Split::ValidRefused => vec![outcome_series(UsageOutcome::Valid), REFUSED],
            Split::ByOutcome => UsageOutcome::ALL.into_iter().map(outcome_series).collect(),
        }
    }

    /// The part an outcome is counted in. Valid is part 0 either way.
    fn part(self, outcome: UsageOutcome) -> usize {
        match (self, outcome) {
            (Split::ValidRefused, UsageOutcome::Valid) => 0,
            (Split::ValidRefused, _) => 1,
            (Split::ByOutcome, outcome) => outcome.index(),
        }
    }
}

/// The counts of a range, bucket by bucket (oldest first) and part by part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Tally {
    range: Range,
    split: Split,
    /// `counts[bucket][part]`.
    counts: Vec<Vec<u64>>,
}

impl Tally {
    /// The tally of `buckets` (start, outcome, count), as a usage read grouped by outcome answers
    /// them: every bucket of the range is there, zero where nothing was read; what several
    /// entries say of one bucket and part adds up; what falls outside the range is left out.
    pub(super) fn new(
        range: Range,
        split: Split,
        buckets: impl IntoIterator<Item = (Timestamp, UsageOutcome, u64)>,
    ) -> Self {
        let parts = split.series().len();
        let mut counts = vec![vec![0u64; parts]; range.buckets];
        for (start, outcome, count) in buckets {
            if let Some(index) = range.index(start) {
                let cell = &mut counts[index][split.part(outcome)];
                *cell = cell.saturating_add(count);
            }
        }
        Self {
            range,
            split,
            counts,
        }
    }

    /// Each part's total over the range.
    pub(super) fn totals(&self) -> Vec<u64> {
        let mut totals = vec![0u64; self.split.series().len()];
        for bucket in &self.counts {
            for (total, count) in totals.iter_mut().zip(bucket) {
                *total = total.saturating_add(*count);
            }
        }
        totals
    }

    pub(super) fn valid(&self) -> u64 {
        self.totals()[0]
    }

    pub(super) fn refused(&self) -> u64 {
        self.totals()[1..]
            .iter()
            .fold(0u64, |sum, n| sum.saturating_add(*n))
    }

    /// What a chart of the tally says, in a sentence: "Last 24 hours: 1 204 valid, 17 refused",
    /// and by outcome, which refusals those were.
    pub(super) fn summary(&self) -> String {
        let mut text = format!(
            "{}: {} valid, {} refused",
            self.range.title(),
            grouped(self.valid()),
            grouped(self.refused())
        );
        if self.split == Split::ByOutcome && self.refused() > 0 {
            let refusals: Vec<String> = self
                .split
                .series()
                .iter()
                .zip(self.totals())
                .skip(1)
                .filter(|(_, total)| *total > 0)
                .map(|(series, total)| format!("{} {}", grouped(total), series.label))
                .collect();
            text.push_str(&format!(" ({})", refusals.join(", ")));
        }
        text
    }

    /// The stacked bars of the tally in a box of `width` by `height` (the plot area, from
    /// `left`, `top`), each bucket's height scaled to `ceiling`. A part with any requests is at
    /// least `least` high, so a single refusal among thousands stays visible.
    fn bars(&self, plot: Plot, ceiling: u64, least: f64) -> Vec<Bar> {
        let series = self.split.series();
        let slot = plot.width / self.counts.len() as f64;
        let gap = (slot * 0.2).min(4.0);
        let mut bars = Vec::new();
        for (index, bucket) in self.counts.iter().enumerate() {
            let mut base = plot.top + plot.height;
            for (count, series) in bucket.iter().zip(&series) {
                if *count == 0 {
                    continue;
                }
                let height = (*count as f64 / ceiling as f64 * plot.height).max(least);
                let y = (base - height).max(plot.top);
                bars.push(Bar {
                    x: tenth(plot.left + index as f64 * slot + gap / 2.0),
                    y: tenth(y),
                    width: tenth(slot - gap),
                    height: tenth(base - y),
                    colour: series.colour,
                });
                base = y;
            }
        }
        bars
    }

    /// The most requests of one bucket.
    fn peak(&self) -> u64 {
        self.counts
            .iter()
            .map(|bucket| bucket.iter().fold(0u64, |sum, n| sum.saturating_add(*n)))
            .max()
            .unwrap_or(0)
    }

    /// The tally as a chart with its axes, legend and numbers.
    pub(super) fn chart(&self) -> Chart {
        const WIDTH: f64 = 720.0;
        const HEIGHT: f64 = 200.0;
        let plot = Plot {
            left: 52.0,
            top: 10.0,
            width: WIDTH - 52.0 - 28.0,
            height: HEIGHT - 10.0 - 26.0,
        };
        let ceiling = nice_ceiling(self.peak());
        // Without requests there is no scale to show: the zero line alone.
        let mut grid = vec![0];
        if self.peak() > 0 {
            if ceiling >= 2 && ceiling.is_multiple_of(2) {
                grid.push(ceiling / 2);
            }
            grid.push(ceiling);
        }
        let slot = plot.width / self.counts.len() as f64;
        let series = self.split.series();
        let totals = self.totals();
        Chart {
            summary: self.summary(),
            width: WIDTH,
            height: HEIGHT,
            plot_left: plot.left,
            plot_right: plot.left + plot.width,
            baseline: plot.top + plot.height,
            grid: grid
                .into_iter()
                .map(|value| GridLine {
                    y: tenth(plot.top + plot.height - value as f64 / ceiling as f64 * plot.height),
                    label: grouped(value),
                })
                .collect(),
            ticks: (0..self.counts.len())
                .filter_map(|index| {
                    self.range.tick(index).map(|label| Tick {
                        x: tenth(plot.left + (index as f64 + 0.5) * slot),
                        label,
                    })
                })
                .collect(),
            bars: self.bars(plot, ceiling, 1.0),
            empty: self.peak() == 0,
            middle: tenth(plot.left + plot.width / 2.0),
            legend: series
                .iter()
                .zip(&totals)
                .map(|(series, total)| LegendEntry {
                    key: series.key,
                    label: capitalised(series.label),
                    colour: series.colour,
                    total: grouped(*total),
                })
                .collect(),
            unit: match self.range.granularity {
                Granularity::Minute => "minute",
                Granularity::Hour => "hour",
                Granularity::Day => "day",
            },
            headings: series.iter().map(|s| capitalised(s.label)).collect(),
            keys: series.iter().map(|s| s.key).collect(),
            rows: self
                .counts
                .iter()
                .enumerate()
                .filter(|(_, bucket)| bucket.iter().any(|n| *n > 0))
                .map(|(index, bucket)| NumbersRow {
                    start: self.range.label(self.range.start(index)),
                    counts: bucket.iter().map(|n| grouped(*n)).collect(),
                    total: grouped(bucket.iter().fold(0u64, |sum, n| sum.saturating_add(*n))),
                })
                .collect(),
        }
    }

    /// The tally as a sparkline for a table cell, with its totals as text beside it.
    pub(super) fn sparkline(&self) -> Sparkline {
        const HEIGHT: f64 = 24.0;
        // Four pixels a bucket: a day of hours is 96 wide.
        let width = (self.counts.len() as f64 * 4.0).clamp(48.0, 240.0);
        let plot = Plot {
            left: 0.0,
            top: 1.0,
            width,
            height: HEIGHT - 2.0,
        };
        Sparkline {
            summary: self.summary(),
            width,
            height: HEIGHT,
            baseline: HEIGHT - 0.5,
            bars: self.bars(plot, self.peak().max(1), 1.0),
            valid: grouped(self.valid()),
            refused: grouped(self.refused()),
        }
    }
}

/// Where the bars go inside the picture.
#[derive(Debug, Clone, Copy)]
struct Plot {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
}

/// One part of one bucket's bar.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Bar {
    x: f64,
    y: f64,
    width: f64,
    height: f64,
    colour: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct GridLine {
    y: f64,
    label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Tick {
    x: f64,
    label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct LegendEntry {
    key: &'static str,
    label: String,
    colour: &'static str,
    total: String,
}

/// A bucket with requests, as a row of the numbers.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct NumbersRow {
    start: String,
    counts: Vec<String>,
    total: String,
}

/// A chart for a page of its own: bars on axes, the legend with each part's total, and the
/// numbers of every bucket with requests in a table that opens on demand.
#[derive(Debug, Template)]
#[template(path = "console/chart.html")]
pub(super) struct Chart {
    /// The accessible name: what the chart shows, in a sentence.
    summary: String,
    width: f64,
    height: f64,
    plot_left: f64,
    plot_right: f64,
    baseline: f64,
    grid: Vec<GridLine>,
    ticks: Vec<Tick>,
    bars: Vec<Bar>,
    /// No requests at all: the chart says so.
    empty: bool,
    middle: f64,
    legend: Vec<LegendEntry>,
    /// `hour` or `day`.
    unit: &'static str,
    headings: Vec<String>,
    keys: Vec<&'static str>,
    rows: Vec<NumbersRow>,
}

/// A small chart for a table cell: bars only, with the totals as text beside it.
#[derive(Debug, Template)]
#[template(path = "console/sparkline.html")]
pub(super) struct Sparkline {
    summary: String,
    width: f64,
    height: f64,
    baseline: f64,
    bars: Vec<Bar>,
    valid: String,
    refused: String,
}

/// The smallest of 1, 2, 5, 10, 20, 50, … at or above `peak`: the top of a chart's scale, so
/// its grid lines fall on round numbers. Never zero, so nothing divides by it.
fn nice_ceiling(peak: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for factor in [1, 2, 5] {
            let candidate = step.saturating_mul(factor);
            if candidate >= peak {
                return candidate;
            }
        }
        if step > u64::MAX / 10 {
            return peak;
        }
        step *= 10;
    }
}

/// A coordinate to a tenth of a pixel: short markup, and the same text on every run.
fn tenth(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// A count with its thousands apart ("1 204"), by a narrow no-break space, so a number never
/// breaks across lines.
pub(super) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut text = String::with_capacity(digits.len() + digits.len() / 3 * 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            text.push('\u{202F}');
        }
        text.push(digit);
    }
    text
}

fn capitalised(text: &str) -> String {
    super::frame::capitalised(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use UsageOutcome::*;

    /// 10:00 UTC on a day, plus some seconds.
    const TEN: i64 = 1_795_000_000 / 86_400 * 86_400 + 10 * 3600;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix(seconds)
    }

    fn hours(n: usize) -> Range {
        Range::ending_at(at(TEN + 1234), Granularity::Hour, n)
    }

    #[test]
    fn a_range_ends_with_the_bucket_of_now_and_starts_whole() {
        let day = Period::Day.range(at(TEN + 1234));
        assert_eq!(day.buckets, 24);
        assert_eq!(day.since, at(TEN - 23 * 3600));
        assert_eq!(day.until(), at(TEN + 3600));
        let week = Period::Week.range(at(TEN + 1234));
        assert_eq!((week.buckets, week.granularity), (168, Granularity::Hour));
        assert_eq!(week.until(), at(TEN + 3600));
        let month = Period::Month.range(at(TEN + 1234));
        assert_eq!((month.buckets, month.granularity), (30, Granularity::Day));
        assert_eq!(month.until(), at(TEN - 10 * 3600 + 86_400));
        assert_eq!(month.since, at(TEN - 10 * 3600 - 29 * 86_400));
        assert_eq!(
            [day.title(), week.title(), month.title()],
            ["Last 24 hours", "Last 7 days", "Last 30 days"]
        );
    }

    #[test]
    fn periods_are_read_from_the_address_and_an_unknown_one_is_a_sentence() {
        assert_eq!(Period::parse(None), Ok(Period::Day));
        assert_eq!(Period::parse(Some("")), Ok(Period::Day));
        assert_eq!(Period::parse(Some("7d")), Ok(Period::Week));
        assert_eq!(Period::parse(Some("30d")), Ok(Period::Month));
        let message = Period::parse(Some("1y")).unwrap_err();
        assert!(
            message.contains("“1y”") && message.contains("7 days"),
            "{message}"
        );
        let long = "x".repeat(500);
        assert!(Period::parse(Some(&long)).unwrap_err().len() < 200);
    }

    #[test]
    fn every_bucket_of_the_range_is_filled_oldest_first() {
        let range = hours(4);
        let tally = Tally::new(
            range,
            Split::ValidRefused,
            [
                (at(TEN), Valid, 5),
                (at(TEN), Forbidden, 2),
                (at(TEN), RateLimited, 1),
                (at(TEN - 2 * 3600), Valid, 3),
                (at(TEN - 2 * 3600), Valid, 4),
                // Outside the range, either side.
                (at(TEN - 4 * 3600), Valid, 100),
                (at(TEN + 3600), Valid, 100),
            ],
        );
        assert_eq!(
            tally.counts,
            vec![vec![0, 0], vec![7, 0], vec![0, 0], vec![5, 3]]
        );
        assert_eq!((tally.valid(), tally.refused()), (12, 3));
        assert_eq!(tally.summary(), "Last 4 hours: 12 valid, 3 refused");

        let by_outcome = Tally::new(
            range,
            Split::ByOutcome,
            [(at(TEN), Forbidden, 2), (at(TEN), RateLimited, 1)],
        );
        assert_eq!(by_outcome.totals(), vec![0, 0, 0, 0, 2, 1, 0]);
        assert_eq!(
            by_outcome.summary(),
            "Last 4 hours: 0 valid, 3 refused (2 forbidden, 1 rate limited)"
        );
        // The numbers list the buckets with requests, oldest first, every part a column.
        let chart = Tally::new(
            range,
            Split::ValidRefused,
            [(at(TEN), Valid, 5), (at(TEN - 2 * 3600), Forbidden, 1)],
        )
        .chart();
        let starts: Vec<&str> = chart.rows.iter().map(|row| row.start.as_str()).collect();
        assert_eq!(starts.len(), 2);
        assert!(starts[0] < starts[1], "{starts:?}");
        assert_eq!(chart.rows[1].counts, ["5", "0"]);
        assert_eq!(chart.rows[0].total, "1");
    }

    #[test]
    fn bars_stand_in_their_slots_scaled_to_a_round_top() {
        let range = hours(4);
        let tally = Tally::new(
            range,
            Split::ValidRefused,
            [
                (at(TEN), Valid, 30),
                (at(TEN), Forbidden, 10),
                (at(TEN - 3 * 3600), Valid, 20),
            ],
        );
        let chart = tally.chart();
        // A peak of 40 is drawn on a scale to 50, with a line at 25.
        let labels: Vec<&str> = chart.grid.iter().map(|g| g.label.as_str()).collect();
        assert_eq!(labels, ["0", "25", "50"]);
        assert_eq!(chart.bars.len(), 3);
        let (first, valid, refused) = (&chart.bars[0], &chart.bars[1], &chart.bars[2]);
        assert!(first.x < valid.x, "oldest left");
        assert_eq!(valid.x, refused.x);
        assert_eq!(valid.colour, "#0072B2");
        assert_eq!(refused.colour, "#D55E00");
        // Heights in proportion, the refused part on top of the valid one.
        assert!((valid.height / refused.height - 3.0).abs() < 0.05);
        assert!((tenth(refused.y + refused.height) - valid.y).abs() < 0.15);
        assert!((tenth(valid.y + valid.height) - chart.baseline).abs() < 0.15);
        assert!(chart.bars.iter().all(|bar| bar.y >= 10.0
            && bar.x >= chart.plot_left
            && bar.x + bar.width <= chart.plot_right + 0.1));
    }

    #[test]
    fn no_requests_draw_a_flat_chart_that_says_so() {
        for range in [hours(24), Period::Month.range(at(TEN))] {
            let tally = Tally::new(range, Split::ByOutcome, []);
            let chart = tally.chart();
            assert!(chart.bars.is_empty() && chart.empty && chart.rows.is_empty());
            let labels: Vec<&str> = chart.grid.iter().map(|g| g.label.as_str()).collect();
            assert_eq!(labels, ["0"]);
            assert_eq!(chart.grid[0].y, chart.baseline);
            assert!(chart.grid.iter().all(|g| g.y.is_finite()));
            let html = chart.render().unwrap();
            assert!(html.contains("No requests in this period"), "{html}");
            assert!(!html.contains("NaN") && !html.contains("inf"), "{html}");
            let spark = tally.sparkline();
            assert!(spark.bars.is_empty());
            assert!(!spark.render().unwrap().contains("NaN"));
        }
    }

    #[test]
    fn a_lone_request_among_thousands_is_still_seen() {
        let tally = Tally::new(
            hours(2),
            Split::ValidRefused,
            [(at(TEN), Valid, 100_000), (at(TEN), Expired, 1)],
        );
        let chart = tally.chart();
        assert_eq!(chart.bars.len(), 2);
        assert!(chart.bars[1].height >= 1.0);
        assert_eq!(chart.legend[0].total, "100\u{202F}000");
        assert_eq!(
            tally.summary(),
            "Last 2 hours: 100\u{202F}000 valid, 1 refused"
        );
    }

    #[test]
    fn the_chart_is_one_accessible_picture_with_its_numbers_as_text() {
        let tally = Tally::new(
            hours(24),
            Split::ByOutcome,
            [
                (at(TEN), Valid, 1204),
                (at(TEN), Forbidden, 12),
                (at(TEN - 3600), RateLimited, 5),
            ],
        );
        let html = tally.chart().render().unwrap();
        let summary =
            "Last 24 hours: 1\u{202F}204 valid, 17 refused (12 forbidden, 5 rate limited)";
        assert!(
            html.contains(&format!("role=\"img\" aria-label=\"{summary}\"")),
            "{html}"
        );
        assert!(
            html.contains(&format!("<title>{summary}</title>")),
            "{html}"
        );
        // Each outcome in the legend, with its colour and its total, zero or not.
        for (key, colour, total) in [
            ("valid", "#0072B2", "1\u{202F}204"),
            ("forbidden", "#D55E00", "12"),
            ("rate_limited", "#56B4E9", "5"),
            ("quota_exceeded", "#F0E442", "0"),
        ] {
            let entry = html
                .split(&format!("<li data-series=\"{key}\">"))
                .nth(1)
                .unwrap_or_else(|| panic!("{key} in the legend: {html}"));
            let entry = entry.split("</li>").next().unwrap();
            assert!(entry.contains(&format!("fill=\"{colour}\"")), "{entry}");
            assert!(
                entry.contains(&format!("<span class=\"count\">{total}</span>")),
                "{entry}"
            );
        }
        // The numbers, as a table of the two hours with requests.
        assert!(html.contains("<details"));
        assert_eq!(html.matches("<tr class=\"bucket\">").count(), 2, "{html}");
        let ticks = ["00:00", "06:00", "12:00", "18:00"];
        assert!(
            ticks.iter().filter(|t| html.contains(*t)).count() >= 3,
            "{html}"
        );
    }

    #[test]
    fn the_text_of_a_chart_is_escaped() {
        // A period a visitor typed reaches a page only through its message; a chart's text is
        // its own, but a label carrying markup must still come out as text.
        let mut chart = Tally::new(hours(2), Split::ValidRefused, [(at(TEN), Valid, 1)]).chart();
        chart.summary = "<script>alert(1)</script> & \"quoted\"".to_owned();
        chart.legend[0].label = "<b>valid</b>".to_owned();
        let html = chart.render().unwrap();
        assert!(
            !html.contains("<script>") && !html.contains("<b>"),
            "{html}"
        );
        assert!(
            html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"),
            "{html}"
        );
        assert!(!html.contains("\"quoted\""), "{html}");
        let mut spark = Tally::new(hours(2), Split::ValidRefused, []).sparkline();
        spark.summary = "\"><svg onload=alert(1)>".to_owned();
        let html = spark.render().unwrap();
        assert!(!html.contains("\"><svg onload"), "{html}");
    }

    #[test]
    fn a_sparkline_shows_its_totals_as_text() {
        let tally = Tally::new(
            hours(24),
            Split::ValidRefused,
            [(at(TEN), Valid, 7), (at(TEN - 5 * 3600), Revoked, 2)],
        );
        let spark = tally.sparkline();
        assert_eq!((spark.width, spark.height), (96.0, 24.0));
        assert_eq!(spark.bars.len(), 2);
        // Scaled to its own peak: the tallest bar fills the height.
        let tallest = spark.bars.iter().map(|b| b.height).fold(0.0, f64::max);
        assert!((tallest - 22.0).abs() < 0.15, "{tallest}");
        let html = spark.render().unwrap();
        assert!(
            html.contains("<span class=\"n-valid\">7</span> valid"),
            "{html}"
        );
        assert!(
            html.contains("<span class=\"n-refused\">2</span> refused"),
            "{html}"
        );
        assert!(
            html.contains("aria-label=\"Last 24 hours: 7 valid, 2 refused\""),
            "{html}"
        );
    }

    #[test]
    fn counts_are_grouped_by_thousands_and_scales_are_round() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1204), "1\u{202F}204");
        assert_eq!(grouped(1_234_567), "1\u{202F}234\u{202F}567");
        assert_eq!(
            [0, 1, 2, 3, 6, 10, 11, 40, 51, 999, 1001].map(nice_ceiling),
            [1, 1, 2, 5, 10, 10, 20, 50, 100, 1000, 2000]
        );
        assert_eq!(nice_ceiling(u64::MAX), u64::MAX);
    }
}
