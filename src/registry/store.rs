//! The registry's durable storage: openraft's log store and state machine (storage-v2) on sled.
//!
//! This is the only file that knows sled. The data directory holds one `sled::Db` at a time,
//! in `gen-<n>/`, named by the file `CURRENT`, with three trees:
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
//!
//! sled never gives back the space of what was removed: its file only grows and is reused.
//! So after a purge that left the database mostly empty, the store compacts it: it copies the
//! live trees into a fresh generation, flushes it, points `CURRENT` at it (a rename, atomic)
//! and deletes the old one. Every store operation holds the generation for reading; a
//! compaction holds it for writing, so nothing is written to a generation being copied. A
//! crash before the rename leaves the old generation current (the new one is deleted at the
//! next start); after it, the new one is complete.

#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
    Vote,
};
use serde::{Deserialize, Serialize};

use super::state::Sessions;
use super::types::{Command, NodeId, Response, SessionRecord, TypeConfig};

type StorageResult<T> = Result<T, StorageError<NodeId>>;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";
const SNAPSHOT: &[u8] = b"m:snapshot";

/// Opens (or creates) the store in `dir` and returns its two halves. The directory is locked by
/// sled until every clone of both halves is dropped.
pub fn open(dir: &Path) -> StorageResult<(LogStore, StateMachineStore)> {
    let disk = Disk::open(dir).map_err(|e| StorageIOError::<NodeId>::read(&e))?;
    let data = load_state_machine(&disk.sm)?;
    let disk = Arc::new(DiskHandle {
        root: dir.to_owned(),
        current: tokio::sync::RwLock::new(disk),
    });
    let lease = Arc::new(());
    let logs = LogStore {
        _lease: lease.clone(),
        disk: disk.clone(),
    };
    let sm = StateMachineStore {
        _lease: lease,
        disk,
        data: Arc::new(RwLock::new(data)),
        takeovers: Arc::new(tokio::sync::watch::Sender::new(0)),
    };
    Ok((logs, sm))
}

/// The file naming the current generation.
const CURRENT: &str = "CURRENT";

/// After a purge, the database is compacted when sled's files take more than this many times
/// the live data, and at least [`COMPACT_ABOVE`] bytes.
const COMPACT_RATIO: u64 = 4;
const COMPACT_ABOVE: u64 = 8 << 20;

/// One generation of the database: a sled `Db` in `gen-<number>/` and its trees.
struct Disk {
    number: u64,
    db: sled::Db,
    logs: sled::Tree,
    meta: sled::Tree,
    sm: sled::Tree,
}

/// The trees of a generation, by name.
const TREES: [&str; 3] = ["logs", "meta", "sm"];

