//! The attempt's channel against the real controller: a function step, speaking the channel's
//! line protocol with nothing but `socket` and `json`, waits for its parent, fetches and stores
//! its output through the agent, and is refused a path outside its workdir; under a token, which
//! the step never sees.

use crate::harness::text;
use crate::live::with_token;

const PROBE: &str = r#"
import json, os, socket

def call(conn, request):
    conn.sendall((json.dumps(request) + "\n").encode())
    line = conn.makefile("rb").readline()
    return json.loads(line)

def probe():
    assert "DROVER_TOKEN" not in os.environ
    path = os.environ["DROVER_CHANNEL"]
    first = socket.socket(socket.AF_UNIX); first.connect(path)
    second = socket.socket(socket.AF_UNIX); second.connect(path)
    info = call(second, {"op": "info"})
    assert info["ok"] and info["run_id"] == os.environ["DROVER_RUN_ID"], info
    assert (info["step"], info["attempt"]) == ("probe", 1), info
    waited = call(first, {"op": "wait", "step": "make"})
    assert waited["ok"] and waited["view"]["status"] == "succeeded", waited
    artifact = waited["view"]["outputs"]["out"]
    got = call(first, {"op": "get", "artifact": artifact, "dest": "fetched/out.txt"})
    assert got == {"ok": True}, got
    content = open("fetched/out.txt").read()
    stored = call(second, {"op": "put", "path": "fetched/out.txt"})
    assert stored["ok"] and stored["artifact"]["digest"] == artifact["digest"], stored
    escape = call(first, {"op": "get", "artifact": artifact, "dest": "../escaped.txt"})
    assert escape["error"]["code"] == "forbidden", escape
    missing = call(first, {"op": "wait", "step": "nonexistent"})
    assert missing["error"]["code"] == "not_found", missing
    return content
"#;

#[test]
fn a_function_step_uses_its_channel_without_holding_the_token() {
    let c = with_token(1);
    let toml = format!(
        r#"
[pipeline]
name = "channel"

[[step]]
name = "make"
command = ["sh", "-c", "printf 'made by make' > out.txt"]
outputs = {{ out = "out.txt" }}

[[step]]
name = "probe"
parents = ["make"]
[step.function]
entry = "probe"
returns = ["content"]
source = '''{PROBE}'''
"#
    );
    let file = c.pipeline("channel.toml", &toml);
    let (out, run) = c.run_wait(&file, &[]);
    let run_id = run["run_id"].as_str().unwrap_or_default().to_string();
    let log = c.drover(&["logs", &run_id, "probe"]);
    assert!(
        out.status.success() && run["status"] == "succeeded",
        "{}\n{run}\nprobe log:\n{}",
        text(&out),
        text(&log)
    );
    let path = c.dir.path().join("content.pkl");
    let got = c.drover(&[
        "artifacts",
        "get",
        &run_id,
        "probe",
        "content",
        "-o",
        path.to_str().unwrap(),
    ]);
    assert!(got.status.success(), "{}", text(&got));
    let code = format!(
        "import pickle; print(pickle.load(open({:?}, 'rb')))",
        path.display().to_string()
    );
    let printed = c.python(&["-c", &code]);
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout).trim(),
        "made by make"
    );
}
