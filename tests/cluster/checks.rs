//! The bundled checks (`probity check NAME`, checks/cluster/) on the real node: each green, and
//! broken on purpose with a message that names the cause.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, PostParams};
use probity::api::Outcome;
use serde_json::json;

use crate::backend::{create, runs, solo, status, wait, wait_running, wait_up_to};
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
    builtin_with(ns, name, check_name, env, "30s")
}

/// [`builtin`] with its own timeout.
fn builtin_with(
    ns: &str,
    name: &str,
    check_name: &str,
    env: serde_json::Value,
    timeout: &str,
) -> probity::api::HealthCheck {
    let mut hc = check(
        ns,
        name,
        &format!(
            "  runInterval: 1h\n  timeout: {timeout}\n{}",
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

/// The namespace's default ServiceAccount may do anything: these tests are about the checks'
/// behaviour; the bundled manifests' least-privilege RBAC is what tests/cluster_bundled.rs runs.
fn grant_admin(ns: &str) {
    kubectl_apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: admin-{ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}}\nsubjects: [{{kind: ServiceAccount, name: default, namespace: {ns}}}]\n"
    ));
}

fn assert_ok(st: &probity::api::HealthCheckStatus, name: &str) {
    assert_eq!(
        st.last_outcome,
        Some(Outcome::Success),
        "{name}: {:?}",
        st.errors
    );
}

/// The objects in `ns` that a workload check with base name `base` created and left.
fn workload_left(ns: &str, base: &str) -> String {
    kubectl(&[
        "-n",
        ns,
        "get",
        "deployments,daemonsets,services",
        "-l",
        &format!("{}={base}", probity::checks::workload::OWNER_LABEL),
        "-o",
        "name",
    ])
}

/// Waits until what the workload check `base` created is gone.
async fn gone(ns: &str, base: &str) {
    wait_up_to(
        Duration::from_secs(180),
        &format!("{base}'s objects to be deleted"),
        async || workload_left(ns, base).is_empty().then_some(()),
    )
    .await;
}

