//! Runs the engine: one task owns it, takes events (check changes, reports, runs ending) in
//! order, and hands the resulting effects to the runner, the store, the board and the metrics.
//! The loop wakes at least once a second, which `/healthz` uses as a heartbeat.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use super::clock::Clock;
use super::core::{Engine, Rejection};
use super::{Board, Desired, Effect, RunEnd, Runner, SaveFuture, StatusStore};
use crate::api::{CheckKey, HealthCheckStatus, Outcome};
use crate::metrics::Metrics;

/// The longest the loop sleeps, so the heartbeat stays fresh and wall-clock jumps are noticed.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Events queued towards the engine before senders wait.
const QUEUE: usize = 8192;

#[derive(Debug)]
pub enum Event {
    Upsert {
        desired: Desired,
        saved: Option<Box<HealthCheckStatus>>,
    },
    Remove {
        key: CheckKey,
    },
    /// The initial set of checks has been delivered.
    Loaded,
    Released {
        uuid: Uuid,
        end: RunEnd,
    },
    Report {
        uuid: Uuid,
        ok: bool,
        errors: Vec<String>,
        reply: oneshot::Sender<Result<(), Rejection>>,
    },
    RunNow {
        key: CheckKey,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// This replica became leader (true) or stopped being it (false).
    Leader(bool),
    /// A manual run asked for at this time (see `Engine::request_run`).
    RequestRun {
        key: CheckKey,
        at: chrono::DateTime<chrono::Utc>,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// A report for a run this replica has not heard of yet, waiting for the watch to catch up.
struct Parked {
    uuid: Uuid,
    ok: bool,
    errors: Vec<String>,
    reply: oneshot::Sender<Result<(), Rejection>>,
    until: tokio::time::Instant,
}

/// A finished run, for whoever watches outcomes (`probity run`, tests).
#[derive(Debug, Clone)]
pub struct Finished {
    pub key: CheckKey,
    pub outcome: Outcome,
    pub duration: Duration,
    pub errors: Vec<String>,
}

/// The way into the engine task; cheap to clone.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Event>,
}

fn gone() -> Rejection {
    Rejection {
        code: 503,
        reason: "the scheduler is shutting down; retry".into(),
    }
}

impl EngineHandle {
    pub fn channel() -> (EngineHandle, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (EngineHandle { tx }, rx)
    }

    pub async fn send(&self, ev: Event) {
        // Only fails once the engine has stopped, when nothing is left to tell.
        let _ = self.tx.send(ev).await;
    }

    pub async fn upsert(&self, desired: Desired, saved: Option<HealthCheckStatus>) {
        self.send(Event::Upsert {
            desired,
            saved: saved.map(Box::new),
        })
        .await
    }

    pub async fn remove(&self, key: CheckKey) {
        self.send(Event::Remove { key }).await
    }

    pub async fn loaded(&self) {
        self.send(Event::Loaded).await
    }

    pub async fn released(&self, uuid: Uuid, end: RunEnd) {
        self.send(Event::Released { uuid, end }).await
    }

    /// Hands a report to the engine; resolves once the outcome is stored (or refused).
    pub async fn report(&self, uuid: Uuid, ok: bool, errors: Vec<String>) -> Result<(), Rejection> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::Report {
                uuid,
                ok,
                errors,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        rx.await.unwrap_or_else(|_| Err(gone()))
    }

    pub async fn request_run(
        &self,
        key: CheckKey,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::RequestRun { key, at, reply })
            .await
            .map_err(|_| "the scheduler has stopped".to_string())?;
        rx.await
            .unwrap_or_else(|_| Err("the scheduler has stopped".into()))
    }

    pub async fn leader(&self, leading: bool) {
        self.send(Event::Leader(leading)).await
    }

    pub async fn run_now(&self, key: CheckKey) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Event::RunNow { key, reply })
            .await
            .map_err(|_| "the scheduler has stopped".to_string())?;
        rx.await
            .unwrap_or_else(|_| Err("the scheduler has stopped".into()))
    }
}

/// How long runs in flight may go on after shutdown is asked for, unless told otherwise.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);

