//! `probity serve --kubernetes` against the real API server, with check pods run by the real
//! node (kubelet, containerd, runc): real pulls, exit codes, deadlines and deletions.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::Client;
use probity::api::{HealthCheck, HealthCheckStatus, Outcome};
use serde_json::Value;

use crate::common::{Probity, PATIENCE};
use crate::testkube::{
    check, check_pod, client, fresh_namespace, install_crd, pod_reachable_addr, serve_args,
};

pub struct Setup {
    pub client: Client,
    pub ns: String,
}

/// A fresh namespace named after `base` (so reruns against one API server do not collide), with
/// the CRD installed.
pub async fn setup(base: &str) -> Option<Setup> {
    let client = client().await?;
    install_crd(&client).await;
    let ns = fresh_namespace(&client, base).await;
    Some(Setup { client, ns })
}

/// A replica of probity for namespace `ns`, listening on `listen`, telling pods to report to
/// `report` (the test's stand-in for the Service).
pub fn replica(ns: &str, identity: &str, listen: &str, report: &str) -> Probity {
    replica_with(ns, identity, listen, report, &[])
}

pub fn replica_with(
    ns: &str,
    identity: &str,
    listen: &str,
    report: &str,
    extra: &[&str],
) -> Probity {
    let kubeconfig = std::env::var("PROBITY_TEST_KUBECONFIG").unwrap();
    let mut args = serve_args(ns, identity, listen, report);
    args.extend(extra.iter().map(|s| s.to_string()));
    Probity::spawn(&args, &[("KUBECONFIG", kubeconfig.as_str())])
}

pub async fn wait<T>(what: &str, f: impl AsyncFnMut() -> Option<T>) -> T {
    wait_up_to(PATIENCE * 2, what, f).await
}

/// [`wait`] for what takes longer than most: a rollout, a cron schedule's next minute.
pub use crate::common::wait_up_to;

/// A namespace with one replica, "solo", that leads and that its pods report to.
pub async fn solo(base: &str) -> Option<(Setup, Probity)> {
    let s = setup(base).await?;
    let addr = pod_reachable_addr();
    let p = replica(&s.ns, "solo", &addr, &addr);
    leader_is(&p, "solo").await;
    Some((s, p))
}

pub async fn leader_is(p: &Probity, who: &str) {
    p.wait_for(&format!("{who} to lead"), |d| d["CurrentMaster"] == who)
        .await;
}

/// A check whose pod runs `script` under /bin/sh, with probity's `report` on the PATH.
fn sh_check(ns: &str, name: &str, extra: &str, script: &str) -> HealthCheck {
    sh_check_with(ns, name, extra, script, "")
}

/// [`sh_check`] with more pod spec lines (indented for `spec:`).
fn sh_check_with(ns: &str, name: &str, extra: &str, script: &str, pod: &str) -> HealthCheck {
    check(
        ns,
        name,
        &format!("{extra}{}", check_pod(&["/bin/sh", "-c", script], pod)),
    )
}

/// A script that waits `secs` and ends at once on SIGTERM, as a well-behaved check does (a shell
/// as PID 1 ignores SIGTERM, so its pod would take the whole grace period to go).
fn sleeping(secs: u32) -> String {
    format!("trap 'exit 143' TERM; sleep {secs} & wait")
}

pub async fn create(client: &Client, hc: &HealthCheck) {
    let api: Api<HealthCheck> =
        Api::namespaced(client.clone(), hc.metadata.namespace.as_deref().unwrap());
    api.create(&PostParams::default(), hc)
        .await
        .expect("create the check");
}

