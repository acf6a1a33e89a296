use super::*;
use crate::api::load::parse_documents;
use crate::api::HealthCheck;
use chrono::TimeZone;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap()
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

fn engine(cap: usize) -> Engine {
    Engine::new(EngineConfig {
        identity: "replica-a".into(),
        max_concurrent_runs: cap,
        defaults: Defaults::default(),
    })
}

fn check(name: &str, spec: &str) -> Desired {
    let text = format!(
        "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: {name}, namespace: ns}}\nspec:\n  podSpec: {{spec: {{containers: [{{name: c, image: i, command: [x]}}]}}}}\n{spec}"
    );
    let doc = parse_documents(&text).unwrap().remove(0);
    let hc: HealthCheck = doc.check.unwrap();
    Desired {
        check: Arc::new(hc),
        load_error: None,
    }
}

fn key(name: &str) -> CheckKey {
    CheckKey::new("ns", name)
}

fn starts(effects: &[Effect]) -> Vec<(CheckKey, Uuid)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Start(r) => Some((r.key.clone(), r.uuid)),
            _ => None,
        })
        .collect()
}

fn finished(effects: &[Effect]) -> Vec<(Outcome, Vec<String>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Finished {
                outcome, errors, ..
            } => Some((*outcome, errors.clone())),
            _ => None,
        })
        .collect()
}

fn exited(msg: &str) -> RunEnd {
    RunEnd::Exited {
        success: true,
        message: msg.into(),
    }
}

/// A running engine (start-up over) with one check added at t0.
fn one(spec: &str) -> (Engine, Vec<Effect>) {
    let mut e = engine(0);
    e.finish_startup();
    let fx = e.upsert(t0(), check("a", spec), None);
    (e, fx)
}

#[test]
fn interval_is_start_to_start() {
    let (mut e, _) = one("  runInterval: 1m\n");
    let fx = e.tick(t0());
    let (_, uuid) = starts(&fx)[0];
    // A 20s run: the next start is still 60s after the first start, not after its end.
    let (fx, verdict) = e.report(t0() + secs(20), uuid, true, vec![]);
    assert_eq!(verdict, Ok(()));
    assert_eq!(finished(&fx), vec![(Outcome::Success, vec![])]);
    e.release(t0() + secs(21), uuid, exited("done"));
    assert_eq!(e.next_wakeup(), Some(t0() + secs(60)));
    assert!(starts(&e.tick(t0() + secs(59))).is_empty());
    assert_eq!(starts(&e.tick(t0() + secs(60))).len(), 1);
    let st = e.status(&key("a")).unwrap();
    assert_eq!(st.last_run_unix, (t0() + secs(60)).timestamp());
    assert_eq!(st.next_run_unix, Some((t0() + secs(120)).timestamp()));
    assert_eq!(st.authoritative_pod, "replica-a");
}

#[test]
fn first_runs_after_startup_are_spread_over_the_interval() {
    let mut e = engine(0);
    for i in 0..200 {
        e.upsert(t0(), check(&format!("c{i}"), "  runInterval: 1m\n"), None);
    }
    e.finish_startup();
    let dues: Vec<_> = (0..200)
        .map(|i| e.due(&key(&format!("c{i}"))).unwrap())
        .collect();
    assert!(dues.iter().all(|d| *d >= t0() && *d < t0() + secs(60)));
    let mut per_second = std::collections::HashMap::new();
    for d in &dues {
        *per_second.entry(d.timestamp()).or_insert(0) += 1;
    }
    // 200 checks over 60 seconds: a few per second, never all at once.
    assert!(per_second.values().all(|n| *n <= 12), "{per_second:?}");
    assert!(per_second.len() >= 40);
    // Checks added later run right away.
    e.upsert(t0() + secs(5), check("late", "  runInterval: 1m\n"), None);
    assert_eq!(e.due(&key("late")), Some(t0() + secs(5)));
}

