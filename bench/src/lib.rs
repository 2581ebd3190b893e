//! drover's benchmarks: each figure measured several times, next to the limit it is
//! judged against measured in the same run, written as a Markdown table and as JSON.
//!
//! `bench/run` builds drover and this crate and calls [`suite::run`] through `drover-bench`.

pub mod amqp;
pub mod artifact;
pub mod celery;
pub mod cluster;
pub mod cpu;
pub mod decorator;
pub mod fanout;
pub mod footprint;
pub mod hop;
pub mod journal;
pub mod listing;
pub mod loglatency;
pub mod pyfanout;
pub mod report;
pub mod scale;
pub mod seed;
pub mod stats;
pub mod suite;
pub mod takeover;
