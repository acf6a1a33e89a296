//! Probes that read the API server: any resource's status (`resource`, kstatus rules, required
//! conditions, a CEL expression) and a Knative Service (`knative`: idle is healthy; a cold start
//! measured only when asked, and only from zero).
//!
//! Cost: a resource probe makes one request per run (a GET by name, or a LIST by selector);
//! the kind's discovery is done once and kept. A Knative probe reads the Service, its latest
//! ready revision and that revision's PodAutoscaler: three GETs.

pub mod knative;
pub mod kstatus;
mod latency;
mod serving;

pub use serving::read_autoscaler;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::discovery::{ApiCapabilities, Scope};
use serde_json::Value;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::api::resource_probe::{selector_text, Autoscaler, ResourceProbe};
use crate::api::{CheckKey, RunResult};
use kstatus::Judgement;

/// Where the client comes from: the backend's, or (local mode) a kubeconfig read when the
/// first resource probe runs, so checks without one never need a cluster.
enum Source {
    Client(kube::Client),
    Kubeconfig(Option<std::path::PathBuf>),
}

/// What the resource probes of one probity share: the client, the kinds discovered, and what
/// each check's objects have been doing (how long in progress, when last measured).
pub struct Cluster {
    source: Source,
    /// Kept once connected; a kubeconfig that cannot be used is tried again at the next run.
    client: OnceCell<kube::Client>,
    kinds: Mutex<HashMap<(String, String), (ApiResource, ApiCapabilities)>>,
    /// Since when each (check, object) has been in progress.
    progress: Mutex<HashMap<(CheckKey, String), Instant>>,
    /// When each check last sent a request to its Service.
    measured: Mutex<HashMap<CheckKey, Instant>>,
    autoscaler: Mutex<Option<(Autoscaler, Instant)>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

/// How long the autoscaler settings read from the cluster are trusted before reading again.
const AUTOSCALER_TTL: Duration = Duration::from_secs(300);

/// Where the RBAC for extra kinds is shown.
const RBAC_HINT: &str = "see deploy/resource-probes-rbac.yaml";

impl Cluster {
    fn with(source: Source) -> Arc<Self> {
        let http = reqwest::Client::builder()
            // A cold start is a fresh connection, as a new client's would be.
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a TLS backend is compiled in");
        Arc::new(Cluster {
            source,
            client: OnceCell::new(),
            kinds: Mutex::default(),
            progress: Mutex::default(),
            measured: Mutex::default(),
            autoscaler: Mutex::default(),
            http,
        })
    }

    /// In a cluster: the backend's client.
    pub fn of(client: kube::Client) -> Arc<Self> {
        Self::with(Source::Client(client))
    }

    /// Locally: the kubeconfig at `path` (or KUBECONFIG, or ~/.kube/config), read when first
    /// needed.
    pub fn from_kubeconfig(path: Option<std::path::PathBuf>) -> Arc<Self> {
        Self::with(Source::Kubeconfig(path))
    }

    async fn client(&self) -> Result<kube::Client, String> {
        self.client
            .get_or_try_init(|| async {
                match &self.source {
                    Source::Client(c) => Ok(c.clone()),
                    Source::Kubeconfig(path) => connect(path.as_deref()).await,
                }
            })
            .await
            .cloned()
    }

    /// The kind's resource, from discovery once, then kept.
    async fn resource(
        &self,
        client: &kube::Client,
        group: &str,
        version: &str,
        kind: &str,
    ) -> Result<(ApiResource, ApiCapabilities), String> {
        let key = (format!("{group}/{version}"), kind.to_string());
        if let Some(found) = lock(&self.kinds).get(&key) {
            return Ok(found.clone());
        }
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let api_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        let found = kube::discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|e| match e {
                kube::Error::Api(ae) if ae.code == 404 => format!(
                    "the API server does not serve {api_version} (is the CRD for {kind} installed?)"
                ),
                kube::Error::Discovery(_) => format!(
                    "the API server has no kind {kind} in {api_version} (is its CRD installed?)"
                ),
                other => format!("discovering {kind} in {api_version}: {other}"),
            })?;
        lock(&self.kinds).insert(key, found.clone());
        Ok(found)
    }

    fn forget_kind(&self, api_version: &str, kind: &str) {
        lock(&self.kinds).remove(&(api_version.to_string(), kind.to_string()));
    }

    /// A resource probe's run.
    pub async fn probe_resource(&self, key: &CheckKey, spec: &ResourceProbe) -> RunResult {
        if let Some(k) = spec.as_knative() {
            return self.probe_knative(key, &k, Duration::ZERO).await;
        }
        if let Some(rev) = spec.knative_revision() {
            return self.probe_revision(key, spec, rev).await;
        }
        match self.read_resources(key, spec).await {
            Err(e) => RunResult::failure(e),
            Ok(objects) => {
                let program = spec
                    .expression
                    .as_deref()
                    .map(crate::api::resource_probe::compile_expression);
                let mut judged = Vec::with_capacity(objects.len());
                for obj in &objects {
                    let verdict = match &program {
                        None => None,
                        Some(Ok(p)) => Some(kstatus::evaluate(p, obj)),
                        Some(Err(e)) => Some(Err(e.clone())),
                    };
                    let required = spec.conditions.as_deref().unwrap_or_default();
                    judged.push((uid(obj), kstatus::judge(obj, required, verdict)));
                }
                self.settle(key, judged, spec.grace())
            }
        }
    }

