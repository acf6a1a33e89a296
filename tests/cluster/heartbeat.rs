//! Heartbeat checks on the real API server, across a failover: a ping taken by a follower is
//! stored at once and counted by the leader; after the leader dies, the next one counts from
//! the last ping, and records silence once it lasts past period + grace.

use crate::backend::{create, leader_is, replica, runs, setup, status, wait};
use crate::testkube::{check, pod_reachable_addr};

#[tokio::test]
async fn pings_to_any_replica_are_kept_across_a_failover_and_silence_fails() {
    let Some(s) = setup("probity-heartbeat").await else {
        return;
    };
    let (c, ns) = (&s.client, s.ns.as_str());
    let (a_addr, b_addr) = (pod_reachable_addr(), pod_reachable_addr());
    let mut a = replica(ns, "replica-a", &a_addr, &a_addr);
    leader_is(&a, "replica-a").await;
    let b = replica(ns, "replica-b", &b_addr, &a_addr);
    leader_is(&b, "replica-a").await;
    let token = probity::api::heartbeat::new_token();
    let hash = probity::api::heartbeat::token_hash(&token);
    create(
        c,
        &check(
            ns,
            "backup",
            &format!("  heartbeat: {{period: 10s, grace: 2s, tokenHash: '{hash}'}}\n"),
        ),
    )
    .await;
    wait("the follower to see the check", async || {
        let d = b.json().await;
        d["CheckDetails"][format!("{ns}/backup")]
            .is_object()
            .then_some(())
    })
    .await;
    let ping = |to: &str, token: &str| {
        reqwest::Client::new()
            .post(format!("http://{to}/api/heartbeat/{ns}/backup"))
            .bearer_auth(token.to_string())
            .send()
    };
    // A bad token to the follower: 401, nothing stored.
    assert_eq!(ping(&b_addr, "wrong").await.unwrap().status(), 401);
    assert!(status(c, ns, "backup").await.last_ping_unix.is_none());
    // A ping to the follower: stored before its 200, and the leader sees it.
    let r = ping(&b_addr, &token).await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let st = status(c, ns, "backup").await;
    assert_eq!(st.success_count, 1, "durable before the 200");
    let pinged = st.last_ping_unix.expect("the ping is stored");
    let key = format!("{ns}/backup");
    a.wait_for("the leader to see the ping", |d| {
        d["CheckDetails"][&key]["SuccessCount"] == 1
    })
    .await;
    // The leader dies; the follower takes over and counts from the stored ping.
    a.kill9();
    leader_is(&b, "replica-b").await;
    let st = runs(c, ns, "backup", 2).await;
    let miss = &st.history[0];
    assert_eq!(miss.outcome, Some(probity::api::Outcome::Failure));
    assert!(
        miss.start_unix >= pinged + 12,
        "no miss before period + grace after the ping ({pinged}), got one at {}",
        miss.start_unix
    );
    let since = format!(
        "no ping since {} (",
        probity::api::duration::rfc3339(pinged)
    );
    assert!(
        miss.errors[0].starts_with(&since)
            && miss.errors[0].ends_with(" ago; expected every 10s, grace 2s)"),
        "{:?} in {st:#?}",
        miss.errors
    );
    assert!(!st.ok, "silence fails the check");
    assert_eq!(st.success_count, 1, "the ping is counted once");
    // A ping recovers it, through the new leader.
    let r = ping(&b_addr, &token).await.unwrap();
    assert_eq!(r.status(), 200);
    let st = status(c, ns, "backup").await;
    assert!(st.ok && st.success_count == 2, "{st:?}");
}
