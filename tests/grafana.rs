//! deploy/extras/grafana-dashboard.json against a real Prometheus (Debian's `prometheus`)
//! scraping a real `probity serve` with a passing and a failing check: every query of every
//! panel (and the namespace variable's) returns data. Grafana's own variables are given the
//! values Grafana would: `$namespace` all (`.+`), `$__rate_interval` and `$__range` a minute.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{dirs, free_addr, shell_check, write, Probity};
use serde_json::Value;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/extras/grafana-dashboard.json"
);

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every query in the dashboard: (where, PromQL), with Grafana's variables filled in.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let fill = |q: &str| {
        q.replace("$namespace", ".+")
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1m")
    };
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let title = p["title"].as_str().unwrap();
            out.push((
                format!("panel {title:?} {}", t["refId"]),
                fill(t["expr"].as_str().unwrap()),
            ));
        }
    }
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(def) = v["definition"].as_str() {
            // label_values(METRIC, LABEL) is Grafana's; the series query behind it is METRIC.
            let metric = def
                .strip_prefix("label_values(")
                .and_then(|r| r.split(',').next())
                .unwrap_or(def);
            out.push((format!("variable {}", v["name"]), metric.to_string()));
        }
    }
    out
}

#[tokio::test]
async fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    if !common::need_tool("prometheus", "apt-get install prometheus") {
        return;
    }
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let (tmp, checks, state) = dirs();
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
            "probity report --error 'disk is full'",
        ),
    );
    // A receiver that is down (nothing listens on port 1): the failing check's notification
    // fails and waits for a retry, so the notification panel has data.
    let alerting = common::alerting_config(
        tmp.path(),
        "receivers:\n  - name: down\n    webhook: {url: \"http://127.0.0.1:1/hook\"}\nroutes:\n  - receiver: down\n",
    );
    let p = Probity::start(&checks, &state, &["--alerting-config", alerting.as_str()]);
    p.wait_ready().await;
    let target = p
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();

    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: probity\n    static_configs: [{{targets: ['{target}']}}]\n"),
    )
    .unwrap();
    let listen = free_addr();
    let _prom = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let query = async |q: &str| -> Option<Vec<Value>> {
        let r = http
            .get(format!("http://{listen}/api/v1/query"))
            .query(&[("query", q)])
            .send()
            .await
            .ok()?;
        let body: Value = r.json().await.ok()?;
        assert_eq!(body["status"], "success", "{q}: {body}");
        body["data"]["result"].as_array().cloned()
    };
    // Rates need a few scrapes: wait until every query has data, or say which never did.
    let all = queries(&dashboard);
    assert!(all.len() >= 16, "{all:?}");
    let start = Instant::now();
    let mut empty: Vec<String> = Vec::new();
    while start.elapsed() < Duration::from_secs(90) {
        empty.clear();
        for (what, q) in &all {
            match query(q).await {
                Some(r) if !r.is_empty() => {}
                _ => empty.push(format!("{what}: {q}")),
            }
        }
        if empty.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        empty.is_empty(),
        "queries without data:\n{}",
        empty.join("\n")
    );

    // And the data is right: the failing check is the one in the errors table, with its error.
    let failing = query("kuberhealthy_check{namespace=~\".+\"} == 0")
        .await
        .unwrap();
    assert_eq!(failing.len(), 1, "{failing:?}");
    assert_eq!(failing[0]["metric"]["check"], "down");
    assert_eq!(failing[0]["metric"]["error"], "disk is full");
    let state = query("kuberhealthy_cluster_state").await.unwrap();
    assert_eq!(state[0]["value"][1], "0");
}
