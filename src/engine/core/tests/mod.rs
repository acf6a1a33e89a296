//! The engine's rules, tested by calling it with the times that matter; helpers shared here.

mod depart;
mod depends;
mod heartbeat;
mod leader;
mod runs;
mod schedule;
mod verdict;

use super::*;
use crate::api::load::parse_documents;
use crate::api::validate::Invalid;
use crate::api::{HealthCheck, Outcome, RunResult, HISTORY_LEN};

/// The status a refusal is answered with (the server's mapping, `server::report::ReportError`):
/// these tests say what a check's client sees, 400 "never retry" or 410 "too late".
pub(super) fn wire(r: &Rejection) -> u16 {
    match r {
        Rejection::TimedOut { .. } | Rejection::PastDeadline { .. } => 410,
        Rejection::ShuttingDown | Rejection::Overloaded => 503,
        Rejection::NotStored(_) => 500,
        _ => 400,
    }
}

use chrono::TimeZone;

pub(super) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap()
}

pub(super) fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

pub(super) fn engine(cap: usize) -> Engine {
    Engine::new(EngineConfig {
        identity: "replica-a".into(),
        max_concurrent_runs: cap,
        defaults: Defaults::default(),
        first_run_window: FIRST_RUN_WINDOW,
        keep_departed: false,
    })
}

pub(super) fn check(name: &str, spec: &str) -> Desired {
    let text = format!(
        "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: {name}, namespace: ns}}\nspec:\n  podSpec: {{spec: {{containers: [{{name: c, image: i, command: [x]}}]}}}}\n{spec}"
    );
    let doc = parse_documents(&text).unwrap().remove(0);
    let hc: HealthCheck = doc.check.unwrap();
    Desired::new(Arc::new(hc), None)
}

pub(super) fn key(name: &str) -> CheckKey {
    CheckKey::new("ns", name)
}

pub(super) fn starts(effects: &[Effect]) -> Vec<(CheckKey, RunId)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Start(r) => Some((r.key.clone(), r.uuid)),
            _ => None,
        })
        .collect()
}

pub(super) fn finished(effects: &[Effect]) -> Vec<(Outcome, Vec<String>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Finished { result, .. } => Some((result.outcome, result.errors.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn exited(msg: &str) -> RunEnd {
    RunEnd::crashed(msg)
}

/// A running engine (start-up over) with one check added at t0.
pub(super) fn one(spec: &str) -> (Engine, Vec<Effect>) {
    let mut e = engine(0);
    e.finish_startup();
    let fx = e.upsert(t0(), check("a", spec), None);
    (e, fx)
}

pub(super) fn run_once(e: &mut Engine, at: DateTime<Utc>, ok: bool) -> Vec<Effect> {
    e.run_now(at, &key("a")).unwrap();
    let uuid = e.current_run(&key("a")).unwrap();
    let errors = if ok {
        vec![]
    } else {
        vec![format!("failed at {at}")]
    };
    let (fx, v) = e.report(at, uuid, RunResult::reported(ok, errors));
    v.unwrap();
    e.release(at, uuid, exited("done"));
    fx
}

/// Saved state of a check whose run `uuid` started 5 s before t0, deadline 25 s after it.
pub(super) fn in_flight(uuid: RunId) -> HealthCheckStatus {
    HealthCheckStatus {
        ok: true,
        current_uuid: uuid.to_string(),
        last_run_unix: (t0() - secs(5)).timestamp(),
        run_deadline_unix: Some((t0() + secs(25)).timestamp()),
        ..Default::default()
    }
}

pub(super) fn persisted(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Save { persist: true, .. }))
        .count()
}

pub(super) fn adopted(effects: &[Effect]) -> Vec<RunId> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Adopt { uuid, .. } => Some(*uuid),
            _ => None,
        })
        .collect()
}

/// A follower: start-up over, not leading, one check whose stored state is `saved`.
pub(super) fn follower(saved: Option<HealthCheckStatus>) -> (Engine, Vec<Effect>) {
    let mut e = engine(0);
    e.finish_startup();
    assert!(e.set_leader(t0(), false).is_empty());
    let fx = e.upsert(
        t0(),
        check("a", "  runInterval: 1m\n  timeout: 30s\n"),
        saved,
    );
    (e, fx)
}
