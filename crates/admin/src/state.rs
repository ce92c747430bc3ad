//! What every handler shares.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use shardkeeper_cluster::ClusterHandle;
use shardkeeper_protocol::Token;

use crate::events::EventHub;
use crate::history::History;

/// Shared by every handler.
pub(crate) struct AdminState {
    pub(crate) cluster: ClusterHandle,
    pub(crate) token: Token,
    /// The optional read-only token.
    pub(crate) read_token: Option<Token>,
    pub(crate) hub: EventHub,
    pub(crate) requests_refused: Counter,
    pub(crate) subscribers: Gauge,
    /// The last hour in samples, for the dashboard.
    pub(crate) history: History,
}
