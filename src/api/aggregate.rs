//! The long view of a check: per-day aggregates of its runs for 31 days, and per-hour counts for
//! the last day, kept in its status, so in the HealthCheck in a cluster and in the state journal
//! locally (no database), and the uptime they give over 24 h, 7 d and 30 d. Uptime is the share
//! of runs that passed, as Gatus counts it; the time the check's verdict spent failing is kept
//! beside it. Small by design: a day is one object of a few numbers and a sparse histogram.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Timelike, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{HealthCheckStatus, Outcome};

/// Days kept, today included.
pub const DAYS_KEPT: i64 = 31;
/// Hours kept, this one included.
pub const HOURS_KEPT: i64 = 25;

/// Upper bounds, in ms, of the duration buckets a day's median is read from: steps of 1.5 from
/// 10 ms to about 72 minutes (the last bucket also holds anything longer).
pub fn bucket_bound(i: usize) -> i64 {
    (10.0 * 1.5f64.powi(i as i32)).round() as i64
}
pub const BUCKETS: usize = 34;

fn bucket_of(ms: i64) -> usize {
    (0..BUCKETS)
        .find(|&i| ms <= bucket_bound(i))
        .unwrap_or(BUCKETS - 1)
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One UTC day of a check's runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct DayStats {
    /// The day, `YYYY-MM-DD` (UTC).
    // Held as a date (4 bytes, compared as a number), written as the text.
    #[schemars(with = "String")]
    pub day: NaiveDate,
    // Counts are u32 in memory (a run a second is 86,400 a day) and int64 in the schema: 10,000
    // checks hold 31 days each, so the width of these fields is most of probity's memory.
    #[schemars(with = "i64")]
    pub runs: u32,
    #[schemars(with = "i64")]
    pub successes: u32,
    /// Runs that ended otherwise, by outcome.
    #[serde(skip_serializing_if = "is_zero")]
    #[schemars(with = "i64")]
    pub failures: u32,
    #[serde(skip_serializing_if = "is_zero")]
    #[schemars(with = "i64")]
    pub timeouts: u32,
    #[serde(skip_serializing_if = "is_zero")]
    #[schemars(with = "i64")]
    pub start_failures: u32,
    #[serde(skip_serializing_if = "is_zero")]
    #[schemars(with = "i64")]
    pub crashes: u32,
    /// Run durations: the median (from the histogram: its bucket's upper bound, at most the
    /// longest) and the longest, in milliseconds (at most 49 days).
    #[schemars(with = "i64")]
    pub duration_p50_ms: u32,
    #[schemars(with = "i64")]
    pub duration_max_ms: u32,
    /// Seconds of the day the check's published verdict was failing.
    #[serde(skip_serializing_if = "is_zero")]
    #[schemars(with = "i64")]
    pub failing_seconds: u32,
    /// The run durations' histogram, sparse: `[bucket, count]` pairs in bucket order; bucket `i`
    /// holds durations up to 10 ms x 1.5^i.
    #[schemars(with = "Vec<[i64; 2]>")]
    pub durations: Durations,
}

/// A day's sparse duration histogram, `[bucket, count]` pairs in bucket order as written; held
/// as one `u32` a pair (the bucket in the top 8 bits, the count in the low 24: 16.7 million
/// runs a day, where a run a second is 86,400) in a boxed slice. 10,000 checks keep 31 of
/// these each: as `Vec<[i64; 2]>` they were a quarter of the aggregates' memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durations(Box<[u32]>);

const COUNT_BITS: u32 = 24;
const COUNT_MAX: u32 = (1 << COUNT_BITS) - 1;

impl Durations {
    /// The `(bucket, count)` pairs, in bucket order.
    pub fn pairs(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.0.iter().map(|p| (p >> COUNT_BITS, p & COUNT_MAX))
    }

    /// One more run in `bucket`.
    fn add(&mut self, bucket: u32) {
        match self.0.binary_search_by_key(&bucket, |p| p >> COUNT_BITS) {
            Ok(i) => {
                if self.0[i] & COUNT_MAX < COUNT_MAX {
                    self.0[i] += 1;
                }
            }
            Err(i) => {
                // A new bucket: rare (a day's runs fall in a few), so the slice is rebuilt.
                let mut v = std::mem::take(&mut self.0).into_vec();
                v.insert(i, (bucket << COUNT_BITS) | 1);
                self.0 = v.into_boxed_slice();
            }
        }
    }
}

