//! The report endpoint with the clients Kuberhealthy check authors already have, over real HTTP
//! to a real `probity serve`: Go (written the way Kuberhealthy's checkclient is: the kh-run-uuid
//! header, retries until 200), Python (the standard library, no header: the run is named by
//! KH_REPORTING_URL's query), JavaScript (node's http module, lowercase keys) and shell (curl,
//! no header). Each sends its report twice, as a client whose answer was lost does: both sends
//! get 200 and the run counts once. The clients are tests/fixtures/clients/; Go and node are
//! Debian's `golang-go` and `nodejs` (.ci/run installs them).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{count, detail, dirs, write, Probity};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/clients");

/// `command` as a check of namespace `it` that runs once an hour.
fn command_check(name: &str, command: &[String]) -> String {
    format!(
        "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: {name}, namespace: it}}\nspec:\n  runInterval: 1h\n  timeout: 60s\n  podSpec:\n    spec:\n      containers:\n        - name: check\n          image: client\n          command: {}\n",
        serde_json::to_string(command).unwrap()
    )
}

/// The Go client, built once into `dir` (the standard library only; no network).
fn build_go(dir: &Path) -> PathBuf {
    let out = dir.join("go-client");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(format!("{FIXTURES}/client.go"))
        .env("GO111MODULE", "off")
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPATH", dir.join("gopath"))
        .env("HOME", dir)
        .status()
        .expect("go (Debian's golang-go) on the PATH");
    assert!(status.success(), "go build of the Go client failed");
    out
}

#[tokio::test]
async fn go_python_javascript_and_shell_clients_report_with_and_without_the_header_and_retry() {
    for (tool, package) in [
        ("go", "golang-go"),
        ("node", "nodejs"),
        ("python3", "python3"),
        ("curl", "curl"),
    ] {
        if !common::need_tool(tool, &format!("apt-get install {package}")) {
            return;
        }
    }
    let (tmp, checks, state) = dirs();
    let go = build_go(tmp.path());
    let codes = |name: &str| tmp.path().join(format!("{name}.codes"));
    let s = |v: &str| v.to_string();
    let clients: Vec<(&str, Vec<String>)> = vec![
        (
            "go-ok",
            vec![go.display().to_string(), s("ok"), s(""), s("2")],
        ),
        (
            "go-fail",
            vec![
                go.display().to_string(),
                s("fail"),
                s("disk is full"),
                s("2"),
            ],
        ),
        (
            "python-ok",
            vec![
                s("python3"),
                format!("{FIXTURES}/client.py"),
                s("ok"),
                s(""),
                s("2"),
            ],
        ),
        (
            "python-fail",
            vec![
                s("python3"),
                format!("{FIXTURES}/client.py"),
                s("fail"),
                s("queue is stuck"),
                s("2"),
            ],
        ),
        (
            "js-ok",
            vec![
                s("node"),
                format!("{FIXTURES}/client.js"),
                s("ok"),
                s(""),
                s("2"),
            ],
        ),
        (
            "js-fail",
            vec![
                s("node"),
                format!("{FIXTURES}/client.js"),
                s("fail"),
                s("cache is cold"),
                s("2"),
            ],
        ),
    ];
    for (name, args) in &clients {
        let mut command = args.clone();
        command.push(codes(name).display().to_string());
        write(
            &checks,
            &format!("{name}.yaml"),
            &command_check(name, &command),
        );
    }
    // Shell: curl as in Kuberhealthy's examples, without the header, twice.
    let curl_codes = codes("curl-ok");
    write(
        &checks,
        "curl-ok.yaml",
        &command_check(
            "curl-ok",
            &[
                s("/bin/sh"),
                s("-c"),
                format!(
                    "for i in 1 2; do curl -s -o /dev/null -w '%{{http_code}}\\n' -X POST -H 'Content-Type: application/json' -d '{{\"OK\":true,\"Errors\":[]}}' \"$KH_REPORTING_URL\"; done > {}",
                    curl_codes.display()
                ),
            ],
        ),
    );
    let p = Probity::start(&checks, &state, &[]);
    p.wait_ready().await;
    let names: Vec<&str> = clients.iter().map(|(n, _)| *n).chain(["curl-ok"]).collect();
    let doc = p
        .wait_for("every client's report", |d| {
            names.iter().all(|n| {
                let key = format!("it/{n}");
                count(d, &key, "SuccessCount") + count(d, &key, "FailureCount") >= 1
            })
        })
        .await;
    // The clients write their codes after the second send, which may come after /json shows
    // the first.
    let started = std::time::Instant::now();
    while !names
        .iter()
        .all(|n| std::fs::read_to_string(codes(n)).is_ok_and(|c| c.lines().count() == 2))
    {
        assert!(
            started.elapsed() < common::PATIENCE,
            "the clients did not finish both sends"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for name in &names {
        let key = format!("it/{name}");
        let sent = std::fs::read_to_string(codes(name)).unwrap_or_default();
        assert_eq!(sent, "200\n200\n", "{name}: both sends answered 200");
        let (successes, failures) = (
            count(&doc, &key, "SuccessCount"),
            count(&doc, &key, "FailureCount"),
        );
        if name.ends_with("-ok") {
            assert_eq!(
                (successes, failures),
                (1, 0),
                "{name}: {:?}",
                detail(&doc, &key)
            );
            assert_eq!(detail(&doc, &key)["OK"], true, "{name}");
        } else {
            assert_eq!(
                (successes, failures),
                (0, 1),
                "{name}: {:?}",
                detail(&doc, &key)
            );
            let want = match *name {
                "go-fail" => "disk is full",
                "python-fail" => "queue is stuck",
                _ => "cache is cold",
            };
            assert_eq!(
                detail(&doc, &key)["Errors"],
                serde_json::json!([want]),
                "{name}"
            );
        }
    }
}
