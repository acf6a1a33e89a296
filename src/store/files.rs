//! Check state in a directory: `<namespace>_<name>.json` per check (neither part can contain
//! `_`), each written to a temporary file and renamed over the old one, so a crash or `kill -9`
//! at any moment leaves either the old state or the new, never a torn file.
//!
//! Writes go through one writer thread, in the order `save` was called, so the newest state of
//! a check is always the one left on disk. Files are not fsynced: state survives the process
//! dying, not the machine losing power mid-write.

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;

use tokio::sync::oneshot;
use tracing::{error, warn};

use crate::api::{CheckKey, HealthCheckStatus};
use crate::engine::{SaveFuture, StatusStore};
use crate::{Error, Result};

enum Job {
    Save {
        path: PathBuf,
        bytes: Vec<u8>,
        ack: oneshot::Sender<Result<()>>,
    },
    Delete {
        path: PathBuf,
    },
}

#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    jobs: std_mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Save { path, .. } => write!(f, "Save({})", path.display()),
            Job::Delete { path } => write!(f, "Delete({})", path.display()),
        }
    }
}

impl FileStore {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        // Fail now, not at the first run, if the directory is not writable.
        let probe = dir.join(".probity-write-test");
        std::fs::write(&probe, b"").map_err(|e| Error::io(&dir, e))?;
        let _ = std::fs::remove_file(&probe);
        let (jobs, rx) = std_mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        Job::Save { path, bytes, ack } => {
                            let r = write_atomic(&path, &bytes);
                            if let Err(e) = &r {
                                error!("{e}");
                            }
                            let _ = ack.send(r);
                        }
                        Job::Delete { path } => {
                            if let Err(e) = std::fs::remove_file(&path) {
                                if e.kind() != std::io::ErrorKind::NotFound {
                                    warn!("removing {}: {e}", path.display());
                                }
                            }
                        }
                    }
                }
            })
            .map_err(|e| Error::io(&dir, e))?;
        Ok(FileStore { dir, jobs })
    }

    pub fn path(&self, key: &CheckKey) -> PathBuf {
        self.dir
            .join(format!("{}_{}.json", key.namespace(), key.name()))
    }

    /// The saved state of a check. A file that cannot be parsed is moved aside (never deleted)
    /// and the check starts fresh.
    pub fn load(&self, key: &CheckKey) -> Option<HealthCheckStatus> {
        let path = self.path(key);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                error!(
                    "reading {}: {e}; starting {key} without its saved state",
                    path.display()
                );
                return None;
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(s) => Some(s),
            Err(e) => {
                let aside = path.with_extension("json.corrupt");
                error!(
                    "{}: not valid state ({e}); moved to {} and starting {key} fresh",
                    path.display(),
                    aside.display()
                );
                let _ = std::fs::rename(&path, &aside);
                None
            }
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

impl StatusStore for FileStore {
    fn save(&self, key: &CheckKey, status: &HealthCheckStatus) -> SaveFuture {
        let path = self.path(key);
        let bytes = match serde_json::to_vec_pretty(status) {
            Ok(b) => b,
            Err(source) => {
                let e = Error::Json {
                    what: format!("state of {key}"),
                    source,
                };
                return Box::pin(async move { Err(e) });
            }
        };
        let (ack, rx) = oneshot::channel();
        let sent = self.jobs.send(Job::Save {
            path: path.clone(),
            bytes,
            ack,
        });
        Box::pin(async move {
            if sent.is_err() {
                return Err(Error::io(
                    path,
                    std::io::Error::other("the state writer has stopped"),
                ));
            }
            rx.await.unwrap_or_else(|_| {
                Err(Error::io(
                    path,
                    std::io::Error::other("the state writer has stopped"),
                ))
            })
        })
    }

    fn forget(&self, key: &CheckKey) {
        let _ = self.jobs.send(Job::Delete {
            path: self.path(key),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn saves_atomically_loads_back_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let key = CheckKey::new("ns", "a");
        assert_eq!(store.load(&key), None);
        let mut st = HealthCheckStatus {
            ok: true,
            success_count: 3,
            ..Default::default()
        };
        store.save(&key, &st).await.unwrap();
        st.success_count = 4;
        store.save(&key, &st).await.unwrap();
        assert_eq!(store.load(&key).unwrap().success_count, 4);
        assert!(!dir.path().join("ns_a.json.tmp").exists());
        store.forget(&key);
        // The delete is ordered after the saves; a save after it proves it ran.
        store.save(&CheckKey::new("ns", "b"), &st).await.unwrap();
        assert_eq!(store.load(&key), None);
    }

    #[tokio::test]
    async fn corrupt_state_is_moved_aside_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let key = CheckKey::new("ns", "a");
        std::fs::write(store.path(&key), b"{not json").unwrap();
        assert_eq!(store.load(&key), None);
        assert_eq!(
            std::fs::read(dir.path().join("ns_a.json.corrupt")).unwrap(),
            b"{not json"
        );
    }

    #[test]
    fn unwritable_directory_is_an_error_naming_it() {
        let err = FileStore::open("/proc/probity-cannot-exist")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/proc/probity-cannot-exist"), "{err}");
    }
}
