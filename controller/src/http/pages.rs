//! The web UI: small HTML shells for the runs list, a run, the agents and the queues, and the
//! embedded CSS/JS that fill them from the JSON API and its event streams. No build step: the
//! assets are plain files compiled into the binary with `include_str!`.

use super::App;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// `(name, content type, content)` of every asset.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.css", "text/css", include_str!("assets/app.css")),
    (
        "common.js",
        "text/javascript",
        include_str!("assets/common.js"),
    ),
    (
        "console.js",
        "text/javascript",
        include_str!("assets/console.js"),
    ),
    ("dag.js", "text/javascript", include_str!("assets/dag.js")),
    ("run.js", "text/javascript", include_str!("assets/run.js")),
    ("step.js", "text/javascript", include_str!("assets/step.js")),
    ("runs.js", "text/javascript", include_str!("assets/runs.js")),
    (
        "fleet.js",
        "text/javascript",
        include_str!("assets/fleet.js"),
    ),
];

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A page: the navigation bar, an empty `<main>` and the scripts that fill it.
fn shell(title: &str, page: &str, data: &[(&str, &str)], scripts: &[&str]) -> String {
    let attrs: String = data
        .iter()
        .map(|(k, v)| format!(" data-{k}=\"{}\"", esc(v)))
        .collect();
    let scripts: String = scripts
        .iter()
        .map(|s| format!("<script src=\"/assets/{s}\"></script>"))
        .collect();
    let nav = |href: &str, label: &str, key: &str| {
        let current = if key == page {
            " aria-current=\"page\""
        } else {
            ""
        };
        format!("<a href=\"{href}\"{current}>{label}</a>")
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{}</title><link rel=\"stylesheet\" href=\"/assets/app.css\"></head>\
<body data-page=\"{page}\"{attrs}><header><a class=\"brand\" href=\"/\">drover</a><nav>{}{}{}</nav>\
<span id=\"live\" class=\"live\"></span></header><main id=\"app\"><p class=\"muted\">loading…</p></main>\
<script src=\"/assets/common.js\"></script>{scripts}</body></html>",
        esc(title),
        nav("/", "Runs", "runs"),
        nav("/agents", "Agents", "agents"),
        nav("/queues", "Queues", "queues"),
    )
}

pub async fn runs_page() -> Html<String> {
    Html(shell("drover: runs", "runs", &[], &["runs.js"]))
}

pub async fn agents_page() -> Html<String> {
    Html(shell("drover: agents", "agents", &[], &["fleet.js"]))
}

pub async fn queues_page() -> Html<String> {
    Html(shell("drover: queues", "queues", &[], &["fleet.js"]))
}

pub async fn run_page(State(app): State<App>, Path(run): Path<String>) -> Response {
    match app.run(&run) {
        Ok(record) => Html(shell(
            &format!("{} · drover", record.name),
            "run",
            &[("run", record.run_id.as_str())],
            &["console.js", "dag.js", "step.js", "run.js"],
        ))
        .into_response(),
        Err(e) => {
            let body = format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>drover</title>\
<link rel=\"stylesheet\" href=\"/assets/app.css\"></head><body><main><h1>{}</h1>\
<p><a href=\"/\">all runs</a></p></main></body></html>",
                esc(e.message())
            );
            (e.status(), Html(body)).into_response()
        }
    }
}

pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, content)) => {
            let mut response = (*content).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            // Assets change with the binary; revalidating is cheap and never serves stale code.
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        None => (StatusCode::NOT_FOUND, format!("no asset {name:?}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn shells_name_their_scripts_and_escape_data() {
        let page = super::shell("a<b", "run", &[("run", "x\"y")], &["run.js"]);
        assert!(page.contains("<title>a&lt;b</title>"), "{page}");
        assert!(page.contains("data-run=\"x&quot;y\""), "{page}");
        assert!(page.contains("/assets/run.js"), "{page}");
    }
}
