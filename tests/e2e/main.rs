//! End-to-end tests: the real `drover` binary against the real RabbitMQ, one namespace per test.

#![allow(clippy::unwrap_used)] // tests unwrap freely; helpers here are test code too

mod harness;

mod agent_token;
mod artifacts;
mod bounds;
mod broker_users;
mod browser;
mod channel;
mod config;
mod dead_letters;
mod decorators;
mod drivers;
mod faults;
mod functions;
mod hosts;
mod invalid;
mod limits;
mod live;
mod operator;
mod pipelines;
mod queues;
mod restart;
mod run_as;
mod secrets;
mod seed;
mod signing;
mod slow_clients;
mod tls;
mod warm;
