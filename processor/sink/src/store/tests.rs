//! The store against real SQLite and PostgreSQL: every body runs once per backend.

use std::collections::HashMap;

use switchboard_schemas::domain::CallEvent;
use switchboard_schemas::{ActionAttempt, Source, topics};

use super::testing::{
    TestDb, attempt, booking, call_recording, call_status, message, offset, payment, per_backend,
};
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

const OTHER: &str = "+15550002222";

/// Events of all four kinds on PHONE and OTHER, received over 10 s. Call CA1's `in-progress`
/// arrives last but happened second; `e-tie-a` (a payment) and `e-tie-b` (a message) are received
/// at the same instant; `e-pay-bare` has no `created`.
fn search_events() -> Vec<DomainEvent> {
    let received = |event: CallEvent, received_at: i64| CallEvent { received_at, ..event };
    let mut bare = payment("e-pay-bare", OTHER, T0 + 6_500);
    bare.created = None;
    bare.status = None;
    vec![
        DomainEvent::Call(call_status("e-ca1-ringing", PHONE, "CA1", "ringing", 2, T0)),
        DomainEvent::Call(received(
            call_status("e-ca1-progress", PHONE, "CA1", "in-progress", 3, T0 + 1_000),
            T0 + 10_000,
        )),
        DomainEvent::Call(call_status(
            "e-ca1-done",
            PHONE,
            "CA1",
            "completed",
            4,
            T0 + 2_000,
        )),
        DomainEvent::Call(call_recording("e-ca1-rec", PHONE, "CA1", T0 + 3_000)),
        DomainEvent::Call(call_status(
            "e-ca2-ringing",
            OTHER,
            "CA2",
            "ringing",
            2,
            T0 + 1_500,
        )),
        DomainEvent::Message(message("e-sm1-sent", PHONE, "SM1", "sent", T0 + 100)),
        DomainEvent::Message(message("e-sm1-failed", PHONE, "SM1", "failed", T0 + 4_000)),
        DomainEvent::Message(message("e-sm2-sent", OTHER, "SM2", "sent", T0 + 4_500)),
        DomainEvent::Billing(payment("e-pay-1", PHONE, T0 + 5_000)),
        DomainEvent::Billing(bare),
        DomainEvent::Booking(booking(
            "e-bk-1",
            PHONE,
            "https://api.calendly.com/invitees/1",
            false,
            T0 + 7_000,
        )),
        DomainEvent::Booking(booking(
            "e-bk-2",
            OTHER,
            "https://api.calendly.com/invitees/2",
            true,
            T0 + 8_000,
        )),
        DomainEvent::Billing(payment("e-tie-a", OTHER, T0 + 9_000)),
        DomainEvent::Message(message("e-tie-b", PHONE, "SM3", "delivered", T0 + 9_000)),
    ]
}

/// What the search must list for `event`, spelled out per kind.
fn expected_row(event: &DomainEvent) -> EventRow {
    match event {
        DomainEvent::Call(e) => EventRow {
            event_id: e.event_id.clone(),
            subject_kind: SubjectKind::Call,
            kind: e.kind.clone(),
            phone_id: e.phone_id.clone(),
            subject: e.call_sid.clone(),
            status: e.call_status.clone().or(e.recording_status.clone()),
            occurred_at: Some(e.occurred_at),
            received_at: e.received_at,
        },
        DomainEvent::Message(e) => EventRow {
            event_id: e.event_id.clone(),
            subject_kind: SubjectKind::Message,
            kind: "message.status".into(),
            phone_id: e.phone_id.clone(),
            subject: e.message_sid.clone(),
            status: Some(e.message_status.clone()),
            occurred_at: None,
            received_at: e.received_at,
        },
        DomainEvent::Billing(e) => EventRow {
            event_id: e.event_id.clone(),
            subject_kind: SubjectKind::Payment,
            kind: e.event_type.clone(),
            phone_id: e.phone_id.clone(),
            subject: e.object_id.clone(),
            status: e.status.clone(),
            occurred_at: e.created,
            received_at: e.received_at,
        },
        DomainEvent::Booking(e) => EventRow {
            event_id: e.event_id.clone(),
            subject_kind: SubjectKind::Booking,
            kind: e.event_type.clone(),
            phone_id: e.phone_id.clone(),
            subject: e.invitee_uri.clone(),
            status: None,
            occurred_at: None,
            received_at: e.received_at,
        },
        DomainEvent::Generic(_) => unreachable!("the sink stores no generic events"),
    }
}

