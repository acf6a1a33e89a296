//! Every check's plan, validated once per spec: the one place a validation is kept.
//!
//! Validation can be slow (it searches a cron schedule: a pattern that never fires takes
//! milliseconds to prove so) and must not hold up the engine's task, while in a cluster every
//! status write comes back on the watch with the spec unchanged. So a backend validates where
//! blocking is fine (a blocking thread), through the same `Plans` the engine holds, and the
//! engine finds the plan here; a spec it has not seen is validated on the spot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Desired;
use crate::api::validate::{validate_with, Defaults, Invalid, Plan};
use crate::api::{CheckKey, HealthCheck};

/// A check's plan, or everything wrong with it; shared by the cache and the engine's entry, so
/// each check's plan is held once.
pub type Checked = Arc<Result<Plan, Invalid>>;

/// The plans of every check, keyed by check, each kept with the spec it was made from.
#[derive(Debug)]
pub struct Plans {
    defaults: Defaults,
    cache: Mutex<HashMap<CheckKey, Cached>>,
}

#[derive(Debug)]
struct Cached {
    check: Arc<HealthCheck>,
    load_error: Option<Invalid>,
    plan: Checked,
}

impl Cached {
    /// A plan depends on the key, the spec and what the backend found only: labels, status
    /// and annotations can change without it.
    fn fits(&self, d: &Desired) -> bool {
        (Arc::ptr_eq(&self.check, &d.check) || self.check.spec == d.check.spec)
            && self.load_error == d.load_error
    }
}

impl Plans {
    pub fn new(defaults: Defaults) -> Self {
        Plans {
            defaults,
            cache: Mutex::default(),
        }
    }

    pub fn defaults(&self) -> &Defaults {
        &self.defaults
    }

    /// The plan kept for `d` (check `key`: callers have it already, and making one allocates),
    /// without validating.
    pub fn cached(&self, key: &CheckKey, d: &Desired) -> Option<Checked> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let c = cache.get_mut(key)?;
        if !c.fits(d) {
            return None;
        }
        // Hold the object the caller holds, not the one the plan was made from: in a cluster
        // every status write brings a new one, and the old one (status and all) would stay
        // in memory for each check.
        if !Arc::ptr_eq(&c.check, &d.check) {
            c.check = d.check.clone();
        }
        Some(c.plan.clone())
    }

    /// What the engine schedules `d` by, or everything wrong with it: kept, or validated now
    /// (on the caller's thread) and kept.
    pub fn plan(&self, key: &CheckKey, d: &Desired) -> Checked {
        if let Some(plan) = self.cached(key, d) {
            return plan;
        }
        let plan = Arc::new(validate_with(
            &d.check,
            &self.defaults,
            d.load_error.as_ref(),
        ));
        self.keep(key, d, plan.clone());
        plan
    }

    /// Keeps `plan` as `d`'s (tests mark a plan to see it used).
    pub(crate) fn keep(&self, key: &CheckKey, d: &Desired, plan: Checked) {
        let cached = Cached {
            check: d.check.clone(),
            load_error: d.load_error.clone(),
            plan,
        };
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), cached);
    }

    /// The check is gone.
    pub fn forget(&self, key: &CheckKey) {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::load::parse_documents;

    fn desired(spec: &str) -> Desired {
        let text = format!(
            "apiVersion: kuberhealthy.github.io/v2\nkind: HealthCheck\nmetadata: {{name: a, namespace: ns}}\nspec:\n  podSpec: {{spec: {{containers: [{{name: c, image: i, command: [x]}}]}}}}\n{spec}"
        );
        let hc = parse_documents(&text).unwrap().remove(0).check.unwrap();
        Desired::new(Arc::new(hc), None)
    }

    #[test]
    fn a_spec_is_validated_once_and_again_only_when_it_changes() {
        let plans = Plans::new(Defaults::default());
        let key = CheckKey::new("ns", "a");
        let d = desired("  runInterval: 1m\n");
        assert!(plans.cached(&key, &d).is_none());
        assert!(plans.plan(&key, &d).is_ok());
        // The same plan, not a copy, for the same spec.
        assert!(Arc::ptr_eq(
            &plans.plan(&key, &d),
            &plans.cached(&key, &d).unwrap()
        ));
        // The same spec in another object (a status write echoed by the watch): kept, and the
        // older object let go.
        let echo = desired("  runInterval: 1m\n");
        assert!(plans.cached(&key, &echo).is_some());
        assert_eq!(
            Arc::strong_count(&d.check),
            1,
            "the first object is no longer held"
        );
        // A changed spec is not the kept one.
        let changed = desired("  runInterval: nope\n");
        assert!(plans.cached(&key, &changed).is_none());
        assert!(plans.plan(&key, &changed).is_err());
        assert!(
            plans.cached(&key, &echo).is_none(),
            "one plan a check: the newest"
        );
        // What the backend found is part of what a plan is made from.
        let mut found = desired("  runInterval: nope\n");
        found.load_error = Some(Invalid::one("spec.x", "unknown field"));
        assert!(plans.cached(&key, &found).is_none());
        plans.forget(&key);
        assert!(plans.cached(&key, &changed).is_none());
    }
}
