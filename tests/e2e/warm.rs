//! Warm starts of Python function steps (`--python-prewarm`): a step forked by a warm parent
//! sees what a cold one sees, shares no state with its siblings, is stopped by abort and
//! timeout as a cold one is, and survives its parent's death; environments never share a
//! parent.

use crate::harness::{Cluster, text, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use std::time::Duration;

const HEADER: &str = "[pipeline]\nname = \"warm\"\ndefault_queue = \"default\"\n";

/// A function step whose source is `source` and entry `entry`, with its kwargs (the inside of
/// a TOML inline table) and extra TOML lines.
fn function_step(name: &str, source: &str, entry: &str, kwargs: &str, extra: &str) -> String {
    format!(
        "[[step]]\nname = \"{name}\"\nfunction = {{ source = '''\n{source}''', entry = \"{entry}\", kwargs = {{ {kwargs} }} }}\n{extra}\n"
    )
}

/// The JSON a step printed after `PROBE `.
fn printed(c: &Cluster, run_id: &str, step: &str) -> Value {
    let out = c.drover(&["logs", run_id, step]);
    let log = String::from_utf8_lossy(&out.stdout).to_string();
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix("PROBE "))
        .unwrap_or_else(|| panic!("step {step} printed no probe:\n{log}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Runs `toml` to its end and returns the run.
fn run(c: &Cluster, file: &str, toml: &str) -> Value {
    let path = c.pipeline(file, toml);
    let (out, run) = c.run_wait(&path, &[]);
    assert!(out.status.success(), "{}", text(&out));
    run
}

fn run_id(run: &Value) -> &str {
    run["run_id"].as_str().expect("a run id")
}

/// What a step can see of its process, with the workdir and the bundle's path (both differ
/// between attempts and clusters) written as `<wd>` and `<bundle>`.
const PROBE: &str = r#"
def probe():
    import json, os, random, sys, threading
    import numpy, threadpoolctl
    wd, bundle = os.environ["DROVER_WORKDIR"], os.path.dirname(sys.argv[0])
    def same(v):
        return v.replace(wd, "<wd>").replace(bundle, "<bundle>")
    differ = ("DROVER_RUN_ID", "DROVER_URL", "DROVER_ATTEMPT")
    print("PROBE " + json.dumps({
        "argv": [same(a) for a in sys.argv],
        "name": __name__,
        "main": sys.modules["__main__"].__name__,
        "cwd": same(os.getcwd()),
        "env": {k: same(v) for k, v in os.environ.items() if k not in differ},
        "path": [same(p) for p in sys.path],
        "threads": threading.active_count(),
        "tasks": len(os.listdir("/proc/self/task")),
        "blas": sorted([i["internal_api"], i["num_threads"]] for i in threadpoolctl.threadpool_info()),
        "random": random.random(),
        "numpy_random": float(numpy.random.random()),
        "ppid": os.getppid(),
        "pgid": os.getpgid(0) == os.getpid(),
    }), flush=True)
"#;

/// The probe twice in parallel, and once more after them.
fn probes() -> String {
    format!(
        "{HEADER}{}{}{}",
        function_step("a", PROBE, "probe", "", ""),
        function_step("b", PROBE, "probe", "", ""),
        function_step("c", PROBE, "probe", "", "parents = [\"a\", \"b\"]"),
    )
}

#[test]
fn a_warm_step_sees_what_a_cold_one_sees_and_draws_its_own_random_numbers() {
    let warm = Cluster::up(1, &["default:2"]);
    let cold = Cluster::up_with(1, &["default"], &["--python-prewarm", "off"]);
    let warm_run = run(&warm, "probe.toml", &probes());
    let cold_run = run(&cold, "probe.toml", &probes());
    let agent = i64::from(warm.pid("up"));
    let mut seen = Vec::new();
    for step in ["a", "b", "c"] {
        let mut w = printed(&warm, run_id(&warm_run), step);
        let mut k = printed(&cold, run_id(&cold_run), step);
        // Forked by a warm parent, not started by the agent; the cold one is the agent's child.
        assert_ne!(w["ppid"].as_i64(), Some(agent), "{w}");
        assert_eq!(k["ppid"].as_i64(), Some(i64::from(cold.pid("up"))), "{k}");
        seen.push((
            w["random"].clone(),
            w["numpy_random"].clone(),
            w["ppid"].clone(),
        ));
        for v in [&mut w, &mut k] {
            let o = v.as_object_mut().unwrap();
            for differs in ["random", "numpy_random", "ppid"] {
                o.remove(differs);
            }
        }
        assert_eq!(w, k, "step {step}: warm (left) and cold (right) differ");
    }
    // One parent for the three, and three different draws of each generator.
    assert!(seen.iter().all(|s| s.2 == seen[0].2), "{seen:?}");
    for i in 0..3 {
        for j in i + 1..3 {
            assert_ne!(seen[i].0, seen[j].0, "random repeats: {seen:?}");
            assert_ne!(seen[i].1, seen[j].1, "numpy.random repeats: {seen:?}");
        }
    }
}

/// A step that changes a module's global and reports whether it found it changed, then
/// writes a file it never closes.
const MARKS: &str = r#"
import json

def mark(me, path):
    found = getattr(json, "drover_mark", None)
    json.drover_mark = me
    global leaked
    leaked = open(path, "w")
    leaked.write("all of " + me)
    import os
    print("PROBE " + json.dumps({"found": found, "ppid": os.getppid()}), flush=True)
"#;

#[test]
fn a_global_one_step_changes_is_not_seen_by_the_next_and_unclosed_files_are_flushed_warm_or_cold() {
    let c = Cluster::up(1, &["default"]);
    let mut toml = HEADER.to_string();
    let mut parents = String::new();
    // The last one has `prewarm = false`: it starts cold.
    for name in ["one", "two", "three", "cold"] {
        let path = c.dir.path().join(format!("{name}.txt"));
        let mut kwargs = format!(
            "me = '\"{name}\"', path = '{:?}'",
            path.display().to_string()
        );
        if name == "cold" {
            kwargs += " }, prewarm = false, blobs = {";
        }
        toml += &function_step(name, MARKS, "mark", &kwargs, &parents);
        parents = format!("parents = [\"{name}\"]");
    }
    let run = run(&c, "marks.toml", &toml);
    let agent = Some(i64::from(c.pid("up")));
    for step in ["one", "two", "three", "cold"] {
        let seen = printed(&c, run_id(&run), step);
        assert_eq!(seen["found"], Value::Null, "step {step}: {seen}");
        let ppid = seen["ppid"].as_i64();
        match step {
            "cold" => assert_eq!(ppid, agent, "prewarm = false started warm: {seen}"),
            _ => assert_ne!(ppid, agent, "step {step} started cold"),
        }
        let written = std::fs::read_to_string(c.dir.path().join(format!("{step}.txt")));
        assert_eq!(written.unwrap(), format!("all of {step}"));
    }
    // Each attempt says how it started, in `drover status` and its JSON, and `/metrics`
    // counts them.
    let status = c.json(&["status", run_id(&run), "--json"]);
    for step in status["steps"].as_array().expect("steps") {
        let want = if step["name"] == "cold" {
            "cold"
        } else {
            "warm"
        };
        assert_eq!(step["attempts"][0]["start"], want, "{step}");
    }
    let table = text(&c.drover(&["status", run_id(&run)]));
    assert!(table.contains("START"), "{table}");
    let cold_row = table.lines().find(|l| l.starts_with("cold "));
    assert!(cold_row.is_some_and(|l| l.contains(" cold ")), "{table}");
    let metrics = c.http_get("/metrics");
    for line in [
        "drover_python_starts_total{start=\"warm\"} 3\n",
        "drover_python_starts_total{start=\"cold\"} 1\n",
    ] {
        assert!(metrics.contains(line), "no {line:?} in:\n{metrics}");
    }
}

/// A step that starts two `sleep`s (their argument starts with the marker: seconds nobody
/// waits for), one in a session of its own, and waits until the file `go` exists.
const NAP: &str = r#"
def nap(marker, go):
    import json, os, subprocess, time
    subprocess.Popen(["sleep", marker])
    subprocess.Popen(["sleep", marker + "1"], start_new_session=True)
    print("PROBE " + json.dumps({"ppid": os.getppid()}), flush=True)
    while not os.path.exists(go):
        time.sleep(0.02)  # the step's workload: waiting for the test
"#;

/// How many processes have `marker` in their command line.
fn count(marker: &str) -> usize {
    std::process::Command::new("pgrep")
        .args(["-c", "-f", marker])
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0)
}

/// Zombie children of `parent`: processes it adopted (as child subreaper) and never reaped.
fn zombies_of(parent: u32) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&parent.to_string().as_str()) {
            found.push(stat);
        }
    }
    found
}