impl From<Vec<[u32; 2]>> for Durations {
    fn from(pairs: Vec<[u32; 2]>) -> Self {
        let mut packed: Vec<u32> = pairs
            .into_iter()
            .filter(|[b, _]| *b < (1 << (32 - COUNT_BITS)))
            .map(|[b, n]| (b << COUNT_BITS) | n.min(COUNT_MAX))
            .collect();
        packed.sort_unstable_by_key(|p| p >> COUNT_BITS);
        packed.dedup_by_key(|p| *p >> COUNT_BITS);
        Durations(packed.into_boxed_slice())
    }
}

impl Serialize for Durations {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.pairs().map(|(b, n)| [b, n]))
    }
}

impl<'de> Deserialize<'de> for Durations {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<[u32; 2]>::deserialize(d).map(Durations::from)
    }
}

/// One UTC hour of a check's runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct HourStats {
    /// The hour's start, unix seconds.
    pub hour_unix: i64,
    #[schemars(with = "i64")]
    pub runs: u32,
    #[schemars(with = "i64")]
    pub successes: u32,
}

/// The share of runs that passed, over three windows; None where no run ended in the window.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct Uptime {
    #[serde(rename = "24h")]
    pub day: Option<f64>,
    #[serde(rename = "7d")]
    pub week: Option<f64>,
    #[serde(rename = "30d")]
    pub month: Option<f64>,
}

fn day_key(t: DateTime<Utc>) -> NaiveDate {
    t.date_naive()
}

fn day_start(day: NaiveDate) -> Option<DateTime<Utc>> {
    day.and_hms_opt(0, 0, 0).map(|t| t.and_utc())
}

fn hour_start(t: DateTime<Utc>) -> i64 {
    t.with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(t)
        .timestamp()
}

/// The entry of `day`, created (newest first) when missing.
fn day_mut(days: &mut Vec<DayStats>, day: NaiveDate) -> &mut DayStats {
    match days.iter().position(|d| d.day <= day) {
        Some(i) if days[i].day == day => &mut days[i],
        pos => {
            let i = pos.unwrap_or(days.len());
            days.insert(
                i,
                DayStats {
                    day,
                    ..DayStats::default()
                },
            );
            &mut days[i]
        }
    }
}

impl DayStats {
    fn add_duration(&mut self, ms: i64) {
        let b = bucket_of(ms) as u32;
        let ms = ms.clamp(0, i64::from(u32::MAX)) as u32;
        self.durations.add(b);
        self.duration_max_ms = self.duration_max_ms.max(ms);
        let total: u64 = self.durations.pairs().map(|(_, n)| u64::from(n)).sum();
        let mut seen = 0;
        for (b, n) in self.durations.pairs() {
            seen += u64::from(n);
            if seen * 2 >= total {
                let bound = bucket_bound(b as usize).clamp(0, i64::from(u32::MAX)) as u32;
                self.duration_p50_ms = bound.min(self.duration_max_ms);
                break;
            }
        }
    }
}

/// Adds the seconds from `from` to `to` to the days they fall on.
fn add_failing(days: &mut Vec<DayStats>, from: DateTime<Utc>, to: DateTime<Utc>) {
    let mut t = from;
    while t < to {
        let next_day = day_start(day_key(t)).unwrap_or(t) + Duration::days(1);
        let end = next_day.min(to);
        let secs = (end - t).num_seconds().max(0);
        let d = day_mut(days, day_key(t));
        d.failing_seconds = d
            .failing_seconds
            .saturating_add(secs.clamp(0, i64::from(u32::MAX)) as u32);
        t = end;
    }
}

/// Records a run that ended at `end` after `duration` with `outcome`, and the time the verdict
/// spent failing up to `end` (`was_failing`: the verdict before this run). Call before the
/// verdict is updated for this run; [`settle`] after.
pub fn record(
    st: &mut HealthCheckStatus,
    outcome: Outcome,
    end: DateTime<Utc>,
    duration: std::time::Duration,
) {
    if let Some(since) = st
        .failing_accrued_unix
        .and_then(|t| Utc.timestamp_opt(t, 0).single())
    {
        add_failing(&mut st.days, since, end);
        st.failing_accrued_unix = Some(end.timestamp());
    }
    let days_before = st.days.len();
    let d = day_mut(&mut st.days, day_key(end));
    d.runs += 1;
    match outcome {
        Outcome::Success => d.successes += 1,
        Outcome::Failure => d.failures += 1,
        Outcome::Timeout => d.timeouts += 1,
        Outcome::StartFailure => d.start_failures += 1,
        Outcome::Crash => d.crashes += 1,
    }
    d.add_duration(duration.as_millis().min(i64::MAX as u128) as i64);
    let hour = hour_start(end);
    match st.hours.iter_mut().find(|h| h.hour_unix == hour) {
        Some(h) => {
            h.runs += 1;
            h.successes += u32::from(outcome.is_success());
        }
        None => {
            st.hours.insert(
                0,
                HourStats {
                    hour_unix: hour,
                    runs: 1,
                    successes: u32::from(outcome.is_success()),
                },
            );
            // Entries age out only when a new one starts: at most once an hour per check,
            // not on every run (1,000 runs a second at 10,000 checks).
            prune(st, end);
        }
    }
    if st.days.len() != days_before {
        prune(st, end);
    }
}

