//! Resource and Knative probes against the real API server. The kinds' controllers (cert-manager,
//! Flux, Argo CD, Knative) cannot be built here: their CRDs are registered in minimal form (same
//! group, version, kind, plural, scope and status subresource; spec and status keep unknown
//! fields, ../shared/reference/knative.md §7) and the tests write status as each controller would,
//! through the status subresource, one transition at a time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Endpoints;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::Client;
use probity::api::{RunRecord, Standing, TimingName};
use serde_json::{json, Value};

use crate::backend::{create, solo, status, wait, wait_up_to};
use crate::testkube::{check, kubectl_apply};

/// Registers a minimal CRD for a kind, and waits until it is served.
async fn minimal_crd(client: &Client, group: &str, version: &str, kind: &str, plural: &str) {
    kubectl_apply(&format!(
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: {plural}.{group}}}
spec:
  group: {group}
  scope: Namespaced
  names: {{kind: {kind}, plural: {plural}, singular: {singular}}}
  versions:
  - name: {version}
    served: true
    storage: true
    subresources: {{status: {{}}}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
          status: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
",
        singular = kind.to_lowercase()
    ));
    let api = kind_api(client, "default", group, version, kind, plural);
    wait(&format!("{plural}.{group} served"), async || {
        api.api.list(&Default::default()).await.ok().map(|_| ())
    })
    .await;
}

/// One kind in one namespace: its API and how objects of it are typed.
struct Kind {
    api: Api<DynamicObject>,
    ar: ApiResource,
}