impl Disk {
    /// The current generation of `root` (created if there is none); stale generations (a
    /// compaction that did not finish) are deleted.
    fn open(root: &Path) -> Result<Disk, sled::Error> {
        std::fs::create_dir_all(root)?;
        let number = match std::fs::read_to_string(root.join(CURRENT)) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| {
                sled::Error::Unsupported(format!("{CURRENT} holds {text:?}, not a generation"))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        for entry in std::fs::read_dir(root)?.flatten() {
            let name = entry.file_name();
            let stale = name
                .to_str()
                .and_then(|n| n.strip_prefix("gen-"))
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n != number);
            if stale {
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        let disk = Disk::at(root, number)?;
        if number == 0 {
            set_current(root, 0)?;
        }
        Ok(disk)
    }

    fn at(root: &Path, number: u64) -> Result<Disk, sled::Error> {
        let db = sled::open(generation_dir(root, number))?;
        Ok(Disk {
            number,
            logs: db.open_tree(TREES[0])?,
            meta: db.open_tree(TREES[1])?,
            sm: db.open_tree(TREES[2])?,
            db,
        })
    }

    fn trees(&self) -> [&sled::Tree; 3] {
        [&self.logs, &self.meta, &self.sm]
    }

    /// Bytes of keys and values in the trees.
    fn live_bytes(&self) -> u64 {
        self.trees()
            .iter()
            .flat_map(|tree| tree.iter().flatten())
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }
}

fn generation_dir(root: &Path, number: u64) -> PathBuf {
    root.join(format!("gen-{number}"))
}

/// Points `CURRENT` at generation `number`, durably: written aside, synced, renamed over.
fn set_current(root: &Path, number: u64) -> std::io::Result<()> {
    let aside = root.join(format!("{CURRENT}.new"));
    let mut file = std::fs::File::create(&aside)?;
    std::io::Write::write_all(&mut file, number.to_string().as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&aside, root.join(CURRENT))?;
    std::fs::File::open(root)?.sync_all()
}

/// The current generation, shared by both halves of the store.
struct DiskHandle {
    root: PathBuf,
    current: tokio::sync::RwLock<Disk>,
}

impl DiskHandle {
    /// Copies the live trees into a new generation, makes it current and deletes the old one,
    /// if sled's files are large against what they hold (or always, with `force`). Returns the
    /// size on disk before and after, when it compacted.
    async fn compact(&self, force: bool) -> StorageResult<Option<(u64, u64)>> {
        let mut current = self.current.write().await;
        let compact_err = |e: &dyn std::error::Error| -> StorageError<NodeId> {
            StorageIOError::<NodeId>::write(&std::io::Error::other(e.to_string())).into()
        };
        let before = current.db.size_on_disk().map_err(|e| compact_err(&e))?;
        if !force && (before < COMPACT_ABOVE || before < COMPACT_RATIO * current.live_bytes()) {
            return Ok(None);
        }
        let number = current.number + 1;
        let dir = generation_dir(&self.root, number);
        let _ = std::fs::remove_dir_all(&dir);
        let next = Disk::at(&self.root, number).map_err(|e| compact_err(&e))?;
        for (from, to) in current.trees().into_iter().zip(next.trees()) {
            for item in from.iter() {
                let (key, value) = item.map_err(|e| compact_err(&e))?;
                to.insert(key, value).map_err(|e| compact_err(&e))?;
            }
        }
        next.db.flush_async().await.map_err(|e| compact_err(&e))?;
        set_current(&self.root, number).map_err(|e| compact_err(&e))?;
        let after = next.db.size_on_disk().map_err(|e| compact_err(&e))?;
        let old = std::mem::replace(&mut *current, next);
        let old_dir = generation_dir(&self.root, old.number);
        drop(old);
        // The old files may still be open in sled's background threads for a moment;
        // removing them is safe on Unix and frees the space once they close.
        std::fs::remove_dir_all(old_dir).map_err(|e| compact_err(&e))?;
        tracing::info!(
            before,
            after,
            generation = number,
            "registry store compacted"
        );
        Ok(Some((before, after)))
    }
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

/// The Raft log, vote and commit marker on sled. Cheap to clone (it shares the database); it
/// is also its own log reader.
#[derive(Clone)]
pub struct LogStore {
    /// Held by every clone of both halves; see [`StateMachineStore::lease`].
    _lease: Arc<()>,
    disk: Arc<DiskHandle>,
}

fn read_meta<T: for<'a> Deserialize<'a>>(
    meta: &sled::Tree,
    key: &[u8],
) -> StorageResult<Option<T>> {
    match meta.get(key).map_err(|e| logs_read(&e))? {
        Some(value) => Ok(Some(decode(&value).map_err(|e| logs_read(&e))?)),
        None => Ok(None),
    }
}

fn write_meta<T: Serialize>(meta: &sled::Tree, key: &[u8], value: &T) -> StorageResult<()> {
    let bytes = encode(value).map_err(|e| logs_write(&e))?;
    meta.insert(key, bytes).map_err(|e| logs_write(&e))?;
    Ok(())
}

async fn flush(disk: &Disk) -> StorageResult<()> {
    disk.db.flush_async().await.map_err(|e| logs_write(&e))?;
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let disk = self.disk.current.read().await;
        let bounds = (key_bound(range.start_bound()), key_bound(range.end_bound()));
        let mut entries = Vec::new();
        for item in disk.logs.range(bounds) {
            let (_, value) = item.map_err(|e| logs_read(&e))?;
            entries.push(decode(&value).map_err(|e| logs_read(&e))?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let disk = self.disk.current.read().await;
        let last_purged_log_id: Option<LogId<NodeId>> = read_meta(&disk.meta, LAST_PURGED)?;
        let last_log_id = match disk.logs.last().map_err(|e| logs_read(&e))? {
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
        let disk = self.disk.current.read().await;
        let bytes = encode(vote).map_err(|e| StorageIOError::<NodeId>::write_vote(&e))?;
        disk.meta
            .insert(VOTE, bytes)
            .map_err(|e| StorageIOError::<NodeId>::write_vote(&e))?;
        disk.db
            .flush_async()
            .await
            .map_err(|e| StorageIOError::<NodeId>::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        let disk = self.disk.current.read().await;
        match disk
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
        write_meta(&self.disk.current.read().await.meta, COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        let disk = self.disk.current.read().await;
        Ok(read_meta::<Option<LogId<NodeId>>>(&disk.meta, COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let disk = self.disk.current.read().await;
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = encode(&entry).map_err(|e| logs_write(&e))?;
            batch.insert(&index_key(entry.log_id.index), bytes);
        }
        disk.logs.apply_batch(batch).map_err(|e| logs_write(&e))?;
        // Acknowledge only once durable: openraft counts this node towards the quorum then.
        let flushed = disk.db.flush_async().await;
        callback.log_io_completed(flushed.map(|_| ()).map_err(std::io::Error::other));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let disk = self.disk.current.read().await;
        let mut batch = sled::Batch::default();
        for item in disk.logs.range(index_key(log_id.index)..) {
            let (key, _) = item.map_err(|e| logs_write(&e))?;
            batch.remove(key);
        }
        disk.logs.apply_batch(batch).map_err(|e| logs_write(&e))?;
        flush(&disk).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        {
            let disk = self.disk.current.read().await;
            // Record the purge point durably first: a crash between the two steps then leaves
            // extra entries below it (harmless), never a gap without a marker.
            write_meta(&disk.meta, LAST_PURGED, &log_id)?;
            flush(&disk).await?;
            let mut batch = sled::Batch::default();
            for item in disk.logs.range(..=index_key(log_id.index)) {
                let (key, _) = item.map_err(|e| logs_write(&e))?;
                batch.remove(key);
            }
            disk.logs.apply_batch(batch).map_err(|e| logs_write(&e))?;
        }
        self.disk.compact(false).await?;
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
    disk: Arc<DiskHandle>,
    data: Arc<RwLock<SmData>>,
    /// Counts applied take-overs (and installed snapshots, which may hold some): a request
    /// waiting on a lost owner learns at once that its session has an heir.
    takeovers: Arc<tokio::sync::watch::Sender<u64>>,
}

/// Compacts the store on demand (see [`StateMachineStore::compactor`]).
pub(crate) struct Compactor(Weak<DiskHandle>);

impl Compactor {
    /// Copies what the store holds into a fresh generation and deletes the old one: sled
    /// keeps the space of everything ever removed. Returns the bytes on disk before and after;
    /// `None` once the store is closed.
    pub(crate) async fn compact(&self) -> StorageResult<Option<(u64, u64)>> {
        match self.0.upgrade() {
            Some(disk) => disk.compact(true).await,
            None => Ok(None),
        }
    }
}

/// Read access to the applied sessions, for the registry facade.
#[derive(Clone)]
pub(crate) struct StateView {
    data: Arc<RwLock<SmData>>,
    takeovers: Arc<tokio::sync::watch::Sender<u64>>,
}

impl StateView {
    /// Changes whenever a take-over has been applied (see [`StateMachineStore`]).
    pub(crate) fn takeovers(&self) -> tokio::sync::watch::Receiver<u64> {
        self.takeovers.subscribe()
    }

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

    /// How many sessions `node` owns.
    pub(crate) fn owned_count(&self, node: NodeId) -> usize {
        read(&self.data).sessions.owned_count(node)
    }

    /// How many sessions are recorded.
    pub(crate) fn len(&self) -> usize {
        read(&self.data).sessions.len()
    }

    /// How many sockets are saved for recovery.
    pub(crate) fn saved_len(&self) -> usize {
        read(&self.data).sessions.saved_len()
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
            takeovers: self.takeovers.clone(),
        }
    }

    /// A handle that compacts the store on demand without keeping it open.
    pub(crate) fn compactor(&self) -> Compactor {
        Compactor(Arc::downgrade(&self.disk))
    }

    /// Writes `snapshot` and flushes it.
    async fn save_snapshot(&self, snapshot: &StoredSnapshot) -> StorageResult<()> {
        let signature = Some(snapshot.meta.signature());
        let bytes = encode(snapshot)
            .map_err(|e| StorageIOError::<NodeId>::write_snapshot(signature.clone(), &e))?;
        let disk = self.disk.current.read().await;
        disk.sm
            .insert(SNAPSHOT, bytes)
            .map_err(|e| StorageIOError::<NodeId>::write_snapshot(signature, &e))?;
        disk.db.flush_async().await.map_err(|e| sm_write(&e))?;
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
        self.save_snapshot(&stored).await?;
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
        let mut takeovers = 0;
        for entry in entries {
            state.applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::Applied,
                EntryPayload::Normal(command) => {
                    takeovers += u64::from(matches!(command, Command::TakeOver { .. }));
                    state.sessions.apply(&command)
                }
                EntryPayload::Membership(membership) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Response::Applied
                }
            };
            responses.push(response);
        }
        drop(state);
        if takeovers > 0 {
            self.takeovers.send_modify(|n| *n += takeovers);
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
        self.save_snapshot(&StoredSnapshot {
            meta: meta.clone(),
            data,
        })
        .await?;
        let mut state = write(&self.data);
        state.sessions.replace(sessions);
        state.applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        drop(state);
        self.takeovers.send_modify(|n| *n += 1);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let disk = self.disk.current.read().await;
        Ok(read_snapshot(&disk.sm)?.map(|stored| Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}
