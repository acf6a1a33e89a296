//! `probity check pod-restarts` and `probity check pod-status`: the pods of a namespace (or all)
//! judged by their containers' restart counts, or by being stuck (Pending, Failed, Unknown, or
//! Running but not Ready) for longer than a grace period. Each failure names the pods
//! (`namespace/name`), the reason and the count. Check pods of probity's own runs are left out.

use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::api::protocol::RUN_LABEL;
use crate::api::RunResult;

/// At most this many pods are named in a failure; the count says how many there are.
const NAMED: usize = 20;

fn namespace(env: &impl Fn(&str) -> Option<String>, var: &str) -> Option<String> {
    env(var)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// `probity check pod-restarts`: `POD_NAMESPACE` (all when unset), `MAX_FAILURES_ALLOWED` (10):
/// a container restarted more often than that fails the check.
#[derive(Debug, Clone, PartialEq)]
pub struct Restarts {
    pub namespace: Option<String>,
    pub max: i32,
}

impl Restarts {
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<String>> {
        let max = match env("MAX_FAILURES_ALLOWED").filter(|v| !v.trim().is_empty()) {
            None => 10,
            Some(v) => v
                .trim()
                .parse::<i32>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| vec![format!("MAX_FAILURES_ALLOWED={v:?} is not a count")])?,
        };
        Ok(Restarts {
            namespace: namespace(&env, "POD_NAMESPACE"),
            max,
        })
    }

    pub fn judge(&self, pods: &[Pod]) -> RunResult {
        let mut bad = Vec::new();
        for p in pods.iter().filter(|p| !is_check_run(p)) {
            let statuses = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref());
            for c in statuses.into_iter().flatten() {
                if c.restart_count > self.max {
                    let last = c
                        .last_state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref())
                        .map(|t| {
                            format!(
                                " (last: exit code {}{})",
                                t.exit_code,
                                t.reason
                                    .as_deref()
                                    .map(|r| format!(", {r}"))
                                    .unwrap_or_default()
                            )
                        })
                        .unwrap_or_default();
                    bad.push(format!(
                        "{}: container {} restarted {} times{last}",
                        name(p),
                        c.name,
                        c.restart_count
                    ));
                }
            }
        }
        verdict(
            bad,
            &format!("with more than {} restarts", self.max),
            self.namespace.as_deref(),
        )
    }

    pub async fn run(&self) -> RunResult {
        match list("pod-restarts", self.namespace.as_deref()).await {
            Ok(pods) => self.judge(&pods),
            Err(e) => RunResult::failed(e),
        }
    }
}

/// `probity check pod-status`: `TARGET_NAMESPACE` (all when unset), `GRACE_PERIOD` (10m): a pod
/// older than that which is Pending, Failed or Unknown, or Running without being Ready for that
/// long, fails the check.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub namespace: Option<String>,
    pub grace: Duration,
}

impl Status {
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<String>> {
        let grace = super::duration(&env, "GRACE_PERIOD", Duration::from_secs(600))
            .map_err(|e| vec![e.0])?;
        Ok(Status {
            namespace: namespace(&env, "TARGET_NAMESPACE"),
            grace,
        })
    }

    pub fn judge(&self, pods: &[Pod], now: DateTime<Utc>) -> RunResult {
        let grace = chrono::Duration::from_std(self.grace).unwrap_or(chrono::Duration::MAX);
        let older = |t: Option<DateTime<Utc>>| t.is_some_and(|t| now - t >= grace);
        let mut bad = Vec::new();
        for p in pods.iter().filter(|p| !is_check_run(p)) {
            let Some(st) = p.status.as_ref() else {
                continue;
            };
            let created = p
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| DateTime::from_timestamp_millis(t.0.as_millisecond()));
            if !older(created) {
                continue;
            }
            let phase = st.phase.as_deref().unwrap_or("Unknown");
            let waiting = st
                .container_statuses
                .iter()
                .flatten()
                .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone());
            let why = st.reason.clone().or(waiting);
            let with = |what: &str| match &why {
                Some(r) => format!("{}: {what} ({r})", name(p)),
                None => format!("{}: {what}", name(p)),
            };
            match phase {
                "Succeeded" => {}
                "Pending" | "Failed" | "Unknown" => bad.push(with(phase)),
                _ => {
                    let ready = st.conditions.iter().flatten().find(|c| c.type_ == "Ready");
                    let since = ready
                        .and_then(|c| c.last_transition_time.as_ref())
                        .and_then(|t| DateTime::from_timestamp_millis(t.0.as_millisecond()));
                    if ready.is_some_and(|c| c.status != "True") && older(since.or(created)) {
                        bad.push(with("Running but not Ready"));
                    }
                }
            }
        }
        verdict(
            bad,
            &format!("stuck for longer than {:?}", self.grace),
            self.namespace.as_deref(),
        )
    }

    pub async fn run(&self) -> RunResult {
        match list("pod-status", self.namespace.as_deref()).await {
            Ok(pods) => self.judge(&pods, Utc::now()),
            Err(e) => RunResult::failed(e),
        }
    }
}

