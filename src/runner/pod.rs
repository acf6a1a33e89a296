//! Runs as pods: built from `spec.podSpec`, created once the start is stored, watched until
//! they end, deleted at the deadline, and reaped by retention settings.
//!
//! The pod watch (label `kh-run-uuid`, the watched namespaces) is what ends a run that does not
//! report: a container that exits, an image that cannot be pulled, a pod someone deleted. A run
//! is released to the engine only when its pod is gone or finished, so two pods of one check
//! never run at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::api::validate::Problem;
use crate::api::{CheckKey, HealthCheck, GROUP, VERSION};
use crate::cluster::LeaseGuard;
use crate::engine::core::pod_name;
use crate::engine::{EngineHandle, RunEnd, Runner, StartRun, StopReason};
use crate::runner::ProbeRunner;
use crate::store::kube::Namespaces;

pub const RUN_LABEL: &str = "kh-run-uuid";
pub const CHECK_LABEL: &str = "healthcheck";

/// Waiting reasons after which a container will not start without someone changing something.
const STUCK: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

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

/// A finished pod, for reaping.
#[derive(Debug, Clone)]
struct Done {
    name: String,
    succeeded: bool,
    at: DateTime<Utc>,
}

#[derive(Default)]
struct State {
    runs: HashMap<Uuid, Tracked>,
    /// Stopped before their start got here (the start waits for its status write).
    cancelled: HashSet<Uuid>,
    /// The latest view of every run pod, by run.
    pods: HashMap<Uuid, Arc<Pod>>,
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
    leading: watch::Receiver<bool>,
    /// None: always allowed to create pods (no election).
    guard: Option<LeaseGuard>,
}

impl PodRunner {
    pub fn new(
        client: Client,
        engine: EngineHandle,
        report_base: impl Into<String>,
        retention: Retention,
        leading: watch::Receiver<bool>,
    ) -> Self {
        PodRunner {
            probes: ProbeRunner::new(engine.clone()).in_cluster(client.clone()),
            client,
            engine,
            report_base: report_base.into(),
            retention,
            state: Arc::default(),
            leading,
            guard: None,
        }
    }

    /// Create pods only while `guard` says the lease is ours.
    pub fn guarded_by(mut self, guard: LeaseGuard) -> Self {
        self.guard = Some(guard);
        self
    }

    fn release(&self, uuid: Uuid, end: RunEnd) {
        let engine = self.engine.clone();
        tokio::spawn(async move { engine.released(uuid, end).await });
    }

    /// Looks at the pod of a tracked run and ends the run if the pod says it is over.
    fn evaluate(&self, uuid: Uuid) {
        let mut st = self.state.lock().expect("runner lock");
        let Some(tracked) = st.runs.get(&uuid) else {
            return;
        };
        let pod = st.pods.get(&uuid).cloned();
        let verdict = match &pod {
            None if tracked.stopping => Some((
                RunEnd::Exited {
                    success: false,
                    message: format!("pod {} was stopped", tracked.pod),
                },
                false,
            )),
            None if tracked.seen => Some((
                RunEnd::Exited {
                    success: false,
                    message: format!(
                        "pod {} was deleted before it reported",
                        tracked.pod
                    ),
                },
                false,
            )),
            None if tracked.adopted && st.synced => Some((
                RunEnd::StartFailed(format!(
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
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => debug!(pod = %name, "deleted"),
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => warn!(pod = %name, "deleting a check pod: {e}"),
            }
        });
    }

    async fn create(&self, run: StartRun) {
        let pod = match build_pod(&run, &self.report_base) {
            Ok(p) => p,
            Err(msg) => return self.fail_start(run.uuid, msg),
        };
        if self.guard.as_ref().is_some_and(|g| !g.valid()) {
            // The start was stored, but the lease may be someone else's by now: no pod, so no
            // second run beside the new leader's.
            return self.fail_start(
                run.uuid,
                "this replica's leader lease ran out before the pod was created".into(),
            );
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), run.key.namespace());
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => debug!(check = %run.key, uuid = %run.uuid, "pod created"),
            Err(e) => {
                let name = pod.metadata.name.unwrap_or_default();
                self.fail_start(
                    run.uuid,
                    format!("creating pod {name}: {}", kube_reason(&e)),
                )
            }
        }
    }

