use super::*;
use crate::api::load::parse_documents;
use crate::api::{HealthCheckStatus, Outcome};
use crate::engine::clock::TokioClock;
use crate::engine::{Desired, EngineConfig, MemoryStore, StartRun, StopReason};
use chrono::{DateTime, TimeZone, Utc};
use std::sync::Mutex;

/// Reports OK the moment a run starts, and notes when that was.
struct InstantRunner {
    engine: EngineHandle,
    clock: TokioClock,
    starts: Arc<Mutex<Vec<DateTime<Utc>>>>,
    report: bool,
}

impl Runner for InstantRunner {
    fn start(&self, run: StartRun) {
        self.starts.lock().unwrap().push(self.clock.now());
        if !self.report {
            return;
        }
        let engine = self.engine.clone();
        tokio::spawn(async move {
            engine
                .report(run.uuid, RunResult::reported(true, vec![]))
                .await
                .unwrap();
            engine
                .released(run.uuid, RunEnd::crashed(String::new()))
                .await;
        });
    }
    fn adopt(&self, _: CheckKey, _: RunId, _: DateTime<Utc>, _: Arc<crate::api::HealthCheck>) {}
    fn stop(&self, _: &CheckKey, _: RunId, _: StopReason) {}
}

struct BrokenStore;
impl StatusStore for BrokenStore {
    fn save(&self, key: &CheckKey, _: &Arc<HealthCheckStatus>) -> SaveFuture {
        let path = format!("/state/{key}");
        Box::pin(async move { Err(crate::Error::io(path, std::io::Error::other("disk full"))) })
    }
    fn forget(&self, _: &CheckKey) {}
}

fn desired(spec: &str) -> Desired {
    desired_named("a", spec)
}

fn desired_named(name: &str, spec: &str) -> Desired {
    let text = format!(
        "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: {name}, namespace: ns}}\nspec:\n  podSpec: {{spec: {{containers: [{{name: c, image: i, command: [x]}}]}}}}\n{spec}"
    );
    Desired::new(
        Arc::new(parse_documents(&text).unwrap().remove(0).check.unwrap()),
        None,
    )
}

