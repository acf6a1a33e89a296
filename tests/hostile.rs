//! The attacks of the hardening issue, each by its recipe, against the real binary: slow
//! clients, idle connections at the open-files limit, SIGTERM with half-open clients, and the
//! server's own timeouts.

mod common;

use std::time::{Duration, Instant};

use common::{count, detail, dirs, shell_check, write, Probity, PATIENCE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(p: &Probity) -> String {
    p.base.trim_start_matches("http://").to_string()
}

/// The slowest of `n` `/healthz` answers, each on a new connection.
async fn healthz_worst(p: &Probity, n: usize) -> Duration {
    let mut worst = Duration::ZERO;
    for _ in 0..n {
        let t = Instant::now();
        let r = reqwest::Client::new()
            .get(p.url("/healthz"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("/healthz answers");
        assert_eq!(r.status().as_u16(), 200);
        worst = worst.max(t.elapsed());
    }
    worst
}

/// Raises this test process's own open-files limit: the attacks open more than 1,024 sockets.
fn raise_own_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// Recipe: 1,500 connections each sending ~390 KB of headers that never end. Before: RSS 664 MB
/// and `/healthz` 2.8 s. Now a request head is capped (16 KiB), connections are capped with the
/// idlest evicted, and slow heads time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_with_endless_headers_cannot_grow_memory_or_stall_healthz() {
    raise_own_fd_limit();
    let (_tmp, checks, state) = dirs();
    let p = Probity::start(&checks, &state, &[]);
    p.wait_ready().await;
    let baseline = p.mem_kib("VmRSS");
    let target = addr(&p);
    let mut attackers = Vec::new();
    for i in 0..1500 {
        let target = target.clone();
        attackers.push(tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(&target).await else {
                return None;
            };
            let mut sent = 0usize;
            let head = format!("GET /json HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: ");
            if s.write_all(head.as_bytes()).await.is_err() {
                return Some(s);
            }
            let chunk = vec![b'a'; 8192];
            while sent < 390 * 1024 {
                if s.write_all(&chunk).await.is_err() {
                    break;
                }
                sent += chunk.len();
            }
            Some(s)
        }));
    }
    // While the attack goes on, health probes still answer quickly.
    let during = healthz_worst(&p, 10).await;
    let mut held = Vec::new();
    for a in attackers {
        held.extend(a.await.unwrap());
    }
    let after = healthz_worst(&p, 5).await;
    let peak = p.mem_kib("VmHWM");
    assert!(
        during < Duration::from_secs(1) && after < Duration::from_secs(1),
        "/healthz took {during:?} during the attack, {after:?} after"
    );
    assert!(
        peak < baseline + 96 * 1024,
        "peak RSS {peak} KiB against a baseline of {baseline} KiB"
    );
    let m = p.metrics().await;
    let open: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("probity_http_connections "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(open <= 512.0, "{open} connections open, over the cap");
    drop(held);
}

/// Recipe: `nofile` 1024 and 1,100 idle connections. Before: `/healthz` dead and every check
/// recorded `StartFailure`. Now descriptors for runs stay in reserve (the connection cap is
/// lowered to fit) and the idlest connection makes room for a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_at_the_open_files_limit_starve_neither_health_nor_runs() {
    raise_own_fd_limit();
    let (_tmp, checks, state) = dirs();
    write(
        &checks,
        "tick.yaml",
        &shell_check(
            "tick",
            "  runInterval: 1s\n  timeout: 10s\n",
            "probity report --ok",
        ),
    );
    // Asked for more connections than the limit allows: the cap is lowered to keep the reserve.
    let p = Probity::start_limited(&checks, &state, &["--http-max-connections", "2000"], 1024);
    p.wait_ready().await;
    p.wait_for("a first run", |d| count(d, "it/tick", "SuccessCount") >= 1)
        .await;
    let target = addr(&p);
    let mut idle = Vec::new();
    for _ in 0..1100 {
        if let Ok(s) = TcpStream::connect(&target).await {
            idle.push(s);
        }
    }
    let before = count(&p.json().await, "it/tick", "SuccessCount");
    assert!(healthz_worst(&p, 5).await < Duration::from_secs(1));
    let doc = p
        .wait_for("three more runs", |d| {
            count(d, "it/tick", "SuccessCount") >= before + 3
        })
        .await;
    let tick = detail(&doc, "it/tick");
    assert_eq!(tick["FailureCount"], 0, "no false failure: {tick:#}");
    assert_eq!(tick["OK"], true);
    let m = p.metrics().await;
    let evicted = m
        .lines()
        .find_map(|l| l.strip_prefix("probity_http_connections_closed_total{reason=\"evicted\"} "))
        .unwrap_or("0");
    assert!(evicted.parse::<f64>().unwrap() > 0.0, "{m}");
    let log = p.log.lock().unwrap().join("\n");
    assert!(
        log.contains("descriptors stay reserved for runs"),
        "the lowered cap is said once at start-up:\n{log}"
    );
    drop(idle);
}

