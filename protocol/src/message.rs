//! The envelope and every message drover sends, encoded as named-field msgpack.
//!
//! `Envelope { v, kind, id, sent_at, body }`: readers check `v` and `kind` before decoding the
//! body, so an unknown version or kind is a clear error (and a dead letter), never a panic.

use crate::ids::{AgentId, AttemptNo, Digest, FileName, OutputName, QueueName, RunId, StepName};
use crate::spec::PipelineSpec;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The wire protocol version this build reads and writes.
pub const PROTOCOL_VERSION: u16 = 1;

/// The outer frame of every message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<B> {
    pub v: u16,
    pub kind: String,
    /// Unique per message (UUIDv4, simple form); used in logs and for deduplication.
    pub id: String,
    /// Milliseconds since the Unix epoch when the sender built the message.
    pub sent_at: u64,
    pub body: B,
}

/// Why bytes are not a message this build understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a drover envelope: {0}")]
    Malformed(String),
    #[error("unsupported protocol version {0} (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u16),
    #[error("unknown message kind {0:?}")]
    UnknownKind(String),
    #[error("invalid {kind} body: {error}")]
    InvalidBody { kind: String, error: String },
    #[error(
        "the message is {size} bytes, more than this consumer's limit of {limit} bytes (--max-message-size); it was not read"
    )]
    TooLarge { size: usize, limit: usize },
}

/// Why a message could not be encoded. The message types are plain data with string keys, so
/// this means a body's `Serialize` broke that rule; the message is not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode a {kind} message: {error}")]
pub struct EncodeError {
    pub kind: &'static str,
    pub error: String,
}

impl DecodeError {
    /// A short stable code, used as the dead-letter reason and metric label.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Malformed(_) => "malformed",
            DecodeError::UnsupportedVersion(_) => "unsupported_version",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::InvalidBody { .. } => "invalid_body",
            DecodeError::TooLarge { .. } => "too_large",
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// CLI/SDK -> controller (services queue): start a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submit {
    pub run_id: RunId,
    pub spec: PipelineSpec,
    /// Parameter overrides (`--param k=v`).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Who submitted (user@host), for display.
    #[serde(default)]
    pub submitted_by: Option<String>,
    /// The submitter runs the driver and every step itself and reports their attempts over
    /// HTTP (a decorator pipeline's `run_locally()`): the controller records the run and
    /// dispatches nothing. See ARCHITECTURE.md, "Runs executed by their submitter".
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
}

/// CLI/SDK -> controller (services queue): stop a run, or one step of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Abort {
    pub run_id: RunId,
    #[serde(default)]
    pub step: Option<StepName>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Controller -> agents (a user queue): run one attempt of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepJob {
    pub run_id: RunId,
    pub step: StepName,
    pub attempt: AttemptNo,
    pub job: JobSpec,
    /// Base URL of the controller's HTTP API, for artifact download/upload.
    pub controller_url: String,
    /// How often the controller expects a heartbeat for this attempt, in milliseconds.
    pub lease_ms: u64,
    /// Where the controller keeps artifacts when agents should move them straight to that store
    /// instead of through `controller_url`; `None`: through the controller (its local store).
    #[serde(default)]
    pub artifact_store: Option<ArtifactStoreRef>,
    /// The epoch of the controller that published it (see [`Cancel::epoch`]).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub epoch: u64,
    /// At most this many bytes of the step's outputs, in all, may travel inside its `Finished`
    /// ([`Finished::inline`]) instead of being uploaded; 0 (also from a controller that does
    /// not know the field): every output is uploaded.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub inline_outputs: u64,
    /// The controller reads [`Events`] messages: the agent may send this job's `Claimed` and
    /// `Finished` inside one, beside other events. False (also from a controller that does not
    /// know the field): each is a message of its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub event_batches: bool,
}

