//! Heartbeat checks: pings are runs, silence is a failure said each period, and any replica
//! records a ping that the next leader then counts from.

use super::*;
use crate::api::heartbeat::{token_hash, Beat};

const SPEC: &str = "  heartbeat: {period: 1h, grace: 5m, tokenHash: HASH}\n";

fn beating(name: &str) -> Desired {
    let text = format!(
        "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: {name}, namespace: ns}}\nspec:\n{}",
        SPEC.replace("HASH", &token_hash("t"))
    );
    let hc: HealthCheck = parse_documents(&text).unwrap().remove(0).check.unwrap();
    Desired::new(Arc::new(hc), None)
}

fn leader_with_beat() -> Engine {
    let mut e = engine(0);
    e.finish_startup();
    let fx = e.upsert(t0(), beating("a"), None);
    assert!(starts(&fx).is_empty(), "a heartbeat check starts nothing");
    e
}

#[test]
fn pings_are_runs_and_silence_fails_once_each_period() {
    let mut e = leader_with_beat();
    assert!(e.view(&key("a")).invalid.is_none());
    // Never pinged: the first miss is due a period and the grace after it was first seen.
    assert_eq!(e.due(&key("a")), Some(t0() + secs(3600 + 300)));
    assert!(e.tick(t0() + secs(3600 + 299)).is_empty());
    let fx = e.tick(t0() + secs(3600 + 300));
    assert_eq!(
        finished(&fx),
        [(
            Outcome::Failure,
            vec!["no ping yet in 1h 5m (expected every 1h, grace 5m)".to_string()]
        )]
    );
    assert_eq!(persisted(&fx), 1);
    // Still silent: said again a period later, not every tick.
    assert!(finished(&e.tick(t0() + secs(3600 + 300 + 3599))).is_empty());
    assert_eq!(finished(&e.tick(t0() + secs(2 * 3600 + 300))).len(), 1);
    // The job starts, then pings: a passing run as long as the job took.
    let at = t0() + secs(3 * 3600);
    let (fx, r) = e.heartbeat(at, &key("a"), Beat::Start);
    r.unwrap();
    assert_eq!(
        (persisted(&fx), finished(&fx).len()),
        (1, 0),
        "a start is stored, not a run"
    );
    let (fx, r) = e.heartbeat(at + secs(42), &key("a"), Beat::Success);
    r.unwrap();
    assert_eq!(finished(&fx), [(Outcome::Success, vec![])]);
    let st = e.status(&key("a")).unwrap();
    assert!(st.ok);
    assert_eq!(st.last_ping_unix, Some((at + secs(42)).timestamp()));
    assert_eq!(st.ping_started_unix, None);
    assert_eq!(st.history[0].run_duration, 42_000_000_000);
    assert_eq!(st.history[0].start_unix, at.timestamp());
    // The next miss counts from the ping.
    assert_eq!(e.due(&key("a")), Some(at + secs(42 + 3600 + 300)));
    let fx = e.tick(at + secs(42 + 3600 + 300));
    let (_, errors) = &finished(&fx)[0];
    assert_eq!(
        errors[0],
        "no ping since 2026-11-22T13:00:42Z (1h 5m ago; expected every 1h, grace 5m)"
    );
    // A failing job says so.
    let (fx, r) = e.heartbeat(at + secs(7200), &key("a"), Beat::Fail("disk full".into()));
    r.unwrap();
    assert_eq!(
        finished(&fx),
        [(
            Outcome::Failure,
            vec!["the job reported a failure: disk full".to_string()]
        )]
    );
    // No manual runs: the job's pings are its runs.
    assert!(matches!(
        e.run_now(at + secs(7200), &key("a")),
        Err(crate::engine::RunRefused::Heartbeat(_))
    ));
    // Not a heartbeat check: refused, nothing recorded.
    e.upsert(t0(), check("pod", "  runInterval: 1m\n"), None);
    let (fx, r) = e.heartbeat(at, &key("pod"), Beat::Success);
    assert!(fx.is_empty() && matches!(r, Err(Rejection::NoHeartbeat { .. })));
}

#[test]
fn a_ping_to_a_follower_is_stored_and_the_next_leader_counts_from_it() {
    let mut follower = engine(0);
    follower.finish_startup();
    follower.set_leader(t0(), false);
    follower.upsert(t0(), beating("a"), None);
    let at = t0() + secs(3000);
    let (fx, r) = follower.heartbeat(at, &key("a"), Beat::Success);
    r.unwrap();
    assert_eq!(persisted(&fx), 1, "a follower stores the ping it took");
    assert!(
        follower.tick(t0() + secs(9 * 3600)).is_empty(),
        "a follower records no miss"
    );
    let stored = follower.status(&key("a")).unwrap().clone();
    // The leader dies; a new one starts from the stored status.
    let mut next = engine(0);
    next.upsert(at + secs(10), beating("a"), Some(stored));
    next.finish_startup();
    next.set_leader(at + secs(10), true);
    assert_eq!(next.due(&key("a")), Some(at + secs(3600 + 300)));
    assert!(finished(&next.tick(at + secs(3600 + 299))).is_empty());
    assert_eq!(finished(&next.tick(at + secs(3600 + 300))).len(), 1);
}
