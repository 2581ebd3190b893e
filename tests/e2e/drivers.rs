//! Dynamic runs driven through the channel with nothing but `socket` and `json` (no SDK): a
//! driver adds a step, waits for it and reads its output; a component that adds a step of its
//! own and waits for it does not deadlock an agent with one slot.

use crate::harness::{Cluster, text};
use serde_json::Value;
use std::time::Duration;

/// Python: `call(request)` sends one request over a fresh connection to the attempt's channel
/// and returns the answer, raising on an error. `chr(10)` so the text can be nested in a
/// triple-quoted string.
const CALL: &str = r#"
import json, os, pickle, socket

def call(request):
    conn = socket.socket(socket.AF_UNIX)
    conn.connect(os.environ["DROVER_CHANNEL"])
    conn.sendall((json.dumps(request) + chr(10)).encode())
    answer = json.loads(conn.makefile("rb").readline())
    conn.close()
    if not answer["ok"]:
        raise RuntimeError(answer["error"])
    return answer

def run_and_fetch(seq, step, output, dest):
    added = call({"op": "add_step", "call": {"seq": seq, "component": step["name"], "digest": "d" + str(seq)}, "step": step})
    view = call({"op": "wait", "step": added["step"]})["view"]
    assert view["status"] == "succeeded", view
    call({"op": "get", "artifact": view["outputs"][output], "dest": dest})
    return added["step"]
"#;

fn pipeline(c: &Cluster, name: &str, driver_body: &str) -> std::path::PathBuf {
    let toml = format!(
        r#"
[pipeline]
name = "{name}"

[[step]]
name = "driver"
driver = true
[step.function]
entry = "drive"
returns = ["result"]
source = '''{CALL}
{driver_body}'''
"#
    );
    c.pipeline(&format!("{name}.toml"), &toml)
}

/// Submits and waits (bounded, so a deadlock fails the test instead of hanging it).
fn finished(c: &Cluster, file: &std::path::Path) -> Value {
    let run = c.submit(file);
    let done = c.wait_for(&run, "the run to end", Duration::from_secs(90), |doc| {
        doc["status"] != "running"
    });
    if done["status"] != "succeeded" {
        let log = c.drover(&["logs", &run, "driver"]);
        panic!("{done}\ndriver log:\n{}", text(&log));
    }
    done
}

fn statuses(run: &Value) -> Vec<(String, String)> {
    let mut steps: Vec<(String, String)> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let name = s["name"].as_str().unwrap_or_default().to_string();
            (name, s["status"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    steps.sort();
    steps
}

#[test]
fn a_driver_adds_a_step_waits_for_it_and_reads_its_output() {
    let c = Cluster::up(1, &["default"]);
    let body = r#"
def drive():
    step = {"name": "make", "command": ["sh", "-c", "printf 'from make' > out.txt"], "outputs": {"out": "out.txt"}}
    name = run_and_fetch(0, step, "out", "got/out.txt")
    content = open("got/out.txt").read()
    assert (name, content) == ("make", "from make"), (name, content)
    return content
"#;
    let run = finished(&c, &pipeline(&c, "dynamic", body));
    let ok = |s: &str| (s.to_string(), "succeeded".to_string());
    assert_eq!(statuses(&run), vec![ok("driver"), ok("make")], "{run}");
}

#[test]
fn a_component_waiting_on_a_nested_component_does_not_deadlock_one_slot() {
    let c = Cluster::up_with(1, &["default"], &["--concurrency", "1"]);
    // `outer` runs on the only slot of `default` and adds `inner` there, then waits for it.
    let outer = format!(
        r#"{CALL}
def outer():
    inner = {{"name": "inner", "command": ["sh", "-c", "printf nested > out.txt"], "outputs": {{"out": "out.txt"}}}}
    run_and_fetch(0, inner, "out", "inner.txt")
    return "outer saw " + open("inner.txt").read()
"#
    );
    let body = format!(
        r#"
OUTER = {outer:?}

def drive():
    step = {{"name": "outer", "function": {{"source": OUTER, "entry": "outer", "returns": ["said"]}}}}
    run_and_fetch(0, step, "said", "said.pkl")
    said = pickle.load(open("said.pkl", "rb"))
    assert said == "outer saw nested", said
    return said
"#
    );
    let run = finished(&c, &pipeline(&c, "nested", &body));
    let ok = |s: &str| (s.to_string(), "succeeded".to_string());
    assert_eq!(
        statuses(&run),
        vec![ok("driver"), ok("inner"), ok("outer")],
        "{run}"
    );
}

#[test]
fn a_value_the_driver_stores_reaches_a_step_as_a_blob_kwarg() {
    let c = Cluster::up(1, &["default"]);
    // A set is no JSON value: the driver pickles it, stores it with `put` and passes the blob.
    let body = r#"
TOTAL = "def total(values, start):\n    assert isinstance(values, set), type(values)\n    return start + sum(values)\n"

def drive():
    pickle.dump({3, 1, 2}, open("values.pkl", "wb"))
    blob = call({"op": "put", "path": "values.pkl"})["artifact"]
    function = {"source": TOTAL, "entry": "total", "returns": ["sum"], "kwargs": {"start": "10"}, "blobs": {"values": blob}}
    run_and_fetch(0, {"name": "total", "function": function}, "sum", "sum.pkl")
    total = pickle.load(open("sum.pkl", "rb"))
    assert total == 16, total
    return total
"#;
    let run = finished(&c, &pipeline(&c, "blobs", body));
    let ok = |s: &str| (s.to_string(), "succeeded".to_string());
    assert_eq!(statuses(&run), vec![ok("driver"), ok("total")], "{run}");
}
