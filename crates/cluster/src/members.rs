//! Collecting GUILD_MEMBERS_CHUNK dispatches by nonce for the caller that asked.

use std::collections::HashMap;

use serde_json::value::RawValue;
use shardkeeper_protocol::payload::{GuildMembersChunkHeader, RateLimited};
use tokio::sync::oneshot;

use crate::Event;

/// Why a member request returned no chunks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MembersError {
    /// Discord limited the request; try again after this many seconds.
    #[error("discord rate-limited the member request; retry after {retry_after} s")]
    RateLimited {
        /// Seconds to wait.
        retry_after: f64,
    },
    /// The shard went away before the last chunk arrived.
    #[error("the shard disconnected before every chunk arrived")]
    Interrupted,
}

/// What a member request resolves to: every chunk's `d`, in chunk order.
pub type MembersResult = Result<Vec<Box<RawValue>>, MembersError>;

struct Pending {
    chunks: Vec<Option<Box<RawValue>>>,
    reply: oneshot::Sender<MembersResult>,
}

/// Requests in flight on one shard, by nonce.
#[derive(Default)]
pub(crate) struct MemberRequests {
    pending: HashMap<String, Pending>,
}

impl MemberRequests {
    pub(crate) fn register(&mut self, nonce: String, reply: oneshot::Sender<MembersResult>) {
        self.pending.insert(
            nonce,
            Pending {
                chunks: Vec::new(),
                reply,
            },
        );
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Looks at a dispatch; completes a request when its last chunk (or a rate limit)
    /// arrives.
    pub(crate) fn observe(&mut self, event: &Event) {
        match &*event.t {
            "GUILD_MEMBERS_CHUNK" => {
                let Ok(header) = event.parse::<GuildMembersChunkHeader>() else {
                    return;
                };
                let Some(nonce) = header.nonce else { return };
                let Some(pending) = self.pending.get_mut(&nonce) else {
                    return;
                };
                let count = header.chunk_count.max(1) as usize;
                pending.chunks.resize_with(count, || None);
                if let Some(slot) = pending.chunks.get_mut(header.chunk_index as usize) {
                    // The body was checked when it arrived; serde_json checks it again.
                    match RawValue::from_string(event.d.get().to_owned()) {
                        Ok(chunk) => *slot = Some(chunk),
                        Err(err) => tracing::warn!(%err, "member chunk is not valid JSON"),
                    }
                }
                if pending.chunks.iter().all(Option::is_some)
                    && let Some(done) = self.pending.remove(&nonce)
                {
                    let _ = done
                        .reply
                        .send(Ok(done.chunks.into_iter().flatten().collect()));
                }
            }
            "RATE_LIMITED" => {
                let Ok(limited) = event.parse::<RateLimited>() else {
                    return;
                };
                let Some(nonce) = limited.meta.nonce else {
                    return;
                };
                if let Some(done) = self.pending.remove(&nonce) {
                    let _ = done.reply.send(Err(MembersError::RateLimited {
                        retry_after: limited.retry_after,
                    }));
                }
            }
            _ => {}
        }
    }

    /// The session was replaced: requests sent on it will never complete.
    pub(crate) fn interrupt(&mut self) {
        for (_, pending) in self.pending.drain() {
            let _ = pending.reply.send(Err(MembersError::Interrupted));
        }
    }
}