/// A marker no other test uses: a number of seconds for `sleep`.
fn marker(tag: u32) -> String {
    format!("{tag}{}", std::process::id())
}

fn nap_pipeline(c: &Cluster, marker: &str, go: &str, extra: &str) -> String {
    let go = c.dir.path().join(go);
    let kwargs = format!(
        "marker = '\"{marker}\"', go = '{:?}'",
        go.display().to_string()
    );
    format!(
        "{HEADER}{}",
        function_step("nap", NAP, "nap", &kwargs, extra)
    )
}

/// Waits until the run's step `nap` has printed its probe and returns it.
fn probe_printed(c: &Cluster, run_id: &str) -> Value {
    crate::harness::wait_until("the step's probe", Duration::from_secs(60), || {
        let out = c.drover(&["logs", run_id, "nap"]);
        let log = String::from_utf8_lossy(&out.stdout).to_string();
        log.lines()
            .find_map(|l| l.strip_prefix("PROBE "))
            .and_then(|l| serde_json::from_str::<Value>(l).ok())
    })
}

#[test]
fn an_aborted_and_a_timed_out_warm_step_leave_no_process_behind() {
    let c = Cluster::up(1, &["default"]);
    let agent = i64::from(c.pid("up"));
    let timed = marker(7101);
    let file = c.pipeline(
        "timed.toml",
        &nap_pipeline(&c, &timed, "never", "timeout = \"3s\""),
    );
    let (_, run) = c.run_wait(&file, &[]);
    assert_eq!(run["status"], "failed", "{run}");
    let seen = printed(&c, run_id(&run), "nap");
    assert_ne!(seen["ppid"].as_i64(), Some(agent), "the step started cold");
    assert_eq!(count(&timed), 0, "a process of the timed-out step survived");

    let aborted = marker(7102);
    let file = c.pipeline("abort.toml", &nap_pipeline(&c, &aborted, "never", ""));
    let submitted = c.submit(&file);
    let seen = probe_printed(&c, &submitted);
    assert_ne!(seen["ppid"].as_i64(), Some(agent), "the step started cold");
    assert_eq!(count(&aborted), 2, "the step's sleeps are not running");
    let out = c.drover(&["abort", &submitted]);
    assert!(out.status.success(), "{}", text(&out));
    c.wait_for(
        &submitted,
        "the run to end aborted",
        Duration::from_secs(30),
        |d| d["status"] == "aborted",
    );
    assert_eq!(count(&aborted), 0, "a process of the aborted step survived");
    let zombies = zombies_of(c.pid("up"));
    assert!(zombies.is_empty(), "the agent left zombies: {zombies:?}");
}

