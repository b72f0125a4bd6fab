//! The registry's state in memory and the one deterministic function that applies a command to
//! it. No I/O here: the store persists this state as snapshots, and the Raft log in between.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::types::{
    Command, NodeId, Response, SavedSocket, SessionRecord, SocketRecord, Transport,
};

/// Saved sockets are forgotten this long after they were saved, whatever the namespace's
/// recovery window (each take checks its own, shorter one).
const SAVED_RETENTION_MS: u64 = 30 * 60 * 1000;
/// Most saved sockets kept; the oldest go first.
const MAX_SAVED: usize = 200_000;

/// All sessions, with an index by owner so a node's sessions are found without a scan, the
/// saved sockets of connections that were lost, and which session each private id is bound to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Stored", into = "Stored")]
pub(crate) struct Sessions {
    records: BTreeMap<String, SessionRecord>,
    by_owner: BTreeMap<NodeId, BTreeSet<String>>,
    saved: BTreeMap<String, SavedSocket>,
    /// `saved` by age: (saved at, pid).
    saved_order: BTreeSet<(u64, String)>,
    /// pid -> the session whose socket holds it.
    pids: BTreeMap<String, String>,
}

/// The form snapshots keep: the records and the saved sockets (the indexes are rebuilt).
/// Snapshots written before sockets were saved hold the records alone.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Stored {
    Full {
        records: BTreeMap<String, SessionRecord>,
        saved: BTreeMap<String, SavedSocket>,
    },
    Records(BTreeMap<String, SessionRecord>),
}

impl From<Stored> for Sessions {
    fn from(stored: Stored) -> Self {
        let (records, saved) = match stored {
            Stored::Full { records, saved } => (records, saved),
            Stored::Records(records) => (records, BTreeMap::new()),
        };
        let mut sessions = Sessions::default();
        for (sid, record) in records {
            sessions.insert(sid, record);
        }
        for (pid, socket) in saved {
            sessions.keep(pid, socket);
        }
        sessions
    }
}

