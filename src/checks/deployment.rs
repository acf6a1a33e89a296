//! `probity check deployment`: the cluster can run a web server and route to it. Creates a
//! Deployment of N replicas and a ClusterIP Service in front of it, waits for the rollout, GETs
//! `/` through the Service and expects 200, optionally rolls the Deployment to a second image and
//! GETs again, then deletes both and waits until they are gone. Kuberhealthy's `deployment-check`
//! settings and defaults; unlike it, names are unique per run (`<name>-<run id>`), leftovers of a
//! crashed run are removed by the next, cleanup happens when the pod is deleted mid-run, and a
//! failure says why the pods are not ready.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::workload::{self, api_error, OWNER_LABEL, RUN_LABEL};
use super::{flag, number, pairs};
use crate::checks::Problem;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `CHECK_IMAGE`: the web server (nginxinc/nginx-unprivileged:1.17.8).
    pub image: String,
    /// `CHECK_IMAGE_ROLL_TO` when `CHECK_DEPLOYMENT_ROLLING_UPDATE` is true (…:1.17.9).
    pub roll_to: Option<String>,
    /// `CHECK_IMAGE_PULL_SECRET`.
    pub pull_secret: Option<String>,
    /// `CHECK_DEPLOYMENT_NAME` (deployment-deployment) and `CHECK_SERVICE_NAME`
    /// (deployment-svc): the run's id is appended.
    pub deployment: String,
    pub service: String,
    /// `CHECK_NAMESPACE`: the check pod's own when unset.
    pub namespace: Option<String>,
    /// `CHECK_DEPLOYMENT_REPLICAS` (2).
    pub replicas: i32,
    /// `CHECK_CONTAINER_PORT` (8080) and `CHECK_LOAD_BALANCER_PORT` (80, the Service's).
    pub container_port: u16,
    pub service_port: u16,
    /// `CHECK_POD_CPU_REQUEST`/`_LIMIT` in millicores (15, 75), `CHECK_POD_MEM_REQUEST`/`_LIMIT`
    /// in MiB (20, 75).
    pub cpu: (u32, u32),
    pub memory: (u32, u32),
    /// `CHECK_SERVICE_ACCOUNT` (default) for the web server's pods.
    pub service_account: String,
    /// `NODE_SELECTOR` (`k=v,k2=v2`), `TOLERATIONS` (`key=value:Effect,key:Effect,key`),
    /// `ADDITIONAL_ENV_VARS` (`K=v,...`) for the web server's pods.
    pub node_selector: Vec<(String, String)>,
    pub tolerations: Vec<Value>,
    pub env: Vec<(String, String)>,
}

pub const DEFAULT_IMAGE: &str = "nginxinc/nginx-unprivileged:1.17.8";
pub const DEFAULT_ROLL_TO: &str = "nginxinc/nginx-unprivileged:1.17.9";

/// A `TOLERATIONS` item: `key=value:Effect`, `key:Effect`, `key=value` or `key`.
pub fn toleration(item: &str) -> Result<Value, Problem> {
    let (rest, effect) = match item.rsplit_once(':') {
        Some((r, e)) => {
            if !matches!(e, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
                return Err(Problem(format!(
                    "TOLERATIONS: {item:?} has effect {e:?}, not NoSchedule, PreferNoSchedule or NoExecute"
                )));
            }
            (r, Some(e))
        }
        None => (item, None),
    };
    let mut t = match rest.split_once('=') {
        Some((k, v)) => json!({"key": k, "operator": "Equal", "value": v}),
        None => json!({"key": rest, "operator": "Exists"}),
    };
    if t["key"].as_str().is_some_and(str::is_empty) {
        return Err(Problem(format!("TOLERATIONS: {item:?} has no key")));
    }
    if let Some(e) = effect {
        t["effect"] = json!(e);
    }
    Ok(t)
}

