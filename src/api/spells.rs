//! A status' spells: when it turned failing or degraded, how often its verdict changed, and
//! what each receiver was told. Every replica reads the same from the status alone.

use super::run;
use super::{
    AlertRecord, Cause, Flap, HealthCheckStatus, Outcome, Standing, Transition, TRANSITIONS_LEN,
};

impl HealthCheckStatus {
    /// The run in flight, as the status names it (`currentUUID`).
    pub fn current_run(&self) -> Option<run::RunId> {
        run::parse_saved(&self.current_uuid)
    }

    /// The failing spell's start while the verdict is failing (statuses written before
    /// `failingSinceUnix` existed fall back to the last failure).
    pub fn failing_since(&self) -> Option<i64> {
        (!self.ok).then(|| self.failing_since_unix.unwrap_or(self.last_failure_unix))
    }

    /// Passing, and the last run failed only what was marked `severity: warning`.
    pub fn degraded(&self) -> bool {
        self.ok && self.standing == Some(Standing::Degraded)
    }

    /// The spell an alert route is told about: failing, or (for a route that takes it)
    /// degraded; the flag says which.
    pub fn alert_spell(&self, with_degraded: bool) -> Option<(i64, bool)> {
        self.failing_since().map(|s| (s, false)).or_else(|| {
            (with_degraded && self.degraded())
                .then(|| (self.degraded_since_unix.unwrap_or(self.last_run_unix), true))
        })
    }

    /// Whether the verdict changes too often to notify on each change (see `Flap`). Counted
    /// from `transitions`, so every replica and every restart sees the same.
    pub fn flapping(&self, now_unix: i64, flap: Flap) -> bool {
        flap.changes > 0 && self.changes_within(now_unix, flap.window_secs) >= flap.changes
    }

    /// Verdict changes within the last `window_secs` (at most `TRANSITIONS_LEN`).
    pub fn changes_within(&self, now_unix: i64, window_secs: i64) -> usize {
        self.transitions
            .iter()
            .take_while(|t| t.at_unix > now_unix - window_secs)
            .count()
    }

    /// While failing, the cause of the newest failed run (a check invalid before any run
    /// failed: its owner's, `target`).
    pub fn cause(&self) -> Option<Cause> {
        if self.ok {
            return None;
        }
        self.history
            .iter()
            .find_map(|h| h.outcome.and_then(Outcome::cause))
            .or(Some(Cause::Target))
    }

    /// Whether some receiver was last told the check fails.
    pub fn alerts_open(&self) -> bool {
        self.alerts.iter().any(|a| a.firing)
    }

    /// The cause of the newest failed run, whatever the verdict now: what a flapping check's
    /// failures are about, when it happens to pass.
    pub fn recent_cause(&self) -> Option<Cause> {
        self.history
            .iter()
            .find_map(|h| h.outcome.and_then(Outcome::cause))
    }

    /// What `receiver` was last told.
    pub fn alert(&self, receiver: &str) -> Option<&AlertRecord> {
        self.alerts.iter().find(|a| a.receiver == receiver)
    }

    /// Keeps `failingSinceUnix`, `degradedSinceUnix` and `transitions` in step with the
    /// verdict: a spell starts when it turns failing (degraded) and ends when it no longer is.
    pub fn track_failing_since(&mut self, now_unix: i64) {
        let turned = match (self.ok, self.failing_since_unix) {
            (true, Some(_)) => {
                self.failing_since_unix = None;
                true
            }
            (false, None) => {
                self.failing_since_unix = Some(now_unix);
                true
            }
            _ => false,
        };
        self.degraded_since_unix = match (self.degraded(), self.degraded_since_unix) {
            (true, since) => since.or(Some(now_unix)),
            (false, _) => None,
        };
        if !self.degraded() {
            self.warnings.clear();
        }
        if turned {
            self.transitions.insert(
                0,
                Transition {
                    at_unix: now_unix,
                    ok: self.ok,
                },
            );
            self.transitions.truncate(TRANSITIONS_LEN);
        }
    }
}
