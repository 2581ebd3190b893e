//! Configuration: flag > environment > `drover.toml` > default, what `drover config show` says
//! about each setting, secrets never printed, and a file that really configures an agent.

use crate::harness::{Cluster, drover_bin, text, wait_until};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `drover ARGS` in `dir` with no DROVER_* variable but those given.
fn drover_in(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(drover_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("DROVER_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run drover")
}

fn show(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Value {
    let mut full = vec!["config", "show", "--json"];
    full.extend_from_slice(args);
    let out = drover_in(dir, env, &full);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

fn setting<'a>(doc: &'a Value, section: &str, key: &str) -> (&'a Value, &'a str) {
    let s = &doc[section][key];
    (&s["value"], s["source"].as_str().unwrap_or("?"))
}

const FILE: &str = r#"
namespace = "from-file"
token = "file-token-0451"
amqp = "amqp://drover:file-pass-0451@rabbit.example:5672/%2f"

[controller]
lease = "45s"

[agent]
concurrency = 7
queue = ["gpu:1", "default"]
services-mode = true

[up]
agents = 3
"#;

#[test]
fn flags_beat_the_environment_which_beats_the_file_which_beats_defaults() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("drover.toml"), FILE).unwrap();
    let doc = show(
        dir.path(),
        &[
            ("DROVER_CONCURRENCY", "3"),
            ("DROVER_NAMESPACE", "from-env"),
        ],
        &["--namespace", "from-flag"],
    );
    assert_eq!(doc["file"]["chosen"], "working_dir", "{doc}");
    assert_eq!(
        setting(&doc, "global", "namespace"),
        (&"from-flag".into(), "flag")
    );
    assert_eq!(setting(&doc, "agent", "concurrency"), (&"3".into(), "env"));
    assert_eq!(doc["agent"]["concurrency"]["env"], "DROVER_CONCURRENCY");
    assert_eq!(
        setting(&doc, "agent", "queue"),
        (&serde_json::json!(["gpu:1", "default"]), "file")
    );
    assert_eq!(
        setting(&doc, "agent", "services-mode"),
        (&true.into(), "file")
    );
    assert_eq!(
        setting(&doc, "controller", "lease"),
        (&"45s".into(), "file")
    );
    assert_eq!(setting(&doc, "up", "agents"), (&3.into(), "file"));
    assert_eq!(
        setting(&doc, "controller", "http"),
        (&"127.0.0.1:8470".into(), "default")
    );
    assert_eq!(
        setting(&doc, "controller", "public-url"),
        (&Value::Null, "unset")
    );
    assert_eq!(
        setting(&doc, "agent", "keep-workdirs"),
        (&false.into(), "default")
    );
}

#[test]
fn concurrency_defaults_to_the_cpu_count_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let cpus = std::thread::available_parallelism().unwrap().get();
    let auto = Value::from(format!("auto ({cpus})"));
    let doc = show(dir.path(), &[], &[]);
    assert_eq!(setting(&doc, "agent", "concurrency"), (&auto, "default"));
    std::fs::write(
        dir.path().join("drover.toml"),
        "[agent]\nconcurrency = \"auto\"\n",
    )
    .unwrap();
    let doc = show(dir.path(), &[], &[]);
    assert_eq!(setting(&doc, "agent", "concurrency"), (&auto, "file"));
    let out = drover_in(dir.path(), &[], &["config", "show"]);
    assert!(
        text(&out).contains(&format!("auto ({cpus})")),
        "{}",
        text(&out)
    );
    let out = drover_in(dir.path(), &[("DROVER_CONCURRENCY", "0")], &["agent"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("`auto` for the CPU count"),
        "{}",
        text(&out)
    );
}

