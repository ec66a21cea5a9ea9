//! The chaos suite: the whole stack as processes (a broker of its own, registry, ingest,
//! processor, sink on SQLite) under signed Twilio load over HTTP, with faults injected. Each
//! scenario's `verify` asserts zero loss and zero duplicates in the database and in the committed
//! view of `switchboard.calls` (computed from the raw batches, see `switchboard_tests::committed`;
//! compared with a real read_committed consumer on a real Kafka), and the right final call state,
//! and prints `events sent / 2xx / rows / duplicates / lost / committed records / records of
//! aborted transactions seen / duplicates / lost` (database first, then the committed view).
//!
//! `make test` runs it shortened (`SWITCHBOARD_CHAOS_EVENTS`, default 2,000 events); `make chaos`
//! runs it at full size (10,000 events).
//!
//! The sender behaves like Twilio: every callback carries an `I-Twilio-Idempotency-Token`
//! (metadata only: ingest derives the event id from the signed content, and the suite computes the
//! same id with ingest's public `twilio::event_id`), and a callback that fails (503, connection
//! refused) is sent again until it is accepted. "2xx" counts first attempts accepted; every event must end up accepted, stored, and
//! stored once.

mod registry_flap;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use switchboard_ingest::verify::Secret;
use switchboard_ingest::verify::twilio::{self, TwilioKey};
use switchboard_schemas::Codec;
use switchboard_schemas::domain::CallEvent;
use switchboard_tests::broker::PrivateBroker;
use switchboard_tests::committed::{self, ExactlyOnce};

mod broker_pause_long;
mod scale;
mod supervise;
mod trace;

const TWILIO_TOKEN: &str = "chaos-twilio-token";
const STATUSES: [&str; 5] = ["queued", "initiated", "ringing", "in-progress", "completed"];
const PARTITIONS: &str = "3";
/// One scenario at a time: each runs a whole stack under load, and the 2-core machines must not
/// turn CPU starvation into false 503s.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Requests in flight at once.
const CONCURRENCY: usize = 24;
/// How long each scenario's load lasts: the faults happen within it.
const LOAD: Duration = Duration::from_secs(25);

