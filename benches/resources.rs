//! Resource probes at scale on the real API server: 1,000 checks, each a resource probe of its own
//! cert-manager Certificate (a minimal CRD; status written as cert-manager would) every 10 s.
//!
//!     PROBITY_KUBE_AUDIT=1 scripts/kube-up.sh /tmp/kc
//!     PROBITY_TEST_KUBECONFIG=/tmp/kc/kubeconfig cargo bench --bench resources
//!
//! BENCH_CHECKS (default 1000), BENCH_SECONDS (default 120, the measured window), BENCH_CHANGES
//! (default 30, certificates turned not-ready afterwards). Measured: API requests per run, by verb
//! and resource, from the API server's audit log (probity's User-Agent, the bench's namespace);
//! probity's CPU time per
//! run (/proc); and, per changed certificate, the time from the status write being accepted to
//! probity's published verdict turning failing (polled every 50 ms on /api/checks/NS/NAME).

#[path = "audit/mod.rs"]
mod audit;
#[path = "common/mod.rs"]
mod common;
#[path = "../tests/cluster/testkube.rs"]
mod testkube;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use probity::api::HealthCheck;
use serde_json::json;

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let Ok(path) = std::env::var("PROBITY_TEST_KUBECONFIG") else {
        eprintln!("needs a test API server: PROBITY_KUBE_AUDIT=1 scripts/kube-up.sh DIR; PROBITY_TEST_KUBECONFIG=DIR/kubeconfig");
        return;
    };
    let checks = env_or("BENCH_CHECKS", 1000) as usize;
    let seconds = env_or("BENCH_SECONDS", 120);
    let changes = env_or("BENCH_CHANGES", 30) as usize;
    let client = testkube::client_from(&path).await;
    testkube::install_crd(&client).await;
    testkube::kubectl_apply(
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: certificates.cert-manager.io}
spec:
  group: cert-manager.io
  scope: Namespaced
  names: {kind: Certificate, plural: certificates, singular: certificate}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
",
    );
    let ns = testkube::fresh_namespace(&client, "bench-res").await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        "certificates",
    );
    let certs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    for _ in 0..100 {
        if certs.list(&Default::default()).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready =
        json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Ready"}]}});
    let t = Instant::now();
    futures::stream::iter(0..checks)
        .for_each_concurrent(16, |i| {
            let (certs, ar, ready) = (certs.clone(), ar.clone(), ready.clone());
            async move {
                let name = format!("c{i:04}");
                let o = DynamicObject::new(&name, &ar).data(json!({"spec": {"secretName": name}}));
                certs.create(&PostParams::default(), &o).await.unwrap();
                certs
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&ready))
                    .await
                    .unwrap();
            }
        })
        .await;
    let api: Api<HealthCheck> = Api::namespaced(client.clone(), &ns);
    futures::stream::iter(0..checks)
        .for_each_concurrent(16, |i| {
            let (api, ns) = (api.clone(), ns.clone());
            async move {
                let name = format!("c{i:04}");
                let hc = testkube::check(
                    &ns,
                    &name,
                    &format!("  runInterval: 10s\n  timeout: 10s\n  failureThreshold: 1\n  probe:\n    resource: {{apiVersion: cert-manager.io/v1, kind: Certificate, name: {name}}}\n"),
                );
                api.create(&PostParams::default(), &hc).await.unwrap();
            }
        })
        .await;
    println!(
        "{checks} certificates and checks created in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let addr = testkube::pod_reachable_addr();
    let mut child = Command::new(env!("CARGO_BIN_EXE_probity"))
        .args([
            "serve",
            "--kubernetes",
            "--namespace",
            &ns,
            "--lease-namespace",
            &ns,
        ])
        .args(["--identity", "bench", "--listen-address", &addr])
        .args(["--report-url", &format!("http://{addr}")])
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
    let get = move |url: String| {
        let http = http.clone();
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
    let runs = |d: &serde_json::Value| -> (i64, i64) {
        d["CheckDetails"].as_object().map_or((0, 0), |m| {
            m.values().fold((0, 0), |(s, f), c| {
                (
                    s + c["SuccessCount"].as_i64().unwrap_or(0),
                    f + c["FailureCount"].as_i64().unwrap_or(0),
                )
            })
        })
    };
    // Every check has run once (the first runs spread over the first 10 s), then a 20 s settle.
    loop {
        if let Some(d) = get(format!("http://{addr}/json")).await {
            let all_ran = d["CheckDetails"].as_object().is_some_and(|m| {
                m.len() == checks && m.values().all(|c| c["LastOutcome"].is_string())
            });
            if d["CurrentMaster"] == "bench" && all_ran {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(20)).await;

    let (audit, before) = audit::log(&testkube::cluster_dir());
    let (s0, f0) = runs(&get(format!("http://{addr}/json")).await.unwrap());
    let cpu0 = common::cpu_of(pid);
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu = common::cpu_of(pid) - cpu0;
    let elapsed = t0.elapsed().as_secs_f64();
    let (s1, f1) = runs(&get(format!("http://{addr}/json")).await.unwrap());
    let after = audit::log(&testkube::cluster_dir()).1;
    let done = (s1 - s0) + (f1 - f0);
    let requests = audit::requests_in(&audit, before, after, audit::first_word, Some(&ns));
    println!(
        "window {elapsed:.0}s: {done} runs ({:.1}/s), {} failed; probity CPU {:.2}s = {:.3} ms per run ({:.1}% of a core); RSS {:.1} MB",
        done as f64 / elapsed,
        f1 - f0,
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1000.0 / done as f64,
        cpu.as_secs_f64() / elapsed * 100.0,
        common::mem_mb(Some(pid), "VmRSS:")
    );
    println!("API requests by probity in the window, per run:");
    let mut total = 0.0;
    for ((who, verb, res), n) in &requests {
        if who == "probity" {
            total += n;
            println!(
                "  {verb:>6} {res:<28} {n:>7} = {:.3} per run",
                n / done as f64
            );
        }
    }
    println!(
        "  all                                {total:>7} = {:.3} per run",
        total / done as f64
    );

    // Condition change -> changed verdict: certificates turned not-ready one by one, 300 ms
    // apart, each timed from its status write's answer to probity publishing it failing.
    let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Expired", "message": "Certificate expired"}]}});
    let mut watches = Vec::new();
    for i in 0..changes.min(checks) {
        let name = format!("c{:04}", i * (checks / changes.min(checks)).max(1));
        certs
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&not_ready))
            .await
            .unwrap();
        let changed = Instant::now();
        let url = format!("http://{addr}/api/checks/{ns}/{name}");
        let get = get.clone();
        watches.push(tokio::spawn(async move {
            loop {
                if let Some(d) = get(url.clone()).await {
                    if d["detail"]["OK"] == false {
                        return changed.elapsed().as_secs_f64();
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut latencies = Vec::new();
    for w in watches {
        latencies.push(w.await.unwrap());
    }
    latencies.sort_by(f64::total_cmp);
    let q = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    println!(
        "condition change -> verdict ({} certificates): p50 {:.2}s, p90 {:.2}s, max {:.2}s, mean {:.2}s (runs every 10s)",
        latencies.len(),
        q(0.5),
        q(0.9),
        q(1.0),
        latencies.iter().sum::<f64>() / latencies.len() as f64
    );
    let _ = child.kill();
    let _ = child.wait();
}
