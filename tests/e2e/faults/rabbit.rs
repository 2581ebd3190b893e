//! A private RabbitMQ node for tests that stop and start the broker without disturbing the
//! shared one on 5672 (other tests run against it in parallel). Nodes started here run as the
//! `rabbitmq` user (Debian's wrapper switches to it), so they share its Erlang cookie and may
//! join each other in a cluster (see `cluster`). A node runs in the foreground as a child of
//! the test, its output in `<dir>/server.out`: what it prints before its log file is set up (a
//! distribution port taken, say) is kept, and a node that exits while starting is seen at once.

use crate::harness::wait_until;
use drover_test_support::Check;
use drover_test_support::ready::{free_ports, listening, not_listening};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a node may take to start or to listen: a bound for a node that hangs, far above
/// what a node takes on a loaded machine (see `cluster`).
const START_PATIENCE: Duration = Duration::from_secs(180);

/// How often a node that exits while starting is started again, on new ports.
const RESTARTS: usize = 2;

pub struct PrivateBroker {
    pub node: String,
    pub port: u16,
    /// The Erlang distribution port (`RABBITMQ_DIST_PORT`).
    dist_port: u16,
    dir: PathBuf,
    /// The extra `rabbitmq.conf` lines and `advanced.config` it was launched with.
    conf: String,
    advanced: Option<String>,
    /// `rabbitmq-server` in the foreground (through Debian's wrapper and `su`).
    server: Mutex<Child>,
}

impl PrivateBroker {
    /// Starts a node on a free loopback port with its own data, logs and no plugins.
    pub fn start() -> Self {
        Self::start_with("", None)
    }

    /// [`PrivateBroker::start`] with extra `rabbitmq.conf` lines and an optional
    /// `advanced.config` (Erlang terms). Returns once the node listens and `rabbitmqctl` counts
    /// its app as running: a node listens on its AMQP port a moment before the latter, and
    /// commands such as `list_vhosts` fail in between.
    pub fn start_with(conf: &str, advanced: Option<&str>) -> Self {
        let broker = Self::launch(conf, advanced).started();
        broker.wait_listening();
        broker
    }

    /// This node once it answers `await_startup`. A node whose server exited while starting
    /// is launched again on new ports (they were free when picked, but another process may
    /// bind one before the node does), up to [`RESTARTS`] times, each exit printed with the
    /// node's output and log.
    pub fn started(self) -> Self {
        let mut node = self;
        for _ in 0..RESTARTS {
            match node.try_await_startup() {
                Ok(()) => return node,
                Err(StartFailure::Exited(e)) => {
                    eprintln!("{e}; starting a new node\n{}", node.diagnostics());
                    node = Self::launch(&node.conf, node.advanced.as_deref());
                }
                Err(e @ StartFailure::Slow(_)) => panic!("{e}\n{}", node.diagnostics()),
            }
        }
        node.await_startup();
        node
    }

