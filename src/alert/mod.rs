//! Notifications: tells receivers (webhook, Slack, PagerDuty, Alertmanager) when a check becomes
//! failing, is still failing, and recovers.
//!
//! The notifier runs on every replica and sends only while its replica leads. It reads the
//! published state (`Board`) once a second, and decides from each check's status alone
//! (`decide`): the failing spell it is in against what each receiver was last told. A delivery
//! that succeeds is recorded in the status through the engine (`Engine::notified`), which the
//! backend persists (the HealthCheck status, the local journal), so a restart or a new leader
//! neither repeats nor skips a notice. A notice is lost to no one: until it is recorded, the
//! leader of the moment sends it. The one repeat left is a leader that dies between a delivery
//! and its record; each notice carries an id (`X-Probity-Notification-Id`, PagerDuty's dedup key,
//! Alertmanager's labels) by which a receiver drops it.
//!
//! Deliveries run beside the engine, never in its way: a receiver that is down is retried with
//! backoff, shown on the status page and in metrics. Each receiver has its own queue and its
//! own delivery slots, so one that hangs delays only itself; its queue is rebuilt from the
//! statuses each scan and capped, so a backlog costs bounded memory and a notice the check has
//! moved past is superseded rather than sent late.

pub mod config;
pub mod decide;
pub mod deliver;
pub mod mail;
pub mod maintenance;
pub mod message;
pub mod receivers;
pub mod reload;
pub mod template;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::api::protocol::NOTIFY_ANNOTATION;
use crate::api::{AlertRecord, CheckKey};
use crate::engine::clock::Clock;
use crate::engine::{Board, CheckView, EngineHandle};
use crate::metrics::{Dropped, Metrics};
pub use config::Alerting;
use config::Kind;
use decide::{Hold, Notice, Policy, Situation};
use message::Message;

/// How often the published state is read for notices due.
const SCAN: Duration = Duration::from_secs(1);
/// Deliveries in flight at once, per receiver: one that hangs holds only its own slots.
const PER_RECEIVER: usize = 8;
/// Notices held in memory per receiver, most urgent first; the rest wait in the checks'
/// statuses, where the next scan finds them again.
const QUEUE_CAP: usize = 1_000;
/// Alertmanager forgets an alert not posted again within its resolve timeout (5 m by default),
/// as Prometheus re-posts every evaluation: a firing alert is posted again this often.
const ALERTMANAGER_REFRESH: i64 = 60;
/// Longest wait between attempts at a failed delivery.
const MAX_BACKOFF: i64 = 300;

/// One receiver's notices about one check.
type Slot = (CheckKey, usize);

#[derive(Debug, Clone)]
struct Job {
    slot: Slot,
    message: Message,
    /// An Alertmanager re-post: not a notice of its own, not recorded.
    refresh: bool,
}

#[derive(Debug)]
struct Done {
    job: Job,
    result: Result<(), deliver::DeliveryError>,
}

#[derive(Debug)]
struct Retry {
    attempts: u32,
    next_unix: i64,
}

pub struct Notifier {
    cfg: Arc<Alerting>,
    board: Arc<Board>,
    engine: EngineHandle,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
    in_flight: HashSet<Slot>,
    retries: HashMap<Slot, Retry>,
    /// Delivered and handed to the engine, perhaps not yet on the board.
    told: HashMap<Slot, AlertRecord>,
    refreshed: HashMap<Slot, i64>,
    /// Each receiver's last failure, while it has notices waiting for a retry.
    failing: Vec<Option<String>>,
    /// Each receiver's notices due, most urgent first, rebuilt by every scan.
    queues: Vec<VecDeque<Job>>,
    /// Each receiver's deliveries in flight.
    running: Vec<usize>,
    /// Each receiver's notices due but beyond `QUEUE_CAP`, at the last scan.
    overflow: Vec<usize>,
    /// Each receiver's notices superseded since start, for the page.
    superseded: Vec<u64>,
    /// Checks whose maintenance annotation is not a time (a warning each).
    bad_annotations: HashSet<CheckKey>,
    published_maintenance: HashMap<CheckKey, String>,
    /// Newer configurations, as the file changes.
    updates: Option<watch::Receiver<Arc<Alerting>>>,
}

