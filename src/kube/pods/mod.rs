//! Runs as pods: built from `spec.podSpec`, created once the start is stored, watched until
//! they end, deleted at the deadline, and reaped by retention settings.
//!
//! The pod watch (label `kh-run-uuid`, the watched namespaces) is what ends a run that does not
//! report: a container that exits, an image that cannot be pulled, a pod someone deleted. A run
//! is released to the engine only when its pod is gone or finished, so two pods of one check
//! never run at once.

mod build;
mod judge;
mod reap;
mod watch;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use tracing::{debug, info, warn};

pub use build::build_pod;
use judge::{describe_pod, judge};
pub use reap::Retention;
use reap::{finished_at, Done};

use crate::api::protocol::{pod_name, CHECK_LABEL, RUN_LABEL};
use crate::api::{CheckKey, HealthCheck, RunId};
use crate::engine::{EngineHandle, Leadership, RunEnd, Runner, StartRun, StopReason};
use crate::probe::ProbeRunner;

#[derive(Debug)]
struct Tracked {
    key: CheckKey,
    pod: String,
    /// We asked for the pod to go (deadline, check deleted, stuck image): its end is expected.
    stopping: bool,
    /// The watch has shown its pod: from then on, no pod means it was deleted.
    seen: bool,
    /// Taken over from another leader: its pod should exist already.
    adopted: bool,
}

#[derive(Default)]
struct State {
    runs: HashMap<RunId, Tracked>,
    /// Stopped before their start got here (the start waits for its status write).
    cancelled: HashSet<RunId>,
    /// The latest view of every run pod, by run.
    pods: HashMap<RunId, Arc<Pod>>,
    /// Finished pods per check, for retention.
    done: HashMap<CheckKey, Vec<Done>>,
    /// Pods deleted by retention and not yet gone: not counted or deleted again.
    reaped: HashSet<String>,
    synced: bool,
}

#[derive(Clone)]
pub struct PodRunner {
    client: Client,
    engine: EngineHandle,
    report_base: String,
    probes: ProbeRunner,
    retention: Retention,
    state: Arc<Mutex<State>>,
    /// Pods are created and reaped only while this says this replica leads.
    leadership: Leadership,
}

impl PodRunner {
    pub fn new(
        client: Client,
        engine: EngineHandle,
        report_base: impl Into<String>,
        retention: Retention,
        leadership: Leadership,
    ) -> Self {
        PodRunner {
            probes: ProbeRunner::new(engine.clone()).in_cluster(client.clone()),
            client,
            engine,
            report_base: report_base.into(),
            retention,
            state: Arc::default(),
            leadership,
        }
    }

    fn release(&self, uuid: RunId, end: RunEnd) {
        let engine = self.engine.clone();
        tokio::spawn(async move { engine.released(uuid, end).await });
    }

    /// Looks at the pod of a tracked run and ends the run if the pod says it is over.
    fn evaluate(&self, uuid: RunId) {
        let mut st = self.state.lock().expect("runner lock");
        let Some(tracked) = st.runs.get(&uuid) else {
            return;
        };
        let pod = st.pods.get(&uuid).cloned();
        let verdict = match &pod {
            None if tracked.stopping => Some((
                RunEnd::crashed(format!("pod {} was stopped", tracked.pod)),
                false,
            )),
            None if tracked.seen => Some((
                RunEnd::crashed(format!(
                        "pod {} was deleted before it reported",
                        tracked.pod
                    )),
                false,
            )),
            None if tracked.adopted && st.synced => Some((
                RunEnd::start_failed(format!(
                    "pod {} does not exist: the replica that started the run stopped before creating it",
                    tracked.pod
                )),
                false,
            )),
            None => None,
            Some(pod) => judge(pod).map(|(end, stuck)| (end, stuck && !tracked.stopping)),
        };
        let Some((end, delete)) = verdict else { return };
        let tracked = st.runs.remove(&uuid).expect("present");
        drop(st);
        if delete {
            self.delete(tracked.key.namespace(), &tracked.pod);
        }
        debug!(check = %tracked.key, %uuid, ?end, "run pod ended");
        self.release(uuid, end);
    }