/// The rows `filter` admits, newest `received_at` first, ties by greatest event id: the model
/// the store's search is checked against.
fn expected_rows(filter: &EventFilter) -> Vec<EventRow> {
    let mut rows: Vec<EventRow> = search_events()
        .iter()
        .map(|event| (event, expected_row(event)))
        .filter(|(event, row)| {
            filter
                .phone_id
                .as_ref()
                .is_none_or(|phone| *phone == row.phone_id)
                && filter
                    .call_sid
                    .as_ref()
                    .is_none_or(|sid| matches!(event, DomainEvent::Call(call) if call.call_sid == *sid))
                && filter.event_id.as_ref().is_none_or(|id| *id == row.event_id)
                && filter
                    .source
                    .is_none_or(|source| row.subject_kind.source() == source)
                && filter.since.is_none_or(|since| row.received_at >= since)
                && filter.until.is_none_or(|until| row.received_at < until)
        })
        .map(|(_, row)| row)
        .collect();
    rows.sort_by(|a, b| (b.received_at, &b.event_id).cmp(&(a.received_at, &a.event_id)));
    rows
}

/// Every page of the search for `filter`, `limit` rows at a time, through encoded cursors.
async fn all_pages(store: &Store, filter: &EventFilter, limit: u32) -> Vec<EventRow> {
    let mut rows = Vec::new();
    let mut cursor: Option<Cursor> = None;
    for _ in 0..100 {
        let page = store.events(filter, cursor.as_ref(), limit).await.unwrap();
        assert!(page.items.len() <= limit as usize, "{filter:?}");
        rows.extend(page.items);
        match page.next_cursor {
            Some(next) => cursor = Some(Cursor::decode(&next.encode()).unwrap()),
            None => return rows,
        }
    }
    panic!("paging {filter:?} did not end");
}

fn ids(rows: &[EventRow]) -> Vec<&str> {
    rows.iter().map(|row| row.event_id.as_str()).collect()
}

/// The filters the search is checked with: each one alone, and combinations.
fn search_filters() -> Vec<EventFilter> {
    let none = EventFilter::default;
    let phone = || Some(PHONE.to_owned());
    vec![
        none(),
        EventFilter {
            phone_id: phone(),
            ..none()
        },
        EventFilter {
            phone_id: Some(OTHER.into()),
            ..none()
        },
        EventFilter {
            phone_id: Some("+19999999999".into()),
            ..none()
        },
        EventFilter {
            call_sid: Some("CA1".into()),
            ..none()
        },
        EventFilter {
            call_sid: Some("CA1".into()),
            phone_id: Some(OTHER.into()),
            ..none()
        },
        EventFilter {
            call_sid: Some("SM1".into()),
            ..none()
        },
        EventFilter {
            event_id: Some("e-bk-2".into()),
            ..none()
        },
        EventFilter {
            event_id: Some("e-sm1-sent".into()),
            source: Some(Source::Stripe),
            ..none()
        },
        EventFilter {
            source: Some(Source::Twilio),
            ..none()
        },
        EventFilter {
            source: Some(Source::Stripe),
            ..none()
        },
        EventFilter {
            source: Some(Source::Calendly),
            ..none()
        },
        EventFilter {
            source: Some(Source::Generic),
            ..none()
        },
        EventFilter {
            since: Some(T0 + 4_000),
            ..none()
        },
        EventFilter {
            until: Some(T0 + 4_000),
            ..none()
        },
        EventFilter {
            since: Some(T0 + 1_550),
            until: Some(T0 + 9_000),
            ..none()
        },
        EventFilter {
            phone_id: phone(),
            source: Some(Source::Twilio),
            since: Some(T0 + 100),
            ..none()
        },
        EventFilter {
            call_sid: Some("CA1".into()),
            until: Some(T0 + 5_000),
            ..none()
        },
    ]
}