/// An S3-compatible store every party reads and writes directly. Never holds credentials: each
/// side takes those from its own environment (`AWS_ACCESS_KEY_ID`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ArtifactStoreRef {
    /// `s3://bucket[/prefix]`; blobs live at `<prefix>/blobs/<first 2 hex>/<sha256>`.
    pub url: String,
    /// The S3 API endpoint as the controller reaches it (e.g. `http://minio:9000`); `None`: AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The bucket's region, when the controller was given one.
    #[serde(default)]
    pub region: Option<String>,
}

/// What to run and with what, fully resolved but for `${STEP.OUTPUT}` paths (known only on the agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub kind: JobKind,
    /// Extra environment variables; values may hold `${STEP.OUTPUT}` references.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Artifacts to download into the workdir before the step starts.
    #[serde(default)]
    pub inputs: Vec<JobInput>,
    /// Output name -> path relative to the workdir, uploaded after a successful exit.
    #[serde(default)]
    pub outputs: BTreeMap<OutputName, String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// The step's priority (0..=9); the controller publishes the job with it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: u8,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

/// A command or a Python function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobKind {
    /// An argv; arguments may hold `${STEP.OUTPUT}` references.
    Command { argv: Vec<String> },
    /// A Python function run by the agent's harness.
    Function {
        source: String,
        entry: String,
        /// JSON text per keyword argument; see [`crate::spec::FunctionSpec::kwargs`].
        kwargs: BTreeMap<String, String>,
        returns: Vec<OutputName>,
        requirements: Vec<String>,
        python: Option<String>,
        /// Keyword arguments passed as stored blobs; see [`crate::spec::FunctionSpec::blobs`].
        /// The agent downloads each before the step starts.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        blobs: BTreeMap<String, ArtifactRef>,
        /// `Some(false)`: never from a warm parent; see [`crate::spec::FunctionSpec::prewarm`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prewarm: Option<bool>,
    },
}

/// One artifact a step consumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInput {
    pub step: StepName,
    pub output: OutputName,
    pub digest: Digest,
    pub size: u64,
    /// File name to give the download (the producer's file name).
    pub file_name: FileName,
    /// The artifact's bytes, when the controller sends them with the job (a small output that
    /// came inside the `Finished` it acts on); the agent writes them, after checking them
    /// against `digest`, instead of downloading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<serde_bytes::ByteBuf>,
}

/// Agent -> controller: the agent took this attempt (published before the delivery is acked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claimed {
    pub run_id: RunId,
    pub step: StepName,
    pub attempt: AttemptNo,
    pub agent: AgentId,
}

/// Agent -> controller: several events in one message, so that the broker stores, delivers
/// and settles one message for them. Each is a whole encoded envelope of its own (a `Claimed`
/// or a `Finished`), so the controller can dead-letter one that is bad and act on the others;
/// it acks the batch once every event in it is durable. Sent only for jobs that allow it
/// ([`StepJob::event_batches`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Events {
    pub events: Vec<serde_bytes::ByteBuf>,
}

/// Identifies one attempt of one step of one run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttemptRef {
    pub run_id: RunId,
    pub step: StepName,
    pub attempt: AttemptNo,
}

/// What an agent says about itself in every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub id: AgentId,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub queues: Vec<QueueName>,
    /// Steps it runs at once; 0 for an agent in services mode, which has no limit.
    pub slots: u32,
    pub busy: u32,
    #[serde(default)]
    pub draining: bool,
    /// CPUs the agent's machine has (0 when unknown).
    #[serde(default)]
    pub cpus: u32,
    /// Memory of the agent's machine in MiB (0 when unknown).
    #[serde(default)]
    pub memory_mib: u64,
    /// What builds its Python environments and why (`uv on PATH: ...`, `uv 0.13.9 installed
    /// ...: ...`, `pip: ...`); `None` until the agent has chosen, and from older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installer: Option<String>,
    /// Its warm parents' starts and stops (agents of one `drover up` share a pool and report
    /// the same counts).
    #[serde(default, skip_serializing_if = "WarmParents::is_empty")]
    pub warm_parents: WarmParents,
    /// Jobs and cancels it refused, since it started, for an epoch below one it had seen (sent
    /// by a deposed controller).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub refused_stale: u64,
    /// Jobs it dropped when it took them, since it started, because the controller had revoked
    /// them (their steps were aborted while they waited on their queues).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub revoked_dropped: u64,
}