#[test]
fn restart_does_not_rerun_checks_that_are_not_due() {
    let mut e = engine(0);
    let saved = HealthCheckStatus {
        ok: true,
        last_run_unix: (t0() - secs(10)).timestamp(),
        last_outcome: Some(Outcome::Success),
        success_count: 7,
        ..Default::default()
    };
    e.upsert(t0(), check("a", "  runInterval: 1m\n"), Some(saved));
    e.finish_startup();
    assert_eq!(e.due(&key("a")), Some(t0() + secs(50)));
    assert!(starts(&e.tick(t0() + secs(49))).is_empty());
    assert_eq!(e.status(&key("a")).unwrap().success_count, 7);
}

#[test]
fn overdue_checks_at_startup_are_spread_not_run_at_once() {
    let mut e = engine(0);
    let saved = HealthCheckStatus {
        ok: true,
        last_run_unix: (t0() - secs(3600)).timestamp(),
        last_outcome: Some(Outcome::Success),
        ..Default::default()
    };
    e.upsert(t0(), check("a", "  runInterval: 10m\n"), Some(saved));
    let due = e.due(&key("a")).unwrap();
    assert!(due >= t0() && due < t0() + secs(600));
}

#[test]
fn cron_schedule_in_time_zone() {
    let (e, _) = one("  schedule: \"0 9 * * *\"\n  timeZone: Europe/Berlin\n");
    // 09:00 in Berlin in November (CET, UTC+1) is 08:00 UTC, tomorrow since t0 is 10:00 UTC.
    assert_eq!(
        e.due(&key("a")),
        Some(Utc.with_ymd_and_hms(2026, 11, 23, 8, 0, 0).unwrap())
    );
    let (mut e, _) = one("  schedule: \"*/5 * * * *\"\n");
    assert_eq!(e.due(&key("a")), Some(t0() + secs(300)));
    let fx = e.tick(t0() + secs(300));
    let (_, uuid) = starts(&fx)[0];
    e.report(t0() + secs(301), uuid, true, vec![]).1.unwrap();
    e.release(t0() + secs(302), uuid, exited("done"));
    assert_eq!(e.due(&key("a")), Some(t0() + secs(600)));
}

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
    e.report(t0() + secs(1), uuid, true, vec![]).1.unwrap();
    assert!(starts(&e.tick(t0() + secs(10))).is_empty());
    let fx = e.tick(t0() + secs(30));
    assert!(finished(&fx).is_empty());
    assert!(fx.iter().any(|f| matches!(f, Effect::Stop { .. })));
}

#[test]
fn single_run_only_runs_once_even_across_restarts() {
    let (mut e, _) = one("  singleRunOnly: true\n  runInterval: 10s\n");
    let (_, uuid) = starts(&e.tick(t0()))[0];
    e.report(t0() + secs(1), uuid, true, vec![]).1.unwrap();
    e.release(t0() + secs(1), uuid, exited("done"));
    assert_eq!(e.next_wakeup(), None);
    assert!(starts(&e.tick(t0() + secs(3600))).is_empty());
    let saved = e.status(&key("a")).unwrap().clone();
    assert_eq!(saved.next_run_unix, None);
    let mut restarted = engine(0);
    restarted.upsert(
        t0() + secs(7200),
        check("a", "  singleRunOnly: true\n"),
        Some(saved),
    );
    assert_eq!(restarted.next_wakeup(), None);
}

#[test]
fn suspend_stops_scheduling_and_keeps_state() {
    let (mut e, _) = one("  runInterval: 10s\n");
    let (_, uuid) = starts(&e.tick(t0()))[0];
    e.report(t0() + secs(1), uuid, false, vec!["down".into()])
        .1
        .unwrap();
    e.release(t0() + secs(1), uuid, exited("done"));
    e.upsert(
        t0() + secs(2),
        check("a", "  runInterval: 10s\n  suspend: true\n"),
        None,
    );
    assert_eq!(e.next_wakeup(), None);
    assert!(starts(&e.tick(t0() + secs(100))).is_empty());
    let st = e.status(&key("a")).unwrap();
    assert_eq!(
        (st.failure_count, st.ok, st.next_run_unix),
        (1, false, None)
    );
    // Resumed: overdue, so it runs now.
    e.upsert(t0() + secs(101), check("a", "  runInterval: 10s\n"), None);
    assert_eq!(starts(&e.tick(t0() + secs(101))).len(), 1);
}

