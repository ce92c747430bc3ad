//! Dispatch event names (`t`). A gateway sends the same few dozen names millions of
//! times: the documented ones are kept as shared static strings with a small index (no
//! allocation per event, and a slot per name for counters); any other name gets its own
//! allocation.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::LazyLock;

/// Discord's documented receive-event names, sorted.
const KNOWN: &[&str] = &[
    "APPLICATION_COMMAND_PERMISSIONS_UPDATE",
    "AUTO_MODERATION_ACTION_EXECUTION",
    "AUTO_MODERATION_RULE_CREATE",
    "AUTO_MODERATION_RULE_DELETE",
    "AUTO_MODERATION_RULE_UPDATE",
    "CHANNEL_CREATE",
    "CHANNEL_DELETE",
    "CHANNEL_INFO",
    "CHANNEL_PINS_UPDATE",
    "CHANNEL_UPDATE",
    "ENTITLEMENT_CREATE",
    "ENTITLEMENT_DELETE",
    "ENTITLEMENT_UPDATE",
    "GUILD_AUDIT_LOG_ENTRY_CREATE",
    "GUILD_BAN_ADD",
    "GUILD_BAN_REMOVE",
    "GUILD_CREATE",
    "GUILD_DELETE",
    "GUILD_EMOJIS_UPDATE",
    "GUILD_INTEGRATIONS_UPDATE",
    "GUILD_MEMBERS_CHUNK",
    "GUILD_MEMBER_ADD",
    "GUILD_MEMBER_REMOVE",
    "GUILD_MEMBER_UPDATE",
    "GUILD_ROLE_CREATE",
    "GUILD_ROLE_DELETE",
    "GUILD_ROLE_UPDATE",
    "GUILD_SCHEDULED_EVENT_CREATE",
    "GUILD_SCHEDULED_EVENT_DELETE",
    "GUILD_SCHEDULED_EVENT_UPDATE",
    "GUILD_SCHEDULED_EVENT_USER_ADD",
    "GUILD_SCHEDULED_EVENT_USER_REMOVE",
    "GUILD_SOUNDBOARD_SOUNDS_UPDATE",
    "GUILD_SOUNDBOARD_SOUND_CREATE",
    "GUILD_SOUNDBOARD_SOUND_DELETE",
    "GUILD_SOUNDBOARD_SOUND_UPDATE",
    "GUILD_STICKERS_UPDATE",
    "GUILD_UPDATE",
    "INTEGRATION_CREATE",
    "INTEGRATION_DELETE",
    "INTEGRATION_UPDATE",
    "INTERACTION_CREATE",
    "INVITE_CREATE",
    "INVITE_DELETE",
    "MESSAGE_CREATE",
    "MESSAGE_DELETE",
    "MESSAGE_DELETE_BULK",
    "MESSAGE_POLL_VOTE_ADD",
    "MESSAGE_POLL_VOTE_REMOVE",
    "MESSAGE_REACTION_ADD",
    "MESSAGE_REACTION_REMOVE",
    "MESSAGE_REACTION_REMOVE_ALL",
    "MESSAGE_REACTION_REMOVE_EMOJI",
    "MESSAGE_UPDATE",
    "PRESENCE_UPDATE",
    "RATE_LIMITED",
    "READY",
    "RESUMED",
    "SOUNDBOARD_SOUNDS",
    "STAGE_INSTANCE_CREATE",
    "STAGE_INSTANCE_DELETE",
    "STAGE_INSTANCE_UPDATE",
    "SUBSCRIPTION_CREATE",
    "SUBSCRIPTION_DELETE",
    "SUBSCRIPTION_UPDATE",
    "THREAD_CREATE",
    "THREAD_DELETE",
    "THREAD_LIST_SYNC",
    "THREAD_MEMBERS_UPDATE",
    "THREAD_MEMBER_UPDATE",
    "THREAD_UPDATE",
    "TYPING_START",
    "USER_UPDATE",
    "VOICE_CHANNEL_EFFECT_SEND",
    "VOICE_SERVER_UPDATE",
    "VOICE_STATE_UPDATE",
    "WEBHOOKS_UPDATE",
];

// Known names are indexed by a byte, and the table keeps free slots.
const _: () = assert!(KNOWN.len() < u8::MAX as usize && KNOWN.len() * 4 <= SLOTS);