impl From<Sessions> for Stored {
    fn from(sessions: Sessions) -> Self {
        Stored::Full {
            records: sessions.records,
            saved: sessions.saved,
        }
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

    /// How many sessions `node` owns.
    pub(crate) fn owned_count(&self, node: NodeId) -> usize {
        self.by_owner.get(&node).map_or(0, BTreeSet::len)
    }

    /// Every node that owns a recorded session.
    pub(crate) fn owners(&self) -> Vec<NodeId> {
        self.by_owner.keys().copied().collect()
    }

    /// How many sessions are recorded.
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// How many sockets are saved for recovery.
    pub(crate) fn saved_len(&self) -> usize {
        self.saved.len()
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
                        taken_over: false,
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
                record.taken_over = false;
                self.unindex(old, sid);
                self.by_owner.entry(*node).or_default().insert(sid.clone());
                Response::Applied
            }
            Command::SetTransport { sid, transport } => self.update(sid, |record| {
                record.transport = *transport;
                Response::Applied
            }),
            Command::DeleteSession { sid } => match self.remove(sid) {
                Some(record) => {
                    for socket in record.namespaces.into_values() {
                        self.unbind(socket.pid.as_deref(), sid);
                    }
                    Response::Applied
                }
                None => Response::UnknownSid,
            },
            Command::JoinNamespace {
                sid,
                nsp,
                socket_id,
                pid,
            } => {
                let Some(record) = self.records.get_mut(sid) else {
                    return Response::UnknownSid;
                };
                let socket = SocketRecord {
                    socket_id: socket_id.clone(),
                    pid: pid.clone(),
                    rooms: BTreeSet::new(),
                    data: serde_json::Value::Null,
                };
                let replaced = record.namespaces.insert(nsp.clone(), socket);
                if let Some(old) = replaced {
                    self.unbind(old.pid.as_deref(), sid);
                }
                if let Some(pid) = pid {
                    self.pids.insert(pid.clone(), sid.clone());
                }
                Response::Applied
            }
            Command::LeaveNamespace { sid, nsp } => {
                match self.records.get_mut(sid).map(|r| r.namespaces.remove(nsp)) {
                    None => Response::UnknownSid,
                    Some(None) => Response::UnknownNamespace,
                    Some(Some(socket)) => {
                        self.unbind(socket.pid.as_deref(), sid);
                        Response::Applied
                    }
                }
            }
            Command::SaveSocket { sid, nsp, at_ms } => {
                match self.records.get_mut(sid).map(|r| r.namespaces.remove(nsp)) {
                    None => Response::UnknownSid,
                    Some(None) => Response::UnknownNamespace,
                    Some(Some(socket)) => {
                        self.save(sid, nsp, socket, *at_ms);
                        Response::Applied
                    }
                }
            }
            Command::TakeSocket {
                pid,
                nsp,
                now_ms,
                max_age_ms,
                live,
            } => self.take(pid, nsp, *now_ms, *max_age_ms, *live),
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
            Command::DeleteSessionsOf { node, at_ms } => {
                let sids = self.by_owner.remove(node).unwrap_or_default();
                let count = sids.len() as u64;
                for sid in sids {
                    self.forget_saving(&sid, *at_ms);
                }
                Response::Deleted { count }
            }
            Command::TakeOver { node, to, at_ms } => {
                let (mut moved, mut deleted) = (0, 0);
                for sid in self.owned_by(*node) {
                    let polling = self
                        .records
                        .get(&sid)
                        .is_some_and(|r| r.transport == Transport::Polling);
                    match to.get(moved as usize % to.len().max(1)) {
                        Some(heir) if polling => {
                            if let Some(record) = self.records.get_mut(&sid) {
                                record.owner = *heir;
                                record.epoch += 1;
                                record.taken_over = true;
                            }
                            self.unindex(*node, &sid);
                            self.by_owner.entry(*heir).or_default().insert(sid);
                            moved += 1;
                        }
                        _ => {
                            self.unindex(*node, &sid);
                            self.forget_saving(&sid, *at_ms);
                            deleted += 1;
                        }
                    }
                }
                Response::TakenOver { moved, deleted }
            }
            Command::Batch(commands) => {
                Response::Batch(commands.iter().map(|command| self.apply(command)).collect())
            }
            // Only a take-over fences: a session moved on purpose may still get the former
            // owner's last commands, and the new owner's first ones before its commit.
            Command::AsOwner { node, command } => {
                let record = command.sid().and_then(|sid| self.records.get(sid));
                match record {
                    Some(r) if r.taken_over && r.owner != *node => {
                        Response::NotOwner { owner: r.owner }
                    }
                    _ => self.apply(command),
                }
            }
        }
    }

    /// Replaces the whole state (snapshot install).
    pub(crate) fn replace(&mut self, other: Sessions) {
        *self = other;
    }

    /// Inserts or replaces a record, keeping the indexes.
    pub(crate) fn insert(&mut self, sid: String, record: SessionRecord) {
        if let Some(old) = self.records.get(&sid).map(|r| r.owner) {
            self.unindex(old, &sid);
        }
        for socket in record.namespaces.values() {
            if let Some(pid) = &socket.pid {
                self.pids.insert(pid.clone(), sid.clone());
            }
        }
        self.by_owner
            .entry(record.owner)
            .or_default()
            .insert(sid.clone());
        self.records.insert(sid, record);
    }

    fn remove(&mut self, sid: &str) -> Option<SessionRecord> {
        let record = self.records.remove(sid)?;
        self.unindex(record.owner, sid);
        Some(record)
    }

    /// Forget the record of `sid` (already out of the owner index), saving its sockets.
    fn forget_saving(&mut self, sid: &str, at_ms: u64) {
        if let Some(record) = self.records.remove(sid) {
            for (nsp, socket) in record.namespaces {
                self.save(sid, &nsp, socket, at_ms);
            }
        }
    }

    /// Unbind `pid` if it is bound to `sid`; whether it was.
    fn unbind(&mut self, pid: Option<&str>, sid: &str) -> bool {
        match pid {
            Some(pid) if self.pids.get(pid).is_some_and(|bound| bound == sid) => {
                self.pids.remove(pid);
                true
            }
            _ => false,
        }
    }

    /// Keep `socket`, which left session `sid`, for recovery if its pid is still bound to
    /// that session (a pid taken over by a newer socket is not saved again).
    fn save(&mut self, sid: &str, nsp: &str, socket: SocketRecord, at_ms: u64) {
        let Some(pid) = socket.pid.clone() else {
            return;
        };
        if !self.unbind(Some(&pid), sid) {
            return;
        }
        let saved = SavedSocket {
            nsp: nsp.to_owned(),
            socket_id: socket.socket_id,
            rooms: socket.rooms,
            data: socket.data,
            saved_at_ms: at_ms,
        };
        self.keep(pid, saved);
        let cutoff = at_ms.saturating_sub(SAVED_RETENTION_MS);
        while let Some((at, pid)) = self.saved_order.first().cloned() {
            if at >= cutoff && self.saved.len() <= MAX_SAVED {
                break;
            }
            self.saved_order.pop_first();
            self.saved.remove(&pid);
        }
    }

    fn keep(&mut self, pid: String, saved: SavedSocket) {
        if let Some(old) = self.saved.remove(&pid) {
            self.saved_order.remove(&(old.saved_at_ms, pid.clone()));
        }
        self.saved_order.insert((saved.saved_at_ms, pid.clone()));
        self.saved.insert(pid, saved);
    }

    fn take(&mut self, pid: &str, nsp: &str, now_ms: u64, max_age_ms: u64, live: bool) -> Response {
        if self.saved.get(pid).is_some_and(|s| s.nsp == nsp) {
            let Some(saved) = self.saved.remove(pid) else {
                return Response::NotSaved;
            };
            self.saved_order
                .remove(&(saved.saved_at_ms, pid.to_owned()));
            return if now_ms.saturating_sub(saved.saved_at_ms) <= max_age_ms {
                Response::Taken(saved)
            } else {
                Response::NotSaved
            };
        }
        let Some(sid) = self.pids.get(pid).cloned() else {
            return Response::NotSaved;
        };
        let Some(record) = self.records.get(&sid) else {
            return Response::NotSaved;
        };
        let Some(socket) = record
            .namespaces
            .get(nsp)
            .filter(|s| s.pid.as_deref() == Some(pid))
        else {
            return Response::NotSaved;
        };
        if !live {
            return Response::Live {
                owner: record.owner,
            };
        }
        let taken = SavedSocket {
            nsp: nsp.to_owned(),
            socket_id: socket.socket_id.clone(),
            rooms: socket.rooms.clone(),
            data: socket.data.clone(),
            saved_at_ms: now_ms,
        };
        self.pids.remove(pid);
        Response::Taken(taken)
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
            s.apply(&Command::DeleteSessionsOf { node: 2, at_ms: 0 }),
            Response::Deleted { count: 1 }
        );
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn a_former_owner_changes_nothing() {
        let mut s = Sessions::default();
        s.apply(&create("a", 1));
        let joined = Command::Batch(vec![join("a", "/", "p")]).as_owner(1);
        assert_eq!(s.apply(&joined), Response::Batch(vec![Response::Applied]));
        s.apply(&Command::TakeOver {
            node: 1,
            to: vec![2],
            at_ms: 0,
        });
        let late = Command::DeleteSession { sid: "a".into() }.as_owner(1);
        assert_eq!(s.apply(&late), Response::NotOwner { owner: 2 });
        assert_eq!(s.owned_by(2), vec!["a".to_string()]);
        let own = Command::DeleteSession { sid: "a".into() }.as_owner(2);
        assert_eq!(s.apply(&own), Response::Applied);
    }

    fn join(sid: &str, nsp: &str, pid: &str) -> Command {
        Command::JoinNamespace {
            sid: sid.into(),
            nsp: nsp.into(),
            socket_id: format!("sock-{pid}"),
            pid: Some(pid.into()),
        }
    }

    fn take(pid: &str, now_ms: u64, live: bool) -> Command {
        Command::TakeSocket {
            pid: pid.into(),
            nsp: "/".into(),
            now_ms,
            max_age_ms: 1000,
            live,
        }
    }

    #[test]
    fn a_lost_socket_is_taken_back_once_within_its_window() {
        let mut s = Sessions::default();
        s.apply(&Command::Batch(vec![create("a", 1), join("a", "/", "p")]));
        s.apply(&Command::JoinRooms {
            sid: "a".into(),
            nsp: "/".into(),
            rooms: vec!["lobby".into()],
        });
        assert_eq!(s.apply(&take("p", 10, false)), Response::Live { owner: 1 });
        let save = Command::SaveSocket {
            sid: "a".into(),
            nsp: "/".into(),
            at_ms: 100,
        };
        assert_eq!(s.apply(&save), Response::Applied);
        assert_eq!(s.saved_len(), 1);
        let back = serde_json::from_slice::<Sessions>(&serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(back, s, "saved sockets survive a snapshot");
        let mut late = s.clone();
        assert_eq!(late.apply(&take("p", 1101, false)), Response::NotSaved);
        match s.apply(&take("p", 1100, false)) {
            Response::Taken(saved) => {
                assert_eq!(saved.socket_id, "sock-p");
                assert!(saved.rooms.contains("lobby"));
            }
            other => panic!("not taken: {other:?}"),
        }
        assert_eq!(s.apply(&take("p", 1100, false)), Response::NotSaved);
    }

    #[test]
    fn a_crashed_nodes_sockets_are_saved_and_a_taken_over_pid_is_not_saved_again() {
        let mut s = Sessions::default();
        s.apply(&Command::Batch(vec![create("a", 1), join("a", "/", "p")]));
        match s.apply(&take("p", 5, true)) {
            Response::Taken(saved) => assert_eq!(saved.saved_at_ms, 5),
            other => panic!("not taken: {other:?}"),
        }
        // The client is back on node 2 with the same pid; node 1's late report saves nothing.
        s.apply(&Command::Batch(vec![create("b", 2), join("b", "/", "p")]));
        let late = Command::SaveSocket {
            sid: "a".into(),
            nsp: "/".into(),
            at_ms: 6,
        };
        assert_eq!(s.apply(&late), Response::Applied);
        assert_eq!(s.saved_len(), 0);
        assert_eq!(s.apply(&take("p", 7, false)), Response::Live { owner: 2 });
        // Node 2 dies: its sockets are saved.
        s.apply(&Command::DeleteSessionsOf { node: 2, at_ms: 8 });
        assert!(matches!(s.apply(&take("p", 9, false)), Response::Taken(_)));
    }

    #[test]
    fn serde_round_trip_rebuilds_the_owner_index() {
        let mut s = Sessions::default();
        s.apply(&Command::Batch(vec![create("a", 1), create("b", 2)]));
        let json = serde_json::to_vec(&s).unwrap();
        let back: Sessions = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.owned_by(2), vec!["b".to_string()]);
        let plain = serde_json::json!({"c": {"owner": 3, "epoch": 0, "transport": "polling", "namespaces": {}}});
        let old: Sessions = serde_json::from_value(plain).unwrap();
        assert_eq!(
            old.owned_by(3),
            vec!["c".to_string()],
            "snapshots of earlier versions load"
        );
    }
}