fn kind_api(
    client: &Client,
    ns: &str,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Kind {
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Kind {
        api: Api::namespaced_with(client.clone(), ns, &ar),
        ar,
    }
}

/// Creates an object with `spec` and `labels`.
async fn object(k: &Kind, name: &str, labels: Value, spec: Value) {
    let mut o = DynamicObject::new(name, &k.ar).data(json!({ "spec": spec }));
    o.metadata.labels = serde_json::from_value(labels).unwrap();
    k.api
        .create(&PostParams::default(), &o)
        .await
        .unwrap_or_else(|e| panic!("create {} {name}: {e}", k.ar.kind));
}

/// Writes `status` as the kind's controller would (the status subresource, a merge patch).
async fn set_status(k: &Kind, name: &str, status: Value) {
    k.api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap_or_else(|e| panic!("status of {name}: {e}"));
}

fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The first run of check `name` that started after `t0` (unix seconds).
async fn run_after(client: &Client, ns: &str, name: &str, t0: i64) -> RunRecord {
    wait(&format!("a run of {name} after {t0}"), async || {
        let st = status(client, ns, name).await;
        st.history.first().filter(|h| h.start_unix > t0).cloned()
    })
    .await
}

fn every_second(probe: &str) -> String {
    format!("  runInterval: 1s\n  timeout: 5s\n  failureThreshold: 1\n  probe:\n{probe}")
}

#[tokio::test]
async fn resource_probes_judge_any_kind_by_its_conditions_as_controllers_set_them() {
    let Some((s, _p)) = solo("probity-resources").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    minimal_crd(c, "cert-manager.io", "v1", "Certificate", "certificates").await;
    minimal_crd(
        c,
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "Kustomization",
        "kustomizations",
    )
    .await;
    minimal_crd(c, "argoproj.io", "v1alpha1", "Application", "applications").await;
    let certs = kind_api(
        c,
        ns,
        "cert-manager.io",
        "v1",
        "Certificate",
        "certificates",
    );
    object(
        &certs,
        "web-tls",
        json!({}),
        json!({"secretName": "web-tls"}),
    )
    .await;

    create(
        c,
        &check(
            ns,
            "cert",
            &every_second(
                "    resource: {apiVersion: cert-manager.io/v1, kind: Certificate, name: web-tls, gracePeriod: 3s}\n",
            ),
        ),
    )
    .await;
    // cert-manager's first word: not ready, the secret does not exist yet.
    let t0 = now_unix();
    set_status(&certs, "web-tls", json!({"observedGeneration": 1, "conditions": [
        {"type": "Ready", "status": "False", "reason": "DoesNotExist", "message": "Issuing certificate as Secret does not exist"},
        {"type": "Issuing", "status": "True", "reason": "DoesNotExist"}]})).await;
    let r = run_after(c, ns, "cert", t0).await;
    assert_eq!(
        r.errors,
        [format!("Certificate {ns}/web-tls: Ready is False (DoesNotExist): Issuing certificate as Secret does not exist")]
    );
    let t0 = now_unix();
    set_status(&certs, "web-tls", json!({"observedGeneration": 1, "conditions": [
        {"type": "Ready", "status": "True", "reason": "Ready", "message": "Certificate is up to date and has not expired"}]})).await;
    let r = run_after(c, ns, "cert", t0).await;
    assert_eq!(
        (r.outcome, r.errors.len()),
        (Some(probity::api::Outcome::Success), 0)
    );

    // A new spec (generation 2) the controller has not observed: passes for the grace period,
    // then fails saying so.
    let t0 = now_unix();
    certs
        .api
        .patch(
            "web-tls",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"secretName": "web-tls-2"}})),
        )
        .await
        .unwrap();
    let r = run_after(c, ns, "cert", t0).await;
    assert!(
        r.outcome.is_some_and(|o| o.is_success()),
        "within the grace period: {r:?}"
    );
    let failed = wait("the unobserved generation to fail after 3s", async || {
        let st = status(c, ns, "cert").await;
        (!st.ok).then_some(st)
    })
    .await;
    assert!(
        failed.errors[0].starts_with(&format!(
            "Certificate {ns}/web-tls: generation 2 is not reconciled yet (observedGeneration 1), for "
        )) && failed.errors[0].ends_with("(the grace period is 3s)"),
        "{:?}",
        failed.errors
    );
    assert!(
        (now_unix() - t0) >= 3,
        "failed only once the grace period had passed"
    );
    let t0 = now_unix();
    set_status(&certs, "web-tls", json!({"observedGeneration": 2})).await;
    let r = run_after(c, ns, "cert", t0).await;
    assert!(r.outcome.is_some_and(|o| o.is_success()), "{r:?}");

    // Flux Kustomizations by label: one stalled fails, named with Flux's reason and message.
    let ks = kind_api(
        c,
        ns,
        "kustomize.toolkit.fluxcd.io",
        "v1",
        "Kustomization",
        "kustomizations",
    );
    for name in ["apps", "infra"] {
        object(
            &ks,
            name,
            json!({"team": "payments"}),
            json!({"path": "./apps"}),
        )
        .await;
        set_status(&ks, name, json!({"observedGeneration": 1, "conditions": [
            {"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded", "message": "Applied revision: main@sha1:1"}]})).await;
    }
    object(&ks, "other-team", json!({"team": "other"}), json!({})).await;
    create(
        c,
        &check(
            ns,
            "flux",
            &every_second("    resource:\n      apiVersion: kustomize.toolkit.fluxcd.io/v1\n      kind: Kustomization\n      labelSelector: {matchLabels: {team: payments}}\n"),
        ),
    )
    .await;
    let r = run_after(c, ns, "flux", now_unix() - 1).await;
    assert!(
        r.outcome.is_some_and(|o| o.is_success()),
        "the other team's is not selected: {r:?}"
    );
    let t0 = now_unix();
    set_status(&ks, "infra", json!({"conditions": [
        {"type": "Ready", "status": "False", "reason": "BuildFailed", "message": "kustomize build failed: accumulating resources"},
        {"type": "Stalled", "status": "True", "reason": "BuildFailed", "message": "kustomize build failed: accumulating resources"}]})).await;
    let r = run_after(c, ns, "flux", t0).await;
    assert_eq!(
        r.errors,
        [
            format!("Kustomization {ns}/infra: Stalled is True (BuildFailed): kustomize build failed: accumulating resources"),
        ]
    );

    // Argo CD Applications have no Ready condition: the expression says what healthy is.
    let apps = kind_api(
        c,
        ns,
        "argoproj.io",
        "v1alpha1",
        "Application",
        "applications",
    );
    object(&apps, "shop", json!({}), json!({"project": "default"})).await;
    set_status(
        &apps,
        "shop",
        json!({"health": {"status": "Progressing"}, "sync": {"status": "Synced"}}),
    )
    .await;
    create(
        c,
        &check(
            ns,
            "argo",
            &every_second("    resource:\n      apiVersion: argoproj.io/v1alpha1\n      kind: Application\n      name: shop\n      expression: object.status.health.status == 'Healthy' && object.status.sync.status == 'Synced'\n"),
        ),
    )
    .await;
    let r = run_after(c, ns, "argo", now_unix() - 1).await;
    assert_eq!(
        r.errors,
        [format!("Application {ns}/shop: the expression is false")]
    );
    let t0 = now_unix();
    set_status(&apps, "shop", json!({"health": {"status": "Healthy"}})).await;
    let r = run_after(c, ns, "argo", t0).await;
    assert!(r.outcome.is_some_and(|o| o.is_success()), "{r:?}");

    // What is not there is named: a kind with no CRD, an object that does not exist.
    create(
        c,
        &check(
            ns,
            "no-kind",
            &every_second("    resource: {apiVersion: example.com/v1, kind: Widget, name: w}\n"),
        ),
    )
    .await;
    create(
        c,
        &check(
            ns,
            "no-object",
            &every_second(
                "    resource: {apiVersion: cert-manager.io/v1, kind: Certificate, name: ghost}\n",
            ),
        ),
    )
    .await;
    let r = run_after(c, ns, "no-kind", 0).await;
    assert_eq!(
        r.errors,
        ["the API server does not serve example.com/v1 (is the CRD for Widget installed?)"]
    );
    let r = run_after(c, ns, "no-object", 0).await;
    assert_eq!(
        r.errors,
        [format!("Certificate ghost not found in namespace {ns}")]
    );
}

