//! The life of a run: one at a time, reports, deadlines, ends without a report, deletion, adoption from saved state.

use super::*;

#[test]
fn never_two_runs_of_a_check_at_once() {
    // The timeout is longer than the interval.
    let (mut e, _) = one("  runInterval: 10s\n  timeout: 30s\n");
    let (_, uuid) = starts(&e.tick(t0()))[0];
    for s in [10, 20, 29] {
        assert!(starts(&e.tick(t0() + secs(s))).is_empty(), "at {s}s");
    }
    let fx = e.tick(t0() + secs(30));
    assert_eq!(
        finished(&fx),
        vec![(
            Outcome::Timeout,
            vec!["timeout after 30s: no report by the deadline; the run was stopped".to_string()]
        )]
    );
    assert!(fx.iter().any(
        |f| matches!(f, Effect::Stop { uuid: u, reason: StopReason::Timeout, .. } if *u == uuid)
    ));
    // Killed but not yet gone: still no second run.
    assert!(starts(&e.tick(t0() + secs(31))).is_empty());
    // Gone: the overdue run starts at once.
    let fx = e.release(t0() + secs(31), uuid, exited("killed by signal 9"));
    assert!(finished(&fx).is_empty(), "the timeout was its one outcome");
    assert_eq!(starts(&e.tick(t0() + secs(31))).len(), 1);
}

#[test]
fn a_reported_run_that_lingers_is_stopped_at_its_deadline() {
    let (mut e, _) = one("  runInterval: 10s\n  timeout: 30s\n");
    let (_, uuid) = starts(&e.tick(t0()))[0];
    e.report(t0() + secs(1), uuid, RunResult::reported(true, vec![]))
        .1
        .unwrap();
    assert!(starts(&e.tick(t0() + secs(10))).is_empty());
    let fx = e.tick(t0() + secs(30));
    assert!(finished(&fx).is_empty());
    assert!(fx.iter().any(|f| matches!(f, Effect::Stop { .. })));
}

#[test]
fn reports_are_accepted_once_and_refused_with_reasons() {
    let (mut e, _) = one("  runInterval: 1m\n  timeout: 10s\n");
    let (_, uuid) = starts(&e.tick(t0()))[0];
    let unknown = RunId::random();
    let (_, v) = e.report(t0(), unknown, RunResult::reported(true, vec![]));
    let r = v.unwrap_err();
    assert_eq!(wire(&r), 400);
    assert!(r.to_string().contains("unknown run UUID"));
    assert_eq!(
        e.report(t0() + secs(1), uuid, RunResult::reported(true, vec![]))
            .1,
        Ok(())
    );
    let (fx, v) = e.report(
        t0() + secs(2),
        uuid,
        RunResult::reported(false, vec!["x".into()]),
    );
    let r = v.unwrap_err();
    assert_eq!(wire(&r), 400);
    assert!(r.to_string().contains("already reported (Success)"), "{r}");
    assert!(fx.is_empty(), "a duplicate changes nothing");
    assert_eq!(e.status(&key("a")).unwrap().success_count, 1);
}

#[test]
fn late_reports_get_410_and_the_timeout_is_the_outcome() {
    let (mut e, _) = one("  runInterval: 1m\n  timeout: 10s\n");
    let (_, uuid) = starts(&e.tick(t0()))[0];
    // After the deadline but before the timer fired.
    let (fx, v) = e.report(t0() + secs(11), uuid, RunResult::reported(true, vec![]));
    assert_eq!(wire(&v.unwrap_err()), 410);
    assert_eq!(finished(&fx)[0].0, Outcome::Timeout);
    // The timer then finds nothing more to record.
    assert!(finished(&e.tick(t0() + secs(12))).is_empty());
    // And once the timeout is recorded, a report is late too.
    let (mut e, _) = one("  runInterval: 1m\n  timeout: 10s\n");
    let (_, uuid) = starts(&e.tick(t0()))[0];
    e.tick(t0() + secs(10));
    let (_, v) = e.report(t0() + secs(15), uuid, RunResult::reported(true, vec![]));
    let r = v.unwrap_err();
    assert_eq!(wire(&r), 410);
    assert!(r.to_string().contains("timed out"), "{r}");
    let st = e.status(&key("a")).unwrap();
    assert_eq!((st.failure_count, st.success_count), (1, 0));
}