/// Events per scenario: `SWITCHBOARD_CHAOS_EVENTS`, default 2,000 (a multiple of 5: 5 callbacks per
/// call).
fn events() -> usize {
    let events: usize = std::env::var("SWITCHBOARD_CHAOS_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    events.max(STATUSES.len()) / STATUSES.len() * STATUSES.len()
}

/// A workspace binary, built by `cargo build --workspace` (make test builds every target first).
fn binary(name: &str) -> PathBuf {
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// A child process, SIGKILLed when dropped.
struct Proc(Child);

impl Proc {
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.0.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    /// SIGTERM, then wait for the exit (bounded); the exit code.
    fn terminate(mut self) -> Option<i32> {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "no exit within 60 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    switchboard_tests::free_port().unwrap()
}

async fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The stack: every service a process of its own, logs in one directory.
struct Stack {
    broker: PrivateBroker,
    dir: tempfile::TempDir,
    registry_port: u16,
    ingest_port: u16,
    database_url: String,
    registry: Option<Proc>,
    ingest: Option<Proc>,
    processor: Option<Proc>,
    sink: Option<Proc>,
}

impl Stack {
    /// The stack on a broker of its own: the real Kafka under test when there is one (see
    /// `switchboard_tests::broker`), a private Tansu otherwise.
    async fn start() -> Self {
        Self::on(PrivateBroker::start().unwrap(), &[]).await
    }

    /// The stack on a private Tansu, for scenarios that pause or kill the broker.
    async fn start_pausable() -> Self {
        Self::on(PrivateBroker::start_pausable().unwrap(), &[]).await
    }

    /// The stack on a private Tansu, its processor (`chaos-0`) started with the extra environment
    /// `processor_env`.
    async fn start_pausable_with(processor_env: &[(&str, &str)]) -> Self {
        Self::on(PrivateBroker::start_pausable().unwrap(), processor_env).await
    }

    async fn on(broker: PrivateBroker, processor_env: &[(&str, &str)]) -> Self {
        let mut stack = Self::bare(broker, "chaos.db");
        stack.registry = Some(stack.spawn_registry().await);
        stack.ingest = Some(stack.spawn_ingest().await);
        stack.processor = Some(stack.spawn_processor("chaos-0", processor_env));
        stack.sink = Some(stack.spawn("sink", &["sink"]));
        stack
    }

    /// The stack on `broker` with nothing started yet: free ports, a log directory, and an SQLite
    /// database named `db_name` in it.
    fn bare(broker: PrivateBroker, db_name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let database_url = format!("sqlite://{}", dir.path().join(db_name).display());
        Stack {
            broker,
            registry_port: free_port(),
            ingest_port: free_port(),
            database_url,
            dir,
            registry: None,
            ingest: None,
            processor: None,
            sink: None,
        }
    }

    fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .unwrap()
    }

    fn logs(&self) -> &Path {
        self.dir.path()
    }

    async fn spawn_registry(&self) -> Proc {
        let child = Command::new(binary("switchboard-registry"))
            .env(
                "SWITCHBOARD_REGISTRY_LISTEN",
                format!("127.0.0.1:{}", self.registry_port),
            )
            .env("SWITCHBOARD_REGISTRY_DATA", self.dir.path().join("registry"))
            .stdout(Stdio::null())
            .stderr(self.log("registry"))
            .spawn()
            .unwrap();
        wait_for_port(self.registry_port, "the registry").await;
        Proc(child)
    }

    fn common(&self, command: &mut Command) {
        command
            .env("SWITCHBOARD_KAFKA_BOOTSTRAP", self.broker.bootstrap())
            .env(
                "SWITCHBOARD_SCHEMA_REGISTRY_URL",
                format!("http://127.0.0.1:{}", self.registry_port),
            )
            .env("SWITCHBOARD_TOPIC_PARTITIONS", PARTITIONS)
            .env("SWITCHBOARD_SESSION_TIMEOUT", "6s")
            .stdout(Stdio::null());
    }

    async fn spawn_ingest(&self) -> Proc {
        let mut command = Command::new(binary("switchboard-ingest"));
        self.common(&mut command);
        let child = command
            .env("SWITCHBOARD_LISTEN", format!("127.0.0.1:{}", self.ingest_port))
            .env("SWITCHBOARD_ADMIN_LISTEN", "127.0.0.1:0")
            .env("SWITCHBOARD_PUBLIC_URL", self.public_url())
            .env("SWITCHBOARD_TWILIO_AUTH_TOKENS", TWILIO_TOKEN)
            .env("SWITCHBOARD_PUBLISH_TIMEOUT", "3s")
            .stderr(self.log("ingest"))
            .spawn()
            .unwrap();
        wait_for_port(self.ingest_port, "ingest").await;
        Proc(child)
    }

    fn spawn(&self, name: &str, args: &[&str]) -> Proc {
        self.spawn_instance(name, args, "chaos-0", &[])
    }

    /// One more processor instance: its own instance id (so its own transactional id), logging
    /// to `processor-<instance_id>.log` (`chaos-0` to `processor.log`), with extra environment.
    fn spawn_processor(&self, instance_id: &str, env: &[(&str, &str)]) -> Proc {
        let name = if instance_id == "chaos-0" {
            "processor".to_owned()
        } else {
            format!("processor-{instance_id}")
        };
        self.spawn_instance(&name, &[], instance_id, env)
    }

    fn spawn_instance(&self, name: &str, args: &[&str], instance_id: &str, env: &[(&str, &str)]) -> Proc {
        let mut command = Command::new(binary("switchboard-processor"));
        self.common(&mut command);
        command
            .args(args)
            .env("SWITCHBOARD_ADMIN_LISTEN", "127.0.0.1:0")
            .env("SWITCHBOARD_INSTANCE_ID", instance_id)
            .env("SWITCHBOARD_STATE_DIR", self.broker.state_dir(instance_id))
            .env("SWITCHBOARD_DATABASE_URL", &self.database_url)
            .envs(env.iter().copied())
            .stderr(self.log(name));
        Proc(command.spawn().unwrap())
    }

    fn public_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ingest_port)
    }
}

