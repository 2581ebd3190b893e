//! Readiness signals to wait on with [`crate::eventually`]: a file with content (such as the
//! controller's `<data-dir>/controller.url`), a line in a process's output, a listening port, a
//! controller's `/healthz` reporting the broker connected. Each is one look: `Ok` with what
//! it found, or `Err` saying what it saw instead.

use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;

/// The file in a controller's data dir that holds its base URL once it listens.
pub const CONTROLLER_URL_FILE: &str = "controller.url";

/// The trimmed content of `path` once it is not empty.
pub fn file_text(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
        Ok(_) => Err(format!("{} is empty", path.display())),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The base URL a controller with data dir `data_dir` listens on, once it has written it.
pub fn controller_url(data_dir: &Path) -> Result<String, String> {
    file_text(&data_dir.join(CONTROLLER_URL_FILE))
}

/// The first line of the file at `path` that `pick` accepts, and what `pick` made of it.
pub fn line_in<T>(path: &Path, mut pick: impl FnMut(&str) -> Option<T>) -> Result<T, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines().find_map(&mut pick).ok_or_else(|| {
        let last = text.lines().last().unwrap_or("(no output)");
        format!("no such line in {}; the last one: {last}", path.display())
    })
}

/// Whether something accepts TCP connections at `addr`.
pub fn listening(addr: impl ToSocketAddrs + std::fmt::Debug) -> Result<(), String> {
    TcpStream::connect(&addr)
        .map(drop)
        .map_err(|e| format!("nothing listens on {addr:?}: {e}"))
}

/// Whether nothing accepts TCP connections at `addr` any more.
pub fn not_listening(addr: impl ToSocketAddrs + std::fmt::Debug) -> Result<(), String> {
    match TcpStream::connect(&addr) {
        Ok(_) => Err(format!("{addr:?} still accepts connections")),
        Err(_) => Ok(()),
    }
}

/// A loopback port nothing listened on a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `n` different loopback ports nothing listened on a moment ago. Each is held until all are
/// picked: two calls of [`free_port`] in a row may return the same port.
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// Whether the controller at `base` answers `/healthz` with the broker connected.
pub async fn healthz(http: &reqwest::Client, base: &str) -> Result<(), String> {
    let url = format!("{base}/healthz");
    let resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| format!("GET {url}: {status}, not JSON: {e}"))?;
    if status.is_success() && body["status"] == "ok" && body["broker"] == "connected" {
        Ok(())
    } else {
        Err(format!("GET {url}: {status} {body}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Deadline, eventually};
    use std::time::Duration;

    #[test]
    fn a_file_is_ready_once_it_has_content() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join(CONTROLLER_URL_FILE);
        assert!(
            controller_url(dir.path())
                .unwrap_err()
                .contains("cannot read")
        );
        std::fs::write(&url, "\n").unwrap();
        assert!(
            controller_url(dir.path())
                .unwrap_err()
                .ends_with("is empty")
        );
        std::fs::write(&url, "http://127.0.0.1:4242\n").unwrap();
        assert_eq!(controller_url(dir.path()).unwrap(), "http://127.0.0.1:4242");
    }

    #[test]
    fn line_in_picks_the_first_accepted_line_or_names_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("front.log");
        std::fs::write(&log, "starting\n4711\n4712\n").unwrap();
        assert_eq!(line_in(&log, |l| l.parse::<u16>().ok()), Ok(4711));
        let missing = line_in(&log, |l| l.strip_prefix("port ").map(str::to_string));
        assert!(missing.unwrap_err().ends_with("the last one: 4712"));
    }

    #[test]
    fn a_port_listens_until_its_listener_is_dropped() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(listening(addr), Ok(()));
        assert!(not_listening(addr).is_err());
        drop(listener);
        eventually(
            Deadline::new("the port to close", Duration::from_secs(5)),
            || not_listening(addr),
        )
        .unwrap();
        assert!(listening(addr).unwrap_err().starts_with("nothing listens"));
    }

    /// Enough ports that ports picked one after the other would repeat one (the kernel picks
    /// from about 28,000 at random: a repeat among 400 is all but certain).
    #[test]
    fn free_ports_are_different_and_can_be_bound() {
        let ports = free_ports(400).unwrap();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        let _held: Vec<TcpListener> = ports
            .iter()
            .map(|p| TcpListener::bind(("127.0.0.1", *p)).unwrap())
            .collect();
    }

    #[test]
    fn a_free_port_can_be_bound() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).unwrap();
    }

    #[tokio::test]
    async fn healthz_needs_ok_and_a_connected_broker() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let bodies = [
            (503, r#"{"status":"degraded","broker":"disconnected"}"#),
            (200, r#"{"status":"ok","broker":"connected"}"#),
        ];
        tokio::spawn(async move {
            for (code, body) in bodies {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 1024];
                let _ = conn.read(&mut request).await.unwrap();
                let reply = format!(
                    "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                conn.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        let http = reqwest::Client::new();
        let down = healthz(&http, &base).await.unwrap_err();
        assert!(
            down.contains("503") && down.contains("disconnected"),
            "{down}"
        );
        assert_eq!(healthz(&http, &base).await, Ok(()));
    }
}
