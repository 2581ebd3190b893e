//! The web UI in a real browser (Debian's headless Chromium, driven over the DevTools protocol
//! by `tests/browser/run_page.py`): the seed pipeline's run page shows its three steps as a chain
//! with final statuses, parameters, outputs, each step's console and code; a running step's
//! console follows its output live, rendering `\r` and invalid UTF-8; a screenshot of the run
//! page is kept as a test artifact. A long log's console opens at its tail and loads earlier
//! bytes on request (`tests/browser/long_log.py`). A decorator pipeline's run page, open from
//! when its driver is the only step, marks the driver and shows each step the driver adds, and
//! the driver's output, without a reload (`tests/browser/growing_dag.py`). A finished run's
//! "New run" form, on a controller without a token, starts a run with a changed parameter
//! (`tests/browser/new_run.py`): its POST passes the CSRF check. The schedules page lists a
//! schedule and a trigger and pauses the schedule, and a fired run's page names its schedule
//! (`tests/browser/schedules_page.py`). A step's scalars are charted live, each chart drawing
//! exactly the reported points (`tests/browser/scalars_page.py`). The tasks page lists a
//! registered task and shows its script, and an external run's page says who executed it
//! (`tests/browser/tasks_page.py`).

use crate::harness::{py_wait_for, text, wait_until};
use crate::live::{TOKEN, summary, with_token};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/run_page.py");
const LONG_LOG_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/long_log.py");
const GROWING_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/growing_dag.py");
const DECORATORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/py/decorators.py");
const SCALARS_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/scalars_page.py");

/// Prints a line, waits for the file `go` (the browser script writes it once the page shows
/// that line and watches the console), then writes a progress bar, a byte that is not UTF-8,
/// and timestamped lines a quarter of a second apart (the spacing is the workload: each line's
/// latency is measured on its own).
fn console(go: &Path) -> String {
    format!(
        r#"
[pipeline]
name = "console"
project = "e2e"
[[step]]
name = "tick"
command = ["python3", "-u", "-c", '''
print("waiting for the page")
{wait}sys.stdout.write("progress 10%\rprogress 60%\rprogress 100%\n")
sys.stdout.buffer.write(b"bad \xff byte\n")
for i in range(8):
    print(f"tick {{i}} {{time.time():.6f}}")
    time.sleep(0.25)
''']
"#,
        wait = py_wait_for(go)
    )
}

fn screenshot_path() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("run-page.png")
}

