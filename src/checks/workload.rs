//! What the checks that create workloads (`deployment`, `daemonset`) share: a name per run, the
//! label that finds a crashed run's leftovers, deletion awaited until the object is gone, the
//! reasons pods are not ready, and the signal that interrupts a run (the pod deleted at its
//! timeout) so that cleanup still happens.

use std::fmt::Debug;

use crate::checks::Problem;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PropagationPolicy};
use kube::runtime::wait::{await_condition, conditions};
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

/// On every object a check creates: the check's configured base name, so the next run finds
/// what a crashed run left behind.
pub const OWNER_LABEL: &str = "probity.dev/check-workload";
/// On every object a check creates: the run that created it.
pub const RUN_LABEL: &str = "probity.dev/check-run";

/// A short id for this run's object names: the run's UUID, first 8 hex digits.
pub fn run_suffix(uuid: &str) -> String {
    let s: String = uuid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .take(8)
        .collect();
    if s.len() == 8 {
        s
    } else {
        uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
    }
}

/// `base` is usable as the start of a name that gets `-<8 hex>` appended: a DNS label (it
/// names Services too), at most 54 characters.
pub fn check_base_name(var: &str, base: &str) -> Result<(), Problem> {
    let ok = !base.is_empty()
        && base.len() <= 54
        && base.starts_with(|c: char| c.is_ascii_lowercase())
        && !base.ends_with('-')
        && base
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Problem(format!(
            "{var}={base:?} is not a name: lowercase letters, digits and '-', starting with a \
             letter, at most 54 characters (the run's id is appended)"
        )))
    }
}

/// The message of an API error (what kubectl would print), else the error.
pub fn api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        other => other.to_string(),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Deletes the objects labelled with `base` that an earlier run left behind (it crashed, or its
/// node went away before it cleaned up). Returns their names. Not awaited: this run's names
/// differ.
pub async fn remove_leftovers<K>(api: &Api<K>, base: &str) -> Result<Vec<String>, Problem>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let list = api
        .list(&ListParams::default().labels(&format!("{OWNER_LABEL}={base}")))
        .await
        .map_err(|e| {
            Problem(format!(
                "listing leftovers of earlier runs: {}",
                api_error(&e)
            ))
        })?;
    let mut gone = Vec::new();
    for obj in list.items {
        let Some(name) = obj.meta().name.clone() else {
            continue;
        };
        if obj.meta().deletion_timestamp.is_none() {
            match api.delete(&name, &background()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => continue,
                Err(e) => {
                    return Err(Problem(format!(
                        "deleting leftover {name}: {}",
                        api_error(&e)
                    )))
                }
            }
        }
        gone.push(name);
    }
    Ok(gone)
}

fn background() -> DeleteParams {
    DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    }
}

/// Deletes `name` (its pods with it: foreground propagation) and waits until it is gone, or
/// `until`. Not found is gone.
pub async fn delete_and_wait<K>(
    api: &Api<K>,
    ns: &str,
    kind: &str,
    name: &str,
    until: Instant,
) -> Result<(), Problem>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        grace_period_seconds: None,
        ..DeleteParams::default()
    };
    let uid = match api.delete(name, &params).await {
        Ok(either) => either.either(
            |o| o.meta().uid.clone(),
            // A Status does not mean gone: before Kubernetes 1.22 a Service's DELETE answers
            // with one even while the object waits for the garbage collector (foreground
            // deletion). Its details name the uid to wait for.
            |status| status.details.map(|d| d.uid).filter(|u| !u.is_empty()),
        ),
        Err(e) if is_not_found(&e) => return Ok(()),
        Err(e) => {
            return Err(Problem(format!(
                "deleting {kind} {ns}/{name}: {}",
                api_error(&e)
            )))
        }
    };
    let Some(uid) = uid else { return Ok(()) };
    let started = Instant::now();
    match tokio::time::timeout_at(
        until,
        await_condition(api.clone(), name, conditions::is_deleted(&uid)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Problem(format!(
            "waiting for {kind} {ns}/{name} to be deleted: {e}"
        ))),
        Err(_) => Err(Problem(format!(
            "{kind} {ns}/{name} was still there {}s after its deletion",
            started.elapsed().as_secs()
        ))),
    }
}

/// Why each of `pods` is not ready, one line per pod that is not (at most `max`): not
/// scheduled (the scheduler's message), a container waiting (ErrImagePull, CrashLoopBackOff
/// and its message), restarted, or running but not ready.
pub fn pod_problems<'a>(pods: impl IntoIterator<Item = &'a Pod>, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    for p in pods {
        if out.len() == max {
            break;
        }
        let name = format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or(""),
            p.metadata.name.as_deref().unwrap_or("")
        );
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .map(|n| format!(" on {n}"))
            .unwrap_or_default();
        let Some(st) = p.status.as_ref() else {
            out.push(format!("pod {name}: no status yet"));
            continue;
        };
        let conditions = st.conditions.as_deref().unwrap_or_default();
        let condition = |t: &str| conditions.iter().find(|c| c.type_ == t);
        if condition("Ready").is_some_and(|c| c.status == "True") {
            continue;
        }
        if let Some(c) = condition("PodScheduled").filter(|c| c.status == "False") {
            out.push(format!(
                "pod {name}: not scheduled: {}",
                c.message
                    .as_deref()
                    .or(c.reason.as_deref())
                    .unwrap_or("no reason given")
            ));
            continue;
        }
        let mut why = Vec::new();
        for c in st.container_statuses.as_deref().unwrap_or_default() {
            if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
                let reason = w.reason.as_deref().unwrap_or("waiting");
                match w.message.as_deref().filter(|m| !m.is_empty()) {
                    Some(m) => why.push(format!("container {} {reason}: {}", c.name, clip(m, 200))),
                    None => why.push(format!("container {} {reason}", c.name)),
                }
            } else if let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref()) {
                why.push(format!(
                    "container {} exited with code {}{}",
                    c.name,
                    t.exit_code,
                    t.reason
                        .as_deref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ));
            } else if !c.ready {
                why.push(format!("container {} running, not ready", c.name));
            }
            if c.restart_count > 0 {
                why.push(format!("restarted {} times", c.restart_count));
            }
        }
        if why.is_empty() {
            why.push(format!(
                "{}, not ready",
                st.phase.as_deref().unwrap_or("no phase")
            ));
        }
        out.push(format!("pod {name}{node}: {}", why.join(", ")));
    }
    out
}