async fn the_event_search_lists_every_kind_newest_first(db: TestDb) {
    let store = &db.store;
    store.apply_batch(GROUP, &search_events(), &[]).await.unwrap();

    let all = store.events(&EventFilter::default(), None, 200).await.unwrap();
    assert_eq!(all.next_cursor, None);
    assert_eq!(
        ids(&all.items),
        [
            "e-ca1-progress",
            "e-tie-b",
            "e-tie-a",
            "e-bk-2",
            "e-bk-1",
            "e-pay-bare",
            "e-pay-1",
            "e-sm2-sent",
            "e-sm1-failed",
            "e-ca1-rec",
            "e-ca1-done",
            "e-ca2-ringing",
            "e-sm1-sent",
            "e-ca1-ringing",
        ]
    );
    assert_eq!(all.items, expected_rows(&EventFilter::default()));

    // Each kind's columns, spelled out once.
    let by_id = |id: &str| all.items.iter().find(|row| row.event_id == id).unwrap().clone();
    assert_eq!(
        by_id("e-ca1-rec"),
        EventRow {
            event_id: "e-ca1-rec".into(),
            subject_kind: SubjectKind::Call,
            kind: "recording".into(),
            phone_id: PHONE.into(),
            subject: "CA1".into(),
            status: Some("completed".into()),
            occurred_at: Some(T0 + 3_000),
            received_at: T0 + 3_050,
        }
    );
    assert_eq!(
        by_id("e-sm1-failed"),
        EventRow {
            event_id: "e-sm1-failed".into(),
            subject_kind: SubjectKind::Message,
            kind: "message.status".into(),
            phone_id: PHONE.into(),
            subject: "SM1".into(),
            status: Some("failed".into()),
            occurred_at: None,
            received_at: T0 + 4_000,
        }
    );
    assert_eq!(
        by_id("e-pay-1"),
        EventRow {
            event_id: "e-pay-1".into(),
            subject_kind: SubjectKind::Payment,
            kind: "invoice.paid".into(),
            phone_id: PHONE.into(),
            subject: "in_e-pay-1".into(),
            status: Some("paid".into()),
            occurred_at: Some(T0 + 4_000),
            received_at: T0 + 5_000,
        }
    );
    assert_eq!(
        (by_id("e-pay-bare").occurred_at, by_id("e-pay-bare").status),
        (None, None)
    );
    assert_eq!(
        by_id("e-bk-2"),
        EventRow {
            event_id: "e-bk-2".into(),
            subject_kind: SubjectKind::Booking,
            kind: "invitee.canceled".into(),
            phone_id: OTHER.into(),
            subject: "https://api.calendly.com/invitees/2".into(),
            status: None,
            occurred_at: None,
            received_at: T0 + 8_000,
        }
    );
}

