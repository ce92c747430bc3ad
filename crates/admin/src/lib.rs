//! The actix-web admin API of shardkeeper: shard control, identify budget, metrics,
//! OpenAPI document and the dashboard page.
//!
//! Not built yet: this crate holds no code until the admin API lands (see
//! `docs/architecture.md`).
