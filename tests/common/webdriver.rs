//! A WebDriver client for Debian's headless Chromium (`chromium-driver`), just what the page
//! tests and the page benchmark need: one session, navigation, scripts, clicks, keys, window
//! size, errors and screenshots. Self-contained so benches can include it by path.

use std::path::Path;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Upper bound for the browser to do anything.
const PATIENCE: Duration = Duration::from_secs(30);

/// WebDriver's code for the Backspace key.
pub const BACKSPACE: &str = "\u{E003}";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver on a free loopback port, and one browser session.
pub struct Browser {
    driver: std::process::Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

/// Ends the browser with its driver: chromedriver runs in a process group of its own, and the
/// whole group goes (killing chromedriver alone orphaned the browser it started), whether the
/// test passed or panicked.
impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: signals our own child's process group, made for it at spawn.
        unsafe {
            libc::kill(-(self.driver.id() as i32), libc::SIGKILL);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

const CHROMEDRIVER: [&str; 2] = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"];

fn chromedriver() -> &'static str {
    CHROMEDRIVER
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chromedriver (Debian package chromium-driver; .ci/run installs it)")
}

/// Whether chromedriver and chromium are installed.
pub fn installed() -> bool {
    let chromium = ["/usr/bin/chromium", "/usr/lib/chromium/chromium"];
    CHROMEDRIVER.iter().any(|p| Path::new(p).exists())
        && chromium.iter().any(|p| Path::new(p).exists())
}

impl Browser {
    pub async fn start() -> Browser {
        let port = free_port();
        use std::os::unix::process::CommandExt as _;
        let driver = std::process::Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .process_group(0)
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

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
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

    pub async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn js(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Polls `script` until it returns something truthy other than `false`/`null`.
    pub async fn until(&self, what: &str, script: &str) -> Value {
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

    pub async fn find(&self, css: &str) -> String {
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

    pub async fn click(&self, css: &str) {
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
    pub async fn type_in(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Errors the page caught (its own `window.__errors`) and the browser logged as SEVERE
    /// (scripts that failed to load or parse, failed requests).
    pub async fn errors(&self) -> Vec<String> {
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

    pub async fn screenshot(&self, name: &str) {
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
