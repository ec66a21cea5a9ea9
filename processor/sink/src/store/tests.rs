//! The store against real SQLite and PostgreSQL: every body runs once per backend.

use std::collections::HashMap;

use switchboard_schemas::domain::CallEvent;
use switchboard_schemas::topics;

use super::testing::{TestDb, booking, call_recording, call_status, message, offset, payment, per_backend};
use super::*;
use switchboard_schemas::call_state;

const PHONE: &str = "+15550001111";
const T0: i64 = 1_767_225_600_000;
const GROUP: &str = "switchboard-sink";

/// What `call_state::apply` folds `events` into, in order.
fn folded(events: &[CallEvent]) -> Option<CallState> {
    events.iter().fold(None, |state, event| {
        call_state::apply(state.as_ref(), event).or(state)
    })
}

/// A call's five status callbacks, `completed` 120 s after `ringing`.
fn lifecycle(call_sid: &str, at: i64) -> Vec<CallEvent> {
    ["queued", "initiated", "ringing", "in-progress", "completed"]
        .iter()
        .enumerate()
        .map(|(sequence, status)| {
            let at = at
                + if *status == "completed" {
                    120_000
                } else {
                    sequence as i64 * 1_000
                };
            call_status(
                &format!("{call_sid}-{status}"),
                PHONE,
                call_sid,
                status,
                sequence as i32,
                at,
            )
        })
        .collect()
}

fn calls(events: &[CallEvent]) -> Vec<DomainEvent> {
    events.iter().cloned().map(DomainEvent::Call).collect()
}

/// One event of each kind, and two call callbacks.
fn mixed_batch() -> Vec<DomainEvent> {
    vec![
        DomainEvent::Call(call_status("CA1-ringing", PHONE, "CA1", "ringing", 2, T0)),
        DomainEvent::Call(call_status(
            "CA1-completed",
            PHONE,
            "CA1",
            "completed",
            4,
            T0 + 120_000,
        )),
        DomainEvent::Message(message("SM1-sent", PHONE, "SM1", "sent", T0)),
        DomainEvent::Billing(payment("evt_1", PHONE, T0)),
        DomainEvent::Booking(booking(
            "bk-1",
            PHONE,
            "https://api.calendly.com/invitees/1",
            false,
            T0,
        )),
    ]
}

/// Every entity row, for before/after comparisons.
async fn snapshot(store: &Store) -> (Counts, Option<CallRow>, Page<MessageRow>, Page<BookingRow>) {
    (
        store.counts().await.unwrap(),
        store.call("CA1").await.unwrap(),
        store.phone_messages(PHONE, None, None, 50).await.unwrap(),
        store.phone_bookings(PHONE, None, None, 50).await.unwrap(),
    )
}

fn wanted(pairs: &[(&str, i32)]) -> Vec<(String, i32)> {
    pairs
        .iter()
        .map(|(topic, partition)| ((*topic).to_owned(), *partition))
        .collect()
}

async fn migrations_create_the_schema_and_reconnecting_changes_nothing(db: TestDb) {
    let again = Store::connect(&db.url).await.unwrap();
    assert_eq!(again.backend(), db.store.backend());
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&again.pool)
        .await
        .unwrap();
    assert_eq!(applied, MIGRATOR.iter().count() as i64);
    for table in [
        "sink_offsets",
        "calls",
        "call_events",
        "messages",
        "message_events",
        "payments",
        "bookings",
        "booking_events",
    ] {
        let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&again.pool)
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
        assert_eq!(rows, 0, "{table}");
    }
    again.close().await;
}