#[test]
fn initial_delay_holds_the_first_run() {
    let (mut e, _) = one("  runInterval: 10s\n  initialDelay: 45s\n");
    assert!(starts(&e.tick(t0() + secs(44))).is_empty());
    assert_eq!(starts(&e.tick(t0() + secs(45))).len(), 1);
}

fn run_once(e: &mut Engine, at: DateTime<Utc>, ok: bool) -> Vec<Effect> {
    e.run_now(at, &key("a")).unwrap();
    let uuid = e.current_run(&key("a")).unwrap();
    let errors = if ok {
        vec![]
    } else {
        vec![format!("failed at {at}")]
    };
    let (fx, v) = e.report(at, uuid, ok, errors);
    v.unwrap();
    e.release(at, uuid, exited("done"));
    fx
}

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
fn concurrency_cap_queues_due_runs_in_order() {
    let mut e = engine(2);
    e.finish_startup();
    for n in ["a", "b", "c", "d"] {
        e.upsert(t0(), check(n, "  runInterval: 1m\n"), None);
    }
    let first = starts(&e.tick(t0()));
    assert_eq!(first.len(), 2);
    assert_eq!(e.in_flight(), 2);
    let (_, uuid) = first[0];
    e.report(t0() + secs(3), uuid, true, vec![]).1.unwrap();
    let fx = e.release(t0() + secs(3), uuid, exited("done"));
    assert_eq!(
        starts(&fx).len(),
        1,
        "a freed slot starts the next queued run"
    );
    let lag = fx.iter().find_map(|f| match f {
        Effect::Started { lag, .. } => Some(*lag),
        _ => None,
    });
    assert_eq!(lag, Some(Duration::from_secs(3)));
    assert_eq!(e.in_flight(), 2);
}

#[test]
fn reports_are_accepted_once_and_refused_with_reasons() {
    let (mut e, _) = one("  runInterval: 1m\n  timeout: 10s\n");
    let (_, uuid) = starts(&e.tick(t0()))[0];
    let unknown = Uuid::new_v4();
    let (_, v) = e.report(t0(), unknown, true, vec![]);
    let r = v.unwrap_err();
    assert_eq!(r.code, 400);
    assert!(r.reason.contains("unknown run UUID"));
    assert_eq!(e.report(t0() + secs(1), uuid, true, vec![]).1, Ok(()));
    let (fx, v) = e.report(t0() + secs(2), uuid, false, vec!["x".into()]);
    let r = v.unwrap_err();
    assert_eq!(r.code, 400);
    assert!(
        r.reason.contains("already reported (Success)"),
        "{}",
        r.reason
    );
    assert!(fx.is_empty(), "a duplicate changes nothing");
    assert_eq!(e.status(&key("a")).unwrap().success_count, 1);
}

