//! Golden files pin the JSON of every document and event of the HTTP API: each sample below is
//! serialised and compared with `tests/golden/<name>.json`, and each file is read back into the
//! same value. The Python SDK's tests read these files too.
//!
//! `DROVER_BLESS=1 cargo test -p drover-api --test golden` rewrites them; a change to an
//! existing file is a change of the API that every client must follow.

#![allow(clippy::unwrap_used)] // tests unwrap freely

use drover_api::events::{
    AttemptStarted, Hello, LogData, LogEnded, LogNote, RunChanged, RunEnded, StreamError,
};
use drover_api::*;
use drover_protocol::message::StartKind;
use drover_protocol::{AgentId, AttemptNo, Digest, FileName, QueueName, RunId, StepName};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"))
}

fn check<T: Serialize + DeserializeOwned + PartialEq + Debug>(name: &str, value: &T) {
    let path = golden_path(name);
    let text = serde_json::to_string_pretty(value).unwrap() + "\n";
    if std::env::var_os("DROVER_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run with DROVER_BLESS=1", path.display()));
    assert_eq!(
        text, want,
        "{name}: the JSON changed (DROVER_BLESS=1 to accept)"
    );
    let read: T = serde_json::from_str(&want).unwrap();
    assert_eq!(&read, value, "{name}: does not read back");
}

fn run_id() -> RunId {
    RunId::new("0193a2b4c5d6e7f80123456789abcdef").unwrap()
}

fn earlier_run_id() -> RunId {
    RunId::new("0193a2b4c5d6e7f80123456789abcde0").unwrap()
}

fn step(name: &str) -> StepName {
    StepName::new(name).unwrap()
}

fn agent() -> AgentId {
    AgentId::new("worker-1-4242-ab12").unwrap()
}

fn run_view() -> RunView {
    let digest = Digest::of_bytes(b"hello\n");
    let prepare = StepView {
        name: step("prepare"),
        status: StepStatus::Succeeded,
        queue: QueueName::new("default").unwrap(),
        parents: vec![],
        inputs: vec![],
        outputs: BTreeMap::from([(
            "data".to_string(),
            OutputView {
                digest,
                size: 6,
                file_name: FileName::new("data.txt").unwrap(),
            },
        )]),
        attempt: AttemptNo(1),
        attempts: vec![AttemptView {
            attempt: AttemptNo(1),
            agent: Some(agent()),
            queued_at: 1_764_590_400_000,
            started_at: Some(1_764_590_400_010),
            ended_at: Some(1_764_590_400_250),
            exit_code: Some(0),
            outcome: Some(AttemptOutcome::Succeeded),
            message: None,
            start: None,
            log_archive: Some(ArchivedLog {
                digest: Digest::of_bytes(b"hello\n"),
                size: 6,
            }),
        }],
        cache_key: Some("5f1e".repeat(16)),
        cache_hit: false,
        kind: StepKind::Command,
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            "echo hello > data.txt".into(),
        ]),
        function: None,
        env: BTreeMap::from([("MODE".to_string(), "fast".to_string())]),
        timeout_ms: Some(60_000),
        retries: 0,
        retry_at: None,
        started_at: Some(1_764_590_400_010),
        ended_at: Some(1_764_590_400_250),
        exit_code: Some(0),
        message: None,
        pending_reason: None,
        driver: false,
    };
    let train = StepView {
        name: step("train"),
        status: StepStatus::Failed,
        queue: QueueName::new("gpu").unwrap(),
        parents: vec![step("prepare")],
        inputs: vec!["prepare.data".into()],
        outputs: BTreeMap::new(),
        attempt: AttemptNo(2),
        attempts: vec![
            AttemptView {
                attempt: AttemptNo(1),
                agent: Some(agent()),
                queued_at: 1_764_590_400_260,
                started_at: Some(1_764_590_400_270),
                ended_at: Some(1_764_590_403_270),
                exit_code: None,
                outcome: Some(AttemptOutcome::Lost),
                message: Some("no heartbeat within the lease".into()),
                start: None,
                log_archive: None,
            },
            AttemptView {
                attempt: AttemptNo(2),
                agent: None,
                queued_at: 1_764_590_403_300,
                started_at: Some(1_764_590_403_310),
                ended_at: Some(1_764_590_404_000),
                exit_code: Some(1),
                outcome: Some(AttemptOutcome::Failed),
                message: Some("ValueError: bad input".into()),
                start: Some(StartKind::Warm),
                log_archive: None,
            },
        ],
        cache_key: None,
        cache_hit: false,
        kind: StepKind::Function,
        command: None,
        function: Some(FunctionView {
            entry: "train".into(),
            source: "def train(data):\n    raise ValueError('bad input')\n".into(),
            kwargs: BTreeMap::from([("data".to_string(), "\"${prepare.data}\"".to_string())]),
            requirements: vec!["pandas==2.2.3".into()],
            python: Some("3.11".into()),
        }),
        env: BTreeMap::new(),
        timeout_ms: None,
        retries: 1,
        retry_at: None,
        started_at: Some(1_764_590_403_310),
        ended_at: Some(1_764_590_404_000),
        exit_code: Some(1),
        message: Some("ValueError: bad input".into()),
        pending_reason: None,
        driver: false,
    };
    RunView {
        run_id: run_id(),
        name: "example".into(),
        project: "examples".into(),
        version: "1.0".into(),
        status: RunStatus::Failed,
        params: BTreeMap::from([("rows".to_string(), "100".to_string())]),
        submitted_by: Some("ana@laptop".into()),
        created_at: 1_764_590_400_000,
        started_at: Some(1_764_590_400_005),
        ended_at: Some(1_764_590_404_010),
        error: Some("step train failed".into()),
        rerun_of: Some(earlier_run_id()),
        fired_by: None,
        url: "http://127.0.0.1:8080/runs/0193a2b4c5d6e7f80123456789abcdef".into(),
        external: false,
        steps: vec![prepare, train],
    }
}

