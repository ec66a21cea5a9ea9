//! The store's writer: applies what committed Kafka transactions changed, in their order, on a
//! thread of its own, so that the processing loop goes on with the next transaction while the
//! store writes the last one (a redb commit costs milliseconds of copy-on-write pages and
//! checksums, which on the loop came straight off the processor's throughput).
//!
//! A writer that falls behind takes every queued job into one store transaction (fewer, larger
//! commits); the queue is bounded, so a loop faster than the store waits for it instead of
//! holding ever more committed changes in memory. The loop keeps each job's changes visible to
//! its lookups until the writer reports them stored (see [`super::Stores`]).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::thread::JoinHandle;

use switchboard_kafka::TopicPartition;

use super::{Committed, Db, StoreError};

/// Jobs queued before the loop waits for the writer.
const QUEUE: usize = 4;

/// What a job does.
#[derive(Debug)]
pub(super) enum Work {
    /// Writes a transaction that committed in Kafka, with its tasks' new checkpoints.
    Commit(Arc<Committed>),
    /// Applies the dedup windows (an entry written before its task's cutoff, ms, leaves) and
    /// deletes the state of tasks released long ago.
    Evict {
        cutoffs: Vec<(TopicPartition, i64)>,
        wipe: Vec<TopicPartition>,
    },
    /// Nothing to write: makes every write so far durable.
    Persist,
}

#[derive(Debug)]
struct Job {
    seq: u64,
    durable: bool,
    work: Work,
}

/// The jobs up to `through` (inclusive) are in the store.
#[derive(Debug)]
struct Done {
    through: u64,
}

/// The loop's handle on the writer thread.
#[derive(Debug)]
pub(super) struct Writer {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Result<Done, StoreError>>,
    thread: Option<JoinHandle<()>>,
    /// The sequence number of the next job.
    next: u64,
    /// Every job below this is stored.
    stored: u64,
    /// The writer failed: every later call says so.
    failed: bool,
}

impl Writer {
    pub(super) fn start(db: Db) -> Self {
        let (jobs, queued) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
        let (report, done) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("state-writer".into())
            .spawn(move || {
                while let Ok(first) = queued.recv() {
                    let mut batch = vec![first];
                    batch.extend(queued.try_iter());
                    let result = write(&db, &batch);
                    let failed = result.is_err();
                    if report.send(result).is_err() || failed {
                        return;
                    }
                }
            })
            .expect("spawning the state writer thread");
        Self {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
            next: 0,
            stored: 0,
            failed: false,
        }
    }

    /// Queues `work` (waiting while the queue is full); its sequence number.
    pub(super) fn submit(&mut self, work: Work, durable: bool) -> Result<u64, StoreError> {
        if self.failed {
            return Err(StoreError::WriterFailed);
        }
        let seq = self.next;
        let job = Job { seq, durable, work };
        let sent = self.jobs.as_ref().expect("open until dropped").send(job);
        if sent.is_err() {
            // The thread stopped after a failure: report it.
            self.wait_for(seq)?;
        }
        self.next += 1;
        Ok(seq)
    }

    /// The jobs stored since the last call, without waiting: every job below the returned
    /// sequence number is stored.
    pub(super) fn poll(&mut self) -> Result<u64, StoreError> {
        loop {
            match self.done.try_recv() {
                Ok(result) => self.record(result)?,
                Err(TryRecvError::Empty) => return Ok(self.stored),
                Err(TryRecvError::Disconnected) => return self.gone(),
            }
        }
    }

    /// Waits until the job `seq` is stored.
    pub(super) fn wait_for(&mut self, seq: u64) -> Result<(), StoreError> {
        while self.stored <= seq {
            match self.done.recv() {
                Ok(result) => self.record(result)?,
                Err(_) => return self.gone().map(drop),
            }
        }
        Ok(())
    }

    /// Waits until every job submitted is stored.
    pub(super) fn settle(&mut self) -> Result<(), StoreError> {
        match self.next.checked_sub(1) {
            Some(last) => self.wait_for(last),
            None => Ok(()),
        }
    }

    fn record(&mut self, result: Result<Done, StoreError>) -> Result<(), StoreError> {
        match result {
            Ok(done) => {
                self.stored = done.through + 1;
                Ok(())
            }
            Err(error) => {
                self.failed = true;
                Err(error)
            }
        }
    }

    fn gone(&mut self) -> Result<u64, StoreError> {
        self.failed = true;
        Err(StoreError::WriterFailed)
    }
}

impl Drop for Writer {
    /// Lets the thread write what is queued (committed in Kafka) and waits for it.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Applies `batch` in one store transaction, durable if any of its jobs must be.
fn write(db: &Db, batch: &[Job]) -> Result<Done, StoreError> {
    let durable = batch.iter().any(|job| job.durable);
    let txn = db.begin(durable)?;
    let mut evicted = 0;
    for job in batch {
        match &job.work {
            Work::Commit(committed) => super::write_committed(&txn, committed)?,
            Work::Evict { cutoffs, wipe } => {
                for task in wipe {
                    super::wipe_in(&txn, task)?;
                }
                for (task, cutoff) in cutoffs {
                    evicted += super::evict(&txn, task, *cutoff)?;
                }
            }
            Work::Persist => {}
        }
    }
    txn.commit().map_err(super::store_error)?;
    if evicted > 0 {
        tracing::debug!(evicted, "dedup window applied");
    }
    Ok(Done {
        through: batch.last().expect("a batch has a job").seq,
    })
}