    fn fail_start(&self, uuid: Uuid, msg: String) {
        let was = self.state.lock().expect("runner lock").runs.remove(&uuid);
        if was.is_some() {
            self.release(uuid, RunEnd::StartFailed(msg));
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

    /// Deletes finished pods of `key` beyond the retention settings (leader only).
    fn reap(&self, key: &CheckKey, now: DateTime<Utc>) {
        if !*self.leading.borrow() {
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

    /// Watches run pods in `namespaces` until `shutdown`, ending runs by what their pods do.
    pub async fn watch(self, namespaces: Namespaces, mut shutdown: watch::Receiver<bool>) {
        let apis = namespaces.apis::<Pod>(&self.client);
        let sources = apis.len();
        let streams = apis.into_iter().enumerate().map(|(i, api)| {
            watcher::watcher(api, watcher::Config::default().labels(RUN_LABEL))
                .default_backoff()
                .map(move |ev| (i, ev))
                .boxed()
        });
        let mut stream = futures::stream::select_all(streams);
        let mut relisting: Vec<Option<HashSet<Uuid>>> = vec![None; sources];
        let mut synced = vec![false; sources];
        let mut sweep = tokio::time::interval(Duration::from_secs(60));
        loop {
            let item = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = sweep.tick() => { self.reap_all(); continue }
                item = stream.next() => item,
            };
            let Some((i, ev)) = item else { return };
            match ev {
                Err(e) => error!("watching check pods: {e}"),
                Ok(WatchEvent::Init) => relisting[i] = Some(HashSet::new()),
                Ok(WatchEvent::InitApply(pod)) => {
                    if let (Some(seen), Some(uuid)) = (relisting[i].as_mut(), run_of(&pod)) {
                        seen.insert(uuid);
                    }
                    self.pod_seen(pod);
                }
                Ok(WatchEvent::Apply(pod)) => self.pod_seen(pod),
                Ok(WatchEvent::Delete(pod)) => self.pod_gone(&pod),
                Ok(WatchEvent::InitDone) => {
                    let seen = relisting[i].take().unwrap_or_default();
                    synced[i] = true;
                    // Pods that went while the watch was down, in this stream's namespaces.
                    let vanished: Vec<Uuid> = {
                        let mut st = self.state.lock().expect("runner lock");
                        let ns = &namespaces.0;
                        let gone: Vec<Uuid> = st
                            .pods
                            .iter()
                            .filter(|(u, p)| {
                                !seen.contains(u)
                                    && (ns.is_empty()
                                        || p.namespace().as_deref() == Some(ns[i].as_str()))
                            })
                            .map(|(u, _)| *u)
                            .collect();
                        for u in &gone {
                            st.pods.remove(u);
                        }
                        st.synced = synced.iter().all(|s| *s);
                        gone
                    };
                    let tracked: Vec<Uuid> = {
                        let st = self.state.lock().expect("runner lock");
                        st.runs.keys().copied().collect()
                    };
                    for uuid in vanished.into_iter().chain(tracked) {
                        self.evaluate(uuid);
                    }
                }
            }
        }
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
                    RunEnd::StartFailed("stopped before its pod was created".into()),
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

    fn adopt(&self, key: CheckKey, uuid: Uuid, deadline: DateTime<Utc>, check: Arc<HealthCheck>) {
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

    fn stop(&self, key: &CheckKey, uuid: Uuid, reason: StopReason) {
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

    fn describe(&self, uuid: Uuid) -> Option<String> {
        let st = self.state.lock().expect("runner lock");
        let name = &st.runs.get(&uuid)?.pod;
        match st.pods.get(&uuid) {
            None => Some(format!("pod {name} was never seen running")),
            Some(pod) => describe_pod(pod),
        }
    }

    fn disown(&self, _key: &CheckKey, uuid: Uuid) {
        self.state.lock().expect("runner lock").runs.remove(&uuid);
    }
}

/// What the kubernetes backend cannot run that validation of the spec alone does not see.
pub fn cluster_problems(hc: &HealthCheck) -> Vec<Problem> {
    match hc.spec.probe.as_ref().and_then(|p| p.exec.as_ref()) {
        Some(e) if crate::runner::probe::podexec::selector(e).is_none() => vec![Problem {
            field: "spec.probe.exec.podSelector".into(),
            message: "is required in a cluster: the command runs in a pod that matches it".into(),
        }],
        _ => Vec::new(),
    }
}

fn run_of(pod: &Pod) -> Option<Uuid> {
    Uuid::parse_str(pod.labels().get(RUN_LABEL)?).ok()
}

/// When a pod finished, and whether it succeeded; None while it is not finished.
fn finished_at(pod: &Pod) -> Option<(bool, DateTime<Utc>)> {
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

/// What a pod's state means for its run: None while it may still report; otherwise how it ended
/// and whether the pod is stuck and must be deleted.
fn judge(pod: &Pod) -> Option<(RunEnd, bool)> {
    let name = pod.name_any();
    let status = pod.status.as_ref()?;
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    match status.phase.as_deref() {
        Some("Succeeded") => {
            return Some((
                RunEnd::Exited {
                    success: true,
                    message: format!("pod {name} exited 0 without reporting"),
                },
                false,
            ))
        }
        Some("Failed") => {
            let why = containers
                .filter_map(|c| {
                    let t = c.state.as_ref()?.terminated.as_ref()?;
                    (t.exit_code != 0).then(|| {
                        let mut s =
                            format!("container {} exited with code {}", c.name, t.exit_code);
                        if let Some(r) = &t.reason {
                            s.push_str(&format!(" ({r})"));
                        }
                        if let Some(m) = t.message.as_deref().filter(|m| !m.is_empty()) {
                            s.push_str(&format!(": {}", m.trim()));
                        }
                        s
                    })
                })
                .next()
                .or_else(|| {
                    let r = status.reason.as_deref()?;
                    Some(match status.message.as_deref() {
                        Some(m) => format!("{r}: {m}"),
                        None => r.to_string(),
                    })
                })
                .unwrap_or_else(|| "it failed".into());
            return Some((
                RunEnd::Exited {
                    success: false,
                    message: format!("pod {name} failed without reporting: {why}"),
                },
                false,
            ));
        }
        _ => {}
    }
    for c in containers {
        let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = w.reason.as_deref().unwrap_or_default();
        if STUCK.contains(&reason) {
            let mut msg = format!("pod {name}: container {} cannot start: {reason}", c.name);
            if !c.image.is_empty() {
                msg.push_str(&format!(" (image {})", c.image));
            }
            if let Some(m) = w.message.as_deref().filter(|m| !m.is_empty()) {
                msg.push_str(&format!(": {m}"));
            }
            return Some((RunEnd::StartFailed(msg), true));
        }
    }
    None
}

/// A pod that has not got to running its check, in words: why it is still pending.
fn describe_pod(pod: &Pod) -> Option<String> {
    let name = pod.name_any();
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if phase != "Pending" {
        return None;
    }
    let unscheduled = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    if let Some(c) = unscheduled {
        return Some(format!(
            "pod {name} was never scheduled: {}: {}",
            c.reason.as_deref().unwrap_or("Unschedulable"),
            c.message.as_deref().unwrap_or("no reason given")
        ));
    }
    let waiting = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .find_map(|c| {
            let w = c.state.as_ref()?.waiting.as_ref()?;
            Some(format!(
                "container {} waiting: {}",
                c.name,
                w.reason.as_deref().unwrap_or("unknown")
            ))
        });
    Some(match waiting {
        Some(w) => format!("pod {name} was still Pending ({w})"),
        None => format!("pod {name} was still Pending"),
    })
}

fn kube_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        e => e.to_string(),
    }
}

fn env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    }
}

/// The four `KH_*` variables, replacing same-named ones the user set.
fn inject(c: &mut Container, vars: &[EnvVar]) {
    let env = c.env.get_or_insert_with(Vec::new);
    env.retain(|e| !vars.iter().any(|v| v.name == e.name));
    env.extend(vars.iter().cloned());
}

/// The pod of a run, built from the check's `podSpec`.
pub fn build_pod(run: &StartRun, report_base: &str) -> Result<Pod, String> {
    let check = &run.check;
    let key = &run.key;
    let spec_src = check
        .spec
        .pod_spec
        .as_ref()
        .ok_or_else(|| "spec.podSpec is missing".to_string())?;
    let mut spec: PodSpec = spec_src.pod_spec().map_err(|e| e.to_string())?;
    let vars = [
        env(
            "KH_REPORTING_URL",
            format!(
                "{}/check?kh-run-uuid={}",
                report_base.trim_end_matches('/'),
                run.uuid
            ),
        ),
        env("KH_RUN_UUID", run.uuid.to_string()),
        env(
            "KH_CHECK_RUN_DEADLINE",
            run.deadline.timestamp().to_string(),
        ),
        EnvVar {
            name: "KH_POD_NAMESPACE".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v1".into()),
                    field_path: "metadata.namespace".into(),
                }),
                ..Default::default()
            }),
        },
    ];
    for c in spec.containers.iter_mut() {
        inject(c, &vars);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        inject(c, &vars);
    }
    // A container that re-runs would report twice; the deadline is a backstop for when probity
    // itself is gone (it deletes the pod at the deadline).
    spec.restart_policy = Some("Never".into());
    spec.active_deadline_seconds = Some(run.timeout.as_secs_f64().ceil().max(1.0) as i64);

    let meta = spec_src.metadata.as_ref();
    let mut labels: BTreeMap<String, String> =
        meta.and_then(|m| m.labels.clone()).unwrap_or_default();
    labels.extend(check.spec.extra_labels.clone().unwrap_or_default());
    labels.insert(CHECK_LABEL.into(), key.name().to_string());
    labels.insert(RUN_LABEL.into(), run.uuid.to_string());
    let mut annotations: BTreeMap<String, String> =
        meta.and_then(|m| m.annotations.clone()).unwrap_or_default();
    annotations.extend(check.spec.extra_annotations.clone().unwrap_or_default());
    annotations.insert("createdBy".into(), "probity".into());
    annotations.insert(RUN_LABEL.into(), run.uuid.to_string());
    annotations.insert("kuberhealthyCheckName".into(), key.name().to_string());
    let owner = check.metadata.uid.clone().map(|uid| OwnerReference {
        api_version: format!("{GROUP}/{VERSION}"),
        kind: "HealthCheck".into(),
        name: key.name().to_string(),
        uid,
        controller: Some(true),
        // Deleting a check must never wait on its pods.
        block_owner_deletion: None,
    });
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(key, run.uuid)),
            namespace: Some(key.namespace().to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::load::parse_documents;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
        PodCondition, PodStatus,
    };

    fn run(spec: &str) -> StartRun {
        let text = format!(
            "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: dns, namespace: kh, uid: \"1234\"}}\nspec:\n{spec}"
        );
        let check = Arc::new(parse_documents(&text).unwrap().remove(0).check.unwrap());
        let started = Utc::now();
        StartRun {
            key: CheckKey::of(&check),
            uuid: Uuid::parse_str("1d309ed7-4b7a-4fd5-9706-d04f53c9ed30").unwrap(),
            check,
            started,
            deadline: started + chrono::Duration::seconds(90),
            timeout: Duration::from_millis(89_500),
            due: started,
        }
    }

    fn value<'a>(c: &'a Container, name: &str) -> Vec<&'a EnvVar> {
        c.env.iter().flatten().filter(|e| e.name == name).collect()
    }

    #[test]
    fn the_pod_carries_the_run_and_replaces_user_kh_variables() {
        let r = run(concat!(
            "  extraLabels: {team: net}\n  extraAnnotations: {note: x}\n",
            "  podSpec:\n    metadata: {labels: {app: dns}, annotations: {a: b}}\n",
            "    spec:\n      restartPolicy: Always\n",
            "      initContainers: [{name: init, image: busybox}]\n",
            "      containers:\n      - name: check\n        image: img\n",
            "        env: [{name: KH_RUN_UUID, value: mine}, {name: KEEP, value: kept}]\n",
            "      - name: side\n        image: img2\n"
        ));
        let pod = build_pod(&r, "http://probity.kh.svc/").unwrap();
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.active_deadline_seconds, Some(90));
        let all = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten());
        for c in all {
            let uuid = value(c, "KH_RUN_UUID");
            assert_eq!(uuid.len(), 1, "{}", c.name);
            assert_eq!(uuid[0].value.as_deref(), Some(r.uuid.to_string().as_str()));
            assert_eq!(
                value(c, "KH_REPORTING_URL")[0].value.as_deref(),
                Some(format!("http://probity.kh.svc/check?kh-run-uuid={}", r.uuid).as_str())
            );
            assert_eq!(
                value(c, "KH_CHECK_RUN_DEADLINE")[0].value.as_deref(),
                Some(r.deadline.timestamp().to_string().as_str())
            );
            let ns = value(c, "KH_POD_NAMESPACE")[0].value_from.as_ref().unwrap();
            assert_eq!(
                ns.field_ref.as_ref().unwrap().field_path,
                "metadata.namespace"
            );
        }
        assert_eq!(value(&spec.containers[0], "KEEP").len(), 1);
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["healthcheck"], "dns");
        assert_eq!(labels[RUN_LABEL], r.uuid.to_string());
        assert_eq!(
            (labels["app"].as_str(), labels["team"].as_str()),
            ("dns", "net")
        );
        let ann = pod.metadata.annotations.as_ref().unwrap();
        assert_eq!((ann["a"].as_str(), ann["note"].as_str()), ("b", "x"));
        assert_eq!(ann["kuberhealthyCheckName"], "dns");
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("HealthCheck", "1234", Some(true))
        );
        assert_eq!(owner.api_version, "kuberhealthy.github.io/v2");
        assert_eq!(pod.metadata.name.as_deref(), Some("dns-1d309"));
    }

    fn pod(phase: &str, state: ContainerState) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("dns-1d309".into()),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "check".into(),
                    image: "registry/nope:1".into(),
                    state: Some(state),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_pending_pod_at_the_deadline_is_described() {
        let mut p = pod("Pending", ContainerState::default());
        p.status.as_mut().unwrap().container_statuses = None;
        p.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some("0/3 nodes are available: 3 Insufficient cpu.".into()),
            ..Default::default()
        }]);
        assert_eq!(
            describe_pod(&p).unwrap(),
            "pod dns-1d309 was never scheduled: Unschedulable: 0/3 nodes are available: 3 Insufficient cpu."
        );
        assert!(describe_pod(&pod("Running", ContainerState::default())).is_none());
    }

    #[test]
    fn pod_states_end_runs_with_a_message_naming_the_cause() {
        let waiting = |reason: &str| ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message: Some("not found".into()),
            }),
            ..Default::default()
        };
        let (end, delete) = judge(&pod("Pending", waiting("ImagePullBackOff"))).unwrap();
        assert!(delete);
        assert_eq!(
            end,
            RunEnd::StartFailed(
                "pod dns-1d309: container check cannot start: ImagePullBackOff (image registry/nope:1): not found"
                    .into()
            )
        );
        assert!(judge(&pod("Pending", waiting("ContainerCreating"))).is_none());
        assert!(judge(&pod("Running", ContainerState::default())).is_none());
        let term = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 2,
                reason: Some("Error".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (end, delete) = judge(&pod("Failed", term)).unwrap();
        assert!(!delete);
        assert_eq!(
            end,
            RunEnd::Exited {
                success: false,
                message: "pod dns-1d309 failed without reporting: container check exited with code 2 (Error)".into()
            }
        );
    }
}
