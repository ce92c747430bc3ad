//! Gateway close codes and what a client must do after each.

/// A WebSocket close code as seen by a gateway client.
///
/// Codes 4000–4014 are Discord's; anything else (1000, 1006, …) is kept verbatim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 4000: unknown error; reconnect and resume.
    pub const UNKNOWN_ERROR: Self = Self(4000);
    /// 4001: unknown opcode or bad payload for an opcode.
    pub const UNKNOWN_OPCODE: Self = Self(4001);
    /// 4002: payload could not be decoded (bad JSON, more than 4096 bytes).
    pub const DECODE_ERROR: Self = Self(4002);
    /// 4003: a payload was sent before IDENTIFY.
    pub const NOT_AUTHENTICATED: Self = Self(4003);
    /// 4004: the token is invalid; never retried.
    pub const AUTHENTICATION_FAILED: Self = Self(4004);
    /// 4005: a second IDENTIFY on one connection.
    pub const ALREADY_AUTHENTICATED: Self = Self(4005);
    /// 4007: the sequence sent on RESUME is invalid.
    pub const INVALID_SEQ: Self = Self(4007);
    /// 4008: too many payloads sent.
    pub const RATE_LIMITED: Self = Self(4008);
    /// 4009: the session timed out.
    pub const SESSION_TIMED_OUT: Self = Self(4009);
    /// 4010: invalid shard.
    pub const INVALID_SHARD: Self = Self(4010);
    /// 4011: the bot must shard.
    pub const SHARDING_REQUIRED: Self = Self(4011);
    /// 4012: invalid API version.
    pub const INVALID_API_VERSION: Self = Self(4012);
    /// 4013: invalid intents bitfield.
    pub const INVALID_INTENTS: Self = Self(4013);
    /// 4014: privileged intents not enabled or approved.
    pub const DISALLOWED_INTENTS: Self = Self(4014);

    /// Whether Discord's table says never to reconnect after this code: the operator has
    /// to fix the token, the shard plan, the API version or the intents first.
    #[must_use]
    pub fn is_fatal(self) -> bool {
        matches!(self.0, 4004 | 4010..=4014)
    }

    /// Whether the session survives this close so the client should RESUME.
    ///
    /// False for fatal codes and for the codes after which Discord wants a new session
    /// (4003, 4007, 4009). Any code outside Discord's table (including a plain network
    /// close) keeps the session resumable: a failed RESUME is answered with op 9 anyway.
    #[must_use]
    pub fn can_resume(self) -> bool {
        !self.is_fatal() && !matches!(self.0, 4003 | 4007 | 4009)
    }

    /// Discord's name for the code, for logs and the admin API.
    #[must_use]
    pub fn description(self) -> &'static str {
        match self.0 {
            1000 => "normal closure",
            1001 => "going away",
            1006 => "abnormal closure",
            4000 => "unknown error",
            4001 => "unknown opcode",
            4002 => "decode error",
            4003 => "not authenticated",
            4004 => "authentication failed",
            4005 => "already authenticated",
            4007 => "invalid seq",
            4008 => "rate limited",
            4009 => "session timed out",
            4010 => "invalid shard",
            4011 => "sharding required",
            4012 => "invalid api version",
            4013 => "invalid intents",
            4014 => "disallowed intents",
            _ => "unrecognised close code",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CloseCode;

    #[test]
    fn table_matches_discord() {
        let resume = [4000, 4001, 4002, 4005, 4008];
        let identify = [4003, 4007, 4009];
        let fatal = [4004, 4010, 4011, 4012, 4013, 4014];
        for code in resume {
            assert!(CloseCode(code).can_resume(), "{code}");
            assert!(!CloseCode(code).is_fatal(), "{code}");
        }
        for code in identify {
            assert!(!CloseCode(code).can_resume(), "{code}");
            assert!(!CloseCode(code).is_fatal(), "{code}");
        }
        for code in fatal {
            assert!(CloseCode(code).is_fatal(), "{code}");
            assert!(!CloseCode(code).can_resume(), "{code}");
        }
    }

    #[test]
    fn network_closes_keep_the_session() {
        assert!(CloseCode(1006).can_resume());
        assert!(CloseCode(1000).can_resume());
        assert!(!CloseCode(1006).is_fatal());
    }
}
