//! The registry's state in memory and the one deterministic function that applies a command to
//! it. No I/O here: the store persists this state as snapshots, and the Raft log in between.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::types::{Command, NodeId, Response, SessionRecord, SocketRecord};

/// All sessions, with an index by owner so a node's sessions are found without a scan.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(
    from = "BTreeMap<String, SessionRecord>",
    into = "BTreeMap<String, SessionRecord>"
)]
pub(crate) struct Sessions {
    records: BTreeMap<String, SessionRecord>,
    by_owner: BTreeMap<NodeId, BTreeSet<String>>,
}

impl From<BTreeMap<String, SessionRecord>> for Sessions {
    fn from(records: BTreeMap<String, SessionRecord>) -> Self {
        let mut by_owner: BTreeMap<NodeId, BTreeSet<String>> = BTreeMap::new();
        for (sid, record) in &records {
            by_owner
                .entry(record.owner)
                .or_default()
                .insert(sid.clone());
        }
        Self { records, by_owner }
    }
}

impl From<Sessions> for BTreeMap<String, SessionRecord> {
    fn from(sessions: Sessions) -> Self {
        sessions.records
    }
}

impl Sessions {
    /// The record of `sid`.
    pub(crate) fn get(&self, sid: &str) -> Option<&SessionRecord> {
        self.records.get(sid)
    }

    /// The sids owned by `node`, sorted.
    pub(crate) fn owned_by(&self, node: NodeId) -> Vec<String> {
        self.by_owner
            .get(&node)
            .map(|sids| sids.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every node that owns a recorded session.
    pub(crate) fn owners(&self) -> Vec<NodeId> {
        self.by_owner.keys().copied().collect()
    }

    /// How many sessions are recorded.
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// Applies `command`.
    pub(crate) fn apply(&mut self, command: &Command) -> Response {
        match command {
            Command::CreateSession {
                sid,
                owner,
                transport,
            } => {
                if self.records.contains_key(sid) {
                    return Response::AlreadyExists;
                }
                self.insert(
                    sid.clone(),
                    SessionRecord {
                        owner: *owner,
                        epoch: 0,
                        transport: *transport,
                        namespaces: BTreeMap::new(),
                    },
                );
                Response::Applied
            }
            Command::SetOwner { sid, node, epoch } => {
                let Some(record) = self.records.get_mut(sid) else {
                    return Response::UnknownSid;
                };
                if *epoch <= record.epoch {
                    return Response::StaleEpoch {
                        current: record.epoch,
                        owner: record.owner,
                    };
                }
                let old = std::mem::replace(&mut record.owner, *node);
                record.epoch = *epoch;
                self.unindex(old, sid);
                self.by_owner.entry(*node).or_default().insert(sid.clone());
                Response::Applied
            }
            Command::SetTransport { sid, transport } => self.update(sid, |record| {
                record.transport = *transport;
                Response::Applied
            }),
            Command::DeleteSession { sid } => match self.records.remove(sid) {
                Some(record) => {
                    self.unindex(record.owner, sid);
                    Response::Applied
                }
                None => Response::UnknownSid,
            },
            Command::JoinNamespace {
                sid,
                nsp,
                socket_id,
                pid,
            } => self.update(sid, |record| {
                record.namespaces.insert(
                    nsp.clone(),
                    SocketRecord {
                        socket_id: socket_id.clone(),
                        pid: pid.clone(),
                        rooms: BTreeSet::new(),
                        data: serde_json::Value::Null,
                    },
                );
                Response::Applied
            }),
            Command::LeaveNamespace { sid, nsp } => {
                self.update(sid, |record| match record.namespaces.remove(nsp) {
                    Some(_) => Response::Applied,
                    None => Response::UnknownNamespace,
                })
            }
            Command::JoinRooms { sid, nsp, rooms } => self.update_socket(sid, nsp, |s| {
                s.rooms.extend(rooms.iter().cloned());
            }),
            Command::LeaveRooms { sid, nsp, rooms } => self.update_socket(sid, nsp, |s| {
                for room in rooms {
                    s.rooms.remove(room);
                }
            }),
            Command::SetData { sid, nsp, data } => self.update_socket(sid, nsp, |s| {
                s.data = data.clone();
            }),
            Command::DeleteSessionsOf { node } => {
                let sids = self.by_owner.remove(node).unwrap_or_default();
                let count = sids.len() as u64;
                for sid in sids {
                    self.records.remove(&sid);
                }
                Response::Deleted { count }
            }
            Command::Batch(commands) => {
                Response::Batch(commands.iter().map(|command| self.apply(command)).collect())
            }
        }
    }

    /// Replaces the whole state (snapshot install).
    pub(crate) fn replace(&mut self, other: Sessions) {
        *self = other;
    }

    /// Inserts or replaces a record, keeping the owner index.
    pub(crate) fn insert(&mut self, sid: String, record: SessionRecord) {
        if let Some(old) = self.records.get(&sid).map(|r| r.owner) {
            self.unindex(old, &sid);
        }
        self.by_owner
            .entry(record.owner)
            .or_default()
            .insert(sid.clone());
        self.records.insert(sid, record);
    }

    fn unindex(&mut self, owner: NodeId, sid: &str) {
        if let Some(sids) = self.by_owner.get_mut(&owner) {
            sids.remove(sid);
            if sids.is_empty() {
                self.by_owner.remove(&owner);
            }
        }
    }

    fn update(
        &mut self,
        sid: &str,
        change: impl FnOnce(&mut SessionRecord) -> Response,
    ) -> Response {
        let Some(record) = self.records.get_mut(sid) else {
            return Response::UnknownSid;
        };
        change(record)
    }

    fn update_socket(
        &mut self,
        sid: &str,
        nsp: &str,
        change: impl FnOnce(&mut SocketRecord),
    ) -> Response {
        self.update(sid, |record| match record.namespaces.get_mut(nsp) {
            Some(socket) => {
                change(socket);
                Response::Applied
            }
            None => Response::UnknownNamespace,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::types::Transport;

    fn create(sid: &str, owner: NodeId) -> Command {
        Command::CreateSession {
            sid: sid.into(),
            owner,
            transport: Transport::Polling,
        }
    }

    #[test]
    fn owner_moves_only_with_a_higher_epoch() {
        let mut s = Sessions::default();
        assert_eq!(s.apply(&create("a", 1)), Response::Applied);
        assert_eq!(s.apply(&create("a", 2)), Response::AlreadyExists);
        let set = |node, epoch| Command::SetOwner {
            sid: "a".into(),
            node,
            epoch,
        };
        assert_eq!(s.apply(&set(2, 1)), Response::Applied);
        assert_eq!(
            s.apply(&set(3, 1)),
            Response::StaleEpoch {
                current: 1,
                owner: 2
            }
        );
        assert_eq!(s.owned_by(1), Vec::<String>::new());
        assert_eq!(s.owned_by(2), vec!["a".to_string()]);
        assert_eq!(
            s.apply(&Command::DeleteSessionsOf { node: 2 }),
            Response::Deleted { count: 1 }
        );
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn serde_round_trip_rebuilds_the_owner_index() {
        let mut s = Sessions::default();
        s.apply(&Command::Batch(vec![create("a", 1), create("b", 2)]));
        let json = serde_json::to_vec(&s).unwrap();
        let back: Sessions = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.owned_by(2), vec!["b".to_string()]);
    }
}
