//! The channel's messages: one JSON request per line (`{"op": ...}`), one answer per line,
//! `{"ok": true, ...}` or `{"ok": false, "error": {"code", "message"}}` with the codes of the
//! HTTP API's `ApiError`.

use drover_api::{ApiError, CallKey, RunView, ScalarPoint, StepStatus, StepView};
use drover_protocol::message::ArtifactRef;
use drover_protocol::spec::StepSpec;
use drover_protocol::{AttemptNo, OutputName, RunId, StepName};
use serde::{Deserialize, Serialize};

/// What a step asks its agent.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Info,
    /// Add a step to the run; the agent fills in the caller and its attempt.
    AddStep {
        call: CallKey,
        step: Box<StepSpec>,
    },
    /// Answer once the step is terminal.
    Wait {
        step: StepName,
    },
    /// Store a file of the workdir as a blob.
    Put {
        path: String,
    },
    /// Fetch a blob into the workdir, checking its digest.
    Get {
        artifact: ArtifactRef,
        dest: String,
    },
    /// Report scalars of this attempt (`Logger.report_scalar`).
    Scalars {
        points: Vec<ScalarPoint>,
    },
    /// Store a file of the workdir as the step's artifact `name`: reported with the step's
    /// outputs when the attempt succeeds. Storing a name again replaces it.
    Artifact {
        name: OutputName,
        path: String,
    },
    /// The run's current view: how a driver running a pipeline's step callbacks follows it.
    /// A struct variant, so that a request naming a run (`"run_id"`) is refused as an unknown
    /// field rather than ignored: a step reads its own run only.
    Run {},
    /// Answer the `pre_execute_callback` of a step of this run that waits for it: run it
    /// (`proceed`) or skip it and its descendants.
    Callback {
        step: StepName,
        proceed: bool,
    },
}

/// The answer to `info`.
#[derive(Debug, Serialize)]
pub struct Info<'a> {
    pub run_id: &'a RunId,
    pub step: &'a StepName,
    pub attempt: AttemptNo,
    pub controller_url: &'a str,
}

/// The answer to `add_step`.
#[derive(Debug, Serialize)]
pub struct Added {
    pub step: StepName,
    pub existing: bool,
}

/// The answer to `wait`.
#[derive(Debug, Serialize)]
pub struct Waited {
    pub view: Box<StepView>,
}

/// The answer to `put`.
#[derive(Debug, Serialize)]
pub struct Stored {
    pub artifact: ArtifactRef,
}

/// The answer to `scalars`: how many points the controller took.
#[derive(Debug, Serialize)]
pub struct Reported {
    pub stored: u64,
}

/// The answer to `run`.
#[derive(Debug, Serialize)]
pub struct Followed {
    pub view: Box<RunView>,
}

/// The answer to `callback`: the step's status once the answer is durable.
#[derive(Debug, Serialize)]
pub struct Answered {
    pub status: StepStatus,
}

/// The answer to `get`: nothing but `ok`.
#[derive(Debug, Serialize)]
pub struct Done {}

#[derive(Serialize)]
struct Answer<T> {
    ok: bool,
    #[serde(flatten)]
    body: T,
}

#[derive(Serialize)]
struct Failure<'a> {
    ok: bool,
    error: &'a ApiError,
}

/// A success line (with its newline).
pub fn ok(body: impl Serialize) -> String {
    line(&Answer { ok: true, body })
}

/// A failure line (with its newline).
pub fn failure(error: &ApiError) -> String {
    line(&Failure { ok: false, error })
}

fn line(value: &impl Serialize) -> String {
    let mut text = serde_json::to_string(value).unwrap_or_else(|e| {
        format!(
            r#"{{"ok":false,"error":{{"code":"internal","message":"cannot encode the answer: {}"}}}}"#,
            e.to_string().replace(['"', '\\'], "'")
        )
    });
    text.push('\n');
    text
}
