//! The per-check families, read from the board at scrape time: Kuberhealthy's state gauges and
//! counters, and probity's uptime, held notifications, failure causes, blocks and reported
//! values. Nothing here outlives its check.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::{CheckLabels, Escaped, MetricsConfig};
use crate::engine::Board;

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

/// `probity_check_value`'s labels: the check's, and the value's name (at most 16 per check,
/// only for checks that report values).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ValueLabels {
    pub check: CheckLabels,
    pub name: Escaped,
}

impl EncodeLabelSet for ValueLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.check.encode(encoder)?;
        EncodeLabel::encode(&("name", &self.name), encoder.encode_label())
    }
}

/// Reads the board at scrape time: per-check state is never stale and never outlives its check.
#[derive(Debug)]
pub(super) struct BoardCollector {
    pub(super) board: Arc<Board>,
    pub(super) cfg: MetricsConfig,
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
        // Four more series per check: only with --per-check-detail (the uptime is on the
        // status page and in /json, and Prometheus has it from the two counters).
        if self.cfg.per_check_detail {
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

        // Present only for checks whose reports carry values.
        let mut e = encoder.encode_descriptor(
            "probity_check_value",
            "The numbers the check's last report carried beside its verdict (\"Values\"), by name",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (v, l) in views.iter().zip(&labels) {
            for (name, value) in &v.status.values {
                let vl = ValueLabels {
                    check: l.clone(),
                    name: Escaped(name.clone()),
                };
                ConstGauge::new(*value).encode(e.encode_family(&vl)?)?;
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
            "probity_check_degraded",
            "1 while a check passes but its last run failed what is marked severity: warning (kuberhealthy_check stays 1); absent otherwise",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (v, l) in views.iter().zip(&labels) {
            if v.effective_ok() && v.status.degraded() {
                ConstGauge::new(1i64).encode(e.encode_family(l)?)?;
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
