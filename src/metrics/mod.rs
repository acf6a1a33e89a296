//! Every metric family, in one place. Kuberhealthy's names and labels, with real semantics: state
//! is read from the board at scrape time (so a deleted check's series go with it), the
//! run-duration histogram is a real cumulative histogram, and label values are escaped and the
//! `error` label bounded.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeLabelValue, EncodeMetric,
    LabelSetEncoder, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

mod own;
mod text;

use own::OwnMetrics;
pub use own::{ConnectionEnd, Dropped};

use text::TextFormat;

use crate::api::{CheckKey, ProbeKind, TimingName};
use crate::engine::{Board, Finished, Observer};

/// Kuberhealthy v3's run-duration buckets, in seconds.
const RUN_BUCKETS: [f64; 7] = [1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
const PROBE_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// A warm request takes milliseconds; a cold start, seconds to minutes (image pulls).
const LATENCY_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];
const LAG_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Leave the `error` label out of `kuberhealthy_check` (KH_PROM_SUPPRESS_ERROR_LABEL).
    pub suppress_error_label: bool,
    /// Longest `error` label value, in characters (KH_PROM_ERROR_LABEL_MAX_LENGTH).
    pub error_label_max_length: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            suppress_error_label: false,
            error_label_max_length: 256,
        }
    }
}

/// A label value written with the exposition format's escapes (`\\`, `\"`, `\n`); the client
/// library writes values verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Escaped(pub String);

impl EncodeLabelValue for Escaped {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        if !self.0.contains(['\\', '"', '\n']) {
            return encoder.write_str(&self.0);
        }
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// `check` and `namespace`, plus `severity`/`category` when the check has those labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CheckLabels {
    pub check: Escaped,
    pub namespace: Escaped,
    pub severity: Option<Escaped>,
    pub category: Option<Escaped>,
}

impl CheckLabels {
    fn of(key: &CheckKey) -> Self {
        CheckLabels {
            check: Escaped(key.name().to_string()),
            namespace: Escaped(key.namespace().to_string()),
            severity: None,
            category: None,
        }
    }
}

impl EncodeLabelSet for CheckLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabel::encode(&("check", &self.check), encoder.encode_label())?;
        EncodeLabel::encode(&("namespace", &self.namespace), encoder.encode_label())?;
        if let Some(s) = &self.severity {
            EncodeLabel::encode(&("severity", s), encoder.encode_label())?;
        }
        if let Some(c) = &self.category {
            EncodeLabel::encode(&("category", c), encoder.encode_label())?;
        }
        Ok(())
    }
}

impl EncodeLabelValue for &Escaped {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        (*self).encode(encoder)
    }
}

/// `kuberhealthy_check`'s labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct StateLabels {
    check: CheckLabels,
    status: &'static str,
    error: Option<Escaped>,
}

impl EncodeLabelSet for StateLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.check.encode(encoder)?;
        EncodeLabel::encode(&("status", self.status), encoder.encode_label())?;
        if let Some(e) = &self.error {
            EncodeLabel::encode(&("error", e), encoder.encode_label())?;
        }
        Ok(())
    }
}

/// `probity_probe_duration_seconds`' labels: the check and the probe method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProbeLabels {
    pub check: CheckLabels,
    pub probe: &'static str,
}

impl EncodeLabelSet for ProbeLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.check.encode(encoder)?;
        EncodeLabel::encode(&("probe", self.probe), encoder.encode_label())
    }
}

/// `probity_knative_latency_seconds`' labels: the check and what was timed (three at most,
/// only for checks that measure).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TimingLabels {
    pub check: CheckLabels,
    pub timing: &'static str,
}

impl EncodeLabelSet for TimingLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.check.encode(encoder)?;
        EncodeLabel::encode(&("timing", self.timing), encoder.encode_label())
    }
}

/// `probity_check_uptime_ratio`'s labels: the check's, and the window (three per check).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UptimeLabels {
    pub check: CheckLabels,
    pub window: &'static str,
}

impl EncodeLabelSet for UptimeLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.check.encode(encoder)?;
        EncodeLabel::encode(&("window", self.window), encoder.encode_label())
    }
}

