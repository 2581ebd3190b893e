//! Tests that pin what the store writes and prove older stores still open: golden files of every
//! stored record ([`golden`]) and a committed sled directory written by this code ([`fixture`]).
//!
//! Both are built from [`samples`]: a running run whose steps are in every live state, a
//! rejected run, a running dynamic run (a driver and a step it added), a cache entry and an
//! agent. Fixed ids and times keep them reproducible.

mod fixture;
mod golden;

use crate::scheduler::{
    AgentRecord, ArchivedLog, AttemptOutcome, AttemptRecord, CachedOutputs, RunRecord, RunStatus,
    StepCall, StepRecord, StepStatus,
};
use crate::store::{Loaded, Store};
use drover_protocol::message::{AgentInfo, ArtifactRef};
use drover_protocol::spec::{FunctionSpec, PipelineSpec, StepSpec};
use drover_protocol::validate::{validate, validate_added};
use drover_protocol::{AgentId, AttemptNo, Digest, OutputName, QueueName, RunId};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `controller/tests/<rest>`: where the committed golden files and fixtures live.
fn tests_dir(rest: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(rest)
}

const T0: u64 = 1_732_500_000_000;

const PIPELINE: &str = r#"
[pipeline]
name = "nightly"
project = "examples"
version = "2"
[parameters.rows]
default = "100"
[[step]]
name = "fetch"
command = ["sh", "-c", "seq ${pipeline.rows} > rows.txt"]
outputs = { rows = "rows.txt" }
cache = true
[[step]]
name = "train"
command = ["sort", "-n", "${fetch.rows}"]
outputs = { model = "model.bin" }
retries = 2
[[step]]
name = "score"
command = ["wc", "-l", "${train.model}"]
queue = "gpu"
priority = 5
[[step]]
name = "publish"
command = ["cat", "${train.model}"]
parents = ["score"]
[[step]]
name = "lint"
command = ["true"]
[[step]]
name = "check"
command = ["sh", "-c", "exit 2"]
continue_on_fail = true
"#;

fn run_id() -> RunId {
    RunId::new("0190c8a0e7b27c3d9a4b5c6d7e8f9a0b").unwrap()
}

fn rejected_run_id() -> RunId {
    RunId::new("0190c8a0e7b27c3d9a4b5c6d7e8f9a0c").unwrap()
}

fn dynamic_run_id() -> RunId {
    RunId::new("0190c8a0e7b27c3d9a4b5c6d7e8f9a0d").unwrap()
}

fn agent_id() -> AgentId {
    AgentId::new("worker-1-1234-ab12").unwrap()
}

fn artifact(content: &[u8], file_name: &str) -> ArtifactRef {
    ArtifactRef {
        digest: Digest::of_bytes(content),
        size: content.len() as u64,
        file_name: drover_protocol::FileName::new(file_name).unwrap(),
    }
}

fn outputs(name: &str, artifact: ArtifactRef) -> CachedOutputs {
    BTreeMap::from([(OutputName::new(name).unwrap(), artifact)])
}

fn attempt(no: u32, queued_at: u64) -> AttemptRecord {
    AttemptRecord {
        attempt: AttemptNo(no),
        agent: None,
        queued_at,
        started_at: None,
        ended_at: None,
        exit_code: None,
        outcome: None,
        message: None,
        log_delays: Vec::new(),
        start: None,
        log_size: None,
        log_archive: None,
    }
}

fn ended(mut a: AttemptRecord, exit_code: i32, outcome: AttemptOutcome) -> AttemptRecord {
    a.agent = Some(agent_id());
    a.started_at = Some(a.queued_at + 100);
    a.ended_at = Some(a.queued_at + 900);
    a.exit_code = Some(exit_code);
    a.outcome = Some(outcome);
    a
}

const CACHE_KEY: &str = "9f2c1e4b7a0d3c6f5e8b1a4d7c0f3e6b9a2d5c8f1e4b7a0d3c6f5e8b1a4d7c0f";

