//! Test hosts on one machine: a network namespace per host joined to the root namespace by a veth
//! pair, and TCP forwarders that let each host reach the loopback broker and controller.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use tokio::net::{TcpListener, TcpStream};

/// One simulated host.
pub struct Host {
    /// The namespace processes of this host run in.
    pub netns: String,
    /// The root side of its link; setting it down cuts the host off.
    link: String,
    /// The root namespace's address on this host's link: where its forwarders listen.
    pub gateway: Ipv4Addr,
    /// The host's own address, on its side of the link.
    pub address: Ipv4Addr,
}

/// Several hosts; removed (namespaces, links, forwarders) on drop.
pub struct TestNet {
    pub hosts: Vec<Host>,
    runtime: tokio::runtime::Runtime,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestNet {
    /// Creates `n` hosts with addresses in a /24 per host under a random 10.x prefix, and
    /// forwards each host's `<gateway>:<port>` to `127.0.0.1:<port>` for every port given.
    pub fn new(n: usize, ports: &[u16]) -> Self {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let second = 100 + (u8::from_str_radix(&tag[..2], 16).unwrap_or(0) % 150);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let mut hosts = Vec::new();
        for i in 0..n {
            let netns = format!("drover-{tag}-h{i}");
            let link = format!("dv{tag}r{i}");
            let inner = format!("dv{tag}h{i}");
            let third = u8::try_from(i + 1).expect("few hosts");
            let gateway = Ipv4Addr::new(10, second, third, 1);
            let address = Ipv4Addr::new(10, second, third, 2);
            ip(&["netns", "add", &netns]);
            ip(&["link", "add", &link, "type", "veth", "peer", "name", &inner]);
            ip(&["link", "set", &inner, "netns", &netns]);
            ip(&["addr", "add", &format!("{gateway}/24"), "dev", &link]);
            ip(&["link", "set", &link, "up"]);
            let exec = |args: &[&str]| {
                let mut full = vec!["netns", "exec", &netns, "ip"];
                full.extend_from_slice(args);
                ip(&full);
            };
            exec(&["addr", "add", &format!("{address}/24"), "dev", &inner]);
            exec(&["link", "set", &inner, "up"]);
            exec(&["link", "set", "lo", "up"]);
            for &port in ports {
                let listen = SocketAddr::from((gateway, port));
                let listener = runtime
                    .block_on(TcpListener::bind(listen))
                    .unwrap_or_else(|e| panic!("forwarder on {listen}: {e}"));
                runtime.spawn(forward(listener, port));
            }
            hosts.push(Host {
                netns,
                link,
                gateway,
                address,
            });
        }
        Self { hosts, runtime }
    }

    /// Cuts a host off (its link goes down) or brings it back.
    pub fn set_link(&self, host: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["link", "set", &self.hosts[host].link, state]);
    }
}

/// Accepts connections and pipes each to the same port on loopback.
async fn forward(listener: TcpListener, port: u16) {
    while let Ok((mut inbound, _)) = listener.accept().await {
        tokio::spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", port)).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "del", &host.netns])
                .output();
            let _ = Command::new("ip")
                .args(["link", "del", &host.link])
                .output();
        }
        let _ = &self.runtime;
    }
}
