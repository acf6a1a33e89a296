use super::*;
use crate::api::{HealthCheckStatus, Outcome, RunResult};
use crate::engine::CheckView;

fn view(ns: &str, name: &str, ok: bool, errors: Vec<&str>) -> Arc<CheckView> {
    Arc::new(CheckView {
        key: CheckKey::new(ns, name),
        resource: Arc::default(),
        status: Arc::new(HealthCheckStatus {
            ok,
            errors: errors.into_iter().map(String::from).collect(),
            success_count: 5,
            failure_count: 2,
            run_duration: 1_500_000_000,
            last_outcome: Some(if ok {
                Outcome::Success
            } else {
                Outcome::Failure
            }),
            ..Default::default()
        }),
        invalid: None,
        run_interval: None,
        schedule: None,
        timeout: None,
        single_run: false,
        suspended: false,
        severity: Some("critical".into()),
        category: None,
        depends_on: Vec::new(),
        departed: None,
        memo: Default::default(),
    })
}

/// Samples as `name{labels} value` lines, the way a scrape sees them.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

#[test]
fn families_labels_and_values() {
    let board = Arc::new(Board::new("probity-0"));
    board.put(view("kh", "dns", true, vec![]));
    board.put(view(
        "kh",
        "deploy",
        false,
        vec!["pod \"x\" failed\nat step 2", "b\\c"],
    ));
    let m = Metrics::new(MetricsConfig::default(), board.clone());
    m.observe_run(&CheckKey::new("kh", "dns"), None, Duration::from_secs(7));
    let text = m.encode_text();
    let s = samples(&text);
    let get = |series: &str| s.iter().find(|(k, _)| k == series).map(|(_, v)| *v);
    assert_eq!(get("kuberhealthy_cluster_state"), Some(0.0));
    assert_eq!(get("kuberhealthy_controller_leader"), Some(1.0));
    assert_eq!(
        get("kuberhealthy_running{current_master=\"probity-0\"}"),
        Some(1.0)
    );
    assert_eq!(
        get("kuberhealthy_check{check=\"dns\",namespace=\"kh\",severity=\"critical\",status=\"1\",error=\"\"}"),
        Some(1.0)
    );
    // Quotes, newlines and backslashes escaped; errors joined.
    assert_eq!(
        get("kuberhealthy_check{check=\"deploy\",namespace=\"kh\",severity=\"critical\",status=\"0\",error=\"pod \\\"x\\\" failed\\nat step 2 | b\\\\c\"}"),
        Some(0.0)
    );
    assert_eq!(
        get("kuberhealthy_check_duration_seconds{check=\"dns\",namespace=\"kh\",severity=\"critical\"}"),
        Some(1.5)
    );
    assert_eq!(get("kuberhealthy_check_success_total{check=\"dns\",namespace=\"kh\",severity=\"critical\"}"), Some(5.0));
    assert!(text.contains("# TYPE kuberhealthy_check_success_total counter\n"));
    assert!(!text.contains("# EOF"));
    // By default a check has Kuberhealthy's six series, durations aggregated by namespace: a
    // real cumulative histogram, 7s in le=10 and above, not in le=5.
    let per_check = s
        .iter()
        .filter(|(k, _)| k.contains("check=\"dns\""))
        .count();
    assert_eq!(per_check, 6, "{text}");
    let b = |le: &str| {
        get(&format!(
            "probity_run_duration_seconds_bucket{{le=\"{le}\",namespace=\"kh\",runs=\"pod\"}}"
        ))
    };
    assert_eq!(
        (b("5.0"), b("10.0"), b("+Inf")),
        (Some(0.0), Some(1.0), Some(1.0))
    );
    assert!(!text.contains("kuberhealthy_check_run_duration_seconds"));
    assert!(!text.contains("probity_check_uptime_ratio"));
    // With --per-check-detail: the per-check histograms, uptime and next run too.
    let detailed = Metrics::new(
        MetricsConfig {
            per_check_detail: true,
            ..Default::default()
        },
        board.clone(),
    );
    detailed.observe_run(
        &CheckKey::new("kh", "dns"),
        Some(crate::api::ProbeKind::HttpGet),
        Duration::from_secs(7),
    );
    let text = detailed.encode_text();
    let s = samples(&text);
    let get = |series: &str| s.iter().find(|(k, _)| k == series).map(|(_, v)| *v);
    let b = |le: &str| {
        get(&format!("kuberhealthy_check_run_duration_seconds_bucket{{le=\"{le}\",check=\"dns\",namespace=\"kh\"}}"))
    };
    assert_eq!(
        (b("5.0"), b("10.0"), b("+Inf")),
        (Some(0.0), Some(1.0), Some(1.0))
    );
    assert_eq!(
        get("probity_probe_duration_seconds_count{check=\"dns\",namespace=\"kh\",probe=\"httpGet\"}"),
        Some(1.0)
    );
    assert!(text.contains("probity_check_next_run_timestamp_seconds{check=\"dns\""));
    assert!(m.encode_openmetrics().ends_with("# EOF\n"));
    // Present only for what is failing or held.
    assert_eq!(
        get("probity_check_failure_cause{check=\"deploy\",namespace=\"kh\",severity=\"critical\",cause=\"target\"}"),
        Some(1.0)
    );
    assert!(!text.contains("probity_check_failure_cause{check=\"dns\""));
    assert!(!text.contains("probity_check_notifications_held{"));
}