#[test]
fn exit_without_report_and_start_failure_end_the_run() {
    let (mut e, _) = one("  runInterval: 1m\n");
    let (_, uuid) = starts(&e.tick(t0()))[0];
    let fx = e.release(
        t0() + secs(2),
        uuid,
        RunEnd::crashed("exited with code 3 without reporting"),
    );
    assert_eq!(
        finished(&fx),
        vec![(
            Outcome::Crash,
            vec!["exited with code 3 without reporting".to_string()]
        )]
    );
    let (_, v) = e.report(t0() + secs(3), uuid, RunResult::reported(true, vec![]));
    assert!(v.unwrap_err().to_string().contains("already ended (Crash)"));
    let (_, uuid) = starts(&e.tick(t0() + secs(60)))[0];
    let fx = e.release(
        t0() + secs(60),
        uuid,
        RunEnd::start_failed("start \"nope\": not found"),
    );
    assert_eq!(finished(&fx)[0].0, Outcome::StartFailure);
    // A release after the outcome adds nothing.
    assert!(e.release(t0() + secs(61), uuid, exited("again")).is_empty());
}

#[test]
fn deleting_a_running_check_stops_its_run_and_forgets_it_when_gone() {
    let (mut e, _) = one("  runInterval: 1m\n");
    let (_, uuid) = starts(&e.tick(t0()))[0];
    let fx = e.remove(t0() + secs(1), &key("a"));
    assert!(fx.iter().any(|f| matches!(
        f,
        Effect::Stop {
            reason: StopReason::Removed,
            ..
        }
    )));
    let (_, v) = e.report(t0() + secs(2), uuid, RunResult::reported(true, vec![]));
    assert!(v.unwrap_err().to_string().contains("deleted"));
    let fx = e.release(t0() + secs(2), uuid, exited("killed"));
    assert!(fx.iter().any(|f| matches!(f, Effect::Forget { .. })));
    assert!(finished(&fx).is_empty());
    assert!(e.is_empty());
}

#[test]
fn a_run_in_flight_in_saved_state_is_adopted_not_restarted() {
    let uuid = RunId::random();
    let saved = in_flight(uuid);
    let mut e = engine(0);
    let fx = e.upsert(
        t0(),
        check("a", "  runInterval: 1m\n  timeout: 30s\n"),
        Some(saved),
    );
    assert!(fx
        .iter()
        .any(|f| matches!(f, Effect::Adopt { uuid: u, .. } if *u == uuid)));
    assert!(starts(&fx).is_empty());
    e.finish_startup();
    assert!(starts(&e.tick(t0() + secs(10))).is_empty());
    assert_eq!(
        e.report(t0() + secs(10), uuid, RunResult::reported(true, vec![]))
            .1,
        Ok(())
    );
    let fx = e.release(t0() + secs(11), uuid, exited("gone"));
    assert!(finished(&fx).is_empty());
    // The next run is one interval after the adopted run's start.
    assert_eq!(e.due(&key("a")), Some(t0() + secs(55)));
}

#[test]
fn an_adopted_run_that_never_reports_times_out_at_its_saved_deadline() {
    let uuid = RunId::random();
    let saved = in_flight(uuid);
    let mut e = engine(0);
    e.upsert(
        t0(),
        check("a", "  runInterval: 1m\n  timeout: 30s\n"),
        Some(saved),
    );
    assert!(finished(&e.tick(t0() + secs(24))).is_empty());
    assert_eq!(finished(&e.tick(t0() + secs(25)))[0].0, Outcome::Timeout);
}

