//! `probity check daemonset`: every node that should run a pod can. Creates a DaemonSet of pause
//! containers that tolerates the taints found on the nodes (except `ALLOWED_TAINTS`, which mark
//! nodes allowed to go without), waits until each node that must have one has a Ready pod, then
//! deletes it and waits until its pods are gone. A failure names each node without a Ready pod and
//! why. Kuberhealthy's `daemonset-check` settings and defaults; it needs nodes `list`, which
//! Kuberhealthy's manifest forgot.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::deployment::tolerations;
use super::pairs;
use super::workload::{self, api_error, OWNER_LABEL, RUN_LABEL};
use crate::checks::Problem;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `POD_NAMESPACE`: where the DaemonSet goes (the check pod's own when unset).
    pub namespace: Option<String>,
    /// `PAUSE_CONTAINER_IMAGE` (gcr.io/google-containers/pause:3.1).
    pub image: String,
    /// `CHECK_DAEMONSET_NAME` (daemonset): the run's id is appended.
    pub name: String,
    /// `DAEMONSET_PRIORITY_CLASS_NAME`.
    pub priority_class: Option<String>,
    /// `NODE_SELECTOR`: only nodes with these labels.
    pub node_selector: Vec<(String, String)>,
    /// `TOLERATIONS`: besides the taints found on the nodes.
    pub tolerations: Vec<Value>,
    /// `ALLOWED_TAINTS` (`node.kubernetes.io/unschedulable:NoSchedule`): a node with one of
    /// these needs no pod, and the DaemonSet does not tolerate them.
    pub allowed_taints: Vec<TaintMatch>,
}

/// An `ALLOWED_TAINTS` item: `key`, `key=value`, `key:Effect` or `key=value:Effect`.
#[derive(Debug, Clone, PartialEq)]
pub struct TaintMatch {
    pub key: String,
    pub value: Option<String>,
    pub effect: Option<String>,
}

impl TaintMatch {
    pub fn parse(item: &str) -> Result<Self, Problem> {
        let (rest, effect) = match item.rsplit_once(':') {
            Some((r, e)) => (r, Some(e.to_string())),
            None => (item, None),
        };
        let (key, value) = match rest.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (rest, None),
        };
        if key.is_empty() {
            return Err(Problem(format!("ALLOWED_TAINTS: {item:?} has no key")));
        }
        Ok(TaintMatch {
            key: key.to_string(),
            value,
            effect,
        })
    }

    pub fn matches(&self, t: &Taint) -> bool {
        t.key == self.key
            && self
                .value
                .as_ref()
                .is_none_or(|v| t.value.as_ref() == Some(v))
            && self.effect.as_ref().is_none_or(|e| &t.effect == e)
    }
}

impl Config {
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<String>> {
        Self::parse(&env).map_err(|e| vec![e.0])
    }

    fn parse(env: &impl Fn(&str) -> Option<String>) -> Result<Self, Problem> {
        let text = |var: &str| {
            env(var)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let name = text("CHECK_DAEMONSET_NAME").unwrap_or_else(|| "daemonset".into());
        workload::check_base_name("CHECK_DAEMONSET_NAME", &name)?;
        let allowed = env("ALLOWED_TAINTS")
            .unwrap_or_else(|| "node.kubernetes.io/unschedulable:NoSchedule".into());
        Ok(Config {
            namespace: text("POD_NAMESPACE"),
            image: text("PAUSE_CONTAINER_IMAGE")
                .unwrap_or_else(|| "gcr.io/google-containers/pause:3.1".into()),
            name,
            priority_class: text("DAEMONSET_PRIORITY_CLASS_NAME"),
            node_selector: pairs(env, "NODE_SELECTOR")?,
            tolerations: tolerations(env)?,
            allowed_taints: allowed
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(TaintMatch::parse)
                .collect::<Result<_, _>>()?,
        })
    }

    fn allowed(&self, t: &Taint) -> bool {
        self.allowed_taints.iter().any(|a| a.matches(t))
    }

    /// The nodes that must get a Ready pod: they match `NODE_SELECTOR` and carry no allowed
    /// taint that keeps pods off (NoSchedule, NoExecute).
    pub fn expected_nodes(&self, nodes: &[Node]) -> Vec<String> {
        nodes
            .iter()
            .filter(|n| {
                let labels = n.metadata.labels.clone().unwrap_or_default();
                self.node_selector
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
            })
            .filter(|n| {
                let taints = n
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.as_deref())
                    .unwrap_or_default();
                !taints
                    .iter()
                    .any(|t| t.effect != "PreferNoSchedule" && self.allowed(t))
            })
            .filter_map(|n| n.metadata.name.clone())
            .collect()
    }

