//! `probity check resource-quota`: every ResourceQuota's use of each resource it limits, against a
//! threshold. Kuberhealthy's settings (`THRESHOLD` 0.9, `WHITELIST` and `BLACKLIST` namespace
//! lists); every limited resource is judged, not only cpu and memory, and a resource whose hard
//! limit is zero is skipped rather than divided by.

use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{Api, ListParams};

use crate::api::RunResult;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `THRESHOLD`: a fraction, 0 < t <= 1 (0.9).
    pub threshold: f64,
    /// `WHITELIST`: only these namespaces (all when empty).
    pub only: Vec<String>,
    /// `BLACKLIST`: never these.
    pub except: Vec<String>,
}

fn list(env: &impl Fn(&str) -> Option<String>, var: &str) -> Vec<String> {
    env(var)
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl Config {
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<String>> {
        let threshold = match env("THRESHOLD").filter(|v| !v.trim().is_empty()) {
            None => 0.9,
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|t| *t > 0.0 && *t <= 1.0)
                .ok_or_else(|| {
                    vec![format!(
                        "THRESHOLD={v:?} is not a fraction above 0 and at most 1"
                    )]
                })?,
        };
        Ok(Config {
            threshold,
            only: list(&env, "WHITELIST"),
            except: list(&env, "BLACKLIST"),
        })
    }

    pub fn judge(&self, quotas: &[ResourceQuota]) -> RunResult {
        let mut over = Vec::new();
        for q in quotas {
            let ns = q.metadata.namespace.clone().unwrap_or_default();
            if (!self.only.is_empty() && !self.only.contains(&ns)) || self.except.contains(&ns) {
                continue;
            }
            let Some(st) = q.status.as_ref() else {
                continue;
            };
            let used = st.used.clone().unwrap_or_default();
            for (resource, hard) in st.hard.iter().flatten() {
                let Some(hard_v) = quantity(&hard.0).filter(|h| *h > 0.0) else {
                    continue;
                };
                let used_q = used
                    .get(resource)
                    .map(|u| u.0.clone())
                    .unwrap_or_else(|| "0".into());
                let used_v = quantity(&used_q).unwrap_or(0.0);
                let share = used_v / hard_v;
                if share >= self.threshold {
                    over.push(format!(
                        "{ns}/{}: {resource} {used_q} of {} ({:.0}%)",
                        q.metadata.name.as_deref().unwrap_or(""),
                        hard.0,
                        share * 100.0
                    ));
                }
            }
        }
        if over.is_empty() {
            return RunResult::passed();
        }
        let mut out = vec![format!(
            "{} quota limits at or above {:.0}% use",
            over.len(),
            self.threshold * 100.0
        )];
        out.extend(over.into_iter().take(20));
        RunResult::failed(out)
    }

    pub async fn run(&self) -> RunResult {
        match self.list().await {
            Ok(quotas) => self.judge(&quotas),
            Err(e) => RunResult::failed(e),
        }
    }

    async fn list(&self) -> Result<Vec<ResourceQuota>, Vec<String>> {
        let client = super::kube_client("resource-quota").await?;
        let api: Api<ResourceQuota> = match self.only.as_slice() {
            [one] => Api::namespaced(client, one),
            _ => Api::all(client),
        };
        let quotas = api
            .list(&ListParams::default())
            .await
            .map_err(|e| vec![format!("listing resource quotas: {e}")])?;
        Ok(quotas.items)
    }
}

/// A Kubernetes quantity ("500m", "2Gi", "1e3", "4") as a number; None when it is not one.
pub fn quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (s, mult) in SUFFIXES {
        if let Some(n) = q.strip_suffix(s) {
            return n.parse::<f64>().ok().map(|n| n * mult);
        }
    }
    q.parse::<f64>().ok().filter(|n| n.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_env as env;

    fn quota(ns: &str, hard: serde_json::Value, used: serde_json::Value) -> ResourceQuota {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "q", "namespace": ns},
            "status": {"hard": hard, "used": used}
        }))
        .unwrap()
    }

    #[test]
    fn quantities_parse_as_kubernetes_writes_them() {
        assert_eq!(quantity("500m"), Some(0.5));
        assert_eq!(quantity("2Gi"), Some(2.0 * 1_073_741_824.0));
        assert_eq!(quantity("1e3"), Some(1000.0));
        assert_eq!(quantity("4"), Some(4.0));
        assert_eq!(quantity("lots"), None);
    }

    #[test]
    fn limits_over_the_threshold_are_named_and_zero_limits_skipped() {
        let c = Config::from_env(env(&[("THRESHOLD", "0.95"), ("BLACKLIST", "default")])).unwrap();
        let quotas = [
            quota(
                "shop",
                serde_json::json!({"pods": "2", "requests.memory": "1Gi", "configmaps": "0"}),
                serde_json::json!({"pods": "2", "requests.memory": "512Mi", "configmaps": "3"}),
            ),
            quota(
                "default",
                serde_json::json!({"pods": "1"}),
                serde_json::json!({"pods": "1"}),
            ),
        ];
        assert_eq!(
            c.judge(&quotas),
            RunResult::failed(vec![
                "1 quota limits at or above 95% use".to_string(),
                "shop/q: pods 2 of 2 (100%)".to_string()
            ])
        );
        let only_default =
            Config::from_env(env(&[("WHITELIST", "default"), ("THRESHOLD", "1")])).unwrap();
        assert!(!only_default.judge(&quotas).passed_ok());
        let lenient = Config::from_env(env(&[("BLACKLIST", "default,shop")])).unwrap();
        assert_eq!(lenient.judge(&quotas), RunResult::passed());
        assert_eq!(Config::from_env(env(&[])).unwrap().threshold, 0.9);
        assert!(
            Config::from_env(env(&[("THRESHOLD", "90")])).unwrap_err()[0]
                .starts_with("THRESHOLD=\"90\"")
        );
    }
}
