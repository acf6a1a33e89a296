//! Check state in one append-only journal, `<state-dir>/state.jsonl`: a line per saved state
//! (`{"key":"ns/name","status":{...}}`) or forgotten check (`{"key":"ns/name"}`); the last line
//! for a key wins.
//!
//! Why a journal and not a file per check: every report must be durable before it is answered,
//! and a rename per report costs a directory update and (on file systems mounted with `discard`)
//! a synchronous block discard for the replaced file, which capped reports at a few thousand a
//! second. Here one writer thread appends everything queued in one `write` (group commit), in
//! the order `save` was called, and rewrites the journal down to one line per check when it has
//! grown to several times that (write to a temporary file, rename: atomic).
//!
//! A `kill -9` can at worst leave a torn last line, which is ignored on start: it was never
//! acknowledged. A write that fails part-way (disk full, I/O error) is cut off the file before
//! anything else is appended, so the torn bytes can never swallow a later, acknowledged line;
//! if even that fails, the next write starts on a new line, isolating them. While writes fail,
//! the store says so (`on_health`) and tries a one-byte write every few seconds, so it recovers
//! by itself when space returns. Lines are not fsynced: state survives the process dying, not a
//! power cut.
//!
//! A save someone awaits (a report, a ping) or that records a run of a pod or process wakes the
//! writer at once. A probe's (`linger`) only queues, and the writer takes it with whatever else
//! came within [`LINGER`]: at a thousand probes a second, waking a thread and writing per run
//! was a tenth of the CPU of an HTTP probe. Such a save can be lost to a `kill -9` within that
//! time; no one was told it was stored, and a probe's run ends with the process anyway.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::api::{CheckKey, HealthCheckStatus};
use crate::engine::{SaveFuture, StatusStore};
use crate::{Error, Result};

const JOURNAL: &str = "state.jsonl";
/// Rewrite the journal once it is this many times its compacted size (and at least the floor).
const COMPACT_FACTOR: u64 = 4;
const COMPACT_FLOOR: u64 = 16 << 20;
/// How long a save nobody awaits may wait in the queue for others to share its write.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(20);
/// While writes fail, how often the writer tries whether they work again.
const RECOVERY_PROBE: std::time::Duration = std::time::Duration::from_secs(2);

/// Told of each failed write (`Some(error)`) and of the recovery (`None`).
pub type HealthHook = Box<dyn Fn(Option<&str>) + Send + Sync>;

#[derive(Serialize)]
struct RecordOut<'a> {
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a HealthCheckStatus>,
}

#[derive(Deserialize)]
struct RecordIn {
    key: String,
    #[serde(default)]
    status: Option<HealthCheckStatus>,
}

#[derive(Deserialize)]
struct KeyOnly {
    key: String,
    #[serde(default)]
    status: Option<serde::de::IgnoredAny>,
}

enum Job {
    Save {
        key: CheckKey,
        status: Arc<HealthCheckStatus>,
        ack: oneshot::Sender<Result<()>>,
    },
    Forget {
        key: CheckKey,
    },
    /// Answered once everything queued before it is written.
    Flush {
        ack: oneshot::Sender<()>,
    },
}

/// What the writer is woken with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// Jobs are queued that nobody waits for: write them within `LINGER`.
    Soon,
    /// Someone waits: write what is queued now.
    Now,
}

/// Jobs in the order asked for; the writer takes them all at once.
type Queue = Arc<Mutex<Vec<Job>>>;

pub struct FileStore {
    path: PathBuf,
    queue: Queue,
    wake: std_mpsc::Sender<Wake>,
    hook: Arc<std::sync::OnceLock<HealthHook>>,
    /// What the journal held at start, handed out once per check.
    initial: Mutex<HashMap<String, HealthCheckStatus>>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Save { key, .. } => write!(f, "Save({key})"),
            Job::Forget { key } => write!(f, "Forget({key})"),
            Job::Flush { .. } => write!(f, "Flush"),
        }
    }
}

