//! A step's output as `LogChunk` events, in order and complete while the agent lives: a piece
//! of output after a quiet spell is published at once, a busy step's output is batched into at
//! most one chunk per [`FLUSH_EVERY`] (or per 64 KiB), held in a [`backlog`] that keeps
//! [`MEMORY_WINDOW`] in memory and spills the rest to a spool file while the broker does not
//! confirm, and published one chunk at a time until each is confirmed. A log stops at its
//! attempt's cap (`--max-log-size`) with a [`cut_marker`] line; what the step writes after that
//! is still read from its pipe, so it never blocks, and dropped.
//!
//! Closing a log ([`LogStream::close`]) gives its final size as soon as its last chunk is handed
//! to the broker's channel, before that chunk is confirmed: the attempt's `Finished` carries the
//! size and follows the chunk on the same channel, while [`ClosedLog::delivered`] goes on
//! publishing until every byte is confirmed.

mod backlog;

use backlog::{Backlog, Chunk};
use drover_amqp::{Publisher, Target};
use drover_protocol::message::{AttemptRef, LogChunk, LogDelay, Message};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::sync::mpsc::{self, Receiver};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The least time between two chunks of one attempt below [`MAX_CHUNK`]: output that arrives
/// sooner after the last chunk waits for the rest of this interval, so a chatty step sends at
/// most 1 / `FLUSH_EVERY` small messages a second while a quiet one's line leaves at once.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Buffer size that triggers a publish at once.
pub const MAX_CHUNK: usize = 64 * 1024;
/// Unconfirmed bytes kept in memory; past this they wait in the attempt's spool file.
pub const MEMORY_WINDOW: usize = 8 * 1024 * 1024;
/// Pieces of output (a pipe read each) between the step's pipe readers and the batcher; when
/// it is full the readers wait, and so does the step writing to its pipe.
pub const CHANNEL_DEPTH: usize = 16;
/// A chunk whose publish took this long, or failed, marks the log as delayed from it on.
pub const SLOW_PUBLISH: Duration = Duration::from_secs(5);
/// A log's size limit unless configured otherwise (`--max-log-size`).
pub const DEFAULT_MAX_LOG_SIZE: u64 = 256 * 1024 * 1024;
/// Pause before a chunk the broker did not confirm is published again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Where a step's raw output bytes go.
pub type LogSender = mpsc::Sender<Vec<u8>>;

/// What became of a step's log once every byte was confirmed.
#[derive(Debug, Default, Clone)]
pub struct LogSummary {
    /// The log's size in bytes.
    pub size: u64,
    /// Where its bytes reached the broker late.
    pub delays: Vec<LogDelay>,
    /// Output dropped past the cap.
    pub dropped: u64,
}

/// The line that ends a log cut at `cap` bytes.
pub fn cut_marker(cap: u64) -> String {
    format!(
        "drover: the log reached its limit of {cap} bytes (--max-log-size); the rest of the step's output is discarded\n"
    )
}

/// What a sink calls once a chunk is handed to the broker's channel, before its confirm.
pub type Sent<'a> = &'a (dyn Fn() + Send + Sync);

