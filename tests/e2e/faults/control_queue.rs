//! An agent's control queue outlives its broker connection: a `Cancel` published while the
//! agent is reconnecting waits in the queue and stops the step once the agent consumes it again.

use crate::harness::{AMQP_URL, Cluster, wait_until};
use drover_amqp::{Broker, Target};
use drover_protocol::ids::{AttemptNo, StepName};
use drover_protocol::message::{Cancel, Message};
use drover_protocol::{Names, RunId};
use drover_test_support::process::ChildProcess;
use drover_test_support::{close_connections, ready};
use nix::sys::signal::Signal;
use std::time::{Duration, SystemTime};

#[test]
fn a_cancel_sent_while_the_agent_reconnects_stops_its_step() {
    let mut c = Cluster::new();
    // A controller of its own with a long lease: the agent is paused below for longer than the
    // harness's 3 s lease, and its attempt must stay current.
    let data = c.data_dir();
    let mut cmd = c.command();
    cmd.args(["controller", "--data-dir"]).arg(&data).args([
        "--http",
        "127.0.0.1:0",
        "--lease",
        "60s",
    ]);
    let log = c.dir.path().join("controller.log");
    let mut controller = ChildProcess::spawn("controller", cmd, &log).unwrap();
    c.url = wait_until("the controller's URL", Duration::from_secs(30), || {
        controller.alive_and(ready::controller_url(&data))
    });
    c.start_agent("a1", &["default"]);
    let tick = c.dir.path().join("tick");
    let file = c.pipeline(
        "loop.toml",
        &format!(
            "[pipeline]\nname = \"loop\"\n[[step]]\nname = \"loop\"\ncommand = [\"sh\", \"-c\", \
             \"while :; do date +%s%N > {}; sleep 0.2; done\"]\n",
            tick.display()
        ),
    );
    let run = c.submit(&file);
    wait_until("the step to tick", Duration::from_secs(30), || {
        tick.exists().then_some(())
    });

    // The agent is paused so that it cannot reconnect before the cancel is published.
    c.signal("a1", Signal::SIGSTOP);
    let closed = close_connections(&format!("drover agent a1 ({})", c.ns));
    assert_eq!(closed, 1, "the agent's connection");
    let names = Names::new(&c.ns).unwrap();
    let queue = names.agent_control_queue(&drover_protocol::ids::AgentId::new("a1").unwrap());
    let reason = "sent while agent a1 reconnects";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let waiting = rt.block_on(async {
        let broker = Broker::connect(AMQP_URL, names.clone(), "test")
            .await
            .unwrap();
        let publisher = broker.publisher().await.unwrap();
        let cancel = Message::Cancel(Cancel {
            run_id: RunId::new(run.clone()).unwrap(),
            step: StepName::new("loop").unwrap(),
            attempt: AttemptNo::FIRST,
            reason: reason.to_string(),
            epoch: 0,
        });
        // Published with `mandatory`: an error here would mean no queue took it.
        publisher
            .publish(&Target::Control("agent.a1".into()), &cancel)
            .await
            .unwrap();
        let stats = broker.queue_stats(&queue).await.unwrap();
        broker.close().await;
        stats
    });
    let waiting = waiting.expect("the control queue outlives the connection");
    assert_eq!((waiting.messages, waiting.consumers), (1, 0));
    c.signal("a1", Signal::SIGCONT);

    let cancelled = format!("cancelling {run}/loop attempt 1: {reason}");
    wait_until(
        "the agent to take the cancel",
        Duration::from_secs(30),
        || c.process_log("a1").contains(&cancelled).then_some(()),
    );
    // The step was killed: its tick file stops changing.
    wait_until("the step to stop", Duration::from_secs(30), || {
        let age = std::fs::metadata(&tick)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())?;
        (age > Duration::from_secs(2)).then_some(())
    });
}

#[test]
fn a_second_agent_with_the_same_id_is_refused() {
    let mut c = Cluster::new();
    c.start_controller_with(&["controller".to_string()]);
    c.start_agent("a1", &["default"]);
    wait_until("agent a1 to serve", Duration::from_secs(30), || {
        c.process_log("a1")
            .contains("agent a1 serving")
            .then_some(())
    });
    let mut cmd = c.command();
    cmd.args(["agent", "--id", "a1", "--queue", "default", "--work-dir"])
        .arg(c.dir.path().join("twin"))
        .args(["--python-env", "system"]);
    let mut twin = ChildProcess::spawn("twin", cmd, &c.dir.path().join("twin.log")).unwrap();
    let status = twin.wait_exit(Duration::from_secs(30)).unwrap();
    let log = twin.output();
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("is another agent with this id running") && log.contains("ACCESS_REFUSED"),
        "{log}"
    );
}
