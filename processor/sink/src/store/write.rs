//! The batch transaction: events, folded entity rows and consumed offsets, all or nothing.
//!
//! Inside one transaction, for each event in order: insert it into its events table keyed by event
//! id (`ON CONFLICT DO NOTHING`); if the insert took effect, fold it into its entity row, loaded
//! once per batch. Then write every changed entity row, then the offsets, then commit.
//!
//! Concurrent writers (a second sink instance during a rebalance, a zombie) must not fold into a
//! stale row. SQLite: the transaction starts with `BEGIN IMMEDIATE`, taking the database's single
//! write lock before anything is read. PostgreSQL: before reading, the transaction takes an
//! advisory transaction lock per entity (and per payment) the batch touches, all in one statement
//! and in ascending order, so two batches touching a common call serialize (the second one then
//! reads the first one's committed row), batches touching disjoint rows run in parallel, and
//! batches never deadlock each other. `SELECT … FOR UPDATE` alone would not do: it locks nothing
//! for a call that has no row yet.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt::Write as _;
use std::sync::LazyLock;

use sqlx::{Any, AnyConnection, AnyPool, Executor as _, Transaction};
use switchboard_schemas::domain::{BillingEvent, BookingEvent, CallEvent, CallKind, MessageEvent};

use super::read::{self, BOOKING_COLUMNS, CALL_COLUMNS, MESSAGE_COLUMNS};
use super::{
    Backend, BatchOutcome, BookingRow, CallRow, ConsumedOffset, DomainEvent, MessageRow, Store, StoreError,
    fold_booking, fold_message,
};
use switchboard_schemas::{ActionAttempt, call_state};

/// An entity row as loaded at its first event in the batch, then as folded so far.
#[derive(Debug)]
struct Slot<T> {
    current: Option<T>,
    changed: bool,
}

impl<T> Slot<T> {
    fn loaded(current: Option<T>) -> Self {
        Slot {
            current,
            changed: false,
        }
    }

    fn fold(&mut self, next: Option<T>) {
        if let Some(next) = next {
            self.current = Some(next);
            self.changed = true;
        }
    }

    fn changed(&self) -> Option<&T> {
        self.current.as_ref().filter(|_| self.changed)
    }
}

/// The entity rows a batch folds into, by primary key (ordered, so rows are written in a stable
/// order).
#[derive(Debug, Default)]
struct Entities {
    calls: BTreeMap<String, Slot<CallRow>>,
    messages: BTreeMap<String, Slot<MessageRow>>,
    bookings: BTreeMap<String, Slot<BookingRow>>,
}

pub(super) async fn apply_batch(
    store: &Store,
    group: &str,
    events: &[DomainEvent],
    attempts: &[ActionAttempt],
    offsets: &[ConsumedOffset],
) -> Result<BatchOutcome, StoreError> {
    let mut tx: Transaction<'static, Any> = match store.backend {
        Backend::Sqlite => store.pool.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => store.pool.begin().await?,
    };
    if store.backend == Backend::Postgres {
        lock_entities(&mut tx, events).await?;
    }

    let mut outcome = BatchOutcome::default();
    let mut entities = Entities::default();
    for event in events {
        let inserted = match event {
            DomainEvent::Call(event) => insert_call_event(&mut tx, event).await?,
            DomainEvent::Message(event) => insert_message_event(&mut tx, event).await?,
            DomainEvent::Billing(event) => insert_payment(&mut tx, event).await?,
            DomainEvent::Booking(event) => insert_booking_event(&mut tx, event).await?,
            // Not a table of the sink: the consumer does not read `switchboard.generic`.
            DomainEvent::Generic(_) => continue,
        };
        if !inserted {
            outcome.duplicates += 1;
            continue;
        }
        outcome.applied += 1;
        match event {
            DomainEvent::Call(event) => {
                let slot = match entities.calls.entry(event.call_sid.clone()) {
                    Entry::Occupied(slot) => slot.into_mut(),
                    Entry::Vacant(slot) => {
                        slot.insert(Slot::loaded(read::call(&mut tx, &event.call_sid).await?))
                    }
                };
                slot.fold(call_state::apply(slot.current.as_ref(), event));
            }
            DomainEvent::Message(event) => {
                let slot = match entities.messages.entry(event.message_sid.clone()) {
                    Entry::Occupied(slot) => slot.into_mut(),
                    Entry::Vacant(slot) => {
                        slot.insert(Slot::loaded(read::message(&mut tx, &event.message_sid).await?))
                    }
                };
                slot.fold(fold_message(slot.current.as_ref(), event));
            }
            DomainEvent::Booking(event) => {
                let slot = match entities.bookings.entry(event.invitee_uri.clone()) {
                    Entry::Occupied(slot) => slot.into_mut(),
                    Entry::Vacant(slot) => {
                        slot.insert(Slot::loaded(read::booking(&mut tx, &event.invitee_uri).await?))
                    }
                };
                slot.fold(fold_booking(slot.current.as_ref(), event));
            }
            DomainEvent::Billing(_) | DomainEvent::Generic(_) => {}
        }
    }

    for attempt in attempts {
        if insert_attempt(&mut tx, attempt).await? {
            outcome.applied += 1;
        } else {
            outcome.duplicates += 1;
        }
    }

    for call in entities.calls.values().filter_map(Slot::changed) {
        upsert_call(&mut tx, call).await?;
    }
    for message in entities.messages.values().filter_map(Slot::changed) {
        upsert_message(&mut tx, message).await?;
    }
    for booking in entities.bookings.values().filter_map(Slot::changed) {
        upsert_booking(&mut tx, booking).await?;
    }
    let mut offsets: Vec<&ConsumedOffset> = offsets.iter().collect();
    offsets.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    for offset in offsets {
        upsert_offset(&mut tx, group, offset).await?;
    }
    tx.commit().await?;
    Ok(outcome)
}

