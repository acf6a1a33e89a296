//! The bundled checks as a user meets them: `kubectl apply -k deploy/`, then `kubectl apply -f
//! checks/cluster/`, both unchanged, on the real node (scripts/kube-up.sh). probity, running as
//! the installed pods, runs every bundled check, and each passes; the deployment and daemonset
//! checks leave nothing behind.
//!
//! A test binary of its own, named to run before the cluster suite (Cargo runs test binaries in
//! name order), on the fresh cluster: several bundled checks judge the whole cluster, and other
//! tests leave failing pods, a full quota and a blocked CronJob on purpose. On a rerun, the test
//! namespaces of earlier runs are deleted first for the same reason.

mod common;
#[path = "cluster/testkube.rs"]
mod testkube;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams};
use probity::api::{HealthCheck, Outcome};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The HealthChecks the bundled manifests define, by name.
fn bundled_checks() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("{ROOT}/checks/cluster"))
        .unwrap()
        .flat_map(|e| testkube::health_check_names(&e.unwrap().path()))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn applied_as_they_are_every_bundled_check_passes() {
    let Some(path) = testkube::kubeconfig() else {
        return;
    };
    let c = testkube::client_from(&path).await;

    // What earlier test runs left (a rerun on the same cluster).
    let namespaces: Api<Namespace> = Api::all(c.clone());
    let leftovers: Vec<String> = namespaces
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .filter(|n| n.starts_with("probity-"))
        .collect();
    for n in &leftovers {
        let _ = namespaces.delete(n, &DeleteParams::default()).await;
    }
    common::wait_up_to(
        Duration::from_secs(300),
        "earlier tests' namespaces to go",
        async || {
            let left = namespaces.list(&ListParams::default()).await.ok()?.items;
            (!left.iter().any(|n| {
                n.metadata
                    .name
                    .as_ref()
                    .is_some_and(|n| leftovers.contains(n))
            }))
            .then_some(())
        },
    )
    .await;

    testkube::kubectl(&["apply", "-k", &format!("{ROOT}/deploy")]);
    testkube::kubectl(&[
        "-n",
        "probity",
        "rollout",
        "status",
        "deployment/probity",
        "--timeout=180s",
    ]);
    testkube::kubectl(&["apply", "-f", &format!("{ROOT}/checks/cluster")]);

    let names = bundled_checks();
    assert!(names.len() >= 11, "{names:?}");
    let api: Api<HealthCheck> = Api::namespaced(c.clone(), "probity");
    for name in &names {
        let st = common::wait_up_to(
            Duration::from_secs(300),
            &format!("{name}'s first run"),
            async || {
                let st = api.get(name).await.ok()?.status?;
                (!st.history.is_empty()).then_some(st)
            },
        )
        .await;
        assert_eq!(
            st.last_outcome,
            Some(Outcome::Success),
            "{name}: {:?}",
            st.errors
        );
    }
    let left = || {
        testkube::kubectl(&[
            "-n",
            "probity",
            "get",
            "deployments,daemonsets,services",
            "-l",
            probity::checks::workload::OWNER_LABEL,
            "-o",
            "name",
        ])
    };
    common::wait_up_to(
        Duration::from_secs(120),
        "the workload checks' objects to go",
        async || left().is_empty().then_some(()),
    )
    .await;

    // Leave the cluster as the other suites expect it: no bundled checks, and no installed
    // probity, its pods gone too (the deploy test installs its own and counts its replicas).
    testkube::kubectl(&["delete", "-f", &format!("{ROOT}/checks/cluster")]);
    testkube::kubectl(&[
        "-n",
        "probity",
        "delete",
        "deployment",
        "probity",
        "--cascade=foreground",
        "--timeout=180s",
    ]);
}
