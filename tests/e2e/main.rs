//! End-to-end tests: the real `drover` binary against the real RabbitMQ, one namespace per test.

#![allow(clippy::unwrap_used)] // tests unwrap freely; helpers here are test code too

mod harness;

mod agent_token;
mod artifacts;
mod automation;
mod bounds;
mod broker_users;
mod browser;
mod callbacks;
mod channel;
mod config;
mod controller_urls;
mod dead_letters;
mod decorators;
mod drivers;
mod faults;
mod functions;
mod hosts;
mod invalid;
mod leader;
mod limits;
mod live;
mod local_runs;
mod operator;
mod pipelines;
mod queues;
mod restart;
mod run_as;
mod scalars;
mod secrets;
mod seed;
mod signing;
mod slow_clients;
mod tasks;
mod tls;
mod uv_install;
mod warm;
