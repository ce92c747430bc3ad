//! Gateway opcodes.

/// A gateway opcode. Opcodes not in the current documentation are kept as
/// [`OpCode::Unknown`] rather than rejected, so a new server opcode never crashes a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0, server → client: an event, with `t` and `s` set.
    Dispatch,
    /// 1, both ways: a client keep-alive, or a server request for an immediate one.
    Heartbeat,
    /// 2, client → server: start a new session.
    Identify,
    /// 3, client → server: update the presence.
    PresenceUpdate,
    /// 4, client → server: join, move or leave a voice channel.
    VoiceStateUpdate,
    /// 6, client → server: continue a dropped session.
    Resume,
    /// 7, server → client: reconnect and resume.
    Reconnect,
    /// 8, client → server: ask for member chunks of one guild.
    RequestGuildMembers,
    /// 9, server → client: the session is invalid; `d` says whether it may be resumed.
    InvalidSession,
    /// 10, server → client: first frame, carries the heartbeat interval.
    Hello,
    /// 11, server → client: acknowledges a heartbeat.
    HeartbeatAck,
    /// 31, client → server: ask for the soundboard sounds of guilds.
    RequestSoundboardSounds,
    /// 43, client → server: ask for channel status information of a guild.
    RequestChannelInfo,
    /// Any other value, including the unassigned op 5 (never sent by shardkeeper).
    Unknown(u8),
}

impl OpCode {
    /// The numeric value on the wire.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            Self::Dispatch => 0,
            Self::Heartbeat => 1,
            Self::Identify => 2,
            Self::PresenceUpdate => 3,
            Self::VoiceStateUpdate => 4,
            Self::Resume => 6,
            Self::Reconnect => 7,
            Self::RequestGuildMembers => 8,
            Self::InvalidSession => 9,
            Self::Hello => 10,
            Self::HeartbeatAck => 11,
            Self::RequestSoundboardSounds => 31,
            Self::RequestChannelInfo => 43,
            Self::Unknown(code) => code,
        }
    }

    /// The opcode for a numeric value; values outside the documented table are `Unknown`.
    #[must_use]
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => Self::Dispatch,
            1 => Self::Heartbeat,
            2 => Self::Identify,
            3 => Self::PresenceUpdate,
            4 => Self::VoiceStateUpdate,
            6 => Self::Resume,
            7 => Self::Reconnect,
            8 => Self::RequestGuildMembers,
            9 => Self::InvalidSession,
            10 => Self::Hello,
            11 => Self::HeartbeatAck,
            31 => Self::RequestSoundboardSounds,
            43 => Self::RequestChannelInfo,
            other => Self::Unknown(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OpCode;

    #[test]
    fn every_byte_round_trips() {
        for code in 0..=u8::MAX {
            assert_eq!(OpCode::from_code(code).code(), code);
        }
    }

    #[test]
    fn op_five_is_unassigned() {
        assert_eq!(OpCode::from_code(5), OpCode::Unknown(5));
    }
}
