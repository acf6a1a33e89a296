//! False pages on the real node (issue 23's benchmark): the runner breaks, every target stays
//! healthy, and routes that take only `target` failures must hear nothing; real target failures
//! injected meanwhile must be told within their interval times their threshold.
//!
//!     scripts/kube-up.sh /tmp/kc
//!     PROBITY_TEST_KUBECONFIG=/tmp/kc/kubeconfig cargo bench --bench false_pages
//!
//! BENCH_SECONDS (default 1800) sets the chaos window. Two replicas (host processes, kubernetes
//! backend) run 10 pod checks (busybox with this build's probity, `probity report --ok`, every
//! 30 s) and 3 probe checks of a target on loopback (every 10 s, failureThreshold 1). Every 45 s
//! the runner is broken one way in turn: the check pods deleted mid-run, an image that cannot
//! be pulled (two checks, 90 s), the node cordoned (90 s), the leader killed (and restarted).
//! Every fifth step the target fails for 40 s instead. Receivers: `owners` (causes: [target])
//! and `platform` (causes: [runner]), webhooks on loopback.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/cluster/testkube.rs"]
mod testkube;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::capture::{Capture, Toggle};
use kube::api::{Api, PostParams};
use probity::api::HealthCheck;

fn replica(ns: &str, identity: &str, addr: &str, cfg: &str, kubeconfig: &str) -> Child {
    let mut args = testkube::serve_args(ns, identity, addr, addr);
    args.extend(["--alerting-config".into(), cfg.into()]);
    Command::new(env!("CARGO_BIN_EXE_probity"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn kubectl(args: &[&str]) {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", testkube::kubeconfig().unwrap())
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn image(ns: &str, check: &str, image: &str) {
    let patch = format!(
        "[{{\"op\":\"replace\",\"path\":\"/spec/podSpec/spec/containers/0/image\",\"value\":\"{image}\"}}]"
    );
    kubectl(&["-n", ns, "patch", "hc", check, "--type=json", "-p", &patch]);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Ok(path) = std::env::var("PROBITY_TEST_KUBECONFIG") else {
        eprintln!("needs a test API server: scripts/kube-up.sh DIR; PROBITY_TEST_KUBECONFIG=DIR/kubeconfig");
        return;
    };
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1800);
    let client = testkube::client_from(&path).await;
    testkube::install_crd(&client).await;
    let ns = testkube::fresh_namespace(&client, "falsepages").await;
    let (cap, base) = Capture::start(0).await;
    let target = Toggle::start("127.0.0.1:0", true).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::alerting_config(
        dir.path(),
        &format!(
            "receivers:\n  - name: owners\n    webhook: {{url: \"{base}/owners\"}}\n  - name: platform\n    webhook: {{url: \"{base}/platform\"}}\nroutes:\n  - receiver: owners\n    causes: [target]\n  - receiver: platform\n    causes: [runner]\n"
        ),
    );
    let api: Api<HealthCheck> = Api::namespaced(client.clone(), &ns);
    let pods: Vec<String> = (0..10).map(|i| format!("pod-{i}")).collect();
    for name in &pods {
        let hc = testkube::reporting_check(&ns, name, "  runInterval: 30s\n  timeout: 15s\n");
        api.create(&PostParams::default(), &hc).await.unwrap();
    }
    for i in 0..3 {
        let spec = format!(
            "  runInterval: 10s\n  timeout: 2s\n  failureThreshold: 1\n  probe:\n    httpGet: {{url: \"{}\"}}\n",
            target.url
        );
        api.create(
            &PostParams::default(),
            &testkube::check(&ns, &format!("probe-{i}"), &spec),
        )
        .await
        .unwrap();
    }
    let (a_addr, b_addr) = (
        testkube::pod_reachable_addr(),
        testkube::pod_reachable_addr(),
    );
    let mut a = replica(&ns, "replica-a", &a_addr, &cfg, &path);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut b = replica(&ns, "replica-b", &b_addr, &cfg, &path);
    // A minute of calm: every check has run and passes.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let calm = cap.all().len();
    let node = "probity-node";
    let start = Instant::now();
    let mut step = 0usize;
    let mut injected: Vec<(Instant, chrono::DateTime<chrono::Utc>)> = Vec::new();
    let mut leader_kills = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        match step % 5 {
            0 => kubectl(&["-n", &ns, "delete", "pods", "--all", "--wait=false"]),
            1 => {
                for c in &pods[..2] {
                    image(&ns, c, "localhost/no-such-image:1");
                }
                tokio::time::sleep(Duration::from_secs(90)).await;
                for c in &pods[..2] {
                    image(&ns, c, testkube::CHECK_IMAGE);
                }
            }
            2 => {
                kubectl(&["cordon", node]);
                tokio::time::sleep(Duration::from_secs(90)).await;
                kubectl(&["uncordon", node]);
            }
            3 => {
                // The leader is the first replica alive the longest; kill one in turn.
                leader_kills += 1;
                if leader_kills % 2 == 1 {
                    let _ = a.kill();
                    let _ = a.wait();
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    a = replica(&ns, "replica-a", &a_addr, &cfg, &path);
                } else {
                    let _ = b.kill();
                    let _ = b.wait();
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    b = replica(&ns, "replica-b", &b_addr, &cfg, &path);
                }
            }
            _ => {
                injected.push((Instant::now(), chrono::Utc::now()));
                target.set(false);
                tokio::time::sleep(Duration::from_secs(40)).await;
                target.set(true);
            }
        }
        step += 1;
        tokio::time::sleep(Duration::from_secs(45)).await;
    }
    // Let the last recoveries be told.
    tokio::time::sleep(Duration::from_secs(60)).await;
    for mut r in [a, b] {
        let _ = r.kill();
        let _ = r.wait();
    }
    let owners = cap.at("owners");
    let platform = cap.at("platform");
    let false_pages: Vec<_> = owners
        .iter()
        .filter(|r| {
            r.body["check"]
                .as_str()
                .is_some_and(|c| c.starts_with("pod-"))
        })
        .collect();
    // Each injected failure: when the first owners' firing about a probe came after it.
    let mut latencies = Vec::new();
    for (_, at) in &injected {
        let first = owners
            .iter()
            .filter(|r| r.body["state"] == "failing")
            .filter_map(|r| chrono::DateTime::parse_from_rfc3339(r.body["since"].as_str()?).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
            .filter(|t| *t >= *at - chrono::Duration::seconds(1))
            .min();
        latencies.push(first.map(|t| (t - *at).num_seconds()));
    }
    let told = |v: &[common::capture::Received], state: &str| {
        v.iter().filter(|r| r.body["state"] == state).count()
    };
    println!("{seconds} s of a broken runner on the real node ({step} steps; {} target failures injected; {calm} notices in the calm minute before):", injected.len());
    println!(
        "  owners (causes: [target]): {} notices, {} of them about the pod checks (false pages); firing {} / resolved {}",
        owners.len(),
        false_pages.len(),
        told(&owners, "failing"),
        told(&owners, "resolved")
    );
    println!(
        "  platform (causes: [runner]): {} notices (firing {}, resolved {})",
        platform.len(),
        told(&platform, "failing"),
        told(&platform, "resolved")
    );
    println!(
        "  injected target failures, seconds from the target failing to the failing spell's start (interval 10 s x threshold 1): {latencies:?}"
    );
}