#[test]
fn a_killed_warm_parent_is_replaced_and_its_running_step_still_succeeds() {
    let c = Cluster::up(1, &["default"]);
    let agent = i64::from(c.pid("up"));
    let first = marker(7201);
    let file = c.pipeline("first.toml", &nap_pipeline(&c, &first, "go-first", ""));
    let first_run = c.submit(&file);
    let seen = probe_printed(&c, &first_run);
    let parent = seen["ppid"].as_i64().expect("a ppid");
    assert_ne!(parent, agent, "the step started cold");
    kill(Pid::from_raw(parent as i32), Signal::SIGKILL).expect("kill the warm parent");
    std::fs::write(c.dir.path().join("go-first"), "").unwrap();
    let done = c.wait_for(&first_run, "the run to end", Duration::from_secs(60), |d| {
        d["status"] != "running"
    });
    assert_eq!(done["status"], "succeeded", "{done}");

    let second = marker(7202);
    std::fs::write(c.dir.path().join("go-second"), "").unwrap();
    let run = run(
        &c,
        "second.toml",
        &nap_pipeline(&c, &second, "go-second", ""),
    );
    assert_eq!(run["status"], "succeeded", "{run}");
    let seen = printed(&c, run_id(&run), "nap");
    let replaced = seen["ppid"].as_i64().expect("a ppid");
    assert!(replaced != agent && replaced != parent, "{seen}");
    // The replacement says why, in the log and in /metrics (after the next heartbeat).
    let why = format!("warm parent {parent} of environment ");
    let log = c.process_log("up");
    let line = log
        .lines()
        .find(|l| l.contains(&why))
        .unwrap_or_else(|| panic!("no line says why parent {parent} stopped:\n{log}"));
    assert!(line.contains("(died): it was killed by signal 9"), "{line}");
    // The agents of one `up` share the pool, and each says its counts in its own heartbeat:
    // wait until every agent has sent one since the parent died.
    wait_until(
        "/metrics to count the dead parent and its replacement for every agent",
        Duration::from_secs(30),
        || {
            let text = c.http_get("/metrics");
            let died = text.lines().any(|l| {
                l.starts_with("drover_warm_parent_stops_total{")
                    && l.contains("reason=\"died\"")
                    && l.ends_with(" 1")
            });
            let starts: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("drover_warm_parent_starts_total{"))
                .collect();
            (died && !starts.is_empty() && starts.iter().all(|l| l.ends_with(" 2"))).then_some(())
        },
    );
}