pub fn tolerations(env: &impl Fn(&str) -> Option<String>) -> Result<Vec<Value>, Problem> {
    env("TOLERATIONS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(toleration)
        .collect()
}

impl Config {
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<String>> {
        Self::parse(&env).map_err(|e| vec![e.0])
    }

    fn parse(env: &impl Fn(&str) -> Option<String>) -> Result<Self, Problem> {
        let text = |var: &str, default: &str| {
            env(var)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        let image = text("CHECK_IMAGE", DEFAULT_IMAGE);
        let roll_to = text("CHECK_IMAGE_ROLL_TO", DEFAULT_ROLL_TO);
        let rolling = flag(env, "CHECK_DEPLOYMENT_ROLLING_UPDATE", false)?;
        if rolling && roll_to == image {
            // Kuberhealthy silently fell back to its default images here; a roll to the same
            // image proves nothing, so say so.
            return Err(Problem(format!(
                "CHECK_IMAGE_ROLL_TO={roll_to:?} is CHECK_IMAGE: a rolling update needs a second image"
            )));
        }
        let deployment = text("CHECK_DEPLOYMENT_NAME", "deployment-deployment");
        workload::check_base_name("CHECK_DEPLOYMENT_NAME", &deployment)?;
        let service = text("CHECK_SERVICE_NAME", "deployment-svc");
        workload::check_base_name("CHECK_SERVICE_NAME", &service)?;
        let replicas = number(env, "CHECK_DEPLOYMENT_REPLICAS", 2i32)?;
        if replicas < 1 {
            return Err(Problem(format!(
                "CHECK_DEPLOYMENT_REPLICAS={replicas}: at least 1 replica"
            )));
        }
        let port = |var: &str, default: u16| -> Result<u16, Problem> {
            match number(env, var, default)? {
                0 => Err(Problem(format!("{var}=0 is not a port"))),
                p => Ok(p),
            }
        };
        Ok(Config {
            image,
            roll_to: rolling.then_some(roll_to),
            pull_secret: env("CHECK_IMAGE_PULL_SECRET")
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()),
            deployment,
            service,
            namespace: env("CHECK_NAMESPACE")
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()),
            replicas,
            container_port: port("CHECK_CONTAINER_PORT", 8080)?,
            service_port: port("CHECK_LOAD_BALANCER_PORT", 80)?,
            cpu: (
                number(env, "CHECK_POD_CPU_REQUEST", 15)?,
                number(env, "CHECK_POD_CPU_LIMIT", 75)?,
            ),
            memory: (
                number(env, "CHECK_POD_MEM_REQUEST", 20)?,
                number(env, "CHECK_POD_MEM_LIMIT", 75)?,
            ),
            service_account: text("CHECK_SERVICE_ACCOUNT", "default"),
            node_selector: pairs(env, "NODE_SELECTOR")?,
            tolerations: tolerations(env)?,
            env: pairs(env, "ADDITIONAL_ENV_VARS")?,
        })
    }

    fn labels(&self, run: &str) -> Value {
        json!({OWNER_LABEL: self.deployment, RUN_LABEL: run})
    }

    /// The Deployment of run `run`, named `name`.
    pub fn deployment_object(&self, name: &str, run: &str) -> Deployment {
        let mut pod = json!({
            "serviceAccountName": self.service_account,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "web",
                "image": self.image,
                "ports": [{"containerPort": self.container_port}],
                "env": self.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
                "resources": {
                    "requests": {"cpu": format!("{}m", self.cpu.0), "memory": format!("{}Mi", self.memory.0)},
                    "limits": {"cpu": format!("{}m", self.cpu.1), "memory": format!("{}Mi", self.memory.1)},
                },
                // Ready means answering, not only started.
                "readinessProbe": {"httpGet": {"path": "/", "port": self.container_port}, "periodSeconds": 2},
            }],
        });
        if !self.node_selector.is_empty() {
            pod["nodeSelector"] = self
                .node_selector
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
        }
        if !self.tolerations.is_empty() {
            pod["tolerations"] = json!(self.tolerations);
        }
        if let Some(s) = &self.pull_secret {
            pod["imagePullSecrets"] = json!([{"name": s}]);
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": self.labels(run)},
            "spec": {
                "replicas": self.replicas,
                "selector": {"matchLabels": self.labels(run)},
                "template": {"metadata": {"labels": self.labels(run)}, "spec": pod},
            }
        }))
        .expect("a Deployment")
    }

    /// The Service of run `run`, named `name`.
    pub fn service_object(&self, name: &str, run: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": self.labels(run)},
            "spec": {
                "type": "ClusterIP",
                "selector": self.labels(run),
                "ports": [{"port": self.service_port, "targetPort": self.container_port, "protocol": "TCP"}],
            }
        }))
        .expect("a Service")
    }

    /// One run within `budget`, its objects named after `run_uuid`; everything it created is
    /// deleted before it returns, when it fails and when the pod is told to stop.
    pub async fn run(&self, budget: Duration, run_uuid: &str) -> Result<(), Vec<String>> {
        let client = super::kube_client("deployment").await?;
        let ns = self
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let k = Objects {
            deployments: Api::namespaced(client.clone(), &ns),
            services: Api::namespaced(client.clone(), &ns),
            pods: Api::namespaced(client, &ns),
            ns,
        };
        let run = workload::run_suffix(run_uuid);
        let names = (
            format!("{}-{run}", self.deployment),
            format!("{}-{run}", self.service),
        );
        let what = format!(
            "deployment {0}/{1} and service {0}/{2}",
            k.ns, names.0, names.1
        );
        workload::run_then_clean(
            budget,
            &what,
            async |until| self.exercise(&k, &names, &run, until).await,
            async |until| {
                [
                    workload::delete_and_wait(&k.deployments, &k.ns, "deployment", &names.0, until)
                        .await,
                    workload::delete_and_wait(&k.services, &k.ns, "service", &names.1, until).await,
                ]
                .into_iter()
                .filter_map(Result::err)
                .map(|p| p.0)
                .collect()
            },
        )
        .await
    }

    async fn exercise(
        &self,
        k: &Objects,
        (dep_name, svc_name): &(String, String),
        run: &str,
        until: Instant,
    ) -> Result<(), Vec<String>> {
        let ns = &k.ns;
        for (kind, r) in [
            (
                "deployment",
                workload::remove_leftovers(&k.deployments, &self.deployment).await,
            ),
            (
                "service",
                workload::remove_leftovers(&k.services, &self.deployment).await,
            ),
        ] {
            for name in r.map_err(|e| vec![e.0])? {
                tracing::info!("removed {kind} {ns}/{name}, left by an earlier run");
            }
        }
        let svc = k
            .services
            .create(&PostParams::default(), &self.service_object(svc_name, run))
            .await
            .map_err(|e| {
                vec![format!(
                    "creating service {ns}/{svc_name}: {}",
                    api_error(&e)
                )]
            })?;
        k.deployments
            .create(
                &PostParams::default(),
                &self.deployment_object(dep_name, run),
            )
            .await
            .map_err(|e| {
                vec![format!(
                    "creating deployment {ns}/{dep_name}: {}",
                    api_error(&e)
                )]
            })?;
        let ip = svc
            .spec
            .and_then(|s| s.cluster_ip)
            .filter(|ip| !ip.is_empty() && ip != "None")
            .ok_or_else(|| vec![format!("service {ns}/{svc_name} got no ClusterIP")])?;
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip
        };
        let url = format!("http://{host}:{}/", self.service_port);

        let step = Instant::now();
        self.rolled_out(k, dep_name, run, &self.image, until)
            .await?;
        tracing::info!(
            "deployment {ns}/{dep_name} rolled out ({}) in {:.1}s",
            self.image,
            step.elapsed().as_secs_f64()
        );
        let step = Instant::now();
        get_ok(&url, &format!("{ns}/{svc_name}"), until).await?;
        tracing::info!("GET {url}: 200 after {:.1}s", step.elapsed().as_secs_f64());
        if let Some(second) = &self.roll_to {
            let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": second}]}}}});
            k.deployments
                .patch(dep_name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
                .map_err(|e| {
                    vec![format!(
                        "rolling deployment {ns}/{dep_name} to {second}: {}",
                        api_error(&e)
                    )]
                })?;
            let step = Instant::now();
            self.rolled_out(k, dep_name, run, second, until).await?;
            tracing::info!(
                "deployment {ns}/{dep_name} rolled to {second} in {:.1}s",
                step.elapsed().as_secs_f64()
            );
            let step = Instant::now();
            get_ok(&url, &format!("{ns}/{svc_name}"), until).await?;
            tracing::info!("GET {url}: 200 after {:.1}s", step.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// Waits until every replica runs `image`, ready and available, and no other is left.
    async fn rolled_out(
        &self,
        k: &Objects,
        name: &str,
        run: &str,
        image: &str,
        until: Instant,
    ) -> Result<(), Vec<String>> {
        let started = Instant::now();
        let want = self.replicas;
        let done = move |d: Option<&Deployment>| d.is_some_and(|d| rolled_out(d, want));
        match tokio::time::timeout_at(until, await_condition(k.deployments.clone(), name, done))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(vec![format!("watching deployment {}/{name}: {e}", k.ns)]),
            Err(_) => {
                let ready = k
                    .deployments
                    .get(name)
                    .await
                    .ok()
                    .and_then(|d| d.status)
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0);
                let mut out = vec![format!(
                    "deployment {}/{name} ({image}): {ready} of {want} replicas ready after {}s",
                    k.ns,
                    started.elapsed().as_secs()
                )];
                let pods = k
                    .pods
                    .list(&ListParams::default().labels(&format!("{RUN_LABEL}={run}")))
                    .await
                    .map(|l| l.items)
                    .unwrap_or_default();
                out.extend(workload::pod_problems(&pods, 10));
                Err(out)
            }
        }
    }
}

