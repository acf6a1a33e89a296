//! Names that probity, check pods and Kuberhealthy's clients share: the report header, the
//! labels and annotations on check pods and checks, the pod name of a run.

use uuid::Uuid;

use super::CheckKey;

/// The header (and `KH_REPORTING_URL` query parameter) that carries a report's run credential,
/// the `KH_RUN_UUID` of the run.
pub const UUID_HEADER: &str = "kh-run-uuid";
/// Label (and annotation) of a check pod: the run it belongs to, by its public id.
pub const RUN_LABEL: &str = "kh-run-uuid";

/// Names the public run ids derived from credentials; any fixed UUID would do.
const RUN_ID_NAMESPACE: Uuid = Uuid::from_u128(0x7072_6f62_6974_792d_7275_6e2d_6964_0001);

/// The public id of a run from its credential.
///
/// A run has two UUIDs. The credential is `KH_RUN_UUID`: only the check's pod (or process)
/// gets it, and a report must carry it. The public id, derived from it one way (a name-based
/// v5 UUID), is what status, `/json`, history, pod labels and logs show. Whoever can read those
/// can therefore not forge a verdict, while any replica, or a new leader after a failover, can
/// still tell which run a report belongs to from the status alone.
pub fn run_id(credential: Uuid) -> Uuid {
    Uuid::new_v5(&RUN_ID_NAMESPACE, credential.as_bytes())
}
/// Label of a check pod: the check it belongs to.
pub const CHECK_LABEL: &str = "healthcheck";
/// Annotation on a check loaded from a file (local mode): which file, for relative paths.
pub const SOURCE_ANNOTATION: &str = "probity.dev/source-file";
/// Annotation a manual run request is recorded in (cluster): when it was asked for, unix ms.
pub const RUN_REQUESTED: &str = "probity.dev/run-requested";

/// A check with this annotation set to `"false"` sends no notifications.
pub const NOTIFY_ANNOTATION: &str = "probity.dev/notify";

/// The pod name of a run, Kuberhealthy v3 style: `<check>-<5 chars>`, here taken from the run's
/// UUID so the name is known before the pod exists and the start is one status write.
pub fn pod_name(key: &CheckKey, uuid: Uuid) -> String {
    let name = key.name();
    let name = &name[..name.len().min(57)];
    format!(
        "{}-{}",
        name.trim_end_matches(['-', '.']),
        &uuid.simple().to_string()[..5]
    )
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
    fn the_public_run_id_is_stable_one_way_and_not_the_credential() {
        let cred = Uuid::parse_str("1d309ed7-4b7a-4fd5-9706-d04f53c9ed30").unwrap();
        let id = run_id(cred);
        assert_ne!(id, cred);
        // Stable across versions: a run started before an upgrade is matched after it.
        assert_eq!(id.to_string(), run_id(cred).to_string());
        assert_eq!(id.get_version_num(), 5);
        // Case does not matter in the header: the parsed UUID is the same.
        let upper = Uuid::parse_str(&cred.to_string().to_uppercase()).unwrap();
        assert_eq!(run_id(upper), id);
        // The public id of the public id is not the public id (no fixed point to exploit).
        assert_ne!(run_id(id), id);
    }

    #[test]
    fn pod_names_are_short_and_derived_from_the_run() {
        let uuid = Uuid::parse_str("1d309ed7-4b7a-4fd5-9706-d04f53c9ed30").unwrap();
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
