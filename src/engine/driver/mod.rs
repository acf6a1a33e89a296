//! Runs the engine: one task owns it, takes events (check changes, reports, runs ending) in
//! order, and hands the resulting effects to the runner, the store, the board and the
//! observers. Who leads is read from the [`Leadership`] handle at the instant of acting. The
//! loop wakes at least once a second, which `/healthz` uses as a heartbeat.

mod handle;
mod park;

pub use handle::{EngineHandle, Event};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::clock::Clock;
use super::core::Engine;
use super::{
    Board, Effect, Finished, Leadership, Observer, Rejection, RunEnd, Runner, SaveFuture,
    StatusStore,
};
use crate::api::{truncate, CheckKey, RunId, RunResult};

/// A state write asked of the store, and whether it may linger if nobody waits for it.
struct Save {
    fut: SaveFuture,
    lingers: bool,
}

/// How much of a failed run's errors goes into its log line.
const LOGGED_ERRORS: usize = 1024;

/// The longest the loop sleeps, so the heartbeat stays fresh and wall-clock jumps are noticed.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// Reports answered 500 (their outcome could not be stored) remembered for an identical retry;
/// beyond this many the oldest are forgotten.
const UNCONFIRMED_MEMORY: usize = 10_000;

/// Runs whose report's outcome is recorded in memory but whose save failed, so their client
/// got a 500 and will retry: the identical retry (judged by the engine against the recorded
/// outcome) is answered by storing the state again, not with "already reported". Shared with
/// the tasks that await the saves.
#[derive(Debug, Default)]
struct Unconfirmed {
    runs: std::collections::HashSet<RunId>,
    order: std::collections::VecDeque<RunId>,
}

impl Unconfirmed {
    fn add(&mut self, uuid: RunId) {
        if self.runs.insert(uuid) {
            self.order.push_back(uuid);
        }
        while self.order.len() > UNCONFIRMED_MEMORY {
            if let Some(old) = self.order.pop_front() {
                self.runs.remove(&old);
            }
        }
    }

    fn forget(&mut self, uuid: RunId) {
        if self.runs.remove(&uuid) {
            self.order.retain(|u| *u != uuid);
        }
    }
}

/// How long runs in flight may go on after shutdown is asked for, unless told otherwise.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// The engine is ticked (due runs started, deadlines acted on) at most this often, unless told
/// otherwise. At a thousand runs a second each run due at its own instant would cost the
/// process a wake-up, and its probe's socket events one each; started together, the runs due
/// within a tick share them (benches/probes.rs: an HTTP probe's CPU 0.141 -> 0.115 ms with
/// 10 ms, 0.094 -> 0.080 ms going from 10 to 25 ms). A run starts at most this much after it
/// is due, which no schedule in seconds notices.
pub const DEFAULT_TICK: Duration = Duration::from_millis(25);

pub struct Driver<R, S, C> {
    engine: Engine,
    runner: Arc<R>,
    store: Arc<S>,
    clock: C,
    board: Arc<Board>,
    events: mpsc::Receiver<Event>,
    /// None: runs until the event channel closes.
    shutdown: Option<watch::Receiver<bool>>,
    grace: Duration,
    observers: Vec<Arc<dyn Observer>>,
    /// Set: a run starts only once its start is stored; a failed write ends it through here.
    fence: Option<EngineHandle>,
    park_window: Duration,
    tick_every: Duration,
    /// When the engine may next be ticked (the last tick plus `tick_every`).
    next_tick: tokio::time::Instant,
    parked: park::ParkedReports,
    /// None: this process always leads.
    leadership: Option<Leadership>,
    /// Whether this process has led: a replica that starts as a follower is not stepping down.
    has_led: bool,
    unconfirmed: Arc<std::sync::Mutex<Unconfirmed>>,
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
    /// A driver that publishes to `board` (shared with the HTTP server), leads for good, has
    /// no observers and no shutdown signal, and gives runs in flight 10 s at shutdown; the
    /// methods below change each of those.
    pub fn new(
        engine: Engine,
        runner: Arc<R>,
        store: Arc<S>,
        clock: C,
        events: mpsc::Receiver<Event>,
        board: Arc<Board>,
    ) -> Self {
        Driver {
            engine,
            runner,
            store,
            clock,
            board,
            events,
            shutdown: None,
            grace: DEFAULT_GRACE,
            observers: Vec::new(),
            fence: None,
            park_window: Duration::ZERO,
            tick_every: DEFAULT_TICK,
            next_tick: tokio::time::Instant::now(),
            parked: park::ParkedReports::default(),
            leadership: None,
            has_led: false,
            unconfirmed: Arc::default(),
        }
    }

