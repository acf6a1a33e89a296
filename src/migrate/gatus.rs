//! `probity migrate --from gatus FILE`: a Gatus configuration's `endpoints` into HealthChecks.
//! HTTP endpoints become `httpGet` probes with their conditions as `expectStatus` and
//! `assertions`, `tcp://` becomes `tcpSocket`, a `dns:` endpoint becomes a `dns` probe, and
//! `icmp://` an `exec` probe running `ping`. A condition, scheme or setting with no place in a
//! HealthCheck is named in a note, never dropped in silence.

use serde_json::{json, Map, Value};

use super::{MigrateError, Migrated};
use crate::api::load::split_values;

/// Gatus' default interval and client timeout.
const INTERVAL: &str = "60s";
const TIMEOUT: &str = "10s";

/// Converts the text of Gatus configuration file `name`.
pub fn migrate(name: &str, text: &str) -> Result<Migrated, MigrateError> {
    let mut out = Migrated::default();
    for (index, value) in split_values(text) {
        let value = value.map_err(|source| MigrateError::NotYaml {
            name: name.to_string(),
            index,
            source,
        })?;
        for key in value.as_object().into_iter().flat_map(|m| m.keys()) {
            if key != "endpoints" {
                out.notes.push(format!(
                    "{name}: {key} not carried over (probity's own configuration covers it: alerting in --alerting-config, the UI and storage are built in)"
                ));
            }
        }
        let endpoints = value["endpoints"].as_array().cloned().unwrap_or_default();
        for (i, e) in endpoints.iter().enumerate() {
            let what = format!(
                "endpoints[{i}] {}",
                e["name"].as_str().unwrap_or("(no name)")
            );
            let mut say = |note: String| out.notes.push(format!("{name}: {what}: {note}"));
            if let Some(check) = endpoint(e, &mut say) {
                let yaml = serde_saphyr::to_string(&check).map_err(|err| MigrateError::Write {
                    name: name.to_string(),
                    reason: err.to_string(),
                })?;
                out.documents.push(yaml);
            }
        }
    }
    Ok(out)
}

/// A DNS-1123 name from a Gatus name (and group): lower case, `-` for the rest.
fn dns_name(group: Option<&str>, name: &str) -> String {
    let joined = match group {
        Some(g) if !g.is_empty() => format!("{g}-{name}"),
        _ => name.to_string(),
    };
    let mut s: String = joined
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s = s.trim_matches('-');
    let s = if s.len() > 63 { &s[..63] } else { s };
    if s.is_empty() {
        "gatus-endpoint".into()
    } else {
        s.trim_end_matches('-').to_string()
    }
}

fn endpoint(e: &Value, say: &mut impl FnMut(String)) -> Option<Value> {
    let name = e["name"].as_str().unwrap_or("");
    let group = e["group"].as_str();
    let url = e["url"].as_str().unwrap_or("");
    let mut spec = Map::new();
    spec.insert(
        "runInterval".into(),
        json!(e["interval"].as_str().unwrap_or(INTERVAL)),
    );
    spec.insert(
        "timeout".into(),
        json!(e["client"]["timeout"].as_str().unwrap_or(TIMEOUT)),
    );
    if e["enabled"] == json!(false) {
        spec.insert("suspend".into(), json!(true));
    }
    let conditions: Vec<&str> = e["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let probe = if e.get("dns").is_some_and(|d| !d.is_null()) {
        dns(e, url, &conditions, say)
    } else if let Some(rest) = url.strip_prefix("tcp://") {
        let (host, port) = rest.rsplit_once(':').unwrap_or((rest, ""));
        let Ok(port) = port.trim_end_matches('/').parse::<u16>() else {
            say(format!("{url:?}: a tcp:// URL needs a port; not converted"));
            return None;
        };
        only_connected(&conditions, say);
        json!({"tcpSocket": {"host": host, "port": port}})
    } else if let Some(host) = url.strip_prefix("icmp://") {
        only_connected(&conditions, say);
        say("icmp:// became an exec probe running `ping -c 1 -W 2`: it needs ping where probity runs (in a cluster, an exec probe runs in the pod podSelector names)".into());
        json!({"exec": {"command": ["ping", "-c", "1", "-W", "2", host.trim_end_matches('/')]}})
    } else if url.starts_with("http://") || url.starts_with("https://") {
        http(e, url, &conditions, say)
    } else {
        let scheme = url.split("://").next().unwrap_or(url);
        say(format!(
            "{scheme}:// has no built-in probe in probity; not converted (a pod check can run any client)"
        ));
        return None;
    };
    spec.insert("probe".into(), probe);
    for k in ["alerts", "ui", "maintenance-windows"] {
        if e.get(k).is_some_and(|v| !v.is_null()) {
            say(format!(
                "{k} not carried over (routes in probity's --alerting-config take their place)"
            ));
        }
    }
    let mut meta = json!({"name": dns_name(group, name)});
    if let Some(g) = group {
        meta["labels"] = json!({"gatus.io/group": dns_name(None, g)});
    }
    Some(json!({
        "apiVersion": "kuberhealthy.github.io/v2",
        "kind": "HealthCheck",
        "metadata": meta,
        "spec": spec,
    }))
}