/// `probity_check_notifications_held`'s labels: the check's, and why its notices are held
/// (`maintenance`, `flapping`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeldLabels {
    pub check: CheckLabels,
    pub reason: &'static str,
}

impl EncodeLabelSet for HeldLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.check.encode(encoder)?;
        EncodeLabel::encode(&("reason", self.reason), encoder.encode_label())
    }
}

/// `probity_check_blocked_by`'s labels: the check's, and the check that blocks it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlockedLabels {
    pub check: CheckLabels,
    pub by: Escaped,
}

impl EncodeLabelSet for BlockedLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.check.encode(encoder)?;
        EncodeLabel::encode(&("by", &self.by), encoder.encode_label())
    }
}

/// `probity_check_failure_cause`'s labels: the check's, and `target` or `runner`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CauseLabels {
    pub check: CheckLabels,
    pub cause: &'static str,
}

impl EncodeLabelSet for CauseLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.check.encode(encoder)?;
        EncodeLabel::encode(&("cause", self.cause), encoder.encode_label())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MasterLabels {
    current_master: Escaped,
}

impl EncodeLabelSet for MasterLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabel::encode(
            &("current_master", &self.current_master),
            encoder.encode_label(),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct ReportLabels {
    pub code: u16,
}

pub struct Metrics {
    registry: Registry,
    last_size: AtomicUsize,
    run_duration: Family<CheckLabels, Histogram>,
    probe_duration: Family<ProbeLabels, Histogram>,
    timings: Family<TimingLabels, Histogram>,
    lag: Histogram,
    reports: Family<ReportLabels, Counter>,
    own: OwnMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(cfg: MetricsConfig, board: Arc<Board>) -> Self {
        let mut registry = Registry::default();
        let run_duration =
            Family::<CheckLabels, Histogram>::new_with_constructor(|| Histogram::new(RUN_BUCKETS));
        registry.register(
            "kuberhealthy_check_run_duration_seconds",
            "Duration of each check run",
            run_duration.clone(),
        );
        let probe_duration = Family::<ProbeLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(PROBE_BUCKETS)
        });
        registry.register(
            "probity_probe_duration_seconds",
            "Duration of each built-in probe, by method",
            probe_duration.clone(),
        );
        let timings = Family::<TimingLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(LATENCY_BUCKETS)
        });
        registry.register(
            "probity_knative_latency_seconds",
            "Requests a Knative probe timed: a cold start to its first byte and until the revision is Active, or a warm request",
            timings.clone(),
        );
        let lag = Histogram::new(LAG_BUCKETS);
        registry.register(
            "probity_scheduler_lag_seconds",
            "How late runs start against their due time",
            lag.clone(),
        );
        let reports = Family::<ReportLabels, Counter>::default();
        registry.register(
            "probity_reports",
            "Reports received, by HTTP status answered",
            reports.clone(),
        );
        let own = OwnMetrics::register(&mut registry);
        registry.register_collector(Box::new(BoardCollector { board, cfg }));
        Metrics {
            registry,
            last_size: AtomicUsize::new(0),
            run_duration,
            probe_duration,
            timings,
            lag,
            reports,
            own,
        }
    }

    pub fn observe_run(&self, key: &CheckKey, duration: Duration) {
        self.run_duration
            .get_or_create(&CheckLabels::of(key))
            .observe(duration.as_secs_f64());
    }

    pub fn observe_probe(&self, key: &CheckKey, kind: ProbeKind, duration: Duration) {
        self.probe_duration
            .get_or_create(&ProbeLabels {
                check: CheckLabels::of(key),
                probe: kind.as_str(),
            })
            .observe(duration.as_secs_f64());
    }

    pub fn observe_timing(&self, key: &CheckKey, name: TimingName, took: Duration) {
        self.timings
            .get_or_create(&TimingLabels {
                check: CheckLabels::of(key),
                timing: name.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn observe_lag(&self, lag: Duration) {
        self.lag.observe(lag.as_secs_f64());
    }

    pub fn count_report(&self, code: u16) {
        self.reports.get_or_create(&ReportLabels { code }).inc();
    }

    /// Drops a deleted check's series, keeping label cardinality bounded by the live checks.
    pub fn forget(&self, key: &CheckKey) {
        self.run_duration.remove(&CheckLabels::of(key));
        for kind in ProbeKind::ALL {
            self.probe_duration.remove(&ProbeLabels {
                check: CheckLabels::of(key),
                probe: kind.as_str(),
            });
        }
        for name in TimingName::ALL {
            self.timings.remove(&TimingLabels {
                check: CheckLabels::of(key),
                timing: name.as_str(),
            });
        }
    }

    /// OpenMetrics text, as the client library writes it.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The classic Prometheus text format (0.0.4), which Kuberhealthy served and `promtool check
    /// metrics` reads. Converted line by line while encoding, so a large scrape is built once.
    pub fn encode_text(&self) -> String {
        // Sized like the last scrape, so a large one is not built by repeated doubling.
        let mut w = TextFormat::with_capacity(self.last_size.load(Ordering::Relaxed) + 4096);
        let _ = prometheus_client::encoding::text::encode(&mut w, &self.registry);
        let out = w.finish();
        self.last_size.store(out.len(), Ordering::Relaxed);
        out
    }
}

/// The engine's runs, as the histograms see them.
impl Observer for Metrics {
    fn started(&self, _key: &CheckKey, lag: Duration) {
        self.observe_lag(lag);
    }

    fn finished(&self, run: &Finished) {
        self.observe_run(&run.key, run.duration);
        if let Some(kind) = run.probe {
            self.observe_probe(&run.key, kind, run.duration);
        }
        for t in &run.result.timings {
            self.observe_timing(&run.key, t.name, Duration::from_millis(t.ms.max(0) as u64));
        }
    }

    fn forgotten(&self, key: &CheckKey) {
        self.forget(key);
    }

    fn deferred(&self, _key: &CheckKey) {
        self.run_deferred();
    }
}

/// Reads the board at scrape time: per-check state is never stale and never outlives its check.
#[derive(Debug)]
struct BoardCollector {
    board: Arc<Board>,
    cfg: MetricsConfig,
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

impl Collector for BoardCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let views = self.board.snapshot();
        let now = chrono::Utc::now().timestamp();
        let cluster_ok =
            views.iter().all(|v| v.effective_ok()) && self.board.source_errors().is_empty();

        let running = ConstGauge::new(1i64);
        let master = MasterLabels {
            current_master: Escaped(self.board.leader()),
        };
        let mut e = encoder.encode_descriptor(
            "kuberhealthy_running",
            "Shows if kuberhealthy is running error free",
            None,
            running.metric_type(),
        )?;
        running.encode(e.encode_family(&master)?)?;

        let state = ConstGauge::new(i64::from(cluster_ok));
        let e = encoder.encode_descriptor(
            "kuberhealthy_cluster_state",
            "Shows the status of the cluster: 1 when every check is OK",
            None,
            state.metric_type(),
        )?;
        state.encode(e)?;

        let leader = ConstGauge::new(i64::from(self.board.is_leader()));
        let e = encoder.encode_descriptor(
            "kuberhealthy_controller_leader",
            "1 when this replica is the leader that schedules checks",
            None,
            leader.metric_type(),
        )?;
        leader.encode(e)?;

        let labels: Vec<CheckLabels> = views
            .iter()
            .map(|v| CheckLabels {
                severity: v.severity.clone().map(Escaped),
                category: v.category.clone().map(Escaped),
                ..CheckLabels::of(&v.key)
            })
            .collect();

        let mut e = encoder.encode_descriptor(
            "kuberhealthy_check",
            "Shows the status of a Kuberhealthy check: 1 OK, 0 failing",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (v, l) in views.iter().zip(&labels) {
            let ok = v.effective_ok();
            let error = (!self.cfg.suppress_error_label).then(|| {
                Escaped(truncate_chars(
                    &v.effective_errors().join(" | "),
                    self.cfg.error_label_max_length,
                ))
            });
            let sl = StateLabels {
                check: l.clone(),
                status: if ok { "1" } else { "0" },
                error,
            };
            ConstGauge::new(i64::from(ok)).encode(e.encode_family(&sl)?)?;
        }

        let mut gauge =
            |name: &str, help: &str, value: &dyn Fn(&crate::engine::CheckView) -> f64| {
                let mut e = encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    prometheus_client::metrics::MetricType::Gauge,
                )?;
                for (v, l) in views.iter().zip(&labels) {
                    ConstGauge::new(value(v)).encode(e.encode_family(l)?)?;
                }
                Ok::<(), std::fmt::Error>(())
            };
        gauge(
            "kuberhealthy_check_duration_seconds",
            "Shows the check run duration of a Kuberhealthy check",
            &|v| v.status.run_duration as f64 / 1e9,
        )?;
        gauge(
            "kuberhealthy_check_consecutive_failures",
            "Consecutive failed runs of the check",
            &|v| v.status.consecutive_failures as f64,
        )?;
        gauge(
            "kuberhealthy_check_seconds_since_success",
            "Seconds since the check last succeeded; -1 if it never has",
            &|v| match v.status.last_ok_unix {
                0 => -1.0,
                t => (now - t).max(0) as f64,
            },
        )?;
        gauge(
            "probity_check_next_run_timestamp_seconds",
            "When the check next runs (unix seconds); 0 when not scheduled",
            &|v| v.status.next_run_unix.unwrap_or(0) as f64,
        )?;

        let mut e = encoder.encode_descriptor(
            "probity_check_uptime_ratio",
            "Share of the check's runs that passed over the window (24h, 7d, 30d); absent without runs in it",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        let windows = crate::api::aggregate::Windows::at(chrono::Utc::now());
        for (v, l) in views.iter().zip(&labels) {
            let u = windows.uptime(&v.status);
            for (window, value) in [("24h", u.day), ("7d", u.week), ("30d", u.month)] {
                if let Some(value) = value {
                    let ul = UptimeLabels {
                        check: l.clone(),
                        window,
                    };
                    ConstGauge::new(value).encode(e.encode_family(&ul)?)?;
                }
            }
        }

        // Present only while held: no series per check in the common case.
        let mut e = encoder.encode_descriptor(
            "probity_check_notifications_held",
            "1 while a check's notifications are held, by reason: maintenance (a window of the alerting configuration, or its probity.dev/maintenance-until annotation), flapping (its verdict changed 5 times within 10m)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (v, l) in views.iter().zip(&labels) {
            let maintenance = self.board.in_maintenance(&v.key);
            let flapping = v.status.flapping(now, crate::api::Flap::DEFAULT);
            for (held, reason) in [(maintenance, "maintenance"), (flapping, "flapping")] {
                if held {
                    let hl = HeldLabels {
                        check: l.clone(),
                        reason,
                    };
                    ConstGauge::new(1i64).encode(e.encode_family(&hl)?)?;
                }
            }
        }

        let mut e = encoder.encode_descriptor(
            "probity_check_failure_cause",
            "1 while a check is failing, labelled with the cause of its newest failed run: target (the check found a fault) or runner (its pod or process could not run or never reported); absent while it passes",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (v, l) in views.iter().zip(&labels) {
            if let Some(c) = v.status.cause() {
                let cl = CauseLabels {
                    check: l.clone(),
                    cause: c.as_str(),
                };
                ConstGauge::new(1i64).encode(e.encode_family(&cl)?)?;
            }
        }

        let mut e = encoder.encode_descriptor(
            "probity_check_blocked_by",
            "1 while a failing check's failure is blocked by a check it depends on (spec.dependsOn) that fails too, labelled by that check (by=\"namespace/name\"); such a failure notifies no one",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (v, l) in views.iter().zip(&labels) {
            for by in self.board.blocked_by(v) {
                let bl = BlockedLabels {
                    check: l.clone(),
                    by: Escaped(by.as_str().to_string()),
                };
                ConstGauge::new(1i64).encode(e.encode_family(&bl)?)?;
            }
        }

        let mut counter =
            |name: &str, help: &str, value: &dyn Fn(&crate::engine::CheckView) -> u64| {
                let mut e = encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    prometheus_client::metrics::MetricType::Counter,
                )?;
                for (v, l) in views.iter().zip(&labels) {
                    ConstCounter::new(value(v)).encode(e.encode_family(l)?)?;
                }
                Ok::<(), std::fmt::Error>(())
            };
        counter(
            "kuberhealthy_check_success",
            "Successful runs of the check",
            &|v| v.status.success_count.max(0) as u64,
        )?;
        counter(
            "kuberhealthy_check_failure",
            "Failed runs of the check",
            &|v| v.status.failure_count.max(0) as u64,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