#[test]
fn a_run_deferred_for_probitys_own_limits_is_not_the_checks_failure_and_is_retried() {
    let (mut e, _) = one("  runInterval: 1h\n  timeout: 30s\n");
    let (_, first) = starts(&e.run_now(t0(), &key("a")).unwrap())[0];
    e.report(t0(), first, RunResult::reported(true, vec![]))
        .1
        .unwrap();
    e.release(t0(), first, exited("done"));
    let before = e.status(&key("a")).unwrap().clone();
    // Manual run: it fails to start because the process is out of file descriptors.
    let (_, uuid) = starts(&e.run_now(t0() + secs(5), &key("a")).unwrap())[0];
    let fx = e.release(
        t0() + secs(5),
        uuid,
        RunEnd::Deferred("start \"sh\": Too many open files (os error 24)".into()),
    );
    assert!(finished(&fx).is_empty(), "no outcome is recorded");
    let retry = t0()
        + secs(5)
        + chrono::Duration::from_std(crate::engine::core::schedule::DEFER_RETRY).unwrap();
    assert!(fx.iter().any(
        |f| matches!(f, Effect::Deferred { reason, retry: r, .. } if reason.contains("os error 24") && *r == retry)
    ));
    let st = e.status(&key("a")).unwrap();
    assert_eq!(
        (st.failure_count, st.success_count, st.ok, st.history.len()),
        (0, 1, true, 1)
    );
    assert_eq!(
        st.last_run_unix, before.last_run_unix,
        "the last run is the one that ran"
    );
    assert!(st.current_uuid.is_empty() && st.run_deadline_unix.is_none());
    assert_eq!(st.next_run_unix, Some(retry.timestamp()));
    assert_eq!(e.in_flight(), 0, "the slot is free");
    // Not before the retry time; then it starts again.
    assert!(starts(&e.tick(retry - secs(1))).is_empty());
    let (_, again) = starts(&e.tick(retry))[0];
    assert_ne!(again, uuid);
    // A report for the deferred run's id is refused: it never ran.
    assert_eq!(
        wire(
            &e.report(retry, uuid, RunResult::reported(true, vec![]))
                .1
                .unwrap_err()
        ),
        400
    );
}

#[test]
fn a_report_is_stored_again_only_for_the_verdict_recorded_for_the_latest_run() {
    let (mut e, _) = one("  runInterval: 1h\n  failureThreshold: 3\n");
    let (_, uuid) = starts(&e.run_now(t0(), &key("a")).unwrap())[0];
    let errors = vec!["db down".to_string()];
    e.report(t0(), uuid, RunResult::reported(false, errors.clone()))
        .1
        .unwrap();
    // Below the threshold the check's errors stay empty; the run's record still has them.
    assert!(e.status(&key("a")).unwrap().errors.is_empty());
    assert!(e
        .persist_again(uuid, &RunResult::reported(false, errors.clone()))
        .is_some());
    assert!(
        e.persist_again(uuid, &RunResult::passed()).is_none(),
        "another verdict"
    );
    assert!(e
        .persist_again(uuid, &RunResult::failure("other"))
        .is_none());
    assert!(e
        .persist_again(RunId::random(), &RunResult::reported(false, errors.clone()))
        .is_none());
    // Once a later run is the latest, the old one is not stored again.
    e.release(t0(), uuid, exited("done"));
    let (_, next) = starts(&e.run_now(t0() + secs(1), &key("a")).unwrap())[0];
    e.report(t0() + secs(1), next, RunResult::reported(true, vec![]))
        .1
        .unwrap();
    assert!(e
        .persist_again(uuid, &RunResult::reported(false, errors.clone()))
        .is_none());
    assert!(e.persist_again(next, &RunResult::passed()).is_some());
}

/// A pod's run in flight is stored when it starts (a next leader adopts it); a probe's only when
/// it ends: one status write per probe run, not two.
#[test]
fn a_probe_run_is_stored_when_it_ends_a_pod_run_when_it_starts_too() {
    let stored_at_start = |spec: &str| {
        let mut e = engine(0);
        e.finish_startup();
        let text = format!(
            "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: a, namespace: ns}}\nspec:\n{spec}"
        );
        let hc = parse_documents(&text).unwrap().remove(0).check.unwrap();
        e.upsert(t0(), Desired::new(Arc::new(hc), None), None);
        let fx = e.run_now(t0() + secs(1), &key("a")).unwrap();
        let start = fx
            .iter()
            .position(|f| matches!(f, Effect::Start(_)))
            .expect("the run started");
        let uuid = e.current_run(&key("a")).unwrap();
        let stored = fx[..start]
            .iter()
            .any(|f| matches!(f, Effect::Save { persist: true, .. }));
        let (end, _) = e.report(t0() + secs(2), uuid, RunResult::passed());
        let stored_end = end
            .iter()
            .any(|f| matches!(f, Effect::Save { persist: true, .. }));
        assert!(stored_end, "the outcome is always stored");
        stored
    };
    assert!(stored_at_start(
        "  runInterval: 1h\n  podSpec: {spec: {containers: [{name: c, image: i}]}}\n"
    ));
    assert!(!stored_at_start(
        "  runInterval: 1h\n  probe: {tcpSocket: {host: h, port: 1}}\n"
    ));
}
