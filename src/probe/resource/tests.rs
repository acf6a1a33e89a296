use super::*;

/// In progress passes with a warning until it has lasted the grace period, per object, and
/// the count starts again once the object settles. On a paused clock.
#[tokio::test(start_paused = true)]
async fn in_progress_fails_only_after_the_grace_period() {
    let cluster = Cluster::from_kubeconfig(None);
    let key = CheckKey::new("shop", "cert");
    let grace = Duration::from_secs(60);
    let progressing = || {
        vec![(
            "uid-1".to_string(),
            Judgement::Progressing(
                "Certificate shop/web: generation 2 is not reconciled yet (observedGeneration 1)"
                    .into(),
            ),
        )]
    };
    let r = cluster.settle(&key, progressing(), grace);
    assert!(r.passed_ok());
    assert_eq!(
        r.warnings,
        ["Certificate shop/web: generation 2 is not reconciled yet (observedGeneration 1) (for 0s; fails after 1m)"]
    );
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(cluster.settle(&key, progressing(), grace).passed_ok());
    tokio::time::advance(Duration::from_secs(1)).await;
    let r = cluster.settle(&key, progressing(), grace);
    assert_eq!(
        r.errors,
        ["Certificate shop/web: generation 2 is not reconciled yet (observedGeneration 1), for 1m (the grace period is 1m)"]
    );
    // Another check's object, and the same object once settled, count from their own start.
    let other = CheckKey::new("shop", "other");
    assert!(cluster.settle(&other, progressing(), grace).passed_ok());
    assert!(cluster
        .settle(&key, vec![("uid-1".into(), Judgement::Ready)], grace)
        .passed_ok());
    assert!(cluster.settle(&key, progressing(), grace).passed_ok());
}

#[test]
fn a_refusal_names_the_rule_to_add() {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        "certificates",
    );
    let forbidden = kube::Error::Api(
        kube::core::Status::failure("forbidden", "Forbidden")
            .with_code(403)
            .boxed(),
    );
    assert_eq!(
        refused(&forbidden, "list", &ar, "shop", true).unwrap(),
        "forbidden: probity may not list certificates.cert-manager.io in namespace shop: add the rule {apiGroups: [\"cert-manager.io\"], resources: [\"certificates\"], verbs: [\"get\", \"list\", \"watch\"]} to a ClusterRole labelled probity.dev/aggregate-to-probity: \"true\" (see deploy/resource-probes-rbac.yaml)"
    );
    let core = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "Node"), "nodes");
    assert!(refused(&forbidden, "get", &core, "shop", false)
        .unwrap()
        .starts_with("forbidden: probity may not get nodes: add the rule {apiGroups: [\"\"], resources: [\"nodes\"]"));
}