/// Recipe: 50 connections with partial headers, then SIGTERM. Before: still running 40 s later.
#[tokio::test]
async fn sigterm_ends_within_the_grace_period_whatever_clients_do() {
    let (_tmp, checks, state) = dirs();
    let mut p = Probity::start(&checks, &state, &["--shutdown-grace", "1s"]);
    p.wait_ready().await;
    let target = addr(&p);
    let mut half = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(&target).await.unwrap();
        s.write_all(b"GET /json HTTP/1.1\r\nHost: x\r\nX-Half: ")
            .await
            .unwrap();
        half.push(s);
    }
    // One more with a request in flight on a keep-alive connection, then idle.
    let mut kept = TcpStream::connect(&target).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let t = Instant::now();
    let status = tokio::task::spawn_blocking(move || p.terminate())
        .await
        .unwrap();
    let took = t.elapsed();
    assert!(status.success(), "{status:?}");
    // Grace 1 s for runs, 2 s for requests in flight, and slack for a loaded machine.
    assert!(took < Duration::from_secs(6), "exit took {took:?}");
    drop(half);
}

/// Reads until the server closes the connection (EOF or reset); returns what it sent.
async fn until_closed(s: &mut TcpStream, within: Duration) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server kept the connection open past {within:?}"
    );
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn slow_heads_idle_connections_and_oversized_heads_are_closed() {
    let (_tmp, checks, state) = dirs();
    let p = Probity::start(
        &checks,
        &state,
        &[
            "--http-header-timeout",
            "500ms",
            "--http-idle-timeout",
            "1s",
        ],
    );
    p.wait_ready().await;
    let target = addr(&p);

    // A head that never ends: closed at the header deadline, with a 408.
    let mut slow = TcpStream::connect(&target).await.unwrap();
    slow.write_all(b"GET /json HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let said = until_closed(&mut slow, PATIENCE).await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        said.is_empty() || said.starts_with("HTTP/1.1 408"),
        "{said}"
    );

    // Never a byte: closed too.
    let mut silent = TcpStream::connect(&target).await.unwrap();
    let t = Instant::now();
    until_closed(&mut silent, PATIENCE).await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // One request, then idle: closed after the idle timeout, not kept forever.
    let mut kept = TcpStream::connect(&target).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let said = until_closed(&mut kept, PATIENCE).await;
    assert!(said.starts_with("HTTP/1.1 200"), "{said}");
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // A head over the cap is refused (431), not buffered.
    let mut big = TcpStream::connect(&target).await.unwrap();
    let mut head = b"GET /json HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 64 * 1024));
    head.extend_from_slice(b"\r\n\r\n");
    let _ = big.write_all(&head).await;
    let said = until_closed(&mut big, PATIENCE).await;
    assert!(
        said.is_empty() || said.starts_with("HTTP/1.1 431"),
        "{said}"
    );
    // And the server is fine.
    assert_eq!(p.status_of("/healthz").await, 200);
}

