//! The artifact cases on both stores: the controller's local store and an S3 bucket (a
//! `moto_server` per test) that agents use directly. The diamond and function-diamond cases of
//! `pipelines.rs` and `functions.rs` run here again on S3.

use crate::harness::{Cluster, Store, text, wait_until};
use drover_storage::{PART_SIZE, PARTS_IN_FLIGHT};
use serde_json::Value;
use std::time::Duration;

const BIG: u64 = 64 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;
/// What a process may add to its peak memory while moving [`BIG`]: the S3 upload's parts in
/// flight and the one filling, plus slack for the runtime; well below the artifact's size.
const GROWTH_BOUND: u64 = (PARTS_IN_FLIGHT as u64 + 1) * PART_SIZE as u64 + 12 * MIB;
const _: () = assert!(GROWTH_BOUND < BIG * 3 / 4);

#[test]
fn hello_diamond_on_s3() {
    let c = Cluster::up_on(Store::S3, 2, &["default"]);
    crate::pipelines::hello_diamond(&c);
    assert!(c.local_blobs().is_empty(), "{:?}", c.local_blobs());
    // greet, upper, count, report: four different outputs.
    assert_eq!(c.bucket_keys().len(), 4, "{:?}", c.bucket_keys());
}

#[test]
fn function_diamond_on_s3() {
    let c = Cluster::up_on(Store::S3, 2, &["default"]);
    crate::functions::function_diamond(&c);
    assert!(c.local_blobs().is_empty(), "{:?}", c.local_blobs());
    assert!(!c.bucket_keys().is_empty());
}

/// A size field of a process's `/proc/<pid>/status` text, in bytes.
fn status_bytes(status: &str, field: &str) -> u64 {
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    kb * 1024
}

/// Peak resident memory of a started process so far (`VmHWM`), and of that its pages of mapped
/// files now (`RssFile`): the code a transfer runs for the first time counts in the peak too,
/// and how much of the binary one touch maps depends on the page cache, not on the transfer.
fn peak_and_file(c: &Cluster, label: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid(label))).unwrap();
    (
        status_bytes(&status, "VmHWM"),
        status_bytes(&status, "RssFile"),
    )
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

fn big_pipeline() -> String {
    format!(
        r#"
[pipeline]
name = "big"
[[step]]
name = "make"
queue = "q1"
command = ["sh", "-c", "head -c {BIG} /dev/urandom > big.bin"]
outputs = {{ big = "big.bin" }}
[[step]]
name = "check"
queue = "q2"
command = ["sh", "-c", "sha256sum ${{make.big}} | cut -d' ' -f1 > sum.txt; wc -c < ${{make.big}} | tr -d ' ' >> sum.txt"]
outputs = {{ sum = "sum.txt" }}
"#
    )
}