/// Reports the process's parent.
const PARENT: &str = r#"
def parent():
    import json, os
    print("PROBE " + json.dumps({"ppid": os.getppid()}), flush=True)
"#;

#[test]
fn steps_with_other_requirements_never_share_a_parent() {
    let c = Cluster::up(1, &["default:3"]);
    let step = |name: &str, requirements: &str| {
        format!(
            "[[step]]\nname = \"{name}\"\nfunction = {{ source = '''\n{PARENT}''', entry = \"parent\", requirements = [{requirements}] }}\n"
        )
    };
    let toml = format!(
        "{HEADER}{}{}{}",
        step("plain", ""),
        step("six", "\"six\""),
        step("also_plain", "")
    );
    let run = run(&c, "reqs.toml", &toml);
    let ppid = |s: &str| printed(&c, run_id(&run), s)["ppid"].as_i64();
    let agent = Some(i64::from(c.pid("up")));
    assert_ne!(ppid("plain"), agent, "started cold");
    assert_eq!(ppid("plain"), ppid("also_plain"));
    assert_ne!(ppid("six"), ppid("plain"));
    assert_ne!(ppid("six"), agent, "started cold");
}

/// Reports its parent, then waits until both steps of the run have arrived, so that on agents
/// of one slot each the two run at once on different agents.
const MEET: &str = r#"
def meet(dir):
    import json, os, time
    print("PROBE " + json.dumps({"ppid": os.getppid()}), flush=True)
    open(os.path.join(dir, "arrived-" + os.environ["DROVER_STEP"]), "w").close()
    while len([n for n in os.listdir(dir) if n.startswith("arrived-")]) < 2:
        time.sleep(0.02)  # the step's workload: waiting for its sibling
"#;

/// `drover_warm.py` processes started from this cluster's directory (when no step runs: a
/// forked step shows its parent's command line).
fn warm_parents(c: &Cluster) -> Vec<u32> {
    let mine = c.dir.path().display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (cmdline.contains("drover_warm.py") && cmdline.contains(&mine)).then_some(pid)
        })
        .collect()
}

