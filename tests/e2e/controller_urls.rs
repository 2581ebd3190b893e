//! The CLI sends the token only to listed controller URLs: a listed controller's redirect to an
//! unlisted address is an error naming the target, and that address gets no request; a
//! redirect to another listed URL is followed with the token.

use crate::harness::{Cluster, text};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// A server on a free loopback port answering every request with `answer(path)` (a whole HTTP
/// response), and keeping each request's head (request line and headers); returns its URL.
fn serve(answer: impl Fn(&str) -> String + Send + 'static) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
            seen.lock().unwrap().push(head);
            let _ = stream.write_all(answer(&path).as_bytes());
        }
    });
    (url, heads)
}

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
    let (elsewhere, elsewhere_heads) = serve(no_runs);
    let (listed, _) = serve(redirect_to(elsewhere.clone()));
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
