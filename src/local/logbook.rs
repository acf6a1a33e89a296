//! The output of local runs, kept as the cluster keeps check pods: the last few runs of each
//! check, on disk under the state directory (`logs/NAMESPACE/NAME/START-UUID.log`), read back by
//! the check's page. On disk rather than in memory: 10,000 checks' output must not live in RAM.

use std::path::{Path, PathBuf};

use crate::api::{CheckKey, RunId, RunLog};

/// Runs kept per check (as `KH_MAX_ERROR_POD_COUNT` and the completed pod kept, together).
pub const KEEP: usize = 3;
/// Bytes of a run's output kept: its end.
pub const MAX_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct LogBook {
    dir: PathBuf,
    /// The last failure to keep an output, so a full disk is logged once, not once per run.
    failing: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

/// A run's output as it is captured: its last `MAX_BYTES`.
#[derive(Debug, Default)]
pub struct Capture {
    lines: std::collections::VecDeque<String>,
    bytes: usize,
    pub truncated: bool,
}

impl Capture {
    pub fn push(&mut self, line: String) {
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > MAX_BYTES && self.lines.len() > 1 {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len() + 1;
                self.truncated = true;
            }
        }
    }

    /// The last `n` lines, oldest first.
    pub fn last_lines(&self, n: usize) -> impl Iterator<Item = &str> {
        self.lines
            .iter()
            .skip(self.lines.len().saturating_sub(n))
            .map(String::as_str)
    }

    pub fn text(&self) -> String {
        let mut s = String::with_capacity(self.bytes);
        for l in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    }
}

/// A name fit to be one path component: check names are DNS labels, but a local file can say
/// anything, and a name must never climb out of the logs directory.
fn component(s: &str) -> Option<&str> {
    (!s.is_empty() && !s.starts_with('.') && !s.contains(['/', '\\', '\0'])).then_some(s)
}

impl LogBook {
    pub fn new(state_dir: &Path) -> Self {
        LogBook {
            dir: state_dir.join("logs"),
            failing: Default::default(),
        }
    }

    fn check_dir(&self, key: &CheckKey) -> Option<PathBuf> {
        Some(
            self.dir
                .join(component(key.namespace())?)
                .join(component(key.name())?),
        )
    }

    /// Keeps a run's output and drops the oldest beyond `KEEP`. Failures are logged, never
    /// the run's problem.
    pub async fn keep(&self, key: &CheckKey, uuid: RunId, started: i64, capture: &Capture) {
        let Some(dir) = self.check_dir(key) else {
            return;
        };
        let mut text = capture.text();
        if capture.truncated {
            text.insert_str(0, "…\n");
        }
        let file = dir.join(format!("{started:012}-{uuid}.log"));
        let work = async {
            tokio::fs::create_dir_all(&dir).await?;
            tokio::fs::write(&file, text).await?;
            let mut names = list(&dir).await?;
            names.sort();
            let excess = names.len().saturating_sub(KEEP);
            for old in &names[..excess] {
                tokio::fs::remove_file(dir.join(old)).await?;
            }
            std::io::Result::Ok(())
        };
        let result = work.await;
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Err(e) => {
                let e = e.to_string();
                if failing.as_deref() != Some(e.as_str()) {
                    tracing::warn!(check = %key, "keeping runs' output in {}: {e} (said once until it works again)", dir.display());
                }
                *failing = Some(e);
            }
            Ok(()) => {
                if failing.take().is_some() {
                    tracing::info!("keeping runs' output works again");
                }
            }
        }
    }

    /// The kept runs, newest first.
    pub async fn read(&self, key: &CheckKey) -> std::io::Result<Vec<RunLog>> {
        let Some(dir) = self.check_dir(key) else {
            return Ok(Vec::new());
        };
        let mut names = match list(&dir).await {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        names.sort();
        let mut out = Vec::new();
        for name in names.iter().rev() {
            let stem = name.trim_end_matches(".log");
            let (started, run) = stem.split_once('-').unwrap_or((stem, ""));
            let text = tokio::fs::read_to_string(dir.join(name)).await?;
            let truncated = text.starts_with("…\n");
            out.push(RunLog {
                source: format!("process of run {run}"),
                run: Some(run.to_string()).filter(|r| !r.is_empty()),
                started: started.parse().ok(),
                text: text.trim_start_matches("…\n").to_string(),
                truncated,
            });
        }
        Ok(out)
    }
}

async fn list(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut rd = tokio::fs::read_dir(dir).await?;
    let mut names = Vec::new();
    while let Some(e) = rd.next_entry().await? {
        if let Some(n) = e.file_name().to_str().filter(|n| n.ends_with(".log")) {
            names.push(n.to_string());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_last_runs_are_kept_newest_first_and_long_output_keeps_its_end() {
        let tmp = tempfile::tempdir().unwrap();
        let book = LogBook::new(tmp.path());
        let key = CheckKey::new("ns", "c");
        for i in 0..5i64 {
            let mut c = Capture::default();
            c.push(format!("run {i}"));
            book.keep(&key, RunId::from_u128(i as u128), 1000 + i, &c)
                .await;
        }
        let logs = book.read(&key).await.unwrap();
        assert_eq!(logs.len(), KEEP);
        assert_eq!(logs[0].text, "run 4\n");
        assert_eq!(logs[0].started, Some(1004));
        assert_eq!(
            logs[0].run.as_deref(),
            Some(RunId::from_u128(4).to_string().as_str())
        );
        assert_eq!(logs[2].text, "run 2\n");
        let mut big = Capture::default();
        for i in 0..10_000 {
            big.push(format!("line {i:05} {}", "x".repeat(20)));
        }
        assert!(big.truncated);
        book.keep(&key, RunId::from_u128(9), 2000, &big).await;
        let logs = book.read(&key).await.unwrap();
        assert!(logs[0].truncated);
        assert!(logs[0].text.len() <= MAX_BYTES);
        assert!(logs[0].text.ends_with("line 09999 xxxxxxxxxxxxxxxxxxxx\n"));
    }

    #[tokio::test]
    async fn a_failure_to_keep_is_remembered_until_keeping_works_again() {
        let tmp = tempfile::tempdir().unwrap();
        // The state "directory" is a file: nothing can be kept under it.
        let state = tmp.path().join("state");
        std::fs::write(&state, "").unwrap();
        let book = LogBook::new(&state);
        let key = CheckKey::new("ns", "c");
        let mut c = Capture::default();
        c.push("out".into());
        book.keep(&key, RunId::from_u128(0), 1, &c).await;
        let first = book.failing.lock().unwrap().clone();
        assert!(
            first.is_some(),
            "the failure is remembered (and logged once)"
        );
        book.keep(&key, RunId::from_u128(0), 2, &c).await;
        assert_eq!(*book.failing.lock().unwrap(), first);
        std::fs::remove_file(&state).unwrap();
        book.keep(&key, RunId::from_u128(0), 3, &c).await;
        assert!(
            book.failing.lock().unwrap().is_none(),
            "cleared once it works"
        );
        assert_eq!(book.read(&key).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_name_that_would_climb_out_is_not_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let book = LogBook::new(&tmp.path().join("state"));
        let key = CheckKey::new("..", "x");
        let mut c = Capture::default();
        c.push("secret".into());
        book.keep(&key, RunId::from_u128(0), 1, &c).await;
        assert!(book.read(&key).await.unwrap().is_empty());
        assert!(!tmp.path().join("x").exists());
        assert!(book
            .read(&CheckKey::new("ns", "never"))
            .await
            .unwrap()
            .is_empty());
    }
}
