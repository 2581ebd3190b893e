//! The CLI sends the token only to listed controller URLs: a listed controller's redirect to an
//! unlisted address is an error naming the target, and that address gets no request; a
//! redirect to another listed URL is followed with the token. A write refused as `disconnected`
//! goes to the next listed controller.

use crate::harness::{Cluster, recording_server, text};
use std::sync::{Arc, Mutex};

fn redirect_to(target: String) -> impl Fn(&str) -> String {
    move |path| {
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: {target}{path}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
    }
}

fn no_runs(_: &str) -> String {
    let body = r#"{"runs": []}"#;
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn the_token_never_goes_to_an_unlisted_redirect_target() {
    let c = Cluster::new();
    let (elsewhere, elsewhere_heads) = recording_server(no_runs);
    let (listed, _) = recording_server(redirect_to(elsewhere.clone()));
    let mut cmd = c.command();
    cmd.env("DROVER_TOKEN", "s3cret-7f1")
        .args(["--url", &listed, "runs", "--json"]);
    let out = cmd.output().unwrap();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("redirected GET /api/v1/runs")
            && said.contains(&format!("to {elsewhere}/api/v1/runs"))
            && said.contains("not one of the controller URLs"),
        "{said}"
    );
    assert!(!said.contains("s3cret-7f1"), "{said}");
    assert_eq!(*elsewhere_heads.lock().unwrap(), Vec::<String>::new());

    // Listed too: followed, with the token.
    let mut cmd = c.command();
    cmd.env("DROVER_TOKEN", "s3cret-7f1")
        .args(["--url", &listed, "--url", &elsewhere, "runs", "--json"]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let heads = elsewhere_heads.lock().unwrap();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0]
            .to_lowercase()
            .contains("authorization: bearer s3cret-7f1"),
        "{heads:?}"
    );
}

/// A controller that has lost its broker connection: writes answer 503 with
/// `x-drover-inactive: disconnected`, reads answer with `x-drover-stale`.
fn cut_off(path: &str) -> String {
    if path.ends_with("/rerun") {
        let body = r#"{"code": "unavailable", "message": "this controller lost its broker connection 2.0s ago and is reconnecting"}"#;
        return format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nx-drover-inactive: disconnected\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    no_runs(path).replacen("\r\n", "\r\nx-drover-stale: disconnected for 2.0s\r\n", 1)
}

fn rerun_accepted(_: &str) -> String {
    let body = r#"{"run_id": "0193a2b4c5d6e7f80123456789abcdef", "rerun_of": "0193a2b4c5d6e7f80123456789abcde0"}"#;
    format!(
        "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn a_write_refused_as_disconnected_goes_to_the_next_controller_and_stale_reads_warn() {
    let c = Cluster::new();
    let (cut, cut_heads) = recording_server(cut_off);
    let (next, next_heads) = recording_server(rerun_accepted);
    let mut cmd = c.command();
    cmd.env("DROVER_TOKEN", "s3cret-7f1").args([
        "--url",
        &cut,
        "--url",
        &next,
        "rerun",
        "0193a2b4c5d6e7f80123456789abcde0",
        "--json",
    ]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("0193a2b4c5d6e7f80123456789abcdef"),
        "{}",
        text(&out)
    );
    let tried = |heads: &Arc<Mutex<Vec<String>>>| {
        heads
            .lock()
            .unwrap()
            .iter()
            .any(|h| h.starts_with("POST /api/v1/runs/0193a2b4c5d6e7f80123456789abcde0/rerun"))
    };
    assert!(tried(&cut_heads) && tried(&next_heads));

    // Alone, it is the one to read from, with a warning that what it shows may be stale.
    let mut cmd = c.command();
    cmd.args(["--url", &cut, "runs", "--json"]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!(
            "the controller at {cut} has lost its broker connection"
        )) && said.contains("disconnected for 2.0s"),
        "{}",
        text(&out)
    );
}

/// A standby's redirect (307 with `x-drover-inactive`) to an unlisted address is not followed
/// and not an error: the CLI skips that controller for the next listed one, as for its 503.
#[test]
fn a_standbys_redirect_to_an_unlisted_url_skips_it_for_the_next_listed_one() {
    let c = Cluster::new();
    let (elsewhere, elsewhere_heads) = recording_server(no_runs);
    let (standby, _) = recording_server(move |path| {
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: {elsewhere}{path}\r\nx-drover-inactive: standby\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
    });
    let (active, active_heads) = recording_server(no_runs);
    let mut cmd = c.command();
    cmd.env("DROVER_TOKEN", "s3cret-7f1")
        .args(["--url", &standby, "--url", &active, "runs", "--json"]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(active_heads.lock().unwrap().len(), 1);
    assert_eq!(*elsewhere_heads.lock().unwrap(), Vec::<String>::new());
}
