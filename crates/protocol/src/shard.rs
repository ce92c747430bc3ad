//! Shard ids and guild routing.

use std::fmt;
use std::num::NonZeroU32;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `[shard_id, num_shards]` with `shard_id < num_shards`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId {
    id: u32,
    total: NonZeroU32,
}

impl ShardId {
    /// A shard id; `None` unless `id < total`.
    #[must_use]
    pub fn new(id: u32, total: u32) -> Option<Self> {
        let total = NonZeroU32::new(total)?;
        (id < total.get()).then_some(Self { id, total })
    }

    /// Zero-based shard index.
    #[must_use]
    pub fn id(self) -> u32 {
        self.id
    }

    /// Number of shards the bot runs.
    #[must_use]
    pub fn total(self) -> u32 {
        self.total.get()
    }

    /// Whether this shard receives the events of `guild_id`.
    #[must_use]
    pub fn owns_guild(self, guild_id: u64) -> bool {
        shard_for_guild(guild_id, self.total) == self.id
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.id, self.total)
    }
}

impl Serialize for ShardId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        [self.id, self.total.get()].serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ShardId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let [id, total] = <[u32; 2]>::deserialize(deserializer)?;
        Self::new(id, total).ok_or_else(|| {
            serde::de::Error::custom(format!("shard id {id} is not below shard count {total}"))
        })
    }
}

/// The shard that receives events of `guild_id`: `(guild_id >> 22) % total`.
#[must_use]
pub fn shard_for_guild(guild_id: u64, total: NonZeroU32) -> u32 {
    // invariant: the remainder is below `total`, which is a u32
    ((guild_id >> 22) % u64::from(total.get())) as u32
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::{ShardId, shard_for_guild};

    #[test]
    fn routing_matches_the_documented_formula() {
        let total = NonZeroU32::new(16).expect("non-zero");
        let guild = 41_771_983_423_143_937_u64;
        assert_eq!(shard_for_guild(guild, total), ((guild >> 22) % 16) as u32);
        let one = NonZeroU32::new(1).expect("non-zero");
        assert_eq!(shard_for_guild(guild, one), 0);
    }

    #[test]
    fn shard_ids_are_validated() {
        assert!(ShardId::new(3, 3).is_none());
        assert!(ShardId::new(0, 0).is_none());
        let shard = ShardId::new(2, 3).expect("valid");
        assert_eq!(serde_json::to_string(&shard).expect("serializes"), "[2,3]");
        assert!(serde_json::from_str::<ShardId>("[3,3]").is_err());
    }
}