/// Where chunks are published: the broker, or a recorder in tests.
pub trait ChunkSink: Send + Sync + 'static {
    /// Publishes `data` at `offset` and waits for the confirm, calling `sent` once the chunk is
    /// on its way.
    fn publish(
        &self,
        offset: u64,
        data: &[u8],
        sent: Sent<'_>,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// Publishes to the events queue as `Log` messages of one attempt.
struct BrokerSink {
    publisher: Publisher,
    target: Target,
    attempt: AttemptRef,
}

impl ChunkSink for BrokerSink {
    async fn publish(&self, offset: u64, data: &[u8], sent: Sent<'_>) -> Result<(), String> {
        let msg = Message::Log(LogChunk {
            run_id: self.attempt.run_id.clone(),
            step: self.attempt.step.clone(),
            attempt: self.attempt.attempt,
            offset,
            data: data.to_vec(),
        });
        self.publisher
            .publish_noting_sent(&self.target, &msg, 0, sent)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The spool file of an attempt: `<jobs>/_spool/<run>-<step>-<attempt>-<rand>.log`, beside the
/// attempts' workdirs (`jobs_dir`) rather than in one, because the log is still being sent after
/// its workdir is removed.
pub fn spool_path(jobs_dir: &Path, attempt: &AttemptRef) -> PathBuf {
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    jobs_dir.join("_spool").join(format!(
        "{}-{}-{}-{suffix}.log",
        attempt.run_id, attempt.step, attempt.attempt
    ))
}

/// The writing end of a step's log; [`LogStream::close`] gives its size once its last chunk is
/// on its way, [`LogStream::finish`] waits until every byte is confirmed.
pub struct LogStream {
    sender: LogSender,
    batching: JoinHandle<(u64, u64)>,
    publishing: JoinHandle<()>,
    shared: Arc<Shared>,
    cap: u64,
}

/// A log that takes no more bytes, whose chunks may still await their confirms.
pub struct ClosedLog {
    /// The log's final size in bytes.
    pub size: u64,
    /// Output dropped past the cap.
    pub dropped: u64,
    shared: Arc<Shared>,
    /// The publishing task until it was awaited.
    publishing: Option<JoinHandle<()>>,
}

/// What the batcher, the publishing task and the closer share.
struct Shared {
    state: Mutex<State>,
    /// The batcher added bytes or closed the log.
    pushed: Notify,
    /// The publisher had a chunk confirmed.
    sent: Notify,
    /// A chunk was handed to the channel, publishing failed or ended: wakes [`LogStream::close`].
    progress: Notify,
}

struct State {
    backlog: Backlog,
    /// No more bytes will be pushed.
    closed: bool,
    /// The agent is aborting: what is left is dropped.
    abandoned: bool,
    /// The offset after the last byte handed to the broker's channel at least once.
    handed: u64,
    /// The broker does not take the log at the moment (a publish failed and is tried again).
    held_back: bool,
    /// Where the log reached the broker late, so far.
    delays: Vec<LogDelay>,
    /// The publishing task returned: everything is confirmed, or given up on.
    done: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl LogStream {
    /// Streams an attempt's log to the events queue; `abort` (the agent going away at once)
    /// is the only thing that makes it give up on bytes the broker does not confirm.
    pub fn start(
        publisher: Publisher,
        attempt: AttemptRef,
        spool: PathBuf,
        cap: u64,
        abort: CancellationToken,
    ) -> Self {
        let sink = BrokerSink {
            publisher,
            target: Target::Events,
            attempt,
        };
        Self::start_with(sink, MEMORY_WINDOW, spool, cap, abort)
    }

    /// [`LogStream::start`] with any sink and memory window.
    pub fn start_with<S: ChunkSink>(
        sink: S,
        window: usize,
        spool: PathBuf,
        cap: u64,
        abort: CancellationToken,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(CHANNEL_DEPTH);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                backlog: Backlog::new(window, MAX_CHUNK, spool),
                closed: false,
                abandoned: false,
                handed: 0,
                held_back: false,
                delays: Vec::new(),
                done: false,
            }),
            pushed: Notify::new(),
            sent: Notify::new(),
            progress: Notify::new(),
        });
        let publishing = tokio::spawn(publish_all(shared.clone(), sink, abort));
        let batching = tokio::spawn({
            let shared = shared.clone();
            async move { batch(receiver, &shared, cap).await }
        });
        Self {
            sender,
            batching,
            publishing,
            shared,
            cap,
        }
    }

    /// A sender for raw output bytes.
    pub fn sender(&self) -> LogSender {
        self.sender.clone()
    }

    /// Writes a line of the agent's own into the step's log.
    pub async fn note(&self, line: &str) {
        let _ = self
            .sender
            .send(format!("drover: {line}\n").into_bytes())
            .await;
    }

    /// Takes no more bytes and returns the log's final size once its last chunk has been
    /// handed to the broker's channel, without waiting for that chunk's confirm; also returns
    /// when the broker does not take the log at the moment ([`ClosedLog::held_back`]) or the
    /// agent aborts. The chunks are still published until each is confirmed.
    pub async fn close(self) -> ClosedLog {
        drop(self.sender);
        let (size, dropped) = self.batching.await.unwrap_or_default();
        if dropped > 0 {
            let cap = self.cap;
            tracing::info!("log cut at {cap} bytes; {dropped} bytes of output dropped");
        }
        let shared = self.shared;
        loop {
            let progress = shared.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            {
                let state = shared.lock();
                if state.handed >= size || state.held_back || state.abandoned || state.done {
                    break;
                }
            }
            progress.await;
        }
        ClosedLog {
            size,
            dropped,
            shared,
            publishing: Some(self.publishing),
        }
    }

    /// Waits until every byte of the log is confirmed by the broker (or the agent aborts).
    pub async fn finish(self) -> LogSummary {
        let mut closed = self.close().await;
        closed.delivered().await
    }
}