/// After the verdict of a run ending at `end` is known: failing time starts counting when the
/// verdict turned to failing, and stops when it passes again.
pub fn settle(st: &mut HealthCheckStatus, end: DateTime<Utc>) {
    st.failing_accrued_unix = match (st.ok, st.failing_accrued_unix) {
        (true, _) => None,
        (false, Some(t)) => Some(t),
        (false, None) => Some(end.timestamp()),
    };
}

fn prune(st: &mut HealthCheckStatus, now: DateTime<Utc>) {
    let oldest_day = day_key(now - Duration::days(DAYS_KEPT - 1));
    st.days.retain(|d| d.day >= oldest_day);
    let oldest_hour = hour_start(now) - (HOURS_KEPT - 1) * 3600;
    st.hours.retain(|h| h.hour_unix >= oldest_hour);
}

fn ratio(runs: u64, successes: u64) -> Option<f64> {
    (runs > 0).then(|| successes as f64 / runs as f64)
}

/// The windows' starts at one moment, worked out once: a status page or a scrape judges every
/// check against the same windows, without formatting dates per check.
#[derive(Debug, Clone)]
pub struct Windows {
    /// The instant the windows end, unix seconds: what else a document shows as of now
    /// (flapping) is read at the same instant.
    pub now_unix: i64,
    since_hour: i64,
    since_week: NaiveDate,
    since_month: NaiveDate,
}

impl Windows {
    /// At `now`: the last 24 hours (whole hours, this one included), the last 7 and 30 days
    /// (whole UTC days, today included).
    pub fn at(now: DateTime<Utc>) -> Self {
        Windows {
            now_unix: now.timestamp(),
            since_hour: hour_start(now) - 23 * 3600,
            since_week: day_key(now - Duration::days(6)),
            since_month: day_key(now - Duration::days(29)),
        }
    }

    /// Names the hour these windows were made in: uptime read at two instants of one hour is
    /// the same (day boundaries are hour boundaries).
    pub fn hour_stamp(&self) -> u64 {
        self.since_hour as u64
    }

    pub fn uptime(&self, st: &HealthCheckStatus) -> Uptime {
        let (runs, ok) = st
            .hours
            .iter()
            .filter(|h| h.hour_unix >= self.since_hour)
            .fold((0u64, 0u64), |(r, s), h| {
                (r + u64::from(h.runs), s + u64::from(h.successes))
            });
        let days = |since: NaiveDate| {
            let (r, s) = st
                .days
                .iter()
                .take_while(|d| d.day >= since)
                .fold((0u64, 0u64), |(r, s), d| {
                    (r + u64::from(d.runs), s + u64::from(d.successes))
                });
            ratio(r, s)
        };
        Uptime {
            day: ratio(runs, ok),
            week: days(self.since_week),
            month: days(self.since_month),
        }
    }
}

