//! Per-partition processing state — the dedup set and the latest state of each call — in a local
//! persistent store, with the writes of the open transaction kept apart until it commits.
//!
//! Why this is correct under exactly-once: every state change is also written, in the same Kafka
//! transaction as the outputs and the consumed offsets, to a compacted changelog topic
//! co-partitioned with the raw topic (Kafka Streams' design). The changelog is the source of
//! truth; the store is a copy of it on local disk (the StatefulSet's volume):
//!
//! - changes of the open transaction live in memory (`pending`) and reach the store only after
//!   the transaction has committed in Kafka, so the store is never ahead of Kafka; an abort drops
//!   them together with the outputs. Committed changes are written by a thread of their own (the
//!   [`writer`]) while the loop processes the next transaction; until it reports them stored,
//!   lookups find them in memory;
//! - each task's **checkpoint**, written in the same store transaction as its changes, says what
//!   the task's state reflects: the changelog entries of every raw record below `raw` (the
//!   committed offset), and where reading each changelog partition must resume to find the
//!   entries of later records;
//! - a crash after the Kafka commit and before the store write leaves the store behind, never
//!   ahead: the restore reads the changelog tail after the checkpoint (see [`crate::restore`]).
//!
//! Store commits are not fsynced one by one: one every [`DURABLE_EVERY`] is, and one before a
//! rebalance takes partitions away or the process stops. A crash (or power
//! loss) rolls the store back to its last durable commit — data and checkpoints together, so it
//! is only further behind, never inconsistent.
//!
//! Memory is bounded by the store's cache ([`crate::config::Config::state_cache`]), the open
//! transaction and the few committed ones queued for the writer: nothing grows with the dedup
//! window or the number of calls.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use switchboard_kafka::TopicPartition;
use switchboard_schemas::domain::CallState;

mod writer;

use writer::{Work, Writer};

/// The store's file in the state directory.
pub(crate) const FILE_NAME: &str = "processor.redb";
/// How often a store commit is made durable (fsync). Every commit could be, but a durable redb
/// commit costs tens to hundreds of milliseconds under a steady write load (`bench/stores`), and
/// the store may lag: a crash costs a changelog tail of at most this long (at 2,000 events/s,
/// 20,000 entries: a few seconds of restore).
pub(crate) const DURABLE_EVERY: Duration = Duration::from_secs(10);
/// How long the state of a task this instance no longer owns stays on disk (for a quick return
/// after a rebalance) before it is deleted, like Kafka Streams' `state.cleanup.delay.ms`.
pub(crate) const CLEANUP_DELAY: Duration = Duration::from_secs(600);
/// Most expired entries deleted per task in one eviction pass (one store transaction).
const EVICT_BATCH: usize = 20_000;

/// Per-store facts: what the store belongs to.
const META: TableDefinition<'static, &str, &str> = TableDefinition::new("meta");
/// Each task's [`Checkpoint`] (JSON), by task name.
const CHECKPOINTS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("checkpoints");

/// A failure of the local store (I/O, a corrupt file, a full disk). The store is a cache of the
/// changelogs, so the cure is a restart: the store repairs itself on open or is rebuilt.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("state store: {0}")]
    Store(#[from] redb::Error),
    /// The writer thread stopped on an earlier failure (which was reported then).
    #[error("state store: the writer stopped after a failure")]
    WriterFailed,
}

fn store_error(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Store(error.into())
}

/// What a task's stored state reflects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// The raw partition's committed offset the state reflects: every changelog entry of a record
    /// below it is applied (less what the dedup window has expired), none at or above it.
    pub(crate) raw: i64,
    /// Where reading the dedup changelog partition resumes: every entry of a record at or above
    /// `raw` lies at or after it.
    pub(crate) dedup_changelog: i64,
    /// The same for the call-state changelog partition.
    pub(crate) call_changelog: i64,
}

/// The state changes of one task in the open transaction (or of one restore batch).
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Changes {
    /// Event ids seen, with when they were first seen (ms since the epoch).
    pub(crate) dedup: HashMap<String, i64>,
    /// Latest state per call sid, with when it was written (ms since the epoch: the processor's
    /// clock, or the changelog record's timestamp when restored). The dedup window applies to
    /// that time, never to the provider's event times, which a backfill or a skewed clock makes
    /// arbitrarily old (a call's state evicted mid-call would start over from nothing).
    pub(crate) calls: HashMap<String, (CallState, i64)>,
}

/// The names of one task's tables.
struct Tables {
    dedup: String,
    dedup_expiry: String,
    calls: String,
    calls_expiry: String,
}

