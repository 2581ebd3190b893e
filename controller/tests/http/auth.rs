//! The token guard: every route but `/healthz` needs it; browsers trade it for a cookie; an open
//! API off loopback is refused.

use crate::server::{Server, TOKEN};
use crate::support;
use drover_controller::Controller;
use drover_protocol::{Digest, Names, RunId};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn every_route_needs_the_token_but_healthz() {
    let s = Server::start().await;
    let run = RunId::generate();
    let digest = Digest::of_bytes(b"x");
    let routes = [
        ("GET", "/metrics".to_string()),
        ("GET", "/api/v1/events".into()),
        ("GET", "/api/v1/runs".into()),
        ("GET", format!("/api/v1/runs/{run}")),
        ("GET", format!("/api/v1/runs/{run}/stream")),
        ("GET", format!("/api/v1/runs/{run}/console")),
        ("POST", format!("/api/v1/runs/{run}/abort")),
        ("POST", format!("/api/v1/runs/{run}/steps")),
        ("GET", format!("/api/v1/runs/{run}/steps/a")),
        ("GET", format!("/api/v1/runs/{run}/steps/a/log")),
        ("GET", format!("/api/v1/runs/{run}/steps/a/log/stream")),
        ("GET", format!("/api/v1/runs/{run}/steps/a/artifacts/x")),
        ("POST", format!("/api/v1/runs/{run}/steps/a/scalars")),
        ("GET", format!("/api/v1/runs/{run}/scalars")),
        ("GET", format!("/api/v1/runs/{run}/scalars/stream")),
        ("GET", format!("/api/v1/blobs/{digest}")),
        ("HEAD", format!("/api/v1/blobs/{digest}")),
        ("PUT", format!("/api/v1/blobs/{digest}")),
        ("GET", "/api/v1/agents".into()),
        ("GET", "/api/v1/queues".into()),
        ("GET", "/".into()),
        ("GET", format!("/runs/{run}")),
        ("GET", "/agents".into()),
        ("GET", "/queues".into()),
        ("GET", "/assets/app.css".into()),
        ("GET", "/no/such/route".into()),
    ];
    for (method, path) in &routes {
        let url = format!("{}{path}", s.url);
        let method: reqwest::Method = method.parse().unwrap();
        let anonymous = s.http.request(method.clone(), &url).send().await.unwrap();
        assert_eq!(anonymous.status().as_u16(), 401, "{method} {path}");
        let wrong = s
            .http
            .request(method.clone(), &url)
            .bearer_auth("not-the-token")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status().as_u16(), 401, "{method} {path} wrong token");
    }
    // APIs answer 401 in JSON with a hint; pages offer a login form.
    let api = s.http.get(format!("{}/api/v1/runs", s.url)).send().await;
    let api = api.unwrap();
    assert_eq!(api.headers()["www-authenticate"], "Bearer realm=\"drover\"");
    let error: drover_api::ApiError = api.json().await.unwrap();
    assert_eq!(error.code, drover_api::ErrorCode::Unauthorized);
    assert!(error.message.contains("DROVER_TOKEN"), "{error:?}");
    let page = s.http.get(format!("{}/", s.url)).send().await.unwrap();
    assert!(page.text().await.unwrap().contains("name=\"token\""));

    let health = s.http.get(format!("{}/healthz", s.url)).send().await;
    assert_eq!(health.unwrap().status().as_u16(), 200);

    // A browser trades ?token= for a cookie and is sent back without the token in the URL.
    let login = s
        .http
        .get(format!("{}/runs/{run}?token={TOKEN}&x=1", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 303);
    assert_eq!(login.headers()["location"], format!("/runs/{run}?x=1"));
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(TOKEN),
        "the cookie does not hold the token: {cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    let with_cookie = s
        .http
        .get(format!("{}/api/v1/runs", s.url))
        .header("cookie", pair)
        .send()
        .await
        .unwrap();
    assert_eq!(with_cookie.status().as_u16(), 200);
    // Programs may also put the token in the query of an API call.
    let query = s
        .http
        .get(format!("{}/api/v1/runs?token={TOKEN}", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(query.status().as_u16(), 200);
    s.stop().await;
}

#[tokio::test]
async fn an_open_api_is_refused_off_loopback() {
    let names = Names::new("never-used").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(&names, dir.path());
    config.http_addr = "0.0.0.0:0".parse().unwrap();
    let error = Controller::start(config, CancellationToken::new())
        .await
        .err()
        .expect("no token on 0.0.0.0 is refused");
    let text = format!("{error:#}");
    assert!(
        text.contains("--token") && text.contains("--allow-unauthenticated"),
        "{text}"
    );
}
