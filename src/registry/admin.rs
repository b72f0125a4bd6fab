//! The `Admin` gRPC service: read the cluster membership, add a learner, set the voters, and
//! ask a node to drain. Membership changes run on the leader; elsewhere the call fails with
//! `FAILED_PRECONDITION` and the reply's metadata names the leader (`x-nonstick-leader`), so a
//! client can go there.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use super::{Registry, RegistryError};
use crate::rpc::pb::admin::admin_server::{Admin, AdminServer};
use crate::rpc::pb::admin::{
    AddLearnerRequest, DrainReply, DrainRequest, Member, MembersReply, MembersRequest,
    SetVotersRequest,
};

/// Metadata key naming the leader on a refused membership change.
pub const LEADER_HEADER: &str = "x-nonstick-leader";

/// The admin service of one node.
pub struct AdminService {
    registry: Registry,
    drain: Arc<Notify>,
}

impl AdminService {
    /// The service, to mount on the node's peer gRPC server; a drain request notifies
    /// `drain`.
    pub fn server(registry: Registry, drain: Arc<Notify>) -> AdminServer<AdminService> {
        AdminServer::new(AdminService { registry, drain })
    }

    fn members(&self) -> MembersReply {
        MembersReply {
            members: self
                .registry
                .membership()
                .into_iter()
                .map(|(id, addr, voter)| Member { id, addr, voter })
                .collect(),
            leader: self.registry.leader(),
        }
    }

    /// Refuse a change on a follower, naming the leader.
    fn require_leader(&self) -> Result<(), Status> {
        let leader = self.registry.leader();
        if leader == Some(self.registry.node_id()) {
            return Ok(());
        }
        let mut status = Status::failed_precondition(match leader {
            Some(leader) => format!("not the leader; node {leader} is"),
            None => "no leader right now".to_owned(),
        });
        if let Some(leader) = leader
            && let Ok(value) = leader.to_string().parse()
        {
            status.metadata_mut().insert(LEADER_HEADER, value);
        }
        Err(status)
    }
}

fn status(e: RegistryError) -> Status {
    match e {
        RegistryError::Timeout => Status::deadline_exceeded(e.to_string()),
        RegistryError::NotLeader { .. } | RegistryError::NoLeader => {
            Status::failed_precondition(e.to_string())
        }
        other => Status::internal(other.to_string()),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn members(
        &self,
        _request: Request<MembersRequest>,
    ) -> Result<Response<MembersReply>, Status> {
        Ok(Response::new(self.members()))
    }

    async fn add_learner(
        &self,
        request: Request<AddLearnerRequest>,
    ) -> Result<Response<MembersReply>, Status> {
        self.require_leader()?;
        let request = request.into_inner();
        self.registry
            .add_learner(request.id, &request.addr)
            .await
            .map_err(status)?;
        Ok(Response::new(self.members()))
    }

    async fn set_voters(
        &self,
        request: Request<SetVotersRequest>,
    ) -> Result<Response<MembersReply>, Status> {
        self.require_leader()?;
        let voters: BTreeSet<u64> = request.into_inner().voters.into_iter().collect();
        if voters.is_empty() {
            return Err(Status::invalid_argument(
                "a cluster needs at least one voter",
            ));
        }
        self.registry
            .change_membership(voters)
            .await
            .map_err(status)?;
        Ok(Response::new(self.members()))
    }

    async fn drain(&self, _request: Request<DrainRequest>) -> Result<Response<DrainReply>, Status> {
        self.drain.notify_one();
        Ok(Response::new(DrainReply {
            node: self.registry.node_id(),
        }))
    }
}

/// Ask node `node` to drain and stop, through the member whose gRPC address is `via`, reached
/// with `peers` (an empty directory: the cluster secret, and mutual TLS when the cluster uses
/// it); returns once the node has taken the request (it drains afterwards).
pub async fn drain(via: &str, peers: crate::rpc::Peers, node: u64) -> Result<(), Status> {
    use crate::rpc::pb::admin::admin_client::AdminClient;

    const VIA: u64 = u64::MAX;
    peers
        .set(VIA, via)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let channel = |id| {
        peers
            .channel(id)
            .ok_or_else(|| Status::not_found(format!("no address for node {id}")))
    };
    let members = AdminClient::new(channel(VIA)?)
        .members(MembersRequest {})
        .await?
        .into_inner();
    let addr = members
        .members
        .iter()
        .find(|m| m.id == node)
        .map(|m| m.addr.clone())
        .ok_or_else(|| Status::not_found(format!("node {node} is not a member")))?;
    peers
        .set(node, &addr)
        .map_err(|e| Status::internal(e.to_string()))?;
    let reply = AdminClient::new(channel(node)?)
        .drain(DrainRequest {})
        .await?
        .into_inner();
    if reply.node == node {
        Ok(())
    } else {
        Err(Status::failed_precondition(format!(
            "node {node}'s address answers as node {}",
            reply.node
        )))
    }
}

/// A membership change asked of a running cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// Add node `id`, reachable for gRPC at `addr`, as a learner.
    Add {
        /// The new node's id.
        id: u64,
        /// Its gRPC address.
        addr: String,
    },
    /// Make learner `id` a voter.
    Promote(u64),
    /// Remove node `id` from the cluster.
    Remove(u64),
}

/// Apply `change` (or only read the membership, with `None`) through the node whose gRPC
/// address is `via`, reached with `peers` (see [`drain`]), going to the leader if `via` is
/// not it. Returns the membership after.
pub async fn administer(
    via: &str,
    peers: crate::rpc::Peers,
    change: Option<MemberChange>,
) -> Result<MembersReply, Status> {
    use crate::rpc::pb::admin::admin_client::AdminClient;

    const VIA: u64 = u64::MAX;
    peers
        .set(VIA, via)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let client = |node| {
        peers
            .channel(node)
            .map(AdminClient::new)
            .ok_or_else(|| Status::not_found(format!("no address for node {node}")))
    };
    let members = client(VIA)?.members(MembersRequest {}).await?.into_inner();
    let Some(change) = change else {
        return Ok(members);
    };
    let target = match members.leader {
        Some(leader) => {
            let addr = members
                .members
                .iter()
                .find(|m| m.id == leader)
                .map(|m| m.addr.clone())
                .ok_or_else(|| Status::unavailable("the leader has no known address"))?;
            peers
                .set(leader, &addr)
                .map_err(|e| Status::internal(e.to_string()))?;
            leader
        }
        None => return Err(Status::unavailable("the cluster has no leader right now")),
    };
    let mut admin = client(target)?;
    let voters = |members: &MembersReply| -> BTreeSet<u64> {
        members
            .members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.id)
            .collect()
    };
    let reply = match change {
        MemberChange::Add { id, addr } => admin.add_learner(AddLearnerRequest { id, addr }).await?,
        MemberChange::Promote(id) => {
            let mut set = voters(&members);
            set.insert(id);
            admin
                .set_voters(SetVotersRequest {
                    voters: set.into_iter().collect(),
                })
                .await?
        }
        MemberChange::Remove(id) => {
            let mut set = voters(&members);
            set.remove(&id);
            admin
                .set_voters(SetVotersRequest {
                    voters: set.into_iter().collect(),
                })
                .await?
        }
    };
    Ok(reply.into_inner())
}
