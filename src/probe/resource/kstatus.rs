//! What an object's status says, by kstatus' rules (sigs.k8s.io/cli-utils/pkg/kstatus): current
//! and ready, in progress, or failed. Pure: the object's JSON in, a judgement out.

use serde_json::Value;

use crate::api::resource_probe::RequiredCondition;

/// One object's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Current and ready.
    Ready,
    /// Not settled yet: fails only once this lasts past the grace period.
    Progressing(String),
    /// Failing, for these reasons (each names the condition, its reason and message).
    Failed(Vec<String>),
}

/// `Certificate default/web`: how messages name an object.
pub fn name_of(obj: &Value) -> String {
    let kind = obj["kind"].as_str().unwrap_or("object");
    let name = obj["metadata"]["name"].as_str().unwrap_or("?");
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// A condition as the object carries it.
#[derive(Debug, Clone, Copy)]
pub struct Cond<'a> {
    pub type_: &'a str,
    pub status: &'a str,
    pub reason: &'a str,
    pub message: &'a str,
}

impl Cond<'_> {
    /// `Ready is False (DoesNotExist): Issuing certificate as Secret does not exist`
    pub fn describe(&self) -> String {
        let mut s = format!("{} is {}", self.type_, self.status);
        if !self.reason.is_empty() {
            s.push_str(&format!(" ({})", self.reason));
        }
        if !self.message.is_empty() {
            s.push_str(&format!(": {}", self.message));
        }
        s
    }
}

pub fn conditions(obj: &Value) -> Vec<Cond<'_>> {
    obj["status"]["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| Cond {
                    type_: c["type"].as_str().unwrap_or(""),
                    status: c["status"].as_str().unwrap_or(""),
                    reason: c["reason"].as_str().unwrap_or(""),
                    message: c["message"].as_str().unwrap_or(""),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<Cond<'a>> {
    conditions(obj).into_iter().find(|c| c.type_ == type_)
}

/// Conditions whose True means trouble (kstatus' abnormal-true conditions).
const TROUBLE: [&str; 3] = ["Stalled", "Failed", "Degraded"];

/// Why the object's spec is not reconciled yet: it is being deleted, or a newer generation has
/// not been observed.
pub fn unobserved(obj: &Value) -> Option<String> {
    if obj["metadata"]["deletionTimestamp"].is_string() {
        return Some("is being deleted".into());
    }
    let generation = obj["metadata"]["generation"].as_i64()?;
    let observed = obj["status"]["observedGeneration"].as_i64()?;
    (observed < generation).then(|| {
        format!("generation {generation} is not reconciled yet (observedGeneration {observed})")
    })
}

/// Judges one object: trouble conditions and required conditions fail it; a stale generation,
/// Reconciling or a Ready that is Unknown leave it in progress; otherwise Ready (or Available)
/// must be True, unless the check names its own conditions or expression (`judged_otherwise`).
/// `expression` is the expression's verdict on this object, when there is one.
pub fn judge(
    obj: &Value,
    required: &[RequiredCondition],
    expression: Option<Result<bool, String>>,
) -> Judgement {
    let name = name_of(obj);
    let mut failed = Vec::new();
    for c in conditions(obj) {
        let trouble = TROUBLE.contains(&c.type_) && c.status == "True";
        // Deployments (and what copies their shape) say a stuck rollout this way.
        let deadline = c.type_ == "Progressing"
            && c.status == "False"
            && c.reason == "ProgressDeadlineExceeded";
        if trouble || deadline {
            failed.push(format!("{name}: {}", c.describe()));
        }
    }
    for r in required {
        match condition(obj, &r.type_) {
            Some(c) if c.status == r.status() => {}
            Some(c) => failed.push(format!(
                "{name}: {} (required {})",
                c.describe(),
                r.status()
            )),
            None => failed.push(format!(
                "{name}: condition {} is missing (required {})",
                r.type_,
                r.status()
            )),
        }
    }
    let judged_otherwise = !required.is_empty() || expression.is_some();
    match expression {
        Some(Ok(true)) | None => {}
        Some(Ok(false)) => failed.push(format!("{name}: the expression is false")),
        Some(Err(e)) => failed.push(format!("{name}: the expression failed: {e}")),
    }
    if let Some(why) = unobserved(obj) {
        // What the status says is about an older spec: not a verdict yet, unless it is
        // already failing for a reason that does not wait.
        return if failed.is_empty() {
            Judgement::Progressing(format!("{name}: {why}"))
        } else {
            Judgement::Failed(failed)
        };
    }
    if !failed.is_empty() {
        return Judgement::Failed(failed);
    }
    if let Some(c) = condition(obj, "Reconciling").filter(|c| c.status == "True") {
        return Judgement::Progressing(format!("{name}: {}", c.describe()));
    }
    let ready = condition(obj, "Ready").or_else(|| condition(obj, "Available"));
    match ready {
        Some(c) if c.status == "True" => Judgement::Ready,
        Some(c) if c.status == "False" => Judgement::Failed(vec![format!("{name}: {}", c.describe())]),
        Some(c) => Judgement::Progressing(format!("{name}: {}", c.describe())),
        None if judged_otherwise => Judgement::Ready,
        None => Judgement::Failed(vec![format!(
            "{name}: has no Ready or Available condition to judge it by (name the conditions to require, or write an expression)"
        )]),
    }
}

