//! The controller loop: a watch of HealthChecks feeds the engine (every replica), invalid
//! specs get an event (the leader, once per generation), and manual run requests recorded on a
//! check are served (the leader, once each). Re-lists (after the API server restarts, or the
//! watch expires) drop the checks that vanished.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::events::Events;
use super::status::StatusWriter;
use super::KubeError;
use super::{cluster_problems, Namespaces};
use crate::api::protocol::RUN_REQUESTED;
use crate::api::validate::Invalid;
use crate::api::{CheckKey, HealthCheck};
use crate::engine::{
    Board, Desired, EngineHandle, Leadership, Plans, RequestFuture, RunRefused, RunRequests,
};
use crate::Error;

/// When a manual run of `hc` was last asked for.
fn run_request(hc: &HealthCheck) -> Option<u64> {
    hc.annotations().get(RUN_REQUESTED)?.parse().ok()
}

/// Manual run requests from any replica: recorded on the HealthCheck, acted on by the leader.
pub struct AnnotateRuns {
    pub client: Client,
}

impl RunRequests for AnnotateRuns {
    fn request(&self, key: CheckKey) -> RequestFuture {
        let api: Api<HealthCheck> = Api::namespaced(self.client.clone(), key.namespace());
        Box::pin(async move {
            let now = chrono::Utc::now().timestamp_millis().to_string();
            let patch = serde_json::json!({"metadata": {"annotations": {RUN_REQUESTED: now}}});
            match api
                .patch(key.name(), &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.is_not_found() => Err(RunRefused::NoCheck(key)),
                Err(source) => Err(RunRefused::NotRecorded(Error::Kube(KubeError::Api {
                    what: format!("recording the run request on {key}"),
                    source,
                }))),
            }
        })
    }
}

/// Everything the controller loop reads from and writes to.
pub struct Controller {
    pub client: Client,
    pub namespaces: Namespaces,
    pub status: StatusWriter,
    pub engine: EngineHandle,
    pub board: Arc<Board>,
    /// Where each generation's plan is validated (off the engine's task) and kept.
    pub plans: Arc<Plans>,
    pub events: Events,
    pub leadership: Leadership,
    /// Notifications are configured: HealthChecks with open alerts carry `FINALIZER`.
    pub notifies: bool,
}

/// Held on a HealthCheck while a receiver has an open alert about it, so that deleting it
/// waits until the alert is resolved; the record that says what was told lives in its status,
/// and the finalizer keeps that status readable, by any replica, until it is done with.
pub const FINALIZER: &str = "probity.dev/resolve-alerts";

/// The finalizers `hc` should carry, when they are not what it carries: ours while an alert
/// is open (none can be added once deletion began; without notifications, none).
fn finalizers_wanted(hc: &HealthCheck, notifies: bool) -> Option<Vec<String>> {
    let have = hc.metadata.finalizers.clone().unwrap_or_default();
    let has = have.iter().any(|f| f == FINALIZER);
    let open = notifies && hc.status.as_ref().is_some_and(|s| s.alerts_open());
    let deleting = hc.metadata.deletion_timestamp.is_some();
    let want = open && (has || !deleting);
    match (want, has) {
        (true, false) => {
            let mut f = have;
            f.push(FINALIZER.to_string());
            Some(f)
        }
        (false, true) => Some(have.into_iter().filter(|f| f != FINALIZER).collect()),
        _ => None,
    }
}

/// What the loop remembers between events.
#[derive(Default)]
struct Memory {
    /// The generation of each check last looked at for an InvalidSpec event.
    evented: HashMap<CheckKey, Option<i64>>,
    /// The manual run request of each check last served.
    requested: HashMap<CheckKey, u64>,
}

