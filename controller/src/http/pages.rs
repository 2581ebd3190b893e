//! The server-rendered run page: name, status, parameters and a table of steps with their
//! outputs and the tail of their logs. Plain HTML, every value escaped; it refreshes itself
//! while the run is going.

use super::App;
use crate::scheduler::{RunRecord, StepRecord};
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use std::fmt::Write as _;

/// How much of the end of each step's log the page shows.
const LOG_TAIL_BYTES: u64 = 4096;
const LOG_TAIL_LINES: usize = 15;

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

fn time(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string(),
        None => "-".to_string(),
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}\
pre{margin:0;max-width:60em;overflow-x:auto;font-size:85%}\
.succeeded,.cached{color:#060}.failed,.rejected{color:#a00}.aborted,.skipped{color:#777}";

pub async fn run_page(State(app): State<App>, Path(run): Path<String>) -> Response {
    match app.run(&run) {
        Ok(record) => Html(render(&app, &record).await).into_response(),
        Err(e) => {
            let body = format!(
                "<!doctype html><html><head><meta charset=\"utf-8\"><title>drover</title></head><body><h1>{}</h1></body></html>",
                esc(&e.message)
            );
            (e.status, Html(body)).into_response()
        }
    }
}

async fn render(app: &App, run: &RunRecord) -> String {
    let mut h = String::new();
    let title = format!("{} {}", run.name, run.status.as_str());
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title>",
        esc(&title)
    );
    if !run.status.is_terminal() {
        h.push_str("<meta http-equiv=\"refresh\" content=\"2\">");
    }
    let _ = write!(h, "<style>{STYLE}</style></head><body>");
    let status = run.status.as_str();
    let _ = write!(
        h,
        "<h1>{} <span class=\"{status}\">{status}</span></h1>",
        esc(&run.name)
    );
    let _ = write!(
        h,
        "<p>run <code>{}</code> · project {} · version {} · submitted by {}</p>",
        esc(run.run_id.as_str()),
        esc(&run.project),
        esc(&run.version),
        esc(run.submitted_by.as_deref().unwrap_or("-"))
    );
    let _ = write!(
        h,
        "<p>created {} · started {} · ended {}</p>",
        time(Some(run.created_at)),
        time(run.started_at),
        time(run.ended_at)
    );
    if let Some(error) = &run.error {
        let _ = write!(h, "<pre class=\"failed\">{}</pre>", esc(error));
    }
    if !run.params.is_empty() {
        h.push_str("<h2>Parameters</h2><table><tr><th>name</th><th>value</th></tr>");
        for (k, v) in &run.params {
            let _ = write!(
                h,
                "<tr><td>{}</td><td><code>{}</code></td></tr>",
                esc(k),
                esc(v)
            );
        }
        h.push_str("</table>");
    }
    if !run.steps.is_empty() {
        h.push_str("<h2>Steps</h2><table><tr><th>step</th><th>status</th><th>queue</th><th>attempt</th><th>agent</th><th>outputs</th><th>log</th></tr>");
        for step in &run.steps {
            step_row(&mut h, app, run, step).await;
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>");
    h
}

async fn step_row(h: &mut String, app: &App, run: &RunRecord, step: &StepRecord) {
    let base = format!("/api/v1/runs/{}/steps/{}", run.run_id, step.name);
    let status = step.status.as_str();
    let mut status_cell = format!("<span class=\"{status}\">{status}</span>");
    if step.cache_hit {
        status_cell.push_str(" (cache hit)");
    }
    if let Some(m) = &step.message {
        let _ = write!(status_cell, "<br><small>{}</small>", esc(m));
    }
    let mut outputs = String::new();
    for (name, a) in &step.outputs {
        let _ = write!(
            outputs,
            "<a href=\"{}/artifacts/{}\">{}</a> ({} bytes)<br>",
            esc(&base),
            esc(name.as_str()),
            esc(name.as_str()),
            a.size
        );
    }
    let tail = log_tail(app, run, step).await;
    let agent = step
        .agent
        .as_ref()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "-".into());
    let _ = write!(
        h,
        "<tr><td>{}</td><td>{status_cell}</td><td>{}</td><td>{}</td><td>{}</td><td>{outputs}</td><td><pre>{}</pre><a href=\"{}/log\">full log</a></td></tr>",
        esc(step.name.as_str()),
        esc(step.queue.as_str()),
        step.attempt,
        esc(&agent),
        esc(&tail),
        esc(&base)
    );
}

/// The last lines of the current attempt's log, decoded lossily for display.
async fn log_tail(app: &App, run: &RunRecord, step: &StepRecord) -> String {
    if step.attempt.0 == 0 {
        return String::new();
    }
    let (size, _) = match app
        .logs
        .open_from(&run.run_id, &step.name, step.attempt, u64::MAX)
        .await
    {
        Ok(found) => found,
        Err(_) => return String::new(),
    };
    let from = size.saturating_sub(LOG_TAIL_BYTES);
    let Ok((_, bytes)) = app
        .logs
        .read_from(&run.run_id, &step.name, step.attempt, from)
        .await
    else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
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
}
