//! A broker of one test's own, so that tests using the pipeline's fixed topic and group names
//! (`switchboard.calls`, `switchboard-processor`, …) do not see each other's records.
//!
//! Which broker that is follows the broker under test:
//!
//! - **On Tansu** (`SWITCHBOARD_TEST_BROKER_KIND=tansu`, what `make test` sets when it starts the
//!   dev broker), [`PrivateBroker::start`] starts a private Tansu through `scripts/broker`, empty,
//!   on a free loopback port, stopped on drop.
//! - **On a real Kafka** (`SWITCHBOARD_TEST_KAFKA` set and the kind anything but `tansu`),
//!   [`PrivateBroker::start`] hands out *that* cluster, so that the data of every exactly-once
//!   assertion lives where a real `read_committed` consumer can be compared with the committed view
//!   (see [`crate::committed`]); a private Tansu there would only test Tansu again. To keep the
//!   tests apart on one cluster, one such broker is handed out at a time (an exclusive file lock
//!   per bootstrap address, across test threads and processes), and before each is handed out every
//!   topic whose name contains `switchboard.` and every consumer group whose name starts with
//!   `switchboard` is deleted, as on a fresh broker. The cluster must therefore be one dedicated
//!   to the tests.
//! - A test that freezes or kills its broker asks for [`PrivateBroker::start_pausable`]: always a
//!   private Tansu, whose process can be stopped (a shared cluster cannot). Its exactly-once
//!   assertions still run, on the committed view computed from raw batches.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// `make test` sets this to `tansu` when it runs the suite on the Tansu dev broker it started.
pub const BROKER_KIND_ENV: &str = "SWITCHBOARD_TEST_BROKER_KIND";

/// A broker owned by one test.
#[derive(Debug)]
pub struct PrivateBroker {
    kind: Kind,
    /// Local state of the processors run against this broker (their stores describe its topics),
    /// deleted with it.
    state: tempfile::TempDir,
}

#[derive(Debug)]
enum Kind {
    /// A Tansu process of this test's own.
    Tansu { port: u16, dir: tempfile::TempDir },
    /// The real Kafka under test, held exclusively (the lock is released on drop).
    Shared { bootstrap: String, _lock: std::fs::File },
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/broker")
}

/// The real Kafka cluster under test, if the suite runs against one.
pub fn real_kafka() -> Option<String> {
    let bootstrap = std::env::var(crate::KAFKA_ENV).ok()?;
    (std::env::var(BROKER_KIND_ENV).as_deref() != Ok("tansu")).then_some(bootstrap)
}

impl PrivateBroker {
    /// A broker for this test alone: the real Kafka under test when there is one (held
    /// exclusively, cleaned of the pipeline's topics and groups), a private Tansu otherwise.
    pub fn start() -> anyhow::Result<Self> {
        match real_kafka() {
            Some(bootstrap) => Self::shared(bootstrap),
            None => Self::start_pausable(),
        }
    }

    /// A private Tansu whatever the broker under test: for tests that pause or kill their broker.
    pub fn start_pausable() -> anyhow::Result<Self> {
        let port = crate::free_port()?;
        let dir = tempfile::tempdir()?;
        let status = Command::new(script())
            .arg("start")
            .arg(port.to_string())
            .arg(dir.path())
            .status()?;
        anyhow::ensure!(status.success(), "scripts/broker start failed: {status}");
        Ok(Self {
            kind: Kind::Tansu { port, dir },
            state: tempfile::tempdir()?,
        })
    }

    fn shared(bootstrap: String) -> anyhow::Result<Self> {
        let name: String = bootstrap
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let lock =
            std::fs::File::create(std::env::temp_dir().join(format!("switchboard-test-kafka-{name}.lock")))?;
        lock.lock()?; // blocks while another test holds the cluster
        let address = bootstrap.clone();
        std::thread::spawn(move || clean(&address))
            .join()
            .map_err(|_| anyhow::anyhow!("cleaning {bootstrap} panicked"))??;
        Ok(Self {
            kind: Kind::Shared {
                bootstrap,
                _lock: lock,
            },
            state: tempfile::tempdir()?,
        })
    }

