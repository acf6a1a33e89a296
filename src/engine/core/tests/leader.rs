//! Leader and follower: adopting, letting go, state written elsewhere.

use super::*;

#[test]
fn a_follower_never_starts_times_out_or_writes_on_its_own() {
    let uuid = RunId::random();
    let (mut e, fx) = follower(Some(in_flight(uuid)));
    assert!(adopted(&fx).is_empty() && persisted(&fx) == 0);
    for s in [0, 30, 60, 600] {
        let fx = e.tick(t0() + secs(s));
        assert!(fx.is_empty(), "tick at +{s}s: {fx:?}");
    }
    assert_eq!(e.next_wakeup(), None);
    assert!(e.run_now(t0(), &key("a")).is_err());
    // A report after the deadline is refused without writing: the leader records the timeout.
    let (fx, r) = e.report(t0() + secs(26), uuid, RunResult::reported(true, vec![]));
    assert_eq!(wire(&r.unwrap_err()), 410);
    assert!(fx.is_empty());
}

#[test]
fn a_follower_accepts_a_report_of_the_run_the_state_shows_and_persists_the_outcome() {
    let uuid = RunId::random();
    let (mut e, _) = follower(Some(in_flight(uuid)));
    let (fx, r) = e.report(
        t0() + secs(3),
        uuid,
        RunResult::reported(false, vec!["dns down".into()]),
    );
    assert_eq!(r, Ok(()));
    assert_eq!(persisted(&fx), 1);
    assert_eq!(finished(&fx)[0].0, Outcome::Failure);
    let st = e.status(&key("a")).unwrap();
    assert!(st.current_uuid.is_empty() && !st.ok && st.failure_count == 1);
    // Once only, and the slot is not held waiting for a pod it does not watch.
    assert_eq!(
        wire(
            &e.report(t0() + secs(4), uuid, RunResult::reported(true, vec![]))
                .1
                .unwrap_err()
        ),
        400
    );
    assert_eq!(e.in_flight(), 0);
}

#[test]
fn a_new_leader_adopts_runs_in_flight_and_does_not_rerun_checks_not_due() {
    let running = RunId::random();
    let mut e = engine(0);
    e.finish_startup();
    e.set_leader(t0(), false);
    e.upsert(
        t0(),
        check("a", "  runInterval: 1m\n  timeout: 30s\n"),
        Some(in_flight(running)),
    );
    // b ran 10s ago: due in 50s, not at the failover.
    let idle = HealthCheckStatus {
        ok: true,
        last_run_unix: (t0() - secs(10)).timestamp(),
        ..Default::default()
    };
    e.upsert(t0(), check("b", "  runInterval: 1m\n"), Some(idle));
    let fx = e.set_leader(t0() + secs(1), true);
    assert_eq!(adopted(&fx), vec![running]);
    assert!(starts(&fx).is_empty());
    assert_eq!(persisted(&fx), 0, "a failover writes nothing by itself");
    // The adopted run's deadline is re-armed from the state.
    let fx = e.tick(t0() + secs(25));
    assert_eq!(finished(&fx)[0].0, Outcome::Timeout);
    assert!(starts(&fx).is_empty());
    assert!(starts(&e.tick(t0() + secs(49))).is_empty());
    assert_eq!(starts(&e.tick(t0() + secs(50)))[0].0, key("b"));
}

#[test]
fn a_leader_that_steps_down_lets_go_of_its_runs_without_stopping_them() {
    let (mut e, _) = one("  runInterval: 1m\n  timeout: 30s\n");
    let (_, uuid) = starts(&e.tick(t0()))[0];
    let fx = e.set_leader(t0() + secs(1), false);
    assert!(fx
        .iter()
        .any(|f| matches!(f, Effect::Disown { uuid: u, .. } if *u == uuid)));
    assert!(!fx.iter().any(|f| matches!(f, Effect::Stop { .. })));
    // Nothing more is started or timed out here; the report is still accepted.
    assert!(e.tick(t0() + secs(120)).is_empty());
    assert_eq!(
        e.report(t0() + secs(5), uuid, RunResult::reported(true, vec![]))
            .1,
        Ok(())
    );
}

#[test]
fn an_outcome_recorded_elsewhere_ends_the_leaders_run_once() {
    let (mut e, _) = one("  runInterval: 1m\n  timeout: 30s\n");
    let (_, uuid) = starts(&e.tick(t0()))[0];
    // A follower accepted the report and wrote the outcome.
    let mut theirs = e.status(&key("a")).unwrap().clone();
    theirs.current_uuid.clear();
    theirs.run_deadline_unix = None;
    theirs.last_outcome = Some(Outcome::Success);
    theirs.success_count = 1;
    let fx = e.upsert(
        t0() + secs(3),
        check("a", "  runInterval: 1m\n  timeout: 30s\n"),
        Some(theirs),
    );
    assert!(finished(&fx).is_empty() && persisted(&fx) == 0);
    assert_eq!(e.status(&key("a")).unwrap().success_count, 1);
    // Not timed out later, and a second report is refused.
    assert!(finished(&e.tick(t0() + secs(31))).is_empty());
    assert_eq!(
        wire(
            &e.report(t0() + secs(4), uuid, RunResult::reported(true, vec![]))
                .1
                .unwrap_err()
        ),
        400
    );
    // The pod exits; the slot frees and the next run is one interval after the start.
    let fx = e.release(t0() + secs(5), uuid, exited("done"));
    assert!(finished(&fx).is_empty());
    assert_eq!(e.due(&key("a")), Some(t0() + secs(60)));
}

#[test]
fn a_run_another_replica_started_is_tracked_not_duplicated() {
    let (mut e, _) = one("  runInterval: 1m\n  timeout: 30s\n");
    let other = RunId::random();
    let fx = e.upsert(
        t0(),
        check("a", "  runInterval: 1m\n  timeout: 30s\n"),
        Some(in_flight(other)),
    );
    assert_eq!(adopted(&fx), vec![other]);
    assert!(starts(&e.tick(t0() + secs(20))).is_empty());
    assert_eq!(e.current_run(&key("a")), Some(other));
}
