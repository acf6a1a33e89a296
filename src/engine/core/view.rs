//! What the engine shows of a check: its view for the status page and the store, and the runs
//! its state names. Reads only; every decision is in the other modules.

use std::sync::Arc;

use super::{verdict, Engine};
use crate::api::validate::Trigger;
use crate::api::{CheckKey, RunId, RunRecord, RunResult};
use crate::engine::{CheckView, Effect};

impl Engine {
    /// The runs the state of `key` shows: the one in flight and those in its history.
    pub fn runs_shown(&self, key: &CheckKey) -> Vec<RunId> {
        let Some(e) = self.checks.get(key) else {
            return Vec::new();
        };
        let current = e.status.current_run();
        let past = e.status.history.iter().filter_map(RunRecord::run_id);
        current.into_iter().chain(past).collect()
    }

    /// Stores a check's state again for a run whose report was answered "not stored" and is
    /// now retried with the same verdict: the outcome is already recorded in memory. None when
    /// the recorded outcome is not this verdict (or the check's latest run is another one).
    pub fn persist_again(&self, uuid: RunId, result: &RunResult) -> Option<Effect> {
        let key = self.ended.key_of(&uuid)?;
        let e = self.checks.get(key)?;
        let latest = e.status.history.first()?;
        let same = latest.run_id() == Some(uuid)
            && latest.outcome == Some(result.outcome)
            && latest.errors == verdict::history_errors(&result.errors);
        same.then(|| Effect::Save {
            key: key.clone(),
            view: Arc::new(self.view(key)),
            persist: true,
        })
    }

    /// Publishes the state of `key`, and persists it when it changed and this is the leader
    /// (a follower persists only the outcomes of reports, in `finish`).
    pub(super) fn save(&self, key: &CheckKey, persist: bool) -> Effect {
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
        let (run_interval, schedule, timeout, single_run, suspended) = match &*e.plan {
            Ok(p) => (
                match &p.trigger {
                    Trigger::Interval(iv) => Some(*iv),
                    Trigger::Heartbeat { period, .. } => Some(*period),
                    Trigger::Cron(_) => None,
                },
                match &p.trigger {
                    Trigger::Cron(c) => Some(c.expr.clone()),
                    Trigger::Interval(_) | Trigger::Heartbeat { .. } => None,
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
            resource: e.desired.check.clone(),
            status: e.status.clone(),
            invalid: (*e.plan).as_ref().err().map(|i| i.to_string()),
            run_interval,
            schedule,
            timeout,
            single_run,
            suspended,
            severity: label("kuberhealthy.io/severity"),
            category: label("kuberhealthy.io/category"),
            depends_on: e.deps.clone(),
            departed: e
                .departed
                .then(|| e.status.departed.as_ref().map(|d| d.reason.clone()))
                .flatten(),
            memo: Default::default(),
        }
    }
}
