//! `probity migrate FILE...`: Kuberhealthy v2 manifests into HealthChecks. v2 kept its checks as
//! `KuberhealthyCheck` and run-once jobs as `KuberhealthyJob`, in group `comcast.github.io/v1`
//! and later `kuberhealthy.github.io/v2`, with the pod spec straight under `spec.podSpec`.
//! Everything a HealthCheck has a place for is kept; what it has not is named in a note, never
//! dropped in silence. Other objects in the file (the check's ServiceAccount, RBAC) pass through
//! unchanged, so the output applies as the input did.

pub mod gatus;

use serde_json::{json, Map, Value};

use crate::api::load::{split_values, YamlError};

/// What a file became: YAML documents for stdout, and notes on what was not carried over.
#[derive(Debug, Default)]
pub struct Migrated {
    pub documents: Vec<String>,
    pub notes: Vec<String>,
}

const V2_GROUPS: &[&str] = &["comcast.github.io/v1", "kuberhealthy.github.io/v2"];

/// Server-set metadata: meaningless in a new object, dropped without a note.
const SERVER_FIELDS: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "ownerReferences",
];

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// `probity migrate FILE...`: the converted documents to `out` (one YAML stream), notes and
/// errors to `err`, a line each. False when a file could not be read or is not YAML; the other
/// files are still converted.
pub fn migrate_files(
    paths: &[std::path::PathBuf],
    from: Source,
    out: &mut impl std::io::Write,
    err: &mut impl std::io::Write,
) -> std::io::Result<bool> {
    const MAX: u64 = 1 << 20;
    let mut all_ok = true;
    let mut first = true;
    for path in paths {
        let name = path.display().to_string();
        let text = match std::fs::metadata(path) {
            Ok(m) if m.len() > MAX => Err(MigrateError::TooLarge(name.clone())),
            _ => std::fs::read_to_string(path).map_err(|source| MigrateError::Read {
                name: name.clone(),
                source,
            }),
        };
        let converted = text.and_then(|t| match from {
            Source::Kuberhealthy => migrate(&name, &t),
            Source::Gatus => gatus::migrate(&name, &t),
        });
        match converted {
            Ok(m) => {
                for d in m.documents {
                    if !first {
                        writeln!(out, "---")?;
                    }
                    first = false;
                    write!(out, "{d}")?;
                }
                for n in m.notes {
                    writeln!(err, "{n}")?;
                }
            }
            Err(e) => {
                writeln!(err, "{e}")?;
                all_ok = false;
            }
        }
    }
    Ok(all_ok)
}

/// What the files are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Kuberhealthy v2 `KuberhealthyCheck` / `KuberhealthyJob` manifests.
    Kuberhealthy,
    /// A Gatus configuration file (its `endpoints`).
    Gatus,
}

/// Why a file could not be migrated at all; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}: larger than 1 MiB, not read")]
    TooLarge(String),
    #[error("{name}: {source}")]
    Read {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name}: document {index}: not valid YAML: {source}")]
    NotYaml {
        name: String,
        index: usize,
        #[source]
        source: YamlError,
    },
    #[error("{name}: {reason}")]
    Write { name: String, reason: String },
}

/// Converts the text of file `name`. Err when it is not YAML at all.
pub fn migrate(name: &str, text: &str) -> Result<Migrated, MigrateError> {
    let mut out = Migrated::default();
    for (index, value) in split_values(text) {
        let value = value.map_err(|source| MigrateError::NotYaml {
            name: name.to_string(),
            index,
            source,
        })?;
        let mut say = |what: &str, note: String| {
            out.notes
                .push(format!("{name}: document {index} ({what}): {note}"))
        };
        let mut docs = Vec::new();
        convert(value, &mut docs, &mut say);
        for d in docs {
            let yaml = serde_saphyr::to_string(&d).map_err(|e| MigrateError::Write {
                name: name.to_string(),
                reason: e.to_string(),
            })?;
            out.documents.push(yaml);
        }
    }
    Ok(out)
}

