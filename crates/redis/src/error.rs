//! Why a node could not join or run.

/// Why a node could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// `[cluster] url` is not a Redis URL.
    #[error("cluster.url is not a usable Redis URL: {0}")]
    Url(String),
    /// Redis could not be reached.
    #[error("cannot reach Redis: {0}")]
    Unreachable(String),
    /// Redis answered with an error during start-up.
    #[error("Redis: {0}")]
    Redis(String),
    /// The node disagrees with the cluster or with what Redis must be: a configuration
    /// problem the operator has to fix (the process exits with 2).
    #[error("{key}: {message}")]
    Conflict {
        /// The configuration key at fault.
        key: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl NodeError {
    pub(crate) fn conflict(key: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            key,
            message: message.into(),
        }
    }
}

impl From<redis::RedisError> for NodeError {
    fn from(err: redis::RedisError) -> Self {
        if err.is_io_error() || err.is_timeout() {
            Self::Unreachable(err.to_string())
        } else {
            Self::Redis(err.to_string())
        }
    }
}