/// Waits until pod `name` in `ns` is Running.
pub async fn wait_running(c: &Client, ns: &str, name: &str) {
    let api: Api<Pod> = Api::namespaced(c.clone(), ns);
    wait(&format!("pod {ns}/{name} Running"), async || {
        let p = api.get(name).await.ok()?;
        (p.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
}

pub async fn status(client: &Client, ns: &str, name: &str) -> HealthCheckStatus {
    let api: Api<HealthCheck> = Api::namespaced(client.clone(), ns);
    api.get(name).await.unwrap().status.unwrap_or_default()
}

/// Waits until the check's stored status has `n` finished runs, and returns it.
pub async fn runs(client: &Client, ns: &str, name: &str, n: usize) -> HealthCheckStatus {
    wait(&format!("{n} runs of {ns}/{name}"), async || {
        let st = status(client, ns, name).await;
        (st.history.len() >= n).then_some(st)
    })
    .await
}

pub async fn pods(client: &Client, ns: &str, check: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels(&format!("healthcheck={check}")))
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn runs_end_in_the_outcome_their_pods_show_with_messages_naming_the_cause() {
    let Some((s, p)) = solo("probity-outcomes").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    let every = "  runInterval: 1h\n  timeout: 20s\n";
    create(c, &sh_check(ns, "ok", every, "probity report --ok")).await;
    create(
        c,
        &sh_check(ns, "failing", every, "probity report --error 'dns is down'"),
    )
    .await;
    create(c, &sh_check(ns, "crash", every, "echo boom; exit 3")).await;
    create(
        c,
        &sh_check(
            ns,
            "slow",
            "  runInterval: 1h\n  timeout: 2s\n",
            &sleeping(60),
        ),
    )
    .await;
    // A real pull of an image that exists nowhere (the node has no route off this machine).
    let mut image = sh_check(ns, "image", every, "true");
    let mut spec = image.spec.pod_spec.clone().unwrap();
    spec.spec["containers"][0]["image"] = "registry.example/unpullable:1".into();
    image.spec.pod_spec = Some(spec);
    create(c, &image).await;
    // No node has this label: the scheduler says so.
    let stuck = sh_check_with(
        ns,
        "stuck",
        "  runInterval: 1h\n  timeout: 3s\n",
        "true",
        "      nodeSelector: {probity.test/no-such-node: \"true\"}\n",
    );
    create(c, &stuck).await;
    create(
        c,
        &check(
            ns,
            "invalid",
            "  runInterval: banana\n  podSpec: {spec: {containers: [{name: c, image: i}]}}\n",
        ),
    )
    .await;
    // The slow run's credential, as whoever can read its pod sees it (its status does not show it).
    let slow_pod = wait("the slow pod", async || pods(c, ns, "slow").await.pop()).await;
    let slow_credential = credential(&slow_pod);

    let st = runs(c, ns, "ok", 1).await;
    assert_eq!((st.ok, st.last_outcome), (true, Some(Outcome::Success)));
    assert!(st.run_duration > 0, "the real duration is recorded");
    assert_eq!(st.authoritative_pod, "solo");

    let st = runs(c, ns, "failing", 1).await;
    assert_eq!(st.last_outcome, Some(Outcome::Failure));
    assert_eq!(st.errors, vec!["dns is down".to_string()]);
    assert_eq!(st.consecutive_failures, 1, "kept by the schema, not pruned");

    let st = runs(c, ns, "crash", 1).await;
    assert_eq!(st.last_outcome, Some(Outcome::Crash));
    // Its pod is retained (failed pods are kept): the check page shows its log, read through
    // the API server.
    let logs = p.get_json(&format!("/api/checks/{ns}/crash/logs")).await;
    let first = &logs["logs"][0];
    assert!(
        first["source"].as_str().unwrap().starts_with("pod crash-"),
        "{logs}"
    );
    assert_eq!(first["text"], "boom\n", "{logs}");
    assert_eq!(first["run"], st.history[0].uuid_text().as_str());
    assert!(
        st.errors[0].contains("exited with code 3"),
        "{:?}",
        st.errors
    );

    let st = runs(c, ns, "image", 1).await;
    assert_eq!(st.last_outcome, Some(Outcome::StartFailure));
    assert!(
        st.errors[0].contains("ErrImagePull") && st.errors[0].contains("unpullable"),
        "{:?}",
        st.errors
    );
    // Seen at once, not at the 20s deadline.
    assert!(
        st.history[0].run_duration < 15_000_000_000,
        "{}",
        st.history[0].run_duration
    );

    let st = runs(c, ns, "slow", 1).await;
    assert_eq!(st.last_outcome, Some(Outcome::Timeout));
    assert!(st.errors[0].contains("timeout after 2s"), "{:?}", st.errors);
    assert_eq!(
        st.history[0].uuid_text(),
        run_id(slow_credential.parse().unwrap()).to_string()
    );
    // A report after the deadline is too late (410), and says so.
    let r = reqwest::Client::new()
        .post(p.url(&format!("/check?kh-run-uuid={slow_credential}")))
        .json(&serde_json::json!({"OK": true, "Errors": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 410);
    let st = runs(c, ns, "stuck", 1).await;
    assert_eq!(st.last_outcome, Some(Outcome::Timeout));
    assert!(
        st.errors[0].contains("never scheduled: Unschedulable: 0/1 nodes are available")
            && st.errors[0].contains("node affinity"),
        "{:?}",
        st.errors
    );
    // The kubelet's part (SIGTERM to a shell that ignores it, the grace period, SIGKILL) is slow
    // on this node under load: the 3-minute allowance the other deletion waits have.
    wait_up_to(
        Duration::from_secs(180),
        "the timed-out pod to be deleted",
        async || pods(c, ns, "slow").await.is_empty().then_some(()),
    )
    .await;

    let st = wait("the Invalid condition", async || {
        let st = status(c, ns, "invalid").await;
        st.condition("Invalid")
            .is_some_and(|c| c.status == "True")
            .then_some(st)
    })
    .await;
    assert!(!st.ok);
    assert!(st.errors[0].contains("runInterval"), "{:?}", st.errors);

    // The pod of a run: labels, owner, restart policy, deadline, the KH_* variables.
    let pod = pods(c, ns, "ok").await.remove(0);
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels["healthcheck"], "ok");
    assert_eq!(labels["kh-run-uuid"], st_uuid(&status(c, ns, "ok").await));
    let owner = &pod.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("HealthCheck", Some(true))
    );
    let spec = pod.spec.unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.active_deadline_seconds, Some(20));
    let env: Vec<String> = spec.containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| e.name.clone())
        .collect();
    for v in [
        "KH_REPORTING_URL",
        "KH_RUN_UUID",
        "KH_CHECK_RUN_DEADLINE",
        "KH_POD_NAMESPACE",
    ] {
        assert!(env.contains(&v.to_string()), "{v} in {env:?}");
    }

    // Events: the invalid spec and the failed runs, none for the success.
    let events: Api<KubeEvent> = Api::namespaced(c.clone(), ns);
    let evs = wait("events", async || {
        let evs = events.list(&ListParams::default()).await.unwrap().items;
        let reasons: Vec<String> = evs.iter().filter_map(|e| e.reason.clone()).collect();
        (reasons.iter().any(|r| r == "InvalidSpec") && reasons.iter().any(|r| r == "RunTimeout"))
            .then_some(evs)
    })
    .await;
    let about = |name: &str| {
        evs.iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .count()
    };
    assert_eq!(about("ok"), 0, "no event for a success");
    assert!(about("failing") >= 1 && about("crash") >= 1);

    // /json serves it all from the watch.
    let doc = p.json().await;
    assert_eq!(doc["CheckDetails"][format!("{ns}/ok")]["OK"], true);
    assert_eq!(doc["CheckDetails"][format!("{ns}/failing")]["OK"], false);
    assert_eq!(doc["OK"], false);
}

/// A run's credential: its pod's `KH_RUN_UUID`.
fn credential(pod: &Pod) -> String {
    let spec = pod.spec.as_ref().unwrap();
    let env = spec.containers[0].env.iter().flatten();
    let found = env.into_iter().find(|e| e.name == "KH_RUN_UUID");
    found.and_then(|e| e.value.clone()).unwrap()
}

fn st_uuid(st: &HealthCheckStatus) -> String {
    st.history[0].uuid_text()
}

#[tokio::test]
async fn a_pod_deleted_mid_run_ends_the_run_and_reports_are_taken_once() {
    let Some((s, p)) = solo("probity-deleted").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    create(
        c,
        &sh_check(
            ns,
            "victim",
            "  runInterval: 1h\n  timeout: 60s\n",
            &sleeping(60),
        ),
    )
    .await;
    let pod = wait("the pod", async || pods(c, ns, "victim").await.pop()).await;
    let podname = pod.metadata.name.clone().unwrap();
    let uuid = credential(&pod);
    Api::<Pod>::namespaced(c.clone(), ns)
        .delete(&podname, &DeleteParams::default())
        .await
        .unwrap();
    let st = runs(c, ns, "victim", 1).await;
    assert_eq!(st.last_outcome, Some(Outcome::Crash));
    assert!(
        st.errors[0].contains("deleted before it reported") && st.errors[0].contains(&podname),
        "{:?}",
        st.errors
    );
    // A report for that run now is refused for good (400), naming why.
    let r = reqwest::Client::new()
        .post(p.url(&format!("/check?kh-run-uuid={uuid}")))
        .json(&serde_json::json!({"OK": true, "Errors": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // A check that reports twice (a retry: answered 200, counted once), then changes its mind
    // (refused).
    create(
        c,
        &sh_check(
            ns,
            "twice",
            "  runInterval: 1h\n",
            "probity report --ok && probity report --ok && ! probity report --error 'changed my mind'",
        ),
    )
    .await;
    let st = runs(c, ns, "twice", 1).await;
    assert_eq!((st.success_count, st.failure_count), (1, 0));
    // Its pod exited 0 only because the retry was accepted and the other verdict refused.
    let done = wait("the pod to finish", async || {
        pods(c, ns, "twice")
            .await
            .pop()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"))
    })
    .await;
    assert!(done.metadata.name.is_some());
}

#[tokio::test]
async fn a_kuberhealthy_v3_manifest_runs_unchanged() {
    let Some((s, p)) = solo("probity-v3").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    // reference/kuberhealthy.md's example, as users have it (curl does the report).
    let manifest = format!(
        r#"apiVersion: kuberhealthy.github.io/v2
kind: HealthCheck
metadata: {{name: example-check, namespace: {ns}}}
spec:
  runInterval: 10m
  timeout: 2m
  podSpec:
    spec:
      containers:
        - name: check
          image: docker.io/curlimages/curl:8.5.0
          command: ["/bin/sh", "-c"]
          args: ['curl -s -X POST -H "kh-run-uuid: $KH_RUN_UUID" -H "Content-Type: application/json" -d "{{\"OK\":true,\"Errors\":[]}}" "$KH_REPORTING_URL"']
      restartPolicy: Never
"#
    );
    let hc = probity::api::load::parse_documents(&manifest)
        .unwrap()
        .remove(0)
        .check
        .unwrap();
    create(c, &hc).await;
    let st = runs(c, ns, "example-check", 1).await;
    assert_eq!(st.last_outcome, Some(Outcome::Success), "{:?}", st.errors);
    let doc: Value = p.json().await;
    assert_eq!(
        doc["CheckDetails"][format!("{ns}/example-check")]["OK"],
        true
    );
}

#[tokio::test]
async fn two_replicas_fail_over_without_a_duplicate_run_or_a_lost_report() {
    let Some(s) = setup("probity-failover").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    let (a_addr, b_addr) = (pod_reachable_addr(), pod_reachable_addr());
    // Pods report to b (the stand-in for the Service): a's runs are recorded by a follower.
    let mut a = replica(ns, "replica-a", &a_addr, &b_addr);
    leader_is(&a, "replica-a").await;
    let b = replica(ns, "replica-b", &b_addr, &b_addr);
    leader_is(&b, "replica-a").await;
    let metric = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("kuberhealthy_controller_leader "))
            .map(|l| l.ends_with(" 1"))
    };
    let text = reqwest::get(b.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metric(&text), Some(false));

    // Each run takes 3s, one every 5s.
    create(
        c,
        &sh_check(
            ns,
            "steady",
            "  runInterval: 5s\n  timeout: 20s\n",
            "sleep 3; probity report --ok",
        ),
    )
    .await;
    let before = runs(c, ns, "steady", 2).await;
    assert!(before
        .history
        .iter()
        .all(|h| h.outcome == Some(Outcome::Success)));
    // Kill the leader while a run is in flight.
    wait("a run in flight", async || {
        let st = status(c, ns, "steady").await;
        (!st.current_uuid.is_empty()).then_some(())
    })
    .await;
    let in_flight = status(c, ns, "steady").await.current_uuid;
    let killed = Instant::now();
    a.kill9();
    leader_is(&b, "replica-b").await;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(3 + 3), "took over in {took:?}");
    let text = reqwest::get(b.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metric(&text), Some(true));

    let n = before.history.len() + 3;
    let after = runs(c, ns, "steady", n).await;
    // The run in flight at the kill was adopted and its report kept, not rerun.
    let rec = after
        .history
        .iter()
        .find(|h| h.uuid_text() == in_flight)
        .expect("the run in flight was recorded");
    assert_eq!(rec.outcome, Some(Outcome::Success));
    let mut uuids: Vec<String> = after.history.iter().map(|h| h.uuid_text()).collect();
    uuids.sort();
    uuids.dedup();
    assert_eq!(uuids.len(), after.history.len(), "no run recorded twice");
    assert_eq!(after.success_count as usize, after.history.len());
    // Never two runs at once: each start is at least one run's length after the previous.
    let mut starts: Vec<i64> = after.history.iter().map(|h| h.start_unix).collect();
    starts.sort();
    for w in starts.windows(2) {
        assert!(w[1] - w[0] >= 3, "runs overlapped: {starts:?}");
    }
}

#[tokio::test]
async fn a_manual_run_asked_of_a_follower_is_run_by_the_leader() {
    let Some(s) = setup("probity-manual").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    let (a_addr, b_addr) = (pod_reachable_addr(), pod_reachable_addr());
    let token = ["--run-token", "t0ken"];
    let a = replica_with(ns, "replica-a", &a_addr, &a_addr, &token);
    leader_is(&a, "replica-a").await;
    let b = replica_with(ns, "replica-b", &b_addr, &a_addr, &token);
    leader_is(&b, "replica-a").await;
    create(
        c,
        &sh_check(ns, "hourly", "  runInterval: 1h\n", "probity report --ok"),
    )
    .await;
    runs(c, ns, "hourly", 1).await;
    let post = |token: &'static str| {
        reqwest::Client::new()
            .post(b.url(&format!("/api/run?namespace={ns}&healthcheck=hourly")))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(post("wrong").await.unwrap().status().as_u16(), 401);
    let r = post("t0ken").await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let st = runs(c, ns, "hourly", 2).await;
    assert_eq!(st.success_count, 2);
    assert_eq!(st.authoritative_pod, "replica-a", "the leader ran it");
    // Served once: no third run follows from the same request.
    let r = reqwest::Client::new()
        .post(b.url(&format!("/api/run?namespace={ns}&healthcheck=missing")))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(status(c, ns, "hourly").await.history.len(), 2);
}

#[tokio::test]
async fn probe_checks_run_in_probity_without_a_pod() {
    let Some((s, p)) = solo("probity-probes").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    let spec = format!(
        "  runInterval: 1h\n  probe:\n    httpGet: {{url: \"{}\"}}\n",
        p.url("/healthz")
    );
    create(c, &check(ns, "self", &spec)).await;
    create(
        c,
        &check(
            ns,
            "closed",
            "  runInterval: 1h\n  probe:\n    tcpSocket: {host: 127.0.0.1, port: 1}\n",
        ),
    )
    .await;
    create(
        c,
        &check(
            ns,
            "exec",
            "  runInterval: 1h\n  probe:\n    exec: {command: [\"true\"]}\n",
        ),
    )
    .await;
    let st = runs(c, ns, "self", 1).await;
    assert_eq!(st.last_outcome, Some(Outcome::Success), "{:?}", st.errors);
    let st = runs(c, ns, "closed", 1).await;
    assert_eq!(st.last_outcome, Some(Outcome::Failure));
    // Probe checks flip after 3 failures (Kubernetes' default); the run's errors are in history.
    assert!(st.ok);
    assert!(
        st.history[0].errors[0].contains("connection refused"),
        "{:?}",
        st.history
    );
    assert!(pods(c, ns, "self").await.is_empty() && pods(c, ns, "closed").await.is_empty());
    let st = wait(
        "the exec probe without a selector marked invalid",
        async || {
            let st = status(c, ns, "exec").await;
            st.condition("Invalid")
                .is_some_and(|c| c.status == "True")
                .then_some(st)
        },
    )
    .await;
    assert!(
        st.errors[0].contains("spec.probe.exec.podSelector"),
        "{:?}",
        st.errors
    );

    // exec in a pod, through the API server and the kubelet into a real container: none
    // matches; then a Running pod does, and its command's exit code is the verdict.
    create(
        c,
        &check(
            ns,
            "exec-none",
            "  runInterval: 1h\n  probe:\n    exec: {command: [\"true\"], podSelector: {app: nothing-here}}\n",
        ),
    )
    .await;
    let st = runs(c, ns, "exec-none", 1).await;
    assert_eq!(
        st.history[0].errors,
        vec![format!("no running pod in {ns} matches app=nothing-here")]
    );
    let pods_api: Api<Pod> = Api::namespaced(c.clone(), ns);
    let target: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "target", "labels": {"app": "target"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": "docker.io/library/busybox:1.35",
                "command": ["sh", "-c", "echo target-ready > /tmp/state; exec sleep 3600"]}]
        }
    }))
    .unwrap();
    pods_api
        .create(&PostParams::default(), &target)
        .await
        .unwrap();
    wait_running(c, ns, "target").await;
    create(
        c,
        &check(
            ns,
            "exec-ok",
            "  runInterval: 1h\n  probe:\n    exec: {command: [cat, /tmp/state], podSelector: {app: target}, container: main}\n",
        ),
    )
    .await;
    create(
        c,
        &check(
            ns,
            "exec-fail",
            "  runInterval: 1h\n  failureThreshold: 1\n  probe:\n    exec: {command: [sh, -c, \"echo disk is full; exit 3\"], podSelector: {app: target}}\n",
        ),
    )
    .await;
    let st = runs(c, ns, "exec-ok", 1).await;
    assert_eq!(
        st.last_outcome,
        Some(Outcome::Success),
        "{:?}",
        st.history[0].errors
    );
    let st = runs(c, ns, "exec-fail", 1).await;
    assert_eq!(st.last_outcome, Some(Outcome::Failure));
    assert!(!st.ok, "failureThreshold 1 flips it at once");
    let msg = &st.history[0].errors[0];
    assert!(
        msg.starts_with(&format!("exec in pod {ns}/target: exit code 3")),
        "{msg}"
    );
    assert!(
        msg.contains("disk is full"),
        "the output is in the error: {msg}"
    );
}

