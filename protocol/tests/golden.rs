//! Golden files pin the wire encoding: every message kind, byte for byte.
//!
//! `DROVER_BLESS=1 cargo test -p drover-protocol --test golden` rewrites them; a change to an
//! existing file is a protocol change and needs a version bump.

#![allow(clippy::unwrap_used)] // tests unwrap freely; helpers here are test code too

use drover_protocol::message::*;
use drover_protocol::spec::{FunctionSpec, ParamSpec, PipelineMeta, PipelineSpec, StepSpec};
use drover_protocol::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn run() -> RunId {
    RunId::new("0190c8a0e7b27c3d9a4b5c6d7e8f9a0b").unwrap()
}

fn step(name: &str) -> StepName {
    StepName::new(name).unwrap()
}

fn agent() -> AgentId {
    AgentId::new("worker-1-1234-ab12").unwrap()
}

fn digest() -> Digest {
    Digest::of_bytes(b"hello")
}

fn samples() -> Vec<Message> {
    let spec = PipelineSpec {
        pipeline: PipelineMeta {
            name: "Pipeline demo".into(),
            project: "examples".into(),
            version: "1.1".into(),
            default_queue: "default".into(),
            description: None,
        },
        parameters: BTreeMap::from([(
            "url".into(),
            ParamSpec {
                default: Some("/data/iris.pkl".into()),
                description: Some("url to pickle file".into()),
                param_type: None,
            },
        )]),
        steps: vec![
            StepSpec {
                name: "step_one".into(),
                function: Some(FunctionSpec {
                    source: "def step_one(pickle_data_url):\n    return 1\n".into(),
                    entry: "step_one".into(),
                    kwargs: BTreeMap::from([(
                        "pickle_data_url".into(),
                        "\"${pipeline.url}\"".into(),
                    )]),
                    returns: vec!["data_frame".into()],
                    requirements: vec!["pandas==2.3.3".into()],
                    python: Some("3.11".into()),
                    blobs: BTreeMap::from([(
                        "columns".into(),
                        ArtifactRef {
                            digest: Digest::new(
                                "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                            )
                            .unwrap(),
                            size: 42,
                            file_name: FileName::new("columns.pkl").unwrap(),
                        },
                    )]),
                    prewarm: None,
                }),
                cache: true,
                ..Default::default()
            },
            StepSpec {
                name: "pipeline".into(),
                function: Some(FunctionSpec {
                    source: "def pipeline():\n    pass\n".into(),
                    entry: "pipeline".into(),
                    ..Default::default()
                }),
                driver: true,
                ..Default::default()
            },
            StepSpec {
                name: "shout".into(),
                command: Some(vec!["sh".into(), "-c".into(), "echo hi > out.txt".into()]),
                outputs: BTreeMap::from([("loud".into(), "out.txt".into())]),
                queue: Some("gpu".into()),
                parents: vec!["step_one".into()],
                env: BTreeMap::from([("K".into(), "v".into())]),
                timeout: Some("10m".into()),
                retries: 2,
                ..Default::default()
            },
        ],
    };
    let output = OutputName::new("data_frame").unwrap();
    vec![
        Message::Submit(Submit {
            run_id: run(),
            spec,
            params: BTreeMap::from([("url".into(), "/tmp/iris.pkl".into())]),
            submitted_by: Some("ana@laptop".into()),
            external: false,
        }),
        Message::Abort(Abort {
            run_id: run(),
            step: Some(step("step_one")),
            reason: Some("user request".into()),
        }),
        Message::StepJob(StepJob {
            run_id: run(),
            step: step("shout"),
            attempt: AttemptNo(2),
            job: JobSpec {
                kind: JobKind::Command {
                    argv: vec!["tr".into(), "a-z".into(), "${greet.greeting}".into()],
                },
                env: BTreeMap::from([("K".into(), "v".into())]),
                inputs: vec![JobInput {
                    step: step("greet"),
                    output: OutputName::new("greeting").unwrap(),
                    digest: digest(),
                    size: 5,
                    file_name: drover_protocol::FileName::new("greeting.txt").unwrap(),
                    content: None,
                }],
                outputs: BTreeMap::from([(OutputName::new("loud").unwrap(), "loud.txt".into())]),
                timeout_ms: Some(600_000),
                priority: 0,
            },
            controller_url: "http://127.0.0.1:8470".into(),
            lease_ms: 30_000,
            artifact_store: Some(ArtifactStoreRef {
                url: "s3://drover-artifacts/team-a".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: Some("us-east-1".into()),
            }),
            epoch: 0,
            inline_outputs: 0,
            event_batches: false,
        }),
        Message::Claimed(Claimed {
            run_id: run(),
            step: step("shout"),
            attempt: AttemptNo(1),
            agent: agent(),
        }),
        Message::Heartbeat(Heartbeat {
            agent: AgentInfo {
                id: agent(),
                host: "worker-1".into(),
                pid: 1234,
                version: "0.1.0".into(),
                queues: vec![QueueName::new("default").unwrap()],
                slots: 4,
                busy: 1,
                draining: false,
                cpus: 2,
                memory_mib: 4096,
                installer: None,
                warm_parents: Default::default(),
                refused_stale: 0,
                revoked_dropped: 0,
            },
            running: vec![AttemptRef {
                run_id: run(),
                step: step("shout"),
                attempt: AttemptNo(1),
            }],
        }),
        Message::Log(LogChunk {
            run_id: run(),
            step: step("shout"),
            attempt: AttemptNo(1),
            offset: 42,
            data: b"progress 50%\r\xff\n".to_vec(),
        }),
        Message::Finished(Finished {
            run_id: run(),
            step: step("step_one"),
            attempt: AttemptNo(1),
            agent: agent(),
            outcome: Outcome::Succeeded,
            exit_code: Some(0),
            outputs: BTreeMap::from([(
                output,
                ArtifactRef {
                    digest: digest(),
                    size: 5,
                    file_name: drover_protocol::FileName::new("data_frame.pkl").unwrap(),
                },
            )]),
            message: None,
            started_at: 1_732_500_000_000,
            ended_at: 1_732_500_001_500,
            log_delays: vec![LogDelay {
                offset: 1234,
                delayed_ms: 47_000,
            }],
            start: Some(StartKind::Warm),
            log_size: Some(4096),
            inline: Default::default(),
        }),
        Message::Cancel(Cancel {
            run_id: run(),
            step: step("shout"),
            attempt: AttemptNo(1),
            reason: "run aborted".into(),
            epoch: 0,
        }),
        Message::Revoke(Revoke {
            run_id: run(),
            step: None,
            reason: "aborted on request".into(),
            epoch: 0,
        }),
    ]
}

fn meta() -> EnvelopeMeta {
    EnvelopeMeta {
        v: PROTOCOL_VERSION,
        id: "00000000000040008000000000000001".into(),
        sent_at: 1_732_500_000_000,
    }
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The message as JSON, for readers in other languages to compare against.
fn as_json(msg: &Message) -> serde_json::Value {
    let body = match msg {
        Message::Submit(b) => serde_json::to_value(b),
        Message::Abort(b) => serde_json::to_value(b),
        Message::StepJob(b) => serde_json::to_value(b),
        Message::Claimed(b) => serde_json::to_value(b),
        Message::Heartbeat(b) => serde_json::to_value(b),
        Message::Log(b) => serde_json::to_value(b),
        Message::Finished(b) => serde_json::to_value(b),
        Message::Cancel(b) => serde_json::to_value(b),
        Message::Revoke(b) => serde_json::to_value(b),
        Message::Events(b) => serde_json::to_value(b),
    }
    .expect("messages are JSON-representable");
    let m = meta();
    serde_json::json!({"v": m.v, "kind": msg.kind(), "id": m.id, "sent_at": m.sent_at, "body": body})
}

/// Compares `msg` with `tests/golden/<name>.msgpack` (and writes it and its JSON when blessing).
fn check_golden(name: &str, msg: &Message) {
    let bytes = msg.encode_with(meta()).unwrap();
    let path = golden_dir().join(format!("{name}.msgpack"));
    if std::env::var_os("DROVER_BLESS").is_some() {
        std::fs::write(&path, &bytes).unwrap();
        let json = serde_json::to_string_pretty(&as_json(msg)).unwrap();
        std::fs::write(path.with_extension("json"), json + "\n").unwrap();
    }
    let golden = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with DROVER_BLESS=1", path.display()));
    assert_eq!(bytes, golden, "{name} changed: that is a protocol change");
    let (decoded_meta, decoded) = Message::decode(&golden).unwrap();
    assert_eq!(&decoded, msg);
    assert_eq!(decoded_meta, meta());
}

#[test]
fn golden_files_pin_every_kind() {
    for msg in samples() {
        check_golden(msg.kind(), &msg);
    }
}

/// A step aborted while its job waited on a queue revokes that one attempt.
#[test]
fn a_revoked_step_is_pinned() {
    let revoke = Message::Revoke(Revoke {
        run_id: run(),
        step: Some(RevokedStep {
            step: step("shout"),
            attempt: AttemptNo(2),
        }),
        reason: "aborted on request".into(),
        epoch: 3,
    });
    check_golden("revoke_step", &revoke);
}

/// A drained agent hands a step back with `released`: no exit code, no outputs, a message.
#[test]
fn a_released_attempt_is_pinned() {
    let released = Message::Finished(Finished {
        run_id: run(),
        step: step("shout"),
        attempt: AttemptNo(1),
        agent: agent(),
        outcome: Outcome::Released,
        exit_code: None,
        outputs: BTreeMap::new(),
        message: Some("the agent was draining and its drain timeout (1s) expired".into()),
        started_at: 1_732_500_000_000,
        ended_at: 1_732_500_001_500,
        log_delays: Vec::new(),
        start: None,
        log_size: None,
        inline: Default::default(),
    });
    check_golden("finished_released", &released);
}

/// A function step that must start in a new interpreter (`prewarm = false`) says so in its
/// job; a job without the field may start warm.
#[test]
fn a_function_job_that_starts_cold_is_pinned() {
    let job = Message::StepJob(StepJob {
        run_id: run(),
        step: step("train"),
        attempt: AttemptNo(1),
        job: JobSpec {
            kind: JobKind::Function {
                source: "def train(n):\n    return n * 2\n".into(),
                entry: "train".into(),
                kwargs: BTreeMap::from([("n".into(), "3".into())]),
                returns: vec![OutputName::new("model").unwrap()],
                requirements: vec!["scikit-learn==1.7.2".into()],
                python: None,
                blobs: BTreeMap::new(),
                prewarm: Some(false),
            },
            env: BTreeMap::new(),
            inputs: Vec::new(),
            outputs: BTreeMap::new(),
            timeout_ms: None,
            priority: 0,
        },
        controller_url: "http://127.0.0.1:8470".into(),
        lease_ms: 30_000,
        artifact_store: None,
        epoch: 0,
        inline_outputs: 0,
        event_batches: false,
    });
    check_golden("step_job_cold", &job);
}

/// A job or cancel without an epoch (from a controller without the journal, or one that
/// predates epochs: the pinned files above) reads as epoch 0, and a zero epoch is left out, so
/// those files did not change; another epoch travels as the named field `epoch`.
#[test]
fn the_epoch_is_left_out_at_zero_and_named_otherwise() {
    for name in ["step_job", "cancel"] {
        let pinned = std::fs::read(golden_dir().join(format!("{name}.msgpack"))).unwrap();
        let (meta, decoded) = Message::decode(&pinned).unwrap();
        let with_epoch = match decoded {
            Message::StepJob(mut job) => {
                assert_eq!(job.epoch, 0);
                job.epoch = 3;
                Message::StepJob(job)
            }
            Message::Cancel(mut cancel) => {
                assert_eq!(cancel.epoch, 0);
                cancel.epoch = 3;
                Message::Cancel(cancel)
            }
            other => panic!("{name}: {other:?}"),
        };
        let bytes = with_epoch.encode_with(meta).unwrap();
        assert!(
            bytes
                .windows(6)
                .any(|w| w == [0xa5, b'e', b'p', b'o', b'c', b'h']),
            "{name}: the epoch is a named field"
        );
        assert_eq!(Message::decode(&bytes).unwrap().1, with_epoch);
    }
}

/// A `StepJob` from a controller that predates `artifact_store` still decodes: agents then move
/// artifacts through the controller, as before.
#[test]
fn a_step_job_without_artifact_store_means_through_the_controller() {
    let old = std::fs::read(golden_dir().join("compat/step_job_without_store.msgpack")).unwrap();
    let (_, decoded) = Message::decode(&old).unwrap();
    let Message::StepJob(job) = decoded else {
        panic!("not a step job: {decoded:?}");
    };
    assert_eq!(job.artifact_store, None);
    assert_eq!(job.controller_url, "http://127.0.0.1:8470");
}

/// A `Finished` from an agent that waited for its whole log before reporting carries no log
/// size: it still decodes, and the controller then takes the log as complete.
#[test]
fn a_finished_without_log_size_still_decodes() {
    let old = std::fs::read(golden_dir().join("compat/finished_without_log_size.msgpack")).unwrap();
    let (_, decoded) = Message::decode(&old).unwrap();
    let Message::Finished(finished) = decoded else {
        panic!("not a finished: {decoded:?}");
    };
    assert_eq!(finished.log_size, None);
    assert_eq!(finished.outcome, Outcome::Succeeded);
    assert_eq!(finished.log_delays.len(), 1);
}

/// A job that lets small outputs come back inside `Finished` says how many bytes, and may bring
/// the bytes of a small input; the result carries its outputs' bytes next to their references,
/// as msgpack binaries. Jobs and results without them (the files above) did not change.
#[test]
fn outputs_sent_inside_a_result_are_pinned() {
    let pinned = std::fs::read(golden_dir().join("step_job.msgpack")).unwrap();
    let (_, decoded) = Message::decode(&pinned).unwrap();
    let Message::StepJob(mut job) = decoded else {
        panic!("not a step job: {decoded:?}");
    };
    assert_eq!(
        job.inline_outputs, 0,
        "a job without the field uploads every output"
    );
    assert_eq!(job.job.inputs[0].content, None, "nor brings its inputs");
    job.inline_outputs = 65_536;
    job.job.inputs[0].content = Some(serde_bytes::ByteBuf::from(b"hello".to_vec()));
    job.artifact_store = None;
    check_golden("step_job_inline", &Message::StepJob(job));

    check_golden("finished_inline", &Message::Finished(finished_inline()));
}

/// A job may let its `Claimed` and `Finished` travel with other events in one message; such a
/// message holds whole envelopes, each decoded on its own. The job without the field (the
/// file above) did not change.
#[test]
fn events_sent_together_are_pinned() {
    let pinned = std::fs::read(golden_dir().join("step_job.msgpack")).unwrap();
    let (_, decoded) = Message::decode(&pinned).unwrap();
    let Message::StepJob(mut job) = decoded else {
        panic!("not a step job: {decoded:?}");
    };
    assert!(
        !job.event_batches,
        "a job without the field sends events one by one"
    );
    job.event_batches = true;
    job.artifact_store = None;
    check_golden("step_job_event_batches", &Message::StepJob(job));

    let claimed = Message::Claimed(Claimed {
        run_id: run(),
        step: step("shout"),
        attempt: AttemptNo(1),
        agent: agent(),
    });
    let finished = Message::Finished(finished_inline());
    let inner = [&finished, &claimed].map(|m| m.encode_with(meta()).unwrap());
    let events = Message::Events(Events {
        events: inner
            .iter()
            .cloned()
            .map(serde_bytes::ByteBuf::from)
            .collect(),
    });
    check_golden("events", &events);
    let Message::Events(batch) = &events else {
        unreachable!()
    };
    let each: Vec<Message> = batch
        .events
        .iter()
        .map(|bytes| Message::decode(bytes).unwrap().1)
        .collect();
    assert_eq!(each, vec![finished, claimed]);
}

/// A `Finished` of step `greet` whose output `greeting` ("hello") travels inside it.
fn finished_inline() -> Finished {
    let greeting = OutputName::new("greeting").unwrap();
    Finished {
        run_id: run(),
        step: step("greet"),
        attempt: AttemptNo(1),
        agent: agent(),
        outcome: Outcome::Succeeded,
        exit_code: Some(0),
        outputs: BTreeMap::from([(
            greeting.clone(),
            ArtifactRef {
                digest: digest(),
                size: 5,
                file_name: drover_protocol::FileName::new("greeting.txt").unwrap(),
            },
        )]),
        message: None,
        started_at: 1_732_500_000_000,
        ended_at: 1_732_500_001_500,
        log_delays: Vec::new(),
        start: None,
        log_size: Some(0),
        inline: BTreeMap::from([(greeting, serde_bytes::ByteBuf::from(b"hello".to_vec()))]),
    }
}

/// Inline bytes must be what their reference says: named, of its size, of its digest; and no
/// more of them than the job allows.
#[test]
fn inline_outputs_must_match_their_references() {
    let mut f = finished_inline();
    assert_eq!(f.inline_mismatch(5), None);
    assert!(f.inline_mismatch(4).unwrap().contains("more than the 4"));
    let greeting = OutputName::new("greeting").unwrap();
    let mut with = |bytes: &[u8], under: &OutputName| {
        f.inline = BTreeMap::from([(under.clone(), serde_bytes::ByteBuf::from(bytes))]);
        f.inline_mismatch(5)
    };
    assert!(with(b"hellO", &greeting).unwrap().contains("hashes to"));
    assert!(with(b"hell", &greeting).unwrap().contains("has 4 bytes"));
    let other = OutputName::new("other").unwrap();
    assert!(
        with(b"hello", &other)
            .unwrap()
            .contains("not among the outputs")
    );
}