#[test]
fn secrets_are_masked_wherever_they_come_from() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("drover.toml"), FILE).unwrap();
    for json in [true, false] {
        let mut args = vec!["config", "show"];
        if json {
            args.push("--json");
        }
        let out = drover_in(dir.path(), &[], &args);
        let all = text(&out);
        assert!(out.status.success(), "{all}");
        assert!(
            !all.contains("file-token-0451") && !all.contains("file-pass-0451"),
            "{all}"
        );
        assert!(
            all.contains("amqp://drover:***@rabbit.example:5672/%2f"),
            "{all}"
        );
    }
    let doc = show(
        dir.path(),
        &[
            ("DROVER_TOKEN", "env-token-0451"),
            ("DROVER_AMQP_URL", "amqps://u:env-pass-0451@h:5671/%2f"),
        ],
        &[],
    );
    let all = doc.to_string();
    assert!(
        !all.contains("env-token-0451") && !all.contains("env-pass-0451"),
        "{all}"
    );
    assert_eq!(setting(&doc, "global", "token"), (&"***".into(), "env"));
    assert_eq!(
        setting(&doc, "global", "amqp"),
        (&"amqps://u:***@h:5671/%2f".into(), "env")
    );
    // Readable by others: a warning says so.
    let out = drover_in(dir.path(), &[], &["config", "show"]);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("drover.toml"))
            .unwrap()
            .permissions(),
    );
    if mode & 0o077 != 0 {
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn config_flag_and_variable_choose_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("drover.toml"), "namespace = \"cwd\"\n").unwrap();
    std::fs::write(dir.path().join("a.toml"), "namespace = \"a\"\n").unwrap();
    std::fs::write(dir.path().join("b.toml"), "namespace = \"b\"\n").unwrap();
    let ns = |doc: &Value| doc["global"]["namespace"]["value"].clone();
    assert_eq!(ns(&show(dir.path(), &[], &[])), "cwd");
    let by_env = show(dir.path(), &[("DROVER_CONFIG", "a.toml")], &[]);
    assert_eq!(
        (ns(&by_env), by_env["file"]["chosen"].clone()),
        ("a".into(), "env".into())
    );
    let by_flag = show(
        dir.path(),
        &[("DROVER_CONFIG", "a.toml")],
        &["--config", "b.toml"],
    );
    assert_eq!(
        (ns(&by_flag), by_flag["file"]["chosen"].clone()),
        ("b".into(), "flag".into())
    );
    let none = show(tempfile::tempdir().unwrap().path(), &[], &[]);
    assert_eq!(
        (ns(&none), none["file"].clone()),
        ("drover".into(), Value::Null)
    );
}

#[test]
fn mistakes_in_the_file_are_errors_that_name_them() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[agent]\nconcurency = 2\n",
            "unknown setting `concurency` in [agent]",
        ),
        (
            "lease = \"3s\"\n",
            "unknown setting `lease` at the top level",
        ),
        ("[agent]\nconcurrency = \"many\"\n", "--concurrency"),
        (
            "[agent]\nkeep-workdirs = \"yes\"\n",
            "must be true or false",
        ),
        ("[agent\n", "not valid TOML"),
    ];
    for (file, expected) in cases {
        std::fs::write(dir.path().join("drover.toml"), file).unwrap();
        // `config show` checks the whole file; a command checks the settings it uses.
        for args in [&["config", "show"][..], &["agent"][..]] {
            // Were the file accepted, the agent would reach nothing: port 1, its own namespace.
            let nowhere = [
                ("DROVER_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
                ("DROVER_NAMESPACE", "tconfig-nowhere"),
            ];
            let out = drover_in(dir.path(), &nowhere, args);
            assert!(!out.status.success(), "{file:?} was accepted by {args:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(expected), "{file:?} {args:?}: {stderr}");
            assert!(
                stderr.contains("drover.toml"),
                "{file:?} {args:?}: {stderr}"
            );
        }
    }
}

#[test]
fn the_example_file_loads() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/drover.toml.example");
    let dir = tempfile::tempdir().unwrap();
    let doc = show(dir.path(), &[], &["--config", example]);
    assert_eq!(
        setting(&doc, "agent", "queue"),
        (&serde_json::json!(["gpu:1", "default"]), "file")
    );
    assert!(!doc.to_string().contains("CHANGE-ME"), "{doc}");
}