#[tokio::test]
async fn a_frozen_leader_is_replaced_and_does_not_schedule_when_it_thaws() {
    let Some(s) = setup("probity-frozen").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    let (a_addr, b_addr) = (pod_reachable_addr(), pod_reachable_addr());
    let a = replica(ns, "replica-a", &a_addr, &b_addr);
    leader_is(&a, "replica-a").await;
    let b = replica(ns, "replica-b", &b_addr, &b_addr);
    leader_is(&b, "replica-a").await;
    create(
        c,
        &sh_check(
            ns,
            "tick",
            "  runInterval: 2s\n  timeout: 10s\n",
            "sleep 1; probity report --ok",
        ),
    )
    .await;
    let before = runs(c, ns, "tick", 2).await.history.len();
    // Frozen past its lease: b takes over; then a wakes with its timers all due at once.
    a.signal(libc::SIGSTOP);
    leader_is(&b, "replica-b").await;
    a.signal(libc::SIGCONT);
    a.wait_for("a to see b lead", |d| d["CurrentMaster"] == "replica-b")
        .await;
    let after = runs(c, ns, "tick", before + 3).await;
    let mut uuids: Vec<String> = after.history.iter().map(|h| h.uuid_text()).collect();
    uuids.sort();
    uuids.dedup();
    assert_eq!(uuids.len(), after.history.len(), "a run recorded twice");
    assert!(
        after
            .history
            .iter()
            .all(|h| h.outcome == Some(Outcome::Success)),
        "{:?}",
        after.history
    );
    let mut starts: Vec<i64> = after.history.iter().map(|h| h.start_unix).collect();
    starts.sort();
    assert!(
        starts.windows(2).all(|w| w[1] - w[0] >= 1),
        "runs overlapped: {starts:?}"
    );
    // a contends again but does not lead while b renews.
    let doc = a.json().await;
    assert_eq!(doc["CurrentMaster"], "replica-b");
}

