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
    /// Another Kubernetes object (a check's ServiceAccount, Role, ...): not ours, skipped, so one
    /// manifest serves `kubectl apply` and probity alike. Says which (`Kind namespace/name`).
    Other(String),
}

impl std::fmt::Display for DocError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DocError::Invalid { invalid, .. } => write!(f, "{invalid}"),
            DocError::Unusable(m) => f.write_str(m),
            DocError::Other(what) => write!(f, "{what}: not a HealthCheck, skipped"),
        }
    }
}

/// YAML that does not parse, as one readable line naming the line in the file (the parser's
/// message, its line counted from the start of the file, long words cut).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct YamlError(String);

/// The documents of a YAML stream as values, each parsed on its own (empty ones left out), with
/// its 1-based position; a document that is not YAML is that document's error, naming the line
/// in the file.
pub fn split_values(text: &str) -> Vec<(usize, Result<Value, YamlError>)> {
    let options = serde_saphyr::options! { strict_booleans: true };
    let mut out = Vec::new();
    for (line, chunk) in split_documents(text) {
        match serde_saphyr::from_str_with_options::<Value>(chunk, options.clone()) {
            Ok(Value::Null) => {}
            Ok(v) => out.push((out.len() + 1, Ok(v))),
            Err(e) => {
                let e = YamlError(yaml_error(&e.to_string(), line - 1));
                out.push((out.len() + 1, Err(e)))
            }
        }
    }
    out
}

/// Parses a YAML stream. Each document is parsed on its own, so one that is not valid YAML (a
/// syntax error, a number too large for any field) is reported as that document's problem and
/// its neighbours still load. Err only when no document is valid YAML.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, YamlError> {
    // YAML 1.2 booleans only: `app: y` is the string "y", as a label value must be.
    let options = serde_saphyr::options! { strict_booleans: true };
    let mut docs = Vec::new();
    let mut first_error = None;
    let mut any_yaml = false;
    let chunks = split_documents(text);
    let several = chunks.len() > 1;
    for (line, chunk) in chunks {
        let index = docs.len() + 1;
        let parsed: Result<Value, _> = serde_saphyr::from_str_with_options(chunk, options.clone());
        let check = match parsed {
            Ok(Value::Null) => continue,
            Ok(v) => {
                any_yaml = true;
                parse_one(v)
            }
            Err(e) => {
                let message = if several {
                    format!("not valid YAML: {}", yaml_error(&e.to_string(), line - 1))
                } else {
                    yaml_error(&e.to_string(), 0)
                };
                first_error.get_or_insert(message.clone());
                Err(DocError::Unusable(message))
            }
        };
        docs.push(Document { index, check });
    }
    match first_error {
        Some(e) if !any_yaml => Err(YamlError(e)),
        _ => Ok(docs),
    }
}

/// Splits a YAML stream at its document markers (`---` or `...` at the start of a line, which
/// YAML reserves for that even inside block scalars), with the 1-based line each document
/// starts on. Chunks with nothing but blank lines and comments are left out.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let is_marker = |l: &str, m: &str| {
        l.strip_prefix(m)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
    };
    let mut out = Vec::new();
    let (mut start, mut start_line, mut offset) = (0usize, 1usize, 0usize);
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches('\n');
        if is_marker(bare, "---") && offset > start {
            out.push((start_line, &text[start..offset]));
            start = offset;
            start_line = i + 1;
        }
        offset += line.len();
        if is_marker(bare, "...") {
            out.push((start_line, &text[start..offset]));
            start = offset;
            start_line = i + 2;
        }
    }
    if offset > start {
        out.push((start_line, &text[start..]));
    }
    out.retain(|(_, chunk)| {
        chunk.lines().any(|l| {
            let t = l.strip_prefix("---").or(l.strip_prefix("...")).unwrap_or(l);
            let t = t.trim();
            !(t.is_empty() || t.starts_with('#'))
        })
    });
    out
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

