//! 10,000 HTTP probe checks at a 10 s interval (1,000 probes/s) against a local HTTP server,
//! side by side with Prometheus' blackbox_exporter driven at the same rate against the same
//! server, in one run.
//!
//!     apt-get install prometheus-blackbox-exporter   # once
//!     cargo bench --bench probes                     # BENCH_SECONDS=N to change the 60 s window
//!     BENCH_ASSERTIONS=1 cargo bench --bench probes  # a 100 KB JSON body, five assertions
//!
//! With `BENCH_ASSERTIONS=1` the server answers a 100 KB JSON document and each probe judges it
//! with five assertions (the status code, a JSONPath `equals` on a field at the document's end,
//! a JSONPath `lessThan`, a header `contains`, a body substring); blackbox_exporter's module
//! checks the same with its equivalents (`valid_status_codes`, three
//! `fail_if_body_not_matches_regexp`, `fail_if_header_not_matches`).
//!
//! CPU is user + system time of the process doing the probing (probity's engine, runner and
//! state journal in this process; blackbox_exporter's own process), over the measured window
//! after a warm-up. The load that drives blackbox_exporter, the target HTTP server and the
//! once-a-second count of TIME-WAIT sockets run in processes of their own, so none is counted
//! for either side (the kernel formats its whole socket table for /proc/net/tcp: counted in
//! probity's process it was 0.4-1.0 s of a 30 s window).

#[path = "common/mod.rs"]
mod common;

use common::{cpu_of, mem_mb};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use probity::api::load::parse_documents;
use probity::api::{CheckKey, HealthCheck};
use probity::engine::clock::SystemClock;
use probity::engine::driver::Driver;
use probity::engine::{
    Board, Desired, Engine, EngineConfig, EngineHandle, Runner, StartRun, StopReason,
};
use probity::local::FileStore;
use probity::local::LocalRunner;
use probity::metrics::Metrics;
use tokio::sync::watch;

const CHECKS: usize = 10_000;
const RATE: u64 = 1_000;

/// Notes each run's lag, then hands it to the real runner.
struct Lag<R> {
    inner: R,
    lags: Arc<Mutex<Vec<Duration>>>,
}

impl<R: Runner> Runner for Lag<R> {
    fn start(&self, run: StartRun) {
        self.lags
            .lock()
            .unwrap()
            .push((Utc::now() - run.due).to_std().unwrap_or_default());
        self.inner.start(run)
    }
    fn adopt(&self, k: CheckKey, u: probity::api::RunId, d: DateTime<Utc>, c: Arc<HealthCheck>) {
        self.inner.adopt(k, u, d, c)
    }
    fn stop(&self, k: &CheckKey, u: probity::api::RunId, r: StopReason) {
        self.inner.stop(k, u, r)
    }
}

fn cpu_self() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Sockets in TIME-WAIT to or from the target server's port (IPv4 and IPv6).
fn time_wait(port: u16) -> usize {
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|t| {
            t.lines()
                .filter(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 3 && f[3] == "06" && (f[1].ends_with(&port) || f[2].ends_with(&port))
                })
                .count()
        })
        .sum()
}

/// Counts TIME-WAIT sockets to `port` once a second for `seconds`; prints the most seen.
fn watch_time_wait(port: u16, seconds: u64) {
    let mut most = 0;
    for _ in 0..seconds {
        std::thread::sleep(Duration::from_secs(1));
        most = most.max(time_wait(port));
    }
    println!("{most}");
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn spawn_self(args: &[&str]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn first_line(child: &mut Child) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().to_string()
}

/// The probed server: answers every request with 200 "ok", or (`--json`) a 100 KB JSON document
/// whose asserted fields come last.
async fn target_server(json: bool) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", l.local_addr().unwrap().port());
    let app = if json {
        let filler: Vec<String> = (0..4000).map(|i| format!("component-{i:05}-ok")).collect();
        let doc = serde_json::json!({"filler": filler, "queue": {"depth": 12}, "status": "UP"})
            .to_string();
        let body = axum::body::Bytes::from(doc);
        axum::Router::new().fallback(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        })
    } else {
        axum::Router::new().fallback(|| async { "ok" })
    };
    axum::serve(l, app).await.unwrap();
}