#[tokio::test]
async fn deployment_rolls_and_answers_an_unpullable_image_is_named_and_nothing_is_left() {
    let Some((s, _p)) = solo("probity-check-deployment").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    grant_admin(ns);
    // What a crashed run left: the next run removes it.
    let leftover: Service = serde_json::from_value(json!({
        "metadata": {"name": "deployment-svc-deadbeef", "labels": {
            probity::checks::workload::OWNER_LABEL: "deployment-deployment",
            probity::checks::workload::RUN_LABEL: "deadbeef"}},
        "spec": {"selector": {"x": "y"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(c.clone(), ns)
        .create(&PostParams::default(), &leftover)
        .await
        .unwrap();
    let ok = builtin_with(
        ns,
        "deploy-ok",
        "deployment",
        json!([{"name": "CHECK_DEPLOYMENT_ROLLING_UPDATE", "value": "true"}]),
        "3m",
    );
    let bad = builtin_with(
        ns,
        "deploy-bad",
        "deployment",
        json!([{"name": "CHECK_IMAGE", "value": "registry.example/unpullable:1"},
               {"name": "CHECK_DEPLOYMENT_NAME", "value": "bad-deployment"},
               {"name": "CHECK_SERVICE_NAME", "value": "bad-svc"}]),
        "45s",
    );
    create(c, &ok).await;
    create(c, &bad).await;
    let st = wait_up_to(
        Duration::from_secs(240),
        "deploy-ok to finish",
        async || {
            let st = status(c, ns, "deploy-ok").await;
            (!st.history.is_empty()).then_some(st)
        },
    )
    .await;
    assert_ok(&st, "deploy-ok");
    // The run and the leftover go. Waited for rather than asserted at once: one CI run (of
    // many) still listed the run's Service right after its OK report, cause not yet found.
    gone(ns, "deployment-deployment").await;

    let st = wait_up_to(
        Duration::from_secs(120),
        "deploy-bad to finish",
        async || {
            let st = status(c, ns, "deploy-bad").await;
            (!st.history.is_empty()).then_some(st)
        },
    )
    .await;
    assert_eq!(st.last_outcome, Some(Outcome::Failure));
    let all = st.errors.join("\n");
    assert!(
        st.errors[0].starts_with(&format!("deployment {ns}/bad-deployment-"))
            && st.errors[0]
                .contains("(registry.example/unpullable:1): 0 of 2 replicas ready after"),
        "{all}"
    );
    assert!(
        all.contains("container web ErrImagePull")
            || all.contains("container web ImagePullBackOff"),
        "{all}"
    );
    // A failed run deleted what it created too (the kubelet may take its time to end pods that
    // never started, and the Deployment waits for them).
    gone(ns, "bad-deployment").await;
}

#[tokio::test]
async fn deployment_cleans_up_when_its_pod_is_deleted_mid_run() {
    let Some((s, _p)) = solo("probity-check-interrupt").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    grant_admin(ns);
    let stuck = builtin_with(
        ns,
        "deploy-stuck",
        "deployment",
        json!([{"name": "CHECK_IMAGE", "value": "registry.example/unpullable:1"},
               {"name": "CHECK_DEPLOYMENT_NAME", "value": "stuck"}]),
        "5m",
    );
    create(c, &stuck).await;
    wait("the check to create its deployment", async || {
        let left = workload_left(ns, "stuck");
        (left.contains("deployment.apps/stuck-") && left.contains("service/deployment-svc-"))
            .then_some(())
    })
    .await;
    // The pod is deleted (as probity does at a run's timeout): SIGTERM, then the grace period.
    kubectl(&[
        "-n",
        ns,
        "delete",
        "pod",
        "-l",
        "healthcheck=deploy-stuck",
        "--wait=false",
    ]);
    gone(ns, "stuck").await;
}

#[tokio::test]
async fn daemonset_is_ready_on_the_node_and_an_unpullable_image_names_the_node() {
    let Some((s, _p)) = solo("probity-check-daemonset").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    grant_admin(ns);
    // The defaults: Kuberhealthy's pause image name (the node has it), every node.
    create(c, &builtin_with(ns, "ds-ok", "daemonset", json!([]), "90s")).await;
    let bad = builtin_with(
        ns,
        "ds-bad",
        "daemonset",
        json!([{"name": "PAUSE_CONTAINER_IMAGE", "value": "registry.example/pause:missing"},
               {"name": "CHECK_DAEMONSET_NAME", "value": "ds-bad"}]),
        "40s",
    );
    create(c, &bad).await;
    let st = runs(c, ns, "ds-ok", 1).await;
    assert_ok(&st, "ds-ok");
    assert_eq!(workload_left(ns, "daemonset"), "");
    let st = runs(c, ns, "ds-bad", 1).await;
    assert_eq!(st.last_outcome, Some(Outcome::Failure));
    let node = crate::testkube::cluster_env("PROBITY_TEST_NODE").unwrap_or("probity-node".into());
    assert!(
        st.errors[0].starts_with(&format!("daemonset {ns}/ds-bad-"))
            && st.errors[0]
                .contains("(registry.example/pause:missing): no Ready pod on 1 of 1 nodes after"),
        "{:?}",
        st.errors
    );
    assert!(
        st.errors[1].starts_with(&format!("node {node}: pod {ns}/ds-bad-"))
            && (st.errors[1].contains("ErrImagePull") || st.errors[1].contains("ImagePullBackOff")),
        "{:?}",
        st.errors
    );
    gone(ns, "ds-bad").await;
}

#[tokio::test]
async fn dns_resolves_through_the_cluster_dns_and_names_the_server_that_failed() {
    let Some((s, _p)) = solo("probity-check-dns").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    grant_admin(ns);
    // A DNS "Service" of two endpoints: the cluster's DNS server, and the same node on a port
    // where nothing answers (one bad replica behind a Service).
    kubectl_apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: fake-dns, namespace: {ns}, labels: {{app: fake-dns}}}}\nspec: {{ports: [{{name: dns, port: 53, protocol: UDP}}]}}\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: fake-dns, namespace: {ns}, labels: {{app: fake-dns}}}}\nsubsets:\n- addresses: [{{ip: 10.201.0.2}}]\n  ports: [{{name: dns, port: 53, protocol: UDP}}]\n- addresses: [{{ip: 10.201.0.2}}]\n  ports: [{{name: dns, port: 54, protocol: UDP}}]\n"
    ));
    let env = |names: &str, selector: &str| {
        json!([{"name": "HOSTNAME", "value": names},
               {"name": "DNS_POD_SELECTOR", "value": selector},
               {"name": "NAMESPACE", "value": if selector.is_empty() { "" } else { ns }}])
    };
    create(
        c,
        &builtin(
            ns,
            "dns-ok",
            "dns",
            env("kubernetes.default,external.probity.test", ""),
        ),
    )
    .await;
    create(c, &builtin(ns, "dns-nx", "dns", env("no-such-service", ""))).await;
    create(
        c,
        &builtin(
            ns,
            "dns-endpoints",
            "dns",
            env("kubernetes.default", "app=fake-dns"),
        ),
    )
    .await;
    assert_ok(&runs(c, ns, "dns-ok", 1).await, "dns-ok");
    let st = runs(c, ns, "dns-nx", 1).await;
    assert_eq!(
        st.errors,
        vec![format!(
            "no-such-service: NXDOMAIN from 10.0.0.10:53 (tried no-such-service.{ns}.svc.cluster.local, no-such-service.svc.cluster.local, no-such-service.cluster.local, no-such-service)"
        )]
    );
    let st = runs(c, ns, "dns-endpoints", 1).await;
    assert_eq!(
        st.errors,
        vec![format!(
            "kubernetes.default: refused (nothing listens there) from 10.201.0.2:54 (an endpoint of {ns}/app=fake-dns)"
        )]
    );
}

