//! The pure, time-driven logic of shardkeeper: everything about a shard's gateway
//! session and about identify scheduling that can be decided without touching a socket.
//!
//! This crate performs no I/O and reads no clock: no tokio, no actix, no sled, no
//! sockets. Every function takes the current `Instant` as an argument and every random
//! choice comes from a seeded generator, so each behaviour is reproducible in a test.
//! The actix shell in `shardkeeper-cluster` feeds it inputs and performs its actions.
//!
//! Main types:
//! - [`ShardSession`]: one shard's session. Inputs ([`Input`]) and requests
//!   ([`Command`]) go in; [`Action`]s come out in order, and [`ShardSession::poll_timeout`]
//!   names the one timer to arm. It heartbeats (jittered first beat, immediate answer to
//!   op 1, zombie detection), chooses RESUME or IDENTIFY, handles op 7 and op 9, every
//!   close code, backoff with jitter capped at 60 s, and the 120-per-60 s send budget.
//! - [`IdentifySchedule`]: who may IDENTIFY when: one grant per `max_concurrency` bucket
//!   per window, FIFO with lower shard ids first, the daily session-start budget, and a
//!   snapshot that survives a restart.
//! - [`SendLimiter`]: the per-connection send budget with a reserve for heartbeats.
//!
//! Delivery order is part of the contract: a dispatch's [`Action::Emit`] always comes
//! before any [`Action::Persist`] that covers its sequence.
//!
//! Layout:
//! - `session.rs` (+ `session/inbound.rs`, `session/transition.rs`): the state machine
//! - `state.rs`: the `State` enum, each variant owning its data
//! - `event.rs`: inputs, actions, commands, notices
//! - `heartbeat.rs`, `backoff.rs`, `limiter.rs`, `clock.rs`: timing pieces
//! - `quarantine.rs`: parking a shard whose connections keep failing before READY
//! - `schedule.rs`: the identify schedule
//! - `config.rs`: typed session configuration

mod backoff;
mod clock;
mod config;
mod event;
mod heartbeat;
mod limiter;
mod quarantine;
mod schedule;
mod session;
mod state;

pub use config::{SessionConfig, Timing};
pub use event::{
    Action, ClientPayload, Command, CommandError, Dispatch, Input, Notice, ResumeInfo,
};
pub use limiter::{SEND_BUDGET, SEND_WINDOW, SendClass, SendLimiter};
pub use quarantine::QuarantinePolicy;
pub use schedule::{
    BucketStatus, IdentifySchedule, ScheduleConfig, ScheduleSnapshot, ScheduleStatus,
};
pub use session::{SessionStats, ShardSession};
pub use state::StateKind;
