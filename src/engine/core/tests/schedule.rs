//! Scheduling: due times, spread, cron, suspend, single runs, the concurrency cap, manual runs.

use super::*;

#[test]
fn interval_is_start_to_start() {
    let (mut e, _) = one("  runInterval: 1m\n");
    let fx = e.tick(t0());
    let (_, uuid) = starts(&fx)[0];
    // A 20s run: the next start is still 60s after the first start, not after its end.
    let (fx, verdict) = e.report(t0() + secs(20), uuid, RunResult::reported(true, vec![]));
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

/// Due times per whole second, for checking a spread.
fn per_second(dues: &[DateTime<Utc>]) -> std::collections::HashMap<i64, usize> {
    let mut out = std::collections::HashMap::new();
    for d in dues {
        *out.entry(d.timestamp()).or_insert(0) += 1;
    }
    out
}

#[test]
fn overdue_runs_after_a_restart_are_spread_over_the_interval() {
    let mut e = engine(0);
    let ran_long_ago = HealthCheckStatus {
        ok: true,
        last_run_unix: (t0() - secs(3600)).timestamp(),
        ..Default::default()
    };
    for i in 0..200 {
        let c = check(&format!("c{i}"), "  runInterval: 1m\n");
        e.upsert(t0(), c, Some(ran_long_ago.clone()));
    }
    e.finish_startup();
    let dues: Vec<_> = (0..200)
        .map(|i| e.due(&key(&format!("c{i}"))).unwrap())
        .collect();
    assert!(dues.iter().all(|d| *d >= t0() && *d < t0() + secs(60)));
    let per_second = per_second(&dues);
    // 200 checks over 60 seconds: a few per second, never all at once.
    assert!(per_second.values().all(|n| *n <= 12), "{per_second:?}");
    assert!(per_second.len() >= 40);
    // Checks added later run right away.
    e.upsert(t0() + secs(5), check("late", "  runInterval: 1m\n"), None);
    assert_eq!(e.due(&key("late")), Some(t0() + secs(5)));
}

#[test]
fn first_runs_of_a_fresh_install_come_within_the_first_run_window() {
    // The recipe: an hourly check on a fresh install used to wait up to an hour.
    let mut e = engine(0);
    for i in 0..200 {
        e.upsert(t0(), check(&format!("c{i}"), "  runInterval: 1h\n"), None);
    }
    e.finish_startup();
    let dues: Vec<_> = (0..200)
        .map(|i| e.due(&key(&format!("c{i}"))).unwrap())
        .collect();
    let window = chrono::Duration::from_std(FIRST_RUN_WINDOW).unwrap();
    assert!(
        dues.iter().all(|d| *d >= t0() && *d < t0() + window),
        "{dues:?}"
    );
    // Spread over the window's seconds, not bunched into one.
    let per_second = per_second(&dues);
    assert!(per_second.len() >= 8, "{per_second:?}");
    assert!(per_second.values().all(|n| *n <= 40), "{per_second:?}");
    // A short interval bounds the window: a 2 s check is not held for 10 s.
    let mut fresh = engine(0);
    fresh.upsert(t0(), check("fast", "  runInterval: 2s\n"), None);
    fresh.finish_startup();
    assert!(fresh.due(&key("fast")).unwrap() < t0() + secs(2));
    // The window is a setting.
    let mut slow = Engine::new(EngineConfig {
        first_run_window: Duration::from_secs(600),
        ..EngineConfig::new("replica-a")
    });
    for i in 0..50 {
        slow.upsert(t0(), check(&format!("c{i}"), "  runInterval: 1h\n"), None);
    }
    let latest = (0..50)
        .map(|i| slow.due(&key(&format!("c{i}"))).unwrap())
        .max()
        .unwrap();
    assert!(
        latest > t0() + secs(60) && latest < t0() + secs(600),
        "{latest}"
    );
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
    e.report(t0() + secs(301), uuid, RunResult::reported(true, vec![]))
        .1
        .unwrap();
    e.release(t0() + secs(302), uuid, exited("done"));
    assert_eq!(e.due(&key("a")), Some(t0() + secs(600)));
}

#[test]
fn single_run_only_runs_once_even_across_restarts() {
    let (mut e, _) = one("  singleRunOnly: true\n  runInterval: 10s\n");
    let (_, uuid) = starts(&e.tick(t0()))[0];
    e.report(t0() + secs(1), uuid, RunResult::reported(true, vec![]))
        .1
        .unwrap();
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
    e.report(
        t0() + secs(1),
        uuid,
        RunResult::reported(false, vec!["down".into()]),
    )
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
    e.report(t0() + secs(3), uuid, RunResult::reported(true, vec![]))
        .1
        .unwrap();
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
fn the_same_spec_again_keeps_the_start_up_spread() {
    let mut e = engine(0);
    let overdue = HealthCheckStatus {
        ok: true,
        last_run_unix: (t0() - secs(3600)).timestamp(),
        ..Default::default()
    };
    let fx = e.upsert(t0(), check("a", "  runInterval: 10m\n"), Some(overdue));
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
    assert!(e
        .report(t0() + secs(2), first, RunResult::reported(true, vec![]))
        .1
        .is_ok());
    let fx = e.release(t0() + secs(2), first, exited("done"));
    let (_, second) = starts(&fx)[0];
    // The same request seen again (the annotation stays) is already served.
    assert!(e
        .request_run(t0() + secs(3), &key("a"), t0() + secs(1))
        .unwrap()
        .is_empty());
    assert!(e
        .report(t0() + secs(3), second, RunResult::reported(true, vec![]))
        .1
        .is_ok());
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

#[test]
fn dates_at_the_end_of_time_saturate_instead_of_panicking() {
    // The recipe of issue 9 (a year-262000 start from the journal or a HealthCheck status),
    // reaching the engine without the bounds check the stores apply: no panic, no run.
    let far = 8_210_266_876_799;
    let mut e = engine(0);
    let saved = HealthCheckStatus {
        ok: true,
        last_run_unix: far,
        ..Default::default()
    };
    e.upsert(t0(), check("a", "  runInterval: 1h\n"), Some(saved));
    // A run in flight whose start is that far and whose deadline is not recorded.
    let in_flight = HealthCheckStatus {
        ok: true,
        current_uuid: RunId::random().to_string(),
        last_run_unix: far,
        ..Default::default()
    };
    e.upsert(t0(), check("b", "  runInterval: 1h\n"), Some(in_flight));
    e.finish_startup();
    assert!(starts(&e.tick(t0() + secs(7200))).is_empty());
    assert!(e
        .due(&key("a"))
        .is_some_and(|d| d > t0() + secs(86_400 * 365 * 1000)));
}
