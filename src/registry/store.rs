//! The registry's durable storage: openraft's log store and state machine (storage-v2) on sled.
//!
//! This is the only file that knows sled. One `sled::Db` per data directory, three trees:
//! - `logs`: log index as big-endian `u64` -> JSON `Entry` (big-endian keeps byte order equal
//!   to index order, so ranges and `last()` work);
//! - `meta`: `vote`, `committed`, `last_purged`;
//! - `sm`: the last snapshot, `m:snapshot` (the sessions, the applied log id, the membership).
//!
//! The state machine lives in memory (`Sessions`); on disk it is the last snapshot plus the log
//! after it, which a restart replays (openraft applies the entries after the snapshot's log id).
//! So an applied entry costs no disk write of its own: every session change is written once, in
//! the log. Log appends, votes, snapshots and installs flush the Db before they are
//! acknowledged (a sled flush covers every tree); a snapshot is durable before openraft may
//! purge the logs it covers.

#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
    Vote,
};
use serde::{Deserialize, Serialize};

use super::state::Sessions;
use super::types::{NodeId, Response, SessionRecord, TypeConfig};

type StorageResult<T> = Result<T, StorageError<NodeId>>;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";
const SNAPSHOT: &[u8] = b"m:snapshot";

/// Opens (or creates) the store in `dir` and returns its two halves. The directory is locked by
/// sled until every clone of both halves is dropped.
pub fn open(dir: &Path) -> StorageResult<(LogStore, StateMachineStore)> {
    let db = sled::open(dir).map_err(|e| StorageIOError::<NodeId>::read(&e))?;
    let tree = |name: &str| {
        db.open_tree(name)
            .map_err(|e| StorageIOError::<NodeId>::read(&e))
    };
    let lease = Arc::new(());
    let logs = LogStore {
        _lease: lease.clone(),
        db: db.clone(),
        logs: tree("logs")?,
        meta: tree("meta")?,
    };
    let sm_tree = tree("sm")?;
    let data = load_state_machine(&sm_tree)?;
    let sm = StateMachineStore {
        _lease: lease,
        db,
        sm: sm_tree,
        data: Arc::new(RwLock::new(data)),
    };
    Ok((logs, sm))
}

/// The state of the last snapshot, or an empty state.
fn load_state_machine(sm: &sled::Tree) -> StorageResult<SmData> {
    let Some(stored) = read_snapshot(sm)? else {
        return Ok(SmData::default());
    };
    Ok(SmData {
        applied: stored.meta.last_log_id,
        membership: stored.meta.last_membership,
        sessions: decode(&stored.data).map_err(|e| sm_read(&e))?,
    })
}

