//! Heartbeat checks: a job's pings are their runs, recorded the moment they arrive (on any
//! replica: the status write makes them durable and known to the leader); silence past
//! `period` + `grace` is a failed run the leader records, again each `period` it lasts.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{from_unix, later, unix, Engine, Prior, Run};
use crate::api::heartbeat::Beat;
use crate::api::validate::Trigger;
use crate::api::{duration, CheckKey, HealthCheckStatus, RunCredential, RunResult};
use crate::engine::{Effect, Rejection};

/// When silence is next recorded as a miss: `period` + `grace` after the last ping (or after
/// the check was first seen), then each `period` after the last miss recorded. Read from the
/// status alone, so a new leader neither repeats a miss nor skips one.
pub(super) fn next_miss(
    st: &HealthCheckStatus,
    first_seen: DateTime<Utc>,
    period: Duration,
    grace: Duration,
) -> DateTime<Utc> {
    let since = st.last_ping_unix.map(from_unix).unwrap_or(first_seen);
    let first = later(later(since, period), grace);
    let recorded = from_unix(st.last_run_unix);
    if recorded < first {
        return first;
    }
    let step = period.as_secs().max(1) as i64;
    let missed = (recorded - first).num_seconds() / step + 1;
    first + chrono::Duration::seconds(missed * step)
}

impl Engine {
    pub(super) fn is_heartbeat(&self, key: &CheckKey) -> bool {
        self.checks.get(key).is_some_and(
            |e| matches!(&*e.plan, Ok(p) if matches!(p.trigger, Trigger::Heartbeat { .. })),
        )
    }

    /// A ping for `key` arrived at `now`. Any replica records it; the effects carry the
    /// status write that makes it durable.
    pub fn heartbeat(
        &mut self,
        now: DateTime<Utc>,
        key: &CheckKey,
        beat: Beat,
    ) -> (Vec<Effect>, Result<(), Rejection>) {
        let refused = || Rejection::NoHeartbeat { key: key.clone() };
        if !self.is_heartbeat(key) || self.checks[key].removed || self.checks[key].run.is_some() {
            return (Vec::new(), Err(refused()));
        }
        if self.draining {
            return (Vec::new(), Err(Rejection::ShuttingDown));
        }
        let entry = self.checks.get_mut(key).expect("present");
        let st = Arc::make_mut(&mut entry.status);
        let started = match beat {
            Beat::Start => {
                st.ping_started_unix = Some(unix(now));
                let effect = Effect::Save {
                    key: key.clone(),
                    view: Arc::new(self.view(key)),
                    persist: true,
                };
                return (vec![effect], Ok(()));
            }
            _ => st.ping_started_unix.take().map(from_unix).unwrap_or(now),
        };
        st.last_ping_unix = Some(unix(now));
        let result = match beat {
            Beat::Fail(said) if said.trim().is_empty() => {
                RunResult::failure("the job reported a failure")
            }
            Beat::Fail(said) => {
                RunResult::failure(format!("the job reported a failure: {}", said.trim()))
            }
            _ => RunResult::passed(),
        };
        let effects = self.record_now(now, key, started.min(now), result);
        (effects, Ok(()))
    }

    /// The leader found no ping by the time a miss was due.
    pub(super) fn heartbeat_missed(&mut self, now: DateTime<Utc>, key: &CheckKey) -> Vec<Effect> {
        let Some(entry) = self.checks.get(key) else {
            return Vec::new();
        };
        let Ok(plan) = &*entry.plan else {
            return Vec::new();
        };
        let Trigger::Heartbeat { period, grace } = plan.trigger else {
            return Vec::new();
        };
        if entry.removed || plan.suspend || entry.run.is_some() {
            return Vec::new();
        }
        let expected = format!(
            "expected every {}, grace {}",
            duration::human(period),
            duration::human(grace)
        );
        let message = match entry.status.last_ping_unix {
            Some(t) => format!(
                "no ping since {} ({} ago; {expected})",
                duration::rfc3339(t),
                duration::spell(unix(now) - t)
            ),
            None => format!(
                "no ping yet in {} ({expected})",
                duration::spell((now - entry.first_seen).num_seconds())
            ),
        };
        self.record_now(now, key, now, RunResult::failure(message))
    }

    /// Records `result` as a run of `key` that started at `started` and ended now, without a
    /// slot or a runner (a heartbeat's ping or silence), then arms its next miss.
    fn record_now(
        &mut self,
        now: DateTime<Utc>,
        key: &CheckKey,
        started: DateTime<Utc>,
        result: RunResult,
    ) -> Vec<Effect> {
        let uuid = RunCredential::new().run_id();
        let entry = self.checks.get_mut(key).expect("present");
        entry.run = Some(Run {
            uuid,
            started,
            deadline: now,
            timeout: Duration::ZERO,
            finished: false,
            prior: Prior::default(),
        });
        Arc::make_mut(&mut entry.status).last_run_unix = unix(started);
        let effects = self.finish(now, key, result);
        let entry = self.checks.get_mut(key).expect("present");
        entry.run = None;
        self.unschedule(key);
        self.schedule(key, now);
        effects
    }
}