async fn a_batch_writes_rows_and_offsets(db: TestDb) {
    let store = &db.store;
    let offsets = [offset(topics::CALLS, 0, 10), offset(topics::MESSAGES, 3, 7)];
    let outcome = store.apply_batch(GROUP, &mixed_batch(), &offsets).await.unwrap();
    assert_eq!(
        outcome,
        BatchOutcome {
            applied: 5,
            duplicates: 0
        }
    );
    assert_eq!(
        store.counts().await.unwrap(),
        Counts {
            calls: 1,
            call_events: 2,
            messages: 1,
            payments: 1,
            bookings: 1
        }
    );
    let call = store.call("CA1").await.unwrap().unwrap();
    assert_eq!(
        (call.status.as_str(), call.duration_seconds),
        ("completed", Some(120))
    );
    assert_eq!(call.phone_id, PHONE);
    assert_eq!(call.from.as_deref(), Some("+15557770000"));
    assert_eq!(call.updated_at, T0 + 120_000);
    let stored = store
        .offsets(
            GROUP,
            &wanted(&[(topics::CALLS, 0), (topics::MESSAGES, 3), (topics::BOOKINGS, 0)]),
        )
        .await
        .unwrap();
    assert_eq!(
        stored,
        HashMap::from([
            ((topics::CALLS.to_owned(), 0), 10),
            ((topics::MESSAGES.to_owned(), 3), 7)
        ])
    );
    let (amount, currency): (i64, String) =
        sqlx::query_as("SELECT amount, currency FROM payments WHERE event_id = $1")
            .bind("evt_1")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    assert_eq!((amount, currency.as_str()), (4_900, "usd"));
}

async fn a_failing_batch_leaves_neither_rows_nor_offsets(db: TestDb) {
    let store = &db.store;
    store
        .apply_batch(GROUP, &mixed_batch(), &[offset(topics::CALLS, 0, 5)])
        .await
        .unwrap();
    let before = snapshot(store).await;

    // Rows that would be written, then an event the schema rejects (an empty event id).
    let mut poisoned = calls(&lifecycle("CA2", T0));
    poisoned.push(DomainEvent::Message(message(
        "SM2-sent", PHONE, "SM2", "sent", T0,
    )));
    poisoned.push(DomainEvent::Booking(booking(
        "",
        PHONE,
        "https://api.calendly.com/invitees/2",
        true,
        T0,
    )));
    let error = store
        .apply_batch(GROUP, &poisoned, &[offset(topics::CALLS, 0, 9)])
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Database(_)), "{error}");
    assert!(
        !error.is_transient(),
        "a constraint violation is not transient: {error}"
    );

    // Every event fine, but an offset the schema rejects: written last, it still undoes the rows.
    let good = calls(&lifecycle("CA3", T0));
    let error = store
        .apply_batch(
            GROUP,
            &good,
            &[offset(topics::CALLS, 0, 9), offset(topics::CALLS, 1, -1)],
        )
        .await
        .unwrap_err();
    assert!(!error.is_transient(), "{error}");

    assert_eq!(snapshot(store).await, before);
    assert_eq!(store.call("CA2").await.unwrap(), None);
    assert_eq!(store.call("CA3").await.unwrap(), None);
    let stored = store
        .offsets(GROUP, &wanted(&[(topics::CALLS, 0), (topics::CALLS, 1)]))
        .await
        .unwrap();
    assert_eq!(stored, HashMap::from([((topics::CALLS.to_owned(), 0), 5)]));

    // The store is still usable, and the same events without the poison go in.
    poisoned.pop();
    let outcome = store
        .apply_batch(GROUP, &poisoned, &[offset(topics::CALLS, 0, 9)])
        .await
        .unwrap();
    assert_eq!(
        outcome,
        BatchOutcome {
            applied: 6,
            duplicates: 0
        }
    );
    assert_eq!(store.call("CA2").await.unwrap().unwrap().status, "completed");
}

async fn the_same_batch_twice_changes_nothing_and_counts_duplicates(db: TestDb) {
    let store = &db.store;
    let mut batch = mixed_batch();
    batch.push(batch[0].clone()); // a duplicate inside the batch
    batch.push(DomainEvent::Message(message(
        "SM1-delivered",
        PHONE,
        "SM1",
        "delivered",
        T0 + 5,
    )));
    batch.push(DomainEvent::Booking(booking(
        "bk-2",
        PHONE,
        "https://api.calendly.com/invitees/1",
        true,
        T0 + 9,
    )));
    let offsets = [offset(topics::CALLS, 0, 3)];
    let first = store.apply_batch(GROUP, &batch, &offsets).await.unwrap();
    assert_eq!(
        first,
        BatchOutcome {
            applied: 7,
            duplicates: 1
        }
    );
    let after_first = snapshot(store).await;

    let second = store.apply_batch(GROUP, &batch, &offsets).await.unwrap();
    assert_eq!(
        second,
        BatchOutcome {
            applied: 0,
            duplicates: batch.len()
        }
    );
    assert_eq!(snapshot(store).await, after_first);
    let call_events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM call_events")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(call_events, 2);
}