/// One provider event: a signed status callback of a call.
#[derive(Debug, Clone)]
struct Callback {
    /// The event id ingest derives from the signed URL and parameters.
    event_id: String,
    /// Sent as `I-Twilio-Idempotency-Token`.
    token: String,
    call_sid: String,
    body: String,
    signature: String,
}

fn callbacks(count: usize, url: &str) -> Vec<Callback> {
    let key = TwilioKey::AuthToken(Secret::new(TWILIO_TOKEN.as_bytes().to_vec()));
    let calls = count / STATUSES.len();
    let mut all = Vec::with_capacity(count);
    // Status by status, call by call: the load interleaves calls, like real traffic.
    for (sequence, status) in STATUSES.iter().enumerate() {
        for call in 0..calls {
            let call_sid = format!("CA{call:032x}");
            let phone = format!("+1555700{:04}", call % 100);
            let mut params = vec![
                (
                    "AccountSid".to_owned(),
                    "AC0123456789abcdef0123456789abcdef".to_owned(),
                ),
                ("CallSid".to_owned(), call_sid.clone()),
                ("CallStatus".to_owned(), (*status).to_owned()),
                ("Direction".to_owned(), "inbound".to_owned()),
                ("From".to_owned(), "+15005550006".to_owned()),
                ("To".to_owned(), phone),
                ("SequenceNumber".to_owned(), sequence.to_string()),
            ];
            if *status == "completed" {
                params.push(("CallDuration".to_owned(), "120".to_owned()));
            }
            let signature = twilio::sign(&key, url, &params);
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&params)
                .finish();
            all.push(Callback {
                event_id: twilio::event_id(url, &params),
                token: format!("chaos-{call}-{status}"),
                call_sid,
                body,
                signature,
            });
        }
    }
    all
}

/// What the sender saw.
#[derive(Debug, Default)]
struct Sent {
    sent: usize,
    /// First attempts answered 2xx.
    first_2xx: usize,
    /// First attempts answered 503.
    first_503: usize,
    /// Responses cut off mid-request (not refused connections): must never happen.
    broken: usize,
}

