//! Schedules and triggers: runs the controller submits by itself. Each slot of a schedule fires
//! at most once, also across a controller killed and restarted, and is skipped while the
//! schedule's previous run is unfinished; each upstream run fires a trigger once.

use crate::harness::{Cluster, text, wait_until};
use drover_protocol::message::now_ms;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const QUICK: &str = r#"
[pipeline]
name = "tick"
project = "automation"
default_queue = "default"

[[step]]
name = "a"
command = ["true"]
"#;

const SLOW: &str = r#"
[pipeline]
name = "slow"
project = "automation"
default_queue = "default"

[[step]]
name = "a"
command = ["sleep", "6"]
"#;

/// Every run of the cluster with what fired it (`Value::Null` when nothing did).
fn runs_fired_by(c: &Cluster) -> Vec<(String, Value)> {
    let list = c.json(&["runs", "--json", "--limit", "1000"]);
    list["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let id = r["run_id"].as_str().unwrap().to_string();
            let view = c.json(&["status", &id, "--json"]);
            (id, view["fired_by"].clone())
        })
        .collect()
}

/// The slots the schedule `name` fired, with their runs; panics if one slot has two runs.
fn fired_slots(c: &Cluster, name: &str) -> BTreeMap<u64, String> {
    let mut slots = BTreeMap::new();
    for (run, by) in runs_fired_by(c) {
        if by["kind"] == "schedule" && by["name"] == name {
            // run-now has no slot.
            let Some(slot) = by["slot"].as_u64() else {
                continue;
            };
            if let Some(other) = slots.insert(slot, run.clone()) {
                panic!("slot {slot} of schedule {name} fired twice: runs {other} and {run}");
            }
        }
    }
    slots
}

fn schedule(c: &Cluster, name: &str) -> Value {
    let list = c.json(&["schedule", "list", "--json"]);
    list["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no schedule {name} in {list}"))
        .clone()
}

/// Waits until the wall clock reaches `ms`.
fn sleep_until(ms: u64) {
    let now = now_ms();
    if ms > now {
        std::thread::sleep(Duration::from_millis(ms - now));
    }
}

