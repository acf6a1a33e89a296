//! Notifications as receivers get them: a real `probity serve` with shell checks that fail and
//! recover on demand, posting to a capturing HTTP server on loopback (webhook, Slack and
//! PagerDuty shapes) and to a real Alertmanager (Debian's `prometheus-alertmanager`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::capture::Capture;
use common::{alerting_config, count, dirs, shell_check, wait_up_to, write, Probity, PATIENCE};
use serde_json::Value;

/// A check that fails with "db down" while `flag` exists, runs every second.
fn flapping(name: &str, flag: &Path, extra_meta: &str) -> String {
    let script = format!(
        "if [ -e {} ]; then probity report --error \"db down\"; else probity report --ok; fi",
        flag.display()
    );
    shell_check(name, "  runInterval: 1s\n  timeout: 10s\n", &script).replacen(
        "  namespace: it\n",
        &format!("  namespace: it\n{extra_meta}"),
        1,
    )
}

async fn status(p: &Probity, name: &str) -> Value {
    p.get_json(&format!("/api/checks/it/{name}")).await["status"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_state_change_reaches_each_receiver_once_across_a_restart() {
    let (tmp, checks, state) = dirs();
    let (cap, base) = Capture::start(0).await;
    let flag = tmp.path().join("failing");
    std::fs::write(&flag, "").unwrap();
    write(
        &checks,
        "flap.yaml",
        &flapping("flap", &flag, "  labels: {team: db}\n"),
    );
    // Failing all along, but opted out.
    write(
        &checks,
        "quiet.yaml",
        &flapping(
            "quiet",
            &flag,
            "  annotations: {probity.dev/notify: \"false\"}\n  labels: {team: db}\n",
        ),
    );
    let cfg = alerting_config(
        tmp.path(),
        &format!(
            r#"
externalURL: http://probity.test:8080
receivers:
  - name: hook
    webhook: {{url: "{base}/hook", headers: {{Authorization: "Bearer t"}}}}
  - name: chat
    slack: {{url: "{base}/slack"}}
  - name: pager
    pagerduty: {{routingKey: rk, url: "{base}/pd"}}
routes:
  - receiver: hook
  - receiver: chat
    sendResolved: false
  - receiver: pager
    matchLabels: {{team: db}}
"#
        ),
    );
    let args = ["--alerting-config", cfg.as_str()];
    let mut p = Probity::start(&checks, &state, &args);
    p.wait_ready().await;

    cap.wait("the first failure at every receiver", |c| {
        !c.at("hook").is_empty() && !c.at("slack").is_empty() && !c.at("pd").is_empty()
    })
    .await;
    let hook = &cap.at("hook")[0];
    assert_eq!(hook.body["check"], "flap");
    assert_eq!(hook.body["namespace"], "it");
    assert_eq!(hook.body["state"], "failing");
    assert_eq!(hook.body["errors"], serde_json::json!(["db down"]));
    assert_eq!(hook.body["link"], "http://probity.test:8080/checks/it/flap");
    assert_eq!(hook.body["summary"], "it/flap is failing");
    let since = hook.body["since"].as_str().unwrap().to_string();
    assert!(
        hook.id.starts_with("it/flap/") && hook.id.ends_with("/firing"),
        "{}",
        hook.id
    );
    let slack = cap.at("slack")[0].body["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        slack.starts_with(":red_circle: *it/flap* is failing\n> db down"),
        "{slack}"
    );
    let pd = &cap.at("pd")[0].body;
    assert_eq!(pd["event_action"], "trigger");
    assert_eq!(pd["dedup_key"], "probity/it/flap");
    assert_eq!(pd["routing_key"], "rk");

    // Recorded in the state, then probity dies and comes back: nothing is told again.
    let recorded = wait_up_to(PATIENCE, "the three records", async || {
        let st = status(&p, "flap").await;
        (st["alerts"].as_array().map_or(0, Vec::len) >= 3).then_some(st)
    })
    .await;
    let hook_told = recorded["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["receiver"] == "hook")
        .expect("the webhook's record")
        .clone();
    assert_eq!(hook_told["firing"], true);
    assert_eq!(hook_told["sinceUnix"], recorded["failingSinceUnix"]);
    p.kill9();
    let p = Probity::start(&checks, &state, &args);
    p.wait_ready().await;
    let before = count(&p.json().await, "it/flap", "FailureCount");
    p.wait_for("three more failing runs after the restart", |d| {
        count(d, "it/flap", "FailureCount") >= before + 3
            && count(d, "it/quiet", "FailureCount") >= before + 3
    })
    .await;
    assert_eq!(cap.at("hook").len(), 1, "{:#?}", cap.at("hook"));
    assert_eq!(cap.at("slack").len(), 1);
    assert_eq!(cap.at("pd").len(), 1);
    let all = cap.all();
    assert!(
        all.iter().all(|r| !r.body.to_string().contains("quiet")),
        "the opted-out check notified: {all:#?}"
    );

    // Recovery: told once where asked for, with the spell it ends.
    std::fs::remove_file(&flag).unwrap();
    cap.wait("the recovery", |c| {
        c.at("hook").len() == 2 && c.at("pd").len() == 2
    })
    .await;
    let resolved = &cap.at("hook")[1];
    assert_eq!(resolved.body["state"], "resolved");
    assert_eq!(resolved.body["since"], since.as_str());
    assert!(resolved.id.ends_with("/resolved"), "{}", resolved.id);
    assert_eq!(
        cap.at("pd")[1].body,
        serde_json::json!({"routing_key": "rk", "event_action": "resolve", "dedup_key": "probity/it/flap"})
    );
    let before = count(&p.json().await, "it/flap", "SuccessCount");
    p.wait_for("three passing runs", |d| {
        count(d, "it/flap", "SuccessCount") >= before + 3
    })
    .await;
    assert_eq!(cap.at("hook").len(), 2);
    assert_eq!(cap.at("slack").len(), 1, "sendResolved: false");
    let m = p.metrics().await;
    for line in [
        "probity_notifications_total{receiver=\"hook\",kind=\"resolved\",result=\"sent\"} 1",
        "probity_notifications_pending{receiver=\"hook\"} 0",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} missing:\n{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_is_retried_shown_and_holds_up_no_run() {
    let (tmp, checks, state) = dirs();
    let (cap, base) = Capture::start(2).await;
    let flag = tmp.path().join("failing");
    std::fs::write(&flag, "").unwrap();
    write(&checks, "flap.yaml", &flapping("flap", &flag, ""));
    write(
        &checks,
        "tick.yaml",
        &shell_check(
            "tick",
            "  runInterval: 1s\n  timeout: 10s\n",
            "probity report --ok",
        ),
    );
    let cfg = alerting_config(
        tmp.path(),
        &format!("receivers:\n  - name: hook\n    webhook: {{url: \"{base}/hook\"}}\nroutes:\n  - receiver: hook\n"),
    );
    let p = Probity::start(&checks, &state, &["--alerting-config", cfg.as_str()]);
    p.wait_ready().await;
    // The first delivery fails: the page says so, naming the receiver and the answer, as a
    // warning (not a check's error), and the metrics count it.
    let doc = p
        .wait_for("the failure on the page", |d| {
            d["Warnings"].as_array().is_some_and(|e| {
                e.iter()
                    .any(|e| e.as_str().unwrap_or("").contains("notifications to hook"))
            })
        })
        .await;
    assert!(!doc["Errors"].to_string().contains("notifications"));
    let shown = doc["Warnings"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e.as_str().filter(|e| e.contains("notifications to hook")))
        .unwrap()
        .to_string();
    assert!(
        shown.contains("503 Service Unavailable") && shown.contains("waiting to be retried"),
        "{shown}"
    );
    assert!(
        !shown.contains("/hook"),
        "the URL's path is kept out: {shown}"
    );
    let before = count(&doc, "it/tick", "SuccessCount");
    // Retried until it lands, once; runs go on meanwhile.
    cap.wait("the retried delivery", |c| c.at("hook").len() == 1)
        .await;
    let doc = p
        .wait_for("the error cleared and runs on", |d| {
            count(d, "it/tick", "SuccessCount") >= before + 2 && d.get("Warnings").is_none()
        })
        .await;
    assert!(count(&doc, "it/tick", "SuccessCount") >= before + 2);
    let m = p.metrics().await;
    assert!(
        m.lines()
            .any(|l| l == "probity_notifications_total{receiver=\"hook\",kind=\"firing\",result=\"failed\"} 2"),
        "{m}"
    );
    assert_eq!(cap.at("hook").len(), 1);
}

/// Debian's Alertmanager on loopback, in its own directory; None when it is not installed
/// (`.ci/run` installs it).
struct Alertmanager {
    child: std::process::Child,
    base: String,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn alertmanager(dir: &Path) -> Alertmanager {
    let config = dir.join("am.yml");
    std::fs::write(
        &config,
        "route: {receiver: none, group_wait: 1s}\nreceivers: [{name: none}]\n",
    )
    .unwrap();
    let addr = common::free_addr();
    let child = std::process::Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address={addr}"))
        // No gossip: a single Alertmanager that listens on loopback only.
        .arg("--cluster.listen-address=")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus-alertmanager (Debian package prometheus-alertmanager)");
    let am = Alertmanager {
        child,
        base: format!("http://{addr}"),
    };
    let start = Instant::now();
    while reqwest::get(format!("{}/-/ready", am.base))
        .await
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        assert!(start.elapsed() < PATIENCE, "Alertmanager never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    am
}

async fn alerts_listed(am: &Alertmanager) -> Vec<Value> {
    reqwest::get(format!("{}/api/v2/alerts", am.base))
        .await
        .unwrap()
        .json::<Vec<Value>>()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_lists_the_alert_while_failing_and_not_once_resolved() {
    let how = "apt-get install prometheus-alertmanager";
    if !common::need_tool("prometheus-alertmanager", how) {
        return;
    }
    let (tmp, checks, state) = dirs();
    let am = alertmanager(tmp.path()).await;
    let flag = tmp.path().join("failing");
    std::fs::write(&flag, "").unwrap();
    write(
        &checks,
        "flap.yaml",
        &flapping(
            "flap",
            &flag,
            "  labels: {kuberhealthy.io/severity: warning}\n",
        ),
    );
    let cfg = alerting_config(
        tmp.path(),
        &format!(
            "externalURL: http://probity.test\nreceivers:\n  - name: am\n    alertmanager: {{url: \"{}\"}}\nroutes:\n  - receiver: am\n    sendResolved: false\n",
            am.base
        ),
    );
    let p = Probity::start(&checks, &state, &["--alerting-config", cfg.as_str()]);
    p.wait_ready().await;
    let alert = wait_up_to(PATIENCE, "Alertmanager to list the alert", async || {
        alerts_listed(&am)
            .await
            .into_iter()
            .find(|a| a["labels"]["check"] == "flap")
    })
    .await;
    assert_eq!(
        alert["labels"],
        serde_json::json!({"alertname": "ProbityCheckFailing", "namespace": "it", "check": "flap", "severity": "warning"})
    );
    assert_eq!(alert["annotations"]["summary"], "it/flap is failing");
    assert_eq!(alert["annotations"]["description"], "db down");
    assert_eq!(alert["generatorURL"], "http://probity.test/checks/it/flap");
    assert_eq!(alert["status"]["state"], "active");
    // Resolved even with sendResolved: false, which is Alertmanager's own routing to decide.
    std::fs::remove_file(&flag).unwrap();
    wait_up_to(PATIENCE, "the alert resolved", async || {
        let listed = alerts_listed(&am).await;
        (!listed.iter().any(|a| a["labels"]["check"] == "flap")).then_some(())
    })
    .await;
    let s = status(&p, "flap").await;
    assert_eq!(s["alerts"][0]["receiver"], "am");
    assert_eq!(s["alerts"][0]["firing"], false);
}

/// A receiver that accepts connections and never answers; the sockets stay open until the test
/// ends.
async fn hanging_receiver() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    base
}

fn metric(m: &str, line_start: &str) -> f64 {
    m.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_hangs_delays_only_itself() {
    const N: usize = 100;
    let (tmp, checks, state) = dirs();
    let target = common::capture::Toggle::start("127.0.0.1:0", false).await;
    let port = target
        .url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let (cap, base) = Capture::start(0).await;
    let stuck = hanging_receiver().await;
    for i in 0..N {
        write(
            &checks,
            &format!("c{i}.yaml"),
            &format!(
                "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: c{i}, namespace: it}}\nspec:\n  runInterval: 1s\n  timeout: 2s\n  failureThreshold: 1\n  probe: {{httpGet: {{host: 127.0.0.1, port: {port}, path: /}}}}\n"
            ),
        );
    }
    // The stuck receiver is routed first, so its notices come first in any shared order.
    let cfg = alerting_config(
        tmp.path(),
        &format!(
            "receivers:\n  - name: stuck\n    webhook: {{url: \"{stuck}/hook\"}}\n  - name: ok\n    webhook: {{url: \"{base}/ok\"}}\nroutes:\n  - receiver: stuck\n  - receiver: ok\n"
        ),
    );
    let p = Probity::start(&checks, &state, &["--alerting-config", cfg.as_str()]);
    p.wait_ready().await;
    // Every firing reaches the healthy receiver within less than one delivery timeout (10 s)
    // of the first: none waited behind the stuck receiver's deliveries.
    cap.wait("the first firing", |c| !c.at("ok").is_empty())
        .await;
    let first = Instant::now();
    cap.wait("every firing", |c| c.at("ok").len() == N).await;
    let took = first.elapsed();
    assert!(took < Duration::from_secs(8), "{N} firings took {took:?}");
    // The stuck receiver's backlog is visible: in metrics and on the page.
    let doc = p
        .wait_for("the backlog on the page", |d| {
            d["Warnings"]
                .to_string()
                .contains("notifications to stuck: slow: 8 in flight")
        })
        .await;
    assert!(
        !doc["Warnings"].to_string().contains("notifications to ok"),
        "{doc}"
    );
    let m = p.metrics().await;
    assert!(
        metric(&m, "probity_notifications_queued{receiver=\"stuck\"}") > 0.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "probity_notifications_queued{receiver=\"ok\"}"),
        0.0,
        "{m}"
    );
    // Recovery: every resolve on time too; the stuck receiver's firings still queued are
    // superseded (counted), not sent late.
    target.set(true);
    cap.wait("the first resolve", |c| {
        c.at("ok").iter().any(|r| r.body["state"] == "resolved")
    })
    .await;
    let first = Instant::now();
    cap.wait("every resolve", |c| c.at("ok").len() == 2 * N)
        .await;
    let took = first.elapsed();
    assert!(took < Duration::from_secs(8), "{N} resolves took {took:?}");
    let m = p.metrics().await;
    let superseded = metric(
        &m,
        "probity_notifications_dropped_total{receiver=\"stuck\",reason=\"superseded\"}",
    );
    assert!(superseded >= (N - 3 * 8) as f64, "{superseded}\n{m}");
    assert_eq!(
        metric(
            &m,
            "probity_notifications_dropped_total{receiver=\"ok\",reason=\"superseded\"}"
        ),
        0.0
    );
    // Exactly once each.
    let ids: std::collections::HashSet<_> = cap.at("ok").into_iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 2 * N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_check_says_so_once_and_then_its_state_once_stable() {
    let (tmp, checks, state) = dirs();
    let (cap, base) = Capture::start(0).await;
    let flag = tmp.path().join("flag");
    let stop = tmp.path().join("stop");
    // Fails and passes by turns, every second, until `stop` exists; then fails for good.
    let script = format!(
        "if [ -e {stop} ]; then probity report --error \"db down\"; elif [ -e {flag} ]; then rm {flag}; probity report --error \"db down\"; else touch {flag}; probity report --ok; fi",
        stop = stop.display(),
        flag = flag.display()
    );
    write(
        &checks,
        "flap.yaml",
        &shell_check("flap", "  runInterval: 1s\n  timeout: 10s\n", &script),
    );
    let cfg = alerting_config(
        tmp.path(),
        &format!("receivers:\n  - name: hook\n    webhook: {{url: \"{base}/hook\"}}\nroutes:\n  - receiver: hook\n    flapping: {{window: 10s, changes: 5}}\n"),
    );
    let p = Probity::start(&checks, &state, &["--alerting-config", cfg.as_str()]);
    p.wait_ready().await;
    cap.wait("the flapping notice", |c| {
        c.at("hook").iter().any(|r| r.body["state"] == "flapping")
    })
    .await;
    let got = cap.at("hook");
    let states: Vec<&str> = got
        .iter()
        .map(|r| r.body["state"].as_str().unwrap())
        .collect();
    assert!(
        states.len() <= 5 && states.last() == Some(&"flapping"),
        "{states:?}"
    );
    let flapping = got.last().unwrap();
    assert!(
        flapping.body["summary"]
            .as_str()
            .unwrap()
            .starts_with("it/flap is flapping: its state changed 5 times within 10s"),
        "{}",
        flapping.body
    );
    // The page, /json and the metrics say so (by the default thresholds: 5 changes in 10m).
    let doc = p
        .wait_for("Flapping in /json", |d| {
            common::detail(d, "it/flap")["Flapping"] == true
        })
        .await;
    assert_eq!(common::detail(&doc, "it/flap")["Flapping"], true);
    let list = p.get_json("/api/checks").await;
    assert_eq!(list["checks"][0]["held"], "flapping", "{list}");
    let m = p.metrics().await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("probity_check_notifications_held{")
                && l.contains("check=\"flap\"")
                && l.contains("reason=\"flapping\"")
                && l.ends_with(" 1")),
        "{m}"
    );
    // Still alternating: quiet.
    let before = cap.at("hook").len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(cap.at("hook").len(), before, "quiet while flapping");
    // Failing for good: once it is stable (no 5 changes within the route's 10 s), one notice
    // says so, and nothing more.
    std::fs::write(&stop, "").unwrap();
    cap.wait("the state once stable", |c| {
        c.at("hook").len() == before + 1
    })
    .await;
    let last = cap.at("hook").pop().unwrap();
    assert_eq!(last.body["state"], "failing", "{}", last.body);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cap.at("hook").len(), before + 1);
    assert!(before < 6, "at most six notices");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspending_a_check_or_turning_it_off_resolves_what_was_told() {
    let (tmp, checks, state) = dirs();
    let (cap, base) = Capture::start(0).await;
    let flag = tmp.path().join("failing");
    std::fs::write(&flag, "").unwrap();
    write(&checks, "a.yaml", &flapping("a", &flag, ""));
    write(&checks, "b.yaml", &flapping("b", &flag, ""));
    let cfg = alerting_config(
        tmp.path(),
        &format!("receivers:\n  - name: hook\n    webhook: {{url: \"{base}/hook\"}}\nroutes:\n  - receiver: hook\n"),
    );
    let p = Probity::start(&checks, &state, &["--alerting-config", cfg.as_str()]);
    p.wait_ready().await;
    cap.wait("both firing", |c| c.at("hook").len() == 2).await;
    write(
        &checks,
        "a.yaml",
        &flapping("a", &flag, "").replace(
            "  runInterval: 1s\n",
            "  runInterval: 1s\n  suspend: true\n",
        ),
    );
    write(
        &checks,
        "b.yaml",
        &flapping(
            "b",
            &flag,
            "  annotations: {probity.dev/notify: \"false\"}\n",
        ),
    );
    cap.wait("both resolved", |c| c.at("hook").len() == 4).await;
    let got = cap.at("hook");
    for (check, why) in [
        ("a", "the check is suspended"),
        (
            "b",
            "its notifications are turned off (probity.dev/notify: \"false\")",
        ),
    ] {
        let r = got
            .iter()
            .find(|r| r.body["check"] == check && r.body["state"] == "resolved")
            .unwrap_or_else(|| panic!("{check}: {got:#?}"));
        assert_eq!(r.body["reason"], why);
        assert_eq!(
            r.body["summary"],
            format!("it/{check} no longer alerts: {why}")
        );
    }
    // Still failing, still suspended or off: nothing more, across a restart.
    let before = count(&p.json().await, "it/b", "FailureCount");
    drop(p);
    let p = Probity::start(&checks, &state, &["--alerting-config", cfg.as_str()]);
    p.wait_ready().await;
    p.wait_for("b's runs recorded after the restart", |d| {
        count(d, "it/b", "FailureCount") >= before + 2
    })
    .await;
    assert_eq!(cap.at("hook").len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_routed_by_cause() {
    let (tmp, checks, state) = dirs();
    let (cap, base) = Capture::start(0).await;
    let spec = "  runInterval: 1s\n  timeout: 10s\n";
    // The check reports its target broken.
    write(
        &checks,
        "target.yaml",
        &shell_check("target", spec, "probity report --error \"db down\""),
    );
    // The check itself dies without a word: a runner failure.
    write(
        &checks,
        "runner.yaml",
        &shell_check("runner", spec, "exit 3"),
    );
    let cfg = alerting_config(
        tmp.path(),
        &format!(
            "receivers:\n  - name: owners\n    webhook: {{url: \"{base}/owners\"}}\n  - name: platform\n    webhook: {{url: \"{base}/platform\"}}\n  - name: all\n    webhook: {{url: \"{base}/all\"}}\nroutes:\n  - receiver: owners\n    causes: [target]\n  - receiver: platform\n    causes: [runner]\n  - receiver: all\n"
        ),
    );
    let p = Probity::start(&checks, &state, &["--alerting-config", cfg.as_str()]);
    p.wait_ready().await;
    cap.wait("both told to the default route", |c| c.at("all").len() == 2)
        .await;
    cap.wait("each cause to its route", |c| {
        c.at("owners").len() == 1 && c.at("platform").len() == 1
    })
    .await;
    let doc = p.json().await;
    for (route, check, cause) in [
        ("owners", "target", "target"),
        ("platform", "runner", "runner"),
    ] {
        let got = cap.at(route);
        assert_eq!(got[0].body["check"], check, "{route}: {got:#?}");
        assert_eq!(got[0].body["cause"], cause);
        assert_eq!(common::detail(&doc, &format!("it/{check}"))["Cause"], cause);
    }
    // The run history says it, run by run.
    let st = status(&p, "runner").await;
    assert_eq!(st["history"][0]["cause"], "runner", "{st}");
    assert_eq!(st["history"][0]["outcome"], "Crash");
    let m = p.metrics().await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("probity_check_failure_cause{")
                && l.contains("check=\"runner\"")
                && l.contains("cause=\"runner\"")),
        "{m}"
    );
    // Nothing crosses over while they keep failing.
    p.wait_for("more runs", |d| count(d, "it/runner", "FailureCount") >= 4)
        .await;
    assert_eq!(cap.at("owners").len(), 1);
    assert_eq!(cap.at("platform").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_a_failing_dependency_explains_notifies_no_one_until_it_recovers() {
    let (tmp, checks, state) = dirs();
    let (cap, base) = Capture::start(0).await;
    let db_down = tmp.path().join("db-down");
    let web_down = tmp.path().join("web-down");
    std::fs::write(&db_down, "").unwrap();
    write(&checks, "db.yaml", &flapping("db", &db_down, ""));
    write(
        &checks,
        "web.yaml",
        &flapping("web", &web_down, "").replace(
            "  runInterval: 1s\n",
            "  runInterval: 1s\n  dependsOn: [db]\n",
        ),
    );
    let cfg = alerting_config(
        tmp.path(),
        &format!("receivers:\n  - name: hook\n    webhook: {{url: \"{base}/hook\"}}\nroutes:\n  - receiver: hook\n"),
    );
    let p = Probity::start(&checks, &state, &["--alerting-config", cfg.as_str()]);
    p.wait_ready().await;
    cap.wait("db's firing", |c| !c.at("hook").is_empty()).await;
    // web fails once db is failing (so no race decides which came first).
    std::fs::write(&web_down, "").unwrap();
    let doc = p
        .wait_for("web failing too", |d| {
            count(d, "it/web", "FailureCount") >= 3
        })
        .await;
    let web = common::detail(&doc, "it/web");
    assert_eq!(web["OK"], false, "the Kuberhealthy verdict is unchanged");
    assert_eq!(web["BlockedBy"], serde_json::json!(["it/db"]), "{web}");
    let m = p.metrics().await;
    assert!(
        m.lines().any(|l| l.starts_with("probity_check_blocked_by{")
            && l.contains("check=\"web\"")
            && l.contains("by=\"it/db\"")),
        "{m}"
    );
    assert!(
        m.lines().any(|l| l.starts_with("kuberhealthy_check{")
            && l.contains("check=\"web\"")
            && l.ends_with(" 0")),
        "{m}"
    );
    let list = p.get_json("/api/checks?q=web").await;
    assert_eq!(list["checks"][0]["held"], "blocked by it/db", "{list}");
    let got = cap.at("hook");
    assert_eq!(got.len(), 1, "only db: {got:#?}");
    assert_eq!(got[0].body["check"], "db");
    // db recovers, web still fails: now web's failure is news.
    std::fs::remove_file(&db_down).unwrap();
    cap.wait("db resolved and web firing", |c| {
        let got = c.at("hook");
        got.iter()
            .any(|r| r.body["check"] == "db" && r.body["state"] == "resolved")
            && got
                .iter()
                .any(|r| r.body["check"] == "web" && r.body["state"] == "failing")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_holds_notices_and_its_end_tells_what_still_fails_once() {
    let (tmp, checks, state) = dirs();
    let (cap, base) = Capture::start(0).await;
    let down = tmp.path().join("down");
    let blip = tmp.path().join("blip");
    std::fs::write(&down, "").unwrap();
    std::fs::write(&blip, "").unwrap();
    let t = |secs: i64| {
        (chrono::Utc::now() + chrono::Duration::seconds(secs))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let until = t(15);
    let annotated = |name: &str, flag: &Path| {
        flapping(
            name,
            flag,
            &format!("  annotations: {{probity.dev/maintenance-until: \"{until}\"}}\n"),
        )
    };
    write(&checks, "own.yaml", &annotated("own", &down));
    write(&checks, "blip.yaml", &annotated("blip", &blip));
    write(
        &checks,
        "db.yaml",
        &flapping("db", &down, "  labels: {team: db}\n"),
    );
    let cfg = alerting_config(
        tmp.path(),
        &format!(
            "receivers:\n  - name: hook\n    webhook: {{url: \"{base}/hook\"}}\nroutes:\n  - receiver: hook\nmaintenance:\n  - name: db-upgrade\n    start: \"{}\"\n    end: \"{until}\"\n    matchLabels: {{team: db}}\n",
            t(-60)
        ),
    );
    let p = Probity::start(&checks, &state, &["--alerting-config", cfg.as_str()]);
    p.wait_ready().await;
    let doc = p
        .wait_for("all three failing, in maintenance", |d| {
            ["own", "db", "blip"].iter().all(|n| {
                let c = common::detail(d, &format!("it/{n}"));
                c["OK"] == false && c["Maintenance"].is_string()
            })
        })
        .await;
    assert_eq!(
        common::detail(&doc, "it/db")["Maintenance"],
        format!("db-upgrade until {until}")
    );
    assert_eq!(
        common::detail(&doc, "it/own")["Maintenance"],
        format!("probity.dev/maintenance-until until {until}")
    );
    let m = p.metrics().await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("probity_check_notifications_held{")
                && l.contains("check=\"db\"")
                && l.contains("reason=\"maintenance\"")),
        "{m}"
    );
    // blip fails and recovers inside the window: never told.
    std::fs::remove_file(&blip).unwrap();
    p.wait_for("blip recovered", |d| {
        common::detail(d, "it/blip")["OK"] == true
    })
    .await;
    assert!(cap.at("hook").is_empty(), "{:#?}", cap.at("hook"));
    // At the end, what still fails is told, once each.
    cap.wait("own and db told", |c| c.at("hook").len() >= 2)
        .await;
    let doc = p
        .wait_for("the window over", |d| {
            common::detail(d, "it/db")["Maintenance"].is_null()
        })
        .await;
    assert!(common::detail(&doc, "it/own")["Maintenance"].is_null());
    let before = count(&doc, "it/db", "FailureCount");
    p.wait_for("more runs", |d| {
        count(d, "it/db", "FailureCount") >= before + 2
    })
    .await;
    let got = cap.at("hook");
    let mut told: Vec<&str> = got
        .iter()
        .map(|r| r.body["check"].as_str().unwrap())
        .collect();
    told.sort();
    assert_eq!(told, ["db", "own"], "{got:#?}");
    assert!(got.iter().all(|r| r.body["state"] == "failing"));
}

/// Replaces the file at once, as a ConfigMap's mounted file changes (a symlink swap).
fn replace(path: &str, yaml: &str) {
    let tmp = format!("{path}.new");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerting_configuration_follows_its_file_and_a_bad_edit_keeps_the_last_good_one() {
    let (tmp, checks, state) = dirs();
    let (cap, base) = Capture::start(0).await;
    let flag = tmp.path().join("failing");
    std::fs::write(&flag, "").unwrap();
    write(&checks, "db.yaml", &flapping("db", &flag, ""));
    let to = |receiver: &str| {
        format!("receivers:\n  - name: {receiver}\n    webhook: {{url: \"{base}/{receiver}\"}}\nroutes:\n  - receiver: {receiver}\n")
    };
    let cfg = alerting_config(tmp.path(), &to("first"));
    let p = Probity::start(&checks, &state, &["--alerting-config", cfg.as_str()]);
    p.wait_ready().await;
    cap.wait("first told", |c| c.at("first").len() == 1).await;
    // A changed file: the new receiver is told what it was never told.
    replace(&cfg, &to("second"));
    cap.wait("second told", |c| c.at("second").len() == 1).await;
    let m = p.metrics().await;
    assert!(
        m.lines()
            .any(|l| l == "probity_alerting_config_last_reload_successful 1"),
        "{m}"
    );
    // A bad edit: said on the page and in the metrics; the last good configuration goes on.
    replace(&cfg, "receivers:\n  - name: second\n    webhok: {}\n");
    let doc = p
        .wait_for("the bad edit on the page", |d| {
            d["Warnings"].to_string().contains("not reloaded")
        })
        .await;
    let warning = doc["Warnings"].to_string();
    assert!(
        warning.contains("receivers[0].webhok: unknown field")
            && warning.contains("the last good configuration stays in use"),
        "{warning}"
    );
    let m = p.metrics().await;
    assert!(
        m.lines()
            .any(|l| l == "probity_alerting_config_last_reload_successful 0"),
        "{m}"
    );
    std::fs::remove_file(&flag).unwrap();
    cap.wait("second told of the recovery", |c| c.at("second").len() == 2)
        .await;
    assert_eq!(cap.at("second")[1].body["state"], "resolved");
    assert_eq!(cap.at("first").len(), 1, "the first receiver is gone");
    // Mended, and SIGHUP reads it at once.
    std::fs::write(&cfg, to("second")).unwrap();
    p.signal(libc::SIGHUP);
    p.wait_for("the warning cleared", |d| {
        !d["Warnings"].to_string().contains("not reloaded")
    })
    .await;
    let m = p.metrics().await;
    assert!(
        m.lines()
            .any(|l| l == "probity_alerting_config_last_reload_successful 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_failing_check_resolves_its_alert_once_across_restarts() {
    let (tmp, checks, state) = dirs();
    let (cap, base) = Capture::start(0).await;
    let flag = tmp.path().join("failing");
    std::fs::write(&flag, "").unwrap();
    write(
        &checks,
        "db.yaml",
        &flapping("db", &flag, "  labels: {team: db}\n"),
    );
    write(
        &checks,
        "tick.yaml",
        &shell_check(
            "tick",
            "  runInterval: 1s\n  timeout: 10s\n",
            "probity report --ok",
        ),
    );
    // Routed by label: the resolve after the file is gone still finds its route.
    let cfg = alerting_config(
        tmp.path(),
        &format!("receivers:\n  - name: hook\n    webhook: {{url: \"{base}/hook\"}}\nroutes:\n  - receiver: hook\n    matchLabels: {{team: db}}\n"),
    );
    let args = ["--alerting-config", cfg.as_str()];
    let mut p = Probity::start(&checks, &state, &args);
    p.wait_ready().await;
    cap.wait("the firing", |c| c.at("hook").len() == 1).await;
    // The receiver is down when the check is deleted: the resolve waits, and probity dies.
    cap.fail_next(usize::MAX);
    std::fs::remove_file(checks.join("db.yaml")).unwrap();
    let doc = p
        .wait_for("db gone from /json", |d| {
            d["CheckDetails"].get("it/db").is_none()
        })
        .await;
    assert!(doc["CheckDetails"].get("it/tick").is_some());
    wait_up_to(PATIENCE, "a failed resolve", async || {
        p.metrics()
            .await
            .lines()
            .any(|l| {
                l.starts_with(
                    "probity_notifications_total{receiver=\"hook\",kind=\"resolved\",result=\"failed\"}",
                )
            })
            .then_some(())
    })
    .await;
    p.kill9();
    // A new process carries on from the journal, and the resolve lands once.
    let mut p = Probity::start(&checks, &state, &args);
    p.wait_ready().await;
    assert!(p.json().await["CheckDetails"].get("it/db").is_none());
    cap.fail_next(0);
    cap.wait("the resolve", |c| c.at("hook").len() == 2).await;
    let resolved = &cap.at("hook")[1];
    assert_eq!(resolved.body["state"], "resolved", "{:#?}", resolved.body);
    assert_eq!(resolved.body["reason"], "the check was deleted");
    assert_eq!(
        resolved.body["summary"],
        "it/db no longer alerts: the check was deleted"
    );
    // Once: another restart tells nothing more, and the journal forgot the check.
    let before = count(&p.json().await, "it/tick", "SuccessCount");
    p.wait_for("the record written", |d| {
        count(d, "it/tick", "SuccessCount") >= before + 2
    })
    .await;
    p.terminate();
    let p = Probity::start(&checks, &state, &args);
    p.wait_ready().await;
    let before = count(&p.json().await, "it/tick", "SuccessCount");
    p.wait_for("runs after the restart", |d| {
        count(d, "it/tick", "SuccessCount") >= before + 3
    })
    .await;
    assert_eq!(cap.at("hook").len(), 2, "{:#?}", cap.at("hook"));
    let journal = std::fs::read_to_string(state.join("state.jsonl")).unwrap();
    let last_db = journal.lines().rfind(|l| l.contains("\"it/db\""));
    assert!(
        last_db.is_none_or(|l| !l.contains("departed")),
        "forgotten, not kept: {last_db:?}"
    );
}

/// Debian's or PyPI's aiosmtpd on loopback, with STARTTLS and AUTH required; None (a skip
/// line) when it is missing (`.ci/run` installs it).
struct Smtp {
    child: std::process::Child,
    port: u16,
    out: tempfile::TempDir,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn smtp(certs: &Path) -> Option<Smtp> {
    let have = std::process::Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !common::available(
        have,
        "python3 with aiosmtpd",
        "python3 -m pip install aiosmtpd",
    ) {
        return None;
    }
    let out = tempfile::tempdir().unwrap();
    let port: u16 = common::free_addr()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut child = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/smtp_server.py"
        ))
        .arg(port.to_string())
        .arg(out.path())
        .arg(certs.join("server.pem"))
        .arg(certs.join("server.key"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    Some(Smtp { child, port, out })
}

impl Smtp {
    /// The messages received so far: (envelope, message), oldest first.
    fn received(&self) -> Vec<(Value, String)> {
        let mut names: Vec<_> = std::fs::read_dir(self.out.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|p| {
                let meta = std::fs::read_to_string(p.with_extension("json")).unwrap();
                (
                    serde_json::from_str(&meta).unwrap(),
                    std::fs::read_to_string(p).unwrap(),
                )
            })
            .collect()
    }
}

/// The text of a base64 body of one of probity's messages.
fn mail_text(message: &str) -> String {
    use base64::Engine as _;
    let body = message
        .replace("\r\n", "\n")
        .split("\n\n")
        .nth(1)
        .unwrap()
        .replace('\n', "");
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_over_starttls_teams_and_opsgenie_are_told_and_resolved() {
    if !common::need_tool("openssl", "apt-get install openssl") {
        return;
    }
    let (tmp, checks, state) = dirs();
    let certs = tmp.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    common::make_certs(&certs);
    let Some(smtp) = smtp(&certs) else { return };
    let (cap, base) = Capture::start(0).await;
    let flag = tmp.path().join("failing");
    std::fs::write(&flag, "").unwrap();
    write(&checks, "db.yaml", &flapping("db", &flag, ""));
    std::fs::write(tmp.path().join("smtp-password"), "s3cret\n").unwrap();
    let cfg = alerting_config(
        tmp.path(),
        &format!(
            r#"
externalURL: http://probity.test
receivers:
  - name: mail
    email:
      smarthost: "127.0.0.1:{port}"
      from: probity@example.com
      to: [oncall@example.com, db@example.com]
      username: probity
      passwordFile: {pw}
      caFile: {ca}
  - name: teams
    teams: {{url: "{base}/teams"}}
  - name: genie
    opsgenie: {{apiKey: k3y, url: "{base}", priority: P2}}
routes:
  - receiver: mail
  - receiver: teams
  - receiver: genie
"#,
            port = smtp.port,
            pw = tmp.path().join("smtp-password").display(),
            ca = certs.join("ca.pem").display(),
        ),
    );
    let p = Probity::start(&checks, &state, &["--alerting-config", cfg.as_str()]);
    p.wait_ready().await;
    wait_up_to(PATIENCE, "the mail", async || {
        (smtp.received().len() == 1).then_some(())
    })
    .await;
    let (envelope, message) = &smtp.received()[0];
    assert_eq!(envelope["tls"], true, "sent only after STARTTLS");
    assert_eq!(envelope["authenticated"], true);
    assert_eq!(envelope["from"], "probity@example.com");
    assert_eq!(
        envelope["to"],
        serde_json::json!(["oncall@example.com", "db@example.com"])
    );
    assert!(
        message.contains("Subject: [probity] it/db is failing\r\n"),
        "{message}"
    );
    let text = mail_text(message);
    assert!(text.starts_with("it/db is failing\ndb down\n"), "{text}");
    assert!(
        text.contains("Status page: http://probity.test/checks/it/db"),
        "{text}"
    );
    // Teams: an Adaptive Card.
    cap.wait("teams and opsgenie", |c| {
        c.at("teams").len() == 1 && c.at("v2/alerts").len() == 1
    })
    .await;
    let card = &cap.at("teams")[0].body;
    assert_eq!(card["type"], "message");
    let content = &card["attachments"][0]["content"];
    assert_eq!(
        card["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(content["type"], "AdaptiveCard");
    assert_eq!(content["body"][0]["text"], "it/db is failing");
    assert_eq!(content["body"][0]["color"], "Attention");
    assert!(content["body"].to_string().contains("db down"));
    assert_eq!(
        content["actions"][0]["url"],
        "http://probity.test/checks/it/db"
    );
    // Opsgenie: one alert per check, by alias.
    let created = &cap.at("v2/alerts")[0];
    assert_eq!(created.authorization, "GenieKey k3y");
    let alert = &created.body;
    assert_eq!(alert["alias"], "probity/it/db");
    assert_eq!(alert["message"], "it/db is failing");
    assert_eq!(alert["description"], "db down");
    assert_eq!(alert["priority"], "P2");
    // Recovery: a mail, a green card, and the Opsgenie alert closed by its alias.
    std::fs::remove_file(&flag).unwrap();
    wait_up_to(PATIENCE, "the recovery mail", async || {
        (smtp.received().len() == 2).then_some(())
    })
    .await;
    assert!(smtp.received()[1]
        .1
        .contains("Subject: [probity] it/db recovered after failing for"));
    cap.wait("the close", |c| {
        c.at("v2/alerts/probity/it/db/close").len() == 1 && c.at("teams").len() == 2
    })
    .await;
    assert_eq!(
        cap.at("teams")[1].body["attachments"][0]["content"]["body"][0]["color"],
        "Good"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_flapping_for_its_runner_pages_no_owner() {
    let (tmp, checks, state) = dirs();
    let (cap, base) = Capture::start(0).await;
    let flag = tmp.path().join("flag");
    // Passes, then dies without a word (a runner failure), by turns, every second.
    let script = format!(
        "if [ -e {f} ]; then rm {f}; exit 3; else touch {f}; probity report --ok; fi",
        f = flag.display()
    );
    write(
        &checks,
        "pod.yaml",
        &shell_check("pod", "  runInterval: 1s\n  timeout: 10s\n", &script),
    );
    let cfg = alerting_config(
        tmp.path(),
        &format!("receivers:\n  - name: owners\n    webhook: {{url: \"{base}/owners\"}}\n  - name: platform\n    webhook: {{url: \"{base}/platform\"}}\nroutes:\n  - receiver: owners\n    causes: [target]\n    flapping: {{window: 10s, changes: 5}}\n  - receiver: platform\n    causes: [runner]\n    flapping: {{window: 10s, changes: 5}}\n"),
    );
    let p = Probity::start(&checks, &state, &["--alerting-config", cfg.as_str()]);
    p.wait_ready().await;
    cap.wait("platform told it flaps", |c| {
        c.at("platform")
            .iter()
            .any(|r| r.body["state"] == "flapping")
    })
    .await;
    let before = count(&p.json().await, "it/pod", "FailureCount");
    p.wait_for("more flapping", |d| {
        count(d, "it/pod", "FailureCount") >= before + 3
    })
    .await;
    assert!(cap.at("owners").is_empty(), "{:#?}", cap.at("owners"));
}
