//! One run of each bundled check on the real node: its wall time (the run's start to its report,
//! as probity records it) and its API requests (the audit log, by the check's User-Agent,
//! `probity-check/<version> (NAME)`), each check alone; beside them the same work done by hand
//! with kubectl where there is such a thing; then the deployment check's start-to-report over
//! 20 runs.
//!
//!     PROBITY_KUBE_AUDIT=1 scripts/kube-up.sh /tmp/kc
//!     cargo build --release && scripts/node-images.sh /tmp/kc --probity target/release/probity
//!     PROBITY_TEST_KUBECONFIG=/tmp/kc/kubeconfig cargo bench --bench checks
//!
//! The checks run from checks/cluster/ as they are (the image is this build's), in namespace
//! probity, under a probity replica on the host (so the http check, which asks deploy/'s Service,
//! has no one to ask: tests/bundled_checks.rs sees it pass with deploy/ applied).
//! BENCH_DEPLOYMENT_RUNS (default 20; 0 skips them) sets the number of deployment runs.

#[path = "audit/mod.rs"]
mod audit;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/cluster/testkube.rs"]
mod testkube;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use probity::api::HealthCheck;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The check a bundled check's request came from, or "" for any other client.
fn check_of(agent: &str) -> String {
    match agent.strip_prefix("probity-check/") {
        Some(rest) => rest
            .split_once('(')
            .and_then(|(_, r)| r.split_once(')'))
            .map(|(name, _)| name.to_string())
            .unwrap_or_default(),
        None => audit::first_word(agent),
    }
}

/// Requests since `from`, of `who` (a check's name, or "kubectl"), as "N (verb resource xK, ...)".
fn requests_of(dir: &std::path::Path, from: u64, who: &str) -> (f64, String) {
    let (path, to) = audit::log(dir);
    let all = audit::requests(&path, from, to, check_of);
    let mine: Vec<_> = all.iter().filter(|((c, _, _), _)| c == who).collect();
    let total: f64 = mine.iter().map(|(_, n)| **n).sum::<f64>() + 0.0;
    let detail: Vec<String> = mine
        .iter()
        .map(|((_, verb, res), n)| format!("{verb} {res} x{n}"))
        .collect();
    (total, detail.join(", "))
}

