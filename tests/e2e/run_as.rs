//! `drover agent --run-as nobody`: steps run as that user, own their workdir, and can neither
//! change the shared files later steps import nor read the agent's `/proc` files.

use crate::harness::{Cluster, text};
use std::os::unix::fs::PermissionsExt;

const TOKEN: &str = "e2e-run-as-token-7a41";

const PIPELINE: &str = r#"
[pipeline]
name = "run-as"
[[step]]
name = "sh"
command = ["sh", "-c", """
echo "uid=$(id -u)"
echo mine > own.txt && echo "workdir=writable"
touch "$SHARED/x" 2>/dev/null || echo "shared=refused"
cat /proc/$PPID/environ > /dev/null 2>&1 || echo "environ=refused"
"""]
env = { SHARED = "${pipeline.shared}" }
[[step]]
name = "py"
function = { source = """
def probe():
    import os, drover
    print(f"uid={os.getuid()}")
    shared = os.path.dirname(os.path.dirname(drover.__file__))
    try:
        open(os.path.join(shared, "x"), "w")
    except PermissionError:
        print("shared=refused")
""", entry = "probe" }
[parameters]
shared = {}
"#;

#[test]
fn steps_run_as_the_user_given_and_cannot_touch_what_is_shared() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: --run-as was not tested");
        return;
    }
    let mut c = Cluster::new();
    c.env.push(("DROVER_TOKEN".into(), TOKEN.into()));
    // nobody must reach the agent's directories under the test's own.
    std::fs::set_permissions(c.dir.path(), PermissionsExt::from_mode(0o711)).unwrap();
    c.start_controller_with(&["controller".into()]);
    // An interpreter nobody may run: the tests' own may live in root's home.
    let python = "/usr/bin/python3";
    if !std::path::Path::new(python).exists() {
        eprintln!("no {python}: --run-as was not tested");
        return;
    }
    c.start_agent_with(
        "runas",
        &["default"],
        &["--run-as", "nobody", "--python", python],
    );
    // The agent's Python environments and bundled SDK.
    let shared = c.dir.path().join("runas/pyenv");
    let file = c.pipeline("run_as.toml", PIPELINE);
    let param = format!("shared={}", shared.display());
    let (out, run) = c.run_wait(&file, &["--param", &param]);
    let run_id = run["run_id"].as_str().unwrap();
    let sh = text(&c.drover(&["logs", run_id, "sh"]));
    let py = text(&c.drover(&["logs", run_id, "py"]));
    assert!(out.status.success(), "{}\n{sh}\n{py}", text(&out));
    for line in [
        "uid=65534",
        "workdir=writable",
        "shared=refused",
        "environ=refused",
    ] {
        assert!(sh.contains(line), "sh: no {line}:\n{sh}");
    }
    for line in ["uid=65534", "shared=refused"] {
        assert!(py.contains(line), "py: no {line}:\n{py}");
    }
}
