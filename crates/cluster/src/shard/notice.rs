//! Log lines and metrics for what the session reports.

use shardkeeper_protocol::CloseCode;
use shardkeeper_session::Notice;

use super::Shard;

impl Shard {
    pub(super) fn on_notice(&mut self, notice: Notice) {
        let id = self.id;
        match notice {
            Notice::Identified { guilds } => tracing::info!(shard = id, guilds, "shard identified"),
            Notice::Resumed { replayed } => tracing::info!(shard = id, replayed, "shard resumed"),
            Notice::HeartbeatAck { latency } => self.shared.metrics.heartbeat(latency),
            Notice::ZombieDetected => {
                tracing::warn!(
                    shard = id,
                    "no heartbeat ack: zombie connection, reconnecting"
                );
            }
            Notice::ReconnectRequested => tracing::info!(shard = id, "gateway asked to reconnect"),
            Notice::InvalidSession { resumable } => {
                tracing::warn!(shard = id, resumable, "gateway invalidated the session");
            }
            Notice::Disconnected {
                code,
                resumable,
                retry_in,
            } => {
                if let Some(code) = code {
                    self.shared.metrics.close_code(code);
                }
                let reason = code.map(|c| CloseCode(c).description());
                tracing::warn!(
                    shard = id,
                    ?code,
                    ?reason,
                    resumable,
                    retry_in_ms = retry_in.as_millis() as u64,
                    "shard disconnected"
                );
            }
            Notice::Fatal { code } => {
                self.shared.metrics.close_code(code);
                tracing::error!(
                    shard = id,
                    code,
                    reason = CloseCode(code).description(),
                    "fatal close code; the shard stays failed until an operator restarts it"
                );
            }
            Notice::TimedOut { waiting_for } => {
                tracing::warn!(shard = id, waiting_for, "gateway timed out");
            }
            Notice::ProtocolError { detail } => {
                tracing::warn!(shard = id, %detail, "invalid payload from the gateway");
            }
            Notice::UnexpectedOpcode { op } => {
                tracing::debug!(shard = id, op, "ignored unexpected opcode");
            }
            Notice::ResumeUrlUnreachable => {
                tracing::warn!(
                    shard = id,
                    "resume URL unreachable; identifying a new session"
                );
            }
            Notice::Quarantined { failures, window } => {
                tracing::error!(
                    shard = id,
                    failures,
                    window_s = window.as_secs(),
                    "shard quarantined after repeated failures"
                );
            }
        }
    }
}
