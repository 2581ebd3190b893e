//! The task that archives ended attempts' logs off the owner task: it waits for each log to be
//! complete, stores it (a few at a time), and hands the result back to the owner, which records
//! it in the attempt and makes that durable like any state change.

use super::Command;
use crate::logs::archive::{EndedLog, LogArchive};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most logs read and uploaded at once; the others wait (a log waiting for its last chunks
/// holds no slot).
const IN_FLIGHT: usize = 4;
/// Tries of one log's archive before it is left to the data dir alone.
const TRIES: u32 = 3;
/// The wait before the second try, doubled before each later one.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Where the owner sends the attempts whose end it made durable.
pub(crate) type Archiver = mpsc::UnboundedSender<EndedLog>;

/// Starts the archiving task on `tracker`; it stops at shutdown, leaving logs in progress to
/// the data dir.
pub(crate) fn spawn(
    archive: LogArchive,
    commands: mpsc::Sender<Command>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> Archiver {
    let (tx, mut ended) = mpsc::unbounded_channel::<EndedLog>();
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let busy: Arc<Mutex<HashSet<(String, String, u32)>>> = Arc::default();
    let tasks = tracker.clone();
    tracker.spawn(async move {
        loop {
            let log = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = ended.recv() => match next {
                    Some(log) => log,
                    None => return,
                },
            };
            let key = (log.run_id.to_string(), log.step.to_string(), log.attempt.0);
            // A result delivered twice ends the same attempt twice: one archive is enough.
            if !lock(&busy).insert(key.clone()) {
                continue;
            }
            let job = Job {
                archive: archive.clone(),
                commands: commands.clone(),
                slots: slots.clone(),
            };
            let (busy, shutdown) = (busy.clone(), shutdown.clone());
            tasks.spawn(async move {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = job.archive(log) => {}
                }
                lock(&busy).remove(&key);
            });
        }
    });
    tx
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What one archive needs.
struct Job {
    archive: LogArchive,
    commands: mpsc::Sender<Command>,
    slots: Arc<Semaphore>,
}

impl Job {
    async fn archive(self, log: EndedLog) {
        let mut delay = RETRY_AFTER;
        for tried in 1..=TRIES {
            // Waiting for the last chunks holds no slot; reading and uploading does.
            let stored = match self.archive.wait_until_complete(&log).await {
                Ok(size) => match self.slots.acquire().await {
                    Ok(_slot) => self.archive.store(&log, size).await,
                    Err(_) => return,
                },
                Err(e) => Err(e),
            };
            match stored {
                Ok(Some(archived)) => {
                    tracing::debug!("{log}: archived as blob {}", archived.digest);
                    let recorded = Command::LogArchived {
                        run: log.run_id.clone(),
                        step: log.step.clone(),
                        attempt: log.attempt,
                        archived,
                    };
                    // The owner is gone only when shutting down.
                    let _ = self.commands.send(recorded).await;
                    return;
                }
                Ok(None) => return,
                Err(e) if tried < TRIES => {
                    tracing::warn!("cannot archive {log}: {e}; trying again in {delay:?}");
                }
                Err(e) => {
                    tracing::error!(
                        "cannot archive {log}: {e}; it is kept in the data dir only, and lost \
                         with it"
                    );
                    return;
                }
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
}
