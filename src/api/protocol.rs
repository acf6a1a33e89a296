//! Names that probity, check pods and Kuberhealthy's clients share: the report header, the
//! labels and annotations on check pods and checks, the pod name of a run.

use super::{CheckKey, RunId};

/// The header (and `KH_REPORTING_URL` query parameter) that carries a report's run credential,
/// the `KH_RUN_UUID` of the run.
pub const UUID_HEADER: &str = "kh-run-uuid";
/// Label (and annotation) of a check pod: the run it belongs to, by its public id.
pub const RUN_LABEL: &str = "kh-run-uuid";

/// Label of a check pod: the check it belongs to.
pub const CHECK_LABEL: &str = "healthcheck";
/// Annotation on a check loaded from a file (local mode): which file, for relative paths.
pub const SOURCE_ANNOTATION: &str = "probity.dev/source-file";
/// Annotation a manual run request is recorded in (cluster): when it was asked for, unix ms.
pub const RUN_REQUESTED: &str = "probity.dev/run-requested";

/// A check with this annotation set to `"false"` sends no notifications.
pub const NOTIFY_ANNOTATION: &str = "probity.dev/notify";

/// A check with this annotation (an RFC 3339 time) is in maintenance until then: it runs and
/// is recorded, and notifies no one (`kubectl annotate hc NAME probity.dev/maintenance-until=...`).
pub const MAINTENANCE_ANNOTATION: &str = "probity.dev/maintenance-until";

/// The pod name of a run, Kuberhealthy v3 style: `<check>-<5 chars>`, here taken from the run's
/// UUID so the name is known before the pod exists and the start is one status write.
pub fn pod_name(key: &CheckKey, run: RunId) -> String {
    let name = key.name();
    let name = &name[..name.len().min(57)];
    format!("{}-{}", name.trim_end_matches(['-', '.']), run.short(5))
}

/// A comma-separated namespace list (`--namespace a,b`, `/json?namespace=a,b`): trimmed, empty
/// items dropped; an empty list means all namespaces.
pub fn namespace_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_are_short_and_derived_from_the_run() {
        let uuid: RunId = "1d309ed7-4b7a-4fd5-9706-d04f53c9ed30".parse().unwrap();
        assert_eq!(pod_name(&CheckKey::new("kh", "dns"), uuid), "dns-1d309");
        let long = "a".repeat(80);
        assert!(pod_name(&CheckKey::new("kh", &long), uuid).len() <= 63);
    }

    #[test]
    fn namespace_lists_are_trimmed_and_empty_items_dropped() {
        assert_eq!(namespace_list(" a, b,,c "), vec!["a", "b", "c"]);
        assert!(namespace_list("").is_empty());
        assert!(namespace_list(" , ").is_empty());
    }
}