    fn delete(&self, namespace: &str, name: &str) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let name = name.to_string();
        tokio::spawn(async move {
            // A pod left behind keeps running (a timed-out run's, until its own end) and is
            // reaped only by retention: what the API server says is "later" is tried again, as
            // a creation is.
            let mut delay = CREATE_RETRY_FIRST;
            for attempt in 1.. {
                match api.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => return debug!(pod = %name, "deleted"),
                    Err(kube::Error::Api(s)) if s.is_not_found() => return,
                    Err(e) if attempt < 8 && retry_later(&e) => {
                        warn!(pod = %name, "deleting a check pod, trying again: {e}")
                    }
                    Err(e) => return warn!(pod = %name, "deleting a check pod: {e}"),
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(CREATE_RETRY_MAX);
            }
        });
    }

    async fn create(&self, run: StartRun) {
        let pod = match build_pod(&run, &self.report_base) {
            Ok(p) => p,
            Err(e) => return self.fail_start(run.uuid, e.to_string()),
        };
        if !self.leadership.is_current() {
            // The start was stored, but the lease may be someone else's by now: no pod, so no
            // second run beside the new leader's.
            return self.fail_start(
                run.uuid,
                "this replica's leader lease ran out before the pod was created".into(),
            );
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), run.key.namespace());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut delay = CREATE_RETRY_FIRST;
        for attempt in 1.. {
            let e = match api.create(&PostParams::default(), &pod).await {
                Ok(_) => return debug!(check = %run.key, uuid = %run.uuid, "pod created"),
                // An earlier attempt did create it (its answer was lost): the name is this run's.
                Err(kube::Error::Api(s)) if attempt > 1 && s.code == 409 => {
                    return debug!(check = %run.key, uuid = %run.uuid, "pod created")
                }
                Err(e) => e,
            };
            // The API server says "later" (a ServiceAccount applied with the check has no token
            // yet: 500 ServerTimeout; 429; 503) or did not answer: try again while the run has
            // time, is still this replica's to start, and still waits for its pod.
            let later = retry_later(&e)
                && attempt < CREATE_ATTEMPTS
                && Utc::now() + delay < run.deadline
                && self.leadership.is_current()
                && self
                    .state
                    .lock()
                    .expect("runner lock")
                    .runs
                    .contains_key(&run.uuid);
            if !later {
                return self.fail_start(
                    run.uuid,
                    format!("creating pod {name}: {}", kube_reason(&e)),
                );
            }
            debug!(check = %run.key, uuid = %run.uuid, "creating pod {name} again: {}", kube_reason(&e));
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(CREATE_RETRY_MAX);
        }
    }

    fn fail_start(&self, uuid: RunId, msg: String) {
        let was = self.state.lock().expect("runner lock").runs.remove(&uuid);
        if was.is_some() {
            self.release(uuid, RunEnd::start_failed(msg));
        }
    }

    /// Takes in a pod from the watch.
    fn pod_seen(&self, pod: Pod) {
        let Some(uuid) = run_of(&pod) else { return };
        let finished = finished_at(&pod);
        let key = pod
            .labels()
            .get(CHECK_LABEL)
            .map(|name| CheckKey::new(&pod.namespace().unwrap_or_default(), name));
        let name = pod.name_any();
        let reap = {
            let mut st = self.state.lock().expect("runner lock");
            st.pods.insert(uuid, Arc::new(pod));
            if let Some(t) = st.runs.get_mut(&uuid) {
                t.seen = true;
            }
            match (finished, key) {
                (Some((succeeded, at)), Some(key)) if !st.reaped.contains(&name) => {
                    let list = st.done.entry(key.clone()).or_default();
                    if !list.iter().any(|d| d.name == name) {
                        list.push(Done {
                            name,
                            succeeded,
                            at,
                        });
                    }
                    Some(key)
                }
                _ => None,
            }
        };
        self.evaluate(uuid);
        if let Some(key) = reap {
            self.reap(&key, Utc::now());
        }
    }

    /// The check's pods as the pod watch last saw them (running and retained): what the check
    /// page shows logs of, without a LIST of its own.
    pub fn pods_of(&self, key: &CheckKey) -> Vec<Arc<Pod>> {
        let st = self.state.lock().expect("runner lock");
        st.pods
            .values()
            .filter(|p| {
                p.metadata.namespace.as_deref() == Some(key.namespace())
                    && p.labels().get(CHECK_LABEL).map(String::as_str) == Some(key.name())
            })
            .cloned()
            .collect()
    }

    fn pod_gone(&self, pod: &Pod) {
        let Some(uuid) = run_of(pod) else { return };
        {
            let mut st = self.state.lock().expect("runner lock");
            st.pods.remove(&uuid);
            st.reaped.remove(&pod.name_any());
            if let Some(key) = pod
                .labels()
                .get(CHECK_LABEL)
                .map(|n| CheckKey::new(&pod.namespace().unwrap_or_default(), n))
            {
                if let Some(list) = st.done.get_mut(&key) {
                    list.retain(|d| d.name != pod.name_any());
                }
            }
        }
        self.evaluate(uuid);
    }
}

