//! Checks from a directory of YAML files, re-read when files change. The directory is polled
//! (a stat per file per interval) rather than watched with inotify: it costs nothing at this
//! scale, needs no extra dependency, and sees Kubernetes ConfigMap mounts, whose updates swap
//! symlinks that inotify watches on the files miss.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::api::load::{parse_documents, DocError};
use crate::api::validate::{Invalid, Problem};
use crate::api::{CheckKey, HealthCheck};
use crate::engine::{Desired, Plans};
use crate::{Error, Result};

/// The annotation that records which file a local check came from (its process runs there).
pub use crate::api::protocol::SOURCE_ANNOTATION;

use super::listing::{list_yaml, read_capped};
pub use super::listing::{MAX_DEPTH, MAX_FILE_BYTES};

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
                    changes.file_errors.push((name, Some(refusal.to_string())));
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
            let _ = plans.plan(&key, &desired);
        }
        out.push((doc.index, desired));
    }
    Ok((out, errors))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::path::Path;

    /// A probe check named `name` running every `interval`, as a checks file holds it.
    pub(in crate::local) fn check(name: &str, interval: &str) -> String {
        format!(
            "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: {name}}}\nspec:\n  runInterval: {interval}\n  probe: {{tcpSocket: {{host: localhost, port: 1}}}}\n"
        )
    }

    pub(in crate::local) fn no_backend_problems(_: &HealthCheck) -> Vec<Problem> {
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
