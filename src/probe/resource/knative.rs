//! A Knative Service as its controllers describe it (facts: ../shared/reference/knative.md):
//! the Service's Ready and its dependents, the latest ready revision's conditions, and whether
//! that revision is at zero, decided from its PodAutoscaler's actual scale. Pure.

use serde_json::Value;

use super::kstatus::{condition, name_of, unobserved, Cond, Judgement};

/// Where the revision's pods are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Active False NoTraffic and the PodAutoscaler's actualScale 0: healthy and idle.
    AtZero,
    /// Active Unknown (Queued): pods requested, the activator holding requests.
    Waking,
    /// Active True.
    Active,
    /// Anything else (scaling down, no PodAutoscaler seen).
    Unsure,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub judgement: Judgement,
    pub scale: Scale,
    /// The latest ready revision's name.
    pub revision: Option<String>,
}

/// The Service's dependents of Ready ([S] service_lifecycle.go `serviceCondSet`).
const SERVICE_DEPENDENTS: [&str; 2] = ["ConfigurationsReady", "RoutesReady"];
/// The Revision's dependents of Ready; `Active` is outside Ready ([S] revision_lifecycle.go).
const REVISION_DEPENDENTS: [&str; 3] = ["Ready", "ResourcesAvailable", "ContainerHealthy"];

fn status_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj["status"][field].as_str().filter(|s| !s.is_empty())
}

/// Ready carries one failure only: say it and every dependent that is not True.
fn service_trouble(name: &str, ready: Option<Cond<'_>>, ksvc: &Value) -> Vec<String> {
    let mut out = vec![match ready {
        Some(c) => format!("{name}: {}", c.describe()),
        None => format!("{name}: has no Ready condition yet"),
    }];
    for t in SERVICE_DEPENDENTS {
        if let Some(c) = condition(ksvc, t).filter(|c| c.status != "True") {
            let line = format!("{name}: {}", c.describe());
            // Ready copies the dependent's reason and message: say it once.
            let same = ready.is_some_and(|r| r.reason == c.reason && r.message == c.message);
            if !same {
                out.push(line);
            }
        }
    }
    out
}

/// Judges the Service, its latest ready revision and that revision's PodAutoscaler (what was
/// found of them).
pub fn judge(ksvc: &Value, revision: Option<&Value>, autoscaler: Option<&Value>) -> Verdict {
    let name = name_of(ksvc);
    let latest_ready = status_str(ksvc, "latestReadyRevisionName").map(String::from);
    let mut verdict = Verdict {
        judgement: Judgement::Ready,
        scale: Scale::Unsure,
        revision: latest_ready.clone(),
    };
    if let Some(why) = unobserved(ksvc) {
        verdict.judgement = Judgement::Progressing(format!("{name}: {why}"));
        return verdict;
    }
    let mut failed = Vec::new();
    let mut progressing = Vec::new();
    let ready = condition(ksvc, "Ready");
    match ready.map(|c| c.status) {
        Some("True") => {}
        Some("False") => {
            let configs = condition(ksvc, "ConfigurationsReady");
            let routes = condition(ksvc, "RoutesReady");
            let created = status_str(ksvc, "latestCreatedRevisionName");
            let rollout_failed = configs
                .is_some_and(|c| c.status == "False" && c.reason == "RevisionFailed")
                && routes.is_some_and(|r| r.status == "True");
            match (rollout_failed, &latest_ready, created) {
                (true, Some(serving), Some(created)) if serving != created => {
                    failed.push(format!(
                        "{name}: the rollout of revision {created} failed; {serving} still serves: {}",
                        configs.expect("checked").describe()
                    ));
                }
                _ => failed.extend(service_trouble(&name, ready, ksvc)),
            }
        }
        _ => progressing.extend(service_trouble(&name, ready, ksvc)),
    }
    if let Some(rev) = revision {
        verdict.scale = revision_state(rev, autoscaler, &mut failed, &mut progressing);
    }
    verdict.judgement = settled(failed, progressing);
    verdict
}

/// Failures win, then what is still in progress; otherwise ready.
fn settled(failed: Vec<String>, progressing: Vec<String>) -> Judgement {
    if !failed.is_empty() {
        Judgement::Failed(failed)
    } else if !progressing.is_empty() {
        Judgement::Progressing(progressing.join("; "))
    } else {
        Judgement::Ready
    }
}

