//! The web UI in a real browser (Debian's headless Chromium, driven over the DevTools protocol
//! by `tests/browser/run_page.py`): the seed pipeline's run page shows its three steps as a chain
//! with final statuses, parameters, outputs, each step's console and code; a running step's
//! console follows its output live, rendering `\r` and invalid UTF-8; a screenshot of the run
//! page is kept as a test artifact. A long log's console opens at its tail and loads earlier
//! bytes on request (`tests/browser/long_log.py`).

use crate::harness::{py_wait_for, text};
use crate::live::{TOKEN, summary, with_token};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/run_page.py");
const LONG_LOG_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/long_log.py");

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
