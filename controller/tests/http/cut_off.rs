//! A controller whose broker connection is cut (through a TCP relay the test cuts and restores)
//! refuses writes with 503 and `x-drover-inactive: disconnected` while reads go on, marked
//! stale; once it has reconnected and holds the namespace's lock again it accepts writes.

use crate::server::Server;
use crate::support::patience;
use drover_api::{INACTIVE_HEADER, STALE_HEADER};
use drover_test_support::eventually_async;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Relays TCP connections to the shared broker until cut: cutting closes every relayed
/// connection at once and closes new ones as soon as they are accepted, as if the broker's
/// network were gone; restoring relays again.
struct Relay {
    port: u16,
    cut: watch::Sender<bool>,
}

impl Relay {
    async fn start() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = watch::Sender::new(false);
        let cuts = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *cuts.borrow() {
                    continue; // dropped: closed at once
                }
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect("127.0.0.1:5672").await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Relay { port, cut }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

/// A rerun of `run`: the status, the inactive header and the answer's JSON.
async fn rerun(s: &Server, run: &str) -> (u16, Option<String>, Value) {
    let resp = s
        .request(reqwest::Method::POST, &format!("/api/v1/runs/{run}/rerun"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let inactive = header(&resp, INACTIVE_HEADER);
    (status, inactive, resp.json().await.unwrap_or(Value::Null))
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

async fn healthz(s: &Server) -> u16 {
    s.get("/healthz").await.status().as_u16()
}

#[tokio::test]
async fn a_cut_off_controller_refuses_writes_answers_reads_and_accepts_writes_once_back() {
    let relay = Relay::start().await;
    let url = relay.url();
    let s = Server::start_with(|c| c.amqp_url = url).await;
    let run = s.submit().await;
    let path = format!("/api/v1/runs/{run}");
    eventually_async(patience("the run to be stored"), || async {
        match s.json(&path).await {
            (200, _) => Ok(()),
            (other, _) => Err(other),
        }
    })
    .await
    .unwrap();
    let (status, inactive, body) = rerun(&s, run.as_str()).await;
    assert_eq!((status, inactive), (202, None), "{body}");

    relay.set_cut(true);
    let cut = Instant::now();
    eventually_async(patience("the lost connection to be noticed"), || async {
        match healthz(&s).await {
            503 => Ok(()),
            other => Err(other),
        }
    })
    .await
    .unwrap();
    let noticed = cut.elapsed();
    let (status, inactive, body) = rerun(&s, run.as_str()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(inactive.as_deref(), Some("disconnected"), "{body}");
    assert_eq!(body["code"], "unavailable", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    for part in [
        "lost its broker connection",
        "is reconnecting",
        "another controller may take over",
        "nothing was done",
    ] {
        assert!(message.contains(part), "{part:?} missing from {message}");
    }
    let read = s.get(&path).await;
    assert_eq!(read.status().as_u16(), 200);
    let stale = header(&read, STALE_HEADER).unwrap_or_default();
    assert!(stale.starts_with("disconnected for "), "{stale:?}");
    assert_eq!(header(&read, INACTIVE_HEADER), None);
    // Still cut off a while later: still refused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rerun(&s, run.as_str()).await.0, 503);

    relay.set_cut(false);
    let restored = Instant::now();
    let accepted = eventually_async(patience("a write accepted again"), || async {
        match rerun(&s, run.as_str()).await {
            (202, None, body) => Ok(body),
            (status, inactive, body) => Err(format!("{status} {inactive:?} {body}")),
        }
    })
    .await
    .unwrap();
    let back = restored.elapsed();
    assert!(accepted["run_id"].is_string(), "{accepted}");
    assert_eq!(healthz(&s).await, 200);
    assert_eq!(header(&s.get(&path).await, STALE_HEADER), None);
    eprintln!(
        "relay cut: noticed after {:.3}s; restored: writes accepted again after {:.3}s",
        noticed.as_secs_f64(),
        back.as_secs_f64()
    );
    s.stop().await;
}