/// Sends every callback until accepted (Twilio-style retries), `CONCURRENCY` at a time, paced
/// evenly over `over` so that the faults land mid-load. `on_first` sees each first attempt's
/// status (0: no response).
async fn send_all(
    url: String,
    callbacks: Vec<Callback>,
    over: Duration,
    on_first: impl Fn(u16) + Send + Sync + 'static,
) -> Sent {
    let interval = over / callbacks.len().max(1) as u32;
    let started = tokio::time::Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let queue = Arc::new(std::sync::Mutex::new(
        callbacks
            .into_iter()
            .enumerate()
            .collect::<std::collections::VecDeque<_>>(),
    ));
    let on_first = Arc::new(on_first);
    let (first_2xx, first_503, broken, sent) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, queue, url, on_first) = (
            client.clone(),
            Arc::clone(&queue),
            url.clone(),
            Arc::clone(&on_first),
        );
        let (first_2xx, first_503, broken, sent) = (
            Arc::clone(&first_2xx),
            Arc::clone(&first_503),
            Arc::clone(&broken),
            Arc::clone(&sent),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let Some((index, callback)) = queue.lock().unwrap().pop_front() else {
                    return;
                };
                tokio::time::sleep_until(started + interval * index as u32).await;
                sent.fetch_add(1, Ordering::Relaxed);
                let deadline = Instant::now() + Duration::from_secs(180);
                let mut first = true;
                loop {
                    let result = client
                        .post(&url)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .header("x-twilio-signature", &callback.signature)
                        .header("i-twilio-idempotency-token", &callback.token)
                        .body(callback.body.clone())
                        .send()
                        .await;
                    let status = match &result {
                        Ok(response) => response.status().as_u16(),
                        Err(error) if error.is_connect() => 0,
                        Err(_) => {
                            broken.fetch_add(1, Ordering::Relaxed);
                            0
                        }
                    };
                    if first {
                        on_first(status);
                        if (200..300).contains(&status) {
                            first_2xx.fetch_add(1, Ordering::Relaxed);
                        }
                        if status == 503 {
                            first_503.fetch_add(1, Ordering::Relaxed);
                        }
                        first = false;
                    }
                    if (200..300).contains(&status) {
                        break;
                    }
                    assert!(
                        status == 0 || status == 503,
                        "{} answered {status}",
                        callback.token
                    );
                    assert!(Instant::now() < deadline, "{} never accepted", callback.token);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    Sent {
        sent: sent.load(Ordering::Relaxed),
        first_2xx: first_2xx.load(Ordering::Relaxed),
        first_503: first_503.load(Ordering::Relaxed),
        broken: broken.load(Ordering::Relaxed),
    }
}

async fn open(database_url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(pool) = AnyPoolOptions::new()
            .max_connections(1)
            .connect(database_url)
            .await
            && sqlx::query("SELECT 1 FROM call_events LIMIT 1")
                .fetch_optional(&pool)
                .await
                .is_ok()
        {
            return pool;
        }
        assert!(Instant::now() < deadline, "the sink never created its database");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn stored(db: &AnyPool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM call_events")
        .fetch_one(db)
        .await
        .unwrap_or(0)
}

/// Waits for every event in the database, then checks: nothing lost, nothing doubled, every call
/// completed with its duration. Prints the summary line.
async fn verify(scenario: &str, stack: &Stack, callbacks: &[Callback], sent: &Sent) {
    assert_eq!(sent.broken, 0, "{scenario}: responses cut off mid-request");
    let db = open(&stack.database_url).await;
    let expected = callbacks.len() as i64;
    let deadline = Instant::now() + Duration::from_secs(300);
    while stored(&db).await < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rows = stored(&db).await;
    let ids: HashSet<String> = sqlx::query_scalar("SELECT event_id FROM call_events")
        .fetch_all(&db)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let per_status: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM (SELECT DISTINCT call_sid, status FROM call_events) AS d")
            .fetch_one(&db)
            .await
            .unwrap();
    let duplicates = rows - per_status;
    let lost = callbacks.iter().filter(|c| !ids.contains(&c.event_id)).count();
    // Kafka-level exactly-once: the committed view of the domain topic holds each event (the
    // domain event's id) exactly once, whatever was aborted on the way.
    let kafka = committed_calls(stack, callbacks).await;
    println!(
        "{scenario}: events sent {} / 2xx {} (first attempt; 503 {}) / rows {rows} / duplicates {duplicates} / lost {lost} \
         / committed records {} / records of aborted transactions seen {} / duplicates {} / lost {}",
        sent.sent,
        sent.first_2xx,
        sent.first_503,
        kafka.committed,
        kafka.aborted_seen,
        kafka.duplicates,
        kafka.lost
    );
    println!("{scenario}: {kafka}");
    assert!(
        kafka.holds(),
        "{scenario}: {} is not exactly once: {kafka}; logs in {}",
        switchboard_schemas::topics::CALLS,
        stack.logs().display()
    );
    assert_eq!(sent.sent, callbacks.len());
    assert_eq!(
        lost,
        0,
        "{scenario}: events lost; logs in {}",
        stack.logs().display()
    );
    assert_eq!(duplicates, 0, "{scenario}: events stored twice");
    assert_eq!(rows, expected, "{scenario}: unexpected rows");
    let calls = callbacks
        .iter()
        .map(|c| c.call_sid.as_str())
        .collect::<HashSet<_>>()
        .len() as i64;
    let completed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM calls WHERE status = 'completed' AND duration_seconds = 120",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        completed, calls,
        "{scenario}: every call ends completed with 120 s"
    );
}

/// How the committed view of `switchboard.calls` holds the callbacks' events.
async fn committed_calls(stack: &Stack, callbacks: &[Callback]) -> ExactlyOnce {
    let codec = Codec::new(&format!("http://127.0.0.1:{}", stack.registry_port)).unwrap();
    let expected = callbacks.iter().map(|c| c.event_id.clone());
    let (_, report) = committed::check_exactly_once(
        &stack.broker.bootstrap(),
        switchboard_schemas::topics::CALLS,
        expected,
        async |record| {
            let value = record
                .value
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("no value"))?;
            Ok(codec
                .decode::<CallEvent>(CallEvent::schema_def(), value)
                .await?
                .event_id)
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "reading the committed view: {e:#}; logs in {}",
            stack.logs().display()
        )
    });
    report
}