impl Tables {
    fn of(task: &TopicPartition) -> Self {
        let name = task_name(task);
        Self {
            dedup: format!("dedup/{name}"),
            dedup_expiry: format!("dedup-expiry/{name}"),
            calls: format!("calls/{name}"),
            calls_expiry: format!("calls-expiry/{name}"),
        }
    }

    /// Event id -> first seen (ms).
    fn dedup(&self) -> TableDefinition<'_, &'static str, i64> {
        TableDefinition::new(&self.dedup)
    }

    /// (minute first seen, event id) -> (): the dedup window's order.
    fn dedup_expiry(&self) -> TableDefinition<'_, (i64, &'static str), ()> {
        TableDefinition::new(&self.dedup_expiry)
    }

    /// Call sid -> (written at, CallState as JSON).
    fn calls(&self) -> TableDefinition<'_, &'static str, (i64, &'static [u8])> {
        TableDefinition::new(&self.calls)
    }

    /// (minute written, call sid) -> ().
    fn calls_expiry(&self) -> TableDefinition<'_, (i64, &'static str), ()> {
        TableDefinition::new(&self.calls_expiry)
    }
}

fn task_name(task: &TopicPartition) -> String {
    format!("{}/{}", task.topic, task.partition)
}

/// The store on disk, shared by the processing loop and the restore thread.
#[derive(Clone)]
pub(crate) struct Db {
    db: Arc<Database>,
    /// A temporary store (replay, tests) is deleted with its directory.
    _temporary: Option<Arc<tempfile::TempDir>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

impl Db {
    /// Opens (or creates) the store in `dir` for `owner` (the consumer group and the topology
    /// it writes). A store left by another owner describes other offsets: it is emptied.
    pub(crate) fn open(dir: &Path, cache_bytes: usize, owner: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("creating the state directory {}: {e}", dir.display()))?;
        let path: PathBuf = dir.join(FILE_NAME);
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| anyhow::anyhow!("opening the state store {}: {e}", path.display()))?;
        let db = Self {
            db: Arc::new(db),
            _temporary: None,
        };
        db.claim(owner)?;
        Ok(db)
    }

    /// A store in a temporary directory, deleted when the last handle is dropped.
    pub(crate) fn temporary(cache_bytes: usize, owner: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("switchboard-state-").tempdir()?;
        let mut db = Self::open(dir.path(), cache_bytes, owner)?;
        db._temporary = Some(Arc::new(dir));
        Ok(db)
    }

    fn claim(&self, owner: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(store_error)?;
        {
            let meta = txn.open_table(META).map_err(store_error)?;
            let current = meta
                .get("owner")
                .map_err(store_error)?
                .map(|v| v.value().to_owned());
            if current.as_deref() != Some(owner) {
                if let Some(previous) = current {
                    tracing::warn!(
                        previous,
                        owner,
                        "state store belongs to another group or topology; emptying it"
                    );
                }
                drop(meta);
                let names: Vec<String> = txn
                    .list_tables()
                    .map_err(store_error)?
                    .map(|t| redb::TableHandle::name(&t).to_owned())
                    .filter(|name| name != "meta")
                    .collect();
                for name in names {
                    delete_untyped(&txn, &name)?;
                }
                txn.open_table(META)
                    .map_err(store_error)?
                    .insert("owner", owner)
                    .map_err(store_error)?;
            }
        }
        txn.commit().map_err(store_error)
    }

    /// The checkpoint of `task`, if its state is stored.
    pub(crate) fn checkpoint(&self, task: &TopicPartition) -> Result<Option<Checkpoint>, StoreError> {
        let txn = self.db.begin_read().map_err(store_error)?;
        read_checkpoint(&txn, task)
    }

    /// Starts a write of the store.
    fn begin(&self, durable: bool) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(store_error)?;
        if !durable {
            txn.set_durability(Durability::None).map_err(store_error)?;
        }
        Ok(txn)
    }

    /// Deletes the state and checkpoint of `task` (before a full restore).
    pub(crate) fn wipe(&self, task: &TopicPartition) -> Result<(), StoreError> {
        let txn = self.begin(false)?;
        wipe_in(&txn, task)?;
        txn.commit().map_err(store_error)
    }

    /// Applies restored changes of `task` (no checkpoint: [`Db::finish_restore`] writes it),
    /// `durable`ly or not.
    pub(crate) fn apply_restored(
        &self,
        task: &TopicPartition,
        changes: &Changes,
        durable: bool,
    ) -> Result<(), StoreError> {
        let txn = self.begin(durable)?;
        apply(&txn, task, changes)?;
        txn.commit().map_err(store_error)
    }

    /// Writes the checkpoint that ends a restore of `task`, durably.
    pub(crate) fn finish_restore(
        &self,
        task: &TopicPartition,
        checkpoint: Checkpoint,
    ) -> Result<(), StoreError> {
        let txn = self.begin(true)?;
        write_checkpoint(&txn, task, &checkpoint)?;
        txn.commit().map_err(store_error)
    }

    /// The number of dedup entries stored for `task`.
    pub(crate) fn dedup_len(&self, task: &TopicPartition) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(store_error)?;
        let tables = Tables::of(task);
        match txn.open_table(tables.dedup()) {
            Ok(table) => table.len().map_err(store_error),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(error) => Err(store_error(error)),
        }
    }

    /// The tasks with a checkpoint in the store.
    pub(crate) fn tasks(&self) -> Result<Vec<TopicPartition>, StoreError> {
        let txn = self.db.begin_read().map_err(store_error)?;
        let table = match txn.open_table(CHECKPOINTS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(store_error(error)),
        };
        let mut tasks = Vec::new();
        for entry in table.iter().map_err(store_error)? {
            let (name, _) = entry.map_err(store_error)?;
            if let Some((topic, partition)) = name.value().rsplit_once('/')
                && let Ok(partition) = partition.parse()
            {
                tasks.push(TopicPartition::new(topic, partition));
            }
        }
        Ok(tasks)
    }
}

