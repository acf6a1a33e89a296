//! The checks folder as the file system shows it, read so that nothing in it can block or
//! flood probity: only regular files (links followed) are opened, without blocking, checked
//! again once open, and read no further than `MAX_FILE_BYTES`; FIFOs, devices, sockets, links
//! that loop or lead nowhere, and directories too deep are refused by type, with a reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The largest checks file read. A HealthCheck is a few KiB; a larger file is a mistake (or an
/// attack) that would hold up loading every other check.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// How deep directories under the checks directory are read.
pub const MAX_DEPTH: usize = 16;

/// Why a checks file that opened was not read; each says so as the rest of a line that starts
/// with the file's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unread {
    /// It is not a regular file (any more): what it is, by type.
    #[error("{0}")]
    NotRegular(String),
    #[error(
        "is over the {MAX_FILE_BYTES} byte limit for a checks file; it was not read (split it)"
    )]
    TooLarge,
    #[error("is not UTF-8 text (byte {0}); it was not read")]
    NotUtf8(usize),
}

/// Reads a checks file that was listed as a regular file, without trusting that it still is
/// one or that it is as small as it said: opened without blocking (a FIFO swapped in since would
/// otherwise wait for a writer), checked to be a regular file, and read up to
/// `MAX_FILE_BYTES`. `Ok(Err(why))` is a file refused, `Err` one that could not be read.
pub(super) fn read_capped(path: &Path) -> std::io::Result<Result<String, Unread>> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Ok(Err(Unread::NotRegular(not_regular(&kind))));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Ok(Err(Unread::TooLarge));
    }
    Ok(String::from_utf8(bytes).map_err(|e| Unread::NotUtf8(e.utf8_error().valid_up_to())))
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
pub(super) fn list_yaml(
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
    use crate::api::CheckKey;
    use crate::local::checkdir::tests::{check, no_backend_problems};
    use crate::local::checkdir::{Changes, CheckDir};

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
        let refused = read_capped(&fifo).unwrap().unwrap_err().to_string();
        assert!(refused.contains("FIFO"), "{refused}");
        // A file whose size said little (procfs says 0) is read only up to the cap.
        let zero = read_capped(Path::new("/dev/zero"))
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(zero.contains("character device"), "{zero}");
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert_eq!(read_capped(&big).unwrap(), Err(Unread::TooLarge));
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, [b'a', 0xff]).unwrap();
        assert_eq!(read_capped(&bad).unwrap(), Err(Unread::NotUtf8(1)));
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
}
