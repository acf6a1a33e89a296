//! deploy/ applies to the real API server, and probity runs checks with nothing but the
//! ServiceAccount's permissions from it (least privilege that is enough).

use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::config::Kubeconfig;
use probity::api::{HealthCheck, Outcome};

use crate::backend::setup;
use crate::common::{free_addr, Probity};
use crate::testkube::{check, reporting_check};

#[tokio::test]
async fn deploy_applies_and_its_rbac_is_enough_to_run_checks() {
    let Some(s) = setup("probity-rbac").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    let admin = std::env::var("PROBITY_TEST_KUBECONFIG").unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("kubectl")
        .args(["apply", "-k", &format!("{root}/deploy")])
        .env("KUBECONFIG", &admin)
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl apply -k deploy/: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("kubectl")
        .args(["kustomize", &format!("{root}/deploy/extras")])
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "deploy/extras renders: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let d = Api::<Deployment>::namespaced(c.clone(), "probity")
        .get("probity")
        .await
        .unwrap();
    assert_eq!(d.spec.replicas, Some(2));
    let svc = Api::<Service>::namespaced(c.clone(), "probity")
        .get("probity")
        .await
        .unwrap();
    let spec = svc.spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.ports.unwrap()[0].port, 80);

    // The ServiceAccount's token, from the token controller.
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "probity");
    let token = super_wait(async || {
        let list = secrets.list(&Default::default()).await.unwrap().items;
        list.into_iter().find_map(|s| {
            let for_sa = s
                .metadata
                .annotations
                .as_ref()?
                .get("kubernetes.io/service-account.name")?
                == "probity";
            let t = s.data.as_ref()?.get("token")?;
            for_sa.then(|| String::from_utf8(t.0.clone()).unwrap())
        })
    })
    .await;
    let kc = Kubeconfig::read_from(&admin).unwrap();
    let cluster = kc.clusters[0].cluster.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster: {{server: \"{}\", certificate-authority: \"{}\"}}\nusers:\n- name: sa\n  user: {{token: \"{token}\"}}\ncontexts:\n- name: sa\n  context: {{cluster: t, user: sa}}\ncurrent-context: sa\n",
            cluster.server.unwrap(),
            cluster.certificate_authority.unwrap()
        ),
    )
    .unwrap();

    let addr = free_addr();
    let args: Vec<String> = [
        "serve",
        "--kubernetes",
        "--namespace",
        ns,
        "--listen-address",
        &addr,
        "--identity",
        "sa-replica",
        "--report-url",
        &format!("http://{addr}"),
    ]
    .map(String::from)
    .to_vec();
    let p = Probity::spawn(
        &args,
        &[
            ("KUBECONFIG", path.to_str().unwrap()),
            ("POD_NAMESPACE", "probity"),
        ],
    );
    p.wait_for("the lease in namespace probity", |d| {
        d["CurrentMaster"] == "sa-replica"
    })
    .await;
    let hc: HealthCheck = reporting_check(ns, "rbac", "  runInterval: 1h\n");
    let st = first_run(c, &hc).await;
    assert_eq!(st.last_outcome, Some(Outcome::Success), "{:?}", st.errors);

    // An exec probe under the same token: the WebSocket exec is authorized as `get` on pods/exec
    // (SPDY's POST as `create`). With no kubelet here the request cannot reach a container, so
    // the API server's own answer ("does not have a host assigned") is what passing RBAC looks
    // like; a 403 is the failure this guards against.
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let target: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "target", "labels": {"app": "target"}},
        "spec": {"containers": [{"name": "main", "image": "local/target:1"}]}
    }))
    .unwrap();
    pods.create(&Default::default(), &target).await.unwrap();
    pods.patch_status(
        "target",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
    let hc = check(
        ns,
        "rbac-exec",
        "  runInterval: 1h\n  probe:\n    exec: {command: [\"true\"], podSelector: {app: target}}\n",
    );
    let st = first_run(c, &hc).await;
    let msg = st.history[0].errors.join("; ");
    assert!(
        !msg.contains("forbidden"),
        "RBAC refused the exec probe: {msg}"
    );
    assert!(
        msg.contains("does not have a host assigned"),
        "the exec request did not reach the API server's handler: {msg}"
    );

    let log = p.log.lock().unwrap().join("\n");
    assert!(!log.contains("forbidden"), "a request was refused: {log}");
}

/// Creates the check and waits for the status of its first finished run.
async fn first_run(c: &kube::Client, hc: &HealthCheck) -> probity::api::HealthCheckStatus {
    let api = Api::<HealthCheck>::namespaced(c.clone(), hc.metadata.namespace.as_deref().unwrap());
    api.create(&Default::default(), hc).await.unwrap();
    let name = hc.metadata.name.as_deref().unwrap();
    super_wait(async || {
        let st = api.get(name).await.ok()?.status?;
        (!st.history.is_empty()).then_some(st)
    })
    .await
}

async fn super_wait<T>(mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < crate::common::PATIENCE, "timed out");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