/// Deletes the tables and the checkpoint of `task`.
fn wipe_in(txn: &WriteTransaction, task: &TopicPartition) -> Result<(), StoreError> {
    let tables = Tables::of(task);
    for name in [
        &tables.dedup,
        &tables.dedup_expiry,
        &tables.calls,
        &tables.calls_expiry,
    ] {
        delete_untyped(txn, name)?;
    }
    txn.open_table(CHECKPOINTS)
        .map_err(store_error)?
        .remove(task_name(task).as_str())
        .map_err(store_error)?;
    Ok(())
}

fn delete_untyped(txn: &WriteTransaction, name: &str) -> Result<(), StoreError> {
    // The value type does not matter to a delete; redb checks only the name.
    let deleted = txn.delete_table(TableDefinition::<&str, ()>::new(name));
    match deleted {
        Ok(_) | Err(redb::TableError::TableTypeMismatch { .. }) => {}
        Err(error) => return Err(store_error(error)),
    }
    // A table of another type is deleted through its own handle.
    if let Ok(handle) = txn.list_tables()
        && let Some(handle) = handle.into_iter().find(|t| redb::TableHandle::name(t) == name)
    {
        txn.delete_table(handle).map_err(store_error)?;
    }
    Ok(())
}

fn read_checkpoint(txn: &ReadTransaction, task: &TopicPartition) -> Result<Option<Checkpoint>, StoreError> {
    let table = match txn.open_table(CHECKPOINTS) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(error) => return Err(store_error(error)),
    };
    let Some(value) = table.get(task_name(task).as_str()).map_err(store_error)? else {
        return Ok(None);
    };
    // A checkpoint that does not parse claims nothing: the task is restored in full.
    Ok(serde_json::from_slice(value.value()).ok())
}

fn write_checkpoint(
    txn: &WriteTransaction,
    task: &TopicPartition,
    checkpoint: &Checkpoint,
) -> Result<(), StoreError> {
    let value = serde_json::to_vec(checkpoint).expect("a checkpoint serializes");
    txn.open_table(CHECKPOINTS)
        .map_err(store_error)?
        .insert(task_name(task).as_str(), value.as_slice())
        .map_err(store_error)?;
    Ok(())
}

/// The expiry indexes order entries by minute: a call state rewritten within the same minute
/// (most of a call's status callbacks) costs one write, not three.
const BUCKET_MILLIS: i64 = 60_000;

fn bucket(millis: i64) -> i64 {
    millis.div_euclid(BUCKET_MILLIS)
}