async fn a_late_ringing_never_overwrites_completed(db: TestDb) {
    let store = &db.store;
    let completed = call_status("CA1-completed", PHONE, "CA1", "completed", 4, T0 + 120_000);
    let ringing = call_status("CA1-ringing", PHONE, "CA1", "ringing", 2, T0 + 5_000);
    let recording = call_recording("CA1-recording", PHONE, "CA1", T0 + 130_000);

    // Across batches…
    store
        .apply_batch(GROUP, &[DomainEvent::Call(completed.clone())], &[])
        .await
        .unwrap();
    store
        .apply_batch(GROUP, &[DomainEvent::Call(ringing.clone())], &[])
        .await
        .unwrap();
    store
        .apply_batch(GROUP, &[DomainEvent::Call(recording.clone())], &[])
        .await
        .unwrap();
    let row = store.call("CA1").await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.duration_seconds),
        ("completed", Some(120))
    );
    assert_eq!(row.ended_at, Some(T0 + 120_000));
    assert_eq!(row.recording_duration, Some(118));
    // …the stored row is exactly the processor's fold, whatever the order.
    assert_eq!(
        Some(row),
        folded(&[ringing.clone(), completed.clone(), recording.clone()])
    );

    // …and inside one batch.
    let mut late = vec![
        call_status("CA9-completed", PHONE, "CA9", "completed", 4, T0 + 120_000),
        call_status("CA9-in-progress", PHONE, "CA9", "in-progress", 3, T0 + 2_000),
        call_status("CA9-ringing", PHONE, "CA9", "ringing", 2, T0 + 1_000),
    ];
    store.apply_batch(GROUP, &calls(&late), &[]).await.unwrap();
    let row = store.call("CA9").await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.duration_seconds),
        ("completed", Some(120))
    );
    assert_eq!(row.started_at, Some(T0 + 2_000));
    late.reverse();
    assert_eq!(Some(row), folded(&late));
}

async fn messages_and_bookings_keep_their_final_state(db: TestDb) {
    let store = &db.store;
    let uri = "https://api.calendly.com/invitees/7";
    let batches = [
        vec![DomainEvent::Message(message(
            "m-delivered",
            PHONE,
            "SM7",
            "delivered",
            T0 + 3_000,
        ))],
        vec![DomainEvent::Message(message(
            "m-sent",
            PHONE,
            "SM7",
            "sent",
            T0 + 4_000,
        ))],
        vec![DomainEvent::Booking(booking(
            "b-canceled",
            PHONE,
            uri,
            true,
            T0 + 2_000,
        ))],
        vec![DomainEvent::Booking(booking(
            "b-created",
            PHONE,
            uri,
            false,
            T0 + 9_000,
        ))],
    ];
    for batch in &batches {
        store.apply_batch(GROUP, batch, &[]).await.unwrap();
    }
    let messages = store.phone_messages(PHONE, None, None, 10).await.unwrap().items;
    assert_eq!(messages.len(), 1);
    assert_eq!(
        (messages[0].status.as_str(), messages[0].last_event_id.as_str()),
        ("delivered", "m-delivered")
    );
    assert_eq!(messages[0].updated_at, T0 + 4_000);

    let bookings = store.phone_bookings(PHONE, None, None, 10).await.unwrap().items;
    assert_eq!(bookings.len(), 1);
    let booking = &bookings[0];
    assert!(booking.canceled);
    assert_eq!(booking.event_type, "invitee.canceled");
    assert_eq!(booking.cancel_reason.as_deref(), Some("conflict"));
    // The late created event still fills what the cancellation lacked.
    assert_eq!(booking.invitee_email.as_deref(), Some("ada@example.com"));
    assert_eq!(booking.updated_at, T0 + 9_000);

    let failed = DomainEvent::Message(message("m2-undelivered", PHONE, "SM8", "undelivered", T0));
    let queued = DomainEvent::Message(message("m2-queued", PHONE, "SM8", "queued", T0 + 1));
    store.apply_batch(GROUP, &[failed, queued], &[]).await.unwrap();
    let page = store.phone_messages(PHONE, None, None, 10).await.unwrap();
    let sm8 = page.items.iter().find(|m| m.message_sid == "SM8").unwrap();
    assert_eq!(
        (sm8.status.as_str(), sm8.error_code.as_deref()),
        ("undelivered", Some("30003"))
    );
}