fn only_connected(conditions: &[&str], say: &mut impl FnMut(String)) {
    for c in conditions {
        if c.replace(' ', "") != "[CONNECTED]==true" {
            say(format!(
                "condition {c:?} not converted (only [CONNECTED] == true, which the probe is)"
            ));
        }
    }
}

fn dns(e: &Value, url: &str, conditions: &[&str], say: &mut impl FnMut(String)) -> Value {
    let d = &e["dns"];
    let mut probe = json!({
        "name": d["query-name"].as_str().unwrap_or(""),
        "type": d["query-type"].as_str().unwrap_or("A"),
    });
    if !url.is_empty() {
        probe["server"] = json!(url);
    }
    let mut answers = Vec::new();
    for c in conditions {
        match split(c) {
            Some(("[DNS_RCODE]", "==", v)) => probe["rcode"] = json!(v),
            Some(("[BODY]", "==", v)) if !v.starts_with("pat(") && !v.starts_with("any(") => {
                answers.push(v.to_string())
            }
            _ => say(format!("condition {c:?} not converted")),
        }
    }
    if !answers.is_empty() {
        probe["answers"] = json!({"contains": answers});
    }
    json!({"dns": probe})
}

/// `LEFT OP RIGHT` of a condition.
fn split(c: &str) -> Option<(&str, &str, &str)> {
    for op in ["==", "!=", "<=", ">=", "<", ">"] {
        if let Some((l, r)) = c.split_once(op) {
            return Some((l.trim(), op, r.trim()));
        }
    }
    None
}

