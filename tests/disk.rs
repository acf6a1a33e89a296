//! A full disk, on a small tmpfs this test mounts (it runs as root, as CI does): writes that
//! fail are visible and recover by themselves, a report answered 500 succeeds when retried,
//! and nothing acknowledged is lost to a torn write.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{count, detail, shell_check, Probity, PATIENCE};

/// A tmpfs of `size` mounted at `path` for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(path.to_path_buf())
    }

    /// Fills the file system to the last byte; returns the filler file.
    fn fill(&self) -> PathBuf {
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![b'x'; 4096];
        while f.write_all(&chunk).is_ok() {}
        // The last partial page too.
        while f.write_all(b"x").is_ok() {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn metric(p: &Probity, name: &str) -> f64 {
    let text = p.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

async fn wait_metric(p: &Probity, name: &str, done: impl Fn(f64) -> bool) {
    let start = Instant::now();
    loop {
        let v = metric(p, name).await;
        if done(v) {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "{name} stayed at {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_full_disk_is_visible_recovers_by_itself_and_loses_nothing_acknowledged() {
    if !common::need_root("it mounts a small tmpfs to fill; run the tests as root") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let checks = tmp.path().join("checks");
    std::fs::create_dir(&checks).unwrap();
    let state = tmp.path().join("state");
    let fs = Tmpfs::mount(&state, "256k");
    let addr = common::free_addr();
    let mut p = Probity::start_on(&addr, &checks, &state, &[]);
    p.wait_ready().await;

    // Some state first, so the journal's last page has room left when the disk is full: a
    // write then fails part-way, leaving torn bytes that must not swallow later lines.
    std::fs::write(
        checks.join("warm.yaml"),
        shell_check("warm", "  runInterval: 1h\n", "probity report --ok"),
    )
    .unwrap();
    p.wait_for("the first check's run", |d| {
        count(d, "it/warm", "SuccessCount") == 1
    })
    .await;
    let filler = fs.fill();
    let code = tmp.path().join("code");
    std::fs::write(
        checks.join("disk.yaml"),
        shell_check(
            "disk",
            "  runInterval: 1h\n  timeout: 1m\n",
            // An error longer than a page: its state line cannot fit in the page's slack.
            &format!(
                "probity report --error \"$(head -c 6000 /dev/zero | tr '\\0' e)\"; echo $? > {}",
                code.display()
            ),
        ),
    )
    .unwrap();

    // Visible: on the status page and in metrics, while the check's report is answered 500
    // (and retried by `probity report`).
    let doc = p
        .wait_for("the write failure on /json", |d| {
            d["Errors"].as_array().is_some_and(|e| {
                e.iter().any(|e| {
                    e.as_str()
                        .unwrap_or("")
                        .contains("cannot write check state")
                })
            })
        })
        .await;
    assert_eq!(doc["OK"], false);
    assert_eq!(metric(&p, "probity_state_write_failing").await, 1.0);
    wait_metric(&p, "probity_reports_total{code=\"500\"}", |v| v >= 1.0).await;
    assert!(!code.exists(), "the client is still retrying");

    // Space returns: writes work again without a restart, and the retried report is taken.
    std::fs::remove_file(&filler).unwrap();
    let start = Instant::now();
    while !std::fs::read_to_string(&code).is_ok_and(|s| s.ends_with('\n')) {
        assert!(start.elapsed() < PATIENCE, "the report was never accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        std::fs::read_to_string(&code).unwrap().trim(),
        "0",
        "the retry of the report answered 500 was accepted, not refused as already reported"
    );
    wait_metric(&p, "probity_state_write_failing", |v| v == 0.0).await;
    let doc = p
        .wait_for("the journal error gone", |d| {
            !d["Errors"].to_string().contains("cannot write check state")
        })
        .await;
    assert_eq!(count(&doc, "it/disk", "FailureCount"), 1);
    assert!(metric(&p, "probity_state_write_failures_total").await >= 1.0);

    // Acknowledged means durable: kill -9, restart, the outcome is there and nothing was torn.
    p.kill9();
    let p = Probity::start_on(&addr, &checks, &state, &[]);
    p.wait_ready().await;
    let doc = p.json().await;
    let disk = detail(&doc, "it/disk");
    assert_eq!(disk["LastOutcome"], "Failure", "{disk:#}");
    assert_eq!(disk["Errors"][0].as_str().unwrap().len(), 6000);
    assert_eq!(count(&doc, "it/disk", "FailureCount"), 1);
    assert_eq!(count(&doc, "it/warm", "SuccessCount"), 1);
    let aside: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("corrupt"))
        .collect();
    assert!(
        aside.is_empty(),
        "no damaged line in the journal: {aside:?}"
    );
    drop(p);
}
