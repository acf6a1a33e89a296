//! The test cluster (scripts/kube-up.sh: a real API server and one real node) from the side of
//! a test: a client from its kubeconfig, the CRD installed and Established, namespaces, the
//! addresses pods reach, and check pods that run this build's probity. Shared by tests/cluster,
//! tests/cluster_restart.rs and benches/cluster.rs (through `#[path]`).
#![allow(dead_code)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use probity::api::crd;

/// The kubeconfig of the test API server, or None (with a note) when there is none; under
/// `.ci/run` (`PROBITY_REQUIRE_TOOLS`) there must be one.
pub fn kubeconfig() -> Option<String> {
    // As `common::available` says it (this file is also used where `common` is not).
    let Ok(path) = std::env::var("PROBITY_TEST_KUBECONFIG") else {
        let how = "scripts/kube-up.sh DIR as root, then PROBITY_TEST_KUBECONFIG=DIR/kubeconfig";
        assert!(
            std::env::var_os("PROBITY_REQUIRE_TOOLS").is_none(),
            "a test cluster is missing ({how}); PROBITY_REQUIRE_TOOLS is set, so this fails instead of skipping"
        );
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "SKIPPED: needs a test cluster ({how})");
        return None;
    };
    Some(path)
}

pub async fn client_from(path: &str) -> Client {
    let kc = Kubeconfig::read_from(path).expect("read the test kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    Client::try_from(config).expect("a client")
}

pub async fn client() -> Option<Client> {
    Some(client_from(&kubeconfig()?).await)
}

pub async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let pp = PatchParams::apply("probity-tests").force();
    crds.patch(
        "healthchecks.kuberhealthy.github.io",
        &pp,
        &Patch::Apply(crd::crd()),
    )
    .await
    .expect("the API server accepts the generated CRD");
    for _ in 0..100 {
        let c = crds
            .get("healthchecks.kuberhealthy.github.io")
            .await
            .unwrap();
        let established = c.status.and_then(|s| s.conditions).is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        if established {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the CRD never became Established");
}

pub async fn namespace(client: &Client, name: &str) {
    let ns: Api<Namespace> = Api::all(client.clone());
    let mut n = Namespace::default();
    n.metadata.name = Some(name.into());
    match ns.create(&PostParams::default(), &n).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create namespace {name}: {e}"),
    }
}

/// A namespace of its own, named after `base`, so runs against one API server do not collide.
pub async fn fresh_namespace(client: &Client, base: &str) -> String {
    let ns = format!("{base}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    namespace(client, &ns).await;
    ns
}

/// A HealthCheck in `ns` with `spec` (YAML lines indented by two spaces).
pub fn check(ns: &str, name: &str, spec: &str) -> probity::api::HealthCheck {
    let text = format!(
        "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
    );
    probity::api::load::parse_documents(&text)
        .unwrap()
        .remove(0)
        .check
        .unwrap()
}

/// Runs kubectl against the test cluster; its stdout, or a panic naming the command and stderr.
pub fn kubectl(args: &[&str]) -> String {
    let out = std::process::Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig().expect("a test cluster"))
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl apply -f` of `yaml` (through a file, as a user applies a manifest).
pub fn kubectl_apply(yaml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifest.yaml");
    std::fs::write(&file, yaml).unwrap();
    kubectl(&["apply", "-f", file.to_str().unwrap()]);
}

/// A value from the cluster's DIR/env (written by kube-up.sh beside the kubeconfig).
pub fn cluster_env(key: &str) -> Option<String> {
    let path = std::path::Path::new(&kubeconfig()?).with_file_name("env");
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim_matches('"').to_string())
}

/// The directory kube-up.sh was given (logs, the node's containerd socket).
pub fn cluster_dir() -> std::path::PathBuf {
    let kc = kubeconfig().expect("a test cluster");
    std::path::Path::new(&kc).parent().unwrap().to_path_buf()
}

/// A free address on the host end of the node's veth: probity replicas the tests run on the
/// host listen there, so check pods can report to them.
pub fn pod_reachable_addr() -> String {
    let ip = cluster_env("PROBITY_TEST_HOST_IP")
        .expect("PROBITY_TEST_HOST_IP in the cluster's env: start it with scripts/kube-up.sh");
    let l = std::net::TcpListener::bind((ip.as_str(), 0)).unwrap();
    l.local_addr().unwrap().to_string()
}

/// The image check pods run in: busybox with glibc, so this build's probity binary, mounted from
/// the host, runs in it (`probity report` is on the PATH).
pub const CHECK_IMAGE: &str = "docker.io/library/busybox:1.35-glibc";

/// The pod spec of a check running `command` in [`CHECK_IMAGE`] with this build's probity at
/// /usr/local/bin/probity (YAML lines indented for `spec:`), plus `extra` pod spec lines.
pub fn check_pod(command: &[&str], extra: &str) -> String {
    let bin = env!("CARGO_BIN_EXE_probity");
    format!(
        "  podSpec:\n    spec:\n      containers:\n      - name: check\n        image: {CHECK_IMAGE}\n        command: {}\n        volumeMounts: [{{name: probity, mountPath: /usr/local/bin/probity, readOnly: true}}]\n      volumes: [{{name: probity, hostPath: {{path: {bin}, type: File}}}}]\n{extra}",
        serde_json::to_string(command).unwrap()
    )
}

/// A check whose pod runs `probity report --ok` (this build's binary), with `spec` besides.
pub fn reporting_check(ns: &str, name: &str, spec: &str) -> probity::api::HealthCheck {
    check(
        ns,
        name,
        &format!("{spec}{}", check_pod(&["probity", "report", "--ok"], "")),
    )
}

/// Lease timings short enough for failover tests, in the documented order.
pub const SHORT_LEASE: [&str; 6] = [
    "--lease-duration",
    "3s",
    "--renew-deadline",
    "2s",
    "--retry-period",
    "500ms",
];

/// `probity serve --kubernetes` arguments for a replica of namespace `ns` (its Lease there too),
/// listening on `listen`, telling pods to report to `report`, with short lease timings.
pub fn serve_args(ns: &str, identity: &str, listen: &str, report: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "serve",
        "--kubernetes",
        "--namespace",
        ns,
        "--lease-namespace",
        ns,
        "--listen-address",
        listen,
        "--identity",
        identity,
    ]
    .map(String::from)
    .to_vec();
    args.extend(["--report-url".into(), format!("http://{report}")]);
    args.extend(SHORT_LEASE.map(String::from));
    args
}

/// The names of the HealthChecks in the manifest `path` (other objects skipped).
pub fn health_check_names(path: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    probity::api::load::parse_documents(&text)
        .unwrap()
        .into_iter()
        .filter_map(|d| d.check.ok())
        .filter_map(|hc| hc.metadata.name)
        .collect()
}
