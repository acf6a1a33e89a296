//! The engine proper: a synchronous state machine over all checks. Time comes in as an argument,
//! decisions go out as [`Effect`]s; there is no I/O and no clock here, so every rule is tested by
//! calling it with the times that matter.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

mod depart;
mod depends;
mod ended;
mod heartbeat;
mod leader;
mod schedule;
mod verdict;
mod view;

use ended::{EndedBy, EndedRuns};

use super::plans::Checked;
use super::{Desired, Effect, Plans, Rejection, RunEnd, StopReason};
use crate::api::duration::human;
use crate::api::validate::Defaults;
use crate::api::{CheckKey, HealthCheckStatus, RunId, RunResult};

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This replica's name: `authoritativePod` of the runs it starts.
    pub identity: String,
    /// At most this many runs in flight at once; 0 means no limit.
    pub max_concurrent_runs: usize,
    pub defaults: Defaults,
    /// A check that has never run, loaded at start-up, starts within this window (spread over
    /// it), not over its interval: first results come at once after an install.
    pub first_run_window: Duration,
    /// A check deleted while a receiver has an open alert about it is kept until the alert is
    /// resolved, then removed here (locally). Off in a cluster, where probity's finalizer keeps
    /// the HealthCheck and the watch says when it is gone.
    pub keep_departed: bool,
}

/// The default `first_run_window`.
pub const FIRST_RUN_WINDOW: Duration = Duration::from_secs(10);

impl EngineConfig {
    /// No concurrency limit and the default interval and timeout.
    pub fn new(identity: impl Into<String>) -> Self {
        EngineConfig {
            identity: identity.into(),
            max_concurrent_runs: 0,
            defaults: Defaults::default(),
            first_run_window: FIRST_RUN_WINDOW,
            keep_departed: false,
        }
    }
}

#[derive(Debug)]
struct Run {
    uuid: RunId,
    started: DateTime<Utc>,
    deadline: DateTime<Utc>,
    timeout: Duration,
    /// The outcome is recorded; the run may still hold its slot until its pod/process is gone.
    finished: bool,
    /// What the start replaced in the check's state, put back if the run is deferred.
    prior: Prior,
}

/// The fields of a check's state that starting a run replaced.
#[derive(Debug, Default)]
struct Prior {
    current_uuid: String,
    last_run_unix: i64,
    run_deadline_unix: Option<i64>,
    authoritative_pod: String,
    pod_name: String,
    start: Option<DateTime<Utc>>,
}

