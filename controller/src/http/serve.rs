//! The HTTP listener: accepts connections within a budget of file descriptors and serves each
//! under time and buffer limits, so clients that never finish a request, idle or read slowly
//! cannot exhaust the controller's descriptors or memory.
//!
//! A connection must send each request's headers within the header timeout, counted from the
//! connection's start or the end of its previous response, which also closes idle keep-alive
//! connections. At most `budget` connections are open at once; when another arrives at the
//! limit, the oldest connection with no request in flight (and at least [`MIN_AGE`] old) is
//! closed to make room (a client that never finishes its headers is such a connection), and
//! when every one is busy the listener waits, leaving further clients in the kernel's backlog
//! where they cost no descriptor of ours.

use crate::config::HttpLimits;
use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Descriptors kept for everything but HTTP connections: the broker, sled, the log store,
/// blobs being written, and under `drover up` the agents and their steps.
const RESERVED_FDS: u64 = 128;
/// A connection may hold a file open besides its socket (a log or a blob it streams).
const FDS_PER_CONNECTION: u64 = 2;
/// Connections allowed however low the open-file limit.
const MIN_CONNECTIONS: u64 = 16;
/// hyper's read and write buffer per connection: enough for any header block; a slow reader
/// holds at most this (plus one chunk) of a response in memory.
const CONNECTION_BUFFER: usize = 64 * 1024;
/// How long a connection may take to finish its response once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A new connection is never closed to make room before this age: time for its task to read
/// the request a well-behaved client sent at once. It caps how fast stalled connections are
/// cycled through to `budget / MIN_AGE` per second.
const MIN_AGE: Duration = Duration::from_millis(250);
/// Pause after a failed accept (e.g. out of descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Connections the kernel queues for us while the accept loop catches up (Linux caps it at
/// `net.core.somaxconn`).
const BACKLOG: u32 = 4096;

/// A listener on `addr` with a deep accept queue, so a burst of connections does not make
/// clients wait a SYN retransmission (1 s) to get in.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Connections served at once with `open_files` descriptors.
pub(crate) fn connection_budget(open_files: u64) -> usize {
    let budget =
        (open_files.saturating_sub(RESERVED_FDS) / FDS_PER_CONNECTION).max(MIN_CONNECTIONS);
    usize::try_from(budget).unwrap_or(usize::MAX)
}

/// This process's open-file limit (the soft one, which is what `open` and `accept` obey).
fn open_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit};
    getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft)
}

/// Serves `router` on `listener` until `shutdown`, then lets each connection finish its
/// response (up to [`SHUTDOWN_GRACE`]).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) {
    let budget = limits
        .max_connections
        .unwrap_or_else(|| connection_budget(open_file_limit()));
    tracing::info!(
        "http: at most {budget} connections at once, request headers within {:?}",
        limits.header_timeout
    );
    let permits = Arc::new(Semaphore::new(budget));
    let open = Arc::new(Connections::default());
    let tasks = TaskTracker::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(CONNECTION_BUFFER);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("http: cannot accept a connection: {e}");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        // At the limit, closing an idle connection makes room; the new one waits for it to be
        // gone, so no more than `budget` (plus this one) descriptors are ever held.
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let permit = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    permit = make_room(&open, &permits) => permit,
                };
                match permit {
                    Some(permit) => permit,
                    None => break,
                }
            }
        };
        let (id, entry) = open.add();
        let open = open.clone();
        let connection = serve_connection(
            builder.clone(),
            stream,
            router.clone(),
            entry,
            shutdown.clone(),
        );
        tasks.spawn(async move {
            connection.await;
            open.remove(id);
            drop(permit);
        });
    }
    tasks.close();
    tasks.wait().await;
}

