//! Webhook body templates: the placeholders, checking a template when the configuration is
//! read, and filling one in with a notice's values.

use serde_json::Value;

/// The placeholders a webhook body may use.
pub const PLACEHOLDERS: &[&str] = &[
    "check",
    "namespace",
    "state",
    "since",
    "errors",
    "link",
    "summary",
    "text",
    "brief",
    "id",
    "reason",
    "cause",
];

/// What is wrong with a webhook body template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadTemplate {
    #[error("a {{{{ at byte {0} is never closed")]
    Unclosed(usize),
    #[error("unknown placeholder {{{{{0}}}}} (known: {known})", known = PLACEHOLDERS.join(", "))]
    Unknown(String),
}

/// A template uses only known placeholders and every `{{` is closed.
pub(super) fn check_template(t: &str) -> std::result::Result<(), BadTemplate> {
    let mut rest = t;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let end = after
            .find("}}")
            .ok_or(BadTemplate::Unclosed(t.len() - rest.len() + i))?;
        let name = after[..end].trim();
        if !PLACEHOLDERS.contains(&name) {
            return Err(BadTemplate::Unknown(name.to_string()));
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

/// Replaces each `{{name}}` by the JSON of `values[name]`.
pub(super) fn fill(template: &str, values: &Value) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[i..]);
            return out;
        };
        let name = after[..end].trim();
        out.push_str(&values.get(name).unwrap_or(&Value::Null).to_string());
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}
