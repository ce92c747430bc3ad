//! Gateway intents.

use std::str::FromStr;

use bitflags::bitflags;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

bitflags! {
    /// The intents bitfield sent in IDENTIFY, with Discord's names.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Intents: u64 {
        /// Guild, role, channel, thread and stage instance events.
        const GUILDS = 1 << 0;
        /// Member add/update/remove (privileged).
        const GUILD_MEMBERS = 1 << 1;
        /// Audit log entries and bans.
        const GUILD_MODERATION = 1 << 2;
        /// Emojis, stickers and soundboard sounds.
        const GUILD_EXPRESSIONS = 1 << 3;
        /// Integration events.
        const GUILD_INTEGRATIONS = 1 << 4;
        /// Webhook updates.
        const GUILD_WEBHOOKS = 1 << 5;
        /// Invite create/delete.
        const GUILD_INVITES = 1 << 6;
        /// Voice state updates.
        const GUILD_VOICE_STATES = 1 << 7;
        /// Presence updates (privileged).
        const GUILD_PRESENCES = 1 << 8;
        /// Guild messages.
        const GUILD_MESSAGES = 1 << 9;
        /// Guild message reactions.
        const GUILD_MESSAGE_REACTIONS = 1 << 10;
        /// Guild typing.
        const GUILD_MESSAGE_TYPING = 1 << 11;
        /// Direct messages.
        const DIRECT_MESSAGES = 1 << 12;
        /// Direct message reactions.
        const DIRECT_MESSAGE_REACTIONS = 1 << 13;
        /// Direct message typing.
        const DIRECT_MESSAGE_TYPING = 1 << 14;
        /// Message content fields (privileged).
        const MESSAGE_CONTENT = 1 << 15;
        /// Scheduled events.
        const GUILD_SCHEDULED_EVENTS = 1 << 16;
        /// Auto moderation rules.
        const AUTO_MODERATION_CONFIGURATION = 1 << 20;
        /// Auto moderation actions.
        const AUTO_MODERATION_EXECUTION = 1 << 21;
        /// Guild poll votes.
        const GUILD_MESSAGE_POLLS = 1 << 24;
        /// Direct message poll votes.
        const DIRECT_MESSAGE_POLLS = 1 << 25;
    }
}

/// An intent name that Discord does not document.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown intent {0:?}")]
pub struct UnknownIntent(pub String);

impl Intents {
    /// The privileged intents, which need the Developer Portal toggle.
    pub const PRIVILEGED: Self = Self::GUILD_MEMBERS
        .union(Self::GUILD_PRESENCES)
        .union(Self::MESSAGE_CONTENT);

    /// Builds a set from documented names such as `"GUILD_MESSAGES"`.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, UnknownIntent> {
        names.into_iter().try_fold(Self::empty(), |acc, name| {
            Self::from_name(name.trim())
                .map(|flag| acc | flag)
                .ok_or_else(|| UnknownIntent(name.to_owned()))
        })
    }

    /// The documented names of the set bits.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        self.iter_names().map(|(name, _)| name)
    }
}

impl FromStr for Intents {
    type Err = UnknownIntent;

    /// Parses `"GUILDS|GUILD_MESSAGES"`, `"GUILDS,GUILD_MESSAGES"` or a decimal bitfield.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(bits) = s.trim().parse::<u64>() {
            return Self::from_bits(bits).ok_or_else(|| UnknownIntent(s.to_owned()));
        }
        Self::from_names(s.split(['|', ',']).filter(|part| !part.trim().is_empty()))
    }
}

impl Serialize for Intents {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.bits())
    }
}

impl<'de> Deserialize<'de> for Intents {
    /// Keeps undefined bits, so a simulator can see (and reject) what a client sent.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        u64::deserialize(deserializer).map(Self::from_bits_retain)
    }
}

#[cfg(test)]
mod tests {
    use super::{Intents, UnknownIntent};

    #[test]
    fn names_and_bits() {
        let intents: Intents = "GUILDS|GUILD_MESSAGES".parse().expect("known names");
        assert_eq!(intents.bits(), 1 | 1 << 9);
        assert_eq!(
            intents.names().collect::<Vec<_>>(),
            ["GUILDS", "GUILD_MESSAGES"]
        );
        assert_eq!("513".parse::<Intents>(), Ok(intents));
        assert_eq!(
            "GUILDS,NOPE".parse::<Intents>(),
            Err(UnknownIntent("NOPE".into()))
        );
        assert!(
            "131072".parse::<Intents>().is_err(),
            "bit 17 is undocumented"
        );
        assert_eq!(Intents::all().bits().count_ones(), 21);
    }
}