    /// The objects the probe names: one GET, or one LIST by selector.
    async fn read_resources(
        &self,
        key: &CheckKey,
        spec: &ResourceProbe,
    ) -> Result<Vec<Value>, String> {
        let client = self.client().await?;
        let (group, version) = spec.group_version();
        let (ar, caps) = self.resource(&client, group, version, &spec.kind).await?;
        let ns = spec.namespace.as_deref().unwrap_or(key.namespace());
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(client, ns, &ar),
            Scope::Cluster => Api::all_with(client, &ar),
        };
        let where_ = match caps.scope {
            Scope::Namespaced => format!(" in namespace {ns}"),
            Scope::Cluster => String::new(),
        };
        let denied = |verb: &str, e: kube::Error| {
            refused(&e, verb, &ar, ns, caps.scope == Scope::Namespaced)
                .unwrap_or_else(|| format!("{verb} {}{where_}: {e}", plural_group(&ar)))
        };
        let objects = match (&spec.name, &spec.label_selector) {
            (Some(name), _) => match api.get(name).await {
                Ok(o) => vec![o],
                Err(kube::Error::Api(ae)) if ae.code == 404 => {
                    if ae.details.as_ref().is_none_or(|d| d.name.is_empty()) {
                        // The kind went away (its CRD was removed): discover it again next run.
                        self.forget_kind(&spec.api_version, &spec.kind);
                    }
                    return Err(format!("{} {name} not found{where_}", spec.kind));
                }
                Err(e) => return Err(denied("get", e)),
            },
            (None, Some(sel)) => {
                let selector = selector_text(sel)?;
                let list = api
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(|e| denied("list", e))?;
                if list.items.is_empty() {
                    return Err(format!(
                        "no {} matches labelSelector {selector}{where_}",
                        spec.kind
                    ));
                }
                list.items
            }
            (None, None) => return Err("the probe names no object".into()),
        };
        Ok(objects.into_iter().map(|o| object_json(o, &ar)).collect())
    }

    /// Turns each object's judgement into the run's result: in progress passes (with a
    /// warning) until it has lasted the grace period.
    fn settle(
        &self,
        key: &CheckKey,
        judged: Vec<(String, Judgement)>,
        grace: Duration,
    ) -> RunResult {
        let now = Instant::now();
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut progress = lock(&self.progress);
        for (uid, j) in judged {
            let slot = (key.clone(), uid);
            match j {
                Judgement::Ready => {
                    progress.remove(&slot);
                }
                Judgement::Failed(e) => {
                    progress.remove(&slot);
                    errors.extend(e);
                }
                Judgement::Progressing(why) => {
                    let since = *progress.entry(slot).or_insert(now);
                    let took = now - since;
                    if took >= grace {
                        errors.push(format!(
                            "{why}, for {} (the grace period is {})",
                            human(took),
                            human(grace)
                        ));
                    } else {
                        warnings.push(format!(
                            "{why} (for {}; fails after {})",
                            human(took),
                            human(grace)
                        ));
                    }
                }
            }
        }
        let mut result = RunResult::judged(errors);
        result.warnings = warnings;
        result
    }
}

/// An object as the judgements read it, its apiVersion and kind filled in (a LIST's items, and
/// some servers' GETs, leave them out).
fn object_json(mut o: DynamicObject, ar: &ApiResource) -> Value {
    o.types.get_or_insert_with(|| kube::api::TypeMeta {
        api_version: ar.api_version.clone(),
        kind: ar.kind.clone(),
    });
    serde_json::to_value(&o).unwrap_or(Value::Null)
}

fn uid(obj: &Value) -> String {
    obj["metadata"]["uid"]
        .as_str()
        .or(obj["metadata"]["name"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// `certificates.cert-manager.io` (`pods` for the core group), as RBAC names a resource.
fn plural_group(ar: &ApiResource) -> String {
    if ar.group.is_empty() {
        ar.plural.clone()
    } else {
        format!("{}.{}", ar.plural, ar.group)
    }
}

/// A 401 or 403, said as the RBAC rule that would allow it.
fn refused(
    e: &kube::Error,
    verb: &str,
    ar: &ApiResource,
    ns: &str,
    namespaced: bool,
) -> Option<String> {
    let kube::Error::Api(ae) = e else { return None };
    match ae.code {
        401 => Some(format!(
            "{verb} {}: unauthorized: probity's credentials were refused",
            plural_group(ar)
        )),
        403 => Some(format!(
            "forbidden: probity may not {verb} {}{}: add the rule {{apiGroups: [\"{}\"], resources: [\"{}\"], verbs: [\"get\", \"list\", \"watch\"]}} to a ClusterRole labelled probity.dev/aggregate-to-probity: \"true\" ({RBAC_HINT})",
            plural_group(ar),
            if namespaced { format!(" in namespace {ns}") } else { String::new() },
            ar.group,
            ar.plural
        )),
        _ => None,
    }
}

async fn connect(path: Option<&std::path::Path>) -> Result<kube::Client, String> {
    let config = match path {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .map_err(|e| format!("kubeconfig {}: {e}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", p.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            format!("resource probes need a cluster: no kubeconfig found (give --kubeconfig or set KUBECONFIG): {e}")
        })?,
    };
    kube::Client::try_from(config).map_err(|e| format!("connecting to the cluster: {e}"))
}

fn human(d: Duration) -> String {
    crate::api::duration::human(Duration::from_secs(d.as_secs()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
