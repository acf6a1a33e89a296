//! The pod runner against the stand-in API server: how a run ends by what its pod shows, when
//! pods are created and deleted, and retention.

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::mpsc;

use super::build::tests::start_run;
use super::judge::tests::status;
use super::*;
use crate::api::Outcome;
use crate::engine::Event;
use crate::kube::standin::{self, StandIn};

const BASE: &str = "http://probity.probity.svc";

/// A runner whose API server creates and deletes whatever it is asked to, leading or not.
fn runner(
    leadership: Leadership,
    retention: Retention,
) -> (StandIn, PodRunner, mpsc::Receiver<Event>) {
    let (api, client) = StandIn::start(|seen, _| match seen.method.as_str() {
        "POST" => (201, seen.body.clone().unwrap_or_default()),
        "DELETE" => standin::status(200, "Success"),
        _ => standin::status(404, "NotFound"),
    });
    let (handle, events) = EngineHandle::channel();
    (
        api,
        PodRunner::new(client, handle, BASE, retention, leadership),
        events,
    )
}

fn leader() -> Leadership {
    Leadership::solo("me")
}

fn follower() -> Leadership {
    let (claim, l) = Leadership::elected("me");
    claim.held_by("other");
    l
}

fn run(name: &str) -> StartRun {
    let spec = "  podSpec: {spec: {containers: [{name: check, image: img}]}}\n";
    start_run(
        name,
        &format!("u-{name}"),
        spec,
        crate::api::RunCredential::new(),
        Duration::from_secs(60),
    )
}

/// The run's pod as the watch would show it, in `phase` with its container in `state`.
fn pod(run: &StartRun, phase: &str, state: ContainerState) -> Pod {
    let mut p = build_pod(run, BASE).unwrap();
    p.status = Some(status(phase, "img", state));
    p
}

fn running() -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning::default()),
        ..Default::default()
    }
}

fn exited(code: i32, at: DateTime<Utc>) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
            finished_at: Some(Time(
                k8s_openapi::jiff::Timestamp::from_millisecond(at.timestamp_millis()).unwrap(),
            )),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn waiting(reason: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: Some("not in any registry".into()),
        }),
        ..Default::default()
    }
}

/// The next run the runner releases to the engine.
async fn released(events: &mut mpsc::Receiver<Event>) -> (RunId, RunEnd) {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Some(Event::Released { uuid, end })) => return (uuid, end),
            Ok(Some(_)) => continue,
            other => panic!("no run released: {other:?}"),
        }
    }
}