/// Starts of an agent's warm parents, and their stops by reason (`died`, `thread`,
/// `preload_failed`, `fork_failed`, `memory`, `idle`, `shutdown`), since the agent started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmParents {
    #[serde(default)]
    pub started: u64,
    #[serde(default)]
    pub stopped: BTreeMap<String, u64>,
}

impl WarmParents {
    pub fn is_empty(&self) -> bool {
        self.started == 0 && self.stopped.is_empty()
    }
}

/// Agent -> controller, every few seconds: renews the leases of every running attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub agent: AgentInfo,
    pub running: Vec<AttemptRef>,
}

/// Agent -> controller: a piece of an attempt's combined stdout/stderr, raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    pub run_id: RunId,
    pub step: StepName,
    pub attempt: AttemptNo,
    /// Byte offset of `data` in the attempt's log, so duplicates and gaps are detectable.
    pub offset: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    /// Non-zero exit, a missing output, or a Python exception.
    Failed,
    TimedOut,
    Aborted,
    /// The agent could not run the step (download failed, env build failed, ...).
    Error,
    /// The agent stopped the step's processes and handed it back (drained past its drain
    /// timeout): not the step's failure, so the controller dispatches it again at once.
    Released,
}

/// A stored artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub digest: Digest,
    pub size: u64,
    /// File name the producer wrote (the basename of its output path).
    pub file_name: FileName,
}

/// Agent -> controller: an attempt ended; its outputs are uploaded, or carried in
/// [`Finished::inline`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finished {
    pub run_id: RunId,
    pub step: StepName,
    pub attempt: AttemptNo,
    pub agent: AgentId,
    pub outcome: Outcome,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub outputs: BTreeMap<OutputName, ArtifactRef>,
    /// Why it ended when that is not just the exit code.
    #[serde(default)]
    pub message: Option<String>,
    pub started_at: u64,
    pub ended_at: u64,
    /// Where the attempt's log reached the controller late because the broker did not confirm
    /// it (the bytes themselves are unchanged); empty when nothing was held back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log_delays: Vec<LogDelay>,
    /// How a Python function step's process started; absent for command steps and for an
    /// attempt that ended before its process started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<StartKind>,
    /// The attempt's log size in bytes. `Finished` does not wait for the confirm of the log's
    /// last chunks, so it may reach the controller before them: the log is complete once this
    /// many bytes are stored. Absent from agents that sent `Finished` only after their whole
    /// log was confirmed (their log is complete when `Finished` arrives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_size: Option<u64>,
    /// The bytes of the outputs sent inside this message rather than uploaded, by output name;
    /// each is in `outputs` too, with its digest and size. Only as many bytes as the job allowed
    /// ([`StepJob::inline_outputs`]); the controller stores them before it acts on the result.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inline: BTreeMap<OutputName, serde_bytes::ByteBuf>,
}

impl Finished {
    /// Why [`Finished::inline`] is not what a job allowing `most` bytes of it may carry (more
    /// bytes than that, an output `outputs` does not name, or bytes of another size or digest
    /// than its reference), if it is not.
    pub fn inline_mismatch(&self, most: u64) -> Option<String> {
        let carried: u64 = self.inline.values().map(|b| b.len() as u64).sum();
        if carried > most {
            return Some(format!(
                "it carries {carried} bytes of outputs, more than the {most} its job allows"
            ));
        }
        self.inline.iter().find_map(|(name, bytes)| {
            let Some(named) = self.outputs.get(name) else {
                return Some(format!("inline output '{name}' is not among the outputs"));
            };
            if named.size != bytes.len() as u64 {
                return Some(format!(
                    "inline output '{name}' has {} bytes, its reference says {}",
                    bytes.len(),
                    named.size
                ));
            }
            let digest = Digest::of_bytes(bytes);
            (digest != named.digest).then(|| {
                format!(
                    "inline output '{name}' hashes to {digest}, its reference says {}",
                    named.digest
                )
            })
        })
    }
}

