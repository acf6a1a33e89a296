//! Judging an HTTP response against `assertions`: pure, from what the exchange brought back.
//! Each miss is one line naming the subject, what came back and what was expected
//! (`$.status is "DOWN", expected "UP"`); a miss of a `severity: warning` assertion goes to the
//! warnings, which degrade a run instead of failing it.

use std::time::Duration;

use hyper::HeaderMap;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::api::duration::{self, spell};
use crate::api::http_probe::{slashed, HttpAssertion};

/// At most this much of a body is read when an assertion reads it (JSONPath on a large
/// document); kubelet's 10 KiB stays the limit for `expectBody` alone.
pub const MAX_ASSERTED_BODY: usize = 1024 * 1024;

/// What the exchange brought back, as the assertions read it.
pub struct Exchange<'a> {
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// From the first connect to the last byte read.
    pub took: Duration,
    /// The server certificate's `notAfter` (unix seconds), over HTTPS.
    pub cert_not_after: Option<i64>,
    pub now_unix: i64,
}

/// Whether any assertion reads the body (so it must be read, up to `MAX_ASSERTED_BODY`).
pub fn reads_body(assertions: &[HttpAssertion]) -> bool {
    assertions
        .iter()
        .any(|a| a.json_path.is_some() || a.body.is_some())
}

/// The misses: (errors, warnings).
pub fn judge(assertions: &[HttpAssertion], x: &Exchange) -> (Vec<String>, Vec<String>) {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut json: Option<Result<Value, String>> = None;
    for a in assertions {
        let miss = if let Some(path) = &a.json_path {
            let doc = json.get_or_insert_with(|| {
                serde_json::from_slice::<Value>(x.body).map_err(|e| e.to_string())
            });
            json_path(a, path, doc)
        } else if let Some(name) = &a.header {
            header(a, name, x.headers)
        } else if let Some(want) = &a.body {
            body(want, x.body)
        } else if let Some(limit) = &a.response_time_under {
            duration::parse(limit)
                .map_err(|e| e.to_string())
                .and_then(|limit| {
                    (x.took >= limit)
                        .then(|| {
                            format!("response took {}, expected under {}", ms(x.took), ms(limit))
                        })
                        .map_or(Ok(()), Err)
                })
                .err()
        } else if let Some(want) = &a.certificate_valid_for {
            certificate(want, x.cert_not_after, x.now_unix)
        } else {
            None
        };
        if let Some(m) = miss {
            if a.is_warning() {
                warnings.push(m);
            } else {
                errors.push(m);
            }
        }
    }
    (errors, warnings)
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn json_path(a: &HttpAssertion, path: &str, doc: &Result<Value, String>) -> Option<String> {
    let doc = match doc {
        Ok(d) => d,
        Err(e) => return Some(format!("{path}: the body is not JSON ({e})")),
    };
    let query = match jsonpath_rust::parser::parse_json_path(path) {
        Ok(q) => q,
        Err(e) => return Some(format!("{path} is not a JSONPath: {e}")),
    };
    let found = match jsonpath_rust::query::js_path_process(&query, doc) {
        Ok(found) => found,
        Err(e) => return Some(format!("{path}: {e}")),
    };
    if found.is_empty() {
        return Some(format!("{path}: nothing at this path"));
    }
    let count = found.len();
    let values: Vec<&Value> = found.into_iter().map(|r| r.val()).collect();
    values.iter().find_map(|v| {
        compare(a, v).map(|why| {
            let subject = if count > 1 {
                format!("{path} (one of {count})")
            } else {
                path.to_string()
            };
            format!("{subject} is {}, {why}", shown(v))
        })
    })
}

fn header(a: &HttpAssertion, name: &str, headers: &HeaderMap) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or("(not text)"))
        .collect();
    if values.is_empty() {
        return Some(format!("header {name} is missing"));
    }
    let value = Value::String(values.join(", "));
    compare(a, &value).map(|why| format!("header {name} is {}, {why}", shown(&value)))
}

fn body(want: &str, body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    match slashed(want) {
        Some(re) => match regex::Regex::new(re) {
            Ok(r) if r.is_match(&text) => None,
            Ok(_) => Some(format!("body does not match /{re}/")),
            Err(e) => Some(format!("/{re}/ is not a valid regex: {e}")),
        },
        None => (!text.contains(want)).then(|| format!("body does not contain {want:?}")),
    }
}

fn certificate(want: &str, not_after: Option<i64>, now_unix: i64) -> Option<String> {
    let want = match duration::parse(want) {
        Ok(d) => d,
        Err(e) => return Some(e.to_string()),
    };
    let Some(end) = not_after else {
        return Some("no server certificate to read (not HTTPS?)".into());
    };
    let when = duration::rfc3339(end);
    let left = end - now_unix;
    if left <= 0 {
        return Some(format!("certificate expired {} ago ({when})", spell(-left)));
    }
    (Duration::from_secs(left as u64) < want).then(|| {
        format!(
            "certificate expires in {} ({when}), expected at least {}",
            spell(left),
            spell(want.as_secs() as i64)
        )
    })
}

