//! One active controller per namespace: before it consumes or publishes anything, a controller
//! takes the namespace's lock, the exclusive queue `<ns>.controller` (`Broker::hold_lock`),
//! which the broker lets only one connection hold and frees when that connection ends. With the
//! state journal a second controller stands by, asking for the lock every [`STANDBY_RETRY`], and
//! takes over once it gets it (its state comes from the journal); with its state local (sled in
//! its data dir) it refuses to start, saying where to find the first. One that loses the lock
//! for good while running stops.
//!
//! With the journal the active controller also publishes its public URL and epoch
//! ([`LeaderRecord`]) to the leader queue (`Broker::declare_leader`), and a standby reads it
//! each time it asks for the lock, so that it can redirect reads to the active controller.

use drover_amqp::{AmqpError, Broker, Publisher, Target};
use drover_protocol::names::Names;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often a standby controller asks for the lock. The broker frees it as soon as it drops
/// the holder's connection, so this bounds what a takeover adds to that.
pub(crate) const STANDBY_RETRY: Duration = Duration::from_secs(1);

/// How often the active controller publishes its [`LeaderRecord`] again after the first time:
/// the record is back within this after its queue was deleted or lost with its node, or
/// dropped by a broker that caps the deliveries of a quorum queue's messages.
pub(crate) const ANNOUNCE_EVERY: Duration = Duration::from_secs(10);

/// What the active controller publishes to the leader queue: where its HTTP API is, and the
/// epoch it leads as (standbys keep the record of the highest epoch they have seen).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct LeaderRecord {
    pub url: String,
    pub epoch: u64,
}

/// A standby controller was told to stop before it got the lock; it never acted.
#[derive(Debug, thiserror::Error)]
#[error("stopped while standing by on namespace {namespace}: another controller was active")]
pub struct StoppedStandingBy {
    pub namespace: String,
}

/// The broker connection's name for this controller: its host, pid and public URL, which is
/// how an operator (and the refusal below) finds the controller holding a namespace.
pub(crate) fn connection_name(url: &str) -> String {
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown-host".to_string());
    format!("controller on {host} pid {} at {url}", std::process::id())
}

/// What keeps a controller from standing by, so that it must be its namespace's only one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alone {
    /// Its state is in its data dir (no journal).
    LocalState,
    /// Its state is journaled, but the artifacts it stores are in its data dir: a controller
    /// taking over from it could not read them, nor could it read those of the one it would
    /// replace.
    LocalArtifacts,
}

/// Takes the namespace's lock on `broker`, which has been used for nothing yet, for a
/// controller that cannot stand by (`alone` says why); refused when another one holds it.
pub(crate) async fn take(broker: &Broker, alone: Alone) -> anyhow::Result<()> {
    let names = broker.names();
    match broker.hold_lock(&names.controller_lock()).await {
        Ok(()) => Ok(()),
        Err(AmqpError::LockHeld { .. }) => Err(anyhow::anyhow!(match alone {
            Alone::LocalState => refusal(names),
            Alone::LocalArtifacts => refusal_with_local_artifacts(names),
        })),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "cannot take the controller lock {} of namespace {names}",
            names.controller_lock()
        ))),
    }
}

/// Takes the namespace's lock on `broker`, which has been used for nothing yet; while another
/// controller holds it, stands by (`standing_by` is told why, once) and asks again every
/// [`STANDBY_RETRY`] until it gets the lock or `shutdown` is cancelled. Each time it is
/// refused it reads the leader queue, and `leader_seen` is told the active controller's record
/// whenever it is a newer one than told before (before `standing_by`, when there is one then).
pub(crate) async fn take_or_stand_by(
    broker: &Broker,
    shutdown: &CancellationToken,
    standing_by: impl FnOnce(&str),
    mut leader_seen: impl FnMut(&LeaderRecord),
) -> anyhow::Result<()> {
    let names = broker.names();
    let lock = names.controller_lock();
    let mut standing_by = Some(standing_by);
    let mut since: Option<Instant> = None;
    let mut known: Option<LeaderRecord> = None;
    loop {
        match broker.hold_lock(&lock).await {
            Ok(()) => {
                if let Some(since) = since {
                    tracing::info!(
                        "took the lock {lock} of namespace {names} after standing by for {:.2}s: \
                         the active controller is gone, this one takes over",
                        since.elapsed().as_secs_f64()
                    );
                }
                return Ok(());
            }
            Err(AmqpError::LockHeld { .. }) => {
                if let Some(record) = read_leader(broker).await
                    && known
                        .as_ref()
                        .is_none_or(|k| *k != record && record.epoch >= k.epoch)
                {
                    tracing::info!(
                        "standing by: the active controller of namespace {names} is at {} \
                         (epoch {}); reads sent here are redirected there",
                        record.url,
                        record.epoch
                    );
                    leader_seen(&record);
                    known = Some(record);
                }
                if let Some(tell) = standing_by.take() {
                    let why = standby(names);
                    tracing::warn!("{why}");
                    tell(&why);
                    since = Some(Instant::now());
                }
            }
            Err(e) if since.is_some() => {
                tracing::warn!("standing by: cannot ask for the lock {lock}: {e}; asking again");
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot take the controller lock {lock} of namespace {names}"
                )));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                return Err(StoppedStandingBy { namespace: names.to_string() }.into());
            }
            _ = tokio::time::sleep(STANDBY_RETRY) => {}
        }
    }
}

