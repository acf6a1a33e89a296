//! `exec` in local mode: run the command (no shell), success iff it exits 0. At most 10 KiB of
//! its combined output is kept for the message. Cancelling the probe (its deadline) kills the
//! command's whole process group.

use std::process::Stdio;

use tokio::io::AsyncReadExt;

use crate::api::probe::ExecProbe;
use crate::api::RunResult;

pub const MAX_OUTPUT: usize = 10 * 1024;

/// Kills the group when the probe is dropped before the command ended.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.filter(|p| *p > 1) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// Reads a pipe to its end (so the command never blocks on a full pipe), keeping the first
/// `MAX_OUTPUT` bytes.
pub(super) async fn drain(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else { return kept };
    let mut chunk = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let room = MAX_OUTPUT.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
    kept
}

pub async fn probe(p: &ExecProbe) -> RunResult {
    let Some(program) = p.command.first() else {
        return RunResult::failure("exec: no command");
    };
    let shown = format!("exec {program:?}");
    let mut child = match tokio::process::Command::new(program)
        .args(&p.command[1..])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return RunResult::failure(format!("{shown}: {}", super::tcp::io_reason(&e))),
    };
    let mut guard = GroupGuard(child.id().map(|p| p as i32));
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let read = async {
        let (mut a, b) = tokio::join!(drain(stdout), drain(stderr));
        a.extend_from_slice(&b[..b.len().min(MAX_OUTPUT.saturating_sub(a.len()))]);
        a
    };
    let (status, output) = tokio::join!(child.wait(), read);
    guard.0 = None;
    let output = String::from_utf8_lossy(&output);
    let output: String = output.split_whitespace().collect::<Vec<_>>().join(" ");
    match status {
        Ok(s) if s.success() => RunResult::passed(),
        Ok(s) => {
            let how = match s.code() {
                Some(c) => format!("exited with code {c}"),
                None => "was killed by a signal".to_string(),
            };
            if output.is_empty() {
                RunResult::failure(format!("{shown} {how}"))
            } else {
                RunResult::failure(format!("{shown} {how}: {output}"))
            }
        }
        Err(e) => RunResult::failure(format!("{shown}: {e}")),
    }
}
