//! A loopback TCP forwarder to the shared broker that a test can cut: one process loses its
//! broker connection while every other process of the test keeps theirs.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub struct Forwarder {
    pub port: u16,
    cut: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
    /// Both ends of every forwarded connection, to shut down when cut.
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Forwarder {
    /// Forwards a free loopback port to `127.0.0.1:target`.
    pub fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("bound").port();
        let forwarder = Self {
            port,
            cut: Arc::new(AtomicBool::new(false)),
            closed: Arc::new(AtomicBool::new(false)),
            streams: Arc::new(Mutex::new(Vec::new())),
        };
        let (cut, closed, streams) = (
            forwarder.cut.clone(),
            forwarder.closed.clone(),
            forwarder.streams.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if closed.load(Ordering::SeqCst) {
                    break;
                }
                // While cut, a connection is closed as soon as it is accepted.
                let Ok(client) = client else { continue };
                if cut.load(Ordering::SeqCst) {
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let mut held = streams.lock().unwrap_or_else(|e| e.into_inner());
                for s in [&client, &upstream] {
                    if let Ok(clone) = s.try_clone() {
                        held.push(clone);
                    }
                }
                drop(held);
                pipe(&client, &upstream);
                pipe(&upstream, &client);
            }
        });
        forwarder
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Closes every forwarded connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let mut held = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        for s in held.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` to `to` on a thread of its own until either side closes.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::SeqCst);
        self.cut();
        // Wakes the accepting thread so it sees `closed`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
