//! A step whose queue is one the namespace uses itself (`<ns>.journal`, `<ns>.events`...) is
//! refused wherever a pipeline comes in: a submission over the broker, a rerun and a schedule
//! over HTTP.

use crate::server::Server;
use crate::support::{self, patience};
use drover_test_support::eventually_async;
use serde_json::json;

const OWN: &str = "[pipeline]\nname = \"own\"\nproject = \"http-tests\"\n\
                   [[step]]\nname = \"a\"\ncommand = [\"true\"]\nqueue = \"journal\"\n";

#[tokio::test]
async fn a_step_on_a_queue_the_namespace_uses_itself_is_refused_on_every_path() {
    let s = Server::start().await;
    let journal = s.broker.names().journal();
    let named = |text: &str| text.contains("step a: queue \"journal\"") && text.contains(&journal);

    let run = support::submit(&s.broker, OWN, &[], "http test").await;
    let path = format!("/api/v1/runs/{run}");
    let view = eventually_async(patience("the run to be stored"), || async {
        match s.json(&path).await {
            (200, view) => Ok(view),
            (other, _) => Err(other),
        }
    })
    .await
    .unwrap();
    assert_eq!(view["status"], "rejected", "{view}");
    assert!(named(view["error"].as_str().unwrap_or_default()), "{view}");

    let (code, refused) = s.post_json(&format!("{path}/rerun"), &json!({})).await;
    assert_eq!(code, 400, "{refused}");
    assert!(named(refused["message"].as_str().unwrap()), "{refused}");

    let schedule = json!({"name": "nightly", "cron": "0 3 * * *", "pipeline": OWN});
    let (code, refused) = s.post_json("/api/v1/schedules", &schedule).await;
    assert_eq!(code, 400, "{refused}");
    assert!(named(refused["message"].as_str().unwrap()), "{refused}");
    s.stop().await;
}
