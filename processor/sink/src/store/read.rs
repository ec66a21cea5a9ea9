//! The columns of each entity table, row decoding, and the read queries (also used inside the
//! write transaction to load the rows a batch folds into), the event search among them.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};
use switchboard_schemas::ActionAttempt;

use super::{
    AttemptFilter, BookingRow, CallEventRow, CallRow, Counts, Cursor, EventFilter, EventRow, MessageRow,
    Page, SubjectKind,
};

/// The columns of `calls`, in the order [`super::write`] binds them.
pub(super) const CALL_COLUMNS: &[&str] = &[
    "call_sid",
    "phone_id",
    "from_number",
    "to_number",
    "direction",
    "status",
    "duration_seconds",
    "sequence_number",
    "started_at",
    "ended_at",
    "recording_url",
    "recording_duration",
    "transcription_text",
    "last_event_id",
    "updated_at",
    "status_at",
    "recording_sid",
    "recording_status",
    "transcription_sid",
    "transcription_status",
];

/// The columns of `messages`, in the order [`super::write`] binds them.
pub(super) const MESSAGE_COLUMNS: &[&str] = &[
    "message_sid",
    "phone_id",
    "status",
    "error_code",
    "from_number",
    "to_number",
    "last_event_id",
    "status_at",
    "updated_at",
];

/// The columns of `bookings`, in the order [`super::write`] binds them.
pub(super) const BOOKING_COLUMNS: &[&str] = &[
    "invitee_uri",
    "phone_id",
    "event_type",
    "invitee_name",
    "invitee_email",
    "event_start",
    "event_end",
    "canceled",
    "cancel_reason",
    "last_event_id",
    "status_at",
    "updated_at",
];

/// An entity table listed per phone, newest `updated_at` first.
pub(super) struct Listing<T> {
    pub(super) table: &'static str,
    /// The primary key: the cursor's tie-break.
    pub(super) key: &'static str,
    pub(super) columns: &'static [&'static str],
    pub(super) decode: fn(&AnyRow) -> Result<T, sqlx::Error>,
    pub(super) cursor: fn(&T) -> Cursor,
}

pub(super) const CALLS: Listing<CallRow> = Listing {
    table: "calls",
    key: "call_sid",
    columns: CALL_COLUMNS,
    decode: call_from_row,
    cursor: |row| Cursor {
        updated_at: row.updated_at,
        key: row.call_sid.clone(),
    },
};

pub(super) const MESSAGES: Listing<MessageRow> = Listing {
    table: "messages",
    key: "message_sid",
    columns: MESSAGE_COLUMNS,
    decode: message_from_row,
    cursor: |row| Cursor {
        updated_at: row.updated_at,
        key: row.message_sid.clone(),
    },
};

pub(super) const BOOKINGS: Listing<BookingRow> = Listing {
    table: "bookings",
    key: "invitee_uri",
    columns: BOOKING_COLUMNS,
    decode: booking_from_row,
    cursor: |row| Cursor {
        updated_at: row.updated_at,
        key: row.invitee_uri.clone(),
    },
};

fn call_from_row(row: &AnyRow) -> Result<CallRow, sqlx::Error> {
    Ok(CallRow {
        call_sid: row.try_get("call_sid")?,
        phone_id: row.try_get("phone_id")?,
        status: row.try_get("status")?,
        from: row.try_get("from_number")?,
        to: row.try_get("to_number")?,
        direction: row.try_get("direction")?,
        duration_seconds: row.try_get("duration_seconds")?,
        sequence_number: row.try_get("sequence_number")?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        recording_url: row.try_get("recording_url")?,
        recording_duration: row.try_get("recording_duration")?,
        transcription_text: row.try_get("transcription_text")?,
        last_event_id: row.try_get("last_event_id")?,
        updated_at: row.try_get("updated_at")?,
        status_at: row.try_get("status_at")?,
        recording_sid: row.try_get("recording_sid")?,
        recording_status: row.try_get("recording_status")?,
        transcription_sid: row.try_get("transcription_sid")?,
        transcription_status: row.try_get("transcription_status")?,
    })
}