fn has_chromium() -> bool {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .any(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

#[test]
fn the_seed_run_page_shows_the_dag_console_and_code_in_chromium() {
    assert!(
        has_chromium(),
        "the browser test needs Chromium: apt-get install -y chromium (scripts/test.sh does)"
    );
    let c = with_token(2);
    let out = c.python(&[&format!("{EXAMPLES}/make_iris_pickle.py")]);
    assert!(out.status.success(), "{}", text(&out));
    let out = c.python(&[&format!("{EXAMPLES}/pipeline_from_functions.py")]);
    assert!(out.status.success(), "{}", text(&out));
    let seed = c.json(&["wait", "latest", "--json"]);
    assert_eq!(seed["status"], "succeeded", "{seed}");
    let seed_run = seed["run_id"].as_str().unwrap().to_string();
    let go = c.dir.path().join("go");
    let file = c.pipeline("console.toml", &console(&go));
    let live = c.json(&["run", file.to_str().unwrap(), "--json"]);
    let live_run = live["run_id"].as_str().unwrap().to_string();
    assert_eq!(live["url"], format!("{}/runs/{live_run}", c.url));

    let shot = screenshot_path();
    let _ = std::fs::remove_file(&shot);
    let out = Command::new("python3")
        .args([SCRIPT, &c.url, TOKEN, &seed_run, &live_run])
        .arg(&shot)
        .arg(&go)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\nup log:\n{}",
        text(&out),
        c.process_log("up")
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        seen["page_errors"],
        serde_json::json!([]),
        "the pages' scripts reported errors"
    );
    assert!(
        seen["runs_listed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == seed_run.as_str()),
        "{seen}"
    );

    // The live console: progress bars end on their last state, bad bytes do not break it.
    let console = seen["live"]["console"].as_str().unwrap();
    assert!(console.contains("progress 100%"), "{console}");
    assert!(
        !console.contains("progress 10%"),
        "\\r rewinds the line: {console}"
    );
    assert!(console.contains("bad \u{fffd} byte"), "{console}");
    assert_eq!(console.matches("tick ").count(), 8, "{console}");
    let latencies: Vec<f64> = seen["live"]["latencies_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(!latencies.is_empty(), "no line was seen arriving: {seen}");
    let (median, max) = summary(latencies.clone());
    eprintln!(
        "live logs in Chromium: {} lines, latency median {median:.0} ms, max {max:.0} ms (print to the console's DOM; budget 500 ms)",
        latencies.len()
    );
    assert!(max < 500.0, "every line within 500 ms: {latencies:?}");

    // The seed's page: a chain of three steps, all succeeded, with parameters and outputs.
    let page = &seen["seed"];
    let chain = ["step_one", "step_two", "step_three"];
    let dag: Vec<(String, String)> = serde_json::from_value(page["dag"].clone()).unwrap();
    let expected: Vec<(String, String)> = chain
        .iter()
        .map(|s| (s.to_string(), "succeeded".to_string()))
        .collect();
    assert_eq!(dag, expected, "{page}");
    assert_eq!(
        page["edges"],
        serde_json::json!([["step_one", "step_two"], ["step_two", "step_three"]])
    );
    assert!(
        page["title"].as_str().unwrap().contains("succeeded"),
        "{page}"
    );
    assert!(
        page["params"].as_str().unwrap().contains("iris.pkl"),
        "{page}"
    );
    for output in ["data_frame", "processed_data", "model"] {
        assert!(
            page["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o == output),
            "{output}: {page}"
        );
    }
    assert!(
        page["controller_log"]
            .as_str()
            .unwrap()
            .contains("run succeeded"),
        "{page}"
    );
    for step in chain {
        let s = &page["steps"][step];
        let console = s["console"].as_str().unwrap();
        assert!(
            console.contains("drover: --python-env system: running on"),
            "{step} console: {console}"
        );
        let code = s["code"].as_str().unwrap();
        assert!(
            code.contains(&format!("def {step}(")),
            "{step} code: {code}"
        );
        assert!(
            code.contains("scikit-learn=="),
            "{step} requirements: {code}"
        );
        let panel = s["panel"].as_str().unwrap();
        assert!(panel.contains("attempt1 of 1"), "{step} panel: {panel}");
        // The attempts table says how the step's Python process started.
        let attempts = panel.split("Attempts").nth(1).unwrap_or_default();
        let attempts = attempts.split("Inputs").next().unwrap_or_default();
        assert!(
            attempts.contains("endedstartexit")
                && (attempts.contains("warm") || attempts.contains("cold")),
            "{step} panel: {panel}"
        );
    }
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} is {size} bytes",
        shot.display()
    );
    eprintln!("run page screenshot: {}", shot.display());
}

/// The numbers of the whole `line NNNNN xxx…` lines of a console's text, in order; panics on a
/// line cut in part.
fn numbered_lines(text: &str) -> Vec<u32> {
    text.lines()
        .filter(|l| l.starts_with("line "))
        .map(|l| {
            let (number, rest) = l["line ".len()..]
                .split_once(' ')
                .unwrap_or_else(|| panic!("{l:?}"));
            assert_eq!(rest, "x".repeat(50), "a line shown in part: {l:?}");
            number.parse().unwrap()
        })
        .collect()
}

/// A 1.2 MB log opens at its last 256 KiB, from a whole line, and the button shows 256 KiB more.
#[test]
fn a_long_log_opens_at_its_tail_in_chromium() {
    assert!(
        has_chromium(),
        "the browser test needs Chromium: apt-get install -y chromium (scripts/test.sh does)"
    );
    let c = with_token(1);
    let file = c.pipeline(
        "long.toml",
        "[pipeline]\nname = \"long\"\n[[step]]\nname = \"long\"\ncommand = [\"python3\", \"-c\", \"for i in range(20000): print(f'line {i:05d} ' + 'x' * 50)\"]\n",
    );
    let (out, run) = c.run_wait(&file, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let run_id = run["run_id"].as_str().unwrap();
    let out = Command::new("python3")
        .args([LONG_LOG_SCRIPT, &c.url, TOKEN, run_id, "long"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["page_errors"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["button"], true, "{seen}");
    let first = seen["first"].as_str().unwrap();
    assert!(first.contains("earlier not shown"), "{first:.300}");
    let shown = numbered_lines(first);
    // 62 bytes a line: the last 256 KiB hold 4,228 whole lines.
    assert_eq!(shown.last(), Some(&19_999));
    assert!(
        (4_200..=4_229).contains(&shown.len()),
        "{} lines",
        shown.len()
    );
    assert!(shown.windows(2).all(|w| w[1] == w[0] + 1));
    let after = numbered_lines(seen["after"].as_str().unwrap());
    assert_eq!(after.last(), Some(&19_999));
    assert!(
        (8_400..=8_458).contains(&after.len()) && after.windows(2).all(|w| w[1] == w[0] + 1),
        "{} lines from {:?}",
        after.len(),
        after.first()
    );
}

/// The names of the nodes of one DAG the page drew, in its order.
fn node_names(nodes: &Value) -> Vec<String> {
    nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n[0].as_str().unwrap().to_string())
        .collect()
}

/// A decorator pipeline's driver adds three steps, a second apart; the run page, opened while
/// the driver is the only step, shows it marked as the driver, then each added step in turn and
/// the driver's output in the pipeline console, all on the page first loaded.
#[test]
fn a_decorator_pipelines_dag_grows_on_the_open_run_page_in_chromium() {
    assert!(
        has_chromium(),
        "the browser test needs Chromium: apt-get install -y chromium (scripts/test.sh does)"
    );
    let mut c = with_token(1);
    c.queues.push("drivers".into());
    let go = c.dir.path().join("go");
    let out = c.python(&[DECORATORS, "growing", go.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let run = stdout
        .split("submitted as run ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("no run id in {stdout}"))
        .to_string();
    // The page is opened once the controller knows the run.
    wait_until("the run to be known", Duration::from_secs(30), || {
        c.drover(&["status", &run, "--json"])
            .status
            .success()
            .then_some(())
    });
    let out = Command::new("python3")
        .args([GROWING_SCRIPT, &c.url, TOKEN, &run])
        .arg(&go)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\nup log:\n{}",
        text(&out),
        c.process_log("up")
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["page_errors"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["same_page"], true, "the page was loaded again: {seen}");

    // Before the driver made a call: its node alone, marked as the driver, and its output.
    let before = &seen["before_go"];
    let driver = &before["nodes"][0];
    assert_eq!(node_names(&before["nodes"]), ["driver"], "{before}");
    assert_eq!(driver[1], "running", "{before}");
    assert_eq!(driver[2], true, "the driver node is marked: {before}");
    assert!(
        driver[3].as_str().unwrap().contains("driver · running"),
        "{before}"
    );
    let pipeline = &before["pipeline"];
    assert_eq!(pipeline["hidden"], false, "{before}");
    assert!(
        pipeline["title"]
            .as_str()
            .unwrap()
            .contains("driver driver"),
        "{before}"
    );

    // Each added step appeared on its own, in order, on the page first loaded.
    let dags = seen["dags"].as_array().unwrap();
    let names: Vec<Vec<String>> = dags.iter().map(|d| node_names(&d["nodes"])).collect();
    let expected = [
        vec!["driver"],
        vec!["driver", "pause"],
        vec!["driver", "pause", "pause_1"],
        vec!["driver", "pause", "pause_1", "pause_2"],
    ];
    assert_eq!(names, expected, "the DAGs the page drew: {seen}");
    // The console followed the driver while it ran: when the third step appeared, the line the
    // driver printed after the first step's result (a second earlier) was on the page.
    let third = dags[3]["console"].as_str().unwrap();
    assert!(third.contains("driver: step 1 of 3 gave 1"), "{third}");
    let spacing = dags[3]["at"].as_f64().unwrap() - dags[1]["at"].as_f64().unwrap();
    assert!(
        spacing >= 1_500.0,
        "the steps appeared {spacing} ms apart: added one by one as the driver ran"
    );

    // The end, still on the same page: every step succeeded, the chain's edges, the whole console.
    assert!(
        seen["title"].as_str().unwrap().contains("succeeded"),
        "{seen}"
    );
    let last = seen["last_nodes"].as_array().unwrap();
    assert_eq!(last.len(), 4, "{seen}");
    for node in last {
        assert_eq!(node[1], "succeeded", "{node}");
        assert_eq!(
            node[2],
            node[0] == "driver",
            "only the driver is marked: {node}"
        );
    }
    assert_eq!(
        seen["edges"],
        serde_json::json!([["pause", "pause_1"], ["pause_1", "pause_2"]]),
        "{seen}"
    );
    let console = seen["pipeline"]["console"].as_str().unwrap();
    for line in [
        "driver waiting for the page",
        "driver: step 1 of 3 gave 1",
        "driver: step 2 of 3 gave 2",
        "driver: step 3 of 3 gave 3",
    ] {
        assert!(console.contains(line), "{line}: {console}");
    }
}

const NEW_RUN_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/new_run.py");

/// The run page's "New run" form on a controller without a token: its POST carries the CSRF
/// token the page fetched, and the new run has the changed parameter and records its origin.
#[test]
fn the_new_run_form_starts_a_run_with_a_changed_parameter_in_chromium() {
    assert!(
        has_chromium(),
        "the browser test needs Chromium: apt-get install -y chromium (scripts/test.sh does)"
    );
    let c = crate::harness::Cluster::patient_up(1, &["default"]);
    let hello = std::fs::read_to_string(format!("{EXAMPLES}/hello.toml")).unwrap();
    let file = c.pipeline("hello.toml", &hello);
    let (out, first) = c.run_wait(&file, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let first = first["run_id"].as_str().unwrap().to_string();

    let out = Command::new("python3")
        .args([NEW_RUN_SCRIPT, &c.url, &first, "who", "browser"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\nup log:\n{}",
        text(&out),
        c.process_log("up")
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["page_errors"], serde_json::json!([]), "{seen}");
    assert_eq!(seen["prefilled"], "world", "the run's value: {seen}");
    let new_run = seen["new_run"].as_str().unwrap();
    assert_ne!(new_run, first);
    assert!(
        seen["params"].as_str().unwrap().contains("browser"),
        "{seen}"
    );
    assert!(seen["origin"].as_str().unwrap().contains(&first), "{seen}");

    let done = c.json(&["wait", new_run, "--json"]);
    assert_eq!(done["status"], "succeeded", "{done}");
    let view = c.json(&["status", new_run, "--json"]);
    assert_eq!(view["params"]["who"], "browser", "{view}");
    assert_eq!(view["rerun_of"], first.as_str(), "{view}");
    let out = c.drover(&["artifacts", "get", new_run, "upper", "loud", "-o", "-"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "HELLO BROWSER\n",
        "{}",
        text(&out)
    );
}

const SCHEDULES_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/browser/schedules_page.py"
);

/// The schedules page lists a schedule (with its next slot) and a trigger, and its Pause button
/// pauses the schedule through a POST with the page's CSRF token.
#[test]
fn the_schedules_page_lists_and_pauses_schedules_in_chromium() {
    assert!(
        has_chromium(),
        "the browser test needs Chromium: apt-get install -y chromium (scripts/test.sh does)"
    );
    let c = crate::harness::Cluster::patient_up(1, &["default"]);
    let hello = std::fs::read_to_string(format!("{EXAMPLES}/hello.toml")).unwrap();
    let file = c.pipeline("hello.toml", &hello);
    let report = c.pipeline(
        "report.toml",
        "[pipeline]\nname = \"report\"\nproject = \"examples\"\n[parameters]\ntrigger_run = { default = \"\" }\n[[step]]\nname = \"r\"\ncommand = [\"true\"]\n",
    );
    for args in [
        vec![
            "schedule",
            "add",
            "nightly",
            "--cron",
            "0 2 * * *",
            file.to_str().unwrap(),
        ],
        vec![
            "trigger",
            "add",
            "after-hello",
            "--on-success",
            "examples/hello",
            report.to_str().unwrap(),
        ],
    ] {
        let out = c.drover(&args);
        assert!(out.status.success(), "{}", text(&out));
    }
    let fired = c.json(&["schedule", "run-now", "nightly", "--json"]);
    let fired = fired["run_id"].as_str().unwrap();
    let out = Command::new("python3")
        .args([SCHEDULES_SCRIPT, &c.url, "nightly", "after-hello", fired])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["page_errors"], serde_json::json!([]), "{seen}");
    assert!(
        seen["nav"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "Schedules"),
        "{seen}"
    );
    let row = seen["schedule"].as_str().unwrap();
    for part in ["0 2 * * *", "examples/hello", "active", "(in "] {
        assert!(row.contains(part), "{part:?} in {row:?}");
    }
    let trigger = seen["trigger"].as_str().unwrap();
    assert!(trigger.contains("examples/hello succeeds"), "{trigger}");
    assert!(trigger.contains("examples/report"), "{trigger}");
    let listed = c.json(&["schedule", "list", "--json"]);
    assert_eq!(listed["schedules"][0]["paused"], true, "{listed}");
    assert_eq!(
        seen["fired_by"], "fired by schedule nightly (run now)",
        "the fired run's page: {seen}"
    );
}

/// A step's scalars drawn live in Chromium: opened on the step while it runs, the step panel and
/// the run's scalars card each draw one chart per title whose points are exactly the reported
/// `(iteration, value)` pairs, under the controller's Content-Security-Policy.
#[test]
fn a_steps_scalars_are_charted_live_in_chromium() {
    assert!(
        has_chromium(),
        "the browser test needs Chromium: apt-get install -y chromium (scripts/test.sh does)"
    );
    let c = with_token(1);
    let (run, go) = crate::scalars::submit(&c);
    let shot = screenshot_path().with_file_name("scalars-page.png");
    let out = Command::new("python3")
        .args([SCALARS_SCRIPT, &c.url, TOKEN, &run])
        .arg(&go)
        .arg(&shot)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\nup log:\n{}",
        text(&out),
        c.process_log("up")
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["page_errors"], serde_json::json!([]), "{seen}");
    assert_eq!(
        seen["step_status"], "running",
        "drawn while running: {seen}"
    );
    assert_eq!(seen["styled"], true, "uplot.css loaded: {seen}");
    assert_eq!(seen["panel_hidden"], false, "{seen}");
    assert_eq!(seen["card_hidden"], false, "{seen}");
    let want = crate::scalars::reported();
    for (when, view) in [
        ("while_running", "panel"),
        ("while_running", "run"),
        ("after_end", "panel"),
        ("after_end", "run"),
    ] {
        let charts = seen[when][view].as_array().unwrap();
        let titles: Vec<&str> = charts
            .iter()
            .map(|c| c["title"].as_str().unwrap())
            .collect();
        assert_eq!(
            titles,
            ["accuracy", "loss"],
            "{view}: one chart per title: {seen}"
        );
        let mut drawn = Vec::new();
        for chart in charts {
            assert_eq!(chart["step"], "report", "{chart}");
            assert_eq!(chart["canvas"], true, "{chart}");
            assert_eq!(
                chart["legend"],
                serde_json::json!(["iteration", "test", "train"]),
                "{view}: one line per series: {chart}"
            );
            for series in ["test", "train"] {
                let points: Vec<(i64, f64)> =
                    serde_json::from_value(chart["points"][series].clone()).unwrap();
                drawn.push((
                    chart["title"].as_str().unwrap().to_string(),
                    series.to_string(),
                    points,
                ));
            }
        }
        assert_eq!(
            drawn, want,
            "{view}: the drawn points are the reported ones"
        );
    }
    assert!(
        seen["title"].as_str().unwrap().contains("succeeded"),
        "{seen}"
    );
}

const TASKS_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/tasks_page.py");

/// The tasks page lists a task registered by its script (project, name, type, parameters) and
/// shows its script on request; the page of a run executed by its submitter says so.
#[test]
fn the_tasks_page_lists_a_registered_task_in_chromium() {
    assert!(
        has_chromium(),
        "the browser test needs Chromium: apt-get install -y chromium (scripts/test.sh does)"
    );
    let c = crate::harness::Cluster::patient_up(0, &["default"]);
    let make = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/e2e/py/tasks/make_data.py"
    );
    let out = c.python(&[make]);
    assert!(out.status.success(), "{}", text(&out));
    let listed = c.json(&["tasks", "--json"]);
    let task_id = listed["tasks"][0]["id"].as_str().unwrap().to_string();
    let local = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/py/local_runs.py");
    let out = c.python(&[local, "controller"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let external = stdout
        .split("recorded as run ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_else(|| panic!("not recorded: {stdout}"))
        .to_string();

    let out = Command::new("python3")
        .args([TASKS_SCRIPT, &c.url, &task_id, &external])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["page_errors"], serde_json::json!([]), "{seen}");
    assert!(
        seen["nav"].as_array().unwrap().iter().any(|n| n == "Tasks"),
        "{seen}"
    );
    assert_eq!(
        seen["headers"],
        serde_json::json!([
            "task",
            "project",
            "name",
            "type",
            "parameters",
            "requirements",
            "updated"
        ]),
        "{seen}"
    );
    let cells: Vec<&str> = seen["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(cells[0].starts_with(&task_id), "{seen}");
    assert_eq!(
        cells[1..4],
        ["e2e", "make data", "data_processing"],
        "{seen}"
    );
    assert_eq!(cells[4], "General/rows = 3", "{seen}");
    assert_eq!(seen["script_shown_before"], false, "{seen}");
    let script = seen["script"].as_str().unwrap();
    assert!(
        script.contains("task.upload_artifact(\"dataset\""),
        "{script}"
    );
    assert_eq!(
        seen["external"],
        "executed by the process that submitted it (run_locally or start_locally), not by agents",
        "{seen}"
    );
}