/// A value as a message shows it: strings quoted, the rest as JSON.
fn shown(v: &Value) -> String {
    let t = v.to_string();
    if t.len() > 80 {
        let mut end = 77;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &t[..end])
    } else {
        t
    }
}

/// The value's text: a string's own, anything else as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Why `v` fails the assertion's comparisons, if it does.
fn compare(a: &HttpAssertion, v: &Value) -> Option<String> {
    if let Some(want) = &a.equals {
        let same = match (want, number(v)) {
            (IntOrString::Int(n), Some(x)) => x == f64::from(*n),
            (IntOrString::Int(n), None) => text(v) == n.to_string(),
            (IntOrString::String(s), _) => text(v) == *s,
        };
        if !same {
            let want = match want {
                IntOrString::Int(n) => n.to_string(),
                IntOrString::String(s) => format!("{s:?}"),
            };
            return Some(format!("expected {want}"));
        }
    }
    if let Some(want) = &a.contains {
        if !text(v).contains(want.as_str()) {
            return Some(format!("expected to contain {want:?}"));
        }
    }
    if let Some(re) = &a.matches {
        match regex::Regex::new(re) {
            Ok(r) if r.is_match(&text(v)) => {}
            Ok(_) => return Some(format!("expected to match /{re}/")),
            Err(e) => return Some(format!("/{re}/ is not a valid regex: {e}")),
        }
    }
    for (bound, below) in [(a.less_than, true), (a.greater_than, false)] {
        let Some(bound) = bound else { continue };
        let op = if below { "<" } else { ">" };
        match number(v) {
            Some(x) if (below && x < bound) || (!below && x > bound) => {}
            Some(_) => return Some(format!("expected {op} {bound}")),
            None => return Some(format!("expected a number {op} {bound}")),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assertions(yaml: &str) -> Vec<HttpAssertion> {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn exchange<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> Exchange<'a> {
        Exchange {
            headers,
            body,
            took: Duration::from_millis(120),
            cert_not_after: Some(1_000_000 + 9 * 86_400),
            now_unix: 1_000_000,
        }
    }

    #[test]
    fn every_miss_names_what_came_back_and_what_was_expected() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "text/html".parse().unwrap());
        let body = br#"{"status":"DOWN","queue":{"depth":140},"version":"2.3.1","items":[{"ok":true},{"ok":false}]}"#;
        let all = assertions(
            r#"
- {jsonPath: $.status, equals: UP}
- {jsonPath: $.queue.depth, lessThan: 100}
- {jsonPath: $.queue.depth, greaterThan: 10}
- {jsonPath: $.queue.depth, equals: 140}
- {jsonPath: $.version, matches: '^2\.'}
- {jsonPath: '$.items[*].ok', equals: 'true'}
- {jsonPath: $.missing}
- {header: Content-Type, contains: json}
- {header: X-Trace}
- {body: '"version"'}
- {body: '/"status":"UP"/'}
- {responseTimeUnder: 100ms, severity: warning}
- {certificateValidFor: 14d, severity: warning}
- {certificateValidFor: 7d}
"#,
        );
        let (errors, warnings) = judge(&all, &exchange(&headers, body));
        assert_eq!(
            errors,
            [
                "$.status is \"DOWN\", expected \"UP\"",
                "$.queue.depth is 140, expected < 100",
                "$.items[*].ok (one of 2) is false, expected \"true\"",
                "$.missing: nothing at this path",
                "header Content-Type is \"text/html\", expected to contain \"json\"",
                "header X-Trace is missing",
                "body does not match /\"status\":\"UP\"/",
            ]
        );
        assert_eq!(
            warnings,
            [
                "response took 120ms, expected under 100ms",
                "certificate expires in 9d 0h (1970-01-21T13:46:40Z), expected at least 14d 0h",
            ]
        );
    }

    #[test]
    fn a_body_that_is_not_json_and_an_expired_or_absent_certificate_are_said() {
        let headers = HeaderMap::new();
        let all = assertions("[{jsonPath: $.a, equals: 1}, {certificateValidFor: 1d}]");
        let mut x = exchange(&headers, b"<html>");
        x.cert_not_after = Some(x.now_unix - 3 * 3600);
        let (errors, _) = judge(&all, &x);
        assert!(errors[0].starts_with("$.a: the body is not JSON (expected value"));
        assert_eq!(
            errors[1],
            "certificate expired 3h 0m ago (1970-01-12T10:46:40Z)"
        );
        x.cert_not_after = None;
        assert_eq!(
            judge(&all[1..], &x).0,
            ["no server certificate to read (not HTTPS?)"]
        );
        // Numbers compare as numbers, whatever their spelling.
        let all = assertions("[{jsonPath: $.n, equals: 2}, {jsonPath: $.s, greaterThan: 1.5}]");
        let (errors, _) = judge(&all, &exchange(&headers, br#"{"n": 2.0, "s": "2"}"#));
        assert!(errors.is_empty(), "{errors:?}");
    }
}