/// The pod's `activeDeadlineSeconds` is the run's timeout, and the kubelet enforces it on its own:
/// with no probity left to delete the pod, the node ends it at the deadline; the next leader
/// records the run as timed out.
#[tokio::test]
async fn the_kubelet_ends_a_pod_at_its_deadline_when_no_probity_is_left() {
    let Some(s) = setup("probity-deadline").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    let addr = pod_reachable_addr();
    let mut p = replica(ns, "first", &addr, &addr);
    leader_is(&p, "first").await;
    create(
        c,
        &sh_check(
            ns,
            "stuck",
            "  runInterval: 1h\n  timeout: 6s\n",
            &sleeping(600),
        ),
    )
    .await;
    let running =
        |pod: &Pod| pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let pod = wait("the pod Running", async || {
        pods(c, ns, "stuck").await.into_iter().find(running)
    })
    .await;
    assert_eq!(pod.spec.as_ref().unwrap().active_deadline_seconds, Some(6));
    p.kill9();
    let name = pod.metadata.name.clone().unwrap();
    let ended = wait("the kubelet to end the pod", async || {
        let pod = Api::<Pod>::namespaced(c.clone(), ns)
            .get(&name)
            .await
            .ok()?;
        let st = pod.status?;
        (st.phase.as_deref() == Some("Failed")).then_some(st)
    })
    .await;
    assert_eq!(
        ended.reason.as_deref(),
        Some("DeadlineExceeded"),
        "{ended:?}"
    );

    let heir = replica(ns, "heir", &addr, &addr);
    leader_is(&heir, "heir").await;
    let st = runs(c, ns, "stuck", 1).await;
    assert_eq!(st.last_outcome, Some(Outcome::Timeout), "{:?}", st.errors);
}

