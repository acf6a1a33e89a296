//! The alerting configuration follows its file without a restart: a changed file (as a mounted
//! ConfigMap changes) is read again within `POLL`, and SIGHUP reads it at once. A bad edit
//! keeps the last good configuration running and says why: in the log, on the status page and
//! in `probity_alerting_config_last_reload_successful` (as Alertmanager does). The notifier
//! takes a new configuration with nothing in flight (`Notifier::reconfigure`).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::config::Alerting;
use super::{Notifier, Slot};
use crate::engine::Board;
use crate::metrics::Metrics;

/// How often the file is looked at.
pub const POLL: Duration = Duration::from_secs(2);

/// The configuration in use and the file it came from.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub loaded: Arc<Alerting>,
}

impl Source {
    /// Reads `path`; a mistake is an error naming the file and the field, and probity does not
    /// start with it (a configuration that silently sends nothing is found at the first
    /// outage).
    pub fn load(path: PathBuf) -> crate::Result<Self> {
        let loaded = Arc::new(Alerting::load(&path)?);
        Ok(Source { path, loaded })
    }
}

/// The warning's source on the board.
fn source_name(path: &std::path::Path) -> String {
    format!("alerting configuration {}", path.display())
}

/// Follows the file until `shutdown`; each good configuration that differs from the one in use
/// is sent on the returned channel.
pub fn follow(
    source: &Source,
    board: Arc<Board>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) -> watch::Receiver<Arc<Alerting>> {
    let (tx, rx) = watch::channel(source.loaded.clone());
    let path = source.path.clone();
    let mut last_text = std::fs::read(&path).ok();
    metrics.alerting_reload(true);
    tokio::spawn(async move {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!("SIGHUP will not reload the alerting configuration: {e}");
                None
            }
        };
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_error: Option<String> = None;
        loop {
            let forced = tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            let text = std::fs::read(&path).ok();
            if !forced && text == last_text {
                continue;
            }
            last_text = text;
            match Alerting::load(&path) {
                Ok(new) => {
                    metrics.alerting_reload(true);
                    board.set_warning(&source_name(&path), None);
                    last_error = None;
                    if new != **tx.borrow() {
                        info!(file = %path.display(), receivers = new.receivers.len(), routes = new.rules.len(), "alerting configuration reloaded");
                        let _ = tx.send(Arc::new(new));
                    }
                }
                Err(e) => {
                    let e = e.to_string();
                    metrics.alerting_reload(false);
                    if last_error.as_deref() != Some(e.as_str()) {
                        warn!("alerting configuration not reloaded, the last good one stays in use: {e}");
                    }
                    board.set_warning(
                        &source_name(&path),
                        Some(format!(
                            "not reloaded, the last good configuration stays in use: {e}"
                        )),
                    );
                    last_error = Some(e);
                }
            }
        }
    });
    rx
}

impl Notifier {
    /// Takes `new` in place of the configuration in use, with nothing in flight. What is kept
    /// per receiver (retries, deliveries not yet on the board) follows it by name; a receiver
    /// no longer configured is forgotten.
    pub(super) fn reconfigure(&mut self, new: Arc<Alerting>) {
        let old = std::mem::replace(&mut self.cfg, new);
        let cfg = self.cfg.clone();
        let index: HashMap<&str, usize> = cfg
            .receivers
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.as_str(), i))
            .collect();
        let moved = |slot: &Slot| -> Option<Slot> {
            let name = old.receivers.get(slot.1)?.0.as_str();
            index.get(name).map(|i| (slot.0.clone(), *i))
        };
        self.retries = std::mem::take(&mut self.retries)
            .into_iter()
            .filter_map(|(s, r)| moved(&s).map(|s| (s, r)))
            .collect();
        self.told = std::mem::take(&mut self.told)
            .into_iter()
            .filter_map(|(s, r)| moved(&s).map(|s| (s, r)))
            .collect();
        self.refreshed = std::mem::take(&mut self.refreshed)
            .into_iter()
            .filter_map(|(s, r)| moved(&s).map(|s| (s, r)))
            .collect();
        let n = cfg.receivers.len();
        let mut failing = vec![None; n];
        let mut superseded = vec![0; n];
        for (i, (name, _)) in old.receivers.iter().enumerate() {
            match index.get(name.as_str()) {
                Some(&j) => {
                    failing[j] = self.failing[i].take();
                    superseded[j] = self.superseded[i];
                }
                None => {
                    self.board
                        .set_warning(&format!("notifications to {name}"), None);
                    self.metrics.notifications_pending(name, 0);
                    self.metrics.notifications_queued(name, 0);
                }
            }
        }
        self.failing = failing;
        self.superseded = superseded;
        self.queues = vec![VecDeque::new(); n];
        self.running = vec![0; n];
        self.overflow = vec![0; n];
        for (name, kind) in &cfg.receivers {
            if !old.receivers.iter().any(|(n, _)| n == name) {
                self.metrics.notifications_pending(name, 0);
                info!(receiver = %name, kind = kind.name(), "notifications configured");
            }
        }
    }
}
