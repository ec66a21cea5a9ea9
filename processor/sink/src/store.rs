//! The sink's database: the schema (`processor/sink/migrations`, run on connect), the exactly-once batch
//! write, and the queries behind the calls API.
//!
//! One code path serves SQLite and PostgreSQL, through sqlx's `Any` driver and portable SQL:
//! `$n` placeholders, `ON CONFLICT … DO UPDATE/NOTHING`, row-value comparisons, TEXT/INTEGER/BIGINT
//! columns (timestamps are BIGINT milliseconds since the epoch, booleans INTEGER 0/1). The backend
//! matters in two places only, both about concurrent writers (see [`write`]): SQLite batches start
//! with `BEGIN IMMEDIATE`, PostgreSQL batches take transaction-scoped advisory locks on the rows
//! they will fold into.
//!
//! Exactly-once: [`Store::apply_batch`] writes every row change of a batch and the consumed offsets
//! in one transaction, and every event is first inserted into its `*_events` table (or `payments`)
//! keyed by its event id, with `ON CONFLICT DO NOTHING`; only an insert that took effect folds the
//! event into its entity row. A replayed batch, or a duplicate inside one, changes nothing.
//!
//! Entity rows are folds that do not depend on delivery order: calls with [`call_state::apply`]
//! (the processor's rule, reused), messages and bookings with the rules in [`precedence`].
//!
//! Reads: an entity by key, per-phone listings of entities, and the event search over the four
//! events tables ([`Store::events`], one `UNION ALL`, see [`read`]) and a call's own events
//! ([`Store::call_history`]). Each is served from an index (migrations `0001`, `0002`).
//!
//! [`call_state::apply`]: switchboard_schemas::call_state::apply

mod precedence;
mod read;
mod write;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{MigrateError, Migrator};
use switchboard_schemas::domain::CallState;
use switchboard_schemas::{ActionAttempt, Classify, DomainEvent, Source, Transience};

pub(crate) use precedence::{fold_booking, fold_message};

/// The schema, embedded at build time from `processor/sink/migrations`.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Connections per pool. SQLite has one writer at a time anyway; the rest serve the API.
const SQLITE_CONNECTIONS: u32 = 4;
const POSTGRES_CONNECTIONS: u32 = 8;
/// How long a query waits for a pooled connection before failing (transiently).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which database a [`Store`] is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The sink's database. Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// The next offset to consume in one partition, stored with the rows it accounts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedOffset {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
}

/// What one [`Store::apply_batch`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events stored for the first time.
    pub applied: usize,
    /// Events whose event id was already stored (earlier, or earlier in the same batch): ignored.
    pub duplicates: usize,
}

/// A row of `calls`: exactly the folded [`CallState`], tie-break keys included.
pub(crate) type CallRow = CallState;

/// A row of `messages`: one SMS/MMS, its status chosen by [`fold_message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    pub message_sid: String,
    pub phone_id: String,
    pub status: String,
    /// Twilio's `ErrorCode` sent with the winning status.
    pub error_code: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// The event that set `status`.
    pub last_event_id: String,
    /// `received_at` of the event that set `status` (a tie-break key).
    pub status_at: i64,
    /// The latest `received_at` of any event of this message.
    pub updated_at: i64,
}

/// A row of `bookings`: one Calendly invitee, folded by [`fold_booking`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingRow {
    pub invitee_uri: String,
    pub phone_id: String,
    /// `invitee.created` or `invitee.canceled`: the winning event's type.
    pub event_type: String,
    pub invitee_name: Option<String>,
    pub invitee_email: Option<String>,
    pub event_start: Option<i64>,
    pub event_end: Option<i64>,
    pub canceled: bool,
    pub cancel_reason: Option<String>,
    /// The event that set `event_type`.
    pub last_event_id: String,
    /// `received_at` of the event that set `event_type` (a tie-break key).
    pub status_at: i64,
    /// The latest `received_at` of any event of this invitee.
    pub updated_at: i64,
}

/// Row counts, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub calls: u64,
    pub call_events: u64,
    pub messages: u64,
    pub payments: u64,
    pub bookings: u64,
}

/// A position in a newest-first listing: the `(updated_at, key)` of the last row served. Opaque to
/// API clients ([`Cursor::encode`]). In the event search: `(received_at, event_id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// `updated_at` of an entity row; `received_at` of an event.
    pub updated_at: i64,
    /// The row's primary key (call sid, message sid, invitee URI; event id).
    pub key: String,
}

impl Cursor {
    /// The opaque form handed to API clients: URL-safe base64 of `<updated_at>.<key>`.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}.{}", self.updated_at, self.key))
    }

    /// The cursor [`Cursor::encode`] made, or `None` for anything else.
    pub fn decode(encoded: &str) -> Option<Cursor> {
        let bytes = URL_SAFE_NO_PAD.decode(encoded).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (updated_at, key) = text.split_once('.')?;
        Some(Cursor {
            updated_at: updated_at.parse().ok()?,
            key: key.to_owned(),
        })
    }
}