pub struct Driver<R, S, C> {
    engine: Engine,
    runner: Arc<R>,
    store: Arc<S>,
    clock: C,
    board: Arc<Board>,
    metrics: Arc<Metrics>,
    events: mpsc::Receiver<Event>,
    /// None: runs until the event channel closes.
    shutdown: Option<watch::Receiver<bool>>,
    grace: Duration,
    observer: Option<mpsc::UnboundedSender<Finished>>,
    /// Set: a run starts only once its start is stored; a failed write ends it through here.
    fence: Option<EngineHandle>,
    park_window: Duration,
    parked: Vec<Parked>,
    /// Whether leadership still holds at this instant (the lease's renew deadline).
    lease_valid: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
}

/// Resolves when shutdown is asked for (or can no longer be); never without a signal.
async fn stopped(shutdown: &mut Option<watch::Receiver<bool>>) {
    match shutdown {
        Some(rx) => {
            let _ = rx.wait_for(|stop| *stop).await;
        }
        None => std::future::pending().await,
    }
}

impl<R: Runner, S: StatusStore, C: Clock> Driver<R, S, C> {
    /// A driver that publishes to a board and metrics of its own, has no shutdown signal and
    /// gives runs in flight 10 s at shutdown; the methods below change each of those.
    pub fn new(
        engine: Engine,
        runner: Arc<R>,
        store: Arc<S>,
        clock: C,
        events: mpsc::Receiver<Event>,
    ) -> Self {
        let board = Arc::new(Board::new(engine.identity()));
        let metrics = Arc::new(Metrics::new(Default::default(), board.clone()));
        Driver {
            engine,
            runner,
            store,
            clock,
            board,
            metrics,
            events,
            shutdown: None,
            grace: DEFAULT_GRACE,
            observer: None,
            fence: None,
            park_window: Duration::ZERO,
            parked: Vec::new(),
            lease_valid: None,
        }
    }

    /// Step down the moment `valid` says leadership lapsed, before acting on anything as leader;
    /// after a freeze (SIGSTOP, a stalled VM) the loop can wake before the elector does.
    pub fn leading_while(mut self, valid: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.lease_valid = Some(Arc::new(valid));
        self
    }

    fn check_lease(&mut self) {
        if let Some(valid) = &self.lease_valid {
            if self.engine.is_leader() && !valid() {
                warn!("the leader lease lapsed; stepping down");
                let effects = self.engine.set_leader(self.clock.now(), false);
                self.act(effects);
            }
        }
    }

    /// Start a run only after the status write that records its start succeeded (with a
    /// store that fences, a deposed leader's write fails and no pod is created). A failed write
    /// ends the run as a start failure, sent back through `handle`.
    pub fn fencing(mut self, handle: EngineHandle) -> Self {
        self.fence = Some(handle);
        self
    }

    /// Hold a report for a run nobody here has heard of for up to `window`: on a follower the
    /// watch may bring the run's start a moment after its pod reported, and a 400 is final.
    pub fn parking_reports(mut self, window: Duration) -> Self {
        self.park_window = window;
        self
    }

    /// Publish to these (shared with the HTTP server).
    pub fn publishing(mut self, board: Arc<Board>, metrics: Arc<Metrics>) -> Self {
        self.board = board;
        self.metrics = metrics;
        self
    }

