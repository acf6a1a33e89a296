use super::*;
use crate::alert::config::Alerting;
use crate::alert::message::{capped_errors, check_link};
use crate::api::CheckKey;

fn message(notice: Notice) -> Message {
    Message {
        key: CheckKey::new("prod", "db"),
        notice,
        since: 1_700_000_000,
        degraded: false,
        now: 1_700_003_700,
        errors: vec!["connect 10.0.0.5:5432: refused <x>".into(), "second".into()],
        link: Some("http://probity.example/checks/prod/db".into()),
        severity: None,
        reason: None,
        cause: Some(Cause::Target),
    }
}

fn kinds() -> Vec<Kind> {
    Alerting::parse(
        r##"
receivers:
  - name: hook
    webhook:
      url: http://127.0.0.1:9/hook
      headers: {Authorization: "Bearer t"}
  - name: tpl
    webhook:
      url: http://127.0.0.1:9/hook
      body: '{"text": {{summary}}, "errs": {{errors}}, "n": {{namespace}}, "all": {{text}}}'
  - name: chat
    slack: {url: "https://hooks.slack.com/services/T/B/X", channel: "#ops"}
  - name: pager
    pagerduty: {routingKey: abc, severity: warning}
  - name: am
    alertmanager: {url: "http://127.0.0.1:9093/am/"}
"##,
    )
    .unwrap()
    .receivers
    .into_iter()
    .map(|(_, k)| k)
    .collect()
}

#[test]
fn the_webhook_document_names_everything() {
    let k = &kinds()[0];
    let r = request(k, &message(Notice::Firing));
    assert_eq!(
        r.body,
        json!({
            "version": "1",
            "id": "prod/db/1700000000/firing",
            "check": "db",
            "namespace": "prod",
            "state": "failing",
            "since": "2023-11-14T22:13:20Z",
            "errors": ["connect 10.0.0.5:5432: refused <x>", "second"],
            "link": "http://probity.example/checks/prod/db",
            "summary": "prod/db is failing",
            "cause": "target",
        })
    );
    let names: Vec<_> = r.headers.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["authorization", "x-probity-notification-id"]);
    let r = request(k, &message(Notice::Resolved));
    assert_eq!(r.body["state"], "resolved");
    assert!(r.body.get("cause").is_none(), "a resolve has no cause");
    assert_eq!(
        r.body["summary"],
        "prod/db recovered after failing for 1h 1m"
    );
}

#[test]
fn a_template_gets_json_values_whatever_they_hold() {
    let mut m = message(Notice::Firing);
    m.errors = vec!["quote \" and\nnewline".into()];
    let r = request(&kinds()[1], &m);
    assert_eq!(
        r.body,
        json!({
            "text": "prod/db is failing",
            "errs": ["quote \" and\nnewline"],
            "n": "prod",
            "all": "prod/db is failing\nquote \" and\nnewline",
        })
    );
}

#[test]
fn slack_gets_text_with_the_errors_escaped() {
    let r = request(&kinds()[2], &message(Notice::Firing));
    assert_eq!(r.body["channel"], "#ops");
    assert_eq!(
        r.body["text"],
        ":red_circle: *prod/db* is failing\n> connect 10.0.0.5:5432: refused &lt;x&gt;\n> second\n<http://probity.example/checks/prod/db|status page>"
    );
    let r = request(&kinds()[2], &message(Notice::Resolved));
    assert!(r.body["text"]
        .as_str()
        .unwrap()
        .starts_with(":large_green_circle: *prod/db* recovered after failing for 1h 1m"));
}

