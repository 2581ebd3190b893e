//! One active controller per namespace: before it consumes or publishes anything, a controller
//! takes the namespace's lock, the exclusive queue `<ns>.controller` (`Broker::hold_lock`),
//! which the broker lets only one connection hold and frees when that connection ends. Its
//! state is local (sled in its data dir), so a second controller refuses to start, saying where
//! to find the first; one that loses the lock for good while running stops.

use drover_amqp::{AmqpError, Broker};
use drover_protocol::names::Names;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The broker connection's name for this controller: its host, pid and public URL, which is
/// how an operator (and the refusal below) finds the controller holding a namespace.
pub(crate) fn connection_name(url: &str) -> String {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown-host".to_string());
    format!("controller on {host} pid {} at {url}", std::process::id())
}

/// Takes the namespace's lock on `broker`, which has been used for nothing yet.
pub(crate) async fn take(broker: &Broker) -> anyhow::Result<()> {
    let names = broker.names();
    match broker.hold_lock(&names.controller_lock()).await {
        Ok(()) => Ok(()),
        Err(AmqpError::LockHeld { .. }) => Err(anyhow::anyhow!(refusal(names))),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "cannot take the controller lock {} of namespace {names}",
            names.controller_lock()
        ))),
    }
}

/// Why a second controller does not start, and what to do.
fn refusal(names: &Names) -> String {
    format!(
        "another controller is active on namespace {names}: it holds the lock queue {lock}, \
         which the broker keeps for that controller's connection only. Each controller acts \
         from the state in its own data dir and there is no standby mode, so two of them would \
         both act on the namespace's runs; this one does not start. Find the other one (its \
         host, pid and URL are in its connection's name) with `{find}`, or on the management \
         UI's Connections page; stop it first, or give this one another --namespace. A \
         controller that died without closing its connection holds the lock until the broker \
         drops that connection: at once when its process is killed, within about two 10 s AMQP \
         heartbeats when its machine or network is gone.",
        lock = names.controller_lock(),
        find = find_holder(names),
    )
}

/// The command that lists the broker connections of a namespace's controllers.
fn find_holder(names: &Names) -> String {
    format!("rabbitmqctl list_connections client_properties | grep 'drover controller.*({names})'")
}

/// Stops the controller (cancels `shutdown`) once its lock is lost for good; the reason is
/// left in the returned cell for `Controller::wait` to report.
pub(crate) fn watch(
    tracker: &TaskTracker,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) -> Arc<Mutex<Option<String>>> {
    let lost = Arc::new(Mutex::new(None));
    let cell = lost.clone();
    tracker.spawn(async move {
        tokio::select! {
            _ = broker.lock_lost() => {}
            _ = shutdown.cancelled() => return,
        }
        let names = broker.names();
        let why = format!(
            "this controller lost the lock {} of namespace {names}: its broker connection was \
             lost and another connection has held the lock since (another controller started \
             meanwhile?); it stops rather than act beside that one. Check which controller \
             should serve the namespace (`{}`) before starting this one again.",
            names.controller_lock(),
            find_holder(names)
        );
        tracing::error!("{why}");
        if let Ok(mut cell) = cell.lock() {
            *cell = Some(why);
        }
        shutdown.cancel();
    });
    lost
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_names_the_namespace_the_lock_and_how_to_find_the_holder() {
        let names = Names::new("team1").unwrap();
        let text = refusal(&names);
        for part in [
            "namespace team1",
            "team1.controller",
            "grep 'drover controller.*(team1)'",
            "--namespace",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
        assert!(
            connection_name("http://h:1")
                .ends_with(&format!("pid {} at http://h:1", std::process::id()))
        );
    }
}
