//! End-to-end tests of shardkeeper: the simulator, a cluster and the admin API on
//! 127.0.0.1 with real sled directories. The suites live in `tests/` beside this file
//! and grow with the runtime crates.