async fn offsets_round_trip_per_group(db: TestDb) {
    let store = &db.store;
    assert!(
        store
            .offsets(GROUP, &wanted(&[(topics::CALLS, 0)]))
            .await
            .unwrap()
            .is_empty()
    );
    store
        .apply_batch(
            GROUP,
            &[],
            &[offset(topics::CALLS, 0, 100), offset(topics::BILLING, 5, 1)],
        )
        .await
        .unwrap();
    store
        .apply_batch("other-group", &[], &[offset(topics::CALLS, 0, 7)])
        .await
        .unwrap();
    store
        .apply_batch(GROUP, &[], &[offset(topics::CALLS, 0, 150)])
        .await
        .unwrap();
    let all = wanted(&[(topics::CALLS, 0), (topics::BILLING, 5), (topics::BILLING, 4)]);
    assert_eq!(
        store.offsets(GROUP, &all).await.unwrap(),
        HashMap::from([
            ((topics::CALLS.to_owned(), 0), 150),
            ((topics::BILLING.to_owned(), 5), 1)
        ])
    );
    assert_eq!(
        store.offsets("other-group", &all).await.unwrap(),
        HashMap::from([((topics::CALLS.to_owned(), 0), 7)])
    );
    // Overwritten, not maximized: a recreated topic starts again at 0.
    store
        .apply_batch(GROUP, &[], &[offset(topics::CALLS, 0, 0)])
        .await
        .unwrap();
    assert_eq!(
        store.offsets(GROUP, &all).await.unwrap()[&(topics::CALLS.to_owned(), 0)],
        0
    );
}

