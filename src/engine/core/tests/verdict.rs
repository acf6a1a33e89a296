//! Verdicts: thresholds, history, invalid checks.

use super::*;

#[test]
fn thresholds_decide_when_ok_flips() {
    let (mut e, _) = one("  runInterval: 1h\n  successThreshold: 2\n  failureThreshold: 3\n");
    let ok = |e: &Engine| e.status(&key("a")).unwrap().ok;
    // A check that has not run is pending, not failing.
    assert!(ok(&e) && e.status(&key("a")).unwrap().is_pending());
    run_once(&mut e, t0() + secs(1), false);
    run_once(&mut e, t0() + secs(2), false);
    assert!(ok(&e), "two failures are below the threshold of three");
    assert!(e.status(&key("a")).unwrap().errors.is_empty());
    run_once(&mut e, t0() + secs(3), false);
    assert!(!ok(&e));
    let st = e.status(&key("a")).unwrap();
    assert_eq!(st.errors, vec![format!("failed at {}", t0() + secs(3))]);
    assert_eq!(st.consecutive_failures, 3);
    run_once(&mut e, t0() + secs(4), true);
    assert!(!ok(&e), "one success is below the threshold of two");
    run_once(&mut e, t0() + secs(5), false);
    run_once(&mut e, t0() + secs(6), true);
    run_once(&mut e, t0() + secs(7), true);
    assert!(ok(&e));
    let st = e.status(&key("a")).unwrap();
    assert_eq!(
        (st.success_count, st.failure_count, st.consecutive_successes),
        (3, 4, 2)
    );
    assert!(st.errors.is_empty());
    assert_eq!(st.history.len(), 7);
    assert_eq!(st.history[0].outcome, Some(Outcome::Success));
}

#[test]
fn history_keeps_the_last_twenty_runs() {
    let (mut e, _) = one("  runInterval: 1h\n");
    for i in 0..25 {
        run_once(&mut e, t0() + secs(i), i % 2 == 0);
    }
    let st = e.status(&key("a")).unwrap();
    assert_eq!(st.history.len(), HISTORY_LEN);
    assert_eq!(st.history[0].start_unix, (t0() + secs(24)).timestamp());
}

#[test]
fn an_invalid_check_is_reported_and_never_stops_the_others() {
    let mut e = engine(0);
    e.finish_startup();
    e.upsert(t0(), check("good", "  runInterval: 1m\n"), None);
    let fx = e.upsert(
        t0(),
        check("bad", "  runInterval: 5x\n  failureThreshold: 0\n"),
        None,
    );
    let view = fx
        .iter()
        .find_map(|f| match f {
            Effect::Save { view, .. } => Some(view.clone()),
            _ => None,
        })
        .unwrap();
    let msg = view.invalid.clone().unwrap();
    assert!(
        msg.contains("spec.runInterval: \"5x\" has unknown unit \"x\""),
        "{msg}"
    );
    assert!(
        msg.contains("spec.failureThreshold: 0 must be at least 1"),
        "{msg}"
    );
    assert!(!view.effective_ok());
    let st = e.status(&key("bad")).unwrap();
    assert_eq!(st.condition("Invalid").unwrap().status, "True");
    assert!(!st.ok);
    assert_eq!(e.due(&key("bad")), None);
    let started = starts(&e.tick(t0()));
    assert_eq!(
        started.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        vec![key("good")]
    );
    // Fixed: valid again, pending again, scheduled.
    e.upsert(t0() + secs(1), check("bad", "  runInterval: 5m\n"), None);
    let st = e.status(&key("bad")).unwrap();
    assert_eq!(st.condition("Invalid").unwrap().status, "False");
    assert!(st.ok && st.errors.is_empty());
    assert_eq!(e.due(&key("bad")), Some(t0() + secs(1)));
}

#[test]
fn a_plan_the_backend_validated_off_the_engine_task_is_used_only_with_the_same_defaults() {
    let wrong = Arc::new(Err(Invalid::one("spec.schedule", "marked by the backend")));
    let d = || check("a", "  runInterval: 1m\n");
    // Same defaults: the backend's result stands (the engine does not search again).
    let backend = Arc::new(Plans::new(Defaults::default()));
    backend.keep(&key("a"), &d(), wrong.clone());
    let mut e = engine(0).sharing_plans(backend);
    e.upsert(t0(), d(), None);
    let v = e.view(&key("a"));
    assert_eq!(
        v.invalid.as_deref(),
        Some("spec.schedule: marked by the backend")
    );
    // Other defaults: it is not trusted, and the engine validates itself.
    let other = Defaults {
        run_interval: Duration::from_secs(7),
        ..Defaults::default()
    };
    let backend = Arc::new(Plans::new(other));
    backend.keep(&key("a"), &d(), wrong);
    let mut e = engine(0).sharing_plans(backend);
    e.upsert(t0(), d(), None);
    assert_eq!(e.view(&key("a")).invalid, None);
}