    /// `TOLERATIONS`, and one for each taint on the nodes that is not allowed, so a tainted
    /// node is still tested.
    pub fn all_tolerations(&self, nodes: &[Node]) -> Vec<Value> {
        let mut out = self.tolerations.clone();
        for n in nodes {
            for t in n
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_deref())
                .unwrap_or_default()
            {
                if self.allowed(t) {
                    continue;
                }
                let tol = match &t.value {
                    Some(v) if !v.is_empty() => {
                        json!({"key": t.key, "operator": "Equal", "value": v, "effect": t.effect})
                    }
                    _ => json!({"key": t.key, "operator": "Exists", "effect": t.effect}),
                };
                if !out.contains(&tol) {
                    out.push(tol);
                }
            }
        }
        out
    }

    pub fn daemonset_object(&self, name: &str, run: &str, nodes: &[Node]) -> DaemonSet {
        let labels = json!({OWNER_LABEL: self.name, RUN_LABEL: run});
        let mut pod = json!({
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "pause",
                "image": self.image,
                "resources": {"requests": {"cpu": "1m", "memory": "4Mi"}, "limits": {"memory": "16Mi"}},
            }],
            "tolerations": self.all_tolerations(nodes),
        });
        if !self.node_selector.is_empty() {
            pod["nodeSelector"] = self
                .node_selector
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
        }
        if let Some(p) = &self.priority_class {
            pod["priorityClassName"] = json!(p);
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod},
            }
        }))
        .expect("a DaemonSet")
    }

    /// The nodes of `expected` without a Ready pod among `pods`, each with why.
    pub fn missing(expected: &[String], pods: &[Pod]) -> Vec<String> {
        let mut by_node: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
        for p in pods {
            if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
                by_node.entry(n).or_default().push(p);
            }
        }
        let ready = |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        let mut out = Vec::new();
        for node in expected {
            match by_node.get(node.as_str()) {
                None => out.push(format!("node {node}: no pod scheduled")),
                Some(ps) if ps.iter().any(|p| ready(p)) => {}
                Some(ps) => {
                    let why = workload::pod_problems(ps.iter().copied(), 1);
                    out.push(format!(
                        "node {node}: {}",
                        why.first()
                            .cloned()
                            .unwrap_or_else(|| "pod not ready".into())
                    ));
                }
            }
        }
        out
    }

    pub async fn run(&self, budget: Duration, run_uuid: &str) -> Result<(), Vec<String>> {
        let client = super::kube_client("daemonset").await?;
        let ns = self
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
        let run = workload::run_suffix(run_uuid);
        let name = format!("{}-{run}", self.name);
        workload::run_then_clean(
            budget,
            &format!("daemonset {ns}/{name}"),
            async |until| {
                self.exercise(&client, &daemonsets, &ns, &name, &run, until)
                    .await
            },
            async |until| {
                workload::delete_and_wait(&daemonsets, &ns, "daemonset", &name, until)
                    .await
                    .err()
                    .into_iter()
                    .map(|p| p.0)
                    .collect()
            },
        )
        .await
    }

    async fn exercise(
        &self,
        client: &kube::Client,
        daemonsets: &Api<DaemonSet>,
        ns: &str,
        name: &str,
        run: &str,
        until: Instant,
    ) -> Result<(), Vec<String>> {
        for left in workload::remove_leftovers(daemonsets, &self.name)
            .await
            .map_err(|e| vec![e.0])?
        {
            tracing::info!("removed daemonset {ns}/{left}, left by an earlier run");
        }
        let nodes = Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| vec![format!("listing nodes: {}", api_error(&e))])?
            .items;
        let expected = self.expected_nodes(&nodes);
        if expected.is_empty() {
            return Err(vec![format!(
                "no node to test: {} nodes, none matching NODE_SELECTOR without an ALLOWED_TAINTS taint",
                nodes.len()
            )]);
        }
        daemonsets
            .create(
                &PostParams::default(),
                &self.daemonset_object(name, run, &nodes),
            )
            .await
            .map_err(|e| vec![format!("creating daemonset {ns}/{name}: {}", api_error(&e))])?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let started = Instant::now();
        loop {
            let list = pods
                .list(&ListParams::default().labels(&format!("{RUN_LABEL}={run}")))
                .await
                .map_err(|e| vec![format!("listing the daemonset's pods: {}", api_error(&e))])?;
            let missing = Self::missing(&expected, &list.items);
            if missing.is_empty() {
                tracing::info!(
                    "daemonset {ns}/{name}: a Ready pod on each of {} nodes after {:.1}s",
                    expected.len(),
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if Instant::now() + Duration::from_secs(2) >= until {
                let mut out = vec![format!(
                    "daemonset {ns}/{name} ({}): no Ready pod on {} of {} nodes after {}s",
                    self.image,
                    missing.len(),
                    expected.len(),
                    started.elapsed().as_secs()
                )];
                out.extend(missing.into_iter().take(20));
                return Err(out);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_env as env;

    fn node(name: &str, labels: Value, taints: Value) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}),
        )
        .unwrap()
    }

    #[test]
    fn defaults_are_kuberhealthys_and_bad_settings_are_named() {
        let c = Config::from_env(env(&[])).unwrap();
        assert_eq!(c.image, "gcr.io/google-containers/pause:3.1");
        assert_eq!(c.name, "daemonset");
        assert_eq!(
            c.allowed_taints,
            vec![TaintMatch {
                key: "node.kubernetes.io/unschedulable".into(),
                value: None,
                effect: Some("NoSchedule".into())
            }]
        );
        let err = |p: &[(&str, &str)]| Config::from_env(env(p)).unwrap_err().join("; ");
        assert!(err(&[("CHECK_DAEMONSET_NAME", "DS")])
            .starts_with("CHECK_DAEMONSET_NAME=\"DS\" is not a name"));
        assert_eq!(
            err(&[("ALLOWED_TAINTS", "=x:NoSchedule")]),
            "ALLOWED_TAINTS: \"=x:NoSchedule\" has no key"
        );
    }

    #[test]
    fn nodes_with_an_allowed_taint_or_not_selected_need_no_pod_and_other_taints_are_tolerated() {
        let c = Config::from_env(env(&[
            ("NODE_SELECTOR", "kubernetes.io/os=linux"),
            (
                "ALLOWED_TAINTS",
                "node.kubernetes.io/unschedulable:NoSchedule,maintenance",
            ),
        ]))
        .unwrap();
        let linux = json!({"kubernetes.io/os": "linux"});
        let nodes = vec![
            node("plain", linux.clone(), json!([])),
            node(
                "gpu",
                linux.clone(),
                json!([{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]),
            ),
            node(
                "cordoned",
                linux.clone(),
                json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
            ),
            node(
                "maint",
                linux.clone(),
                json!([{"key": "maintenance", "effect": "NoExecute"}]),
            ),
            node(
                "prefers",
                linux,
                json!([{"key": "maintenance", "effect": "PreferNoSchedule"}]),
            ),
            node("windows", json!({"kubernetes.io/os": "windows"}), json!([])),
        ];
        assert_eq!(c.expected_nodes(&nodes), vec!["plain", "gpu", "prefers"]);
        assert_eq!(
            c.all_tolerations(&nodes),
            vec![
                json!({"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"})
            ]
        );
    }

    #[test]
    fn missing_names_each_node_and_why() {
        let pods: Vec<Pod> = serde_json::from_value(json!([
            {"metadata": {"name": "a", "namespace": "n"}, "spec": {"nodeName": "n1", "containers": []},
             "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": "b", "namespace": "n"}, "spec": {"nodeName": "n2", "containers": []},
             "status": {"containerStatuses": [{"name": "pause", "image": "i", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}}
        ]))
        .unwrap();
        let expected = vec!["n1".to_string(), "n2".into(), "n3".into()];
        assert_eq!(
            Config::missing(&expected, &pods),
            vec![
                "node n2: pod n/b on n2: container pause ImagePullBackOff",
                "node n3: no pod scheduled",
            ]
        );
    }
}