/// The Knative kinds a Knative probe reads, registered as minimal CRDs.
async fn knative_crds(c: &Client) {
    minimal_crd(c, "serving.knative.dev", "v1", "Service", "services").await;
    minimal_crd(c, "serving.knative.dev", "v1", "Revision", "revisions").await;
    minimal_crd(
        c,
        "autoscaling.internal.knative.dev",
        "v1alpha1",
        "PodAutoscaler",
        "podautoscalers",
    )
    .await;
}

struct Knative {
    services: Kind,
    revisions: Kind,
    autoscalers: Kind,
}

impl Knative {
    fn new(c: &Client, ns: &str) -> Self {
        Knative {
            services: kind_api(c, ns, "serving.knative.dev", "v1", "Service", "services"),
            revisions: kind_api(c, ns, "serving.knative.dev", "v1", "Revision", "revisions"),
            autoscalers: kind_api(
                c,
                ns,
                "autoscaling.internal.knative.dev",
                "v1alpha1",
                "PodAutoscaler",
                "podautoscalers",
            ),
        }
    }

    /// A Service `name` with revision `<name>-00001` and its PodAutoscaler, all Ready, the
    /// revision Active with one pod.
    async fn serving(&self, name: &str, url: &str) {
        let rev = format!("{name}-00001");
        object(
            &self.services,
            name,
            json!({}),
            json!({"template": {"spec": {}}}),
        )
        .await;
        object(
            &self.revisions,
            &rev,
            json!({"serving.knative.dev/service": name}),
            json!({}),
        )
        .await;
        object(
            &self.autoscalers,
            &rev,
            json!({"serving.knative.dev/revision": rev}),
            json!({}),
        )
        .await;
        set_status(&self.services, name, json!({"observedGeneration": 1, "url": url,
            "latestCreatedRevisionName": rev, "latestReadyRevisionName": rev,
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "ConfigurationsReady", "status": "True"}, {"type": "RoutesReady", "status": "True"}]})).await;
        self.revision(&rev, json!({"type": "Active", "status": "True"}))
            .await;
        self.scale(&rev, 1).await;
    }

    /// The revision's conditions as the revision reconciler writes them, with `active`.
    async fn revision(&self, rev: &str, active: Value) {
        set_status(
            &self.revisions,
            rev,
            json!({"observedGeneration": 1, "conditions": [
            {"type": "Ready", "status": "True"}, {"type": "ResourcesAvailable", "status": "True"},
            {"type": "ContainerHealthy", "status": "True"}, active]}),
        )
        .await;
    }

    /// The PodAutoscaler's actual scale, as the autoscaler writes it.
    async fn scale(&self, rev: &str, n: i64) {
        set_status(
            &self.autoscalers,
            rev,
            json!({"actualScale": n, "desiredScale": n}),
        )
        .await;
    }
}

