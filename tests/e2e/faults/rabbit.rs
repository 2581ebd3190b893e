//! A private RabbitMQ node for tests that stop and start the broker without disturbing the
//! shared one on 5672 (other tests run against it in parallel). Nodes started here run as the
//! `rabbitmq` user (Debian's wrapper switches to it), so they share its Erlang cookie and may
//! join each other in a cluster (see `cluster`).

use crate::harness::wait_until;
use drover_test_support::ready::{free_port, listening, not_listening};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub struct PrivateBroker {
    pub node: String,
    pub port: u16,
    dir: PathBuf,
}

impl PrivateBroker {
    /// Starts a node on a free loopback port with its own data, logs and no plugins.
    pub fn start() -> Self {
        Self::start_with("", None)
    }

    /// [`PrivateBroker::start`] with extra `rabbitmq.conf` lines and an optional
    /// `advanced.config` (Erlang terms).
    pub fn start_with(conf: &str, advanced: Option<&str>) -> Self {
        let broker = Self::launch(conf, advanced);
        broker.wait_listening();
        broker
    }

    /// Starts a node (`rabbitmq-server -detached`) without waiting for it to listen.
    pub fn launch(conf: &str, advanced: Option<&str>) -> Self {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let dir = std::env::temp_dir().join(format!("drover-rabbit-{tag}"));
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub)).expect("broker dirs");
        }
        let port = free_port().expect("a free port");
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
        let broker = Self {
            node: format!("drover{tag}@localhost"),
            port,
            dir,
        };
        let status = broker
            .command("rabbitmq-server")
            .arg("-detached")
            .status()
            .expect("run rabbitmq-server");
        assert!(status.success(), "rabbitmq-server -detached: {status}");
        broker
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let d = &self.dir;
        cmd.env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env(
                "RABBITMQ_DIST_PORT",
                free_port().expect("a free port").to_string(),
            )
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .env("RABBITMQ_FEATURE_FLAGS_FILE", d.join("feature_flags"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d.join("advanced.config"))
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

    /// Waits until the node answers `await_startup` (retried: right after `-detached` the node
    /// may not be registered yet, and the command fails at once).
    pub fn await_startup(&self) {
        wait_until(
            "the private broker to start",
            Duration::from_secs(120),
            || {
                self.try_ctl(&["await_startup", "--timeout", "10"])
                    .map(|_| ())
            },
        );
    }

    /// The operating system pid of the node's Erlang VM.
    pub fn os_pid(&self) -> i32 {
        let out = self.ctl(&["eval", "list_to_integer(os:getpid())."]);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{}: not a pid: {out:?}", self.node))
    }

    fn wait_listening(&self) {
        wait_until(
            "the private broker to listen",
            Duration::from_secs(90),
            || listening(("127.0.0.1", self.port)),
        );
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

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-n", &self.node, "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
