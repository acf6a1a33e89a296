//! The published state every reader sees: `/json`, `/metrics`, report validation on other
//! replicas. Written by the driver on each state change, read without touching the engine.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

// tokio's clock, so tests can pause it and see a stalled loop without waiting.
use tokio::time::Instant;

use super::Leadership;
use crate::api::{CheckKey, HealthCheck, HealthCheckStatus};

/// One check as published.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckView {
    pub key: CheckKey,
    /// The resource as last seen (labels and annotations route notifications).
    pub resource: Arc<HealthCheck>,
    pub status: Arc<HealthCheckStatus>,
    /// Why the check cannot run, naming the field.
    pub invalid: Option<String>,
    pub run_interval: Option<Duration>,
    pub schedule: Option<String>,
    pub timeout: Option<Duration>,
    pub single_run: bool,
    pub suspended: bool,
    /// From the check's labels `kuberhealthy.io/severity` and `kuberhealthy.io/category`.
    pub severity: Option<String>,
    pub category: Option<String>,
    /// `spec.dependsOn`, resolved.
    pub depends_on: Vec<CheckKey>,
    /// The check left (why), and is kept until its receivers are told its alerts are
    /// resolved; shown nowhere but to the notifier.
    pub departed: Option<String>,
    /// A reader's rendering of this view (the `/json` entry), kept with it.
    pub memo: Memo,
}

/// A rendering of one published view, made by a reader and kept with the view: a view is
/// replaced, never changed, so the rendering stays right for as long as the view is published
/// and the `stamp` (what else it depends on: the hour, say) is the same. Not part of the
/// view's value: clones start empty and equality ignores it.
#[derive(Default)]
pub struct Memo(std::sync::Mutex<Option<(u64, Arc<[u8]>)>>);

impl Memo {
    /// The rendering made for `stamp`, made now by `make` if there is none for it.
    pub fn get_or_make(&self, stamp: u64, make: impl FnOnce() -> Vec<u8>) -> Arc<[u8]> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some((s, bytes)) if *s == stamp => bytes.clone(),
            _ => {
                let bytes: Arc<[u8]> = make().into();
                *slot = Some((stamp, bytes.clone()));
                bytes
            }
        }
    }
}

impl Memo {
    /// Whether a rendering is kept.
    pub fn is_kept(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }
}

impl Clone for Memo {
    fn clone(&self) -> Self {
        Memo::default()
    }
}

impl PartialEq for Memo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memo")
    }
}

impl CheckView {
    /// OK as dashboards should read it: an invalid check is not OK; a pending one is.
    pub fn effective_ok(&self) -> bool {
        self.invalid.is_none() && self.status.ok
    }

    pub fn effective_errors(&self) -> Vec<String> {
        match &self.invalid {
            Some(m) => vec![format!("invalid check: {m}")],
            None => self.status.errors.clone(),
        }
    }
}

#[derive(Debug)]
pub struct Board {
    leadership: Leadership,
    checks: RwLock<BTreeMap<CheckKey, Arc<CheckView>>>,
    /// Problems not tied to one check, such as a checks file that is not YAML.
    source_errors: RwLock<BTreeMap<String, String>>,
    /// probity's own troubles that say nothing about the checks (a notification receiver
    /// that is down): shown, but the overall verdict stays the checks'.
    warnings: RwLock<BTreeMap<String, String>>,
    started: Instant,
    last_tick_ms: AtomicU64,
    ready: AtomicBool,
    /// The checks in a maintenance window now, and which ("nightly until 2026-12-07T03:00:00Z"),
    /// as the notifier last worked out.
    maintenance: RwLock<HashMap<CheckKey, String>>,
    /// Checks that left with open alerts, apart: only the notifier sees them.
    departed: RwLock<HashMap<CheckKey, Arc<CheckView>>>,
}

impl Board {
    /// The board of a process that always leads.
    pub fn new(identity: impl Into<String>) -> Self {
        Board::led_by(Leadership::solo(&identity.into()))
    }

