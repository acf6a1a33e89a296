//! A run: its two ids and the one result every part of probity passes around.
//!
//! How a run ended has one shape, [`RunResult`], from where it is known (a check's report, a
//! probe, a pod's exit, a deadline, a bundled check's judgement) to where it is recorded (the
//! engine) and shown (status, `/json`, metrics, notices). Conversions happen at the edges only:
//! the report JSON (`{"OK":bool,"Errors":[...]}`) and the `/json` shape.
//!
//! A run has two ids (see [`RunCredential::run_id`]); each is its own type, parsed once where it
//! enters (the report header or query, a pod label, a saved status), so one cannot be passed
//! where the other belongs.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Cause, Outcome};

/// How a run ended.
///
/// `outcome` is what is recorded and counted (Kuberhealthy's states plus timeouts, start
/// failures and crashes); `errors` say why a run did not pass (empty on a pass); `warnings` are
/// said about a pass that deserves a look; `standing` what a pass found besides passing (the
/// target idle); `timings` what the run measured; `values` the numbers a check reported beside
/// its verdict. New states (degraded, blocked, a failure's cause) are added here once and read
/// everywhere.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    pub outcome: Outcome,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub standing: Option<Standing>,
    pub timings: Vec<Timing>,
    pub values: Values,
}

/// Numbers a check reports beside its verdict (`"Values": {"queue_depth": 12}`), by name.
pub type Values = std::collections::BTreeMap<String, f64>;

/// At most this many values in one report: each is a series of `probity_check_value`.
pub const MAX_VALUES: usize = 16;

/// Why `name` cannot name a value, if it cannot: a letter or `_`, then letters, digits or `_`,
/// at most 64 (as a Prometheus label value and a history key carry it plainly).
pub fn value_name_problem(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if name.len() > 64 {
        Some(format!("{name:?} is longer than 64 characters"))
    } else if !first_ok || !rest_ok {
        Some(format!(
            "{name:?} must be a letter or _ followed by letters, digits or _"
        ))
    } else {
        None
    }
}

/// What a passing run found besides passing.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Standing {
    /// The target is healthy and serving nothing right now (a Knative revision scaled to
    /// zero): not failing, and not woken by the check.
    Idle,
    /// Passed, but failed assertions marked `severity: warning` (or a probe so marked
    /// failed): the run's `warnings` say which. `OK` stays true for Kuberhealthy's consumers.
    Degraded,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Idle => "Idle",
            Standing::Degraded => "Degraded",
        }
    }
}

/// One figure a run measured.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub struct Timing {
    pub name: TimingName,
    /// Milliseconds.
    pub ms: i64,
}

/// What was timed: a bounded set, so each is a metric label.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TimingName {
    /// A request to a revision at zero: until the first byte of the answer.
    ColdStartFirstByte,
    /// A request to a revision at zero: until the revision is Active again.
    ColdStartActive,
    /// A request to an active revision: until the first byte of the answer.
    WarmFirstByte,
}

impl TimingName {
    pub const ALL: [TimingName; 3] = [
        TimingName::ColdStartFirstByte,
        TimingName::ColdStartActive,
        TimingName::WarmFirstByte,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            TimingName::ColdStartFirstByte => "cold_start_first_byte",
            TimingName::ColdStartActive => "cold_start_active",
            TimingName::WarmFirstByte => "warm_first_byte",
        }
    }
}

impl RunResult {
    fn of(outcome: Outcome, errors: Vec<String>) -> Self {
        RunResult {
            outcome,
            errors,
            warnings: Vec::new(),
            standing: None,
            timings: Vec::new(),
            values: Values::new(),
        }
    }

    pub fn passed() -> Self {
        Self::of(Outcome::Success, Vec::new())
    }

    /// The check (or probe) found its target failing, for these reasons.
    pub fn failed(errors: Vec<String>) -> Self {
        Self::of(Outcome::Failure, errors)
    }

    /// The check found its target failing, for one reason.
    pub fn failure(error: impl Into<String>) -> Self {
        Self::failed(vec![error.into()])
    }

    /// What a check reported: Kuberhealthy's `OK` and `Errors`.
    pub fn reported(ok: bool, errors: Vec<String>) -> Self {
        if ok {
            Self::of(Outcome::Success, errors)
        } else {
            Self::failed(errors)
        }
    }

    /// No verdict by the deadline.
    pub fn timed_out(why: impl Into<String>) -> Self {
        Self::of(Outcome::Timeout, vec![why.into()])
    }

    /// The pod or process could not be started.
    pub fn start_failed(why: impl Into<String>) -> Self {
        Self::of(Outcome::StartFailure, vec![why.into()])
    }

    /// The pod or process ended without a verdict.
    pub fn crashed(why: impl Into<String>) -> Self {
        Self::of(Outcome::Crash, vec![why.into()])
    }