#[test]
fn a_pass_found_idle_and_what_a_run_timed_are_recorded_and_a_failure_clears_idle() {
    let (mut e, _) = one("  runInterval: 1h\n  failureThreshold: 1\n");
    let run = |e: &mut Engine, at, result: RunResult| {
        e.run_now(at, &key("a")).unwrap();
        let uuid = e.current_run(&key("a")).unwrap();
        e.report(at, uuid, result).1.unwrap();
        e.release(at, uuid, exited("done"));
    };
    run(&mut e, t0() + secs(1), RunResult::idle());
    let st = e.status(&key("a")).unwrap();
    assert_eq!(
        (st.ok, st.standing),
        (true, Some(crate::api::Standing::Idle))
    );
    assert_eq!(st.history[0].standing, Some(crate::api::Standing::Idle));
    let timed = RunResult::passed().with_timing(
        crate::api::TimingName::ColdStartFirstByte,
        Duration::from_millis(1_250),
    );
    run(&mut e, t0() + secs(2), timed);
    let st = e.status(&key("a")).unwrap();
    assert_eq!(st.standing, None, "awake after the request");
    assert_eq!(st.history[0].timings[0].ms, 1_250);
    run(&mut e, t0() + secs(3), RunResult::idle());
    run(&mut e, t0() + secs(4), RunResult::failure("down"));
    let st = e.status(&key("a")).unwrap();
    assert_eq!((st.ok, st.standing), (false, None), "failing is not idle");
    assert_eq!(
        st.history[1].standing,
        Some(crate::api::Standing::Idle),
        "history keeps it"
    );
}

#[test]
fn a_run_failing_only_warnings_is_degraded_passing_with_its_warnings_and_a_spell() {
    let (mut e, _) = one("  runInterval: 1h\n  failureThreshold: 1\n");
    let run = |e: &mut Engine, at, result: RunResult| {
        e.run_now(at, &key("a")).unwrap();
        let uuid = e.current_run(&key("a")).unwrap();
        e.report(at, uuid, result).1.unwrap();
        e.release(at, uuid, exited("done"));
    };
    let slow = || RunResult::graded(vec![], vec!["response took 900ms, over 300ms".into()]);
    run(&mut e, t0() + secs(1), slow());
    let st = e.status(&key("a")).unwrap();
    assert!(st.ok && st.degraded(), "passing, degraded");
    assert_eq!(st.warnings, ["response took 900ms, over 300ms"]);
    assert!(st.errors.is_empty(), "Kuberhealthy's Errors stay empty");
    assert_eq!(st.degraded_since_unix, Some(unix(t0() + secs(1))));
    assert_eq!(st.history[0].errors, ["response took 900ms, over 300ms"]);
    assert_eq!(st.success_count, 1);
    // Still degraded: the spell keeps its start.
    run(&mut e, t0() + secs(2), slow());
    assert_eq!(
        e.status(&key("a")).unwrap().degraded_since_unix,
        Some(unix(t0() + secs(1)))
    );
    // A failure ends it (the failing spell takes over); a clean pass clears all.
    run(&mut e, t0() + secs(3), RunResult::failure("down"));
    let st = e.status(&key("a")).unwrap();
    assert!(!st.ok && !st.degraded());
    assert_eq!((st.degraded_since_unix, st.warnings.len()), (None, 0));
    run(&mut e, t0() + secs(4), slow());
    run(&mut e, t0() + secs(5), RunResult::passed());
    let st = e.status(&key("a")).unwrap();
    assert!(st.ok && !st.degraded());
    assert_eq!((st.degraded_since_unix, st.warnings.len()), (None, 0));
    // A failure found and kept with warnings is a failure, not degraded.
    let both = RunResult::graded(vec!["status 500".into()], vec!["slow".into()]);
    assert!(!both.passed_ok() && !both.is_degraded());
    // A probe marked severity: warning: its failure degrades; a timeout stays a timeout.
    let w = RunResult::failure("status 500").as_warning();
    assert!(w.passed_ok() && w.is_degraded());
    assert_eq!(w.warnings, ["status 500"]);
    assert!(!RunResult::timed_out("late").as_warning().passed_ok());
}
