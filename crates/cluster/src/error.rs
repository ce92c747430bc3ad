//! Why a cluster operation failed.

use std::time::Duration;

use shardkeeper_session::CommandError;

use crate::members::MembersError;
use crate::store::StoreError;
use crate::transport::rest::RestError;
use crate::transport::tls::TlsError;

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Invalid configuration.
    #[error("invalid cluster configuration: {0}")]
    Config(String),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// `/gateway/bot` failed.
    #[error(transparent)]
    Rest(#[from] RestError),
    /// The session store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This process does not run that shard.
    #[error("shard {0} is not run by this process")]
    NotOwned(u32),
    /// The shard refused the command.
    #[error("shard {shard}: {source}")]
    Command {
        /// Shard id.
        shard: u32,
        /// Why.
        source: CommandError,
    },
    /// The shard's actor stopped before it answered (it crashed and is being rebuilt,
    /// or it is being handed over); try again.
    #[error("shard {0} is restarting; try again")]
    Unavailable(u32),
    /// A job of this kind is already running on this node.
    #[error("job {0} is already running; cancel it or wait for it to end")]
    JobRunning(String),
    /// A member request failed.
    #[error(transparent)]
    Members(#[from] MembersError),
    /// A member request got no complete answer in time.
    #[error("no complete member list within {0:?}")]
    Timeout(Duration),
    /// A fresh restart would spend more session starts than the budget has left.
    #[error(
        "a fresh restart of {cost} shard(s) needs {cost} session starts, {remaining} remain of which {reserve} are kept back (resets in {} s)",
        reset_in_ms / 1000
    )]
    Budget {
        /// Session starts the restart needs.
        cost: u32,
        /// Session starts left.
        remaining: u32,
        /// Session starts kept back (cluster mode's reserve).
        reserve: u32,
        /// Session starts per budget period.
        total: u32,
        /// Milliseconds until the budget resets.
        reset_in_ms: u64,
    },
    /// The node that owns a shard could not be asked, or did not answer in time.
    #[error("shard {shard}: its node did not carry the command out: {reason}")]
    Peer {
        /// Shard id.
        shard: u32,
        /// What went wrong.
        reason: String,
    },
}
