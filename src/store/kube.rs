//! Check state in `HealthCheck.status`, and checks from a watch of HealthCheck resources.
//!
//! Every status write is a PUT of the status subresource carrying the resourceVersion this
//! replica last saw, so a write based on stale state (a deposed leader, a report racing a
//! timeout on another replica) fails instead of overwriting. Writes of one check are serialized
//! and coalesced: while one is in flight, later states replace each other and the newest goes
//! next, so a burst of changes costs one or two requests.
//!
//! The watch feeds the engine. A status that differs from what this replica wrote is someone
//! else's write and is handed to the engine as observed state; the echo of our own writes is not.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::runtime::WatchStreamExt;
use kube::{Client, Resource, ResourceExt};
use tokio::sync::{oneshot, watch};
use tracing::{debug, error, info, warn};

use crate::api::validate::{self, Defaults, Invalid};
use crate::api::{CheckKey, HealthCheck, HealthCheckStatus};
use crate::engine::{Board, Desired, EngineHandle, SaveFuture, StatusStore};
use crate::runner::pod::cluster_problems;
use crate::server::admin::{RequestFuture, RunRequests};
use crate::Error;

/// How often a write that failed for a reason other than a conflict is tried, in all.
const WRITE_ATTEMPTS: u32 = 6;
/// How often a write is retried after a conflict that only touched the spec or metadata.
const CONFLICT_RETRIES: u32 = 3;

type Waiter = oneshot::Sender<Result<(), String>>;

#[derive(Default)]
struct Slot {
    /// The resourceVersion the next write is based on.
    rv: Option<String>,
    rv_num: u64,
    /// The highest resourceVersion this replica wrote: watch events up to it hold nothing new.
    written: u64,
    /// The status on the server at `rv`, as far as this replica knows.
    known: Option<Arc<HealthCheckStatus>>,
    pending: Option<(Arc<HealthCheckStatus>, Vec<Waiter>)>,
    writing: bool,
    /// States handed to `save` whose echo the watch has not shown yet: an event carrying one
    /// of them is our own write coming back (possibly before the write's response did), not
    /// someone else's.
    recent: VecDeque<Arc<HealthCheckStatus>>,
}

/// States remembered per check to recognise our own writes on the watch.
const RECENT: usize = 8;

/// resourceVersions are opaque to clients, but they come from etcd's revision counter and
/// grow with every write; comparing them is how an event is told from an older echo.
fn rv_num(rv: Option<&str>) -> u64 {
    rv.and_then(|r| r.parse().ok()).unwrap_or(0)
}

#[derive(Clone)]
pub struct KubeStore {
    client: Client,
    slots: Arc<Mutex<HashMap<CheckKey, Slot>>>,
}

impl KubeStore {
    pub fn new(client: Client) -> Self {
        KubeStore {
            client,
            slots: Arc::default(),
        }
    }

    /// Takes in an object from the watch. Returns the status to hand to the engine: the stored
    /// one the first time a check is seen, afterwards only a status someone else wrote. Our own
    /// writes coming back cost a comparison, no copy.
    pub fn observe(&self, hc: &HealthCheck) -> Option<HealthCheckStatus> {
        let key = CheckKey::of(hc);
        let rv = rv_num(hc.metadata.resource_version.as_deref());
        let mut slots = self.slots.lock().expect("store lock");
        let Some(slot) = slots.get_mut(&key) else {
            slots.insert(
                key,
                Slot {
                    rv: hc.metadata.resource_version.clone(),
                    rv_num: rv,
                    known: hc.status.clone().map(Arc::new),
                    ..Default::default()
                },
            );
            return hc.status.clone();
        };
        if rv >= slot.rv_num {
            slot.rv = hc.metadata.resource_version.clone();
            slot.rv_num = rv;
        }
        if rv <= slot.written {
            return None;
        }
        let empty = HealthCheckStatus::default();
        let status = hc.status.as_ref().unwrap_or(&empty);
        if let Some(i) = slot.recent.iter().position(|r| **r == *status) {
            // Writes land in order: the ones saved before it are on the server or were
            // coalesced away, so none of them comes back after this.
            slot.recent.drain(..=i);
            return None;
        }
        if slot.known.as_deref() == Some(status) {
            return None;
        }
        slot.known = Some(Arc::new(status.clone()));
        Some(status.clone())
    }

    /// The check is gone from the API server.
    pub fn deleted(&self, key: &CheckKey) {
        let mut slots = self.slots.lock().expect("store lock");
        if let Some(slot) = slots.remove(key) {
            if let Some((_, waiters)) = slot.pending {
                for w in waiters {
                    let _ = w.send(Err(format!("{key} was deleted")));
                }
            }
        }
    }