#[tokio::test]
async fn tls_checks_the_api_servers_chain_and_names_what_expires_and_the_unknown_issuer() {
    let Some((s, _p)) = solo("probity-check-tls").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    let ca = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
    let env = |days: &str, bundle: &str| {
        json!([{"name": "DOMAIN_NAME", "value": "kubernetes.default.svc"},
               {"name": "DAYS", "value": days}, {"name": "CA_BUNDLE", "value": bundle}])
    };
    create(c, &builtin(ns, "tls-ok", "tls", env("7", ca))).await;
    // The test cluster's certificates live 30 days (scripts/kube-up.sh).
    create(c, &builtin(ns, "tls-soon", "tls", env("60", ca))).await;
    create(c, &builtin(ns, "tls-unknown", "tls", env("7", ""))).await;
    assert_ok(&runs(c, ns, "tls-ok", 1).await, "tls-ok");
    let st = runs(c, ns, "tls-soon", 1).await;
    assert_eq!(st.errors.len(), 2, "{:?}", st.errors);
    assert!(
        st.errors[0]
            .starts_with("kubernetes.default.svc:443 presents \"kube-apiserver\", which expires ")
            && st.errors[0].ends_with("(DAYS=60)"),
        "{:?}",
        st.errors
    );
    assert!(
        st.errors[1].starts_with(&format!("CA_BUNDLE {ca} holds \"ca\", which expires ")),
        "{:?}",
        st.errors
    );
    let st = runs(c, ns, "tls-unknown", 1).await;
    assert_eq!(
        st.errors,
        vec!["TLS handshake with kubernetes.default.svc:443: invalid peer certificate: UnknownIssuer".to_string()]
    );
}

/// A CronJob that runs every minute in `ns`.
fn every_minute(ns: &str, name: &str) {
    kubectl_apply(&format!(
        "apiVersion: batch/v1beta1\nkind: CronJob\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          terminationGracePeriodSeconds: 0\n          containers: [{{name: main, image: 'docker.io/library/busybox:1.35', command: ['true']}}]\n"
    ));
}

#[tokio::test]
async fn cronjob_passes_on_schedule_and_names_one_whose_jobs_a_quota_forbids() {
    let Some((s, _p)) = solo("probity-check-cronjob").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    grant_admin(ns);
    // The broken one first, in its own namespace: a quota of zero Jobs, so the controller
    // cannot start any and the schedule goes by.
    let target = crate::testkube::fresh_namespace(c, "probity-cron-target").await;
    kubectl_apply(&format!(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {{name: no-jobs, namespace: {target}}}\nspec: {{hard: {{count/jobs.batch: '0'}}}}\n"
    ));
    every_minute(&target, "blocked");
    every_minute(ns, "healthy");
    let created = chrono::Utc::now();
    wait_up_to(
        Duration::from_secs(150),
        "the healthy CronJob's first job",
        async || {
            let out = kubectl(&[
                "-n",
                ns,
                "get",
                "cronjob",
                "healthy",
                "-o",
                "jsonpath={.status.lastScheduleTime}",
            ]);
            (!out.trim().is_empty()).then_some(())
        },
    )
    .await;
    let env =
        |n: &str| json!([{"name": "NAMESPACE", "value": n}, {"name": "TOLERANCE", "value": "30s"}]);
    create(c, &builtin(ns, "cron-ok", "cronjob", env(ns))).await;
    assert_ok(&runs(c, ns, "cron-ok", 1).await, "cron-ok");

    // The first minute boundary after the blocked CronJob was created, plus the tolerance.
    let fired = created.timestamp() / 60 * 60 + 60;
    wait_up_to(
        Duration::from_secs(150),
        "the blocked CronJob's schedule to pass",
        async || (chrono::Utc::now().timestamp() > fired + 35).then_some(()),
    )
    .await;
    create(c, &builtin(ns, "cron-missed", "cronjob", env(&target))).await;
    let st = runs(c, ns, "cron-missed", 1).await;
    assert_eq!(st.last_outcome, Some(Outcome::Failure));
    assert_eq!(
        st.errors[0], "1 CronJobs missed their schedule",
        "{:?}",
        st.errors
    );
    assert!(
        st.errors[1].starts_with(&format!(
            "{target}/blocked: schedule \"* * * * *\" fired at "
        )) && st.errors[1].ends_with("but it has never scheduled a job"),
        "{:?}",
        st.errors
    );
}