fn url(stack: &Stack) -> String {
    format!("{}/webhooks/twilio/calls", stack.public_url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_random_sigkills_of_processor_and_sink_lose_and_double_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut stack = Stack::start().await;
    let callbacks = callbacks(events(), &url(&stack));
    let load = tokio::spawn(send_all(url(&stack), callbacks.clone(), LOAD, |_| {}));
    let mut rng = switchboard_tests::Rng::seeded("chaos");
    let db = open(&stack.database_url).await;
    for round in 0..5 {
        // Kill each once it has had the time to make progress, at a random moment.
        tokio::time::sleep(Duration::from_millis(2_000 + rng.below(2_000))).await;
        stack.processor = None; // SIGKILL
        stack.processor = Some(stack.spawn("processor", &[]));
        tokio::time::sleep(Duration::from_millis(500 + rng.below(2_000))).await;
        stack.sink = None; // SIGKILL
        stack.sink = Some(stack.spawn("sink", &["sink"]));
        println!("round {round}: {} events stored", stored(&db).await);
    }
    let sent = load.await.unwrap();
    verify("sigkills", &stack, &callbacks, &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_a_paused_broker_gets_503_and_loses_nothing_answered_2xx() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let stack = Stack::start_pausable().await;
    let callbacks = callbacks(events(), &url(&stack));
    let paused = Arc::new(AtomicBool::new(false));
    let during_pause = Arc::new(AtomicUsize::new(0));
    let (flag, count) = (Arc::clone(&paused), Arc::clone(&during_pause));
    let load = tokio::spawn(send_all(url(&stack), callbacks.clone(), LOAD, move |status| {
        if flag.load(Ordering::Relaxed) && status == 503 {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.broker.pause().unwrap();
    paused.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(10)).await;
    paused.store(false, Ordering::Relaxed);
    stack.broker.resume().unwrap();
    let sent = load.await.unwrap();
    assert!(
        during_pause.load(Ordering::Relaxed) > 0,
        "ingest never answered 503 while the broker was paused"
    );
    verify("broker paused", &stack, &callbacks, &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_ingest_keeps_serving_from_its_schema_cache_while_the_registry_is_down() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut stack = Stack::start().await;
    let callbacks = callbacks(events(), &url(&stack));
    let down = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (flag, no, yes) = (Arc::clone(&down), Arc::clone(&refused), Arc::clone(&accepted));
    let load = tokio::spawn(send_all(url(&stack), callbacks.clone(), LOAD, move |status| {
        if flag.load(Ordering::Relaxed) {
            if (200..300).contains(&status) {
                yes.fetch_add(1, Ordering::Relaxed);
            } else {
                no.fetch_add(1, Ordering::Relaxed);
            }
        }
    }));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.registry = None; // SIGKILL: down
    down.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(10)).await;
    down.store(false, Ordering::Relaxed);
    stack.registry = Some(stack.spawn_registry().await);
    let sent = load.await.unwrap();
    assert!(
        accepted.load(Ordering::Relaxed) > 0,
        "no request was sent while the registry was down"
    );
    assert_eq!(
        refused.load(Ordering::Relaxed),
        0,
        "ingest refused requests while the registry was down"
    );
    verify("registry down", &stack, &callbacks, &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_ingest_sigterm_under_load_completes_in_flight_requests() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut stack = Stack::start().await;
    let callbacks = callbacks(events(), &url(&stack));
    let load = tokio::spawn(send_all(url(&stack), callbacks.clone(), LOAD, |_| {}));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let code = stack.ingest.take().unwrap().terminate();
    assert_eq!(code, Some(0), "ingest exits 0 after draining");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.ingest = Some(stack.spawn_ingest().await);
    let sent = load.await.unwrap();
    verify("ingest SIGTERM", &stack, &callbacks, &sent).await;
}