/// The running run: `fetch` cached, `train` succeeded on its second attempt, `lint` queued,
/// `check` failed, `score` running, `publish` pending.
fn running_run() -> RunRecord {
    let spec = PipelineSpec::from_toml(PIPELINE).unwrap();
    let pipeline = validate(&spec, &BTreeMap::new()).unwrap();
    let mut steps: BTreeMap<String, StepRecord> = pipeline
        .steps
        .iter()
        .map(|s| (s.name.as_str().to_string(), StepRecord::new(s)))
        .collect();
    let step = |steps: &mut BTreeMap<String, StepRecord>, name: &str| steps.remove(name).unwrap();

    let mut fetch = step(&mut steps, "fetch");
    fetch.status = StepStatus::Cached;
    fetch.cache_key = Some(CACHE_KEY.into());
    fetch.cache_hit = true;
    fetch.outputs = outputs("rows", artifact(b"1\n2\n3\n", "rows.txt"));
    fetch.started_at = Some(T0 + 10);
    fetch.ended_at = Some(T0 + 10);

    let mut train = step(&mut steps, "train");
    train.status = StepStatus::Succeeded;
    train.attempt = AttemptNo(2);
    train.failures = 1;
    train.attempts = vec![
        ended(attempt(1, T0 + 20), 137, AttemptOutcome::Lost),
        ended(attempt(2, T0 + 2_000), 0, AttemptOutcome::Succeeded),
    ];
    train.attempts[0].message = Some("no heartbeat within the lease".into());
    train.attempts[1].log_size = Some(5);
    train.attempts[1].log_archive = Some(ArchivedLog {
        digest: Digest::of_bytes(b"done\n"),
        size: 5,
    });
    train.outputs = outputs("model", artifact(b"model", "model.bin"));
    train.started_at = Some(T0 + 120);
    train.ended_at = Some(T0 + 2_900);

    let mut lint = step(&mut steps, "lint");
    lint.status = StepStatus::Queued;
    lint.attempt = AttemptNo(1);
    lint.attempts = vec![attempt(1, T0 + 20)];

    let mut check = step(&mut steps, "check");
    check.status = StepStatus::Failed;
    check.attempt = AttemptNo(1);
    check.failures = 1;
    check.attempts = vec![ended(attempt(1, T0 + 20), 2, AttemptOutcome::Failed)];
    check.message = Some("exit code 2".into());
    check.started_at = Some(T0 + 120);
    check.ended_at = Some(T0 + 920);

    let mut score = step(&mut steps, "score");
    score.status = StepStatus::Running;
    score.attempt = AttemptNo(1);
    let mut running = attempt(1, T0 + 3_000);
    running.agent = Some(agent_id());
    running.started_at = Some(T0 + 3_050);
    score.attempts = vec![running];
    score.agent = Some(agent_id());
    score.lease_until = Some(T0 + 33_050);
    score.started_at = Some(T0 + 3_050);

    let publish = step(&mut steps, "publish");
    assert!(steps.is_empty(), "every step has a state: {steps:?}");

    // In the pipeline's (topological) order, as the scheduler keeps them.
    let mut by_name: BTreeMap<String, StepRecord> = [fetch, train, lint, check, score, publish]
        .into_iter()
        .map(|s| (s.name.as_str().to_string(), s))
        .collect();
    let steps = pipeline
        .steps
        .iter()
        .map(|s| by_name.remove(s.name.as_str()).unwrap())
        .collect();
    RunRecord {
        run_id: run_id(),
        name: pipeline.meta.name.clone(),
        project: pipeline.meta.project.clone(),
        version: pipeline.meta.version.clone(),
        params: pipeline.params.clone(),
        pipeline: Some(pipeline),
        submitted_by: Some("ana@laptop".into()),
        status: RunStatus::Running,
        error: None,
        abort_requested: false,
        created_at: T0,
        started_at: Some(T0 + 5),
        ended_at: None,
        steps,
        external: false,
        index: Default::default(),
    }
}

/// A run refused at the controller: no pipeline, no steps.
fn rejected_run() -> RunRecord {
    RunRecord {
        run_id: rejected_run_id(),
        name: "broken".into(),
        project: "examples".into(),
        version: String::new(),
        pipeline: None,
        params: BTreeMap::from([("rows".into(), "ten".into())]),
        submitted_by: None,
        status: RunStatus::Rejected,
        error: Some("step \"a\" has neither `command` nor `function`".into()),
        abort_requested: false,
        created_at: T0 + 60_000,
        started_at: None,
        ended_at: Some(T0 + 60_000),
        steps: Vec::new(),
        external: false,
        index: Default::default(),
    }
}

const DYNAMIC: &str = r#"
[pipeline]
name = "decorated"
project = "examples"
[[step]]
name = "pipe"
driver = true
function = { source = "def pipe():\n    return square(x=[1, 2])\n", entry = "pipe" }
"#;

