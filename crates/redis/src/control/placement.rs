//! Placement rounds: claiming the orphans placement gives this node, handing over the
//! shards it gives to others, and leaving.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shardkeeper_cluster::ShardSet;

use super::{
    CLAIMS_PER_TICK, Control, FORGET_DEAD_AFTER_MS, HANDOVERS_PER_TICK, TAKEOVER_SLACK, millis,
    publish,
};
use crate::assign::Assignment;
use crate::link::epoch_of;
use crate::node::NodeCounters;

impl Control {
    /// Claims the orphans placement gives this node and hands over the shards it gives
    /// to others.
    pub(super) async fn reconcile(&mut self, view: &crate::link::View) {
        let inner = Arc::clone(&self.inner);
        let me = &inner.identity.id;
        let live = crate::view::candidates(view, me, self.leaving.is_some());
        let assignment = Assignment::new(inner.config.total, &live);
        let mine = live.iter().position(|c| &c.id == me);
        let now = Instant::now();
        let round = inner.config.lease + TAKEOVER_SLACK;
        let mut claims = Vec::new();
        let mut handovers = 0;
        // Leaving, everything goes at once: the others resume each shard as it comes.
        let bound = if self.leaving.is_some() {
            usize::MAX
        } else {
            HANDOVERS_PER_TICK
        };
        let held = inner.held().clone();
        for (shard, owner) in (0..inner.config.total).zip(&view.owners) {
            if let Some((node, _)) = owner.as_deref().and_then(|v| v.rsplit_once(':')) {
                self.last_owner.insert(shard, node.to_owned());
            }
            match owner {
                Some(value)
                    if held
                        .get(&shard)
                        .is_some_and(|&e| epoch_of(value, me) == Some(e)) =>
                {
                    self.orphan_since.remove(&shard);
                    // A shard taken in place of a target that did not claim it stays a
                    // while, so it does not cycle down and up every takeover period.
                    let covering = self.fallback_until.get(&shard).is_some_and(|&t| now < t);
                    let keep = mine.is_some() && (assignment.target(shard) == mine || covering);
                    if !keep
                        && handovers < bound
                        && self.started.contains(&shard)
                        && self.handing_over.insert(shard)
                    {
                        handovers += 1;
                    }
                }
                // This node's own claim whose reply was lost: it is ours.
                Some(value) if !held.contains_key(&shard) && epoch_of(value, me).is_some() => {
                    if let Some(epoch) = epoch_of(value, me)
                        && self.covered(inner.config.lease / 3)
                    {
                        tracing::info!(node = %me, shard, epoch, "adopting a claim whose reply was lost");
                        inner.held().insert(shard, epoch);
                    }
                }
                Some(_) => {
                    self.orphan_since.remove(&shard);
                }
                None if held.contains_key(&shard) => {}
                None => {
                    let since = *self.orphan_since.entry(shard).or_insert(now);
                    let rounds = (now - since).as_millis() / round.as_millis().max(1);
                    let taker =
                        assignment.taker(shard, usize::try_from(rounds).unwrap_or(usize::MAX));
                    if mine.is_some() && taker == mine && !view.grace {
                        claims.push(shard);
                    }
                }
            }
        }
        if handovers > 0 {
            tracing::info!(node = %me, shards = handovers, "handing shards over to their new nodes");
        }
        self.claim(claims, &assignment, mine, &live).await;
        let running: ShardSet = inner
            .held()
            .keys()
            .copied()
            .filter(|s| !self.handing_over.contains(s))
            .collect();
        publish(&inner, running);
    }

