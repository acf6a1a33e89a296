//! Reading HealthChecks from YAML text: several documents per file, unknown fields reported by
//! path (a typo such as `runIntreval` must not silently fall back to the default), and an error
//! for one document never hides the others.

use serde_json::Value;

use super::validate::Invalid;
use super::HealthCheck;

/// One document of a file.
#[derive(Debug)]
pub struct Document {
    /// 1-based position in the file.
    pub index: usize,
    /// `namespace/name`-bearing metadata is kept even when the rest is wrong, so the check can be
    /// shown as invalid under its own name.
    pub check: Result<HealthCheck, DocError>,
}

#[derive(Debug, Clone)]
pub enum DocError {
    /// The document names a check but its fields are wrong.
    Invalid {
        check: Box<HealthCheck>,
        invalid: Invalid,
    },
    /// The document cannot be tied to a check (no name, not a HealthCheck).
    Unusable(String),
}

impl std::fmt::Display for DocError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DocError::Invalid { invalid, .. } => write!(f, "{invalid}"),
            DocError::Unusable(m) => f.write_str(m),
        }
    }
}

/// Parses a YAML stream. Err only when the text is not YAML at all.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, String> {
    // YAML 1.2 booleans only: `app: y` is the string "y", as a label value must be.
    let options = serde_saphyr::options! { strict_booleans: true };
    let values: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| one_line(&e.to_string()))?;
    Ok(values
        .into_iter()
        .enumerate()
        .map(|(i, v)| Document {
            index: i + 1,
            check: parse_one(v),
        })
        .collect())
}

/// serde_ignored writes `a.?.0.b` (`?` for an Option, numbers for list items); say `a[0].b`, as
/// kubectl and serde_path_to_error do.
pub(crate) fn tidy_path(path: &str) -> String {
    let mut out = String::new();
    for part in path.split('.').filter(|p| *p != "?" && !p.is_empty()) {
        if part.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn parse_one(value: Value) -> Result<HealthCheck, DocError> {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != "HealthCheck" || api_version != "kuberhealthy.github.io/v2" {
        let hint = if kind == "KuberhealthyCheck" {
            " (Kuberhealthy v2's KuberhealthyCheck: change apiVersion to kuberhealthy.github.io/v2, kind to HealthCheck, and put the pod spec under spec.podSpec.spec)"
        } else {
            ""
        };
        return Err(DocError::Unusable(format!(
            "apiVersion {api_version:?} kind {kind:?} is not a HealthCheck (want apiVersion kuberhealthy.github.io/v2, kind HealthCheck){hint}"
        )));
    }
    let meta = value.get("metadata").cloned().unwrap_or(Value::Null);
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        return Err(DocError::Unusable("metadata.name: is required".into()));
    }
    let namespace = meta
        .get("namespace")
        .and_then(Value::as_str)
        .map(str::to_string);

    let mut unknown = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(tidy_path(&path.to_string()));
    let de = serde_ignored::Deserializer::new(value, &mut note);
    let parsed: Result<HealthCheck, _> = serde_path_to_error::deserialize(de);
    let mut problems = Vec::new();
    let hc = match parsed {
        Ok(hc) => Some(hc),
        Err(e) => {
            let path = e.path().to_string();
            problems.push(super::validate::Problem {
                field: if path == "." { "document".into() } else { path },
                message: e.into_inner().to_string(),
            });
            None
        }
    };
    // `status` in a file is ignored on purpose (state comes from the state dir), and so are the
    // server-side metadata fields kubectl adds to exported objects.
    for path in unknown {
        if path.starts_with("status")
            || path.starts_with("metadata.")
            || path == "apiVersion"
            || path == "kind"
        {
            continue;
        }
        problems.push(super::validate::Problem {
            field: path,
            message: "unknown field".into(),
        });
    }
    match hc {
        Some(hc) if problems.is_empty() => Ok(hc),
        other => {
            let mut check = other.unwrap_or_default();
            check.metadata.name = Some(name);
            check.metadata.namespace = namespace;
            Err(DocError::Invalid {
                check: Box::new(check),
                invalid: Invalid { problems },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_several_documents_and_kuberhealthy_manifests() {
        let text = r#"
apiVersion: kuberhealthy.github.io/v2
kind: HealthCheck
metadata: {name: one, namespace: kuberhealthy}
spec:
  runInterval: 10m
  timeout: 2m
  podSpec:
    spec:
      containers:
        - name: check
          image: docker.io/curlimages/curl:8.5.0
          command: ["/bin/sh", "-c"]
          args: ['echo hi']
      restartPolicy: Never
---
apiVersion: kuberhealthy.github.io/v2
kind: HealthCheck
metadata: {name: two}
spec:
  probe: {tcpSocket: {host: localhost, port: 22}}
"#;
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 2);
        let one = docs[0].check.as_ref().unwrap();
        assert_eq!(one.spec.run_interval.as_deref(), Some("10m"));
        let pod = one.spec.pod_spec.as_ref().unwrap().pod_spec().unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.command.as_ref().unwrap()[0], "/bin/sh");
        assert_eq!(docs[1].index, 2);
        assert_eq!(
            docs[1]
                .check
                .as_ref()
                .unwrap()
                .spec
                .probe
                .as_ref()
                .unwrap()
                .tcp_socket
                .as_ref()
                .unwrap()
                .port,
            22
        );
    }

    #[test]
    fn unknown_and_mistyped_fields_are_named_and_keep_the_check_name() {
        let text = "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {name: typo, namespace: x}\nspec:\n  runIntreval: 5m\n  probe: {tcpSocket: {host: h, port: 1}}\n";
        let docs = parse_documents(text).unwrap();
        match &docs[0].check {
            Err(DocError::Invalid { check, invalid }) => {
                assert_eq!(check.metadata.name.as_deref(), Some("typo"));
                assert_eq!(invalid.to_string(), "spec.runIntreval: unknown field");
            }
            other => panic!("{other:?}"),
        }
        let text = "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {name: t}\nspec:\n  successThreshold: lots\n";
        let docs = parse_documents(text).unwrap();
        let err = docs[0].check.as_ref().unwrap_err().to_string();
        assert!(
            err.starts_with("spec.successThreshold: invalid type: string \"lots\""),
            "{err}"
        );
    }

    #[test]
    fn documents_that_are_not_checks_say_why() {
        let docs = parse_documents(
            "apiVersion: comcast.github.io/v1\nkind: KuberhealthyCheck\nmetadata: {name: a}\n",
        )
        .unwrap();
        let err = docs[0].check.as_ref().unwrap_err().to_string();
        assert!(
            err.contains("KuberhealthyCheck") && err.contains("spec.podSpec.spec"),
            "{err}"
        );
        let docs =
            parse_documents("apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nspec: {}\n")
                .unwrap();
        assert_eq!(
            docs[0].check.as_ref().unwrap_err().to_string(),
            "metadata.name: is required"
        );
    }

    #[test]
    fn yaml_syntax_errors_fail_the_file_in_one_line() {
        let err = parse_documents("a: [1, 2\nb: c\n").unwrap_err();
        assert!(!err.contains('\n'));
        assert!(!err.is_empty());
    }
}