/// A decorator pipeline: its driver runs and has added `square`, whose argument is a blob.
fn dynamic_run() -> RunRecord {
    let spec = PipelineSpec::from_toml(DYNAMIC).unwrap();
    let mut pipeline = validate(&spec, &BTreeMap::new()).unwrap();
    let square = StepSpec {
        name: "square".into(),
        function: Some(FunctionSpec {
            source: "def square(x):\n    return [v * v for v in x]\n".into(),
            entry: "square".into(),
            returns: vec!["result".into()],
            blobs: BTreeMap::from([("x".into(), artifact(b"pickled [1, 2]", "x.pkl"))]),
            ..FunctionSpec::default()
        }),
        cache: true,
        ..StepSpec::default()
    };
    let added = validate_added(&pipeline, &square).unwrap();
    pipeline.steps.push(added);

    let mut driver = StepRecord::new(&pipeline.steps[0]);
    driver.status = StepStatus::Running;
    driver.attempt = AttemptNo(1);
    let mut running = attempt(1, T0 + 90_010);
    running.agent = Some(agent_id());
    running.started_at = Some(T0 + 90_050);
    driver.attempts = vec![running];
    driver.agent = Some(agent_id());
    driver.lease_until = Some(T0 + 120_050);
    driver.started_at = Some(T0 + 90_050);

    let mut square = StepRecord::new(&pipeline.steps[1]);
    square.status = StepStatus::Queued;
    square.attempt = AttemptNo(1);
    square.attempts = vec![attempt(1, T0 + 90_400)];
    square.cache_key = Some(CACHE_KEY.replace('9', "8"));
    square.call = Some(StepCall {
        caller: driver.name.clone(),
        seq: 0,
        component: "square".into(),
        digest: "5d41402abc4b2a76b9719d911017c592".into(),
        added_at: T0 + 90_400,
    });
    RunRecord {
        run_id: dynamic_run_id(),
        name: pipeline.meta.name.clone(),
        project: pipeline.meta.project.clone(),
        version: pipeline.meta.version.clone(),
        params: pipeline.params.clone(),
        pipeline: Some(pipeline),
        submitted_by: Some("ana@laptop".into()),
        status: RunStatus::Running,
        error: None,
        abort_requested: false,
        created_at: T0 + 90_000,
        started_at: Some(T0 + 90_005),
        ended_at: None,
        steps: vec![driver, square],
        external: false,
        index: Default::default(),
    }
}

fn agent() -> AgentRecord {
    AgentRecord {
        info: AgentInfo {
            id: agent_id(),
            host: "worker-1".into(),
            pid: 1234,
            version: "0.1.0".into(),
            queues: vec![
                QueueName::new("default").unwrap(),
                QueueName::new("gpu").unwrap(),
            ],
            slots: 4,
            busy: 1,
            draining: false,
            cpus: 8,
            memory_mib: 16_384,
            installer: None,
            warm_parents: Default::default(),
            refused_stale: 0,
            revoked_dropped: 0,
        },
        last_seen: T0 + 30_000,
    }
}

/// What the samples load as: runs oldest first, as [`Store::load`] returns them.
pub(in crate::store) fn samples() -> Loaded {
    Loaded {
        runs: vec![running_run(), rejected_run(), dynamic_run()],
        cache: BTreeMap::from([(
            CACHE_KEY.to_string(),
            outputs("rows", artifact(b"1\n2\n3\n", "rows.txt")),
        )]),
        agents: vec![agent()],
    }
}

/// Writes every sample into `store` and flushes.
async fn write_samples(store: &Store) {
    let samples = samples();
    for run in &samples.runs {
        store.put_run(run).unwrap();
    }
    for (key, outputs) in &samples.cache {
        store.put_cache(key, outputs).unwrap();
    }
    for agent in &samples.agents {
        store.put_agent(agent).unwrap();
    }
    // The running run, as submitted again from the rejected one with a parameter fixed.
    let submitted = crate::store::Submitted {
        spec: PipelineSpec::from_toml(PIPELINE).unwrap(),
        params: BTreeMap::from([("rows".to_string(), "100".to_string())]),
        submitted_by: Some("ana@laptop".into()),
        rerun_of: Some(rejected_run_id()),
        fired_by: None,
    };
    store.put_submitted(&run_id(), &submitted).unwrap();
    write_automation_samples(store);
    // Two points of one series the running run's `train` reported.
    let point = |iteration, value| drover_api::ScalarPoint {
        title: "loss".into(),
        series: "train".into(),
        iteration,
        value,
    };
    store
        .append_scalars(
            &run_id(),
            &drover_protocol::StepName::new("train").unwrap(),
            &[point(0, 0.75), point(1, 0.5)],
        )
        .unwrap();
    store.put_task(&sample_task()).await.unwrap();
    // `train`'s output, as it came inside its result.
    store
        .put_small_output(&Digest::of_bytes(b"model"), b"model")
        .unwrap();
    store.flush().await.unwrap();
}