async fn every_event_filter_selects_exactly_its_events(db: TestDb) {
    let store = &db.store;
    store.apply_batch(GROUP, &search_events(), &[]).await.unwrap();
    for filter in search_filters() {
        let page = store.events(&filter, None, 200).await.unwrap();
        assert_eq!(page.items, expected_rows(&filter), "{filter:?}");
        assert_eq!(page.next_cursor, None, "{filter:?}");
    }
    // The model itself is not vacuous: spelled out for a few.
    let listed = async |filter: EventFilter| {
        let page = store.events(&filter, None, 200).await.unwrap();
        ids(&page.items)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed(EventFilter {
            call_sid: Some("CA1".into()),
            ..EventFilter::default()
        })
        .await,
        ["e-ca1-progress", "e-ca1-rec", "e-ca1-done", "e-ca1-ringing"]
    );
    assert_eq!(
        listed(EventFilter {
            phone_id: Some(OTHER.into()),
            ..EventFilter::default()
        })
        .await,
        ["e-tie-a", "e-bk-2", "e-pay-bare", "e-sm2-sent", "e-ca2-ringing"]
    );
    assert_eq!(
        listed(EventFilter {
            source: Some(Source::Stripe),
            ..EventFilter::default()
        })
        .await,
        ["e-tie-a", "e-pay-bare", "e-pay-1"]
    );
    assert_eq!(
        listed(EventFilter {
            source: Some(Source::Calendly),
            ..EventFilter::default()
        })
        .await,
        ["e-bk-2", "e-bk-1"]
    );
    assert_eq!(
        listed(EventFilter {
            phone_id: Some(PHONE.into()),
            source: Some(Source::Twilio),
            since: Some(T0 + 3_050),
            until: Some(T0 + 9_001),
            ..EventFilter::default()
        })
        .await,
        ["e-tie-b", "e-sm1-failed", "e-ca1-rec"]
    );
    assert_eq!(
        listed(EventFilter {
            event_id: Some("e-sm2-sent".into()),
            ..EventFilter::default()
        })
        .await,
        ["e-sm2-sent"]
    );
    assert!(
        listed(EventFilter {
            source: Some(Source::Generic),
            ..EventFilter::default()
        })
        .await
        .is_empty()
    );
}

async fn event_pages_cover_every_row_exactly_once(db: TestDb) {
    let store = &db.store;
    store.apply_batch(GROUP, &search_events(), &[]).await.unwrap();
    for filter in search_filters() {
        let expected = expected_rows(&filter);
        for limit in [1, 2, 3, 5, 13, 14, 15] {
            assert_eq!(
                all_pages(store, &filter, limit).await,
                expected,
                "{filter:?} limit {limit}"
            );
        }
    }
    // A full last page still says whether one follows: 14 rows in pages of 7.
    let first = store.events(&EventFilter::default(), None, 7).await.unwrap();
    let next = first.next_cursor.expect("a second page");
    assert_eq!((next.updated_at, next.key.as_str()), (T0 + 5_000, "e-pay-1"));
    let second = store
        .events(&EventFilter::default(), Some(&next), 7)
        .await
        .unwrap();
    assert_eq!((second.items.len(), second.next_cursor), (7, None));
    // The tie at T0 + 9 s is split across pages without losing either row.
    let first = store.events(&EventFilter::default(), None, 2).await.unwrap();
    assert_eq!(ids(&first.items), ["e-ca1-progress", "e-tie-b"]);
    let rest = store
        .events(&EventFilter::default(), first.next_cursor.as_ref(), 1)
        .await
        .unwrap();
    assert_eq!(ids(&rest.items), ["e-tie-a"]);
}

async fn a_call_history_lists_its_events_as_they_happened(db: TestDb) {
    let store = &db.store;
    let mut events = search_events();
    // Same occurred_at as the ringing: received_at decides, then the event id.
    events.push(DomainEvent::Call(CallEvent {
        received_at: T0 + 20,
        ..call_status("e-ca1-early", PHONE, "CA1", "initiated", 1, T0)
    }));
    events.push(DomainEvent::Call(CallEvent {
        received_at: T0 + 20,
        ..call_status("e-ca1-dup", PHONE, "CA1", "initiated", 1, T0)
    }));
    store.apply_batch(GROUP, &events, &[]).await.unwrap();

    let (call, history) = store.call_history("CA1", 1_000).await.unwrap().unwrap();
    assert_eq!(Some(&call), store.call("CA1").await.unwrap().as_ref());
    assert_eq!(call.status, "completed");
    let order: Vec<_> = history
        .iter()
        .map(|event| (event.event_id.as_str(), event.occurred_at, event.received_at))
        .collect();
    assert_eq!(
        order,
        [
            ("e-ca1-dup", T0, T0 + 20),
            ("e-ca1-early", T0, T0 + 20),
            ("e-ca1-ringing", T0, T0 + 50),
            ("e-ca1-progress", T0 + 1_000, T0 + 10_000),
            ("e-ca1-done", T0 + 2_000, T0 + 2_050),
            ("e-ca1-rec", T0 + 3_000, T0 + 3_050),
        ]
    );
    assert_eq!(
        history[5],
        CallEventRow {
            event_id: "e-ca1-rec".into(),
            kind: "recording".into(),
            status: Some("completed".into()),
            occurred_at: T0 + 3_000,
            received_at: T0 + 3_050,
        }
    );
    assert_eq!(history[3].status.as_deref(), Some("in-progress"));

    let (_, first) = store.call_history("CA1", 2).await.unwrap().unwrap();
    assert_eq!(first, history[..2]);
    let (other, own) = store.call_history("CA2", 1_000).await.unwrap().unwrap();
    assert_eq!(
        (other.phone_id.as_str(), ids_of(&own)),
        (OTHER, vec!["e-ca2-ringing"])
    );
    assert_eq!(store.call_history("CA-missing", 1_000).await.unwrap(), None);
    // A message sid is not a call.
    assert_eq!(store.call_history("SM1", 1_000).await.unwrap(), None);
}

