//! One active controller per namespace: a second controller is refused before it touches the
//! namespace, saying why and how to find the first, and one starts once the first is killed.

use crate::faults::{attempts, chain, ended};
use crate::harness::{Cluster, wait_until};
use drover_test_support::process::ChildProcess;
use drover_test_support::ready;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `drover controller` on this cluster's namespace with its own data dir and address.
fn controller(c: &Cluster, data: &Path, label: &str) -> ChildProcess {
    let mut cmd = c.command();
    cmd.args(["controller", "--data-dir"]).arg(data).args([
        "--http",
        "127.0.0.1:0",
        "--lease",
        "3s",
    ]);
    ChildProcess::spawn(label, cmd, &c.dir.path().join(format!("{label}.log"))).unwrap()
}

/// Starts a controller that the active one must refuse, and returns its output.
fn refused(c: &Cluster, data: &Path, label: &str) -> String {
    let mut second = controller(c, data, label);
    let status = second.wait_exit(Duration::from_secs(30)).unwrap();
    let log = second.output();
    assert!(!status.success(), "{label} did not fail: {status}\n{log}");
    assert!(
        log.contains(&format!(
            "another controller is active on namespace {}: it holds the lock queue {}.controller",
            c.ns, c.ns
        )),
        "{log}"
    );
    assert!(
        !data.join(ready::CONTROLLER_URL_FILE).exists(),
        "{label} wrote its URL"
    );
    log
}

#[test]
fn a_second_controller_is_refused_until_the_first_is_gone() {
    let mut c = Cluster::new();
    c.start_controller_with(&["controller".to_string()]);
    c.start_agent("a1", &["default"]);
    let file = c.pipeline("chain.toml", &chain(2, 1.0));
    let run = c.submit(&file);

    let other = c.dir.path().join("other");
    refused(&c, &other, "second");
    // The refusal says to look for the holder's connection; it names the holder's pid and URL.
    let out = Command::new("rabbitmqctl")
        .args(["list_connections", "client_properties"])
        .output()
        .unwrap();
    let connections = String::from_utf8_lossy(&out.stdout);
    let holder = format!("pid {} at {} ({})", c.pid("controller"), c.url, c.ns);
    assert!(connections.contains(&holder), "{holder:?} in {connections}");

    // The refused controller took nothing: the first one runs every step exactly once.
    let doc = c.wait_for(&run, "the run to end", Duration::from_secs(60), ended);
    assert_eq!(doc["status"], "succeeded", "{doc}");
    for step in ["s1", "s2"] {
        assert_eq!(attempts(&doc, step).len(), 1, "{step}: {doc}");
    }

    let killed = Instant::now();
    c.kill("controller");
    let mut next = controller(&c, &other, "next");
    wait_until("the next controller's URL", Duration::from_secs(30), || {
        next.alive_and(ready::controller_url(&other))
    });
    let took_over = killed.elapsed();
    // It holds the lock now: the one after it is refused.
    refused(&c, &c.dir.path().join("third"), "third");
    eprintln!(
        "a controller started {:.2}s after the active one was killed (SIGKILL: the kernel closes \
         its broker connection at once)",
        took_over.as_secs_f64()
    );
}
