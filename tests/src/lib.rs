//! Helpers for switchboard's end-to-end tests: where the broker and registry are, unique names,
//! topic creation, the broker capability probe, a fault-injecting schema registry proxy, and the
//! committed view of a topic that every exactly-once assertion reads output topics through
//! ([`committed`]).
//!
//! The broker comes from `SWITCHBOARD_TEST_KAFKA` (`make test` points it at the Tansu broker it
//! starts; point it at a real Kafka to run every test in full), the registry from
//! `SWITCHBOARD_TEST_REGISTRY`.

pub mod broker;
pub mod committed;
pub mod consume;
pub mod fetch;
pub mod metrics;
pub mod probe;
pub mod registry_proxy;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

/// Env var naming the Kafka bootstrap servers the tests use.
pub const KAFKA_ENV: &str = "SWITCHBOARD_TEST_KAFKA";
/// Env var naming the schema registry URL the tests use.
pub const REGISTRY_ENV: &str = "SWITCHBOARD_TEST_REGISTRY";

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the end-to-end tests through `make test`, which starts a broker and a registry")
    })
}

/// The bootstrap servers of the broker under test.
pub fn kafka_bootstrap() -> String {
    required_env(KAFKA_ENV)
}

/// The URL of the schema registry under test.
pub fn registry_url() -> String {
    required_env(REGISTRY_ENV)
}

/// A name no other test (or earlier run against the same broker) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Client settings every test client of the broker under test starts from.
pub fn client_config() -> ClientConfig {
    client_config_at(&kafka_bootstrap())
}

/// Client settings for the broker at `bootstrap`.
pub fn client_config_at(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "10000");
    config
}

/// Creates `topic` with `partitions` partitions (replication 1) on the broker under test,
/// waiting until it exists.
pub async fn create_topic(topic: &str, partitions: i32) -> anyhow::Result<()> {
    create_topic_at(&kafka_bootstrap(), topic, partitions).await
}

/// Creates `topic` with `partitions` partitions (replication 1) on the broker at `bootstrap`.
pub async fn create_topic_at(bootstrap: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config_at(bootstrap).create()?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &options,
        )
        .await?;
    for result in results {
        result.map_err(|(topic, code)| anyhow::anyhow!("creating {topic}: {code}"))?;
    }
    Ok(())
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A xorshift generator for kill timings and random moments: reproducible from the seed it
/// prints, no dependency.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from the clock; prints `<what> seed: <seed>` so that a failing run can be replayed
    /// with [`Rng::from_seed`].
    pub fn seeded(what: &str) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        println!("{what} seed: {seed}");
        Self(seed)
    }

    /// A generator from a seed (odd seeds; an even one is made odd).
    pub fn from_seed(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// A number in `0..bound`.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}
