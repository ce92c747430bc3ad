//! The `shardkeeper` command-line program: `run`, `demo`, `sim`, `bench` and `shards`.
//!
//! Not built yet: this crate holds no code until the binary lands (see
//! `docs/architecture.md`).
