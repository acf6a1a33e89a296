//! The local backend end to end: the real binary, real check processes, real HTTP.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{count, detail, dirs, shell_check, write, Probity, PATIENCE};

use serde_json::Value;

/// The state probity saved for `key`: the last line for it in the journal.
fn saved(state: &Path, key: &str) -> Value {
    let text = std::fs::read_to_string(state.join("state.jsonl")).unwrap();
    text.lines()
        .rev()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no state for {key} in {text}"))["status"]
        .clone()
}

fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .unwrap()
            .1
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

async fn wait_file(path: &Path) -> String {
    let start = std::time::Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.is_empty() && s.ends_with('\n') {
                return s;
            }
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{} never written",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn ok_and_failing_runs_with_the_kh_environment() {
    let (tmp, checks, state) = dirs();
    let p = Probity::start(&checks, &state, &[]);
    p.wait_ready().await;
    let env_file = tmp.path().join("env.txt");
    write(
        &checks,
        "ok.yaml",
        &shell_check(
            "ok",
            "  runInterval: 1h\n",
            &format!(
                "env | grep -E \"^(KH_|MY_POD)\" | sort > {0}.tmp && mv {0}.tmp {0}; probity report --ok",
                env_file.display()
            ),
        )
        .replace(
            "          command:",
            "          env:\n            - name: MY_POD\n              valueFrom: {fieldRef: {fieldPath: metadata.name}}\n          command:",
        ),
    );
    write(
        &checks,
        "bad.yaml",
        &shell_check(
            "bad",
            "  runInterval: 1h\n",
            "probity report --error \"db down\" \"cache cold\"",
        ),
    );
    let doc = p
        .wait_for("both runs", |d| {
            count(d, "it/ok", "SuccessCount") == 1 && count(d, "it/bad", "FailureCount") == 1
        })
        .await;
    let ok = detail(&doc, "it/ok");
    assert_eq!(ok["OK"], true);
    assert_eq!(ok["LastOutcome"], "Success");
    assert_eq!(ok["Pending"], false);
    let bad = detail(&doc, "it/bad");
    assert_eq!(bad["OK"], false);
    assert_eq!(bad["Errors"], serde_json::json!(["db down", "cache cold"]));
    assert_eq!(doc["OK"], false);
    assert_eq!(doc["Errors"], serde_json::json!(["db down", "cache cold"]));

    let env = std::fs::read_to_string(&env_file).unwrap();
    let uuid = ok["uuid"].as_str().unwrap();
    // The process gets the run's credential; /json shows only its public id.
    let credential: uuid::Uuid = env
        .lines()
        .find_map(|l| l.strip_prefix("KH_RUN_UUID="))
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(credential.to_string(), uuid);
    assert_eq!(run_id(credential).to_string(), uuid);
    assert!(
        env.contains(&format!(
            "KH_REPORTING_URL={}/check?kh-run-uuid={credential}\n",
            p.base
        )),
        "{env}"
    );
    assert!(env.contains("KH_POD_NAMESPACE=it\n"), "{env}");
    assert!(
        env.contains(&format!("MY_POD=ok-{}\n", &uuid.replace('-', "")[..5])),
        "{env}"
    );
    let deadline: i64 = env
        .lines()
        .find_map(|l| l.strip_prefix("KH_CHECK_RUN_DEADLINE="))
        .unwrap()
        .parse()
        .unwrap();
    let last_run = chrono::DateTime::parse_from_rfc3339(ok["LastRun"].as_str().unwrap()).unwrap();
    // Default timeout 30s.
    assert!(
        (deadline - last_run.timestamp() - 30).abs() <= 1,
        "{deadline} vs {last_run}"
    );
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let (tmp, checks, state) = dirs();
    let p = Probity::start(&checks, &state, &[]);
    p.wait_ready().await;
    let pids = tmp.path().join("pids");
    write(
        &checks,
        "slow.yaml",
        &shell_check(
            "slow",
            "  runInterval: 1h\n  timeout: 1s\n",
            &format!("sleep 300 & echo \"$$ $!\" > {}; wait", pids.display()),
        ),
    );
    let line = wait_file(&pids).await;
    let ids: Vec<i32> = line
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(ids.iter().all(|p| pid_alive(*p)));
    let doc = p
        .wait_for("the timeout", |d| {
            detail(d, "it/slow")["LastOutcome"] == "Timeout"
        })
        .await;
    let slow = detail(&doc, "it/slow");
    assert_eq!(slow["OK"], false);
    assert_eq!(
        slow["Errors"][0],
        "timeout after 1s: no report by the deadline; the run was stopped"
    );
    let start = std::time::Instant::now();
    while ids.iter().any(|p| pid_alive(*p)) {
        assert!(
            start.elapsed() < PATIENCE,
            "check processes still alive: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn exit_without_report_fails_at_once_with_code_and_output() {
    let (_tmp, checks, state) = dirs();
    let p = Probity::start(&checks, &state, &[]);
    p.wait_ready().await;
    write(
        &checks,
        "crash.yaml",
        &shell_check(
            "crash",
            "  runInterval: 1h\n  timeout: 5m\n",
            "echo connecting to db; echo auth failed >&2; exit 3",
        ),
    );
    let doc = p
        .wait_for("the crash", |d| {
            detail(d, "it/crash")["LastOutcome"] == "Crash"
        })
        .await;
    let err = detail(&doc, "it/crash")["Errors"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("exited with code 3 without reporting; last output:"),
        "{err}"
    );
    assert!(
        err.contains("connecting to db") && err.contains("auth failed"),
        "{err}"
    );
    // Not a timeout minutes later: the run took well under its 5m timeout.
    let took = detail(&doc, "it/crash")["RunDuration"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!took.contains('m') || took.ends_with("ms"), "{took}");
}

#[tokio::test]
async fn duplicate_and_late_reports_are_refused() {
    let (tmp, checks, state) = dirs();
    let p = Probity::start(&checks, &state, &[]);
    p.wait_ready().await;
    let dup = tmp.path().join("dup");
    write(
        &checks,
        "dup.yaml",
        &shell_check(
            "dup",
            "  runInterval: 1h\n",
            &format!(
                "probity report --ok; probity report --ok; echo \"$?\" > {0}.again; probity report --error 'changed my mind' 2> {0}.err; echo \"$?\" > {0}.code",
                dup.display()
            ),
        ),
    );
    let code = wait_file(&dup.with_extension("code")).await;
    assert_eq!(
        wait_file(&dup.with_extension("again")).await.trim(),
        "0",
        "the same verdict again is a retry, answered 200"
    );
    assert_eq!(code.trim(), "2", "a refused report exits non-zero");
    let err = std::fs::read_to_string(dup.with_extension("err")).unwrap();
    assert!(
        err.contains("report refused: 400") && err.contains("already reported"),
        "{err}"
    );
    let doc = p
        .wait_for("one success", |d| count(d, "it/dup", "SuccessCount") == 1)
        .await;
    assert_eq!(count(&doc, "it/dup", "FailureCount"), 0);

    // Late: take the run's credential from its process, report after its deadline.
    let cred = tmp.path().join("late-cred");
    write(
        &checks,
        "late.yaml",
        &shell_check(
            "late",
            "  runInterval: 1h\n  timeout: 1s\n",
            &format!("echo $KH_RUN_UUID > {}; sleep 60", cred.display()),
        ),
    );
    let uuid = wait_file(&cred).await.trim().to_string();
    p.wait_for("its timeout", |d| {
        detail(d, "it/late")["LastOutcome"] == "Timeout"
    })
    .await;
    let resp = reqwest::Client::new()
        .post(p.url("/check"))
        .header("kh-run-uuid", &uuid)
        .header("content-type", "application/json")
        .body(r#"{"OK":true,"Errors":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 410);
    assert!(resp.text().await.unwrap().contains("timed out"));
    let doc = p.json().await;
    assert_eq!(count(&doc, "it/late", "SuccessCount"), 0);
    assert_eq!(count(&doc, "it/late", "FailureCount"), 1);
}

#[tokio::test]
async fn report_endpoint_protocol_over_http() {
    let (tmp, checks, state) = dirs();
    let p = Probity::start(&checks, &state, &[]);
    p.wait_ready().await;
    let cred = tmp.path().join("cred");
    write(
        &checks,
        "wait.yaml",
        &shell_check(
            "wait",
            "  runInterval: 1h\n  timeout: 1m\n",
            &format!("echo $KH_RUN_UUID > {}; sleep 50", cred.display()),
        ),
    );
    let uuid = wait_file(&cred).await.trim().to_string();
    let doc = p
        .wait_for("the run", |d| detail(d, "it/wait")["Running"] == true)
        .await;
    let shown = detail(&doc, "it/wait")["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let c = reqwest::Client::new();
    let post = |path: &str| c.post(p.url(path));
    let status = |r: reqwest::Response| r.status().as_u16();

    // Forged: the id /json shows is not the run's credential, so a verdict sent with it is an
    // unknown run, and the real report still counts (below).
    assert_eq!(run_id(uuid.parse().unwrap()).to_string(), shown);
    for forged in [
        post("/check").header("kh-run-uuid", &shown),
        post(&format!("/check?kh-run-uuid={shown}")),
    ] {
        let r = forged
            .header("content-type", "application/json")
            .body(r#"{"OK":false,"Errors":["forged"]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(status(r), 400);
    }
    let m = p.metrics().await;
    assert!(!m.contains(&uuid), "the credential is not in metrics");
    let page = c
        .get(p.url("/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !page.contains(&uuid),
        "the credential is not on the dashboard"
    );
    assert!(!p.json().await.to_string().contains(&uuid));

    assert_eq!(status(c.get(p.url("/check")).send().await.unwrap()), 405);
    let r = post("/check")
        .header("kh-run-uuid", &uuid)
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 415);
    let r = post("/check")
        .header("kh-run-uuid", &uuid)
        .header("content-type", "application/json")
        .body(vec![b' '; 70_000])
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 413);
    let r = post("/check")
        .header("content-type", "application/json")
        .body(r#"{"OK":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 400);
    let r = post(&format!("/check?kh-run-uuid={}", uuid::Uuid::new_v4()))
        .header("kh-run-uuid", &uuid)
        .body(r#"{"OK":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 400);
    let r = post("/check")
        .header("kh-run-uuid", &uuid)
        .body(r#"{"OK":false,"Errors":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 400);
    let body = r#"{"OK":false,"Errors":["upstream 503"],"Node":"n1"}"#;
    // v2's path, and the UUID only in the URL, as old clients that send no header do.
    let r = post(&format!("/externalCheckStatus?kh-run-uuid={uuid}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(status(r), 200);
    let doc = p
        .wait_for("the failure", |d| count(d, "it/wait", "FailureCount") == 1)
        .await;
    assert_eq!(detail(&doc, "it/wait")["Errors"][0], "upstream 503");
    // The still-running process was told nothing; its slot is held until it exits or its deadline.
    let m = p.metrics().await;
    assert!(m.contains("probity_reports_total{code=\"200\"} 1"), "{m}");
    assert!(m.contains("probity_reports_total{code=\"415\"} 1"), "{m}");
    let log = p.log.lock().unwrap().join("\n");
    assert!(!log.contains(&uuid), "the credential is not logged:\n{log}");
}

#[tokio::test]
async fn an_invalid_check_is_shown_beside_valid_ones() {
    let (_tmp, checks, state) = dirs();
    write(
        &checks,
        "bad.yaml",
        &shell_check(
            "bad",
            "  runInterval: 5x\n  timeout: 1s\n",
            "probity report --ok",
        ),
    );
    write(
        &checks,
        "good.yaml",
        &shell_check("good", "  runInterval: 1s\n", "probity report --ok"),
    );
    write(&checks, "broken.yaml", "spec: [not, closed\n");
    let p = Probity::start(&checks, &state, &[]);
    let doc = p
        .wait_for("the good check to run", |d| {
            count(d, "it/good", "SuccessCount") >= 1
        })
        .await;
    let bad = detail(&doc, "it/bad");
    assert_eq!(bad["OK"], false);
    assert_eq!(
        bad["Invalid"],
        "spec.runInterval: \"5x\" has unknown unit \"x\" (use ns, us, ms, s, m, h or d)"
    );
    assert_eq!(
        count(&doc, "it/bad", "SuccessCount") + count(&doc, "it/bad", "FailureCount"),
        0
    );
    let errors: Vec<&str> = doc["Errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("invalid check: spec.runInterval")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("broken.yaml: not valid YAML")),
        "{errors:?}"
    );
    // Fixing the file makes it valid without a restart.
    write(
        &checks,
        "bad.yaml",
        &shell_check("bad", "  runInterval: 5m\n", "probity report --ok"),
    );
    p.wait_for("the fixed check to run", |d| {
        count(d, "it/bad", "SuccessCount") == 1
    })
    .await;
}

#[tokio::test]
async fn restart_even_kill_9_keeps_state_and_does_not_rerun() {
    let (_tmp, checks, state) = dirs();
    let mut p = Probity::start(&checks, &state, &[]);
    p.wait_ready().await;
    write(
        &checks,
        "hourly.yaml",
        &shell_check(
            "hourly",
            "  runInterval: 1h\n",
            "probity report --error nope",
        ),
    );
    let before = p
        .wait_for("a run", |d| count(d, "it/hourly", "FailureCount") == 1)
        .await;
    // The outcome is on disk before the report was answered.
    assert_eq!(saved(&state, "it/hourly")["failureCount"], 1);
    p.kill9();

    let p = Probity::start(&checks, &state, &[]);
    p.wait_ready().await;
    // Once loaded, the next run is decided: an hour after the last start, as before the kill.
    let after = p.json().await;
    let (b, a) = (detail(&before, "it/hourly"), detail(&after, "it/hourly"));
    for field in [
        "LastRun",
        "uuid",
        "Errors",
        "FailureCount",
        "NextRun",
        "OK",
        "LastOutcome",
        "Uptime",
    ] {
        assert_eq!(a[field], b[field], "{field}");
    }
    // The long view is in the journal too: today's aggregate, with its failing run.
    assert_eq!(a["Uptime"]["24h"], 0.0);
    let check: Value = p.get_json("/api/checks/it/hourly").await;
    let today = &check["status"]["days"][0];
    assert_eq!(
        (today["runs"].as_i64(), today["failures"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(check["status"]["hours"][0]["runs"], 1);
}

#[tokio::test]
async fn uptime_in_json_the_check_api_and_metrics() {
    let (_tmp, checks, state) = dirs();
    // The uptime gauges are per-check detail, exported when asked for.
    let p = Probity::start(&checks, &state, &["--per-check-detail"]);
    p.wait_ready().await;
    // Three runs a check, one second apart: one passes every time, one never does.
    write(
        &checks,
        "up.yaml",
        &shell_check("up", "  runInterval: 1s\n", "probity report --ok"),
    );
    write(
        &checks,
        "down.yaml",
        &shell_check(
            "down",
            "  runInterval: 1s\n",
            "probity report --error broken",
        ),
    );
    let doc = p
        .wait_for("three runs each", |d| {
            count(d, "it/up", "SuccessCount") >= 3 && count(d, "it/down", "FailureCount") >= 3
        })
        .await;
    for window in ["24h", "7d", "30d"] {
        assert_eq!(detail(&doc, "it/up")["Uptime"][window], 1.0, "{window}");
        assert_eq!(detail(&doc, "it/down")["Uptime"][window], 0.0, "{window}");
    }
    // A check that has not run: no uptime, not 0.
    write(
        &checks,
        "later.yaml",
        &shell_check("later", "  runInterval: 1h\n  initialDelay: 1h\n", "true"),
    );
    let doc = p
        .wait_for("the new check", |d| !detail(d, "it/later").is_null())
        .await;
    assert_eq!(detail(&doc, "it/later")["Uptime"]["24h"], Value::Null);

    let check: Value = p.get_json("/api/checks/it/down").await;
    let today = &check["status"]["days"][0];
    assert_eq!(
        today["day"],
        chrono::Utc::now().format("%Y-%m-%d").to_string()
    );
    assert!(today["failures"].as_i64() >= Some(3), "{today}");
    assert!(today["durationMaxMs"].as_i64() > Some(0), "{today}");
    assert_eq!(check["detail"]["Uptime"]["24h"], 0.0);
    let missing = reqwest::get(p.url("/api/checks/it/nope")).await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);

    // Badges: SVG, the verdict and the uptime.
    let svg = async |path: &str| {
        let r = reqwest::get(p.url(path)).await.unwrap();
        let code = r.status().as_u16();
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        (code, ct, r.text().await.unwrap())
    };
    let (code, ct, body) = svg("/api/badges/it/up/status").await;
    assert_eq!((code, ct.as_str()), (200, "image/svg+xml"));
    assert!(
        body.starts_with("<svg") && body.contains("<title>up: passing</title>"),
        "{body}"
    );
    let (_, _, body) = svg("/api/badges/it/down/status").await;
    assert!(body.contains("<title>down: failing</title>"), "{body}");
    let (_, _, body) = svg("/api/badges/it/up/uptime/7d").await;
    assert!(body.contains("<title>up 7d: 100%</title>"), "{body}");
    let (_, _, body) = svg("/api/badges/it/down/uptime/24h").await;
    assert!(body.contains("<title>down 24h: 0.00%</title>"), "{body}");
    let (_, _, body) = svg("/api/badges/it/later/uptime/30d").await;
    assert!(body.contains("<title>later 30d: no runs</title>"), "{body}");
    assert_eq!(svg("/api/badges/it/nope/status").await.0, 404);
    assert_eq!(svg("/api/badges/it/up/uptime/1y").await.0, 404);

    let metrics = p.metrics().await;
    let line = |name: &str, window: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("probity_check_uptime_ratio{")
                    && l.contains(&format!("check=\"{name}\""))
                    && l.contains(&format!("window=\"{window}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
    };
    assert_eq!(line("up", "24h").as_deref(), Some("1.0"));
    assert_eq!(line("down", "30d").as_deref(), Some("0.0"));
    assert_eq!(line("later", "24h"), None, "no series without runs");
}

#[tokio::test]
async fn a_run_in_flight_survives_a_restart_and_its_report_counts() {
    let (tmp, checks, state) = dirs();
    // The orphaned check reports to the URL it was given, so the new process listens there.
    let addr = common::free_addr();
    let mut p = Probity::start_on(&addr, &checks, &state, &[]);
    p.wait_ready().await;
    let go = tmp.path().join("go");
    // Waits for a signal file, then reports: probity is restarted in between.
    write(
        &checks,
        "long.yaml",
        &shell_check(
            "long",
            "  runInterval: 1h\n  timeout: 2m\n",
            &format!(
                "while [ ! -e {} ]; do sleep 0.05; done; probity report --ok",
                go.display()
            ),
        ),
    );
    p.wait_for("the run", |d| detail(d, "it/long")["Running"] == true)
        .await;
    p.kill9();
    let p = Probity::start_on(&addr, &checks, &state, &[]);
    p.wait_ready().await;
    let doc = p.json().await;
    assert_eq!(
        detail(&doc, "it/long")["Running"],
        true,
        "adopted, not restarted"
    );
    std::fs::write(&go, "").unwrap();
    let doc = p
        .wait_for("the adopted run's report", |d| {
            count(d, "it/long", "SuccessCount") == 1
        })
        .await;
    assert_eq!(count(&doc, "it/long", "FailureCount"), 0);
}

#[tokio::test]
async fn status_json_filters_by_namespace_and_serves_html_to_browsers() {
    let (_tmp, checks, state) = dirs();
    write(
        &checks,
        "a.yaml",
        &shell_check("a", "  runInterval: 1h\n", "probity report --ok"),
    );
    write(
        &checks,
        "b.yaml",
        &shell_check("b", "  runInterval: 1h\n", "probity report --ok")
            .replace("namespace: it", "namespace: other"),
    );
    let p = Probity::start(&checks, &state, &["--identity", "replica-7"]);
    p.wait_ready().await;
    let doc = p.json().await;
    // A check that has not run yet is pending, not failing.
    assert_eq!(doc["OK"], true);
    assert_eq!(detail(&doc, "it/a")["Pending"], true);
    assert_eq!(doc["CurrentMaster"], "replica-7");
    let only: Value = reqwest::get(p.url("/json?namespace=other"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys: Vec<&String> = only["CheckDetails"].as_object().unwrap().keys().collect();
    assert_eq!(keys, vec!["other/b"]);
    let root: Value = reqwest::get(p.url("/"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(root["CheckDetails"]["it/a"].is_object());
    let html = reqwest::Client::new()
        .get(p.url("/"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("<title>probity</title>"));
    assert_eq!(p.status_of("/healthz").await, 200);
}

#[tokio::test]
async fn metrics_pass_promtool() {
    let (_tmp, checks, state) = dirs();
    write(
        &checks,
        "a.yaml",
        &shell_check(
            "a",
            "  runInterval: 1s\n",
            "probity report --error 'say \"hi\"'",
        ),
    );
    let p = Probity::start(&checks, &state, &[]);
    p.wait_for("a run", |d| count(d, "it/a", "FailureCount") >= 1)
        .await;
    let text = p.metrics().await;
    assert!(text.contains("error=\"say \\\"hi\\\"\""), "{text}");
    if !common::need_tool("promtool", "apt-get install prometheus") {
        return;
    }
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool: {report}\n{text}"
    );
}

#[tokio::test]
async fn sigterm_lets_runs_in_flight_finish() {
    let (_tmp, checks, state) = dirs();
    let mut p = Probity::start(&checks, &state, &["--shutdown-grace", "20s"]);
    p.wait_ready().await;
    write(
        &checks,
        "slowish.yaml",
        &shell_check(
            "slowish",
            "  runInterval: 1h\n",
            "sleep 1; probity report --ok",
        ),
    );
    p.wait_for("the run", |d| detail(d, "it/slowish")["Running"] == true)
        .await;
    let status = p.terminate();
    assert!(status.success(), "{status:?}");
    let saved = saved(&state, "it/slowish");
    assert_eq!(
        saved["successCount"], 1,
        "the run finished and was recorded before exit"
    );
    // Idle: no run UUID (empty strings are left out of the status).
    assert_eq!(saved["currentUUID"].as_str().unwrap_or(""), "");
}

#[tokio::test]
async fn manual_runs_need_the_bearer_token_and_are_off_without_one() {
    let (_tmp, checks, state) = dirs();
    let post = async |p: &Probity, query: &str, token: Option<&str>| {
        let mut r = reqwest::Client::new().post(p.url(&format!("/api/run{query}")));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    {
        let p = Probity::start(&checks, &state, &[]);
        p.wait_ready().await;
        let (code, body) = post(&p, "?namespace=it&healthcheck=hourly", Some("x")).await;
        assert_eq!(code, 404);
        assert!(body.contains("--run-token"), "{body}");
    }
    let p = Probity::start(&checks, &state, &["--run-token", "s3cret"]);
    p.wait_ready().await;
    // Added while running: it runs at once, then not for an hour.
    write(
        &checks,
        "c.yaml",
        &shell_check("hourly", "  runInterval: 1h\n", "probity report --ok"),
    );
    p.wait_for("the first run", |d| {
        count(d, "it/hourly", "SuccessCount") >= 1
    })
    .await;
    let q = "?namespace=it&healthcheck=hourly";
    assert_eq!(post(&p, q, None).await.0, 401);
    assert_eq!(post(&p, q, Some("s3cre")).await.0, 401);
    assert_eq!(post(&p, "?namespace=it", Some("s3cret")).await.0, 400);
    assert_eq!(
        post(&p, "?namespace=it&healthcheck=nope", Some("s3cret"))
            .await
            .0,
        404
    );
    let (code, body) = post(&p, q, Some("s3cret")).await;
    assert_eq!((code, body.as_str()), (202, "run of it/hourly requested\n"));
    p.wait_for("the manual run", |d| {
        count(d, "it/hourly", "SuccessCount") >= 2
    })
    .await;
}

/// The public id of the run whose credential is `credential`.
fn run_id(credential: uuid::Uuid) -> probity::api::RunId {
    let credential: probity::api::RunCredential = credential.to_string().parse().unwrap();
    credential.run_id()
}

#[tokio::test]
async fn a_test_that_kills_probity_leaves_no_check_process_behind() {
    let (tmp, checks, state) = dirs();
    let pidfile = tmp.path().join("pid");
    // A run that would outlive probity (by design: a restarted probity adopts it).
    common::write(
        &checks,
        "slow.yaml",
        &common::shell_check(
            "slow",
            "  runInterval: 1h\n  timeout: 10m\n",
            &format!("echo $$ > {}; sleep 600", pidfile.display()),
        ),
    );
    let mut p = Probity::start(&checks, &state, &[]);
    p.wait_ready().await;
    let pid: i32 = wait_file(&pidfile).await.trim().parse().unwrap();
    assert!(pid_alive(pid));
    p.kill9();
    assert!(
        pid_alive(pid),
        "the run outlives probity's death, as designed"
    );
    drop(p);
    let start = std::time::Instant::now();
    while pid_alive(pid) {
        assert!(start.elapsed() < PATIENCE, "run {pid} left behind");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Locally a resource probe reads the cluster of `--kubeconfig`: one that cannot be read fails
/// the run saying which file and why, and the other checks run on.
#[tokio::test]
async fn a_resource_probe_without_a_usable_kubeconfig_says_which_and_why() {
    let (_tmp, checks, state) = dirs();
    write(
        &checks,
        "cert.yaml",
        "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {name: cert, namespace: it}\nspec:\n  runInterval: 1h\n  failureThreshold: 1\n  probe:\n    resource: {apiVersion: cert-manager.io/v1, kind: Certificate, name: web-tls}\n",
    );
    write(
        &checks,
        "ok.yaml",
        &shell_check("ok", "  runInterval: 1h\n", "probity report --ok"),
    );
    let p = Probity::start(
        &checks,
        &state,
        &["--kubeconfig", "/nonexistent/kubeconfig"],
    );
    let d = p
        .wait_for("the resource probe's run", |d| {
            d["CheckDetails"]["it/cert"]["Errors"][0].is_string()
                && d["CheckDetails"]["it/ok"]["LastOutcome"] == "Success"
        })
        .await;
    let error = d["CheckDetails"]["it/cert"]["Errors"][0].as_str().unwrap();
    assert!(
        error.starts_with("kubeconfig /nonexistent/kubeconfig: "),
        "{error}"
    );
}

/// A report may carry numbers beside its verdict: kept in the run's history, exported as
/// `probity_check_value`.
#[tokio::test]
async fn values_reported_with_a_verdict_are_kept_and_exported() {
    let (_tmp, checks, state) = dirs();
    write(
        &checks,
        "vals.yaml",
        &shell_check(
            "vals",
            "  runInterval: 1h\n",
            "probity report --ok --value queue_depth=12 --value p99_ms=3.5",
        ),
    );
    let p = Probity::start(&checks, &state, &[]);
    p.wait_for("the run", |d| count(d, "it/vals", "SuccessCount") >= 1)
        .await;
    let metrics = p.metrics().await;
    // As a scrape reads it: the series, then a number.
    for (name, value) in [("queue_depth", 12.0), ("p99_ms", 3.5)] {
        let series =
            format!("probity_check_value{{check=\"vals\",namespace=\"it\",name=\"{name}\"}}");
        let got = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series)?.trim().parse::<f64>().ok());
        assert_eq!(got, Some(value), "{series} in\n{metrics}");
    }
    let page = p.get_json("/api/checks/it/vals").await;
    assert_eq!(
        page["status"]["history"][0]["values"],
        serde_json::json!({"p99_ms": 3.5, "queue_depth": 12.0})
    );
}

/// A probe that misses only what is marked `severity: warning` is degraded: OK for
/// Kuberhealthy's clients, said in `/json`, the page's API and a metric.
#[tokio::test]
async fn a_probe_missing_only_warnings_is_degraded_and_says_so_everywhere() {
    let (_tmp, checks, state) = dirs();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(|| async { ([("x-version", "2.3.1")], r#"{"status":"UP"}"#) }),
    );
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    write(
        &checks,
        "web.yaml",
        &format!(
            "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: web, namespace: it}}\nspec:\n  runInterval: 1h\n  failureThreshold: 1\n  probe:\n    httpGet:\n      url: http://{addr}/health\n      assertions:\n        - {{jsonPath: $.status, equals: UP}}\n        - {{header: X-Version, matches: '^3\\.', severity: warning}}\n"
        ),
    );
    let p = Probity::start(&checks, &state, &[]);
    let d = p
        .wait_for("the probe's run", |d| {
            count(d, "it/web", "SuccessCount") >= 1
        })
        .await;
    let web = &d["CheckDetails"]["it/web"];
    assert_eq!(web["OK"], true, "{web}");
    assert_eq!(web["Errors"], serde_json::json!([]));
    assert_eq!(web["Degraded"], true);
    assert_eq!(web["Standing"], "Degraded");
    assert_eq!(
        web["Warnings"][0],
        format!("GET http://{addr}/health: status 200: header X-Version is \"2.3.1\", expected to match /^3\\./")
    );
    let metrics = p.metrics().await;
    let degraded = metrics.lines().find_map(|l| {
        l.strip_prefix("probity_check_degraded{check=\"web\",namespace=\"it\"}")?
            .trim()
            .parse::<f64>()
            .ok()
    });
    assert_eq!(degraded, Some(1.0), "{metrics}");
    assert!(
        metrics.contains("kuberhealthy_check{check=\"web\",namespace=\"it\",status=\"1\""),
        "still OK for Kuberhealthy's dashboards"
    );
    let list = p.get_json("/api/checks?filter=degraded").await;
    assert_eq!(list["counts"]["degraded"], 1);
    assert_eq!(list["checks"][0]["state"], "degraded");
}

/// A heartbeat check over real HTTP: the token guards it, pings are runs, `/fail` fails it,
/// `probity report --heartbeat` pings it, and a ping outlives a kill -9.
#[tokio::test]
async fn heartbeat_pings_over_http_need_the_token_and_are_kept() {
    let (_tmp, checks, state) = dirs();
    let token = "s3cret-heartbeat-token";
    let hash = probity::api::heartbeat::token_hash(token);
    write(
        &checks,
        "nightly.yaml",
        &format!("apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: nightly, namespace: it}}\nspec:\n  heartbeat: {{period: 1d, grace: 1h, tokenHash: '{hash}'}}\n"),
    );
    write(
        &checks,
        "pod.yaml",
        &shell_check("pod", "  runInterval: 1h\n", "probity report --ok"),
    );
    let mut p = Probity::start(&checks, &state, &[]);
    p.wait_ready().await;
    let http = reqwest::Client::new();
    let post = |path: &str, token: Option<&str>, body: &str| {
        let mut r = http.post(p.url(path)).body(body.to_string());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    // Wrong or missing token: 401, and nothing recorded.
    for bad in [None, Some("guess")] {
        let r = post("/api/heartbeat/it/nightly", bad, "").await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
    }
    // Unknown, or not a heartbeat check: 404 saying which.
    let r = post("/api/heartbeat/it/ghost", Some(token), "")
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.text().await.unwrap().trim(),
        "no heartbeat check it/ghost"
    );
    let r = post("/api/heartbeat/it/pod", Some(token), "")
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("it/pod is not a heartbeat check"));
    let d = p.json().await;
    assert_eq!(
        d["CheckDetails"]["it/nightly"]["Pending"], true,
        "nothing recorded yet"
    );
    // A ping: a passing run.
    let r = post("/api/heartbeat/it/nightly", Some(token), "")
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let d = p.json().await;
    assert_eq!(d["CheckDetails"]["it/nightly"]["OK"], true);
    assert_eq!(count(&d, "it/nightly", "SuccessCount"), 1);
    // The job fails: the check fails with what it said.
    let r = post(
        "/api/heartbeat/it/nightly/fail",
        Some(token),
        "backup: disk full",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let d = p.json().await;
    assert_eq!(d["CheckDetails"]["it/nightly"]["OK"], false);
    assert_eq!(
        d["CheckDetails"]["it/nightly"]["Errors"][0],
        "the job reported a failure: backup: disk full"
    );
    // The job's own client: start, then success.
    for args in [&["--start"][..], &["--ok"][..]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_probity"))
            .args(["report", "--heartbeat", "it/nightly", "--url", &p.base])
            .args(args)
            .env("PROBITY_HEARTBEAT_TOKEN", token)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let d = p.json().await;
    assert_eq!(d["CheckDetails"]["it/nightly"]["OK"], true);
    assert_eq!(count(&d, "it/nightly", "SuccessCount"), 2);
    // A bad token through the client: a clear refusal, exit 1.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_probity"))
        .args([
            "report",
            "--heartbeat",
            "it/nightly",
            "--url",
            &p.base,
            "--ok",
        ])
        .env("PROBITY_HEARTBEAT_TOKEN", "nope")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("report refused: 401"));
    // Durable: after kill -9 the pings are still there, and no miss is due before a day.
    let before = p.get_json("/api/checks/it/nightly").await["status"].clone();
    p.kill9();
    let p = Probity::start(&checks, &state, &[]);
    p.wait_ready().await;
    let after = p.get_json("/api/checks/it/nightly").await["status"].clone();
    assert_eq!(after["lastPingUnix"], before["lastPingUnix"]);
    assert!(after["lastPingUnix"].is_i64());
    assert_eq!(after["successCount"], 2);
    let next = after["nextRunUnix"].as_i64().unwrap();
    let last = after["lastPingUnix"].as_i64().unwrap();
    assert_eq!(
        next,
        last + 86_400 + 3_600,
        "the next miss counts from the last ping"
    );
}