/// The record in the leader queue, if there is a readable one; a failure to read it only
/// leaves the standby with what it knew.
async fn read_leader(broker: &Broker) -> Option<LeaderRecord> {
    let bytes = match broker.peek_leader().await {
        Ok(bytes) => bytes?,
        Err(e) => {
            tracing::debug!("standing by: cannot read {}: {e}", broker.names().leader());
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(record) => Some(record),
        Err(e) => {
            tracing::warn!(
                "standing by: the leader queue {} holds something that is not a leader record \
                 ({e}); ignoring it",
                broker.names().leader()
            );
            None
        }
    }
}

/// Publishes `record` to the leader queue now and every [`ANNOUNCE_EVERY`] until `shutdown`;
/// a failed publish is logged and tried again at the next turn.
pub(crate) fn announce(
    tracker: &TaskTracker,
    broker: Arc<Broker>,
    publisher: Publisher,
    record: LeaderRecord,
    shutdown: CancellationToken,
) {
    tracker.spawn(async move {
        let Ok(bytes) = serde_json::to_vec(&record) else {
            return;
        };
        let mut announced = false;
        loop {
            let sent = async {
                broker.declare_leader().await?;
                publisher.publish_raw(&Target::Leader, &bytes).await
            };
            match sent.await {
                Ok(()) if !announced => {
                    announced = true;
                    tracing::info!(
                        "published this controller's URL {} (epoch {}) to {} for standbys",
                        record.url,
                        record.epoch,
                        broker.names().leader()
                    );
                }
                Ok(()) => {}
                Err(e) => tracing::warn!(
                    "cannot publish this controller's URL to {}: {e}; standbys answer 503 \
                     instead of redirecting until it is published (trying again in {:?})",
                    broker.names().leader(),
                    ANNOUNCE_EVERY
                ),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(ANNOUNCE_EVERY) => {}
            }
        }
    });
}

/// What a standby controller says while it waits.
fn standby(names: &Names) -> String {
    format!(
        "standing by: this controller is a standby behind the active controller of namespace \
         {names}, which holds the lock queue {lock} (find it with `{find}`); send requests to \
         that one (clients given several --url skip this one). This controller keeps its state \
         in the journal {journal}, so it asks for the lock every {retry:?} and takes over, \
         replaying the journal, once that controller is gone.",
        lock = names.controller_lock(),
        find = find_holder(names),
        journal = names.journal(),
        retry = STANDBY_RETRY,
    )
}

/// Why a second controller does not start, and what to do.
fn refusal(names: &Names) -> String {
    format!(
        "another controller is active on namespace {names}: it holds the lock queue {lock}, \
         which the broker keeps for that controller's connection only. This controller keeps \
         its state in its own data dir, so two of them would both act on the namespace's runs; \
         it does not start (with --state-journal stream it would stand by instead and take \
         over when that one is gone). Find the other one (its host, pid and URL are in its \
         connection's name) with `{find}`, or on the management UI's Connections page; stop it \
         first, or give this one another --namespace. A controller that died without closing \
         its connection holds the lock until the broker drops that connection: at once when its \
         process is killed, within about two 10 s AMQP heartbeats when its machine or network \
         is gone.",
        lock = names.controller_lock(),
        find = find_holder(names),
    )
}

/// Why a second controller with the journal but the local artifact store does not stand by.
fn refusal_with_local_artifacts(names: &Names) -> String {
    format!(
        "another controller is active on namespace {names}: it holds the lock queue {lock}. \
         This controller journals its state, so it could stand by, but its artifact store is \
         local (the blobs/ of its own data dir): after a takeover it could not read the \
         artifacts the active controller stored, and steps needing them would fail. It does \
         not start. Give every controller of the namespace the same bucket \
         (--artifact-store s3://BUCKET[/PREFIX]), or stop the other one (find it with \
         `{find}`), or give this one another --namespace.",
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
        let text = refusal_with_local_artifacts(&names);
        for part in [
            "namespace team1",
            "team1.controller",
            "artifact store is local",
            "--artifact-store s3://",
            "grep 'drover controller.*(team1)'",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
        let text = standby(&names);
        for part in [
            "standing by",
            "a standby behind the active controller of namespace team1",
            "team1.controller",
            "team1.journal",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
        assert!(
            connection_name("http://h:1")
                .ends_with(&format!("pid {} at http://h:1", std::process::id()))
        );
    }
}
