//! redb vs fjall vs rocksdb on the processor's local state workload (issue 14).
//!
//! Every engine compiled in (cargo features `redb`, `fjall`, `rocksdb`) runs the same
//! workload in a fresh directory under `--dir` (default /tmp):
//!
//! 1. load: N dedup entries (`twilio:` + 40 hex -> i64 millis) plus a time-index entry
//!    (seen_at BE ++ key -> empty) each, and one ~300-byte call state every 4 entries,
//!    500 entries per commit, commits not fsynced except one durable commit per second;
//! 2. 200,000 point lookups on the dedup table, half hits and half misses, 64 MiB cache;
//! 3. expiry of the oldest half by a range scan of the time index, deletes in batches of 5,000;
//! 4. disk use (like `du`) after each phase's durable commit, RSS after load + lookups.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

#[cfg(not(any(feature = "redb", feature = "fjall", feature = "rocksdb")))]
compile_error!("enable at least one of the features `redb`, `fjall`, `rocksdb`");

const MIB: usize = 1024 * 1024;
const CALL_STATE_LEN: usize = 300;
const SEED: u64 = 0x5eed_0014;

#[derive(Debug, Parser)]
#[command(about = "Embedded KV engines on the processor's state-store workload")]
struct Args {
    /// Number of distinct dedup entries to load.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Dedup entries per commit (one transaction / write batch each).
    #[arg(long, default_value_t = 500)]
    batch: u64,
    /// One call-state record is written every this many dedup entries.
    #[arg(long, default_value_t = 4)]
    call_every: u64,
    /// Milliseconds between durable (fsync) commits during load and expiry.
    #[arg(long, default_value_t = 1000)]
    durable_every_ms: u64,
    /// Point lookups after the load (half hits, half misses).
    #[arg(long, default_value_t = 200_000)]
    lookups: u64,
    /// Cache size of each engine, MiB.
    #[arg(long, default_value_t = 64)]
    cache_mib: usize,
    /// Memtable (write buffer) size per keyspace / column family, MiB, for the LSM engines
    /// (fjall `max_memtable_size`, rocksdb `write_buffer_size`); default: the engine's default
    /// (64 MiB in both). redb has no memtable.
    #[arg(long)]
    memtable_mib: Option<usize>,
    /// Index entries deleted per expiry commit.
    #[arg(long, default_value_t = 5_000)]
    expire_batch: usize,
    /// Parent directory for the fresh per-run database directory.
    #[arg(long, default_value = "/tmp")]
    dir: PathBuf,
    /// Keep the database directory after the run.
    #[arg(long)]
    keep: bool,
    /// Engines to run (default: all compiled in), e.g. `--engine redb --engine fjall`.
    #[arg(long)]
    engine: Vec<String>,
}

/// What one commit writes: dedup entries (key, seen_at millis) and call states.
struct Batch {
    dedup: Vec<(Vec<u8>, i64)>,
    calls: Vec<(Vec<u8>, Vec<u8>)>,
}

trait Store {
    /// One atomic commit of a load batch; `durable` asks for an fsynced commit.
    fn write(&mut self, b: &Batch, durable: bool) -> Result<()>;
    /// A durable commit with nothing new in it (end of a phase).
    fn sync(&mut self) -> Result<()>;
    /// Point lookup in the dedup table; true if the key exists.
    fn get(&mut self, key: &[u8]) -> Result<bool>;
    /// Deletes up to `max` time-index entries in `[from, to)` and their dedup entries in one
    /// commit; returns the number deleted and the last index key deleted.
    fn expire(
        &mut self,
        from: &[u8],
        to: &[u8],
        max: usize,
        durable: bool,
    ) -> Result<(usize, Option<Vec<u8>>)>;
    /// Explicit compaction if the engine has one; returns what was done.
    fn compact(&mut self) -> Result<Option<&'static str>>;
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn hex_of(words: &[u64], chars: usize, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = 0;
    'outer: for w in words {
        for byte in w.to_be_bytes() {
            if n == chars {
                break 'outer;
            }
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
            n += 2;
        }
    }
}