fn ids_of(events: &[CallEventRow]) -> Vec<&str> {
    events.iter().map(|event| event.event_id.as_str()).collect()
}

/// The indexes migration 0002 adds.
const SEARCH_INDEXES: [&str; 8] = [
    "call_events_by_phone",
    "call_events_by_received",
    "message_events_by_phone",
    "message_events_by_received",
    "payments_by_phone",
    "payments_by_received",
    "booking_events_by_phone",
    "booking_events_by_received",
];

async fn index_names(store: &Store) -> Vec<String> {
    let sql = match store.backend() {
        Backend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name",
        Backend::Postgres => {
            "SELECT CAST(indexname AS TEXT) FROM pg_indexes WHERE schemaname = current_schema() ORDER BY 1"
        }
    };
    sqlx::query_scalar(sql).fetch_all(&store.pool).await.unwrap()
}

/// A database that 0001 made and that holds rows gets 0002 on the next connect, rows intact. (The
/// database is put back into its 0001 state: 0002's indexes dropped, 0001's `payments_by_phone`
/// restored, 0002's record removed.)
async fn migration_0002_applies_to_a_database_0001_made(db: TestDb) {
    let store = &db.store;
    store.apply_batch(GROUP, &search_events(), &[]).await.unwrap();
    let names = index_names(store).await;
    for index in SEARCH_INDEXES {
        assert!(
            names.iter().any(|name| name == index),
            "{index} missing: {names:?}"
        );
    }

    for index in SEARCH_INDEXES {
        sqlx::query(&format!("DROP INDEX {index}"))
            .execute(&store.pool)
            .await
            .unwrap();
    }
    sqlx::query("CREATE INDEX payments_by_phone ON payments (phone_id, received_at DESC)")
        .execute(&store.pool)
        .await
        .unwrap();
    let removed = sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 2")
        .execute(&store.pool)
        .await
        .unwrap();
    assert_eq!(removed.rows_affected(), 1);
    let names = index_names(store).await;
    assert!(
        !names.iter().any(|name| name == "payments_by_received"),
        "{names:?}"
    );

    let again = Store::connect(&db.url).await.unwrap();
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&again.pool)
        .await
        .unwrap();
    assert_eq!(versions, [1, 2, 3]);
    let names = index_names(&again).await;
    for index in SEARCH_INDEXES {
        assert!(
            names.iter().any(|name| name == index),
            "{index} not recreated: {names:?}"
        );
    }
    let all = again.events(&EventFilter::default(), None, 200).await.unwrap();
    assert_eq!(all.items, expected_rows(&EventFilter::default()));
    again.close().await;
}

/// The stored next offset of partition 0 of `switchboard.actions.attempts`.
async fn attempts_offset(store: &Store) -> Option<i64> {
    let partition = (topics::ACTIONS_ATTEMPTS.to_owned(), 0);
    store
        .offsets(GROUP, std::slice::from_ref(&partition))
        .await
        .unwrap()
        .get(&partition)
        .copied()
}

