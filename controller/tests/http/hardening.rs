//! What protects the HTTP side besides the token: login targets on this host only, security
//! headers on every answer, the Host and Origin checks of a controller without a token, a
//! private data dir, a header timeout that closes stalled connections.

use crate::server::{Server, TOKEN};
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Sends `request` as written (no client normalises its target) and reads the whole answer.
async fn raw(url: &str, request: &str) -> String {
    let addr = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

fn get(target: &str, extra: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n")
}

#[tokio::test]
async fn the_login_page_and_its_redirect_stay_on_this_host() {
    let s = Server::start().await;
    for target in [
        "//evil.example/x",
        "/\\evil.example",
        "/\\/evil.example",
        "https://evil.example/",
        "//evil.example/%2F..",
    ] {
        let page = raw(&s.url, &get(target, "")).await;
        assert!(page.starts_with("HTTP/1.1 401"), "{target}: {page}");
        assert!(page.contains("name=\"token\""), "{target}: {page}");
        assert!(
            !page.contains("evil"),
            "{target}: the login page names it: {page}"
        );
        let login = raw(&s.url, &get(&format!("{target}?token={TOKEN}"), "")).await;
        let location = login
            .lines()
            .find_map(|l| l.strip_prefix("location: "))
            .unwrap_or_else(|| panic!("{target}: no redirect: {login}"));
        assert_eq!(location, "/", "{target}: {login}");
    }
    // `%2F%2Fevil.example` is a path of this host to a browser: kept as it is.
    let login = raw(
        &s.url,
        &get(&format!("/%2F%2Fevil.example?token={TOKEN}"), ""),
    )
    .await;
    assert!(
        login.contains("location: /%2F%2Fevil.example\r\n"),
        "{login}"
    );
    s.stop().await;
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let s = Server::start().await;
    for path in ["/", "/api/v1/runs", "/assets/app.css", "/healthz", "/nope"] {
        for authorized in [false, true] {
            let mut request = s.http.get(format!("{}{path}", s.url));
            if authorized {
                request = request.bearer_auth(TOKEN);
            }
            let resp = request.send().await.unwrap();
            let headers = resp.headers();
            let csp = headers["content-security-policy"].to_str().unwrap();
            let scripts = csp
                .split(';')
                .map(str::trim)
                .find(|d| d.starts_with("script-src"));
            assert_eq!(scripts, Some("script-src 'self'"), "{path}: {csp}");
            assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
            assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        }
    }
    // The pages load their scripts and styles from files, none inline.
    for path in ["/", "/agents", "/queues"] {
        let page = s.get(path).await.text().await.unwrap();
        assert!(
            !page.contains("<script>") && !page.contains("<style"),
            "{page}"
        );
        assert!(!page.contains(" on"), "no inline handlers: {page}");
    }
    // The login page's one inline style is allowed by its hash, nothing else.
    let login = s.http.get(format!("{}/", s.url)).send().await.unwrap();
    let csp = login.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("style-src 'self' 'sha256-"), "{csp}");
    assert!(!login.text().await.unwrap().contains("<script"));
    s.stop().await;
}

#[tokio::test]
async fn without_a_token_other_hosts_and_sites_are_refused() {
    let s = Server::start_with(|c| c.token = None).await;
    let answer = |host: &str, extra: &str| {
        let request = format!(
            "GET /api/v1/runs HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n"
        );
        let url = s.url.clone();
        async move { raw(&url, &request).await }
    };
    for host in ["127.0.0.1", "localhost:8470", "[::1]:1"] {
        let ok = answer(host, "").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{host}: {ok}");
    }
    // A name resolving to 127.0.0.1 for a page of its own (DNS rebinding).
    let rebound = answer("rebind.evil.example:8470", "").await;
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
    assert!(rebound.contains("\"code\":\"forbidden\""), "{rebound}");

    // A form on another site posting an abort, even with a CSRF token it somehow got.
    let csrf: drover_api::CsrfToken = s
        .http
        .get(format!("{}/api/v1/csrf", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let abort = |origin: &str| {
        let request = format!(
            "POST /api/v1/runs/{}/abort HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\nx-drover-csrf: {}\r\nCookie: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            drover_protocol::RunId::generate(),
            s.url.trim_start_matches("http://"),
            csrf.token,
            csrf.cookie,
        );
        let url = s.url.clone();
        async move { raw(&url, &request).await }
    };
    let foreign = abort("https://evil.example").await;
    assert!(foreign.starts_with("HTTP/1.1 403"), "{foreign}");
    let own = abort(&s.url).await;
    assert!(
        own.starts_with("HTTP/1.1 404"),
        "the controller's own page may: {own}"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_data_dir_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start_with(|c| c.data_dir = data.clone()).await;
    for path in [
        data.clone(),
        data.join("state"),
        data.join("logs"),
        data.join("blobs"),
    ] {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", path.display());
    }
    s.stop().await;
}

#[tokio::test]
async fn stalled_and_idle_connections_are_closed_after_the_header_timeout() {
    let timeout = Duration::from_millis(700);
    let s = Server::start_with(|c| c.http_limits.header_timeout = timeout).await;
    let addr = s.url.trim_start_matches("http://").to_string();
    let started = Instant::now();
    let mut stalled = TcpStream::connect(&addr).await.unwrap();
    stalled.write_all(b"GET /healthz HT").await.unwrap();
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    let mut buf = [0u8; 1024];
    for stream in [&mut stalled, &mut idle] {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("closed by the server");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    let took = started.elapsed();
    assert!(
        took >= timeout && took < timeout * 5,
        "closed after {took:?}"
    );
    // A keep-alive connection idle after its answer is closed the same way.
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"}") {
        let n = kept.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    let answered = Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(10), kept.read(&mut buf))
        .await
        .expect("the idle connection is closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let idle = answered.elapsed();
    assert!(
        idle >= timeout && idle < timeout * 5,
        "closed after {idle:?} idle"
    );
    // A client sending its request in time is served.
    let health = raw(
        &s.url,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    s.stop().await;
}

#[tokio::test]
async fn the_read_token_reads_and_changes_nothing() {
    const READ: &str = "r3ad-only-token";
    let s = Server::start_with(|c| c.read_token = Some(READ.into())).await;
    let run = drover_protocol::RunId::generate();
    let abort = format!("{}/api/v1/runs/{run}/abort", s.url);
    let list = s
        .http
        .get(format!("{}/api/v1/runs", s.url))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status().as_u16(), 200);
    let refused = s.http.post(&abort).bearer_auth(READ).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    let error: drover_api::ApiError = refused.json().await.unwrap();
    assert_eq!(error.code, drover_api::ErrorCode::Forbidden);
    let query = s
        .http
        .post(format!("{abort}?token={READ}"))
        .send()
        .await
        .unwrap();
    assert_eq!(query.status().as_u16(), 403);
    // The admin token still may (the run is unknown, so 404).
    let admin = s.http.post(&abort).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(admin.status().as_u16(), 404);
    // Adding a step changes a run too.
    let add = format!("{}/api/v1/runs/{run}/steps", s.url);
    let refused = s.http.post(&add).bearer_auth(READ).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    let admin = s.http.post(&add).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(admin.status().as_u16(), 404);

    // A browser trades the read token for a cookie that reads only.
    let login = s
        .http
        .get(format!("{}/?token={READ}", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(!cookie.contains(READ), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    let page = s
        .http
        .get(format!("{}/api/v1/agents", s.url))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let write = s.http.post(&abort).header("cookie", &pair).send().await;
    assert_eq!(write.unwrap().status().as_u16(), 403);
    s.stop().await;
}
