//! The soak test: mixed valid and hostile traffic against a running `probity serve` with real
//! checks, for `PROBITY_SOAK_SECS` (CI: 600; default 30 so a local `cargo test` stays short).
//! Afterwards every report a check had acknowledged is recorded, no check recorded a false
//! failure, RSS is back near its baseline and `/healthz` stayed fast. With
//! `PROBITY_SOAK_REPORT=FILE` the figures are written there (docs/benchmarks.md quotes them).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{count, detail, shell_check, Probity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Requests sent, by kind.
#[derive(Default)]
struct Sent {
    kinds: BTreeMap<&'static str, AtomicU64>,
}

impl Sent {
    fn new(kinds: &[&'static str]) -> Self {
        Sent {
            kinds: kinds.iter().map(|k| (*k, AtomicU64::new(0))).collect(),
        }
    }

    fn add(&self, kind: &str) {
        self.kinds[kind].fetch_add(1, Ordering::Relaxed);
    }
}

const KINDS: &[&str] = &[
    "json",
    "metrics",
    "forged report (public id)",
    "report for an unknown run",
    "bad body",
    "wrong content type",
    "oversized body",
    "oversized head",
    "random bytes",
    "slow head (never finished)",
    "idle connection",
];

/// A cheap deterministic generator: the traffic is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn raw(target: &str, bytes: &[u8], read: bool) {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(target)).await
    else {
        return;
    };
    let _ = s.write_all(bytes).await;
    if read {
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
    }
}

