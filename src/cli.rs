//! Command-line flags: the names here are a contract that tests and docs use.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8470";
pub const DEFAULT_URL: &str = "http://127.0.0.1:8470";

#[derive(Parser, Debug)]
#[command(
    name = "drover",
    version,
    about = "Run pipelines on a fleet of agents through RabbitMQ"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// RabbitMQ URL. Repeat it (or separate URLs by whitespace in DROVER_AMQP_URL) to name the
    /// nodes of a cluster: drover connects to the first that answers and moves on to the next
    /// when a connection is lost.
    #[arg(long = "amqp", env = "DROVER_AMQP_URL", default_value = DEFAULT_AMQP_URL, global = true, hide_env_values = true, action = clap::ArgAction::Append)]
    pub amqp_url: Vec<String>,
    /// Base URL of the controller's HTTP API. Repeat it (or separate URLs by whitespace in
    /// DROVER_URL) to name every controller of a namespace: clients use the first that answers
    /// as the active controller, skipping standbys, and send the token, and follow redirects,
    /// to these URLs only.
    #[arg(long, env = "DROVER_URL", default_value = DEFAULT_URL, global = true, action = clap::ArgAction::Append)]
    pub url: Vec<String>,
    /// Token for the controller's HTTP API: the controller requires it, agents and the CLI send it.
    /// Prefer --token-file: a token on a command line is seen by `ps` until drover restarts
    /// itself without it.
    #[arg(long, env = "DROVER_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the token (one line, mode 600): the way to pass it without it ever being
    /// on a command line or in an environment.
    #[arg(long, env = "DROVER_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Namespace: isolates queues of tests or tenants sharing one broker.
    #[arg(long, env = "DROVER_NAMESPACE", default_value = drover_protocol::names::DEFAULT_NAMESPACE, global = true)]
    pub namespace: String,
    /// Configuration file (default: ./drover.toml when it exists); flags and environment
    /// variables override it. See `drover config show`.
    #[arg(long, env = "DROVER_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// More log output (-v, -vv; DROVER_VERBOSE=2); `DROVER_LOG` takes a full filter instead.
    #[arg(short, long, action = clap::ArgAction::Count, env = "DROVER_VERBOSE", global = true)]
    pub verbose: u8,
    /// Largest broker message sent or taken (e.g. 64MiB): a larger submission fails before it
    /// is published, a larger delivery is dead-lettered unread.
    #[arg(long, env = "DROVER_MAX_MESSAGE_SIZE", default_value = "64MiB", value_parser = parse_size, global = true)]
    pub max_message_size: u64,
    /// Kind of the namespace's durable queues: `classic` (one broker node; step priorities
    /// work) or `quorum` (replicated across a RabbitMQ cluster; no step priorities, a delivery
    /// limit). Every process of a namespace must use the same.
    #[arg(
        long,
        env = "DROVER_QUEUE_TYPE",
        default_value = "classic",
        global = true
    )]
    pub queue_type: drover_amqp::QueueType,
    /// Quorum queues only: deliveries of one message (requeues and channels closed with it
    /// unacked count) before the broker dead-letters it.
    #[arg(long, env = "DROVER_DELIVERY_LIMIT", default_value_t = drover_amqp::queues::DEFAULT_DELIVERY_LIMIT, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub delivery_limit: u32,
    /// Whether `--url` was given (flag, environment or file) rather than defaulted.
    #[arg(skip)]
    pub url_given: bool,
}

impl Global {
    /// The broker URLs of every `--amqp` (and of whitespace-separated lists), one space apart:
    /// the form every drover crate takes.
    pub fn amqp(&self) -> String {
        let urls: Vec<&str> = self
            .amqp_url
            .iter()
            .flat_map(|u| u.split_whitespace())
            .collect();
        urls.join(" ")
    }

    /// The controller URLs of every `--url` (and of whitespace-separated lists), in order,
    /// without trailing slashes.
    pub fn urls(&self) -> Vec<String> {
        self.url
            .iter()
            .flat_map(|u| u.split_whitespace())
            .map(|u| u.trim_end_matches('/').to_string())
            .collect()
    }