/// Recipes: eight 50 MB YAML files (before: `/healthz` timed out, checks stalled), `ln -s .
/// loop` twice (never ready, 96% CPU), and a 1,000-digit integer in one document (every
/// document of that file rejected). Now: big files are refused unread, loops are named and not
/// followed, the bad document alone is refused, and everything else loads at once.
#[tokio::test]
async fn a_hostile_checks_directory_loads_what_it_can_and_names_the_rest() {
    let (_tmp, checks, state) = dirs();
    for i in 0..8 {
        let f = std::fs::File::create(checks.join(format!("big-{i}.yaml"))).unwrap();
        f.set_len(50 << 20).unwrap();
    }
    std::os::unix::fs::symlink(".", checks.join("loop")).unwrap();
    std::fs::create_dir(checks.join("sub")).unwrap();
    std::os::unix::fs::symlink("..", checks.join("sub/loop")).unwrap();
    let good = |name: &str| shell_check(name, "  runInterval: 1h\n", "probity report --ok");
    let big_number = format!(
        "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: huge, namespace: it}}\nspec:\n  successThreshold: {}\n",
        "9".repeat(1000)
    );
    write(
        &checks,
        "mixed.yaml",
        &format!("{}---\n{big_number}---\n{}", good("first"), good("last")),
    );
    let start = Instant::now();
    let p = Probity::start(&checks, &state, &[]);
    p.wait_ready().await;
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(healthz_worst(&p, 5).await < Duration::from_secs(1));
    let doc = p
        .wait_for("the good checks' runs", |d| {
            count(d, "it/first", "SuccessCount") == 1 && count(d, "it/last", "SuccessCount") == 1
        })
        .await;
    let errors = doc["Errors"].to_string();
    for i in 0..8 {
        assert!(
            errors.contains(&format!(
                "big-{i}.yaml: is 52428800 bytes, over the 1048576 byte limit"
            )),
            "{errors}"
        );
    }
    assert!(
        errors.contains("(a symlink loop); not followed"),
        "{errors}"
    );
    assert!(
        errors.contains("mixed.yaml: document 2: not valid YAML"),
        "{errors}"
    );
}

/// Makes a FIFO at `path`.
fn mkfifo(path: &std::path::Path) {
    let name = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a plain syscall on a path we own.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0);
}

/// Whether this process can make device nodes (root, as under `.ci/run`).
fn can_mknod() -> bool {
    // SAFETY: a plain syscall with no arguments.
    unsafe { libc::geteuid() == 0 }
}

/// The entries of the checks folder no read may ever block on or read without end: a FIFO, a
/// link to a device that never ends (/dev/zero), a device node of its own (as root), a file over
/// the size cap, a link that loops. Each is named `NAME.yaml`, and each is listed in `/json`'s
/// `Errors` with why.
fn plant_hostile_entries(dir: &std::path::Path, prefix: &str) {
    mkfifo(&dir.join(format!("{prefix}fifo.yaml")));
    if can_mknod() {
        // /dev/zero's numbers: 1, 5.
        let node = dir.join(format!("{prefix}node.yaml"));
        let name = std::ffi::CString::new(node.to_str().unwrap()).unwrap();
        // SAFETY: a plain syscall on a path we own.
        let made =
            unsafe { libc::mknod(name.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 5)) };
        assert_eq!(made, 0, "mknod {}", node.display());
    }
    std::os::unix::fs::symlink("/dev/zero", dir.join(format!("{prefix}zero.yaml"))).unwrap();
    let big = format!("# {}\n", "x".repeat(2 << 20));
    write(dir, &format!("{prefix}big.yaml"), &big);
    let looped = dir.join(format!("{prefix}loop.yaml"));
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
}

