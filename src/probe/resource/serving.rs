//! The Knative probe's run: what it reads (the Service, its latest ready revision, that
//! revision's PodAutoscaler, and config-autoscaler in knative-serving) and when it sends the one
//! request a cold start or warm measurement asks for. The judgement itself is `knative.rs`.

use std::sync::LazyLock;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::Value;
use tokio::time::Instant;

use super::kstatus::Judgement;
use super::{
    knative, latency, lock, object_json, plural_group, refused, uid, Cluster, AUTOSCALER_TTL,
};
use crate::api::resource_probe::{Autoscaler, KnativeProbe, ResourceProbe};
use crate::api::{CheckKey, RunResult};

impl Cluster {
    /// A resource probe of a Knative Revision: its conditions, and idle when its PodAutoscaler
    /// says it is at zero. Two GETs.
    pub(super) async fn probe_revision(
        &self,
        key: &CheckKey,
        spec: &ResourceProbe,
        name: &str,
    ) -> RunResult {
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => return RunResult::failure(e),
        };
        let ns = spec.namespace.as_deref().unwrap_or(key.namespace());
        let (rev, pa) = match revision_with_autoscaler(&client, ns, name).await {
            Err(e) => return RunResult::failure(e),
            Ok((None, _)) => {
                return RunResult::failure(format!("Revision {name} not found in namespace {ns}"))
            }
            Ok((Some(rev), pa)) => (rev, pa),
        };
        let verdict = knative::judge_revision(&rev, pa.as_ref());
        let mut result = self.settle(
            key,
            vec![(uid(&rev), verdict.judgement.clone())],
            spec.grace(),
        );
        if result.passed_ok()
            && verdict.judgement == Judgement::Ready
            && verdict.scale == knative::Scale::AtZero
        {
            result.standing = Some(crate::api::Standing::Idle);
        }
        result
    }

    /// A Knative probe's run; `budget` is how long a measured request may take.
    pub async fn probe_knative(
        &self,
        key: &CheckKey,
        spec: &KnativeProbe,
        budget: Duration,
    ) -> RunResult {
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => return RunResult::failure(e),
        };
        let ns = spec.namespace.as_deref().unwrap_or(key.namespace());
        let ksvc = match knative_get(&client, ns, &KINDS.service, &spec.service).await {
            Err(e) => return RunResult::failure(e),
            Ok(None) => {
                return RunResult::failure(format!(
                    "Service {ns}/{} not found (serving.knative.dev/v1)",
                    spec.service
                ))
            }
            Ok(Some(o)) => o,
        };
        let revision_name = ksvc["status"]["latestReadyRevisionName"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(String::from);
        let (revision, autoscaler) = match &revision_name {
            None => (None, None),
            Some(r) => match revision_with_autoscaler(&client, ns, r).await {
                Err(e) => return RunResult::failure(e),
                Ok(found) => found,
            },
        };
        let verdict = knative::judge(&ksvc, revision.as_ref(), autoscaler.as_ref());
        let mut result = self.settle(
            key,
            vec![(uid(&ksvc), verdict.judgement.clone())],
            spec.grace(),
        );
        if !result.passed_ok() {
            return result;
        }
        if verdict.judgement == Judgement::Ready && verdict.scale == knative::Scale::AtZero {
            result.standing = Some(crate::api::Standing::Idle);
        }
        if let (Some((cold, asked)), Some(rev), Some(rname)) =
            (spec.latency(), &revision, &revision_name)
        {
            let settings = match self
                .autoscaler(&client)
                .await
                .for_revision(&annotations(rev))
            {
                Ok(s) => s,
                Err(e) => return RunResult::failure(format!("Revision {ns}/{rname}: {e}")),
            };
            let field = if cold { "coldStart" } else { "warmLatency" };
            if let Some(why) = settings.refuses(asked.every()) {
                return RunResult::failure(format!("spec.probe.knative.{field}.every: {why}"));
            }
            let due = lock(&self.measured)
                .get(key)
                .is_none_or(|last| last.elapsed() >= asked.every());
            if !due {
                return result;
            }
            let url = match asked.url.as_deref().or(knative::url(&ksvc)) {
                Some(u) => format!(
                    "{}{}",
                    u.trim_end_matches('/'),
                    asked.path.as_deref().unwrap_or("/")
                ),
                None => {
                    return result.with_warning(format!(
                        "{field} not measured: Service {ns}/{} has no status.url",
                        spec.service
                    ))
                }
            };
            let pinned = knative::pinned(rev, settings.enable_scale_to_zero);
            let ready = match (cold, verdict.scale, pinned) {
                (true, _, Some(why)) => Err(format!(
                    "cold start not measured: revision {rname} never scales to zero ({why})"
                )),
                (true, knative::Scale::AtZero, None) => Ok(()),
                (true, _, None) => Err(format!(
                    "cold start not measured: revision {rname} is not at zero"
                )),
                (false, knative::Scale::Active, _) => Ok(()),
                (false, _, _) => Err(format!(
                    "warm latency not measured: revision {rname} is not Active"
                )),
            };
            if let Err(why) = ready {
                return result.with_warning(why);
            }
            lock(&self.measured).insert(key.clone(), Instant::now());
            let revisions: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), ns, &KINDS.revision);
            let measured = latency::measure(&self.http, &url, cold, revisions, rname, budget).await;
            if !measured.passed_ok() {
                return measured;
            }
            result.standing = None;
            result.timings = measured.timings;
            result.warnings.extend(measured.warnings);
        } else if spec.latency().is_some() {
            return result.with_warning(format!(
                "not measured: Service {ns}/{} has no ready revision",
                spec.service
            ));
        }
        result
    }

    /// config-autoscaler in knative-serving, read at most every five minutes; Knative's
    /// defaults when it cannot be read (and why, in the source named in messages).
    async fn autoscaler(&self, client: &kube::Client) -> Autoscaler {
        if let Some((a, at)) = lock(&self.autoscaler).as_ref() {
            if at.elapsed() < AUTOSCALER_TTL {
                return a.clone();
            }
        }
        let a = read_autoscaler(client).await;
        *lock(&self.autoscaler) = Some((a.clone(), Instant::now()));
        a
    }
}