fn kubectl(args: &[&str]) -> String {
    testkube::kubectl(args)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let Some(path) = testkube::kubeconfig() else {
        eprintln!("needs the test cluster: see the top of benches/checks.rs");
        return;
    };
    let dir = testkube::cluster_dir();
    audit::log(&dir);
    let client = testkube::client_from(&path).await;
    testkube::install_crd(&client).await;
    testkube::namespace(&client, "probity").await;

    let addr = testkube::pod_reachable_addr();
    let replica = Command::new(env!("CARGO_BIN_EXE_probity"))
        .args([
            "serve",
            "--kubernetes",
            "--namespace",
            "probity",
            "--lease-namespace",
            "probity",
        ])
        .args(["--identity", "bench", "--listen-address", &addr])
        .args(["--report-url", &format!("http://{addr}")])
        .env("KUBECONFIG", &path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let api: Api<HealthCheck> = Api::namespaced(client.clone(), "probity");

    // Each manifest alone: apply it, wait for its checks' first runs, read what they cost.
    let mut files: Vec<_> = std::fs::read_dir(format!("{ROOT}/checks/cluster"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut rows = BTreeMap::new();
    for file in &files {
        let names = testkube::health_check_names(file);
        let from = audit::log(&dir).1;
        kubectl(&["apply", "-f", file.to_str().unwrap()]);
        for name in &names {
            let st = common::wait_up_to(Duration::from_secs(300), name, async || {
                let st = api.get(name).await.ok()?.status?;
                (!st.history.is_empty()).then_some(st)
            })
            .await;
            let run = &st.history[0];
            let check = file.file_stem().unwrap().to_string_lossy().to_string();
            // The check's pod may still be deleting what it made after it reported.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (n, detail) = requests_of(&dir, from, &check);
            let outcome = run.outcome.map(|o| o.as_str()).unwrap_or("?");
            rows.insert(
                name.clone(),
                format!(
                    "| `{name}` | {outcome} | {:.1} s | {n} | {detail} |",
                    run.run_duration as f64 / 1e9
                ),
            );
        }
    }
    println!("| check | outcome | start to report | API requests | of which |");
    println!("|---|---|---|---|---|");
    for row in rows.values() {
        println!("{row}");
    }

    // The same work by hand, where there is such a thing.
    kubectl(&["create", "namespace", "by-hand"]);
    // Each session as a person would type it, one command a line (`-` reads the DaemonSet).
    let by_hand: [(&str, &str); 5] = [
        (
            "deployment (create, expose, rollout, GET, roll, GET, delete and wait)",
            "-n by-hand create deployment web --image=nginxinc/nginx-unprivileged:1.17.8 --replicas=2 --port=8080
             -n by-hand expose deployment web --port=80 --target-port=8080
             -n by-hand rollout status deployment/web --timeout=300s
             -n by-hand exec deploy/web -- wget -qO- http://web.by-hand.svc.cluster.local/
             -n by-hand set image deployment/web nginx-unprivileged=nginxinc/nginx-unprivileged:1.17.9
             -n by-hand rollout status deployment/web --timeout=300s
             -n by-hand exec deploy/web -- wget -qO- http://web.by-hand.svc.cluster.local/
             -n by-hand delete deployment,service web --cascade=foreground --wait",
        ),
        (
            "daemonset (apply, rollout, delete and wait)",
            "-n by-hand apply -f -
             -n by-hand rollout status daemonset/pause --timeout=300s
             -n by-hand delete daemonset pause --cascade=foreground --wait",
        ),
        ("pod-restarts / pod-status (`get pods -A`)", "get pods -A -o json"),
        ("resource-quota (`get resourcequotas -A`)", "get resourcequotas -A -o json"),
        ("cronjob (`get cronjobs -A`)", "get cronjobs -A -o json"),
    ];
    let daemonset = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: pause}\nspec:\n  selector: {matchLabels: {app: pause}}\n  template:\n    metadata: {labels: {app: pause}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers: [{name: pause, image: gcr.io/google-containers/pause:3.1}]\n";
    println!();
    println!("| by hand with kubectl | wall time | API requests | of which |");
    println!("|---|---|---|---|");
    for (what, commands) in by_hand {
        let from = audit::log(&dir).1;
        let start = Instant::now();
        for line in commands.lines() {
            let args: Vec<&str> = line.split_whitespace().collect();
            if args.contains(&"-") {
                let mut c = Command::new("kubectl")
                    .args(&args)
                    .env("KUBECONFIG", &path)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap();
                use std::io::Write;
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(daemonset.as_bytes())
                    .unwrap();
                assert!(c.wait().unwrap().success());
            } else {
                kubectl(&args);
            }
        }
        let took = start.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (n, detail) = requests_of(&dir, from, "kubectl");
        println!("| {what} | {:.1} s | {n} | {detail} |", took.as_secs_f64());
    }

    // The deployment check, again and again: start to report.
    let runs: usize = std::env::var("BENCH_DEPLOYMENT_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    if runs == 0 {
        return cleanup(replica);
    }
    let patch = serde_json::json!({"spec": {"runInterval": "5s"}});
    api.patch("deployment", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let st = common::wait_up_to(
        Duration::from_secs(runs as u64 * 120),
        "the deployment runs",
        async || {
            let st = api.get("deployment").await.ok()?.status?;
            (st.history.len() >= runs.min(20)).then_some(st)
        },
    )
    .await;
    let mut secs: Vec<f64> = st
        .history
        .iter()
        .map(|h| h.run_duration as f64 / 1e9)
        .collect();
    let ok = st
        .history
        .iter()
        .filter(|h| h.outcome == Some(probity::api::Outcome::Success))
        .count();
    secs.sort_by(f64::total_cmp);
    println!();
    println!(
        "deployment check, {} runs ({ok} passed): start to report p50 {:.1} s, p99 {:.1} s, min {:.1} s, max {:.1} s",
        secs.len(),
        quantile(&secs, 0.5),
        quantile(&secs, 0.99),
        secs[0],
        secs[secs.len() - 1]
    );
    let all: Vec<String> = secs.iter().map(|s| format!("{s:.1}")).collect();
    println!("each, sorted (s): {}", all.join(" "));

    cleanup(replica);
}

fn cleanup(mut replica: std::process::Child) {
    kubectl(&[
        "delete",
        "-f",
        &format!("{ROOT}/checks/cluster"),
        "--wait=false",
    ]);
    kubectl(&["delete", "namespace", "by-hand", "--wait=false"]);
    let _ = replica.kill();
    let _ = replica.wait();
}
