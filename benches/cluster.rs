//! The kubernetes backend at 1,000 HealthChecks on a 1-minute interval, against the real test
//! API server with the tests' node agent running every pod as a process.
//!
//!     scripts/kube-up.sh /tmp/kc
//!     PROBITY_TEST_KUBECONFIG=/tmp/kc/kubeconfig cargo bench --bench cluster
//!
//! BENCH_SECONDS (default 300) sets the measured window, BENCH_CHECKS (default 1000) the checks.
//! API requests come from the API server's own `apiserver_request_total`, by verb and resource,
//! as the difference over the window; scheduler lag from probity's lag histogram.

#[path = "../tests/cluster/agent.rs"]
mod agent;
#[path = "common/mod.rs"]
mod common;
#[path = "../tests/cluster/testkube.rs"]
mod testkube;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{cpu_of, mem_mb};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::Client;
use probity::api::HealthCheck;

/// `apiserver_request_total` summed by (verb, resource/subresource), excluding watches' own
/// bookkeeping nothing: every request counts.
async fn api_requests(client: &Client) -> BTreeMap<(String, String), f64> {
    let req = axum::http::Request::get("/metrics")
        .body(Vec::new())
        .unwrap();
    let text = client.request_text(req).await.unwrap();
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let (labels, value) = line.rsplit_once(' ').unwrap();
        let get = |k: &str| {
            labels
                .split(&format!("{k}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        let mut res = get("resource");
        let sub = get("subresource");
        if !sub.is_empty() {
            res = format!("{res}/{sub}");
        }
        *out.entry((get("verb"), res)).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

/// (count, quantile upper bounds) from a Prometheus histogram in text form.
fn histogram(text: &str, name: &str, qs: &[f64]) -> (f64, Vec<String>) {
    let buckets: Vec<(String, f64)> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
        .map(|l| {
            let le = l
                .split("le=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_string();
            (le, l.rsplit_once(' ').unwrap().1.parse().unwrap())
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    let bounds = qs
        .iter()
        .map(|q| {
            buckets
                .iter()
                .find(|(_, c)| *c >= q * total)
                .map_or("?".into(), |(le, _)| format!("<= {le} s"))
        })
        .collect();
    (total, bounds)
}

#[tokio::main]
async fn main() {
    let Ok(path) = std::env::var("PROBITY_TEST_KUBECONFIG") else {
        eprintln!("needs a test API server: scripts/kube-up.sh DIR; PROBITY_TEST_KUBECONFIG=DIR/kubeconfig");
        return;
    };
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let checks: usize = std::env::var("BENCH_CHECKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let client = testkube::client_from(&path).await;
    testkube::install_crd(&client).await;
    let ns = testkube::fresh_namespace(&client, "bench").await;
    let _agent = agent::start(client.clone(), &ns);

    // The checks exist before probity starts, as after an install: first runs spread over the minute.
    let bin = env!("CARGO_BIN_EXE_probity");
    let api: Api<HealthCheck> = Api::namespaced(client.clone(), &ns);
    for i in 0..checks {
        let hc = testkube::reporting_check(
            &ns,
            &format!("c{i:04}"),
            "  runInterval: 1m\n  timeout: 30s\n",
        );
        api.create(&PostParams::default(), &hc).await.unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--kubernetes",
            "--namespace",
            &ns,
            "--lease-namespace",
            &ns,
            "--identity",
            "bench",
        ])
        .args([
            "--listen-address",
            &addr,
            "--report-url",
            &format!("http://{addr}"),
        ])
        .env("KUBECONFIG", &path)
        .env(
            "RUST_LOG",
            std::env::var("BENCH_PROBITY_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let http = reqwest::Client::new();
    let json = |http: reqwest::Client| {
        let url = format!("http://{addr}/json");
        async move {
            http.get(url)
                .send()
                .await
                .ok()?
                .json::<serde_json::Value>()
                .await
                .ok()
        }
    };
    loop {
        if let Some(d) = json(http.clone()).await {
            if d["CurrentMaster"] == "bench"
                && d["CheckDetails"].as_object().map_or(0, |m| m.len()) == checks
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let runs = |d: &serde_json::Value| -> i64 {
        d["CheckDetails"]
            .as_object()
            .unwrap()
            .values()
            .map(|c| {
                c["SuccessCount"].as_i64().unwrap_or(0) + c["FailureCount"].as_i64().unwrap_or(0)
            })
            .sum()
    };
    let before = api_requests(&client).await;
    let runs0 = runs(&json(http.clone()).await.unwrap());
    let cpu0 = cpu_of(pid);
    let t0 = Instant::now();
    let mut peak_rss: f64 = 0.0;
    while t0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        peak_rss = peak_rss.max(mem_mb(Some(pid), "VmRSS:"));
    }
    let cpu = cpu_of(pid) - cpu0;
    let elapsed = t0.elapsed().as_secs_f64();
    let doc = json(http.clone()).await.unwrap();
    let done = runs(&doc) - runs0;
    let failed: i64 = doc["CheckDetails"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["FailureCount"].as_i64().unwrap_or(0))
        .sum();
    let after = api_requests(&client).await;
    let metrics = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (lagged, lag) = histogram(&metrics, "probity_scheduler_lag_seconds", &[0.5, 0.99]);

    println!("{checks} checks @1m for {elapsed:.0} s: {done} runs finished ({failed} failed in all), {lagged} starts");
    println!(
        "scheduler lag p50 {} p99 {} (histogram bucket bounds)",
        lag[0], lag[1]
    );
    println!(
        "probity CPU {:.2} s ({:.1} ms per run), RSS now {:.0} MB, peak {:.0} MB (VmHWM {:.0} MB)",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1000.0 / done.max(1) as f64,
        mem_mb(Some(pid), "VmRSS:"),
        peak_rss,
        mem_mb(Some(pid), "VmHWM:")
    );
    // probity's resources; pods/status is the node agent (kubelet's part), the rest is the
    // control plane's own traffic (admission plugins, controller-manager).
    let ours = [
        "healthchecks",
        "healthchecks/status",
        "pods",
        "events",
        "leases",
    ];
    println!(
        "API requests in the window, on the resources probity uses (node agent: pods/status):"
    );
    let mut per_run = 0.0;
    for (k, v) in &after {
        let d = v - before.get(k).copied().unwrap_or(0.0);
        if d < 0.5 || !(ours.contains(&k.1.as_str()) || k.1 == "pods/status") {
            continue;
        }
        let note = match k.1.as_str() {
            "pods/status" => "  (node agent)",
            "leases" => "  (election, not per run)",
            _ => {
                per_run += d;
                ""
            }
        };
        println!(
            "  {:>8} {:<22} {:>7.0}  {:.2}/run{note}",
            k.0,
            k.1,
            d,
            d / done.max(1) as f64
        );
    }
    println!(
        "probity per run (without the lease): {:.2} requests",
        per_run / done.max(1) as f64
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &Default::default())
        .await;
}