fn no_traffic() -> Value {
    json!({"type": "Active", "status": "False", "reason": "NoTraffic", "message": "The target is not receiving traffic."})
}

#[tokio::test]
async fn knative_services_at_zero_are_idle_not_failing_and_failures_carry_knatives_reasons() {
    let Some((s, p)) = solo("probity-knative").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    knative_crds(c).await;
    let k = Knative::new(c, ns);
    // Nothing listens here: the probe must never send it traffic.
    k.serving("hello", "http://127.0.0.1:9").await;
    create(
        c,
        &check(
            ns,
            "hello",
            &every_second("    knative: {service: hello}\n"),
        ),
    )
    .await;
    let r = run_after(c, ns, "hello", now_unix() - 1).await;
    assert!(
        r.outcome.is_some_and(|o| o.is_success()) && r.standing.is_none(),
        "{r:?}"
    );

    // Scaling down: NoTraffic while a pod is still there is healthy, not idle yet.
    let t0 = now_unix();
    k.revision("hello-00001", no_traffic()).await;
    let r = run_after(c, ns, "hello", t0).await;
    assert!(
        r.outcome.is_some_and(|o| o.is_success()) && r.standing.is_none(),
        "{r:?}"
    );
    // At zero (the PodAutoscaler's actual scale): healthy and idle, everywhere it is shown.
    let t0 = now_unix();
    k.scale("hello-00001", 0).await;
    let r = run_after(c, ns, "hello", t0).await;
    assert_eq!(r.standing, Some(Standing::Idle), "{r:?}");
    let st = status(c, ns, "hello").await;
    assert!(st.ok && st.standing == Some(Standing::Idle));
    p.wait_for("/json to say idle", |d| {
        d["CheckDetails"][format!("{ns}/hello")]["Standing"] == "Idle"
    })
    .await;

    // A resource probe of the Revision itself reads its PodAutoscaler too.
    create(
        c,
        &check(
            ns,
            "revision",
            &every_second(
                "    resource: {apiVersion: serving.knative.dev/v1, kind: Revision, name: hello-00001}\n",
            ),
        ),
    )
    .await;
    let r = run_after(c, ns, "revision", 0).await;
    assert_eq!(r.standing, Some(Standing::Idle), "{r:?}");

    // Waking: Active Unknown (Queued) passes while within the grace period.
    let t0 = now_unix();
    k.revision("hello-00001", json!({"type": "Active", "status": "Unknown", "reason": "Queued", "message": "Requests to the target are being buffered as resources are provisioned."})).await;
    let r = run_after(c, ns, "hello", t0).await;
    assert!(
        r.outcome.is_some_and(|o| o.is_success()) && r.standing.is_none(),
        "{r:?}"
    );
    // Activation timed out: a failure, with Knative's reason and message.
    let t0 = now_unix();
    k.revision("hello-00001", json!({"type": "Active", "status": "False", "reason": "TimedOut", "message": "The target could not be activated."})).await;
    let r = run_after(c, ns, "hello", t0).await;
    assert_eq!(
        r.errors,
        [format!("Revision {ns}/hello-00001: Active is False (TimedOut): The target could not be activated.")]
    );
    // A container that exits: ContainerHealthy False ExitCode1.
    let t0 = now_unix();
    set_status(&k.revisions, "hello-00001", json!({"conditions": [
        {"type": "Ready", "status": "False", "reason": "ExitCode1", "message": "Container failed with: boom"},
        {"type": "ResourcesAvailable", "status": "True"},
        {"type": "ContainerHealthy", "status": "False", "reason": "ExitCode1", "message": "Container failed with: boom"},
        {"type": "Active", "status": "False", "reason": "NoTraffic"}]})).await;
    let r = run_after(c, ns, "hello", t0).await;
    assert_eq!(
        r.errors,
        [
            format!("Revision {ns}/hello-00001: Ready is False (ExitCode1): Container failed with: boom"),
            format!("Revision {ns}/hello-00001: ContainerHealthy is False (ExitCode1): Container failed with: boom"),
        ]
    );
    // A new revision that fails to roll out while the previous one still serves.
    let t0 = now_unix();
    k.revision("hello-00001", no_traffic()).await;
    set_status(&k.services, "hello", json!({"latestCreatedRevisionName": "hello-00002", "conditions": [
        {"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": "Revision \"hello-00002\" failed with message: Unable to fetch image \"ghcr.io/x/y:2\"."},
        {"type": "ConfigurationsReady", "status": "False", "reason": "RevisionFailed", "message": "Revision \"hello-00002\" failed with message: Unable to fetch image \"ghcr.io/x/y:2\"."},
        {"type": "RoutesReady", "status": "True"}]})).await;
    let r = run_after(c, ns, "hello", t0).await;
    assert_eq!(
        r.errors,
        [format!("Service {ns}/hello: the rollout of revision hello-00002 failed; hello-00001 still serves: ConfigurationsReady is False (RevisionFailed): Revision \"hello-00002\" failed with message: Unable to fetch image \"ghcr.io/x/y:2\".")]
    );
    // The resource probe recognises a Knative Service as one.
    create(
        c,
        &check(
            ns,
            "as-resource",
            &every_second(
                "    resource: {apiVersion: serving.knative.dev/v1, kind: Service, name: hello}\n",
            ),
        ),
    )
    .await;
    let r = run_after(c, ns, "as-resource", 0).await;
    assert!(
        r.errors[0].contains("the rollout of revision hello-00002 failed"),
        "{r:?}"
    );
}

