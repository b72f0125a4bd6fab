//! openraft's outbound network over gRPC: each Raft message is serialized (JSON) into a
//! `RaftBytes` and sent on the [`Peers`] channel of its target.
//!
//! The target's channel is looked up per call, so [`Peers::set`] (a node restarted on another
//! address) takes effect at once. A node that `Peers` does not know yet is added with the
//! address recorded in the Raft membership.

#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::Code;

use super::types::{NodeId, TypeConfig};
use crate::rpc::Peers;
use crate::rpc::pb::raft::RaftBytes;
use crate::rpc::pb::raft::raft_service_client::RaftServiceClient;

/// When this node last had an answer to an append-entries call (heartbeats included), or a
/// granted vote, from each peer: as leader, how it knows which members are still there.
#[derive(Clone, Default)]
pub(crate) struct Contact(Arc<Mutex<HashMap<NodeId, Instant>>>);

impl Contact {
    fn mark(&self, node: NodeId) {
        if let Ok(mut seen) = self.0.lock() {
            seen.insert(node, Instant::now());
        }
    }

    /// The last answer from `node`.
    pub(crate) fn last(&self, node: NodeId) -> Option<Instant> {
        self.0.lock().ok()?.get(&node).copied()
    }

    /// How long ago `need` of the `peers` had all answered (`Duration::MAX` if fewer ever
    /// did): the age of the `need`-th most recent answer. Without allocating, since it runs on
    /// every request a leader serves; the peers are a handful.
    pub(crate) fn age_of<I>(&self, peers: impl Fn() -> I, need: usize) -> Duration
    where
        I: Iterator<Item = NodeId>,
    {
        let Ok(seen) = self.0.lock() else {
            return Duration::MAX;
        };
        let last = |peer: NodeId| seen.get(&peer).copied();
        peers()
            .filter_map(last)
            .filter(|t| peers().filter_map(last).filter(|u| u >= t).count() >= need)
            .max()
            .map_or(Duration::MAX, |t| t.elapsed())
    }
}

/// Creates a [`Connection`] per target for openraft.
pub(crate) struct Network {
    pub(crate) peers: Peers,
    pub(crate) contact: Contact,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        if self.peers.addr(target).is_none()
            && let Err(e) = self.peers.set(target, &node.addr)
        {
            tracing::warn!(target, addr = %node.addr, "raft peer address refused: {e}");
        }
        Connection {
            target,
            peers: self.peers.clone(),
            contact: self.contact.clone(),
        }
    }
}

/// The outbound side towards one peer.
pub(crate) struct Connection {
    target: NodeId,
    peers: Peers,
    contact: Contact,
}

/// Which Raft RPC to call.
#[derive(Clone, Copy)]
enum Rpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

/// A transport failure without a more specific type.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Connection {
    async fn call<Req, Resp, E>(&self, rpc: Rpc, request: &Req, ttl: Duration) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data =
            serde_json::to_vec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let Some(channel) = self.peers.channel(self.target) else {
            let e = TransportError(format!("no address for node {}", self.target));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        };
        let mut client = RaftServiceClient::new(channel);
        let mut request = tonic::Request::new(RaftBytes { data });
        request.set_timeout(ttl);
        let call = async {
            match rpc {
                Rpc::AppendEntries => client.append_entries(request).await,
                Rpc::Vote => client.vote(request).await,
                Rpc::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let reply = match tokio::time::timeout(ttl, call).await {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => return Err(status_error(status)),
            Err(_) => {
                let e = TransportError(format!("no answer within {ttl:?}"));
                return Err(RPCError::Network(NetworkError::new(&e)));
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> = serde_json::from_slice(&reply.data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// `Unavailable` means the connection failed: openraft backs off before retrying. Anything else
/// (including a refused secret) is a network error it retries normally.
fn status_error<E: std::error::Error>(
    status: tonic::Status,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    let e = TransportError(format!("{:?}: {}", status.code(), status.message()));
    match status.code() {
        Code::Unavailable => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        let result = self.call(Rpc::AppendEntries, &rpc, option.hard_ttl()).await;
        if matches!(result, Ok(_) | Err(RPCError::RemoteError(_))) {
            self.contact.mark(self.target);
        }
        result
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(Rpc::InstallSnapshot, &rpc, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        let result: RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> =
            self.call(Rpc::Vote, &rpc, option.hard_ttl()).await;
        // A granted vote acknowledges this node as much as an append does: a leader fresh
        // from its election holds its lease from the votes that made it, before its first
        // heartbeat round has come back.
        if matches!(&result, Ok(response) if response.vote_granted) {
            self.contact.mark(self.target);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_age_of_a_majority_is_that_of_its_oldest_answer() {
        let contact = Contact::default();
        let peers = || [2, 3, 4, 5].into_iter();
        assert_eq!(contact.age_of(peers, 1), Duration::MAX, "nobody answered");
        contact.mark(2);
        std::thread::sleep(Duration::from_millis(30));
        contact.mark(3);
        // The most recent answer (3) is younger than 30 ms, the second (2) is not.
        assert!(contact.age_of(peers, 1) < Duration::from_millis(30));
        assert!(contact.age_of(peers, 2) >= Duration::from_millis(30));
        assert_eq!(
            contact.age_of(peers, 3),
            Duration::MAX,
            "two answered, not three"
        );
    }
}