/// One Knative object, or None when there is none by that name; a refusal names the RBAC rule.
async fn knative_get(
    client: &kube::Client,
    ns: &str,
    ar: &ApiResource,
    name: &str,
) -> Result<Option<Value>, String> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    match api.get_opt(name).await {
        Ok(o) => Ok(o.map(|o| object_json(o, ar))),
        Err(e) => Err(
            refused(&e, "get", ar, ns, true).unwrap_or_else(|| match &e {
                kube::Error::Api(ae) if ae.code == 404 => format!(
                    "the API server does not serve {} (is Knative Serving installed?)",
                    plural_group(ar)
                ),
                _ => format!("get {} {ns}/{name}: {e}", plural_group(ar)),
            }),
        ),
    }
}

/// Revision `name` and its PodAutoscaler (same name), read at once.
async fn revision_with_autoscaler(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<(Option<Value>, Option<Value>), String> {
    let (rev, pa) = tokio::join!(
        knative_get(client, ns, &KINDS.revision, name),
        knative_get(client, ns, &KINDS.autoscaler, name)
    );
    Ok((rev?, pa?))
}

/// Built once: the kinds are fixed.
static KINDS: LazyLock<KnativeKinds> = LazyLock::new(KnativeKinds::new);

/// The Knative kinds a Knative probe reads (fixed: no discovery needed).
struct KnativeKinds {
    service: ApiResource,
    revision: ApiResource,
    autoscaler: ApiResource,
}

impl KnativeKinds {
    fn new() -> Self {
        let ar = |g: &str, v: &str, k: &str, plural: &str| {
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), plural)
        };
        KnativeKinds {
            service: ar("serving.knative.dev", "v1", "Service", "services"),
            revision: ar("serving.knative.dev", "v1", "Revision", "revisions"),
            autoscaler: ar(
                "autoscaling.internal.knative.dev",
                "v1alpha1",
                "PodAutoscaler",
                "podautoscalers",
            ),
        }
    }
}

/// Reads Knative's autoscaler settings from the cluster: config-autoscaler in knative-serving.
pub async fn read_autoscaler(client: &kube::Client) -> Autoscaler {
    use k8s_openapi::api::core::v1::ConfigMap;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "knative-serving");
    let source = "config-autoscaler in knative-serving";
    match api.get_opt("config-autoscaler").await {
        Ok(Some(cm)) => Autoscaler::from_config_map(&cm.data.unwrap_or_default(), source)
            .unwrap_or_else(|e| Autoscaler {
                source: format!("Knative's defaults ({e})"),
                ..Autoscaler::default()
            }),
        Ok(None) => Autoscaler::default(),
        Err(e) => Autoscaler {
            source: format!(
                "Knative's defaults ({source} could not be read: {})",
                short(&e)
            ),
            ..Autoscaler::default()
        },
    }
}

fn short(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(ae) => ae.reason.clone(),
        other => other.to_string(),
    }
}

fn annotations(obj: &Value) -> std::collections::BTreeMap<String, String> {
    obj["metadata"]["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}
