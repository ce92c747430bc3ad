//! Tests that spawn the real `shardkeeper` binary: CLI behaviour, and restarts (graceful
//! and `kill -9`) against the simulator with real sled files.
#![allow(clippy::expect_used, reason = "test helpers fail the test loudly")]

mod cluster;
mod cluster_faults;
mod commands;
mod crash;
mod http;
mod monitoring;
mod nodes;
mod proxy;
mod slow_reader;
mod support;
