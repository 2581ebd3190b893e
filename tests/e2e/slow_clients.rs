//! Clients that hold the controller without finishing anything: 20,000 connections that never
//! complete a request line, against a controller limited to 1,024 open files, are each closed
//! within the header timeout while `/healthz` keeps answering within a second; 500 clients
//! reading a 200 MiB log slowly leave the controller's memory bounded.

use crate::harness::{Cluster, text};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// The controller's default header timeout (`HttpLimits::header_timeout`).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection may spend in the kernel's accept queue on top of the header timeout.
const QUEUE_SLACK: Duration = Duration::from_secs(5);
const STALLED: usize = 20_000;
/// Stalled connections of ours open at once; each thousand comes from its own loopback address
/// so the flood does not run out of ephemeral ports.
const IN_FLIGHT: usize = 1_000;
const PER_SOURCE: usize = 1_000;
/// The open-file limit the controller runs with.
const CONTROLLER_FILES: u64 = 1024;

fn controller_address(c: &Cluster) -> SocketAddr {
    c.url.trim_start_matches("http://").parse().unwrap()
}

/// A field of `/proc/PID/status` in kB, or of `/proc/PID/limits`.
fn proc_field(pid: u32, file: &str, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/{file}"));
    line[field.len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad line {line:?}"))
}

fn rss_mib(pid: u32) -> f64 {
    proc_field(pid, "status", "VmRSS:") as f64 / 1024.0
}

/// `GET /healthz` on a new connection; how long the whole answer took.
async fn healthz(addr: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(Duration::from_secs(5), exchange).await {
        Ok(Ok(answer)) if answer.starts_with(b"HTTP/1.1 200") => Ok(started.elapsed()),
        Ok(Ok(answer)) => Err(String::from_utf8_lossy(&answer).into_owned()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

/// Opens a connection from `source`, sends half a request line and waits for the controller
/// to close it; how long that took from the connection's start.
async fn stall(addr: SocketAddr, source: Ipv4Addr) -> Result<Duration, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::from((source, 0)))
        .map_err(|e| e.to_string())?;
    let mut stream = tokio::time::timeout(Duration::from_secs(30), socket.connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let opened = Instant::now();
    // A write may already find it closed: that is the outcome waited for.
    let _ = stream.write_all(b"GET /api/v1/runs HT").await;
    let mut rest = Vec::new();
    match tokio::time::timeout(HEADER_TIMEOUT + QUEUE_SLACK, stream.read_to_end(&mut rest)).await {
        Ok(_) if rest.is_empty() || rest.starts_with(b"HTTP/1.1 408") => Ok(opened.elapsed()),
        Ok(_) => Err(format!("answered {:?}", String::from_utf8_lossy(&rest))),
        Err(_) => Err(format!("still open after {:?}", opened.elapsed())),
    }
}

#[test]
fn stalled_connections_are_closed_and_healthz_still_answers() {
    // The controller inherits a soft limit of 1,024 open files; this process takes its hard
    // limit back for the flood.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= IN_FLIGHT as u64 + 1024,
        "needs {IN_FLIGHT} descriptors, hard limit {hard}"
    );
    setrlimit(Resource::RLIMIT_NOFILE, CONTROLLER_FILES, hard).unwrap();
    let mut c = Cluster::new();
    c.start_controller_with(&["controller".into()]);
    setrlimit(Resource::RLIMIT_NOFILE, hard.max(soft), hard).unwrap();
    let pid = c.pid("controller");
    assert_eq!(
        proc_field(pid, "limits", "Max open files"),
        CONTROLLER_FILES
    );
    let addr = controller_address(&c);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    let (closed, failures, probes) = rt.block_on(async {
        let done = Arc::new(AtomicBool::new(false));
        let probing = done.clone();
        let probe = tokio::spawn(async move {
            let mut answers = Vec::new();
            while !probing.load(Ordering::Relaxed) {
                answers.push(healthz(addr).await);
                // Paces the probe; nothing waits on readiness here.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            answers
        });
        let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let failed = Arc::new(AtomicBool::new(false));
        let mut flood = tokio::task::JoinSet::new();
        for i in 0..STALLED {
            // One connection held too long fails the test: no need to open the rest.
            if failed.load(Ordering::Relaxed) {
                break;
            }
            let slot = slots.clone().acquire_owned().await.unwrap();
            let source = Ipv4Addr::new(127, 0, 1 + (i / PER_SOURCE) as u8, 1);
            let failed = failed.clone();
            flood.spawn(async move {
                let outcome = stall(addr, source).await;
                failed.fetch_or(outcome.is_err(), Ordering::Relaxed);
                drop(slot);
                outcome
            });
        }
        let mut closed = Vec::new();
        let mut failures = Vec::new();
        while let Some(outcome) = flood.join_next().await {
            match outcome.unwrap() {
                Ok(took) => closed.push(took),
                Err(e) => failures.push(e),
            }
        }
        done.store(true, Ordering::Relaxed);
        (closed, failures, probe.await.unwrap())
    });
    let wall = started.elapsed();

    let slowest_close = closed.iter().max().copied().unwrap_or_default();
    let answered: Vec<Duration> = probes
        .iter()
        .filter_map(|p| p.as_ref().ok().copied())
        .collect();
    let slowest_health = answered.iter().max().copied().unwrap_or_default();
    let refused: Vec<&String> = probes.iter().filter_map(|p| p.as_ref().err()).collect();
    eprintln!(
        "{} stalled connections closed in {wall:?}, slowest after {slowest_close:?}; {} healthz probes, slowest {slowest_health:?}",
        closed.len(),
        probes.len()
    );
    eprintln!(
        "controller: {} failed accepts",
        c.process_log("controller").matches("cannot accept").count()
    );
    assert!(
        failures.is_empty(),
        "{} connections not closed in time ({} were), e.g. {:?}",
        failures.len(),
        closed.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(closed.len(), STALLED);
    assert!(slowest_close <= HEADER_TIMEOUT + QUEUE_SLACK);
    assert!(
        probes.len() >= 5,
        "the flood ended before /healthz was probed much"
    );
    assert!(
        refused.is_empty(),
        "/healthz failed during the flood: {refused:?}"
    );
    assert!(
        slowest_health < Duration::from_secs(1),
        "/healthz took {slowest_health:?} during the flood"
    );
    let log = c.process_log("controller");
    let refused_accepts = log.matches("cannot accept").count();
    assert_eq!(
        refused_accepts, 0,
        "the controller ran out of descriptors:\n{log}"
    );
    let after = rt.block_on(healthz(addr));
    assert!(after.is_ok(), "{after:?}\n{}", c.process_log("controller"));
}

const TALK: &str = r#"
[pipeline]
name = "talk"
project = "e2e"
[[step]]
name = "talk"
command = ["sh", "-c", "echo start"]
"#;

/// Readers of the log: four in five on the event stream, the others on the raw bytes.
const READERS: usize = 500;
const LOG_BYTES: u64 = 200 << 20;
/// The most the controller's resident memory may grow while they read. By design a log stream
/// holds at most about 195 KiB (two queued 32 KiB events, JSON-encoded, one being written, and
/// hyper's 64 KiB buffer), so 500 readers about 95 MiB; twice that leaves room for the
/// allocator, which on a loaded machine was measured at +104 to +159 MiB. Unbounded buffering
/// (what this guards against) grew the controller by 3.6 GiB with these readers.
const RSS_BOUND_MIB: f64 = 192.0;

/// Sends `request` on a socket with a small receive buffer, then reads 1 KiB every 100 ms
/// until `stop`.
async fn slow_reader(addr: SocketAddr, request: String, stop: Arc<AtomicBool>) -> usize {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut total = 0;
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    total
}

#[test]
fn slow_readers_of_a_long_log_leave_memory_bounded() {
    let c = Cluster::up(1, &[]);
    let (out, doc) = c.run_wait(&c.pipeline("talk.toml", TALK), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let run = doc["run_id"].as_str().unwrap().to_string();
    // The step's log grows to 200 MiB (zeros, sparse on disk).
    let log = c
        .data_dir()
        .join("logs")
        .join(&run)
        .join("talk")
        .join("1.log");
    let file = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    file.set_len(LOG_BYTES).unwrap();
    let pid = c.pid("up");
    let addr = controller_address(&c);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // One full read first, so what the first request allocates is in the baseline.
    rt.block_on(healthz(addr)).unwrap();
    let baseline = rss_mib(pid);

    let (peak, read) = rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let mut readers = tokio::task::JoinSet::new();
        for i in 0..READERS {
            let path = if i % 5 == 0 { "log" } else { "log/stream" };
            let request = format!(
                "GET /api/v1/runs/{run}/steps/talk/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            );
            readers.spawn(slow_reader(addr, request, stop.clone()));
        }
        let mut peak: f64 = 0.0;
        // Long enough for every stream to fill whatever it buffers.
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            peak = peak.max(rss_mib(pid));
            // Samples memory; nothing waits on readiness here.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let mut read = 0;
        while let Some(n) = readers.join_next().await {
            read += n.unwrap();
        }
        (peak, read)
    });
    eprintln!(
        "{READERS} slow readers of a {} MiB log read {} KiB in all; controller RSS {baseline:.0} MiB before, {peak:.0} MiB at most while they read (+{:.0} MiB, bound +{RSS_BOUND_MIB} MiB)",
        LOG_BYTES >> 20,
        read / 1024,
        peak - baseline
    );
    assert!(read >= READERS * 1024, "every reader got bytes: {read}");
    assert!(
        peak - baseline < RSS_BOUND_MIB,
        "RSS grew from {baseline:.0} MiB to {peak:.0} MiB"
    );
}
