//! Adding or updating a check (`upsert`, whether it stays or leaves), and checks that leave
//! while receivers have open alerts about them. The alert must be resolved
//! ("deleted" is news too), so the check is kept, running no more, until its receivers are
//! told; its status keeps why (`departed`), so a restart or a new leader carries on. In a
//! cluster the HealthCheck itself is kept for this by probity's finalizer and removed by the
//! watch once it goes; locally the engine removes it when nothing is left to resolve
//! (`EngineConfig::keep_departed`).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{unix, Engine};
use crate::api::{CheckKey, Departure, HealthCheckStatus};
use crate::engine::{Desired, Effect, StopReason};

impl Engine {
    /// Adds or updates a check. `saved` is its stored state, used the first time it is seen.
    pub fn upsert(
        &mut self,
        now: DateTime<Utc>,
        desired: Desired,
        saved: Option<HealthCheckStatus>,
    ) -> Vec<Effect> {
        let key = CheckKey::of(&desired.check);
        let departing = desired.departed.clone();
        let back = departing.is_none() && self.checks.get(&key).is_some_and(|e| e.departed);
        if back {
            self.checks.get_mut(&key).expect("present").departed = false;
        }
        let mut effects = self.upsert_desired(now, desired, saved, &key);
        match departing {
            Some(reason) => effects.extend(self.depart(now, &key, &reason)),
            None => {
                // Back before its alerts were resolved (a file restored, a HealthCheck created
                // again), or a saved state from when it had left: a check like any other;
                // what was told stands.
                let e = self.checks.get_mut(&key).expect("upserted");
                let had = e.status.departed.is_some();
                if had {
                    Arc::make_mut(&mut e.status).departed = None;
                }
                if back && e.run.is_none() {
                    self.unschedule(&key);
                    self.schedule(&key, now);
                }
                if back || had {
                    effects.push(self.save(&key, true));
                }
            }
        }
        effects
    }

    /// `key` leaves for `reason`: its run in flight is stopped, nothing more is scheduled, and
    /// the status says why, with the labels its alerts are routed by.
    pub(super) fn depart(
        &mut self,
        now: DateTime<Utc>,
        key: &CheckKey,
        reason: &str,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        self.unschedule(key);
        let Some(entry) = self.checks.get_mut(key) else {
            return effects;
        };
        entry.departed = true;
        let in_flight = entry.run.as_ref().map(|r| r.uuid);
        let ended = self.end_run_as_deleted(key);
        if let Some(uuid) = in_flight.filter(|_| ended) {
            effects.push(Effect::Stop {
                key: key.clone(),
                uuid,
                reason: StopReason::Removed,
            });
        }
        let entry = self.checks.get_mut(key).expect("present");
        let before = entry.status.clone();
        let st = Arc::make_mut(&mut entry.status);
        if st.departed.as_ref().is_none_or(|d| d.reason != reason) {
            st.departed = Some(Departure {
                reason: reason.to_string(),
                at_unix: unix(now),
                labels: entry
                    .desired
                    .check
                    .metadata
                    .labels
                    .clone()
                    .unwrap_or_default(),
            });
        }
        if st.next_run_unix.is_some() {
            st.next_run_unix = None;
        }
        // In a cluster every status write comes back as the same departure: written once.
        let persist = *entry.status != *before;
        effects.push(self.save(key, persist));
        effects.extend(self.finish_departure(key));
        effects
    }

    /// Removes a departed check once no receiver has an open alert about it (when this engine
    /// is the one that removes them).
    pub(super) fn finish_departure(&mut self, key: &CheckKey) -> Vec<Effect> {
        let done = self.cfg.keep_departed
            && self
                .checks
                .get(key)
                .is_some_and(|e| e.departed && !e.status.alerts_open());
        if !done {
            return Vec::new();
        }
        self.plans.forget(key);
        let entry = self.checks.get_mut(key).expect("checked");
        if entry.run.is_some() {
            // Dropped when the run lets go of its slot.
            entry.removed = true;
            return Vec::new();
        }
        self.checks.remove(key);
        vec![Effect::Forget { key: key.clone() }]
    }
}