    fn write_loop(&self, key: CheckKey) -> impl std::future::Future<Output = ()> + Send + 'static {
        let this = self.clone();
        async move {
            loop {
                let next = {
                    let mut slots = this.slots.lock().expect("store lock");
                    let Some(slot) = slots.get_mut(&key) else {
                        return;
                    };
                    match slot.pending.take() {
                        Some(p) => p,
                        None => {
                            slot.writing = false;
                            return;
                        }
                    }
                };
                let (status, waiters) = next;
                let result = this.write(&key, &status).await.map_err(|e| e.to_string());
                if let Err(e) = &result {
                    warn!(check = %key, "status write failed: {e}");
                }
                for w in waiters {
                    let _ = w.send(result.clone());
                }
            }
        }
    }

    /// One status write, based on the resourceVersion last seen; retried when the API server
    /// is unreachable, and after a conflict only when the status on the server is still the one
    /// this write was based on (the object changed elsewhere, its state did not).
    async fn write(&self, key: &CheckKey, status: &Arc<HealthCheckStatus>) -> crate::Result<()> {
        let api: Api<HealthCheck> = Api::namespaced(self.client.clone(), key.namespace());
        let mut conflicts = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let body = {
                let slots = self.slots.lock().expect("store lock");
                let slot = slots
                    .get(key)
                    .ok_or_else(|| Error::Conflict(format!("{key} was deleted")))?;
                // Without a resourceVersion the write would not be fenced.
                let rv = slot
                    .rv
                    .clone()
                    .ok_or_else(|| Error::Conflict(format!("{key} is not known yet")))?;
                // The status subresource ignores the spec, so none is sent (no copy of the
                // pod spec per write).
                let mut body = HealthCheck::new(key.name(), Default::default());
                body.metadata.namespace = Some(key.namespace().to_string());
                body.metadata.resource_version = Some(rv);
                body.status = Some((**status).clone());
                body
            };
            match api
                .replace_status(key.name(), &PostParams::default(), &body)
                .await
            {
                Ok(written) => {
                    let mut slots = self.slots.lock().expect("store lock");
                    if let Some(slot) = slots.get_mut(key) {
                        let rv = rv_num(written.metadata.resource_version.as_deref());
                        if rv >= slot.rv_num {
                            slot.rv = written.metadata.resource_version.clone();
                            slot.rv_num = rv;
                        }
                        slot.written = slot.written.max(rv);
                        slot.known = Some(status.clone());
                    }
                    debug!(check = %key, run = %status.current_uuid, runs = status.history.len(), next = ?status.next_run_unix, "status written");
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.is_not_found() => {
                    return Err(Error::Conflict(format!("{key} was deleted")));
                }
                Err(kube::Error::Api(s)) if s.is_conflict() && conflicts < CONFLICT_RETRIES => {
                    conflicts += 1;
                    let current = api.get(key.name()).await.map_err(|source| Error::Kube {
                        what: format!("reading {key} after a conflict"),
                        source,
                    })?;
                    let mut slots = self.slots.lock().expect("store lock");
                    let Some(slot) = slots.get_mut(key) else {
                        return Err(Error::Conflict(format!("{key} was deleted")));
                    };
                    let theirs = current.status.unwrap_or_default();
                    if slot.known.as_deref().is_some_and(|k| *k != theirs) {
                        return Err(Error::Conflict(format!(
                            "the status of {key} was changed by another writer"
                        )));
                    }
                    debug!(check = %key, "retrying a status write after a spec change");
                    slot.rv = current.metadata.resource_version.clone();
                    slot.rv_num = slot
                        .rv_num
                        .max(rv_num(current.metadata.resource_version.as_deref()));
                }
                Err(kube::Error::Api(s)) if s.is_conflict() => {
                    return Err(Error::Conflict(format!(
                        "the status of {key} keeps changing under this writer"
                    )));
                }
                Err(source) if attempt < WRITE_ATTEMPTS && retryable(&source) => {
                    let wait = Duration::from_millis(250 << attempt.min(5));
                    debug!(check = %key, ?wait, "status write failed, retrying: {source}");
                    tokio::time::sleep(wait).await;
                }
                Err(source) => {
                    return Err(Error::Kube {
                        what: format!("writing the status of {key}"),
                        source,
                    })
                }
            }
        }
    }
}

/// Errors worth another try: the API server unreachable or overloaded, not a refusal.
fn retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 429 | 500 | 502 | 503 | 504),
        _ => true,
    }
}