#[test]
fn an_agent_takes_its_settings_from_the_file() {
    let mut c = Cluster::new();
    c.start_controller_with(&["controller".to_string()]);
    std::fs::write(
        c.dir.path().join("drover.toml"),
        "[agent]\nid = \"from-file\"\nconcurrency = 5\nqueue = [\"default\"]\nwork-dir = \"agent-work\"\n",
    )
    .unwrap();
    // The harness sets DROVER_NAMESPACE and DROVER_AMQP_URL; the rest comes from the file.
    let mut agent = c
        .command()
        .arg("agent")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn agent");
    let seen = wait_until("the agent from the file", Duration::from_secs(20), || {
        let doc = c.json(&["agents", "--json"]);
        let a = doc["agents"]
            .as_array()?
            .iter()
            .find(|a| a["id"] == "from-file")?
            .clone();
        Some(a)
    });
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = agent.wait();
    assert_eq!(seen["slots"], 5, "{seen}");
    assert!(c.dir.path().join("agent-work").is_dir());
}

#[test]
fn the_python_installer_is_shown_as_an_agent_would_choose_it_without_installing() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("uv"), "#!/bin/sh\n").unwrap();
    let on_path = Value::from(format!("uv on PATH: {}", bin.join("uv").display()));
    let doc = show(dir.path(), &[("PATH", &bin.display().to_string())], &[]);
    for section in ["agent", "up"] {
        assert_eq!(
            setting(&doc, section, "python-installer"),
            (&on_path, "detected"),
            "{doc}"
        );
    }
    let work = dir.path().join("work");
    let empty = dir.path().join("empty");
    let env = [
        ("PATH", empty.to_str().unwrap()),
        ("DROVER_WORK_DIR", work.to_str().unwrap()),
    ];
    let doc = show(dir.path(), &env, &[]);
    let (value, _) = setting(&doc, "agent", "python-installer");
    let value = value.as_str().unwrap_or_default();
    assert!(
        value.starts_with("uv ") && value.contains(" to be installed: no uv on PATH"),
        "{value}"
    );
    assert!(
        value.contains(&work.join("pyenv/tools").display().to_string()),
        "{value}"
    );
    assert!(!work.exists(), "config show installed something");
    let doc = show(dir.path(), &[("DROVER_PYTHON_ENV", "system")], &[]);
    let (value, _) = setting(&doc, "agent", "python-installer");
    assert!(
        value.as_str().unwrap_or_default().starts_with("none"),
        "{value}"
    );
}

#[test]
fn the_queue_type_comes_from_flag_environment_or_file_and_an_unknown_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let doc = show(dir.path(), &[], &[]);
    assert_eq!(
        setting(&doc, "global", "queue-type"),
        (&"classic".into(), "default")
    );
    std::fs::write(
        dir.path().join("drover.toml"),
        "queue-type = \"quorum\"\ndelivery-limit = 9\n",
    )
    .unwrap();
    let doc = show(dir.path(), &[], &[]);
    assert_eq!(
        setting(&doc, "global", "queue-type"),
        (&"quorum".into(), "file")
    );
    assert_eq!(
        setting(&doc, "global", "delivery-limit"),
        (&9.into(), "file")
    );
    let doc = show(dir.path(), &[("DROVER_QUEUE_TYPE", "classic")], &[]);
    assert_eq!(
        setting(&doc, "global", "queue-type"),
        (&"classic".into(), "env")
    );
    let out = drover_in(
        dir.path(),
        &[],
        &["config", "show", "--queue-type", "stream"],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("use classic"), "{}", text(&out));
    let out = drover_in(
        dir.path(),
        &[],
        &["config", "show", "--delivery-limit", "0"],
    );
    assert!(!out.status.success(), "{}", text(&out));
}