impl FileStore {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with(dir, COMPACT_FLOOR)
    }

    /// `compact_floor`: the smallest journal size that is ever rewritten (tests make it small).
    pub fn open_with(dir: impl Into<PathBuf>, compact_floor: u64) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join(JOURNAL);
        let initial = replay(&path)?;
        let size = compact(&path)?;
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let (wake, rx) = std_mpsc::channel::<Wake>();
        let queue = Queue::default();
        let hook: Arc<std::sync::OnceLock<HealthHook>> = Arc::default();
        let writer = Writer {
            path: path.clone(),
            file,
            size,
            compacted: size,
            floor: compact_floor,
            failing: None,
            torn: false,
            hook: hook.clone(),
            queue: queue.clone(),
        };
        std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::io(&dir, e))?;
        Ok(FileStore {
            path,
            queue,
            wake,
            hook,
            initial: Mutex::new(initial),
        })
    }

    /// Calls `hook` on every failed write with its error, and once with `None` when writes
    /// work again. Set once; later calls are ignored.
    pub fn on_health(&self, hook: impl Fn(Option<&str>) + Send + Sync + 'static) {
        let _ = self.hook.set(Box::new(hook));
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits until every write asked for so far is in the journal (before exiting).
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        self.enqueue(Job::Flush { ack });
        if self.wake.send(Wake::Now).is_ok() {
            let _ = done.await;
        }
    }

    /// Queues `job`; the first job into an empty queue makes sure the writer will come for it.
    /// Later ones ride along: the writer takes the queue whole.
    fn enqueue(&self, job: Job) {
        let first = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.push(job);
            q.len() == 1
        };
        if first {
            let _ = self.wake.send(Wake::Soon);
        }
    }

    /// The saved state of a check, as it was when the store was opened (once per check).
    pub fn load(&self, key: &CheckKey) -> Option<HealthCheckStatus> {
        self.initial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key.as_str())
    }
}

impl FileStore {
    /// The checks whose files are gone but whose receivers still have open alerts about them
    /// (their saved state says why they left), taken from what was read at opening.
    pub fn departed(&self) -> Vec<(CheckKey, HealthCheckStatus)> {
        let mut initial = self.initial.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<String> = initial
            .iter()
            .filter(|(_, st)| st.departed.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| {
                let st = initial.remove(&k)?;
                let (ns, name) = k.split_once('/')?;
                Some((CheckKey::new(ns, name), st))
            })
            .collect()
    }
}

/// Reads the journal. A torn last line (the process died mid-write) is dropped: it was never
/// acknowledged. Any other unreadable line, or one naming a time outside 1970..9999, is kept in
/// a copy of the journal set aside.
fn replay(path: &Path) -> Result<HashMap<String, HealthCheckStatus>> {
    let mut map = HashMap::new();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(map),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut bad = 0usize;
    let complete = bytes.ends_with(b"\n");
    let lines: Vec<&[u8]> = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let last = lines.len().saturating_sub(1);
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_slice::<RecordIn>(line) {
            Ok(RecordIn {
                key,
                status: Some(s),
            }) => match s.out_of_range() {
                // Scheduling from it would be nonsense (or an overflow): the line is set aside
                // with the rest of the damage, and the check's earlier state, if any, stands.
                Some(why) => {
                    bad += 1;
                    error!("{}: line {}: {key}: {why}", path.display(), i + 1);
                }
                None => {
                    map.insert(key, s);
                }
            },
            Ok(RecordIn { key, status: None }) => {
                map.remove(&key);
            }
            Err(_) if i == last && !complete => {
                warn!("{}: ignoring a torn last line", path.display())
            }
            Err(e) => {
                bad += 1;
                error!("{}: line {}: {e}", path.display(), i + 1);
            }
        }
    }
    if bad > 0 {
        let aside =
            path.with_extension(format!("jsonl.corrupt-{}", chrono::Utc::now().timestamp()));
        std::fs::write(&aside, &bytes).map_err(|e| Error::io(&aside, e))?;
        error!(
            "{bad} unreadable state lines; the journal as it was is kept in {}",
            aside.display()
        );
    }
    Ok(map)
}