/// Slots of the lookup table (a power of two).
const SLOTS: usize = 512;

/// Where a name starts looking in the table: its length and three of its bytes, mixed.
/// Known names differ in these, so a lookup usually compares one string.
fn home_slot(t: &[u8]) -> usize {
    let byte = |i: usize| u32::from(t.get(i).copied().unwrap_or(0));
    // invariant: only the low bits of the length matter to the mix
    let mixed = (t.len() as u32).wrapping_mul(0x9E37_79B9)
        ^ byte(0).wrapping_mul(0x85EB_CA6B)
        ^ byte(t.len() / 2).wrapping_mul(0xC2B2_AE35)
        ^ byte(t.len().wrapping_sub(1)).wrapping_mul(0x27D4_EB2F);
    (mixed >> 16) as usize % SLOTS
}

/// Open addressing over the known names: a slot holds index + 1, or 0 when free.
static TABLE: LazyLock<[u8; SLOTS]> = LazyLock::new(|| {
    let mut table = [0u8; SLOTS];
    for (index, name) in KNOWN.iter().enumerate() {
        let mut slot = home_slot(name.as_bytes());
        while table[slot] != 0 {
            slot = (slot + 1) % SLOTS;
        }
        // invariant: fewer than 255 names (asserted above)
        table[slot] = index as u8 + 1;
    }
    table
});

/// The index of `t` among the known names.
fn known(t: &str) -> Option<u8> {
    let table = &*TABLE;
    let mut slot = home_slot(t.as_bytes());
    loop {
        match table[slot] {
            0 => return None,
            entry if KNOWN[usize::from(entry - 1)] == t => return Some(entry - 1),
            _ => slot = (slot + 1) % SLOTS,
        }
    }
}

/// A dispatch's event name; dereferences to the name.
#[derive(Clone)]
pub struct EventName(Name);

#[derive(Clone)]
enum Name {
    Known(u8),
    Other(Box<str>),
}

impl EventName {
    /// How many names are known; [`known_index`](Self::known_index) is below this.
    pub const KNOWN: usize = KNOWN.len();

    /// The name `t`, shared if Discord documents it.
    #[must_use]
    pub fn new(t: &str) -> Self {
        match known(t) {
            Some(index) => Self(Name::Known(index)),
            None => Self(Name::Other(t.into())),
        }
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Name::Known(index) => KNOWN[usize::from(*index)],
            Name::Other(name) => name,
        }
    }

    /// The position of a documented name among all of them (`< EventName::KNOWN`).
    #[must_use]
    pub fn known_index(&self) -> Option<usize> {
        match self.0 {
            Name::Known(index) => Some(usize::from(index)),
            Name::Other(_) => None,
        }
    }
}

impl Deref for EventName {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for EventName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for EventName {
    fn from(t: &str) -> Self {
        Self::new(t)
    }
}

impl PartialEq for EventName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for EventName {}

impl PartialEq<str> for EventName {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for EventName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Hash for EventName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::{EventName, KNOWN};

    #[test]
    fn the_table_is_sorted() {
        assert!(KNOWN.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn documented_names_are_shared_others_kept() {
        for (index, name) in KNOWN.iter().enumerate() {
            let t = EventName::new(name);
            assert_eq!((t.known_index(), &*t), (Some(index), *name));
        }
        for near in [
            "READ",
            "READYY",
            "MESSAGE_CREATED",
            "GUILD_CREATF",
            "R",
            "_",
        ] {
            assert_eq!(EventName::new(near).known_index(), None, "{near}");
        }
        let odd = EventName::new("SOMETHING_NEW");
        assert_eq!((odd.known_index(), odd.as_str()), (None, "SOMETHING_NEW"));
        assert_eq!(EventName::new("message_create").known_index(), None);
        assert_eq!(EventName::new("").as_str(), "");
    }

    #[test]
    fn equality_and_hash_follow_the_text() {
        let set: HashSet<EventName> = ["READY", "READY", "X", "X"]
            .into_iter()
            .map(EventName::from)
            .collect();
        assert_eq!(set.len(), 2);
        assert!(set.contains("READY") && set.contains("X"));
        assert_eq!(EventName::new("READY"), "READY");
        assert_eq!(
            format!("{} {:?}", EventName::new("X"), EventName::new("X")),
            r#"X "X""#
        );
    }
}
