//! The API server goes away and comes back (scripts/kube-restart-apiserver.sh): probity keeps
//! running, its watches and the lease recover, and checks run again, without a restart of its
//! own. A test binary of its own, so the outage does not hit the other cluster tests (Cargo runs
//! test binaries one after another).

#[path = "common/mod.rs"]
mod common;
#[path = "cluster/testkube.rs"]
mod testkube;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kube::api::{Api, PostParams};
use kube::Client;
use probity::api::{HealthCheck, Outcome};

use common::Probity;

async fn history(c: &Client, ns: &str) -> Option<Vec<(String, Option<Outcome>)>> {
    let hc = Api::<HealthCheck>::namespaced(c.clone(), ns)
        .get("steady")
        .await
        .ok()?;
    Some(
        hc.status?
            .history
            .into_iter()
            .map(|h| (h.uuid_text(), h.outcome))
            .collect(),
    )
}

#[tokio::test]
async fn probity_recovers_from_an_api_server_restart_on_its_own() {
    let Some(path) = testkube::kubeconfig() else {
        return;
    };
    let dir = Path::new(&path).parent().unwrap().to_path_buf();
    if !dir.join("apiserver.sh").exists() {
        eprintln!("SKIPPED: the API server was not started by scripts/kube-up.sh");
        return;
    }
    let c = testkube::client_from(&path).await;
    testkube::install_crd(&c).await;
    let ns = testkube::fresh_namespace(&c, "probity-restart").await;

    let addr = testkube::pod_reachable_addr();
    let args = testkube::serve_args(&ns, "survivor", &addr, &addr);
    let mut p = Probity::spawn(&args, &[("KUBECONFIG", path.as_str())]);
    p.wait_for("leadership", |d| d["CurrentMaster"] == "survivor")
        .await;
    let hc = testkube::reporting_check(&ns, "steady", "  runInterval: 3s\n  timeout: 10s\n");
    Api::<HealthCheck>::namespaced(c.clone(), &ns)
        .create(&PostParams::default(), &hc)
        .await
        .unwrap();
    let wait_runs = async |n: usize| {
        let start = Instant::now();
        loop {
            if let Some(h) = history(&c, &ns).await.filter(|h| h.len() >= n) {
                return h;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "only {:?} runs",
                history(&c, &ns).await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let before = wait_runs(2).await.len();

    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/kube-restart-apiserver.sh"
        ))
        .arg(&dir)
        .env("DOWN_SECONDS", "4")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Checks run again after the outage, recorded once each, by the same process.
    let after = wait_runs(before + 3).await;
    let mut uuids: Vec<&str> = after.iter().map(|(u, _)| u.as_str()).collect();
    uuids.sort();
    uuids.dedup();
    assert_eq!(uuids.len(), after.len(), "a run recorded twice: {after:?}");
    assert!(
        after[..3].iter().all(|(_, o)| *o == Some(Outcome::Success)),
        "{after:?}"
    );
    p.wait_for("leadership again", |d| d["CurrentMaster"] == "survivor")
        .await;
    let health = reqwest::get(p.url("/healthz")).await.unwrap().status();
    assert_eq!(health.as_u16(), 200);
    assert!(p.try_wait().is_none(), "probity exited");
}
