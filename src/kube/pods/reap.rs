//! Retention: finished check pods are kept per check (the last succeeded ones, the last failed
//! ones up to an age) and deleted beyond that, by the leader only.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use tracing::info;

use super::PodRunner;
use crate::api::CheckKey;

/// How many finished pods of each check are kept, and for how long failed ones.
#[derive(Debug, Clone)]
pub struct Retention {
    pub succeeded: usize,
    pub failed: usize,
    pub failed_max_age: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            succeeded: 1,
            failed: 2,
            failed_max_age: Duration::from_secs(36 * 3600),
        }
    }
}

/// A finished pod, for reaping.
#[derive(Debug, Clone)]
pub(super) struct Done {
    pub(super) name: String,
    pub(super) succeeded: bool,
    pub(super) at: DateTime<Utc>,
}

/// When a pod finished, and whether it succeeded; None while it is not finished.
pub(super) fn finished_at(pod: &Pod) -> Option<(bool, DateTime<Utc>)> {
    let status = pod.status.as_ref()?;
    let succeeded = match status.phase.as_deref() {
        Some("Succeeded") => true,
        Some("Failed") => false,
        _ => return None,
    };
    let at = status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0.as_millisecond())
        .max()
        .or_else(|| {
            pod.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond())
        })
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or_else(Utc::now);
    Some((succeeded, at))
}

impl PodRunner {
    /// Deletes finished pods of `key` beyond the retention settings (leader only).
    pub(super) fn reap(&self, key: &CheckKey, now: DateTime<Utc>) {
        if !self.leadership.is_current() {
            return;
        }
        let doomed = {
            let mut st = self.state.lock().expect("runner lock");
            let Some(list) = st.done.get_mut(key) else {
                return;
            };
            list.sort_by_key(|d| std::cmp::Reverse(d.at));
            let (mut ok, mut failed) = (0, 0);
            let max_age = chrono::Duration::from_std(self.retention.failed_max_age)
                .unwrap_or(chrono::Duration::MAX);
            let mut doomed = Vec::new();
            list.retain(|d| {
                let keep = if d.succeeded {
                    ok += 1;
                    ok <= self.retention.succeeded
                } else {
                    failed += 1;
                    failed <= self.retention.failed && now - d.at < max_age
                };
                if !keep {
                    doomed.push(d.name.clone());
                }
                keep
            });
            st.reaped.extend(doomed.iter().cloned());
            doomed
        };
        for name in doomed {
            info!(check = %key, pod = %name, "reaping finished check pod");
            self.delete(key.namespace(), &name);
        }
    }

    /// Applies retention to every check (age limits pass without any new pod).
    pub fn reap_all(&self) {
        let keys: Vec<CheckKey> = self
            .state
            .lock()
            .expect("runner lock")
            .done
            .keys()
            .cloned()
            .collect();
        let now = Utc::now();
        for key in keys {
            self.reap(&key, now);
        }
    }
}