/// Stands in for Knative's activator: accepts a request for a revision at zero, marks it
/// waking, scales its Deployment up from zero, waits for the real pod behind the real Service
/// to be ready (its Endpoints), marks the revision Active, and forwards the request there.
async fn activator(c: Client, ns: String, k: Arc<Knative>, accepted: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            accepted.fetch_add(1, Ordering::SeqCst);
            let (c, ns, k) = (c.clone(), ns.clone(), k.clone());
            tokio::spawn(async move {
                k.revision(
                    "hello-00001",
                    json!({"type": "Active", "status": "Unknown", "reason": "Queued"}),
                )
                .await;
                let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns);
                deployments
                    .patch(
                        "hello-00001-deployment",
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"replicas": 1}})),
                    )
                    .await
                    .unwrap();
                let endpoints: Api<Endpoints> = Api::namespaced(c.clone(), &ns);
                let mut pod = None;
                for _ in 0..1200 {
                    let ready = endpoints.get("hello-00001").await.ok().and_then(|e| {
                        let subset = e.subsets?.into_iter().next()?;
                        Some(subset.addresses?.into_iter().next()?.ip)
                    });
                    if let Some(ip) = ready {
                        pod = Some(format!("{ip}:8080"));
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                let pod = pod.expect("the pod ready behind the Service within 2 minutes");
                k.scale("hello-00001", 1).await;
                k.revision("hello-00001", json!({"type": "Active", "status": "True"}))
                    .await;
                let mut upstream = tokio::net::TcpStream::connect(&pod).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_cold_start_is_measured_on_a_real_pod_scaled_from_zero_and_never_more_often_than_asked() {
    let Some((s, p)) = solo("probity-cold").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    knative_crds(c).await;
    let k = Arc::new(Knative::new(c, ns));
    // The revision's workload: a real Deployment at zero and a real Service in front of it.
    kubectl_apply(&format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: hello-00001-deployment, namespace: {ns}}}
spec:
  replicas: 0
  selector: {{matchLabels: {{serving.knative.dev/revision: hello-00001}}}}
  template:
    metadata: {{labels: {{serving.knative.dev/revision: hello-00001}}}}
    spec:
      containers:
      - name: user-container
        image: docker.io/nginxinc/nginx-unprivileged:1.17.9
        ports: [{{containerPort: 8080}}]
        readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: hello-00001, namespace: {ns}}}
