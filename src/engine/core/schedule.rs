//! Scheduling: when an idle check is next due (interval start to start, cron in its zone, the
//! first run after start-up spread over the interval), the queue of due checks waiting for a
//! slot, and starting runs, on schedule or asked for.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{from_unix, later, unix, Engine, Prior, Run};
use crate::api::protocol::pod_name;
use crate::api::validate::Trigger;
use crate::api::{CheckKey, RunCredential};
use crate::engine::{Effect, RunRefused, StartRun};
use std::sync::Arc;

/// How soon a run deferred for probity's own reasons is tried again.
pub(super) const DEFER_RETRY: Duration = Duration::from_secs(1);

/// A stable offset in `[0, window)` per check, so first runs after start-up are spread evenly
/// and a restart spreads them the same way.
pub(super) fn spread(key: &CheckKey, window: Duration) -> Duration {
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

impl Engine {
    /// Starts a run now (manual trigger, `probity run`), subject to the concurrency cap.
    pub fn run_now(
        &mut self,
        now: DateTime<Utc>,
        key: &CheckKey,
    ) -> Result<Vec<Effect>, RunRefused> {
        let entry = self
            .checks
            .get(key)
            .ok_or_else(|| RunRefused::NoCheck(key.clone()))?;
        if let Err(invalid) = &*entry.plan {
            return Err(RunRefused::Invalid {
                key: key.clone(),
                invalid: invalid.clone(),
            });
        }
        if entry.run.is_some() {
            return Err(RunRefused::InFlight(key.clone()));
        }
        if self.is_heartbeat(key) {
            return Err(RunRefused::Heartbeat(key.clone()));
        }
        if self.draining {
            return Err(RunRefused::ShuttingDown);
        }
        if !self.leader {
            return Err(RunRefused::NotLeader);
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
    ) -> Result<Vec<Effect>, RunRefused> {
        let entry = self
            .checks
            .get_mut(key)
            .ok_or_else(|| RunRefused::NoCheck(key.clone()))?;
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

    /// Starts queued runs while slots are free.
    pub(super) fn fill(&mut self, now: DateTime<Utc>) -> Vec<Effect> {
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
            let Ok(plan) = &*entry.plan else { continue };
            let credential = RunCredential::new();
            let uuid = credential.run_id();
            let timeout = plan.timeout;
            let deadline = later(now, timeout);
            let next = match &plan.trigger {
                _ if plan.single_run => None,
                Trigger::Interval(iv) => Some(later(now, *iv)),
                Trigger::Cron(c) => c.next_after(now),
                // Never queued (see `tick`); nothing to start.
                Trigger::Heartbeat { .. } => continue,
            };
            let st = Arc::make_mut(&mut entry.status);
            // The fields a start replaces are moved aside (not the whole status copied: that
            // would be one more status per run in flight), to be put back if it is deferred.
            let prior = Prior {
                current_uuid: std::mem::replace(&mut st.current_uuid, uuid.to_string()),
                last_run_unix: std::mem::replace(&mut st.last_run_unix, unix(now)),
                run_deadline_unix: st.run_deadline_unix.replace(unix(deadline)),
                authoritative_pod: std::mem::replace(
                    &mut st.authoritative_pod,
                    self.cfg.identity.clone(),
                ),
                pod_name: std::mem::replace(&mut st.pod_name, pod_name(&key, uuid)),
                start: entry.last_start.replace(now),
            };
            st.next_run_unix = next.map(unix);
            entry.run = Some(Run {
                uuid,
                started: now,
                deadline,
                timeout,
                finished: false,
                prior,
            });
            let check = entry.desired.check.clone();
            self.runs.insert(uuid, key.clone());
            self.deadlines.insert((deadline, key.clone()));
            // A pod's run in flight is stored, so a next leader adopts it and takes its report.
            // A probe's is not: it lasts a moment, ends with its replica, and its outcome is
            // stored when it ends; storing its start too would double the status writes.
            effects.push(self.save(&key, check.spec.probe.is_none()));
            effects.push(Effect::Started {
                key: key.clone(),
                lag: (now - due).to_std().unwrap_or_default(),
            });
            effects.push(Effect::Start(StartRun {
                key,
                uuid,
                credential,
                check,
                started: now,
                deadline,
                timeout,
                due,
            }));
        }
        effects
    }

    /// A run that could not start for probity's own reasons (`RunEnd::Deferred`): the check is
    /// as it was before the start, and due again after `DEFER_RETRY`. Nothing is recorded
    /// against it: it is not the check's failure.
    pub(super) fn defer(
        &mut self,
        now: DateTime<Utc>,
        key: CheckKey,
        reason: String,
    ) -> Vec<Effect> {
        let entry = self.checks.get_mut(&key).expect("a run holds the slot");
        let run = entry.run.take().expect("not finished, so present");
        self.deadlines.remove(&(run.deadline, key.clone()));
        let prior = run.prior;
        entry.last_start = prior.start;
        let st = Arc::make_mut(&mut entry.status);
        st.current_uuid = prior.current_uuid;
        st.last_run_unix = prior.last_run_unix;
        st.run_deadline_unix = prior.run_deadline_unix;
        st.authoritative_pod = prior.authoritative_pod;
        st.pod_name = prior.pod_name;
        let retry = later(now, DEFER_RETRY);
        let mut effects = Vec::new();
        if self.leader && !self.draining && !entry.removed {
            self.unschedule(&key);
            let entry = self.checks.get_mut(&key).expect("present");
            entry.due = Some(retry);
            Arc::make_mut(&mut entry.status).next_run_unix = Some(unix(retry));
            self.timers.insert((retry, key.clone()));
        }
        if self.checks[&key].removed {
            self.checks.remove(&key);
            effects.push(Effect::Forget { key: key.clone() });
        } else {
            effects.push(self.save(&key, true));
        }
        effects.push(Effect::Deferred { key, reason, retry });
        effects.extend(self.fill(now));
        effects
    }

    pub(super) fn unschedule(&mut self, key: &CheckKey) {
        if let Some(entry) = self.checks.get_mut(key) {
            if let Some(due) = entry.due.take() {
                self.timers.remove(&(due, key.clone()));
            }
            // A queued entry is skipped when popped.
            entry.queued = false;
        }
    }

    /// Works out when an idle check next runs and arms its timer.
    pub(super) fn schedule(&mut self, key: &CheckKey, now: DateTime<Utc>) {
        if !self.leader {
            return;
        }
        let due = self.compute_due(key, now);
        let entry = self.checks.get_mut(key).expect("present");
        entry.due = due;
        if entry.plan.is_ok() {
            let single_done = (*entry.plan).as_ref().is_ok_and(|p| p.single_run)
                && entry.status.last_run_unix > 0;
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

    pub(super) fn compute_due(&self, key: &CheckKey, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let e = self.checks.get(key)?;
        let plan = (*e.plan).as_ref().ok()?;
        if plan.suspend || self.draining || e.removed || e.departed {
            return None;
        }
        let has_run = e.status.last_run_unix > 0;
        if plan.single_run && has_run {
            return None;
        }
        let last = e
            .last_start
            .or(has_run.then(|| from_unix(e.status.last_run_unix)));
        let earliest = (!has_run).then(|| later(e.first_seen, plan.initial_delay));
        match &plan.trigger {
            Trigger::Interval(iv) => {
                let due = match (last, earliest) {
                    (Some(l), _) => later(l, *iv),
                    (None, Some(first)) => first,
                    (None, None) => now,
                };
                if due > now {
                    Some(due)
                } else if self.starting && earliest.is_none_or(|_| plan.initial_delay.is_zero()) {
                    // Overdue at start-up (restart, failover): spread over the interval instead
                    // of starting everything in the same second. A check that never ran (a first
                    // install) is spread over the first-run window only: its first result is
                    // wanted now, and it has no schedule to keep.
                    let window = if has_run {
                        *iv
                    } else {
                        self.cfg.first_run_window.min(*iv)
                    };
                    Some(later(now, spread(key, window)))
                } else {
                    Some(now)
                }
            }
            Trigger::Heartbeat { period, grace } => Some(super::heartbeat::next_miss(
                &e.status,
                e.first_seen,
                *period,
                *grace,
            )),
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
}