#[test]
fn pagerduty_triggers_and_resolves_one_incident_per_check() {
    let k = &kinds()[3];
    let t = request(k, &message(Notice::Firing));
    assert_eq!(t.url.as_str(), "https://events.pagerduty.com/v2/enqueue");
    assert_eq!(t.body["event_action"], "trigger");
    assert_eq!(t.body["dedup_key"], "probity/prod/db");
    assert_eq!(t.body["routing_key"], "abc");
    assert_eq!(t.body["payload"]["severity"], "warning");
    assert_eq!(t.body["payload"]["source"], "probity");
    assert_eq!(t.body["payload"]["custom_details"]["errors"][1], "second");
    assert_eq!(
        t.body["links"][0]["href"],
        "http://probity.example/checks/prod/db"
    );
    let again = request(k, &message(Notice::Reminder));
    assert_eq!(again.body["dedup_key"], t.body["dedup_key"]);
    let r = request(k, &message(Notice::Resolved));
    assert_eq!(
        r.body,
        json!({"routing_key": "abc", "event_action": "resolve", "dedup_key": "probity/prod/db"})
    );
    // The check's own severity label wins when PagerDuty knows it.
    let mut m = message(Notice::Firing);
    m.severity = Some("critical".into());
    assert_eq!(request(k, &m).body["payload"]["severity"], "critical");
    m.severity = Some("sev1".into());
    assert_eq!(request(k, &m).body["payload"]["severity"], "warning");
    // A long summary is cut to PagerDuty's 1024 characters.
    m.key = CheckKey::new("prod", &"é".repeat(2000));
    let s = request(k, &m).body["payload"]["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(s.len() <= 1024 && s.ends_with("..."), "{}", s.len());
}

#[test]
fn alertmanager_gets_one_alert_that_a_resolve_ends() {
    let k = &kinds()[4];
    let f = request(k, &message(Notice::Firing));
    assert_eq!(f.url.as_str(), "http://127.0.0.1:9093/am/api/v2/alerts");
    let a = &f.body[0];
    assert_eq!(
        a["labels"],
        json!({"alertname": "ProbityCheckFailing", "namespace": "prod", "check": "db"})
    );
    assert_eq!(a["startsAt"], "2023-11-14T22:13:20Z");
    assert!(a.get("endsAt").is_none());
    assert_eq!(a["generatorURL"], "http://probity.example/checks/prod/db");
    let r = request(k, &message(Notice::Resolved));
    assert_eq!(r.body[0]["labels"], a["labels"], "the same alert");
    assert_eq!(r.body[0]["endsAt"], "2023-11-14T23:15:00Z");
}

#[test]
fn a_degraded_spell_is_said_as_one_everywhere() {
    let mut m = message(Notice::Firing);
    m.degraded = true;
    // The check's own severity is for its failures: a degradation is a warning.
    m.severity = Some("critical".into());
    m.errors = vec!["GET https://shop/: certificate expires in 9 days, under 14d".into()];
    let hook = request(&kinds()[0], &m).body;
    assert_eq!(
        (hook["state"].as_str(), hook["summary"].as_str()),
        (Some("degraded"), Some("prod/db is degraded"))
    );
    let am = &request(&kinds()[4], &m).body[0];
    assert_eq!(
        am["labels"],
        json!({"alertname": "ProbityCheckDegraded", "namespace": "prod", "check": "db", "severity": "warning"})
    );
    let pd = request(&kinds()[3], &m).body;
    assert_eq!(pd["payload"]["severity"], "warning");
    m.notice = Notice::Resolved;
    assert_eq!(
        request(&kinds()[0], &m).body["summary"],
        "prod/db recovered after being degraded for 1h 1m"
    );
}

#[test]
fn slack_shows_what_a_check_holds_as_text_and_within_its_limits() {
    let mut m = message(Notice::Firing);
    m.key = CheckKey::new("it", "<!channel> & <http://evil|click>");
    m.link = Some(check_link("http://probity.example/base", &m.key));
    m.errors = capped_errors(&["x".repeat(60_000), "<!here>".into()]);
    let text = request(&kinds()[2], &m).body["text"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        text.starts_with(
            ":red_circle: *it/&lt;!channel&gt; &amp; &lt;http://evil|click&gt;* is failing\n> xxx"
        ),
        "{text}"
    );
    assert!(text.contains("\n> &lt;!here&gt;\n"), "{text}");
    // The only markup left is the link probity made, its parts encoded.
    assert!(text.ends_with("\n<http://probity.example/base/checks/it/%3C!channel%3E%20&%20%3Chttp:%2F%2Fevil%7Cclick%3E|status page>"), "{text}");
    assert_eq!(text.matches('<').count(), 1, "{text}");
    assert!(text.chars().count() < 6_000, "{}", text.chars().count());
    assert!(
        text.contains("x… (59000 more characters)"),
        "the cut is said"
    );
    // More errors than shown are counted.
    m.errors = (0..9).map(|i| format!("e{i}")).collect();
    let text = request(&kinds()[2], &m).body["text"].to_string();
    assert!(text.contains("> e4\\n> _and 4 more errors_"), "{text}");
}

#[test]
fn every_body_states_the_errors_once() {
    let m = message(Notice::Firing);
    // (A template says what its author wrote.)
    for k in kinds()
        .into_iter()
        .filter(|k| !matches!(k, Kind::Webhook { body: Some(_), .. }))
    {
        let body = request(&k, &m).body.to_string();
        assert_eq!(body.matches("refused").count(), 1, "{}: {body}", k.name());
    }
}

fn one(yaml: &str) -> Kind {
    Alerting::parse(&format!("receivers:\n  - name: r\n    {yaml}\n"))
        .unwrap()
        .receivers
        .remove(0)
        .1
}

#[test]
fn opsgenie_creates_one_alert_per_check_and_closes_it_by_alias() {
    let k = one("opsgenie: {apiKey: k3y, url: \"https://api.eu.opsgenie.com\"}");
    let t = request(&k, &message(Notice::Firing));
    assert_eq!(t.url.as_str(), "https://api.eu.opsgenie.com/v2/alerts");
    assert_eq!(t.headers[0].1, "GenieKey k3y");
    assert_eq!(t.body["alias"], "probity/prod/db");
    assert_eq!(t.body["priority"], "P3", "Opsgenie's default");
    assert_eq!(
        t.body["description"],
        "connect 10.0.0.5:5432: refused <x>\nsecond"
    );
    assert_eq!(t.body["details"]["cause"], "target");
    let r = request(&k, &message(Notice::Resolved));
    assert_eq!(
        r.url.as_str(),
        "https://api.eu.opsgenie.com/v2/alerts/probity%2Fprod%2Fdb/close?identifierType=alias"
    );
    assert_eq!(r.body["source"], "probity");
    let mut m = message(Notice::Firing);
    m.key = CheckKey::new("prod", &"x".repeat(300));
    let long = request(&k, &m).body["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(long.chars().count(), 130);
}

#[test]
fn teams_gets_an_adaptive_card_of_bounded_size() {
    let k = one("teams: {url: \"https://example.webhook.office.com/x\"}");
    let mut m = message(Notice::Firing);
    m.errors = capped_errors(&vec!["é".repeat(5000); 30]);
    let card = request(&k, &m).body;
    assert_eq!(card["attachments"][0]["content"]["version"], "1.4");
    assert!(
        card.to_string().len() < 28_000,
        "{}",
        card.to_string().len()
    );
    assert!(card.to_string().contains("and 11 more errors"));
    let r = request(&k, &message(Notice::Resolved)).body;
    assert_eq!(r["attachments"][0]["content"]["body"][0]["color"], "Good");
}

#[test]
fn mail_says_the_summary_in_its_subject_and_the_rest_in_its_text() {
    let k = one(
        "email: {smarthost: \"mail.example.com:587\", from: p@example.com, to: [a@example.com]}",
    );
    let Delivery::Mail(mail) = delivery(&k, &message(Notice::Firing)) else {
        panic!("a mail");
    };
    assert_eq!(mail.subject, "[probity] prod/db is failing");
    assert_eq!(
        mail.body,
        "prod/db is failing\nconnect 10.0.0.5:5432: refused <x>\nsecond\n\nCause: target\nStatus page: http://probity.example/checks/prod/db\nNotification id: prod/db/1700000000/firing\n"
    );
    assert_eq!(mail.account.port, 587);
    assert_eq!(
        mail.account.security,
        mail::Security::StartTls { ca_file: None },
        "STARTTLS unless told otherwise"
    );
}

#[test]
fn mail_mistakes_name_the_field() {
    for (yaml, want) in [
        ("email: {smarthost: mail, from: p@x, to: [a@x]}", "receivers[0].email.smarthost: \"mail\" is not host:port"),
        ("email: {smarthost: \"m:25\", from: nobody, to: [a@x]}", "receivers[0].email.from: \"nobody\" is not a mail address"),
        ("email: {smarthost: \"m:25\", from: p@x, to: []}", "receivers[0].email.to: names no address"),
        ("email: {smarthost: \"m:25\", from: p@x, to: [a@x], username: u}", "receivers[0].email: username and a password go together"),
        ("email: {smarthost: \"m:25\", from: p@x, to: [a@x], username: u, password: p, tls: none}", "receivers[0].email.tls: none would send the password in plain text"),
        ("email: {smarthost: \"m:25\", from: p@x, to: [a@x], tls: ssl}", "receivers[0].email.tls: \"ssl\" is not starttls or none"),
        ("email: {smarthost: \"m:25\", from: p@x, to: [a@x], passwordFile: /nonexistent/pw, username: u}", "receivers[0].email.passwordFile: /nonexistent/pw: "),
        ("opsgenie: {apiKey: k, priority: P9}", "receivers[0].opsgenie.priority: \"P9\" is not P1, P2, P3, P4 or P5"),
        ("teams: {url: nope}", "receivers[0].teams.url: "),
    ] {
        let e = Alerting::parse(&format!("receivers:\n  - name: r\n    {yaml}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(want), "{yaml}\n  gave: {e}\n  want: {want}");
    }
}

#[test]
fn the_readme_recipes_give_what_discord_and_ntfy_take() {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("```yaml\nreceivers:\n  # Discord")
        .expect("the README's recipes")
        + "```yaml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let kinds: Vec<Kind> = Alerting::parse(&readme[start..end])
        .unwrap()
        .receivers
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    let mut m = message(Notice::Firing);
    m.errors = capped_errors(&vec!["\"quoted\" <and> long ".repeat(200); 25]);
    let discord = request(&kinds[0], &m);
    assert_eq!(
        discord.url.as_str(),
        "https://discord.com/api/webhooks/ID/TOKEN"
    );
    let content = discord.body["content"]
        .as_str()
        .expect("content is a string");
    // Discord takes at most 2,000 characters of content.
    assert!(
        content.chars().count() <= 2_000,
        "{}",
        content.chars().count()
    );
    assert!(content.starts_with("prod/db is failing\n\"quoted\""));
    let ntfy = request(&kinds[1], &m);
    assert_eq!(ntfy.body["topic"], "probity-alerts");
    assert_eq!(ntfy.body["title"], "prod/db is failing");
    assert!(ntfy.body["message"].as_str().unwrap().chars().count() <= 2_000);
    let resolved = request(&kinds[1], &message(Notice::Resolved));
    assert_eq!(
        resolved.body["message"],
        "prod/db recovered after failing for 1h 1m"
    );
}

#[test]
fn urls_in_messages_keep_their_secrets() {
    let u = url::Url::parse("https://hooks.slack.com/services/T/B/SECRET?token=x").unwrap();
    assert_eq!(redacted(&u), "https://hooks.slack.com/…");
}
