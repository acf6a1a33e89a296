//! The bundled checks (`probity check NAME`, checks/cluster/) on the real node: each green, and
//! broken on purpose with a message that names the cause.

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, PostParams};
use probity::api::Outcome;
use serde_json::json;

use crate::backend::{create, runs, solo, wait, wait_running};
use crate::testkube::{check, check_pod, client, kubectl, kubectl_apply, namespace};

/// Every manifest in checks/cluster/ is accepted by the API server as it is (server-side dry
/// run: schema, RBAC objects and all).
#[tokio::test]
async fn bundled_manifests_are_accepted_by_the_api_server() {
    let Some(c) = client().await else { return };
    crate::testkube::install_crd(&c).await;
    namespace(&c, "probity").await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/checks/cluster");
    kubectl(&["apply", "--dry-run=server", "-f", dir]);
}

/// A web server pod and its Service in `ns`; returns the Service's ClusterIP.
async fn web(c: &kube::Client, ns: &str) -> String {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
            "name": "web", "image": "docker.io/library/busybox:1.35",
            "command": ["sh", "-c", "mkdir -p /www && echo healthy > /www/index.html && exec httpd -f -p 8080 -h /www"]
        }]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(c.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    let svc = Api::<Service>::namespaced(c.clone(), ns)
        .create(&PostParams::default(), &svc)
        .await
        .unwrap();
    wait_running(c, ns, "web").await;
    let ip = svc.spec.unwrap().cluster_ip.unwrap();
    // Running is not answering through the Service: kube-proxy programs its rules a moment
    // later. Wait until the node's nat table sends the ClusterIP to the Service's endpoints.
    let netns = crate::testkube::cluster_env("PROBITY_TEST_NETNS").unwrap();
    wait("kube-proxy to program the Service", async || {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns,
                "iptables",
                "-t",
                "nat",
                "-S",
                "KUBE-SERVICES",
            ])
            .output()
            .ok()?;
        let rules = String::from_utf8_lossy(&out.stdout);
        rules
            .lines()
            .any(|l| l.contains(&format!("-d {ip}/32")) && l.contains("-j KUBE-SVC-"))
            .then_some(())
    })
    .await;
    ip
}

/// A HealthCheck running `probity check NAME` (this build's binary) with `env`.
fn builtin(
    ns: &str,
    name: &str,
    check_name: &str,
    env: serde_json::Value,
) -> probity::api::HealthCheck {
    let mut hc = check(
        ns,
        name,
        &format!(
            "  runInterval: 1h\n  timeout: 30s\n{}",
            check_pod(&["probity", "check", check_name], "")
        ),
    );
    let mut spec = hc.spec.pod_spec.clone().unwrap();
    spec.spec["containers"][0]["env"] = env;
    hc.spec.pod_spec = Some(spec);
    hc
}

#[tokio::test]
async fn http_passes_through_a_service_and_fails_naming_the_status() {
    let Some((s, _p)) = solo("probity-check-http").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    let ip = web(c, ns).await;
    let ok = builtin(
        ns,
        "web-ok",
        "http",
        json!([{"name": "CHECK_URL", "value": format!("http://{ip}/")},
               {"name": "COUNT", "value": "3"}, {"name": "EXPECTED_BODY", "value": "healthy"}]),
    );
    let missing = builtin(
        ns,
        "web-404",
        "http",
        json!([{"name": "CHECK_URL", "value": format!("http://{ip}/missing")}]),
    );
    let unset = builtin(ns, "web-unset", "http", json!([]));
    // The passing check first: once it passed, kube-proxy has the Service's rules, so the
    // failures below are the checks' own, not a Service still being programmed.
    create(c, &ok).await;
    let st = runs(c, ns, "web-ok", 1).await;
    create(c, &missing).await;
    create(c, &unset).await;
    assert_eq!(st.last_outcome, Some(Outcome::Success), "{:?}", st.errors);
    let st = runs(c, ns, "web-404", 1).await;
    assert_eq!(st.last_outcome, Some(Outcome::Failure));
    assert_eq!(
        st.errors,
        vec![
            format!("GET http://{ip}/missing: 0 of 1 requests passed, 100% needed"),
            "status 404, expected 200".to_string()
        ]
    );
    let st = runs(c, ns, "web-unset", 1).await;
    assert_eq!(st.last_outcome, Some(Outcome::Failure));
    assert_eq!(
        st.errors,
        vec!["CHECK_URL is not set: the URL to request".to_string()]
    );
}

