//! A test-only node agent: the part of a kubelet these tests need. It watches the check pods of
//! one namespace, runs each pod's first container's command as a local process with the pod's
//! env (`value` and `fieldRef` to the pod's namespace and name), and writes the pod status the
//! way kubelet does: Pending -> Running -> Succeeded/Failed with the exit code. An image whose
//! name contains `unpullable` gets `ErrImagePull`, one with `unschedulable` stays Pending as
//! Unschedulable. A deleted pod's process is killed.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Agent {
    task: JoinHandle<()>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn set_status(api: &Api<Pod>, name: &str, status: serde_json::Value) {
    let patch = json!({ "status": status });
    if let Err(e) = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        // The pod may be gone already; that is the deletion path, not an agent failure.
        eprintln!("agent: status of {name}: {e}");
    }
}

fn container_status(name: &str, image: &str, state: serde_json::Value) -> serde_json::Value {
    json!([{
        "name": name, "image": image, "imageID": format!("fake://{image}"),
        "ready": false, "restartCount": 0, "state": state,
    }])
}

pub fn start(client: Client, namespace: &str) -> Agent {
    let api: Api<Pod> = Api::namespaced(client, namespace);
    let task = tokio::spawn(async move {
        let mut kills: HashMap<String, oneshot::Sender<()>> = HashMap::new();
        let mut handled: HashSet<String> = HashSet::new();
        let mut stream = watcher::watcher(
            api.clone(),
            watcher::Config::default().labels("kh-run-uuid"),
        )
        .default_backoff()
        .boxed();
        while let Some(ev) = stream.next().await {
            let pod = match ev {
                Ok(Event::Apply(p)) | Ok(Event::InitApply(p)) => p,
                Ok(Event::Delete(p)) => {
                    if let Some(kill) = kills.remove(&p.uid().unwrap_or_default()) {
                        let _ = kill.send(());
                    }
                    continue;
                }
                _ => continue,
            };
            let uid = pod.uid().unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some() {
                if let Some(kill) = kills.remove(&uid) {
                    let _ = kill.send(());
                }
                continue;
            }
            if !handled.insert(uid.clone()) {
                continue;
            }
            let name = pod.name_any();
            let spec = pod.spec.clone().unwrap_or_default();
            let c = spec.containers[0].clone();
            let image = c.image.clone().unwrap_or_default();
            if image.contains("unschedulable") {
                set_status(
                    &api,
                    &name,
                    json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                        "reason": "Unschedulable", "lastTransitionTime": now(),
                        "message": "0/1 nodes are available: 1 Insufficient cpu."}]}),
                )
                .await;
                continue;
            }
            if image.contains("unpullable") {
                let st = json!({"waiting": {"reason": "ErrImagePull",
                    "message": format!("rpc error: pull access denied for {image}")}});
                set_status(
                    &api,
                    &name,
                    json!({"phase": "Pending", "containerStatuses": container_status(&c.name, &image, st)}),
                )
                .await;
                continue;
            }
            let mut argv: Vec<String> = c.command.clone().unwrap_or_default();
            argv.extend(c.args.clone().unwrap_or_default());
            let mut cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..])
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            for e in c.env.iter().flatten() {
                let value = match (&e.value, &e.value_from) {
                    (Some(v), _) => v.clone(),
                    (None, Some(from)) => {
                        match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                            Some("metadata.namespace") => pod.namespace().unwrap_or_default(),
                            Some("metadata.name") => name.clone(),
                            _ => String::new(),
                        }
                    }
                    _ => String::new(),
                };
                cmd.env(&e.name, value);
            }
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let st = json!({"waiting": {"reason": "CreateContainerError", "message": e.to_string()}});
                    set_status(
                        &api,
                        &name,
                        json!({"phase": "Pending", "containerStatuses": container_status(&c.name, &image, st)}),
                    )
                    .await;
                    continue;
                }
            };
            let started = now();
            set_status(
                &api,
                &name,
                json!({"phase": "Running", "startTime": started,
                    "containerStatuses": container_status(&c.name, &image, json!({"running": {"startedAt": started}}))}),
            )
            .await;
            let (kill, killed) = oneshot::channel();
            kills.insert(uid, kill);
            let api = api.clone();
            tokio::spawn(async move {
                tokio::select! {
                    status = child.wait() => {
                        let code = status.ok().and_then(|s| s.code()).unwrap_or(137);
                        let phase = if code == 0 { "Succeeded" } else { "Failed" };
                        let reason = if code == 0 { "Completed" } else { "Error" };
                        let st = json!({"terminated": {"exitCode": code, "reason": reason,
                            "startedAt": started, "finishedAt": now()}});
                        set_status(&api, &name, json!({"phase": phase,
                            "containerStatuses": container_status(&c.name, &image, st)})).await;
                    }
                    _ = killed => {
                        let _ = child.kill().await;
                    }
                }
            });
        }
    });
    Agent { task }
}
