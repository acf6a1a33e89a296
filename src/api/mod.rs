//! The `HealthCheck` resource: Kuberhealthy v3's spec and status field names, plus our optional
//! additions. Spec durations stay strings so a bad value is kept and reported, never lost.

pub mod aggregate;
pub mod crd;
pub mod duration;
pub mod heartbeat;
pub mod http_probe;
pub mod load;
pub mod probe;
pub mod protocol;
pub mod resource_probe;
pub mod run;
mod spells;
pub mod validate;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use probe::{Probe, ProbeKind};
pub use run::{RunCredential, RunId, RunRecord, RunResult, Standing, Timing, TimingName, Values};

pub const GROUP: &str = "kuberhealthy.github.io";
pub const VERSION: &str = "v2";
/// At most `max` bytes of `s` (cut at a character boundary), with `…` when cut: for messages
/// that go into history, logs and events, which a check's output must not be able to flood.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// How many past runs `status.history` keeps.
pub const HISTORY_LEN: usize = 20;

/// A synthetic check: what to run (a pod or a built-in probe), how often, and for how long.
// Each `printcolumn(...)` repeats the same keys, which clippy takes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kuberhealthy.github.io",
    version = "v2",
    kind = "HealthCheck",
    plural = "healthchecks",
    shortname = "hc",
    namespaced,
    status = "HealthCheckStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn(name = "OK", type_ = "boolean", json_path = ".status.ok"),
    printcolumn(
        name = "RunInterval",
        type_ = "string",
        json_path = ".spec.runInterval"
    ),
    printcolumn(
        name = "Schedule",
        type_ = "string",
        json_path = ".spec.schedule",
        priority = "1"
    ),
    printcolumn(
        name = "ErrorMessage",
        type_ = "string",
        json_path = ".status.errors[0]"
    ),
    printcolumn(name = "Timeout", type_ = "string", json_path = ".spec.timeout"),
    printcolumn(
        name = "Outcome",
        type_ = "string",
        json_path = ".status.lastOutcome",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckSpec {
    /// Run once and never again (Kuberhealthy's "job").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_run_only: Option<bool>,
    /// Start-to-start interval, Go duration syntax plus `d` (default 10m; 10s for probes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_interval: Option<String>,
    /// Cron schedule (5 fields, or 6 with seconds first) instead of `runInterval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// IANA time zone for `schedule` (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// How long one run may take before it fails (default 30s; 1s for probes, 10s for
    /// resource and Knative probes, 2m when a Knative probe measures latency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Stop scheduling new runs; state is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Consecutive successes needed to flip from failing to OK (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i32>,
    /// Consecutive failures needed to flip from OK to failing (default 1; 3 for probes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
    /// Wait this long after the check first appears before its first run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<String>,
    /// Annotations copied onto every check pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_annotations: Option<BTreeMap<String, String>>,
    /// Labels copied onto every check pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_labels: Option<BTreeMap<String, String>>,
    /// The pod each run creates (in local mode: the first container's command runs as a process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_spec: Option<CheckPodSpec>,
    /// A built-in probe run by probity itself, instead of `podSpec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
    /// No pod, no probe: a job pings probity, and silence fails the check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<heartbeat::HeartbeatSpec>,
    /// Checks this one depends on, `NAME` (in this check's namespace) or `NAMESPACE/NAME`
    /// (a probity extension). While one of them fails, this check's failure is "blocked": it
    /// is recorded as always but notifies no one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckPodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<CheckPodMetadata>,
    /// A core/v1 PodSpec, kept as written and typed only when it is checked or a pod is built:
    /// a typed PodSpec costs kilobytes per check held, and would drop fields newer than this
    /// build knows. An open object in the CRD schema too: the full PodSpec schema would push the
    /// CRD past the size `kubectl apply` can store, and the API server validates the pod itself.
    #[schemars(schema_with = "open_object")]
    #[serde(default)]
    pub spec: serde_json::Value,
}

impl CheckPodSpec {
    /// The typed pod spec. Problems, unknown fields included, name their path under
    /// `spec.podSpec.spec`.
    pub fn pod_spec(&self) -> Result<PodSpec, validate::Invalid> {
        let mut unknown = Vec::new();
        let mut note =
            |path: serde_ignored::Path<'_>| unknown.push(load::tidy_path(&path.to_string()));
        let de = serde_ignored::Deserializer::new(&self.spec, &mut note);
        let field = |path: &str| {
            if path == "." || path.is_empty() {
                "spec.podSpec.spec".to_string()
            } else {
                format!("spec.podSpec.spec.{path}")
            }
        };
        let parsed: Result<PodSpec, _> = serde_path_to_error::deserialize(de);
        let mut problems = Vec::new();
        let spec = match parsed {
            Ok(s) => Some(s),
            Err(e) => {
                problems.push(validate::Problem {
                    field: field(&e.path().to_string()),
                    message: e.into_inner().to_string(),
                });
                None
            }
        };
        for path in unknown {
            problems.push(validate::Problem {
                field: field(&path),
                message: "unknown field".into(),
            });
        }
        match spec {
            Some(s) if problems.is_empty() => Ok(s),
            _ => Err(validate::Invalid { problems }),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckPodMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

fn open_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// What a check's state is, as Kuberhealthy v3 writes it, plus our additions.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct HealthCheckStatus {
    /// The published verdict (thresholds applied). True for a check that has not run yet.
    pub ok: bool,
    /// Errors of the run that made the check fail; empty while OK.
    pub errors: Vec<String>,
    pub consecutive_failures: i64,
    /// Duration of the last finished run, in nanoseconds (as v3).
    pub run_duration: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// UUID of the run in flight; empty when idle.
    #[serde(skip_serializing_if = "String::is_empty")]
    #[serde(rename = "currentUUID")]
    pub current_uuid: String,
    /// Start of the last run, unix seconds.
    pub last_run_unix: i64,
    pub success_count: i64,
    pub failure_count: i64,
    #[serde(rename = "lastOKUnix")]
    pub last_ok_unix: i64,
    pub last_failure_unix: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub additional_metadata: String,

    pub consecutive_successes: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run_unix: Option<i64>,
    /// Deadline of the run in flight, unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_deadline_unix: Option<i64>,
    /// The replica that started the run in flight (or the last run).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub authoritative_pod: String,
    /// The pod (or local process) of the run in flight.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pod_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<Outcome>,
    pub conditions: Vec<Condition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The last runs, newest first.
    pub history: Vec<RunRecord>,
    /// Per-day aggregates of the runs, newest first, 31 days (see `aggregate`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<aggregate::DayStats>,
    /// Per-hour run counts, newest first, the last 25 hours.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hours: Vec<aggregate::HourStats>,
    /// While the verdict is failing: until when its failing time is counted in `days`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_accrued_unix: Option<i64>,
    /// While the verdict is failing: when it became so (unix seconds). It names the failing
    /// spell notifications are about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since_unix: Option<i64>,
    /// What each notification receiver was last told about this check, written by the leader
    /// once a delivery succeeded, so that another leader neither repeats nor skips it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertRecord>,
    /// When the verdict last changed, newest first (the last 20): the check page's events.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<Transition>,
    /// The check is gone (deleted) but receivers were told it fails: kept until each is told
    /// it is resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub departed: Option<Departure>,
    /// What the last run found besides passing (the target idle); none while failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standing: Option<Standing>,
    /// The numbers of the last report that carried any (`probity_check_value`).
    #[serde(skip_serializing_if = "Values::is_empty")]
    pub values: Values,
    /// While degraded: what the last run found that was marked `severity: warning`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// While degraded (passing, the last run failed only warnings): since when, unix seconds.
    /// The degraded spell routes with `degraded: true` are told about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded_since_unix: Option<i64>,
    /// A heartbeat check: when its job last pinged (success or failure), unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_ping_unix: Option<i64>,
    /// A heartbeat check: when its job said it started, until its next ping.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_started_unix: Option<i64>,
}

/// Why and when a check left while receivers had open alerts about it, and the labels that
/// route those alerts' resolves.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Departure {
    pub reason: String,
    pub at_unix: i64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The verdict changed at `atUnix`, to `ok`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Transition {
    pub at_unix: i64,
    pub ok: bool,
}

/// Verdict changes a status keeps.
pub const TRANSITIONS_LEN: usize = 20;

/// What one receiver was last told about a check.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct AlertRecord {
    /// The receiver's name in the alerting configuration.
    pub receiver: String,
    /// The failing spell the last notification was about (`failingSinceUnix`).
    pub since_unix: i64,
    /// True when the last notification said failing, false when it said recovered.
    pub firing: bool,
    /// When it was delivered, unix seconds.
    pub sent_unix: i64,
    /// The last notification said the check is flapping (and notices are held until it is
    /// stable).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub flapping: bool,
    /// The spell told of was a degraded one (the check passed, failing only warnings).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub degraded: bool,
}

/// When a check counts as flapping: its verdict changed at least `changes` times within the
/// last `window_secs` (Nagios' flap detection, counted in time rather than in runs). It is
/// stable again once the changes within the window fall below `changes`, which for a check
/// that stops changing is about one window after its last change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flap {
    pub window_secs: i64,
    /// 0 turns flap detection off.
    pub changes: usize,
}

impl Flap {
    /// 5 changes in 10 minutes: a check that alternates every run sends at most four notices
    /// before the one that says it is flapping, and one when it is stable again.
    pub const DEFAULT: Flap = Flap {
        window_secs: 600,
        changes: 5,
    };
}

impl Default for Flap {
    fn default() -> Self {
        Flap::DEFAULT
    }
}

/// How a run ended. Exactly one per run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Outcome {
    /// The check reported OK.
    Success,
    /// The check reported errors.
    Failure,
    /// The deadline passed before a report; the run was killed.
    Timeout,
    /// The pod or process could not be started.
    StartFailure,
    /// The pod or process ended (or was deleted) without reporting.
    Crash,
}

