//! The API server's audit log (scripts/kube-up.sh with PROBITY_KUBE_AUDIT=1), which tells
//! clients apart by User-Agent: what the benchmarks on the real node count requests with.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The audit log of the cluster in `dir` and its length now.
pub fn log(dir: &Path) -> (PathBuf, u64) {
    let path = dir.join("audit.log");
    let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or_else(|_| {
        panic!("no audit log: bring the cluster up with PROBITY_KUBE_AUDIT=1 scripts/kube-up.sh DIR")
    });
    (path, len)
}

/// A client by the first word of its User-Agent ("probity", "kubectl", "kubelet").
pub fn first_word(agent: &str) -> String {
    agent.split(['/', ' ']).next().unwrap_or("").to_string()
}

/// Requests in the log between two offsets, by (client, verb, resource[/subresource]), the
/// client named by `client` from the User-Agent. A watch counts when it starts, every other
/// request when it completes.
pub fn requests(
    path: &Path,
    from: u64,
    to: u64,
    client: impl Fn(&str) -> String,
) -> BTreeMap<(String, String, String), f64> {
    requests_in(path, from, to, client, None)
}

/// [`requests`] about objects in namespace `ns` only (cluster-wide requests left out too), when
/// given: what one probity of a namespace made, whatever else runs beside it.
pub fn requests_in(
    path: &Path,
    from: u64,
    to: u64,
    client: impl Fn(&str) -> String,
    ns: Option<&str>,
) -> BTreeMap<(String, String, String), f64> {
    use std::io::{Read, Seek};
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(std::io::SeekFrom::Start(from)).unwrap();
    let mut text = String::new();
    f.take(to - from).read_to_string(&mut text).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let verb = ev["verb"].as_str().unwrap_or("").to_string();
        let stage = ev["stage"].as_str().unwrap_or("");
        let counted = if verb == "watch" {
            stage == "ResponseStarted"
        } else {
            stage == "ResponseComplete"
        };
        if !counted || ns.is_some_and(|ns| ev["objectRef"]["namespace"] != ns) {
            continue;
        }
        let mut res = ev["objectRef"]["resource"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if let Some(sub) = ev["objectRef"]["subresource"].as_str() {
            res = format!("{res}/{sub}");
        }
        let who = client(ev["userAgent"].as_str().unwrap_or(""));
        *out.entry((who, verb, res)).or_default() += 1.0;
    }
    out
}
