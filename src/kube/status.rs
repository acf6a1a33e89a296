//! The status writer: check state in `HealthCheck.status`.
//!
//! Every status write is a PUT of the status subresource carrying the resourceVersion this
//! replica last saw, so a write based on stale state (a deposed leader, a report racing a
//! timeout on another replica) fails instead of overwriting. Writes of one check are serialized
//! and coalesced: while one is in flight, later states replace each other and the newest goes
//! next, so a burst of changes costs one or two requests.
//!
//! The controller hands every object from the watch through [`StatusWriter::observe`]: a status
//! that differs from what this replica wrote is someone else's write and goes to the engine as
//! observed state; the echo of our own writes does not.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::KubeError;
use crate::api::{CheckKey, HealthCheck, HealthCheckStatus};
use crate::engine::{SaveFuture, StatusStore};
use crate::Error;

/// How often a write that failed for a reason other than a conflict is tried, in all.
const WRITE_ATTEMPTS: u32 = 6;
/// How often a write is retried after a conflict that only touched the spec or metadata.
const CONFLICT_RETRIES: u32 = 3;

/// One result for every save coalesced into a write.
type Waiter = oneshot::Sender<Result<(), Arc<KubeError>>>;

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
pub struct StatusWriter {
    client: Client,
    slots: Arc<Mutex<HashMap<CheckKey, Slot>>>,
}

