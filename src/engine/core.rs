//! The engine proper: a synchronous state machine over all checks. Time comes in as an argument,
//! decisions go out as [`Effect`]s; there is no I/O and no clock here, so every rule is tested by
//! calling it with the times that matter.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use uuid::Uuid;

use super::{CheckView, Desired, Effect, RunEnd, StartRun, StopReason};
use crate::api::duration::human;
use crate::api::validate::{self, Defaults, Invalid, Plan, Trigger};
use crate::api::{CheckKey, HealthCheckStatus, Outcome, RunRecord, HISTORY_LEN};

/// How many ended runs are remembered to tell "already reported" and "late" from "unknown".
const ENDED_MEMORY: usize = 100_000;
/// Limits on what one history entry keeps of a run's errors.
const HISTORY_ERRORS: usize = 5;
const HISTORY_ERROR_LEN: usize = 512;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This replica's name: `authoritativePod` of the runs it starts.
    pub identity: String,
    /// At most this many runs in flight at once; 0 means no limit.
    pub max_concurrent_runs: usize,
    pub defaults: Defaults,
}

impl EngineConfig {
    /// No concurrency limit and the default interval and timeout.
    pub fn new(identity: impl Into<String>) -> Self {
        EngineConfig {
            identity: identity.into(),
            max_concurrent_runs: 0,
            defaults: Defaults::default(),
        }
    }
}

/// Why a report was refused; `code` is the HTTP status the report endpoint answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: u16,
    pub reason: String,
}

impl Rejection {
    fn bad(reason: String) -> Self {
        Rejection { code: 400, reason }
    }
}

#[derive(Debug)]
struct Run {
    uuid: Uuid,
    started: DateTime<Utc>,
    deadline: DateTime<Utc>,
    timeout: Duration,
    /// The outcome is recorded; the run may still hold its slot until its pod/process is gone.
    finished: bool,
}

#[derive(Debug)]
struct Entry {
    desired: Desired,
    plan: Result<Plan, Invalid>,
    /// Shared with the published view: one copy per check, cloned only when changed.
    status: Arc<HealthCheckStatus>,
    run: Option<Run>,
    due: Option<DateTime<Utc>>,
    queued: bool,
    first_seen: DateTime<Utc>,
    /// Exact start of the last run this process started (status keeps whole seconds).
    last_start: Option<DateTime<Utc>>,
    /// Deleted while its run was still going; dropped when the run releases its slot.
    removed: bool,
    /// A manual run was asked for while a run that started before the request was in flight.
    rerun: bool,
}

#[derive(Debug, Clone)]
enum EndedBy {
    Outcome(Outcome),
    Deleted,
}

#[derive(Debug, Clone)]
struct Ended {
    key: CheckKey,
    by: EndedBy,
    deadline: DateTime<Utc>,
}

#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    checks: HashMap<CheckKey, Entry>,
    /// Next due time of each idle, schedulable check.
    timers: BTreeSet<(DateTime<Utc>, CheckKey)>,
    /// Deadline of every run that still holds a slot.
    deadlines: BTreeSet<(DateTime<Utc>, CheckKey)>,
    /// Checks that are due and wait for a free slot, oldest first, with their due time.
    ready: VecDeque<(CheckKey, DateTime<Utc>)>,
    /// Runs that hold a slot, by UUID.
    runs: HashMap<Uuid, CheckKey>,
    ended: HashMap<Uuid, Ended>,
    ended_order: VecDeque<Uuid>,
    starting: bool,
    draining: bool,
    /// Only the leader schedules, arms deadlines and persists state it did not get from a
    /// report; a follower keeps the published state and accepts reports.
    leader: bool,
}

