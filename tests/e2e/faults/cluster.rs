//! A private RabbitMQ cluster of several nodes on this machine (each a [`PrivateBroker`] with
//! its own name, ports and directories), for tests that kill one node of a cluster. The shared
//! broker on 5672 is never touched.

use super::rabbit::PrivateBroker;
use crate::harness::wait_until;
use std::time::Duration;

pub struct RabbitCluster {
    pub nodes: Vec<PrivateBroker>,
    /// Nodes killed by the test, by index; they are not asked anything afterwards.
    killed: Vec<usize>,
    /// Each node's Erlang VM's operating system pid.
    pids: Vec<i32>,
}

impl RabbitCluster {
    /// Starts `n` nodes at once, then joins the second and later ones to the first
    /// (`stop_app`, `join_cluster`, `start_app`) and waits until every node listens.
    pub fn start(n: usize) -> Self {
        let began = std::time::Instant::now();
        let launched: Vec<PrivateBroker> =
            (0..n).map(|_| PrivateBroker::launch("", None)).collect();
        let nodes: Vec<PrivateBroker> = launched.into_iter().map(PrivateBroker::started).collect();
        let first = &nodes[0].node;
        for node in &nodes[1..] {
            node.ctl(&["stop_app"]);
            node.ctl(&["join_cluster", first]);
            node.ctl(&["start_app"]);
        }
        let pids = nodes.iter().map(PrivateBroker::os_pid).collect();
        let cluster = Self {
            nodes,
            killed: Vec::new(),
            pids,
        };
        for node in &cluster.nodes {
            node.await_startup();
        }
        let status = cluster.nodes[0].ctl(&["cluster_status", "--formatter", "json"]);
        for node in &cluster.nodes {
            assert!(status.contains(&node.node), "{} not in {status}", node.node);
        }
        eprintln!(
            "a cluster of {n} nodes started in {:.1} s",
            began.elapsed().as_secs_f64()
        );
        cluster
    }

    /// Every node's URL, whitespace-separated, starting with node `first`: the order a process
    /// tries them in.
    pub fn urls_from(&self, first: usize) -> String {
        let n = self.nodes.len();
        (0..n)
            .map(|k| self.nodes[(first + k) % n].url())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A node not killed, to ask about the cluster.
    fn live(&self) -> &PrivateBroker {
        (0..self.nodes.len())
            .find(|i| !self.killed.contains(i))
            .map(|i| &self.nodes[i])
            .expect("a live node")
    }

    /// The rows of `rabbitmqctl list_<what> -q --no-table-headers COLUMNS...` on a live node, each
    /// split at tabs into its columns.
    fn rows(&self, what: &str, columns: &[&str]) -> Result<Vec<Vec<String>>, String> {
        let mut args = vec![what, "-q", "--no-table-headers"];
        args.extend_from_slice(columns);
        let out = self.live().try_ctl(&args)?;
        Ok(out
            .lines()
            .map(|l| l.split('\t').map(|c| c.trim().to_string()).collect())
            .collect())
    }

    /// The second column of the first row whose first column is `key`, when not empty.
    fn lookup(&self, what: &str, columns: [&str; 2], key: &str) -> Result<String, String> {
        let rows = self.rows(what, &columns)?;
        rows.iter()
            .find(|r| r.len() == 2 && r[0] == key && !r[1].is_empty())
            .map(|r| r[1].clone())
            .ok_or_else(|| format!("no {key} in {what}: {rows:?}"))
    }

    /// The index of the node that leads quorum queue `queue`.
    pub fn leader_of(&self, queue: &str) -> usize {
        let leader = wait_until(
            &format!("a leader of queue {queue}"),
            Duration::from_secs(30),
            || self.lookup("list_queues", ["name", "leader"], queue),
        );
        self.index_of(&leader)
    }

    /// The index of the node a classic queue lives on: the node in its process id, which
    /// `rabbitmqctl` prints as `<NODE.A.B.C>`.
    pub fn node_of_queue(&self, queue: &str) -> usize {
        let pid = wait_until(
            &format!("the process of queue {queue}"),
            Duration::from_secs(30),
            || self.lookup("list_queues", ["name", "pid"], queue),
        );
        let node = pid
            .trim_matches(|c| c == '<' || c == '>')
            .rsplitn(4, '.')
            .last()
            .unwrap_or_default()
            .to_string();
        self.index_of(&node)
    }

    /// The index of the node that holds the connection whose name has every one of `parts`
    /// (a drover process names its connection by its role, host, pid and namespace, e.g.
    /// `drover controller on HOST pid N at URL (ns)`).
    pub fn node_of_connection(&self, parts: &[&str]) -> usize {
        let name = parts.join(" … ");
        let port = wait_until(
            &format!("connection {name:?}"),
            Duration::from_secs(30),
            || {
                // RabbitMQ 3.10 lists the name a client gives only inside its client properties.
                let rows = self.rows("list_connections", &["port", "client_properties"])?;
                rows.iter()
                    .find(|r| r.len() == 2 && parts.iter().all(|p| r[1].contains(p)))
                    .and_then(|r| r[0].parse::<u16>().ok())
                    .ok_or_else(|| format!("no connection {name:?} in {rows:?}"))
            },
        );
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node listens on {port}"))
    }

    fn index_of(&self, node: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.node == node)
            .unwrap_or_else(|| panic!("{node} is not a node of this cluster"))
    }

    /// `kill -9` of node `i`'s Erlang VM: no goodbye to clients or to the other nodes. Its pid
    /// was read at the start: asking the node through `rabbitmqctl` takes a second or more under
    /// load, long enough for a short run to end before the kill.
    pub fn kill(&mut self, i: usize) {
        let pid = self.pids[i];
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill -9 the node");
        self.killed.push(i);
    }

    /// Messages waiting in queue `queue`, as a live node counts them.
    pub fn depth(&self, queue: &str) -> Option<u64> {
        self.lookup("list_queues", ["name", "messages"], queue)
            .ok()?
            .parse()
            .ok()
    }
}
