//! Checks from a directory of YAML files, re-read when files change. The directory is polled
//! (a stat per file per interval) rather than watched with inotify: it costs nothing at this
//! scale, needs no extra dependency, and sees Kubernetes ConfigMap mounts, whose updates swap
//! symlinks that inotify watches on the files miss.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use crate::api::load::{parse_documents, DocError};
use crate::api::validate::{Invalid, Problem};
use crate::api::{CheckKey, HealthCheck};
use crate::engine::{Desired, Plans};
use crate::{Error, Result};

/// The annotation that records which file a local check came from (its process runs there).
pub use crate::api::protocol::SOURCE_ANNOTATION;

/// The largest checks file read. A HealthCheck is a few KiB; a larger file is a mistake (or an
/// attack) that would hold up loading every other check.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// How deep directories under the checks directory are read.
pub const MAX_DEPTH: usize = 16;

/// What changed since the last scan.
#[derive(Debug, Default)]
pub struct Changes {
    pub upserts: Vec<Desired>,
    pub removes: Vec<CheckKey>,
    /// Per file: an error that is not tied to one check, or None when the file is fine again.
    pub file_errors: Vec<(String, Option<String>)>,
}

#[derive(Debug)]
struct FileState {
    signature: (SystemTime, u64),
    keys: Vec<CheckKey>,
}

/// Problems a backend finds with a check it cannot run, beyond the spec's own validation.
pub type BackendCheck = fn(&HealthCheck) -> Vec<Problem>;

#[derive(Debug)]
pub struct CheckDir {
    root: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    owner: HashMap<CheckKey, PathBuf>,
    backend_check: BackendCheck,
    /// Entries that are not read, with the message shown: directory links that lead back into
    /// a directory being read, checks files that are not regular files (a FIFO, a device, a
    /// socket, a link that loops), directories nested too deep.
    refused: BTreeMap<PathBuf, String>,
    /// The engine's plans, filled while reading (on a blocking thread).
    plans: Option<Arc<Plans>>,
}

impl CheckDir {
    pub fn new(root: impl Into<PathBuf>, backend_check: BackendCheck) -> Self {
        CheckDir {
            root: root.into(),
            files: BTreeMap::new(),
            owner: HashMap::new(),
            backend_check,
            refused: BTreeMap::new(),
            plans: None,
        }
    }

    /// Validates each check as it is read, into the engine's `plans`.
    pub fn validating_with(mut self, plans: Arc<Plans>) -> Self {
        self.plans = Some(plans);
        self
    }

    /// Marks `path` as seen at `signature` while keeping the checks it defined before, so the
    /// error that kept it from being read is said once, not on every scan until it changes.
    fn seen_unread(&mut self, path: PathBuf, signature: (SystemTime, u64)) {
        let keys = self
            .files
            .get(&path)
            .map(|s| s.keys.clone())
            .unwrap_or_default();
        self.files.insert(path, FileState { signature, keys });
    }

    /// Reads what changed. An unreadable directory changes nothing (checks are never dropped
    /// because a read failed) and is reported as an error.
    pub fn scan(&mut self) -> Result<Changes> {
        let mut found = BTreeMap::new();
        let mut refused = BTreeMap::new();
        list_yaml(&self.root, &mut Vec::new(), &mut found, &mut refused)
            .map_err(|e| Error::io(&self.root, e))?;
        let mut changes = Changes::default();
        for (path, message) in &refused {
            if self.refused.get(path) != Some(message) {
                changes
                    .file_errors
                    .push((path.display().to_string(), Some(message.clone())));
            }
        }
        for path in self.refused.keys().filter(|l| !refused.contains_key(*l)) {
            if !found.contains_key(path) {
                changes.file_errors.push((path.display().to_string(), None));
            }
        }

        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !found.contains_key(*p))
            .cloned()
            .collect();
        for path in gone {
            let state = self.files.remove(&path).expect("listed");
            for key in state.keys {
                if self.owner.get(&key) == Some(&path) {
                    self.owner.remove(&key);
                    changes.removes.push(key);
                }
            }
            // A file that became something not read keeps the error that says so.
            if !refused.contains_key(&path) {
                changes.file_errors.push((path.display().to_string(), None));
            }
        }
        self.refused = refused;

