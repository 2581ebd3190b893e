//! drover's controller: consumes submissions and agent events, schedules each run's DAG, keeps
//! durable state in sled, stores artifacts and logs, and serves the HTTP API.

pub mod cache;
pub mod scheduler;
