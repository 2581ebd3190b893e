//! Batches a step's output into `LogChunk` events: at most ~200 ms or 64 KiB behind the process.

use drover_amqp::{Publisher, Target};
use drover_protocol::message::{AttemptRef, LogChunk, Message};
use std::time::Duration;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

/// How long bytes may wait before they are published.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Buffer size that triggers a publish at once.
pub const MAX_CHUNK: usize = 64 * 1024;

/// The writing end of a step's log; the publishing task ends when every sender is dropped.
pub struct LogStream {
    sender: UnboundedSender<Vec<u8>>,
    task: JoinHandle<u64>,
}

impl LogStream {
    pub fn start(publisher: Publisher, events: String, attempt: AttemptRef) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(pump(receiver, move |offset, data| {
            let publisher = publisher.clone();
            let target = Target::Queue(events.clone());
            let msg = Message::Log(LogChunk {
                run_id: attempt.run_id.clone(),
                step: attempt.step.clone(),
                attempt: attempt.attempt,
                offset,
                data,
            });
            async move {
                if let Err(e) = publisher.publish(&target, &msg).await {
                    tracing::warn!("cannot publish a log chunk: {e}");
                }
            }
        }));
        Self { sender, task }
    }

    /// A sender for raw output bytes.
    pub fn sender(&self) -> UnboundedSender<Vec<u8>> {
        self.sender.clone()
    }

    /// Writes a line of the agent's own into the step's log.
    pub fn note(&self, line: &str) {
        let _ = self.sender.send(format!("drover: {line}\n").into_bytes());
    }

    /// Publishes what is left and returns the log's size.
    pub async fn finish(self) -> u64 {
        drop(self.sender);
        self.task.await.unwrap_or(0)
    }
}

/// Collects chunks and hands them to `publish` with their offset; returns the total size.
async fn pump<F, Fut>(mut receiver: UnboundedReceiver<Vec<u8>>, publish: F) -> u64
where
    F: Fn(u64, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut offset = 0u64;
    let mut buffer: Vec<u8> = Vec::new();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let wait = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            chunk = receiver.recv() => match chunk {
                Some(chunk) => {
                    if buffer.is_empty() {
                        deadline = Some(tokio::time::Instant::now() + FLUSH_EVERY);
                    }
                    buffer.extend_from_slice(&chunk);
                    if buffer.len() < MAX_CHUNK {
                        continue;
                    }
                }
                None => {
                    if !buffer.is_empty() {
                        let len = buffer.len() as u64;
                        publish(offset, std::mem::take(&mut buffer)).await;
                        offset += len;
                    }
                    return offset;
                }
            },
            _ = wait => {}
        }
        while !buffer.is_empty() {
            let take = buffer.len().min(MAX_CHUNK);
            let rest = buffer.split_off(take);
            let chunk = std::mem::replace(&mut buffer, rest);
            let len = chunk.len() as u64;
            publish(offset, chunk).await;
            offset += len;
        }
        deadline = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Chunks as published: (offset, bytes).
    type Published = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

    #[tokio::test]
    async fn chunks_are_contiguous_raw_and_complete() {
        let (tx, rx) = mpsc::unbounded_channel();
        let seen: Published = Arc::default();
        let sink = seen.clone();
        let task = tokio::spawn(pump(rx, move |offset, data| {
            sink.lock().unwrap().push((offset, data));
            async {}
        }));
        tx.send(b"10%\r".to_vec()).unwrap();
        tx.send(b"\xff\xfe".to_vec()).unwrap();
        tx.send(vec![b'x'; MAX_CHUNK * 2 + 5]).unwrap();
        drop(tx);
        let total = task.await.unwrap();
        let seen = seen.lock().unwrap();
        let mut expected_offset = 0;
        let mut all = Vec::new();
        for (offset, data) in seen.iter() {
            assert_eq!(*offset, expected_offset);
            assert!(data.len() <= MAX_CHUNK);
            expected_offset += data.len() as u64;
            all.extend_from_slice(data);
        }
        assert_eq!(total, expected_offset);
        assert!(all.starts_with(b"10%\r\xff\xfe"));
        assert_eq!(all.len(), 6 + MAX_CHUNK * 2 + 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_line_is_flushed_within_the_interval() {
        let (tx, rx) = mpsc::unbounded_channel();
        let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let sink = seen.clone();
        tokio::spawn(pump(rx, move |_, data| {
            sink.lock().unwrap().push(data);
            async {}
        }));
        tx.send(b"line\n".to_vec()).unwrap();
        tokio::time::sleep(FLUSH_EVERY + Duration::from_millis(10)).await;
        assert_eq!(seen.lock().unwrap().as_slice(), [b"line\n".to_vec()]);
        drop(tx);
    }
}