/// Rewrites the journal with only the last line of each live check. Returns its new size.
fn compact(path: &Path) -> Result<u64> {
    let io = |e| Error::io(path, e);
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(e)),
    };
    // First pass: where each key's last line is. Offsets only, so memory stays small.
    let mut last: HashMap<String, Option<(u64, usize)>> = HashMap::new();
    let mut reader = BufReader::new(file);
    let mut offset = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io)?;
        if n == 0 {
            break;
        }
        if line.ends_with(b"\n") {
            if let Ok(k) = serde_json::from_slice::<KeyOnly>(&line) {
                last.insert(k.key, k.status.map(|_| (offset, n)));
            }
        }
        offset += n as u64;
    }
    let mut keep: Vec<(u64, usize)> = last.into_values().flatten().collect();
    keep.sort_unstable();
    let tmp = path.with_extension("jsonl.tmp");
    let mut out = std::io::BufWriter::new(File::create(&tmp).map_err(|e| Error::io(&tmp, e))?);
    let mut src = reader.into_inner();
    let mut size = 0u64;
    let mut buf = Vec::new();
    for (off, len) in keep {
        buf.resize(len, 0);
        src.seek(SeekFrom::Start(off)).map_err(io)?;
        src.read_exact(&mut buf).map_err(io)?;
        out.write_all(&buf).map_err(|e| Error::io(&tmp, e))?;
        size += len as u64;
    }
    out.flush().map_err(|e| Error::io(&tmp, e))?;
    drop(out);
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(size)
}

/// The lines for `batch`: only a key's last record in it, since the last line wins on replay
/// anyway and a probe's start and end usually share a batch.
fn encode(batch: &[Job], buf: &mut Vec<u8>) {
    let mut seen = std::collections::HashSet::new();
    let last: Vec<bool> = batch
        .iter()
        .rev()
        .map(|job| match job {
            Job::Save { key, .. } | Job::Forget { key } => seen.insert(key.as_str()),
            Job::Flush { .. } => false,
        })
        .collect();
    for (job, last) in batch.iter().zip(last.into_iter().rev()) {
        let (key, status) = match job {
            Job::Save { key, status, .. } => (key.as_str(), Some(&**status)),
            Job::Forget { key } => (key.as_str(), None),
            Job::Flush { .. } => continue,
        };
        if last {
            // Serializing plain data into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *buf, &RecordOut { key, status });
            buf.push(b'\n');
        }
    }
}

struct Writer {
    path: PathBuf,
    file: File,
    /// Bytes of whole lines in the file: where the next write starts.
    size: u64,
    compacted: u64,
    floor: u64,
    /// The error of the last write while writes fail.
    failing: Option<String>,
    /// A failed write's bytes could not be cut off: the next write starts on a new line.
    torn: bool,
    hook: Arc<std::sync::OnceLock<HealthHook>>,
    queue: Queue,
}

impl Writer {
    fn tell(&self, error: Option<&str>) {
        if let Some(hook) = self.hook.get() {
            hook(error);
        }
    }