/// A schedule that fired the dynamic run and skipped a slot, a trigger that fired once, its
/// fire-once mark, and the dynamic run's submission naming the schedule's slot.
fn write_automation_samples(store: &Store) {
    use crate::automation::schedules::ScheduleRecord;
    use crate::automation::triggers::TriggerRecord;
    use drover_api::{FiredBy, FiredByKind, Firing, Skipped, TriggerOn};
    let spec = PipelineSpec::from_toml(PIPELINE).unwrap();
    let slot = T0 + 60_000;
    store
        .put_schedule(&ScheduleRecord {
            name: "nightly".into(),
            cron: "0 2 * * *".into(),
            timezone: "Europe/Paris".into(),
            overlap: false,
            paused: false,
            spec: spec.clone(),
            params: BTreeMap::from([("rows".to_string(), "10".to_string())]),
            from_run: Some(run_id()),
            created_at: T0,
            last_slot: Some(slot + 86_400_000),
            last_fired: Some(Firing {
                slot: Some(slot),
                at: slot + 120,
                run_id: dynamic_run_id(),
                upstream: None,
            }),
            last_skipped: Some(Skipped {
                slot: slot + 86_400_000,
                at: slot + 86_400_090,
                reason: "run of this schedule is still running".into(),
            }),
            skipped: 1,
        })
        .unwrap();
    store
        .put_trigger(&TriggerRecord {
            name: "after-ingest".into(),
            on: TriggerOn::Success,
            project: "samples".into(),
            pipeline: "ingest".into(),
            param_name: "trigger_run".into(),
            spec: spec.clone(),
            params: BTreeMap::new(),
            from_run: None,
            created_at: T0,
            fired: 1,
            last_fired: Some(Firing {
                slot: None,
                at: T0 + 5_000,
                run_id: rejected_run_id(),
                upstream: Some(run_id()),
            }),
        })
        .unwrap();
    assert!(
        store
            .mark_trigger_fired("after-ingest", &run_id(), &rejected_run_id())
            .unwrap()
    );
    let fired = crate::store::Submitted {
        spec,
        params: BTreeMap::new(),
        submitted_by: Some("schedule nightly".into()),
        rerun_of: None,
        fired_by: Some(FiredBy {
            kind: FiredByKind::Schedule,
            name: "nightly".into(),
            slot: Some(slot),
            upstream: None,
        }),
    };
    store.put_submitted(&dynamic_run_id(), &fired).unwrap();
}

/// A task registered by its script, with a connected parameter.
fn sample_task() -> crate::store::TaskRecord {
    crate::store::TaskRecord {
        id: "0190c8a0e7b27c3d9a4b5c6d7e8f9a10".into(),
        project: "examples".into(),
        name: "step 1 dataset".into(),
        task_type: "data_processing".into(),
        script: "from drover import Task\ntask = Task.init(\"examples\", \"step 1 dataset\")\n"
            .into(),
        script_name: "step1.py".into(),
        requirements: vec!["pandas==2.3.3".into()],
        parameters: BTreeMap::from([("General/rows".to_string(), "100".to_string())]),
        created_at: 1_720_000_000_000,
        updated_at: 1_720_000_000_500,
    }
}

/// Asserts that `loaded` is exactly the samples.
fn assert_samples(loaded: &Loaded) {
    assert_loaded(loaded, samples());
}

/// Asserts that `loaded` is exactly `expected`.
fn assert_loaded(loaded: &Loaded, expected: Loaded) {
    assert!(
        loaded.runs == expected.runs,
        "runs differ:\n{:#?}\nexpected:\n{:#?}",
        loaded.runs,
        expected.runs
    );
    assert_eq!(loaded.cache, expected.cache);
    assert_eq!(loaded.agents, expected.agents);
}
