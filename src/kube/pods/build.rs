//! The pod of a run: the check's `podSpec` with the four `KH_*` variables in every container,
//! the run's labels and annotations, an owner reference to the check, `restartPolicy: Never`
//! and `activeDeadlineSeconds` from the timeout.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::api::protocol::{pod_name, CHECK_LABEL, RUN_LABEL};
use crate::api::validate::{Invalid, Problem};
use crate::api::{GROUP, VERSION};
use crate::engine::StartRun;

fn env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    }
}

/// The four `KH_*` variables, replacing same-named ones the user set.
fn inject(c: &mut Container, vars: &[EnvVar]) {
    let env = c.env.get_or_insert_with(Vec::new);
    env.retain(|e| !vars.iter().any(|v| v.name == e.name));
    env.extend(vars.iter().cloned());
}

/// The pod of a run, built from the check's `podSpec`.
pub fn build_pod(run: &StartRun, report_base: &str) -> Result<Pod, Invalid> {
    let check = &run.check;
    let key = &run.key;
    let spec_src = check.spec.pod_spec.as_ref().ok_or_else(|| Invalid {
        problems: vec![Problem {
            field: "spec.podSpec".into(),
            message: "is missing".into(),
        }],
    })?;
    let mut spec: PodSpec = spec_src.pod_spec()?;
    let vars = [
        env(
            "KH_REPORTING_URL",
            format!(
                "{}/check?kh-run-uuid={}",
                report_base.trim_end_matches('/'),
                run.credential.expose()
            ),
        ),
        env("KH_RUN_UUID", run.credential.expose()),
        env(
            "KH_CHECK_RUN_DEADLINE",
            run.deadline.timestamp().to_string(),
        ),
        EnvVar {
            name: "KH_POD_NAMESPACE".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v1".into()),
                    field_path: "metadata.namespace".into(),
                }),
                ..Default::default()
            }),
        },
    ];
    for c in spec.containers.iter_mut() {
        inject(c, &vars);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        inject(c, &vars);
    }
    // A container that re-runs would report twice; the deadline is a backstop for when probity
    // itself is gone (it deletes the pod at the deadline).
    spec.restart_policy = Some("Never".into());
    spec.active_deadline_seconds = Some(run.timeout.as_secs_f64().ceil().max(1.0) as i64);

    let meta = spec_src.metadata.as_ref();
    let mut labels: BTreeMap<String, String> =
        meta.and_then(|m| m.labels.clone()).unwrap_or_default();
    labels.extend(check.spec.extra_labels.clone().unwrap_or_default());
    labels.insert(CHECK_LABEL.into(), key.name().to_string());
    labels.insert(RUN_LABEL.into(), run.uuid.to_string());
    let mut annotations: BTreeMap<String, String> =
        meta.and_then(|m| m.annotations.clone()).unwrap_or_default();
    annotations.extend(check.spec.extra_annotations.clone().unwrap_or_default());
    annotations.insert("createdBy".into(), "probity".into());
    annotations.insert(RUN_LABEL.into(), run.uuid.to_string());
    annotations.insert("kuberhealthyCheckName".into(), key.name().to_string());
    let owner = check.metadata.uid.clone().map(|uid| OwnerReference {
        api_version: format!("{GROUP}/{VERSION}"),
        kind: "HealthCheck".into(),
        name: key.name().to_string(),
        uid,
        controller: Some(true),
        // Deleting a check must never wait on its pods.
        block_owner_deletion: None,
    });
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(key, run.uuid)),
            namespace: Some(key.namespace().to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: owner.map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::api::load::parse_documents;
    use crate::api::CheckKey;
    use crate::api::RunCredential;
    use chrono::Utc;
    use std::sync::Arc;
    use std::time::Duration;

    /// A run of check `name` (uid `uid`) with `spec` and credential `credential`, starting now,
    /// its deadline `timeout` away.
    pub(in crate::kube::pods) fn start_run(
        name: &str,
        uid: &str,
        spec: &str,
        credential: RunCredential,
        timeout: Duration,
    ) -> StartRun {
        let text = format!(
            "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: {name}, namespace: kh, uid: \"{uid}\"}}\nspec:\n{spec}"
        );
        let check = Arc::new(parse_documents(&text).unwrap().remove(0).check.unwrap());
        let started = Utc::now();
        StartRun {
            key: CheckKey::of(&check),
            uuid: credential.run_id(),
            credential,
            check,
            started,
            deadline: started + chrono::Duration::from_std(timeout).unwrap(),
            timeout,
            due: started,
        }
    }

    fn run(spec: &str) -> StartRun {
        let uuid: RunCredential = "1d309ed7-4b7a-4fd5-9706-d04f53c9ed30".parse().unwrap();
        start_run("dns", "1234", spec, uuid, Duration::from_millis(89_500))
    }

    fn value<'a>(c: &'a Container, name: &str) -> Vec<&'a EnvVar> {
        c.env.iter().flatten().filter(|e| e.name == name).collect()
    }

    #[test]
    fn the_pod_carries_the_run_and_replaces_user_kh_variables() {
        let r = run(concat!(
            "  extraLabels: {team: net}\n  extraAnnotations: {note: x}\n",
            "  podSpec:\n    metadata: {labels: {app: dns}, annotations: {a: b}}\n",
            "    spec:\n      restartPolicy: Always\n",
            "      initContainers: [{name: init, image: busybox}]\n",
            "      containers:\n      - name: check\n        image: img\n",
            "        env: [{name: KH_RUN_UUID, value: mine}, {name: KEEP, value: kept}]\n",
            "      - name: side\n        image: img2\n"
        ));
        let pod = build_pod(&r, "http://probity.kh.svc/").unwrap();
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.active_deadline_seconds, Some(90));
        let all = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten());
        for c in all {
            let uuid = value(c, "KH_RUN_UUID");
            assert_eq!(uuid.len(), 1, "{}", c.name);
            // The pod gets the credential; everything else shows the public id.
            assert_eq!(
                uuid[0].value.as_deref(),
                Some(r.credential.expose().as_str())
            );
            assert_eq!(
                value(c, "KH_REPORTING_URL")[0].value.as_deref(),
                Some(
                    format!(
                        "http://probity.kh.svc/check?kh-run-uuid={}",
                        r.credential.expose()
                    )
                    .as_str()
                )
            );
            assert_eq!(
                value(c, "KH_CHECK_RUN_DEADLINE")[0].value.as_deref(),
                Some(r.deadline.timestamp().to_string().as_str())
            );
            let ns = value(c, "KH_POD_NAMESPACE")[0].value_from.as_ref().unwrap();
            assert_eq!(
                ns.field_ref.as_ref().unwrap().field_path,
                "metadata.namespace"
            );
        }
        assert_eq!(value(&spec.containers[0], "KEEP").len(), 1);
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["healthcheck"], "dns");
        assert_eq!(labels[RUN_LABEL], r.uuid.to_string());
        assert_eq!(
            (labels["app"].as_str(), labels["team"].as_str()),
            ("dns", "net")
        );
        let ann = pod.metadata.annotations.as_ref().unwrap();
        assert_eq!((ann["a"].as_str(), ann["note"].as_str()), ("b", "x"));
        assert_eq!(ann["kuberhealthyCheckName"], "dns");
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("HealthCheck", "1234", Some(true))
        );
        assert_eq!(owner.api_version, "kuberhealthy.github.io/v2");
        // Named from the public id: the name is in the status, the credential must not be.
        let name = format!("dns-{}", r.uuid.short(5));
        assert_eq!(pod.metadata.name.as_deref(), Some(name.as_str()));
        assert!(!name.contains(&r.credential.expose()[..5]));
    }
}
