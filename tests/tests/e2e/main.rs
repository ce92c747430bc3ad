//! End-to-end tests: the simulator and a cluster on 127.0.0.1, real sockets.
#![allow(clippy::expect_used, reason = "test helpers fail the test loudly")]

mod admin;
mod admin_spec;
mod alerts;
mod cluster;
mod commands;
mod dashboard;
mod faults;
mod harness;
mod operations;
mod persistence;
mod resilience;
mod sinks;