    /// Lead only while `leadership` says so, judged before acting on anything: after a freeze
    /// (SIGSTOP, a stalled VM) the loop can wake before the elector does.
    pub fn led_by(mut self, leadership: Leadership) -> Self {
        self.leadership = Some(leadership);
        self
    }

    /// Makes the engine's mode what the claim says at this instant.
    fn follow_leadership(&mut self) {
        let Some(current) = self.leadership.as_ref().map(Leadership::is_current) else {
            return;
        };
        if current != self.engine.is_leader() {
            if current {
                info!("leading");
                self.has_led = true;
            } else if self.has_led {
                warn!("no longer the leader; stepping down");
            } else {
                info!("not the leader; following");
            }
            let effects = self.engine.set_leader(self.clock.now(), current);
            self.act(effects);
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

    /// Tick the engine at most once per `period`: runs falling due within it start together.
    /// Zero ticks after every event and at each due instant.
    pub fn ticking_every(mut self, period: Duration) -> Self {
        self.tick_every = period;
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

    /// Tell `observer` about runs starting and finishing and checks going away.
    pub fn observed_by(mut self, observer: impl Observer) -> Self {
        self.observers.push(Arc::new(observer));
        self
    }

    /// The same, for an observer shared with others (the metrics, with the HTTP server).
    pub fn observed_by_shared(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observers.push(observer);
        self
    }

    pub fn board(&self) -> &Arc<Board> {
        &self.board
    }

    pub async fn run(mut self) {
        loop {
            self.follow_leadership();
            self.expire_parked();
            self.board.tick();
            let now = self.clock.now();
            let runner = &self.runner;
            let at = tokio::time::Instant::now();
            if at >= self.next_tick {
                let effects = self.engine.tick_described(now, |u| runner.describe(u));
                self.act(effects);
                self.next_tick = at + self.tick_every;
            }
            let sleep = self
                .engine
                .next_wakeup()
                .map_or(MAX_SLEEP, |t| (t - now).to_std().unwrap_or_default())
                .min(MAX_SLEEP)
                .max(self.next_tick.saturating_duration_since(at));
            let leadership = &mut self.leadership;
            let claim_changed = async {
                match leadership.as_mut() {
                    Some(l) => l.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = stopped(&mut self.shutdown) => break,
                ev = self.events.recv() => match ev {
                    Some(ev) => self.handle(ev),
                    None => break,
                },
                _ = claim_changed => {}
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
        self.follow_leadership();
        let now = self.clock.now();
        match ev {
            Event::Upsert { desired, saved } => {
                // Every watch event comes here: the key is worked out only if a report waits.
                let key = (!self.parked.is_empty()).then(|| CheckKey::of(&desired.check));
                let effects = self.engine.upsert(now, desired, saved.map(|s| *s));
                self.act(effects);
                if let Some(key) = key {
                    self.retry_parked(&key);
                }
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
                result,
                reply,
            } => self.report(uuid, result, reply, None),
            Event::Ended { uuid, result } => {
                // Refused only if the run already ended (its deadline passed): the release
                // then has nothing to add either.
                let (effects, _) = self.engine.report(now, uuid, result.clone());
                self.act(effects);
                let effects = self.engine.release(now, uuid, RunEnd::Ended(result));
                self.act(effects);
            }
            Event::Heartbeat { key, beat, reply } => {
                let (effects, verdict) = self.engine.heartbeat(now, &key, beat);
                let stored = self.apply(effects);
                match (verdict, stored) {
                    (Err(r), _) => {
                        let _ = reply.send(Err(r));
                    }
                    // Answered once the ping is durable: a 200 means it is not lost.
                    (Ok(()), Some(fut)) => {
                        tokio::spawn(async move {
                            let r = fut.await.map_err(|e| Rejection::NotStored(Arc::new(e)));
                            let _ = reply.send(r);
                        });
                    }
                    (Ok(()), None) => {
                        let _ = reply.send(Ok(()));
                    }
                }
            }
            Event::RequestRun { key, at, reply } => {
                let r = self
                    .engine
                    .request_run(now, &key, at)
                    .map(|effects| self.act(effects));
                let _ = reply.send(r);
            }
            Event::Notified { key, record } => {
                let effects = self.engine.notified(&key, record);
                self.act(effects);
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
        uuid: RunId,
        result: RunResult,
        reply: oneshot::Sender<Result<(), Rejection>>,
        parked_until: Option<tokio::time::Instant>,
    ) {
        if !self.park_window.is_zero() && !self.engine.knows(uuid) {
            let until =
                parked_until.unwrap_or_else(|| tokio::time::Instant::now() + self.park_window);
            if tokio::time::Instant::now() < until {
                let waiting = park::Parked {
                    uuid,
                    result: Box::new(result),
                    reply,
                    until,
                };
                if let Err(p) = self.parked.park(waiting) {
                    warn!(
                        waiting = self.parked.len(),
                        "too many reports wait for their runs; answering 503"
                    );
                    let _ = p.reply.send(Err(Rejection::Overloaded));
                }
                return;
            }
        }
        let now = self.clock.now();
        let unconfirmed = self.unconfirmed.clone();
        let answered_500 = {
            let u = unconfirmed.lock().unwrap_or_else(|e| e.into_inner());
            !u.runs.is_empty() && u.runs.contains(&uuid)
        };
        // The retry of a report answered 500, with the verdict recorded: store it again.
        let again = answered_500
            .then(|| self.engine.persist_again(uuid, &result))
            .flatten();
        let (effects, verdict) = match again {
            Some(save) => {
                unconfirmed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .forget(uuid);
                (vec![save], Ok(()))
            }
            None => self.engine.report(now, uuid, result),
        };
        let stored = self.apply(effects);
        match (verdict, stored) {
            (Err(r), _) => {
                let _ = reply.send(Err(r));
            }
            (Ok(()), Some(fut)) => {
                tokio::spawn(async move {
                    let r = fut.await.map_err(|e| Rejection::NotStored(Arc::new(e)));
                    if r.is_err() {
                        // Remembered before the client hears 500, so its retry finds it.
                        unconfirmed
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .add(uuid);
                    }
                    let _ = reply.send(r);
                });
            }
            (Ok(()), None) => {
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Parked reports whose run the state of `key` now shows (in flight or ended) are
    /// answered: O(1) per event, whatever the number waiting.
    fn retry_parked(&mut self, key: &CheckKey) {
        for uuid in self.engine.runs_shown(key) {
            for p in self.parked.take_run(uuid) {
                self.report(p.uuid, *p.result, p.reply, Some(p.until));
            }
        }
    }

    /// Parked reports past their window get the answer they would have had at once.
    fn expire_parked(&mut self) {
        if self.parked.is_empty() {
            return;
        }
        for p in self.parked.take_expired(tokio::time::Instant::now()) {
            self.report(p.uuid, *p.result, p.reply, Some(p.until));
        }
    }

    fn act(&mut self, effects: Vec<Effect>) {
        if let Some(save) = self.apply_saving(effects) {
            self.let_go(save);
        }
    }

    /// A save nobody waits for: a probe's may linger (see `StatusStore::linger`).
    fn let_go(&self, save: Save) {
        if save.lingers {
            self.store.linger(save.fut)
        } else {
            self.store.detach(save.fut)
        }
    }

    /// Carries out effects in order. Returns the save of the check whose run finished (else the
    /// last save), so a report can be answered once its outcome is durable.
    fn apply(&mut self, effects: Vec<Effect>) -> Option<SaveFuture> {
        self.apply_saving(effects).map(|s| s.fut)
    }

    fn apply_saving(&mut self, effects: Vec<Effect>) -> Option<Save> {
        let mut saves: Vec<(CheckKey, Save)> = Vec::new();
        let mut finished: Option<CheckKey> = None;
        for effect in effects {
            match effect {
                Effect::Save { key, view, persist } => {
                    if persist {
                        // The store orders writes of a check when `save` is called, so the
                        // futures may complete on any task.
                        let save = Save {
                            fut: self.store.save(&key, &view.status),
                            lingers: view.resource.spec.probe.is_some(),
                        };
                        if let Some(i) = saves.iter().position(|(k, _)| *k == key) {
                            let (_, prev) = saves.swap_remove(i);
                            self.let_go(prev);
                        }
                        saves.push((key, save));
                    }
                    self.board.put(view);
                }
                Effect::Forget { key } => {
                    self.store.forget(&key);
                    self.board.remove(&key);
                    for o in &self.observers {
                        o.forgotten(&key);
                    }
                }
                Effect::Start(run) => {
                    debug!(check = %run.key, uuid = %run.uuid, "starting run");
                    let recorded = self
                        .fence
                        .as_ref()
                        .and_then(|h| Some((h, saves.iter().position(|(k, _)| *k == run.key)?)));
                    match recorded {
                        Some((handle, i)) => {
                            let (_, Save { fut, .. }) = saves.swap_remove(i);
                            let (runner, handle) = (self.runner.clone(), handle.clone());
                            tokio::spawn(async move {
                                match fut.await {
                                    Ok(()) => runner.start(run),
                                    Err(e) => {
                                        let msg = format!(
                                            "the start could not be recorded, so nothing was started: {e}"
                                        );
                                        handle.released(run.uuid, RunEnd::start_failed(msg)).await
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
                Effect::Started { key, lag } => {
                    for o in &self.observers {
                        o.started(&key, lag);
                    }
                }
                Effect::Deferred { key, reason, retry } => {
                    warn!(check = %key, %retry, "run not started, not the check's fault, tried again: {reason}");
                    for o in &self.observers {
                        o.deferred(&key);
                    }
                }
                Effect::Finished {
                    key,
                    uuid,
                    result,
                    duration,
                    probe,
                } => {
                    if result.passed_ok() {
                        debug!(check = %key, %uuid, ?duration, "run succeeded");
                    } else {
                        // A check's errors can be up to a report body long: the log gets a line.
                        let said = truncate(&result.errors.join(" | "), LOGGED_ERRORS);
                        info!(check = %key, %uuid, outcome = result.outcome.as_str(), ?duration, errors = %said, "run failed");
                    }
                    finished.get_or_insert_with(|| key.clone());
                    let run = Finished {
                        key,
                        result,
                        duration,
                        probe,
                    };
                    for o in &self.observers {
                        o.finished(&run);
                    }
                }
            }
        }
        let wanted = finished
            .and_then(|k| saves.iter().position(|(s, _)| *s == k))
            .or(saves.len().checked_sub(1));
        let chosen = wanted.map(|i| saves.swap_remove(i).1);
        for (_, save) in saves {
            self.let_go(save);
        }
        chosen
    }
}

#[cfg(test)]
mod tests;
