//! The logs of a check's retained pods (retention keeps the last failed and succeeded ones),
//! read through the API server for the check's page: any replica can serve them. Which pods
//! the check has comes from the pod watch every replica runs, not from a LIST per request.

use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;
use kube::{Api, Client};

use super::pods::PodRunner;
use crate::api::protocol::RUN_LABEL;
use crate::api::{CheckKey, RunLog};

/// Pods whose logs are read, newest first.
const PODS: usize = 5;
/// The end of each pod's log.
const LINES: i64 = 500;
const BYTES: i64 = 64 * 1024;

#[derive(Clone)]
pub struct PodLogs {
    client: Client,
    pods: PodRunner,
}

impl std::fmt::Debug for PodLogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PodLogs")
    }
}

impl PodLogs {
    pub fn new(client: Client, pods: PodRunner) -> Self {
        PodLogs { client, pods }
    }

    /// The check's pods, newest first, with the end of each one's log. A pod whose log cannot
    /// be read (not started yet, its node gone) says why in place of its log.
    pub async fn read(&self, key: &CheckKey) -> Vec<RunLog> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), key.namespace());
        let mut pods = self.pods.pods_of(key);
        pods.sort_by_key(|p| std::cmp::Reverse(p.metadata.creation_timestamp.clone()));
        let mut out = Vec::new();
        for pod in pods.into_iter().take(PODS) {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let params = LogParams {
                tail_lines: Some(LINES),
                limit_bytes: Some(BYTES),
                ..LogParams::default()
            };
            let (text, truncated) = match api.logs(&name, &params).await {
                Ok(t) => {
                    let cut = t.lines().count() as i64 >= LINES || t.len() as i64 >= BYTES;
                    (t, cut)
                }
                Err(e) => (format!("(no log: {e})"), false),
            };
            out.push(RunLog {
                source: format!("pod {name}"),
                run: pod
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(RUN_LABEL))
                    .cloned(),
                started: pod
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_second()),
                text,
                truncated,
            });
        }
        out
    }
}
