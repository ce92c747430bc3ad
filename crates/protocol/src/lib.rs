//! Wire types of the Discord gateway (API v10, JSON encoding) for shardkeeper.
//!
//! This crate performs no I/O: it has no sockets, no clock and no runtime. It turns
//! bytes into typed values and back, and nothing else. Everything that decides *when*
//! to send what lives in `shardkeeper-session`; everything that touches a socket lives
//! in `shardkeeper-cluster` and `shardkeeper-sim`.
//!
//! Main types:
//! - [`Envelope`]: a received payload with `op`, `s` and `t` read in one pass that
//!   checks the whole frame against the JSON grammar, and `d` kept as raw JSON
//!   ([`Raw`], owned: [`RawJson`]), so dispatch bodies are never parsed on the hot path.
//! - [`OpCode`] and [`CloseCode`]: every opcode and close code of the current docs, with
//!   what each one means for a client ([`CloseCode::is_fatal`], [`CloseCode::can_resume`]).
//! - Typed bodies in [`payload`]: HELLO, IDENTIFY, READY, RESUME, presence, voice state,
//!   guild member requests, soundboard and channel-info requests, `/gateway/bot`.
//! - [`Token`]: a secret whose `Debug` prints `<redacted>`.
//! - [`Intents`]: the intents bitfield with its documented names.
//! - [`Decoder`]: per-connection transport decompression (`zlib-stream`, `zstd-stream`).
//! - [`ShardId`] and [`shard_for_guild`]: shard routing.
//!
//! Layout:
//! - `opcode.rs`, `close.rs`: numeric codes and their meaning
//! - `envelope.rs`: inbound envelope parsing and outbound framing; `json.rs`: the
//!   one-pass JSON checker under it
//! - `payload.rs`: typed `d` bodies; `snowflake.rs`: ids as strings on the wire
//! - `token.rs`, `intents.rs`, `shard.rs`: small value types
//! - `compression.rs`: transport decompression and connect-URL query parameters

mod close;
mod compression;
mod envelope;
mod event_name;
mod intents;
mod json;
mod opcode;
pub mod payload;
mod shard;
mod snowflake;
mod token;

pub use close::CloseCode;
pub use compression::{
    Compression, DEFAULT_DOCUMENT_LIMIT, DecodeError, Decoder, ZLIB_SUFFIX, gateway_connect_url,
};
pub use envelope::{Envelope, EnvelopeError, MAX_OUTBOUND_BYTES, Outbound, OutboundError, Raw};
pub use event_name::EventName;
pub use intents::{Intents, UnknownIntent};
pub use json::{JsonError, RawJson};
pub use opcode::OpCode;
pub use shard::{ShardId, shard_for_guild};
pub use snowflake::Snowflake;
pub use token::Token;

/// The gateway API version shardkeeper speaks; always sent explicitly as `v`.
pub const API_VERSION: u8 = 10;
