//! The state of one call, folded from its [`CallEvent`]s: pure, and independent of delivery order.
//!
//! Twilio delivers status callbacks out of order and more than once, so [`apply`] is a join: every
//! field of [`CallState`] is the maximum (or minimum) of some key over the events folded in so far,
//! and the state keeps the keys it needs to compare the next event. Folding any permutation of
//! the same events, with any duplicates, ends in the same state.
//!
//! - Status (and `from`, `to`, `direction`, `sequence_number`, `last_event_id`, `phone_id`,
//!   `status_at`): the status callback with the greatest key `(is_terminal, rank,
//!   sequence_number or -1, occurred_at, event_id)`, ranks being queued 0, initiated 1, ringing 2,
//!   in-progress 3, any terminal status (completed, busy, failed, no-answer, canceled) 4, and any
//!   other status -1. A late `ringing` never overwrites `completed`.
//! - `duration_seconds`, `ended_at`: the winning callback's `CallDuration` and `occurred_at` when it
//!   is terminal.
//! - `started_at`: the earliest `in-progress` or `completed` callback (a busy, failed, no-answer or
//!   canceled call was never answered, so it has none).
//! - `updated_at`: the latest `occurred_at` of any event.
//! - Recording: the recording callback with the greatest `(status is completed, recording_sid,
//!   recording_status, recording_duration, recording_url)`; transcription likewise with
//!   `(status is completed, transcription_sid, transcription_status, transcription_text)`. Neither
//!   touches the status. The keys cover every field they set, so equal keys mean equal outcomes.
//! - Before any status callback the status is [`UNKNOWN_STATUS`], and `last_event_id`/`phone_id`
//!   come from the recording or transcription event with the greatest event id.

use crate::domain::{CallEvent, CallKind, CallState};

/// The status of a call whose state so far comes only from recording or transcription events.
pub const UNKNOWN_STATUS: &str = "unknown";

/// The state after folding `event` into `current` (`None`: no event of this call seen yet), or
/// `None` when the event changes nothing (a duplicate, a late callback that loses, an unknown kind).
///
/// `current` must be the state of `event.call_sid`.
pub fn apply(current: Option<&CallState>, event: &CallEvent) -> Option<CallState> {
    let kind = event.call_kind()?;
    debug_assert!(current.is_none_or(|state| state.call_sid == event.call_sid));
    let mut next = current.cloned().unwrap_or_else(|| empty(event));
    match kind {
        CallKind::Status => fold_status(&mut next, event),
        CallKind::Recording => fold_recording(&mut next, event),
        CallKind::Transcription => fold_transcription(&mut next, event),
    }
    if kind != CallKind::Status && next.status_at.is_none() && event.event_id > next.last_event_id {
        next.last_event_id.clone_from(&event.event_id);
        next.phone_id.clone_from(&event.phone_id);
    }
    next.updated_at = next.updated_at.max(event.occurred_at);
    (current != Some(&next)).then_some(next)
}

/// Whether `status` ends the call.
pub fn is_terminal(status: &str) -> bool {
    matches!(status, "completed" | "busy" | "failed" | "no-answer" | "canceled")
}

/// A status's place in the call lifecycle: queued 0 … in-progress 3, terminal 4, unknown -1.
pub fn rank(status: &str) -> i32 {
    match status {
        "queued" => 0,
        "initiated" => 1,
        "ringing" => 2,
        "in-progress" => 3,
        terminal if is_terminal(terminal) => 4,
        _ => -1,
    }
}

/// The state of a call before anything is known, identified by `event`.
fn empty(event: &CallEvent) -> CallState {
    CallState {
        call_sid: event.call_sid.clone(),
        phone_id: event.phone_id.clone(),
        status: UNKNOWN_STATUS.to_owned(),
        from: None,
        to: None,
        direction: None,
        duration_seconds: None,
        sequence_number: None,
        started_at: None,
        ended_at: None,
        recording_url: None,
        recording_duration: None,
        transcription_text: None,
        last_event_id: event.event_id.clone(),
        updated_at: event.occurred_at,
        status_at: None,
        recording_sid: None,
        recording_status: None,
        transcription_sid: None,
        transcription_status: None,
    }
}