/// A 64 MiB artifact from an agent on one queue to an agent on another, each a separate
/// process: it arrives intact, `drover artifacts get` serves it, and no process's peak memory
/// grows by anything near its size (everything streams). On S3 the controller holds no byte.
fn big_artifact_between_agents(store: Store) {
    let mut c = Cluster::on(store);
    c.start_controller_with(&["controller".to_string()]);
    c.start_agent("agent-one", &["q1"]);
    c.start_agent("agent-two", &["q2"]);
    wait_until("both agents to report", Duration::from_secs(20), || {
        let doc = c.json(&["agents", "--json"]);
        (doc["agents"].as_array()?.len() == 2).then_some(())
    });
    let labels = ["controller", "agent-one", "agent-two"];
    let before: Vec<(u64, u64)> = labels.iter().map(|l| peak_and_file(&c, l)).collect();

    let file = c.pipeline("big.toml", &big_pipeline());
    let (out, run) = c.run_wait(&file, &[]);
    assert!(
        out.status.success(),
        "{}\nagent-one: {}\nagent-two: {}",
        text(&out),
        c.process_log("agent-one"),
        c.process_log("agent-two")
    );
    // The peak's growth less the mapped files' growth: what the process itself allocated.
    let grown: Vec<u64> = labels
        .iter()
        .zip(&before)
        .map(|(l, (peak, file))| {
            let (peak_now, file_now) = peak_and_file(&c, l);
            peak_now
                .saturating_sub(*peak)
                .saturating_sub(file_now.saturating_sub(*file))
        })
        .collect();

    let run_id = run["run_id"].as_str().unwrap();
    let status = c.json(&["status", run_id, "--json"]);
    let make = Cluster::step(&status, "make");
    let digest = make["outputs"]["big"]["digest"].as_str().unwrap();
    let sum = c.drover(&["artifacts", "get", run_id, "check", "sum", "-o", "-"]);
    assert!(sum.status.success(), "{}", text(&sum));
    assert_eq!(
        String::from_utf8_lossy(&sum.stdout),
        format!("{digest}\n{BIG}\n"),
        "the consumer saw other bytes than the producer stored"
    );
    let copy = c.dir.path().join("big.copy");
    let got = c.drover(&[
        "artifacts",
        "get",
        run_id,
        "make",
        "big",
        "-o",
        copy.to_str().unwrap(),
    ]);
    assert!(got.status.success(), "{}", text(&got));
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), BIG);
    let copied = std::process::Command::new("sha256sum")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&copied.stdout).starts_with(digest));
    std::fs::remove_file(&copy).unwrap();

    let where_stored = match store {
        Store::Local => c.local_blobs(),
        Store::S3 => {
            assert!(c.local_blobs().is_empty(), "{:?}", c.local_blobs());
            c.bucket_keys()
        }
    };
    assert!(
        where_stored.iter().any(|k| k.ends_with(digest)),
        "{digest} not in {where_stored:?}"
    );

    eprintln!(
        "{store:?}: a {} MiB artifact moved; peak RSS growth less mapped files': controller {:.1} MiB, producer {:.1} MiB, consumer {:.1} MiB (peak before: {:.1} / {:.1} / {:.1} MiB)",
        mib(BIG),
        mib(grown[0]),
        mib(grown[1]),
        mib(grown[2]),
        mib(before[0].0),
        mib(before[1].0),
        mib(before[2].0),
    );
    for (label, growth) in labels.iter().zip(&grown) {
        assert!(
            *growth < GROWTH_BOUND,
            "{label}'s peak memory grew by {:.1} MiB (bound {:.1}) moving a {} MiB artifact: something buffers it",
            mib(*growth),
            mib(GROWTH_BOUND),
            mib(BIG)
        );
    }
    if store == Store::S3 {
        assert!(
            grown[0] < 8 * MIB,
            "the controller grew by {:.1} MiB though agents move the bytes",
            mib(grown[0])
        );
        for agent in ["agent-one", "agent-two"] {
            assert!(
                c.process_log(agent)
                    .contains("artifacts go straight to s3://"),
                "{agent} did not use the bucket directly:\n{}",
                c.process_log(agent)
            );
        }
    }
}

#[test]
fn big_artifact_between_agents_local() {
    big_artifact_between_agents(Store::Local);
}

#[test]
fn big_artifact_between_agents_s3() {
    big_artifact_between_agents(Store::S3);
}

const CACHED: &str = r#"
[pipeline]
name = "cached"
[[step]]
name = "make"
cache = true
command = ["sh", "-c", "echo made once > made.txt"]
outputs = { made = "made.txt" }
[[step]]
name = "use"
cache = true
command = ["sh", "-c", "tr a-z A-Z < ${make.made} > used.txt"]
outputs = { used = "used.txt" }
"#;

/// A second run of the same steps is all cache hits, and its artifacts are served from the
/// store the first run filled.
fn cache_hits_serve_stored_artifacts(store: Store) {
    let c = Cluster::up_on(store, 1, &["default"]);
    let file = c.pipeline("cached.toml", CACHED);
    let (out, first) = c.run_wait(&file, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let (out, again) = c.run_wait(&file, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let steps = |run: &Value, status: &str| {
        ["make", "use"]
            .iter()
            .all(|s| run["steps"][s].as_str() == Some(status))
    };
    assert!(steps(&first, "succeeded"), "{first}");
    assert!(steps(&again, "cached"), "{again}");
    let run_id = again["run_id"].as_str().unwrap();
    let used = c.drover(&["artifacts", "get", run_id, "use", "used", "-o", "-"]);
    assert!(used.status.success(), "{}", text(&used));
    assert_eq!(String::from_utf8_lossy(&used.stdout), "MADE ONCE\n");
    if store == Store::S3 {
        assert!(c.local_blobs().is_empty(), "{:?}", c.local_blobs());
        assert_eq!(c.bucket_keys().len(), 2, "{:?}", c.bucket_keys());
    }
}

#[test]
fn cache_hits_serve_stored_artifacts_local() {
    cache_hits_serve_stored_artifacts(Store::Local);
}

#[test]
fn cache_hits_serve_stored_artifacts_s3() {
    cache_hits_serve_stored_artifacts(Store::S3);
}
