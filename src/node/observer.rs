//! A read-only view of a running node for status displays (the demo's cluster page): what it
//! holds, what it forwards, and what its registry says of the cluster, read when asked.

use crate::gateway::Gateway;
use crate::registry::{NodeId, Registry};

/// A handle that reads a node's status; cheap to clone, and valid while the node runs.
#[derive(Clone)]
pub struct Observer {
    pub(super) node_id: String,
    pub(super) gateway: Gateway,
    pub(super) registry: Option<Registry>,
}

/// A node's status at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node's name (a cluster node's id).
    pub node_id: String,
    /// The Raft leader this node knows of (`None` on a single node, or during an election).
    pub leader: Option<NodeId>,
    /// The members as this node last applied them: id, gRPC address, whether a voter.
    pub members: Vec<(NodeId, String, bool)>,
    /// Sessions the registry names this node the owner of (on a single node: those it holds).
    pub sessions_owned: usize,
    /// Live sessions held here on polling (an upgrading one included).
    pub polling: usize,
    /// Live sessions held here on a websocket.
    pub websocket: usize,
    /// Polling requests this node has forwarded to their session's owner since it started.
    pub forwarded: u64,
}

impl Observer {
    /// The live sessions held here: `(polling, websocket)`, over every mount.
    pub fn transport_counts(&self) -> (usize, usize) {
        self.gateway
            .mounts()
            .iter()
            .map(|(_, engine)| engine.transport_counts())
            .fold((0, 0), |(p, w), (dp, dw)| (p + dp, w + dw))
    }

    /// The node's status now.
    pub fn status(&self) -> NodeStatus {
        let (polling, websocket) = self.transport_counts();
        let (leader, members, sessions_owned) = match &self.registry {
            Some(registry) => (
                registry.leader(),
                registry.membership(),
                registry.sessions_owned_count(registry.node_id()),
            ),
            None => (None, Vec::new(), polling + websocket),
        };
        NodeStatus {
            node_id: self.node_id.clone(),
            leader,
            members,
            sessions_owned,
            polling,
            websocket,
            forwarded: self.gateway.counts().forwarded,
        }
    }
}