/// Writes `changes` into `task`'s tables, keeping the expiry indexes in step: an entry is indexed
/// under the minute it was written in. An index entry left behind by a later rewrite is only
/// removed when its minute expires (eviction checks the entry's own time first).
fn apply(txn: &WriteTransaction, task: &TopicPartition, changes: &Changes) -> Result<(), StoreError> {
    let tables = Tables::of(task);
    if !changes.dedup.is_empty() {
        let mut dedup = txn.open_table(tables.dedup()).map_err(store_error)?;
        let mut expiry = txn.open_table(tables.dedup_expiry()).map_err(store_error)?;
        for (id, seen_at) in &changes.dedup {
            let previous = dedup
                .insert(id.as_str(), *seen_at)
                .map_err(store_error)?
                .map(|v| v.value());
            if previous.is_none_or(|p| bucket(p) != bucket(*seen_at)) {
                expiry
                    .insert((bucket(*seen_at), id.as_str()), ())
                    .map_err(store_error)?;
            }
        }
    }
    if !changes.calls.is_empty() {
        let mut calls = txn.open_table(tables.calls()).map_err(store_error)?;
        let mut expiry = txn.open_table(tables.calls_expiry()).map_err(store_error)?;
        for (sid, (call, written_at)) in &changes.calls {
            let json = serde_json::to_vec(call).expect("a call state serializes");
            let previous = calls
                .insert(sid.as_str(), (*written_at, json.as_slice()))
                .map_err(store_error)?
                .map(|v| v.value().0);
            if previous.is_none_or(|p| bucket(p) != bucket(*written_at)) {
                expiry
                    .insert((bucket(*written_at), sid.as_str()), ())
                    .map_err(store_error)?;
            }
        }
    }
    Ok(())
}

/// Deletes up to [`EVICT_BATCH`] index entries of `task` from minutes wholly before
/// `cutoff_millis`, and the entries they index that were written before it; the dedup entries
/// deleted.
fn evict(txn: &WriteTransaction, task: &TopicPartition, cutoff_millis: i64) -> Result<usize, StoreError> {
    let tables = Tables::of(task);
    let before = bucket(cutoff_millis);
    let expired =
        |expiry: &redb::Table<'_, (i64, &'static str), ()>| -> Result<Vec<(i64, String)>, StoreError> {
            expiry
                .range(..(before, ""))
                .map_err(store_error)?
                .take(EVICT_BATCH)
                .map(|entry| entry.map(|(key, _)| (key.value().0, key.value().1.to_owned())))
                .collect::<Result<_, _>>()
                .map_err(store_error)
        };
    let mut evicted = 0;
    {
        let mut expiry = txn.open_table(tables.dedup_expiry()).map_err(store_error)?;
        let mut dedup = txn.open_table(tables.dedup()).map_err(store_error)?;
        for (minute, id) in expired(&expiry)? {
            expiry.remove((minute, id.as_str())).map_err(store_error)?;
            let seen_at = dedup.get(id.as_str()).map_err(store_error)?.map(|v| v.value());
            if seen_at.is_some_and(|at| at < cutoff_millis) {
                dedup.remove(id.as_str()).map_err(store_error)?;
                evicted += 1;
            }
        }
    }
    let mut expiry = txn.open_table(tables.calls_expiry()).map_err(store_error)?;
    let mut calls = txn.open_table(tables.calls()).map_err(store_error)?;
    for (minute, sid) in expired(&expiry)? {
        expiry.remove((minute, sid.as_str())).map_err(store_error)?;
        let written_at = calls.get(sid.as_str()).map_err(store_error)?.map(|v| v.value().0);
        if written_at.is_some_and(|at| at < cutoff_millis) {
            calls.remove(sid.as_str()).map_err(store_error)?;
        }
    }
    Ok(evicted)
}

/// What one Kafka transaction changed, as the store writer applies it.
#[derive(Debug)]
struct Committed {
    changes: HashMap<TopicPartition, Changes>,
    /// Next offset per raw partition: the tasks' new checkpoints.
    offsets: BTreeMap<TopicPartition, i64>,
    /// Next offset per changelog partition written.
    delivered: BTreeMap<TopicPartition, i64>,
    /// The dedup and call-state changelog topics.
    changelogs: (String, String),
}

/// Writes `committed`'s changes and its tasks' new checkpoints: `raw` moves to the committed
/// offset; each changelog position moves to what the transaction delivered to that task's
/// partition, or stays.
fn write_committed(txn: &WriteTransaction, committed: &Committed) -> Result<(), StoreError> {
    for (task, changes) in &committed.changes {
        apply(txn, task, changes)?;
    }
    let (dedup_changelog, call_changelog) = &committed.changelogs;
    for (task, next) in &committed.offsets {
        let previous = {
            let table = txn.open_table(CHECKPOINTS).map_err(store_error)?;
            table
                .get(task_name(task).as_str())
                .map_err(store_error)?
                .and_then(|v| serde_json::from_slice::<Checkpoint>(v.value()).ok())
        };
        let resume = |topic: &str, previous: i64| {
            committed
                .delivered
                .get(&TopicPartition::new(topic, task.partition))
                .map_or(previous, |next| previous.max(*next))
        };
        let previous = previous.unwrap_or(Checkpoint {
            raw: 0,
            dedup_changelog: 0,
            call_changelog: 0,
        });
        let checkpoint = Checkpoint {
            raw: *next,
            dedup_changelog: resume(dedup_changelog, previous.dedup_changelog),
            call_changelog: resume(call_changelog, previous.call_changelog),
        };
        write_checkpoint(txn, task, &checkpoint)?;
    }
    Ok(())
}