#[test]
fn late_reports_get_410_and_the_timeout_is_the_outcome() {
    let (mut e, _) = one("  runInterval: 1m\n  timeout: 10s\n");
    let (_, uuid) = starts(&e.tick(t0()))[0];
    // After the deadline but before the timer fired.
    let (fx, v) = e.report(t0() + secs(11), uuid, true, vec![]);
    assert_eq!(v.unwrap_err().code, 410);
    assert_eq!(finished(&fx)[0].0, Outcome::Timeout);
    // The timer then finds nothing more to record.
    assert!(finished(&e.tick(t0() + secs(12))).is_empty());
    // And once the timeout is recorded, a report is late too.
    let (mut e, _) = one("  runInterval: 1m\n  timeout: 10s\n");
    let (_, uuid) = starts(&e.tick(t0()))[0];
    e.tick(t0() + secs(10));
    let (_, v) = e.report(t0() + secs(15), uuid, true, vec![]);
    let r = v.unwrap_err();
    assert_eq!(r.code, 410);
    assert!(r.reason.contains("timed out"), "{}", r.reason);
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
        RunEnd::Exited {
            success: false,
            message: "exited with code 3 without reporting".into(),
        },
    );
    assert_eq!(
        finished(&fx),
        vec![(
            Outcome::Crash,
            vec!["exited with code 3 without reporting".to_string()]
        )]
    );
    let (_, v) = e.report(t0() + secs(3), uuid, true, vec![]);
    assert!(v.unwrap_err().reason.contains("already ended (Crash)"));
    let (_, uuid) = starts(&e.tick(t0() + secs(60)))[0];
    let fx = e.release(
        t0() + secs(60),
        uuid,
        RunEnd::StartFailed("start \"nope\": not found".into()),
    );
    assert_eq!(finished(&fx)[0].0, Outcome::StartFailure);
    // A release after the outcome adds nothing.
    assert!(e.release(t0() + secs(61), uuid, exited("again")).is_empty());
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
    let (_, v) = e.report(t0() + secs(2), uuid, true, vec![]);
    assert!(v.unwrap_err().reason.contains("deleted"));
    let fx = e.release(t0() + secs(2), uuid, exited("killed"));
    assert!(fx.iter().any(|f| matches!(f, Effect::Forget { .. })));
    assert!(finished(&fx).is_empty());
    assert!(e.is_empty());
}

/// Saved state of a check whose run `uuid` started 5 s before t0, deadline 25 s after it.
fn in_flight(uuid: Uuid) -> HealthCheckStatus {
    HealthCheckStatus {
        ok: true,
        current_uuid: uuid.to_string(),
        last_run_unix: (t0() - secs(5)).timestamp(),
        run_deadline_unix: Some((t0() + secs(25)).timestamp()),
        ..Default::default()
    }
}

#[test]
fn a_run_in_flight_in_saved_state_is_adopted_not_restarted() {
    let uuid = Uuid::new_v4();
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
    assert_eq!(e.report(t0() + secs(10), uuid, true, vec![]).1, Ok(()));
    let fx = e.release(t0() + secs(11), uuid, exited("gone"));
    assert!(finished(&fx).is_empty());
    // The next run is one interval after the adopted run's start.
    assert_eq!(e.due(&key("a")), Some(t0() + secs(55)));
}

#[test]
fn an_adopted_run_that_never_reports_times_out_at_its_saved_deadline() {
    let uuid = Uuid::new_v4();
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
fn pod_names_are_short_and_derived_from_the_run() {
    let uuid = Uuid::parse_str("1d309ed7-4b7a-4fd5-9706-d04f53c9ed30").unwrap();
    assert_eq!(pod_name(&key("dns"), uuid), "dns-1d309");
    let long = "a".repeat(80);
    assert!(pod_name(&key(&long), uuid).len() <= 63);
}

fn persisted(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Save { persist: true, .. }))
        .count()
}

fn adopted(effects: &[Effect]) -> Vec<Uuid> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Adopt { uuid, .. } => Some(*uuid),
            _ => None,
        })
        .collect()
}