    /// Passed when `errors` is empty, failed with them otherwise (a judgement's findings).
    pub fn judged(errors: Vec<String>) -> Self {
        if errors.is_empty() {
            Self::passed()
        } else {
            Self::failed(errors)
        }
    }

    pub fn with_warning(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }

    pub fn with_values(mut self, values: Values) -> Self {
        self.values = values;
        self
    }

    /// A pass that failed only what was marked `severity: warning`, for these reasons.
    pub fn degraded(warnings: Vec<String>) -> Self {
        RunResult {
            standing: Some(Standing::Degraded),
            warnings,
            ..Self::passed()
        }
    }

    /// A judgement with severities: failed on any error; else degraded on any warning
    /// finding; else passed.
    pub fn graded(errors: Vec<String>, warnings: Vec<String>) -> Self {
        match (errors.is_empty(), warnings.is_empty()) {
            (false, _) => RunResult {
                warnings,
                ..Self::failed(errors)
            },
            (true, false) => Self::degraded(warnings),
            (true, true) => Self::passed(),
        }
    }

    /// The same verdict, judged as a warning (a probe marked `severity: warning`): a failure
    /// found by the probe is a degradation; timeouts and crashes stay as they are.
    pub fn as_warning(self) -> Self {
        if self.outcome != Outcome::Failure {
            return self;
        }
        let mut warnings = self.errors;
        warnings.extend(self.warnings);
        RunResult {
            timings: self.timings,
            values: self.values,
            ..Self::degraded(warnings)
        }
    }

    pub fn is_degraded(&self) -> bool {
        self.standing == Some(Standing::Degraded)
    }

    /// A pass that found its target idle.
    pub fn idle() -> Self {
        RunResult {
            standing: Some(Standing::Idle),
            ..Self::passed()
        }
    }

    pub fn with_timing(mut self, name: TimingName, took: std::time::Duration) -> Self {
        let ms = took.as_millis().min(i64::MAX as u128) as i64;
        self.timings.push(Timing { name, ms });
        self
    }

    pub fn passed_ok(&self) -> bool {
        self.outcome.is_success()
    }

    /// The first reason it did not pass, for one-line messages.
    pub fn first_error(&self) -> Option<&str> {
        self.errors.first().map(String::as_str)
    }

    /// The reasons it did not pass, in one line.
    pub fn message(&self) -> String {
        self.errors.join("; ")
    }
}

/// A judgement written as `Result`: `Ok` passed, `Err` failed with those errors.
impl From<Result<(), Vec<String>>> for RunResult {
    fn from(r: Result<(), Vec<String>>) -> Self {
        match r {
            Ok(()) => RunResult::passed(),
            Err(errors) => RunResult::failed(errors),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct RunRecord {
    // The run's public id, held as its 16 bytes (a status keeps 20 of these; as text they were
    // a tenth of probity's memory at 10,000 checks), written as the text.
    #[serde(skip_serializing_if = "Option::is_none", with = "saved_run_id")]
    #[schemars(with = "String")]
    pub uuid: Option<RunId>,
    pub start_unix: i64,
    /// Nanoseconds.
    pub run_duration: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// A failed run's cause (from its outcome).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    pub errors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub standing: Option<Standing>,
    /// What the run measured (a cold start's time to first byte, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timings: Vec<Timing>,
    /// The numbers the check reported with its verdict (`Values`).
    #[serde(skip_serializing_if = "Values::is_empty")]
    pub values: Values,
}

impl RunRecord {
    /// Which run this was.
    pub fn run_id(&self) -> Option<RunId> {
        self.uuid
    }

    /// The run's id as the status writes it (empty when unknown).
    pub fn uuid_text(&self) -> String {
        self.uuid.map(|u| u.to_string()).unwrap_or_default()
    }
}

/// A history entry's `uuid` as the status writes it: the id's text; a text that is not an id
/// (hand-written, or from before ids were checked) reads as none.
mod saved_run_id {
    use super::{parse_saved, RunId};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &Option<RunId>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.collect_str(id),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RunId>, D::Error> {
        let text = String::deserialize(d)?;
        Ok(parse_saved(&text))
    }
}

/// Names the public run ids derived from credentials; any fixed UUID would do.
const RUN_ID_NAMESPACE: Uuid = Uuid::from_u128(0x7072_6f62_6974_792d_7275_6e2d_6964_0001);

/// A malformed run id or credential: the text, as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a run UUID")]
pub struct BadRunId(pub String);

/// A run's public id: in status, history, `/json`, pod labels and names, logs and the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(Uuid);

/// A run's secret: its `KH_RUN_UUID`, given only to the run's pod or process, carried by its
/// report. Not `Display`: it is shown only where the run is told it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RunCredential(Uuid);

impl RunCredential {
    pub fn new() -> Self {
        RunCredential(Uuid::new_v4())
    }

    /// The public id of this run.
    ///
    /// A run has two UUIDs. The credential is `KH_RUN_UUID`: only the check's pod (or process)
    /// gets it, and a report must carry it. The public id, derived from it one way (a name-based
    /// v5 UUID), is what status, `/json`, history, pod labels and logs show. Whoever can read
    /// those can therefore not forge a verdict, while any replica, or a new leader after a
    /// failover, can still tell which run a report belongs to from the status alone.
    pub fn run_id(&self) -> RunId {
        RunId(Uuid::new_v5(&RUN_ID_NAMESPACE, self.0.as_bytes()))
    }

    /// The text given to the run (`KH_RUN_UUID`, the reporting URL's query).
    pub fn expose(&self) -> String {
        self.0.to_string()
    }
}

impl Default for RunCredential {
    fn default() -> Self {
        Self::new()
    }
}

/// Never the secret itself in logs or debug output.
impl fmt::Debug for RunCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RunCredential(for {})", self.run_id())
    }
}

impl RunId {
    /// A fresh id for a run that has no credential (tests, stand-ins).
    pub fn random() -> Self {
        RunId(Uuid::new_v4())
    }