/// The five assertions of `BENCH_ASSERTIONS=1`, as a HealthCheck's probe and as
/// blackbox_exporter's module.
const PROBE_ASSERTIONS: &str = "expectStatus: [200], assertions: [{jsonPath: $.status, equals: UP}, {jsonPath: $.queue.depth, lessThan: 100}, {header: Content-Type, contains: json}, {body: component-03999}]";
const BLACKBOX_ASSERTIONS: &str = "    http:\n      valid_status_codes: [200]\n      fail_if_body_not_matches_regexp: ['\"status\":\"UP\"', '\"depth\":[0-9]{1,2}\\b', 'component-03999']\n      fail_if_header_not_matches: [{header: Content-Type, regexp: json}]\n";

/// Asks blackbox_exporter for `rate` probes a second for `seconds`; prints successes.
async fn drive_blackbox(url: String, seconds: u64) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let ok = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    while Instant::now() < end {
        tick.tick().await;
        for _ in 0..RATE / 100 {
            let (client, url, ok) = (client.clone(), url.clone(), ok.clone());
            tasks.push(tokio::spawn(async move {
                if let Ok(r) = client.get(&url).send().await {
                    if r.text().await.is_ok_and(|t| t.contains("probe_success 1")) {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    println!("{}", ok.load(Ordering::Relaxed));
}

#[tokio::main]
async fn main() {
    probity::tune_allocator();
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--target-server") {
        return target_server(args.iter().any(|a| a == "--json")).await;
    }
    if let Some(i) = args.iter().position(|a| a == "--watch-time-wait") {
        return watch_time_wait(args[i + 1].parse().unwrap(), args[i + 2].parse().unwrap());
    }
    if let Some(i) = args.iter().position(|a| a == "--drive-blackbox") {
        return drive_blackbox(args[i + 1].clone(), args[i + 2].parse().unwrap()).await;
    }
    let window: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let warmup = 15;
    let asserting = std::env::var("BENCH_ASSERTIONS").is_ok_and(|v| v == "1");
    let mut server = if asserting {
        spawn_self(&["--target-server", "--json"])
    } else {
        spawn_self(&["--target-server"])
    };
    let port = first_line(&mut server);
    let target = format!("http://127.0.0.1:{port}/");
    println!("# {CHECKS} HTTP probe checks every 10 s ({RATE}/s) against {target}; {window} s measured after {warmup} s warm-up");
    if asserting {
        println!("# a 100 KB JSON body; five assertions: {PROBE_ASSERTIONS}");
    }

    // probity.
    let state = tempfile::tempdir().unwrap();
    let (handle, events) = EngineHandle::channel();
    let (stop, shutdown) = watch::channel(false);
    let lags = Arc::new(Mutex::new(Vec::new()));
    let runner = Arc::new(Lag {
        inner: LocalRunner::new(handle.clone(), "http://127.0.0.1:1"),
        lags: lags.clone(),
    });
    let store = Arc::new(FileStore::open(state.path()).unwrap());
    let board = Arc::new(Board::new("bench"));
    let metrics = Arc::new(Metrics::new(Default::default(), board.clone()));
    let driver = Driver::new(
        Engine::new(EngineConfig::new("bench")),
        runner,
        store,
        SystemClock,
        events,
        board,
    )
    .observed_by_shared(metrics)
    .stopping_on(shutdown)
    .grace(Duration::from_secs(2));
    let board = driver.board().clone();
    let task = tokio::spawn(driver.run());
    for i in 0..CHECKS {
        let text = format!(
            "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: p{i:05}, namespace: bench}}\nspec:\n  probe: {{httpGet: {{url: \"{target}\"{}}}}}\n",
            if asserting {
                format!(", {PROBE_ASSERTIONS}")
            } else {
                String::new()
            }
        );
        let check = parse_documents(&text).unwrap().remove(0).check.unwrap();
        handle
            .upsert(Desired::new(Arc::new(check), None), None)
            .await;
    }
    handle.loaded().await;
    tokio::time::sleep(Duration::from_secs(warmup)).await;
    let ok_before = board
        .snapshot()
        .iter()
        .map(|v| v.status.success_count)
        .sum::<i64>();
    let fail_before = board
        .snapshot()
        .iter()
        .map(|v| v.status.failure_count)
        .sum::<i64>();
    lags.lock().unwrap().clear();
    let cpu0 = cpu_self();
    let t0 = Instant::now();
    let mut watch = spawn_self(&["--watch-time-wait", &port, &window.to_string()]);
    tokio::time::sleep(Duration::from_secs(window)).await;
    let cpu = cpu_self() - cpu0;
    let max_tw = first_line(&mut watch);
    let _ = watch.wait();
    let elapsed = t0.elapsed().as_secs_f64();
    let ok = board
        .snapshot()
        .iter()
        .map(|v| v.status.success_count)
        .sum::<i64>()
        - ok_before;
    let failed = board
        .snapshot()
        .iter()
        .map(|v| v.status.failure_count)
        .sum::<i64>()
        - fail_before;
    let mut l = std::mem::take(&mut *lags.lock().unwrap());
    l.sort();
    let probity_cpu_per_k = cpu.as_secs_f64() * 1000.0 / ok.max(1) as f64;
    println!(
        "probity: {ok} probes OK, {failed} failed in {elapsed:.1} s = {:.0}/s; lag p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        ok as f64 / elapsed,
        pct(&l, 0.5).as_secs_f64() * 1e3,
        pct(&l, 0.99).as_secs_f64() * 1e3,
        l.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "probity: CPU {:.2} s = {probity_cpu_per_k:.3} CPU-s per 1,000 probes; peak RSS {:.1} MB; most sockets to the target in TIME-WAIT at once: {max_tw}",
        cpu.as_secs_f64(),
        mem_mb(None, "VmHWM:")
    );
    // Read from the board: an observer told of every run would wake a task per run, the
    // harness' work counted as probity's.
    let samples: Vec<String> = board
        .snapshot()
        .iter()
        .filter(|v| !v.status.errors.is_empty())
        .take(5)
        .map(|v| v.status.errors.join("; "))
        .collect();
    let _ = stop.send(true);
    let _ = task.await;
    if !samples.is_empty() {
        println!("probity: sample failures: {samples:?}");
    }

    // blackbox_exporter.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("blackbox.yml");
    std::fs::write(
        &config,
        format!(
            "modules:\n  http_2xx:\n    prober: http\n    timeout: 1s\n{}",
            if asserting { BLACKBOX_ASSERTIONS } else { "" }
        ),
    )
    .unwrap();
    let bb_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let Ok(mut bb) = Command::new("prometheus-blackbox-exporter")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{bb_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        println!("blackbox_exporter: not installed (apt-get install prometheus-blackbox-exporter); no comparison");
        let _ = server.kill();
        return;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let version = Command::new("prometheus-blackbox-exporter")
        .arg("--version")
        .output()
        .unwrap();
    let version = format!(
        "{}{}",
        String::from_utf8_lossy(&version.stderr)
            .lines()
            .next()
            .unwrap_or(""),
        String::from_utf8_lossy(&version.stdout)
            .lines()
            .next()
            .unwrap_or("")
    );
    let url = format!("http://127.0.0.1:{bb_port}/probe?module=http_2xx&target={target}");
    let mut drive = spawn_self(&["--drive-blackbox", &url, &(warmup + window).to_string()]);
    tokio::time::sleep(Duration::from_secs(warmup)).await;
    let cpu0 = cpu_of(bb.id());
    let t0 = Instant::now();
    let mut watch = spawn_self(&["--watch-time-wait", &port, &window.to_string()]);
    tokio::time::sleep(Duration::from_secs(window)).await;
    let cpu = cpu_of(bb.id()) - cpu0;
    let max_tw = first_line(&mut watch);
    let _ = watch.wait();
    let elapsed = t0.elapsed().as_secs_f64();
    let total_ok: f64 = first_line(&mut drive).parse().unwrap_or(0.0);
    let _ = drive.wait();
    // The driver ran for warm-up + window at a steady rate: the window's share of its successes.
    let ok = total_ok * window as f64 / (warmup + window) as f64;
    let bb_cpu_per_k = cpu.as_secs_f64() * 1000.0 / ok.max(1.0);
    println!(
        "blackbox_exporter ({version}): {total_ok:.0} probes OK over {} s, {:.0}/s",
        warmup + window,
        total_ok / (warmup + window) as f64
    );
    println!(
        "blackbox_exporter: CPU {:.2} s in {elapsed:.1} s = {bb_cpu_per_k:.3} CPU-s per 1,000 probes; RSS {:.1} MB; most sockets to the target in TIME-WAIT at once: {max_tw}",
        cpu.as_secs_f64(),
        mem_mb(Some(bb.id()), "VmHWM:")
    );
    println!(
        "probity uses {:.0}% of blackbox_exporter's CPU per probe",
        probity_cpu_per_k / bb_cpu_per_k * 100.0
    );
    let _ = bb.kill();
    let _ = server.kill();
}
