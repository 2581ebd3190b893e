//! The web UI: small HTML shells for the runs list, a run, the agents and the queues, and the
//! embedded CSS and JavaScript modules that fill them from the JSON API and its event streams.
//! No build step: the assets are plain files compiled into the binary with `include_str!`; each
//! page loads one entry module, which imports what it uses from the others.

use super::App;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// The content type of the JavaScript modules.
const JAVASCRIPT: &str = "text/javascript";

/// `(name, content type, content)` of every asset.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.css", "text/css", include_str!("assets/app.css")),
    ("common.js", JAVASCRIPT, include_str!("assets/common.js")),
    ("console.js", JAVASCRIPT, include_str!("assets/console.js")),
    ("dag.js", JAVASCRIPT, include_str!("assets/dag.js")),
    ("run.js", JAVASCRIPT, include_str!("assets/run.js")),
    ("step.js", JAVASCRIPT, include_str!("assets/step.js")),
    ("runs.js", JAVASCRIPT, include_str!("assets/runs.js")),
    ("fleet.js", JAVASCRIPT, include_str!("assets/fleet.js")),
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

/// A page: the navigation bar, an empty `<main>` and the entry module that fills it.
fn shell(title: &str, page: &str, data: &[(&str, &str)], module: &str) -> String {
    let attrs: String = data
        .iter()
        .map(|(k, v)| format!(" data-{k}=\"{}\"", esc(v)))
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
<script type=\"module\" src=\"/assets/{module}\"></script></body></html>",
        esc(title),
        nav("/", "Runs", "runs"),
        nav("/agents", "Agents", "agents"),
        nav("/queues", "Queues", "queues"),
    )
}

pub async fn runs_page() -> Html<String> {
    Html(shell("drover: runs", "runs", &[], "runs.js"))
}

pub async fn agents_page() -> Html<String> {
    Html(shell("drover: agents", "agents", &[], "fleet.js"))
}

pub async fn queues_page() -> Html<String> {
    Html(shell("drover: queues", "queues", &[], "fleet.js"))
}

pub async fn run_page(State(app): State<App>, Path(run): Path<String>) -> Response {
    match app.run(&run) {
        Ok(record) => Html(shell(
            &format!("{} · drover", record.name),
            "run",
            &[("run", record.run_id.as_str())],
            "run.js",
        ))
        .into_response(),
        Err(e) => {
            let body = format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>drover</title>\
<link rel=\"stylesheet\" href=\"/assets/app.css\"></head><body><main><h1>{}</h1>\
<p><a href=\"/\">all runs</a></p></main></body></html>",
                esc(&e.message)
            );
            (e.status, Html(body)).into_response()
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
    use super::{ASSETS, JAVASCRIPT};

    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn shells_load_their_entry_module_and_escape_data() {
        let page = super::shell("a<b", "run", &[("run", "x\"y")], "run.js");
        assert!(page.contains("<title>a&lt;b</title>"), "{page}");
        assert!(page.contains("data-run=\"x&quot;y\""), "{page}");
        assert!(
            page.contains("<script type=\"module\" src=\"/assets/run.js\"></script>"),
            "{page}"
        );
        assert_eq!(page.matches("<script").count(), 1, "{page}");
    }

    /// The `./NAME` specifiers a module imports from.
    fn imports(source: &str) -> Vec<&str> {
        source
            .lines()
            .filter(|l| l.starts_with("import "))
            .filter_map(|l| l.split(" from './").nth(1))
            .filter_map(|rest| rest.split('\'').next())
            .collect()
    }

    #[test]
    fn every_script_is_a_module_importing_only_served_modules() {
        let scripts: Vec<_> = ASSETS
            .iter()
            .filter(|(n, _, _)| n.ends_with(".js"))
            .collect();
        assert_eq!(scripts.len(), 7);
        let mut imported = 0;
        for (name, content_type, source) in scripts {
            assert_eq!(*content_type, JAVASCRIPT, "{name}");
            assert!(
                !source.contains("'use strict'"),
                "{name}: modules are strict already"
            );
            for import in imports(source) {
                assert!(
                    ASSETS
                        .iter()
                        .any(|(n, t, _)| *n == import && *t == JAVASCRIPT),
                    "{name} imports {import}, which is not served"
                );
                imported += 1;
            }
            let exports = source.lines().filter(|l| l.starts_with("export ")).count();
            let entry = ["run.js", "runs.js", "fleet.js"].contains(name);
            assert_eq!(
                exports == 0,
                entry,
                "{name}: only entry modules export nothing"
            );
        }
        assert_eq!(imported, 9);
    }
}
