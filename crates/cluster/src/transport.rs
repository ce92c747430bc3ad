//! Everything that touches the network: where the cluster connects (`net`), TLS
//! (`tls`), the `/gateway/bot` client (`rest`), the WebSocket upgrade (`upgrade`) and the
//! split of a connection into the frames its actor reads and a writer task (`socket`).
//!
//! Nothing here decides anything about sessions: the shard actor tells a connection
//! what to write and receives what was read.

pub(crate) mod net;
pub(crate) mod rest;
pub(crate) mod socket;
pub(crate) mod tls;
pub(crate) mod upgrade;