struct Objects {
    deployments: Api<Deployment>,
    services: Api<Service>,
    pods: Api<Pod>,
    ns: String,
}

/// The rollout of the Deployment's current spec is complete: observed, every replica updated,
/// ready and available, and no replica of an older spec left.
pub fn rolled_out(d: &Deployment, want: i32) -> bool {
    let Some(st) = d.status.as_ref() else {
        return false;
    };
    let generation = d.metadata.generation.unwrap_or(0);
    st.observed_generation.unwrap_or(0) >= generation
        && st.replicas.unwrap_or(0) == want
        && st.updated_replicas.unwrap_or(0) == want
        && st.ready_replicas.unwrap_or(0) == want
        && st.available_replicas.unwrap_or(0) == want
}

/// GETs `url` until it answers 200 (kube-proxy may not have programmed the Service yet) or
/// `until`; the failure names the last answer.
async fn get_ok(url: &str, service: &str, until: Instant) -> Result<(), Vec<String>> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut last = String::from("no request made");
    loop {
        let limit = until
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(5));
        if limit.is_zero() {
            return Err(vec![format!(
                "GET {url} (service {service}): no 200 in {}s; last: {last}",
                started.elapsed().as_secs()
            )]);
        }
        match client.get(url).timeout(limit).send().await {
            Ok(r) if r.status() == reqwest::StatusCode::OK => return Ok(()),
            Ok(r) => last = format!("status {}", r.status().as_u16()),
            Err(e) => last = super::http::describe(&e),
        }
        tokio::time::sleep_until((Instant::now() + Duration::from_secs(1)).min(until)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_env as env;

    #[test]
    fn defaults_are_kuberhealthys() {
        let c = Config::from_env(env(&[])).unwrap();
        assert_eq!(c.image, DEFAULT_IMAGE);
        assert_eq!(c.roll_to, None);
        assert_eq!(
            (c.deployment.as_str(), c.service.as_str()),
            ("deployment-deployment", "deployment-svc")
        );
        assert_eq!(
            (c.replicas, c.container_port, c.service_port),
            (2, 8080, 80)
        );
        assert_eq!((c.cpu, c.memory), ((15, 75), (20, 75)));
        assert_eq!(c.service_account, "default");
    }

    #[test]
    fn settings_are_read_and_bad_ones_named() {
        let c = Config::from_env(env(&[
            ("CHECK_DEPLOYMENT_ROLLING_UPDATE", "true"),
            ("CHECK_DEPLOYMENT_REPLICAS", "4"),
            ("NODE_SELECTOR", "disk=ssd, zone=a"),
            (
                "TOLERATIONS",
                "dedicated=probes:NoSchedule,node-role.kubernetes.io/master:NoSchedule,gpu",
            ),
            ("ADDITIONAL_ENV_VARS", "A=1"),
        ]))
        .unwrap();
        assert_eq!(c.roll_to.as_deref(), Some(DEFAULT_ROLL_TO));
        assert_eq!(c.replicas, 4);
        assert_eq!(
            c.node_selector,
            vec![("disk".into(), "ssd".into()), ("zone".into(), "a".into())]
        );
        assert_eq!(
            c.tolerations,
            vec![
                json!({"key": "dedicated", "operator": "Equal", "value": "probes", "effect": "NoSchedule"}),
                json!({"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"}),
                json!({"key": "gpu", "operator": "Exists"}),
            ]
        );
        let err = |pairs: &[(&str, &str)]| Config::from_env(env(pairs)).unwrap_err().join("; ");
        assert_eq!(
            err(&[("CHECK_DEPLOYMENT_REPLICAS", "0")]),
            "CHECK_DEPLOYMENT_REPLICAS=0: at least 1 replica"
        );
        assert_eq!(
            err(&[("CHECK_DEPLOYMENT_REPLICAS", "two")]),
            "CHECK_DEPLOYMENT_REPLICAS=\"two\" is not a whole number"
        );
        assert_eq!(
            err(&[("CHECK_DEPLOYMENT_ROLLING_UPDATE", "yes")]),
            "CHECK_DEPLOYMENT_ROLLING_UPDATE=\"yes\" is not true or false"
        );
        assert!(err(&[
            ("CHECK_DEPLOYMENT_ROLLING_UPDATE", "1"),
            ("CHECK_IMAGE", "a:1"),
            ("CHECK_IMAGE_ROLL_TO", "a:1")
        ])
        .starts_with("CHECK_IMAGE_ROLL_TO=\"a:1\" is CHECK_IMAGE"));
        assert!(err(&[("TOLERATIONS", "a=b:Sometimes")]).contains("effect \"Sometimes\""));
        assert!(err(&[("CHECK_SERVICE_NAME", "Svc")])
            .starts_with("CHECK_SERVICE_NAME=\"Svc\" is not a name"));
        assert_eq!(
            err(&[("NODE_SELECTOR", "ssd")]),
            "NODE_SELECTOR: \"ssd\" is not key=value"
        );
        assert_eq!(
            err(&[("CHECK_CONTAINER_PORT", "0")]),
            "CHECK_CONTAINER_PORT=0 is not a port"
        );
    }

    #[test]
    fn objects_carry_the_run_labels_the_selector_and_the_settings() {
        let c = Config::from_env(env(&[
            ("NODE_SELECTOR", "disk=ssd"),
            ("CHECK_IMAGE_PULL_SECRET", "regcred"),
            ("ADDITIONAL_ENV_VARS", "A=1"),
        ]))
        .unwrap();
        let d =
            serde_json::to_value(c.deployment_object("deployment-deployment-0a1b2c3d", "0a1b2c3d"))
                .unwrap();
        let labels = json!({OWNER_LABEL: "deployment-deployment", RUN_LABEL: "0a1b2c3d"});
        assert_eq!(d["metadata"]["labels"], labels);
        assert_eq!(d["spec"]["selector"]["matchLabels"], labels);
        assert_eq!(d["spec"]["template"]["metadata"]["labels"], labels);
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["nodeSelector"], json!({"disk": "ssd"}));
        assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
        assert_eq!(
            pod["containers"][0]["env"],
            json!([{"name": "A", "value": "1"}])
        );
        assert_eq!(
            pod["containers"][0]["resources"]["limits"],
            json!({"cpu": "75m", "memory": "75Mi"})
        );
        assert_eq!(
            pod["containers"][0]["readinessProbe"]["httpGet"]["port"],
            json!(8080)
        );
        let s =
            serde_json::to_value(c.service_object("deployment-svc-0a1b2c3d", "0a1b2c3d")).unwrap();
        assert_eq!(s["spec"]["selector"], labels);
        assert_eq!(
            s["spec"]["ports"],
            json!([{"port": 80, "targetPort": 8080, "protocol": "TCP"}])
        );
    }

    #[test]
    fn a_rollout_is_done_when_every_replica_is_new_ready_and_available() {
        let d = |generation: i64,
                 observed: i64,
                 total: i32,
                 updated: i32,
                 ready: i32|
         -> Deployment {
            serde_json::from_value(json!({
                "metadata": {"name": "d", "generation": generation},
                "status": {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
                           "readyReplicas": ready, "availableReplicas": ready}
            }))
            .unwrap()
        };
        assert!(rolled_out(&d(2, 2, 2, 2, 2), 2));
        assert!(
            !rolled_out(&d(2, 1, 2, 2, 2), 2),
            "the new spec not observed yet"
        );
        assert!(
            !rolled_out(&d(2, 2, 3, 2, 3), 2),
            "an old replica still there"
        );
        assert!(!rolled_out(&d(2, 2, 2, 2, 1), 2), "one not ready");
        assert!(!rolled_out(&d(2, 2, 2, 1, 2), 2), "one not updated");
        let no_status: Deployment =
            serde_json::from_value(json!({"metadata": {"name": "d"}})).unwrap();
        assert!(!rolled_out(&no_status, 2));
    }
}
