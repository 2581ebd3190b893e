//! Submitting a run again through `POST /api/v1/runs/{run}/rerun`, which without a token needs
//! a CSRF token and a same-site origin, and listing runs a page at a time.

use crate::server::{PIPELINE, Server};
use crate::support::{self, patience};
use drover_api::{CsrfToken, RerunAccepted, RunList};
use drover_protocol::RunId;
use drover_test_support::eventually_async;
use serde_json::Value;

async fn csrf(s: &Server) -> CsrfToken {
    let resp = s
        .http
        .get(format!("{}/api/v1/csrf", s.url))
        .send()
        .await
        .unwrap();
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    resp.json().await.unwrap()
}

/// The run's view once the controller has stored it.
async fn stored(s: &Server, run: &RunId) -> Value {
    let url = format!("{}/api/v1/runs/{run}", s.url);
    eventually_async(patience("the run to be stored"), || async {
        let resp = s.http.get(&url).send().await.unwrap();
        match resp.status().as_u16() {
            200 => Ok(resp.json::<Value>().await.unwrap()),
            other => Err(other),
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn without_a_token_a_rerun_needs_a_csrf_token_and_a_same_site_origin() {
    let s = Server::start_with(|c| c.token = None).await;
    let first = support::submit(&s.broker, PIPELINE, &[("who", "ann")], "ana@laptop").await;
    let view = stored(&s, &first).await;
    assert_eq!(view["params"]["who"], "ann");
    let rerun = format!("{}/api/v1/runs/{first}/rerun", s.url);
    let body = r#"{"params": {"who": "bob"}}"#;
    let post = || {
        s.http
            .post(&rerun)
            .header("content-type", "application/json")
            .body(body)
    };

    let bare = post().send().await.unwrap();
    assert_eq!(bare.status().as_u16(), 403, "no CSRF token");
    let token = csrf(&s).await;
    let no_cookie = post()
        .header(drover_api::CsrfToken::HEADER, &token.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        no_cookie.status().as_u16(),
        403,
        "a token without its cookie"
    );
    let other = csrf(&s).await;
    let mismatched = post()
        .header(drover_api::CsrfToken::HEADER, &token.token)
        .header("cookie", &other.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(mismatched.status().as_u16(), 403, "another cookie's token");
    let foreign = post()
        .header(drover_api::CsrfToken::HEADER, &token.token)
        .header("cookie", &token.cookie)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status().as_u16(), 403, "a foreign origin");
    let error: drover_api::ApiError = foreign.json().await.unwrap();
    assert_eq!(error.code, drover_api::ErrorCode::Forbidden);

    let unknown = s
        .http
        .post(&rerun)
        .header(drover_api::CsrfToken::HEADER, &token.token)
        .header("cookie", &token.cookie)
        .body(r#"{"params": {"nope": "1"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 400, "an undeclared parameter");
    let text = unknown.text().await.unwrap();
    assert!(text.contains("nope"), "{text}");

    let accepted = post()
        .header(drover_api::CsrfToken::HEADER, &token.token)
        .header("cookie", &token.cookie)
        .header("origin", s.url.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status().as_u16(), 202);
    let accepted: RerunAccepted = accepted.json().await.unwrap();
    assert_eq!(accepted.rerun_of, first);
    assert_eq!(accepted.params["who"], "bob");
    let again = stored(&s, &accepted.run_id).await;
    assert_eq!(again["rerun_of"], first.as_str(), "{again}");
    assert_eq!(again["params"]["who"], "bob", "{again}");
    assert_eq!(again["submitted_by"], "ana@laptop", "{again}");
    assert!(view.get("rerun_of").is_none(), "{view}");

    // A rerun of the rerun starts from what the rerun was submitted with.
    let third: RerunAccepted = s
        .http
        .post(format!("{}/api/v1/runs/{}/rerun", s.url, accepted.run_id))
        .header(drover_api::CsrfToken::HEADER, &token.token)
        .header("cookie", &token.cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(third.params["who"], "bob");
    assert_eq!(
        stored(&s, &third.run_id).await["rerun_of"],
        accepted.run_id.as_str()
    );
    s.stop().await;
}

#[tokio::test]
async fn with_a_token_a_rerun_needs_the_token_not_a_csrf_token() {
    let s = Server::start().await;
    let first = s.submit().await;
    let path = format!("/api/v1/runs/{first}/rerun");
    eventually_async(patience("the run to be stored"), || async {
        match s
            .get(&format!("/api/v1/runs/{first}"))
            .await
            .status()
            .as_u16()
        {
            200 => Ok(()),
            other => Err(other),
        }
    })
    .await
    .unwrap();
    let anonymous = s
        .http
        .post(format!("{}{path}", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let ok = s
        .request(reqwest::Method::POST, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 202);
    let missing = s
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/runs/{}/rerun", RunId::generate()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    s.stop().await;
}

#[tokio::test]
async fn runs_are_listed_a_page_at_a_time_newest_first_with_filters() {
    let server = Server::start().await;
    list_pages(&server).await;
    server.stop().await;
}

async fn list_pages(s: &Server) {
    let other = PIPELINE.replace("name = \"api\"", "name = \"other\"");
    let mut ids = Vec::new();
    for i in 0..5 {
        let toml = if i % 2 == 0 { PIPELINE } else { other.as_str() };
        let id = support::submit(&s.broker, toml, &[], "pager").await;
        // One at a time, so creation order is submission order.
        stored_with_token(s, &id).await;
        ids.push(id);
    }
    ids.reverse();
    let page = |query: String| async move {
        let (status, doc) = s.json(&format!("/api/v1/runs?{query}")).await;
        assert_eq!(status, 200, "{query}: {doc}");
        serde_json::from_value::<RunList>(doc).unwrap()
    };
    let first = page("limit=2".into()).await;
    let got: Vec<_> = first.runs.iter().map(|r| r.run_id.clone()).collect();
    assert_eq!(got, ids[..2]);
    assert_eq!(first.next.as_ref(), Some(&ids[1]));
    let second = page(format!("limit=2&after={}", ids[1])).await;
    assert_eq!(
        second
            .runs
            .iter()
            .map(|r| r.run_id.clone())
            .collect::<Vec<_>>(),
        ids[2..4]
    );
    let last = page(format!("limit=2&after={}", ids[3])).await;
    assert_eq!(last.runs.len(), 1);
    assert_eq!(last.next, None, "the last page says so");
    let named = page("name=other".into()).await;
    assert_eq!(
        named
            .runs
            .iter()
            .map(|r| r.run_id.clone())
            .collect::<Vec<_>>(),
        vec![ids[1].clone(), ids[3].clone()]
    );
    let running = page("status=running&project=http-tests&limit=1".into()).await;
    assert_eq!(running.runs[0].run_id, ids[0]);
    assert_eq!(page("project=elsewhere".into()).await.runs.len(), 0);
    for bad in [
        "limit=0",
        "limit=100000",
        "status=nope",
        "after=not-a-run",
        "after=0190c8a0e7b27c3d9a4b5c6d7e8f9a0b",
    ] {
        let (status, doc) = s.json(&format!("/api/v1/runs?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {doc}");
    }
}

async fn stored_with_token(s: &Server, run: &RunId) {
    eventually_async(patience("the run to be stored"), || async {
        match s
            .get(&format!("/api/v1/runs/{run}"))
            .await
            .status()
            .as_u16()
        {
            200 => Ok(()),
            other => Err(other),
        }
    })
    .await
    .unwrap();
}
