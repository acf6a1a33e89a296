//! The kubernetes backend on the real node: 200 HealthChecks on a 1-minute interval, each run a
//! real pod (busybox with this build's probity mounted, running `probity report --ok`) started by
//! the kubelet on containerd.
//!
//!     scripts/kube-up.sh /tmp/kc
//!     PROBITY_TEST_KUBECONFIG=/tmp/kc/kubeconfig cargo bench --bench cluster
//!
//! BENCH_SECONDS (default 300) sets the measured window, BENCH_CHECKS (default 200) the checks.
//! API requests come from the API server's own `apiserver_request_total`, by verb and resource,
//! as the difference over the window; scheduler lag from probity's lag histogram; pod start times
//! from a watch on the namespace (first seen -> first seen Running); start-to-report from the
//! runs' recorded durations.

#[path = "audit/mod.rs"]
mod audit;
#[path = "common/mod.rs"]
mod common;
#[path = "../tests/cluster/testkube.rs"]
mod testkube;

use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;

use common::{cpu_of, mem_mb};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use probity::api::HealthCheck;

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
        .unwrap_or(200);
    let client = testkube::client_from(&path).await;
    testkube::install_crd(&client).await;
    let ns = testkube::fresh_namespace(&client, "bench").await;

    // When each check pod was first seen, and first seen Running (by this watch, in ms).
    type Seen = HashMap<String, (Instant, Option<Instant>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let watch = {
        let (seen, pods) = (seen.clone(), Api::<Pod>::namespaced(client.clone(), &ns));
        tokio::spawn(async move {
            let mut events = watcher(pods, watcher::Config::default()).boxed();
            while let Some(Ok(ev)) = events.next().await {
                let (watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev else {
                    continue;
                };
                let now = Instant::now();
                // Started: Running, or already past it (a short check can finish between two
                // of the kubelet's status writes, so Running is never seen).
                let phase = p.status.and_then(|s| s.phase);
                let running = matches!(phase.as_deref(), Some("Running" | "Succeeded" | "Failed"));
                let mut seen = seen.lock().unwrap();
                let e = seen
                    .entry(p.metadata.name.unwrap_or_default())
                    .or_insert((now, None));
                if running && e.1.is_none() {
                    e.1 = Some(now);
                }
            }
        })
    };

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
    // Where the node's pods reach the host.
    let addr = testkube::pod_reachable_addr();
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
    // The first minute holds every check's first status write and first run; the window starts
    // after it (BENCH_WARMUP seconds, default 70), in the steady state.
    let warmup: u64 = std::env::var("BENCH_WARMUP")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(70);
    tokio::time::sleep(Duration::from_secs(warmup)).await;
    let (audit, before) = audit::log(&testkube::cluster_dir());
    let window_start = chrono::Utc::now().timestamp();
    let runs0 = runs(&json(http.clone()).await.unwrap());
    let cpu0 = cpu_of(pid);
    let t0 = Instant::now();
    let mut peak_rss: f64 = 0.0;
    while t0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        peak_rss = peak_rss.max(mem_mb(Some(pid), "VmRSS:"));
    }
    let cpu = cpu_of(pid) - cpu0;
    let (rss_now, hwm) = (mem_mb(Some(pid), "VmRSS:"), mem_mb(Some(pid), "VmHWM:"));
    let elapsed = t0.elapsed().as_secs_f64();
    let doc = json(http.clone()).await.unwrap();
    let done = runs(&doc) - runs0;
    let failed: i64 = doc["CheckDetails"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["FailureCount"].as_i64().unwrap_or(0))
        .sum();
    let after = audit::log(&testkube::cluster_dir()).1;
    let metrics = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (lagged, lag) = histogram(&metrics, "probity_scheduler_lag_seconds", &[0.5, 0.99]);
    watch.abort();
    let pct = |mut v: Vec<f64>, q: f64| -> f64 {
        v.sort_by(f64::total_cmp);
        v.get(((v.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let to_running: Vec<f64> = seen
        .lock()
        .unwrap()
        .values()
        .filter_map(|(first, running)| Some(running.as_ref()?.duration_since(*first).as_secs_f64()))
        .collect();
    let all_checks = api.list(&Default::default()).await.unwrap().items;
    let to_report: Vec<f64> = all_checks
        .iter()
        .filter_map(|hc| hc.status.as_ref())
        .flat_map(|st| st.history.iter())
        .filter(|h| {
            h.start_unix >= window_start && h.outcome == Some(probity::api::Outcome::Success)
        })
        .map(|h| h.run_duration as f64 / 1e9)
        .collect();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut examples: Vec<&str> = Vec::new();
    for h in all_checks
        .iter()
        .filter_map(|hc| hc.status.as_ref())
        .flat_map(|st| st.history.iter())
        .filter(|h| h.start_unix >= window_start)
    {
        *outcomes.entry(format!("{:?}", h.outcome)).or_default() += 1;
        if h.outcome != Some(probity::api::Outcome::Success) && examples.len() < 3 {
            examples.extend(h.errors.first().map(String::as_str));
        }
    }
    println!("outcomes of runs started in the window: {outcomes:?}, e.g. {examples:?}");
    // Leftovers, with probity still in charge: every check suspended, so no run starts; once the
    // runs in flight have ended and the node has caught up (no pod terminating or starting, up to
    // 3 minutes), the finished pods of each check against the retention settings.
    for hc in &all_checks {
        let name = hc.metadata.name.as_deref().unwrap();
        let patch = serde_json::json!({"spec": {"suspend": true}});
        api.patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    }
    let pods_api = Api::<Pod>::namespaced(client.clone(), &ns);
    let settle = Instant::now();
    let pods_now = loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let items = pods_api.list(&Default::default()).await.unwrap().items;
        let busy = items.iter().any(|p| {
            p.metadata.deletion_timestamp.is_some()
                || matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Pending" | "Running")
                )
        });
        if !busy || settle.elapsed() > Duration::from_secs(180) {
            break items;
        }
    };
    let mut per_check: HashMap<String, (usize, usize)> = HashMap::new();
    for p in &pods_now {
        let check = p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("healthcheck"))
            .cloned();
        let e = per_check.entry(check.unwrap_or_default()).or_default();
        match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Succeeded") => e.0 += 1,
            Some("Failed") => e.1 += 1,
            _ => {}
        }
    }
    let over = per_check
        .values()
        .filter(|(ok, bad)| *ok > 1 || *bad > 2)
        .count();
    println!(
        "checks suspended, {:.0} s for runs to end and the node to settle: {} checks over the retention settings",
        settle.elapsed().as_secs_f64(),
        over
    );
    let finished = |phase: &str| {
        pods_now
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase))
            .count()
    };

    println!("{checks} checks @1m for {elapsed:.0} s: {done} runs finished ({failed} failed since start-up), {lagged} starts since start-up");
    println!(
        "scheduler lag p50 {} p99 {} (histogram bucket bounds)",
        lag[0], lag[1]
    );
    println!(
        "pod first seen -> started: p50 {:.2} s p99 {:.2} s ({} pods); run start -> report: p50 {:.2} s p99 {:.2} s ({} runs)",
        pct(to_running.clone(), 0.5),
        pct(to_running.clone(), 0.99),
        to_running.len(),
        pct(to_report.clone(), 0.5),
        pct(to_report.clone(), 0.99),
        to_report.len()
    );
    println!(
        "pods then: {} (Succeeded {}, Failed {}, other {}); retention keeps 1 succeeded + 2 failed per check",
        pods_now.len(),
        finished("Succeeded"),
        finished("Failed"),
        pods_now.len() - finished("Succeeded") - finished("Failed")
    );
    println!(
        "probity CPU {:.2} s ({:.1} ms per run), RSS now {:.0} MB, peak {:.0} MB (VmHWM {:.0} MB)",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1000.0 / done.max(1) as f64,
        rss_now,
        peak_rss,
        hwm
    );
    let requests = audit::requests(&audit, before, after, audit::first_word);
    println!("API requests in the window by client (audit log), per run:");
    let mut per_run = 0.0;
    for ((who, verb, res), n) in &requests {
        if who != "probity" && who != "kubelet" {
            continue;
        }
        let note = match (who.as_str(), res.as_str()) {
            ("probity", "leases") => "  (election, not per run)",
            ("probity", _) => {
                per_run += n;
                ""
            }
            _ => "  (the node's, not probity's)",
        };
        println!(
            "  {who:>8} {verb:>7} {res:<22} {n:>7.0}  {:.2}/run{note}",
            n / done.max(1) as f64
        );
    }
    let lists = requests
        .iter()
        .filter(|((who, verb, _), _)| who == "probity" && verb == "list")
        .map(|(_, n)| n)
        .sum::<f64>() as u64;
    println!(
        "probity per run (without the lease): {:.2} requests; LISTs in the window: {lists}",
        per_run / done.max(1) as f64
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = Api::<Namespace>::all(client.clone())
        .delete(&ns, &Default::default())
        .await;
}
