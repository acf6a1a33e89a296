//! probity's own health, beside the checks': what the HTTP server refused to protect itself,
//! runs it had to defer, writes of state that failed.

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Metrics;

/// Why the server closed a connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionEnd {
    /// At the connection cap: the idlest one made room for a new one.
    Evicted,
    /// Nothing read and no request in flight for the idle timeout.
    Idle,
}

/// Lower case, as Prometheus label values usually are.
impl EncodeLabelValue for ConnectionEnd {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(match self {
            ConnectionEnd::Evicted => "evicted",
            ConnectionEnd::Idle => "idle",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct ConnectionLabels {
    pub reason: ConnectionEnd,
}

/// Whether a notification reached its receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    Sent,
    Failed,
}

impl EncodeLabelValue for Delivery {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(match self {
            Delivery::Sent => "sent",
            Delivery::Failed => "failed",
        })
    }
}

/// Bounded: receivers come from the alerting configuration, `kind` is one of firing,
/// reminder, resolved, refresh.
#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct NotificationLabels {
    pub receiver: String,
    pub kind: &'static str,
    pub result: Delivery,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct ReceiverLabels {
    pub receiver: String,
}

/// probity's own health: what the HTTP server refused to protect itself, runs it had to defer.
#[derive(Debug, Default)]
pub(super) struct OwnMetrics {
    open: Gauge,
    closed: Family<ConnectionLabels, Counter>,
    shed: Counter,
    /// Runs not started for probity's own reasons (file descriptors, processes), retried.
    deferred: Counter,
    state_failures: Counter,
    state_failing: Gauge,
    notifications: Family<NotificationLabels, Counter>,
    notifications_pending: Family<ReceiverLabels, Gauge>,
    notifications_queued: Family<ReceiverLabels, Gauge>,
    notifications_dropped: Family<DroppedLabels, Counter>,
    alerting_reload_ok: Gauge,
    alerting_reload_at: Gauge,
}

/// Why a notice was never sent. Bounded: receivers from the configuration, the reasons.
#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct DroppedLabels {
    pub receiver: String,
    pub reason: Dropped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dropped {
    /// The check's state moved on before its notice could be sent (the receiver was slow or
    /// down): the newer notice replaces it.
    Superseded,
}

impl EncodeLabelValue for Dropped {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(match self {
            Dropped::Superseded => "superseded",
        })
    }
}

impl OwnMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let own = OwnMetrics::default();
        registry.register(
            "probity_http_connections",
            "Open HTTP connections",
            own.open.clone(),
        );
        registry.register(
            "probity_http_connections_closed",
            "HTTP connections the server closed to protect itself, by reason",
            own.closed.clone(),
        );
        registry.register(
            "probity_http_requests_shed",
            "Requests answered 503 because too many were in flight",
            own.shed.clone(),
        );
        registry.register(
            "probity_runs_deferred",
            "Runs that could not start for probity's own reasons (open-files or process limits) and were retried; not counted against any check",
            own.deferred.clone(),
        );
        registry.register(
            "probity_state_write_failures",
            "Writes of check state that failed (disk full, I/O error); their reports were answered 500",
            own.state_failures.clone(),
        );
        registry.register(
            "probity_state_write_failing",
            "1 while writes of check state fail, 0 once they work",
            own.state_failing.clone(),
        );
        registry.register(
            "probity_notifications",
            "Notification deliveries by receiver, kind (firing, reminder, resolved, refresh) and result (sent, failed); a failed one is retried",
            own.notifications.clone(),
        );
        registry.register(
            "probity_notifications_pending",
            "Notifications whose delivery failed and waits for a retry, by receiver",
            own.notifications_pending.clone(),
        );
        registry.register(
            "probity_notifications_queued",
            "Notices due and waiting for a free delivery slot of their receiver (each receiver has its own queue and 8 slots; beyond 1000, they wait in the checks' statuses, not in memory)",
            own.notifications_queued.clone(),
        );
        registry.register(
            "probity_notifications_dropped",
            "Notices never sent, by receiver and reason: superseded (the check changed again before a slow receiver could be told; the newer notice is sent instead)",
            own.notifications_dropped.clone(),
        );
        registry.register(
            "probity_alerting_config_last_reload_successful",
            "1 when the last read of the alerting configuration file succeeded; 0 when it failed and the last good configuration stays in use",
            own.alerting_reload_ok.clone(),
        );
        registry.register(
            "probity_alerting_config_last_reload_success_timestamp_seconds",
            "When the alerting configuration was last read successfully (unix seconds)",
            own.alerting_reload_at.clone(),
        );
        own
    }
}

impl Metrics {
    pub fn connection_opened(&self) {
        self.own.open.inc();
    }

    pub fn connection_gone(&self) {
        self.own.open.dec();
    }

    pub fn connection_closed(&self, reason: ConnectionEnd) {
        self.own
            .closed
            .get_or_create(&ConnectionLabels { reason })
            .inc();
    }

    /// A write of check state failed (`Some`), or writes work again (`None`).
    pub fn state_write(&self, error: Option<&str>) {
        if error.is_some() {
            self.own.state_failures.inc();
        }
        self.own.state_failing.set(i64::from(error.is_some()));
    }

    pub fn run_deferred(&self) {
        self.own.deferred.inc();
    }

    pub fn request_shed(&self) {
        self.own.shed.inc();
    }

    pub fn notification(&self, receiver: &str, kind: &'static str, sent: bool) {
        self.own
            .notifications
            .get_or_create(&NotificationLabels {
                receiver: receiver.to_string(),
                kind,
                result: if sent {
                    Delivery::Sent
                } else {
                    Delivery::Failed
                },
            })
            .inc();
    }

    /// The alerting configuration file was read (`ok`), or reading it failed.
    pub fn alerting_reload(&self, ok: bool) {
        self.own.alerting_reload_ok.set(i64::from(ok));
        if ok {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            self.own.alerting_reload_at.set(now);
        }
    }

    pub fn notifications_queued(&self, receiver: &str, n: i64) {
        self.own
            .notifications_queued
            .get_or_create(&ReceiverLabels {
                receiver: receiver.to_string(),
            })
            .set(n);
    }

    pub fn notifications_dropped(&self, receiver: &str, reason: Dropped, n: u64) {
        self.own
            .notifications_dropped
            .get_or_create(&DroppedLabels {
                receiver: receiver.to_string(),
                reason,
            })
            .inc_by(n);
    }

    pub fn notifications_pending(&self, receiver: &str, n: i64) {
        self.own
            .notifications_pending
            .get_or_create(&ReceiverLabels {
                receiver: receiver.to_string(),
            })
            .set(n);
    }
}
