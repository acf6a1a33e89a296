//! Verdicts: what a run's outcome does to its check (counters, thresholds that flip `ok`,
//! history), and what invalidity does (the `Invalid` condition, the published error).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{unix, EndedBy, Engine, Entry};
use crate::api::{aggregate, truncate, AlertRecord, CheckKey, RunRecord, RunResult, HISTORY_LEN};
use crate::engine::Effect;

/// Limits on what one history entry keeps of a run's errors.
const HISTORY_ERRORS: usize = 5;
const HISTORY_ERROR_LEN: usize = 512;

impl Engine {
    /// Records whether the check is invalid, on its status: an `Invalid` condition, and the
    /// published verdict failing with the reason, so it is seen wherever the check is.
    pub(super) fn apply_validity(entry: &mut Entry, now: DateTime<Utc>) {
        let was_invalid = entry
            .status
            .condition("Invalid")
            .is_some_and(|c| c.status == "True");
        if entry.plan.is_ok() && !was_invalid {
            return;
        }
        let (now_unix, now) = (unix(now), &now.to_rfc3339());
        let st = Arc::make_mut(&mut entry.status);
        match &*entry.plan {
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
        st.track_failing_since(now_unix);
    }

    /// Records that a notification receiver was told of the check's state. Only the leader
    /// records (only its notifier sends); the status write makes it known to the next leader.
    pub fn notified(&mut self, key: &CheckKey, record: AlertRecord) -> Vec<Effect> {
        if !self.leader {
            return Vec::new();
        }
        let Some(entry) = self.checks.get_mut(key) else {
            return Vec::new();
        };
        let st = Arc::make_mut(&mut entry.status);
        match st.alerts.iter_mut().find(|a| a.receiver == record.receiver) {
            Some(a) if *a == record => return Vec::new(),
            Some(a) => *a = record,
            None => st.alerts.push(record),
        }
        let mut effects = vec![self.save(key, true)];
        effects.extend(self.finish_departure(key));
        effects
    }

    /// Records the one outcome of the run in flight of `key`.
    pub(super) fn finish(
        &mut self,
        now: DateTime<Utc>,
        key: &CheckKey,
        result: RunResult,
    ) -> Vec<Effect> {
        let outcome = result.outcome;
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
        let (success_threshold, failure_threshold, single_run) = match &*entry.plan {
            Ok(p) => (p.success_threshold, p.failure_threshold, p.single_run),
            Err(_) => (1, 1, false),
        };
        let st = Arc::make_mut(&mut entry.status);
        st.run_duration = duration.as_nanos().min(i64::MAX as u128) as i64;
        st.current_uuid.clear();
        st.run_deadline_unix = None;
        st.pod_name.clear();
        st.last_outcome = Some(outcome);
        aggregate::record(st, outcome, now, duration);
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
            st.standing = result.standing;
            if result.is_degraded() {
                st.warnings = history_errors(&result.warnings);
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
                st.errors = result.errors.clone();
            }
            st.standing = None;
        }
        if entry.plan.is_err() {
            // Still invalid (changed while running): keep saying so.
            st.ok = false;
        }
        if !result.values.is_empty() {
            st.values = result.values.clone();
        }
        st.track_failing_since(unix(now));
        aggregate::settle(st, now);
        st.history.insert(
            0,
            RunRecord {
                uuid: Some(uuid),
                start_unix: unix(started),
                run_duration: st.run_duration,
                outcome: Some(outcome),
                cause: outcome.cause(),
                // A degraded run's record says what degraded it.
                errors: history_errors(if result.is_degraded() {
                    &result.warnings
                } else {
                    &result.errors
                }),
                standing: result.standing,
                timings: result.timings.clone(),
                values: result.values.clone(),
            },
        );
        st.history.truncate(HISTORY_LEN);
        st.next_run_unix = if single_run { None } else { st.next_run_unix };
        self.ended
            .remember(uuid, key.clone(), EndedBy::Outcome(outcome), deadline);
        vec![
            Effect::Save {
                key: key.clone(),
                view: Arc::new(self.view(key)),
                persist: true,
            },
            Effect::Finished {
                key: key.clone(),
                uuid,
                result,
                duration,
                probe: self.checks[key]
                    .desired
                    .check
                    .spec
                    .probe
                    .as_ref()
                    .and_then(|p| p.kind()),
            },
        ]
    }
}

/// A run's errors as its history entry keeps them: the first few, each cut short.
pub(super) fn history_errors(errors: &[String]) -> Vec<String> {
    errors
        .iter()
        .take(HISTORY_ERRORS)
        .map(|e| truncate(e, HISTORY_ERROR_LEN))
        .collect()
}
