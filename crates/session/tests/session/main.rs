//! Behavioural tests of the shard session and the identify schedule: scripted inputs at
//! explicit instants, and property tests over random input sequences.
#![allow(clippy::expect_used, reason = "test helpers fail the test loudly")]

mod closes;
mod harness;
mod lifecycle;
mod limits;
mod properties;
mod quarantine;
mod schedule;
