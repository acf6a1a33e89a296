//! Leadership and state written elsewhere: becoming leader (adopting runs in flight) or
//! follower (letting go of them), and taking in a status another replica or a person wrote.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{from_unix, later, EndedBy, Engine, Prior, Run};
use crate::api::{CheckKey, HealthCheckStatus, RunId};
use crate::engine::Effect;

impl Engine {
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
    pub(super) fn track(&mut self, key: &CheckKey, uuid: RunId) -> Option<Effect> {
        let entry = self.checks.get_mut(key).expect("present");
        let started = from_unix(entry.status.last_run_unix);
        let timeout = (*entry.plan)
            .as_ref()
            .map_or(self.cfg.defaults.timeout, |p| p.timeout);
        let deadline = entry
            .status
            .run_deadline_unix
            .map_or(later(started, timeout), from_unix);
        entry.run = Some(Run {
            uuid,
            started,
            deadline,
            timeout,
            finished: false,
            // Adopted runs are already going: never deferred.
            prior: Prior::default(),
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
    pub(super) fn observe(
        &mut self,
        now: DateTime<Utc>,
        key: &CheckKey,
        mut observed: HealthCheckStatus,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let leader = self.leader;
        let entry = self.checks.get_mut(key).expect("present");
        observed.namespace = key.namespace().to_string();
        let theirs = observed.current_run();
        let outcome = observed.last_outcome;
        entry.status = Arc::new(observed);
        Self::apply_validity(entry, now);
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
                    self.ended.remember(uuid, key.clone(), by, deadline);
                }
            }
        }
        if self.checks[key].run.is_none() {
            match theirs {
                Some(uuid) if !self.ended.contains(&uuid) => {
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
}