impl ClosedLog {
    /// Whether a chunk of the log failed to publish and is waiting to be sent again.
    pub fn held_back(&self) -> bool {
        self.shared.lock().held_back
    }

    /// Where the log reached the broker late so far.
    pub fn delays(&self) -> Vec<LogDelay> {
        self.shared.lock().delays.clone()
    }

    /// Waits until every byte of the log is confirmed by the broker (or the agent aborts).
    pub async fn delivered(&mut self) -> LogSummary {
        if let Some(publishing) = self.publishing.take() {
            let _ = publishing.await;
        }
        LogSummary {
            size: self.size,
            delays: self.delays(),
            dropped: self.dropped,
        }
    }
}

/// How much of the output is kept: the first `cap` bytes, then the marker.
struct Cap {
    cap: u64,
    /// Bytes taken so far (the marker not counted).
    taken: u64,
    /// Whether the last byte taken ended a line.
    at_line_start: bool,
    /// Whether the marker was added.
    cut: bool,
    dropped: u64,
}

impl Cap {
    /// The part of `piece` that fits, followed by the marker when this piece reaches the cap.
    fn take(&mut self, mut piece: Vec<u8>) -> Vec<u8> {
        let len = piece.len() as u64;
        let room = self.cap - self.taken;
        if len <= room {
            self.taken += len;
            if let Some(last) = piece.last() {
                self.at_line_start = *last == b'\n';
            }
            return piece;
        }
        self.dropped += len - room;
        if self.cut {
            return Vec::new();
        }
        // The first byte past the cap: what fits, then the marker on a line of its own.
        self.cut = true;
        piece.truncate(room as usize);
        self.taken = self.cap;
        if piece.last().map_or(!self.at_line_start, |b| *b != b'\n') {
            piece.push(b'\n');
        }
        piece.extend_from_slice(cut_marker(self.cap).as_bytes());
        piece
    }
}

/// Collects output into chunks of up to [`MAX_CHUNK`] and adds them to the backlog, up to
/// `cap` bytes and the marker; returns the log's size and the bytes dropped once every sender
/// is gone. Past the cap pieces are still received (the pipe readers never wait on a cut log).
///
/// A piece is pushed at once when the last chunk left at least [`FLUSH_EVERY`] ago (with
/// whatever else the readers have queued by then), otherwise when that interval is over.
async fn batch(mut receiver: Receiver<Vec<u8>>, shared: &Shared, cap: u64) -> (u64, u64) {
    let mut buffer: Vec<u8> = Vec::new();
    let mut deadline: Option<Instant> = None;
    // When the last chunk was pushed; none yet, so the first piece goes at once.
    let mut last_push: Option<Instant> = None;
    let mut cap = Cap {
        cap,
        taken: 0,
        at_line_start: true,
        cut: false,
        dropped: 0,
    };
    loop {
        let wait = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            piece = receiver.recv() => match piece {
                Some(piece) => {
                    let piece = cap.take(piece);
                    if piece.is_empty() {
                        continue;
                    }
                    if buffer.is_empty() {
                        let due = last_push.map(|at| at + FLUSH_EVERY);
                        deadline = Some(due.unwrap_or_else(Instant::now));
                    }
                    buffer.extend_from_slice(&piece);
                    if buffer.len() < MAX_CHUNK && deadline.is_some_and(|d| d > Instant::now()) {
                        continue;
                    }
                    // Going now: take what the readers have queued meanwhile along.
                    while buffer.len() < MAX_CHUNK {
                        match receiver.try_recv() {
                            Ok(more) => buffer.extend_from_slice(&cap.take(more)),
                            Err(_) => break,
                        }
                    }
                }
                None => {
                    push(shared, std::mem::take(&mut buffer)).await;
                    let size = {
                        let mut state = shared.lock();
                        state.closed = true;
                        state.backlog.end()
                    };
                    shared.pushed.notify_one();
                    return (size, cap.dropped);
                }
            },
            _ = wait => {}
        }
        if !buffer.is_empty() {
            last_push = Some(Instant::now());
        }
        while !buffer.is_empty() {
            let take = buffer.len().min(MAX_CHUNK);
            let rest = buffer.split_off(take);
            push(shared, std::mem::replace(&mut buffer, rest)).await;
        }
        deadline = None;
    }
}