#[test]
fn runs() {
    let view = run_view();
    check("run_view", &view);
    check("step_view", &view.steps[1]);
    check(
        "pending_reasons",
        &vec![
            PendingReason::QueueFull {
                queue: QueueName::new("gpu").unwrap(),
            },
            PendingReason::WaitingForCallback,
        ],
    );
    check(
        "run_list",
        &RunList {
            runs: vec![RunSummary {
                run_id: run_id(),
                name: "example".into(),
                project: "examples".into(),
                version: "1.0".into(),
                status: RunStatus::Failed,
                created_at: 1_764_590_400_000,
                started_at: Some(1_764_590_400_005),
                ended_at: Some(1_764_590_404_010),
                steps: BTreeMap::from([(StepStatus::Succeeded, 1), (StepStatus::Failed, 1)]),
                url: view.url.clone(),
            }],
            next: Some(run_id()),
        },
    );
    check(
        "rerun_request",
        &RerunRequest {
            params: BTreeMap::from([("rows".to_string(), "200".to_string())]),
            submitted_by: Some("ana@laptop".into()),
        },
    );
    check(
        "rerun_accepted",
        &RerunAccepted {
            run_id: run_id(),
            rerun_of: earlier_run_id(),
            params: BTreeMap::from([("rows".to_string(), "200".to_string())]),
            url: view.url.clone(),
        },
    );
    check(
        "csrf_token",
        &CsrfToken {
            token:
                "6f1c0e4a9b2d7c3e.0c5d8e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e"
                    .into(),
            cookie: "drover_csrf=6f1c0e4a9b2d7c3e".into(),
        },
    );
    let prepare = &view.steps[0];
    let output = &prepare.outputs["data"];
    check(
        "artifact_list",
        &ArtifactList {
            run_id: run_id(),
            artifacts: vec![ArtifactView {
                step: prepare.name.clone(),
                name: "data".into(),
                file_name: output.file_name.clone(),
                size: output.size,
                digest: output.digest.clone(),
                url: format!(
                    "{}/api/v1/runs/{}/steps/prepare/artifacts/data",
                    "http://127.0.0.1:8080",
                    run_id()
                ),
            }],
        },
    );
    check(
        "abort_accepted",
        &AbortAccepted {
            run_id: run_id(),
            step: Some(step("train")),
        },
    );
}