/// Closes idle connections, oldest first and each once it is [`MIN_AGE`] old, until a place
/// is free; `None` once the semaphore is closed.
async fn make_room(open: &Connections, permits: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
    loop {
        let young = match open.close_oldest_idle(MIN_AGE) {
            Eviction::TooYoung(left) => left,
            Eviction::Closed | Eviction::NoneIdle => {
                return permits.clone().acquire_owned().await.ok();
            }
        };
        tokio::select! {
            permit = permits.clone().acquire_owned() => return permit.ok(),
            _ = tokio::time::sleep(young) => {}
        }
    }
}

async fn serve_connection(
    builder: http1::Builder,
    stream: TcpStream,
    router: Router,
    entry: Entry,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(router);
    let busy = entry.busy.clone();
    let service = hyper::service::service_fn(move |request: axum::http::Request<Incoming>| {
        let in_flight = InFlight::enter(&busy);
        let response = service.call(request);
        async move {
            let response = response.await?;
            Ok::<_, Infallible>(response.map(|body| Tracked {
                body,
                _in_flight: in_flight,
            }))
        }
    });
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = entry.close.cancelled() => {}
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
        }
    }
}

/// The open connections in the order they came, each with its requests in flight.
#[derive(Default)]
struct Connections {
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, Entry>>,
}

#[derive(Clone)]
struct Entry {
    opened: Instant,
    /// Requests whose response is not yet sent in full.
    busy: Arc<AtomicUsize>,
    /// Closes the connection at once.
    close: CancellationToken,
}

impl Connections {
    fn add(&self) -> (u64, Entry) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            opened: Instant::now(),
            busy: Arc::new(AtomicUsize::new(0)),
            close: CancellationToken::new(),
        };
        self.lock().insert(id, entry.clone());
        (id, entry)
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Closes the connection open longest among those with no request in flight, unless it
    /// is younger than `min_age` (it may not have been read yet).
    fn close_oldest_idle(&self, min_age: Duration) -> Eviction {
        let mut open = self.lock();
        let Some((&id, entry)) = open
            .iter()
            .find(|(_, e)| e.busy.load(Ordering::Acquire) == 0)
        else {
            return Eviction::NoneIdle;
        };
        let age = entry.opened.elapsed();
        if age < min_age {
            return Eviction::TooYoung(min_age - age);
        }
        if let Some(entry) = open.remove(&id) {
            entry.close.cancel();
        }
        Eviction::Closed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What [`Connections::close_oldest_idle`] did.
#[derive(Debug, PartialEq, Eq)]
enum Eviction {
    Closed,
    /// The oldest idle connection reaches the minimum age after this long.
    TooYoung(Duration),
    NoneIdle,
}

/// Counts one request as in flight until its response body is sent or dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(busy: &Arc<AtomicUsize>) -> Self {
        busy.fetch_add(1, Ordering::AcqRel);
        Self(busy.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in flight while it is being sent.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_leaves_descriptors_for_the_rest() {
        assert_eq!(connection_budget(1024), 448);
        assert_eq!(connection_budget(65536), 32704);
        assert_eq!(connection_budget(100), 16);
    }

    #[test]
    fn only_idle_connections_are_closed_oldest_first() {
        let open = Connections::default();
        let (_, first) = open.add();
        let (_, second) = open.add();
        let (_, third) = open.add();
        let in_flight = InFlight::enter(&first.busy);
        let hour = Duration::from_secs(3600);
        assert!(
            matches!(open.close_oldest_idle(hour), Eviction::TooYoung(left) if left > hour / 2)
        );
        assert!(!second.close.is_cancelled(), "too young to be closed");
        assert_eq!(open.close_oldest_idle(Duration::ZERO), Eviction::Closed);
        assert!(!first.close.is_cancelled() && second.close.is_cancelled());
        assert_eq!(open.close_oldest_idle(Duration::ZERO), Eviction::Closed);
        assert!(third.close.is_cancelled());
        assert_eq!(
            open.close_oldest_idle(Duration::ZERO),
            Eviction::NoneIdle,
            "the busy one stays"
        );
        drop(in_flight);
        assert_eq!(open.close_oldest_idle(Duration::ZERO), Eviction::Closed);
        assert!(first.close.is_cancelled());
    }
}