/// The last snapshot stored in the `sm` tree.
fn read_snapshot(sm: &sled::Tree) -> StorageResult<Option<StoredSnapshot>> {
    match sm.get(SNAPSHOT).map_err(|e| snapshot_read(&e))? {
        Some(value) => Ok(Some(decode(&value).map_err(|e| snapshot_read(&e))?)),
        None => Ok(None),
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(value)
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}

fn snapshot_read(e: &(impl std::error::Error + 'static)) -> StorageError<NodeId> {
    StorageIOError::read_snapshot(None, e).into()
}

fn sm_read(e: &(impl std::error::Error + 'static)) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(e).into()
}

fn sm_write(e: &(impl std::error::Error + 'static)) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(e).into()
}

fn logs_read(e: &(impl std::error::Error + 'static)) -> StorageError<NodeId> {
    StorageIOError::read_logs(e).into()
}

fn logs_write(e: &(impl std::error::Error + 'static)) -> StorageError<NodeId> {
    StorageIOError::write_logs(e).into()
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_bound(bound: Bound<&u64>) -> Bound<[u8; 8]> {
    match bound {
        Bound::Included(i) => Bound::Included(index_key(*i)),
        Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The Raft log, vote and commit marker on sled. Cheap to clone (sled trees are shared handles);
/// it is also its own log reader.
#[derive(Clone)]
pub struct LogStore {
    /// Held by every clone of both halves; see [`StateMachineStore::lease`].
    _lease: Arc<()>,
    db: sled::Db,
    logs: sled::Tree,
    meta: sled::Tree,
}

impl LogStore {
    fn read_meta<T: for<'a> Deserialize<'a>>(&self, key: &[u8]) -> StorageResult<Option<T>> {
        match self.meta.get(key).map_err(|e| logs_read(&e))? {
            Some(value) => Ok(Some(decode(&value).map_err(|e| logs_read(&e))?)),
            None => Ok(None),
        }
    }

    fn write_meta<T: Serialize>(&self, key: &[u8], value: &T) -> StorageResult<()> {
        let bytes = encode(value).map_err(|e| logs_write(&e))?;
        self.meta.insert(key, bytes).map_err(|e| logs_write(&e))?;
        Ok(())
    }

    async fn flush(&self) -> StorageResult<()> {
        self.db.flush_async().await.map_err(|e| logs_write(&e))?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let bounds = (key_bound(range.start_bound()), key_bound(range.end_bound()));
        let mut entries = Vec::new();
        for item in self.logs.range(bounds) {
            let (_, value) = item.map_err(|e| logs_read(&e))?;
            entries.push(decode(&value).map_err(|e| logs_read(&e))?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.read_meta(LAST_PURGED)?;
        let last_log_id = match self.logs.last().map_err(|e| logs_read(&e))? {
            Some((_, value)) => {
                let entry: Entry<TypeConfig> = decode(&value).map_err(|e| logs_read(&e))?;
                Some(entry.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let bytes = encode(vote).map_err(|e| StorageIOError::<NodeId>::write_vote(&e))?;
        self.meta
            .insert(VOTE, bytes)
            .map_err(|e| StorageIOError::<NodeId>::write_vote(&e))?;
        self.db
            .flush_async()
            .await
            .map_err(|e| StorageIOError::<NodeId>::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        match self
            .meta
            .get(VOTE)
            .map_err(|e| StorageIOError::<NodeId>::read_vote(&e))?
        {
            Some(value) => Ok(Some(
                decode(&value).map_err(|e| StorageIOError::<NodeId>::read_vote(&e))?,
            )),
            None => Ok(None),
        }
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        // Not flushed: losing it only means re-applying a few entries after a crash.
        self.write_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self
            .read_meta::<Option<LogId<NodeId>>>(COMMITTED)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = encode(&entry).map_err(|e| logs_write(&e))?;
            batch.insert(&index_key(entry.log_id.index), bytes);
        }
        self.logs.apply_batch(batch).map_err(|e| logs_write(&e))?;
        // Acknowledge only once durable: openraft counts this node towards the quorum then.
        let flushed = self.db.flush_async().await;
        callback.log_io_completed(flushed.map(|_| ()).map_err(std::io::Error::other));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut batch = sled::Batch::default();
        for item in self.logs.range(index_key(log_id.index)..) {
            let (key, _) = item.map_err(|e| logs_write(&e))?;
            batch.remove(key);
        }
        self.logs.apply_batch(batch).map_err(|e| logs_write(&e))?;
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        // Record the purge point durably first: a crash between the two steps then leaves
        // extra entries below it (harmless), never a gap without a marker.
        self.write_meta(LAST_PURGED, &log_id)?;
        self.flush().await?;
        let mut batch = sled::Batch::default();
        for item in self.logs.range(..=index_key(log_id.index)) {
            let (key, _) = item.map_err(|e| logs_write(&e))?;
            batch.remove(key);
        }
        self.logs.apply_batch(batch).map_err(|e| logs_write(&e))?;
        Ok(())
    }
}

/// The applied state: what the state machine holds in memory.
#[derive(Default)]
struct SmData {
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    sessions: Sessions,
}

/// A snapshot as stored in the `sm` tree.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// The registry state machine on sled, with its in-memory copy. Cheap to clone; clones share
/// both (the clone is also the snapshot builder).
#[derive(Clone)]
pub struct StateMachineStore {
    /// Held by every clone of both halves; see [`StateMachineStore::lease`].
    _lease: Arc<()>,
    db: sled::Db,
    sm: sled::Tree,
    data: Arc<RwLock<SmData>>,
}

/// Read access to the applied sessions, for the registry facade.
#[derive(Clone)]
pub(crate) struct StateView {
    data: Arc<RwLock<SmData>>,
}

impl StateView {
    /// The applied record of `sid`.
    pub(crate) fn session(&self, sid: &str) -> Option<SessionRecord> {
        read(&self.data).sessions.get(sid).cloned()
    }

    /// The applied owner of `sid` (no copy of the record).
    pub(crate) fn owner(&self, sid: &str) -> Option<NodeId> {
        read(&self.data)
            .sessions
            .get(sid)
            .map(|record| record.owner)
    }

    /// Every node that owns a recorded session.
    pub(crate) fn owners(&self) -> Vec<NodeId> {
        read(&self.data).sessions.owners()
    }

    /// The sids owned by `node`.
    pub(crate) fn owned_by(&self, node: NodeId) -> Vec<String> {
        read(&self.data).sessions.owned_by(node)
    }

    /// How many sessions are recorded.
    pub(crate) fn len(&self) -> usize {
        read(&self.data).sessions.len()
    }
}

// A panic while a lock is held can only come from a bug in `Sessions::apply`; the data is then
// as consistent as anything else, so poisoning is not propagated.
fn read(data: &RwLock<SmData>) -> RwLockReadGuard<'_, SmData> {
    data.read().unwrap_or_else(|e| e.into_inner())
}

fn write(data: &RwLock<SmData>) -> RwLockWriteGuard<'_, SmData> {
    data.write().unwrap_or_else(|e| e.into_inner())
}

impl StateMachineStore {
    /// A handle that dies when the last clone of both halves is dropped, i.e. when sled's lock
    /// on the directory is about to be released and the directory can be opened again.
    pub(crate) fn lease(&self) -> Weak<()> {
        Arc::downgrade(&self._lease)
    }

    /// A read handle on the applied state.
    pub(crate) fn view(&self) -> StateView {
        StateView {
            data: self.data.clone(),
        }
    }

    fn write_snapshot(&self, snapshot: &StoredSnapshot) -> StorageResult<()> {
        let signature = Some(snapshot.meta.signature());
        let bytes = encode(snapshot)
            .map_err(|e| StorageIOError::<NodeId>::write_snapshot(signature.clone(), &e))?;
        self.sm
            .insert(SNAPSHOT, bytes)
            .map_err(|e| StorageIOError::<NodeId>::write_snapshot(signature, &e))?;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (meta, data) = {
            let state = read(&self.data);
            let data = encode(&state.sessions).map_err(|e| sm_read(&e))?;
            let snapshot_id = match state.applied {
                Some(id) => format!("{}-{}-{}", id.leader_id, id.index, unique_suffix()),
                None => format!("empty-{}", unique_suffix()),
            };
            let meta = SnapshotMeta {
                last_log_id: state.applied,
                last_membership: state.membership.clone(),
                snapshot_id,
            };
            (meta, data)
        };
        // Durable before it is reported: openraft may purge the logs it covers.
        let stored = StoredSnapshot { meta, data };
        self.write_snapshot(&stored)?;
        self.db.flush_async().await.map_err(|e| sm_write(&e))?;
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

/// Nanoseconds since the epoch, to tell apart snapshots built at the same log position.
fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let state = read(&self.data);
        Ok((state.applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut state = write(&self.data);
        let mut responses = Vec::new();
        for entry in entries {
            state.applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::Applied,
                EntryPayload::Normal(command) => state.sessions.apply(&command),
                EntryPayload::Membership(membership) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Response::Applied
                }
            };
            responses.push(response);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let sessions: Sessions = decode(&data)
            .map_err(|e| StorageIOError::<NodeId>::read_snapshot(Some(meta.signature()), &e))?;
        // Durable before the state changes: a restart then starts from this snapshot.
        self.write_snapshot(&StoredSnapshot {
            meta: meta.clone(),
            data,
        })?;
        self.db.flush_async().await.map_err(|e| sm_write(&e))?;
        let mut state = write(&self.data);
        state.sessions.replace(sessions);
        state.applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(read_snapshot(&self.sm)?.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}