#[test]
fn dynamic_runs() {
    let spec = drover_protocol::spec::StepSpec {
        name: "step_two".into(),
        function: Some(drover_protocol::spec::FunctionSpec {
            source: "def step_two(data):\n    return data\n".into(),
            entry: "step_two".into(),
            kwargs: BTreeMap::from([("data".into(), "\"${step_one.data}\"".into())]),
            returns: vec!["data".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    check(
        "add_step",
        &AddStep {
            caller: step("driver"),
            attempt: drover_protocol::AttemptNo(1),
            call: CallKey {
                seq: 1,
                component: "step_two".into(),
                digest: "5f0c1a".into(),
            },
            step: spec,
        },
    );
    check(
        "step_added",
        &StepAdded {
            run_id: run_id(),
            step: step("step_two_1"),
            existing: true,
        },
    );
}

#[test]
fn external_runs() {
    let runner = AgentId::new("local-laptop-4242").unwrap();
    check(
        "step_report_started",
        &StepReport {
            runner: runner.clone(),
            report: Report::Started,
        },
    );
    check(
        "step_report_alive",
        &StepReport {
            runner: runner.clone(),
            report: Report::Alive {
                attempt: AttemptNo(1),
            },
        },
    );
    check(
        "step_report_skipped",
        &StepReport {
            runner: runner.clone(),
            report: Report::Skipped {
                reason: "pre_execute_callback returned False".into(),
            },
        },
    );
    let output = drover_protocol::message::ArtifactRef {
        digest: Digest::of_bytes(b"hello\n"),
        size: 6,
        file_name: FileName::new("return_object.pkl").unwrap(),
    };
    let outputs = BTreeMap::from([(
        drover_protocol::OutputName::new("return_object").unwrap(),
        output,
    )]);
    check(
        "step_report_finished",
        &StepReport {
            runner,
            report: Report::Finished {
                attempt: AttemptNo(1),
                outcome: drover_protocol::message::Outcome::Succeeded,
                exit_code: Some(0),
                message: None,
                outputs: outputs.clone(),
            },
        },
    );
    check(
        "step_reported",
        &StepReported {
            run_id: run_id(),
            step: step("step_two"),
            attempt: AttemptNo(1),
            status: StepStatus::Succeeded,
            lease_ms: 30_000,
            abort_requested: false,
            outputs,
        },
    );
    check("callback_answer", &CallbackAnswer { proceed: false });
    check(
        "callback_answered",
        &CallbackAnswered {
            run_id: run_id(),
            step: step("train"),
            status: StepStatus::Skipped,
        },
    );
    check(
        "log_appended",
        &LogAppended {
            attempt: AttemptNo(1),
            size: 4096,
        },
    );
}

#[test]
fn tasks() {
    let parameters = BTreeMap::from([
        ("General/test_size".to_string(), "0.25".to_string()),
        ("General/dataset_task_id".to_string(), String::new()),
    ]);
    check(
        "register_task",
        &RegisterTask {
            id: None,
            project: "examples".into(),
            name: "pipeline step 2 process dataset".into(),
            task_type: "data_processing".into(),
            script: "from drover import Task\ntask = Task.init(\"examples\", \"step 2\")\n".into(),
            script_name: "step2_data_processing.py".into(),
            requirements: vec!["scikit-learn==1.5.2".into()],
            parameters: parameters.clone(),
        },
    );
    let view = TaskView {
        id: "0193a2b4c5d6e7f80123456789abcdef".into(),
        project: "examples".into(),
        name: "pipeline step 2 process dataset".into(),
        task_type: "data_processing".into(),
        script: "from drover import Task\ntask = Task.init(\"examples\", \"step 2\")\n".into(),
        script_name: "step2_data_processing.py".into(),
        requirements: vec!["scikit-learn==1.5.2".into()],
        parameters,
        created_at: 1_764_590_400_000,
        updated_at: 1_764_590_401_250,
    };
    check("task_view", &view);
    check("task_list", &TaskList { tasks: vec![view] });
}

#[test]
fn fleet() {
    check(
        "agent_list",
        &AgentList {
            agents: vec![AgentView {
                id: agent(),
                host: "worker-1".into(),
                pid: 4242,
                version: "0.1.0".into(),
                queues: vec![QueueName::new("default").unwrap()],
                slots: 2,
                busy: 1,
                draining: false,
                cpus: 4,
                memory_mib: 15_984,
                installer: Some("uv on PATH: /usr/local/bin/uv".into()),
                last_seen: 1_764_590_403_000,
                alive: true,
                current_steps: vec![AgentStep {
                    run_id: run_id(),
                    step: step("train"),
                    attempt: AttemptNo(2),
                    started_at: Some(1_764_590_403_310),
                }],
            }],
        },
    );
    check(
        "queue_list",
        &QueueList {
            queues: vec![QueueView {
                name: QueueName::new("gpu").unwrap(),
                broker_queue: "gpu".into(),
                exists: true,
                messages: 3,
                consumers: 0,
                waiting_steps: 3,
                running_steps: 0,
                active_steps: 3,
                warning: Some("3 step(s) wait on queue \"gpu\" but no agent consumes it".into()),
            }],
            dead_letters: 1,
            dead_lettered_by_controller: BTreeMap::from([("malformed".to_string(), 1)]),
        },
    );
    check("health", &Health::of(true));
    check("health_degraded", &Health::of(false));
    check(
        "blob_stored",
        &BlobStored {
            digest: Digest::of_bytes(b"hello\n"),
            size: 6,
        },
    );
    check(
        "api_error",
        &ApiError::new(
            ErrorCode::NotFound,
            "run 0193a2b4c5d6e7f80123456789abcdef has no step \"x\"",
        ),
    );
}

#[test]
fn events() {
    fn named<E: SseEvent + Serialize + DeserializeOwned + PartialEq + Debug>(file: &str, e: &E) {
        check(&format!("event_{file}"), e);
    }
    assert_eq!(Hello::NAME, "hello");
    named("hello", &Hello {});
    assert_eq!(RunChanged::NAME, "run");
    named(
        "run_changed",
        &RunChanged {
            run_id: Some(run_id()),
        },
    );
    assert_eq!(RunEnded::NAME, "end");
    named(
        "run_ended",
        &RunEnded {
            status: RunStatus::Succeeded,
        },
    );
    assert_eq!(LogData::NAME, "log");
    named(
        "log",
        &LogData {
            attempt: AttemptNo(1),
            offset: 0,
            data: "aGVsbG8K".into(),
        },
    );
    assert_eq!(LogNote::NAME, "note");
    named(
        "log_note",
        &LogNote {
            attempt: AttemptNo(1),
            offset: 1234,
            delayed_ms: 47_000,
            text: "log of attempt 1 delayed 47 s from byte 1234 (broker unreachable)".into(),
        },
    );
    assert_eq!(AttemptStarted::NAME, "attempt");
    named(
        "attempt",
        &AttemptStarted {
            attempt: AttemptNo(2),
            previous: AttemptNo(1),
        },
    );
    assert_eq!(LogEnded::NAME, "end");
    named(
        "log_ended",
        &LogEnded {
            status: Some(StepStatus::Failed),
            attempt: AttemptNo(2),
            size: 6,
            missing: 0,
        },
    );
    named(
        "log_ended_incomplete",
        &LogEnded {
            status: Some(StepStatus::Succeeded),
            attempt: AttemptNo(1),
            size: 6,
            missing: 4090,
        },
    );
    assert_eq!(StreamError::NAME, "error");
    named(
        "error",
        &StreamError {
            error: "cannot read the log: permission denied".into(),
        },
    );
}

/// The status names, in one file that other languages read instead of keeping their own lists.
#[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
struct Statuses {
    run: Vec<RunStatus>,
    run_terminal: Vec<RunStatus>,
    step: Vec<StepStatus>,
    step_terminal: Vec<StepStatus>,
    step_done: Vec<StepStatus>,
    attempt_outcome: Vec<AttemptOutcome>,
    error_code: Vec<ErrorCode>,
}

#[test]
fn schedules_and_triggers() {
    let params = BTreeMap::from([("rows".to_string(), "100".to_string())]);
    check(
        "fired_by_schedule",
        &FiredBy {
            kind: FiredByKind::Schedule,
            name: "nightly".into(),
            slot: Some(1_764_590_400_000),
            upstream: None,
        },
    );
    check(
        "fired_by_trigger",
        &FiredBy {
            kind: FiredByKind::Trigger,
            name: "after-etl".into(),
            slot: None,
            upstream: Some(earlier_run_id()),
        },
    );
    check(
        "add_schedule",
        &AddSchedule {
            name: "nightly".into(),
            cron: "0 2 * * *".into(),
            timezone: Some("Europe/Paris".into()),
            overlap: false,
            source: PipelineSource {
                from_run: Some(earlier_run_id()),
                pipeline: None,
                params: params.clone(),
            },
        },
    );
    check(
        "schedule_list",
        &ScheduleList {
            schedules: vec![ScheduleView {
                name: "nightly".into(),
                cron: "0 2 * * *".into(),
                timezone: "Europe/Paris".into(),
                overlap: false,
                paused: false,
                project: "examples".into(),
                pipeline: "example".into(),
                params: params.clone(),
                from_run: Some(earlier_run_id()),
                created_at: 1_764_500_000_000,
                last_fired: Some(Firing {
                    slot: Some(1_764_554_400_000),
                    at: 1_764_554_400_120,
                    run_id: run_id(),
                    upstream: None,
                }),
                last_skipped: Some(Skipped {
                    slot: 1_764_468_000_000,
                    at: 1_764_468_000_090,
                    reason: "run 0193a2b4c5d6e7f80123456789abcde0 of this schedule is still running (add it with --overlap to fire anyway)".into(),
                }),
                skipped: 1,
                next_slot: Some(1_764_640_800_000),
            }],
        },
    );
    check(
        "add_trigger",
        &AddTrigger {
            name: "after-etl".into(),
            on: TriggerOn::Success,
            upstream: "examples/etl".into(),
            param_name: Some("source_run".into()),
            source: PipelineSource {
                from_run: None,
                pipeline: Some("[pipeline]\nname = \"report\"\n".into()),
                params: BTreeMap::new(),
            },
        },
    );
    check(
        "trigger_list",
        &TriggerList {
            triggers: vec![TriggerView {
                name: "after-etl".into(),
                on: TriggerOn::Success,
                upstream: "examples/etl".into(),
                downstream: "examples/report".into(),
                param_name: "source_run".into(),
                params,
                from_run: None,
                created_at: 1_764_500_000_000,
                fired: 3,
                last_fired: Some(Firing {
                    slot: None,
                    at: 1_764_590_404_200,
                    run_id: run_id(),
                    upstream: Some(earlier_run_id()),
                }),
            }],
        },
    );
}

#[test]
fn statuses() {
    check(
        "statuses",
        &Statuses {
            run: RunStatus::ALL.to_vec(),
            run_terminal: RunStatus::ALL
                .into_iter()
                .filter(|s| s.is_terminal())
                .collect(),
            step: StepStatus::ALL.to_vec(),
            step_terminal: StepStatus::ALL
                .into_iter()
                .filter(|s| s.is_terminal())
                .collect(),
            step_done: StepStatus::ALL
                .into_iter()
                .filter(|s| s.is_done())
                .collect(),
            attempt_outcome: AttemptOutcome::ALL.to_vec(),
            error_code: ErrorCode::ALL.to_vec(),
        },
    );
}

#[test]
fn readers_are_tolerant() {
    // A newer controller's extra fields are ignored; an older one's missing optional fields
    // default.
    let text = r#"{"run_id": "0193a2b4c5d6e7f80123456789abcdef", "name": "x",
        "status": "running", "future_field": {"a": 1}}"#;
    let view: RunView = serde_json::from_str(text).unwrap();
    assert_eq!(view.status, RunStatus::Running);
    assert!(view.steps.is_empty() && view.error.is_none());
    let error: ApiError = serde_json::from_str(r#"{"code": "too_many", "message": "m"}"#).unwrap();
    assert_eq!(error.code, ErrorCode::Unknown);
}

#[test]
fn scalars() {
    let point = |series: &str, iteration, value| ScalarPoint {
        title: "loss".into(),
        series: series.into(),
        iteration,
        value,
    };
    check(
        "scalar_batch",
        &ScalarBatch {
            attempt: AttemptNo(1),
            points: vec![point("train", 0, 0.75), point("test", 0, 0.5)],
        },
    );
    check("scalars_stored", &ScalarsStored { stored: 2 });
    check(
        "scalar_list",
        &ScalarList {
            run_id: run_id(),
            series: vec![SeriesView {
                step: step("train"),
                title: "loss".into(),
                series: "train".into(),
                points: vec![(0, 0.75), (2, 0.5)],
                stride: 2,
                count: 4,
                last: (3, 0.25),
            }],
        },
    );
    assert_eq!(ScalarsChanged::NAME, "scalars");
    check(
        "event_scalars",
        &ScalarsChanged {
            step: step("train"),
        },
    );
}

/// The header that marks a 503 of a controller that is not active, its values, and the header
/// of a read that may be stale: the SDK reads them here.
#[test]
fn inactive_header() {
    check(
        "inactive_header",
        &serde_json::json!({
            "header": INACTIVE_HEADER,
            "values": INACTIVE_STATES,
            "stale_header": STALE_HEADER,
        }),
    );
}
