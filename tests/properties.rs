//! Property tests of every parser that reads outside input: durations, cron expressions with
//! time zones, report bodies, HealthCheck YAML, and state journal lines. Each runs a fixed
//! number of cases (`PROBITY_PROPTEST_CASES`, default 512), so CI's budget is known; none may
//! panic, and each checks what must hold of what it accepts.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use proptest::test_runner::Config;

use probity::api::duration;
use probity::api::load::parse_documents;
use probity::api::validate::{validate, CronSchedule, Defaults};
use probity::api::{CheckKey, HealthCheckStatus};
use probity::engine::StatusStore;
use probity::local::journal::FileStore;
use probity::server::report::parse_body;

fn config() -> Config {
    let cases = std::env::var("PROBITY_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    Config {
        cases,
        // A failure is printed with its minimal input; nothing is written into the tree.
        failure_persistence: None,
        ..Config::default()
    }
}

fn one_line(s: &str) -> bool {
    !s.contains('\n') && !s.is_empty()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn durations_never_panic_and_errors_are_one_line(s in "\\PC{0,40}") {
        if let Err(e) = duration::parse(&s) {
            prop_assert!(one_line(&e.to_string()), "{e:?}");
        }
    }

    #[test]
    fn durations_made_of_units_add_up(
        h in 0u64..10_000, m in 0u64..60, s in 0u64..60, ms in 0u64..1000, frac in 0u64..1000,
    ) {
        let text = format!("{h}h{m}m{s}.{frac:03}s{ms}ms");
        let want = Duration::from_secs(h * 3600 + m * 60 + s)
            + Duration::from_millis(frac)
            + Duration::from_millis(ms);
        prop_assert_eq!(duration::parse(&text), Ok(want));
    }

    #[test]
    fn go_formatted_durations_parse_back(nanos in 0u64..=i64::MAX as u64) {
        let d = Duration::from_nanos(nanos);
        prop_assert_eq!(duration::parse(&duration::format(d)), Ok(d));
    }

    #[test]
    fn long_fractions_and_huge_numbers_are_errors_or_values_never_panics(
        digits in "[0-9]{1,60}", frac in "[0-9]{0,60}", unit in "(ns|us|ms|s|m|h|d)",
    ) {
        let text = format!("{digits}.{frac}{unit}");
        let _ = duration::parse(&text);
    }
}

/// A cron field: `*`, a number, a range, a step, a list, or a name.
fn cron_field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("*".to_string()),
        (0u32..70).prop_map(|n| n.to_string()),
        (0u32..40, 0u32..40).prop_map(|(a, b)| format!("{a}-{b}")),
        (0u32..40, 0u32..20).prop_map(|(a, s)| format!("{a}/{s}")),
        (0u32..40, 0u32..40, 0u32..40).prop_map(|(a, b, c)| format!("{a},{b},{c}")),
        Just("MON-FRI".to_string()),
        Just("JAN".to_string()),
        Just("L".to_string()),
        Just("5#5".to_string()),
        Just("?".to_string()),
    ]
}

fn zone() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("Europe/Berlin".to_string())),
        Just(Some("America/New_York".to_string())),
        Just(Some("Pacific/Apia".to_string())),
        Just(Some("Australia/Lord_Howe".to_string())),
        Just(Some("Asia/Kathmandu".to_string())),
        Just(Some("Not/AZone".to_string())),
        Just(Some(String::new())),
    ]
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 2000 .. 2100, to the second.
    (946_684_800i64..4_102_444_800).prop_map(|s| Utc.timestamp_opt(s, 0).unwrap())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn cron_expressions_in_zones_schedule_forward(
        fields in proptest::collection::vec(cron_field(), 5..=6),
        tz in zone(),
        t in instant(),
    ) {
        let expr = fields.join(" ");
        match CronSchedule::parse(&expr, tz.as_deref()) {
            Err(p) => prop_assert!(one_line(&p.message), "{}", p.message),
            Ok(c) => {
                // Accepted means it fires: strictly after any instant, and again after that.
                let next = c.next_after(t);
                prop_assert!(next.is_some(), "{expr} accepted but never fires after {t}");
                let next = next.unwrap();
                prop_assert!(next > t);
                let again = c.next_after(next).unwrap();
                prop_assert!(again > next);
            }
        }
    }

    #[test]
    fn any_text_as_a_schedule_never_panics(expr in "\\PC{0,40}", tz in "\\PC{0,20}") {
        let _ = CronSchedule::parse(&expr, Some(&tz));
    }
}

/// A JSON value of a few levels.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        "\\PC{0,12}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map("\\PC{0,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `ok` or `errors`, in any letter case.
fn key_case(word: &'static str) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<bool>(), word.len()).prop_map(move |up| {
        word.chars()
            .zip(up)
            .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn report_bodies_of_any_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Err(e) = parse_body(&body) {
            prop_assert!(one_line(&e.to_string()), "{e:?}");
        }
    }

    #[test]
    fn report_bodies_follow_the_rules_whatever_the_key_case(
        ok_key in key_case("ok"),
        errors_key in key_case("errors"),
        ok in any::<bool>(),
        errors in proptest::collection::vec("\\PC{0,10}", 0..4),
        extra in proptest::collection::btree_map("[a-z]{3,8}", json(), 0..3),
    ) {
        let mut body = serde_json::Map::new();
        for (k, v) in extra {
            body.insert(k, v);
        }
        body.insert(ok_key, serde_json::json!(ok));
        body.insert(errors_key, serde_json::json!(errors));
        let got = parse_body(serde_json::to_vec(&body).unwrap().as_slice());
        let valid = if ok {
            errors.is_empty()
        } else {
            !errors.is_empty() && errors.iter().all(|e| !e.trim().is_empty())
        };
        if valid {
            prop_assert_eq!(got, Ok(probity::api::RunResult::reported(ok, errors)));
        } else {
            prop_assert!(got.is_err());
        }
    }

    #[test]
    fn any_json_as_a_report_body_never_panics(v in json()) {
        let _ = parse_body(serde_json::to_vec(&v).unwrap().as_slice());
    }
}