/// How a Python function step's process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartKind {
    /// Forked by a warm parent that had already imported the step's modules.
    Warm,
    /// A new interpreter.
    Cold,
}

impl StartKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StartKind::Warm => "warm",
            StartKind::Cold => "cold",
        }
    }
}

/// The bytes of a log from `offset` on reached the broker `delayed_ms` after the step wrote
/// them, because the broker was unreachable; the agent held them back meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogDelay {
    pub offset: u64,
    pub delayed_ms: u64,
}

/// Controller -> one agent (control exchange): stop this attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    pub run_id: RunId,
    pub step: StepName,
    pub attempt: AttemptNo,
    pub reason: String,
    /// The epoch of the controller that published it: with the state journal each controller
    /// that takes over leads with a higher one, and an agent refuses a job or cancel of an epoch
    /// below the highest it has seen. 0: a controller without the journal (or an older one),
    /// which agents neither refuse nor count as seen.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub epoch: u64,
}

/// Controller -> every agent (control exchange, all agents): jobs of these attempts may still
/// wait on their queues, but their steps have ended (aborted), so none of them may run. An
/// agent remembers it for a while, drops such a job when it takes one and stops one it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoke {
    pub run_id: RunId,
    /// One attempt of one step; `None`: every job of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<RevokedStep>,
    pub reason: String,
    /// As [`Cancel::epoch`].
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub epoch: u64,
}

/// The attempt a [`Revoke`] names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedStep {
    pub step: StepName,
    pub attempt: AttemptNo,
}

macro_rules! messages {
    ($($variant:ident($body:ty) = $kind:literal,)*) => {
        /// Every message kind, one variant per body type.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Message {
            $($variant($body),)*
        }

        impl Message {
            /// The `kind` string written in the envelope.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Message::$variant(_) => $kind,)*
                }
            }

            fn encode_body(&self, meta: EnvelopeMeta) -> Result<Vec<u8>, rmp_serde::encode::Error> {
                match self {
                    $(Message::$variant(body) => encode_envelope(meta, $kind, body),)*
                }
            }

            fn decode_body(kind: &str, bytes: &[u8]) -> Result<Message, DecodeError> {
                match kind {
                    $($kind => decode_as::<$body>(kind, bytes).map(Message::$variant),)*
                    other => Err(DecodeError::UnknownKind(other.to_string())),
                }
            }
        }

        $(impl From<$body> for Message {
            fn from(body: $body) -> Message {
                Message::$variant(body)
            }
        })*
    };
}

messages! {
    Submit(Submit) = "submit",
    Abort(Abort) = "abort",
    StepJob(StepJob) = "step_job",
    Claimed(Claimed) = "claimed",
    Heartbeat(Heartbeat) = "heartbeat",
    Log(LogChunk) = "log",
    Finished(Finished) = "finished",
    Cancel(Cancel) = "cancel",
    Revoke(Revoke) = "revoke",
    Events(Events) = "events",
}

/// The envelope fields other than `kind` and `body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeMeta {
    pub v: u16,
    pub id: String,
    pub sent_at: u64,
}

impl EnvelopeMeta {
    /// A fresh id stamped now, at this build's protocol version.
    pub fn fresh() -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id: uuid::Uuid::new_v4().simple().to_string(),
            sent_at: now_ms(),
        }
    }
}

fn encode_envelope<B: Serialize>(
    meta: EnvelopeMeta,
    kind: &str,
    body: &B,
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(&Envelope {
        v: meta.v,
        kind: kind.to_string(),
        id: meta.id,
        sent_at: meta.sent_at,
        body,
    })
}