#[test]
fn the_agents_of_one_up_fork_their_steps_from_one_parent_per_environment() {
    let c = Cluster::up(2, &["default:1"]);
    let meeting = c.dir.path().join("meeting");
    std::fs::create_dir_all(&meeting).unwrap();
    let kwargs = format!("dir = '{:?}'", meeting.display().to_string());
    let toml = format!(
        "{HEADER}{}{}",
        function_step("left", MEET, "meet", &kwargs, "timeout = \"60s\""),
        function_step("right", MEET, "meet", &kwargs, "timeout = \"60s\""),
    );
    let run = run(&c, "meet.toml", &toml);
    assert_eq!(run["status"], "succeeded", "{run}");
    let id = run_id(&run);
    let shown = c.json(&["status", id, "--json"]);
    let agent_of = |s: &str| Cluster::step(&shown, s)["attempts"][0]["agent"].clone();
    assert!(agent_of("left").is_string(), "{shown}");
    assert_ne!(agent_of("left"), agent_of("right"), "{shown}");
    let ppid = |s: &str| printed(&c, id, s)["ppid"].as_i64();
    assert_ne!(ppid("left"), Some(i64::from(c.pid("up"))), "started cold");
    assert_eq!(
        ppid("left"),
        ppid("right"),
        "the agents forked from two parents"
    );
    let parents = warm_parents(&c);
    assert_eq!(parents.len(), 1, "warm parents of the cluster: {parents:?}");
}

#[test]
fn a_step_with_its_own_hash_seed_gets_a_parent_only_when_its_seed_comes_again() {
    let c = Cluster::up(1, &["default"]);
    let seeded = |seed: &str| {
        format!(
            "{HEADER}{}",
            function_step(
                "seeded",
                PARENT,
                "parent",
                "",
                &format!("env = {{ PYTHONHASHSEED = \"{seed}\" }}")
            )
        )
    };
    let start = |run: &Value| {
        let status = c.json(&["status", run_id(run), "--json"]);
        Cluster::step(&status, "seeded")["attempts"][0]["start"].clone()
    };
    // A driver's seed is new each run: its one step must not leave a parent behind.
    let first = run(&c, "first.toml", &seeded("4242"));
    assert_eq!(start(&first), "cold", "{first}");
    assert!(warm_parents(&c).is_empty(), "{:?}", warm_parents(&c));
    let other = run(&c, "other.toml", &seeded("4343"));
    assert_eq!(start(&other), "cold", "{other}");
    // The same seed again: its steps share a parent from now on.
    for name in ["again", "thrice"] {
        let again = run(&c, &format!("{name}.toml"), &seeded("4242"));
        assert_eq!(start(&again), "warm", "{again}");
    }
    assert_eq!(warm_parents(&c).len(), 1, "{:?}", warm_parents(&c));
}

/// Asserts that the first attempt of `step` was forked by a warm parent.
fn assert_started_warm(c: &Cluster, run_id: &str, step: &str) {
    let status = c.json(&["status", run_id, "--json"]);
    assert_eq!(
        Cluster::step(&status, step)["attempts"][0]["start"],
        "warm",
        "{status}"
    );
}

/// Returns without printing anything.
const QUIET: &str = "def quiet(i):\n    return i * 2\n";

#[test]
fn a_warm_step_that_prints_nothing_has_no_log() {
    let c = Cluster::up(1, &["default"]);
    // The first builds the environment (its log says so); the second finds it ready.
    let toml = format!(
        "{HEADER}{}{}",
        function_step("first", QUIET, "quiet", "i = '1'", ""),
        function_step("second", QUIET, "quiet", "i = '2'", "parents = [\"first\"]"),
    );
    let run = run(&c, "quiet.toml", &toml);
    let id = run_id(&run);
    assert_started_warm(&c, id, "second");
    let out = c.drover(&["logs", id, "second"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));
    // No chunk reached the controller, so it stored no log for the attempt.
    let stored = c.data_dir().join("logs").join(id).join("second");
    assert!(!stored.exists(), "{} exists", stored.display());
}