/// The state of every owned task: the store; the changes of transactions committed in Kafka and
/// not yet stored (the [`writer`] stores them in order); and the open transaction's changes.
/// Lookups see all three, newest first.
#[derive(Debug)]
pub(crate) struct Stores {
    db: Db,
    writer: Writer,
    pending: HashMap<TopicPartition, Changes>,
    /// Committed in Kafka and handed to the writer, oldest first, with the writer's sequence
    /// number: dropped once the writer reports them stored.
    unstored: VecDeque<(u64, Arc<Committed>)>,
    /// Every writer job below this is in the store (and visible to a new read transaction).
    stored: u64,
    /// Tasks whose state is restored: the only ones records are processed for.
    installed: HashSet<TopicPartition>,
    /// Tasks no longer owned, since when (their state is deleted after [`CLEANUP_DELAY`]).
    released: HashMap<TopicPartition, Instant>,
    last_durable: Instant,
    /// A read transaction reused until the writer reports a write (lookups of one batch).
    reader: Option<ReadTransaction>,
}

impl Stores {
    pub(crate) fn new(db: Db) -> Self {
        let released = db
            .tasks()
            .unwrap_or_default()
            .into_iter()
            .map(|task| (task, Instant::now()))
            .collect();
        Self {
            writer: Writer::start(db.clone()),
            db,
            pending: HashMap::new(),
            unstored: VecDeque::new(),
            stored: 0,
            installed: HashSet::new(),
            released,
            // The first commit is durable: a baseline checkpoint soon after a start.
            last_durable: Instant::now()
                .checked_sub(DURABLE_EVERY)
                .unwrap_or_else(Instant::now),
            reader: None,
        }
    }

    /// The store once every write handed to the writer is in it: for restores, which read the
    /// checkpoints and write the store themselves.
    pub(crate) fn settled(&mut self) -> Result<&Db, StoreError> {
        self.writer.settle()?;
        let stored = self.writer.poll()?;
        self.stored_through(stored);
        Ok(&self.db)
    }

    fn reader(&mut self) -> Result<&ReadTransaction, StoreError> {
        if self.reader.is_none() {
            self.reader = Some(self.db.db.begin_read().map_err(store_error)?);
        }
        Ok(self.reader.as_ref().expect("set above"))
    }

    /// Changes not in the store yet, newest first.
    fn unwritten(&self, task: &TopicPartition) -> impl Iterator<Item = &Changes> {
        self.pending.get(task).into_iter().chain(
            self.unstored
                .iter()
                .rev()
                .filter_map(|(_, c)| c.changes.get(task)),
        )
    }

    /// Whether `event_id` was seen in `task`, committed or in the open transaction.
    pub(crate) fn seen(&mut self, task: &TopicPartition, event_id: &str) -> Result<bool, StoreError> {
        if self.unwritten(task).any(|c| c.dedup.contains_key(event_id)) {
            return Ok(true);
        }
        let tables = Tables::of(task);
        match self.reader()?.open_table(tables.dedup()) {
            Ok(table) => Ok(table.get(event_id).map_err(store_error)?.is_some()),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
            Err(error) => Err(store_error(error)),
        }
    }

    pub(crate) fn mark_seen(&mut self, task: &TopicPartition, event_id: &str, at_millis: i64) {
        self.pending
            .entry(task.clone())
            .or_default()
            .dedup
            .insert(event_id.to_owned(), at_millis);
    }