fn post(path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Connections held open at once by the slow and idle kinds (each in its own task).
const HOLDERS: usize = 300;

/// One hostile or reading request of the mix.
async fn attack(
    target: String,
    base: String,
    shown: Arc<Vec<String>>,
    sent: Arc<Sent>,
    holders: Arc<tokio::sync::Semaphore>,
    r: u64,
) {
    let json = "Content-Type: application/json\r\n";
    match r % 11 {
        0 => {
            sent.add("json");
            let _ = reqwest::get(format!("{base}/json")).await;
        }
        1 => {
            sent.add("metrics");
            let _ = reqwest::get(format!("{base}/metrics")).await;
        }
        2 => {
            // Forging with what /json shows: refused, the check keeps its real verdict.
            sent.add("forged report (public id)");
            let id = &shown[(r as usize / 11) % shown.len().max(1)];
            let h = format!("{json}kh-run-uuid: {id}\r\n");
            raw(
                &target,
                &post("/check", &h, br#"{"OK":false,"Errors":["forged"]}"#),
                true,
            )
            .await;
        }
        3 => {
            sent.add("report for an unknown run");
            let h = format!("{json}kh-run-uuid: {}\r\n", uuid::Uuid::from_u64_pair(r, r));
            raw(&target, &post("/check", &h, br#"{"OK":true}"#), true).await;
        }
        4 => {
            sent.add("bad body");
            let h = format!("{json}kh-run-uuid: {}\r\n", uuid::Uuid::from_u64_pair(r, 1));
            raw(&target, &post("/check", &h, b"{\"OK\":\"maybe\""), true).await;
        }
        5 => {
            sent.add("wrong content type");
            raw(
                &target,
                &post("/check", "Content-Type: text/plain\r\n", b"ok"),
                true,
            )
            .await;
        }
        6 => {
            sent.add("oversized body");
            raw(&target, &post("/check", json, &vec![b' '; 70_000]), true).await;
        }
        7 => {
            sent.add("oversized head");
            let mut head = b"GET /json HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
            head.extend(std::iter::repeat_n(b'a', 40_000));
            head.extend_from_slice(b"\r\n\r\n");
            raw(&target, &head, true).await;
        }
        8 => {
            sent.add("random bytes");
            let mut x = Rng(r | 1);
            let junk: Vec<u8> = (0..(r % 300)).map(|_| x.next() as u8).collect();
            raw(&target, &junk, true).await;
        }
        kind => {
            // Holds a connection (an unfinished head, or nothing at all) until the server
            // drops it, in the background, up to HOLDERS at once.
            let Ok(permit) = holders.try_acquire_owned() else {
                sent.add("json");
                let _ = reqwest::get(format!("{base}/json")).await;
                return;
            };
            let Ok(mut s) = TcpStream::connect(&target).await else {
                return;
            };
            if kind == 9 {
                sent.add("slow head (never finished)");
                let _ = s
                    .write_all(b"GET /json HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    .await;
            } else {
                sent.add("idle connection");
            }
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let _ = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await;
                drop(permit);
            });
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_minutes_of_mixed_traffic_lose_nothing_and_leave_nothing_behind() {
    let secs: u64 = std::env::var("PROBITY_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let tmp = tempfile::tempdir().unwrap();
    let checks = tmp.path().join("checks");
    std::fs::create_dir(&checks).unwrap();
    let state = tmp.path().join("state");
    let acks = tmp.path().join("acks");
    std::fs::create_dir(&acks).unwrap();
    // Real checks: processes that report and note each acknowledged report, and probes.
    let names: Vec<String> = (0..6).map(|i| format!("shell-{i}")).collect();
    for n in &names {
        let script = format!("probity report --ok && echo ok >> {}/{n}", acks.display());
        std::fs::write(
            checks.join(format!("{n}.yaml")),
            shell_check(n, "  runInterval: 2s\n  timeout: 20s\n", &script),
        )
        .unwrap();
    }
    let p = Probity::start(
        &checks,
        &state,
        &["--http-header-timeout", "5s", "--http-idle-timeout", "10s"],
    );
    p.wait_ready().await;
    let port = p.base.rsplit(':').next().unwrap().to_string();
    for (name, probe) in [
        (
            "probe-http",
            format!("httpGet: {{host: 127.0.0.1, port: {port}, path: /healthz}}"),
        ),
        (
            "probe-tcp",
            format!("tcpSocket: {{host: 127.0.0.1, port: {port}}}"),
        ),
    ] {
        std::fs::write(
            checks.join(format!("{name}.yaml")),
            format!(
                "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: {name}, namespace: it}}\nspec:\n  runInterval: 1s\n  timeout: 5s\n  probe: {{{probe}}}\n"
            ),
        )
        .unwrap();
    }
    p.wait_for("every check's first result", |d| {
        names
            .iter()
            .all(|n| count(d, &format!("it/{n}"), "SuccessCount") >= 1)
            && count(d, "it/probe-http", "SuccessCount") >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let baseline = p.mem_kib("VmRSS");

    let target = p.base.trim_start_matches("http://").to_string();
    let sent = Arc::new(Sent::new(KINDS));
    let stop = Arc::new(AtomicBool::new(false));
    let holders = Arc::new(tokio::sync::Semaphore::new(HOLDERS));
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);

    // The attackers: a bounded number of workers, each a request at a time, until the end.
    let mut workers = Vec::new();
    for w in 0..24u64 {
        let (target, base, sent, stop) =
            (target.clone(), p.base.clone(), sent.clone(), stop.clone());
        let shown_src = p.base.clone();
        let holders = holders.clone();
        workers.push(tokio::spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w + 1));
            let mut shown: Arc<Vec<String>> = Arc::new(Vec::new());
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                if n.is_multiple_of(200) {
                    // The public ids currently shown, for forging.
                    if let Ok(r) = reqwest::get(format!("{shown_src}/json")).await {
                        if let Ok(doc) = r.json::<serde_json::Value>().await {
                            let ids = doc["CheckDetails"]
                                .as_object()
                                .map(|m| {
                                    m.values()
                                        .filter_map(|c| c["uuid"].as_str().map(String::from))
                                        .collect()
                                })
                                .unwrap_or_default();
                            shown = Arc::new(ids);
                        }
                    }
                }
                attack(
                    target.clone(),
                    base.clone(),
                    shown.clone(),
                    sent.clone(),
                    holders.clone(),
                    rng.next(),
                )
                .await;
                n += 1;
            }
        }));
    }

    // Health latency and memory, sampled while it goes on.
    let mut health = Vec::new();
    let mut rss_max = baseline;
    let mut rss_series = Vec::new();
    let mut next_rss = Instant::now();
    while Instant::now() < until {
        let t = Instant::now();
        let ok = reqwest::Client::new()
            .get(p.url("/healthz"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map(|r| r.status().as_u16() == 200)
            .unwrap_or(false);
        health.push((t.elapsed(), ok));
        if Instant::now() >= next_rss {
            let rss = p.mem_kib("VmRSS");
            rss_max = rss_max.max(rss);
            rss_series.push((started.elapsed().as_secs(), rss));
            next_rss += Duration::from_secs(30);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    // Let runs in flight finish and idle connections time out.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let rss_after = p.mem_kib("VmRSS");

    // Every acknowledged report is recorded, and nothing failed that did not fail.
    let doc = p.json().await;
    let mut acked_total = 0;
    for n in &names {
        let acked = std::fs::read_to_string(acks.join(n))
            .unwrap_or_default()
            .lines()
            .count() as i64;
        let c = detail(&doc, &format!("it/{n}"));
        let recorded = c["SuccessCount"].as_i64().unwrap();
        // A report acknowledged in the last instant may have its `echo` still to come.
        assert!(
            recorded == acked || recorded == acked + 1,
            "{n}: {recorded} successes recorded, {acked} reports acknowledged"
        );
        assert_eq!(c["FailureCount"], 0, "{n}: a false failure: {c:#}");
        acked_total += acked;
    }
    for probe in ["it/probe-http", "it/probe-tcp"] {
        let c = detail(&doc, probe);
        assert_eq!(c["FailureCount"], 0, "{probe}: a false failure: {c:#}");
        assert!(c["SuccessCount"].as_i64().unwrap() > 0);
    }
    let mut lat: Vec<Duration> = health.iter().map(|(d, _)| *d).collect();
    lat.sort();
    let failed_health = health.iter().filter(|(_, ok)| !ok).count();
    let p50 = percentile(&lat, 0.5);
    let p99 = percentile(&lat, 0.99);
    let sent_total: u64 = sent.kinds.values().map(|v| v.load(Ordering::Relaxed)).sum();
    let metrics = p.metrics().await;
    let own: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            (l.starts_with("probity_reports_total") || l.starts_with("probity_http_"))
                && !l.starts_with("probity_http_requests_shed_total 0")
        })
        .collect();

    let mut report = format!(
        "soak: {secs} s, 24 attacking workers (up to {HOLDERS} held connections), 6 shell checks every 2 s, 2 probes every 1 s\n\
         requests sent: {sent_total}\n"
    );
    for (k, v) in &sent.kinds {
        report.push_str(&format!("  {k}: {}\n", v.load(Ordering::Relaxed)));
    }
    report.push_str(&format!(
        "reports acknowledged to checks: {acked_total}; recorded: all (per check above)\n\
         /healthz: {} probes, {failed_health} failed, p50 {p50:?}, p99 {p99:?}, max {:?}\n\
         RSS: baseline {baseline} KiB, max {rss_max} KiB, after {rss_after} KiB\n\
         RSS over time (s, KiB): {rss_series:?}\n\
         server counters:\n  {}\n",
        health.len(),
        lat.last().copied().unwrap_or_default(),
        own.join("\n  ")
    ));
    eprintln!("{report}");
    if let Ok(path) = std::env::var("PROBITY_SOAK_REPORT") {
        std::fs::write(path, &report).unwrap();
    }
    assert!(acked_total > 0);
    assert_eq!(failed_health, 0, "{report}");
    assert!(p99 < Duration::from_millis(500), "{report}");
    assert!(
        rss_after < baseline + baseline / 2 + 16 * 1024,
        "RSS not back near its baseline: {report}"
    );
}