#[test]
fn a_parent_in_use_outlives_the_keepers_rounds_until_it_is_idle() {
    // The keeper looks every quarter of the idle time (5 s here): a parent used within the
    // last 20 s must survive its rounds, and one unused for 20 s must stop, saying why.
    let c = Cluster::up_with(1, &["default"], &["--python-prewarm-idle", "20s"]);
    let step = format!("{HEADER}{}", function_step("p", PARENT, "parent", "", ""));
    let ppid = |file: &str| {
        let run = run(&c, file, &step);
        printed(&c, run_id(&run), "p")["ppid"].as_i64()
    };
    let first = ppid("first.toml");
    assert_ne!(first, Some(i64::from(c.pid("up"))), "started cold");
    // Past two of the keeper's rounds, well within the idle time.
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(
        ppid("second.toml"),
        first,
        "the parent was replaced while in use"
    );
    let log = wait_until("the idle parent to stop", Duration::from_secs(60), || {
        let log = c.process_log("up");
        log.contains("forks (idle): no step for 20s").then_some(log)
    });
    assert!(!log.contains("(died)"), "{log}");
}

/// Imports a module of the bundled SDK, so that its parent preloads it.
const RUNNER: &str = "def uses_runner():\n    import drover.runner\n    return 1\n";

#[test]
fn the_bytecode_compiler_beside_a_preload_leaves_no_process_behind() {
    let c = Cluster::up(1, &["default"]);
    let toml = format!(
        "{HEADER}{}",
        function_step("uses", RUNNER, "uses_runner", "", "")
    );
    let run = run(&c, "runner.toml", &toml);
    assert_started_warm(&c, run_id(&run), "uses");
    let ours = format!("{}.*drover_compile.py", c.dir.path().display());
    wait_until("the compiler to end", Duration::from_secs(30), || {
        (count(&ours) == 0).then_some(())
    });
    wait_until("the compiler to be reaped", Duration::from_secs(30), || {
        zombies_of(c.pid("up")).is_empty().then_some(())
    });
}

/// Reports how long after it started every other thread of the step's process (the BLAS
/// workers its pools were sized with before it ran) was asleep, polling for 50 ms.
const WORKERS: &str = r#"
def workers():
    import json, os, time
    import numpy, threadpoolctl
    started = time.monotonic()
    me = str(os.getpid())
    def states():
        found = []
        for tid in os.listdir("/proc/self/task"):
            if tid != me:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    found.append(f.read().rsplit(")", 1)[1].split()[0])
        return found
    seen = states()
    asleep_ms = None
    while time.monotonic() - started < 0.05:
        if all(s in "SD" for s in states()):
            asleep_ms = (time.monotonic() - started) * 1000
            break
        time.sleep(0.002)
    print("PROBE " + json.dumps({"workers": len(seen), "asleep_ms": asleep_ms,
                                 "cpus": len(os.sched_getaffinity(0)),
                                 "timeout_env": os.environ.get("OPENBLAS_THREAD_TIMEOUT")}),
          flush=True)
"#;

#[test]
fn a_warm_steps_blas_workers_sleep_instead_of_spinning_beside_it() {
    // A child sizes its BLAS pools just before its step: with OpenBLAS's default the new
    // workers would spin for about 0.1 s, through a short step, on the CPUs it runs on.
    let c = Cluster::up(1, &["default"]);
    let toml = format!("{HEADER}{}", function_step("w", WORKERS, "workers", "", ""));
    let run = run(&c, "workers.toml", &toml);
    let id = run_id(&run);
    assert_started_warm(&c, id, "w");
    let seen = printed(&c, id, "w");
    if seen["cpus"].as_i64() < Some(2) {
        eprintln!("skipped: one CPU, so the BLAS pools have no workers: {seen}");
        return;
    }
    assert!(
        seen["workers"].as_i64() > Some(0),
        "no BLAS workers: {seen}"
    );
    assert!(
        seen["asleep_ms"].is_number(),
        "the workers still ran 50 ms into the step: {seen}"
    );
    // The parent's setting is not in the step's environment, as for a cold step.
    assert_eq!(seen["timeout_env"], Value::Null, "{seen}");
}
