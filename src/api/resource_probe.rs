//! The probes that read the API server instead of calling a service: any resource's status
//! conditions (`resource`) and a Knative Service with its revision (`knative`), with their
//! validation. Knative's autoscaler settings decide how often a cold start may be measured.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::{self, human};
use super::validate::Problem;

/// A resource of any kind, judged by its status as kstatus does.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceProbe {
    /// `group/version` (`cert-manager.io/v1`), or `v1` for the core group.
    pub api_version: String,
    pub kind: String,
    /// One object by name; or give labelSelector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Every object these labels select (at least one must exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// Default: the check's namespace. Ignored for cluster-scoped kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Conditions that must have these statuses, besides Ready or Available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<RequiredCondition>>,
    /// A CEL expression over `object` that must be true (e.g.
    /// `object.status.health.status == "Healthy"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// How long an object may be in progress (a generation not yet observed, Ready Unknown,
    /// Reconciling) before that fails the run. Default 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct RequiredCondition {
    #[serde(rename = "type")]
    pub type_: String,
    /// Default "True".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

impl RequiredCondition {
    pub fn status(&self) -> &str {
        self.status.as_deref().unwrap_or("True")
    }
}

/// A Knative Service: its conditions, its latest ready revision's, and whether that revision is
/// at zero (healthy and idle). Sends no traffic unless `coldStart` or `warmLatency` asks.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KnativeProbe {
    /// The Service's name (`serving.knative.dev/v1`).
    pub service: String,
    /// Default: the check's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Measure a cold start: when the revision is at zero, one request, timed to its first
    /// byte and until the revision is Active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start: Option<LatencyProbe>,
    /// Measure a warm request: only when the revision is already Active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_latency: Option<LatencyProbe>,
    /// How long the Service may be in progress (not yet reconciled, a revision waking) before
    /// that fails the run. Default 10m30s: Knative's progress deadline and activation buffer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencyProbe {
    /// At most one request this often; it must exceed the time the autoscaler keeps pods
    /// alive after a request, or the revision would never reach zero.
    pub every: String,
    /// Path of the request. Default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Default: the Service's `status.url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

pub const RESOURCE_GRACE: Duration = Duration::from_secs(600);
/// Knative's default progress deadline (600 s) plus its activation buffer (30 s).
pub const KNATIVE_GRACE: Duration = Duration::from_secs(630);
/// A probe that reads the API server: one request, or discovery first.
pub const RESOURCE_TIMEOUT: Duration = Duration::from_secs(10);
/// A cold start may take as long as a pod takes to pull and start.
pub const LATENCY_TIMEOUT: Duration = Duration::from_secs(120);

/// Knative's scale-to-zero settings, and where they were read: they bound how often a check
/// may send traffic without keeping a revision awake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Autoscaler {
    pub enable_scale_to_zero: bool,
    pub stable_window: Duration,
    pub scale_to_zero_grace_period: Duration,
    pub scale_to_zero_pod_retention_period: Duration,
    pub scale_down_delay: Duration,
    /// "Knative's defaults", "config-autoscaler in knative-serving", ...
    pub source: String,
}

impl Default for Autoscaler {
    /// Knative's defaults (config-autoscaler as shipped).
    fn default() -> Self {
        Autoscaler {
            enable_scale_to_zero: true,
            stable_window: Duration::from_secs(60),
            scale_to_zero_grace_period: Duration::from_secs(30),
            scale_to_zero_pod_retention_period: Duration::ZERO,
            scale_down_delay: Duration::ZERO,
            source: "Knative's defaults".into(),
        }
    }
}

/// Keys of config-autoscaler, and the revision annotations that override them.
const ANNOTATION: &str = "autoscaling.knative.dev/";

