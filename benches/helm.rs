//! From `helm install` to the first check result on the real node (issue 24's benchmark):
//!
//!     scripts/kube-up.sh /tmp/kc; scripts/node-images.sh /tmp/kc --probity target/release/probity
//!     PROBITY_TEST_KUBECONFIG=/tmp/kc/kubeconfig cargo bench --bench helm
//!
//! `helm install` of charts/probity into a fresh namespace (RBAC for that namespace, the bundled
//! http check), timed to: helm returning (without --wait), two replicas Ready, and the http
//! check's first recorded result. Then `helm uninstall`. BENCH_RUNS (default 3) installs.

#[path = "../tests/cluster/testkube.rs"]
mod testkube;

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use probity::api::HealthCheck;

fn helm(args: &[&str]) {
    let out = Command::new("helm")
        .args(args)
        .env("KUBECONFIG", testkube::kubeconfig().unwrap())
        .output()
        .expect("helm on PATH (.ci/run keeps it in ~/.cache/probity/bin)");
    assert!(
        out.status.success(),
        "helm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Ok(path) = std::env::var("PROBITY_TEST_KUBECONFIG") else {
        eprintln!("needs a test API server: scripts/kube-up.sh DIR; PROBITY_TEST_KUBECONFIG=DIR/kubeconfig");
        return;
    };
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let client = testkube::client_from(&path).await;
    testkube::install_crd(&client).await;
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/probity");
    for run in 0..runs {
        let ns = testkube::fresh_namespace(&client, "helm-bench").await;
        let set_ns = format!("rbac.namespaces={{{ns}}}");
        let t0 = Instant::now();
        helm(&[
            "install",
            "probity",
            chart,
            "-n",
            &ns,
            "--set",
            &set_ns,
            "--set",
            "checks={http}",
        ]);
        let returned = t0.elapsed();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let checks: Api<HealthCheck> = Api::namespaced(client.clone(), &ns);
        let mut ready = None;
        let first = loop {
            assert!(
                t0.elapsed() < Duration::from_secs(300),
                "no result in 5 minutes"
            );
            if ready.is_none() {
                let lp = ListParams::default().labels("app.kubernetes.io/name=probity");
                let n = pods.list(&lp).await.map(|l| {
                    l.items
                        .iter()
                        .filter(|p| {
                            p.status
                                .as_ref()
                                .and_then(|s| s.conditions.as_ref())
                                .is_some_and(|cs| {
                                    cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                                })
                        })
                        .count()
                });
                if n.unwrap_or(0) == 2 {
                    ready = Some(t0.elapsed());
                }
            }
            if let Ok(hc) = checks.get("http").await {
                if hc.status.is_some_and(|s| s.last_outcome.is_some()) {
                    break t0.elapsed();
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        println!(
            "run {}: helm install returned in {:.1} s; two replicas Ready at {:.1} s; the http check's first result at {:.1} s",
            run + 1,
            returned.as_secs_f64(),
            ready.unwrap_or(first).as_secs_f64(),
            first.as_secs_f64()
        );
        helm(&["uninstall", "probity", "-n", &ns, "--wait"]);
    }
}