#[tokio::test]
async fn network_reaches_a_service_and_unreachable_means_refused_not_any_error() {
    let Some((s, _p)) = solo("probity-check-network").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    let ip = web(c, ns).await;
    let pod_ip = Api::<Pod>::namespaced(c.clone(), ns)
        .get("web")
        .await
        .unwrap()
        .status
        .unwrap()
        .pod_ip
        .unwrap();
    let target = |t: String, unreachable: &str| {
        json!([{"name": "CONNECTION_TARGET", "value": t},
               {"name": "CONNECTION_TARGET_UNREACHABLE", "value": unreachable},
               {"name": "CONNECTION_TIMEOUT", "value": "5s"}])
    };
    let cases = [
        ("svc", target(format!("tcp://{ip}:80"), "false")),
        ("closed-port", target(format!("tcp://{pod_ip}:9"), "true")),
        ("svc-must-not", target(format!("tcp://{ip}:80"), "true")),
        ("typo", target(format!("tcp//{ip}:80"), "true")),
    ];
    // "svc" first: once it reached the Service, kube-proxy has its rules, and "svc-must-not"
    // cannot pass just because the Service was not programmed yet (found by a flaky run).
    let [first, rest @ ..] = cases;
    create(c, &builtin(ns, first.0, "network", first.1)).await;
    runs(c, ns, first.0, 1).await;
    for (name, env) in rest {
        create(c, &builtin(ns, name, "network", env)).await;
    }
    for name in ["svc", "closed-port"] {
        let st = runs(c, ns, name, 1).await;
        assert_eq!(
            st.last_outcome,
            Some(Outcome::Success),
            "{name}: {:?}",
            st.errors
        );
    }
    let st = runs(c, ns, "svc-must-not", 1).await;
    assert_eq!(
        st.errors,
        vec![format!(
            "tcp://{ip}:80 is reachable, and CONNECTION_TARGET_UNREACHABLE says it must not be"
        )]
    );
    // A typo is not "unreachable": it fails, naming the variable.
    let st = runs(c, ns, "typo", 1).await;
    assert_eq!(st.last_outcome, Some(Outcome::Failure));
    assert!(
        st.errors[0].starts_with("CONNECTION_TARGET=\"tcp//"),
        "{:?}",
        st.errors
    );
}