impl Autoscaler {
    /// Settings from config-autoscaler's data; keys it leaves out keep Knative's defaults.
    /// A value Knative would refuse is named.
    pub fn from_config_map(data: &BTreeMap<String, String>, source: &str) -> Result<Self, String> {
        let mut a = Autoscaler {
            source: source.to_string(),
            ..Autoscaler::default()
        };
        for (key, v) in data {
            let dur = || knative_duration(v).map_err(|e| format!("{source}: {key}: {e}"));
            match key.as_str() {
                "enable-scale-to-zero" => a.enable_scale_to_zero = v.trim() != "false",
                "stable-window" => a.stable_window = dur()?,
                "scale-to-zero-grace-period" => a.scale_to_zero_grace_period = dur()?,
                "scale-to-zero-pod-retention-period" => {
                    a.scale_to_zero_pod_retention_period = dur()?
                }
                "scale-down-delay" => a.scale_down_delay = dur()?,
                _ => {}
            }
        }
        Ok(a)
    }

    /// These settings as a revision's annotations change them (`autoscaling.knative.dev/window`
    /// and the others Knative reads per revision).
    pub fn for_revision(&self, annotations: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut a = self.clone();
        let mut named = Vec::new();
        for (field, key) in [
            (&mut a.stable_window, "window"),
            (
                &mut a.scale_to_zero_pod_retention_period,
                "scale-to-zero-pod-retention-period",
            ),
            (&mut a.scale_down_delay, "scale-down-delay"),
        ] {
            if let Some(v) = annotations.get(&format!("{ANNOTATION}{key}")) {
                *field = knative_duration(v).map_err(|e| format!("{ANNOTATION}{key}: {e}"))?;
                named.push(key);
            }
        }
        if !named.is_empty() {
            a.source = format!(
                "{} with the revision's {}",
                self.source,
                named
                    .iter()
                    .map(|k| format!("{ANNOTATION}{k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(a)
    }

    /// How long pods stay after the last request: a request more often than this keeps a
    /// revision from ever reaching zero.
    pub fn keeps_alive_for(&self) -> Duration {
        self.stable_window
            + self.scale_down_delay
            + self
                .scale_to_zero_grace_period
                .max(self.scale_to_zero_pod_retention_period)
    }

    /// Why a request every `every` would keep revisions awake, if it would.
    pub fn refuses(&self, every: Duration) -> Option<String> {
        let alive = self.keeps_alive_for();
        (every <= alive).then(|| {
            format!(
                "{} keeps the revision awake: it must exceed {} (stable-window {} + scale-down-delay {} + the longer of scale-to-zero-grace-period {} and scale-to-zero-pod-retention-period {}, from {})",
                human(every),
                human(alive),
                human(self.stable_window),
                human(self.scale_down_delay),
                human(self.scale_to_zero_grace_period),
                human(self.scale_to_zero_pod_retention_period),
                self.source
            )
        })
    }
}

/// Knative writes durations as Go does (`60s`, `1m30s`); a bare number is seconds.
fn knative_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    duration::parse(v).map_err(|e| format!("{v:?}: {e}"))
}

fn problem(field: String, message: String) -> Problem {
    Problem { field, message }
}

/// Compiles a CEL expression, as the probe will: the error, in one line.
pub fn compile_expression(expr: &str) -> Result<cel::Program, String> {
    cel::Program::compile(expr).map_err(|e| {
        let text = e.to_string();
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    })
}

fn grace_problem(field: &str, grace: &Option<String>, out: &mut Vec<Problem>) {
    if let Some(g) = grace {
        if let Err(e) = duration::parse(g) {
            out.push(problem(
                format!("{field}.gracePeriod"),
                format!("{g:?}: {e}"),
            ));
        }
    }
}

fn namespace_problem(field: &str, ns: &Option<String>, out: &mut Vec<Problem>) {
    if let Some(ns) = ns {
        if !super::validate::is_dns_label(ns) {
            out.push(problem(
                format!("{field}.namespace"),
                format!("{ns:?} is not a namespace name"),
            ));
        }
    }
}

impl ResourceProbe {
    pub fn problems(&self) -> Vec<Problem> {
        let f = "spec.probe.resource";
        let mut out = Vec::new();
        let av = self.api_version.trim();
        if av.is_empty() || av.split('/').count() > 2 || av.split('/').any(str::is_empty) {
            out.push(problem(
                format!("{f}.apiVersion"),
                format!("{av:?} must be group/version (cert-manager.io/v1) or v1"),
            ));
        }
        if self.kind.is_empty() || !self.kind.chars().all(|c| c.is_ascii_alphanumeric()) {
            out.push(problem(
                format!("{f}.kind"),
                format!("{:?} is not a kind (Certificate, Kustomization)", self.kind),
            ));
        }
        match (&self.name, &self.label_selector) {
            (Some(_), Some(_)) => out.push(problem(
                f.into(),
                "set either name or labelSelector, not both".into(),
            )),
            (None, None) => out.push(problem(
                f.into(),
                "one of name or labelSelector is required".into(),
            )),
            (Some(n), None) if n.is_empty() => {
                out.push(problem(format!("{f}.name"), "must not be empty".into()))
            }
            (None, Some(sel)) => {
                if let Err(e) = selector_text(sel) {
                    out.push(problem(format!("{f}.labelSelector"), e));
                }
            }
            _ => {}
        }
        namespace_problem(f, &self.namespace, &mut out);
        for (i, c) in self.conditions.iter().flatten().enumerate() {
            if c.type_.is_empty() {
                out.push(problem(
                    format!("{f}.conditions[{i}].type"),
                    "is required".into(),
                ));
            }
            if !matches!(c.status(), "True" | "False" | "Unknown") {
                out.push(problem(
                    format!("{f}.conditions[{i}].status"),
                    format!("{:?} must be True, False or Unknown", c.status()),
                ));
            }
        }
        if let Some(e) = &self.expression {
            if let Err(why) = compile_expression(e) {
                out.push(problem(format!("{f}.expression"), why));
            }
        }
        grace_problem(f, &self.grace_period, &mut out);
        out
    }

    pub fn grace(&self) -> Duration {
        grace(&self.grace_period, RESOURCE_GRACE)
    }

    /// The group of `apiVersion` (empty for the core group) and its version.
    pub fn group_version(&self) -> (&str, &str) {
        match self.api_version.trim().split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", self.api_version.trim()),
        }
    }

    /// A resource probe of one Knative Revision (no conditions or expression of its own) is
    /// judged with its PodAutoscaler, as the Knative probe judges a Service's revision.
    pub fn knative_revision(&self) -> Option<&str> {
        let (group, _) = self.group_version();
        (group == "serving.knative.dev"
            && self.kind == "Revision"
            && self.conditions.is_none()
            && self.expression.is_none())
        .then_some(self.name.as_deref())
        .flatten()
    }

    /// A resource probe of a Knative Service is a Knative probe.
    pub fn as_knative(&self) -> Option<KnativeProbe> {
        let (group, _) = self.group_version();
        (group == "serving.knative.dev" && self.kind == "Service" && self.conditions.is_none())
            .then(|| self.name.clone())
            .flatten()
            .filter(|_| self.expression.is_none())
            .map(|service| KnativeProbe {
                service,
                namespace: self.namespace.clone(),
                grace_period: self.grace_period.clone(),
                ..KnativeProbe::default()
            })
    }
}

fn grace(g: &Option<String>, default: Duration) -> Duration {
    g.as_deref()
        .and_then(|g| duration::parse(g).ok())
        .unwrap_or(default)
}

impl KnativeProbe {
    pub fn problems(&self, autoscaler: &Autoscaler) -> Vec<Problem> {
        let f = "spec.probe.knative";
        let mut out = Vec::new();
        if !super::validate::is_dns_label(&self.service) {
            out.push(problem(
                format!("{f}.service"),
                format!("{:?} is not a Service name", self.service),
            ));
        }
        namespace_problem(f, &self.namespace, &mut out);
        grace_problem(f, &self.grace_period, &mut out);
        if self.cold_start.is_some() && self.warm_latency.is_some() {
            out.push(problem(
                f.into(),
                "set either coldStart or warmLatency, not both".into(),
            ));
        }
        for (name, l) in [
            ("coldStart", &self.cold_start),
            ("warmLatency", &self.warm_latency),
        ] {
            let Some(l) = l else { continue };
            match duration::parse(&l.every) {
                Err(e) => out.push(problem(
                    format!("{f}.{name}.every"),
                    format!("{:?}: {e}", l.every),
                )),
                Ok(every) => {
                    if let Some(why) = autoscaler.refuses(every) {
                        out.push(problem(format!("{f}.{name}.every"), why));
                    }
                }
            }
            if let Some(p) = &l.path {
                if !p.starts_with('/') {
                    out.push(problem(
                        format!("{f}.{name}.path"),
                        format!("{p:?} must start with /"),
                    ));
                }
            }
            if let Some(u) = &l.url {
                if !url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
                    out.push(problem(
                        format!("{f}.{name}.url"),
                        format!("{u:?} must be an http:// or https:// URL"),
                    ));
                }
            }
        }
        out
    }

    pub fn grace(&self) -> Duration {
        grace(&self.grace_period, KNATIVE_GRACE)
    }

    /// The measurement asked for, if any: cold (true) or warm, and its settings.
    pub fn latency(&self) -> Option<(bool, &LatencyProbe)> {
        match (&self.cold_start, &self.warm_latency) {
            (Some(c), _) => Some((true, c)),
            (None, Some(w)) => Some((false, w)),
            (None, None) => None,
        }
    }
}

impl LatencyProbe {
    pub fn every(&self) -> Duration {
        duration::parse(&self.every).unwrap_or(Duration::MAX)
    }
}

/// A LabelSelector as the API's `labelSelector` query says it.
pub fn selector_text(sel: &LabelSelector) -> Result<String, String> {
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
        let values = e.values.clone().unwrap_or_default();
        let needs_values = matches!(e.operator.as_str(), "In" | "NotIn");
        if needs_values == values.is_empty() {
            return Err(format!(
                "matchExpressions[{i}]: {} {}",
                e.operator,
                if needs_values {
                    "needs values"
                } else {
                    "takes no values"
                }
            ));
        }
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({})", e.key, values.join(",")),
            "NotIn" => format!("{} notin ({})", e.key, values.join(",")),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => {
                return Err(format!(
                    "matchExpressions[{i}].operator: {other:?} must be In, NotIn, Exists or DoesNotExist"
                ))
            }
        });
    }
    if parts.is_empty() {
        return Err("selects nothing: give matchLabels or matchExpressions".into());
    }
    Ok(parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(yaml: &str) -> ResourceProbe {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn said(p: Vec<Problem>) -> String {
        p.iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn a_resource_probe_names_what_is_wrong() {
        let ok = resource("{apiVersion: cert-manager.io/v1, kind: Certificate, name: web}");
        assert_eq!(said(ok.problems()), "");
        assert_eq!(ok.group_version(), ("cert-manager.io", "v1"));
        assert_eq!(
            resource("{apiVersion: v1, kind: Pod, name: p}").group_version(),
            ("", "v1")
        );
        assert_eq!(
            said(resource("{apiVersion: a/b/c, kind: 'Cert ificate'}").problems()),
            "spec.probe.resource.apiVersion: \"a/b/c\" must be group/version (cert-manager.io/v1) or v1; spec.probe.resource.kind: \"Cert ificate\" is not a kind (Certificate, Kustomization); spec.probe.resource: one of name or labelSelector is required"
        );
        let bad = resource(
            "{apiVersion: v1, kind: Pod, labelSelector: {matchExpressions: [{key: a, operator: Has}]}, conditions: [{type: Ready, status: yes}], expression: 'object.status ==', gracePeriod: soon}",
        );
        let text = said(bad.problems());
        assert!(
            text.contains(
                "spec.probe.resource.labelSelector: matchExpressions[0]: Has takes no values"
            ) || text.contains("operator: \"Has\""),
            "{text}"
        );
        assert!(
            text.contains(
                "spec.probe.resource.conditions[0].status: \"yes\" must be True, False or Unknown"
            ),
            "{text}"
        );
        assert!(text.contains("spec.probe.resource.expression: "), "{text}");
        assert!(
            text.contains("spec.probe.resource.gracePeriod: \"soon\""),
            "{text}"
        );
    }

    #[test]
    fn selectors_read_as_the_api_server_takes_them() {
        let sel: LabelSelector = serde_saphyr::from_str(
            "{matchLabels: {app: web}, matchExpressions: [{key: tier, operator: In, values: [a, b]}, {key: old, operator: DoesNotExist}]}",
        )
        .unwrap();
        assert_eq!(selector_text(&sel).unwrap(), "app=web,tier in (a,b),!old");
        let none = LabelSelector::default();
        assert!(selector_text(&none)
            .unwrap_err()
            .contains("selects nothing"));
    }

    #[test]
    fn a_knative_service_read_by_the_resource_probe_is_a_knative_probe() {
        let r = resource("{apiVersion: serving.knative.dev/v1, kind: Service, name: hello}");
        assert_eq!(r.as_knative().unwrap().service, "hello");
        let with_expr = resource(
            "{apiVersion: serving.knative.dev/v1, kind: Service, name: hello, expression: 'true'}",
        );
        assert!(
            with_expr.as_knative().is_none(),
            "an expression asks for the generic rules"
        );
        assert!(
            resource("{apiVersion: serving.knative.dev/v1, kind: Revision, name: r}")
                .as_knative()
                .is_none()
        );
        let rev = resource("{apiVersion: serving.knative.dev/v1, kind: Revision, name: r}");
        assert_eq!(rev.knative_revision(), Some("r"));
        assert_eq!(r.knative_revision(), None);
    }

    #[test]
    fn cold_starts_too_often_would_keep_the_revision_awake() {
        let k: KnativeProbe =
            serde_saphyr::from_str("{service: hello, coldStart: {every: 1m}}").unwrap();
        let text = said(k.problems(&Autoscaler::default()));
        assert_eq!(
            text,
            "spec.probe.knative.coldStart.every: 1m keeps the revision awake: it must exceed 1m30s (stable-window 1m + scale-down-delay 0s + the longer of scale-to-zero-grace-period 30s and scale-to-zero-pod-retention-period 0s, from Knative's defaults)"
        );
        let ok: KnativeProbe =
            serde_saphyr::from_str("{service: hello, coldStart: {every: 30m, path: /healthz}}")
                .unwrap();
        assert_eq!(said(ok.problems(&Autoscaler::default())), "");
        // The cluster's settings, when read, are what counts, and are named.
        let data = [
            ("stable-window".to_string(), "10m".to_string()),
            ("scale-down-delay".to_string(), "5m".to_string()),
        ]
        .into();
        let cluster =
            Autoscaler::from_config_map(&data, "config-autoscaler in knative-serving").unwrap();
        let ten: KnativeProbe =
            serde_saphyr::from_str("{service: hello, coldStart: {every: 10m}}").unwrap();
        assert_eq!(said(ten.problems(&Autoscaler::default())), "");
        let text = said(ten.problems(&cluster));
        assert!(text.contains("it must exceed 15m30s"), "{text}");
        assert!(
            text.ends_with("from config-autoscaler in knative-serving)"),
            "{text}"
        );
        // A revision's own window wins, and says so.
        let rev = cluster
            .for_revision(
                &[(
                    "autoscaling.knative.dev/window".to_string(),
                    "20m".to_string(),
                )]
                .into(),
            )
            .unwrap();
        assert_eq!(rev.keeps_alive_for(), Duration::from_secs(25 * 60 + 30));
        assert!(rev.source.contains("autoscaling.knative.dev/window"));
        let bad = [("stable-window".to_string(), "soon".to_string())].into();
        assert!(Autoscaler::from_config_map(&bad, "cm")
            .unwrap_err()
            .starts_with("cm: stable-window: \"soon\""));
        assert_eq!(knative_duration("90").unwrap(), Duration::from_secs(90));
    }
}