fn message_from_row(row: &AnyRow) -> Result<MessageRow, sqlx::Error> {
    Ok(MessageRow {
        message_sid: row.try_get("message_sid")?,
        phone_id: row.try_get("phone_id")?,
        status: row.try_get("status")?,
        error_code: row.try_get("error_code")?,
        from: row.try_get("from_number")?,
        to: row.try_get("to_number")?,
        last_event_id: row.try_get("last_event_id")?,
        status_at: row.try_get("status_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn booking_from_row(row: &AnyRow) -> Result<BookingRow, sqlx::Error> {
    Ok(BookingRow {
        invitee_uri: row.try_get("invitee_uri")?,
        phone_id: row.try_get("phone_id")?,
        event_type: row.try_get("event_type")?,
        invitee_name: row.try_get("invitee_name")?,
        invitee_email: row.try_get("invitee_email")?,
        event_start: row.try_get("event_start")?,
        event_end: row.try_get("event_end")?,
        canceled: row.try_get::<i32, _>("canceled")? != 0,
        cancel_reason: row.try_get("cancel_reason")?,
        last_event_id: row.try_get("last_event_id")?,
        status_at: row.try_get("status_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The row of `key` in `listing`'s table. (Concrete connection types, not `impl Executor`: the
/// generic form makes the futures of callers not provably `Send`.)
async fn by_key<T>(
    conn: &mut AnyConnection,
    listing: &Listing<T>,
    key: &str,
) -> Result<Option<T>, sqlx::Error> {
    let sql = format!(
        "SELECT {} FROM {} WHERE {} = $1",
        listing.columns.join(", "),
        listing.table,
        listing.key
    );
    let row = sqlx::query(&sql).bind(key).fetch_optional(conn).await?;
    row.as_ref().map(listing.decode).transpose()
}

pub(super) async fn call(conn: &mut AnyConnection, call_sid: &str) -> Result<Option<CallRow>, sqlx::Error> {
    by_key(conn, &CALLS, call_sid).await
}

pub(super) async fn message(
    conn: &mut AnyConnection,
    message_sid: &str,
) -> Result<Option<MessageRow>, sqlx::Error> {
    by_key(conn, &MESSAGES, message_sid).await
}

pub(super) async fn booking(
    conn: &mut AnyConnection,
    invitee_uri: &str,
) -> Result<Option<BookingRow>, sqlx::Error> {
    by_key(conn, &BOOKINGS, invitee_uri).await
}

/// One page of `listing` for `phone_id`: `updated_at >= since`, strictly after `before` in the
/// order `(updated_at, key)` descending, at most `limit` rows (one more is read to learn whether
/// another page follows).
pub(super) async fn page<T>(
    pool: &AnyPool,
    listing: &Listing<T>,
    phone_id: &str,
    since: Option<i64>,
    before: Option<&Cursor>,
    limit: u32,
) -> Result<Page<T>, sqlx::Error> {
    let (table, key) = (listing.table, listing.key);
    let mut sql = format!(
        "SELECT {} FROM {table} WHERE phone_id = $1",
        listing.columns.join(", ")
    );
    let mut placeholders = 1;
    let mut next = || {
        placeholders += 1;
        format!("${placeholders}")
    };
    if since.is_some() {
        sql += &format!(" AND updated_at >= {}", next());
    }
    if before.is_some() {
        sql += &format!(" AND (updated_at, {key}) < ({}, {})", next(), next());
    }
    sql += &format!(" ORDER BY updated_at DESC, {key} DESC LIMIT {}", next());

    let mut query = sqlx::query(&sql).bind(phone_id);
    if let Some(since) = since {
        query = query.bind(since);
    }
    if let Some(before) = before {
        query = query.bind(before.updated_at).bind(before.key.as_str());
    }
    let rows = query.bind(i64::from(limit.max(1)) + 1).fetch_all(pool).await?;
    let items = rows.iter().map(listing.decode).collect::<Result<Vec<_>, _>>()?;
    Ok(paged(items, limit, listing.cursor))
}

/// The page of `items` read with `LIMIT limit + 1`: the first `limit`, and the cursor of the last
/// one when the extra row says that another page follows.
fn paged<T>(mut items: Vec<T>, limit: u32, cursor: impl Fn(&T) -> Cursor) -> Page<T> {
    let limit = limit.max(1) as usize;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(cursor)
    } else {
        None
    };
    Page { items, next_cursor }
}

/// `sql` with `binds` bound to `$1…` in order.
fn bound(sql: &str, binds: Vec<Bind>) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    binds
        .into_iter()
        .fold(sqlx::query(sql), |query, bind| match bind {
            Bind::Text(text) => query.bind(text),
            Bind::Int(int) => query.bind(int),
        })
}

/// The event search's arm for one events table: the table, and its rows as the search's columns
/// after `event_id, '<subject_kind>' AS subject_kind`: `kind`, `phone_id`, `subject`, `status`,
/// `occurred_at`, `received_at`, of the same types in every arm, so that PostgreSQL can unite them.
fn event_arm(kind: SubjectKind) -> (&'static str, &'static str) {
    match kind {
        SubjectKind::Call => (
            "call_events",
            "kind, phone_id, call_sid AS subject, status, occurred_at, received_at",
        ),
        SubjectKind::Message => (
            "message_events",
            "'message.status' AS kind, phone_id, message_sid AS subject, status, \
             CAST(NULL AS BIGINT) AS occurred_at, received_at",
        ),
        SubjectKind::Payment => (
            "payments",
            "event_type AS kind, phone_id, object_id AS subject, status, created AS occurred_at, received_at",
        ),
        SubjectKind::Booking => (
            "booking_events",
            "event_type AS kind, phone_id, invitee_uri AS subject, CAST(NULL AS TEXT) AS status, \
             CAST(NULL AS BIGINT) AS occurred_at, received_at",
        ),
    }
}

/// A value bound to one placeholder of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Bind {
    Text(String),
    Int(i64),
}

/// The SQL of one event search page and its values, `$1…` in order. `None` when no table can
/// hold a match (`source=generic`).
///
/// One arm per events table `filter` admits, each `WHERE`d by every filter and the cursor and cut
/// to `limit + 1` rows in the search's order, which its index yields (`*_by_phone` with a phone
/// id, `*_by_received` without; a call's or an event id's few rows come from `call_events_by_call`
/// or the primary key), so that it stops after `limit + 1` matches; the arms' pages are united with
/// `UNION ALL`, ordered and cut again. Every filter value is bound once, every arm names the same
/// placeholders.
pub(super) fn events_query(
    filter: &EventFilter,
    before: Option<&Cursor>,
    limit: u32,
) -> Option<(String, Vec<Bind>)> {
    let mut binds = Vec::new();
    let mut placeholder = |value: Bind| {
        binds.push(value);
        format!("${}", binds.len())
    };
    let mut conditions = Vec::new();
    if let Some(phone_id) = &filter.phone_id {
        conditions.push(format!(
            "phone_id = {}",
            placeholder(Bind::Text(phone_id.clone()))
        ));
    }
    if let Some(call_sid) = &filter.call_sid {
        // Only the call_events arm is left (EventFilter::admits).
        conditions.push(format!(
            "call_sid = {}",
            placeholder(Bind::Text(call_sid.clone()))
        ));
    }
    if let Some(event_id) = &filter.event_id {
        conditions.push(format!(
            "event_id = {}",
            placeholder(Bind::Text(event_id.clone()))
        ));
    }
    if let Some(since) = filter.since {
        conditions.push(format!("received_at >= {}", placeholder(Bind::Int(since))));
    }
    if let Some(until) = filter.until {
        conditions.push(format!("received_at < {}", placeholder(Bind::Int(until))));
    }
    if let Some(before) = before {
        let received_at = placeholder(Bind::Int(before.updated_at));
        let event_id = placeholder(Bind::Text(before.key.clone()));
        conditions.push(format!("(received_at, event_id) < ({received_at}, {event_id})"));
    }
    let limit = placeholder(Bind::Int(i64::from(limit.max(1)) + 1));
    let filter_sql = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let arms: Vec<String> = SubjectKind::ALL
        .into_iter()
        .filter(|kind| filter.admits(*kind))
        .map(|kind| {
            let (table, columns) = event_arm(kind);
            format!(
                "SELECT * FROM (SELECT event_id, '{}' AS subject_kind, {columns} FROM {table}{filter_sql} \
                 ORDER BY received_at DESC, event_id DESC LIMIT {limit}) AS {table}_page",
                kind.as_str()
            )
        })
        .collect();
    if arms.is_empty() {
        return None;
    }
    let sql = format!(
        "{} ORDER BY received_at DESC, event_id DESC LIMIT {limit}",
        arms.join(" UNION ALL ")
    );
    Some((sql, binds))
}

fn event_from_row(row: &AnyRow) -> Result<EventRow, sqlx::Error> {
    let subject_kind: String = row.try_get("subject_kind")?;
    let subject_kind = SubjectKind::ALL
        .into_iter()
        .find(|kind| kind.as_str() == subject_kind)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown subject_kind {subject_kind:?}").into()))?;
    Ok(EventRow {
        event_id: row.try_get("event_id")?,
        subject_kind,
        kind: row.try_get("kind")?,
        phone_id: row.try_get("phone_id")?,
        subject: row.try_get("subject")?,
        status: row.try_get("status")?,
        occurred_at: row.try_get("occurred_at")?,
        received_at: row.try_get("received_at")?,
    })
}

/// One page of the event search ([`events_query`]), at most `limit` rows (one more is read to
/// learn whether another page follows).
pub(super) async fn events(
    pool: &AnyPool,
    filter: &EventFilter,
    before: Option<&Cursor>,
    limit: u32,
) -> Result<Page<EventRow>, sqlx::Error> {
    let Some((sql, binds)) = events_query(filter, before, limit) else {
        return Ok(Page {
            items: Vec::new(),
            next_cursor: None,
        });
    };
    let rows = bound(&sql, binds).fetch_all(pool).await?;
    let items = rows.iter().map(event_from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(paged(items, limit, |event: &EventRow| Cursor {
        updated_at: event.received_at,
        key: event.event_id.clone(),
    }))
}

/// The first `limit` events of call `call_sid` in the order they happened: `occurred_at`, then
/// `received_at`, then event id (from `call_events_by_call`).
pub(super) async fn call_events(
    conn: &mut AnyConnection,
    call_sid: &str,
    limit: u32,
) -> Result<Vec<CallEventRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT event_id, kind, status, occurred_at, received_at FROM call_events WHERE call_sid = $1 \
         ORDER BY occurred_at, received_at, event_id LIMIT $2",
    )
    .bind(call_sid)
    .bind(i64::from(limit))
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(CallEventRow {
                event_id: row.try_get("event_id")?,
                kind: row.try_get("kind")?,
                status: row.try_get("status")?,
                occurred_at: row.try_get("occurred_at")?,
                received_at: row.try_get("received_at")?,
            })
        })
        .collect()
}

/// Every stored offset of `group`, by `(topic, partition)`.
pub(super) async fn offsets(pool: &AnyPool, group: &str) -> Result<HashMap<(String, i32), i64>, sqlx::Error> {
    let rows =
        sqlx::query(r#"SELECT topic, "partition", next_offset FROM sink_offsets WHERE consumer_group = $1"#)
            .bind(group)
            .fetch_all(pool)
            .await?;
    rows.iter()
        .map(|row| {
            Ok((
                (row.try_get("topic")?, row.try_get("partition")?),
                row.try_get("next_offset")?,
            ))
        })
        .collect()
}

pub(super) async fn counts(pool: &AnyPool) -> Result<Counts, sqlx::Error> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM calls) AS calls, (SELECT COUNT(*) FROM call_events) AS call_events, \
         (SELECT COUNT(*) FROM messages) AS messages, (SELECT COUNT(*) FROM payments) AS payments, \
         (SELECT COUNT(*) FROM bookings) AS bookings",
    )
    .fetch_one(pool)
    .await?;
    let count = |name: &str| row.try_get::<i64, _>(name).map(|n| n.max(0) as u64);
    Ok(Counts {
        calls: count("calls")?,
        call_events: count("call_events")?,
        messages: count("messages")?,
        payments: count("payments")?,
        bookings: count("bookings")?,
    })
}