/// One page of a newest-first listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<Cursor>,
}

/// What a stored event is about: the table it is in, and what its `subject` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    /// `call_events`: the subject is the call sid.
    Call,
    /// `message_events`: the subject is the message sid.
    Message,
    /// `payments`: the subject is the Stripe object id.
    Payment,
    /// `booking_events`: the subject is the Calendly invitee URI.
    Booking,
}

impl SubjectKind {
    /// Every kind, in the order the event search's `UNION ALL` lists their tables.
    pub const ALL: [SubjectKind; 4] = [
        SubjectKind::Call,
        SubjectKind::Message,
        SubjectKind::Payment,
        SubjectKind::Booking,
    ];

    /// `call`, `message`, `payment` or `booking`: the API's `subject_kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Call => "call",
            SubjectKind::Message => "message",
            SubjectKind::Payment => "payment",
            SubjectKind::Booking => "booking",
        }
    }

    /// The provider whose webhooks the events of this kind came from.
    pub fn source(self) -> Source {
        match self {
            SubjectKind::Call | SubjectKind::Message => Source::Twilio,
            SubjectKind::Payment => Source::Stripe,
            SubjectKind::Booking => Source::Calendly,
        }
    }
}

/// The filters of [`Store::events`], all optional and ANDed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub phone_id: Option<String>,
    /// Only this call's events (so only call events).
    pub call_sid: Option<String>,
    pub event_id: Option<String>,
    /// Only events of this provider (`generic`: none, the sink stores no generic events).
    pub source: Option<Source>,
    /// `received_at >= since` (ms).
    pub since: Option<i64>,
    /// `received_at < until` (ms).
    pub until: Option<i64>,
}

impl EventFilter {
    /// Whether events of `kind` can pass: the tables the search reads.
    pub fn admits(&self, kind: SubjectKind) -> bool {
        self.source.is_none_or(|source| kind.source() == source)
            && (self.call_sid.is_none() || kind == SubjectKind::Call)
    }
}

/// A stored event of any kind, as the event search lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub event_id: String,
    pub subject_kind: SubjectKind,
    /// Calls: the row's `kind` (`status`, `recording`, …); messages: `message.status`; payments
    /// and bookings: the provider's event type.
    pub kind: String,
    pub phone_id: String,
    /// Call sid, message sid, Stripe object id or invitee URI.
    pub subject: String,
    /// Calls, messages, payments: the status the event carried; bookings: none.
    pub status: Option<String>,
    /// When the provider says it happened (ms): a call event's `occurred_at`, a payment's
    /// `created`; unknown for messages and bookings.
    pub occurred_at: Option<i64>,
    pub received_at: i64,
}

/// The filters of [`Store::attempts`], both optional and ANDed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptFilter {
    pub action: Option<String>,
    pub event_id: Option<String>,
}

/// One row of `call_events`, as a call's history lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEventRow {
    pub event_id: String,
    pub kind: String,
    pub status: Option<String>,
    pub occurred_at: i64,
    pub received_at: i64,
}

/// Why a database operation failed. The message may name tables and SQL: log it, never serve it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database url: use sqlite://<path> or postgres://…")]
    UnsupportedUrl,
    #[error("database migration failed: {0}")]
    Migrate(#[from] MigrateError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl Classify for StoreError {
    /// Transient when retrying the same operation later may succeed: lost connections, pool and
    /// lock timeouts, SQLite busy/locked, PostgreSQL serialization failures, deadlocks and
    /// shutdowns. Constraint violations, decode errors and bad configuration are permanent.
    fn transience(&self) -> Transience {
        Transience::transient_if(match self {
            StoreError::UnsupportedUrl => false,
            StoreError::Migrate(MigrateError::Execute(error) | MigrateError::ExecuteMigration(error, _)) => {
                is_transient(error)
            }
            StoreError::Migrate(_) => false,
            StoreError::Database(error) => is_transient(error),
        })
    }
}

fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => {
            true
        }
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                let code = pg.code();
                // 08: connection exception; 53: insufficient resources; 40001 serialization
                // failure; 40P01 deadlock; 55P03 lock not available; 57P0x shutdown/restart.
                code.starts_with("08")
                    || code.starts_with("53")
                    || matches!(code, "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03")
            } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with any extended code.
                let code = db.code().and_then(|code| code.parse::<i32>().ok()).unwrap_or(0);
                matches!(code & 0xff, 5 | 6)
            } else {
                false
            }
        }
        _ => false,
    }
}