fn convert(value: Value, out: &mut Vec<Value>, say: &mut impl FnMut(&str, String)) {
    let api_version = value["apiVersion"].as_str().unwrap_or("").to_string();
    let kind = value["kind"].as_str().unwrap_or("").to_string();
    // `kubectl get -o yaml` of several objects.
    if kind == "List" || kind.ends_with("List") && value["items"].is_array() {
        let items = value["items"].as_array().cloned().unwrap_or_default();
        for item in items {
            convert(item, out, say);
        }
        return;
    }
    let meta = &value["metadata"];
    let what = format!(
        "{kind} {}{}",
        meta["namespace"]
            .as_str()
            .map(|n| format!("{n}/"))
            .unwrap_or_default(),
        meta["name"].as_str().unwrap_or("(no name)")
    );
    if !V2_GROUPS.contains(&api_version.as_str()) {
        out.push(value);
        return;
    }
    match kind.as_str() {
        "KuberhealthyCheck" | "KuberhealthyJob" => {
            out.push(check(value, kind == "KuberhealthyJob", &what, say));
        }
        "KuberhealthyState" => say(
            &what,
            "not carried over: probity keeps each check's results in its HealthCheck's status"
                .into(),
        ),
        // Already a HealthCheck (Kuberhealthy v3's own kind).
        _ => out.push(value),
    }
}