/// Dedup key of event `i`: `twilio:` + 40 hex chars, deterministic so lookups can
/// regenerate hits (i < N) and misses (i >= N) without keeping the keys in memory.
fn dedup_key(i: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(47);
    k.extend_from_slice(b"twilio:");
    let base = SEED ^ i.wrapping_mul(3);
    hex_of(
        &[
            splitmix64(base),
            splitmix64(base + 1),
            splitmix64(base + 2),
        ],
        40,
        &mut k,
    );
    k
}

/// Call sid of call `j`: `CA` + 32 hex chars (34 chars, like a Twilio CallSid).
fn call_sid(j: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(34);
    k.extend_from_slice(b"CA");
    let base = !SEED ^ j.wrapping_mul(2);
    hex_of(&[splitmix64(base), splitmix64(base + 1)], 32, &mut k);
    k
}

fn index_key(seen_at: i64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&seen_at.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// Disk use like `du`: allocated blocks of every file under `path`.
fn disk_use(path: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(path).with_context(|| format!("read_dir {}", path.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += meta.blocks() * 512;
        if meta.is_dir() {
            total += disk_use(&entry.path())?;
        }
    }
    Ok(total)
}

/// (VmRSS, VmHWM) of this process in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

#[derive(Debug, Default)]
struct Report {
    engine: &'static str,
    events: u64,
    memtable: String,
    load_s: f64,
    load_rate: f64,
    commits: u64,
    durable_commits: u64,
    commit_lat: Option<(f64, f64, f64)>,
    durable_lat: Option<(f64, f64, f64)>,
    disk_load: u64,
    lookup: (f64, f64, f64, f64),
    hits: u64,
    misses: u64,
    rss_kib: u64,
    hwm_kib: u64,
    expire_s: f64,
    expire_rate: f64,
    disk_expire: u64,
    compaction: Option<(&'static str, f64, u64)>,
}

fn run(engine: &'static str, store: &mut dyn Store, args: &Args, dir: &Path) -> Result<Report> {
    let mut rep = Report {
        engine,
        events: args.events,
        memtable: args
            .memtable_mib
            .map_or_else(|| "default".to_owned(), |m| format!("{m} MiB")),
        ..Report::default()
    };
    let durable_every = Duration::from_millis(args.durable_every_ms);
    let start_ms = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;
    let mut rng = SmallRng::seed_from_u64(SEED);

    // 1. Load. seen_at is a synthetic clock (start + 1 ms per event) so "the oldest half"
    // is an exact cutoff; only the store operations are timed, not key generation.
    let mut commit_h = hist();
    let mut durable_h = hist();
    let mut next_call = 0u64;
    let mut timed = Duration::ZERO;
    let mut last_durable = Instant::now();
    let mut i = 0u64;
    while i < args.events {
        let end = (i + args.batch).min(args.events);
        let mut b = Batch {
            dedup: Vec::with_capacity((end - i) as usize),
            calls: Vec::with_capacity(((end - i) / args.call_every + 1) as usize),
        };
        for e in i..end {
            b.dedup.push((dedup_key(e), start_ms + e as i64));
            if e % args.call_every == 0 {
                let mut v = vec![0u8; CALL_STATE_LEN];
                rng.fill_bytes(&mut v);
                b.calls.push((call_sid(next_call), v));
                next_call += 1;
            }
        }
        let durable = last_durable.elapsed() >= durable_every;
        let t = Instant::now();
        store.write(&b, durable)?;
        let el = t.elapsed();
        timed += el;
        let ns = u64::try_from(el.as_nanos())?.max(1);
        if durable {
            durable_h.record(ns)?;
            last_durable = Instant::now();
        } else {
            commit_h.record(ns)?;
        }
        i = end;
    }
    let t = Instant::now();
    store.sync()?;
    let el = t.elapsed();
    timed += el;
    durable_h.record(u64::try_from(el.as_nanos())?.max(1))?;
    rep.load_s = timed.as_secs_f64();
    rep.load_rate = args.events as f64 / rep.load_s;
    rep.commits = commit_h.len();
    rep.durable_commits = durable_h.len();
    if !commit_h.is_empty() {
        rep.commit_lat = Some((us(&commit_h, 0.5), us(&commit_h, 0.99), commit_h.max() as f64 / 1000.0));
    }
    rep.durable_lat = Some((us(&durable_h, 0.5), us(&durable_h, 0.99), durable_h.max() as f64 / 1000.0));
    rep.disk_load = disk_use(dir)?;

    // 2. Point lookups, half hits (an event < N) and half misses (an id never written).
    let mut h = hist();
    let keys: Vec<(Vec<u8>, bool)> = (0..args.lookups)
        .map(|n| {
            if n % 2 == 0 {
                (dedup_key(rng.random_range(0..args.events)), true)
            } else {
                (dedup_key(args.events + rng.random_range(0..1u64 << 40)), false)
            }
        })
        .collect();
    for (k, expect) in &keys {
        let t = Instant::now();
        let found = store.get(k)?;
        let el = t.elapsed();
        h.record(u64::try_from(el.as_nanos())?.max(1))?;
        if found != *expect {
            bail!("{engine}: lookup of {} returned {found}, expected {expect}", String::from_utf8_lossy(k));
        }
        if found {
            rep.hits += 1;
        } else {
            rep.misses += 1;
        }
    }
    drop(keys);
    rep.lookup = (us(&h, 0.5), us(&h, 0.99), us(&h, 0.999), h.mean() / 1000.0);
    (rep.rss_kib, rep.hwm_kib) = rss_kib();

    // 3. Expiry of the oldest half through the time index.
    let cutoff = (start_ms + (args.events / 2) as i64).to_be_bytes().to_vec();
    let mut from: Vec<u8> = Vec::new();
    let mut expired = 0usize;
    let mut last_durable = Instant::now();
    let t = Instant::now();
    loop {
        let durable = last_durable.elapsed() >= durable_every;
        let (n, last) = store.expire(&from, &cutoff, args.expire_batch, durable)?;
        if durable {
            last_durable = Instant::now();
        }
        expired += n;
        match last {
            // Resume right after the last deleted key.
            Some(mut k) => {
                k.push(0);
                from = k;
            }
            None => break,
        }
        if n < args.expire_batch {
            break;
        }
    }
    store.sync()?;
    rep.expire_s = t.elapsed().as_secs_f64();
    if expired as u64 != args.events / 2 {
        bail!("{engine}: expired {expired}, expected {}", args.events / 2);
    }
    rep.expire_rate = expired as f64 / rep.expire_s;
    rep.disk_expire = disk_use(dir)?;
    // Sanity: an expired key is gone, a kept one is still there.
    if store.get(&dedup_key(0))? || !store.get(&dedup_key(args.events - 1))? {
        bail!("{engine}: expiry removed the wrong entries");
    }

    let t = Instant::now();
    if let Some(what) = store.compact()? {
        store.sync()?;
        rep.compaction = Some((what, t.elapsed().as_secs_f64(), disk_use(dir)?));
    }
    Ok(rep)
}

fn print(rep: &Report) {
    let mut s = String::new();
    let _ = writeln!(s, "== {} N={} memtable={}", rep.engine, rep.events, rep.memtable);
    let _ = writeln!(
        s,
        "load: {:.2} s, {:.0} entries/s ({} commits of <=500 entries + {} durable)",
        rep.load_s, rep.load_rate, rep.commits, rep.durable_commits
    );
    if let Some((p50, p99, max)) = rep.commit_lat {
        let _ = writeln!(s, "  non-durable commit (whole batch txn) us: p50 {p50:.0} p99 {p99:.0} max {max:.0}");
    }
    if let Some((p50, p99, max)) = rep.durable_lat {
        let _ = writeln!(s, "  durable commit (whole batch txn) us: p50 {p50:.0} p99 {p99:.0} max {max:.0}");
    }
    let _ = writeln!(s, "disk after load: {:.1} MiB", mib(rep.disk_load));
    let (p50, p99, p999, mean) = rep.lookup;
    let _ = writeln!(
        s,
        "lookups ({} hits, {} misses) us: p50 {p50:.2} p99 {p99:.2} p999 {p999:.2} mean {mean:.2}",
        rep.hits, rep.misses
    );
    let _ = writeln!(
        s,
        "RSS after load+lookups: {:.1} MiB (peak {:.1} MiB)",
        rep.rss_kib as f64 / 1024.0,
        rep.hwm_kib as f64 / 1024.0
    );
    let _ = writeln!(
        s,
        "expiry: {:.2} s, {:.0} entries/s, disk after: {:.1} MiB",
        rep.expire_s,
        rep.expire_rate,
        mib(rep.disk_expire)
    );
    match rep.compaction {
        Some((what, secs, disk)) => {
            let _ = writeln!(s, "explicit compaction ({what}): {secs:.2} s, disk after: {:.1} MiB", mib(disk));
        }
        None => {
            let _ = writeln!(s, "explicit compaction: none");
        }
    }
    print!("{s}");
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.events < 2 || args.batch == 0 || args.call_every == 0 || args.expire_batch == 0 {
        bail!("--events must be >= 2 and --batch, --call-every, --expire-batch > 0");
    }
    let compiled: &[&'static str] = &[
        #[cfg(feature = "redb")]
        "redb",
        #[cfg(feature = "fjall")]
        "fjall",
        #[cfg(feature = "rocksdb")]
        "rocksdb",
    ];
    for name in &args.engine {
        if !compiled.contains(&name.as_str()) {
            bail!("engine {name} not compiled in (features: {compiled:?})");
        }
    }
    for &engine in compiled {
        if !args.engine.is_empty() && !args.engine.iter().any(|e| e == engine) {
            continue;
        }
        let dir = args.dir.join(format!("stores-bench-{engine}-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let cache = args.cache_mib * MIB;
        #[allow(unused_variables)]
        let memtable = args.memtable_mib.map(|m| m * MIB);
        let mut store: Box<dyn Store> = match engine {
            #[cfg(feature = "redb")]
            "redb" => Box::new(redb_store::RedbStore::open(&dir, cache)?),
            #[cfg(feature = "fjall")]
            "fjall" => Box::new(fjall_store::FjallStore::open(&dir, cache, memtable)?),
            #[cfg(feature = "rocksdb")]
            "rocksdb" => Box::new(rocks_store::RocksStore::open(&dir, cache, memtable)?),
            other => bail!("unknown engine {other}"),
        };
        let rep = run(engine, store.as_mut(), &args, &dir)?;
        drop(store);
        print(&rep);
        // LSM engines may delete obsolete files lazily; this is what is left once closed.
        println!("disk after close: {:.1} MiB", mib(disk_use(&dir)?));
        if !args.keep {
            std::fs::remove_dir_all(&dir)?;
        }
    }
    Ok(())
}

#[cfg(feature = "redb")]
mod redb_store {
    use super::{Batch, Store};
    use anyhow::Result;
    use redb::{
        CompactionMode, Database, Durability, ReadableDatabase, ReadableTable, TableDefinition,
    };
    use std::path::Path;

    const DEDUP: TableDefinition<'_, &[u8], i64> = TableDefinition::new("dedup");
    const BY_TIME: TableDefinition<'_, &[u8], ()> = TableDefinition::new("dedup_by_time");
    const CALLS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("calls");

    pub(super) struct RedbStore {
        db: Database,
    }

    impl RedbStore {
        pub(super) fn open(dir: &Path, cache: usize) -> Result<Self> {
            let db = Database::builder()
                .set_cache_size(cache)
                .create(dir.join("state.redb"))?;
            let tx = db.begin_write()?;
            tx.open_table(DEDUP)?;
            tx.open_table(BY_TIME)?;
            tx.open_table(CALLS)?;
            tx.commit()?;
            Ok(Self { db })
        }
    }

    fn durability(durable: bool) -> Durability {
        if durable { Durability::Immediate } else { Durability::None }
    }

    impl Store for RedbStore {
        fn write(&mut self, b: &Batch, durable: bool) -> Result<()> {
            let mut tx = self.db.begin_write()?;
            tx.set_durability(durability(durable))?;
            {
                let mut dedup = tx.open_table(DEDUP)?;
                let mut by_time = tx.open_table(BY_TIME)?;
                for (k, t) in &b.dedup {
                    dedup.insert(k.as_slice(), *t)?;
                    by_time.insert(super::index_key(*t, k).as_slice(), ())?;
                }
                let mut calls = tx.open_table(CALLS)?;
                for (k, v) in &b.calls {
                    calls.insert(k.as_slice(), v.as_slice())?;
                }
            }
            tx.commit()?;
            Ok(())
        }

        fn sync(&mut self) -> Result<()> {
            let mut tx = self.db.begin_write()?;
            tx.set_durability(Durability::Immediate)?;
            tx.commit()?;
            Ok(())
        }

        fn get(&mut self, key: &[u8]) -> Result<bool> {
            // A read transaction per lookup, as a standalone point lookup costs.
            let tx = self.db.begin_read()?;
            let t = tx.open_table(DEDUP)?;
            Ok(t.get(key)?.is_some())
        }

        fn expire(
            &mut self,
            from: &[u8],
            to: &[u8],
            max: usize,
            durable: bool,
        ) -> Result<(usize, Option<Vec<u8>>)> {
            let mut tx = self.db.begin_write()?;
            tx.set_durability(durability(durable))?;
            let mut last = None;
            let mut n = 0;
            {
                let mut by_time = tx.open_table(BY_TIME)?;
                let mut dedup = tx.open_table(DEDUP)?;
                let keys: Vec<Vec<u8>> = by_time
                    .range(from..to)?
                    .take(max)
                    .map(|r| r.map(|(k, _)| k.value().to_vec()))
                    .collect::<Result<_, _>>()?;
                for k in keys {
                    by_time.remove(k.as_slice())?;
                    dedup.remove(&k[8..])?;
                    n += 1;
                    last = Some(k);
                }
            }
            tx.commit()?;
            Ok((n, last))
        }

        fn compact(&mut self) -> Result<Option<&'static str>> {
            let mut rounds = 0;
            while self.db.compact(CompactionMode::Balanced)? {
                rounds += 1;
                if rounds >= 100 {
                    break;
                }
            }
            Ok(Some("Database::compact(CompactionMode::Balanced) until it returns false"))
        }
    }
}

#[cfg(feature = "fjall")]
mod fjall_store {
    use super::{Batch, Store};
    use anyhow::Result;
    use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
    use std::path::Path;

    pub(super) struct FjallStore {
        db: Database,
        dedup: Keyspace,
        by_time: Keyspace,
        calls: Keyspace,
    }

    impl FjallStore {
        pub(super) fn open(dir: &Path, cache: usize, memtable: Option<usize>) -> Result<Self> {
            let db = Database::builder(dir).cache_size(cache as u64).open()?;
            let opts = || match memtable {
                Some(m) => KeyspaceCreateOptions::default().max_memtable_size(m as u64),
                None => KeyspaceCreateOptions::default(),
            };
            let dedup = db.keyspace("dedup", opts)?;
            let by_time = db.keyspace("dedup_by_time", opts)?;
            let calls = db.keyspace("calls", opts)?;
            Ok(Self {
                db,
                dedup,
                by_time,
                calls,
            })
        }
    }

    impl Store for FjallStore {
        fn write(&mut self, b: &Batch, durable: bool) -> Result<()> {
            // One atomic write batch across the three keyspaces; by default a batch commit
            // writes the journal to OS buffers, no fsync.
            let mut batch = self.db.batch();
            for (k, t) in &b.dedup {
                batch.insert(&self.dedup, k.as_slice(), t.to_be_bytes());
                batch.insert(&self.by_time, super::index_key(*t, k), []);
            }
            for (k, v) in &b.calls {
                batch.insert(&self.calls, k.as_slice(), v.as_slice());
            }
            batch.commit()?;
            if durable {
                self.db.persist(PersistMode::SyncAll)?;
            }
            Ok(())
        }

        fn sync(&mut self) -> Result<()> {
            self.db.persist(PersistMode::SyncAll)?;
            Ok(())
        }

        fn get(&mut self, key: &[u8]) -> Result<bool> {
            Ok(self.dedup.get(key)?.is_some())
        }

        fn expire(
            &mut self,
            from: &[u8],
            to: &[u8],
            max: usize,
            durable: bool,
        ) -> Result<(usize, Option<Vec<u8>>)> {
            let keys: Vec<Vec<u8>> = self
                .by_time
                .range(from..to)
                .take(max)
                .map(|g| g.key().map(|k| k.to_vec()))
                .collect::<Result<_, _>>()?;
            let mut batch = self.db.batch();
            for k in &keys {
                batch.remove(&self.by_time, k.as_slice());
                batch.remove(&self.dedup, &k[8..]);
            }
            batch.commit()?;
            if durable {
                self.db.persist(PersistMode::SyncAll)?;
            }
            Ok((keys.len(), keys.into_iter().last()))
        }

        fn compact(&mut self) -> Result<Option<&'static str>> {
            // `major_compact` is public but #[doc(hidden)] in fjall 3.
            self.dedup.rotate_memtable_and_wait()?;
            self.by_time.rotate_memtable_and_wait()?;
            self.calls.rotate_memtable_and_wait()?;
            self.dedup.major_compact()?;
            self.by_time.major_compact()?;
            self.calls.major_compact()?;
            Ok(Some("rotate_memtable_and_wait + major_compact (doc-hidden API) on each keyspace"))
        }
    }
}

#[cfg(feature = "rocksdb")]
mod rocks_store {
    use super::{Batch, Store};
    use anyhow::{Context, Result};
    use rocksdb::{
        BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options,
        WriteBatch, WriteOptions,
    };
    use std::path::Path;

    const CFS: [&str; 3] = ["dedup", "dedup_by_time", "calls"];

    pub(super) struct RocksStore {
        db: DB,
        // Keeps the block cache alive as long as the database.
        _cache: Cache,
    }

    impl RocksStore {
        pub(super) fn open(dir: &Path, cache_bytes: usize, memtable: Option<usize>) -> Result<Self> {
            let cache = Cache::new_lru_cache(cache_bytes);
            let mut table = BlockBasedOptions::default();
            table.set_block_cache(&cache);
            // The usual point-lookup setup: 10 bits/key bloom filters (fjall has them by default).
            table.set_bloom_filter(10.0, false);
            let mut cf_opts = Options::default();
            cf_opts.set_block_based_table_factory(&table);
            if let Some(m) = memtable {
                cf_opts.set_write_buffer_size(m);
            }
            let mut opts = cf_opts.clone();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            let cfs = CFS.map(|n| ColumnFamilyDescriptor::new(n, cf_opts.clone()));
            let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
            Ok(Self { db, _cache: cache })
        }

        fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
            self.db.cf_handle(name).context("missing column family")
        }

        fn write_batch(&self, batch: WriteBatch, durable: bool) -> Result<()> {
            let mut wo = WriteOptions::default();
            wo.set_sync(durable);
            self.db.write_opt(batch, &wo)?;
            Ok(())
        }
    }

    impl Store for RocksStore {
        fn write(&mut self, b: &Batch, durable: bool) -> Result<()> {
            let (dedup, by_time, calls) = (self.cf(CFS[0])?, self.cf(CFS[1])?, self.cf(CFS[2])?);
            let mut batch = WriteBatch::default();
            for (k, t) in &b.dedup {
                batch.put_cf(dedup, k, t.to_be_bytes());
                batch.put_cf(by_time, super::index_key(*t, k), []);
            }
            for (k, v) in &b.calls {
                batch.put_cf(calls, k, v);
            }
            self.write_batch(batch, durable)
        }

        fn sync(&mut self) -> Result<()> {
            self.db.flush_wal(true)?;
            Ok(())
        }

        fn get(&mut self, key: &[u8]) -> Result<bool> {
            Ok(self.db.get_pinned_cf(self.cf(CFS[0])?, key)?.is_some())
        }

        fn expire(
            &mut self,
            from: &[u8],
            to: &[u8],
            max: usize,
            durable: bool,
        ) -> Result<(usize, Option<Vec<u8>>)> {
            let (dedup, by_time) = (self.cf(CFS[0])?, self.cf(CFS[1])?);
            let mut keys = Vec::with_capacity(max);
            for item in self
                .db
                .iterator_cf(by_time, IteratorMode::From(from, Direction::Forward))
            {
                let (k, _) = item?;
                if &*k >= to || keys.len() == max {
                    break;
                }
                keys.push(k.into_vec());
            }
            let mut batch = WriteBatch::default();
            for k in &keys {
                batch.delete_cf(by_time, k);
                batch.delete_cf(dedup, &k[8..]);
            }
            self.write_batch(batch, durable)?;
            Ok((keys.len(), keys.into_iter().last()))
        }

        fn compact(&mut self) -> Result<Option<&'static str>> {
            for name in CFS {
                let cf = self.cf(name)?;
                self.db.flush_cf(cf)?;
                self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
            }
            Ok(Some("flush_cf + compact_range_cf(None, None) on each column family"))
        }
    }
}