    /// Starts a node (`rabbitmq-server`, in the background) without waiting for it to listen.
    pub fn launch(conf: &str, advanced: Option<&str>) -> Self {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let dir = std::env::temp_dir().join(format!("drover-rabbit-{tag}"));
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub)).expect("broker dirs");
        }
        let ports = free_ports(2).expect("free ports");
        let (port, dist_port) = (ports[0], ports[1]);
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\nloopback_users = none\n{conf}"),
        )
        .expect("rabbitmq.conf");
        if let Some(advanced) = advanced {
            std::fs::write(dir.join("advanced.config"), advanced).expect("advanced.config");
        }
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("enabled_plugins");
        // Debian's wrapper runs the server as the rabbitmq user when started by root.
        let _ = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .status();
        let node = format!("drover{tag}@localhost");
        let out = std::fs::File::create(dir.join("server.out")).expect("server.out");
        let err = out.try_clone().expect("server.out");
        let server = Self::command(&dir, &node, port, dist_port)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("run rabbitmq-server");
        Self {
            node,
            port,
            dist_port,
            dir,
            conf: conf.to_string(),
            advanced: advanced.map(str::to_string),
            server: Mutex::new(server),
        }
    }

    fn command(d: &Path, node: &str, port: u16, dist_port: u16) -> Command {
        let mut cmd = Command::new("rabbitmq-server");
        cmd.env("RABBITMQ_NODENAME", node)
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .env("RABBITMQ_FEATURE_FLAGS_FILE", d.join("feature_flags"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d.join("advanced.config"))
            // Else a node that dies while starting dumps into the wrapper's working directory,
            // /var/lib/rabbitmq, shared by every node.
            .env("ERL_CRASH_DUMP", d.join("erl_crash.dump"))
            .current_dir(d);
        cmd
    }

    /// `rabbitmqctl -n NODE args...`, which must succeed; its standard output.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self.try_ctl(args);
        out.unwrap_or_else(|e| panic!("rabbitmqctl -n {} {args:?}: {e}", self.node))
    }

    /// `rabbitmqctl -n NODE args...`: its standard output, or its error output on failure.
    pub fn try_ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("rabbitmqctl")
            .args(["-n", &self.node])
            .args(args)
            .output()
            .map_err(|e| format!("cannot run rabbitmqctl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Waits until the node answers `await_startup` (retried: right after its start the node
    /// may not be registered yet, and the command fails at once); panics with the node's output
    /// and log when it exits or does not answer in time.
    pub fn await_startup(&self) {
        self.try_await_startup()
            .unwrap_or_else(|e| panic!("{e}\n{}", self.diagnostics()));
    }

    /// [`PrivateBroker::await_startup`], with the failure returned: whether the node exited
    /// (`Exited`) or did not answer in time.
    fn try_await_startup(&self) -> Result<(), StartFailure> {
        let started = Instant::now();
        let mut last = String::from("not asked yet");
        while started.elapsed() < START_PATIENCE {
            if let Some(status) = self.exited() {
                return Err(StartFailure::Exited(format!(
                    "node {} (AMQP port {}, distribution port {}) exited while starting ({status}) after {:.1} s",
                    self.node,
                    self.port,
                    self.dist_port,
                    started.elapsed().as_secs_f64()
                )));
            }
            match self.try_ctl(&["await_startup", "--timeout", "10"]) {
                Ok(_) => return Ok(()),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(StartFailure::Slow(format!(
            "node {} did not start within {START_PATIENCE:?}; rabbitmqctl await_startup said: {last}",
            self.node
        )))
    }

    /// `Some(status)` once the `rabbitmq-server` process has exited.
    fn exited(&self) -> Option<std::process::ExitStatus> {
        let mut server = self.server.lock().unwrap_or_else(|e| e.into_inner());
        server.try_wait().ok().flatten()
    }

    /// The tails of the node's output and log, for a failure message.
    pub fn diagnostics(&self) -> String {
        let tail = |path: PathBuf| {
            let text =
                std::fs::read_to_string(&path).unwrap_or_else(|e| format!("(cannot read: {e})"));
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(30);
            format!("--- {}:\n{}", path.display(), lines[from..].join("\n"))
        };
        format!(
            "{}\n{}",
            tail(self.dir.join("server.out")),
            tail(self.dir.join("log").join(format!("{}.log", self.node)))
        )
    }

    /// The operating system pid of the node's Erlang VM, from the pid file the node writes
    /// while it starts (asking through `rabbitmqctl` takes seconds under load).
    pub fn os_pid(&self) -> i32 {
        let path = self.dir.join("pid");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: cannot read {}: {e}", self.node, path.display()));
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{}: not a pid in {}: {text:?}", self.node, path.display()))
    }

    fn wait_listening(&self) {
        let waited = drover_test_support::eventually(
            drover_test_support::Deadline::new("the private broker to listen", START_PATIENCE),
            || match (self.exited(), listening(("127.0.0.1", self.port))) {
                (_, Ok(())) => Check::Ready(()),
                (Some(status), Err(_)) => {
                    Check::Failed(format!("rabbitmq-server exited: {status}"))
                }
                (None, Err(e)) => Check::NotYet(e),
            },
        );
        if let Err(e) = waited {
            panic!("node {}: {e}\n{}", self.node, self.diagnostics());
        }
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Stops the RabbitMQ application: every connection is closed, the node keeps its data.
    pub fn stop_app(&self) {
        self.ctl(&["stop_app"]);
        wait_until(
            "the private broker to stop listening",
            Duration::from_secs(30),
            || not_listening(("127.0.0.1", self.port)),
        );
    }

    pub fn start_app(&self) {
        self.ctl(&["start_app"]);
        self.wait_listening();
    }
}

/// Why a node did not start.
#[derive(Debug)]
enum StartFailure {
    /// Its `rabbitmq-server` exited (a port taken since it was picked, say).
    Exited(String),
    /// It did not answer within [`START_PATIENCE`].
    Slow(String),
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exited(e) | Self::Slow(e) => f.write_str(e),
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-n", &self.node, "stop"])
            .output();
        let server = self.server.get_mut().unwrap_or_else(|e| e.into_inner());
        let stopped = Instant::now();
        while server.try_wait().ok().flatten().is_none() {
            if stopped.elapsed() > Duration::from_secs(30) {
                let _ = server.kill();
                let _ = server.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
