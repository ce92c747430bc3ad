//! The actix runtime of shardkeeper: `Shard` actors wrapping the sans-IO sessions of
//! `shardkeeper-session`, the `IdentifyCoordinator`, the sled `SessionStore`, event sinks
//! and the `Cluster` supervisor that embedding programs start.
//!
//! Not built yet: this crate is the landing place of the cluster runtime (see
//! `docs/architecture.md`); it holds no code until that work lands.