impl Runner for PodRunner {
    fn start(&self, run: StartRun) {
        if run.check.spec.probe.is_some() {
            return self.probes.start(run);
        }
        {
            let mut st = self.state.lock().expect("runner lock");
            if st.cancelled.remove(&run.uuid) {
                drop(st);
                return self.release(
                    run.uuid,
                    RunEnd::start_failed("stopped before its pod was created"),
                );
            }
            st.runs.insert(
                run.uuid,
                Tracked {
                    key: run.key.clone(),
                    pod: pod_name(&run.key, run.uuid),
                    stopping: false,
                    seen: false,
                    adopted: false,
                },
            );
        }
        let this = self.clone();
        tokio::spawn(async move { this.create(run).await });
    }

    fn adopt(&self, key: CheckKey, uuid: RunId, deadline: DateTime<Utc>, check: Arc<HealthCheck>) {
        if check.spec.probe.is_some() {
            return self.probes.adopt(key, uuid, deadline, check);
        }
        let pod = pod_name(&key, uuid);
        info!(check = %key, %uuid, %pod, "adopting run pod");
        self.state.lock().expect("runner lock").runs.insert(
            uuid,
            Tracked {
                key,
                pod,
                stopping: false,
                seen: false,
                adopted: true,
            },
        );
        self.evaluate(uuid);
    }

    fn stop(&self, key: &CheckKey, uuid: RunId, reason: StopReason) {
        if self.probes.stop(key, uuid, reason) {
            return;
        }
        let pod = {
            let mut st = self.state.lock().expect("runner lock");
            match st.runs.get_mut(&uuid) {
                Some(t) => {
                    t.stopping = true;
                    t.pod.clone()
                }
                None => {
                    st.cancelled.insert(uuid);
                    return;
                }
            }
        };
        debug!(check = %key, %uuid, ?reason, %pod, "deleting run pod");
        self.delete(key.namespace(), &pod);
        // Ends when the watch sees the pod go (or finished, if it got there first).
        self.evaluate(uuid);
    }

    fn describe(&self, uuid: RunId) -> Option<String> {
        let st = self.state.lock().expect("runner lock");
        let name = &st.runs.get(&uuid)?.pod;
        match st.pods.get(&uuid) {
            None => Some(format!("pod {name} was never seen running")),
            Some(pod) => describe_pod(pod),
        }
    }

    fn disown(&self, _key: &CheckKey, uuid: RunId) {
        self.state.lock().expect("runner lock").runs.remove(&uuid);
    }
}

fn run_of(pod: &Pod) -> Option<RunId> {
    crate::api::run::parse_saved(pod.labels().get(RUN_LABEL)?)
}
/// Pod creation that the API server asks to retry is tried this many times in all, waiting from
/// the first delay, doubling up to the largest (about 16 s in all), within the run's deadline.
const CREATE_ATTEMPTS: u32 = 8;
const CREATE_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(250);
const CREATE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(4);

/// The API server asked to try again later, or was not reached.
fn retry_later(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 429 | 500 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

fn kube_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests;
