//! The command line: exit codes and one-line errors, never a panic.

use std::process::{Command, Output};

fn probity(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_probity"))
        .args(args)
        .env_remove("KH_REPORTING_URL")
        .env_remove("KH_RUN_UUID")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn crd_prints_the_checked_in_crd() {
    let o = probity(&["crd"]);
    assert!(o.status.success());
    let want = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/healthcheck.yaml"
    ))
    .unwrap();
    assert_eq!(String::from_utf8(o.stdout).unwrap(), want);
}

#[test]
fn validate_names_file_document_field_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {name: ok-one}\nspec:\n  probe: {tcpSocket: {host: h, port: 1}}\n---\napiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {name: broken}\nspec:\n  timeout: 10x\n  probe: {tcpSocket: {host: h, port: 1}}\n",
    )
    .unwrap();
    let o = probity(&["validate", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o);
    assert!(
        out.contains("bad.yaml: document 1: default/ok-one: valid"),
        "{out}"
    );
    assert!(
        out.contains(
            "bad.yaml: document 2: default/broken: spec.timeout: \"10x\" has unknown unit \"x\""
        ),
        "{out}"
    );
    let examples: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/checks/examples"))
            .unwrap()
            .map(|e| e.unwrap().path().display().to_string())
            .collect();
    let mut args = vec!["validate"];
    args.extend(examples.iter().map(String::as_str));
    let o = probity(&args);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn validate_sees_dependencies_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, deps: &str| {
        format!("apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: {name}, namespace: it}}\nspec:\n  dependsOn: [{deps}]\n  probe: {{tcpSocket: {{host: h, port: 1}}}}\n")
    };
    let a = dir.path().join("a.yaml");
    let b = dir.path().join("b.yaml");
    std::fs::write(&a, check("a", "b, ghost")).unwrap();
    std::fs::write(&b, check("b", "it/a")).unwrap();
    let o = probity(&["validate", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o);
    assert!(
        out.contains("a.yaml: document 1: it/a: spec.dependsOn[0]: it/b depends back on this check: it/a → it/b → it/a; spec.dependsOn[1]: no check is named it/ghost"),
        "{out}"
    );
    assert!(
        out.contains(
            "b.yaml: document 1: it/b: spec.dependsOn[0]: it/a depends back on this check"
        ),
        "{out}"
    );
    // Mended: valid.
    std::fs::write(&b, check("b", "")).unwrap();
    std::fs::write(&a, check("a", "b")).unwrap();
    let o = probity(&["validate", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn unreadable_files_and_bad_flags_are_one_line_errors() {
    let o = probity(&["validate", "/nonexistent/checks.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("/nonexistent/checks.yaml: No such file"),
        "{}",
        text(&o)
    );

    let o = probity(&["run", "/nonexistent/checks.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("/nonexistent/checks.yaml"),
        "{}",
        text(&o)
    );

    let o = probity(&[
        "serve",
        "--checks",
        "/nonexistent/dir",
        "--listen-address",
        "127.0.0.1:0",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("--checks: /nonexistent/dir"),
        "{}",
        text(&o)
    );

    let o = probity(&["serve", "--default-timeout", "soon"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("\"soon\" is not a duration"),
        "{}",
        text(&o)
    );

    let o = probity(&["report", "--ok"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("KH_REPORTING_URL is not set"),
        "{}",
        text(&o)
    );

    let o = probity(&["report"]);
    assert_eq!(o.status.code(), Some(2), "--ok or --error is required");
    assert!(!text(&o).contains("panicked"));
}

#[test]
fn run_prints_verdicts_and_exits_by_them() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    let check = |name: &str, cmd: &str| {
        format!(
            "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: {name}}}\nspec:\n  timeout: 5s\n  podSpec: {{spec: {{containers: [{{name: c, image: i, command: [\"/bin/sh\", \"-c\", \"{cmd}\"]}}]}}}}\n"
        )
    };
    std::fs::write(&f, check("fine", "probity report --ok")).unwrap();
    let o = probity(&["run", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("PASS default/fine ("));

    std::fs::write(
        &f,
        format!(
            "{}---\n{}",
            check("fine", "probity report --ok"),
            check("sad", "exit 4")
        ),
    )
    .unwrap();
    let o = probity(&["run", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("PASS default/fine"), "{out}");
    assert!(
        out.contains("FAIL default/sad")
            && out.contains("Crash): exited with code 4 without reporting"),
        "{out}"
    );
}

/// `probity migrate` on Kuberhealthy v2 manifests: HealthChecks that `probity validate` accepts,
/// the RBAC passed through, notes on stderr, a missing file named with exit 1.
#[test]
fn migrate_from_gatus_converts_endpoints_into_valid_health_checks_and_names_the_rest() {
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gatus/config.yaml"
    );
    let o = probity(&["migrate", "--from", "gatus", config]);
    assert!(o.status.success(), "{}", text(&o));
    let yaml = String::from_utf8(o.stdout).unwrap();
    let notes = String::from_utf8(o.stderr).unwrap();
    assert_eq!(yaml.matches("kind: HealthCheck").count(), 5, "{yaml}");
    for (what, said) in [
        ("http", "httpGet:"),
        ("its conditions", "jsonPath: $.status"),
        ("the certificate", "certificateValidFor: 48h"),
        ("dns", "query"),
        ("tcp", "tcpSocket:"),
        ("icmp", "- ping"),
    ] {
        let said = if what == "dns" {
            "name: example.com"
        } else {
            said
        };
        assert!(yaml.contains(said), "{what}: {said:?} in {yaml}");
    }
    for said in [
        "config.yaml: storage not carried over",
        "config.yaml: alerting not carried over",
        "endpoints[0] front-end: alerts not carried over",
        "endpoints[5] websocket: wss:// has no built-in probe in probity; not converted",
    ] {
        assert!(notes.contains(said), "{said:?} in\n{notes}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("migrated.yaml");
    std::fs::write(&out, &yaml).unwrap();
    let v = probity(&["validate", out.to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v));
    assert_eq!(text(&v).matches(": valid").count(), 5, "{}", text(&v));
}

/// What a Gatus user moves over runs: an endpoint on loopback, converted, passes and fails as
/// its conditions say.
#[tokio::test]
async fn a_converted_gatus_endpoint_runs_and_judges_as_its_conditions_said() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(|| async { r#"{"status":"UP","queue":{"depth":7}}"# }),
    );
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "endpoints:\n  - name: up\n    url: http://{addr}/health\n    conditions: ['[STATUS] == 200', '[BODY].status == UP', '[BODY].queue.depth < 10']\n  - name: down\n    url: http://{addr}/health\n    conditions: ['[BODY].status == DOWN']\n"
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_probity");
    let o = tokio::process::Command::new(bin)
        .args(["migrate", "--from", "gatus", config.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(o.status.success());
    let checks = dir.path().join("checks.yaml");
    std::fs::write(&checks, &o.stdout).unwrap();
    let o = tokio::process::Command::new(bin)
        .args(["run", checks.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("PASS default/up"), "{out}");
    assert!(
        out.contains("FAIL default/down") && out.contains("$.status is \"UP\", expected \"DOWN\""),
        "{out}"
    );
}

#[test]
fn migrate_converts_kuberhealthy_v2_manifests_into_valid_health_checks() {
    let fixtures = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kuberhealthy-v2"
    );
    let (deployment, jobs) = (
        format!("{fixtures}/deployment.yaml"),
        format!("{fixtures}/jobs.yaml"),
    );
    let o = probity(&["migrate", &deployment, &jobs]);
    assert!(o.status.success(), "{}", text(&o));
    let yaml = String::from_utf8(o.stdout).unwrap();
    let notes = String::from_utf8(o.stderr).unwrap();
    assert_eq!(yaml.matches("kind: HealthCheck").count(), 3, "{yaml}");
    assert!(yaml.contains("kind: RoleBinding") && yaml.contains("kind: ServiceAccount"));
    assert!(yaml.contains("singleRunOnly: true"));
    assert!(!yaml.contains("KuberhealthyState"));
    assert!(
        notes.contains("jobs.yaml: document 3 (KuberhealthyState kuberhealthy/dns-status-internal): not carried over"),
        "{notes}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("migrated.yaml");
    std::fs::write(&out, &yaml).unwrap();
    let v = probity(&["validate", out.to_str().unwrap()]);
    assert!(v.status.success(), "{}", text(&v));
    assert_eq!(text(&v).matches(": valid").count(), 3, "{}", text(&v));

    let o = probity(&["migrate", "/nonexistent/khc.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).starts_with("/nonexistent/khc.yaml: "),
        "{}",
        text(&o)
    );
}

/// Every bundled cluster check passes `probity validate` (its RBAC objects are skipped).
#[test]
fn bundled_cluster_checks_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/checks/cluster");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let args: Vec<&str> = std::iter::once("validate")
        .chain(files.iter().map(String::as_str))
        .collect();
    let o = probity(&args);
    assert!(o.status.success(), "{}", text(&o));
    for f in &files {
        assert!(
            text(&o).contains(&format!("{f}: document")),
            "{f} has a check: {}",
            text(&o)
        );
    }
}

/// The template check runs as it is (`probity run` on its local manifest): it passes, and fails
/// with its reason when what it checks is missing.
#[test]
fn the_template_check_passes_and_fails_with_its_reason() {
    let root = env!("CARGO_MANIFEST_DIR");
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_probity"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |file: &str| {
        Command::new(env!("CARGO_BIN_EXE_probity"))
            .args(["run", file])
            .current_dir(root)
            .env("PATH", &path)
            .env_remove("KH_REPORTING_URL")
            .output()
            .unwrap()
    };
    let o = run("checks/template/local.yaml");
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("PASS"), "{}", text(&o));

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    let manifest = std::fs::read_to_string(format!("{root}/checks/template/local.yaml"))
        .unwrap()
        .replace("value: /etc/hostname", "value: /nonexistent/file")
        .replace("check.sh]", &format!("{root}/checks/template/check.sh]"));
    std::fs::write(&broken, manifest).unwrap();
    let o = run(broken.to_str().unwrap());
    assert!(!o.status.success());
    assert!(
        text(&o).contains("/nonexistent/file is missing or empty"),
        "{}",
        text(&o)
    );
    // And its cluster manifest is a valid HealthCheck.
    let v = probity(&[
        "validate",
        &format!("{root}/checks/template/healthcheck.yaml"),
    ]);
    assert!(v.status.success(), "{}", text(&v));
}

#[test]
fn report_values_are_checked_before_anything_is_sent() {
    let o = probity(&["report", "--ok", "--value", "9lives=1"]);
    assert_eq!(o.status.code(), Some(2));
    let out = text(&o);
    assert!(
        out.contains("--value")
            && out.contains("\"9lives\" must be a letter or _ followed by letters, digits or _"),
        "{out}"
    );
    let o = probity(&["report", "--ok", "--value", "depth=lots"]);
    assert!(
        text(&o).contains("\"lots\" is not a number"),
        "{}",
        text(&o)
    );
    let o = probity(&["report", "--value", "depth=1"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a value is no verdict: {}",
        text(&o)
    );
}