/// Deleting a HealthCheck takes its pods with it (owner references, the garbage collector);
/// finished pods are kept only as the retention settings say.
#[tokio::test]
async fn pods_are_kept_as_retention_says_and_go_with_their_check() {
    let Some((s, _p)) = solo("probity-retention").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    // Defaults: the last succeeded pod and the last two failed ones.
    create(
        c,
        &sh_check(ns, "good", "  runInterval: 2s\n", "probity report --ok"),
    )
    .await;
    create(c, &sh_check(ns, "bad", "  runInterval: 2s\n", "exit 1")).await;
    runs(c, ns, "good", 4).await;
    runs(c, ns, "bad", 4).await;
    let finished = async |check: &str, phase: &str| {
        let all = pods(c, ns, check).await;
        all.iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase))
            .count()
    };
    wait("retention to reap", async || {
        (finished("good", "Succeeded").await == 1 && finished("bad", "Failed").await == 2)
            .then_some(())
    })
    .await;

    let long = sh_check(
        ns,
        "owned",
        "  runInterval: 1h\n  timeout: 5m\n",
        &sleeping(600),
    );
    create(c, &long).await;
    wait("the owned pod", async || pods(c, ns, "owned").await.pop()).await;
    Api::<HealthCheck>::namespaced(c.clone(), ns)
        .delete("owned", &DeleteParams::default())
        .await
        .unwrap();
    wait("the check's pods to go", async || {
        pods(c, ns, "owned").await.is_empty().then_some(())
    })
    .await;
}

