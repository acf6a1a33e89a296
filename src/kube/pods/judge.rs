//! What a pod's state means for its run: finished (and how), stuck (an image that cannot be
//! pulled), or still pending (and why, for the timeout message).

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::engine::RunEnd;

/// Waiting reasons after which a container will not start without someone changing something.
const STUCK: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// What a pod's state means for its run: None while it may still report; otherwise how it ended
/// and whether the pod is stuck and must be deleted.
pub(super) fn judge(pod: &Pod) -> Option<(RunEnd, bool)> {
    let name = pod.name_any();
    let status = pod.status.as_ref()?;
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    match status.phase.as_deref() {
        Some("Succeeded") => {
            return Some((
                RunEnd::crashed(format!("pod {name} exited 0 without reporting")),
                false,
            ))
        }
        // The node ended it at `activeDeadlineSeconds`, the run's own deadline (it counts from
        // the pod's start time, stored to the second, so it can come up to a second before
        // ours): the run timed out, and the engine's deadline says so, not a crash.
        Some("Failed") if status.reason.as_deref() == Some("DeadlineExceeded") => return None,
        Some("Failed") => {
            let why = containers
                .filter_map(|c| {
                    let t = c.state.as_ref()?.terminated.as_ref()?;
                    (t.exit_code != 0).then(|| {
                        let mut s =
                            format!("container {} exited with code {}", c.name, t.exit_code);
                        if let Some(r) = &t.reason {
                            s.push_str(&format!(" ({r})"));
                        }
                        if let Some(m) = t.message.as_deref().filter(|m| !m.is_empty()) {
                            s.push_str(&format!(": {}", m.trim()));
                        }
                        s
                    })
                })
                .next()
                .or_else(|| {
                    let r = status.reason.as_deref()?;
                    Some(match status.message.as_deref() {
                        Some(m) => format!("{r}: {m}"),
                        None => r.to_string(),
                    })
                })
                .unwrap_or_else(|| "it failed".into());
            return Some((
                RunEnd::crashed(format!("pod {name} failed without reporting: {why}")),
                false,
            ));
        }
        _ => {}
    }
    for c in containers {
        let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = w.reason.as_deref().unwrap_or_default();
        if STUCK.contains(&reason) {
            let mut msg = format!("pod {name}: container {} cannot start: {reason}", c.name);
            if !c.image.is_empty() {
                msg.push_str(&format!(" (image {})", c.image));
            }
            if let Some(m) = w.message.as_deref().filter(|m| !m.is_empty()) {
                msg.push_str(&format!(": {m}"));
            }
            return Some((RunEnd::start_failed(msg), true));
        }
    }
    None
}

/// A pod that has not got to running its check, in words: why it is still pending.
pub(super) fn describe_pod(pod: &Pod) -> Option<String> {
    let name = pod.name_any();
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if phase != "Pending" {
        return None;
    }
    let unscheduled = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    if let Some(c) = unscheduled {
        return Some(format!(
            "pod {name} was never scheduled: {}: {}",
            c.reason.as_deref().unwrap_or("Unschedulable"),
            c.message.as_deref().unwrap_or("no reason given")
        ));
    }
    let waiting = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .find_map(|c| {
            let w = c.state.as_ref()?.waiting.as_ref()?;
            Some(format!(
                "container {} waiting: {}",
                c.name,
                w.reason.as_deref().unwrap_or("unknown")
            ))
        });
    Some(match waiting {
        Some(w) => format!("pod {name} was still Pending ({w})"),
        None => format!("pod {name} was still Pending"),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
        PodCondition, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// A pod status in `phase` with one container, `check` of `image`, in `state`.
    pub(in crate::kube::pods) fn status(
        phase: &str,
        image: &str,
        state: ContainerState,
    ) -> PodStatus {
        PodStatus {
            phase: Some(phase.into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "check".into(),
                image: image.into(),
                state: Some(state),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn pod(phase: &str, state: ContainerState) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("dns-1d309".into()),
                ..Default::default()
            },
            spec: None,
            status: Some(status(phase, "registry/nope:1", state)),
        }
    }

    #[test]
    fn a_pending_pod_at_the_deadline_is_described() {
        let mut p = pod("Pending", ContainerState::default());
        p.status.as_mut().unwrap().container_statuses = None;
        p.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some("0/3 nodes are available: 3 Insufficient cpu.".into()),
            ..Default::default()
        }]);
        assert_eq!(
            describe_pod(&p).unwrap(),
            "pod dns-1d309 was never scheduled: Unschedulable: 0/3 nodes are available: 3 Insufficient cpu."
        );
        assert!(describe_pod(&pod("Running", ContainerState::default())).is_none());
    }

    #[test]
    fn pod_states_end_runs_with_a_message_naming_the_cause() {
        let waiting = |reason: &str| ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message: Some("not found".into()),
            }),
            ..Default::default()
        };
        let (end, delete) = judge(&pod("Pending", waiting("ImagePullBackOff"))).unwrap();
        assert!(delete);
        assert_eq!(
            end,
            RunEnd::start_failed(
                "pod dns-1d309: container check cannot start: ImagePullBackOff (image registry/nope:1): not found"
                    )
        );
        assert!(judge(&pod("Pending", waiting("ContainerCreating"))).is_none());
        assert!(judge(&pod("Running", ContainerState::default())).is_none());
        let term = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 2,
                reason: Some("Error".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (end, delete) = judge(&pod("Failed", term.clone())).unwrap();
        assert!(!delete);
        assert_eq!(
            end,
            RunEnd::crashed("pod dns-1d309 failed without reporting: container check exited with code 2 (Error)")
        );
    }

    #[test]
    fn a_pod_the_node_ended_at_its_deadline_is_left_to_the_run_timeout() {
        let killed = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 143,
                reason: Some("Error".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut p = pod("Failed", killed);
        p.status.as_mut().unwrap().reason = Some("DeadlineExceeded".into());
        assert!(
            judge(&p).is_none(),
            "not a crash: the run's timeout ends it"
        );
    }
}
