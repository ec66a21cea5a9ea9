//! The columns of each entity table, row decoding, and the read queries (also used inside the
//! write transaction to load the rows a batch folds into).

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};

use super::{BookingRow, CallRow, Counts, Cursor, MessageRow, Page};

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
    let limit = limit.max(1);
    let rows = query.bind(i64::from(limit) + 1).fetch_all(pool).await?;
    let mut items = rows.iter().map(listing.decode).collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(listing.cursor)
    } else {
        None
    };
    Ok(Page { items, next_cursor })
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
