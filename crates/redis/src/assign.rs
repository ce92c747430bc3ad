//! Which live node should run each shard: weighted rendezvous hashing with bounded
//! loads, capped by each node's capacity. Each node takes at most its weighted share of
//! the shards (plus 5 % slack), so a few shards still spread evenly, and a node that
//! joins or leaves moves little more than its own share. Pure code: every node computes
//! the same answer from the same list of live nodes, so they agree without talking.

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
        let bounds = bounds(total, &weights, nodes);
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
            let room = |i: usize| nodes[i].capacity == 0 || load[i] < nodes[i].capacity;
            // Within its share first; past it only when no one else may take the shard.
            let chosen = rank
                .iter()
                .copied()
                .find(|&i| room(i) && load[i] < bounds[i])
                .or_else(|| rank.iter().copied().find(|&i| room(i)));
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

/// Most shards each node takes before the others have had their share: its weighted
/// share of `total`, rounded up, plus 5 %.
fn bounds(total: u32, weights: &[f64], nodes: &[Candidate]) -> Vec<u32> {
    let sum: f64 = weights.iter().sum();
    weights
        .iter()
        .zip(nodes)
        .map(|(w, _)| {
            let share = f64::from(total) * w / sum.max(f64::MIN_POSITIVE);
            (share.ceil() + (share * 0.05).floor()) as u32
        })
        .collect()
}

/// Weighted rendezvous score: `weight / -ln(u)` with `u` in (0, 1) hashed from the
/// node id and the shard. The hash is written out here (FNV-1a of the id, then
/// SplitMix64 finalizers mixing in the shard) so every build of every node computes the
/// same value.
fn score(node: &str, shard: u32, weight: f64) -> f64 {
    let mut id: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node.bytes() {
        id ^= u64::from(byte);
        id = id.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let hash = mix(mix(id) ^ mix(u64::from(shard).wrapping_add(0x9e37_79b9_7f4a_7c15)));
    let unit = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    weight / -unit.ln()
}

/// The SplitMix64 finalizer: every input bit reaches every output bit.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
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
    fn a_few_shards_spread_evenly() {
        let nodes = [node("a", 0), node("b", 0), node("c", 0)];
        for total in [3, 6, 9, 12] {
            let counts = placed(&Assignment::new(total, &nodes), total, 3);
            assert_eq!(counts, [total / 3; 3], "{total} shards");
        }
    }

    #[test]
    fn a_node_leaving_moves_little_more_than_its_own_shards() {
        let three = [node("a", 0), node("b", 0), node("c", 0)];
        let two = [node("a", 0), node("c", 0)];
        let before = Assignment::new(900, &three);
        let after = Assignment::new(900, &two);
        let moved = (0..900)
            .filter(|&shard| {
                let was = before.target(shard).map(|i| three[i].id.clone());
                let now = after.target(shard).map(|i| two[i].id.clone());
                was.as_deref() != Some("b") && was != now
            })
            .count();
        assert!(moved <= 90, "{moved} shards of staying nodes moved");
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
