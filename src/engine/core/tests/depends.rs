//! `spec.dependsOn` across checks: unknown names and cycles make a check invalid, naming the
//! entry, and are settled again as checks come and go.

use super::*;

fn invalid(e: &Engine, name: &str) -> Option<String> {
    e.view(&key(name)).invalid
}

#[test]
fn a_dependency_no_check_has_is_named_until_it_appears() {
    let mut e = engine(0);
    e.upsert(t0(), check("web", "  dependsOn: [db, other/cache]\n"), None);
    assert_eq!(
        invalid(&e, "web").as_deref(),
        Some("spec.dependsOn[0]: no check is named ns/db; spec.dependsOn[1]: no check is named other/cache")
    );
    assert!(
        starts(&e.tick(t0() + secs(3600))).is_empty(),
        "an invalid check does not run"
    );
    e.upsert(t0(), check("db", ""), None);
    assert_eq!(
        invalid(&e, "web").as_deref(),
        Some("spec.dependsOn[1]: no check is named other/cache")
    );
    let mut cache = (*check("cache", "").check).clone();
    cache.metadata.namespace = Some("other".into());
    e.upsert(t0(), Desired::new(Arc::new(cache), None), None);
    assert_eq!(invalid(&e, "web"), None);
    assert_eq!(
        e.view(&key("web")).depends_on,
        [key("db"), CheckKey::new("other", "cache")]
    );
    // Valid again: it is scheduled and runs.
    assert!(starts(&e.tick(t0() + secs(3600)))
        .iter()
        .any(|(k, _)| *k == key("web")));
    // Its dependency deleted: invalid again, saying so.
    e.remove(t0() + secs(3700), &key("db"));
    assert!(invalid(&e, "web")
        .unwrap()
        .contains("no check is named ns/db"));
}

#[test]
fn a_cycle_is_named_with_its_path_on_every_check_in_it() {
    let mut e = engine(0);
    e.upsert(t0(), check("a", "  dependsOn: [b]\n"), None);
    e.upsert(t0(), check("b", "  dependsOn: [c]\n"), None);
    e.upsert(t0(), check("c", ""), None);
    assert_eq!(invalid(&e, "a"), None);
    e.upsert(t0(), check("c", "  dependsOn: [a]\n"), None);
    assert_eq!(
        invalid(&e, "c").as_deref(),
        Some("spec.dependsOn[0]: ns/a depends back on this check: ns/c → ns/a → ns/b → ns/c")
    );
    assert_eq!(
        invalid(&e, "a").as_deref(),
        Some("spec.dependsOn[0]: ns/b depends back on this check: ns/a → ns/b → ns/c → ns/a")
    );
    assert!(invalid(&e, "b").is_some());
    // Broken: all valid again.
    e.upsert(t0(), check("c", ""), None);
    for n in ["a", "b", "c"] {
        assert_eq!(invalid(&e, n), None, "{n}");
    }
}

#[test]
fn an_echo_of_the_same_spec_keeps_what_the_other_checks_said() {
    let mut e = engine(0);
    e.upsert(t0(), check("web", "  dependsOn: [db]\n"), None);
    // A watch echo (same spec, saved status) does not clear it.
    let saved = (*e.view(&key("web")).status).clone();
    e.upsert(t0(), check("web", "  dependsOn: [db]\n"), Some(saved));
    e.upsert(t0(), check("web", "  dependsOn: [db]\n"), None);
    assert!(invalid(&e, "web").is_some());
}

#[test]
fn entries_that_are_not_names_are_refused_on_their_own() {
    let mut e = engine(0);
    e.upsert(
        t0(),
        check("web", "  dependsOn: [web, \"Not A Name\", x, x]\n"),
        None,
    );
    assert_eq!(
        invalid(&e, "web").as_deref(),
        Some("spec.dependsOn[0]: \"web\" is this check itself; spec.dependsOn[1]: \"Not A Name\" is not NAME or NAMESPACE/NAME of a check; spec.dependsOn[3]: \"x\" is listed twice")
    );
}