/// PostgreSQL only: transaction-scoped advisory locks on every entity `events` fold into (and every
/// payment event), taken in ascending order in one statement.
async fn lock_entities(tx: &mut AnyConnection, events: &[DomainEvent]) -> Result<(), sqlx::Error> {
    let mut keys: Vec<i64> = events
        .iter()
        .filter_map(|event| match event {
            DomainEvent::Call(event) => Some(lock_key("call", &event.call_sid)),
            DomainEvent::Message(event) => Some(lock_key("message", &event.message_sid)),
            DomainEvent::Booking(event) => Some(lock_key("booking", &event.invitee_uri)),
            DomainEvent::Billing(event) => Some(lock_key("payment", &event.event_id)),
            DomainEvent::Generic(_) => None,
        })
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    keys.sort_unstable();
    keys.dedup();
    // Integers only, so formatting them into the statement is safe; one simple-protocol
    // statement instead of a round trip per key. A VALUES list is scanned in order.
    let mut sql = String::from("SELECT COUNT(*) FROM (VALUES ");
    for (i, key) in keys.iter().enumerate() {
        let separator = if i == 0 { "" } else { ", " };
        let _ = write!(sql, "{separator}({key}::BIGINT)");
    }
    sql.push_str(") AS locks(k) WHERE pg_advisory_xact_lock(k) IS NOT NULL");
    // Through `Executor::execute` (a boxed future): `RawSql::execute` makes the batch future not
    // provably `Send`.
    tx.execute(sqlx::raw_sql(&sql)).await?;
    Ok(())
}