impl StatusStore for KubeStore {
    fn save(&self, key: &CheckKey, status: &Arc<HealthCheckStatus>) -> SaveFuture {
        let (tx, rx) = oneshot::channel();
        let spawn = {
            let mut slots = self.slots.lock().expect("store lock");
            let slot = slots.entry(key.clone()).or_default();
            if slot.recent.len() == RECENT {
                slot.recent.pop_front();
            }
            slot.recent.push_back(status.clone());
            match &mut slot.pending {
                Some((pending, waiters)) => {
                    *pending = status.clone();
                    waiters.push(tx);
                }
                None => slot.pending = Some((status.clone(), vec![tx])),
            }
            !std::mem::replace(&mut slot.writing, true)
        };
        if spawn {
            tokio::spawn(self.write_loop(key.clone()));
        }
        Box::pin(async move {
            match rx.await {
                Ok(r) => r.map_err(Error::Conflict),
                Err(_) => Err(Error::Conflict("the status writer stopped".into())),
            }
        })
    }

    fn forget(&self, _key: &CheckKey) {
        // The status goes with the object; nothing else to drop.
    }
}

/// The annotation a manual run request is recorded in: when it was asked for, unix milliseconds.
pub const RUN_REQUESTED: &str = "probity.dev/run-requested";

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
                Err(kube::Error::Api(s)) if s.is_not_found() => {
                    Err((StatusCode::NOT_FOUND, format!("no check {key}")))
                }
                Err(e) => Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("recording the run request on {key}: {e}"),
                )),
            }
        })
    }
}

/// Which namespaces to watch: all, or the listed ones.
#[derive(Debug, Clone, Default)]
pub struct Namespaces(pub Vec<String>);

impl Namespaces {
    pub fn parse(s: &str) -> Self {
        Namespaces(
            s.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(String::from)
                .collect(),
        )
    }

    /// One Api per watched namespace, or one for all.
    pub fn apis<K>(&self, client: &Client) -> Vec<Api<K>>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        if self.0.is_empty() {
            vec![Api::all(client.clone())]
        } else {
            self.0
                .iter()
                .map(|ns| Api::namespaced(client.clone(), ns))
                .collect()
        }
    }
}

/// Posts the Kubernetes Events of checks: invalid specs and failed runs. Repeats of one event
/// become a series on one object (the recorder's own dedup), so a failing check is no storm.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: Client, identity: &str) -> Self {
        Events {
            recorder: Recorder::new(
                client,
                kube::runtime::events::Reporter {
                    controller: "probity".into(),
                    instance: Some(identity.to_string()),
                },
            ),
        }
    }

    pub async fn warn(&self, check: &HealthCheck, reason: &str, note: String) {
        self.post(&CheckKey::of(check), check.object_ref(&()), reason, note)
            .await
    }

    /// The same, for a check known by its key.
    pub async fn warn_key(&self, key: &CheckKey, reason: &str, note: String) {
        let reference = ObjectReference {
            api_version: Some(HealthCheck::api_version(&()).into_owned()),
            kind: Some(HealthCheck::kind(&()).into_owned()),
            name: Some(key.name().to_string()),
            namespace: Some(key.namespace().to_string()),
            ..Default::default()
        };
        self.post(key, reference, reason, note).await
    }

    async fn post(&self, key: &CheckKey, reference: ObjectReference, reason: &str, note: String) {
        let ev = KubeEvent {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(truncate_note(note)),
            action: "Run".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &reference).await {
            warn!(check = %key, "posting an event: {e}");
        }
    }
}

