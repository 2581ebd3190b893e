//! The operator's day: running a pipeline again with other parameters, `latest` wherever a
//! run is taken, listing a run's artifacts, listing runs with filters.

use crate::harness::{Cluster, text};
use serde_json::Value;
use std::time::Duration;

/// `prepare` does not depend on the parameter, `greet` does; both are cached.
const PIPELINE: &str = r#"
[pipeline]
name = "rerun"
project = "operator"
default_queue = "default"

[parameters]
who = { default = "ann" }

[[step]]
name = "prepare"
command = ["sh", "-c", "echo data > data.txt"]
outputs = { data = "data.txt" }
cache = true

[[step]]
name = "greet"
command = ["sh", "-c", "echo hello ${pipeline.who} $(cat ${prepare.data}) > out.txt"]
outputs = { out = "out.txt" }
cache = true
"#;

/// The `out` artifact of `greet` in `run`, as `drover artifacts get` fetches it.
fn greeting(c: &Cluster, run: &str) -> String {
    let out = c.drover(&["artifacts", "get", run, "greet", "out", "-o", "-"]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn steps(run: &Value) -> (String, String) {
    let status = |name: &str| {
        let step = Cluster::step(run, name);
        let mut s = step["status"].as_str().unwrap().to_string();
        if step["cache_hit"] == true {
            s.push_str(" (hit)");
        }
        s
    };
    (status("prepare"), status("greet"))
}

#[test]
fn a_rerun_with_a_changed_parameter_reuses_unchanged_cached_steps_and_records_its_origin() {
    let c = Cluster::up(1, &["default"]);
    let file = c.pipeline("rerun.toml", PIPELINE);
    let (out, first) = c.run_wait(&file, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let first = first["run_id"].as_str().unwrap().to_string();
    assert_eq!(greeting(&c, &first), "hello ann data\n");

    let rerun = c.json(&["rerun", &first, "--param", "who=bob", "--wait", "--json"]);
    assert_eq!(rerun["status"], "succeeded", "{rerun}");
    let second = rerun["run_id"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    assert_eq!(
        greeting(&c, &second),
        "hello bob data\n",
        "the changed output"
    );
    let view = c.json(&["status", &second, "--json"]);
    assert_eq!(view["rerun_of"], first.as_str(), "{view}");
    assert_eq!(view["params"]["who"], "bob", "{view}");
    assert_eq!(
        steps(&view),
        ("cached (hit)".into(), "succeeded".into()),
        "prepare's inputs did not change, greet's did: {view}"
    );
    let shown = c.drover(&["status", &second]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains(&format!("rerun of {first}")),
        "{}",
        text(&shown)
    );

    // `latest` is the rerun; run again unchanged, both steps come from the cache.
    let third = c.json(&["rerun", "latest", "--wait", "--json"]);
    assert_eq!(third["status"], "succeeded", "{third}");
    let third_id = third["run_id"].as_str().unwrap();
    let view = c.json(&["status", third_id, "--json"]);
    assert_eq!(view["rerun_of"], second.as_str(), "{view}");
    assert_eq!(view["params"]["who"], "bob", "the rerun's values are kept");
    assert_eq!(
        steps(&view),
        ("cached (hit)".into(), "cached (hit)".into()),
        "{view}"
    );

    // A parameter the pipeline does not declare is refused before anything is submitted.
    let bad = c.drover(&["rerun", &first, "--param", "nope=1"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("nope"), "{}", text(&bad));
    let runs = c.json(&["runs", "--json", "--limit", "10"]);
    assert_eq!(runs["runs"].as_array().unwrap().len(), 3, "{runs}");
}

#[test]
fn latest_is_taken_wherever_a_run_is_and_artifacts_list_matches_what_get_fetches() {
    let c = Cluster::up(1, &["default"]);
    let hello =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/hello.toml"))
            .unwrap();
    let file = c.pipeline("hello.toml", &hello);
    let (out, run) = c.run_wait(&file, &["--param", "who=latest"]);
    assert!(out.status.success(), "{}", text(&out));
    let run_id = run["run_id"].as_str().unwrap();

    let status = c.json(&["status", "latest", "--json"]);
    assert_eq!(status["run_id"], run_id);
    let waited = c.json(&["wait", "latest", "--json"]);
    assert_eq!(
        (waited["run_id"].as_str(), waited["status"].as_str()),
        (Some(run_id), Some("succeeded"))
    );
    let log = c.drover(&["logs", "latest", "greet"]);
    assert!(
        String::from_utf8_lossy(&log.stdout).contains("greeting latest"),
        "{}",
        text(&log)
    );

    let listed = c.json(&["artifacts", "list", "latest", "--json"]);
    assert_eq!(listed["run_id"], run_id);
    let artifacts = listed["artifacts"].as_array().unwrap();
    let names: Vec<String> = artifacts
        .iter()
        .map(|a| {
            format!(
                "{}.{}",
                a["step"].as_str().unwrap(),
                a["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            "greet.greeting",
            "upper.loud",
            "count.count",
            "report.report"
        ],
        "in step order"
    );
    for a in artifacts {
        let (step, name) = (a["step"].as_str().unwrap(), a["name"].as_str().unwrap());
        let got = c.drover(&["artifacts", "get", "latest", step, name, "-o", "-"]);
        assert!(got.status.success(), "{}", text(&got));
        assert_eq!(got.stdout.len() as u64, a["size"].as_u64().unwrap(), "{a}");
        let digest = drover_protocol::Digest::of_bytes(&got.stdout);
        assert_eq!(a["digest"], digest.to_string(), "{a}");
    }
    let one = c.json(&["artifacts", "list", run_id, "count", "--json"]);
    assert_eq!(one["artifacts"].as_array().unwrap().len(), 1, "{one}");
    let table = c.drover(&["artifacts", "list", "latest"]);
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        table.contains("report.txt") && table.contains("DIGEST"),
        "{table}"
    );
    let missing = c.drover(&["artifacts", "list", run_id, "nope"]);
    assert!(!missing.status.success());
    assert!(text(&missing).contains("nope"), "{}", text(&missing));

    // A second pipeline, still running: `latest` is now it, and `abort latest` stops it.
    let slow = c.pipeline(
        "slow.toml",
        "[pipeline]\nname = \"slow\"\nproject = \"other\"\ndefault_queue = \"default\"\n\
         [[step]]\nname = \"nap\"\ncommand = [\"sleep\", \"60\"]\n",
    );
    let slow_id = c.submit(&slow);
    c.wait_for(&slow_id, "the nap to run", Duration::from_secs(30), |d| {
        Cluster::step(d, "nap")["status"] == "running"
    });
    let newest = c.json(&["runs", "--limit", "1", "--json"]);
    assert_eq!(newest["runs"][0]["run_id"], slow_id.as_str(), "{newest}");
    // `next` is what `?after=` takes for the following page: the last run of this one.
    assert_eq!(newest["next"], slow_id.as_str(), "{newest}");
    let hellos = c.json(&["runs", "--name", "hello", "--json"]);
    assert_eq!(hellos["runs"].as_array().unwrap().len(), 1, "{hellos}");
    assert_eq!(hellos["runs"][0]["run_id"], run_id);
    let running = c.json(&[
        "runs",
        "--status",
        "running",
        "--project",
        "other",
        "--json",
    ]);
    assert_eq!(running["runs"][0]["run_id"], slow_id.as_str(), "{running}");
    let out = c.drover(&["abort", "latest"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&slow_id), "{}", text(&out));
    c.wait_for(
        &slow_id,
        "the run to end aborted",
        Duration::from_secs(30),
        |d| d["status"] == "aborted",
    );
    let bad = c.drover(&["runs", "--status", "nope"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("unknown ?status"), "{}", text(&bad));
}

/// A Python pipeline: a parameter declared in the script.
const PY_PIPELINE: &str = r#"
from drover import PipelineController


def shout(word):
    return word.upper() + "!"


pipe = PipelineController(name="py-params", project="operator", version="1")
pipe.set_default_execution_queue("default")
pipe.add_parameter(name="word", default="hi")
pipe.add_function_step(name="shout", function=shout, function_kwargs=dict(word="${pipeline.word}"),
                       function_return=["loud"], cache_executed_step=True)
pipe.start()
"#;

#[test]
fn a_python_pipeline_takes_parameters_from_the_environment_and_reruns_as_submitted() {
    let c = Cluster::up(1, &["default"]);
    let script = c.dir.path().join("py_params.py");
    std::fs::write(&script, PY_PIPELINE).unwrap();
    // As `DROVER_PARAM_word=hey DROVER_PARAM_nope=1 python py_params.py` would launch it.
    let launch = format!(
        "import os, runpy\nos.environ['DROVER_PARAM_word'] = 'hey'\nos.environ['DROVER_PARAM_nope'] = '1'\nrunpy.run_path({:?}, run_name='__main__')\n",
        script.display().to_string()
    );
    let out = c.python(&["-c", &launch]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out)
            .contains("DROVER_PARAM_nope is not a parameter of this pipeline (declared: word)"),
        "{}",
        text(&out)
    );
    let first = c.json(&["wait", "latest", "--json"]);
    assert_eq!(first["status"], "succeeded", "{first}");
    let first = first["run_id"].as_str().unwrap().to_string();
    assert_eq!(
        c.json(&["status", &first, "--json"])["params"]["word"],
        "hey"
    );
    assert_eq!(c.unpickled(&first, "shout", "loud"), "'HEY!'");

    // Run again from its stored submission: the function's source as it was, no script.
    std::fs::remove_file(&script).unwrap();
    let again = c.json(&["rerun", &first, "--param", "word=ho", "--wait", "--json"]);
    assert_eq!(again["status"], "succeeded", "{again}");
    let again = again["run_id"].as_str().unwrap();
    assert_eq!(c.unpickled(again, "shout", "loud"), "'HO!'");
    assert_eq!(
        c.json(&["status", again, "--json"])["rerun_of"],
        first.as_str()
    );
}

/// What the run page's "New run" form does, at the HTTP level (no Chromium here): the page's
/// module posts the changed values with the CSRF token from `GET /api/v1/csrf`.
#[test]
fn the_new_run_post_needs_the_csrf_token_and_this_site_and_then_starts_a_run() {
    let c = Cluster::up(1, &["default"]);
    let file = c.pipeline("rerun.toml", PIPELINE);
    let (out, first) = c.run_wait(&file, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let first = first["run_id"].as_str().unwrap().to_string();
    let page = c.http_get(&format!("/runs/{first}"));
    assert!(page.contains("/assets/run.js"), "{page}");
    let module = c.http_get("/assets/newrun.js");
    assert!(
        module.contains("/rerun"),
        "the form posts to the rerun route"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let second = rt.block_on(async {
        let http = reqwest::Client::new();
        let rerun = format!("{}/api/v1/runs/{first}/rerun", c.url);
        let body = r#"{"params": {"who": "form"}}"#;
        let post = |origin: &str| {
            http.post(&rerun)
                .header("origin", origin)
                .header("content-type", "application/json")
                .body(body)
        };
        let bare = post(&c.url).send().await.unwrap();
        assert_eq!(bare.status().as_u16(), 403, "without the CSRF token");
        let csrf: drover_api::CsrfToken = http
            .get(format!("{}/api/v1/csrf", c.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let with = |origin: &str| {
            post(origin)
                .header(drover_api::CsrfToken::HEADER, &csrf.token)
                .header("cookie", &csrf.cookie)
        };
        let foreign = with("https://evil.example").send().await.unwrap();
        assert_eq!(foreign.status().as_u16(), 403, "from another site");
        let ok = with(&c.url).send().await.unwrap();
        assert_eq!(ok.status().as_u16(), 202);
        let accepted: drover_api::RerunAccepted = ok.json().await.unwrap();
        accepted.run_id.to_string()
    });
    let view = c.wait_for(
        &second,
        "the new run to end",
        Duration::from_secs(60),
        |d| d["status"] == "succeeded",
    );
    assert_eq!(view["rerun_of"], first.as_str(), "{view}");
    assert_eq!(greeting(&c, &second), "hello form data\n");
}
