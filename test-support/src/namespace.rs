//! A namespace of its own on the shared broker for every test and benchmark, so they can run in
//! parallel: a fresh name, the environment that points a `drover` command at it, and the
//! deletion of its queues afterwards.

use drover_amqp::{Broker, redact};
use drover_protocol::{Names, QueueName};
use std::process::Command;

/// The shared broker (`scripts/ensure-rabbitmq.sh` starts it).
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A namespace no other test uses: `prefix` and 12 random hex digits.
pub fn fresh_namespace(prefix: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &random[..12])
}

/// Points a `drover` command at namespace `ns` on `amqp`, and at the controller `url` when one
/// is known (empty otherwise); a `DROVER_DATA_DIR` of the caller's environment is not passed on.
pub fn drover_env<'c>(cmd: &'c mut Command, ns: &str, amqp: &str, url: &str) -> &'c mut Command {
    cmd.env("DROVER_NAMESPACE", ns)
        .env("DROVER_AMQP_URL", amqp)
        .env_remove("DROVER_DATA_DIR");
    if !url.is_empty() {
        cmd.env("DROVER_URL", url);
    }
    cmd
}

/// The namespace's queues could not be deleted.
#[derive(Debug, thiserror::Error)]
#[error("cannot delete namespace {ns} on {broker}: {reason}")]
pub struct CleanupError {
    pub ns: String,
    pub broker: String,
    pub reason: String,
}

/// Deletes the queues of namespace `ns` (services, events, dead letters, control) and the user
/// queues named in `user_queues` (invalid names are skipped).
pub async fn delete_namespace(
    amqp_url: &str,
    ns: &str,
    user_queues: &[impl AsRef<str>],
) -> Result<(), CleanupError> {
    let failed = |reason: String| CleanupError {
        ns: ns.to_string(),
        broker: redact(amqp_url),
        reason,
    };
    let names = Names::new(ns).map_err(|e| failed(e.to_string()))?;
    let queues: Vec<QueueName> = user_queues
        .iter()
        .filter_map(|q| QueueName::new(q.as_ref()).ok())
        .collect();
    let broker = Broker::connect(amqp_url, names, "test cleanup")
        .await
        .map_err(|e| failed(e.to_string()))?;
    let deleted = broker.delete_namespace(&queues).await;
    broker.close().await;
    deleted.map_err(|e| failed(e.to_string()))
}

/// [`delete_namespace`] from synchronous code (a `Drop`), on a runtime of its own.
pub fn delete_namespace_blocking(
    amqp_url: &str,
    ns: &str,
    user_queues: &[impl AsRef<str>],
) -> Result<(), CleanupError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CleanupError {
            ns: ns.to_string(),
            broker: redact(amqp_url),
            reason: format!("no runtime: {e}"),
        })?;
    runtime.block_on(delete_namespace(amqp_url, ns, user_queues))
}

/// Closes, from the shared broker's side (`rabbitmqctl close_connection`), every connection
/// whose client properties contain `name` (drover names a connection `drover <client> (<ns>)`,
/// so a test's namespace picks its own); returns how many it closed.
pub fn close_connections(name: &str) -> usize {
    let listed = Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    let pids: Vec<&str> = listed
        .lines()
        .filter(|line| line.contains(name))
        .filter_map(|line| line.split('\t').next())
        .collect();
    for pid in &pids {
        let closed = Command::new("rabbitmqctl")
            .args(["-q", "close_connection", pid, "closed by a test"])
            .status();
        assert!(
            closed.as_ref().is_ok_and(|s| s.success()),
            "rabbitmqctl close_connection {pid}: {closed:?}"
        );
    }
    pids.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fresh_namespaces_differ_and_are_valid_names() {
        let a = fresh_namespace("t");
        let b = fresh_namespace("t");
        assert_ne!(a, b);
        assert_eq!(a.len(), 13);
        Names::new(&a).unwrap();
    }

    #[test]
    fn drover_env_points_at_the_namespace_and_drops_the_data_dir() {
        let mut cmd = Command::new("true");
        drover_env(&mut cmd, "tx", AMQP_URL, "");
        let envs: Vec<(String, Option<String>)> = cmd
            .get_envs()
            .map(|(k, v)| {
                let k = k.to_string_lossy().into_owned();
                (k, v.map(|v| v.to_string_lossy().into_owned()))
            })
            .collect();
        assert!(envs.contains(&("DROVER_NAMESPACE".into(), Some("tx".into()))));
        assert!(envs.contains(&("DROVER_DATA_DIR".into(), None)));
        assert!(!envs.iter().any(|(k, _)| k == "DROVER_URL"));
        drover_env(&mut cmd, "tx", AMQP_URL, "http://127.0.0.1:1");
        assert!(
            cmd.get_envs()
                .any(|(k, v)| k == "DROVER_URL" && v.is_some_and(|v| v == "http://127.0.0.1:1"))
        );
    }

    /// Against the shared broker: the namespace's queues exist, then are gone.
    #[tokio::test]
    async fn delete_namespace_removes_the_queues() {
        let ns = fresh_namespace("tsup");
        let names = Names::new(&ns).unwrap();
        let broker =
            Broker::connect_with_retry(AMQP_URL, names.clone(), "test", Duration::from_secs(10))
                .await
                .expect("RabbitMQ on 127.0.0.1:5672 (scripts/ensure-rabbitmq.sh)");
        broker.declare_topology().await.unwrap();
        let jobs = QueueName::new("jobs").unwrap();
        broker.declare_user_queue(&jobs).await.unwrap();
        let exists = |queue: String| {
            let broker = &broker;
            async move { broker.queue_stats(&queue).await.unwrap().is_some() }
        };
        assert!(exists(names.user_queue(&jobs)).await);
        assert!(exists(names.services()).await);

        delete_namespace(AMQP_URL, &ns, &["jobs", "not a queue name"])
            .await
            .unwrap();
        assert!(!exists(names.user_queue(&jobs)).await);
        assert!(!exists(names.services()).await);
        assert!(!exists(names.events()).await);
        broker.close().await;
    }

    #[test]
    fn an_unreachable_broker_is_named_without_its_password() {
        let port = crate::ready::free_port().unwrap();
        let url = format!("amqp://guest:secret@127.0.0.1:{port}/%2f");
        let err = delete_namespace_blocking(&url, "tsup", &["jobs"]).unwrap_err();
        assert_eq!(err.ns, "tsup");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