async fn attempts_are_stored_once_with_their_offsets_and_listed_newest_first(db: TestDb) {
    let store = &db.store;
    let attempts = [
        attempt("crm", "ev-1", 1, 1, "transient", 1_000),
        attempt("crm", "ev-1", 7, 2, "delivered", 6_000),
        attempt("sms", "ev-1", 1, 1, "delivered", 1_500),
        attempt("crm", "ev-2", 2, 1, "delivered", 2_000),
    ];
    let offsets = [offset(topics::ACTIONS_ATTEMPTS, 0, 4)];
    let outcome = store
        .apply_batch_with_attempts(GROUP, &[], &attempts, &offsets)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        BatchOutcome {
            applied: 4,
            duplicates: 0
        }
    );
    // Read again after a crash before the offsets moved: nothing doubles.
    let again = store
        .apply_batch_with_attempts(GROUP, &[], &attempts[..2], &offsets)
        .await
        .unwrap();
    assert_eq!(
        again,
        BatchOutcome {
            applied: 0,
            duplicates: 2
        }
    );
    assert_eq!(attempts_offset(store).await, Some(4));

    let ids = |page: &Page<ActionAttempt>| -> Vec<String> {
        page.items.iter().map(|a| a.attempt_id.clone()).collect()
    };
    let all = store
        .attempts(&AttemptFilter::default(), None, 200)
        .await
        .unwrap();
    assert_eq!(
        ids(&all),
        [&attempts[1], &attempts[3], &attempts[2], &attempts[0]].map(|a| a.attempt_id.clone())
    );
    assert_eq!(all.items[3], attempts[0], "every column round-trips");
    let crm = AttemptFilter {
        action: Some("crm".into()),
        ..AttemptFilter::default()
    };
    let first = store.attempts(&crm, None, 2).await.unwrap();
    assert_eq!(
        ids(&first),
        [&attempts[1], &attempts[3]].map(|a| a.attempt_id.clone())
    );
    let rest = store.attempts(&crm, first.next_cursor.as_ref(), 2).await.unwrap();
    assert_eq!(ids(&rest), [attempts[0].attempt_id.clone()]);
    assert_eq!(rest.next_cursor, None);
    let event = AttemptFilter {
        event_id: Some("ev-1".into()),
        action: Some("crm".into()),
    };
    let of_event = store.attempts(&event, None, 200).await.unwrap();
    assert_eq!(
        of_event.items.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        [2, 1],
        "one event's attempts for one action, newest first"
    );
}

async fn attempts_older_than_the_retention_are_deleted_in_chunks(db: TestDb) {
    let store = &db.store;
    let attempts: Vec<ActionAttempt> = (0..7)
        .map(|n| attempt("crm", &format!("ev-{n}"), n, 1, "delivered", 1_000 * n))
        .collect();
    let offsets = [offset(topics::ACTIONS_ATTEMPTS, 0, 7)];
    store
        .apply_batch_with_attempts(GROUP, &[], &attempts, &offsets)
        .await
        .unwrap();
    // Made before 4,500: the first five, in chunks of two (2 + 2 + 1).
    assert_eq!(store.expire_attempts(4_500, 2).await.unwrap(), 5);
    let left = store
        .attempts(&AttemptFilter::default(), None, 200)
        .await
        .unwrap();
    assert_eq!(left.items, [attempts[6].clone(), attempts[5].clone()]);
    assert_eq!(
        store.expire_attempts(4_500, 2).await.unwrap(),
        0,
        "nothing more to expire"
    );
    // The offsets stay: an expired attempt read again is stored again, not lost.
    assert_eq!(attempts_offset(store).await, Some(7));
}