impl Outcome {
    pub fn is_success(self) -> bool {
        self == Outcome::Success
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "Success",
            Outcome::Failure => "Failure",
            Outcome::Timeout => "Timeout",
            Outcome::StartFailure => "StartFailure",
            Outcome::Crash => "Crash",
        }
    }

    /// Whose problem a run that ended this way is: a check that reported errors (or a probe
    /// that failed) found a fault in what it checks; a run that could not start, crashed, was
    /// evicted or OOM-killed, or ended without a report, found one in what runs it.
    pub fn cause(self) -> Option<Cause> {
        match self {
            Outcome::Success => None,
            Outcome::Failure => Some(Cause::Target),
            Outcome::Timeout | Outcome::StartFailure | Outcome::Crash => Some(Cause::Runner),
        }
    }
}

/// Why a run failed, for routing its notices: `target` is news for whoever owns what is
/// checked, `runner` for whoever runs the cluster (scheduling, image pulls, evictions, a check
/// pod that never reported).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// What the check checks is at fault.
    Target,
    /// What runs the check is at fault.
    Runner,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Target => "target",
            Cause::Runner => "runner",
        }
    }
}

/// The output of one retained run, as a backend keeps it (the run's pod log in a cluster, the
/// process's captured output locally) and the check page shows it.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunLog {
    /// The pod (or, locally, the run's process) it came from.
    pub source: String,
    /// The run's public id, when known.
    pub run: Option<String>,
    /// When the run started, unix seconds, when known.
    pub started: Option<i64>,
    pub text: String,
    /// Only the end of a longer output is kept.
    pub truncated: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Condition {
    #[serde(skip_serializing_if = "String::is_empty")]
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_transition_time: String,
}