    /// The board of a replica that leads while `leadership` says so.
    pub fn led_by(leadership: Leadership) -> Self {
        Board {
            leadership,
            checks: RwLock::default(),
            source_errors: RwLock::default(),
            warnings: RwLock::default(),
            started: Instant::now(),
            last_tick_ms: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            maintenance: RwLock::default(),
            departed: RwLock::default(),
        }
    }

    pub fn identity(&self) -> &str {
        self.leadership.identity()
    }

    /// Who leads, as last seen (`CurrentMaster`).
    pub fn leader(&self) -> String {
        self.leadership.holder()
    }

    /// Whether this replica may act as leader now.
    pub fn is_leader(&self) -> bool {
        self.leadership.is_current()
    }

    /// Replaces which checks are in maintenance (the notifier, once a scan, when it changed).
    pub fn set_maintenance(&self, now: HashMap<CheckKey, String>) {
        *self.maintenance.write().unwrap_or_else(|e| e.into_inner()) = now;
    }

    /// Whether `key` is in a maintenance window (without copying which).
    pub fn in_maintenance(&self, key: &CheckKey) -> bool {
        self.maintenance
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(key)
    }

    /// The maintenance window `key` is in, if any.
    pub fn maintenance(&self, key: &CheckKey) -> Option<String> {
        self.maintenance
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Publishes a check's state; a departed check is kept apart, out of every listing.
    pub fn put(&self, view: Arc<CheckView>) {
        let key = view.key.clone();
        if view.departed.is_some() {
            self.checks
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            self.departed
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, view);
            return;
        }
        // A read first: this runs on every status change, and departures are rare.
        let any = !self
            .departed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        if any {
            self.departed
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
        }
        self.checks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, view);
    }

    pub fn remove(&self, key: &CheckKey) {
        self.checks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        self.departed
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// The checks that left with open alerts (for the notifier).
    pub fn departed(&self) -> Vec<Arc<CheckView>> {
        self.departed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Whether `key` is published, listed or departed.
    pub fn knows(&self, key: &CheckKey) -> bool {
        self.get(key).is_some()
            || self
                .departed
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(key)
    }

    pub fn get(&self, key: &CheckKey) -> Option<Arc<CheckView>> {
        self.checks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// A consistent copy of every view, sorted by key; cheap (one `Arc` clone each).
    /// While `view` fails, the checks it depends on that fail too: its failure is blocked by
    /// theirs and tells no one (see `spec.dependsOn`).
    pub fn blocked_by(&self, view: &CheckView) -> Vec<CheckKey> {
        if view.depends_on.is_empty() || view.effective_ok() {
            return Vec::new();
        }
        let checks = self.checks.read().unwrap_or_else(|e| e.into_inner());
        view.depends_on
            .iter()
            .filter(|d| checks.get(*d).is_some_and(|v| !v.effective_ok()))
            .cloned()
            .collect()
    }

    pub fn snapshot(&self) -> Vec<Arc<CheckView>> {
        self.checks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn set_source_error(&self, source: &str, error: Option<String>) {
        set_note(&self.source_errors, source, error);
    }

    pub fn source_errors(&self) -> Vec<String> {
        notes(&self.source_errors)
    }

    pub fn set_warning(&self, source: &str, warning: Option<String>) {
        set_note(&self.warnings, source, warning);
    }

    pub fn warnings(&self) -> Vec<String> {
        notes(&self.warnings)
    }

    /// Called by the scheduler loop each time round; `/healthz` reads it.
    pub fn tick(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_tick_ms.store(ms.max(1), Ordering::Relaxed);
    }

    /// How long ago the scheduler loop last went round; None before its first round.
    pub fn since_tick(&self) -> Option<Duration> {
        match self.last_tick_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(
                self.started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms)),
            ),
        }
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Sets (or with None clears) what `source` says.
fn set_note(notes: &RwLock<BTreeMap<String, String>>, source: &str, note: Option<String>) {
    let mut m = notes.write().unwrap_or_else(|e| e.into_inner());
    match note {
        Some(n) => m.insert(source.to_string(), n),
        None => m.remove(source),
    };
}

/// Each note as "source: what it says", by source.
fn notes(notes: &RwLock<BTreeMap<String, String>>) -> Vec<String> {
    notes
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(s, n)| format!("{s}: {n}"))
        .collect()
}