impl Notifier {
    pub fn new(
        cfg: Arc<Alerting>,
        board: Arc<Board>,
        engine: EngineHandle,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> crate::Result<Self> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("probity/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(crate::Error::HttpClient)?;
        for (name, kind) in &cfg.receivers {
            metrics.notifications_pending(name, 0);
            info!(receiver = %name, kind = kind.name(), "notifications configured");
        }
        let n = cfg.receivers.len();
        Ok(Notifier {
            failing: vec![None; n],
            queues: vec![VecDeque::new(); n],
            running: vec![0; n],
            overflow: vec![0; n],
            superseded: vec![0; n],
            bad_annotations: HashSet::new(),
            published_maintenance: HashMap::new(),
            updates: None,
            cfg,
            board,
            engine,
            clock,
            metrics,
            client,
            in_flight: HashSet::new(),
            retries: HashMap::new(),
            told: HashMap::new(),
            refreshed: HashMap::new(),
        })
    }

    /// Takes each configuration `updates` sends from then on.
    pub fn following(mut self, updates: watch::Receiver<Arc<Alerting>>) -> Self {
        self.updates = Some(updates);
        self
    }

    /// Runs until `shutdown`; deliveries in flight then get their own timeout to finish.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(SCAN);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tasks: JoinSet<Done> = JoinSet::new();
        let mut updates = self.updates.take();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                new = next_config(&mut updates) => {
                    // Deliveries in flight finish under the configuration they began with
                    // (each within its timeout); then the new one takes over.
                    while let Some(done) = tasks.join_next().await {
                        if let Ok(done) = done {
                            self.finished(done).await;
                        }
                    }
                    self.reconfigure(new);
                }
                _ = tick.tick() => {
                    let (due, clears) = self.scan();
                    self.requeue(due);
                    for (key, record) in clears {
                        self.engine.notified(key, record).await;
                    }
                }
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(done) = done {
                        self.finished(done).await;
                    }
                }
            }
            for receiver in 0..self.queues.len() {
                while self.running[receiver] < PER_RECEIVER {
                    let Some(job) = self.queues[receiver].pop_front() else {
                        break;
                    };
                    if !self.in_flight.insert(job.slot.clone()) {
                        continue;
                    }
                    self.running[receiver] += 1;
                    let request = deliver::delivery(&self.cfg.receivers[receiver].1, &job.message);
                    let client = self.client.clone();
                    tasks.spawn(async move {
                        let result = deliver::deliver(&client, &request).await;
                        Done { job, result }
                    });
                }
                // What still waits once the free slots took theirs: a notice sent at once was
                // never waiting.
                let queued = self.queues[receiver].len() + self.overflow[receiver];
                self.metrics
                    .notifications_queued(&self.cfg.receivers[receiver].0, queued as i64);
            }
        }
        let drain = async {
            while let Some(done) = tasks.join_next().await {
                if let Ok(done) = done {
                    self.finished(done).await;
                }
            }
        };
        let _ = tokio::time::timeout(deliver::TIMEOUT, drain).await;
    }

    /// Which checks are in a maintenance window now, published on the board for the page,
    /// `/json` and the metrics; an annotation that is not a time is a warning naming it.
    fn maintenance(&mut self, views: &[Arc<CheckView>]) -> HashMap<CheckKey, String> {
        let now = self.clock.now();
        let open = maintenance::open(&self.cfg.maintenance, now);
        let mut held = HashMap::new();
        let mut bad = HashSet::new();
        for view in views {
            let (m, problem) = maintenance::of(&view.resource, &open, now);
            if let Some(m) = m {
                held.insert(view.key.clone(), m.to_string());
            }
            if let Some(p) = problem {
                self.board
                    .set_warning(&format!("maintenance of {}", view.key), Some(p));
                bad.insert(view.key.clone());
            }
        }
        for gone in self.bad_annotations.difference(&bad) {
            self.board
                .set_warning(&format!("maintenance of {gone}"), None);
        }
        self.bad_annotations = bad;
        if self.published_maintenance != held {
            self.board.set_maintenance(held.clone());
            self.published_maintenance = held.clone();
        }
        held
    }

    /// Replaces each receiver's queue by what is due now, most urgent first (a firing or a
    /// resolve before a reminder, a reminder before Alertmanager's re-post). A notice queued
    /// before but due no more was superseded: the check moved on while its receiver was slow.
    fn requeue(&mut self, due: Vec<Job>) {
        let n = self.queues.len();
        let mut fresh: Vec<Vec<Job>> = (0..n).map(|_| Vec::new()).collect();
        for job in due {
            fresh[job.slot.1].push(job);
        }
        let leading = self.board.is_leader();
        for (receiver, mut jobs) in fresh.into_iter().enumerate() {
            jobs.sort_by_key(|j| match (j.refresh, j.message.notice) {
                (true, _) => 2,
                (false, Notice::Reminder) => 1,
                _ => 0,
            });
            let old = std::mem::take(&mut self.queues[receiver]);
            if leading && !old.is_empty() {
                let now: HashSet<&Slot> = jobs.iter().map(|j| &j.slot).collect();
                let gone = old
                    .iter()
                    .filter(|j| !j.refresh && j.message.notice != Notice::Reminder)
                    .filter(|j| !now.contains(&j.slot) && !self.in_flight.contains(&j.slot))
                    .count() as u64;
                if gone > 0 {
                    let name = &self.cfg.receivers[receiver].0;
                    self.superseded[receiver] += gone;
                    self.metrics
                        .notifications_dropped(name, Dropped::Superseded, gone);
                }
            }
            self.overflow[receiver] = jobs.len().saturating_sub(QUEUE_CAP);
            jobs.truncate(QUEUE_CAP);
            self.queues[receiver] = jobs.into();
            self.show(receiver);
        }
    }

    /// The receiver's line on the status page: failing deliveries, or a backlog.
    fn show(&self, receiver: usize) {
        let name = &self.cfg.receivers[receiver].0;
        let waiting = self.retries.keys().filter(|(_, r)| *r == receiver).count();
        let queued = self.queues[receiver].len() + self.overflow[receiver];
        let mut parts = Vec::new();
        if let Some(e) = &self.failing[receiver] {
            parts.push(format!("{e} ({waiting} waiting to be retried)"));
        }
        if queued > 0 && self.running[receiver] >= PER_RECEIVER {
            parts.push(format!(
                "slow: {} in flight, {queued} queued",
                self.running[receiver]
            ));
        }
        if !parts.is_empty() && self.superseded[receiver] > 0 {
            parts.push(format!(
                "{} notices superseded before they could be sent",
                self.superseded[receiver]
            ));
        }
        self.board.set_warning(
            &format!("notifications to {name}"),
            (!parts.is_empty()).then(|| parts.join("; ")),
        );
    }

    /// Every notice due now, given what was told and what waits for a retry.
    fn scan(&mut self) -> (Vec<Job>, Vec<(CheckKey, AlertRecord)>) {
        let mut jobs = Vec::new();
        let mut clears = Vec::new();
        let views = self.board.snapshot();
        // Every replica shows the maintenance windows; only the leader acts on them.
        let maintenance = self.maintenance(&views);
        if !self.board.is_leader() {
            // The next leader decides from the statuses; nothing here is its business.
            self.told.clear();
            self.retries.clear();
            self.refreshed.clear();
            return (jobs, clears);
        }
        let now = self.clock.now();
        let now_unix = now.timestamp();
        let cfg = self.cfg.clone();
        // Allocated once a scan, not per check: this runs over every check every second.
        let mut routed = vec![false; cfg.receivers.len()];
        let mut caught_up = Vec::new();
        let gone = self.board.departed();
        for view in views.iter().chain(gone.iter()) {
            // What no longer concerns any receiver: what was told is resolved, saying why.
            let departed = if let Some(why) = &view.departed {
                Some(why.as_str())
            } else if opted_out(view) {
                Some("its notifications are turned off (probity.dev/notify: \"false\")")
            } else if view.suspended {
                Some("the check is suspended")
            } else {
                None
            };
            if departed.is_some() && !view.status.alerts_open() {
                continue;
            }
            let blocked = !self.board.blocked_by(view).is_empty();
            let held = maintenance.contains_key(&view.key);
            routed.fill(false);
            for rule in cfg.rules.iter() {
                // The first route to a receiver that matches sets how it is told.
                if routed[rule.receiver] || !rule.matches(&view.resource) {
                    continue;
                }
                routed[rule.receiver] = true;
                let receiver = rule.receiver;
                let slot = (view.key.clone(), receiver);
                if self.in_flight.contains(&slot)
                    || self
                        .retries
                        .get(&slot)
                        .is_some_and(|r| now_unix < r.next_unix)
                {
                    continue;
                }
                let (name, kind) = &cfg.receivers[receiver];
                let alertmanager = matches!(kind, Kind::Alertmanager { .. });
                // What the receiver was last told: the status' record, or a newer delivery
                // the engine has not published yet.
                let told = match (view.status.alert(name), self.told.get(&slot)) {
                    (Some(p), Some(m)) if p == m || p.sent_unix > m.sent_unix => {
                        caught_up.push(slot.clone());
                        Some(p)
                    }
                    (_, Some(m)) => Some(m),
                    (p, None) => p,
                };
                let policy = Policy {
                    // Alertmanager is told of the end always: its routing decides who hears.
                    send_resolved: rule.send_resolved || alertmanager,
                    repeat_secs: rule.repeat.map(|d| d.as_secs() as i64),
                    degraded: rule.degraded,
                };
                // A failure whose cause the route does not take, or that a failing dependency
                // explains, is not its news.
                let flapping = view.status.flapping(now_unix, rule.flap);
                // A flapping check is about its failures even while it passes: a route that
                // does not take their cause hears nothing of its flapping either.
                let cause = if flapping {
                    view.status.recent_cause()
                } else {
                    view.status.cause()
                };
                let hold = match cause {
                    _ if held => Hold::Maintenance,
                    Some(c) if !rule.causes.contains(&c) => Hold::Quiet,
                    _ if blocked => Hold::Quiet,
                    _ => Hold::None,
                };
                let situation = Situation {
                    flapping,
                    departed: departed.is_some(),
                    hold,
                    ..Situation::at(now_unix)
                };
                let due = decide::due(&view.status, told, policy, situation);
                let (notice, since, refresh) = match due {
                    Some((notice, since)) => (notice, since, false),
                    None if alertmanager && departed.is_none() && !held => {
                        match (view.status.alert_spell(rule.degraded).map(|(s, _)| s), told) {
                            (Some(since), Some(t))
                                if t.firing
                                    && t.since_unix == since
                                    && now_unix
                                        - self.refreshed.get(&slot).copied().unwrap_or(0)
                                        >= ALERTMANAGER_REFRESH =>
                            {
                                (Notice::Reminder, since, true)
                            }
                            _ => continue,
                        }
                    }
                    None => continue,
                };
                let reason = match notice {
                    Notice::Resolved => departed.map(str::to_string),
                    Notice::Flapping => Some(format!(
                        "its state changed {} times within {}; notices are held until it is stable",
                        view.status.changes_within(now_unix, rule.flap.window_secs),
                        crate::api::duration::human(Duration::from_secs(
                            rule.flap.window_secs as u64
                        ))
                    )),
                    _ => None,
                };
                // A degraded spell is told as one; a resolve says what it resolves.
                let degraded = match notice {
                    Notice::Resolved => told.is_some_and(|t| t.degraded),
                    _ => view
                        .status
                        .alert_spell(rule.degraded)
                        .is_some_and(|(_, d)| d),
                };
                jobs.push(Job {
                    message: self.message(view, notice, since, degraded, now, reason),
                    slot,
                    refresh,
                });
            }
            if view.departed.is_some() {
                // An open alert no route will resolve (its receiver is gone from the
                // configuration, no route takes the check, or it sends no resolves) is closed
                // here, unsent: the check must not wait for it forever.
                for a in view.status.alerts.iter().filter(|a| a.firing) {
                    let resolves = cfg.rules.iter().any(|r| {
                        cfg.receivers[r.receiver].0 == a.receiver
                            && r.matches(&view.resource)
                            && (r.send_resolved
                                || matches!(cfg.receivers[r.receiver].1, Kind::Alertmanager { .. }))
                    });
                    if !resolves {
                        let mut closed = a.clone();
                        closed.firing = false;
                        closed.flapping = false;
                        closed.sent_unix = now_unix;
                        clears.push((view.key.clone(), closed));
                    }
                }
            }
        }
        for slot in &caught_up {
            self.told.remove(slot);
        }
        // What is kept of checks that are gone goes with them (these maps are small: notices in
        // flight, waiting for a retry or for the board).
        let board = &self.board;
        self.told.retain(|(k, _), _| board.knows(k));
        self.retries.retain(|(k, _), _| board.knows(k));
        self.refreshed.retain(|(k, _), _| board.knows(k));
        (jobs, clears)
    }

    fn message(
        &self,
        view: &CheckView,
        notice: Notice,
        since: i64,
        degraded: bool,
        now: DateTime<Utc>,
        reason: Option<String>,
    ) -> Message {
        let errors = if degraded && notice.is_firing() {
            &view.status.warnings
        } else {
            &view.effective_errors()
        };
        Message {
            key: view.key.clone(),
            notice,
            since,
            degraded,
            now: now.timestamp(),
            errors: message::capped_errors(errors),
            link: self
                .cfg
                .external_url
                .as_ref()
                .map(|base| message::check_link(base, &view.key)),
            severity: view.severity.clone(),
            reason,
            cause: view.status.cause(),
        }
    }

    async fn finished(&mut self, done: Done) {
        let Done { job, result } = done;
        self.in_flight.remove(&job.slot);
        let receiver = job.slot.1;
        self.running[receiver] -= 1;
        let name = self.cfg.receivers[receiver].0.clone();
        let kind = if job.refresh {
            "refresh"
        } else {
            job.message.notice.as_str()
        };
        let now_unix = self.clock.now().timestamp();
        match result {
            Ok(()) => {
                self.metrics.notification(&name, kind, true);
                self.retries.remove(&job.slot);
                if job.message.notice.is_firing() {
                    self.refreshed.insert(job.slot.clone(), now_unix);
                }
                if !job.refresh {
                    debug!(check = %job.slot.0, receiver = %name, notice = kind, "notified");
                    let record = decide::record(
                        &name,
                        job.message.notice,
                        job.message.since,
                        job.message.degraded,
                        now_unix,
                    );
                    self.told.insert(job.slot.clone(), record.clone());
                    self.engine.notified(job.slot.0.clone(), record).await;
                }
            }
            Err(e) => {
                // Shown and compared as the line the status page shows.
                let e = e.to_string();
                self.metrics.notification(&name, kind, false);
                let r = self.retries.entry(job.slot.clone()).or_insert(Retry {
                    attempts: 0,
                    next_unix: 0,
                });
                r.attempts += 1;
                let wait = (1i64 << r.attempts.min(9)).min(MAX_BACKOFF);
                r.next_unix = now_unix + wait;
                if self.failing[receiver].as_deref() != Some(e.as_str()) {
                    warn!(receiver = %name, check = %job.slot.0, "notification failed, retrying in {wait}s: {e}");
                }
                self.failing[receiver] = Some(e);
            }
        }
        let waiting = self.retries.keys().filter(|(_, r)| *r == receiver).count();
        self.metrics.notifications_pending(&name, waiting as i64);
        if waiting == 0 {
            self.failing[receiver] = None;
        }
        self.show(receiver);
    }
}

/// The next configuration `updates` sends; never, without one.
async fn next_config(updates: &mut Option<watch::Receiver<Arc<Alerting>>>) -> Arc<Alerting> {
    match updates {
        Some(rx) => match rx.changed().await {
            Ok(()) => rx.borrow_and_update().clone(),
            // The file follower is gone (shutting down): no more updates.
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Starts the notifier when alerting is configured, following its file (both backends wire
/// it the same way).
pub fn spawn(
    source: Option<&reload::Source>,
    board: &Arc<Board>,
    engine: &EngineHandle,
    metrics: &Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> crate::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(source) = source else {
        return Ok(None);
    };
    let updates = reload::follow(source, board.clone(), metrics.clone(), shutdown.clone());
    let notifier = Notifier::new(
        source.loaded.clone(),
        board.clone(),
        engine.clone(),
        Arc::new(crate::engine::clock::SystemClock),
        metrics.clone(),
    )?
    .following(updates);
    Ok(Some(tokio::spawn(notifier.run(shutdown))))
}

fn opted_out(view: &CheckView) -> bool {
    view.resource
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NOTIFY_ANNOTATION))
        .is_some_and(|v| v == "false")
}
