//! An agent with no `uv` on `PATH` installs the pinned `uv` once under its Python root, from the
//! package index, and builds step environments with it. Needs the package index: skipped,
//! saying so, where it is unreachable.

use crate::harness::{Cluster, text, wait_until};
use std::process::Command;
use std::time::Duration;

/// The agent's `PATH` without the directories that hold a `uv`.
fn path_without_uv() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let kept: Vec<_> = std::env::split_paths(&path)
        .filter(|dir| !dir.join("uv").exists())
        .collect();
    std::env::join_paths(kept)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Why the package index pip uses cannot be reached, if it cannot.
fn index_unreachable() -> Option<String> {
    let probe = "import os, urllib.request\n\
        index = os.environ.get('PIP_INDEX_URL', 'https://pypi.org/simple').rstrip('/')\n\
        urllib.request.urlopen(index + '/uv/', timeout=15).read(1)\n";
    let out = Command::new("python3").args(["-c", probe]).output();
    match out {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        Err(e) => Some(e.to_string()),
    }
}

#[test]
fn an_agent_without_uv_on_path_installs_it_once_and_builds_environments_with_it() {
    if let Some(why) = index_unreachable() {
        eprintln!("skipped: the package index is unreachable, so uv cannot be installed ({why})");
        return;
    }
    let mut c = Cluster::new();
    c.env.push(("PATH".into(), path_without_uv()));
    c.start_up(1, &["default"], &["--python-env", "venv"]);
    let uv = drover_agent::pyenv::uv_installed_path(&c.data_dir().join("pyenv"));
    wait_until(
        "the agent to install uv under its Python root",
        Duration::from_secs(300),
        || {
            let log = c.process_log("up");
            if uv.is_file() && log.contains("installed at") {
                Ok(())
            } else {
                Err(log)
            }
        },
    );
    let out = Command::new(&uv).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        version.contains(drover_agent::pyenv::UV_VERSION),
        "{version}"
    );

    let toml = "[pipeline]\nname = \"uv\"\ndefault_queue = \"default\"\n\n[[step]]\nname = \"six\"\n\
        function = { source = '''\ndef f():\n    import six\n    print(\"six\", six.__version__)\n''', \
        entry = \"f\", requirements = [\"six\"] }\n";
    // Named `uv.toml` in the agent's working directory on purpose: uv reads such a file of its
    // working directory as its own configuration, so builds must not run there.
    let path = c.pipeline("uv.toml", toml);
    let (out, run) = c.run_wait(&path, &[]);
    let log = c.drover(&["logs", run["run_id"].as_str().unwrap(), "six"]);
    let log = String::from_utf8_lossy(&log.stdout);
    assert!(out.status.success(), "{}\n{run}\n{log}", text(&out));
    assert!(
        log.contains(&format!("$ {} venv", uv.display())),
        "the environment was not built with the installed uv:\n{log}"
    );
    // `up`'s agents (its worker and its drivers agent) made one choice, and said it once.
    assert_eq!(
        c.process_log("up").matches("installed at").count(),
        1,
        "{}",
        c.process_log("up")
    );
}

#[test]
fn the_agents_list_says_what_builds_each_agents_environments_and_why() {
    let mut c = Cluster::new();
    let bin = c.dir.path().join("fake-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let uv = bin.join("uv");
    std::fs::write(&uv, "#!/bin/sh\nexit 1\n").unwrap();
    let path = format!("{}:{}", bin.display(), path_without_uv());
    c.env.push(("PATH".into(), path));
    c.start_up(1, &["default"], &["--python-env", "venv"]);
    let want = format!("uv on PATH: {}", uv.display());
    // `up --agents 1` starts the step agent and the drivers' agent on `services`; the two
    // register one after the other, so wait for both before reading the installers.
    wait_until(
        "both agents of up to report their installer",
        Duration::from_secs(60),
        || {
            let doc = c.json(&["agents", "--json"]);
            let all = doc["agents"].as_array().cloned().unwrap_or_default();
            let told = all.len() == 2 && all.iter().all(|a| a["installer"] == want.as_str());
            if told { Ok(()) } else { Err(doc.to_string()) }
        },
    );
    let table = text(&c.drover(&["agents"]));
    assert!(table.contains("INSTALLER"), "{table}");
    assert_eq!(table.matches(" uv on PATH ").count(), 2, "{table}");
}
