//! The classic Prometheus text format (0.0.4) from the client library's OpenMetrics output.

use std::fmt::Write as _;

/// Turns OpenMetrics exposition into the classic text format as it is written. The two differ
/// only in what this does: counter families are declared under their sample name (`x_total`),
/// and the OpenMetrics-only `# UNIT` and `# EOF` lines (and `_created` series) go.
#[derive(Default)]
pub(super) struct TextFormat {
    out: String,
    line: String,
    /// A `# HELP` line waiting for its `# TYPE` line, which says whether it is a counter.
    help: Option<String>,
    counter: Option<String>,
}

impl std::fmt::Write for TextFormat {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let mut rest = s;
        while let Some(i) = rest.find('\n') {
            self.line.push_str(&rest[..i]);
            self.end_line();
            rest = &rest[i + 1..];
        }
        self.line.push_str(rest);
        Ok(())
    }
}

impl TextFormat {
    pub(super) fn with_capacity(bytes: usize) -> Self {
        TextFormat {
            out: String::with_capacity(bytes),
            ..Default::default()
        }
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        if line == "# EOF" || line.starts_with("# UNIT ") {
        } else if line.starts_with("# HELP ") {
            self.help = Some(line);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let suffix = if kind == "counter" { "_total" } else { "" };
            self.counter = (kind == "counter").then(|| name.to_string());
            if let Some(help) = self.help.take() {
                let text = help.strip_prefix("# HELP ").unwrap_or("");
                let text = text.strip_prefix(name).unwrap_or(text);
                let _ = writeln!(self.out, "# HELP {name}{suffix}{text}");
            }
            let _ = writeln!(self.out, "# TYPE {name}{suffix} {kind}");
        } else {
            let series = line.split(['{', ' ']).next().unwrap_or("");
            let created = self
                .counter
                .as_deref()
                .is_some_and(|c| series.strip_suffix("_created") == Some(c));
            if !created {
                self.out.push_str(&line);
                self.out.push('\n');
            }
        }
    }

    pub(super) fn finish(mut self) -> String {
        if !self.line.is_empty() {
            self.end_line();
        }
        self.out
    }
}