    /// How the namespace's queues are declared (`--queue-type`, `--delivery-limit`).
    pub fn queues(&self) -> drover_amqp::QueueSettings {
        drover_amqp::QueueSettings {
            kind: self.queue_type,
            delivery_limit: self.delivery_limit,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Controller plus agents in one process: the one-machine setup.
    Up(Box<UpArgs>),
    /// The controller service.
    Controller(ControllerArgs),
    /// An agent daemon serving one or more queues.
    Agent(AgentArgs),
    /// Validate and submit a pipeline file.
    Run(RunArgs),
    /// Submit a run's pipeline again, as it was submitted, with parameters changed.
    Rerun(RerunArgs),
    /// Stop a run (or one step of it).
    Abort(AbortArgs),
    /// Wait for a run (`latest` for the newest) to end, showing progress; exit 0 only if it succeeded.
    Wait(StatusArgs),
    /// List runs, newest first.
    Runs(RunsArgs),
    /// Show a run and its steps.
    Status(StatusArgs),
    /// Print a step's log (raw bytes).
    Logs(LogsArgs),
    /// Artifacts of runs.
    Artifacts {
        #[command(subcommand)]
        command: ArtifactsCommand,
    },
    /// Run a pipeline on a cron cadence, kept by the controller.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Run a pipeline each time a run of another pipeline succeeds (or fails).
    Trigger {
        #[command(subcommand)]
        command: TriggerCommand,
    },
    /// Show the scalars a run's steps reported (last value and count of each series).
    Scalars(ScalarsArgs),
    /// List the tasks registered with the controller (scripts that called Task.init).
    Tasks(TasksArgs),
    /// List agents seen by the controller.
    Agents(ListArgs),
    /// Show queues: waiting messages, consumers, dead letters.
    Queues(ListArgs),
    /// Make an Ed25519 key pair for signing step jobs (--job-signing-key, --job-verify-key).
    Keygen(KeygenArgs),
    /// The effective configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Every setting of the controller, agent and `up`, its value and where it came from
    /// (flag, environment, file, default); secrets masked.
    Show(ListArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Where runs, artifacts and logs are kept.
    #[arg(long, env = "DROVER_DATA_DIR", default_value = "drover-data")]
    pub data_dir: PathBuf,
    /// Address the HTTP API listens on (port 0 picks a free one).
    #[arg(long, env = "DROVER_HTTP", default_value = DEFAULT_HTTP_ADDR)]
    pub http: SocketAddr,
    /// URL agents and users reach the HTTP API at (default: http://<http address>).
    #[arg(long, env = "DROVER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// How long a running step may go without a heartbeat before it is retried elsewhere.
    #[arg(long, env = "DROVER_LEASE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease: std::time::Duration,
    /// At most N steps of QUEUE queued or running at once across all agents, e.g. `gpu=2`
    /// (repeatable; comma-separated in the variable).
    #[arg(long = "queue-limit", env = "DROVER_QUEUE_LIMIT", value_name = "QUEUE=N", value_delimiter = ',', value_parser = parse_queue_limit)]
    pub queue_limits: Vec<(String, u32)>,
    /// How many times a step whose agent was lost (no heartbeat within the lease) is dispatched
    /// again without counting against its `retries`; one more lost attempt fails the step.
    #[arg(long, env = "DROVER_MAX_LOST_ATTEMPTS", default_value_t = drover_controller::config::DEFAULT_MAX_LOST_ATTEMPTS)]
    pub max_lost_attempts: u32,
    /// A second token that allows reading only (GET and HEAD), e.g. for dashboards; needs
    /// --token.
    #[arg(long, env = "DROVER_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,
    /// Serve the HTTP API on a non-loopback address without --token (anyone reaching it can
    /// read artifacts and abort runs).
    #[arg(long, env = "DROVER_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,
    /// Where artifacts live: `local` (<data-dir>/blobs, moved through the HTTP API) or
    /// `s3://bucket[/prefix]` (agents move them straight to the bucket; credentials from AWS_*).
    #[arg(long, env = "DROVER_ARTIFACT_STORE", default_value = "local")]
    pub artifact_store: drover_storage::StoreLocation,
    /// The S3 API endpoint of an S3-compatible server (MinIO, Ceph, ...); default: AWS.
    #[arg(long, env = "DROVER_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Bytes of a step's log stored per attempt (e.g. 256MiB); the rest is dropped after a
    /// marker line. Under `up` also the agents' cap.
    #[arg(long, env = "DROVER_MAX_LOG_SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub max_log_size: u64,
    /// Largest artifact the HTTP API accepts (e.g. 10GiB); a larger upload is refused.
    #[arg(long, env = "DROVER_MAX_ARTIFACT_SIZE", default_value = "10GiB", value_parser = parse_size)]
    pub max_artifact_size: u64,
    /// Free space an upload must leave on the data dir's file system, or it is refused.
    #[arg(long, env = "DROVER_MIN_FREE_SPACE", default_value = "1GiB", value_parser = parse_size)]
    pub min_free_space: u64,
    /// Most steps a pipeline may have; a larger one is rejected with the reason.
    #[arg(long, env = "DROVER_MAX_STEPS", default_value_t = drover_controller::config::DEFAULT_MAX_STEPS)]
    pub max_steps: usize,
    /// Sign every step job with this Ed25519 private key (PKCS#8 PEM, mode 600; `drover
    /// keygen` makes one); agents with the public key run signed jobs only. Under `up`, its
    /// agents check the signatures too.
    #[arg(long, env = "DROVER_JOB_SIGNING_KEY")]
    pub job_signing_key: Option<PathBuf>,
    /// Also keep every state change in the RabbitMQ stream `<ns>.journal` (`stream`), confirmed
    /// before anything that follows from it is published, and rebuild an empty data dir's
    /// state from it at start; `off`: the data dir only.
    #[arg(long, env = "DROVER_STATE_JOURNAL", default_value = "off")]
    pub state_journal: drover_controller::config::StateJournal,
    /// With the journal: write a snapshot of the whole state to the stream `<ns>.snapshot`
    /// after this many bytes of journal, so a takeover or a new data dir replays only the
    /// journal after the latest one; 0: never. At most a quarter of the journal's size bound
    /// (4GiB).
    #[arg(long, env = "DROVER_STATE_SNAPSHOT_EVERY", default_value = "64MiB", value_parser = parse_size)]
    pub state_snapshot_every: u64,
}

#[derive(Args, Debug, Clone)]
pub struct AgentOptions {
    /// Queues to serve, in order of preference; `NAME:N` runs at most N steps from that queue
    /// at once (`--queue gpu:1 --queue default`).
    #[arg(
        long = "queue",
        short = 'q',
        env = "DROVER_QUEUES",
        value_delimiter = ',',
        default_value = "default"
    )]
    pub queues: Vec<String>,
    /// Steps run at once per agent: a number, or `auto` for the CPU count.
    #[arg(long, env = "DROVER_CONCURRENCY", default_value = "auto")]
    pub concurrency: Concurrency,
    /// Take jobs from the queues in turn instead of always from the first queue with work
    /// (ClearML's --order-fairness).
    #[arg(long, env = "DROVER_ORDER_FAIRNESS")]
    pub order_fairness: bool,
    /// Services mode: run every job as it arrives, with no slot limit (long-lived steps such as
    /// servers or pipeline drivers); per-queue limits (`NAME:N`) still hold.
    #[arg(long, env = "DROVER_SERVICES_MODE")]
    pub services_mode: bool,
    /// Keep each step's workdir after it ends (for debugging).
    #[arg(long, env = "DROVER_KEEP_WORKDIRS")]
    pub keep_workdirs: bool,
    /// How Python function steps get their interpreter.
    #[arg(long, value_enum, env = "DROVER_PYTHON_ENV", default_value = "venv")]
    pub python_env: PythonEnv,
    /// Interpreter that Python environments are built from.
    #[arg(long, env = "DROVER_PYTHON", default_value = "python3")]
    pub python: String,
    /// The longest one Python environment build (uv or pip) may take; the step that needed it
    /// ends with an error past it.
    #[arg(long, env = "DROVER_PYTHON_BUILD_TIMEOUT", default_value = "15m", value_parser = humantime::parse_duration)]
    pub python_build_timeout: std::time::Duration,
    /// Start Python function steps from a warm parent per environment, which has imported what
    /// the environment's steps import, instead of a new interpreter each (`off`: always cold).
    #[arg(long, value_enum, env = "DROVER_PYTHON_PREWARM", default_value = "on")]
    pub python_prewarm: OnOff,
    /// The resident memory all warm parents may hold together; past it the least recently
    /// used ones are stopped.
    #[arg(long, env = "DROVER_PYTHON_PREWARM_MEMORY", default_value = "2GiB", value_parser = parse_size)]
    pub python_prewarm_memory: u64,
    /// A warm parent unused this long is stopped.
    #[arg(long, env = "DROVER_PYTHON_PREWARM_IDLE", default_value = "10m", value_parser = humantime::parse_duration)]
    pub python_prewarm_idle: std::time::Duration,
    /// Top-level modules warm parents never preload (comma-separated), on top of those known
    /// to start threads or initialise devices when imported (torch, tensorflow, jax, ...).
    #[arg(long, env = "DROVER_PYTHON_PREWARM_EXCLUDE", value_delimiter = ',')]
    pub python_prewarm_exclude: Vec<String>,
    /// Bytecode shared by every Python environment and agent of this user on the machine,
    /// keyed by each source file's content, so a new environment starts with the bytecode of
    /// what earlier ones imported: `auto` (`$XDG_CACHE_HOME/drover/bytecode`, else
    /// `~/.cache/drover/bytecode`, beside uv's download cache), a directory, or `off`.
    #[arg(long, env = "DROVER_PYTHON_BYTECODE_CACHE", default_value = "auto")]
    pub python_bytecode_cache: String,
    /// Past this size the bytecode cache's least recently used entries are removed.
    #[arg(long, env = "DROVER_PYTHON_BYTECODE_CACHE_SIZE", default_value = "1GiB", value_parser = parse_size)]
    pub python_bytecode_cache_size: u64,
    /// How long a draining agent waits for running steps before killing them.
    #[arg(long, env = "DROVER_DRAIN_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub drain_timeout: std::time::Duration,
    /// Run steps as this user (name or uid) instead of the agent's: their workdirs become its,
    /// the shared Python environments stay read-only to it. Needs root (or CAP_SETUID,
    /// CAP_SETGID, CAP_CHOWN and CAP_DAC_OVERRIDE).
    #[arg(long, env = "DROVER_RUN_AS")]
    pub run_as: Option<String>,
    /// How artifacts travel when the controller keeps them in a bucket.
    #[arg(
        long,
        value_enum,
        env = "DROVER_ARTIFACT_TRANSFER",
        default_value = "direct"
    )]
    pub artifact_transfer: ArtifactTransfer,
    /// How processes a step leaves behind, even outside its process group (`setsid`), are
    /// killed at the attempt's end: `auto` uses a cgroup per attempt when the agent's cgroup is
    /// writable (systemd: `Delegate=yes`), else the subreaper sweep.
    #[arg(long, value_enum, env = "DROVER_STEP_CLEANUP", default_value = "auto")]
    pub step_cleanup: StepCleanup,
    /// Run only jobs signed by the controller's key: this is its Ed25519 public key (PEM, from
    /// `drover keygen`); unsigned or wrongly signed jobs are dead-lettered, never run.
    #[arg(long, env = "DROVER_JOB_VERIFY_KEY")]
    pub job_verify_key: Option<PathBuf>,
}

