//! Test databases, and running one async test body against each backend: a SQLite file in a
//! temporary directory, and a fresh PostgreSQL database per test (created through the admin URL in
//! `SWITCHBOARD_TEST_POSTGRES`, dropped afterwards even when the body panics). PostgreSQL being
//! unreachable fails the test: it is not a reason to skip.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::FutureExt as _;
use sqlx::Connection as _;
use sqlx::postgres::PgConnection;

use switchboard_schemas::domain::{BillingEvent, BookingEvent, CallEvent, CallKind, MessageEvent};

use super::{ConsumedOffset, Store};

/// Env var naming the PostgreSQL admin URL the tests create their databases through.
pub(crate) const POSTGRES_ENV: &str = "SWITCHBOARD_TEST_POSTGRES";
const POSTGRES_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Sqlite,
    Postgres,
}

/// What a test body gets: the connected store and the URL it was opened with.
#[derive(Debug, Clone)]
pub(crate) struct TestDb {
    pub(crate) store: Store,
    pub(crate) url: String,
}

/// Runs `body` against a new database of `kind`, then removes the database.
pub(crate) async fn run<F, Fut>(kind: Kind, body: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    // The SQLite file lives as long as this directory: to the end of the test.
    let mut _sqlite_dir = None;
    let (url, postgres_database) = match kind {
        Kind::Sqlite => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let url = format!("sqlite://{}", dir.path().join("sink.db").display());
            _sqlite_dir = Some(dir);
            (url, None)
        }
        Kind::Postgres => {
            let (url, name) = create_postgres_database().await;
            (url, Some(name))
        }
    };
    let store = Store::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test database: {e}"));
    let result = AssertUnwindSafe(body(TestDb {
        store: store.clone(),
        url,
    }))
    .catch_unwind()
    .await;
    store.close().await;
    if let Some(name) = postgres_database {
        drop_postgres_database(&name).await;
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn admin_url() -> String {
    std::env::var(POSTGRES_ENV).unwrap_or_else(|_| POSTGRES_DEFAULT.to_owned())
}

/// The admin URL without its password, for messages.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

async fn admin_connection() -> PgConnection {
    let admin = admin_url();
    PgConnection::connect(&admin).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is required by the sink tests and is not reachable at {} ({e}). Start it \
             (pg_ctlcluster <version> main start) or set {POSTGRES_ENV} to an admin URL \
             (default {POSTGRES_DEFAULT}).",
            redacted(&admin)
        )
    })
}

/// Creates `sb_test_<pid>_<nanos>_<n>` and returns its URL and name.
async fn create_postgres_database() -> (String, String) {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!(
        "sb_test_{}_{nanos}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = admin_connection().await;
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} via {POSTGRES_ENV}: {e}"));
    let _ = admin.close().await;
    let mut url = url::Url::parse(&admin_url()).expect("a valid PostgreSQL URL");
    url.set_path(&format!("/{name}"));
    (url.to_string(), name)
}

async fn drop_postgres_database(name: &str) {
    let mut admin = admin_connection().await;
    if let Err(error) = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
    {
        eprintln!("could not drop test database {name}: {error}");
    }
    let _ = admin.close().await;
}

/// Defines, for each named `async fn(TestDb)` in the enclosing module, one `#[tokio::test]` per
/// backend: `sqlite::<name>` and `postgres::<name>`.
macro_rules! per_backend {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    $crate::store::testing::run($crate::store::testing::Kind::Sqlite, super::$test).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    $crate::store::testing::run($crate::store::testing::Kind::Postgres, super::$test).await;
                }
            )+
        }
    };
}
pub(crate) use per_backend;