/// One page of delivery attempts, newest `attempted_at` first (ties: greatest attempt id first),
/// from `action_attempts_by_action`, `_by_event` or `_by_time` (migration `0003`).
pub(super) async fn attempts(
    pool: &AnyPool,
    filter: &AttemptFilter,
    before: Option<&Cursor>,
    limit: u32,
) -> Result<Page<ActionAttempt>, sqlx::Error> {
    let mut conditions = Vec::new();
    let mut binds = Vec::new();
    for (column, value) in [("action", &filter.action), ("event_id", &filter.event_id)] {
        if let Some(value) = value {
            binds.push(Bind::Text(value.clone()));
            conditions.push(format!("{column} = ${}", binds.len()));
        }
    }
    if let Some(cursor) = before {
        binds.push(Bind::Int(cursor.updated_at));
        let at = binds.len();
        binds.push(Bind::Text(cursor.key.clone()));
        let key = binds.len();
        conditions.push(format!(
            "(attempted_at < ${at} OR (attempted_at = ${at} AND attempt_id < ${key}))"
        ));
    }
    binds.push(Bind::Int(i64::from(limit.max(1)) + 1));
    let mut sql = String::from(
        "SELECT attempt_id, action, event_id, event_type, attempt, outcome, status_code, reason, routed_to, \
         latency_ms, attempted_at FROM action_attempts",
    );
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(&format!(
        " ORDER BY attempted_at DESC, attempt_id DESC LIMIT ${}",
        binds.len()
    ));
    let rows = bound(&sql, binds).fetch_all(pool).await?;
    let items = rows
        .iter()
        .map(|row| {
            Ok(ActionAttempt {
                attempt_id: row.try_get("attempt_id")?,
                action: row.try_get("action")?,
                event_id: row.try_get("event_id")?,
                event_type: row.try_get("event_type")?,
                attempt: row.try_get("attempt")?,
                outcome: row.try_get("outcome")?,
                status_code: row.try_get("status_code")?,
                reason: row.try_get("reason")?,
                routed_to: row.try_get("routed_to")?,
                latency_ms: row.try_get("latency_ms")?,
                attempted_at: row.try_get("attempted_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(paged(items, limit, |attempt: &ActionAttempt| Cursor {
        updated_at: attempt.attempted_at,
        key: attempt.attempt_id.clone(),
    }))
}