/// Gatus' `pat(...)` glob as an anchored regex.
fn glob(p: &str) -> String {
    let mut re = String::from("^");
    for ch in p.chars() {
        match ch {
            '*' => re.push_str(".*"),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    re
}

/// `any(a, b)` as an anchored regex.
fn any(list: &str) -> String {
    let alts: Vec<String> = list.split(',').map(|a| regex::escape(a.trim())).collect();
    format!("^({})$", alts.join("|"))
}

/// `[BODY].a.b[0]` as JSONPath `$.a.b[0]`.
fn json_path(body_path: &str) -> String {
    format!("${}", body_path.strip_prefix("[BODY]").unwrap_or(body_path))
}

fn http(e: &Value, url: &str, conditions: &[&str], say: &mut impl FnMut(String)) -> Value {
    let mut probe = json!({"url": url});
    if let Some(m) = e["method"].as_str() {
        if m != "GET" {
            probe["method"] = json!(m);
        }
    }
    if let Some(b) = e["body"].as_str() {
        probe["body"] = json!(b);
    }
    if let Some(h) = e["headers"].as_object() {
        let headers: Vec<Value> = h
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())}))
            .collect();
        probe["httpHeaders"] = json!(headers);
    }
    if e["client"]["insecure"] == json!(true) {
        probe["verifyTLS"] = json!(false);
    }
    let mut statuses: Vec<Value> = Vec::new();
    let mut assertions: Vec<Value> = Vec::new();
    for c in conditions {
        let Some((left, op, right)) = split(c) else {
            say(format!("condition {c:?} not converted (not LEFT OP RIGHT)"));
            continue;
        };
        let number = right.parse::<f64>().ok();
        match (left, op) {
            ("[STATUS]", "==") if right.starts_with("any(") => {
                let inner = right.trim_start_matches("any(").trim_end_matches(')');
                statuses.extend(
                    inner
                        .split(',')
                        .filter_map(|s| s.trim().parse::<i64>().ok())
                        .map(|n| json!(n)),
                );
            }
            ("[STATUS]", "==") if number.is_some() => {
                statuses.push(json!(right.parse::<i64>().unwrap_or(0)))
            }
            ("[STATUS]", "<") if number.is_some() => statuses.push(json!(format!(
                "100-{}",
                right.parse::<i64>().unwrap_or(600) - 1
            ))),
            ("[STATUS]", "<=") if number.is_some() => statuses.push(json!(format!("100-{right}"))),
            ("[STATUS]", ">") if number.is_some() => statuses.push(json!(format!(
                "{}-599",
                right.parse::<i64>().unwrap_or(99) + 1
            ))),
            ("[STATUS]", ">=") if number.is_some() => statuses.push(json!(format!("{right}-599"))),
            ("[RESPONSE_TIME]", "<") if number.is_some() => {
                assertions.push(json!({"responseTimeUnder": format!("{right}ms")}))
            }
            ("[RESPONSE_TIME]", "<=") if number.is_some() => assertions.push(
                json!({"responseTimeUnder": format!("{}ms", number.unwrap_or(0.0) as i64 + 1)}),
            ),
            ("[CERTIFICATE_EXPIRATION]", ">" | ">=") => {
                // A duration (`48h`) or milliseconds.
                let d = match number {
                    Some(ms) => format!("{}ms", ms as i64),
                    None => right.to_string(),
                };
                assertions.push(json!({"certificateValidFor": d}))
            }
            ("[CONNECTED]", "==") if right == "true" => {}
            ("[BODY]", "==") if right.starts_with("pat(") => {
                let p = right.trim_start_matches("pat(").trim_end_matches(')');
                assertions.push(json!({"body": format!("/{}/", glob(p))}))
            }
            ("[BODY]", "==") => {
                assertions.push(json!({"body": format!("/^{}$/", regex::escape(right))}))
            }
            (l, "==") if l.starts_with("[BODY].") => {
                let a = if right.starts_with("pat(") {
                    json!({"jsonPath": json_path(l), "matches": glob(right.trim_start_matches("pat(").trim_end_matches(')'))})
                } else if right.starts_with("any(") {
                    json!({"jsonPath": json_path(l), "matches": any(right.trim_start_matches("any(").trim_end_matches(')'))})
                } else {
                    json!({"jsonPath": json_path(l), "equals": right})
                };
                assertions.push(a)
            }
            (l, "<") if l.starts_with("[BODY].") && number.is_some() => {
                assertions.push(json!({"jsonPath": json_path(l), "lessThan": number}))
            }
            (l, ">") if l.starts_with("[BODY].") && number.is_some() => {
                assertions.push(json!({"jsonPath": json_path(l), "greaterThan": number}))
            }
            (l, "==") if l.starts_with("has([BODY].") && right == "true" => {
                let inner = l.trim_start_matches("has(").trim_end_matches(')');
                assertions.push(json!({"jsonPath": json_path(inner)}))
            }
            _ => say(format!(
                "condition {c:?} not converted (no equivalent assertion)"
            )),
        }
    }
    if !statuses.is_empty() {
        probe["expectStatus"] = json!(statuses);
    }
    if !assertions.is_empty() {
        probe["assertions"] = json!(assertions);
    }
    json!({"httpGet": probe})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::load::parse_documents;
    use crate::api::validate::{validate, Defaults};

    const GATUS: &str = r#"