impl Store {
    /// Opens `sqlite://<path>` (created if missing, WAL journal, 5 s busy timeout) or
    /// `postgres://…`, and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url, connections) = if url.starts_with("sqlite:") {
            (Backend::Sqlite, sqlite_url(url), SQLITE_CONNECTIONS)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned(), POSTGRES_CONNECTIONS)
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let pool = AnyPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(&url)
            .await?;
        if backend == Backend::Sqlite {
            // Persistent in the file: readers (the API) no longer block the writer, nor it them.
            sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await?;
        }
        MIGRATOR.run(&pool).await?;
        Ok(Store { pool, backend })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection; later calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Stores `events` and `offsets` (of consumer group `group`) in one transaction: all of it
    /// commits, or none of it. Events already stored are counted as duplicates and change nothing.
    pub async fn apply_batch(
        &self,
        group: &str,
        events: &[DomainEvent],
        offsets: &[ConsumedOffset],
    ) -> Result<BatchOutcome, StoreError> {
        write::apply_batch(self, group, events, &[], offsets).await
    }

    /// [`Store::apply_batch`] with the actions' delivery `attempts` read in the same batch (an
    /// attempt already stored, by its `attempt_id`, is a duplicate).
    pub async fn apply_batch_with_attempts(
        &self,
        group: &str,
        events: &[DomainEvent],
        attempts: &[ActionAttempt],
        offsets: &[ConsumedOffset],
    ) -> Result<BatchOutcome, StoreError> {
        write::apply_batch(self, group, events, attempts, offsets).await
    }

    /// The stored delivery attempts that pass `filter`, newest `attempted_at` first (ties: greatest
    /// attempt id first), starting after `before`, at most `limit`.
    pub async fn attempts(
        &self,
        filter: &AttemptFilter,
        before: Option<&Cursor>,
        limit: u32,
    ) -> Result<Page<ActionAttempt>, StoreError> {
        Ok(read::attempts(&self.pool, filter, before, limit).await?)
    }

    /// Deletes the delivery attempts made before `before_millis`, at most `chunk` rows per
    /// statement (short transactions beside the sink's batches); returns how many it deleted.
    pub async fn expire_attempts(&self, before_millis: i64, chunk: u32) -> Result<u64, StoreError> {
        Ok(write::expire_attempts(&self.pool, before_millis, chunk).await?)
    }

    /// The stored next offsets of `group` for `topic_partitions`; a partition never consumed is
    /// absent.
    pub async fn offsets(
        &self,
        group: &str,
        topic_partitions: &[(String, i32)],
    ) -> Result<HashMap<(String, i32), i64>, StoreError> {
        let stored = read::offsets(&self.pool, group).await?;
        Ok(topic_partitions
            .iter()
            .filter_map(|key| stored.get(key).map(|next| (key.clone(), *next)))
            .collect())
    }

    /// The call `call_sid`, if any event of it was stored.
    pub async fn call(&self, call_sid: &str) -> Result<Option<CallRow>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(read::call(&mut conn, call_sid).await?)
    }

    /// The calls of `phone_id`, newest `updated_at` first (ties: greatest call sid first), updated
    /// at or after `since` (ms), starting after `before`, at most `limit`.
    pub async fn phone_calls(
        &self,
        phone_id: &str,
        since: Option<i64>,
        before: Option<&Cursor>,
        limit: u32,
    ) -> Result<Page<CallRow>, StoreError> {
        Ok(read::page(&self.pool, &read::CALLS, phone_id, since, before, limit).await?)
    }

    /// The bookings of `phone_id`, paged like [`Store::phone_calls`].
    pub async fn phone_bookings(
        &self,
        phone_id: &str,
        since: Option<i64>,
        before: Option<&Cursor>,
        limit: u32,
    ) -> Result<Page<BookingRow>, StoreError> {
        Ok(read::page(&self.pool, &read::BOOKINGS, phone_id, since, before, limit).await?)
    }

    /// The messages of `phone_id`, paged like [`Store::phone_calls`].
    pub async fn phone_messages(
        &self,
        phone_id: &str,
        since: Option<i64>,
        before: Option<&Cursor>,
        limit: u32,
    ) -> Result<Page<MessageRow>, StoreError> {
        Ok(read::page(&self.pool, &read::MESSAGES, phone_id, since, before, limit).await?)
    }

    /// The stored events (of all four events tables) that pass `filter`, newest `received_at`
    /// first (ties: greatest event id first), starting after `before`, at most `limit`.
    pub async fn events(
        &self,
        filter: &EventFilter,
        before: Option<&Cursor>,
        limit: u32,
    ) -> Result<Page<EventRow>, StoreError> {
        Ok(read::events(&self.pool, filter, before, limit).await?)
    }

    /// The call `call_sid` and its first `limit` events in the order they happened (`occurred_at`,
    /// then `received_at`, then event id), or `None` when the call is not stored.
    pub async fn call_history(
        &self,
        call_sid: &str,
        limit: u32,
    ) -> Result<Option<(CallRow, Vec<CallEventRow>)>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let Some(call) = read::call(&mut conn, call_sid).await? else {
            return Ok(None);
        };
        let events = read::call_events(&mut conn, call_sid, limit).await?;
        Ok(Some((call, events)))
    }

    /// How many calls, call events, messages, payments and bookings are stored.
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        Ok(read::counts(&self.pool).await?)
    }
}

/// `url` with `mode=rwc` (create the file if missing) unless it already chooses a mode.
fn sqlite_url(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}
