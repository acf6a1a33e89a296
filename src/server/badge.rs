//! SVG badges for README files and wikis: `GET /api/badges/NAMESPACE/NAME/status` (passing,
//! failing, pending, invalid) and `.../uptime/24h|7d|30d` (the share of runs that passed). Flat,
//! shields.io-like, no external assets; text widths estimated from the font's average advance.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::api::aggregate;
use crate::api::CheckKey;

const GREEN: &str = "#4c1";
const YELLOW_GREEN: &str = "#97ca00";
const YELLOW: &str = "#dfb317";
const RED: &str = "#e05d44";
const GREY: &str = "#9f9f9f";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Verdana 11px averages about 6.5 px a character; badges pad each side by 6 px.
fn width(text: &str) -> usize {
    (text.chars().count() as f64 * 6.5).ceil() as usize + 12
}

/// A two-part badge: `label` on grey, `value` on `color`.
pub fn svg(label: &str, value: &str, color: &str) -> String {
    let (lw, vw) = (width(label), width(value));
    let total = lw + vw;
    let (label, value) = (escape(label), escape(value));
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" aria-label="{label}: {value}"><title>{label}: {value}</title><linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient><clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" width="{vw}" height="20" fill="{color}"/><rect width="{total}" height="20" fill="url(#s)"/></g><g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11"><text x="{lx}" y="14">{label}</text><text x="{vx}" y="14">{value}</text></g></svg>"##,
        lx = lw / 2,
        vx = lw + vw / 2,
    )
}

fn badge(code: StatusCode, body: String) -> Response {
    (
        code,
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            // Shown from other sites (README files through image proxies): never stale for long.
            (header::CACHE_CONTROL, "no-cache, max-age=0"),
        ],
        body,
    )
        .into_response()
}

fn unknown(name: &str) -> Response {
    badge(StatusCode::NOT_FOUND, svg(name, "unknown check", GREY))
}

/// The color of an uptime: green from 99.9 %, yellow-green from 99 %, yellow from 95 %.
pub fn uptime_color(ratio: f64) -> &'static str {
    match ratio {
        r if r >= 0.999 => GREEN,
        r if r >= 0.99 => YELLOW_GREEN,
        r if r >= 0.95 => YELLOW,
        _ => RED,
    }
}

/// An uptime as a badge shows it: two decimals below 100 %, never rounded up to 100 %.
pub fn percent(ratio: f64) -> String {
    if ratio >= 1.0 {
        return "100%".into();
    }
    let p = (ratio * 10_000.0).floor() / 100.0;
    format!("{p:.2}%")
}

pub async fn status(
    State(st): State<AppState>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let Some(v) = st.board.get(&CheckKey::new(&namespace, &name)) else {
        return unknown(&name);
    };
    let (value, color) = if v.invalid.is_some() {
        ("invalid", GREY)
    } else if v.status.is_pending() {
        ("pending", GREY)
    } else if v.effective_ok() {
        ("passing", GREEN)
    } else {
        ("failing", RED)
    };
    badge(StatusCode::OK, svg(&name, value, color))
}

pub async fn uptime(
    State(st): State<AppState>,
    Path((namespace, name, window)): Path<(String, String, String)>,
) -> Response {
    let Some(v) = st.board.get(&CheckKey::new(&namespace, &name)) else {
        return unknown(&name);
    };
    let u = aggregate::uptime(&v.status, chrono::Utc::now());
    let ratio = match window.as_str() {
        "24h" => u.day,
        "7d" => u.week,
        "30d" => u.month,
        other => {
            return badge(
                StatusCode::NOT_FOUND,
                svg(&format!("uptime {other}"), "use 24h, 7d or 30d", GREY),
            )
        }
    };
    let label = format!("{name} {window}");
    match ratio {
        Some(r) => badge(StatusCode::OK, svg(&label, &percent(r), uptime_color(r))),
        None => badge(StatusCode::OK, svg(&label, "no runs", GREY)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_is_never_rounded_up_to_a_full_hundred() {
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(0.99999), "99.99%");
        assert_eq!(percent(0.5), "50.00%");
        assert_eq!(percent(0.0), "0.00%");
        assert_eq!(uptime_color(0.9995), GREEN);
        assert_eq!(uptime_color(0.995), YELLOW_GREEN);
        assert_eq!(uptime_color(0.96), YELLOW);
        assert_eq!(uptime_color(0.5), RED);
    }

    #[test]
    fn a_badge_is_one_svg_with_its_text_escaped_and_sized_to_it() {
        let s = svg("a<b", "passing", GREEN);
        assert!(s.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(s.contains("<title>a&lt;b: passing</title>"));
        assert!(!s.contains("a<b"));
        let (short, long) = (
            svg("dns", "ok", GREEN),
            svg("a-much-longer-check-name", "ok", GREEN),
        );
        let w = |s: &str| {
            s.split("width=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        };
        assert!(w(&long) > w(&short) + 100);
    }
}