impl Controller {
    /// Runs until `shutdown`.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let apis = self.namespaces.apis::<HealthCheck>(&self.client);
        let streams = apis.into_iter().enumerate().map(|(i, api)| {
            watcher::watcher(api, watcher::Config::default())
                .default_backoff()
                .map(move |ev| (i, ev))
        });
        let mut stream = futures::stream::select_all(streams.map(|s| s.boxed()));
        let sources = self.namespaces.0.len().max(1);
        // Keys per stream, to find the ones a re-list no longer shows.
        let mut known: Vec<HashSet<CheckKey>> = vec![HashSet::new(); sources];
        let mut relisting: Vec<Option<HashSet<CheckKey>>> = vec![None; sources];
        let mut synced = vec![false; sources];
        let mut loaded = false;
        let mut memory = Memory::default();
        let mut watch_failing = false;
        loop {
            let item = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                item = stream.next() => item,
            };
            let Some((i, ev)) = item else { return };
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => {
                    error!("watching HealthChecks: {e}");
                    self.board
                        .set_source_error("HealthCheck watch", Some(e.to_string()));
                    watch_failing = true;
                    continue;
                }
            };
            if std::mem::take(&mut watch_failing) {
                self.board.set_source_error("HealthCheck watch", None);
            }
            match ev {
                WatchEvent::Init => relisting[i] = Some(HashSet::new()),
                WatchEvent::InitApply(hc) | WatchEvent::Apply(hc) => {
                    let key = CheckKey::of(&hc);
                    if let Some(seen) = relisting[i].as_mut() {
                        seen.insert(key.clone());
                    }
                    known[i].insert(key);
                    self.applied(Arc::new(hc), &mut memory).await;
                }
                WatchEvent::Delete(hc) => {
                    let key = CheckKey::of(&hc);
                    known[i].remove(&key);
                    memory.evented.remove(&key);
                    memory.requested.remove(&key);
                    self.status.deleted(&key);
                    self.engine.remove(key).await;
                }
                WatchEvent::InitDone => {
                    if let Some(seen) = relisting[i].take() {
                        let gone: Vec<CheckKey> = known[i].difference(&seen).cloned().collect();
                        for key in gone {
                            info!(check = %key, "deleted while the watch was down");
                            known[i].remove(&key);
                            self.status.deleted(&key);
                            self.engine.remove(key).await;
                        }
                    }
                    synced[i] = true;
                    if !loaded && synced.iter().all(|s| *s) {
                        loaded = true;
                        self.engine.loaded().await;
                    }
                }
            }
        }
    }

    /// Puts `FINALIZER` on a HealthCheck with an open alert, and takes it off once none is
    /// open (then a deletion completes). Fenced by the resourceVersion seen: a conflict means a
    /// newer version is on its way to this loop, which looks again.
    async fn mind_finalizer(&self, hc: &HealthCheck) {
        let Some(finalizers) = finalizers_wanted(hc, self.notifies) else {
            return;
        };
        let key = CheckKey::of(hc);
        let api: Api<HealthCheck> = Api::namespaced(self.client.clone(), key.namespace());
        let patch = serde_json::json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": hc.metadata.resource_version,
        }});
        match api
            .patch(key.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => info!(check = %key, finalizers = ?finalizers, "finalizers set"),
            Err(kube::Error::Api(s)) if s.code == 409 || s.is_not_found() => {}
            Err(e) => warn!(check = %key, "setting the finalizer {FINALIZER}: {e}"),
        }
    }

    /// A check created or changed (or our own status write coming back).
    async fn applied(&self, hc: Arc<HealthCheck>, memory: &mut Memory) {
        let key = CheckKey::of(&hc);
        let saved = self
            .status
            .observe(&hc)
            .filter(|st| match st.out_of_range() {
                // Scheduling from it would be nonsense (or an overflow): the engine starts this
                // check afresh and its next write replaces the bad status.
                Some(why) => {
                    warn!(check = %key, "ignoring the stored status: {why}");
                    false
                }
                None => true,
            });
        let problems = cluster_problems(&hc);
        let load_error = (!problems.is_empty()).then_some(Invalid { problems });
        let generation = hc.metadata.generation;
        let request = run_request(&hc);
        let leading = self.leadership.is_current();
        if leading {
            self.mind_finalizer(&hc).await;
        }
        let deleting = hc.metadata.deletion_timestamp.is_some();
        let desired = if hc.metadata.deletion_timestamp.is_some() {
            // Being deleted, held by a finalizer (ours while an alert is open): it runs no
            // more, and its alerts are resolved.
            Desired::departing(hc.clone(), crate::engine::DELETED)
        } else {
            Desired::new(hc.clone(), load_error)
        };
        let to_event = leading && memory.evented.get(&key) != Some(&generation);
        // Each spec is validated once, on a blocking thread (it may search a cron schedule),
        // not on every status write that comes back; the engine finds the plan kept.
        let plan = match self.plans.cached(&key, &desired) {
            Some(plan) => plan,
            None => {
                let (plans, k, d) = (self.plans.clone(), key.clone(), desired.clone());
                match tokio::task::spawn_blocking(move || plans.plan(&k, &d)).await {
                    Ok(plan) => plan,
                    Err(e) => {
                        error!(check = %key, "validating: {e}");
                        return;
                    }
                }
            }
        };
        let invalid = (*plan).as_ref().err().cloned();
        if to_event {
            memory.evented.insert(key.clone(), generation);
            if let Some(invalid) = invalid {
                let events = self.events.clone();
                tokio::spawn(
                    async move { events.warn(&hc, "InvalidSpec", invalid.to_string()).await },
                );
            }
        }
        self.engine.upsert(desired, saved).await;
        let Some(at) = request.filter(|_| self.leadership.is_current() && !deleting) else {
            return;
        };
        if memory.requested.get(&key) == Some(&at) {
            return;
        }
        let when = chrono::DateTime::from_timestamp_millis(at as i64).unwrap_or_default();
        match self.engine.request_run(key.clone(), when).await {
            Ok(()) => {
                memory.requested.insert(key, at);
            }
            Err(e) => info!(check = %key, "manual run refused: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AlertRecord, HealthCheckStatus};

    fn hc(firing: bool, finalizers: &[&str], deleting: bool) -> HealthCheck {
        let mut hc = HealthCheck::default();
        hc.metadata.finalizers = Some(finalizers.iter().map(|f| f.to_string()).collect());
        if deleting {
            hc.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
        }
        hc.status = Some(HealthCheckStatus {
            alerts: vec![AlertRecord {
                receiver: "hook".into(),
                firing,
                ..Default::default()
            }],
            ..Default::default()
        });
        hc
    }

    #[test]
    fn the_finalizer_is_held_exactly_while_an_alert_is_open() {
        // Open: added, keeping others'.
        assert_eq!(
            finalizers_wanted(&hc(true, &["x"], false), true),
            Some(vec!["x".into(), FINALIZER.into()])
        );
        assert_eq!(
            finalizers_wanted(&hc(true, &[FINALIZER], false), true),
            None
        );
        // Resolved: taken off, others' kept; being deleted too (that completes the deletion).
        assert_eq!(
            finalizers_wanted(&hc(false, &["x", FINALIZER], false), true),
            Some(vec!["x".to_string()])
        );
        assert_eq!(
            finalizers_wanted(&hc(false, &[FINALIZER], true), true),
            Some(vec![])
        );
        // Being deleted with the alert open: held; none can be added once deletion began.
        assert_eq!(finalizers_wanted(&hc(true, &[FINALIZER], true), true), None);
        assert_eq!(finalizers_wanted(&hc(true, &[], true), true), None);
        // Notifications turned off: never held.
        assert_eq!(
            finalizers_wanted(&hc(true, &[FINALIZER], false), false),
            Some(vec![])
        );
        assert_eq!(finalizers_wanted(&hc(false, &[], false), true), None);
    }
}