/// The namespace's default ServiceAccount may list its pods (what the bundled manifests grant).
fn grant_pod_list(ns: &str) {
    kubectl_apply(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: pods, namespace: {ns}}}\nrules: [{{apiGroups: [\"\"], resources: [pods], verbs: [list]}}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: pods, namespace: {ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pods}}\nsubjects: [{{kind: ServiceAccount, name: default, namespace: {ns}}}]\n"
        ));
}

#[tokio::test]
async fn pod_restarts_and_pod_status_name_the_crash_looping_and_the_stuck_pod() {
    let Some((s, _p)) = solo("probity-check-pods").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    grant_pod_list(ns);
    web(c, ns).await;
    // Both checks, looking at this namespace: no restart allowed, no grace period.
    let both = async |suffix: &str| {
        let restarts = json!([{"name": "POD_NAMESPACE", "value": ns},
                              {"name": "MAX_FAILURES_ALLOWED", "value": "0"}]);
        let status = json!([{"name": "TARGET_NAMESPACE", "value": ns},
                            {"name": "GRACE_PERIOD", "value": "0s"}]);
        let r = format!("restarts-{suffix}");
        let st = format!("status-{suffix}");
        create(c, &builtin(ns, &r, "pod-restarts", restarts)).await;
        create(c, &builtin(ns, &st, "pod-status", status)).await;
        (r, st)
    };
    // Green first: only the web pod, Ready, and the check pods themselves (left out).
    let (r, st) = both("ok").await;
    for name in [r, st] {
        let st = runs(c, ns, &name, 1).await;
        assert_eq!(
            st.last_outcome,
            Some(Outcome::Success),
            "{name}: {:?}",
            st.errors
        );
    }

    // A crash-looping pod and one whose image cannot be pulled.
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    for (name, image, cmd) in [
        ("crasher", "docker.io/library/busybox:1.35", "exit 1"),
        ("broken", "registry.example/missing:1", "true"),
    ] {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "main",
                "image": image, "command": ["sh", "-c", cmd]}]}
        }))
        .unwrap();
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    wait("crasher to restart", async || {
        let p = pods.get("crasher").await.ok()?;
        (p.status?.container_statuses?[0].restart_count >= 1).then_some(())
    })
    .await;
    let (restarts, status_check) = both("bad").await;
    let st = runs(c, ns, &restarts, 1).await;
    assert_eq!(st.last_outcome, Some(Outcome::Failure));
    assert!(
        st.errors[0].ends_with(&format!("in namespace {ns} with more than 0 restarts"))
            && st.errors[1].starts_with(&format!("{ns}/crasher: container main restarted "))
            && st.errors[1].contains("(last: exit code 1, Error)"),
        "{:?}",
        st.errors
    );
    let st = runs(c, ns, &status_check, 1).await;
    assert_eq!(st.last_outcome, Some(Outcome::Failure));
    let all = st.errors.join("\n");
    assert!(
        all.contains(&format!("{ns}/broken: Pending (ErrImagePull)"))
            || all.contains(&format!("{ns}/broken: Pending (ImagePullBackOff)")),
        "{all}"
    );
    assert!(!all.contains("/web:"), "the Ready pod is not named: {all}");
}

/// The check pods of `ns` (its default ServiceAccount) may list resource quotas everywhere.
fn grant_quota_list(ns: &str) {
    kubectl_apply(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: quota-list-{ns}}}\nrules: [{{apiGroups: [\"\"], resources: [resourcequotas], verbs: [list]}}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: quota-list-{ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: quota-list-{ns}}}\nsubjects: [{{kind: ServiceAccount, name: default, namespace: {ns}}}]\n"
        ));
}

#[tokio::test]
async fn resource_quota_names_the_quota_at_its_limit_and_skips_a_zero_limit() {
    let Some((s, _p)) = solo("probity-check-quota").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    grant_quota_list(ns);
    // The quota's namespace holds the pods it counts; the check pods run elsewhere.
    let target = crate::testkube::fresh_namespace(c, "probity-quota-target").await;
    let quota: k8s_openapi::api::core::v1::ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "small"},
        "spec": {"hard": {"pods": "2", "services": "10", "configmaps": "0"}}
    }))
    .unwrap();
    Api::namespaced(c.clone(), &target)
        .create(&PostParams::default(), &quota)
        .await
        .unwrap();
    let env =
        json!([{"name": "WHITELIST", "value": target}, {"name": "THRESHOLD", "value": "0.95"}]);
    create(c, &builtin(ns, "quota-ok", "resource-quota", env.clone())).await;
    let st = runs(c, ns, "quota-ok", 1).await;
    assert_eq!(st.last_outcome, Some(Outcome::Success), "{:?}", st.errors);

    let pods: Api<Pod> = Api::namespaced(c.clone(), &target);
    for name in ["a", "b"] {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "main",
                "image": "docker.io/library/busybox:1.35", "command": ["sleep", "3600"]}]}
        }))
        .unwrap();
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> =
        Api::namespaced(c.clone(), &target);
    wait("the quota to count both pods", async || {
        let q = quotas.get("small").await.ok()?;
        let used = q.status?.used?;
        (used.get("pods")?.0 == "2").then_some(())
    })
    .await;
    create(c, &builtin(ns, "quota-full", "resource-quota", env)).await;
    let st = runs(c, ns, "quota-full", 1).await;
    assert_eq!(
        st.errors,
        vec![
            "1 quota limits at or above 95% use".to_string(),
            format!("{target}/small: pods 2 of 2 (100%)")
        ]
    );
}