per_backend!(
    attempts_older_than_the_retention_are_deleted_in_chunks,
    attempts_are_stored_once_with_their_offsets_and_listed_newest_first,
    migrations_create_the_schema_and_reconnecting_changes_nothing,
    a_batch_writes_rows_and_offsets,
    a_failing_batch_leaves_neither_rows_nor_offsets,
    the_same_batch_twice_changes_nothing_and_counts_duplicates,
    a_late_ringing_never_overwrites_completed,
    messages_and_bookings_keep_their_final_state,
    offsets_round_trip_per_group,
    concurrent_batches_on_the_same_calls_lose_no_update,
    listings_page_newest_first_with_ties_broken_by_key,
    the_event_search_lists_every_kind_newest_first,
    every_event_filter_selects_exactly_its_events,
    event_pages_cover_every_row_exactly_once,
    a_call_history_lists_its_events_as_they_happened,
    migration_0002_applies_to_a_database_0001_made,
);

/// SQLite's plans of the search: every arm reads its table through an index, in the order it
/// needs (`SCAN … USING INDEX`, stopped by the arm's LIMIT) or as an index range (`SEARCH`), never
/// the whole table, and sorts nothing of it; only the merge of the arms' pages sorts (at most
/// `limit + 1` rows per arm). The exception: a call's or an event id's few rows, found by
/// `call_events_by_call` or the primary key, are sorted. (PostgreSQL's plans depend on table
/// statistics; the same indexes serve it.)
#[tokio::test]
async fn sqlite_plans_of_the_event_search_read_no_whole_table() {
    super::testing::run(super::testing::Kind::Sqlite, |db: TestDb| async move {
        let store = &db.store;
        store.apply_batch(GROUP, &search_events(), &[]).await.unwrap();
        let cursor = Cursor {
            updated_at: T0 + 5_000,
            key: "e-x".into(),
        };
        let tables = ["call_events", "message_events", "payments", "booking_events"];
        for filter in search_filters() {
            for before in [None, Some(&cursor)] {
                let Some((sql, binds)) = read::events_query(&filter, before, 50) else {
                    assert_eq!(filter.source, Some(Source::Generic));
                    continue;
                };
                let explain = format!("EXPLAIN QUERY PLAN {sql}");
                let mut query = sqlx::query(&explain);
                for bind in binds {
                    query = match bind {
                        read::Bind::Text(text) => query.bind(text),
                        read::Bind::Int(int) => query.bind(int),
                    };
                }
                // (id, parent, detail)
                let plan: Vec<(i64, i64, String)> = query
                    .fetch_all(&store.pool)
                    .await
                    .unwrap()
                    .iter()
                    .map(|row| {
                        use sqlx::Row as _;
                        (
                            row.try_get("id").unwrap(),
                            row.try_get("parent").unwrap(),
                            row.try_get("detail").unwrap(),
                        )
                    })
                    .collect();
                let details: Vec<&str> = plan.iter().map(|(_, _, detail)| detail.as_str()).collect();
                let reads: Vec<&str> = details
                    .iter()
                    .copied()
                    .filter(|detail| {
                        tables.iter().any(|table| {
                            detail.starts_with(&format!("SCAN {table} "))
                                || detail.starts_with(&format!("SEARCH {table} "))
                                || *detail == format!("SCAN {table}")
                        })
                    })
                    .collect();
                let arms = SubjectKind::ALL
                    .into_iter()
                    .filter(|kind| filter.admits(*kind))
                    .count();
                assert_eq!(reads.len(), arms, "{filter:?}: {details:#?}");
                for read in &reads {
                    assert!(
                        read.starts_with("SEARCH ") || read.contains(" USING "),
                        "a table scan for {filter:?}: {details:#?}"
                    );
                }
                let few_rows = filter.call_sid.is_some() || filter.event_id.is_some();
                for (id, _, detail) in &plan {
                    if !detail.starts_with("CO-ROUTINE ") || few_rows {
                        continue;
                    }
                    let sorted = plan
                        .iter()
                        .any(|(_, parent, child)| parent == id && child.contains("TEMP B-TREE"));
                    assert!(!sorted, "{detail} sorts for {filter:?}: {details:#?}");
                }
            }
        }
    })
    .await;
}

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
