//! The status page as a person uses it: Debian's headless Chromium, driven over WebDriver
//! (`chromium-driver`), against a real `probity serve` with real checks. Clicks and typing go
//! through WebDriver, not through the page's own functions; a JavaScript error on either page
//! fails the test. With `PROBITY_SCREENSHOTS=DIR` the pages are saved there as PNG (the ones in
//! `docs/screenshots/` come from this test).

mod common;

use std::time::{Duration, Instant};

use common::webdriver::Browser;
use common::{count, detail, dirs, shell_check, write, Probity, PATIENCE};
use serde_json::json;

use common::webdriver::BACKSPACE;

fn rows_script() -> &'static str {
    "return [...document.querySelectorAll('.row')].map(r => r.dataset.check + '=' + r.dataset.state)"
}

async fn rows(b: &Browser) -> Vec<String> {
    serde_json::from_value(b.js(rows_script()).await).unwrap()
}

/// Waits until the list shows exactly `want` (the page re-renders after a click or typing).
async fn rows_become(b: &Browser, what: &str, want: &[&str]) {
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    let start = Instant::now();
    loop {
        let got = rows(b).await;
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: the list shows {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_filters_and_runs_checks_as_a_person_sees_them() {
    let how = "apt-get install chromium chromium-driver";
    if !common::available(
        common::webdriver::installed(),
        "chromium and chromedriver",
        how,
    ) {
        return;
    }
    let (tmp, checks, state) = dirs();
    let hourly = "  runInterval: 1h\n  timeout: 10s\n";
    write(
        &checks,
        "pass.yaml",
        &shell_check("pass", hourly, "probity report --ok"),
    );
    write(
        &checks,
        "fail.yaml",
        &shell_check(
            "fail",
            hourly,
            "echo checking the database at 10.0.0.5; probity report --error \"db down\" --value queue_depth=$$",
        ),
    );
    // Fails its first run, passes after: OK now, unstable in its strip.
    let marker = tmp.path().join("flaky-ran");
    write(
        &checks,
        "flaky.yaml",
        &shell_check(
            "flaky",
            "  runInterval: 2s\n  timeout: 10s\n",
            &format!(
                "if [ -e {m} ]; then probity report --ok; else touch {m}; probity report --error \"first run fails\"; fi",
                m = marker.display()
            ),
        ),
    );
    write(
        &checks,
        "paused.yaml",
        &shell_check(
            "paused",
            "  runInterval: 1h\n  suspend: true\n",
            "probity report --ok",
        ),
    );
    write(
        &checks,
        "broken.yaml",
        &shell_check("broken", "  runInterval: soon\n", "probity report --ok"),
    );
    let p = Probity::start(&checks, &state, &["--run-token", "s3cret"]);
    p.wait_ready().await;
    let doc = p
        .wait_for("every check's first verdict", |d| {
            count(d, "it/pass", "SuccessCount") >= 1
                && count(d, "it/fail", "FailureCount") >= 1
                && count(d, "it/flaky", "SuccessCount") >= 1
        })
        .await;
    assert_eq!(detail(&doc, "it/paused")["Suspended"], true);

    let b = Browser::start().await;
    b.go(&format!("{}/", p.base)).await;
    b.until(
        "the rows",
        "return document.querySelectorAll('.row').length === 5",
    )
    .await;
    assert_eq!(
        rows(&b).await,
        [
            "it/broken=invalid",
            "it/fail=failing",
            "it/flaky=ok",
            "it/pass=ok",
            "it/paused=pending",
        ]
    );
    let banner = b
        .js("return [document.getElementById('banner').className, document.getElementById('headline').textContent]")
        .await;
    assert_eq!(banner, json!(["banner bad", "2 of 5 checks failing"]));
    // Each state as a person reads it, and the failing check says why.
    let text = b
        .js("return document.querySelector('[data-check=\"it/fail\"]').innerText")
        .await;
    let text = text.as_str().unwrap();
    assert!(
        text.contains("failing") && text.contains("db down"),
        "{text}"
    );
    let paused = b
        .js("return document.querySelector('[data-check=\"it/paused\"] .state').textContent")
        .await;
    assert_eq!(paused, "pending · suspended");
    // The strip: one bar per run, coloured by outcome, the tooltip naming it.
    let flaky = b
        .js("return [...document.querySelectorAll('[data-check=\"it/flaky\"] .strip i')].map(i => [i.className, i.title])")
        .await;
    let bars = flaky.as_array().unwrap();
    assert!(bars.len() >= 2, "{flaky}");
    assert_eq!(bars[0][0], "F");
    assert!(
        bars[0][1].as_str().unwrap().contains("Failure")
            && bars[0][1].as_str().unwrap().contains("first run fails")
    );
    assert_eq!(bars[1][0], "S");
    b.screenshot("status-page.png").await;

    // Filters and search, clicked and typed.
    b.click("button[data-f=failing]").await;
    rows_become(&b, "failing", &["it/broken=invalid", "it/fail=failing"]).await;
    b.click("button[data-f=unstable]").await;
    rows_become(&b, "unstable", &["it/fail=failing", "it/flaky=ok"]).await;
    b.click("button[data-f=suspended]").await;
    rows_become(&b, "suspended", &["it/paused=pending"]).await;
    b.click("button[data-f=all]").await;
    b.type_in("#q", "fla").await;
    rows_become(&b, "search", &["it/flaky=ok"]).await;
    assert!(b
        .js("return location.search")
        .await
        .as_str()
        .unwrap()
        .contains("q=fla"));
    b.type_in("#q", &BACKSPACE.repeat(3)).await;
    rows_become(
        &b,
        "cleared",
        &[
            "it/broken=invalid",
            "it/fail=failing",
            "it/flaky=ok",
            "it/pass=ok",
            "it/paused=pending",
        ],
    )
    .await;
    // Readable on a phone: nothing wider than the screen.
    b.resize(390, 844).await;
    let overflow = b
        .until(
            "the narrow layout",
            "return document.documentElement.scrollWidth <= window.innerWidth ? 'fits' : null",
        )
        .await;
    assert_eq!(overflow, "fits");
    b.screenshot("status-page-phone.png").await;
    b.resize(1280, 900).await;
    assert_eq!(
        b.errors().await,
        Vec::<String>::new(),
        "JavaScript errors on the list"
    );

    // The failing check's page, reached by its link.
    b.click("[data-check=\"it/fail\"] a.name").await;
    b.until("the check page", "return location.pathname.endsWith('/checks/it/fail') && document.querySelectorAll('#runs tr[data-run]').length >= 1")
        .await;
    let page = b.js("return document.body.innerText").await;
    let page = page.as_str().unwrap();
    for want in [
        "it/fail",
        "failing",
        "db down",
        "became failing",
        "busybox",
        "1h",
    ] {
        assert!(
            page.contains(want),
            "{want:?} missing from the check page:\n{page}"
        );
    }
    // The numbers the check reported, drawn from its history.
    let drawn = b
        .until(
            "the reported value drawn",
            "return document.getElementById('valuescard').hidden ? null : [...document.querySelectorAll('#values svg.spark')].map(s => s.dataset.value + ':' + s.querySelectorAll('polyline').length).join(',')",
        )
        .await;
    assert_eq!(drawn, "queue_depth:1");
    b.until("the run's log", "return document.querySelector('#logs pre')?.textContent.includes('checking the database at 10.0.0.5')")
        .await;
    b.screenshot("check-page.png").await;
    // Run now: the button asks for the token, the run starts.
    let before = count(&p.json().await, "it/fail", "FailureCount");
    b.click("#run").await;
    b.call(
        reqwest::Method::POST,
        "/alert/text",
        Some(json!({"text": "s3cret"})),
    )
    .await;
    b.call(reqwest::Method::POST, "/alert/accept", Some(json!({})))
        .await;
    b.until(
        "the request accepted",
        "return document.getElementById('runmsg').textContent.startsWith('run requested')",
    )
    .await;
    p.wait_for("the run asked for", |d| {
        count(d, "it/fail", "FailureCount") > before
    })
    .await;
    b.until(
        "the new run on the page",
        &format!(
            "return document.querySelectorAll('#runs tr[data-run]').length >= {}",
            before + 1
        ),
    )
    .await;
    assert_eq!(
        b.errors().await,
        Vec::<String>::new(),
        "JavaScript errors on the check page"
    );
}

/// Degraded as a person sees it: a probe that misses only a `severity: warning` assertion is a
/// third state on the list (not failing, not plain passing) and on its own page, with why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degraded_check_is_a_third_state_on_both_pages() {
    let how = "apt-get install chromium chromium-driver";
    if !common::available(
        common::webdriver::installed(),
        "chromium and chromedriver",
        how,
    ) {
        return;
    }
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(|| async { r#"{"status":"UP","queue":{"depth":140}}"# }),
    );
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let (_tmp, checks, state) = dirs();
    write(
        &checks,
        "queue.yaml",
        &format!("apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: queue, namespace: it}}\nspec:\n  runInterval: 1h\n  probe:\n    httpGet:\n      url: http://{addr}/health\n      assertions:\n        - {{jsonPath: $.status, equals: UP}}\n        - {{jsonPath: $.queue.depth, lessThan: 100, severity: warning}}\n"),
    );
    write(
        &checks,
        "pass.yaml",
        &shell_check("pass", "  runInterval: 1h\n", "probity report --ok"),
    );
    let p = Probity::start(&checks, &state, &[]);
    p.wait_for("both verdicts", |d| {
        count(d, "it/queue", "SuccessCount") >= 1 && count(d, "it/pass", "SuccessCount") >= 1
    })
    .await;
    let b = Browser::start().await;
    b.go(&format!("{}/", p.base)).await;
    rows_become(&b, "the list", &["it/pass=ok", "it/queue=degraded"]).await;
    let banner = b
        .js("return [document.getElementById('banner').className, document.getElementById('headline').textContent]")
        .await;
    assert_eq!(
        banner,
        json!(["banner ok", "All 2 checks passing · 1 degraded"])
    );
    let row = b
        .js("return document.querySelector('[data-check=\"it/queue\"]').innerText")
        .await;
    let row = row.as_str().unwrap();
    assert!(
        row.contains("degraded") && row.contains("$.queue.depth is 140, expected < 100"),
        "{row}"
    );
    b.click("button[data-f=degraded]").await;
    rows_become(&b, "the Degraded filter", &["it/queue=degraded"]).await;
    b.click("[data-check=\"it/queue\"] a.name").await;
    b.until(
        "the check page",
        "return location.pathname.endsWith('/checks/it/queue') && document.querySelectorAll('#runs tr[data-run]').length >= 1",
    )
    .await;
    let page = b
        .js("return [document.getElementById('banner').className, document.getElementById('headline').textContent, document.getElementById('notes').innerText]")
        .await;
    assert_eq!(page[0], "banner warn");
    assert!(page[1].as_str().unwrap().starts_with("degraded"), "{page}");
    assert!(
        page[2]
            .as_str()
            .unwrap()
            .contains("degraded (OK for Kuberhealthy clients)"),
        "{page}"
    );
    b.screenshot("check-page-degraded.png").await;
    assert_eq!(b.errors().await, Vec::<String>::new(), "no script errors");
}
