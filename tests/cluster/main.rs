//! Against a real kube-apiserver (scripts/kube-up.sh; `.ci/run` starts one and sets
//! PROBITY_TEST_KUBECONFIG). Schema pruning, status subresources and validation are where
//! operators break, so the CRD and the status we write are checked by the real thing.

mod backend;
mod checks;
#[path = "../common/mod.rs"]
mod common;
mod deploy;
mod heartbeat;
mod resources;
mod testkube;

use kube::api::{Api, Patch, PatchParams, PostParams};
use probity::api::aggregate::{DayStats, HourStats};
use probity::api::{
    AlertRecord, Condition, HealthCheck, HealthCheckStatus, Outcome, RunRecord, Transition,
};
use testkube::{client, install_crd, namespace};

fn full_status() -> HealthCheckStatus {
    HealthCheckStatus {
        ok: false,
        errors: vec!["pod \"x\" failed".into()],
        consecutive_failures: 3,
        run_duration: 3_359_431_829,
        namespace: "kh-compat".into(),
        current_uuid: "1d309ed7-4b7a-4fd5-9706-d04f53c9ed30".into(),
        last_run_unix: 1_795_000_000,
        success_count: 10,
        failure_count: 3,
        last_ok_unix: 1_794_999_000,
        last_failure_unix: 1_795_000_010,
        additional_metadata: "meta".into(),
        consecutive_successes: 0,
        next_run_unix: Some(1_795_000_600),
        run_deadline_unix: Some(1_795_000_120),
        authoritative_pod: "probity-0".into(),
        pod_name: "example-check-1d309".into(),
        last_outcome: Some(Outcome::Timeout),
        conditions: vec![Condition {
            type_: "Invalid".into(),
            status: "False".into(),
            reason: "Valid".into(),
            message: String::new(),
            last_transition_time: "2026-11-22T05:00:00+00:00".into(),
        }],
        observed_generation: Some(1),
        history: vec![RunRecord {
            uuid: "1d309ed7-4b7a-4fd5-9706-d04f53c9ed30".parse().ok(),
            start_unix: 1_795_000_000,
            run_duration: 120_000_000_000,
            outcome: Some(Outcome::Timeout),
            cause: Some(probity::api::Cause::Runner),
            errors: vec!["timeout after 2m".into()],
            standing: None,
            timings: vec![probity::api::Timing {
                name: probity::api::TimingName::ColdStartActive,
                ms: 4_200,
            }],
            values: [("queue_depth".to_string(), 12.5)].into(),
        }],
        days: vec![DayStats {
            day: "2026-11-18".parse().unwrap(),
            runs: 1440,
            successes: 1437,
            failures: 1,
            timeouts: 2,
            duration_p50_ms: 171,
            duration_max_ms: 120_000,
            failing_seconds: 180,
            durations: vec![[8, 1200], [9, 237], [33, 3]].into(),
            ..DayStats::default()
        }],
        hours: vec![HourStats {
            hour_unix: 1_794_999_600,
            runs: 60,
            successes: 59,
        }],
        failing_accrued_unix: Some(1_795_000_120),
        failing_since_unix: Some(1_794_999_900),
        alerts: vec![AlertRecord {
            receiver: "oncall".into(),
            since_unix: 1_794_999_900,
            firing: true,
            sent_unix: 1_794_999_902,
            flapping: true,
            degraded: false,
        }],
        transitions: vec![Transition {
            at_unix: 1_794_999_900,
            ok: false,
        }],
        departed: Some(probity::api::Departure {
            reason: "the check was deleted".into(),
            at_unix: 1_795_000_200,
            labels: [("team".to_string(), "db".to_string())].into(),
        }),
        standing: Some(probity::api::Standing::Idle),
        values: [("queue_depth".to_string(), 12.5)].into(),
        warnings: vec!["GET https://shop/: certificate expires in 9 days, under 14 days".into()],
        degraded_since_unix: Some(1_795_000_000),
        last_ping_unix: Some(1_795_000_100),
        ping_started_unix: Some(1_795_000_050),
    }
}