#[test]
fn a_schedule_fires_each_slot_once_also_across_a_controller_restart() {
    let mut c = Cluster::up(1, &["default"]);
    let file = c.pipeline("tick.toml", QUICK);
    let added = c.json(&[
        "schedule",
        "add",
        "every2",
        "--cron",
        "*/2 * * * * *",
        file.to_str().unwrap(),
        "--json",
    ]);
    let created = added["created_at"].as_u64().unwrap();
    assert_eq!(added["timezone"], "UTC", "{added}");

    // The slots of the first 5 s: 2 or 3 even seconds, each fired once.
    let window_end = created + 5_000;
    sleep_until(window_end + 1_500);
    let slots = fired_slots(&c, "every2");
    let in_window: Vec<u64> = slots
        .keys()
        .copied()
        .filter(|s| *s > created && *s <= window_end)
        .collect();
    assert!(
        (2..=3).contains(&in_window.len()),
        "{} firings in 5 s: {slots:?} (added at {created})",
        in_window.len()
    );
    let expected: Vec<u64> = (created / 2_000 + 1..=window_end / 2_000)
        .map(|k| k * 2_000)
        .collect();
    assert_eq!(in_window, expected, "every slot of the window, once");
    let listed = schedule(&c, "every2");
    assert!(listed["last_fired"]["run_id"].is_string(), "{listed}");
    assert!(
        listed["next_slot"].as_u64().unwrap().is_multiple_of(2_000),
        "{listed}"
    );

    // Killed, down for about 3 s (a slot or two missed), restarted on the same data.
    let before: BTreeSet<u64> = fired_slots(&c, "every2").into_keys().collect();
    c.kill("up");
    let killed_at = now_ms();
    std::thread::sleep(Duration::from_secs(3));
    // Taken before the start: a slot that falls while the new controller starts up is fired
    // on time by it, not missed.
    let restarted_at = now_ms();
    c.start_up(1, &["default"], &[]);
    sleep_until(now_ms() + 4_500);
    let after = fired_slots(&c, "every2");
    let new: Vec<u64> = after
        .keys()
        .copied()
        .filter(|s| !before.contains(s))
        .collect();
    assert!(
        !new.is_empty(),
        "the schedule fires again after the restart: {after:?}"
    );
    let missed = new
        .iter()
        .filter(|s| **s > killed_at && **s < restarted_at)
        .count();
    assert!(
        missed <= 1,
        "slots missed while down fire once, for the latest: {new:?} (down {killed_at}..{restarted_at})"
    );
    for run in after.values() {
        let done = c.wait_for(
            run,
            "a scheduled run to end",
            Duration::from_secs(30),
            |v| v["status"] != "running",
        );
        assert_eq!(done["status"], "succeeded", "{done}");
    }

    // run-now fires at once without a slot; a paused schedule fires nothing.
    let now_run = c.json(&["schedule", "run-now", "every2", "--json"]);
    let view = c.json(&["status", now_run["run_id"].as_str().unwrap(), "--json"]);
    assert_eq!(view["fired_by"]["name"], "every2", "{view}");
    assert!(view["fired_by"].get("slot").is_none(), "{view}");
    let shown = c.drover(&["status", now_run["run_id"].as_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("fired by schedule every2 (run-now)"),
        "{}",
        text(&shown)
    );
    let out = c.drover(&["schedule", "pause", "every2"]);
    assert!(out.status.success(), "{}", text(&out));
    let paused_at = now_ms();
    let count = fired_slots(&c, "every2").len();
    sleep_until(paused_at + 2_500);
    assert_eq!(fired_slots(&c, "every2").len(), count, "paused: no firing");
    assert!(schedule(&c, "every2")["next_slot"].is_null());
    let out = c.drover(&["schedule", "remove", "every2"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = c.drover(&["schedule", "remove", "every2"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no schedule named \"every2\""),
        "{}",
        text(&out)
    );
}

#[test]
fn a_slot_is_skipped_with_its_reason_while_the_previous_run_is_unfinished() {
    let c = Cluster::up(1, &["default"]);
    let file = c.pipeline("slow.toml", SLOW);
    let out = c.drover(&[
        "schedule",
        "add",
        "slow",
        "--cron",
        "*/2 * * * * *",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let skipped = wait_until("a skipped slot", Duration::from_secs(20), || {
        let s = schedule(&c, "slow");
        if s["skipped"].as_u64().unwrap_or(0) >= 1 {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    });
    let first = skipped["last_fired"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let reason = skipped["last_skipped"]["reason"].as_str().unwrap();
    assert!(reason.contains(&first), "{reason}");
    assert!(reason.contains("--overlap"), "{reason}");
    let slots = fired_slots(&c, "slow");
    assert_eq!(slots.len(), 1, "one run while it is unfinished: {slots:?}");
    let listed = c.drover(&["schedule", "list"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("still running"),
        "the reason is shown: {}",
        text(&listed)
    );
    let out = c.drover(&["schedule", "remove", "slow"]);
    assert!(out.status.success(), "{}", text(&out));

    // Bad input is refused naming what is wrong.
    let file = file.to_str().unwrap();
    for (args, says) in [
        (vec!["bad", "--cron", "* * *"], "has 3 field(s)"),
        (
            vec!["bad", "--cron", "0 2 * * *", "--timezone", "Mars/Base"],
            "Mars/Base",
        ),
        (
            vec!["bad name", "--cron", "0 2 * * *"],
            "\"bad name\" is not allowed",
        ),
        (
            vec!["bad", "--cron", "0 2 * * *", "--param", "nope=1"],
            "nope",
        ),
    ] {
        let mut full = vec!["schedule", "add"];
        full.extend(args);
        full.push(file);
        let out = c.drover(&full);
        assert!(!out.status.success(), "{full:?}");
        assert!(text(&out).contains(says), "{says:?}: {}", text(&out));
    }
    assert_eq!(
        c.json(&["schedule", "list", "--json"])["schedules"],
        serde_json::json!([])
    );
}

const UPSTREAM: &str = r#"
[pipeline]
name = "extract"
project = "chain"
default_queue = "default"

[[step]]
name = "a"
command = ["true"]
"#;

const DOWNSTREAM: &str = r#"
[pipeline]
name = "report"
project = "chain"
default_queue = "default"

[parameters]
trigger_run = { default = "" }

[[step]]
name = "r"
command = ["sh", "-c", "echo ${pipeline.trigger_run} > from.txt"]
outputs = { from = "from.txt" }
"#;

#[test]
fn a_trigger_starts_the_downstream_pipeline_once_per_upstream_success() {
    let mut c = Cluster::up(1, &["default"]);
    let upstream = c.pipeline("extract.toml", UPSTREAM);
    let downstream = c.pipeline("report.toml", DOWNSTREAM);

    // The downstream pipeline must declare the parameter.
    let bad = c.drover(&[
        "trigger",
        "add",
        "t",
        "--on-success",
        "chain/extract",
        downstream.to_str().unwrap(),
        "--param-name",
        "source",
    ]);
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("declares no parameter \"source\""),
        "{}",
        text(&bad)
    );

    let out = c.drover(&[
        "trigger",
        "add",
        "after-extract",
        "--on-success",
        "chain/extract",
        downstream.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));

    let mut upstream_runs = BTreeSet::new();
    for _ in 0..2 {
        let (out, run) = c.run_wait(&upstream, &[]);
        assert!(out.status.success(), "{}", text(&out));
        upstream_runs.insert(run["run_id"].as_str().unwrap().to_string());
    }
    let triggered = wait_until("two downstream runs", Duration::from_secs(30), || {
        let fired: Vec<(String, Value)> = runs_fired_by(&c)
            .into_iter()
            .filter(|(_, by)| by["kind"] == "trigger")
            .collect();
        if fired.len() >= 2 {
            Ok(fired)
        } else {
            Err(format!("{fired:?}"))
        }
    });
    let mut passed = BTreeSet::new();
    for (run, by) in &triggered {
        assert_eq!(by["name"], "after-extract", "{by}");
        let done = c.wait_for(run, "the downstream run", Duration::from_secs(30), |v| {
            v["status"] != "running"
        });
        assert_eq!(done["status"], "succeeded", "{done}");
        let upstream = by["upstream"].as_str().unwrap();
        assert_eq!(done["params"]["trigger_run"], upstream, "{done}");
        let out = c.drover(&["artifacts", "get", run, "r", "from", "-o", "-"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), upstream);
        passed.insert(upstream.to_string());
    }
    assert_eq!(passed, upstream_runs, "once per upstream run");
    let list = c.json(&["trigger", "list", "--json"]);
    assert_eq!(list["triggers"][0]["fired"], 2, "{list}");

    // A trigger back from report to extract would loop.
    let extract_with_param = UPSTREAM.replace(
        "[[step]]",
        "[parameters]\ntrigger_run = { default = \"\" }\n\n[[step]]",
    );
    let back = c.pipeline("extract2.toml", &extract_with_param);
    let out = c.drover(&[
        "trigger",
        "add",
        "back",
        "--on-success",
        "chain/report",
        back.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains(
            "trigger back would loop: back (chain/report -> chain/extract), then after-extract (chain/extract -> chain/report)"
        ),
        "{}",
        text(&out)
    );

    // A restarted controller looks at every ended run again: the marks keep each from firing
    // twice. Its first tick has run once a run submitted after the restart is done.
    c.kill("up");
    c.start_up(1, &["default"], &[]);
    let neutral = c.pipeline("tick.toml", QUICK);
    let (out, _) = c.run_wait(&neutral, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let fired = runs_fired_by(&c)
        .into_iter()
        .filter(|(_, by)| by["kind"] == "trigger")
        .count();
    assert_eq!(fired, 2, "nothing fired twice, nothing else fired");
}

/// ClearML's `TaskScheduler` and `TriggerScheduler` from Python register with the controller.
#[test]
fn clearml_schedulers_from_python_register_with_the_controller() {
    let c = Cluster::up(1, &["default"]);
    let upstream = c.pipeline("extract.toml", UPSTREAM);
    let downstream = c.pipeline("report.toml", DOWNSTREAM);
    let (out, first) = c.run_wait(&downstream, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let report = first["run_id"].as_str().unwrap();
    let script = format!(
        r#"
from drover.automation import TaskScheduler, TriggerScheduler
s = TaskScheduler()
s.add_task(schedule_task_id="{report}", minute=30, hour=2, day=1, name="py-nightly",
           execute_immediately=True, task_parameters={{"Args/trigger_run": "by-hand"}})
s.start()
t = TriggerScheduler()
t.add_task_trigger(schedule_task_id="{report}", trigger_project="chain", trigger_name="extract",
                   name="py-after")
t.start_remotely()
print([x["name"] for x in s.get_scheduled_tasks()])
"#
    );
    let out = c.python(&["-c", &script]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("['py-nightly']"),
        "{}",
        text(&out)
    );
    let listed = schedule(&c, "py-nightly");
    assert_eq!(listed["cron"], "30 2 * * *", "{listed}");
    assert_eq!(
        listed["overlap"], true,
        "ClearML's single_instance=False: {listed}"
    );
    let now_run = listed["last_fired"]["run_id"].as_str().unwrap().to_string();
    let done = c.wait_for(&now_run, "the run-now run", Duration::from_secs(30), |v| {
        v["status"] != "running"
    });
    assert_eq!(done["params"]["trigger_run"], "by-hand", "{done}");

    let (out, up) = c.run_wait(&upstream, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let up = up["run_id"].as_str().unwrap().to_string();
    wait_until(
        "the python trigger to fire",
        Duration::from_secs(30),
        || {
            let fired = runs_fired_by(&c)
                .into_iter()
                .any(|(_, by)| by["name"] == "py-after" && by["upstream"] == up.as_str());
            if fired {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        },
    );
}