    /// The latest state of `call_sid`, including the open transaction's changes.
    pub(crate) fn call(
        &mut self,
        task: &TopicPartition,
        call_sid: &str,
    ) -> Result<Option<CallState>, StoreError> {
        if let Some((call, _)) = self.unwritten(task).find_map(|c| c.calls.get(call_sid)) {
            return Ok(Some(call.clone()));
        }
        let tables = Tables::of(task);
        let table = match self.reader()?.open_table(tables.calls()) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(store_error(error)),
        };
        let Some(value) = table.get(call_sid).map_err(store_error)? else {
            return Ok(None);
        };
        // Written by this code from a CallState: one that does not parse is a corrupt store.
        serde_json::from_slice(value.value().1).map(Some).map_err(|e| {
            store_error(redb::StorageError::Corrupted(format!(
                "call state of {call_sid}: {e}"
            )))
        })
    }

    pub(crate) fn put_call(&mut self, task: &TopicPartition, state: CallState, at_millis: i64) {
        self.pending
            .entry(task.clone())
            .or_default()
            .calls
            .insert(state.call_sid.clone(), (state, at_millis));
    }

    /// The open transaction committed in Kafka with `offsets` (next offset per raw partition),
    /// after `delivered` (next offset per changelog partition written): its changes and the
    /// tasks' new checkpoints go to the writer, which stores them in one store transaction.
    pub(crate) fn commit(
        &mut self,
        offsets: &BTreeMap<TopicPartition, i64>,
        delivered: BTreeMap<TopicPartition, i64>,
        changelogs: (&str, &str),
    ) -> Result<(), StoreError> {
        let changes = std::mem::take(&mut self.pending);
        if offsets.is_empty() && changes.is_empty() {
            return Ok(());
        }
        let committed = Arc::new(Committed {
            changes,
            offsets: offsets.clone(),
            delivered,
            changelogs: (changelogs.0.to_owned(), changelogs.1.to_owned()),
        });
        let durable = self.last_durable.elapsed() >= DURABLE_EVERY;
        let seq = self
            .writer
            .submit(Work::Commit(Arc::clone(&committed)), durable)?;
        if durable {
            self.last_durable = Instant::now();
        }
        self.unstored.push_back((seq, committed));
        let stored = self.writer.poll()?;
        self.stored_through(stored);
        Ok(())
    }

    /// The writer stored every job below `stored`: their changes are read from the store now.
    fn stored_through(&mut self, stored: u64) {
        if stored <= self.stored {
            return;
        }
        self.stored = stored;
        while self.unstored.front().is_some_and(|(seq, _)| *seq < stored) {
            self.unstored.pop_front();
        }
        // A read transaction from before the writes would miss what was just dropped.
        self.reader = None;
    }

    /// Makes every store commit so far durable, waiting for the writer (before a shutdown or a
    /// rebalance, so that the next owner or start finds the checkpoints current).
    pub(crate) fn persist(&mut self) -> Result<(), StoreError> {
        let seq = self.writer.submit(Work::Persist, true)?;
        self.writer.wait_for(seq)?;
        self.stored_through(seq + 1);
        self.last_durable = Instant::now();
        Ok(())
    }

    /// The open transaction aborted: its changes never happened.
    pub(crate) fn abort(&mut self) {
        self.pending.clear();
    }

    /// Whether `task`'s state is restored and records may be processed for it.
    pub(crate) fn is_installed(&self, task: &TopicPartition) -> bool {
        self.installed.contains(task)
    }

    /// `task`'s state is restored (in the store, up to its checkpoint).
    pub(crate) fn install(&mut self, task: TopicPartition) {
        self.pending.remove(&task);
        self.released.remove(&task);
        self.reader = None;
        self.installed.insert(task);
    }

    /// `task` is assigned again: keep its state on disk.
    pub(crate) fn claim(&mut self, task: &TopicPartition) {
        self.released.remove(task);
    }

    /// Forgets a task that is no longer owned (its state stays on disk for [`CLEANUP_DELAY`]).
    pub(crate) fn remove(&mut self, task: &TopicPartition) {
        self.pending.remove(task);
        if self.installed.remove(task) {
            self.released.insert(task.clone(), Instant::now());
        }
    }

    /// Has the writer apply the dedup window (`cutoff_millis` per task) to the installed tasks'
    /// state, and delete the state of tasks released longer than [`CLEANUP_DELAY`] ago.
    pub(crate) fn evict(&mut self, cutoff_millis: impl Fn(&TopicPartition) -> i64) -> Result<(), StoreError> {
        let wipe: Vec<TopicPartition> = self
            .released
            .iter()
            .filter(|(_, at)| at.elapsed() >= CLEANUP_DELAY)
            .map(|(task, _)| task.clone())
            .collect();
        for task in &wipe {
            tracing::info!(%task, "deleting the stored state of a partition no longer owned");
            self.released.remove(task);
        }
        let cutoffs: Vec<(TopicPartition, i64)> = self
            .installed
            .iter()
            .map(|task| (task.clone(), cutoff_millis(task)))
            .collect();
        if wipe.is_empty() && cutoffs.is_empty() {
            return Ok(());
        }
        self.writer.submit(Work::Evict { cutoffs, wipe }, false)?;
        Ok(())
    }

    /// Number of remembered event ids of the installed tasks in the store, for the metrics.
    pub(crate) fn dedup_entries(&self) -> Result<u64, StoreError> {
        self.installed.iter().map(|task| self.db.dedup_len(task)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(sid: &str, status: &str, updated_at: i64) -> CallState {
        serde_json::from_value(serde_json::json!({
            "call_sid": sid,
            "phone_id": "+15550001111",
            "status": status,
            "last_event_id": "EV",
            "updated_at": updated_at,
        }))
        .expect("a minimal call state")
    }

    const CHANGELOGS: (&str, &str) = ("dedup", "calls");

    fn stores() -> Stores {
        Stores::new(Db::temporary(1 << 20, "test").unwrap())
    }

    fn offsets(task: &TopicPartition, next: i64) -> BTreeMap<TopicPartition, i64> {
        [(task.clone(), next)].into()
    }

    #[test]
    fn pending_changes_are_visible_and_reach_the_store_on_commit() {
        let task = TopicPartition::new("switchboard.raw.twilio", 0);
        let mut stores = stores();
        stores.install(task.clone());
        stores.mark_seen(&task, "EV1", 1);
        stores.put_call(&task, call("CA1", "ringing", 1), 1);
        assert!(stores.seen(&task, "EV1").unwrap());
        assert_eq!(stores.call(&task, "CA1").unwrap().unwrap().status, "ringing");
        let delivered = [
            (TopicPartition::new("dedup", 0), 7),
            (TopicPartition::new("calls", 0), 3),
        ]
        .into();
        stores.commit(&offsets(&task, 10), delivered, CHANGELOGS).unwrap();
        assert!(stores.pending.is_empty());
        assert!(stores.seen(&task, "EV1").unwrap());
        assert_eq!(stores.call(&task, "CA1").unwrap().unwrap().status, "ringing");
        assert_eq!(
            stores.settled().unwrap().checkpoint(&task).unwrap(),
            Some(Checkpoint {
                raw: 10,
                dedup_changelog: 7,
                call_changelog: 3
            })
        );
    }

    #[test]
    fn changes_waiting_for_the_writer_are_visible_and_stored_in_order() {
        let task = TopicPartition::new("switchboard.raw.twilio", 0);
        let mut stores = stores();
        stores.install(task.clone());
        // The store's one write transaction is held: the writer waits for it.
        let held = stores.db.db.begin_write().unwrap();
        stores.mark_seen(&task, "EV1", 1);
        stores.put_call(&task, call("CA1", "ringing", 1), 1);
        stores
            .commit(&offsets(&task, 1), BTreeMap::new(), CHANGELOGS)
            .unwrap();
        stores.put_call(&task, call("CA1", "in-progress", 2), 2);
        stores
            .commit(&offsets(&task, 2), BTreeMap::new(), CHANGELOGS)
            .unwrap();
        assert_eq!(stores.unstored.len(), 2);
        assert_eq!(stores.db.checkpoint(&task).unwrap(), None);
        assert!(stores.seen(&task, "EV1").unwrap());
        assert_eq!(stores.call(&task, "CA1").unwrap().unwrap().status, "in-progress");
        drop(held);
        assert_eq!(
            stores.settled().unwrap().checkpoint(&task).unwrap().unwrap().raw,
            2
        );
        assert!(stores.unstored.is_empty());
        assert!(stores.seen(&task, "EV1").unwrap());
        assert_eq!(stores.call(&task, "CA1").unwrap().unwrap().status, "in-progress");
    }

    #[test]
    fn an_abort_forgets_the_open_transaction_only() {
        let task = TopicPartition::new("switchboard.raw.twilio", 0);
        let mut stores = stores();
        stores.install(task.clone());
        stores.mark_seen(&task, "EV1", 1);
        stores.put_call(&task, call("CA1", "ringing", 1), 1);
        stores
            .commit(&offsets(&task, 1), BTreeMap::new(), CHANGELOGS)
            .unwrap();
        stores.mark_seen(&task, "EV2", 2);
        stores.put_call(&task, call("CA1", "completed", 2), 2);
        stores.abort();
        assert!(stores.seen(&task, "EV1").unwrap());
        assert!(!stores.seen(&task, "EV2").unwrap());
        assert_eq!(stores.call(&task, "CA1").unwrap().unwrap().status, "ringing");
        assert_eq!(
            stores.settled().unwrap().checkpoint(&task).unwrap().unwrap().raw,
            1
        );
    }

    #[test]
    fn a_checkpoint_keeps_its_changelog_positions_when_a_commit_wrote_none() {
        let task = TopicPartition::new("switchboard.raw.stripe", 2);
        let mut stores = stores();
        stores.install(task.clone());
        let delivered = [(TopicPartition::new("dedup", 2), 40)].into();
        stores.commit(&offsets(&task, 5), delivered, CHANGELOGS).unwrap();
        // Only duplicates: the offset moves, the changelog positions stay.
        stores
            .commit(&offsets(&task, 9), BTreeMap::new(), CHANGELOGS)
            .unwrap();
        let checkpoint = stores.settled().unwrap().checkpoint(&task).unwrap().unwrap();
        assert_eq!((checkpoint.raw, checkpoint.dedup_changelog), (9, 40));
        // Another partition's deliveries do not move it.
        let elsewhere = [(TopicPartition::new("dedup", 3), 90)].into();
        stores.commit(&offsets(&task, 12), elsewhere, CHANGELOGS).unwrap();
        assert_eq!(
            stores
                .settled()
                .unwrap()
                .checkpoint(&task)
                .unwrap()
                .unwrap()
                .dedup_changelog,
            40
        );
    }

    #[test]
    fn tasks_are_separate_and_eviction_applies_each_window() {
        let a = TopicPartition::new("switchboard.raw.twilio", 0);
        let b = TopicPartition::new("switchboard.raw.twilio", 1);
        let mut stores = stores();
        stores.install(a.clone());
        stores.install(b.clone());
        const MINUTE: i64 = 60_000;
        stores.mark_seen(&a, "EV1", 100);
        stores.mark_seen(&a, "EV3", 3 * MINUTE);
        // Evicted by when it was written, whatever the provider's event time.
        stores.put_call(&a, call("CA1", "ringing", 1_000_000), 100);
        stores.put_call(&a, call("CA2", "ringing", 1), 2 * MINUTE + 5);
        // Rewritten later: its first index entry expires, the call does not.
        stores.put_call(&a, call("CA3", "ringing", 1), 200);
        stores.mark_seen(&b, "EV2", 5_000);
        let committed = [(a.clone(), 2), (b.clone(), 1)].into();
        stores.commit(&committed, BTreeMap::new(), CHANGELOGS).unwrap();
        stores.put_call(&a, call("CA3", "in-progress", 2), 4 * MINUTE);
        stores
            .commit(&[(a.clone(), 3)].into(), BTreeMap::new(), CHANGELOGS)
            .unwrap();
        assert!(!stores.seen(&b, "EV1").unwrap());
        stores.settled().unwrap();
        assert_eq!(stores.dedup_entries().unwrap(), 3);
        stores
            .evict(|task| if task == &a { 2 * MINUTE } else { 0 })
            .unwrap();
        stores.settled().unwrap();
        assert_eq!(stores.dedup_entries().unwrap(), 2);
        assert!(!stores.seen(&a, "EV1").unwrap());
        assert!(stores.seen(&a, "EV3").unwrap());
        assert!(stores.call(&a, "CA1").unwrap().is_none());
        assert!(stores.call(&a, "CA2").unwrap().is_some());
        assert_eq!(stores.call(&a, "CA3").unwrap().unwrap().status, "in-progress");
        assert!(stores.seen(&b, "EV2").unwrap());
        stores.remove(&b);
        assert!(!stores.is_installed(&b));
        // Released state stays on disk until the cleanup delay has passed.
        assert!(stores.settled().unwrap().checkpoint(&b).unwrap().is_some());
    }

    #[test]
    fn a_store_of_another_owner_is_emptied_and_a_wipe_forgets_a_task() {
        let dir = tempfile::tempdir().unwrap();
        let task = TopicPartition::new("switchboard.raw.twilio", 0);
        {
            let mut stores = Stores::new(Db::open(dir.path(), 1 << 20, "group-a").unwrap());
            stores.install(task.clone());
            stores.mark_seen(&task, "EV1", 1);
            stores
                .commit(&offsets(&task, 1), BTreeMap::new(), CHANGELOGS)
                .unwrap();
        }
        {
            let db = Db::open(dir.path(), 1 << 20, "group-a").unwrap();
            assert!(db.checkpoint(&task).unwrap().is_some());
            assert_eq!(db.dedup_len(&task).unwrap(), 1);
            db.wipe(&task).unwrap();
            assert!(db.checkpoint(&task).unwrap().is_none());
            assert_eq!(db.dedup_len(&task).unwrap(), 0);
        }
        {
            let mut stores = Stores::new(Db::open(dir.path(), 1 << 20, "group-a").unwrap());
            stores.install(task.clone());
            stores.mark_seen(&task, "EV1", 1);
            stores
                .commit(&offsets(&task, 1), BTreeMap::new(), CHANGELOGS)
                .unwrap();
        }
        let db = Db::open(dir.path(), 1 << 20, "group-b").unwrap();
        assert!(db.checkpoint(&task).unwrap().is_none());
        assert_eq!(db.dedup_len(&task).unwrap(), 0);
    }
}