/// A Kuberhealthy v3 manifest, applied unchanged, is accepted; every status field probity writes
/// comes back from the API server (v3 loses `consecutiveFailures` to pruning; we must not).
#[tokio::test]
async fn kuberhealthy_manifest_and_full_status_round_trip() {
    let Some(client) = client().await else { return };
    install_crd(&client).await;
    namespace(&client, "kh-compat").await;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/checks/examples/kuberhealthy-curl.yaml"
    ))
    .unwrap()
    .replace("namespace: kuberhealthy", "namespace: kh-compat");
    let hc = probity::api::load::parse_documents(&text)
        .unwrap()
        .remove(0)
        .check
        .unwrap();
    let api: Api<HealthCheck> = Api::namespaced(client.clone(), "kh-compat");
    let _ = api.delete("example-check", &Default::default()).await;
    let created = api
        .create(&PostParams::default(), &hc)
        .await
        .expect("create the v3 manifest");
    // The pod spec is kept as written (open schema), command and args included.
    assert_eq!(created.spec.pod_spec, hc.spec.pod_spec);

    // A full replace carrying the resourceVersion read: the fenced write the backend will make.
    let status = full_status();
    let mut with_status = created.clone();
    with_status.status = Some(status.clone());
    api.replace_status("example-check", &PostParams::default(), &with_status)
        .await
        .expect("replace the status subresource");
    let back = api.get_status("example-check").await.unwrap();
    assert_eq!(
        back.status,
        Some(status),
        "a status field was pruned or changed by the API server"
    );
}

/// The schema rejects what probity never writes: a wrong type in a status field.
#[tokio::test]
async fn status_schema_is_enforced() {
    let Some(client) = client().await else { return };
    install_crd(&client).await;
    namespace(&client, "kh-schema").await;
    let text = "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {name: typed, namespace: kh-schema}\nspec:\n  probe: {tcpSocket: {host: h, port: 1}}\n";
    let hc = probity::api::load::parse_documents(text)
        .unwrap()
        .remove(0)
        .check
        .unwrap();
    let api: Api<HealthCheck> = Api::namespaced(client.clone(), "kh-schema");
    let _ = api.delete("typed", &Default::default()).await;
    api.create(&PostParams::default(), &hc).await.unwrap();
    let err = api
        .patch_status(
            "typed",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"successCount": "many"}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 422),
        "{err}"
    );
}

/// `probity migrate`'s output of Kuberhealthy v2 manifests applies to the API server as it is:
/// the HealthChecks (the CRD's schema accepts them) and the RBAC passed through.
#[tokio::test]
async fn migrated_kuberhealthy_v2_manifests_apply() {
    let Some(client) = client().await else { return };
    install_crd(&client).await;
    let ns = testkube::fresh_namespace(&client, "kh-migrated").await;
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kuberhealthy-v2"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_probity"))
        .args(["migrate", &format!("{fixtures}/deployment.yaml")])
        .arg(format!("{fixtures}/jobs.yaml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let yaml = String::from_utf8(out.stdout)
        .unwrap()
        .replace("namespace: kuberhealthy", &format!("namespace: {ns}"));
    testkube::kubectl_apply(&yaml);
    let api: Api<HealthCheck> = Api::namespaced(client.clone(), &ns);
    let job = api.get("kh-job-ping").await.unwrap();
    assert_eq!(job.spec.single_run_only, Some(true));
    let dns = api.get("dns-status-internal").await.unwrap();
    assert_eq!(dns.spec.run_interval.as_deref(), Some("2m"));
    let deployment = api.get("deployment").await.unwrap();
    let pod = &deployment.spec.pod_spec.unwrap().spec;
    assert_eq!(
        pod["serviceAccountName"], "deployment-sa",
        "kept, not pruned"
    );
}