/// Runs a compiled expression over `object`: true, false, or why it could not say.
pub fn evaluate(program: &cel::Program, obj: &Value) -> Result<bool, String> {
    let mut ctx = cel::Context::default();
    let value = cel::to_value(obj).map_err(|e| e.to_string())?;
    ctx.add_variable_from_value("object", value);
    match program.execute(&ctx) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("gave {other:?}, not true or false")),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cert(generation: i64, observed: i64, conds: Value) -> Value {
        json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Certificate",
            "metadata": {"name": "web", "namespace": "shop", "generation": generation},
            "status": {"observedGeneration": observed, "conditions": conds}
        })
    }

    fn required(t: &str, s: Option<&str>) -> RequiredCondition {
        RequiredCondition {
            type_: t.into(),
            status: s.map(String::from),
        }
    }

    #[test]
    fn ready_and_current_passes() {
        let c = cert(2, 2, json!([{"type": "Ready", "status": "True"}]));
        assert_eq!(judge(&c, &[], None), Judgement::Ready);
        // Available counts where there is no Ready (Deployments).
        let d = json!({"kind": "Deployment", "metadata": {"name": "d", "namespace": "n", "generation": 1},
            "status": {"observedGeneration": 1, "conditions": [{"type": "Available", "status": "True"}]}});
        assert_eq!(judge(&d, &[], None), Judgement::Ready);
    }

    #[test]
    fn a_failing_condition_is_named_with_its_reason_and_message() {
        let c = cert(
            1,
            1,
            json!([{"type": "Ready", "status": "False", "reason": "DoesNotExist", "message": "Issuing certificate as Secret does not exist"}]),
        );
        assert_eq!(
            judge(&c, &[], None),
            Judgement::Failed(vec![
                "Certificate shop/web: Ready is False (DoesNotExist): Issuing certificate as Secret does not exist".into()
            ])
        );
        let stalled = cert(
            1,
            1,
            json!([{"type": "Ready", "status": "True"}, {"type": "Stalled", "status": "True", "reason": "BuildFailed", "message": "kustomize build failed"}]),
        );
        assert_eq!(
            judge(&stalled, &[], None),
            Judgement::Failed(vec![
                "Certificate shop/web: Stalled is True (BuildFailed): kustomize build failed"
                    .into()
            ])
        );
        let stuck = cert(
            1,
            1,
            json!([{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]),
        );
        assert!(matches!(judge(&stuck, &[], None), Judgement::Failed(_)));
    }

    #[test]
    fn a_stale_generation_or_unknown_ready_is_in_progress() {
        let stale = cert(3, 2, json!([{"type": "Ready", "status": "True"}]));
        assert_eq!(
            judge(&stale, &[], None),
            Judgement::Progressing(
                "Certificate shop/web: generation 3 is not reconciled yet (observedGeneration 2)"
                    .into()
            )
        );
        // Ready False about the old spec waits too: the new spec may fix it.
        let stale_false = cert(3, 2, json!([{"type": "Ready", "status": "False"}]));
        assert!(matches!(
            judge(&stale_false, &[], None),
            Judgement::Progressing(_)
        ));
        let unknown = cert(
            1,
            1,
            json!([{"type": "Ready", "status": "Unknown", "reason": "Progressing", "message": "Reconciliation in progress"}]),
        );
        assert_eq!(
            judge(&unknown, &[], None),
            Judgement::Progressing(
                "Certificate shop/web: Ready is Unknown (Progressing): Reconciliation in progress"
                    .into()
            )
        );
        let reconciling = cert(
            1,
            1,
            json!([{"type": "Ready", "status": "True"}, {"type": "Reconciling", "status": "True", "reason": "Progressing"}]),
        );
        assert!(matches!(
            judge(&reconciling, &[], None),
            Judgement::Progressing(_)
        ));
        let mut deleting = cert(1, 1, json!([{"type": "Ready", "status": "True"}]));
        deleting["metadata"]["deletionTimestamp"] = json!("2026-12-07T00:00:00Z");
        assert_eq!(
            judge(&deleting, &[], None),
            Judgement::Progressing("Certificate shop/web: is being deleted".into())
        );
    }

    #[test]
    fn required_conditions_and_the_expression_judge_too() {
        let app = json!({"kind": "Application", "metadata": {"name": "shop", "namespace": "argocd"},
            "status": {"health": {"status": "Degraded"}, "sync": {"status": "Synced"}}});
        // No Ready, no Available: nothing to judge by unless the check says what.
        assert!(
            matches!(judge(&app, &[], None), Judgement::Failed(ref e) if e[0].contains("has no Ready or Available condition"))
        );
        let program = cel::Program::compile(
            "object.status.health.status == 'Healthy' && object.status.sync.status == 'Synced'",
        )
        .unwrap();
        let verdict = evaluate(&program, &app);
        assert_eq!(verdict, Ok(false));
        assert_eq!(
            judge(&app, &[], Some(verdict)),
            Judgement::Failed(vec![
                "Application argocd/shop: the expression is false".into()
            ])
        );
        let mut healthy = app.clone();
        healthy["status"]["health"]["status"] = json!("Healthy");
        assert_eq!(
            judge(&healthy, &[], Some(evaluate(&program, &healthy))),
            Judgement::Ready
        );
        let missing = cel::Program::compile("object.status.nope == 1").unwrap();
        assert!(evaluate(&missing, &app).unwrap_err().contains("nope"));
        let not_bool = cel::Program::compile("object.status.sync.status").unwrap();
        assert!(evaluate(&not_bool, &app)
            .unwrap_err()
            .contains("not true or false"));

        let c = cert(
            1,
            1,
            json!([{"type": "Ready", "status": "True"}, {"type": "Issuing", "status": "True"}]),
        );
        assert_eq!(
            judge(
                &c,
                &[required("Issuing", Some("False")), required("Synced", None)],
                None
            ),
            Judgement::Failed(vec![
                "Certificate shop/web: Issuing is True (required False)".into(),
                "Certificate shop/web: condition Synced is missing (required True)".into()
            ])
        );
    }
}