        for (path, signature) in found {
            if self
                .files
                .get(&path)
                .is_some_and(|s| s.signature == signature)
            {
                continue;
            }
            let name = path.display().to_string();
            if signature.1 > MAX_FILE_BYTES {
                // Keep what this file defined before; say why it was not read.
                let message = format!(
                    "is {} bytes, over the {} byte limit for a checks file; it was not read (split it)",
                    signature.1, MAX_FILE_BYTES
                );
                changes.file_errors.push((name, Some(message)));
                self.seen_unread(path, signature);
                continue;
            }
            let text = match read_capped(&path) {
                Ok(Ok(t)) => t,
                Ok(Err(refusal)) => {
                    // Keep what this file defined before; say why it was not read.
                    changes.file_errors.push((name, Some(refusal)));
                    self.seen_unread(path, signature);
                    continue;
                }
                Err(e) => {
                    // Keep what this file defined before; say why it was not re-read.
                    changes.file_errors.push((name, Some(e.to_string())));
                    continue;
                }
            };
            let (desired, mut errors) =
                match parse_file(&name, &text, self.backend_check, self.plans.as_deref()) {
                    Ok(v) => v,
                    Err(e) => {
                        let message = match e {
                            Error::Parse { message, .. } => message,
                            e => e.to_string(),
                        };
                        changes.file_errors.push((name, Some(message)));
                        self.seen_unread(path, signature);
                        continue;
                    }
                };
            let mut keys = Vec::new();
            for (index, d) in desired {
                let key = CheckKey::of(&d.check);
                if let Some(other) = self.owner.get(&key).filter(|o| **o != path) {
                    errors.push(format!(
                        "document {index}: {key} is already defined in {}; this one is ignored",
                        other.display()
                    ));
                    continue;
                }
                self.owner.insert(key.clone(), path.clone());
                keys.push(key);
                changes.upserts.push(d);
            }
            if let Some(old) = self.files.get(&path) {
                for key in &old.keys {
                    if !keys.contains(key) && self.owner.get(key) == Some(&path) {
                        self.owner.remove(key);
                        changes.removes.push(key.clone());
                    }
                }
            }
            changes
                .file_errors
                .push((name, (!errors.is_empty()).then(|| errors.join("; "))));
            self.files.insert(path, FileState { signature, keys });
        }
        Ok(changes)
    }
}

/// Reads one file's checks, each with its 1-based document number. Problems of single documents
/// come back as messages; Err means the file as a whole is not YAML.
#[allow(clippy::type_complexity)]
///
/// With `plans`, each check is also validated here (see `Plans`): the checks
/// directory is read on a blocking thread, so the engine's task never searches a schedule.
pub fn parse_file(
    name: &str,
    text: &str,
    backend_check: BackendCheck,
    plans: Option<&Plans>,
) -> Result<(Vec<(usize, Desired)>, Vec<String>)> {
    let docs = parse_documents(text).map_err(|e| Error::Parse {
        file: name.to_string(),
        message: format!("not valid YAML: {e}"),
    })?;
    let mut out: Vec<(usize, Desired)> = Vec::new();
    let mut errors = Vec::new();
    for doc in docs {
        let (mut check, mut load_error) = match doc.check {
            Ok(hc) => (hc, None),
            Err(DocError::Invalid { check, invalid }) => (*check, Some(invalid)),
            Err(DocError::Unusable(m)) => {
                errors.push(format!("document {}: {m}", doc.index));
                continue;
            }
            Err(DocError::Other(_)) => continue,
        };
        let key = CheckKey::of(&check);
        if out.iter().any(|(_, d)| CheckKey::of(&d.check) == key) {
            errors.push(format!(
                "document {}: {key} is defined twice in this file; the first one is used",
                doc.index
            ));
            continue;
        }
        if load_error.is_none() {
            let problems = backend_check(&check);
            if !problems.is_empty() {
                load_error = Some(Invalid { problems });
            }
        }
        check
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(SOURCE_ANNOTATION.into(), name.to_string());
        let desired = Desired::new(Arc::new(check), load_error);
        if let Some(plans) = plans {
            let _ = plans.plan(&desired);
        }
        out.push((doc.index, desired));
    }
    Ok((out, errors))
}

/// Reads a checks file that was listed as a regular file, without trusting that it still is
/// one or that it is as small as it said: opened without blocking (a FIFO swapped in since would
/// otherwise wait for a writer), checked to be a regular file, and read up to
/// `MAX_FILE_BYTES`. `Ok(Err(why))` is a file refused, `Err` one that could not be read.
fn read_capped(path: &Path) -> std::io::Result<std::result::Result<String, String>> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Ok(Err(not_regular(&kind)));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Ok(Err(format!(
            "is over the {MAX_FILE_BYTES} byte limit for a checks file; it was not read (split it)"
        )));
    }
    Ok(String::from_utf8(bytes).map_err(|e| {
        format!(
            "is not UTF-8 text (byte {}); it was not read",
            e.utf8_error().valid_up_to()
        )
    }))
}