    /// The state directory (`SWITCHBOARD_STATE_DIR`) of processor instance `instance` against
    /// this broker: the same for each start of the instance (a restart finds its store), apart
    /// from every other instance's, deleted with the broker.
    pub fn state_dir(&self, instance: &str) -> PathBuf {
        self.state.path().join(instance)
    }

    pub fn bootstrap(&self) -> String {
        match &self.kind {
            Kind::Tansu { port, .. } => format!("127.0.0.1:{port}"),
            Kind::Shared { bootstrap, .. } => bootstrap.clone(),
        }
    }

    /// Whether this is a private Tansu process (rather than the shared real Kafka).
    pub fn is_tansu(&self) -> bool {
        matches!(self.kind, Kind::Tansu { .. })
    }

    /// The process id of a private Tansu; an error for the shared real Kafka.
    pub fn pid(&self) -> anyhow::Result<u32> {
        let Kind::Tansu { dir, .. } = &self.kind else {
            anyhow::bail!(
                "the shared Kafka cluster is not a process of this test: start the broker with PrivateBroker::start_pausable"
            );
        };
        let pid = std::fs::read_to_string(dir.path().join("broker.pid"))?;
        Ok(pid.trim().parse()?)
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.pid()?;
        let status = Command::new("kill").arg(signal).arg(pid.to_string()).status()?;
        anyhow::ensure!(status.success(), "kill {signal} failed");
        Ok(())
    }

    /// Freezes the broker (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// Thaws a paused broker (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Kind::Tansu { dir, .. } = &self.kind {
            let _ = Command::new(script()).arg("stop").arg(dir.path()).status();
            if std::thread::panicking() {
                // The broker's side of a failed test (group evictions, fenced producers) is
                // evidence: keep its log.
                let kept = std::env::temp_dir().join(format!(
                    "switchboard-failed-broker-{}.log",
                    dir.path().file_name().and_then(|n| n.to_str()).unwrap_or("tansu")
                ));
                if keep_tail(&dir.path().join("broker.log"), &kept).is_ok() {
                    eprintln!("the end of the broker's log is kept in {}", kept.display());
                }
            }
        }
    }
}

/// Copies the last 16 MiB of the log at `from` to `to` (a broker logging at debug level writes
/// gigabytes).
fn keep_tail(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    const TAIL: u64 = 16 << 20;
    let mut log = std::fs::File::open(from)?;
    let length = log.metadata()?.len();
    log.seek(SeekFrom::Start(length.saturating_sub(TAIL)))?;
    std::io::copy(&mut log, &mut std::fs::File::create(to)?)?;
    Ok(())
}

/// Deletes the pipeline's topics and consumer groups from the shared cluster at `bootstrap` and
/// waits until the topics are gone.
fn clean(bootstrap: &str) -> anyhow::Result<()> {
    const TIMEOUT: Duration = Duration::from_secs(30);
    let consumer: BaseConsumer = crate::client_config_at(bootstrap).create()?;
    let pipeline_topics = |consumer: &BaseConsumer| -> anyhow::Result<Vec<String>> {
        Ok(consumer
            .fetch_metadata(None, TIMEOUT)?
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .filter(|name| name.contains("switchboard.") && !name.starts_with("__"))
            .collect())
    };
    let topics = pipeline_topics(&consumer)?;
    let groups: Vec<String> = consumer
        .fetch_group_list(None, TIMEOUT)?
        .groups()
        .iter()
        .map(|g| g.name().to_owned())
        .filter(|name| name.starts_with("switchboard"))
        .collect();
    let admin: AdminClient<DefaultClientContext> = crate::client_config_at(bootstrap).create()?;
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            if !groups.is_empty() {
                let names: Vec<&str> = groups.iter().map(String::as_str).collect();
                // A group with members left by a previous test is deleted once they time out;
                // its failure here is not an error.
                let _ = admin.delete_groups(&names, &options).await;
            }
            if !topics.is_empty() {
                let names: Vec<&str> = topics.iter().map(String::as_str).collect();
                for result in admin.delete_topics(&names, &options).await? {
                    result.map_err(|(topic, code)| anyhow::anyhow!("deleting {topic}: {code}"))?;
                }
            }
            anyhow::Ok(())
        })?;
    let deadline = Instant::now() + TIMEOUT;
    while !pipeline_topics(&consumer)?.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the pipeline's topics on {bootstrap} were not deleted within {TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
