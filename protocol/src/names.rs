//! AMQP object names for one namespace: user queues keep their names in the default namespace.

use crate::ids::{AgentId, IdError, QueueName};
use std::fmt;

/// The default namespace; it adds no prefix to user queues.
pub const DEFAULT_NAMESPACE: &str = "drover";
/// The queue the controller consumes submissions from (a user queue, as in ClearML).
pub const SERVICES_QUEUE: &str = "services";

/// The queue pipeline drivers (the processes that run a decorator pipeline's function) are
/// published to; like [`SERVICES_QUEUE`] it is reserved and no ordinary step may name it.
pub const DRIVERS_QUEUE: &str = "drivers";

/// Names of every queue and exchange in one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    ns: String,
}

impl Names {
    /// `ns` must be a valid queue-name component (`[A-Za-z0-9_.-]`).
    pub fn new(ns: &str) -> Result<Self, IdError> {
        QueueName::new(ns).map_err(|e| IdError {
            kind: "namespace",
            ..e
        })?;
        Ok(Self { ns: ns.to_string() })
    }

    pub fn namespace(&self) -> &str {
        &self.ns
    }

    fn is_default(&self) -> bool {
        self.ns == DEFAULT_NAMESPACE
    }

    /// The broker queue for a user queue: `default` stays `default` unless the namespace is not the default.
    pub fn user_queue(&self, queue: &QueueName) -> String {
        if self.is_default() {
            queue.to_string()
        } else {
            format!("{}.{}", self.ns, queue)
        }
    }

    /// The user-facing name of a broker queue, if it belongs to this namespace's user queues.
    pub fn user_queue_of(&self, broker_queue: &str) -> Option<QueueName> {
        let name = if self.is_default() {
            broker_queue
        } else {
            broker_queue.strip_prefix(&format!("{}.", self.ns))?
        };
        QueueName::new(name).ok()
    }

    /// The `services` queue: submissions and aborts for the controller.
    pub fn services(&self) -> String {
        self.user_queue(&QueueName::services())
    }

    /// Agent -> controller events.
    pub fn events(&self) -> String {
        format!("{}.events", self.ns)
    }

    /// Controller -> agents control messages (topic exchange).
    pub fn control_exchange(&self) -> String {
        format!("{}.control", self.ns)
    }

    /// Where undecodable or invalid messages end up.
    pub fn dead(&self) -> String {
        format!("{}.dead", self.ns)
    }

    /// The exchange submitters publish to; bound to the `services` queue only.
    pub fn submit_exchange(&self) -> String {
        format!("{}.submit", self.ns)
    }

    /// The exchange the controller publishes step jobs to; bound to every job queue, with the
    /// broker queue's name as routing key.
    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.ns)
    }

    /// The exchange agents publish events to; bound to the events queue only. It has the
    /// queue's name: RabbitMQ keeps exchanges and queues apart.
    pub fn events_exchange(&self) -> String {
        self.events()
    }

    /// The exchange dead letters are published to; bound to the dead-letter queue only.
    pub fn dead_exchange(&self) -> String {
        self.dead()
    }

    /// The controller's state journal: a stream, and the direct exchange (of the same name)
    /// the controller appends to it through.
    pub fn journal(&self) -> String {
        format!("{}.journal", self.ns)
    }

    /// Snapshots of the controller's journaled state: a stream, and the direct exchange (of
    /// the same name) the controller appends to it through.
    pub fn snapshot(&self) -> String {
        format!("{}.snapshot", self.ns)
    }

    /// The controller lock: an exclusive queue only the active controller's connection holds.
    pub fn controller_lock(&self) -> String {
        format!("{}.controller", self.ns)
    }

    /// Where the active controller makes its public URL known to standbys: a durable queue
    /// holding the newest record only, and the direct exchange (of the same name) it is
    /// published through.
    pub fn leader(&self) -> String {
        format!("{}.leader", self.ns)
    }

    /// An agent's own control queue (it outlives a lost connection, see `drover_amqp`).
    pub fn agent_control_queue(&self, agent: &AgentId) -> String {
        format!("{}{agent}", self.agent_control_prefix())
    }

    /// What every agent's control queue name starts with.
    fn agent_control_prefix(&self) -> String {
        format!("{}.agent.", self.ns)
    }

    /// The names this namespace uses for its own queues, streams and exchanges, each with what
    /// it is. The `services` and `drivers` queues are user queues (see [`QueueName::is_reserved`]).
    fn own_names(&self) -> [(String, &'static str); 9] {
        [
            (self.events(), "the queue agents report step events to"),
            (
                self.control_exchange(),
                "the exchange control messages go through",
            ),
            (self.dead(), "the dead-letter queue"),
            (
                self.submit_exchange(),
                "the exchange submissions go through",
            ),
            (self.jobs_exchange(), "the exchange step jobs go through"),
            (self.journal(), "the controller's state journal"),
            (self.snapshot(), "the controller's state snapshots"),
            (self.controller_lock(), "the controller's lock"),
            (self.leader(), "the active controller's address"),
        ]
    }

    /// Whether user queue `queue` would land on a name this namespace uses itself (its events
    /// queue, journal, an agent's control queue...), and on which: its jobs would go there, or
    /// an agent serving it would take what is not a job. `None` for every other queue.
    pub fn collision(&self, queue: &QueueName) -> Option<Collision> {
        let broker_queue = self.user_queue(queue);
        if let Some((name, what)) = self
            .own_names()
            .into_iter()
            .find(|(name, _)| *name == broker_queue)
        {
            return Some(Collision { name, what });
        }
        let prefix = self.agent_control_prefix();
        broker_queue.starts_with(&prefix).then(|| Collision {
            name: format!("{prefix}*"),
            what: "the agents' control queues",
        })
    }
}