/// Adds a chunk to the backlog. When the spool cannot be written (a full disk) the step is
/// held back instead: the chunk is tried again after the next confirm, or a second later.
async fn push(shared: &Shared, chunk: Vec<u8>) {
    if chunk.is_empty() {
        return;
    }
    let mut chunk = chunk;
    loop {
        let pushed = {
            let mut state = shared.lock();
            if state.abandoned {
                return;
            }
            state.backlog.push(chunk)
        };
        match pushed {
            Ok(()) => {
                shared.pushed.notify_one();
                return;
            }
            Err((back, e)) => {
                chunk = back;
                tracing::warn!("cannot spool log bytes: {e}; holding the step's output back");
                let _ = tokio::time::timeout(RETRY_EVERY, shared.sent.notified()).await;
            }
        }
    }
}

/// Publishes the backlog in order, each chunk until the broker confirms it, until the batcher
/// closed the log and everything is confirmed (or the agent aborts).
async fn publish_all<S: ChunkSink>(shared: Arc<Shared>, sink: S, abort: CancellationToken) {
    deliver(&shared, &sink, &abort).await;
    shared.lock().done = true;
    shared.progress.notify_waiters();
}

/// [`publish_all`]'s loop.
async fn deliver<S: ChunkSink>(shared: &Shared, sink: &S, abort: &CancellationToken) {
    loop {
        let (next, closed) = {
            let mut state = shared.lock();
            (state.backlog.next(), state.closed)
        };
        let chunk = match next {
            Ok(Some(chunk)) => chunk,
            Ok(None) if closed => {
                let peak = shared.lock().backlog.spooled_peak();
                if peak > 0 {
                    tracing::info!("log sent; its spool held up to {peak} bytes");
                }
                return;
            }
            // Aborting kills the step, which closes the log soon: only a chunk the broker does
            // not take is given up on.
            Ok(None) => {
                shared.pushed.notified().await;
                continue;
            }
            Err(e) => {
                tracing::warn!("cannot read the log spool: {e}; trying again");
                hold_back(shared, true);
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_EVERY) => continue,
                    _ = abort.cancelled() => return abandon(shared),
                }
            }
        };
        let Some(delay) = publish_one(shared, sink, &chunk, abort).await else {
            return abandon(shared);
        };
        let mut state = shared.lock();
        if let Some(delay) = delay {
            tracing::info!(
                "log bytes from offset {} reached the broker {} ms late",
                delay.offset,
                delay.delayed_ms
            );
            state.delays.push(delay);
        }
        state.held_back = false;
        state.backlog.confirmed(&chunk);
        drop(state);
        shared.sent.notify_one();
    }
}

/// Marks the log as held back by the broker (or not), and tells a waiting closer.
fn hold_back(shared: &Shared, held: bool) {
    shared.lock().held_back = held;
    shared.progress.notify_waiters();
}

/// Publishes one chunk until it is confirmed: `Some(delay)` when it was late, `None` when the
/// agent aborted first.
async fn publish_one<S: ChunkSink>(
    shared: &Shared,
    sink: &S,
    chunk: &Chunk,
    abort: &CancellationToken,
) -> Option<Option<LogDelay>> {
    let started = Instant::now();
    let mut failed = false;
    let end = chunk.offset + chunk.data.len() as u64;
    let sent = || {
        let mut state = shared.lock();
        state.handed = state.handed.max(end);
        drop(state);
        shared.progress.notify_waiters();
    };
    while let Err(e) = sink.publish(chunk.offset, &chunk.data, &sent).await {
        if !failed {
            tracing::warn!(
                "cannot publish the log from offset {}: {e}; keeping it until the broker confirms",
                chunk.offset
            );
            hold_back(shared, true);
        }
        failed = true;
        tokio::select! {
            _ = tokio::time::sleep(RETRY_EVERY) => {}
            _ = abort.cancelled() => return None,
        }
    }
    let late = failed || started.elapsed() >= SLOW_PUBLISH;
    Some(late.then(|| LogDelay {
        offset: chunk.offset,
        delayed_ms: u64::try_from(chunk.written_at.elapsed().as_millis()).unwrap_or(u64::MAX),
    }))
}