/// What a revision's conditions and its PodAutoscaler's scale say, added to `failed` and
/// `progressing`; where its pods are.
fn revision_state(
    rev: &Value,
    autoscaler: Option<&Value>,
    failed: &mut Vec<String>,
    progressing: &mut Vec<String>,
) -> Scale {
    let rname = name_of(rev);
    for t in REVISION_DEPENDENTS {
        if let Some(c) = condition(rev, t) {
            match c.status {
                "False" => failed.push(format!("{rname}: {}", c.describe())),
                "Unknown" if t != "Ready" => progressing.push(format!("{rname}: {}", c.describe())),
                _ => {}
            }
        }
    }
    let actual = autoscaler.and_then(|pa| pa["status"]["actualScale"].as_i64());
    match condition(rev, "Active") {
        Some(c) if c.status == "True" => Scale::Active,
        Some(c) if c.status == "False" && c.reason == "NoTraffic" && actual == Some(0) => {
            Scale::AtZero
        }
        // NoTraffic with pods left is scaling down: healthy, not at zero yet.
        Some(c) if c.status == "False" && c.reason == "NoTraffic" => Scale::Unsure,
        Some(c) if c.status == "False" => {
            failed.push(format!("{rname}: {}", c.describe()));
            Scale::Unsure
        }
        Some(c) => {
            progressing.push(format!("{rname} is waking: {}", c.describe()));
            Scale::Waking
        }
        None => Scale::Unsure,
    }
}

/// Judges a Revision by itself (a resource probe of a Revision): its conditions, and whether it
/// is at zero, from its PodAutoscaler.
pub fn judge_revision(rev: &Value, autoscaler: Option<&Value>) -> Verdict {
    let mut verdict = Verdict {
        judgement: Judgement::Ready,
        scale: Scale::Unsure,
        revision: rev["metadata"]["name"].as_str().map(String::from),
    };
    if let Some(why) = unobserved(rev) {
        verdict.judgement = Judgement::Progressing(format!("{}: {why}", name_of(rev)));
        return verdict;
    }
    let (mut failed, mut progressing) = (Vec::new(), Vec::new());
    verdict.scale = revision_state(rev, autoscaler, &mut failed, &mut progressing);
    verdict.judgement = settled(failed, progressing);
    verdict
}

/// The URL a request to the Service goes to: its `status.url`.
pub fn url(ksvc: &Value) -> Option<&str> {
    status_str(ksvc, "url")
}

