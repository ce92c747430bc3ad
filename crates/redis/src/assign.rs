//! Which live node should run each shard: weighted rendezvous hashing, capped by each
//! node's capacity. Pure code: every node computes the same answer from the same list
//! of live nodes, so they agree without talking to each other.

use std::ops::Range;

/// A live node as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    /// Node id.
    pub(crate) id: String,
    /// Most shards it runs; 0 = no limit.
    pub(crate) capacity: u32,
    /// The shard ids it may take (`[shards] ids`); `None` = all.
    pub(crate) ids: Option<Range<u32>>,
}

impl Candidate {
    fn may_run(&self, shard: u32) -> bool {
        self.ids.as_ref().is_none_or(|ids| ids.contains(&shard))
    }
}

/// The placement of every shard over the candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Assignment {
    /// Per shard: the candidates that may run it, best first (indices into the list).
    ranks: Vec<Vec<usize>>,
    /// Per shard: the candidate that should run it now, within every capacity.
    target: Vec<Option<usize>>,
}

impl Assignment {
    /// Places `total` shards over `nodes`.
    pub(crate) fn new(total: u32, nodes: &[Candidate]) -> Self {
        let weights = weights(nodes);
        let mut load = vec![0u32; nodes.len()];
        let mut ranks = Vec::with_capacity(total as usize);
        let mut target = Vec::with_capacity(total as usize);
        for shard in 0..total {
            let mut scored: Vec<(f64, usize)> = nodes
                .iter()
                .enumerate()
                .filter(|(_, node)| node.may_run(shard))
                .map(|(i, node)| (score(&node.id, shard, weights[i]), i))
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let rank: Vec<usize> = scored.into_iter().map(|(_, i)| i).collect();
            let chosen = rank
                .iter()
                .copied()
                .find(|&i| nodes[i].capacity == 0 || load[i] < nodes[i].capacity);
            if let Some(i) = chosen {
                load[i] += 1;
            }
            ranks.push(rank);
            target.push(chosen);
        }
        Self { ranks, target }
    }

    /// The candidate that should run `shard`.
    pub(crate) fn target(&self, shard: u32) -> Option<usize> {
        self.target.get(shard as usize).copied().flatten()
    }

    /// Who should take `shard` when it has had no owner for `rounds` whole takeover
    /// periods: its target first, then each next candidate in rank, so a target that
    /// cannot take it does not leave it running nowhere.
    pub(crate) fn taker(&self, shard: u32, rounds: usize) -> Option<usize> {
        let target = self.target(shard)?;
        if rounds == 0 {
            return Some(target);
        }
        let others: Vec<usize> = self
            .ranks
            .get(shard as usize)?
            .iter()
            .copied()
            .filter(|&i| i != target)
            .collect();
        if others.is_empty() {
            return Some(target);
        }
        others.get((rounds - 1) % others.len()).copied()
    }
}

/// Rendezvous weight of each node: its capacity; a node without a limit weighs as much
/// as the largest limit given (1 when no node has one).
fn weights(nodes: &[Candidate]) -> Vec<f64> {
    let largest = nodes.iter().map(|n| n.capacity).max().unwrap_or(0).max(1);
    nodes
        .iter()
        .map(|n| f64::from(if n.capacity == 0 { largest } else { n.capacity }))
        .collect()
}

/// Weighted rendezvous score: `weight / -ln(u)` with `u` in (0, 1) hashed from the
/// node id and the shard. The hash is written out here (FNV-1a, then a 64-bit mix) so
/// every build of every node computes the same value.
fn score(node: &str, shard: u32, weight: f64) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes().chain(shard.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    let unit = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    weight / -unit.ln()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{Assignment, Candidate};

    fn node(id: &str, capacity: u32) -> Candidate {
        Candidate {
            id: id.into(),
            capacity,
            ids: None,
        }
    }

    fn placed(assignment: &Assignment, total: u32, nodes: usize) -> Vec<u32> {
        let mut counts = vec![0; nodes];
        for shard in 0..total {
            if let Some(i) = assignment.target(shard) {
                counts[i] += 1;
            }
        }
        counts
    }

    #[test]
    fn equal_nodes_share_evenly() {
        let nodes = [node("a", 0), node("b", 0), node("c", 0)];
        let counts = placed(&Assignment::new(3000, &nodes), 3000, 3);
        for count in counts {
            assert!((900..=1100).contains(&count), "{count}");
        }
    }

    #[test]
    fn capacity_weighs_and_caps() {
        let nodes = [node("a", 100), node("b", 300)];
        let counts = placed(&Assignment::new(400, &nodes), 400, 2);
        assert_eq!(counts, [100, 300]);
        let nodes = [node("a", 10), node("b", 10)];
        let assignment = Assignment::new(30, &nodes);
        assert_eq!(placed(&assignment, 30, 2), [10, 10]);
        assert_eq!(
            assignment.target(29),
            None,
            "beyond every capacity: nowhere"
        );
    }

    #[test]
    fn a_node_leaving_moves_only_its_own_shards() {
        let three = [node("a", 0), node("b", 0), node("c", 0)];
        let two = [node("a", 0), node("c", 0)];
        let before = Assignment::new(500, &three);
        let after = Assignment::new(500, &two);
        for shard in 0..500 {
            let was = before.target(shard).map(|i| three[i].id.clone());
            let now = after.target(shard).map(|i| two[i].id.clone());
            if was.as_deref() != Some("b") {
                assert_eq!(was, now, "shard {shard} moved although its node stayed");
            }
        }
    }

    #[test]
    fn shard_ranges_limit_what_a_node_may_take() {
        let nodes = [
            Candidate {
                id: "low".into(),
                capacity: 0,
                ids: Some(0..4),
            },
            node("any", 0),
        ];
        let assignment = Assignment::new(8, &nodes);
        for shard in 4..8 {
            assert_eq!(assignment.target(shard), Some(1));
            assert_eq!(assignment.taker(shard, 3), Some(1));
        }
    }

    #[test]
    fn an_orphan_goes_to_the_next_in_rank_each_round() {
        let nodes = [node("a", 0), node("b", 0), node("c", 0)];
        let assignment = Assignment::new(1, &nodes);
        let first = assignment.taker(0, 0).expect("a target");
        let second = assignment.taker(0, 1).expect("a second");
        let third = assignment.taker(0, 2).expect("a third");
        assert_ne!(first, second);
        assert_ne!(second, third);
        assert_ne!(first, third);
        assert_eq!(assignment.taker(0, 3), Some(second), "then around again");
    }

    proptest! {
        #[test]
        fn every_node_computes_the_same_placement_from_any_order(
            ids in proptest::collection::btree_set("[a-z]{1,8}", 1..6),
            total in 1u32..200,
        ) {
            let nodes: Vec<Candidate> = ids.iter().map(|id| node(id, 0)).collect();
            let mut reversed = nodes.clone();
            reversed.reverse();
            let a = Assignment::new(total, &nodes);
            let b = Assignment::new(total, &reversed);
            for shard in 0..total {
                let left = a.target(shard).map(|i| &nodes[i].id);
                let right = b.target(shard).map(|i| &reversed[i].id);
                prop_assert_eq!(left, right);
                prop_assert!(left.is_some(), "no limit: every shard placed");
            }
        }
    }
}