spec:
  selector: {{serving.knative.dev/revision: hello-00001}}
  ports: [{{port: 80, targetPort: 8080}}]
"
    ));
    let accepted = Arc::new(AtomicUsize::new(0));
    let url = activator(c.clone(), ns.to_string(), k.clone(), accepted.clone()).await;
    k.serving("hello", &url).await;
    k.revision("hello-00001", no_traffic()).await;
    k.scale("hello-00001", 0).await;

    // Too often for the autoscaler's window: refused, naming the settings it was checked against.
    let api: Api<probity::api::HealthCheck> = Api::namespaced(c.clone(), ns);
    api.create(
        &PostParams::default(),
        &check(
            ns,
            "eager",
            &every_second("    knative:\n      service: hello\n      coldStart: {every: 1m}\n"),
        ),
    )
    .await
    .unwrap();
    let st = wait("the eager check refused", async || {
        let st = status(c, ns, "eager").await;
        (!st.errors.is_empty()).then_some(st)
    })
    .await;
    assert!(
        st.errors[0].contains(
            "spec.probe.knative.coldStart.every: 1m keeps the revision awake: it must exceed 1m30s"
        ) && st.errors[0].contains("from Knative's defaults"),
        "{:?}",
        st.errors
    );

    let spec = "  runInterval: 1s\n  timeout: 2m\n  failureThreshold: 1\n  probe:\n    knative:\n      service: hello\n      coldStart: {every: 10m, path: /}\n";
    create(c, &check(ns, "cold", spec)).await;
    let measured = wait_up_to(
        std::time::Duration::from_secs(150),
        "a measured cold start",
        async || {
            let st = status(c, ns, "cold").await;
            st.history.iter().find(|h| !h.timings.is_empty()).cloned()
        },
    )
    .await;
    assert!(
        measured.outcome.is_some_and(|o| o.is_success()),
        "{measured:?}"
    );
    let timing = |n: TimingName| measured.timings.iter().find(|t| t.name == n).map(|t| t.ms);
    let (first_byte, active) = (
        timing(TimingName::ColdStartFirstByte).expect("time to first byte"),
        timing(TimingName::ColdStartActive).expect("time until Active"),
    );
    eprintln!(
        "cold start on the real node: first byte after {first_byte} ms, Active after {active} ms"
    );
    // The pod had to be scheduled, started and pass its readiness probe before either.
    assert!(first_byte >= 500 && active >= 500, "{measured:?}");
    assert!(
        active <= first_byte + 1_000,
        "Active was set before the request was forwarded"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one request");

    // Warm latency: measured only while the revision is Active (it is, after the cold start).
    create(
        c,
        &check(
            ns,
            "warm",
            "  runInterval: 1s\n  timeout: 30s\n  failureThreshold: 1\n  probe:\n    knative:\n      service: hello\n      warmLatency: {every: 10m}\n",
        ),
    )
    .await;
    let warm = wait("a measured warm request", async || {
        let st = status(c, ns, "warm").await;
        st.history.iter().find(|h| !h.timings.is_empty()).cloned()
    })
    .await;
    assert_eq!(
        warm.timings.iter().map(|t| t.name).collect::<Vec<_>>(),
        [TimingName::WarmFirstByte],
        "{warm:?}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    // Back to zero, as the autoscaler would take it after its window: idle, and within
    // `every` no further request even though the revision is at zero again.
    let t0 = now_unix();
    k.revision("hello-00001", no_traffic()).await;
    k.scale("hello-00001", 0).await;
    for i in 1..=3 {
        let r = run_after(c, ns, "cold", t0 + i).await;
        assert_eq!(r.standing, Some(Standing::Idle), "{r:?}");
        assert!(r.timings.is_empty());
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "no request before `every` has passed"
    );

    let metrics = p.metrics().await;
    let count = metrics
        .lines()
        .find(|l| {
            l.starts_with("probity_knative_latency_seconds_count")
                && l.contains("timing=\"cold_start_first_byte\"")
                && l.contains("check=\"cold\"")
        })
        .unwrap_or_else(|| panic!("no cold-start histogram in\n{metrics}"));
    assert!(count.ends_with(" 1"), "{count}");
}

/// The Certificate kind registered, and Certificate `web-tls` in `ns` with `status`.
async fn web_tls(c: &Client, ns: &str, status: Value) -> Kind {
    minimal_crd(c, "cert-manager.io", "v1", "Certificate", "certificates").await;
    let certs = kind_api(
        c,
        ns,
        "cert-manager.io",
        "v1",
        "Certificate",
        "certificates",
    );
    object(&certs, "web-tls", json!({}), json!({})).await;
    set_status(&certs, "web-tls", status).await;
    certs
}

/// The documents of a manifest in deploy/ whose text matches `pick`, as written there.
fn deploy_docs(file: &str, pick: impl Fn(&str) -> bool) -> String {
    let path = format!("{}/deploy/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    let docs: Vec<&str> = text.split("\n---\n").filter(|d| pick(d)).collect();
    assert!(!docs.is_empty(), "nothing picked from deploy/{file}");
    docs.join("\n---\n")
}

/// With deploy/'s roles, a resource probe of a kind probity may not read fails naming the rule
/// to add; the role for that kind from deploy/resource-probes-rbac.yaml, aggregated into
/// deploy/'s `probity-resources` by the controller manager, lets it pass.
#[tokio::test]
async fn a_forbidden_kind_names_the_rbac_rule_and_the_aggregated_role_grants_it() {
    let Some(s) = crate::backend::setup("probity-rbac").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    web_tls(
        c,
        ns,
        json!({"conditions": [{"type": "Ready", "status": "True"}]}),
    )
    .await;

    // probity's account as deploy/ makes it, in this namespace.
    crate::testkube::kubectl(&[
        "delete",
        "clusterrole",
        "probity-reads-cert-manager",
        "--ignore-not-found",
    ]);
    kubectl_apply(&deploy_docs("rbac.yaml", |d| {
        d.contains("\nkind: ClusterRole\n")
    }));
    let sa = format!("system:serviceaccount:{ns}:probity");
    kubectl_apply(&format!(
        "apiVersion: v1
kind: ServiceAccount
metadata: {{name: probity, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {ns}-probity}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: probity}}
subjects: [{{kind: ServiceAccount, name: probity, namespace: {ns}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: {ns}-probity-resources}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: probity-resources}}
subjects: [{{kind: ServiceAccount, name: probity, namespace: {ns}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: probity-leader-election, namespace: {ns}}}
rules: [{{apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, create, update]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: probity-leader-election, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: probity-leader-election}}
subjects: [{{kind: ServiceAccount, name: probity, namespace: {ns}}}]
"
    ));
    // The test's admin credentials, acting as that service account.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let admin = std::fs::read_to_string(crate::testkube::kubeconfig().unwrap()).unwrap();
    let acting = admin.replacen(
        "user: {token: ",
        &format!("user: {{as: \"{sa}\", token: "),
        1,
    );
    assert_ne!(acting, admin, "the admin user's line changed");
    std::fs::write(&kubeconfig, acting).unwrap();
    let addr = crate::testkube::pod_reachable_addr();
    let p = crate::common::Probity::spawn(
        &crate::testkube::serve_args(ns, "rbac", &addr, &addr),
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    crate::backend::leader_is(&p, "rbac").await;

    create(
        c,
        &check(
            ns,
            "cert",
            &every_second("    resource: {apiVersion: cert-manager.io/v1, kind: Certificate, name: web-tls}\n"),
        ),
    )
    .await;
    let r = run_after(c, ns, "cert", 0).await;
    assert_eq!(
        r.errors,
        [format!("forbidden: probity may not get certificates.cert-manager.io in namespace {ns}: add the rule {{apiGroups: [\"cert-manager.io\"], resources: [\"certificates\"], verbs: [\"get\", \"list\", \"watch\"]}} to a ClusterRole labelled probity.dev/aggregate-to-probity: \"true\" (see deploy/resource-probes-rbac.yaml)")]
    );
    kubectl_apply(&deploy_docs("resource-probes-rbac.yaml", |d| {
        d.contains("name: probity-reads-cert-manager")
    }));
    let st = wait(
        "the aggregated role to let the probe read certificates",
        async || {
            let st = status(c, ns, "cert").await;
            st.history
                .first()
                .filter(|h| h.outcome.is_some_and(|o| o.is_success()))
                .map(|_| st.clone())
        },
    )
    .await;
    assert!(st.ok, "{st:?}");
    crate::testkube::kubectl(&[
        "delete",
        "clusterrole",
        "probity-reads-cert-manager",
        "--ignore-not-found",
    ]);
}

/// `probity serve` on local files, with `--kubeconfig`, runs the same resource probes against
/// the cluster.
#[tokio::test]
async fn local_mode_reads_resources_through_a_kubeconfig() {
    let Some(s) = crate::backend::setup("probity-local-res").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    let certs = web_tls(c, ns, json!({"conditions": [{"type": "Ready", "status": "False", "reason": "Expired", "message": "Certificate expired"}]})).await;
    let (_tmp, checks, state) = crate::common::dirs();
    crate::common::write(
        &checks,
        "cert.yaml",
        &format!("apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: cert, namespace: local}}\nspec:\n  runInterval: 1s\n  failureThreshold: 1\n  probe:\n    resource: {{apiVersion: cert-manager.io/v1, kind: Certificate, name: web-tls, namespace: {ns}}}\n"),
    );
    let kubeconfig = crate::testkube::kubeconfig().unwrap();
    let p = crate::common::Probity::start(&checks, &state, &["--kubeconfig", &kubeconfig]);
    let want = format!("Certificate {ns}/web-tls: Ready is False (Expired): Certificate expired");
    p.wait_for("the certificate's failure, read from the cluster", |d| {
        d["CheckDetails"]["local/cert"]["Errors"][0] == want.as_str()
    })
    .await;
    set_status(
        &certs,
        "web-tls",
        json!({"conditions": [{"type": "Ready", "status": "True"}]}),
    )
    .await;
    p.wait_for("the certificate ready", |d| {
        d["CheckDetails"]["local/cert"]["OK"] == true
    })
    .await;
}
