//! Errors of the supervision tree's public API.

/// Why a request to the supervisor failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActorsError {
    #[error("no server with id `{0}`: list the servers to see which exist")]
    NotFound(String),
    #[error("a server with id `{0}` exists already: delete it first or choose another id")]
    AlreadyExists(String),
    #[error("the limit of {max} servers is reached: delete a server or raise mcp_hosting.max_servers")]
    TooMany { max: usize },
    #[error("invalid server spec: {0}")]
    InvalidSpec(String),
    #[error("invalid supervisor settings: {0}")]
    Config(String),
    #[error("hivehost is shutting down")]
    ShuttingDown,
    #[error("the supervisor did not answer in time")]
    Timeout,
    #[error("the supervisor is unavailable: {0}")]
    Unavailable(String),
}
