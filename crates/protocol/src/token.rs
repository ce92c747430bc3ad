//! A secret that never shows up in logs.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A bot or admin token. `Debug` prints `<redacted>`; the only way to read the value is
/// [`Token::expose`], and equality is checked in constant time for equal lengths. Clones
/// share one copy (every shard's session holds the bot token).
#[derive(Clone)]
pub struct Token(Arc<str>);

impl Token {
    /// Wraps a secret; surrounding whitespace (a trailing newline from a file) is removed.
    #[must_use]
    pub fn new(secret: &str) -> Self {
        Self(secret.trim().into())
    }

    /// The secret itself, for the one place that has to send it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the token is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares with `candidate` without an early exit on the first differing byte.
    #[must_use]
    pub fn matches(&self, candidate: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), candidate.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.matches(&other.0)
    }
}

impl Eq for Token {}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Serialize for Token {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|s| Self(s.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::Token;

    #[test]
    fn debug_never_shows_the_secret() {
        let token = Token::new("  Bot.abc.def\n");
        assert_eq!(token.expose(), "Bot.abc.def");
        assert!(!format!("{token:?}").contains("abc"));
        assert!(!format!("{:?}", Some(&token)).contains("abc"));
    }

    #[test]
    fn matching() {
        let token = Token::new("secret");
        assert!(token.matches("secret"));
        assert!(!token.matches("secreT"));
        assert!(!token.matches("secret2"));
        assert!(!token.matches(""));
    }
}