/// The body of the whole envelope `bytes`, read as `B` (the envelope's other fields were
/// read before, so an error here is the body's).
fn decode_as<B: DeserializeOwned>(kind: &str, bytes: &[u8]) -> Result<B, DecodeError> {
    rmp_serde::from_slice::<Envelope<B>>(bytes)
        .map(|envelope| envelope.body)
        .map_err(|e| DecodeError::InvalidBody {
            kind: kind.to_string(),
            error: e.to_string(),
        })
}

impl Message {
    /// Encodes with a fresh envelope id and timestamp.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        self.encode_with(EnvelopeMeta::fresh())
    }

    /// Encodes with the given envelope fields (golden files pin them).
    pub fn encode_with(&self, meta: EnvelopeMeta) -> Result<Vec<u8>, EncodeError> {
        self.encode_body(meta).map_err(|e| EncodeError {
            kind: self.kind(),
            error: e.to_string(),
        })
    }

    /// Decodes and checks version and kind; the body is validated by its typed fields.
    pub fn decode(bytes: &[u8]) -> Result<(EnvelopeMeta, Message), DecodeError> {
        // Read twice, the body skipped the first time, rather than through a tree of values
        // written out again: a message is small, and the tree's allocations cost more.
        let raw: Envelope<serde::de::IgnoredAny> =
            rmp_serde::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if raw.v != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion(raw.v));
        }
        let message = Message::decode_body(&raw.kind, bytes)?;
        Ok((
            EnvelopeMeta {
                v: raw.v,
                id: raw.id,
                sent_at: raw.sent_at,
            },
            message,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn abort() -> Message {
        Message::Abort(Abort {
            run_id: RunId::generate(),
            step: None,
            reason: Some("user".into()),
        })
    }

    #[test]
    fn round_trips() {
        let msg = abort();
        let (meta, back) = Message::decode(&msg.encode().unwrap()).unwrap();
        assert_eq!(back, msg);
        assert_eq!(meta.v, PROTOCOL_VERSION);
    }

    #[test]
    fn garbage_is_malformed() {
        let err = Message::decode(b"\xc1garbage").unwrap_err();
        assert_eq!(err.code(), "malformed");
    }

    #[test]
    fn unknown_version_is_refused_before_the_body() {
        let mut meta = EnvelopeMeta::fresh();
        meta.v = 99;
        let err = Message::decode(&abort().encode_with(meta).unwrap()).unwrap_err();
        assert_eq!(err, DecodeError::UnsupportedVersion(99));
    }

    #[test]
    fn unknown_kind_and_bad_body_are_named() {
        let bytes = rmp_serde::to_vec_named(&Envelope {
            v: PROTOCOL_VERSION,
            kind: "teleport".into(),
            id: "x".into(),
            sent_at: 0,
            body: 1u8,
        })
        .unwrap();
        assert_eq!(
            Message::decode(&bytes).unwrap_err(),
            DecodeError::UnknownKind("teleport".into())
        );
        let bytes = rmp_serde::to_vec_named(&Envelope {
            v: PROTOCOL_VERSION,
            kind: "abort".into(),
            id: "x".into(),
            sent_at: 0,
            body: "no",
        })
        .unwrap();
        assert_eq!(Message::decode(&bytes).unwrap_err().code(), "invalid_body");
    }

    #[test]
    fn unknown_fields_are_ignored_by_older_readers() {
        #[derive(Serialize)]
        struct NewerAbort<'a> {
            run_id: &'a str,
            step: Option<&'a str>,
            added_later: u32,
        }
        let run = RunId::generate();
        let bytes = rmp_serde::to_vec_named(&Envelope {
            v: PROTOCOL_VERSION,
            kind: "abort".into(),
            id: "x".into(),
            sent_at: 0,
            body: NewerAbort {
                run_id: run.as_str(),
                step: None,
                added_later: 7,
            },
        })
        .unwrap();
        let (_, msg) = Message::decode(&bytes).unwrap();
        assert_eq!(
            msg,
            Message::Abort(Abort {
                run_id: run,
                step: None,
                reason: None
            })
        );
    }
}