/// `(is_terminal, rank, sequence_number or -1, occurred_at, event_id)`. A state without a status
/// callback has `occurred_at` `None`, so any status callback beats it.
type StatusKey<'a> = (bool, i32, i32, Option<i64>, &'a str);

fn status_key<'a>(status: &str, sequence: Option<i32>, at: Option<i64>, event_id: &'a str) -> StatusKey<'a> {
    (
        is_terminal(status),
        rank(status),
        sequence.unwrap_or(-1),
        at,
        event_id,
    )
}

fn fold_status(state: &mut CallState, event: &CallEvent) {
    let status = event.call_status.as_deref().unwrap_or(UNKNOWN_STATUS);
    if matches!(status, "in-progress" | "completed") {
        state.started_at = Some(
            state
                .started_at
                .map_or(event.occurred_at, |at| at.min(event.occurred_at)),
        );
    }
    let current = status_key(
        &state.status,
        state.sequence_number,
        state.status_at,
        &state.last_event_id,
    );
    if status_key(
        status,
        event.sequence_number,
        Some(event.occurred_at),
        &event.event_id,
    ) <= current
    {
        return;
    }
    let terminal = is_terminal(status);
    state.status = status.to_owned();
    state.status_at = Some(event.occurred_at);
    state.from.clone_from(&event.from);
    state.to.clone_from(&event.to);
    state.direction.clone_from(&event.direction);
    state.sequence_number = event.sequence_number;
    state.last_event_id.clone_from(&event.event_id);
    state.phone_id.clone_from(&event.phone_id);
    state.duration_seconds = event.call_duration.filter(|_| terminal);
    state.ended_at = terminal.then_some(event.occurred_at);
}

/// `(status is completed, recording_sid, recording_status, recording_duration, recording_url)`.
type RecordingKey<'a> = (
    bool,
    Option<&'a str>,
    Option<&'a str>,
    Option<i32>,
    Option<&'a str>,
);

fn recording_key<'a>(
    sid: &'a Option<String>,
    status: &'a Option<String>,
    duration: Option<i32>,
    url: &'a Option<String>,
) -> RecordingKey<'a> {
    let status = status.as_deref();
    (
        status == Some("completed"),
        sid.as_deref(),
        status,
        duration,
        url.as_deref(),
    )
}

fn fold_recording(state: &mut CallState, event: &CallEvent) {
    let current = recording_key(
        &state.recording_sid,
        &state.recording_status,
        state.recording_duration,
        &state.recording_url,
    );
    let candidate = recording_key(
        &event.recording_sid,
        &event.recording_status,
        event.recording_duration,
        &event.recording_url,
    );
    if candidate > current {
        state.recording_sid.clone_from(&event.recording_sid);
        state.recording_status.clone_from(&event.recording_status);
        state.recording_duration = event.recording_duration;
        state.recording_url.clone_from(&event.recording_url);
    }
}

/// `(status is completed, transcription_sid, transcription_status, transcription_text)`.
type TranscriptionKey<'a> = (bool, Option<&'a str>, Option<&'a str>, Option<&'a str>);

fn transcription_key<'a>(
    sid: &'a Option<String>,
    status: &'a Option<String>,
    text: &'a Option<String>,
) -> TranscriptionKey<'a> {
    let status = status.as_deref();
    (
        status == Some("completed"),
        sid.as_deref(),
        status,
        text.as_deref(),
    )
}

