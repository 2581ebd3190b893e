//! What drover's tests and benchmarks share, so each mechanism exists once: waiting on a
//! condition with a deadline ([`wait`]), readiness signals ([`ready`]), child processes in their
//! own process group, killed on drop ([`process`]), and a namespace of their own on the broker
//! ([`namespace`]). Used as a dev-dependency and by `drover-bench`; never by shipped code.

pub mod namespace;
pub mod process;
pub mod ready;
pub mod wait;

pub use namespace::{
    AMQP_URL, close_connections, delete_namespace, delete_namespace_blocking, fresh_namespace,
};
pub use process::{ChildProcess, Processes};
pub use wait::{Check, Deadline, Observation, WaitError, eventually, eventually_async};