fn hostile_errors(doc: &serde_json::Value, prefix: &str) -> Vec<(String, bool)> {
    let errors: Vec<String> = doc["Errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str().map(String::from))
        .collect();
    let mut refused = vec![
        ("fifo.yaml", "is a FIFO (named pipe), not a regular file"),
        ("zero.yaml", "is a character device, not a regular file"),
        ("big.yaml", "over the 1048576 byte limit"),
        ("loop.yaml", "is a symlink that loops"),
    ];
    if can_mknod() {
        refused.push(("node.yaml", "is a character device, not a regular file"));
    }
    refused
        .iter()
        .map(|(file, why)| {
            let name = format!("{prefix}{file}");
            let said = errors.iter().any(|e| e.contains(&name) && e.contains(why));
            (name, said)
        })
        .collect()
}

/// Recipe: a FIFO, a symlink to /dev/zero, a 2 MiB file and a symlink loop in the checks folder,
/// there at start and added while running. Before: no listening at all (the FIFO or /dev/zero
/// read forever, past 1.5 GB), the folder watch stopped for good, and SIGTERM ignored. Now each
/// is refused by type or size without blocking, named in `/json`, the valid check beside them
/// runs, new files are still picked up, and SIGTERM ends probity at once.
#[tokio::test]
async fn fifos_devices_huge_files_and_link_loops_never_block_the_checks_folder() {
    let (_tmp, checks, state) = dirs();
    write(
        &checks,
        "good.yaml",
        &shell_check("good", "  runInterval: 1h\n", "probity report --ok"),
    );
    plant_hostile_entries(&checks, "start-");
    let quick = ["--shutdown-grace", "1s", "--first-run-window", "1s"];
    let mut p = Probity::start(&checks, &state, &quick);
    // Listening and ready: the first read of the folder did not block on any of them.
    p.wait_ready().await;
    let doc = p
        .wait_for("the good check passed", |d| {
            count(d, "it/good", "SuccessCount") == 1
        })
        .await;
    for (name, said) in hostile_errors(&doc, "start-") {
        assert!(
            said,
            "{name} is not named in /json Errors: {}",
            doc["Errors"]
        );
    }
    assert_eq!(
        doc["OK"], false,
        "problems with the folder make the status not OK"
    );

    // Added while running: the watch goes on, names them, and still sees a new check.
    plant_hostile_entries(&checks, "later-");
    write(
        &checks,
        "later.yaml",
        &shell_check("later", "  runInterval: 1h\n", "probity report --ok"),
    );
    let doc = p
        .wait_for("the later check and the new refusals", |d| {
            count(d, "it/later", "SuccessCount") == 1
                && hostile_errors(d, "later-").iter().all(|(_, said)| *said)
        })
        .await;
    assert!(hostile_errors(&doc, "start-").iter().all(|(_, s)| *s));
    // Memory stays that of a small server: nothing was read without bound.
    let rss_mib = p.mem_kib("VmHWM") / 1024;
    assert!(rss_mib < 200, "peak RSS {rss_mib} MiB");

    let t = Instant::now();
    let status = tokio::task::spawn_blocking(move || p.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let took = t.elapsed();
    assert!(took < Duration::from_secs(6), "exit took {took:?}");
}

/// Every route answers with `nosniff`; every HTML page also with a content security policy that
/// allows no inline script or style but its own (by hash), no framing, and a referrer policy.
#[tokio::test]
async fn every_answer_says_nosniff_and_html_pages_forbid_framing_and_foreign_script() {
    let (_tmp, checks, state) = dirs();
    write(
        &checks,
        "good.yaml",
        &shell_check("good", "  runInterval: 1h\n", "probity report --ok"),
    );
    let quick = ["--run-token", "s3cret", "--first-run-window", "1s"];
    let p = Probity::start(&checks, &state, &quick);
    p.wait_ready().await;
    p.wait_for("the good check ran", |d| {
        count(d, "it/good", "SuccessCount") == 1
    })
    .await;
    let client = reqwest::Client::new();
    let html = [("/", "text/html"), ("/checks/it/good", "text/html")];
    let other = [
        ("GET", "/json"),
        ("GET", "/metrics"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/api/checks"),
        ("GET", "/api/checks/it/good"),
        ("GET", "/api/checks/it/good/logs"),
        ("GET", "/api/checks/it/nope"),
        ("GET", "/api/badges/it/good/status"),
        ("GET", "/api/badges/it/good/uptime/24h"),
        ("GET", "/no/such/route"),
        ("POST", "/check"),
        ("POST", "/api/run?namespace=it&healthcheck=good"),
    ];
    for (path, _) in html {
        let r = client
            .get(p.url(path))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        let h = r.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with("text/html"),
            "{path}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert!(h.contains_key("referrer-policy"), "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        for part in [
            "default-src 'none'",
            "frame-ancestors 'none'",
            "script-src 'sha256-",
            "style-src 'sha256-",
        ] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
    }
    for (method, path) in other {
        let r = client
            .request(method.parse().unwrap(), p.url(path))
            .send()
            .await
            .unwrap();
        let h = r.headers();
        assert_eq!(
            h.get("x-content-type-options").map(|v| v.to_str().unwrap()),
            Some("nosniff"),
            "{method} {path} ({})",
            r.status()
        );
    }
    // Run now cannot be asked for cross-site: a form post carries no token header, and a
    // cookie is never enough.
    let forged = client
        .post(p.url("/api/run?namespace=it&healthcheck=good"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "https://evil.example")
        .header("cookie", "token=s3cret")
        .body("token=s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
}
