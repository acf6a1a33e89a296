//! `spec.dependsOn` across checks: what only the whole set of checks shows (a name no check
//! has, a cycle) makes a check invalid, naming the entry; it is settled again whenever a check
//! appears, goes, or changes what it depends on.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{Engine, Entry};
use crate::api::validate::{Invalid, Problem};
use crate::api::CheckKey;
use crate::engine::plans::Checked;
use crate::engine::Effect;

/// What a plan says the check depends on (nothing, when it is invalid on its own).
pub(super) fn deps_of(plan: &Checked) -> Vec<CheckKey> {
    (**plan)
        .as_ref()
        .map(|p| p.depends_on.clone())
        .unwrap_or_default()
}

impl Engine {
    /// Every problem of `key`'s dependencies: each names its `spec.dependsOn` entry.
    fn dependency_problems(&self, key: &CheckKey) -> Vec<Problem> {
        let Some(entry) = self.checks.get(key) else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        for (i, dep) in entry.deps.iter().enumerate() {
            let field = format!("spec.dependsOn[{i}]");
            match self.checks.get(dep).filter(|e| !e.removed) {
                None => problems.push(Problem {
                    field,
                    message: format!("no check is named {dep}"),
                }),
                Some(_) => {
                    if let Some(path) = self.path_back(dep, key) {
                        let mut cycle = vec![key.as_str()];
                        cycle.extend(path.iter().map(CheckKey::as_str));
                        problems.push(Problem {
                            field,
                            message: format!(
                                "{dep} depends back on this check: {}",
                                cycle.join(" → ")
                            ),
                        });
                    }
                }
            }
        }
        problems
    }

    /// A path of dependencies from `from` to `to`, both included, if there is one.
    fn path_back(&self, from: &CheckKey, to: &CheckKey) -> Option<Vec<CheckKey>> {
        let mut seen = HashSet::new();
        let mut stack = vec![vec![from.clone()]];
        while let Some(path) = stack.pop() {
            let at = path.last().expect("never empty");
            if at == to {
                return Some(path);
            }
            if !seen.insert(at.clone()) {
                continue;
            }
            for next in self.checks.get(at).map(|e| &e.deps).into_iter().flatten() {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push(p);
            }
        }
        None
    }

    /// Puts what the other checks say about `changed`'s dependencies into its plan, and, when
    /// the set of checks or of dependencies changed (`reach`), into every plan that names one.
    pub(super) fn settle_dependencies(
        &mut self,
        now: DateTime<Utc>,
        changed: &CheckKey,
        reach: bool,
    ) -> Vec<Effect> {
        let mut keys: Vec<CheckKey> = if reach {
            self.checks
                .iter()
                .filter(|(_, e)| !e.deps.is_empty() || e.dependency_invalid)
                .map(|(k, _)| k.clone())
                .collect()
        } else {
            Vec::new()
        };
        if !keys.contains(changed) && self.checks.contains_key(changed) {
            keys.push(changed.clone());
        }
        let mut effects = Vec::new();
        for key in keys {
            let problems = self.dependency_problems(&key);
            let entry = self.checks.get_mut(&key).expect("listed from the map");
            if problems.is_empty() && !entry.dependency_invalid {
                continue;
            }
            let base = self.plans.plan(&key, &entry.desired);
            entry.dependency_invalid = !problems.is_empty();
            entry.plan = match (&*base, problems.is_empty()) {
                (_, true) => base,
                (Ok(_), false) => Arc::new(Err(Invalid { problems })),
                (Err(own), false) => {
                    let mut all = own.clone();
                    all.problems.extend(problems);
                    Arc::new(Err(all))
                }
            };
            let before = entry.status.clone();
            Self::apply_validity(entry, now);
            if entry.run.is_none() {
                self.unschedule(&key);
                self.schedule(&key, now);
            }
            let persist = *self.checks[&key].status != *before;
            effects.push(self.save(&key, persist));
        }
        effects
    }
}

/// Whether an entry's dependency set differs from what a new plan says.
pub(super) fn deps_changed(entry: &Entry, plan: &Checked) -> bool {
    entry.deps != deps_of(plan)
}