fn check(value: Value, job: bool, what: &str, say: &mut impl FnMut(&str, String)) -> Value {
    let mut meta = value["metadata"].as_object().cloned().unwrap_or_default();
    for f in SERVER_FIELDS {
        meta.remove(*f);
    }
    if let Some(Value::Object(ann)) = meta.get_mut("annotations") {
        if ann.remove(LAST_APPLIED).is_some() {
            say(
                what,
                format!("annotation {LAST_APPLIED} dropped (kubectl writes it anew)"),
            );
        }
        if ann.is_empty() {
            meta.remove("annotations");
        }
    }
    let mut spec_in = value["spec"].as_object().cloned().unwrap_or_default();
    let mut spec = Map::new();
    if job {
        spec.insert("singleRunOnly".into(), json!(true));
        if spec_in.remove("runInterval").is_some() {
            say(what, "spec.runInterval dropped: a job runs once".into());
        }
    } else if let Some(v) = spec_in.remove("runInterval") {
        spec.insert("runInterval".into(), v);
    }
    match spec_in.remove("timeout") {
        Some(v) => {
            spec.insert("timeout".into(), v);
        }
        None => say(
            what,
            "spec.timeout not set: probity's default applies (--default-timeout, KH_DEFAULT_CHECK_TIMEOUT, 30s), not Kuberhealthy v2's; set it to keep the old one".into(),
        ),
    }
    for k in ["extraAnnotations", "extraLabels"] {
        if let Some(v) = spec_in.remove(k) {
            spec.insert(k.into(), v);
        }
    }
    if let Some(pod) = spec_in.remove("podSpec") {
        // v2 put the PodSpec itself here; a `{metadata, spec}` pair is already HealthCheck-shaped.
        let shaped = pod.get("spec").is_some() && pod.get("containers").is_none();
        let pod = if shaped { pod } else { json!({ "spec": pod }) };
        spec.insert("podSpec".into(), pod);
    } else {
        say(
            what,
            "spec.podSpec is missing: the HealthCheck will be invalid until it has one".into(),
        );
    }
    for k in spec_in.keys() {
        say(
            what,
            format!("spec.{k} not carried over (a HealthCheck has no such field)"),
        );
    }
    if value.get("status").is_some_and(|s| !s.is_null()) {
        say(what, "status dropped: probity writes its own".into());
    }
    json!({
        "apiVersion": "kuberhealthy.github.io/v2",
        "kind": "HealthCheck",
        "metadata": meta,
        "spec": spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::load::parse_documents;

    /// Shaped like Kuberhealthy v2's own deployment check manifest: the check and its RBAC.
    const KHC_V1: &str = r#"apiVersion: comcast.github.io/v1
kind: KuberhealthyCheck
metadata:
  name: deployment
  namespace: kuberhealthy
  labels: {team: platform}
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: "{}"
    owner: sre
  resourceVersion: "12345"
  uid: 0b5d4c6e-0000-0000-0000-000000000000
spec:
  runInterval: 10m
  timeout: 15m
  extraLabels: {env: prod}
  extraAnnotations: {"sidecar.istio.io/inject": "false"}
  podSpec:
    containers:
      - name: deployment
        image: kuberhealthy/deployment-check:v1.9.0
        imagePullPolicy: IfNotPresent
        env:
          - {name: CHECK_DEPLOYMENT_REPLICAS, value: "4"}
          - {name: CHECK_DEPLOYMENT_ROLLING_UPDATE, value: "true"}
        resources:
          requests: {cpu: 25m, memory: 15Mi}
    restartPolicy: Never
    serviceAccountName: deployment-sa
    terminationGracePeriodSeconds: 60
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: deployment-sa
  namespace: kuberhealthy
"#;

    #[test]
    fn a_v1_check_becomes_a_health_check_keeping_everything_it_has_a_place_for() {
        let m = migrate("khc.yaml", KHC_V1).unwrap();
        assert_eq!(m.documents.len(), 2);
        let docs = parse_documents(&m.documents.join("---\n")).unwrap();
        let hc = docs[0].check.as_ref().expect("a valid HealthCheck");
        assert_eq!(hc.metadata.name.as_deref(), Some("deployment"));
        assert_eq!(hc.metadata.namespace.as_deref(), Some("kuberhealthy"));
        assert_eq!(hc.metadata.labels.as_ref().unwrap()["team"], "platform");
        let ann = hc.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann.len(), 1, "{ann:?}");
        assert_eq!(ann["owner"], "sre");
        assert!(hc.metadata.resource_version.is_none() && hc.metadata.uid.is_none());
        assert_eq!(hc.spec.run_interval.as_deref(), Some("10m"));
        assert_eq!(hc.spec.timeout.as_deref(), Some("15m"));
        assert_eq!(hc.spec.extra_labels.as_ref().unwrap()["env"], "prod");
        assert_eq!(
            hc.spec.extra_annotations.as_ref().unwrap()["sidecar.istio.io/inject"],
            "false"
        );
        let pod = &hc.spec.pod_spec.as_ref().unwrap().spec;
        assert_eq!(pod["serviceAccountName"], "deployment-sa");
        assert_eq!(pod["containers"][0]["env"][0]["value"], "4");
        assert_eq!(pod["terminationGracePeriodSeconds"], 60);
        // The RBAC passes through as it was.
        assert!(m.documents[1].contains("kind: ServiceAccount"));
        assert!(matches!(
            &docs[1].check,
            Err(crate::api::load::DocError::Other(_))
        ));
        // What was dropped is said, once, naming the object.
        assert_eq!(m.notes.len(), 1, "{:?}", m.notes);
        assert!(m.notes[0].starts_with(
            "khc.yaml: document 1 (KuberhealthyCheck kuberhealthy/deployment): annotation kubectl"
        ));
    }

    #[test]
    fn a_job_runs_once_and_what_has_no_place_is_named() {
        let text = "apiVersion: kuberhealthy.github.io/v2\nkind: KuberhealthyJob\nmetadata: {name: once, namespace: kh}\nspec:\n  runInterval: 5m\n  podLabels: {a: b}\n  podSpec:\n    containers: [{name: c, image: i:1}]\nstatus: {ok: true}\n---\napiVersion: kuberhealthy.github.io/v2\nkind: KuberhealthyState\nmetadata: {name: once, namespace: kh}\nspec: {OK: true}\n";
        let m = migrate("khj.yaml", text).unwrap();
        assert_eq!(m.documents.len(), 1, "the state is not carried over");
        let docs = parse_documents(&m.documents[0]).unwrap();
        let hc = docs[0].check.as_ref().unwrap();
        assert_eq!(hc.spec.single_run_only, Some(true));
        assert_eq!(hc.spec.run_interval, None);
        let notes = m.notes.join("\n");
        for said in [
            "(KuberhealthyJob kh/once): spec.runInterval dropped: a job runs once",
            "(KuberhealthyJob kh/once): spec.timeout not set",
            "(KuberhealthyJob kh/once): spec.podLabels not carried over",
            "(KuberhealthyJob kh/once): status dropped",
            "document 2 (KuberhealthyState kh/once): not carried over",
        ] {
            assert!(notes.contains(said), "{said} in {notes}");
        }
    }

    #[test]
    fn health_checks_and_lists_pass_through_and_bad_yaml_names_the_document() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: comcast.github.io/v1\n  kind: KuberhealthyCheck\n  metadata: {name: a}\n  spec: {timeout: 1m, podSpec: {containers: [{name: c, image: i:1}]}}\n- apiVersion: kuberhealthy.github.io/v2\n  kind: HealthCheck\n  metadata: {name: b}\n  spec: {podSpec: {spec: {containers: [{name: c, image: i:1}]}}}\n";
        let m = migrate("list.yaml", text).unwrap();
        assert_eq!(m.documents.len(), 2);
        let docs = parse_documents(&m.documents.join("---\n")).unwrap();
        assert!(docs.iter().all(|d| d.check.is_ok()));
        assert!(m.notes.is_empty(), "{:?}", m.notes);
        let err = migrate("bad.yaml", "a: [\n").unwrap_err().to_string();
        assert!(err.starts_with("bad.yaml: "), "{err}");
    }
}