/// The agent is going away at once: drops what is unsent, with the spool file.
fn abandon(shared: &Shared) {
    let mut state = shared.lock();
    state.abandoned = true;
    let unsent = state.backlog.unsent();
    if unsent > 0 {
        tracing::warn!("the agent is stopping: {unsent} bytes of a step's log are not sent");
    }
    state.backlog.remove_spool();
    drop(state);
    shared.sent.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Chunks as published: (offset, bytes).
    type Published = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

    /// Records what is published; fails every publish while `down` is set.
    #[derive(Clone, Default)]
    struct Recorder {
        seen: Published,
        down: Arc<AtomicBool>,
    }

    impl ChunkSink for Recorder {
        async fn publish(&self, offset: u64, data: &[u8], sent: Sent<'_>) -> Result<(), String> {
            if self.down.load(Ordering::SeqCst) {
                return Err("broker unreachable".into());
            }
            sent();
            self.seen.lock().unwrap().push((offset, data.to_vec()));
            Ok(())
        }
    }

    impl Recorder {
        fn log(&self) -> Vec<u8> {
            let seen = self.seen.lock().unwrap();
            let mut all = Vec::new();
            for (offset, data) in seen.iter() {
                assert_eq!(*offset, all.len() as u64, "chunks are contiguous");
                assert!(data.len() <= MAX_CHUNK);
                all.extend_from_slice(data);
            }
            all
        }
    }

    fn spool_in(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("spool").join("a.log")
    }

    /// A log to `sink` with the default window and cap that the agent never aborts.
    fn started<S: ChunkSink + Clone>(sink: &S, dir: &tempfile::TempDir) -> LogStream {
        LogStream::start_with(
            sink.clone(),
            MEMORY_WINDOW,
            spool_in(dir),
            DEFAULT_MAX_LOG_SIZE,
            CancellationToken::new(),
        )
    }

    #[tokio::test]
    async fn chunks_are_contiguous_raw_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Recorder::default();
        let log = started(&sink, &dir);
        let tx = log.sender();
        tx.send(b"10%\r".to_vec()).await.unwrap();
        tx.send(b"\xff\xfe".to_vec()).await.unwrap();
        tx.send(vec![b'x'; MAX_CHUNK * 2 + 5]).await.unwrap();
        drop(tx);
        let summary = log.finish().await;
        let all = sink.log();
        assert_eq!(summary.size, all.len() as u64);
        assert!(all.starts_with(b"10%\r\xff\xfe"));
        assert_eq!(all.len(), 6 + MAX_CHUNK * 2 + 5);
        assert!(summary.delays.is_empty());
    }

    /// Hands each chunk to the channel at once and confirms it only when the test says so.
    #[derive(Clone)]
    struct Gated {
        seen: Published,
        confirms: Arc<tokio::sync::Semaphore>,
    }

    impl ChunkSink for Gated {
        async fn publish(&self, offset: u64, data: &[u8], sent: Sent<'_>) -> Result<(), String> {
            self.seen.lock().unwrap().push((offset, data.to_vec()));
            sent();
            let permit = self.confirms.acquire().await.map_err(|e| e.to_string())?;
            permit.forget();
            Ok(())
        }
    }

    impl Default for Gated {
        fn default() -> Self {
            Self {
                seen: Published::default(),
                confirms: Arc::new(tokio::sync::Semaphore::new(0)),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn closing_gives_the_size_before_the_last_confirm_and_delivery_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Gated::default();
        let log = started(&sink, &dir);
        log.sender().send(b"first\n".to_vec()).await.unwrap();
        tokio::time::sleep(FLUSH_EVERY / 5).await;
        // Queued behind the unconfirmed first chunk.
        log.sender().send(b"last\n".to_vec()).await.unwrap();
        let closing = tokio::spawn(log.close());
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            !closing.is_finished(),
            "the last chunk is not on its way while the first awaits its confirm"
        );
        sink.confirms.add_permits(1);
        let mut closed = tokio::time::timeout(Duration::from_secs(1), closing)
            .await
            .expect("closed once the last chunk was handed to the channel")
            .unwrap();
        assert_eq!(closed.size, 11);
        assert!(!closed.held_back());
        let delivery = tokio::spawn(async move { closed.delivered().await });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            !delivery.is_finished(),
            "the last chunk is not confirmed yet"
        );
        sink.confirms.add_permits(1);
        let summary = delivery.await.unwrap();
        assert_eq!(summary.size, 11);
        let seen = sink.seen.lock().unwrap();
        assert_eq!(
            *seen,
            vec![(0, b"first\n".to_vec()), (6, b"last\n".to_vec())]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_log_the_broker_does_not_take_closes_held_back_and_keeps_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Recorder::default();
        sink.down.store(true, Ordering::SeqCst);
        let log = started(&sink, &dir);
        log.sender().send(b"kept\n".to_vec()).await.unwrap();
        let mut closed = tokio::time::timeout(Duration::from_secs(1), log.close())
            .await
            .expect("a held-back log still closes");
        assert!(closed.held_back());
        assert_eq!(closed.size, 5);
        tokio::time::sleep(Duration::from_secs(3)).await;
        sink.down.store(false, Ordering::SeqCst);
        let summary = closed.delivered().await;
        assert_eq!(sink.log(), b"kept\n");
        assert_eq!(summary.delays.len(), 1, "{:?}", summary.delays);
        assert!(!closed.held_back());
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_line_is_flushed_within_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Recorder::default();
        let log = started(&sink, &dir);
        log.sender().send(b"line\n".to_vec()).await.unwrap();
        tokio::time::sleep(FLUSH_EVERY + Duration::from_millis(10)).await;
        assert_eq!(sink.log(), b"line\n");
        log.finish().await;
    }

    /// Chunks as published: (when, bytes).
    type Timed = Arc<Mutex<Vec<(Instant, Vec<u8>)>>>;

    /// Records when each chunk was published (on the test's paused clock) and its bytes.
    #[derive(Clone, Default)]
    struct Clocked {
        seen: Timed,
    }

    impl ChunkSink for Clocked {
        async fn publish(&self, _offset: u64, data: &[u8], sent: Sent<'_>) -> Result<(), String> {
            sent();
            self.seen
                .lock()
                .unwrap()
                .push((Instant::now(), data.to_vec()));
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_line_after_a_quiet_spell_leaves_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Clocked::default();
        let log = started(&sink, &dir);
        let tx = log.sender();
        for line in [&b"first\n"[..], b"after a pause\n"] {
            let written = Instant::now();
            tx.send(line.to_vec()).await.unwrap();
            // The paused clock only moves when every task waits on a timer: a line held
            // back for the interval would be published FLUSH_EVERY later.
            tokio::time::sleep(FLUSH_EVERY * 3).await;
            let seen = sink.seen.lock().unwrap();
            let (at, data) = seen.last().unwrap();
            assert_eq!(&data[..], line);
            assert_eq!(*at, written, "published when written");
        }
        drop(tx);
        log.finish().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_chatty_step_sends_one_chunk_per_interval_and_no_line_waits_longer() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Clocked::default();
        let log = started(&sink, &dir);
        let tx = log.sender();
        let started = Instant::now();
        let mut written = Vec::new();
        for i in 0..200 {
            written.push(Instant::now());
            tx.send(format!("line {i:03}\n").into_bytes())
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let elapsed = started.elapsed();
        drop(tx);
        log.finish().await;
        let seen = sink.seen.lock().unwrap();
        let most = (elapsed.as_millis() / FLUSH_EVERY.as_millis() + 2) as usize;
        assert!(
            seen.len() <= most && seen.len() >= 2,
            "{} chunks for {elapsed:?} of output",
            seen.len()
        );
        // Every line went out with the first chunk published at or after its writing.
        let mut line = 0;
        for (at, data) in seen.iter() {
            let lines = data.iter().filter(|b| **b == b'\n').count();
            for w in &written[line..line + lines] {
                assert!(
                    *at >= *w && *at - *w <= FLUSH_EVERY,
                    "a line waited {:?}",
                    *at - *w
                );
            }
            line += lines;
        }
        assert_eq!(line, 200);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_spills_to_the_spool_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool_in(&dir);
        let sink = Recorder::default();
        let log = LogStream::start_with(
            sink.clone(),
            4 * MAX_CHUNK,
            spool.clone(),
            DEFAULT_MAX_LOG_SIZE,
            CancellationToken::new(),
        );
        let tx = log.sender();
        let mut expected = Vec::new();
        let mut write = async |n: usize| {
            for i in 0..n {
                let line = format!("line {:06}\n", expected.len() + i).into_bytes();
                tx.send(line.clone()).await.unwrap();
                expected.extend_from_slice(&line);
            }
            tokio::time::sleep(FLUSH_EVERY * 2).await;
        };
        write(10).await;
        sink.down.store(true, Ordering::SeqCst);
        let outage_from = sink.log().len() as u64;
        // Far more than the window: the rest must wait on disk.
        write(100_000).await;
        assert!(
            spool.exists(),
            "the spool takes what the window cannot hold"
        );
        tokio::time::sleep(Duration::from_secs(47)).await;
        sink.down.store(false, Ordering::SeqCst);
        drop(tx);
        let summary = log.finish().await;
        assert_eq!(sink.log(), expected, "every byte, in order");
        assert_eq!(summary.size, expected.len() as u64);
        assert!(
            !spool.exists(),
            "the spool is removed once everything is confirmed"
        );
        assert_eq!(summary.delays.len(), 1, "{:?}", summary.delays);
        assert_eq!(summary.delays[0].offset, outage_from);
        assert!(
            summary.delays[0].delayed_ms >= 47_000,
            "{:?}",
            summary.delays
        );
    }

    #[tokio::test(start_paused = true)]
    async fn aborting_gives_up_on_unsent_bytes_and_removes_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let spool = spool_in(&dir);
        let sink = Recorder::default();
        sink.down.store(true, Ordering::SeqCst);
        let abort = CancellationToken::new();
        let log = LogStream::start_with(
            sink.clone(),
            MAX_CHUNK,
            spool.clone(),
            DEFAULT_MAX_LOG_SIZE,
            abort.clone(),
        );
        log.sender().send(vec![b'x'; 3 * MAX_CHUNK]).await.unwrap();
        tokio::time::sleep(FLUSH_EVERY * 2).await;
        assert!(spool.exists());
        abort.cancel();
        let summary = log.finish().await;
        assert!(!spool.exists());
        assert!(sink.log().is_empty());
        assert_eq!(summary.size, 3 * MAX_CHUNK as u64);
    }

    #[tokio::test]
    async fn a_log_past_its_cap_ends_with_the_marker_and_the_writer_never_waits() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Recorder::default();
        let cap = 3 * MAX_CHUNK as u64 + 7;
        let log = LogStream::start_with(
            sink.clone(),
            MEMORY_WINDOW,
            spool_in(&dir),
            cap,
            CancellationToken::new(),
        );
        let tx = log.sender();
        // Far more than the cap and the channel: every send must still be taken.
        let piece = vec![b'y'; 16 * 1024];
        let written = 64 * piece.len() as u64;
        let sending = async {
            for _ in 0..64 {
                tx.send(piece.clone()).await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(10), sending)
            .await
            .expect("the writer was held back by a cut log");
        log.note("step failed").await;
        drop(tx);
        let summary = log.finish().await;
        let all = sink.log();
        let marker = cut_marker(cap);
        assert_eq!(all.len() as u64, cap + 1 + marker.len() as u64);
        assert!(all[..cap as usize].iter().all(|b| *b == b'y'));
        assert!(all.ends_with(format!("\n{marker}").as_bytes()));
        assert_eq!(summary.size, all.len() as u64);
        assert_eq!(
            summary.dropped,
            written - cap + "drover: step failed\n".len() as u64
        );
    }

    #[test]
    fn the_cap_cuts_at_its_byte_and_adds_a_newline_only_when_needed() {
        let mut cap = Cap {
            cap: 4,
            taken: 0,
            at_line_start: true,
            cut: false,
            dropped: 0,
        };
        assert_eq!(cap.take(b"ab\n".to_vec()), b"ab\n");
        let cut = cap.take(b"c\nde".to_vec());
        assert_eq!(cut, format!("c\n{}", cut_marker(4)).into_bytes());
        assert!(cap.take(b"more".to_vec()).is_empty());
        assert_eq!(cap.dropped, 3 + 4);
        // Filled to the byte, the marker comes with the first byte past it.
        let mut cap = Cap {
            cap: 4,
            taken: 0,
            at_line_start: true,
            cut: false,
            dropped: 0,
        };
        assert_eq!(cap.take(b"abc\n".to_vec()), b"abc\n");
        assert_eq!(cap.take(b"x".to_vec()), cut_marker(4).into_bytes());
        assert!(cap.take(b"y".to_vec()).is_empty());
        assert_eq!(cap.dropped, 2);
    }
}