const MANIFEST: &str = "apiVersion: kuberhealthy.github.io/v2
kind: HealthCheck
metadata:
  name: example
  namespace: kuberhealthy
  labels: {team: net}
spec:
  runInterval: 10m
  timeout: 2m
  schedule: \"*/5 * * * *\"
  timeZone: Europe/Berlin
  successThreshold: 2
  podSpec:
    spec:
      containers:
        - name: check
          image: docker.io/curlimages/curl:8.5.0
          command: [\"/bin/sh\", \"-c\"]
          args: ['echo \"$KH_RUN_UUID\"']
---
apiVersion: kuberhealthy.github.io/v2
kind: HealthCheck
metadata: {name: probe}
spec:
  probe: {httpGet: {host: localhost, port: 8080, path: /healthz}}
";

/// The manifest with one edit: a byte replaced, deleted or inserted, or a line duplicated.
fn mutated() -> impl Strategy<Value = String> {
    (0..MANIFEST.len(), 0u8..4, any::<u8>()).prop_map(|(at, how, byte)| {
        let mut b = MANIFEST.as_bytes().to_vec();
        match how {
            0 => b[at] = byte,
            1 => {
                b.remove(at);
            }
            2 => b.insert(at, byte),
            _ => {
                let start = b[..at]
                    .iter()
                    .rposition(|c| *c == b'\n')
                    .map_or(0, |i| i + 1);
                let end = b[at..]
                    .iter()
                    .position(|c| *c == b'\n')
                    .map_or(b.len(), |i| at + i + 1);
                let line = b[start..end].to_vec();
                b.splice(start..start, line);
            }
        }
        String::from_utf8_lossy(&b).into_owned()
    })
}

fn load_and_validate(text: &str) -> Result<(), TestCaseError> {
    if let Ok(docs) = parse_documents(text) {
        for d in docs {
            match d.check {
                Ok(hc) => {
                    if let Err(invalid) = validate(&hc, &Defaults::default()) {
                        for p in invalid.problems {
                            prop_assert!(!p.field.is_empty());
                            prop_assert!(!p.message.contains('\n'), "{}", p.message);
                        }
                    }
                }
                Err(e) => prop_assert!(one_line(&e.to_string()), "{e}"),
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn healthcheck_yaml_of_any_text_never_panics(text in "\\PC{0,200}") {
        load_and_validate(&text)?;
    }

    #[test]
    fn edited_manifests_load_or_say_why_in_one_line(text in mutated()) {
        load_and_validate(&text)?;
    }
}

/// A journal line: a valid record, garbage, a torn record, or a record with a wild number.
fn journal_line() -> impl Strategy<Value = (Option<(String, i64)>, String)> {
    prop_oneof![
        ("[a-c]", 0i64..1_000_000).prop_map(|(k, n)| {
            let key = format!("ns/{k}");
            let line = serde_json::json!({"key": key, "status": {"ok": true, "successCount": n}})
                .to_string();
            (Some((key, n)), line)
        }),
        "\\PC{0,40}".prop_map(|s| (None, s.replace('\n', " "))),
        ("[a-c]", "[1-9][0-9]{12,400}").prop_map(|(k, n)| {
            (
                None,
                format!("{{\"key\":\"ns/{k}\",\"status\":{{\"ok\":true,\"lastRunUnix\":{n}}}}}"),
            )
        }),
    ]
}

proptest! {
    #![proptest_config(Config { cases: config().cases / 4 + 1, ..config() })]

    #[test]
    fn journals_of_any_lines_open_and_keep_every_good_record(
        lines in proptest::collection::vec(journal_line(), 0..20),
        torn in "\\PC{0,30}",
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        for (_, l) in &lines {
            text.push_str(l);
            text.push('\n');
        }
        // The process may have died mid-write.
        text.push_str(&torn.replace('\n', " "));
        std::fs::write(dir.path().join("state.jsonl"), &text).unwrap();
        let store = FileStore::open(dir.path());
        prop_assert!(store.is_ok(), "{:?}", store.err());
        let store = store.unwrap();
        // Each key's last good record is what loads, unless a later line for it was damaged
        // in a way that still names it (a wild date): then the good one before it stands too.
        let mut last = std::collections::HashMap::new();
        for (good, _) in &lines {
            if let Some((k, n)) = good {
                last.insert(k.clone(), *n);
            }
        }
        for (k, n) in last {
            let (ns, name) = k.split_once('/').unwrap();
            let got: Option<HealthCheckStatus> = store.load(&CheckKey::new(ns, name));
            prop_assert_eq!(got.map(|s| s.success_count), Some(n), "{}", k);
        }
        // And it still takes writes.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let saved = rt.block_on(store.save(&CheckKey::new("ns", "z"), &std::sync::Arc::new(HealthCheckStatus::default())));
        prop_assert!(saved.is_ok());
    }
}