/// Uptime at `now` (see [`Windows::at`]).
pub fn uptime(st: &HealthCheckStatus, now: DateTime<Utc>) -> Uptime {
    Windows::at(now).uptime(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn run(st: &mut HealthCheckStatus, end: &str, outcome: Outcome, ms: u64) {
        let end = at(end);
        record(st, outcome, end, std::time::Duration::from_millis(ms));
        st.ok = outcome.is_success();
        settle(st, end);
    }

    #[test]
    fn durations_are_written_as_pairs_and_read_back_sorted_and_bounded() {
        let d: Durations = serde_json::from_str("[[9, 237], [8, 1200], [33, 3], [8, 5]]").unwrap();
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            "[[8,1200],[9,237],[33,3]]"
        );
        let mut big = Durations::from(vec![[2, COUNT_MAX - 1]]);
        big.add(2);
        big.add(2);
        assert_eq!(
            big.pairs().collect::<Vec<_>>(),
            [(2, COUNT_MAX)],
            "saturates, never wraps"
        );
        big.add(0);
        assert_eq!(big.pairs().map(|(b, _)| b).collect::<Vec<_>>(), [0, 2]);
    }

    #[test]
    fn days_count_runs_by_outcome_with_the_median_and_longest_duration() {
        let mut st = HealthCheckStatus::default();
        for (i, ms) in [100, 120, 130, 900, 40_000].iter().enumerate() {
            let outcome = if i == 4 {
                Outcome::Timeout
            } else {
                Outcome::Success
            };
            run(&mut st, &format!("2026-12-03T10:0{i}:00Z"), outcome, *ms);
        }
        run(&mut st, "2026-12-02T23:59:00Z", Outcome::Crash, 5);
        assert_eq!(st.days.len(), 2);
        let today = &st.days[0];
        assert_eq!(today.day.to_string(), "2026-12-03");
        assert_eq!((today.runs, today.successes, today.timeouts), (5, 4, 1));
        // The median is 130 ms; its bucket's bound is the nearest above it.
        assert_eq!(
            i64::from(today.duration_p50_ms),
            bucket_bound(bucket_of(130))
        );
        assert!(
            (130..=200).contains(&today.duration_p50_ms),
            "{}",
            today.duration_p50_ms
        );
        assert_eq!(today.duration_max_ms, 40_000);
        assert_eq!(
            (st.days[1].day.to_string().as_str(), st.days[1].crashes),
            ("2026-12-02", 1)
        );
    }

    #[test]
    fn failing_time_is_counted_from_the_verdict_turning_to_its_recovery_across_midnight() {
        let mut st = HealthCheckStatus::default();
        run(&mut st, "2026-12-02T23:00:00Z", Outcome::Success, 10);
        run(&mut st, "2026-12-02T23:30:00Z", Outcome::Failure, 10);
        run(&mut st, "2026-12-03T00:10:00Z", Outcome::Failure, 10);
        run(&mut st, "2026-12-03T00:20:00Z", Outcome::Success, 10);
        let day = |d: &str| {
            st.days
                .iter()
                .find(|x| x.day.to_string() == d)
                .unwrap()
                .failing_seconds
        };
        assert_eq!(day("2026-12-02"), 30 * 60);
        assert_eq!(day("2026-12-03"), 20 * 60);
        assert_eq!(st.failing_accrued_unix, None, "recovered");
    }

    #[test]
    fn uptime_over_24_hours_7_and_30_days_and_none_without_runs() {
        let mut st = HealthCheckStatus::default();
        assert_eq!(uptime(&st, at("2026-12-03T12:00:00Z")), Uptime::default());
        // 40 days, one run a day at noon; every fifth fails.
        for d in 0..40 {
            let t = at("2026-10-25T12:00:00Z") + Duration::days(d);
            let outcome = if d % 5 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            record(&mut st, outcome, t, std::time::Duration::from_millis(50));
        }
        // 2026-12-03 is day 39: kept are the 31 days up to it.
        assert_eq!(st.days.len(), 31);
        assert_eq!(st.days.last().unwrap().day.to_string(), "2026-11-03");
        let now = at("2026-12-03T18:00:00Z");
        let u = uptime(&st, now);
        // 24 h: only today's noon run (a success: day 39).
        assert_eq!(u.day, Some(1.0));
        // 7 days: days 33..=39, day 35 failed.
        assert_eq!(u.week, Some(6.0 / 7.0));
        // 30 days: days 10..=39, six failed (10, 15, 20, 25, 30, 35).
        assert_eq!(u.month, Some(24.0 / 30.0));
        assert!(st.hours.len() <= HOURS_KEPT as usize);
    }

    /// What 30 days of a check that runs every minute costs its status: far below etcd's object
    /// limit (1.5 MiB), so the HealthCheck carries it.
    #[test]
    fn thirty_days_of_a_check_every_minute_stay_small() {
        let mut st = HealthCheckStatus::default();
        let start = at("2026-11-03T00:00:00Z");
        for m in 0..(30 * 24 * 60) {
            let t = start + Duration::minutes(m);
            let outcome = if m % 97 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            // Durations spread over a few buckets, as a real check's do.
            record(
                &mut st,
                outcome,
                t,
                std::time::Duration::from_millis(200 + (m % 13) as u64 * 100),
            );
            st.ok = outcome.is_success();
            settle(&mut st, t);
        }
        let days = serde_json::to_vec(&st.days).unwrap().len();
        let hours = serde_json::to_vec(&st.hours).unwrap().len();
        eprintln!("30 days of aggregates: {days} bytes of days, {hours} bytes of hours");
        assert_eq!(st.days.len(), 30);
        assert_eq!(st.days.iter().map(|d| d.runs).sum::<u32>(), 30 * 24 * 60);
        assert!(days + hours < 12 * 1024, "{days} + {hours} bytes");
    }
}