/// Two replicas of namespace `ns`, replica-a leading, that notify a webhook at `base`/hook; the
/// directory of their alerting configuration goes with the last.
async fn notifying_pair(ns: &str, base: &str) -> (Probity, Probity, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::common::alerting_config(
        dir.path(),
        &format!(
            "receivers:\n  - name: hook\n    webhook: {{url: \"{base}/hook\"}}\nroutes:\n  - receiver: hook\n"
        ),
    );
    let alerting = ["--alerting-config", cfg.as_str()];
    let (a_addr, b_addr) = (pod_reachable_addr(), pod_reachable_addr());
    let a = replica_with(ns, "replica-a", &a_addr, &a_addr, &alerting);
    leader_is(&a, "replica-a").await;
    let b = replica_with(ns, "replica-b", &b_addr, &b_addr, &alerting);
    leader_is(&b, "replica-a").await;
    (a, b, dir)
}

/// A probe check's spec: every second, failing at once when `url` does.
fn failing_probe(url: &str) -> String {
    format!(
        "  runInterval: 1s\n  timeout: 5s\n  failureThreshold: 1\n  probe:\n    httpGet: {{url: \"{url}\"}}\n"
    )
}

/// Notifications across a failover: the leader tells a webhook that a check became failing and
/// dies; the next leader, reading what was told from the status, neither tells it again nor
/// misses the recovery. One notification per transition.
#[tokio::test]
async fn one_notification_per_transition_across_a_failover() {
    use crate::common::capture::{Capture, Toggle};
    let Some(s) = setup("probity-notify").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    let (cap, base) = Capture::start(0).await;
    // Probe checks run in probity itself, so a target on loopback will do.
    let target = Toggle::start("127.0.0.1:0", false).await;
    let (mut a, b, _cfg) = notifying_pair(ns, &base).await;
    let spec = failing_probe(&target.url);
    create(c, &check(ns, "flap", &spec)).await;
    cap.wait("the failure told", |c| c.at("hook").len() == 1)
        .await;
    let told = wait("the notification recorded", async || {
        let st = status(c, ns, "flap").await;
        (!st.alerts.is_empty()).then_some(st)
    })
    .await;
    assert_eq!(told.alerts[0].receiver, "hook");
    assert!(told.alerts[0].firing);
    assert_eq!(Some(told.alerts[0].since_unix), told.failing_since_unix);
    a.kill9();
    leader_is(&b, "replica-b").await;
    // b runs the check, still failing, and says nothing of it.
    let seen = status(c, ns, "flap").await.failure_count;
    wait("three failing runs under b", async || {
        (status(c, ns, "flap").await.failure_count >= seen + 3).then_some(())
    })
    .await;
    assert_eq!(cap.at("hook").len(), 1, "{:#?}", cap.all());
    target.set(true);
    cap.wait("the recovery told", |c| c.at("hook").len() == 2)
        .await;
    let seen = status(c, ns, "flap").await.success_count;
    wait("three passing runs under b", async || {
        (status(c, ns, "flap").await.success_count >= seen + 3).then_some(())
    })
    .await;
    let got = cap.at("hook");
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].body["state"], "failing");
    assert_eq!(got[1].body["state"], "resolved");
    assert_eq!(got[0].body["since"], got[1].body["since"], "the same spell");
}