/// `--concurrency`: a number of slots, or `auto` (the CPU count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    Auto,
    Slots(u32),
}

impl Concurrency {
    /// The slots this stands for.
    pub fn slots(self) -> u32 {
        match self {
            Concurrency::Auto => cpu_count(),
            Concurrency::Slots(n) => n,
        }
    }

    /// "4 slot(s)", or "2 slot(s) (auto: the CPU count)".
    pub fn describe(self) -> String {
        match self {
            Concurrency::Auto => format!("{} slot(s) (auto: the CPU count)", self.slots()),
            Concurrency::Slots(n) => format!("{n} slot(s)"),
        }
    }
}

/// The CPUs this process may run on (affinity and cgroup quota included), at least 1.
pub fn cpu_count() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

impl std::str::FromStr for Concurrency {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.eq_ignore_ascii_case("auto") {
            return Ok(Concurrency::Auto);
        }
        match text.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(Concurrency::Slots(n)),
            _ => Err(format!(
                "{text:?} is not a number of slots: give a whole number of at least 1, or `auto` for the CPU count"
            )),
        }
    }
}

impl std::fmt::Display for Concurrency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Concurrency::Auto => f.write_str("auto"),
            Concurrency::Slots(n) => write!(f, "{n}"),
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepCleanup {
    /// A cgroup per attempt when possible, else the subreaper sweep.
    Auto,
    /// A cgroup v2 per attempt, killed whole; refuse to start without one.
    Cgroup,
    /// The agent as child subreaper, sweeping what left the step's session.
    Subreaper,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactTransfer {
    /// Straight to and from the bucket jobs name (credentials from AWS_*).
    Direct,
    /// Always through the controller's HTTP API (hosts that cannot reach the bucket).
    Controller,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PythonEnv {
    /// One cached virtualenv per requirements set.
    Venv,
    /// The agent's own interpreter.
    System,
}

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    #[command(flatten)]
    pub options: AgentOptions,
    /// Parent directory of per-step workdirs.
    #[arg(long, env = "DROVER_WORK_DIR", default_value = "drover-work")]
    pub work_dir: PathBuf,
    /// Agent id (default: <host>-<pid>-<random>).
    #[arg(long, env = "DROVER_AGENT_ID")]
    pub id: Option<String>,
    /// The S3 endpoint as this host reaches it (default: the one the controller names in jobs).
    #[arg(long, env = "DROVER_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Bytes of a step's log kept per attempt (e.g. 256MiB); past it the log ends with a
    /// marker line and the rest of the output is read and dropped.
    #[arg(long, env = "DROVER_MAX_LOG_SIZE", default_value = "256MiB", value_parser = parse_size)]
    pub max_log_size: u64,
}

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    #[command(flatten)]
    pub controller: ControllerArgs,
    #[command(flatten)]
    pub agent: AgentOptions,
    /// Number of in-process agents.
    #[arg(long, env = "DROVER_AGENTS", default_value_t = 1)]
    pub agents: u32,
}

