//! The status page as a person uses it: Debian's headless Chromium, driven over WebDriver
//! (`chromium-driver`), against a real `probity serve` with real checks. Clicks and typing go
//! through WebDriver, not through the page's own functions; a JavaScript error on either page
//! fails the test. With `PROBITY_SCREENSHOTS=DIR` the pages are saved there as PNG (the ones in
//! `docs/screenshots/` come from this test).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{count, detail, dirs, shell_check, write, Probity, PATIENCE};
use serde_json::{json, Value};

/// chromedriver on a free loopback port, and one browser session.
struct Browser {
    driver: std::process::Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn chromedriver() -> &'static str {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chromedriver (Debian package chromium-driver; .ci/run installs it)")
}

impl Browser {
    async fn start() -> Browser {
        let addr = common::free_addr();
        let port = addr.rsplit(':').next().unwrap().to_string();
        let driver = std::process::Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let start = Instant::now();
        loop {
            let ready = async {
                let v: Value = http
                    .get(format!("{base}/status"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                v["value"]["ready"].as_bool()
            };
            if ready.await == Some(true) {
                break;
            }
            assert!(start.elapsed() < PATIENCE, "chromedriver never ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", "--hide-scrollbars",
                         format!("--user-data-dir={}", profile.path().display())]
            },
            "goog:loggingPrefs": {"browser": "ALL"}
        }}});
        let v: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut rb = self.http.request(method, &url);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let v: Value = rb.send().await.unwrap().json().await.unwrap();
        if v["value"].get("error").is_some() {
            panic!("WebDriver {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn js(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Polls `script` until it returns something truthy other than `false`/`null`.
    async fn until(&self, what: &str, script: &str) -> Value {
        let start = Instant::now();
        loop {
            let v = self.js(script).await;
            if !(v.is_null() || v == json!(false) || v == json!([]) || v == json!("")) {
                return v;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "timed out waiting for {what}; page: {}",
                self.js("return document.body.innerText").await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_string()
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Keys typed into the element as a person types them (WebDriver key codes such as
    /// `BACKSPACE` included).
    async fn type_in(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Errors the page caught (its own `window.__errors`) and the browser logged as SEVERE
    /// (scripts that failed to load or parse, failed requests).
    async fn errors(&self) -> Vec<String> {
        let mut out: Vec<String> = serde_json::from_value(
            self.js("return window.__errors || ['the page set no error hook']")
                .await,
        )
        .unwrap();
        let url = format!("{}/session/{}/se/log", self.base, self.session);
        if let Ok(r) = self
            .http
            .post(&url)
            .json(&json!({"type": "browser"}))
            .send()
            .await
        {
            if let Ok(v) = r.json::<Value>().await {
                for e in v["value"].as_array().into_iter().flatten() {
                    if e["level"] == "SEVERE" {
                        out.push(e["message"].as_str().unwrap_or_default().to_string());
                    }
                }
            }
        }
        out
    }

    async fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("PROBITY_SCREENSHOTS") else {
            return;
        };
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64_decode(b64.as_str().unwrap());
        assert_eq!(&png[1..4], b"PNG");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(Path::new(&dir).join(name), png).unwrap();
    }
}

/// Standard base64, as WebDriver sends screenshots (no crate for one test).
fn base64_decode(s: &str) -> Vec<u8> {
    let table = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(clean.len() / 4 * 3);
    for chunk in clean.chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= if c == b'=' { 0 } else { table(c) } << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}

/// WebDriver's code for the Backspace key.
const BACKSPACE: &str = "\u{E003}";

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
            "echo checking the database at 10.0.0.5; probity report --error \"db down\"",
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