/// The latest instant a status may name: the end of year 9999, in unix seconds. Later ones are
/// damage (or a hand edit gone wrong), not time.
pub const MAX_UNIX: i64 = 253_402_300_799;

impl HealthCheckStatus {
    /// The first timestamp outside 0..=MAX_UNIX, named by its field: such a record is set aside
    /// when read back rather than scheduled from.
    pub fn out_of_range(&self) -> Option<String> {
        let fields = [
            ("lastRunUnix", Some(self.last_run_unix)),
            ("lastOKUnix", Some(self.last_ok_unix)),
            ("lastFailureUnix", Some(self.last_failure_unix)),
            ("nextRunUnix", self.next_run_unix),
            ("runDeadlineUnix", self.run_deadline_unix),
        ];
        let history = self
            .history
            .iter()
            .enumerate()
            .map(|(i, h)| (i, Some(h.start_unix)));
        fields
            .into_iter()
            .map(|(f, v)| (f.to_string(), v))
            .chain(history.map(|(i, v)| (format!("history[{i}].startUnix"), v)))
            .find_map(|(field, v)| {
                let v = v?;
                (!(0..=MAX_UNIX).contains(&v))
                    .then(|| format!("status.{field}: {v} is not a time between 1970 and 9999"))
            })
    }

    /// A check that exists but has not finished a run yet.
    pub fn is_pending(&self) -> bool {
        self.last_outcome.is_none()
    }

    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Sets or clears a condition; the transition time only moves when the status changes.
    pub fn set_condition(&mut self, type_: &str, on: bool, reason: &str, message: &str, now: &str) {
        let status = if on { "True" } else { "False" };
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now.to_string();
                }
                c.status = status.to_string();
                c.reason = reason.to_string();
                c.message = message.to_string();
            }
            None => self.conditions.push(Condition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: reason.to_string(),
                message: message.to_string(),
                last_transition_time: now.to_string(),
            }),
        }
    }
}

/// `namespace/name`: how checks are keyed everywhere, as in Kuberhealthy's v2 status page. Cheap
/// to clone because the engine, the status board and the metrics all hold keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CheckKey(std::sync::Arc<str>);

impl CheckKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        CheckKey(format!("{namespace}/{name}").into())
    }
    pub fn namespace(&self) -> &str {
        self.0.split_once('/').map_or("", |(ns, _)| ns)
    }
    pub fn name(&self) -> &str {
        self.0.split_once('/').map_or(&self.0, |(_, n)| n)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn of(hc: &HealthCheck) -> Self {
        CheckKey::new(
            hc.metadata.namespace.as_deref().unwrap_or("default"),
            hc.metadata.name.as_deref().unwrap_or(""),
        )
    }
}

impl std::fmt::Display for CheckKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
