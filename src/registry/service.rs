//! The inbound side of the registry's peer protocol: the `nonstick.raft.RaftService` gRPC
//! service. Raft messages are handed to the local Raft instance; forwarded writes and read-index
//! requests are answered only by the leader (a follower answers "not leader, try N").

#![allow(clippy::result_large_err)]

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use std::sync::Arc;

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use openraft::{BasicNode, LogId, Raft};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response as GrpcResponse, Status};

use super::lease::ServingLease;
use super::types::{Command, NodeId, Response, TypeConfig};
use crate::rpc::pb::raft::RaftBytes;
use crate::rpc::pb::raft::raft_service_server::RaftService;

/// Why the leader did not run a forwarded write or read-index request.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ForwardError {
    /// The receiver is not the leader; `leader` is who it thinks is.
    NotLeader { leader: Option<NodeId> },
    /// Raft refused or failed; the request had no effect or its outcome is unknown.
    Failed(String),
}

/// The answer to a forwarded write.
pub(crate) type WriteReply = Result<Response, ForwardError>;
/// The answer to a read-index request: the log position to wait for.
pub(crate) type ReadIndexReply = Result<Option<LogId<NodeId>>, ForwardError>;

/// Implementation of the registry's gRPC service; mount it with
/// [`Registry::start`](super::Registry::start)'s returned [`RegistryService`](super::RegistryService).
#[derive(Clone)]
pub struct RaftGrpc {
    raft: Raft<TypeConfig>,
    serving: Arc<ServingLease>,
}

impl RaftGrpc {
    pub(crate) fn new(raft: Raft<TypeConfig>, serving: Arc<ServingLease>) -> Self {
        Self { raft, serving }
    }
}

fn decode<T: for<'a> Deserialize<'a>>(request: Request<RaftBytes>) -> Result<T, Status> {
    serde_json::from_slice(&request.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Result<GrpcResponse<RaftBytes>, Status> {
    let data = serde_json::to_vec(value)
        .map_err(|e| Status::internal(format!("unencodable raft message: {e}")))?;
    Ok(GrpcResponse::new(RaftBytes { data }))
}

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> ForwardError {
    match e.forward_to_leader() {
        Some(forward) => ForwardError::NotLeader {
            leader: forward.leader_id,
        },
        None => ForwardError::Failed(e.to_string()),
    }
}

fn read_error(e: RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>) -> ForwardError {
    match e.forward_to_leader() {
        Some(forward) => ForwardError::NotLeader {
            leader: forward.leader_id,
        },
        None => ForwardError::Failed(e.to_string()),
    }
}

#[tonic::async_trait]
impl RaftService for RaftGrpc {
    async fn append_entries(
        &self,
        request: Request<RaftBytes>,
    ) -> Result<GrpcResponse<RaftBytes>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(request)?;
        let result = self.raft.append_entries(rpc).await;
        // From the current leader, whatever the entries: it has this node in its majority.
        if matches!(&result, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            self.serving.heard_leader();
        }
        reply(&result)
    }

    async fn vote(&self, request: Request<RaftBytes>) -> Result<GrpcResponse<RaftBytes>, Status> {
        let rpc: VoteRequest<NodeId> = decode(request)?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftBytes>,
    ) -> Result<GrpcResponse<RaftBytes>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(request)?;
        reply(&self.raft.install_snapshot(rpc).await)
    }

    async fn client_write(
        &self,
        request: Request<RaftBytes>,
    ) -> Result<GrpcResponse<RaftBytes>, Status> {
        let command: Command = decode(request)?;
        let result: WriteReply = match self.raft.client_write(command).await {
            Ok(written) => Ok(written.data),
            Err(e) => Err(write_error(e)),
        };
        reply(&result)
    }

    async fn read_index(
        &self,
        _request: Request<RaftBytes>,
    ) -> Result<GrpcResponse<RaftBytes>, Status> {
        let result: ReadIndexReply = match self.raft.get_read_log_id().await {
            Ok((read_log_id, _applied)) => Ok(read_log_id),
            Err(e) => Err(read_error(e)),
        };
        reply(&result)
    }
}