    /// Stop when this flips to true.
    pub fn stopping_on(mut self, shutdown: watch::Receiver<bool>) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// How long runs in flight may go on after shutdown is asked for.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Tell `observer` about every finished run.
    pub fn observed_by(mut self, observer: mpsc::UnboundedSender<Finished>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn board(&self) -> &Arc<Board> {
        &self.board
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub async fn run(mut self) {
        loop {
            self.check_lease();
            self.expire_parked();
            self.board.tick();
            let now = self.clock.now();
            let runner = &self.runner;
            let effects = self.engine.tick_described(now, |u| runner.describe(u));
            self.act(effects);
            let sleep = self
                .engine
                .next_wakeup()
                .map_or(MAX_SLEEP, |t| (t - now).to_std().unwrap_or_default())
                .min(MAX_SLEEP);
            tokio::select! {
                biased;
                _ = stopped(&mut self.shutdown) => break,
                ev = self.events.recv() => match ev {
                    Some(ev) => self.handle(ev),
                    None => break,
                },
                _ = tokio::time::sleep(sleep) => {}
            }
        }
        self.drain().await;
    }

    /// Stops starting runs and lets those in flight finish, up to the grace period. Runs still
    /// going after it keep their saved state and are adopted on the next start.
    async fn drain(&mut self) {
        self.engine.drain();
        let until = tokio::time::Instant::now() + self.grace;
        if self.engine.in_flight() > 0 {
            info!(runs = self.engine.in_flight(), grace = ?self.grace, "waiting for runs in flight");
        }
        while self.engine.in_flight() > 0 && tokio::time::Instant::now() < until {
            self.board.tick();
            let now = self.clock.now();
            let runner = &self.runner;
            let effects = self.engine.tick_described(now, |u| runner.describe(u));
            self.act(effects);
            tokio::select! {
                ev = self.events.recv() => match ev {
                    Some(ev) => self.handle(ev),
                    None => break,
                },
                _ = tokio::time::sleep(MAX_SLEEP.min(until - tokio::time::Instant::now())) => {}
            }
        }
        if self.engine.in_flight() > 0 {
            warn!(
                runs = self.engine.in_flight(),
                "runs still in flight at shutdown; they will be adopted on restart"
            );
        }
    }

    fn handle(&mut self, ev: Event) {
        self.check_lease();
        let now = self.clock.now();
        match ev {
            Event::Upsert { desired, saved } => {
                let effects = self.engine.upsert(now, desired, saved.map(|s| *s));
                self.act(effects);
                self.retry_parked();
            }
            Event::Leader(leading) => {
                info!(leading, "leadership changed");
                let effects = self.engine.set_leader(now, leading);
                self.act(effects);
            }
            Event::Remove { key } => {
                let effects = self.engine.remove(now, &key);
                self.act(effects);
            }
            Event::Loaded => {
                self.engine.finish_startup();
                self.board.set_ready();
            }
            Event::Released { uuid, end } => {
                let effects = self.engine.release(now, uuid, end);
                self.act(effects);
            }
            Event::Report {
                uuid,
                ok,
                errors,
                reply,
            } => self.report(uuid, ok, errors, reply, None),
            Event::RequestRun { key, at, reply } => {
                let r = self
                    .engine
                    .request_run(now, &key, at)
                    .map(|effects| self.act(effects));
                let _ = reply.send(r);
            }
            Event::RunNow { key, reply } => {
                let r = self
                    .engine
                    .run_now(now, &key)
                    .map(|effects| self.act(effects));
                let _ = reply.send(r);
            }
        }
    }

    fn report(
        &mut self,
        uuid: Uuid,
        ok: bool,
        errors: Vec<String>,
        reply: oneshot::Sender<Result<(), Rejection>>,
        parked_until: Option<tokio::time::Instant>,
    ) {
        if !self.park_window.is_zero() && !self.engine.knows(uuid) {
            let until =
                parked_until.unwrap_or_else(|| tokio::time::Instant::now() + self.park_window);
            if tokio::time::Instant::now() < until {
                self.parked.push(Parked {
                    uuid,
                    ok,
                    errors,
                    reply,
                    until,
                });
                return;
            }
        }
        let now = self.clock.now();
        let (effects, verdict) = self.engine.report(now, uuid, ok, errors);
        let stored = self.apply(effects);
        match (verdict, stored) {
            (Err(r), _) => {
                let _ = reply.send(Err(r));
            }
            (Ok(()), Some(fut)) => {
                tokio::spawn(async move {
                    let r = fut.await.map_err(|e| Rejection {
                        code: 500,
                        reason: format!("the report was accepted but could not be stored: {e}"),
                    });
                    let _ = reply.send(r);
                });
            }
            (Ok(()), None) => {
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Parked reports whose run is now known are answered.
    fn retry_parked(&mut self) {
        if self.parked.is_empty() {
            return;
        }
        let (known, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| self.engine.knows(p.uuid));
        self.parked = waiting;
        for p in known {
            self.report(p.uuid, p.ok, p.errors, p.reply, Some(p.until));
        }
    }

    /// Parked reports past their window get the answer they would have had at once.
    fn expire_parked(&mut self) {
        let now = tokio::time::Instant::now();
        if self.parked.iter().all(|p| p.until > now) {
            return;
        }
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|p| p.until <= now);
        self.parked = waiting;
        for p in due {
            self.report(p.uuid, p.ok, p.errors, p.reply, Some(p.until));
        }
    }

    fn act(&mut self, effects: Vec<Effect>) {
        if let Some(fut) = self.apply(effects) {
            tokio::spawn(log_failure(fut));
        }
    }

    /// Carries out effects in order. Returns the save of the check whose run finished (else the
    /// last save), so a report can be answered once its outcome is durable.
    fn apply(&mut self, effects: Vec<Effect>) -> Option<SaveFuture> {
        let mut saves: Vec<(CheckKey, SaveFuture)> = Vec::new();
        let mut finished: Option<CheckKey> = None;
        for effect in effects {
            match effect {
                Effect::Save { key, view, persist } => {
                    if persist {
                        // The store orders writes of a check when `save` is called, so the
                        // futures may complete on any task.
                        let fut = self.store.save(&key, &view.status);
                        if let Some(i) = saves.iter().position(|(k, _)| *k == key) {
                            let (_, prev) = saves.swap_remove(i);
                            tokio::spawn(log_failure(prev));
                        }
                        saves.push((key, fut));
                    }
                    self.board.put(view);
                }
                Effect::Forget { key } => {
                    self.store.forget(&key);
                    self.board.remove(&key);
                    self.metrics.forget(&key);
                }
                Effect::Start(run) => {
                    debug!(check = %run.key, uuid = %run.uuid, "starting run");
                    let recorded = self
                        .fence
                        .as_ref()
                        .and_then(|h| Some((h, saves.iter().position(|(k, _)| *k == run.key)?)));
                    match recorded {
                        Some((handle, i)) => {
                            let (_, fut) = saves.swap_remove(i);
                            let (runner, handle) = (self.runner.clone(), handle.clone());
                            tokio::spawn(async move {
                                match fut.await {
                                    Ok(()) => runner.start(run),
                                    Err(e) => {
                                        let msg = format!(
                                            "the start could not be recorded, so nothing was started: {e}"
                                        );
                                        handle.released(run.uuid, RunEnd::StartFailed(msg)).await
                                    }
                                }
                            });
                        }
                        None => self.runner.start(run),
                    }
                }
                Effect::Adopt {
                    key,
                    uuid,
                    deadline,
                    check,
                } => {
                    info!(check = %key, %uuid, "adopting run in flight");
                    self.runner.adopt(key, uuid, deadline, check);
                }
                Effect::Stop { key, uuid, reason } => {
                    debug!(check = %key, %uuid, ?reason, "stopping run");
                    self.runner.stop(&key, uuid, reason);
                }
                Effect::Disown { key, uuid } => {
                    debug!(check = %key, %uuid, "letting go of run (no longer leader)");
                    self.runner.disown(&key, uuid);
                }
                Effect::Started { key: _, lag } => {
                    self.metrics.observe_lag(lag);
                }
                Effect::Finished {
                    key,
                    uuid,
                    outcome,
                    duration,
                    errors,
                    probe,
                } => {
                    if outcome.is_success() {
                        debug!(check = %key, %uuid, ?duration, "run succeeded");
                    } else {
                        info!(check = %key, %uuid, outcome = outcome.as_str(), ?duration, errors = ?errors, "run failed");
                    }
                    finished.get_or_insert_with(|| key.clone());
                    self.metrics.observe_run(&key, duration);
                    if let Some(method) = probe {
                        self.metrics.observe_probe(&key, method, duration);
                    }
                    if let Some(obs) = &self.observer {
                        let _ = obs.send(Finished {
                            key,
                            outcome,
                            duration,
                            errors,
                        });
                    }
                }
            }
        }
        let wanted = finished
            .and_then(|k| saves.iter().position(|(s, _)| *s == k))
            .or(saves.len().checked_sub(1));
        let chosen = wanted.map(|i| saves.swap_remove(i).1);
        for (_, fut) in saves {
            tokio::spawn(log_failure(fut));
        }
        chosen
    }
}

async fn log_failure(fut: SaveFuture) {
    if let Err(e) = fut.await {
        error!("saving check state: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::load::parse_documents;
    use crate::engine::clock::TokioClock;
    use crate::engine::{EngineConfig, StartRun, StopReason};
    use crate::store::MemoryStore;
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
                engine.report(run.uuid, true, vec![]).await.unwrap();
                engine
                    .released(
                        run.uuid,
                        RunEnd::Exited {
                            success: true,
                            message: String::new(),
                        },
                    )
                    .await;
            });
        }
        fn adopt(&self, _: CheckKey, _: Uuid, _: DateTime<Utc>, _: Arc<crate::api::HealthCheck>) {}
        fn stop(&self, _: &CheckKey, _: Uuid, _: StopReason) {}
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
        let text = format!(
            "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: a, namespace: ns}}\nspec:\n  podSpec: {{spec: {{containers: [{{name: c, image: i, command: [x]}}]}}}}\n{spec}"
        );
        Desired {
            check: Arc::new(parse_documents(&text).unwrap().remove(0).check.unwrap()),
            load_error: None,
        }
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
        let driver = Driver::new(engine, runner, Arc::new(store), clock, events)
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

    #[tokio::test(start_paused = true)]
    async fn runs_start_exactly_on_schedule_on_a_paused_clock() {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
        let mut h = start(MemoryStore, t0, true);
        h.handle.loaded().await;
        h.handle.upsert(desired("  runInterval: 10s\n"), None).await;
        for _ in 0..4 {
            let f = h.finished.recv().await.unwrap();
            assert_eq!(f.outcome, Outcome::Success);
        }
        let want: Vec<_> = (0..4)
            .map(|i| t0 + chrono::Duration::seconds(10 * i))
            .collect();
        assert_eq!(*h.starts.lock().unwrap(), want);
        let view = h.board.get(&CheckKey::new("ns", "a")).unwrap();
        assert_eq!(view.status.success_count, 4);
        assert!(h.board.is_ready());
        assert!(h.board.since_tick().unwrap() <= MAX_SLEEP);
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
            .report(Uuid::parse_str(&uuid).unwrap(), true, vec![])
            .await
            .unwrap_err();
        assert_eq!(err.code, 500);
        assert!(
            err.reason.contains("could not be stored") && err.reason.contains("disk full"),
            "{}",
            err.reason
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
        assert_eq!(f.outcome, Outcome::StartFailure);
        assert!(
            f.errors[0].contains("could not be recorded") && f.errors[0].contains("disk full"),
            "{:?}",
            f.errors
        );
        assert!(h.starts.lock().unwrap().is_empty());
        h.stop.send(true).unwrap();
        h.task.await.unwrap();
    }

    fn running(uuid: Uuid, t0: DateTime<Utc>) -> HealthCheckStatus {
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
        let h = start_with(MemoryStore, t0, false, |d, _| {
            d.parking_reports(Duration::from_secs(5))
        });
        h.handle.leader(false).await;
        h.handle.loaded().await;
        let uuid = Uuid::new_v4();
        let early = tokio::spawn({
            let handle = h.handle.clone();
            async move { handle.report(uuid, true, vec![]).await }
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
            .report(Uuid::new_v4(), true, vec![])
            .await
            .unwrap_err();
        assert_eq!(err.code, 400);
        let waited = asked.elapsed();
        assert!(
            waited >= Duration::from_secs(5) && waited < Duration::from_secs(7),
            "{waited:?}"
        );
        h.stop.send(true).unwrap();
        h.task.await.unwrap();
    }
}