/// The API server refuses event notes over 1 KiB.
fn truncate_note(mut s: String) -> String {
    if s.len() > 1000 {
        let mut end = 1000;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Feeds the engine from a watch of HealthChecks in `namespaces` until `shutdown`. Re-lists
/// (after the API server restarts, or the watch expires) drop the checks that vanished.
/// Invalid checks get an event per generation, from the leader only; each generation is
/// validated here once, not on every status write that comes back.
#[allow(clippy::too_many_arguments)]
pub async fn watch_checks(
    client: Client,
    namespaces: Namespaces,
    store: KubeStore,
    engine: EngineHandle,
    board: Arc<Board>,
    defaults: Defaults,
    events: Events,
    leading: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let apis = namespaces.apis::<HealthCheck>(&client);
    let streams = apis.into_iter().enumerate().map(|(i, api)| {
        watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .map(move |ev| (i, ev))
    });
    let mut stream = futures::stream::select_all(streams.map(|s| s.boxed()));
    let sources = namespaces.0.len().max(1);
    // Keys per stream, to find the ones a re-list no longer shows.
    let mut known: Vec<HashSet<CheckKey>> = vec![HashSet::new(); sources];
    let mut relisting: Vec<Option<HashSet<CheckKey>>> = vec![None; sources];
    let mut synced = vec![false; sources];
    let mut loaded = false;
    // The generation of each check last looked at for an InvalidSpec event.
    let mut evented: HashMap<CheckKey, Option<i64>> = HashMap::new();
    let mut watch_failing = false;
    let mut requested: HashMap<CheckKey, u64> = HashMap::new();
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
                board.set_source_error("HealthCheck watch", Some(e.to_string()));
                watch_failing = true;
                continue;
            }
        };
        if std::mem::take(&mut watch_failing) {
            board.set_source_error("HealthCheck watch", None);
        }
        match ev {
            WatchEvent::Init => relisting[i] = Some(HashSet::new()),
            WatchEvent::InitApply(hc) | WatchEvent::Apply(hc) => {
                let hc = Arc::new(hc);
                let key = CheckKey::of(&hc);
                if let Some(seen) = relisting[i].as_mut() {
                    seen.insert(key.clone());
                }
                known[i].insert(key.clone());
                let saved = store.observe(&hc);
                let problems = cluster_problems(&hc);
                let generation = hc.metadata.generation;
                if *leading.borrow() && evented.get(&key) != Some(&generation) {
                    evented.insert(key.clone(), generation);
                    let invalid = match validate::validate(&hc, &defaults) {
                        Err(invalid) => Some(invalid),
                        Ok(_) if !problems.is_empty() => Some(Invalid {
                            problems: problems.clone(),
                        }),
                        Ok(_) => None,
                    };
                    if let Some(invalid) = invalid {
                        let (events, hc) = (events.clone(), hc.clone());
                        tokio::spawn(async move {
                            events.warn(&hc, "InvalidSpec", invalid.to_string()).await
                        });
                    }
                }
                let request = run_request(&hc);
                let desired = Desired {
                    check: hc,
                    load_error: (!problems.is_empty()).then_some(Invalid { problems }),
                };
                engine.upsert(desired, saved).await;
                if let Some(at) = request.filter(|_| *leading.borrow()) {
                    if requested.get(&key) != Some(&at) {
                        let when =
                            chrono::DateTime::from_timestamp_millis(at as i64).unwrap_or_default();
                        match engine.request_run(key.clone(), when).await {
                            Ok(()) => {
                                requested.insert(key.clone(), at);
                            }
                            Err(e) => info!(check = %key, "manual run refused: {e}"),
                        }
                    }
                }
            }
            WatchEvent::Delete(hc) => {
                let key = CheckKey::of(&hc);
                known[i].remove(&key);
                evented.remove(&key);
                requested.remove(&key);
                store.deleted(&key);
                engine.remove(key).await;
            }
            WatchEvent::InitDone => {
                if let Some(seen) = relisting[i].take() {
                    let gone: Vec<CheckKey> = known[i].difference(&seen).cloned().collect();
                    for key in gone {
                        info!(check = %key, "deleted while the watch was down");
                        known[i].remove(&key);
                        store.deleted(&key);
                        engine.remove(key).await;
                    }
                }
                synced[i] = true;
                if !loaded && synced.iter().all(|s| *s) {
                    loaded = true;
                    engine.loaded().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rv: u64, status: Option<HealthCheckStatus>) -> HealthCheck {
        let mut hc = HealthCheck::new("a", Default::default());
        hc.metadata.namespace = Some("ns".into());
        hc.metadata.resource_version = Some(rv.to_string());
        hc.status = status;
        hc
    }

    fn st(n: i64) -> HealthCheckStatus {
        HealthCheckStatus {
            success_count: n,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_watch_hands_on_only_states_written_by_someone_else() {
        // Nothing is sent: the client only has to exist.
        let client =
            Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        let store = KubeStore::new(client);
        let key = CheckKey::new("ns", "a");
        assert_eq!(
            store.observe(&check(10, Some(st(1)))),
            Some(st(1)),
            "first sight"
        );
        assert_eq!(
            store.observe(&check(11, Some(st(1)))),
            None,
            "a spec change"
        );
        // Two writes of ours queued; the first comes back before its response did.
        let (s2, s3) = (Arc::new(st(2)), Arc::new(st(3)));
        drop(store.save(&key, &s2));
        drop(store.save(&key, &s3));
        assert_eq!(store.observe(&check(12, Some(st(2)))), None, "our echo");
        assert_eq!(
            store.slots.lock().unwrap()[&key].recent.len(),
            1,
            "echoed states are let go"
        );
        assert_eq!(store.observe(&check(13, Some(st(3)))), None, "our echo");
        assert!(store.slots.lock().unwrap()[&key].recent.is_empty());
        // Another replica's write.
        assert_eq!(store.observe(&check(14, Some(st(7)))), Some(st(7)));
        assert_eq!(store.observe(&check(15, Some(st(7)))), None, "seen already");
    }
}
