//! Live logs and the token end to end: a step prints timestamps, `drover logs -f` (the
//! controller's log event stream) prints them, and the test measures how long each line took
//! from the step's print to the follower's stdout.

use crate::harness::{Cluster, PATIENT_LEASE, py_wait_for, text};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{SystemTime, UNIX_EPOCH};

pub const TOKEN: &str = "e2e-token-4f1c";

/// How many timestamped lines the step prints.
pub const TICKS: usize = 12;

/// A step that prints `ready`, waits for the file `go` (the test writes it once the follower has
/// shown that line, so it is attached), then prints [`TICKS`] timestamped lines a quarter of a
/// second apart: the spacing is the workload, each line's latency is measured on its own.
fn ticking(go: &Path) -> String {
    format!(
        r#"
[pipeline]
name = "ticking"
project = "e2e"
[[step]]
name = "tick"
command = ["python3", "-u", "-c", """
print("ready")
{wait}for i in range({TICKS}):
    print(f'tick {{i}} {{time.time():.6f}}')
    time.sleep(0.25)
"""]
"#,
        wait = py_wait_for(go)
    )
}

/// A cluster whose controller requires [`TOKEN`]; every command it starts sends it. Its tests
/// lose nothing on purpose, so its lease is the patient one.
pub fn with_token(agents: u32) -> Cluster {
    let mut c = Cluster::new();
    c.lease = PATIENT_LEASE;
    c.env.push(("DROVER_TOKEN".into(), TOKEN.into()));
    c.start_controller_with(&["up".into(), "--agents".into(), agents.to_string()]);
    c
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Median and maximum of latencies in ms.
pub fn summary(mut latencies: Vec<f64>) -> (f64, f64) {
    latencies.sort_by(f64::total_cmp);
    let median = latencies[latencies.len() / 2];
    (median, latencies[latencies.len() - 1])
}

#[test]
fn followed_logs_arrive_within_half_a_second_and_the_token_is_required() {
    let c = with_token(1);
    let go = c.dir.path().join("go");
    let file = c.pipeline("ticking.toml", &ticking(&go));

    // Without the token the CLI is refused, with a hint.
    let out = c
        .command()
        .env_remove("DROVER_TOKEN")
        .args(["runs"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        text(&out)
    );

    // The submit prints the run page URL.
    let out = c.drover(&["run", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let run_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("submitted run "))
        .unwrap_or_else(|| panic!("no run id in {stdout}"))
        .to_string();
    assert!(
        stdout.contains(&format!("{}/runs/{run_id}", c.url)),
        "the run page URL is printed: {stdout}"
    );

    let mut follower = c
        .command()
        .args(["logs", &run_id, "tick", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("the step's first line").unwrap();
    assert_eq!(first, "ready");
    std::fs::write(&go, "").unwrap();
    let mut latencies = Vec::new();
    for line in lines {
        let line = line.unwrap();
        let arrived = now_s();
        let printed: f64 = line
            .split(' ')
            .nth(2)
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        latencies.push((arrived - printed) * 1000.0);
    }
    let status = follower.wait().unwrap();
    assert!(status.success(), "drover logs -f failed");
    assert_eq!(latencies.len(), TICKS, "every line arrives: {latencies:?}");
    let (median, max) = summary(latencies.clone());
    eprintln!(
        "live logs via `drover logs -f`: {TICKS} lines, latency median {median:.0} ms, max {max:.0} ms (print to follower stdout; budget 500 ms)"
    );
    assert!(
        max < 500.0,
        "every line within 500 ms of being printed: {latencies:?}"
    );

    let wait = c.drover(&["wait", &run_id, "--json"]);
    assert!(wait.status.success(), "{}", text(&wait));
}
