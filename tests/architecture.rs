//! The direction of imports inside `src/`, read from the source: server, backends and probes
//! use the engine, the engine uses the resource (`api`), never the other way round. A change
//! that adds an import against the direction fails here, naming the file, the line and the
//! rule; docs/architecture.md explains the layers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What each top-level module may name with `crate::`, besides itself and the crate root's
/// `Error`/`Result`. The backends' wiring files (`kube/mod.rs`, `local/mod.rs`) alone may also
/// use the serve skeleton and the HTTP server's traits; see `WIRING`.
const ALLOWED: &[(&str, &[&str])] = &[
    ("api", &[]),
    ("tls", &[]),
    ("error", &["api", "client", "kube"]),
    ("engine", &["api"]),
    ("probe", &["api", "engine", "tls"]),
    ("metrics", &["api", "engine"]),
    ("client", &["api"]),
    ("server", &["api", "engine", "metrics"]),
    ("alert", &["api", "engine", "metrics", "tls"]),
    ("local", &["api", "engine", "probe", "metrics", "alert"]),
    ("kube", &["api", "engine", "probe", "metrics", "alert"]),
    ("serve", &["api", "engine", "metrics", "server", "alert"]),
    ("cli", &["api", "engine", "local", "serve", "server"]),
    ("migrate", &["api"]),
    ("checks", &["api", "client", "probe", "tls"]),
];

/// Files that wire a backend together: they hand their parts to the serve skeleton (`serve`)
/// and implement the server's traits (`server`).
const WIRING: &[&str] = &["src/kube/mod.rs", "src/local/mod.rs"];

/// Names at the crate root every module may use: the error type and its module.
const ROOT: &[&str] = &["Error", "Result", "error"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The first segment of every `crate::` path on a line, including each item of a
/// `crate::{a, b::c}` group.
fn crate_paths(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        // `probity::crate::` never happens; `$crate::` and `foo_crate::` are not ours.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let seg = item.trim().split("::").next().unwrap_or("").trim();
                if !seg.is_empty() {
                    out.push(seg.to_string());
                }
            }
        } else {
            let seg: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !seg.is_empty() {
                out.push(seg);
            }
        }
    }
    out
}

/// The top-level module a file belongs to: `src/kube/pods/mod.rs` -> `kube`.
fn module_of(rel: &str) -> Option<&str> {
    let rest = rel.strip_prefix("src/")?;
    let first = rest.split('/').next()?;
    Some(first.strip_suffix(".rs").unwrap_or(first))
}

#[test]
fn imports_go_one_way_server_backends_probes_then_engine_then_api() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    files.sort();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for path in &files {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let Some(module) = module_of(&rel) else {
            continue;
        };
        // The binary and the module list are the top: they may name anything.
        if module == "main" || module == "lib" {
            continue;
        }
        let Some(may) = allowed.get(module) else {
            wrong.push(format!(
                "{rel}: module `{module}` has no place in the layers of tests/architecture.rs; add it there and to docs/architecture.md"
            ));
            continue;
        };
        checked += 1;
        let text = std::fs::read_to_string(path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for target in crate_paths(code) {
                let ok = target == module
                    || ROOT.contains(&target.as_str())
                    || may.contains(&target.as_str())
                    || (matches!(target.as_str(), "server" | "serve")
                        && WIRING.contains(&rel.as_str()));
                if !ok {
                    wrong.push(format!(
                        "{rel}:{}: `{module}` may not import from `{target}` (allowed: {})",
                        n + 1,
                        if may.is_empty() {
                            "only itself".to_string()
                        } else {
                            may.join(", ")
                        }
                    ));
                }
            }
        }
    }
    assert!(
        checked > 30,
        "only {checked} files read: is the layout gone?"
    );
    assert!(
        wrong.is_empty(),
        "imports against the direction:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_import_reader_sees_grouped_and_inline_paths() {
    assert_eq!(
        crate_paths("use crate::{api::CheckKey, engine, Error};"),
        ["api", "engine", "Error"]
    );
    assert_eq!(
        crate_paths("let x = crate::server::serve(y); crate::kube::Namespaces::parse(s)"),
        ["server", "kube"]
    );
    assert!(crate_paths("macro_rules! m { () => { $crate::x } }").is_empty());
    assert_eq!(module_of("src/kube/pods/mod.rs"), Some("kube"));
    assert_eq!(module_of("src/metrics/mod.rs"), Some("metrics"));
    assert_eq!(module_of("src/cli.rs"), Some("cli"));
}

#[test]
fn no_source_file_is_over_650_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|p| {
            let n = std::fs::read_to_string(p).unwrap().lines().count();
            (n > 650).then(|| format!("{}: {n} lines", p.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these by concern: {long:?}");
}
