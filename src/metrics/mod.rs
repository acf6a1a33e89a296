//! Every metric family, in one place. Kuberhealthy's names and labels, with real semantics: state
//! is read from the board at scrape time (so a deleted check's series go with it), the
//! run-duration histogram is a real cumulative histogram, and label values are escaped and the
//! `error` label bounded.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{
    EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

mod board;
mod own;
mod text;

use own::OwnMetrics;
pub use own::{ConnectionEnd, Dropped};

use text::TextFormat;

use crate::api::{CheckKey, ProbeKind, TimingName};
use crate::engine::{Board, Finished, Observer};

/// Kuberhealthy v3's run-duration buckets, in seconds.
const RUN_BUCKETS: [f64; 7] = [1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];
/// The aggregate's buckets: a probe's milliseconds to a pod's minutes.
const NAMESPACE_BUCKETS: [f64; 11] = [
    0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
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
    /// Per-check histograms, uptime ratios and next run times besides Kuberhealthy's six series
    /// per check (PROBITY_PER_CHECK_DETAIL).
    pub per_check_detail: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            suppress_error_label: false,
            error_label_max_length: 256,
            per_check_detail: false,
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

/// `probity_run_duration_seconds`' labels: the namespace and how its checks run (`pod`, or
/// the probe method). Bounded by namespaces, not checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamespaceLabels {
    pub namespace: Escaped,
    pub runs: &'static str,
}

impl EncodeLabelSet for NamespaceLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabel::encode(&("namespace", &self.namespace), encoder.encode_label())?;
        EncodeLabel::encode(&("runs", self.runs), encoder.encode_label())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct ReportLabels {
    pub code: u16,
}

pub struct Metrics {
    registry: Registry,
    last_size: AtomicUsize,
    per_check_detail: bool,
    by_namespace: Family<NamespaceLabels, Histogram>,
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
        let by_namespace = Family::<NamespaceLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(NAMESPACE_BUCKETS)
        });
        registry.register(
            "probity_run_duration_seconds",
            "Duration of the runs of a namespace's checks, by how they run (pod or the probe method)",
            by_namespace.clone(),
        );
        let run_duration =
            Family::<CheckLabels, Histogram>::new_with_constructor(|| Histogram::new(RUN_BUCKETS));
        let probe_duration = Family::<ProbeLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(PROBE_BUCKETS)
        });
        // Per check, ten and fourteen series: only when asked for.
        if cfg.per_check_detail {
            registry.register(
                "kuberhealthy_check_run_duration_seconds",
                "Duration of each check run",
                run_duration.clone(),
            );
            registry.register(
                "probity_probe_duration_seconds",
                "Duration of each built-in probe, by method",
                probe_duration.clone(),
            );
        }
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
        let per_check_detail = cfg.per_check_detail;
        registry.register_collector(Box::new(board::BoardCollector { board, cfg }));
        Metrics {
            registry,
            last_size: AtomicUsize::new(0),
            per_check_detail,
            by_namespace,
            run_duration,
            probe_duration,
            timings,
            lag,
            reports,
            own,
        }
    }

    /// A run of `key` took `duration`; `probe` is its method, None for a pod.
    pub fn observe_run(&self, key: &CheckKey, probe: Option<ProbeKind>, duration: Duration) {
        self.by_namespace
            .get_or_create(&NamespaceLabels {
                namespace: Escaped(key.namespace().to_string()),
                runs: probe.map_or("pod", ProbeKind::as_str),
            })
            .observe(duration.as_secs_f64());
        if !self.per_check_detail {
            return;
        }
        self.run_duration
            .get_or_create(&CheckLabels::of(key))
            .observe(duration.as_secs_f64());
        if let Some(kind) = probe {
            self.observe_probe(key, kind, duration);
        }
    }

    fn observe_probe(&self, key: &CheckKey, kind: ProbeKind, duration: Duration) {
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
        self.observe_run(&run.key, run.probe, run.duration);
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

#[cfg(test)]
mod tests;