fn deleted(seen: &[crate::kube::standin::Seen]) -> Vec<String> {
    seen.iter()
        .filter(|s| s.method == "DELETE")
        .map(|s| {
            s.uri
                .split('?')
                .next()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_run_ends_as_its_pod_shows_and_a_pod_that_cannot_start_is_deleted() {
    let (api, r, mut events) = runner(leader(), Retention::default());
    let a = run("crash");
    r.start(a.clone());
    let seen = api.until(1).await;
    assert_eq!(seen[0].method, "POST");
    assert!(
        seen[0].uri.starts_with("/api/v1/namespaces/kh/pods"),
        "{}",
        seen[0].uri
    );
    assert_eq!(
        seen[0].body.as_ref().unwrap()["metadata"]["name"],
        pod_name(&a.key, a.uuid)
    );
    // Running says nothing yet; the exit without a report ends the run with its code.
    r.pod_seen(pod(&a, "Running", running()));
    r.pod_seen(pod(&a, "Failed", exited(3, Utc::now())));
    let (uuid, end) = released(&mut events).await;
    assert_eq!(uuid, a.uuid);
    match end {
        RunEnd::Ended(r) => {
            assert_eq!(r.outcome, Outcome::Crash);
            let message = r.message();
            assert!(message.contains("exited with code 3 (Error)"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    let b = run("pull");
    r.start(b.clone());
    api.until(2).await;
    r.pod_seen(pod(&b, "Pending", waiting("ImagePullBackOff")));
    let (uuid, end) = released(&mut events).await;
    assert_eq!(uuid, b.uuid);
    assert!(
        matches!(&end, RunEnd::Ended(r) if r.outcome == Outcome::StartFailure && r.message().contains("ImagePullBackOff (image img)")),
        "{end:?}"
    );
    let seen = api.until(3).await;
    assert_eq!(
        deleted(&seen),
        [pod_name(&b.key, b.uuid)],
        "the stuck pod goes at once"
    );
}

#[tokio::test]
async fn a_pod_deleted_by_someone_else_ends_its_run_and_a_stopped_one_ends_once_gone() {
    let (api, r, mut events) = runner(leader(), Retention::default());
    let a = run("gone");
    r.start(a.clone());
    api.until(1).await;
    let p = pod(&a, "Running", running());
    r.pod_seen(p.clone());
    r.pod_gone(&p);
    let (_, end) = released(&mut events).await;
    assert!(
        matches!(&end, RunEnd::Ended(r) if r.outcome == Outcome::Crash && r.message().ends_with("was deleted before it reported")),
        "{end:?}"
    );

    let b = run("stopped");
    r.start(b.clone());
    api.until(2).await;
    let p = pod(&b, "Running", running());
    r.pod_seen(p.clone());
    r.stop(&b.key, b.uuid, StopReason::Timeout);
    let seen = api.until(3).await;
    assert_eq!(deleted(&seen), [pod_name(&b.key, b.uuid)]);
    assert!(
        events.try_recv().is_err(),
        "released only once the pod is gone"
    );
    r.pod_gone(&p);
    let (uuid, end) = released(&mut events).await;
    assert_eq!(uuid, b.uuid);
    assert!(
        matches!(&end, RunEnd::Ended(r) if r.outcome == Outcome::Crash && r.message().ends_with("was stopped")),
        "{end:?}"
    );
}

#[tokio::test]
async fn no_pod_is_created_once_the_claim_has_lapsed() {
    let (claim, lapsed) = Leadership::elected("me");
    claim.renewed(std::time::Instant::now(), Duration::from_secs(10));
    claim.revoke();
    let (api, r, mut events) = runner(lapsed, Retention::default());
    let a = run("late");
    r.start(a.clone());
    let (uuid, end) = released(&mut events).await;
    assert_eq!(uuid, a.uuid);
    assert!(
        matches!(&end, RunEnd::Ended(r) if r.outcome == Outcome::StartFailure && r.message().contains("lease ran out")),
        "{end:?}"
    );
    assert!(api.seen().is_empty(), "{:?}", api.seen());
}

/// Finished pods of one check that no run tracks any more, as the watch shows them.
fn finished_pods(now: DateTime<Utc>) -> Vec<(&'static str, Pod)> {
    let ago = |m: i64| now - chrono::Duration::minutes(m);
    [
        ("s1", 0, ago(30)),
        ("f_old", 1, ago(120)),
        ("f1", 1, ago(40)),
        ("s2", 0, ago(20)),
        ("s3", 0, ago(10)),
        ("f2", 1, ago(5)),
        ("f3", 1, ago(3)),
    ]
    .into_iter()
    .map(|(name, code, at)| {
        let r = run("dns");
        let mut p = pod(
            &r,
            if code == 0 { "Succeeded" } else { "Failed" },
            exited(code, at),
        );
        p.metadata.name = Some(name.into());
        (name, p)
    })
    .collect()
}

#[tokio::test]
async fn retention_keeps_the_newest_deletes_the_rest_once_and_only_on_the_leader() {
    let retention = Retention {
        succeeded: 1,
        failed: 2,
        failed_max_age: Duration::from_secs(3600),
    };
    let (api, r, _events) = runner(leader(), retention.clone());
    let pods = finished_pods(Utc::now());
    for (_, p) in &pods {
        r.pod_seen(p.clone());
    }
    let mut gone = deleted(&api.until(4).await);
    gone.sort();
    assert_eq!(gone, ["f1", "f_old", "s1", "s2"]);
    // Later events of a pod being deleted do not delete it again; a sentinel marks the end.
    r.pod_seen(pods[0].1.clone());
    r.reap_all();
    r.delete("kh", "sentinel");
    let seen = api.until(5).await;
    assert_eq!(deleted(&seen).last().map(String::as_str), Some("sentinel"));
    assert_eq!(deleted(&seen).len(), 5, "{:?}", deleted(&seen));

    let (api, r, _events) = runner(follower(), retention);
    for (_, p) in finished_pods(Utc::now()) {
        r.pod_seen(p);
    }
    r.reap_all();
    r.delete("kh", "sentinel");
    assert_eq!(
        deleted(&api.until(1).await),
        ["sentinel"],
        "a follower reaps nothing"
    );
}

/// A runner whose API server answers pod creations in turn from `answers` (then 201).
fn runner_answering(
    answers: Vec<(u16, &'static str)>,
) -> (StandIn, PodRunner, mpsc::Receiver<Event>) {
    let answers = std::sync::Mutex::new(answers.into_iter());
    let (api, client) = StandIn::start(move |seen, _| match seen.method.as_str() {
        "POST" => match answers.lock().unwrap().next() {
            Some((code, reason)) => standin::status(code, reason),
            None => (201, seen.body.clone().unwrap_or_default()),
        },
        _ => standin::status(404, "NotFound"),
    });
    let (handle, events) = EngineHandle::channel();
    (
        api,
        PodRunner::new(client, handle, BASE, Retention::default(), leader()),
        events,
    )
}

fn posts(api: &StandIn) -> usize {
    api.seen().iter().filter(|s| s.method == "POST").count()
}

#[tokio::test(start_paused = true)]
async fn pod_creation_the_api_server_asks_to_retry_is_retried_and_a_refusal_is_not() {
    // A ServiceAccount applied with its check has no token for a moment: 500 ServerTimeout,
    // "retry after the token is automatically created". Then a lost answer: 409 on the retry.
    let (api, r, mut events) = runner_answering(vec![
        (500, "ServerTimeout"),
        (503, "ServiceUnavailable"),
        (409, "AlreadyExists"),
    ]);
    let a = run("token");
    r.start(a.clone());
    api.until(3).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(posts(&api), 3, "{:?}", api.seen());
    assert!(
        tokio::time::timeout(Duration::from_millis(10), released(&mut events))
            .await
            .is_err(),
        "the run waits for its pod, it did not fail to start"
    );

    // Forbidden is an answer, not a "later": one attempt, the run fails to start at once.
    let (api, r, mut events) = runner_answering(vec![(403, "Forbidden"), (403, "Forbidden")]);
    let b = run("forbidden");
    r.start(b.clone());
    let (uuid, end) = released(&mut events).await;
    assert_eq!(uuid, b.uuid);
    assert!(
        matches!(&end, RunEnd::Ended(r) if r.outcome == Outcome::StartFailure),
        "{end:?}"
    );
    assert_eq!(posts(&api), 1);

    // "Later" for ever: it gives up within the attempts, naming the last answer.
    let (api, r, mut events) = runner_answering(vec![(500, "ServerTimeout"); 20]);
    let c = run("never");
    r.start(c.clone());
    let (uuid, end) = released(&mut events).await;
    assert_eq!(uuid, c.uuid);
    assert!(
        matches!(&end, RunEnd::Ended(r) if r.outcome == Outcome::StartFailure && r.message().starts_with("creating pod ")),
        "{end:?}"
    );
    assert_eq!(posts(&api), 8);
}

#[tokio::test(start_paused = true)]
async fn a_stopped_runs_pod_is_deleted_even_if_the_api_server_fails_at_first() {
    let failures = std::sync::Mutex::new(vec![(503, "ServiceUnavailable"); 2].into_iter());
    let (api, client) = StandIn::start(move |seen, _| match seen.method.as_str() {
        "POST" => (201, seen.body.clone().unwrap_or_default()),
        "DELETE" => match failures.lock().unwrap().next() {
            Some((code, reason)) => standin::status(code, reason),
            None => (
                200,
                serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            ),
        },
        _ => standin::status(404, "NotFound"),
    });
    let (handle, _events) = EngineHandle::channel();
    let r = PodRunner::new(client, handle, BASE, Retention::default(), leader());
    let a = run("slow");
    r.start(a.clone());
    api.until(1).await;
    r.stop(&a.key, a.uuid, StopReason::Timeout);
    api.until(4).await;
    let deletes = api.seen().iter().filter(|s| s.method == "DELETE").count();
    assert_eq!(deletes, 3, "{:?}", api.seen());
}