/// A parser error in one short line: without the source excerpt, values cut short, and its
/// first `line N` (counted from the document's start) counted from the file's start instead.
fn yaml_error(s: &str, lines_before: usize) -> String {
    let line = one_line(s);
    let mut line = line.split(" --> ").next().unwrap_or(&line).to_string();
    if let Some(at) = line.find("line ") {
        let digits: String = line[at + 5..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(n) = digits.parse::<usize>() {
            let end = at + 5 + digits.len();
            line.replace_range(at + 5..end, &(n + lines_before).to_string());
        }
    }
    let mut out = String::new();
    for word in line.split(' ') {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&super::truncate(word, 40));
    }
    super::truncate(&out, 300)
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
    let kuberhealthy = matches!(
        kind,
        "HealthCheck" | "KuberhealthyCheck" | "KuberhealthyJob" | "KuberhealthyState"
    ) || api_version.starts_with("kuberhealthy.github.io/")
        || api_version.starts_with("comcast.github.io/");
    if !kuberhealthy && !kind.is_empty() && !api_version.is_empty() {
        let meta = value.get("metadata");
        let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
        let name = match (field("namespace"), field("name")) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            (None, Some(n)) => n.to_string(),
            _ => "(no name)".into(),
        };
        return Err(DocError::Other(format!("{kind} {name}")));
    }
    if kind != "HealthCheck" || api_version != "kuberhealthy.github.io/v2" {
        let hint = if matches!(kind, "KuberhealthyCheck" | "KuberhealthyJob") {
            " (a Kuberhealthy v2 resource: `probity migrate FILE` converts it)"
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
            err.contains("KuberhealthyCheck") && err.contains("probity migrate"),
            "{err}"
        );
        // A check's RBAC in the same manifest is someone else's object: skipped, named.
        let docs = parse_documents(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: dns, namespace: kh}\n---\napiVersion: apps/v1\nkind: Deployment\n",
        )
        .unwrap();
        assert!(matches!(&docs[0].check, Err(DocError::Other(w)) if w == "ServiceAccount kh/dns"));
        assert!(matches!(&docs[1].check, Err(DocError::Other(w)) if w == "Deployment (no name)"));
        // Without a kind it is not anything: an error, as before.
        let docs = parse_documents("metadata: {name: x}\n").unwrap();
        assert!(matches!(&docs[0].check, Err(DocError::Unusable(_))));
        let docs =
            parse_documents("apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nspec: {}\n")
                .unwrap();
        assert_eq!(
            docs[0].check.as_ref().unwrap_err().to_string(),
            "metadata.name: is required"
        );
    }

    fn ok_check(name: &str) -> String {
        format!(
            "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: {name}}}\nspec:\n  probe: {{tcpSocket: {{host: h, port: 1}}}}\n"
        )
    }

    #[test]
    fn one_bad_document_never_rejects_its_neighbours() {
        // The recipe: a 1,000-digit integer in one document of three.
        let big = "9".repeat(1000);
        let text = format!(
            "{}---\napiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: big}}\nspec:\n  successThreshold: {big}\n---\n{}",
            ok_check("one"),
            ok_check("three")
        );
        let docs = parse_documents(&text).unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(
            docs[0].check.as_ref().unwrap().metadata.name.as_deref(),
            Some("one")
        );
        assert_eq!(
            docs[2].check.as_ref().unwrap().metadata.name.as_deref(),
            Some("three")
        );
        assert_eq!(docs[2].index, 3);
        let err = docs[1].check.as_ref().unwrap_err().to_string();
        assert!(
            err.starts_with("not valid YAML: error: line 11 column 21:"),
            "{err}"
        );
        assert!(
            !err.contains('\n') && err.len() < 400,
            "one short line: {err}"
        );

        // A syntax error in the middle document: the others load, the error names its line.
        let text = format!(
            "{}---\na: [1, 2\nb: c\n---\n{}",
            ok_check("one"),
            ok_check("three")
        );
        let docs = parse_documents(&text).unwrap();
        assert_eq!(docs.len(), 3);
        assert!(docs[0].check.is_ok() && docs[2].check.is_ok());
        let err = docs[1].check.as_ref().unwrap_err().to_string();
        assert!(
            err.starts_with("not valid YAML: error: line 8 column 2"),
            "{err}"
        );
    }

    #[test]
    fn document_markers_split_only_at_the_start_of_a_line() {
        let text = "# leading comment\n---\na: 1\n--- # second\nb: \"--- not a marker\"\n...\n---\n\n# only a comment\n";
        let chunks = split_documents(text);
        assert_eq!(chunks.len(), 2, "{chunks:?}");
        assert_eq!(chunks[0], (2, "---\na: 1\n"));
        assert_eq!(chunks[1].0, 4);
        assert!(chunks[1].1.contains("not a marker"));
        let inline = split_documents("--- {a: 1}\n--- {b: 2}\n");
        assert_eq!(inline.len(), 2);
    }

    #[test]
    fn yaml_syntax_errors_fail_the_file_in_one_line() {
        let err = parse_documents("a: [1, 2\nb: c\n").unwrap_err().to_string();
        assert!(!err.contains('\n'));
        assert!(!err.is_empty());
    }
}
