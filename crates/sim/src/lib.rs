//! A strict simulator of the Discord gateway and its `/gateway/bot` endpoint, recording
//! every rule a client breaks; used by the end-to-end tests, the demo and the benchmarks.
//!
//! Not built yet: this crate holds no code until the simulator lands (see
//! `docs/architecture.md`).