storage: {type: sqlite, path: /data/data.db}
alerting: {slack: {webhook-url: "https://hooks.slack.com/x"}}
endpoints:
  - name: front-end
    group: core
    url: "https://twin.sh/health"
    interval: 5m
    conditions:
      - "[STATUS] == 200"
      - "[BODY].status == UP"
      - "[BODY].queue.depth < 100"
      - "[BODY].version == pat(2.*)"
      - "[RESPONSE_TIME] < 150"
      - "[CERTIFICATE_EXPIRATION] > 48h"
      - "len([BODY].items) == 3"
    alerts: [{type: slack}]
  - name: api post
    url: "http://api.internal:8080/v1/ping"
    method: POST
    body: '{"ping": true}'
    headers: {Content-Type: application/json}
    client: {insecure: true, timeout: 3s}
    conditions: ["[STATUS] < 300", "[BODY] == pat(*pong*)"]
  - name: example-dns-query
    url: "8.8.8.8"
    dns: {query-name: "example.com", query-type: "A"}
    conditions: ["[BODY] == 93.184.216.34", "[DNS_RCODE] == NOERROR"]
  - name: postgres
    url: "tcp://db.internal:5432"
    conditions: ["[CONNECTED] == true"]
  - name: icmp-ping
    url: "icmp://example.org"
    enabled: false
    conditions: ["[CONNECTED] == true"]
  - name: ssh
    url: "ssh://example.org:22"
    conditions: ["[CONNECTED] == true"]
"#;

    #[test]
    fn endpoints_become_valid_health_checks_and_what_cannot_is_named() {
        let m = migrate("config.yaml", GATUS).unwrap();
        assert_eq!(m.documents.len(), 5, "ssh is not converted");
        let docs = parse_documents(&m.documents.join("---\n")).unwrap();
        let checks: Vec<_> = docs.into_iter().map(|d| d.check.unwrap()).collect();
        for c in &checks {
            let mut c = c.clone();
            c.metadata.namespace = Some("default".into());
            validate(&c, &Defaults::default()).unwrap_or_else(|e| panic!("{e}"));
        }
        let names: Vec<_> = checks
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "core-front-end",
                "api-post",
                "example-dns-query",
                "postgres",
                "icmp-ping"
            ]
        );
        let front = serde_json::to_value(&checks[0].spec).unwrap();
        assert_eq!(front["runInterval"], "5m");
        assert_eq!(front["timeout"], "10s", "Gatus' default client timeout");
        assert_eq!(
            front["probe"]["httpGet"],
            json!({
                "url": "https://twin.sh/health",
                "expectStatus": [200],
                "assertions": [
                    {"jsonPath": "$.status", "equals": "UP"},
                    {"jsonPath": "$.queue.depth", "lessThan": 100.0},
                    {"jsonPath": "$.version", "matches": "^2\\..*$"},
                    {"responseTimeUnder": "150ms"},
                    {"certificateValidFor": "48h"},
                ]
            })
        );
        assert_eq!(
            checks[0].metadata.labels.as_ref().unwrap()["gatus.io/group"],
            "core"
        );
        let post = serde_json::to_value(&checks[1].spec).unwrap();
        assert_eq!(post["timeout"], "3s");
        assert_eq!(
            post["probe"]["httpGet"],
            json!({
                "url": "http://api.internal:8080/v1/ping",
                "method": "POST",
                "body": "{\"ping\": true}",
                "httpHeaders": [{"name": "Content-Type", "value": "application/json"}],
                "verifyTLS": false,
                "expectStatus": ["100-299"],
                "assertions": [{"body": "/^.*pong.*$/"}],
            })
        );
        let dns = serde_json::to_value(&checks[2].spec).unwrap();
        assert_eq!(
            dns["probe"]["dns"],
            json!({"name": "example.com", "type": "A", "server": "8.8.8.8", "rcode": "NOERROR", "answers": {"contains": ["93.184.216.34"]}})
        );
        let tcp = serde_json::to_value(&checks[3].spec).unwrap();
        assert_eq!(
            tcp["probe"],
            json!({"tcpSocket": {"host": "db.internal", "port": 5432}})
        );
        let icmp = serde_json::to_value(&checks[4].spec).unwrap();
        assert_eq!(icmp["suspend"], true);
        assert_eq!(icmp["probe"]["exec"]["command"][0], "ping");
        let notes = m.notes.join("\n");
        for said in [
            "config.yaml: storage not carried over",
            "config.yaml: alerting not carried over",
            "endpoints[0] front-end: condition \"len([BODY].items) == 3\" not converted (no equivalent assertion)",
            "endpoints[0] front-end: alerts not carried over",
            "endpoints[4] icmp-ping: icmp:// became an exec probe",
            "endpoints[5] ssh: ssh:// has no built-in probe in probity; not converted",
        ] {
            assert!(notes.contains(said), "{said:?} in\n{notes}");
        }
    }
}