fn fold_transcription(state: &mut CallState, event: &CallEvent) {
    let current = transcription_key(
        &state.transcription_sid,
        &state.transcription_status,
        &state.transcription_text,
    );
    let candidate = transcription_key(
        &event.transcription_sid,
        &event.transcription_status,
        &event.transcription_text,
    );
    if candidate > current {
        state.transcription_sid.clone_from(&event.transcription_sid);
        state.transcription_status.clone_from(&event.transcription_status);
        state.transcription_text.clone_from(&event.transcription_text);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const CALL: &str = "CA5b7d9f1a3c5e7b9d2f4a6c8e0a2c4e6b";
    const ACCOUNT: &str = "AC3f9a2c4e6b8d0f1a3c5e7b9d2f4a6c8e";
    const RECEPTIONIST: &str = "+14155550100";
    const CALLER: &str = "+14155550199";
    /// `Tue, 14 Jan 2025 18:05:12 +0000`: when the call was answered in the table tests.
    const ANSWERED: i64 = 1_736_877_912_000;

    fn base(event_id: &str, kind: CallKind, at: i64) -> CallEvent {
        CallEvent {
            account_sid: Some(ACCOUNT.into()),
            received_at: at + 400,
            ..CallEvent::new(event_id, RECEPTIONIST, CALL, kind, at)
        }
    }

    fn status(event_id: &str, call_status: &str, sequence: i32, at: i64, duration: Option<i32>) -> CallEvent {
        CallEvent {
            from: Some(CALLER.into()),
            to: Some(RECEPTIONIST.into()),
            direction: Some("inbound".into()),
            call_status: Some(call_status.into()),
            sequence_number: Some(sequence),
            call_duration: duration,
            ..base(event_id, CallKind::Status, at)
        }
    }

    fn recording(event_id: &str, recording_status: &str, at: i64, duration: Option<i32>) -> CallEvent {
        let sid = "RE8d0f2a4c6e8b1d3f5a7c9e2b4d6f8a1c";
        CallEvent {
            // Recording callbacks carry neither From nor To: ingest keys them by account.
            phone_id: ACCOUNT.into(),
            recording_sid: Some(sid.into()),
            recording_url: Some(format!(
                "https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT}/Recordings/{sid}"
            )),
            recording_status: Some(recording_status.into()),
            recording_duration: duration,
            ..base(event_id, CallKind::Recording, at)
        }
    }

    fn transcription(event_id: &str, transcription_status: &str, text: Option<&str>, at: i64) -> CallEvent {
        CallEvent {
            transcription_sid: Some("TR2c4e6a8d0f1b3d5f7a9c2e4b6d8f0a3c".into()),
            transcription_status: Some(transcription_status.into()),
            transcription_text: text.map(str::to_owned),
            ..base(event_id, CallKind::Transcription, at)
        }
    }

    fn fold<'a>(events: impl IntoIterator<Item = &'a CallEvent>) -> Option<CallState> {
        events
            .into_iter()
            .fold(None, |state, event| apply(state.as_ref(), event).or(state))
    }

    /// The callbacks of an answered inbound call that lasted 47 seconds, in Twilio's order.
    fn answered_call() -> Vec<CallEvent> {
        vec![
            status("ev-ringing", "ringing", 2, ANSWERED - 6_000, None),
            status("ev-answered", "in-progress", 3, ANSWERED, None),
            recording("ev-rec-started", "in-progress", ANSWERED + 1_000, None),
            status("ev-completed", "completed", 4, ANSWERED + 47_000, Some(47)),
            recording("ev-rec-done", "completed", ANSWERED + 48_000, Some(45)),
            transcription(
                "ev-text",
                "completed",
                Some("I'd like to book a cleaning."),
                ANSWERED + 80_000,
            ),
        ]
    }

    #[test]
    fn an_answered_call_folds_into_its_final_state() {
        let events = answered_call();
        let state = fold(&events).unwrap();
        assert_eq!(
            state,
            CallState {
                call_sid: CALL.into(),
                phone_id: RECEPTIONIST.into(),
                status: "completed".into(),
                from: Some(CALLER.into()),
                to: Some(RECEPTIONIST.into()),
                direction: Some("inbound".into()),
                duration_seconds: Some(47),
                sequence_number: Some(4),
                started_at: Some(ANSWERED),
                ended_at: Some(ANSWERED + 47_000),
                recording_url: events[4].recording_url.clone(),
                recording_duration: Some(45),
                transcription_text: Some("I'd like to book a cleaning.".into()),
                last_event_id: "ev-completed".into(),
                updated_at: ANSWERED + 80_000,
                status_at: Some(ANSWERED + 47_000),
                recording_sid: events[4].recording_sid.clone(),
                recording_status: Some("completed".into()),
                transcription_sid: events[5].transcription_sid.clone(),
                transcription_status: Some("completed".into()),
            }
        );
    }

    #[test]
    fn late_duplicate_and_losing_callbacks_change_nothing() {
        let events = answered_call();
        let done = fold(&events).unwrap();
        let cases = [
            (
                "late ringing after completed",
                status("ev-ringing", "ringing", 2, ANSWERED - 6_000, None),
            ),
            ("duplicate completed", events[3].clone()),
            ("late in-progress recording", events[2].clone()),
            ("late queued without a sequence number", {
                let mut queued = status("ev-queued", "queued", 0, ANSWERED - 9_000, None);
                queued.sequence_number = None;
                queued
            }),
            (
                "a status Twilio may add later",
                status("ev-new", "answered-by-machine", 9, ANSWERED + 5_000, None),
            ),
            (
                "a failed transcription",
                transcription("ev-text-failed", "failed", None, ANSWERED + 70_000),
            ),
            (
                "an unknown kind",
                CallEvent {
                    kind: "conference".into(),
                    ..events[3].clone()
                },
            ),
        ];
        for (name, event) in cases {
            assert_eq!(apply(Some(&done), &event), None, "{name}");
        }
    }

    #[test]
    fn the_status_follows_the_ordering_rule() {
        let ringing = status("ev-b", "ringing", 2, ANSWERED - 6_000, None);
        let cases: Vec<(&str, CallEvent, Option<&str>)> = vec![
            (
                "a later lifecycle step wins",
                status("ev-a", "in-progress", 3, ANSWERED, None),
                Some("in-progress"),
            ),
            (
                "an earlier one loses",
                status("ev-c", "initiated", 1, ANSWERED - 7_000, None),
                None,
            ),
            (
                "terminal beats a higher sequence number",
                status("ev-a", "busy", 1, ANSWERED, Some(0)),
                Some("busy"),
            ),
            (
                "unknown statuses never beat known ones",
                status("ev-z", "answering", 7, ANSWERED - 6_000, None),
                None,
            ),
            (
                "same status: the higher sequence number wins",
                status("ev-a", "ringing", 3, ANSWERED, None),
                Some("ringing"),
            ),
            (
                "then the later time",
                status("ev-a", "ringing", 2, ANSWERED, None),
                Some("ringing"),
            ),
            (
                "then the greater event id",
                status("ev-c", "ringing", 2, ANSWERED - 6_000, None),
                Some("ringing"),
            ),
            (
                "a smaller event id loses",
                status("ev-a", "ringing", 2, ANSWERED - 6_000, None),
                None,
            ),
        ];
        let start = apply(None, &ringing).unwrap();
        for (name, event, expected) in cases {
            let next = apply(Some(&start), &event);
            assert_eq!(next.as_ref().map(|s| s.status.as_str()), expected, "{name}");
            if let Some(next) = next {
                assert_eq!(next.last_event_id, event.event_id, "{name}");
            }
        }
    }

    #[test]
    fn duration_and_end_come_from_the_terminal_callback() {
        let answered = status("ev-1", "in-progress", 3, ANSWERED, Some(999));
        let completed = status("ev-2", "completed", 4, ANSWERED + 47_000, Some(47));
        let live = apply(None, &answered).unwrap();
        assert_eq!(
            (live.duration_seconds, live.ended_at, live.started_at),
            (None, None, Some(ANSWERED))
        );
        let done = apply(Some(&live), &completed).unwrap();
        assert_eq!(done.duration_seconds, Some(47));
        assert_eq!(done.ended_at, Some(ANSWERED + 47_000));
        assert_eq!(done.started_at, Some(ANSWERED));
    }

    #[test]
    fn an_unanswered_call_never_starts() {
        let ringing = status("ev-1", "ringing", 2, ANSWERED, None);
        let no_answer = status("ev-2", "no-answer", 3, ANSWERED + 30_000, Some(0));
        let state = fold([&ringing, &no_answer]).unwrap();
        assert_eq!(state.status, "no-answer");
        assert_eq!(
            (state.started_at, state.ended_at),
            (None, Some(ANSWERED + 30_000))
        );
        assert_eq!(state.duration_seconds, Some(0));
    }

    #[test]
    fn media_before_any_status_makes_an_unknown_call_that_a_status_then_fills() {
        let text = transcription("ev-9", "completed", Some("Call me back"), ANSWERED + 80_000);
        let rec = recording("ev-5", "completed", ANSWERED + 48_000, Some(45));
        let state = apply(None, &text).unwrap();
        assert_eq!(state.status, UNKNOWN_STATUS);
        assert_eq!(state.status_at, None);
        let state = apply(Some(&state), &rec).unwrap();
        assert_eq!(
            state.last_event_id, "ev-9",
            "the greatest event id names the state"
        );
        assert_eq!(state.recording_duration, Some(45));
        let odd = status("ev-1", "answering", 0, ANSWERED, None);
        let state = apply(Some(&state), &odd).unwrap();
        assert_eq!(
            (state.status.as_str(), state.last_event_id.as_str()),
            ("answering", "ev-1"),
            "even an unknown status beats no status at all"
        );
        assert_eq!(state.transcription_text.as_deref(), Some("Call me back"));
        assert_eq!(state.updated_at, ANSWERED + 80_000);
    }

    #[test]
    fn a_completed_recording_wins_over_any_other() {
        let done = recording("ev-1", "completed", ANSWERED, Some(45));
        let mut other = recording("ev-2", "absent", ANSWERED + 1_000, None);
        other.recording_sid = Some("REffffffffffffffffffffffffffffffff".into());
        let state = fold([&other, &done]).unwrap();
        assert_eq!(state.recording_status.as_deref(), Some("completed"));
        assert_eq!(state.recording_duration, Some(45));
        assert_eq!(apply(Some(&state), &other), None);
    }

    /// A realistic call: its status callbacks with sequence numbers and Twilio's one-second
    /// timestamps, and for an answered call a recording (in progress, then completed) and a
    /// transcription. Event ids are random but distinct.
    fn any_call() -> impl Strategy<Value = Vec<CallEvent>> {
        (
            1_700_000_000_000i64..1_800_000_000_000,
            0i64..30,
            0i32..3_600,
            prop::sample::select(vec!["completed", "busy", "no-answer", "canceled", "failed"]),
            prop::collection::vec("[0-9a-f]{6}", 8),
        )
            .prop_map(|(t0, ring, talk, end, ids)| {
                let t0 = t0 / 1_000 * 1_000;
                let id = |i: usize| format!("{}{i}", ids[i]);
                let answered = t0 + (ring + 1) * 1_000;
                let ended = answered + i64::from(talk) * 1_000;
                let mut events = vec![
                    status(&id(0), "queued", 0, t0, None),
                    status(&id(1), "initiated", 1, t0, None),
                    status(&id(2), "ringing", 2, t0 + 1_000, None),
                ];
                if end == "completed" {
                    events.extend([
                        status(&id(3), "in-progress", 3, answered, None),
                        status(&id(4), "completed", 4, ended, Some(talk)),
                        recording(&id(5), "in-progress", answered + 300, None),
                        recording(&id(6), "completed", ended + 900, Some(talk.max(1) - 1)),
                        transcription(&id(7), "completed", Some("Please call me back."), ended + 30_000),
                    ]);
                } else {
                    events.push(status(&id(3), end, 3, t0 + (ring + 1) * 1_000, Some(0)));
                }
                events
            })
    }

    /// Arbitrary callbacks of one call, including unknown statuses, missing sequence numbers,
    /// equal timestamps and competing recordings: the fold must still be order-independent.
    fn any_callbacks() -> impl Strategy<Value = Vec<CallEvent>> {
        let statuses = vec![
            "queued",
            "initiated",
            "ringing",
            "in-progress",
            "completed",
            "busy",
            "no-answer",
            "answering",
        ];
        let one = (
            0u8..3,
            prop::sample::select(statuses),
            prop::option::of(0i32..5),
            0i64..4,
            prop::option::of(0i32..3),
            prop::sample::select(vec!["RE1", "RE2"]),
            prop::sample::select(vec!["in-progress", "completed", "absent"]),
            prop::sample::select(vec!["+14155550100", "+14155550101"]),
        );
        prop::collection::vec(one, 1..12).prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(
                    |(i, (kind, call_status, sequence, second, number, sid, media_status, phone))| {
                        let id = format!("ev-{i:02}");
                        let at = ANSWERED + second * 1_000;
                        let mut event = match kind {
                            0 => status(&id, call_status, 0, at, number),
                            1 => recording(&id, media_status, at, number),
                            _ => transcription(&id, media_status, Some(sid), at),
                        };
                        event.sequence_number = sequence.filter(|_| kind == 0);
                        event.phone_id = phone.into();
                        if kind == 1 {
                            event.recording_sid = Some(sid.into());
                        }
                        event
                    },
                )
                .collect()
        })
    }

    /// `events` with every event at least once, some duplicated, in a random order.
    fn shuffled_with_duplicates(
        events: Vec<CallEvent>,
    ) -> impl Strategy<Value = (Vec<CallEvent>, Vec<CallEvent>)> {
        let n = events.len();
        prop::collection::vec(0..n, 0..2 * n)
            .prop_map(move |extra| (0..n).chain(extra).collect::<Vec<_>>())
            .prop_shuffle()
            .prop_map(move |order| {
                (
                    events.clone(),
                    order.into_iter().map(|i| events[i].clone()).collect(),
                )
            })
    }

    proptest! {
        #[test]
        fn any_delivery_order_with_duplicates_ends_in_the_same_state(
            (events, delivered) in any_call().prop_flat_map(shuffled_with_duplicates)
        ) {
            let expected = fold(&events).unwrap();
            prop_assert_eq!(fold(&delivered), Some(expected.clone()));
            let terminal = events.iter().find(|e| e.call_status.as_deref().is_some_and(is_terminal)).unwrap();
            prop_assert_eq!(&expected.status, terminal.call_status.as_ref().unwrap());
            prop_assert_eq!(expected.ended_at, Some(terminal.occurred_at));
            prop_assert_eq!(expected.duration_seconds, terminal.call_duration);
            prop_assert_eq!(expected.started_at.is_some(), expected.status == "completed");
            prop_assert_eq!(expected.recording_status.is_some(), expected.status == "completed");
            for event in &events {
                prop_assert_eq!(apply(Some(&expected), event), None, "re-applying {} changes nothing", event.event_id);
            }
        }

        #[test]
        fn arbitrary_callbacks_fold_to_the_same_state_in_any_order(
            (events, delivered) in any_callbacks().prop_flat_map(shuffled_with_duplicates)
        ) {
            let expected = fold(&events);
            prop_assert_eq!(fold(&delivered), expected.clone());
            let expected = expected.unwrap();
            for event in &events {
                prop_assert_eq!(apply(Some(&expected), event), None);
            }
        }
    }
}