    /// Claims `claims` (orphans placement gives this node), a bounded number, after a
    /// random pause, only while the last renewal covers them.
    async fn claim(
        &mut self,
        claims: Vec<u32>,
        assignment: &Assignment,
        mine: Option<usize>,
        live: &[crate::assign::Candidate],
    ) {
        let inner = Arc::clone(&self.inner);
        let me = &inner.identity.id;
        if !claims.is_empty() {
            // Nodes that saw the same orphans in the same instant do not all knock at
            // once, and RESUMEs go out a bounded number at a time.
            let jitter = rand::random::<u64>() % (millis(self.tick) / 4).clamp(1, 100);
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
        for shard in claims.into_iter().take(CLAIMS_PER_TICK) {
            // A shard claimed while the fence is about to lapse would start fenced for
            // good: claim only while the last renewal still covers a third of a lease.
            if !self.covered(inner.config.lease / 3) {
                break;
            }
            let claimed = inner.link.claim(&inner.identity, shard).await;
            if let Err(err) = &claimed
                && err.code() == Some("DUPLICATE")
            {
                inner.fence("another live node took this node's id");
                self.deposed = true;
                break;
            }
            let Some(value) = self.redis(claimed) else {
                break;
            };
            if let Some(epoch) = epoch_of(&value, me) {
                if !self.covered(Duration::ZERO) {
                    // Fenced while the claim was out: give it straight back.
                    self.redis(inner.link.release(&inner.identity, shard, epoch).await);
                    break;
                }
                if assignment.target(shard) != mine {
                    self.fallback_until
                        .insert(shard, Instant::now() + inner.config.lease * 3);
                }
                NodeCounters::add(&inner.counters.claims, 1);
                let previous = self.last_owner.get(&shard);
                if previous.is_some_and(|node| !live.iter().any(|c| &c.id == node)) {
                    NodeCounters::add(&inner.counters.failovers, 1);
                }
                self.orphan_since.remove(&shard);
                inner.held().insert(shard, epoch);
                tracing::info!(node = %me, shard, epoch, "shard claimed");
            }
        }
    }

    /// Whether the last renewal covers this node's leases for `margin` more.
    fn covered(&self, margin: Duration) -> bool {
        self.inner
            .valid_until()
            .is_some_and(|until| Instant::now() + margin < until)
    }

    /// The supervisor stopped a shard and stored its session: give the claim up. A
    /// report of an older run (the shard was not being handed over) leaves a newer
    /// claim alone.
    pub(super) async fn released(&mut self, shard: u32) {
        if !self.handing_over.remove(&shard) && self.inner.assigned.borrow().contains(&shard) {
            return;
        }
        self.fallback_until.remove(&shard);
        self.inner
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&shard);
        let epoch = self.inner.held().remove(&shard);
        if let Some(epoch) = epoch {
            let inner = Arc::clone(&self.inner);
            self.redis(inner.link.release(&inner.identity, shard, epoch).await);
            NodeCounters::add(&inner.counters.handovers, 1);
            tracing::info!(node = %inner.identity.id, shard, "shard released");
        }
        self.finish_leaving().await;
    }

    /// Once every shard is handed over, the node leaves the namespace.
    pub(super) async fn finish_leaving(&mut self) {
        if self.leaving.is_some() && self.inner.held().is_empty() {
            let inner = Arc::clone(&self.inner);
            self.redis(inner.link.leave(&inner.identity).await);
            if let Some(done) = self.leaving.take() {
                tracing::info!(node = %inner.identity.id, "every shard handed over; left the cluster");
                let _ = done.send(());
            }
        }
    }

    /// Forgets the descriptions of nodes dead for an hour (node ids `<host>-<pid>` are
    /// new with every process: without this the node list would only grow).
    pub(super) async fn prune(&mut self, view: &crate::link::View) {
        let inner = Arc::clone(&self.inner);
        let Some(seen) = self.redis(inner.link.seen().await) else {
            return;
        };
        for (id, _, alive) in &view.nodes {
            let last = seen.get(id).copied().unwrap_or(0);
            if !alive && view.redis_now_ms.saturating_sub(last) > FORGET_DEAD_AFTER_MS {
                let forgotten = inner.link.forget_node(id).await;
                if self.redis(forgotten).is_some() {
                    tracing::info!(node = %id, "forgot a node dead for an hour");
                }
            }
        }
    }
}