    /// Appends `buf`, all or nothing as far as the file's lines go.
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let mut out = Vec::new();
        let bytes = if self.torn {
            out.reserve(buf.len() + 1);
            out.push(b'\n');
            out.extend_from_slice(buf);
            &out[..]
        } else {
            buf
        };
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.size += bytes.len() as u64;
                self.torn = false;
                if self.failing.take().is_some() {
                    info!("{}: writing works again", self.path.display());
                    self.tell(None);
                }
                Ok(())
            }
            Err(e) => {
                // Part of it may be in the file: cut it off, so the next line starts clean.
                if let Err(cut) = self.file.set_len(self.size) {
                    error!(
                        "{}: cannot cut off a failed write ({cut}); the next write starts on a new line",
                        self.path.display()
                    );
                    self.torn = true;
                }
                let msg = format!(
                    "cannot write check state to {}: {e}; reports are answered 500 until it can",
                    self.path.display()
                );
                if self.failing.is_none() {
                    error!("{msg}");
                }
                self.tell(Some(&msg));
                self.failing = Some(msg);
                Err(e)
            }
        }
    }

    /// Waits for a wake-up, lets a `Soon` linger for company, then writes the queue.
    fn run(mut self, rx: std_mpsc::Receiver<Wake>) {
        let mut buf = Vec::new();
        let mut open = true;
        while open {
            let first = if self.failing.is_some() {
                match rx.recv_timeout(RECOVERY_PROBE) {
                    Ok(w) => w,
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {
                        // A blank line: replay skips it.
                        let _ = self.append(b"\n");
                        continue;
                    }
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(w) => w,
                    Err(_) => break,
                }
            };
            if first == Wake::Soon {
                let until = std::time::Instant::now() + LINGER;
                loop {
                    let left = until.saturating_duration_since(std::time::Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(Wake::Soon) => continue,
                        Ok(Wake::Now) | Err(std_mpsc::RecvTimeoutError::Timeout) => break,
                        Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                            open = false;
                            break;
                        }
                    }
                }
            }
            // Wake-ups are drained before the queue is taken, never after: a job queued after
            // the taking sent its own, which must stay for the next round.
            while rx.try_recv().is_ok() {}
            let batch = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
            buf.clear();
            let mut acks = Vec::new();
            let mut flushes = Vec::new();
            encode(&batch, &mut buf);
            for job in batch {
                match job {
                    Job::Save { ack, .. } => acks.push(ack),
                    Job::Flush { ack } => flushes.push(ack),
                    Job::Forget { .. } => {}
                }
            }
            let written = if buf.is_empty() {
                Ok(())
            } else {
                self.append(&buf)
            };
            for ack in acks {
                let _ = ack.send(match &written {
                    Ok(()) => Ok(()),
                    Err(e) => Err(Error::io(
                        &self.path,
                        std::io::Error::new(e.kind(), e.to_string()),
                    )),
                });
            }
            if self.size > self.floor.max(self.compacted * COMPACT_FACTOR) {
                self.compact();
            }
            for ack in flushes {
                let _ = ack.send(());
            }
        }
    }

    fn compact(&mut self) {
        let before = self.size;
        let reopened = compact(&self.path).and_then(|size| {
            let file = OpenOptions::new()
                .append(true)
                .open(&self.path)
                .map_err(|e| Error::io(&self.path, e))?;
            Ok((size, file))
        });
        match reopened {
            Ok((size, file)) => {
                self.file = file;
                self.size = size;
                self.compacted = size;
                info!(
                    "compacted {} from {before} to {size} bytes",
                    self.path.display()
                );
            }
            // Appending to the old file goes on; the next batch tries again.
            Err(e) => error!("compacting state: {e}"),
        }
    }
}

impl StatusStore for FileStore {
    fn save(&self, key: &CheckKey, status: &Arc<HealthCheckStatus>) -> SaveFuture {
        let (ack, rx) = oneshot::channel();
        self.enqueue(Job::Save {
            key: key.clone(),
            status: status.clone(),
            ack,
        });
        let path = self.path.clone();
        let wake = self.wake.clone();
        // Awaited: the writer is woken now rather than after `LINGER`.
        Box::pin(async move {
            let stopped =
                || Error::io(&path, std::io::Error::other("the state writer has stopped"));
            if wake.send(Wake::Now).is_err() {
                return Err(stopped());
            }
            rx.await.unwrap_or_else(|_| Err(stopped()))
        })
    }

    /// The writer logs a failing write itself (once, until writes succeed again), and the
    /// write happens whether or not anyone awaits it: nothing to wait for but the writer.
    fn detach(&self, save: SaveFuture) {
        drop(save);
        let _ = self.wake.send(Wake::Now);
    }

    /// Queued already, with the writer due within `LINGER`.
    fn linger(&self, save: SaveFuture) {
        drop(save);
    }

    fn forget(&self, key: &CheckKey) {
        self.enqueue(Job::Forget { key: key.clone() });
    }
}

#[cfg(test)]
mod tests;
