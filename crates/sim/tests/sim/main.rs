//! Drives the simulator with a hand-written WebSocket client (not shardkeeper's session
//! code): every rule gets its close code or op 9 and its violation; a well-behaved script
//! gets none.
#![allow(clippy::expect_used, reason = "test helpers fail the test loudly")]

mod client;
mod faults;
mod rules;
mod scripts;
mod transport;
