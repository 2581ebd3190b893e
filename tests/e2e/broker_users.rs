//! The per-role broker users of the deploy kit (`deploy/rabbitmq-users.sh`) on a private
//! RabbitMQ node: a whole run works with a controller, an agent and a submitter user each, and
//! neither an agent nor a submitter can send what another role sends.

use crate::faults::rabbit::PrivateBroker;
use crate::harness::{Cluster, text};
use drover_amqp::{AmqpError, Broker, Target};
use drover_protocol::message::{Heartbeat, JobKind, Message, StepJob};
use drover_protocol::{Names, QueueName, RunId};
use std::process::Command;
use std::time::Duration;

const GOLDEN_JOB: &[u8] = include_bytes!("../../protocol/tests/golden/step_job.msgpack");
const GOLDEN_HEARTBEAT: &[u8] = include_bytes!("../../protocol/tests/golden/heartbeat.msgpack");

fn job() -> Message {
    let Ok((_, Message::StepJob(job))) = Message::decode(GOLDEN_JOB) else {
        panic!("the golden step job decodes");
    };
    let mut job: StepJob = job;
    job.run_id = RunId::generate();
    job.job.kind = JobKind::Command {
        argv: vec!["true".into()],
    };
    Message::StepJob(job)
}

fn heartbeat() -> Message {
    let Ok((_, Message::Heartbeat(h))) = Message::decode(GOLDEN_HEARTBEAT) else {
        panic!("the golden heartbeat decodes");
    };
    let h: Heartbeat = h;
    Message::Heartbeat(h)
}

fn url(user: &str, port: u16) -> String {
    format!("amqp://{user}:{user}-pw@127.0.0.1:{port}/%2f")
}

/// Publishes `msg` to `target` as `user`; `Err` with the broker's words when refused.
async fn publish_as(
    user_url: &str,
    names: &Names,
    target: Target,
    msg: &Message,
) -> Result<(), AmqpError> {
    let broker = Broker::connect(user_url, names.clone(), "test").await?;
    let publisher = broker.publisher().await?;
    let result = publisher.publish(&target, msg).await;
    broker.close().await;
    result
}

fn refused(result: Result<(), AmqpError>, what: &str) {
    match result {
        Err(e) if e.is_access_refused() => {}
        other => panic!("{what}: expected ACCESS_REFUSED, got {other:?}"),
    }
}

#[test]
fn each_broker_user_sends_only_what_its_role_sends() {
    let rabbit = PrivateBroker::start();
    let mut c = Cluster::new();
    c.amqp = rabbit.url();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rabbitmq-users.sh");
    let out = Command::new(script)
        .args(["--node", &rabbit.node, "--namespace", &c.ns])
        .args(["--queues", "default"])
        .env("DROVER_CONTROLLER_PASSWORD", "drover-controller-pw")
        .env("DROVER_AGENT_PASSWORD", "drover-agent-pw")
        .env("DROVER_SUBMIT_PASSWORD", "drover-submit-pw")
        .output()
        .expect("run deploy/rabbitmq-users.sh");
    assert!(out.status.success(), "{}", text(&out));
    let (controller, agent, submitter) = (
        url("drover-controller", rabbit.port),
        url("drover-agent", rabbit.port),
        url("drover-submit", rabbit.port),
    );

    // A whole run with one user per role.
    c.start_controller_with(&["controller".into(), "--amqp".into(), controller]);
    c.start_agent_with("a1", &["default"], &["--amqp", &agent]);
    let file = c.pipeline(
        "one.toml",
        "[pipeline]\nname = \"one\"\n[[step]]\nname = \"a\"\ncommand = [\"echo\", \"hi\"]\n",
    );
    let (out, run) = c.run_wait(&file, &["--amqp", &submitter]);
    assert!(
        out.status.success() && run["status"] == "succeeded",
        "{}\n{run}\ncontroller:\n{}\nagent:\n{}",
        text(&out),
        c.process_log("controller"),
        c.process_log("a1")
    );

    let names = Names::new(&c.ns).unwrap();
    let jobs = Target::Job(names.user_queue(&QueueName::new("default").unwrap()));
    let default_queue = Target::Queue(names.user_queue(&QueueName::new("default").unwrap()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // An agent cannot publish a job: not through the jobs exchange, not through the
        // default exchange; nor a submission.
        refused(
            publish_as(&agent, &names, jobs.clone(), &job()).await,
            "an agent publishing a job",
        );
        refused(
            publish_as(&agent, &names, default_queue.clone(), &job()).await,
            "an agent publishing a job through the default exchange",
        );
        refused(
            publish_as(&agent, &names, Target::Submit, &job()).await,
            "an agent publishing a submission",
        );
        // A submitter cannot publish events (a forged result) or jobs.
        refused(
            publish_as(&submitter, &names, Target::Events, &heartbeat()).await,
            "a submitter publishing an event",
        );
        refused(
            publish_as(&submitter, &names, jobs.clone(), &job()).await,
            "a submitter publishing a job",
        );
        refused(
            publish_as(
                &submitter,
                &names,
                Target::Queue(names.services()),
                &heartbeat(),
            )
            .await,
            "a submitter publishing through the default exchange, as older SDKs did",
        );
        // What each role does send still goes through.
        publish_as(&agent, &names, Target::Events, &heartbeat())
            .await
            .expect("an agent publishes events");
        // The controller may publish jobs.
        publish_as(&url("drover-controller", rabbit.port), &names, jobs, &job())
            .await
            .expect("the controller publishes jobs");
    });
    // The Python SDK submits as the submitter user too: it may not declare, and publishes
    // through the submit exchange.
    let run_id = run["run_id"].as_str().unwrap().to_string();
    c.env.push(("DROVER_AMQP_URL".into(), submitter.clone()));
    let script = format!(
        "from drover import messages, submit\nsubmit.publish(messages.abort({run_id:?}, 'a late abort'))\nprint('published')\n"
    );
    let out = c.python(&["-c", &script]);
    assert!(
        out.status.success() && text(&out).contains("published"),
        "{}",
        text(&out)
    );
    // The stray job is refused by the controller as of an unknown run; give it a moment, so the
    // cluster stops cleanly.
    std::thread::sleep(Duration::from_millis(200));
}