fn clip(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// When the work of a run with `budget` left must stop, and when its cleanup must: cleanup keeps
/// a quarter of the run, at least 10 s (half the run at most) and at most 30 s.
fn deadlines(budget: std::time::Duration) -> (Instant, Instant) {
    use std::time::Duration;
    let end = Instant::now() + budget;
    let reserve = (budget / 4)
        .max(Duration::from_secs(10))
        .min(budget / 2)
        .min(Duration::from_secs(30));
    (end - reserve, end)
}

/// Until when cleanup may take: the run's end, or after an interruption (the run's end may have
/// passed) the pod's grace period, 30 s by default, less a margin.
fn cleanup_deadline(interrupted: bool, end: Instant) -> Instant {
    if interrupted {
        Instant::now() + std::time::Duration::from_secs(20)
    } else {
        end
    }
}

/// A run of a check that creates objects: `work` until its share of `budget` is spent or the pod
/// is told to stop (SIGTERM, SIGINT), then `cleanup` always, with the time cleanup has (the run's
/// end; after an interruption, the pod's grace period). `cleanup` returns its failures, reported
/// after the work's as `cleanup: ...`; `what` names what it deletes, for the log.
pub async fn run_then_clean(
    budget: std::time::Duration,
    what: &str,
    work: impl AsyncFnOnce(Instant) -> Result<(), Vec<String>>,
    cleanup: impl AsyncFnOnce(Instant) -> Vec<String>,
) -> Result<(), Vec<String>> {
    let (work_end, end) = deadlines(budget);
    let mut interrupted = false;
    let outcome = tokio::select! {
        r = work(work_end) => r,
        sig = self::interrupted() => {
            interrupted = true;
            Err(vec![format!(
                "interrupted by {sig} before the check finished (the run timed out or its pod was deleted)"
            )])
        }
    };
    let step = Instant::now();
    let mut errors = outcome.err().unwrap_or_default();
    let failed = cleanup(cleanup_deadline(interrupted, end)).await;
    errors.extend(failed.into_iter().map(|e| format!("cleanup: {e}")));
    tracing::info!(
        "deleted {what} (its pods gone) in {:.1}s",
        step.elapsed().as_secs_f64()
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Resolves at SIGTERM (the pod deleted, at its run's timeout or by hand) or SIGINT, naming it.
pub async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn run_suffix_is_the_uuid_start_or_random_hex() {
        assert_eq!(
            run_suffix("3F2504E0-4F89-11D3-9A0C-0305E82C3301"),
            "3f2504e0"
        );
        let s = run_suffix("x");
        assert_eq!(s.len(), 8);
        assert!(s.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn cleanup_keeps_a_quarter_of_the_run_between_10_and_30_seconds_and_half_at_most() {
        let reserve = |secs: u64| {
            let (work, end) = deadlines(std::time::Duration::from_secs(secs));
            (end - work).as_secs()
        };
        assert_eq!(reserve(40), 10);
        assert_eq!(reserve(80), 20);
        assert_eq!(reserve(600), 30);
        assert_eq!(reserve(8), 4);
    }

    #[test]
    fn base_names_must_leave_room_for_the_run_id() {
        assert!(check_base_name("V", "deployment-deployment").is_ok());
        for bad in ["", "Web", "9web", "web-", "web_app", &"a".repeat(55)] {
            let e = check_base_name("V", bad).unwrap_err();
            assert!(e.0.starts_with(&format!("V={bad:?} is not a name")), "{e}");
        }
    }

    #[test]
    fn pod_problems_name_the_scheduler_message_the_waiting_reason_and_restarts() {
        let pods: Vec<Pod> = serde_json::from_value(json!([
            {"metadata": {"name": "ok", "namespace": "n"}, "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": "unsched", "namespace": "n"}, "status": {"phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": "0/1 nodes are available: 1 node(s) had taint {x: y}"}]}},
            {"metadata": {"name": "pull", "namespace": "n"}, "spec": {"nodeName": "node1", "containers": []},
                "status": {"phase": "Pending",
                "containerStatuses": [{"name": "web", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "ErrImagePull", "message": "pull access denied"}}}]}},
            {"metadata": {"name": "crash", "namespace": "n"}, "status": {"phase": "Running",
                "containerStatuses": [{"name": "web", "image": "i", "imageID": "", "ready": false, "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}},
            {"metadata": {"name": "slow", "namespace": "n"}, "status": {"phase": "Running",
                "containerStatuses": [{"name": "web", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"running": {}}}]}}
        ]))
        .unwrap();
        assert_eq!(
            pod_problems(&pods, 10),
            vec![
                "pod n/unsched: not scheduled: 0/1 nodes are available: 1 node(s) had taint {x: y}",
                "pod n/pull on node1: container web ErrImagePull: pull access denied",
                "pod n/crash: container web CrashLoopBackOff, restarted 4 times",
                "pod n/slow: container web running, not ready",
            ]
        );
        assert_eq!(pod_problems(&pods, 2).len(), 2);
    }
}