/// Why a revision never reaches zero, so a cold start cannot be measured, if it does not.
pub fn pinned(revision: &Value, scale_to_zero: bool) -> Option<String> {
    if !scale_to_zero {
        return Some("enable-scale-to-zero is false in config-autoscaler".into());
    }
    let ann = &revision["metadata"]["annotations"];
    let get = |k: &str| ann[format!("autoscaling.knative.dev/{k}")].as_str();
    if let Some(min) = get("min-scale").or(get("minScale")) {
        if min.trim().parse::<i64>().is_ok_and(|m| m >= 1) {
            return Some(format!("autoscaling.knative.dev/min-scale is {min}"));
        }
    }
    if get("class") == Some("hpa.autoscaling.knative.dev") {
        return Some("its autoscaler class is hpa.autoscaling.knative.dev".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub fn ksvc(conds: Value, created: &str, ready: &str) -> Value {
        json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": "hello", "namespace": "ai", "generation": 2},
            "status": {"observedGeneration": 2, "conditions": conds, "url": "http://hello.ai.example.com",
                "latestCreatedRevisionName": created, "latestReadyRevisionName": ready}})
    }

    fn ready_ksvc() -> Value {
        ksvc(
            json!([{"type": "Ready", "status": "True"}, {"type": "ConfigurationsReady", "status": "True"}, {"type": "RoutesReady", "status": "True"}]),
            "hello-00001",
            "hello-00001",
        )
    }

    fn revision(active: Value) -> Value {
        json!({"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
            "metadata": {"name": "hello-00001", "namespace": "ai", "generation": 1},
            "status": {"observedGeneration": 1, "conditions": [
                {"type": "Ready", "status": "True"}, {"type": "ResourcesAvailable", "status": "True"},
                {"type": "ContainerHealthy", "status": "True"}, active]}})
    }

    fn pa(actual: i64) -> Value {
        json!({"kind": "PodAutoscaler", "metadata": {"name": "hello-00001", "namespace": "ai"},
            "status": {"actualScale": actual, "desiredScale": actual}})
    }

    #[test]
    fn a_revision_at_zero_is_healthy_and_idle() {
        let rev = revision(
            json!({"type": "Active", "status": "False", "reason": "NoTraffic", "message": "The target is not receiving traffic."}),
        );
        let v = judge(&ready_ksvc(), Some(&rev), Some(&pa(0)));
        assert_eq!(v.judgement, Judgement::Ready);
        assert_eq!(v.scale, Scale::AtZero);
        // NoTraffic while pods still run is scaling down: healthy, not at zero yet.
        let v = judge(&ready_ksvc(), Some(&rev), Some(&pa(1)));
        assert_eq!((v.judgement, v.scale), (Judgement::Ready, Scale::Unsure));
        let active = revision(json!({"type": "Active", "status": "True"}));
        assert_eq!(
            judge(&ready_ksvc(), Some(&active), Some(&pa(2))).scale,
            Scale::Active
        );
    }

    #[test]
    fn waking_is_in_progress_and_a_timed_out_activation_fails() {
        let queued = revision(
            json!({"type": "Active", "status": "Unknown", "reason": "Queued", "message": "Requests to the target are being buffered as resources are provisioned."}),
        );
        let v = judge(&ready_ksvc(), Some(&queued), Some(&pa(0)));
        assert_eq!(v.scale, Scale::Waking);
        assert!(
            matches!(&v.judgement, Judgement::Progressing(m) if m.contains("Revision ai/hello-00001 is waking: Active is Unknown (Queued)")),
            "{v:?}"
        );
        let timed_out = revision(
            json!({"type": "Active", "status": "False", "reason": "TimedOut", "message": "The target could not be activated."}),
        );
        assert_eq!(
            judge(&ready_ksvc(), Some(&timed_out), Some(&pa(0))).judgement,
            Judgement::Failed(vec![
                "Revision ai/hello-00001: Active is False (TimedOut): The target could not be activated.".into()
            ])
        );
    }

    #[test]
    fn a_revision_failing_to_start_fails_with_knatives_reason() {
        let svc = ksvc(
            json!([
                {"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": "Revision \"hello-00001\" failed with message: Container failed with: boom."},
                {"type": "ConfigurationsReady", "status": "False", "reason": "RevisionFailed", "message": "Revision \"hello-00001\" failed with message: Container failed with: boom."},
                {"type": "RoutesReady", "status": "False", "reason": "RevisionMissing", "message": "Configuration \"hello\" does not have any ready Revision."}]),
            "hello-00001",
            "",
        );
        let v = judge(&svc, None, None);
        assert_eq!(
            v.judgement,
            Judgement::Failed(vec![
                "Service ai/hello: Ready is False (RevisionFailed): Revision \"hello-00001\" failed with message: Container failed with: boom.".into(),
                "Service ai/hello: RoutesReady is False (RevisionMissing): Configuration \"hello\" does not have any ready Revision.".into(),
            ])
        );
        let mut rev = revision(json!({"type": "Active", "status": "True"}));
        rev["status"]["conditions"][2] = json!({"type": "ContainerHealthy", "status": "False", "reason": "ExitCode1", "message": "Container failed with: boom"});
        assert!(matches!(
            judge(&ready_ksvc(), Some(&rev), Some(&pa(1))).judgement,
            Judgement::Failed(ref e) if e == &vec!["Revision ai/hello-00001: ContainerHealthy is False (ExitCode1): Container failed with: boom".to_string()]
        ));
    }

    #[test]
    fn a_failed_rollout_while_the_previous_revision_serves_says_so() {
        let svc = ksvc(
            json!([
                {"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": "Revision \"hello-00002\" failed with message: Unable to fetch image."},
                {"type": "ConfigurationsReady", "status": "False", "reason": "RevisionFailed", "message": "Revision \"hello-00002\" failed with message: Unable to fetch image."},
                {"type": "RoutesReady", "status": "True"}]),
            "hello-00002",
            "hello-00001",
        );
        let v = judge(&svc, None, None);
        assert_eq!(
            v.judgement,
            Judgement::Failed(vec![
                "Service ai/hello: the rollout of revision hello-00002 failed; hello-00001 still serves: ConfigurationsReady is False (RevisionFailed): Revision \"hello-00002\" failed with message: Unable to fetch image.".into()
            ])
        );
    }

    #[test]
    fn an_unobserved_generation_is_not_judged_yet() {
        let mut svc = ready_ksvc();
        svc["metadata"]["generation"] = json!(3);
        let v = judge(&svc, None, None);
        assert_eq!(
            v.judgement,
            Judgement::Progressing(
                "Service ai/hello: generation 3 is not reconciled yet (observedGeneration 2)"
                    .into()
            )
        );
    }

    #[test]
    fn a_revision_alone_is_judged_with_its_podautoscaler() {
        let rev = revision(no_traffic());
        let v = judge_revision(&rev, Some(&pa(0)));
        assert_eq!((v.judgement, v.scale), (Judgement::Ready, Scale::AtZero));
        let mut pulling = revision(no_traffic());
        pulling["status"]["conditions"][1] = json!({"type": "ResourcesAvailable", "status": "False", "reason": "ImagePullBackOff", "message": "Back-off pulling image \"ghcr.io/x/y:2\""});
        assert_eq!(
            judge_revision(&pulling, Some(&pa(0))).judgement,
            Judgement::Failed(vec!["Revision ai/hello-00001: ResourcesAvailable is False (ImagePullBackOff): Back-off pulling image \"ghcr.io/x/y:2\"".into()])
        );
    }

    fn no_traffic() -> Value {
        json!({"type": "Active", "status": "False", "reason": "NoTraffic"})
    }

    #[test]
    fn pinned_revisions_never_reach_zero() {
        let mut rev = revision(json!({"type": "Active", "status": "True"}));
        assert_eq!(pinned(&rev, true), None);
        assert!(pinned(&rev, false)
            .unwrap()
            .contains("enable-scale-to-zero"));
        rev["metadata"]["annotations"] = json!({"autoscaling.knative.dev/min-scale": "1"});
        assert_eq!(
            pinned(&rev, true).as_deref(),
            Some("autoscaling.knative.dev/min-scale is 1")
        );
    }
}