#[derive(Args, Debug, Clone)]
pub struct KeygenArgs {
    /// Where the private key goes (PKCS#8 PEM, created mode 600; the controller's
    /// --job-signing-key). An existing file is not overwritten.
    #[arg(long, default_value = "job-signing.pem")]
    pub private: PathBuf,
    /// Where the public key goes (PEM; the agents' --job-verify-key).
    #[arg(long, default_value = "job-verify.pem")]
    pub public: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The pipeline file (TOML).
    pub file: PathBuf,
    /// Override a parameter: --param name=value (repeatable).
    #[arg(long = "param", short = 'p', value_parser = parse_key_value)]
    pub params: Vec<(String, String)>,
    /// The queue the controller listens on.
    #[arg(long, default_value = drover_protocol::names::SERVICES_QUEUE)]
    pub queue: String,
    /// Wait for the run to end, showing progress; exit 0 only if it succeeded.
    #[arg(long)]
    pub wait: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

#[derive(Args, Debug, Clone)]
pub struct RerunArgs {
    /// The run to submit again (`latest` for the newest).
    pub run: String,
    /// Change a parameter: --param name=value (repeatable); the others keep the run's values.
    #[arg(long = "param", short = 'p', value_parser = parse_key_value)]
    pub params: Vec<(String, String)>,
    /// Wait for the new run to end, showing progress; exit 0 only if it succeeded.
    #[arg(long)]
    pub wait: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct RunsArgs {
    /// Only runs with this status (running, succeeded, failed, aborted, rejected).
    #[arg(long)]
    pub status: Option<String>,
    /// Only runs of this project.
    #[arg(long)]
    pub project: Option<String>,
    /// Only runs of the pipeline with this name.
    #[arg(long)]
    pub name: Option<String>,
    /// At most this many runs (1 to 1000).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct AbortArgs {
    /// The run (`latest` for the newest).
    pub run: String,
    /// Abort only this step.
    pub step: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct TasksArgs {
    #[arg(long)]
    pub json: bool,
    /// Only the tasks of this project.
    #[arg(long)]
    pub project: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    /// The run (`latest` for the newest).
    pub run: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct LogsArgs {
    /// The run (`latest` for the newest).
    pub run: String,
    pub step: String,
    /// Keep printing as the step writes, until it ends.
    #[arg(short, long)]
    pub follow: bool,
    /// Which attempt (default: the latest).
    #[arg(long)]
    pub attempt: Option<u32>,
}

#[derive(Args, Debug, Clone)]
pub struct ScalarsArgs {
    /// The run (`latest` for the newest).
    pub run: String,
    /// Only this step's scalars.
    pub step: Option<String>,
    /// Print the stored points as JSON (`ScalarList`).
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ArtifactsCommand {
    /// List a run's artifacts (of one step, if given): step, name, file, size and digest.
    List {
        /// The run (`latest` for the newest).
        run: String,
        step: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Download an artifact.
    Get {
        /// The run (`latest` for the newest).
        run: String,
        step: String,
        name: String,
        /// Output file (`-` for stdout; default: the artifact's file name).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Add a schedule: the pipeline of FILE (read now) or of --from RUN, on the cron cadence.
    Add(ScheduleAddArgs),
    /// Schedules with their last and next firing.
    List(ListArgs),
    /// Remove a schedule (its runs stay).
    Remove { name: String },
    /// Stop firing until resumed.
    Pause { name: String },
    /// Fire again from the next slot (slots passed while paused are not made up).
    Resume { name: String },
    /// Submit the schedule's pipeline now, outside its cadence.
    RunNow {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

/// Where a schedule's or trigger's pipeline comes from.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct PipelineFrom {
    /// The pipeline file (TOML), read when the command runs.
    pub file: Option<PathBuf>,
    /// The pipeline of this run, as it was submitted (`latest` for the newest; the only way
    /// for Python pipelines), with its parameter values.
    #[arg(long = "from", value_name = "RUN")]
    pub from_run: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ScheduleAddArgs {
    pub name: String,
    /// Five fields (minute hour day-of-month month day-of-week, e.g. "0 2 * * *") or six
    /// with seconds first ("*/30 * * * * *").
    #[arg(long)]
    pub cron: String,
    #[command(flatten)]
    pub from: PipelineFrom,
    /// Set a parameter for every run: --param name=value (repeatable).
    #[arg(long = "param", short = 'p', value_parser = parse_key_value)]
    pub params: Vec<(String, String)>,
    /// The IANA time zone the cron fields are read in (default UTC), e.g. Europe/Paris.
    #[arg(long)]
    pub timezone: Option<String>,
    /// Fire even while the schedule's previous run is unfinished (default: skip that slot).
    #[arg(long)]
    pub overlap: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum TriggerCommand {
    /// Add a trigger: the pipeline of FILE (read now) or of --from RUN runs after each run of
    /// the upstream pipeline that succeeded (or failed), with that run's id as a parameter.
    Add(TriggerAddArgs),
    /// Triggers and what they fired.
    List(ListArgs),
    /// Remove a trigger (its runs stay).
    Remove { name: String },
}

#[derive(Args, Debug, Clone)]
#[command(group = clap::ArgGroup::new("upstream").required(true).multiple(false))]
pub struct TriggerAddArgs {
    pub name: String,
    /// Fire when a run of PROJECT/PIPELINE succeeds.
    #[arg(long, value_name = "PROJECT/PIPELINE", group = "upstream")]
    pub on_success: Option<String>,
    /// Fire when a run of PROJECT/PIPELINE fails.
    #[arg(long, value_name = "PROJECT/PIPELINE", group = "upstream")]
    pub on_failure: Option<String>,
    #[command(flatten)]
    pub from: PipelineFrom,
    /// The downstream parameter that receives the upstream run's id; the pipeline must
    /// declare it.
    #[arg(long, default_value = "trigger_run")]
    pub param_name: String,
    /// Set a parameter for every run: --param name=value (repeatable).
    #[arg(long = "param", short = 'p', value_parser = parse_key_value)]
    pub params: Vec<(String, String)>,
    #[arg(long)]
    pub json: bool,
}

/// A size in bytes: a whole number with an optional binary unit (`K`/`KiB`, `M`/`MiB`,
/// `G`/`GiB`, `T`/`TiB`; `B` for bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?}; use bytes or K, M, G, T (KiB, MiB, GiB, TiB)"
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a whole number of bytes, e.g. 256MiB"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// `QUEUE=N` for `--queue-limit`.
fn parse_queue_limit(text: &str) -> Result<(String, u32), String> {
    let (queue, n) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected QUEUE=N, e.g. gpu=2"))?;
    drover_protocol::QueueName::new(queue.trim()).map_err(|e| e.to_string())?;
    let n: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: N must be a whole number"))?;
    if n == 0 {
        return Err(format!(
            "{text:?}: a limit of 0 would never run the queue's steps"
        ));
    }
    Ok((queue.trim().to_string(), n))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("3 kib"), Ok(3 << 10));
        for bad in ["", "MiB", "1.5G", "-1", "2 GB", "99999999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