/// The public id of the run whose credential is `credential`.
fn run_id(credential: uuid::Uuid) -> probity::api::RunId {
    let credential: probity::api::RunCredential = credential.to_string().parse().unwrap();
    credential.run_id()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_failing_check_resolves_its_alert_once_across_a_failover() {
    use crate::common::capture::{Capture, Toggle};
    let Some(s) = setup("probity-resolve-delete").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    let (cap, base) = Capture::start(0).await;
    let target = Toggle::start("127.0.0.1:0", false).await;
    let (mut a, b, _cfg) = notifying_pair(ns, &base).await;
    let spec = failing_probe(&target.url);
    create(c, &check(ns, "db", &spec)).await;
    cap.wait("the failure told", |c| c.at("hook").len() == 1)
        .await;
    let api: Api<HealthCheck> = Api::namespaced(c.clone(), ns);
    // The open alert holds the HealthCheck.
    wait("the finalizer", async || {
        let hc = api.get("db").await.unwrap();
        hc.metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f == "probity.dev/resolve-alerts")
            .then_some(())
    })
    .await;
    // The leader dies; the check is deleted while no one leads.
    a.kill9();
    api.delete("db", &Default::default()).await.unwrap();
    let held = api.get("db").await.unwrap();
    assert!(
        held.metadata.deletion_timestamp.is_some(),
        "kept for its alert"
    );
    // The next leader resolves it, once, saying why, and lets the deletion complete.
    leader_is(&b, "replica-b").await;
    cap.wait("the resolve", |c| c.at("hook").len() == 2).await;
    let got = cap.at("hook");
    assert_eq!(got[1].body["state"], "resolved", "{got:#?}");
    assert_eq!(got[1].body["reason"], "the check was deleted");
    assert_eq!(got[0].body["since"], got[1].body["since"], "the same spell");
    wait("the HealthCheck gone", async || {
        matches!(api.get("db").await, Err(kube::Error::Api(e)) if e.code == 404).then_some(())
    })
    .await;
    // Not listed, and nothing more was sent.
    let doc: serde_json::Value = b.json().await;
    assert!(
        doc["CheckDetails"].get(format!("{ns}/db")).is_none(),
        "{doc}"
    );
    assert_eq!(cap.at("hook").len(), 2, "{:#?}", cap.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_window_ends_with_one_notice_across_a_failover() {
    use crate::common::capture::{Capture, Toggle};
    let Some(s) = setup("probity-maintenance").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    let (cap, base) = Capture::start(0).await;
    let target = Toggle::start("127.0.0.1:0", false).await;
    let (mut a, b, _cfg) = notifying_pair(ns, &base).await;
    let until = (chrono::Utc::now() + chrono::Duration::seconds(25))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let spec = failing_probe(&target.url);
    let mut hc = check(ns, "db", &spec);
    hc.metadata.annotations = Some(
        [("probity.dev/maintenance-until".to_string(), until.clone())]
            .into_iter()
            .collect(),
    );
    create(c, &hc).await;
    // Failing, in maintenance: recorded, not told.
    wait("failing runs", async || {
        let st = status(c, ns, "db").await;
        (!st.ok && st.failure_count >= 3).then_some(())
    })
    .await;
    let doc: Value = a.json().await;
    assert_eq!(
        doc["CheckDetails"][format!("{ns}/db")]["Maintenance"],
        format!("probity.dev/maintenance-until until {until}"),
        "{doc}"
    );
    assert!(cap.all().is_empty(), "{:#?}", cap.all());
    // The leader dies inside the window; the next one tells the failure once, at its end.
    a.kill9();
    leader_is(&b, "replica-b").await;
    cap.wait("the notice at the window's end", |c| {
        c.at("hook").len() == 1
    })
    .await;
    let got = cap.at("hook");
    assert_eq!(got[0].body["state"], "failing");
    assert!(chrono::Utc::now() >= chrono::DateTime::parse_from_rfc3339(&until).unwrap());
    let seen = status(c, ns, "db").await.failure_count;
    wait("more failing runs", async || {
        (status(c, ns, "db").await.failure_count >= seen + 3).then_some(())
    })
    .await;
    assert_eq!(cap.at("hook").len(), 1, "{:#?}", cap.all());
}