impl StatusWriter {
    pub fn new(client: Client) -> Self {
        StatusWriter {
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
                    let _ = w.send(Err(Arc::new(KubeError::CheckDeleted {
                        check: key.clone(),
                    })));
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
                let result = this.write(&key, &status).await.map_err(Arc::new);
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
    async fn write(
        &self,
        key: &CheckKey,
        status: &Arc<HealthCheckStatus>,
    ) -> Result<(), KubeError> {
        let api: Api<HealthCheck> = Api::namespaced(self.client.clone(), key.namespace());
        let mut conflicts = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let body = {
                let slots = self.slots.lock().expect("store lock");
                let slot = slots
                    .get(key)
                    .ok_or_else(|| KubeError::CheckDeleted { check: key.clone() })?;
                // Without a resourceVersion the write would not be fenced.
                let rv = slot
                    .rv
                    .clone()
                    .ok_or_else(|| KubeError::NotObserved { check: key.clone() })?;
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
                    return Err(KubeError::CheckDeleted { check: key.clone() });
                }
                Err(kube::Error::Api(s)) if s.is_conflict() && conflicts < CONFLICT_RETRIES => {
                    conflicts += 1;
                    let current = api.get(key.name()).await.map_err(|source| KubeError::Api {
                        what: format!("reading {key} after a conflict"),
                        source,
                    })?;
                    let mut slots = self.slots.lock().expect("store lock");
                    let Some(slot) = slots.get_mut(key) else {
                        return Err(KubeError::CheckDeleted { check: key.clone() });
                    };
                    let theirs = current.status.unwrap_or_default();
                    // A check first seen without a status is known to have the empty one: a
                    // status written since (a report or ping to another replica) is theirs,
                    // not to be overwritten.
                    let empty = HealthCheckStatus::default();
                    if *slot.known.as_deref().unwrap_or(&empty) != theirs {
                        return Err(KubeError::Superseded { check: key.clone() });
                    }
                    debug!(check = %key, "retrying a status write after a spec change");
                    slot.rv = current.metadata.resource_version.clone();
                    slot.rv_num = slot
                        .rv_num
                        .max(rv_num(current.metadata.resource_version.as_deref()));
                }
                Err(kube::Error::Api(s)) if s.is_conflict() => {
                    return Err(KubeError::Contended { check: key.clone() });
                }
                Err(source) if attempt < WRITE_ATTEMPTS && retryable(&source) => {
                    let wait = Duration::from_millis(250 << attempt.min(5));
                    debug!(check = %key, ?wait, "status write failed, retrying: {source}");
                    tokio::time::sleep(wait).await;
                }
                Err(source) => {
                    return Err(KubeError::Api {
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

impl StatusStore for StatusWriter {
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
                Ok(r) => r.map_err(|e| Error::Kube(KubeError::Shared(e))),
                Err(_) => Err(Error::Kube(KubeError::WriterStopped)),
            }
        })
    }

    fn forget(&self, _key: &CheckKey) {
        // The status goes with the object; nothing else to drop.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kubernetes backend's failure inside the crate's error.
    fn kube_root(e: &Error) -> &KubeError {
        match e {
            Error::Kube(k) => k.root(),
            other => panic!("not the kubernetes backend's error: {other}"),
        }
    }
    use crate::kube::standin::{status, Seen, StandIn};

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
        let store = StatusWriter::new(client);
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

    /// The object as the API server returns it, at `rv` with `status`.
    fn object(rv: u64, status: &HealthCheckStatus) -> serde_json::Value {
        serde_json::to_value(check(rv, Some(status.clone()))).unwrap()
    }

    fn rv_of(seen: &Seen) -> Option<&str> {
        seen.body.as_ref()?["metadata"]["resourceVersion"].as_str()
    }

    /// A writer that has seen `a` at resourceVersion 10 with `st(1)`, talking to `answer`.
    fn writer(
        answer: impl Fn(&Seen, usize) -> (u16, serde_json::Value) + Send + Sync + 'static,
    ) -> (StandIn, StatusWriter, CheckKey) {
        let (api, client) = StandIn::start(answer);
        let w = StatusWriter::new(client);
        w.observe(&check(10, Some(st(1))));
        (api, w, CheckKey::new("ns", "a"))
    }

    #[tokio::test]
    async fn a_write_is_fenced_by_the_version_last_seen_and_retried_after_a_spec_only_conflict() {
        let (api, w, key) = writer(|seen, n| match (seen.method.as_str(), n) {
            ("PUT", 0) => status(409, "Conflict"),
            // Someone changed the spec (a new resourceVersion); the status is still ours.
            ("GET", _) => (200, object(12, &st(1))),
            ("PUT", _) => (200, object(13, &st(2))),
            _ => status(400, "BadRequest"),
        });
        w.save(&key, &Arc::new(st(2))).await.unwrap();
        let seen = api.seen();
        let shape: Vec<_> = seen.iter().map(|s| (s.method.as_str(), rv_of(s))).collect();
        assert_eq!(
            shape,
            [("PUT", Some("10")), ("GET", None), ("PUT", Some("12"))]
        );
        assert!(seen[0]
            .uri
            .starts_with("/apis/kuberhealthy.github.io/v2/namespaces/ns/healthchecks/a/status"));
        assert_eq!(seen[2].body.as_ref().unwrap()["status"]["successCount"], 2);
        // The status PUT carries no spec: the subresource would ignore it.
        assert_eq!(
            seen[2].body.as_ref().unwrap()["spec"],
            serde_json::json!({})
        );
        // The echo of the write is recognised as ours.
        assert_eq!(w.observe(&check(13, Some(st(2)))), None);
    }

    #[tokio::test]
    async fn a_conflict_with_another_writers_status_fails_and_is_not_retried() {
        let (api, w, key) = writer(|seen, _| match seen.method.as_str() {
            "PUT" => status(409, "Conflict"),
            _ => (200, object(12, &st(9))),
        });
        let err = w.save(&key, &Arc::new(st(2))).await.unwrap_err();
        assert!(
            matches!(kube_root(&err), KubeError::Superseded { check } if *check == key),
            "{err}"
        );
        assert_eq!(api.seen().len(), 2, "one PUT, one GET: {:?}", api.seen());
    }

    /// Seen first without a status (just created), then another replica wrote one (a ping to
    /// a follower): that status is not overwritten by a write based on nothing.
    #[tokio::test]
    async fn a_check_seen_without_a_status_does_not_overwrite_the_first_one_written_elsewhere() {
        let (api, client) = StandIn::start(|seen, _| match seen.method.as_str() {
            "PUT" => status(409, "Conflict"),
            _ => (200, object(12, &st(1))),
        });
        let w = StatusWriter::new(client);
        w.observe(&check(10, None));
        let key = CheckKey::new("ns", "a");
        let err = w.save(&key, &Arc::new(st(2))).await.unwrap_err();
        assert!(
            matches!(kube_root(&err), KubeError::Superseded { .. }),
            "{err}"
        );
        assert_eq!(api.seen().len(), 2, "one PUT, one GET: {:?}", api.seen());
    }

    #[tokio::test]
    async fn conflicts_that_keep_coming_give_up_after_three_retries() {
        let (api, w, key) = writer(|seen, n| match seen.method.as_str() {
            "PUT" => status(409, "Conflict"),
            _ => (200, object(11 + n as u64, &st(1))),
        });
        let err = w.save(&key, &Arc::new(st(2))).await.unwrap_err();
        assert!(
            matches!(kube_root(&err), KubeError::Contended { .. }),
            "{err}"
        );
        let puts = api.seen().iter().filter(|s| s.method == "PUT").count();
        assert_eq!(puts, 4, "the first write and three retries");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unavailable_api_server_is_retried_and_a_refusal_is_not() {
        let (api, w, key) = writer(|_, n| match n {
            0 | 1 => status(503, "ServiceUnavailable"),
            _ => (200, object(11, &st(2))),
        });
        w.save(&key, &Arc::new(st(2))).await.unwrap();
        assert_eq!(api.seen().len(), 3);

        let (api, w, key) = writer(|_, _| status(422, "Invalid"));
        let err = w.save(&key, &Arc::new(st(2))).await.unwrap_err();
        assert!(matches!(kube_root(&err), KubeError::Api { .. }), "{err}");
        assert_eq!(api.seen().len(), 1, "a refusal is final");

        let (_, w, key) = writer(|_, _| status(503, "ServiceUnavailable"));
        let err = w.save(&key, &Arc::new(st(2))).await.unwrap_err();
        assert!(matches!(kube_root(&err), KubeError::Api { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_write_for_a_deleted_check_fails_naming_it() {
        let (_, w, key) = writer(|_, _| status(404, "NotFound"));
        let err = w.save(&key, &Arc::new(st(2))).await.unwrap_err();
        assert!(
            matches!(kube_root(&err), KubeError::CheckDeleted { .. }),
            "{err}"
        );
        assert_eq!(err.to_string(), "ns/a was deleted");
    }

    #[tokio::test]
    async fn a_write_before_the_watch_has_shown_the_check_is_not_sent_unfenced() {
        let (api, client) = StandIn::start(|_, _| (200, serde_json::json!({})));
        let w = StatusWriter::new(client);
        let err = w
            .save(&CheckKey::new("ns", "a"), &Arc::new(st(2)))
            .await
            .unwrap_err();
        assert!(
            matches!(kube_root(&err), KubeError::NotObserved { .. }),
            "{err}"
        );
        assert!(api.seen().is_empty());
    }

    #[tokio::test]
    async fn states_saved_before_the_write_is_sent_are_coalesced_into_the_newest() {
        let (api, w, key) = writer(|_, n| (200, object(11 + n as u64, &st(0))));
        let first = w.save(&key, &Arc::new(st(2)));
        let (s3, s4) = (
            w.save(&key, &Arc::new(st(3))),
            w.save(&key, &Arc::new(st(4))),
        );
        let (a, b, c) = tokio::join!(first, s3, s4);
        a.unwrap();
        b.unwrap();
        c.unwrap();
        let written: Vec<_> = api
            .seen()
            .iter()
            .map(|s| s.body.as_ref().unwrap()["status"]["successCount"].clone())
            .collect();
        assert_eq!(
            written,
            [4],
            "one write, of the newest state, answers all three"
        );
        // A save after that write is a write of its own.
        w.save(&key, &Arc::new(st(5))).await.unwrap();
        assert_eq!(api.seen().len(), 2);
    }
}