fn unix(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn from_unix(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(s, 0).single().unwrap_or_default()
}

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// A stable offset in `[0, window)` per check, so first runs after start-up are spread evenly
/// and a restart spreads them the same way.
fn spread(key: &CheckKey, window: Duration) -> Duration {
    let ms = window.as_millis() as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key.as_str().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    Duration::from_millis(h % ms)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Self {
        Engine {
            cfg,
            checks: HashMap::new(),
            timers: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            ready: VecDeque::new(),
            runs: HashMap::new(),
            ended: HashMap::new(),
            ended_order: VecDeque::new(),
            starting: true,
            draining: false,
            leader: true,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.leader
    }

    /// Whether a report for `uuid` would find a run, in flight or ended, to answer about.
    pub fn knows(&self, uuid: Uuid) -> bool {
        self.runs.contains_key(&uuid) || self.ended.contains_key(&uuid)
    }

    /// Becomes leader or follower. A new leader adopts the runs in flight that the state shows
    /// (deadlines re-armed) and schedules the rest from their last start, spreading overdue
    /// ones; a follower stops scheduling and lets go of its runs without stopping them, so the
    /// next leader can adopt them.
    pub fn set_leader(&mut self, now: DateTime<Utc>, leader: bool) -> Vec<Effect> {
        if self.leader == leader {
            return Vec::new();
        }
        self.leader = leader;
        let mut effects = Vec::new();
        let keys: Vec<CheckKey> = self.checks.keys().cloned().collect();
        if leader {
            let starting = std::mem::replace(&mut self.starting, true);
            for key in keys {
                let entry = &self.checks[&key];
                match &entry.run {
                    Some(run) if !run.finished => effects.push(Effect::Adopt {
                        key: key.clone(),
                        uuid: run.uuid,
                        deadline: run.deadline,
                        check: entry.desired.check.clone(),
                    }),
                    Some(_) => {}
                    None => self.schedule(&key, now),
                }
                effects.push(self.save(&key, false));
            }
            self.starting = starting;
            effects.extend(self.fill(now));
        } else {
            self.timers.clear();
            for (key, _) in self.ready.drain(..) {
                if let Some(e) = self.checks.get_mut(&key) {
                    e.queued = false;
                }
            }
            for key in keys {
                let entry = self.checks.get_mut(&key).expect("present");
                entry.due = None;
                let Some(run) = &entry.run else { continue };
                let uuid = run.uuid;
                effects.push(Effect::Disown {
                    key: key.clone(),
                    uuid,
                });
                if run.finished {
                    // Its outcome is stored; only the pod's exit was awaited.
                    let deadline = run.deadline;
                    entry.run = None;
                    self.runs.remove(&uuid);
                    self.deadlines.remove(&(deadline, key.clone()));
                }
                if entry.removed && entry.run.is_none() {
                    self.checks.remove(&key);
                    effects.push(Effect::Forget { key });
                }
            }
        }
        effects
    }

    /// Takes up run `uuid` of `key`, known from stored state, as in flight: its deadline comes
    /// from the state. The leader asks the runner to adopt it.
    fn track(&mut self, key: &CheckKey, uuid: Uuid) -> Option<Effect> {
        let entry = self.checks.get_mut(key).expect("present");
        let started = from_unix(entry.status.last_run_unix);
        let timeout = entry
            .plan
            .as_ref()
            .map_or(self.cfg.defaults.timeout, |p| p.timeout);
        let deadline = entry
            .status
            .run_deadline_unix
            .map_or(started + chrono(timeout), from_unix);
        entry.run = Some(Run {
            uuid,
            started,
            deadline,
            timeout,
            finished: false,
        });
        self.runs.insert(uuid, key.clone());
        self.deadlines.insert((deadline, key.clone()));
        self.leader.then(|| Effect::Adopt {
            key: key.clone(),
            uuid,
            deadline,
            check: entry.desired.check.clone(),
        })
    }

    /// State of `key` written by someone else (another replica, or a person) replaces ours.
    /// A run of ours that it shows ended was recorded elsewhere (a report to a follower, or a
    /// new leader): it is over here too, and a run it shows in flight is tracked.
    fn observe(
        &mut self,
        now: DateTime<Utc>,
        key: &CheckKey,
        mut observed: HealthCheckStatus,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let leader = self.leader;
        let entry = self.checks.get_mut(key).expect("present");
        observed.namespace = key.namespace().to_string();
        let theirs = Uuid::parse_str(&observed.current_uuid).ok();
        let outcome = observed.last_outcome;
        entry.status = Arc::new(observed);
        Self::apply_validity(entry, &now.to_rfc3339());
        if let Some(run) = entry.run.as_mut() {
            if Some(run.uuid) != theirs {
                let (uuid, deadline, was_finished) = (run.uuid, run.deadline, run.finished);
                run.finished = true;
                if !leader {
                    entry.run = None;
                    self.runs.remove(&uuid);
                    self.deadlines.remove(&(deadline, key.clone()));
                }
                // The leader holds the slot until the pod is gone, as after any report.
                if !was_finished {
                    let by = outcome.map_or(EndedBy::Deleted, EndedBy::Outcome);
                    self.remember(uuid, key.clone(), by, deadline);
                }
            }
        }
        if self.checks[key].run.is_none() {
            match theirs {
                Some(uuid) if !self.ended.contains_key(&uuid) => {
                    self.unschedule(key);
                    effects.extend(self.track(key, uuid));
                }
                _ if leader => {
                    self.unschedule(key);
                    self.schedule(key, now);
                }
                _ => {}
            }
        }
        effects.insert(0, self.save(key, false));
        effects.extend(self.fill(now));
        effects
    }

    /// The initial set of checks is loaded: checks added from now on are new, not overdue, and
    /// run without being spread.
    pub fn finish_startup(&mut self) {
        self.starting = false;
    }

    /// Stop starting runs (shutdown); runs in flight go on.
    pub fn drain(&mut self) {
        self.draining = true;
        self.timers.clear();
        for (key, _) in self.ready.drain(..) {
            if let Some(e) = self.checks.get_mut(&key) {
                e.queued = false;
            }
        }
        for e in self.checks.values_mut() {
            e.due = None;
        }
    }

    /// The name of the replica this engine schedules for.
    pub fn identity(&self) -> &str {
        &self.cfg.identity
    }

    /// Runs holding a slot.
    pub fn in_flight(&self) -> usize {
        self.runs.len()
    }

    pub fn len(&self) -> usize {
        self.checks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// When `tick` next has something to do.
    pub fn next_wakeup(&self) -> Option<DateTime<Utc>> {
        if !self.leader {
            return None;
        }
        let t = self.timers.first().map(|(t, _)| *t);
        let d = self.deadlines.first().map(|(t, _)| *t);
        match (t, d) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn status(&self, key: &CheckKey) -> Option<&HealthCheckStatus> {
        self.checks.get(key).map(|e| &*e.status)
    }

    /// The run in flight of a check, if any.
    pub fn current_run(&self, key: &CheckKey) -> Option<Uuid> {
        self.checks
            .get(key)?
            .run
            .as_ref()
            .filter(|r| !r.finished)
            .map(|r| r.uuid)
    }

    pub fn due(&self, key: &CheckKey) -> Option<DateTime<Utc>> {
        self.checks.get(key)?.due
    }

    /// Adds or updates a check. `saved` is its stored state, used the first time it is seen.
    pub fn upsert(
        &mut self,
        now: DateTime<Utc>,
        desired: Desired,
        saved: Option<HealthCheckStatus>,
    ) -> Vec<Effect> {
        let key = CheckKey::of(&desired.check);
        // A plan depends on the key and the spec only: the same spec again (in a cluster, every
        // status write comes back on the watch) is not validated again.
        let unchanged = self
            .checks
            .get(&key)
            .filter(|e| {
                e.desired.check.spec == desired.check.spec
                    && e.desired.load_error == desired.load_error
            })
            .map(|e| e.plan.clone());
        let plan = match unchanged {
            Some(plan) => plan,
            None => match (
                validate::validate(&desired.check, &self.cfg.defaults),
                &desired.load_error,
            ) {
                (Ok(_), Some(e)) => Err(e.clone()),
                (Err(mut v), Some(e)) => {
                    v.problems.splice(0..0, e.problems.iter().cloned());
                    Err(v)
                }
                (r, None) => r,
            },
        };
        let now_s = now.to_rfc3339();
        let mut effects = Vec::new();
        let generation = desired.check.metadata.generation;
        if let Some(entry) = self.checks.get_mut(&key) {
            if let Some(observed) = saved {
                entry.removed = false;
                entry.desired = desired;
                entry.plan = plan;
                return self.observe(now, &key, observed);
            }
            let before = entry.status.clone();
            // The same spec again (a watch echo of a status write, a label change): the check
            // keeps its due time, which may be a start-up spread that recomputing would lose.
            let same_spec = entry.desired.check.spec == desired.check.spec && !entry.removed;
            entry.removed = false;
            entry.desired = desired;
            entry.plan = plan;
            Self::apply_validity(entry, &now_s);
            let observed = generation.or(entry.status.observed_generation);
            if entry.status.observed_generation != observed {
                Arc::make_mut(&mut entry.status).observed_generation = observed;
            }
            if entry.run.is_none() && !same_spec {
                self.unschedule(&key);
                self.schedule(&key, now);
            }
            let persist = *self.checks[&key].status != *before;
            effects.push(self.save(&key, persist));
        } else {
            let creation = desired
                .check
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| Utc.timestamp_millis_opt(t.0.as_millisecond()).single());
            let mut status = saved.unwrap_or_else(|| HealthCheckStatus {
                ok: true,
                ..Default::default()
            });
            let before = status.clone();
            status.namespace = key.namespace().to_string();
            status.observed_generation = generation.or(status.observed_generation);
            let mut entry = Entry {
                desired,
                plan,
                status: Arc::new(status),
                run: None,
                due: None,
                queued: false,
                first_seen: creation.map_or(now, |c| c.min(now)),
                last_start: None,
                removed: false,
                rerun: false,
            };
            Self::apply_validity(&mut entry, &now_s);
            // A run in flight when the state was saved is adopted, not restarted.
            let adopted = Uuid::parse_str(&entry.status.current_uuid).ok();
            let persist = *entry.status != before;
            self.checks.insert(key.clone(), entry);
            match adopted {
                Some(uuid) => effects.extend(self.track(&key, uuid)),
                None => {
                    if !entry_is_clear(&self.checks[&key].status) {
                        let e = self.checks.get_mut(&key).expect("just inserted");
                        let st = Arc::make_mut(&mut e.status);
                        st.current_uuid.clear();
                        st.run_deadline_unix = None;
                    }
                    self.schedule(&key, now);
                }
            }
            effects.insert(0, self.save(&key, persist));
        }
        effects.extend(self.fill(now));
        effects
    }

    /// Records whether the check is invalid, on its status: an `Invalid` condition, and the
    /// published verdict failing with the reason, so it is seen wherever the check is.
    fn apply_validity(entry: &mut Entry, now: &str) {
        let was_invalid = entry
            .status
            .condition("Invalid")
            .is_some_and(|c| c.status == "True");
        if entry.plan.is_ok() && !was_invalid {
            return;
        }
        let st = Arc::make_mut(&mut entry.status);
        match &entry.plan {
            Err(invalid) => {
                let msg = invalid.to_string();
                st.set_condition("Invalid", true, "InvalidSpec", &msg, now);
                st.ok = false;
                st.errors = vec![format!("invalid check: {msg}")];
            }
            Ok(plan) => {
                if was_invalid {
                    st.set_condition("Invalid", false, "Valid", "", now);
                    // Back to the verdict the runs so far support.
                    st.ok = match st.last_outcome {
                        None => true,
                        Some(o) if o.is_success() => true,
                        Some(_) => st.consecutive_failures < i64::from(plan.failure_threshold),
                    };
                    st.errors = if st.ok {
                        Vec::new()
                    } else {
                        st.history
                            .first()
                            .map(|h| h.errors.clone())
                            .unwrap_or_default()
                    };
                }
            }
        }
    }

    /// Deletes a check. A run in flight is stopped; its slot is held until the runner lets go.
    pub fn remove(&mut self, _now: DateTime<Utc>, key: &CheckKey) -> Vec<Effect> {
        if !self.checks.contains_key(key) {
            return Vec::new();
        }
        let mut effects = Vec::new();
        self.unschedule(key);
        let entry = self.checks.get_mut(key).expect("present");
        match &mut entry.run {
            Some(run) => {
                entry.removed = true;
                let uuid = run.uuid;
                if !run.finished {
                    run.finished = true;
                    let deadline = run.deadline;
                    self.remember(uuid, key.clone(), EndedBy::Deleted, deadline);
                }
                effects.push(Effect::Stop {
                    key: key.clone(),
                    uuid,
                    reason: StopReason::Removed,
                });
            }
            None => {
                self.checks.remove(key);
                effects.push(Effect::Forget { key: key.clone() });
            }
        }
        effects
    }

    /// Starts a run now (manual trigger, `probity run`), subject to the concurrency cap.
    pub fn run_now(&mut self, now: DateTime<Utc>, key: &CheckKey) -> Result<Vec<Effect>, String> {
        let entry = self
            .checks
            .get(key)
            .ok_or_else(|| format!("no check {key}"))?;
        if let Err(e) = &entry.plan {
            return Err(format!("{key} is invalid: {e}"));
        }
        if entry.run.is_some() {
            return Err(format!("{key} already has a run in flight"));
        }
        if self.draining {
            return Err("shutting down".into());
        }
        if !self.leader {
            return Err("this replica is not the leader".into());
        }
        self.unschedule(key);
        self.checks.get_mut(key).expect("present").queued = true;
        self.ready.push_front((key.clone(), now));
        Ok(self.fill(now))
    }

    /// A manual run asked for at `at` (recorded on the check, so possibly seen more than once):
    /// served by any run that started after it, now or once the run in flight ends. A run that
    /// started within the same second, when only its whole second is known, does not count:
    /// better one run too many than a request dropped.
    pub fn request_run(
        &mut self,
        now: DateTime<Utc>,
        key: &CheckKey,
        at: DateTime<Utc>,
    ) -> Result<Vec<Effect>, String> {
        let entry = self
            .checks
            .get_mut(key)
            .ok_or_else(|| format!("no check {key}"))?;
        let last = entry
            .last_start
            .unwrap_or_else(|| from_unix(entry.status.last_run_unix));
        if at <= last {
            return Ok(Vec::new());
        }
        if entry.run.is_some() {
            entry.rerun = true;
            return Ok(Vec::new());
        }
        self.run_now(now, key)
    }

    /// Acts on everything due by `now`: deadlines first, then due runs.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Effect> {
        self.tick_described(now, |_| None)
    }

    /// `tick`, with `describe` saying what a run's pod or process was doing when its deadline
    /// passed (for example "pod x was still Pending: Unschedulable: ..."), for the timeout message.
    pub fn tick_described(
        &mut self,
        now: DateTime<Utc>,
        describe: impl Fn(Uuid) -> Option<String>,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        if !self.leader {
            return effects;
        }
        while let Some((t, key)) = self.deadlines.first().cloned() {
            if t > now {
                break;
            }
            self.deadlines.remove(&(t, key.clone()));
            let Some(entry) = self.checks.get_mut(&key) else {
                continue;
            };
            let Some(run) = entry.run.as_ref() else {
                continue;
            };
            let uuid = run.uuid;
            if !run.finished {
                // A probe has nothing to report; a pod or process did not.
                let msg = if entry.desired.check.spec.probe.is_some() {
                    format!("timeout after {}", human(run.timeout))
                } else if let Some(what) = describe(uuid) {
                    format!(
                        "timeout after {}: no report by the deadline; {what}; the run was stopped",
                        human(run.timeout)
                    )
                } else {
                    format!(
                        "timeout after {}: no report by the deadline; the run was stopped",
                        human(run.timeout)
                    )
                };
                effects.extend(self.finish(now, &key, Outcome::Timeout, vec![msg]));
            }
            effects.push(Effect::Stop {
                key,
                uuid,
                reason: StopReason::Timeout,
            });
        }
        while let Some((t, key)) = self.timers.first().cloned() {
            if t > now {
                break;
            }
            self.timers.remove(&(t, key.clone()));
            if let Some(entry) = self.checks.get_mut(&key) {
                entry.due = None;
                if entry.run.is_none() && !entry.queued {
                    entry.queued = true;
                    self.ready.push_back((key, t));
                }
            }
        }
        effects.extend(self.fill(now));
        effects
    }

    /// A report for run `uuid` arrived at `now`. Effects come back even when the report is
    /// refused: a report after the deadline records the timeout.
    pub fn report(
        &mut self,
        now: DateTime<Utc>,
        uuid: Uuid,
        ok: bool,
        errors: Vec<String>,
    ) -> (Vec<Effect>, Result<(), Rejection>) {
        let Some(key) = self.runs.get(&uuid).cloned() else {
            return (Vec::new(), Err(self.explain_unknown(uuid)));
        };
        let run = self.checks[&key]
            .run
            .as_ref()
            .expect("a run holds the slot");
        if run.finished {
            return (Vec::new(), Err(self.explain_unknown(uuid)));
        }
        if now > run.deadline && !self.leader {
            // The leader records the timeout; two writers would count it twice.
            let reason = format!(
                "run {uuid} of {key} is past its deadline {}",
                run.deadline.to_rfc3339()
            );
            return (Vec::new(), Err(Rejection { code: 410, reason }));
        }
        if now > run.deadline {
            let deadline = run.deadline;
            let msg = format!(
                "timeout after {}: the report came {} after the deadline",
                human(run.timeout),
                human((now - deadline).to_std().unwrap_or_default())
            );
            let mut effects = self.finish(now, &key, Outcome::Timeout, vec![msg]);
            effects.push(Effect::Stop {
                key: key.clone(),
                uuid,
                reason: StopReason::Timeout,
            });
            let reason = format!(
                "run {uuid} of {key} is past its deadline {}; recorded as a timeout",
                deadline.to_rfc3339()
            );
            return (effects, Err(Rejection { code: 410, reason }));
        }
        let outcome = if ok {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        let effects = self.finish(now, &key, outcome, errors);
        if !self.leader {
            // No pod of ours to wait for: the leader reaps it.
            let entry = self.checks.get_mut(&key).expect("present");
            if let Some(run) = entry.run.take() {
                self.runs.remove(&run.uuid);
                self.deadlines.remove(&(run.deadline, key.clone()));
            }
        }
        (effects, Ok(()))
    }

    fn explain_unknown(&self, uuid: Uuid) -> Rejection {
        match self.ended.get(&uuid) {
            None => Rejection::bad(format!(
                "unknown run UUID {uuid}: no run of any check has it"
            )),
            Some(e) => match &e.by {
                EndedBy::Outcome(Outcome::Timeout) => Rejection {
                    code: 410,
                    reason: format!(
                        "run {uuid} of {} timed out at {}; the report is too late",
                        e.key,
                        e.deadline.to_rfc3339()
                    ),
                },
                EndedBy::Outcome(o @ (Outcome::Success | Outcome::Failure)) => {
                    Rejection::bad(format!(
                        "run {uuid} of {} already reported ({}); a run reports once",
                        e.key,
                        o.as_str()
                    ))
                }
                EndedBy::Outcome(o) => Rejection::bad(format!(
                    "run {uuid} of {} already ended ({})",
                    e.key,
                    o.as_str()
                )),
                EndedBy::Deleted => Rejection::bad(format!(
                    "run {uuid} belonged to {}, which was deleted",
                    e.key
                )),
            },
        }
    }

    /// The runner says the pod/process of run `uuid` is gone.
    pub fn release(&mut self, now: DateTime<Utc>, uuid: Uuid, end: RunEnd) -> Vec<Effect> {
        let Some(key) = self.runs.remove(&uuid) else {
            return Vec::new();
        };
        let mut effects = Vec::new();
        let finished = self.checks[&key].run.as_ref().is_none_or(|r| r.finished);
        if !finished {
            let (outcome, msg) = match end {
                RunEnd::StartFailed(m) => (Outcome::StartFailure, m),
                RunEnd::Exited { message, .. } => (Outcome::Crash, message),
            };
            effects.extend(self.finish(now, &key, outcome, vec![msg]));
        }
        let entry = self.checks.get_mut(&key).expect("present");
        if let Some(run) = entry.run.take() {
            self.deadlines.remove(&(run.deadline, key.clone()));
        }
        let shown = Uuid::parse_str(&entry.status.current_uuid)
            .ok()
            .filter(|u| *u != uuid && !self.ended.contains_key(u));
        if entry.removed {
            self.checks.remove(&key);
            effects.push(Effect::Forget { key });
        } else if let Some(other) = shown {
            // Another replica started a run while ours was ending: it is in flight now.
            effects.extend(self.track(&key, other));
        } else if std::mem::take(&mut entry.rerun) && self.leader && !self.draining {
            self.unschedule(&key);
            self.checks.get_mut(&key).expect("present").queued = true;
            self.ready.push_front((key.clone(), now));
        } else {
            let before = entry.status.next_run_unix;
            self.schedule(&key, now);
            if self.checks[&key].status.next_run_unix != before {
                effects.push(self.save(&key, true));
            }
        }
        effects.extend(self.fill(now));
        effects
    }

    /// Records the one outcome of the run in flight of `key`.
    fn finish(
        &mut self,
        now: DateTime<Utc>,
        key: &CheckKey,
        outcome: Outcome,
        errors: Vec<String>,
    ) -> Vec<Effect> {
        let entry = self.checks.get_mut(key).expect("present");
        let Some(run) = entry.run.as_mut() else {
            return Vec::new();
        };
        if run.finished {
            return Vec::new();
        }
        run.finished = true;
        let (uuid, started, deadline) = (run.uuid, run.started, run.deadline);
        let duration = (now - started).to_std().unwrap_or_default();
        let (success_threshold, failure_threshold, single_run) = match &entry.plan {
            Ok(p) => (p.success_threshold, p.failure_threshold, p.single_run),
            Err(_) => (1, 1, false),
        };
        let st = Arc::make_mut(&mut entry.status);
        st.run_duration = duration.as_nanos().min(i64::MAX as u128) as i64;
        st.current_uuid.clear();
        st.run_deadline_unix = None;
        st.pod_name.clear();
        st.last_outcome = Some(outcome);
        if outcome.is_success() {
            st.success_count += 1;
            st.consecutive_successes += 1;
            st.consecutive_failures = 0;
            st.last_ok_unix = unix(now);
            if !st.ok && st.consecutive_successes >= i64::from(success_threshold) {
                st.ok = true;
            }
            if st.ok {
                st.errors.clear();
            }
        } else {
            st.failure_count += 1;
            st.consecutive_failures += 1;
            st.consecutive_successes = 0;
            st.last_failure_unix = unix(now);
            if st.ok && st.consecutive_failures >= i64::from(failure_threshold) {
                st.ok = false;
            }
            if !st.ok {
                st.errors = errors.clone();
            }
        }
        if entry.plan.is_err() {
            // Still invalid (changed while running): keep saying so.
            st.ok = false;
        }
        st.history.insert(
            0,
            RunRecord {
                uuid: uuid.to_string(),
                start_unix: unix(started),
                run_duration: st.run_duration,
                outcome: Some(outcome),
                errors: errors
                    .iter()
                    .take(HISTORY_ERRORS)
                    .map(|e| truncate(e, HISTORY_ERROR_LEN))
                    .collect(),
            },
        );
        st.history.truncate(HISTORY_LEN);
        st.next_run_unix = if single_run { None } else { st.next_run_unix };
        self.remember(uuid, key.clone(), EndedBy::Outcome(outcome), deadline);
        vec![
            Effect::Save {
                key: key.clone(),
                view: Arc::new(self.view(key)),
                persist: true,
            },
            Effect::Finished {
                key: key.clone(),
                uuid,
                outcome,
                duration,
                errors,
                probe: self.checks[key]
                    .desired
                    .check
                    .spec
                    .probe
                    .as_ref()
                    .and_then(|p| p.methods().first().copied()),
            },
        ]
    }

    fn remember(&mut self, uuid: Uuid, key: CheckKey, by: EndedBy, deadline: DateTime<Utc>) {
        self.ended.insert(uuid, Ended { key, by, deadline });
        self.ended_order.push_back(uuid);
        while self.ended_order.len() > ENDED_MEMORY {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
    }

    /// Starts queued runs while slots are free.
    fn fill(&mut self, now: DateTime<Utc>) -> Vec<Effect> {
        let mut effects = Vec::new();
        let cap = if self.cfg.max_concurrent_runs == 0 {
            usize::MAX
        } else {
            self.cfg.max_concurrent_runs
        };
        while !self.draining && self.leader && self.runs.len() < cap {
            let Some((key, due)) = self.ready.pop_front() else {
                break;
            };
            let Some(entry) = self.checks.get_mut(&key) else {
                continue;
            };
            if !entry.queued {
                continue;
            }
            entry.queued = false;
            if entry.run.is_some() || entry.removed {
                continue;
            }
            let Ok(plan) = &entry.plan else { continue };
            let uuid = Uuid::new_v4();
            let timeout = plan.timeout;
            let deadline = now + chrono(timeout);
            let next = match &plan.trigger {
                _ if plan.single_run => None,
                Trigger::Interval(iv) => Some(now + chrono(*iv)),
                Trigger::Cron(c) => c.next_after(now),
            };
            entry.run = Some(Run {
                uuid,
                started: now,
                deadline,
                timeout,
                finished: false,
            });
            entry.last_start = Some(now);
            let st = Arc::make_mut(&mut entry.status);
            st.current_uuid = uuid.to_string();
            st.last_run_unix = unix(now);
            st.run_deadline_unix = Some(unix(deadline));
            st.authoritative_pod = self.cfg.identity.clone();
            st.pod_name = pod_name(&key, uuid);
            st.next_run_unix = next.map(unix);
            let check = entry.desired.check.clone();
            self.runs.insert(uuid, key.clone());
            self.deadlines.insert((deadline, key.clone()));
            effects.push(self.save(&key, true));
            effects.push(Effect::Started {
                key: key.clone(),
                lag: (now - due).to_std().unwrap_or_default(),
            });
            effects.push(Effect::Start(StartRun {
                key,
                uuid,
                check,
                started: now,
                deadline,
                timeout,
                due,
            }));
        }
        effects
    }

    fn unschedule(&mut self, key: &CheckKey) {
        if let Some(entry) = self.checks.get_mut(key) {
            if let Some(due) = entry.due.take() {
                self.timers.remove(&(due, key.clone()));
            }
            // A queued entry is skipped when popped.
            entry.queued = false;
        }
    }

    /// Works out when an idle check next runs and arms its timer.
    fn schedule(&mut self, key: &CheckKey, now: DateTime<Utc>) {
        if !self.leader {
            return;
        }
        let due = self.compute_due(key, now);
        let entry = self.checks.get_mut(key).expect("present");
        entry.due = due;
        if entry.plan.is_ok() {
            let single_done =
                entry.plan.as_ref().is_ok_and(|p| p.single_run) && entry.status.last_run_unix > 0;
            let next = if single_done { None } else { due.map(unix) };
            if entry.status.next_run_unix != next {
                Arc::make_mut(&mut entry.status).next_run_unix = next;
            }
        } else if entry.status.next_run_unix.is_some() {
            Arc::make_mut(&mut entry.status).next_run_unix = None;
        }
        if let Some(d) = due {
            self.timers.insert((d, key.clone()));
        }
    }

    fn compute_due(&self, key: &CheckKey, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let e = self.checks.get(key)?;
        let plan = e.plan.as_ref().ok()?;
        if plan.suspend || self.draining || e.removed {
            return None;
        }
        let has_run = e.status.last_run_unix > 0;
        if plan.single_run && has_run {
            return None;
        }
        let last = e
            .last_start
            .or(has_run.then(|| from_unix(e.status.last_run_unix)));
        let earliest = (!has_run).then(|| e.first_seen + chrono(plan.initial_delay));
        match &plan.trigger {
            Trigger::Interval(iv) => {
                let due = match (last, earliest) {
                    (Some(l), _) => l + chrono(*iv),
                    (None, Some(first)) => first,
                    (None, None) => now,
                };
                if due > now {
                    Some(due)
                } else if self.starting && earliest.is_none_or(|_| plan.initial_delay.is_zero()) {
                    // Overdue at start-up (first install, restart, failover): spread over the
                    // interval instead of starting everything in the same second.
                    Some(now + chrono(spread(key, *iv)))
                } else {
                    Some(now)
                }
            }
            Trigger::Cron(c) => {
                let mut from = now;
                if let Some(l) = last {
                    from = from.max(l);
                }
                if let Some(first) = earliest {
                    from = from.max(first);
                }
                c.next_after(from)
            }
        }
    }

    /// Publishes the state of `key`, and persists it when it changed and this is the leader
    /// (a follower persists only the outcomes of reports, in `finish`).
    fn save(&self, key: &CheckKey, persist: bool) -> Effect {
        Effect::Save {
            key: key.clone(),
            view: Arc::new(self.view(key)),
            persist: persist && self.leader,
        }
    }

    pub fn view(&self, key: &CheckKey) -> CheckView {
        let e = &self.checks[key];
        let labels = e.desired.check.metadata.labels.as_ref();
        let label = |k: &str| labels.and_then(|l| l.get(k)).cloned();
        let (run_interval, schedule, timeout, single_run, suspended) = match &e.plan {
            Ok(p) => (
                match &p.trigger {
                    Trigger::Interval(iv) => Some(*iv),
                    Trigger::Cron(_) => None,
                },
                match &p.trigger {
                    Trigger::Cron(c) => Some(c.expr.clone()),
                    Trigger::Interval(_) => None,
                },
                Some(p.timeout),
                p.single_run,
                p.suspend,
            ),
            Err(_) => (
                None,
                e.desired.check.spec.schedule.clone(),
                None,
                false,
                false,
            ),
        };
        CheckView {
            key: key.clone(),
            status: e.status.clone(),
            invalid: e.plan.as_ref().err().map(|i| i.to_string()),
            run_interval,
            schedule,
            timeout,
            single_run,
            suspended,
            severity: label("kuberhealthy.io/severity"),
            category: label("kuberhealthy.io/category"),
        }
    }
}

fn entry_is_clear(st: &HealthCheckStatus) -> bool {
    st.current_uuid.is_empty() && st.run_deadline_unix.is_none()
}

/// The pod name of a run, Kuberhealthy v3 style: `<check>-<5 chars>`, here taken from the run's
/// UUID so the name is known before the pod exists and the start is one status write.
pub fn pod_name(key: &CheckKey, uuid: Uuid) -> String {
    let name = key.name();
    let name = &name[..name.len().min(57)];
    format!(
        "{}-{}",
        name.trim_end_matches(['-', '.']),
        &uuid.simple().to_string()[..5]
    )
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