/// A stable 64-bit key for `(kind, key)` (FNV-1a). A collision only serializes two unrelated
/// batches.
fn lock_key(kind: &str, key: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in kind.bytes().chain([0]).chain(key.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

static CALL_UPSERT: LazyLock<String> = LazyLock::new(|| upsert_sql("calls", CALL_COLUMNS));
static MESSAGE_UPSERT: LazyLock<String> = LazyLock::new(|| upsert_sql("messages", MESSAGE_COLUMNS));
static BOOKING_UPSERT: LazyLock<String> = LazyLock::new(|| upsert_sql("bookings", BOOKING_COLUMNS));

/// `INSERT INTO table (columns) VALUES ($1, …) ON CONFLICT (key) DO UPDATE SET` every other column.
fn upsert_sql(table: &str, columns: &[&str]) -> String {
    let placeholders: Vec<String> = (1..=columns.len()).map(|n| format!("${n}")).collect();
    let updates: Vec<String> = columns[1..]
        .iter()
        .map(|column| format!("{column} = excluded.{column}"))
        .collect();
    format!(
        "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}",
        columns.join(", "),
        placeholders.join(", "),
        columns[0],
        updates.join(", ")
    )
}

async fn upsert_call(tx: &mut AnyConnection, row: &CallRow) -> Result<(), sqlx::Error> {
    sqlx::query(&CALL_UPSERT)
        .bind(&row.call_sid)
        .bind(&row.phone_id)
        .bind(&row.from)
        .bind(&row.to)
        .bind(&row.direction)
        .bind(&row.status)
        .bind(row.duration_seconds)
        .bind(row.sequence_number)
        .bind(row.started_at)
        .bind(row.ended_at)
        .bind(&row.recording_url)
        .bind(row.recording_duration)
        .bind(&row.transcription_text)
        .bind(&row.last_event_id)
        .bind(row.updated_at)
        .bind(row.status_at)
        .bind(&row.recording_sid)
        .bind(&row.recording_status)
        .bind(&row.transcription_sid)
        .bind(&row.transcription_status)
        .execute(tx)
        .await?;
    Ok(())
}

async fn upsert_message(tx: &mut AnyConnection, row: &MessageRow) -> Result<(), sqlx::Error> {
    sqlx::query(&MESSAGE_UPSERT)
        .bind(&row.message_sid)
        .bind(&row.phone_id)
        .bind(&row.status)
        .bind(&row.error_code)
        .bind(&row.from)
        .bind(&row.to)
        .bind(&row.last_event_id)
        .bind(row.status_at)
        .bind(row.updated_at)
        .execute(tx)
        .await?;
    Ok(())
}

async fn upsert_booking(tx: &mut AnyConnection, row: &BookingRow) -> Result<(), sqlx::Error> {
    sqlx::query(&BOOKING_UPSERT)
        .bind(&row.invitee_uri)
        .bind(&row.phone_id)
        .bind(&row.event_type)
        .bind(&row.invitee_name)
        .bind(&row.invitee_email)
        .bind(row.event_start)
        .bind(row.event_end)
        .bind(i32::from(row.canceled))
        .bind(&row.cancel_reason)
        .bind(&row.last_event_id)
        .bind(row.status_at)
        .bind(row.updated_at)
        .execute(tx)
        .await?;
    Ok(())
}

async fn upsert_offset(
    tx: &mut AnyConnection,
    group: &str,
    offset: &ConsumedOffset,
) -> Result<(), sqlx::Error> {
    // Overwritten, not maximized: a topic recreated for a replay restarts at 0, and a regressed
    // offset only re-reads events the event-id keys turn into duplicates.
    sqlx::query(
        r#"INSERT INTO sink_offsets (consumer_group, topic, "partition", next_offset) VALUES ($1, $2, $3, $4)
           ON CONFLICT (consumer_group, topic, "partition") DO UPDATE SET next_offset = excluded.next_offset"#,
    )
    .bind(group)
    .bind(&offset.topic)
    .bind(offset.partition)
    .bind(offset.next_offset)
    .execute(tx)
    .await?;
    Ok(())
}

/// Whether the insert took effect (`false`: the event id is already stored).
async fn insert_call_event(tx: &mut AnyConnection, event: &CallEvent) -> Result<bool, sqlx::Error> {
    let status = match event.call_kind() {
        Some(CallKind::Status) => &event.call_status,
        Some(CallKind::Recording) => &event.recording_status,
        Some(CallKind::Transcription) => &event.transcription_status,
        None => &None,
    };
    let result = sqlx::query(
        "INSERT INTO call_events (event_id, call_sid, phone_id, kind, status, occurred_at, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&event.event_id)
    .bind(&event.call_sid)
    .bind(&event.phone_id)
    .bind(&event.kind)
    .bind(status)
    .bind(event.occurred_at)
    .bind(event.received_at)
    .execute(tx)
    .await?;
    Ok(result.rows_affected() > 0)
}

async fn insert_message_event(tx: &mut AnyConnection, event: &MessageEvent) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO message_events (event_id, message_sid, phone_id, status, error_code, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&event.event_id)
    .bind(&event.message_sid)
    .bind(&event.phone_id)
    .bind(&event.message_status)
    .bind(&event.error_code)
    .bind(event.received_at)
    .execute(tx)
    .await?;
    Ok(result.rows_affected() > 0)
}

async fn insert_payment(tx: &mut AnyConnection, event: &BillingEvent) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO payments (event_id, phone_id, event_type, object_id, customer, amount, currency, status, \
         created, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&event.event_id)
    .bind(&event.phone_id)
    .bind(&event.event_type)
    .bind(&event.object_id)
    .bind(&event.customer)
    .bind(event.amount)
    .bind(&event.currency)
    .bind(&event.status)
    .bind(event.created)
    .bind(event.received_at)
    .execute(tx)
    .await?;
    Ok(result.rows_affected() > 0)
}

/// See [`super::Store::expire_attempts`]. Oldest first, through `action_attempts_by_time`.
pub(super) async fn expire_attempts(
    pool: &AnyPool,
    before_millis: i64,
    chunk: u32,
) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    loop {
        let result = sqlx::query(
            "DELETE FROM action_attempts WHERE attempt_id IN (SELECT attempt_id FROM action_attempts \
             WHERE attempted_at < $1 ORDER BY attempted_at LIMIT $2)",
        )
        .bind(before_millis)
        .bind(i64::from(chunk))
        .execute(pool)
        .await?;
        deleted += result.rows_affected();
        if result.rows_affected() < u64::from(chunk) {
            return Ok(deleted);
        }
    }
}

async fn insert_attempt(tx: &mut AnyConnection, attempt: &ActionAttempt) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO action_attempts (attempt_id, action, event_id, event_type, attempt, outcome, status_code, \
         reason, routed_to, latency_ms, attempted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (attempt_id) DO NOTHING",
    )
    .bind(&attempt.attempt_id)
    .bind(&attempt.action)
    .bind(&attempt.event_id)
    .bind(&attempt.event_type)
    .bind(attempt.attempt)
    .bind(&attempt.outcome)
    .bind(attempt.status_code)
    .bind(&attempt.reason)
    .bind(&attempt.routed_to)
    .bind(attempt.latency_ms)
    .bind(attempt.attempted_at)
    .execute(tx)
    .await?;
    Ok(result.rows_affected() > 0)
}

async fn insert_booking_event(tx: &mut AnyConnection, event: &BookingEvent) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO booking_events (event_id, invitee_uri, phone_id, event_type, received_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&event.event_id)
    .bind(&event.invitee_uri)
    .bind(&event.phone_id)
    .bind(&event.event_type)
    .bind(event.received_at)
    .execute(tx)
    .await?;
    Ok(result.rows_affected() > 0)
}