/// A call status callback (`call_duration` only for `completed`: 120 s).
pub(crate) fn call_status(
    event_id: &str,
    phone_id: &str,
    call_sid: &str,
    status: &str,
    sequence: i32,
    at: i64,
) -> CallEvent {
    CallEvent {
        account_sid: Some("AC1".into()),
        received_at: at + 50,
        from: Some("+15557770000".into()),
        to: Some(phone_id.into()),
        direction: Some("inbound".into()),
        call_status: Some(status.into()),
        call_duration: (status == "completed").then_some(120),
        sequence_number: Some(sequence),
        ..CallEvent::new(event_id, phone_id, call_sid, CallKind::Status, at)
    }
}

/// A completed recording callback.
pub(crate) fn call_recording(event_id: &str, phone_id: &str, call_sid: &str, at: i64) -> CallEvent {
    CallEvent {
        kind: CallKind::Recording.as_str().into(),
        call_status: None,
        call_duration: None,
        sequence_number: None,
        recording_sid: Some(format!("RE{call_sid}")),
        recording_url: Some(format!("https://api.twilio.com/recordings/RE{call_sid}")),
        recording_status: Some("completed".into()),
        recording_duration: Some(118),
        ..call_status(event_id, phone_id, call_sid, "unused", 0, at)
    }
}

pub(crate) fn message(
    event_id: &str,
    phone_id: &str,
    message_sid: &str,
    status: &str,
    at: i64,
) -> MessageEvent {
    MessageEvent {
        event_id: event_id.into(),
        phone_id: phone_id.into(),
        message_sid: message_sid.into(),
        message_status: status.into(),
        error_code: matches!(status, "undelivered" | "failed").then(|| "30003".into()),
        from: Some(phone_id.into()),
        to: Some("+15557770000".into()),
        account_sid: None,
        received_at: at,
    }
}

pub(crate) fn booking(
    event_id: &str,
    phone_id: &str,
    invitee_uri: &str,
    canceled: bool,
    at: i64,
) -> BookingEvent {
    BookingEvent {
        event_id: event_id.into(),
        phone_id: phone_id.into(),
        event_type: if canceled {
            "invitee.canceled"
        } else {
            "invitee.created"
        }
        .into(),
        invitee_uri: invitee_uri.into(),
        invitee_name: Some("Ada Lovelace".into()),
        invitee_email: (!canceled).then(|| "ada@example.com".into()),
        event_start: Some(1_767_225_600_000),
        event_end: Some(1_767_227_400_000),
        cancel_reason: canceled.then(|| "conflict".into()),
        canceled,
        received_at: at,
    }
}

pub(crate) fn payment(event_id: &str, phone_id: &str, at: i64) -> BillingEvent {
    BillingEvent {
        event_id: event_id.into(),
        phone_id: phone_id.into(),
        event_type: "invoice.paid".into(),
        object_id: format!("in_{event_id}"),
        customer: Some("cus_1".into()),
        amount: Some(4_900),
        currency: Some("usd".into()),
        status: Some("paid".into()),
        created: Some(at - 1_000),
        livemode: Some(false),
        received_at: at,
    }
}

pub(crate) fn offset(topic: &str, partition: i32, next_offset: i64) -> ConsumedOffset {
    ConsumedOffset {
        topic: topic.into(),
        partition,
        next_offset,
    }
}

/// A delivery attempt of `action` for `event_id` (the record at `offset` of partition 0).
pub(crate) fn attempt(
    action: &str,
    event_id: &str,
    offset: i64,
    attempt: i32,
    outcome: &str,
    at: i64,
) -> switchboard_schemas::ActionAttempt {
    let failed = outcome != "delivered";
    switchboard_schemas::ActionAttempt {
        attempt_id: format!("{action}/{}/0/{offset}", switchboard_schemas::topics::CALLS),
        action: action.into(),
        event_id: event_id.into(),
        event_type: "call.completed".into(),
        attempt,
        outcome: outcome.into(),
        status_code: failed.then_some(503),
        reason: failed.then(|| "HTTP 503".to_owned()),
        routed_to: failed.then(|| "switchboard.retry.5s".to_owned()),
        latency_ms: 12,
        attempted_at: at,
    }
}