/// A user queue whose broker name is one the namespace uses itself: see [`Names::collision`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    /// The namespace's own name (`<ns>.agent.*` for the agents' control queues).
    pub name: String,
    /// What drover uses it for.
    pub what: &'static str,
}

impl fmt::Display for Collision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "it is {} ({}), which drover uses itself",
            self.name, self.what
        )
    }
}

/// Routing key of control messages for one agent.
pub fn agent_routing_key(agent: &AgentId) -> String {
    format!("agent.{agent}")
}

/// Routing key of control messages for every agent.
pub const ALL_AGENTS_ROUTING_KEY: &str = "all";

/// The `services` queue name as a [`QueueName`]: [`QueueName::services`].
pub fn services_queue() -> QueueName {
    QueueName::services()
}

impl fmt::Display for Names {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> QueueName {
        QueueName::new(name).unwrap()
    }

    #[test]
    fn default_namespace_keeps_user_queue_names() {
        let names = Names::new(DEFAULT_NAMESPACE).unwrap();
        assert_eq!(names.user_queue(&q("default")), "default");
        assert_eq!(names.services(), "services");
        assert_eq!(names.events(), "drover.events");
        assert_eq!(names.dead(), "drover.dead");
        assert_eq!(names.submit_exchange(), "drover.submit");
        assert_eq!(names.jobs_exchange(), "drover.jobs");
    }

    #[test]
    fn other_namespaces_prefix_everything() {
        let names = Names::new("t1").unwrap();
        assert_eq!(names.user_queue(&q("default")), "t1.default");
        assert_eq!(names.services(), "t1.services");
        assert_eq!(names.control_exchange(), "t1.control");
        assert_eq!(names.controller_lock(), "t1.controller");
        assert_eq!(names.leader(), "t1.leader");
        assert_eq!(names.user_queue_of("t1.gpu"), Some(q("gpu")));
        assert_eq!(names.user_queue_of("t2.gpu"), None);
    }

    /// The system names a user queue collides with, for each name in `queues`.
    fn collisions(names: &Names, queues: &[&str]) -> Vec<Option<String>> {
        queues
            .iter()
            .map(|name| names.collision(&q(name)).map(|c| c.name))
            .collect()
    }

    #[test]
    fn user_queues_on_the_default_namespace_own_names_collide() {
        let names = Names::new(DEFAULT_NAMESPACE).unwrap();
        let own = [
            "drover.events",
            "drover.control",
            "drover.dead",
            "drover.submit",
            "drover.jobs",
            "drover.journal",
            "drover.snapshot",
            "drover.controller",
            "drover.leader",
        ];
        for name in own {
            assert_eq!(collisions(&names, &[name]), [Some(name.to_string())]);
        }
        assert_eq!(
            collisions(&names, &["drover.agent.x", "drover.agent.host-1.2"]),
            [Some("drover.agent.*".into()), Some("drover.agent.*".into())]
        );
        let agent = AgentId::new("gpu-box").unwrap();
        let control = names.agent_control_queue(&agent);
        assert!(names.collision(&q(&control)).is_some(), "{control}");
        // Unprefixed in the default namespace, these are plain user queues.
        let allowed = [
            "default",
            "gpu",
            "services",
            "drivers",
            "events",
            "journal",
            "agent.x",
            "events2",
            "agentx",
            "drover.agentx",
            "drover.events2",
            "drover",
        ];
        assert_eq!(collisions(&names, &allowed), vec![None; allowed.len()]);
    }

    #[test]
    fn user_queues_named_like_another_namespace_own_objects_collide() {
        let names = Names::new("t1").unwrap();
        let collided = collisions(
            &names,
            &["events", "control", "dead", "submit", "jobs", "journal"],
        );
        let expected = ["events", "control", "dead", "submit", "jobs", "journal"]
            .map(|n| Some(format!("t1.{n}")));
        assert_eq!(collided, expected);
        assert_eq!(
            collisions(&names, &["snapshot", "controller", "leader", "agent.a"]),
            [
                Some("t1.snapshot".into()),
                Some("t1.controller".into()),
                Some("t1.leader".into()),
                Some("t1.agent.*".into()),
            ]
        );
        let why = names.collision(&q("journal")).unwrap().to_string();
        assert!(
            why.contains("t1.journal") && why.contains("journal"),
            "{why}"
        );
        let allowed = [
            "default",
            "gpu",
            "services",
            "drivers",
            "events2",
            "agentx",
            "t1.events",
            "drover.events",
            "agent",
            "leaders",
        ];
        assert_eq!(collisions(&names, &allowed), vec![None; allowed.len()]);
    }

    #[test]
    fn namespace_must_be_a_name() {
        assert!(Names::new("a/b").is_err());
        assert!(Names::new("").is_err());
    }
}
