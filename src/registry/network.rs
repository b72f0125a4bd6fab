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