#[test]
fn a_check_failing_for_its_runner_and_flapping_says_so() {
    let board = Arc::new(Board::new("probity-0"));
    let mut v = (*view("kh", "pod", false, vec!["pod evicted"])).clone();
    let st = Arc::make_mut(&mut v.status);
    st.history = vec![crate::api::RunRecord {
        outcome: Some(Outcome::Crash),
        cause: Some(crate::api::Cause::Runner),
        ..Default::default()
    }];
    let now = chrono::Utc::now().timestamp();
    // Failing, passing by turns, ending failing.
    for i in 0..7 {
        st.ok = i % 2 == 1;
        st.track_failing_since(now - 60 + i);
    }
    board.put(Arc::new(v));
    let text = Metrics::new(MetricsConfig::default(), board).encode_text();
    let s = samples(&text);
    let get = |series: &str| s.iter().find(|(k, _)| k == series).map(|(_, v)| *v);
    assert_eq!(
        get("probity_check_failure_cause{check=\"pod\",namespace=\"kh\",severity=\"critical\",cause=\"runner\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        get("probity_check_notifications_held{check=\"pod\",namespace=\"kh\",severity=\"critical\",reason=\"flapping\"}"),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn error_label_is_truncated_or_suppressed_and_deleted_checks_vanish() {
    let board = Arc::new(Board::new("p"));
    let long = "é".repeat(1000);
    board.put(view("kh", "big", false, vec![long.as_str()]));
    let m = Metrics::new(
        MetricsConfig {
            suppress_error_label: false,
            error_label_max_length: 10,
            ..Default::default()
        },
        board.clone(),
    );
    assert!(m
        .encode_text()
        .contains(&format!("error=\"{}\"", "é".repeat(10))));
    let m = Metrics::new(
        MetricsConfig {
            suppress_error_label: true,
            error_label_max_length: 10,
            ..Default::default()
        },
        board.clone(),
    );
    m.observe_run(&CheckKey::new("kh", "big"), None, Duration::from_secs(1));
    let text = m.encode_text();
    assert!(text.contains(
        "kuberhealthy_check{check=\"big\",namespace=\"kh\",severity=\"critical\",status=\"0\"} 0"
    ));
    board.remove(&CheckKey::new("kh", "big"));
    m.forget(&CheckKey::new("kh", "big"));
    assert!(!m.encode_text().contains("big"));
}

#[test]
fn what_a_run_timed_is_a_histogram_per_check_gone_with_the_check() {
    let board = Arc::new(Board::new("probity-0"));
    let m = Metrics::new(MetricsConfig::default(), board);
    let key = CheckKey::new("ai", "inference");
    let result = RunResult::passed()
        .with_timing(TimingName::ColdStartFirstByte, Duration::from_millis(3_200))
        .with_timing(TimingName::ColdStartActive, Duration::from_millis(2_900));
    m.finished(&Finished {
        key: key.clone(),
        result,
        duration: Duration::from_secs(4),
        probe: Some(ProbeKind::Knative),
    });
    let s = samples(&m.encode_text());
    let get = |series: &str| s.iter().find(|(k, _)| k == series).map(|(_, v)| *v);
    let first = "check=\"inference\",namespace=\"ai\",timing=\"cold_start_first_byte\"";
    assert_eq!(
        get(&format!("probity_knative_latency_seconds_count{{{first}}}")),
        Some(1.0)
    );
    assert_eq!(
        get(&format!("probity_knative_latency_seconds_sum{{{first}}}")),
        Some(3.2)
    );
    assert_eq!(
        get(&format!(
            "probity_knative_latency_seconds_bucket{{le=\"2.5\",{first}}}"
        )),
        Some(0.0)
    );
    assert_eq!(
        get(&format!(
            "probity_knative_latency_seconds_bucket{{le=\"5.0\",{first}}}"
        )),
        Some(1.0)
    );
    assert!(get("probity_knative_latency_seconds_count{check=\"inference\",namespace=\"ai\",timing=\"cold_start_active\"}").is_some());
    m.forget(&key);
    assert!(
        !m.encode_text().contains("timing=\""),
        "no series outlives its check"
    );
}

#[test]
fn reported_values_are_gauges_of_the_checks_that_report_them() {
    let board = Arc::new(Board::new("probity-0"));
    let mut with = (*view("kh", "queue", true, vec![])).clone();
    Arc::make_mut(&mut with.status).values =
        [("depth".to_string(), 12.0), ("p99_ms".to_string(), 3.5)].into();
    board.put(Arc::new(with));
    board.put(view("kh", "plain", true, vec![]));
    let m = Metrics::new(MetricsConfig::default(), board);
    let s = samples(&m.encode_text());
    let get = |series: &str| s.iter().find(|(k, _)| k == series).map(|(_, v)| *v);
    assert_eq!(
        get("probity_check_value{check=\"queue\",namespace=\"kh\",severity=\"critical\",name=\"depth\"}"),
        Some(12.0)
    );
    assert_eq!(
        get("probity_check_value{check=\"queue\",namespace=\"kh\",severity=\"critical\",name=\"p99_ms\"}"),
        Some(3.5)
    );
    assert!(
        !s.iter()
            .any(|(k, _)| k.starts_with("probity_check_value{check=\"plain\"")),
        "no series for a check without values"
    );
}