/// Concurrent batches (two sink instances around a rebalance) that fold into the same calls lose
/// no update: every row ends as the fold of all events.
async fn concurrent_batches_on_the_same_calls_lose_no_update(db: TestDb) {
    let sids = ["CA1", "CA2", "CA3"];
    let mut events: Vec<CallEvent> = Vec::new();
    for (i, sid) in sids.iter().enumerate() {
        events.extend(lifecycle(sid, T0 + i as i64));
        events.push(call_recording(
            &format!("{sid}-recording"),
            PHONE,
            sid,
            T0 + 200_000,
        ));
    }
    let batches: Vec<Vec<DomainEvent>> = (0..6)
        .map(|n| {
            events
                .iter()
                .skip(n)
                .step_by(6)
                .cloned()
                .map(DomainEvent::Call)
                .collect()
        })
        .collect();
    let tasks: Vec<_> = batches
        .into_iter()
        .enumerate()
        .map(|(n, batch)| {
            let store = db.store.clone();
            tokio::spawn(async move {
                let offsets = [offset(topics::CALLS, n as i32, 1)];
                loop {
                    match store.apply_batch(GROUP, &batch, &offsets).await {
                        Ok(outcome) => break outcome,
                        Err(error) if error.is_transient() => continue,
                        Err(error) => panic!("batch {n}: {error}"),
                    }
                }
            })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        applied += task.await.unwrap().applied;
    }
    assert_eq!(applied, events.len());
    for sid in sids {
        let own: Vec<CallEvent> = events.iter().filter(|e| e.call_sid == sid).cloned().collect();
        let row = db.store.call(sid).await.unwrap();
        assert_eq!(row, folded(&own), "{sid}");
        assert_eq!(row.unwrap().recording_duration, Some(118), "{sid}");
    }
}

async fn listings_page_newest_first_with_ties_broken_by_key(db: TestDb) {
    let store = &db.store;
    // Five calls updated at the same instant, two later ones, one on another phone.
    let mut events = Vec::new();
    for n in 0..5 {
        events.push(call_status(
            &format!("tie-{n}"),
            PHONE,
            &format!("CA-tie-{n}"),
            "ringing",
            2,
            T0,
        ));
    }
    events.push(call_status("late-1", PHONE, "CA-late-1", "ringing", 2, T0 + 10));
    events.push(call_status("late-2", PHONE, "CA-late-2", "ringing", 2, T0 + 20));
    events.push(call_status(
        "other",
        "+15550002222",
        "CA-other",
        "ringing",
        2,
        T0 + 30,
    ));
    store.apply_batch(GROUP, &calls(&events), &[]).await.unwrap();

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.phone_calls(PHONE, None, cursor.as_ref(), 3).await.unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|call| call.call_sid.clone()));
        match page.next_cursor {
            Some(next) => cursor = Some(Cursor::decode(&next.encode()).unwrap()),
            None => break,
        }
    }
    let expected = [
        "CA-late-2",
        "CA-late-1",
        "CA-tie-4",
        "CA-tie-3",
        "CA-tie-2",
        "CA-tie-1",
        "CA-tie-0",
    ];
    assert_eq!(seen, expected);

    let since = store.phone_calls(PHONE, Some(T0 + 10), None, 50).await.unwrap();
    let sids: Vec<_> = since.items.iter().map(|call| call.call_sid.as_str()).collect();
    assert_eq!((sids, since.next_cursor), (vec!["CA-late-2", "CA-late-1"], None));
}

per_backend!(
    migrations_create_the_schema_and_reconnecting_changes_nothing,
    a_batch_writes_rows_and_offsets,
    a_failing_batch_leaves_neither_rows_nor_offsets,
    the_same_batch_twice_changes_nothing_and_counts_duplicates,
    a_late_ringing_never_overwrites_completed,
    messages_and_bookings_keep_their_final_state,
    offsets_round_trip_per_group,
    concurrent_batches_on_the_same_calls_lose_no_update,
    listings_page_newest_first_with_ties_broken_by_key,
);

#[tokio::test]
async fn errors_are_classified_transient_or_not() {
    assert!(matches!(
        Store::connect("mysql://localhost/x").await,
        Err(StoreError::UnsupportedUrl)
    ));
    assert!(!StoreError::UnsupportedUrl.is_transient());
    // (Not through Store::connect, whose pool retries until its 10 s acquire timeout.)
    let refused = <sqlx::PgConnection as sqlx::Connection>::connect("postgres://postgres@127.0.0.1:1/none")
        .await
        .unwrap_err();
    let refused = StoreError::from(refused);
    assert!(refused.is_transient(), "{refused:?}");
    assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_transient());
    assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_transient());
}

#[test]
fn cursors_round_trip_and_reject_garbage() {
    let cursor = Cursor {
        updated_at: T0,
        key: "https://api.calendly.com/invitees/a.b?c=d".into(),
    };
    assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
    for garbage in ["", "!!", "bm90LWEtY3Vyc29y", "MTIz"] {
        assert_eq!(Cursor::decode(garbage), None, "{garbage}");
    }
}

#[test]
fn sqlite_urls_create_the_file_unless_a_mode_is_chosen() {
    assert_eq!(sqlite_url("sqlite://sink.db"), "sqlite://sink.db?mode=rwc");
    assert_eq!(
        sqlite_url("sqlite://sink.db?cache=shared"),
        "sqlite://sink.db?cache=shared&mode=rwc"
    );
    assert_eq!(sqlite_url("sqlite://sink.db?mode=ro"), "sqlite://sink.db?mode=ro");
}