#[derive(Debug)]
struct Entry {
    desired: Desired,
    plan: Checked,
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
    /// `spec.dependsOn`, resolved (empty while the check is invalid on its own).
    deps: Vec<CheckKey>,
    /// Leaving: runs no more, kept until its receivers are told (`depart.rs`).
    departed: bool,
    /// Its plan is an error for what the other checks say of its dependencies.
    dependency_invalid: bool,
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
    runs: HashMap<RunId, CheckKey>,
    ended: EndedRuns,
    starting: bool,
    draining: bool,
    /// Only the leader schedules, arms deadlines and persists state it did not get from a
    /// report; a follower keeps the published state and accepts reports.
    leader: bool,
    plans: Arc<Plans>,
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

/// `t + d`, saturating at the end of representable time instead of panicking: a date read back
/// from state (or written by someone else) must never bring the scheduler down.
fn later(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(chrono(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Self {
        let plans = Arc::new(Plans::new(cfg.defaults.clone()));
        Engine {
            cfg,
            checks: HashMap::new(),
            timers: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            ready: VecDeque::new(),
            runs: HashMap::new(),
            ended: EndedRuns::default(),
            starting: true,
            draining: false,
            leader: true,
            plans,
        }
    }

    /// Validates through `plans`, which a backend also fills where blocking is fine (see
    /// `Plans`); kept only when made with this engine's defaults, as a plan depends on them.
    pub fn sharing_plans(mut self, plans: Arc<Plans>) -> Self {
        if *plans.defaults() == self.cfg.defaults {
            self.plans = plans;
        }
        self
    }

    pub fn is_leader(&self) -> bool {
        self.leader
    }

    /// Whether a report for `uuid` would find a run, in flight or ended, to answer about.
    pub fn knows(&self, uuid: RunId) -> bool {
        self.runs.contains_key(&uuid) || self.ended.contains(&uuid)
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
    pub fn current_run(&self, key: &CheckKey) -> Option<RunId> {
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

    pub(super) fn upsert_desired(
        &mut self,
        now: DateTime<Utc>,
        desired: Desired,
        saved: Option<HealthCheckStatus>,
        key: &CheckKey,
    ) -> Vec<Effect> {
        let key = key.clone();
        // Kept per spec: the same spec again (in a cluster, every status write comes back on
        // the watch) is not validated again.
        let plan = self.plans.plan(&key, &desired);
        let mut effects = Vec::new();
        let generation = desired.check.metadata.generation;
        if let Some(entry) = self.checks.get_mut(&key) {
            let reach = entry.removed || depends::deps_changed(entry, &plan);
            entry.deps = depends::deps_of(&plan);
            if let Some(observed) = saved {
                entry.removed = false;
                entry.desired = desired;
                entry.plan = plan;
                let mut effects = self.observe(now, &key, observed);
                effects.extend(self.settle_dependencies(now, &key, reach));
                return effects;
            }
            let before = entry.status.clone();
            // The same spec again (a watch echo of a status write, a label change): the check
            // keeps its due time, which may be a start-up spread that recomputing would lose.
            let same_spec = entry.desired.check.spec == desired.check.spec && !entry.removed;
            entry.removed = false;
            entry.desired = desired;
            entry.plan = plan;
            Self::apply_validity(entry, now);
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
            effects.extend(self.settle_dependencies(now, &key, reach));
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
                deps: depends::deps_of(&plan),
                dependency_invalid: false,
                departed: false,
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
            Self::apply_validity(&mut entry, now);
            // A run in flight when the state was saved is adopted, not restarted.
            let adopted = entry.status.current_run();
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
            effects.extend(self.settle_dependencies(now, &key, true));
        }
        effects.extend(self.fill(now));
        effects
    }

    /// Deletes a check. A run in flight is stopped; its slot is held until the runner lets go.
    pub fn remove(&mut self, now: DateTime<Utc>, key: &CheckKey) -> Vec<Effect> {
        let Some(entry) = self.checks.get(key) else {
            return Vec::new();
        };
        if self.cfg.keep_departed && self.leader && entry.status.alerts_open() {
            if entry.departed {
                return Vec::new();
            }
            return self.depart(now, key, super::DELETED);
        }
        self.plans.forget(key);
        let mut effects = Vec::new();
        self.unschedule(key);
        let entry = self.checks.get_mut(key).expect("present");
        match entry.run.as_ref().map(|r| r.uuid) {
            Some(uuid) => {
                entry.removed = true;
                self.end_run_as_deleted(key);
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
        effects.extend(self.settle_dependencies(now, key, true));
        effects
    }

    /// Ends `key`'s run in flight, if its outcome is not recorded yet, as ended by the check's
    /// deletion (a report that comes later is refused as such); whether there was one.
    pub(super) fn end_run_as_deleted(&mut self, key: &CheckKey) -> bool {
        let Some(run) = self
            .checks
            .get_mut(key)
            .and_then(|e| e.run.as_mut())
            .filter(|r| !r.finished)
        else {
            return false;
        };
        run.finished = true;
        let (uuid, deadline) = (run.uuid, run.deadline);
        self.ended
            .remember(uuid, key.clone(), EndedBy::Deleted, deadline);
        true
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
        describe: impl Fn(RunId) -> Option<String>,
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
                effects.extend(self.finish(now, &key, RunResult::timed_out(msg)));
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
            if self.is_heartbeat(&key) {
                effects.extend(self.heartbeat_missed(now, &key));
                continue;
            }
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
        uuid: RunId,
        result: RunResult,
    ) -> (Vec<Effect>, Result<(), Rejection>) {
        let Some(key) = self.runs.get(&uuid).cloned() else {
            return (Vec::new(), Err(self.ended.explain(uuid)));
        };
        let run = self.checks[&key]
            .run
            .as_ref()
            .expect("a run holds the slot");
        if run.finished {
            return (Vec::new(), Err(self.ended.explain(uuid)));
        }
        if now > run.deadline && !self.leader {
            // The leader records the timeout; two writers would count it twice.
            let refused = Rejection::PastDeadline {
                uuid,
                key: key.clone(),
                deadline: run.deadline,
                recorded: false,
            };
            return (Vec::new(), Err(refused));
        }
        if now > run.deadline {
            let deadline = run.deadline;
            let msg = format!(
                "timeout after {}: the report came {} after the deadline",
                human(run.timeout),
                human((now - deadline).to_std().unwrap_or_default())
            );
            let mut effects = self.finish(now, &key, RunResult::timed_out(msg));
            effects.push(Effect::Stop {
                key: key.clone(),
                uuid,
                reason: StopReason::Timeout,
            });
            let refused = Rejection::PastDeadline {
                uuid,
                key,
                deadline,
                recorded: true,
            };
            return (effects, Err(refused));
        }
        let effects = self.finish(now, &key, result);
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

    /// The runner says the pod/process of run `uuid` is gone.
    pub fn release(&mut self, now: DateTime<Utc>, uuid: RunId, end: RunEnd) -> Vec<Effect> {
        let Some(key) = self.runs.remove(&uuid) else {
            return Vec::new();
        };
        let mut effects = Vec::new();
        let finished = self.checks[&key].run.as_ref().is_none_or(|r| r.finished);
        if let (false, RunEnd::Deferred(reason)) = (finished, &end) {
            return self.defer(now, key, reason.clone());
        }
        if !finished {
            let result = match end {
                RunEnd::Deferred(m) => RunResult::start_failed(m),
                RunEnd::Ended(result) => result,
            };
            effects.extend(self.finish(now, &key, result));
        }
        let entry = self.checks.get_mut(&key).expect("present");
        if let Some(run) = entry.run.take() {
            self.deadlines.remove(&(run.deadline, key.clone()));
        }
        let shown = entry
            .status
            .current_run()
            .filter(|u| *u != uuid && !self.ended.contains(u));
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
}

fn entry_is_clear(st: &HealthCheckStatus) -> bool {
    st.current_uuid.is_empty() && st.run_deadline_unix.is_none()
}

#[cfg(test)]
mod tests;