fn name(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or(""),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

/// Pods of probity's (or Kuberhealthy's) check runs come and go with their runs: not judged.
fn is_check_run(p: &Pod) -> bool {
    p.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(RUN_LABEL))
}

fn verdict(mut bad: Vec<String>, what: &str, ns: Option<&str>) -> RunResult {
    if bad.is_empty() {
        return RunResult::passed();
    }
    let total = bad.len();
    bad.truncate(NAMED);
    let scope = ns.map_or("all namespaces".to_string(), |n| format!("namespace {n}"));
    let mut out = vec![format!("{total} pods in {scope} {what}")];
    out.extend(bad);
    RunResult::failed(out)
}

async fn list(check: &str, ns: Option<&str>) -> Result<Vec<Pod>, Vec<String>> {
    let client = super::kube_client(check).await?;
    let api: Api<Pod> = match ns {
        Some(n) => Api::namespaced(client, n),
        None => Api::all(client),
    };
    let pods = api
        .list(&ListParams::default())
        .await
        .map_err(|e| vec![format!("listing pods: {e}")])?;
    Ok(pods.items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_env as env;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn restarts_over_the_limit_are_named_with_the_last_exit() {
        let r = Restarts::from_env(env(&[
            ("POD_NAMESPACE", "shop"),
            ("MAX_FAILURES_ALLOWED", "3"),
        ]))
        .unwrap();
        assert_eq!((r.namespace.as_deref(), r.max), (Some("shop"), 3));
        let crashing = pod(serde_json::json!({
            "metadata": {"name": "api-1", "namespace": "shop"},
            "status": {"containerStatuses": [{"name": "api", "image": "i", "imageID": "", "ready": false,
                "restartCount": 7, "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}
        }));
        let fine = pod(serde_json::json!({
            "metadata": {"name": "db-0", "namespace": "shop"},
            "status": {"containerStatuses": [{"name": "db", "image": "i", "imageID": "", "ready": true, "restartCount": 3}]}
        }));
        assert_eq!(r.judge(std::slice::from_ref(&fine)), RunResult::passed());
        assert_eq!(
            r.judge(&[fine, crashing]),
            RunResult::failed(vec![
                "1 pods in namespace shop with more than 3 restarts".to_string(),
                "shop/api-1: container api restarted 7 times (last: exit code 1, Error)"
                    .to_string()
            ])
        );
        let e = Restarts::from_env(env(&[("MAX_FAILURES_ALLOWED", "-1")])).unwrap_err();
        assert_eq!(
            e,
            vec!["MAX_FAILURES_ALLOWED=\"-1\" is not a count".to_string()]
        );
        assert_eq!(Restarts::from_env(env(&[])).unwrap().max, 10);
    }

    #[test]
    fn stuck_pods_past_the_grace_period_are_named_with_their_reason() {
        let s = Status::from_env(env(&[("GRACE_PERIOD", "5m")])).unwrap();
        assert_eq!(
            (s.namespace.as_deref(), s.grace),
            (None, Duration::from_secs(300))
        );
        let now = DateTime::parse_from_rfc3339("2026-12-03T12:00:00Z")
            .unwrap()
            .to_utc();
        let pending = |name: &str, created: &str| {
            pod(serde_json::json!({
                "metadata": {"name": name, "namespace": "web", "creationTimestamp": created},
                "status": {"phase": "Pending", "containerStatuses": [{"name": "c", "image": "i", "imageID": "",
                    "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}
            }))
        };
        let unready = pod(serde_json::json!({
            "metadata": {"name": "slow", "namespace": "web", "creationTimestamp": "2026-12-03T10:00:00Z"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False",
                "lastTransitionTime": "2026-12-03T11:50:00Z"}]}
        }));
        let check_run = pod(serde_json::json!({
            "metadata": {"name": "dns-1d309", "namespace": "web", "creationTimestamp": "2026-12-03T10:00:00Z",
                "labels": {"kh-run-uuid": "x"}},
            "status": {"phase": "Pending"}
        }));
        let young = pending("new", "2026-12-03T11:58:00Z");
        assert_eq!(
            s.judge(&[young.clone(), check_run], now),
            RunResult::passed()
        );
        assert_eq!(
            s.judge(
                &[young, pending("old", "2026-12-03T11:00:00Z"), unready],
                now
            ),
            RunResult::failed(vec![
                "2 pods in all namespaces stuck for longer than 300s".to_string(),
                "web/old: Pending (ImagePullBackOff)".to_string(),
                "web/slow: Running but not Ready".to_string(),
            ])
        );
    }
}
