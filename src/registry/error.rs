//! `RegistryError`, the one error type of the registry facade. It carries no openraft types, so
//! callers depend on the registry, not on the consensus library under it.

use super::types::NodeId;

/// Why a registry operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No leader was known within the operation's time limit (an election is under way, or this
    /// node cannot reach a majority). Nothing was written.
    #[error("no leader is known")]
    NoLeader,
    /// The operation must run on the leader (membership changes), and this node is not it.
    #[error("this node is not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader, if known.
        leader: Option<NodeId>,
    },
    /// A peer could not be reached or did not answer in time. For a write this means the
    /// outcome is unknown: the command may or may not have been applied.
    #[error("node {node} did not answer: {message}")]
    Unreachable {
        /// The peer.
        node: NodeId,
        /// What went wrong.
        message: String,
    },
    /// The operation did not finish within its time limit; for a write, the outcome is unknown.
    #[error("timed out")]
    Timeout,
    /// A membership change or initialization was refused.
    #[error("membership change refused: {0}")]
    Membership(String),
    /// The local storage failed (opening the data directory, or a Raft storage error).
    #[error("storage: {0}")]
    Storage(String),
    /// Raft stopped or failed in a way not listed above.
    #[error("raft: {0}")]
    Raft(String),
    /// A peer sent something that could not be decoded.
    #[error("bad message: {0}")]
    Codec(String),
    /// The registry has been shut down.
    #[error("the registry is shut down")]
    Shutdown,
}