/// Why an entry named like a checks file is not read, by its type.
fn not_regular(kind: &std::fs::FileType) -> String {
    use std::os::unix::fs::FileTypeExt as _;
    let what = if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    format!("is {what}, not a regular file; it was not read")
}

/// Lists the YAML files under `dir`, following links (ConfigMap mounts are links to the real
/// files) but never into a directory already being read on the way down (`ln -s . loop`), nor
/// deeper than `MAX_DEPTH`. Entries named like checks files that are not regular files once
/// links are followed (FIFOs, devices, sockets, links that loop or lead nowhere) are never
/// opened; they and the loops are noted in `refused` instead, by type.
fn list_yaml(
    dir: &Path,
    above: &mut Vec<(u64, u64)>,
    out: &mut BTreeMap<PathBuf, (SystemTime, u64)>,
    refused: &mut BTreeMap<PathBuf, String>,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let here = std::fs::metadata(dir)?;
    above.push((here.dev(), here.ino()));
    let listed = list_entries(dir, above, out, refused);
    above.pop();
    listed
}

fn list_entries(
    dir: &Path,
    above: &mut Vec<(u64, u64)>,
    out: &mut BTreeMap<PathBuf, (SystemTime, u64)>,
    refused: &mut BTreeMap<PathBuf, String>,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        // Follow symlinks: ConfigMap mounts are links to the real files. A stat never blocks,
        // whatever the entry is.
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if yaml && e.raw_os_error() == Some(libc::ELOOP) => {
                let why = "is a symlink that loops (too many levels of links); it was not read";
                refused.insert(path, why.into());
                continue;
            }
            Err(e) if yaml && e.kind() == std::io::ErrorKind::NotFound => {
                let target = std::fs::read_link(&path).unwrap_or_default();
                let why = format!("links to {}, which does not exist", target.display());
                refused.insert(path, why);
                continue;
            }
            Err(_) => continue,
        };
        if meta.is_dir() {
            if above.contains(&(meta.dev(), meta.ino())) {
                let target = std::fs::read_link(&path).unwrap_or_default();
                refused.insert(
                    path.clone(),
                    format!(
                        "links to {}, a directory it is inside of (a symlink loop); not followed",
                        target.display()
                    ),
                );
                continue;
            }
            if above.len() >= MAX_DEPTH {
                let why = format!("is nested deeper than {MAX_DEPTH} directories; not read");
                refused.insert(path, why);
                continue;
            }
            list_yaml(&path, above, out, refused)?;
        } else if yaml && !meta.is_file() {
            refused.insert(path, not_regular(&meta.file_type()));
        } else if yaml {
            out.insert(path, (meta.modified()?, meta.len()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, interval: &str) -> String {
        format!(
            "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: {name}}}\nspec:\n  runInterval: {interval}\n  probe: {{tcpSocket: {{host: localhost, port: 1}}}}\n"
        )
    }

    fn no_backend_problems(_: &HealthCheck) -> Vec<Problem> {
        Vec::new()
    }

    fn touch_later(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        // Make the change visible even within the file system's timestamp granularity.
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
    }

    #[test]
    fn picks_up_added_changed_and_removed_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(
            &a,
            format!("{}---\n{}", check("one", "1m"), check("two", "1m")),
        )
        .unwrap();
        let mut cd = CheckDir::new(dir.path(), no_backend_problems);
        let c = cd.scan().unwrap();
        assert_eq!(c.upserts.len(), 2);
        assert!(c.removes.is_empty());
        let src = &c.upserts[0].check.metadata.annotations.as_ref().unwrap()[SOURCE_ANNOTATION];
        assert!(src.ends_with("a.yaml"));

        // Nothing changed: nothing to do.
        let c = cd.scan().unwrap();
        assert!(c.upserts.is_empty() && c.removes.is_empty());

        // Edit: `two` dropped, `one` changed.
        touch_later(&a, &check("one", "5m"));
        let c = cd.scan().unwrap();
        assert_eq!(c.upserts.len(), 1);
        assert_eq!(c.upserts[0].check.spec.run_interval.as_deref(), Some("5m"));
        assert_eq!(c.removes, vec![CheckKey::new("default", "two")]);

        // New file in a subdirectory.
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.yml"), check("three", "1m")).unwrap();
        assert_eq!(cd.scan().unwrap().upserts.len(), 1);

        std::fs::remove_file(&a).unwrap();
        let c = cd.scan().unwrap();
        assert_eq!(c.removes, vec![CheckKey::new("default", "one")]);
    }

    #[test]
    fn bad_yaml_keeps_the_old_checks_and_reports_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, check("one", "1m")).unwrap();
        let mut cd = CheckDir::new(dir.path(), no_backend_problems);
        cd.scan().unwrap();
        touch_later(&a, "spec: [unclosed\n");
        let c = cd.scan().unwrap();
        assert!(
            c.removes.is_empty(),
            "a broken edit must not delete the checks"
        );
        let (file, err) = &c.file_errors[0];
        assert!(file.ends_with("a.yaml"));
        assert!(
            err.as_ref().unwrap().starts_with("not valid YAML"),
            "{err:?}"
        );
    }

    #[test]
    fn duplicates_and_unusable_documents_are_errors_of_the_file_other_objects_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), check("one", "1m")).unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            format!(
                "{}---\nkind: ConfigMap\napiVersion: v1\n---\nmetadata: {{name: what}}\n",
                check("one", "2m")
            ),
        )
        .unwrap();
        let mut cd = CheckDir::new(dir.path(), no_backend_problems);
        let c = cd.scan().unwrap();
        assert_eq!(c.upserts.len(), 1);
        let b_err = c
            .file_errors
            .iter()
            .find(|(f, _)| f.ends_with("b.yaml"))
            .and_then(|(_, e)| e.clone())
            .unwrap();
        assert!(
            b_err.contains("document 1: default/one is already defined in"),
            "{b_err}"
        );
        // A check's own objects (here a ConfigMap) are not ours: skipped, not an error.
        assert!(!b_err.contains("ConfigMap"), "{b_err}");
        assert!(
            b_err.contains("document 3: apiVersion \"\" kind \"\" is not a HealthCheck"),
            "{b_err}"
        );
    }

    #[test]
    fn invalid_checks_are_kept_with_their_problems() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), check("bad", "5x")).unwrap();
        fn backend(_: &HealthCheck) -> Vec<Problem> {
            vec![Problem {
                field: "spec.x".into(),
                message: "backend says no".into(),
            }]
        }
        let mut cd = CheckDir::new(dir.path(), backend);
        let c = cd.scan().unwrap();
        assert_eq!(c.upserts.len(), 1);
        assert_eq!(
            c.upserts[0].load_error.as_ref().unwrap().to_string(),
            "spec.x: backend says no"
        );
    }

    #[test]
    fn missing_directory_is_an_error_naming_it() {
        let mut cd = CheckDir::new("/nonexistent/probity-checks", no_backend_problems);
        assert!(cd
            .scan()
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/probity-checks"));
    }

    #[test]
    fn symlink_loops_are_named_and_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), check("one", "1m")).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.yaml"), check("two", "1m")).unwrap();
        // The recipe: `ln -s . loop`, twice, at two depths.
        std::os::unix::fs::symlink(".", dir.path().join("loop")).unwrap();
        std::os::unix::fs::symlink("..", dir.path().join("sub/up")).unwrap();
        let mut cd = CheckDir::new(dir.path(), no_backend_problems);
        let c = cd.scan().unwrap();
        assert_eq!(c.upserts.len(), 2, "each file read once");
        let errors: Vec<&(String, Option<String>)> =
            c.file_errors.iter().filter(|(_, e)| e.is_some()).collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().any(|(f, e)| f.ends_with("/loop")
            && e.as_deref()
                .unwrap()
                .contains("(a symlink loop); not followed")));
        // Said once, cleared when the link goes.
        assert!(cd
            .scan()
            .unwrap()
            .file_errors
            .iter()
            .all(|(_, e)| e.is_none()));
        std::fs::remove_file(dir.path().join("loop")).unwrap();
        let c = cd.scan().unwrap();
        assert!(c
            .file_errors
            .iter()
            .any(|(f, e)| f.ends_with("/loop") && e.is_none()));
        assert!(c.removes.is_empty());
    }

    /// The error a scan gave for the entry whose path ends with `end`.
    fn error_of<'a>(c: &'a Changes, end: &str) -> Option<&'a str> {
        c.file_errors
            .iter()
            .find(|(f, _)| f.ends_with(end))
            .and_then(|(_, e)| e.as_deref())
    }

    #[test]
    fn fifos_devices_sockets_and_looping_links_are_refused_by_type_without_opening() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("good.yaml"), check("one", "1m")).unwrap();
        // Opened for reading, each of these would block or never end.
        let fifo = std::ffi::CString::new(p("fifo.yaml").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        std::os::unix::fs::symlink("/dev/zero", p("zero.yaml")).unwrap();
        std::os::unix::fs::symlink("self.yaml", p("self.yaml")).unwrap();
        std::os::unix::fs::symlink("nowhere", p("dangling.yaml")).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(p("sock.yaml")).unwrap();
        let mut cd = CheckDir::new(dir.path(), no_backend_problems);
        let c = cd.scan().unwrap();
        assert_eq!(c.upserts.len(), 1, "the good file is read");
        for (end, want) in [
            ("/fifo.yaml", "is a FIFO (named pipe), not a regular file"),
            ("/zero.yaml", "is a character device, not a regular file"),
            ("/sock.yaml", "is a socket, not a regular file"),
            ("/self.yaml", "is a symlink that loops"),
            ("/dangling.yaml", "links to nowhere, which does not exist"),
        ] {
            let e = error_of(&c, end).unwrap_or_else(|| panic!("{end}: {:?}", c.file_errors));
            assert!(e.contains(want), "{end}: {e}");
        }
        // Said once; a FIFO that becomes a file is read, and its error cleared.
        assert!(cd.scan().unwrap().file_errors.is_empty());
        std::fs::remove_file(p("fifo.yaml")).unwrap();
        std::fs::write(p("fifo.yaml"), check("two", "1m")).unwrap();
        let c = cd.scan().unwrap();
        assert_eq!(c.upserts.len(), 1);
        assert!(c
            .file_errors
            .iter()
            .any(|(f, e)| f.ends_with("/fifo.yaml") && e.is_none()));
        // A file that becomes a FIFO: its checks go, and the error says why.
        std::fs::remove_file(p("good.yaml")).unwrap();
        let good = std::ffi::CString::new(p("good.yaml").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(good.as_ptr(), 0o644) }, 0);
        let c = cd.scan().unwrap();
        assert_eq!(c.removes, vec![CheckKey::new("default", "one")]);
        assert!(error_of(&c, "/good.yaml").unwrap().contains("FIFO"));
    }

    #[test]
    fn a_file_is_read_only_as_a_regular_file_and_only_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("swapped.yaml");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0);
        // A FIFO swapped in after the listing: opened without blocking, refused by its type.
        let refused = read_capped(&fifo).unwrap().unwrap_err();
        assert!(refused.contains("FIFO"), "{refused}");
        // A file whose size said little (procfs says 0) is read only up to the cap.
        let zero = read_capped(Path::new("/dev/zero")).unwrap().unwrap_err();
        assert!(zero.contains("character device"), "{zero}");
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert!(read_capped(&big)
            .unwrap()
            .unwrap_err()
            .contains("byte limit"));
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, [b'a', 0xff]).unwrap();
        assert!(read_capped(&bad)
            .unwrap()
            .unwrap_err()
            .contains("not UTF-8"));
    }

    #[test]
    fn directories_deeper_than_the_limit_are_named_and_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut deep = dir.path().to_path_buf();
        for i in 0..MAX_DEPTH {
            deep.push(format!("d{i}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("x.yaml"), check("deep", "1m")).unwrap();
        let c = CheckDir::new(dir.path(), no_backend_problems)
            .scan()
            .unwrap();
        assert!(c.upserts.is_empty());
        let e = error_of(&c, &format!("/d{}", MAX_DEPTH - 1)).unwrap();
        assert!(e.contains("nested deeper than 16 directories"), "{e}");
    }

    #[test]
    fn files_over_the_size_limit_are_refused_and_keep_what_they_defined() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, check("one", "1m")).unwrap();
        let mut cd = CheckDir::new(dir.path(), no_backend_problems);
        assert_eq!(cd.scan().unwrap().upserts.len(), 1);
        // Grown past the limit (a comment is enough): not read, and "one" stays.
        let mut text = check("one", "5m");
        text.push_str(&format!("# {}\n", "x".repeat(MAX_FILE_BYTES as usize)));
        touch_later(&a, &text);
        let c = cd.scan().unwrap();
        assert!(c.upserts.is_empty() && c.removes.is_empty());
        let (_, err) = &c.file_errors[0];
        let err = err.as_deref().unwrap();
        assert!(err.contains("over the 1048576 byte limit"), "{err}");
        assert!(cd.scan().unwrap().file_errors.is_empty(), "said once");
    }
}