/// A follower: start-up over, not leading, one check whose stored state is `saved`.
fn follower(saved: Option<HealthCheckStatus>) -> (Engine, Vec<Effect>) {
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

#[test]
fn a_follower_never_starts_times_out_or_writes_on_its_own() {
    let uuid = Uuid::new_v4();
    let (mut e, fx) = follower(Some(in_flight(uuid)));
    assert!(adopted(&fx).is_empty() && persisted(&fx) == 0);
    for s in [0, 30, 60, 600] {
        let fx = e.tick(t0() + secs(s));
        assert!(fx.is_empty(), "tick at +{s}s: {fx:?}");
    }
    assert_eq!(e.next_wakeup(), None);
    assert!(e.run_now(t0(), &key("a")).is_err());
    // A report after the deadline is refused without writing: the leader records the timeout.
    let (fx, r) = e.report(t0() + secs(26), uuid, true, vec![]);
    assert_eq!(r.unwrap_err().code, 410);
    assert!(fx.is_empty());
}

#[test]
fn a_follower_accepts_a_report_of_the_run_the_state_shows_and_persists_the_outcome() {
    let uuid = Uuid::new_v4();
    let (mut e, _) = follower(Some(in_flight(uuid)));
    let (fx, r) = e.report(t0() + secs(3), uuid, false, vec!["dns down".into()]);
    assert_eq!(r, Ok(()));
    assert_eq!(persisted(&fx), 1);
    assert_eq!(finished(&fx)[0].0, Outcome::Failure);
    let st = e.status(&key("a")).unwrap();
    assert!(st.current_uuid.is_empty() && !st.ok && st.failure_count == 1);
    // Once only, and the slot is not held waiting for a pod it does not watch.
    assert_eq!(
        e.report(t0() + secs(4), uuid, true, vec![])
            .1
            .unwrap_err()
            .code,
        400
    );
    assert_eq!(e.in_flight(), 0);
}

#[test]
fn a_new_leader_adopts_runs_in_flight_and_does_not_rerun_checks_not_due() {
    let running = Uuid::new_v4();
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
    assert_eq!(e.report(t0() + secs(5), uuid, true, vec![]).1, Ok(()));
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
        e.report(t0() + secs(4), uuid, true, vec![])
            .1
            .unwrap_err()
            .code,
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
    let other = Uuid::new_v4();
    let fx = e.upsert(
        t0(),
        check("a", "  runInterval: 1m\n  timeout: 30s\n"),
        Some(in_flight(other)),
    );
    assert_eq!(adopted(&fx), vec![other]);
    assert!(starts(&e.tick(t0() + secs(20))).is_empty());
    assert_eq!(e.current_run(&key("a")), Some(other));
}

#[test]
fn the_same_spec_again_keeps_the_start_up_spread() {
    let mut e = engine(0);
    let fx = e.upsert(t0(), check("a", "  runInterval: 10m\n"), None);
    assert!(starts(&fx).is_empty());
    e.finish_startup();
    let spread = e.due(&key("a")).unwrap();
    assert!(spread > t0() + secs(1), "spread to {spread}");
    // A watch event with the same spec (the echo of a status write) a minute later.
    let fx = e.upsert(t0() + secs(60), check("a", "  runInterval: 10m\n"), None);
    assert!(starts(&fx).is_empty() && persisted(&fx) == 0, "{fx:?}");
    assert_eq!(e.due(&key("a")), Some(spread));
    // A changed spec is scheduled afresh.
    e.upsert(
        t0() + secs(61),
        check("a", "  runInterval: 10m\n  timeout: 5s\n"),
        None,
    );
    assert!(e.due(&key("a")).is_some());
}

#[test]
fn a_manual_request_is_served_once_by_a_run_that_starts_after_it() {
    let (mut e, _) = one("  runInterval: 1h\n");
    let (_, first) = starts(&e.tick(t0()))[0];
    // Asked for while the first run is going: served when it ends, not before.
    assert!(starts(
        &e.request_run(t0() + secs(1), &key("a"), t0() + secs(1))
            .unwrap()
    )
    .is_empty());
    assert!(e.report(t0() + secs(2), first, true, vec![]).1.is_ok());
    let fx = e.release(t0() + secs(2), first, exited("done"));
    let (_, second) = starts(&fx)[0];
    // The same request seen again (the annotation stays) is already served.
    assert!(e
        .request_run(t0() + secs(3), &key("a"), t0() + secs(1))
        .unwrap()
        .is_empty());
    assert!(e.report(t0() + secs(3), second, true, vec![]).1.is_ok());
    e.release(t0() + secs(3), second, exited("done"));
    assert!(e
        .request_run(t0() + secs(4), &key("a"), t0() + secs(1))
        .unwrap()
        .is_empty());
    // A new request runs at once; one for a check that does not exist is refused.
    assert_eq!(
        starts(
            &e.request_run(t0() + secs(5), &key("a"), t0() + secs(5))
                .unwrap()
        )
        .len(),
        1
    );
    assert!(e.request_run(t0(), &key("zz"), t0()).is_err());
}
