//! Every HTTP route of a token-protected controller against the real broker: 401 without the
//! token, 404 for what does not exist, the event streams (run changes, the run view, a step's
//! log) and the UI pages and assets.

#![allow(clippy::unwrap_used)] // tests unwrap freely; helpers here are test code too

mod auth;
mod cut_off;
mod dynamic;
mod flow;
mod hardening;
mod logtail;
mod own_queues;
mod rerun;
mod scalars;
mod server;
#[path = "../support/mod.rs"]
mod support;
mod uploads;
