//! Checks that leave with open alerts are kept until their receivers are told.

use super::*;
use crate::api::AlertRecord;

fn keeping() -> Engine {
    Engine::new(EngineConfig {
        keep_departed: true,
        ..EngineConfig::new("replica-a")
    })
}

fn open(receiver: &str) -> AlertRecord {
    AlertRecord {
        receiver: receiver.into(),
        since_unix: 1,
        firing: true,
        sent_unix: 2,
        flapping: false,
        degraded: false,
    }
}

fn forgotten(effects: &[Effect]) -> bool {
    effects.iter().any(|e| matches!(e, Effect::Forget { .. }))
}

#[test]
fn a_check_deleted_with_an_open_alert_stays_until_it_is_resolved() {
    let mut e = keeping();
    e.upsert(t0(), check("db", ""), None);
    e.notified(&key("db"), open("hook"));
    e.notified(&key("db"), open("pager"));
    let fx = e.remove(t0() + secs(5), &key("db"));
    assert!(!forgotten(&fx));
    let v = e.view(&key("db"));
    assert_eq!(v.departed.as_deref(), Some("the check was deleted"));
    let d = v.status.departed.clone().unwrap();
    assert_eq!(d.at_unix, (t0() + secs(5)).timestamp());
    assert!(persisted(&fx) > 0, "why it is kept is saved");
    // It runs no more.
    assert!(starts(&e.tick(t0() + secs(7200))).is_empty());
    assert_eq!(e.view(&key("db")).status.next_run_unix, None);
    // Each receiver told: then it goes.
    let mut told = open("hook");
    told.firing = false;
    assert!(!forgotten(&e.notified(&key("db"), told)));
    let mut told = open("pager");
    told.firing = false;
    assert!(forgotten(&e.notified(&key("db"), told)));
}

#[test]
fn a_check_deleted_with_nothing_open_goes_at_once_and_one_that_comes_back_is_a_check_again() {
    let mut e = keeping();
    e.upsert(t0(), check("quiet", ""), None);
    assert!(forgotten(&e.remove(t0(), &key("quiet"))));
    e.upsert(t0(), check("db", ""), None);
    e.notified(&key("db"), open("hook"));
    e.remove(t0(), &key("db"));
    assert!(e.view(&key("db")).departed.is_some());
    // Its file is back before the alert was resolved.
    e.upsert(t0() + secs(1), check("db", ""), None);
    let v = e.view(&key("db"));
    assert_eq!(v.departed, None);
    assert_eq!(v.status.departed, None);
    assert!(v.status.next_run_unix.is_some(), "scheduled again");
}

#[test]
fn in_a_cluster_the_engine_only_departs_as_told_and_the_watch_removes() {
    let mut e = engine(0);
    e.upsert(t0(), check("db", ""), None);
    e.notified(&key("db"), open("hook"));
    // Being deleted (held by the finalizer): departed, not removed, whatever it is told.
    let being_deleted = Desired::departing(check("db", "").check, crate::engine::DELETED);
    e.upsert(t0(), being_deleted, None);
    // Every status write comes back on the watch as the same departure: not written again.
    let again = Desired::departing(check("db", "").check, crate::engine::DELETED);
    assert_eq!(persisted(&e.upsert(t0() + secs(1), again, None)), 0);
    let mut told = open("hook");
    told.firing = false;
    assert!(!forgotten(&e.notified(&key("db"), told)));
    assert!(e.view(&key("db")).departed.is_some());
    // Gone from the API server.
    assert!(forgotten(&e.remove(t0(), &key("db"))));
}