    /// A fixed id (tests, fixtures).
    pub const fn from_u128(n: u128) -> Self {
        RunId(Uuid::from_u128(n))
    }

    /// The first characters of the id, for short names (pod names).
    pub fn short(&self, n: usize) -> String {
        let s = self.0.simple().to_string();
        s[..n.min(s.len())].to_string()
    }
}

fn parse_uuid(s: &str) -> Result<Uuid, BadRunId> {
    Uuid::parse_str(s.trim()).map_err(|_| BadRunId(s.to_string()))
}

impl FromStr for RunId {
    type Err = BadRunId;
    fn from_str(s: &str) -> Result<Self, BadRunId> {
        parse_uuid(s).map(RunId)
    }
}

impl FromStr for RunCredential {
    type Err = BadRunId;
    fn from_str(s: &str) -> Result<Self, BadRunId> {
        parse_uuid(s).map(RunCredential)
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for RunId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RunId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The saved form of "which run" (`currentUUID`, a history entry's `uuid`): a string, empty for
/// none, as Kuberhealthy writes it. Read once into a `RunId` here.
pub fn parse_saved(s: &str) -> Option<RunId> {
    if s.is_empty() {
        None
    } else {
        s.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_run_id_is_stable_one_way_and_not_the_credential() {
        let cred: RunCredential = "1d309ed7-4b7a-4fd5-9706-d04f53c9ed30".parse().unwrap();
        let id = cred.run_id();
        assert_ne!(id.to_string(), cred.expose());
        // Stable across versions: a run started before an upgrade is matched after it.
        assert_eq!(id.to_string(), "86f0fb7c-cefc-569c-be21-bae69bdb2796");
        assert_eq!(id.0.get_version_num(), 5);
        // Case does not matter in the header: the parsed credential is the same.
        let upper: RunCredential = cred.expose().to_uppercase().parse().unwrap();
        assert_eq!(upper.run_id(), id);
        // The public id of the public id is not the public id (no fixed point to exploit).
        let again: RunCredential = id.to_string().parse().unwrap();
        assert_ne!(again.run_id(), id);
        // Debug output never shows the secret.
        assert!(!format!("{cred:?}").contains(&cred.expose()));
    }

    #[test]
    fn ids_parse_once_and_say_what_was_wrong() {
        assert_eq!(
            "nope".parse::<RunId>(),
            Err(BadRunId("nope".into())),
            "the text is named"
        );
        assert_eq!(parse_saved(""), None);
        assert_eq!(parse_saved("x"), None);
        let id = RunId::random();
        assert_eq!(parse_saved(&id.to_string()), Some(id));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<RunId>(&json).unwrap(), id);
    }

    #[test]
    fn value_names_are_plain() {
        assert_eq!(value_name_problem("queue_depth"), None);
        assert_eq!(value_name_problem("_p99ms"), None);
        assert!(value_name_problem("9lives")
            .unwrap()
            .contains("must be a letter"));
        assert!(value_name_problem("a-b").is_some());
        assert!(value_name_problem("").is_some());
        assert!(value_name_problem(&"a".repeat(65))
            .unwrap()
            .contains("longer than 64"));
    }

    #[test]
    fn results_say_how_a_run_ended() {
        assert!(RunResult::passed().passed_ok());
        assert!(RunResult::reported(true, vec![]).passed_ok());
        let f = RunResult::reported(false, vec!["a".into(), "b".into()]);
        assert_eq!((f.outcome, f.message()), (Outcome::Failure, "a; b".into()));
        assert_eq!(RunResult::judged(vec![]), RunResult::passed());
        assert_eq!(
            RunResult::from(Err(vec!["x".into()])),
            RunResult::failure("x")
        );
        assert_eq!(RunResult::timed_out("t").outcome, Outcome::Timeout);
        assert_eq!(RunResult::crashed("c").first_error(), Some("c"));
    }
}