struct Harness {
    handle: EngineHandle,
    starts: Arc<Mutex<Vec<DateTime<Utc>>>>,
    finished: mpsc::UnboundedReceiver<Finished>,
    board: Arc<Board>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start<S: StatusStore>(store: S, t0: DateTime<Utc>, report: bool) -> Harness {
    start_with(store, t0, report, |d, _| d)
}

type TestDriver<S> = Driver<InstantRunner, S, TokioClock>;

fn start_with<S: StatusStore>(
    store: S,
    t0: DateTime<Utc>,
    report: bool,
    build: impl FnOnce(TestDriver<S>, EngineHandle) -> TestDriver<S>,
) -> Harness {
    let clock = TokioClock::starting_at(t0);
    let (handle, events) = EngineHandle::channel();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let (stop, shutdown) = watch::channel(false);
    let (obs, finished) = mpsc::unbounded_channel();
    let engine = Engine::new(EngineConfig::new("me"));
    let runner = Arc::new(InstantRunner {
        engine: handle.clone(),
        clock: clock.clone(),
        starts: starts.clone(),
        report,
    });
    let board = Arc::new(Board::new("me"));
    let driver = Driver::new(engine, runner, Arc::new(store), clock, events, board)
        .stopping_on(shutdown)
        .grace(Duration::from_secs(5))
        .observed_by(obs);
    let driver = build(driver, handle.clone());
    let board = driver.board().clone();
    let task = tokio::spawn(driver.run());
    Harness {
        handle,
        starts,
        finished,
        board,
        stop,
        task,
    }
}

/// Four runs of a 10 s check: when they started, and the board afterwards.
async fn four_runs(h: &mut Harness) -> Vec<DateTime<Utc>> {
    h.handle.loaded().await;
    h.handle.upsert(desired("  runInterval: 10s\n"), None).await;
    for _ in 0..4 {
        let f = h.finished.recv().await.unwrap();
        assert_eq!(f.result.outcome, Outcome::Success);
    }
    let view = h.board.get(&CheckKey::new("ns", "a")).unwrap();
    assert_eq!(view.status.success_count, 4);
    assert!(h.board.is_ready());
    assert!(h.board.since_tick().unwrap() <= MAX_SLEEP);
    h.starts.lock().unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn runs_start_exactly_on_schedule_on_a_paused_clock() {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
    let mut h = start_with(MemoryStore, t0, true, |d, _| {
        d.ticking_every(Duration::ZERO)
    });
    let want: Vec<_> = (0..4)
        .map(|i| t0 + chrono::Duration::seconds(10 * i))
        .collect();
    assert_eq!(four_runs(&mut h).await, want);
    h.stop.send(true).unwrap();
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn with_the_default_tick_a_run_starts_at_most_one_tick_late_and_keeps_its_interval() {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
    let mut h = start(MemoryStore, t0, true);
    let starts = four_runs(&mut h).await;
    // The check came in just after the driver's first tick: it waits for the next one.
    let late = (starts[0] - t0).to_std().unwrap();
    assert!(late > Duration::ZERO && late <= DEFAULT_TICK, "{late:?}");
    for pair in starts.windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::Duration::seconds(10));
    }
    h.stop.send(true).unwrap();
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn runs_falling_due_within_a_tick_start_together() {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
    let mut h = start(MemoryStore, t0, true);
    h.handle.loaded().await;
    h.handle.upsert(desired_named("a", ""), None).await;
    tokio::time::sleep(Duration::from_millis(3)).await;
    h.handle.upsert(desired_named("b", ""), None).await;
    for _ in 0..2 {
        h.finished.recv().await.unwrap();
    }
    let starts = h.starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[0], starts[1], "one tick started both");
    assert!(starts[0] - t0 >= chrono::Duration::milliseconds(3));
    h.stop.send(true).unwrap();
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_report_that_cannot_be_stored_is_answered_500_so_the_client_retries() {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
    let h = start(BrokenStore, t0, false);
    h.handle.loaded().await;
    h.handle.upsert(desired("  runInterval: 10s\n"), None).await;
    while h.starts.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let uuid = h
        .board
        .get(&CheckKey::new("ns", "a"))
        .unwrap()
        .status
        .current_uuid
        .clone();
    let err = h
        .handle
        .report(
            uuid.parse::<RunId>().unwrap(),
            RunResult::reported(true, vec![]),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Rejection::NotStored(_)),
        "answered 500: {err:?}"
    );
    let reason = err.to_string();
    assert!(
        reason.contains("could not be stored") && reason.contains("disk full"),
        "{reason}"
    );
    h.stop.send(true).unwrap();
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn with_fencing_a_run_whose_start_cannot_be_stored_is_never_started() {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
    let mut h = start_with(BrokenStore, t0, true, |d, handle| d.fencing(handle));
    h.handle.loaded().await;
    h.handle.upsert(desired("  runInterval: 10s\n"), None).await;
    let f = h.finished.recv().await.unwrap();
    assert_eq!(f.result.outcome, Outcome::StartFailure);
    assert!(
        f.result.errors[0].contains("could not be recorded")
            && f.result.errors[0].contains("disk full"),
        "{:?}",
        f.result.errors
    );
    assert!(h.starts.lock().unwrap().is_empty());
    h.stop.send(true).unwrap();
    h.task.await.unwrap();
}

fn running(uuid: RunId, t0: DateTime<Utc>) -> HealthCheckStatus {
    HealthCheckStatus {
        ok: true,
        current_uuid: uuid.to_string(),
        last_run_unix: t0.timestamp(),
        run_deadline_unix: Some(t0.timestamp() + 30),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_report_that_beats_the_watch_waits_for_it_instead_of_a_final_400() {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
    // A follower: another replica holds the lease.
    let (claim, follower) = Leadership::elected("me");
    claim.held_by("other");
    let h = start_with(MemoryStore, t0, false, |d, _| {
        d.parking_reports(Duration::from_secs(5)).led_by(follower)
    });
    h.handle.loaded().await;
    let uuid = RunId::random();
    let early = tokio::spawn({
        let handle = h.handle.clone();
        async move { handle.report(uuid, RunResult::reported(true, vec![])).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!early.is_finished());
    h.handle
        .upsert(desired("  runInterval: 1m\n"), Some(running(uuid, t0)))
        .await;
    assert_eq!(early.await.unwrap(), Ok(()));
    let st = h
        .board
        .get(&CheckKey::new("ns", "a"))
        .unwrap()
        .status
        .clone();
    assert_eq!((st.success_count, st.current_uuid.as_str()), (1, ""));

    // A UUID that never shows up gets its 400 once the window has passed.
    let asked = tokio::time::Instant::now();
    let err = h
        .handle
        .report(RunId::random(), RunResult::reported(true, vec![]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Rejection::Unknown { .. }),
        "answered 400: {err:?}"
    );
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(7),
        "{waited:?}"
    );
    h.stop.send(true).unwrap();
    h.task.await.unwrap();
}
