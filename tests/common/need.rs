//! Whether a test can run on this machine: the tools and rights it needs, or a one-line skip.

use std::path::Path;

/// Whether a test can run here, given `have` (a tool it needs is installed, it runs as root);
/// otherwise says in one line what is missing and how to get it, and the caller returns. Under
/// `.ci/run` (`PROBITY_REQUIRE_TOOLS=1`) nothing may be missing: the test fails instead, so a
/// broken install step cannot hide behind a skip.
pub fn available(have: bool, what: &str, how: &str) -> bool {
    if have {
        return true;
    }
    assert!(
        std::env::var_os("PROBITY_REQUIRE_TOOLS").is_none(),
        "{what} is missing ({how}); PROBITY_REQUIRE_TOOLS is set, so this fails instead of skipping"
    );
    // Straight to the standard error, past the test harness's capture (which only takes the
    // print macros), so the line shows in a plain `cargo test`.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED: needs {what} ({how})");
    false
}

/// Whether `name` is an executable on PATH (or a path to one).
pub fn has_tool(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        return runnable(Path::new(name));
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| runnable(&d.join(name))))
}

/// A test that needs the program `name`, which `how` installs.
pub fn need_tool(name: &str, how: &str) -> bool {
    available(has_tool(name), name, how)
}

/// A test that needs root (to mount a file system, to make a network namespace).
pub fn need_root(why: &str) -> bool {
    // SAFETY: a plain syscall with no arguments.
    available(unsafe { libc::geteuid() } == 0, "root", why)
}
