//! Heartbeat pings accepted per second by `probity serve` (local mode, release build), each
//! durable before its 200: 1,000 heartbeat checks, 64 clients pinging them round-robin over
//! keep-alive connections for the window after a warm-up. Then probity is killed with SIGKILL
//! and started again on the same state: every ping answered 200 must be in the restored
//! counts (the journal is written before the answer; it is not fsynced, so this is durability
//! against the process dying, not a power cut).
//!
//!     cargo bench --bench heartbeats        # BENCH_SECONDS=N to change the 20 s window

#[path = "common/mod.rs"]
mod bench_common;
#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Probity;

const CHECKS: usize = 1_000;
const CLIENTS: usize = 64;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

async fn total_successes(p: &Probity) -> i64 {
    let d = p.json().await;
    d["CheckDetails"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["SuccessCount"].as_i64().unwrap_or(0))
        .sum()
}

#[tokio::main]
async fn main() {
    let window: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let warmup = 3;
    let dir = tempfile::tempdir().unwrap();
    let (checks, state) = (dir.path().join("checks"), dir.path().join("state"));
    std::fs::create_dir_all(&checks).unwrap();
    let token = "bench-heartbeat-token";
    let hash = probity::api::heartbeat::token_hash(token);
    let mut all = String::new();
    for i in 0..CHECKS {
        all.push_str(&format!("---\napiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: job-{i:04}, namespace: bench}}\nspec:\n  heartbeat: {{period: 1h, tokenHash: '{hash}'}}\n"));
    }
    std::fs::write(checks.join("heartbeats.yaml"), all).unwrap();
    let mut p = Probity::start(&checks, &state, &[]);
    p.wait_ready().await;
    println!("# {CHECKS} heartbeat checks, {CLIENTS} clients over keep-alive, {window} s measured after {warmup} s warm-up");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    let acked = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(Mutex::new(Vec::new()));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let end = Instant::now() + Duration::from_secs(warmup + window);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, base) = (client.clone(), p.base.clone());
        let (acked, refused, lat, measuring) = (
            acked.clone(),
            refused.clone(),
            lat.clone(),
            measuring.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            let mut mine = Vec::new();
            let mut counted = 0u64;
            while Instant::now() < end {
                let i = (c + n * CLIENTS) % CHECKS;
                n += 1;
                let t = Instant::now();
                let r = client
                    .post(format!("{base}/api/heartbeat/bench/job-{i:04}"))
                    .bearer_auth(token)
                    .send()
                    .await;
                let ok = r.is_ok_and(|r| r.status() == 200);
                // Every 200 counts toward the durability check; the window's toward the rate.
                if ok {
                    acked.fetch_add(1, Ordering::Relaxed);
                } else {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
                if ok && measuring.load(Ordering::Relaxed) {
                    counted += 1;
                    mine.push(t.elapsed());
                }
            }
            lat.lock().unwrap().extend(mine);
            counted
        }));
    }
    tokio::time::sleep(Duration::from_secs(warmup)).await;
    let cpu0 = bench_common::cpu_of(p.pid() as u32);
    measuring.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    let mut in_window = 0u64;
    for t in tasks {
        in_window += t.await.unwrap();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = bench_common::cpu_of(p.pid() as u32) - cpu0;
    let mut l = std::mem::take(&mut *lat.lock().unwrap());
    l.sort();
    let acked = acked.load(Ordering::Relaxed);
    println!(
        "probity: {in_window} pings answered 200 in {elapsed:.1} s = {:.0}/s; latency p50 {:.2} ms p99 {:.2} ms; CPU {:.2} s = {:.3} CPU-s per 1,000 pings; not 200: {}",
        in_window as f64 / elapsed,
        pct(&l, 0.5).as_secs_f64() * 1e3,
        pct(&l, 0.99).as_secs_f64() * 1e3,
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1000.0 / in_window.max(1) as f64,
        refused.load(Ordering::Relaxed)
    );
    let before = total_successes(&p).await;
    p.kill9();
    let p = Probity::start(&checks, &state, &[]);
    p.wait_ready().await;
    let after = total_successes(&p).await;
    println!(
        "durability: {acked} pings answered 200 in all; after kill -9 and a restart the checks count {after} (before the kill: {before}){}",
        if after as u64 >= acked { "" } else { ": PINGS LOST" }
    );
    assert!(after as u64 >= acked, "a ping answered 200 was lost");
}
