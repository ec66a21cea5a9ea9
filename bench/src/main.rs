//! `switchboard-load`: the load generator and baselines of `make bench`. Every scenario pre-signs
//! its webhooks before its clock starts, prints a summary line and writes its figures as JSON
//! (`--out`); `report` turns a directory of them into `bench/results.md`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use switchboard_bench::e2e::{self, Settings};
use switchboard_bench::pacing::Pacer;
use switchboard_bench::rss::{Watched, parse_watched};
use switchboard_bench::workload::{self, Spec, Webhook};
use switchboard_bench::{
    drain, fetch_steps, http_load, kafka_load, parse_duration, preload, results, serve_ok, txn_steps,
};
use switchboard_schemas::Codec;
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    name = "switchboard-load",
    about = "Load generator and baselines for switchboard"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Baseline (a): a bare axum server answering 200 to the webhook routes.
    ServeOk {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: String,
    },
    /// A tiny OTLP/HTTP trace sink (counts exports and bytes; `GET /stats`), for the tracing overhead run.
    ServeOtlp {
        #[arg(long, default_value = "127.0.0.1:4318")]
        listen: String,
    },
    /// POSTs pre-signed webhooks to an HTTP target at a fixed concurrency or a fixed rate.
    Http(HttpArgs),
    /// Baseline (b): the raw rdkafka producer sending the same envelopes at a fixed concurrency.
    Kafka(KafkaArgs),
    /// End-to-end latency at a fixed rate: 2xx -> event on switchboard.calls -> calls API.
    E2e(E2eArgs),
    /// Writes the pre-signed status callbacks, one request a line (`signature TAB event id TAB
    /// form body`), for an independent load generator (`bench/wrk/rotate.lua`).
    Presign {
        #[command(flatten)]
        workload: WorkloadArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// The broker's share of one consumer hop as a partition fills up (see `fetch_steps`).
    FetchSteps {
        #[arg(long)]
        bootstrap: String,
        /// A topic of its own (created; must be empty).
        #[arg(long, default_value = "switchboard.bench.fetch-steps")]
        topic: String,
        /// Partition sizes, in single-record batches, to time the hop at.
        #[arg(long, value_delimiter = ',', default_value = "100,2000,5000,10000,20000")]
        sizes: Vec<u64>,
        /// `fetch.wait.max.ms` of each consumer timed (the bench's watching consumer: 5 ms; the
        /// processor's, the sink's and the actions' default: 20 ms).
        #[arg(long, value_delimiter = ',', default_value = "5ms,20ms,100ms", value_parser = parse_duration)]
        fetch_waits: Vec<Duration>,
        /// Records timed per consumer at each size.
        #[arg(long, default_value_t = 30)]
        samples: u64,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The broker's share of an exactly-once transaction, step by step (see `txn_steps`).
    TxnSteps {
        #[arg(long)]
        bootstrap: String,
        #[arg(long, default_value = "switchboard.bench.txn-steps")]
        topic: String,
        #[arg(long, default_value_t = 200)]
        transactions: u64,
        /// Records per transaction (the processor's at 200 webhooks/s: about 20).
        #[arg(long, default_value_t = 20)]
        records: usize,
        /// An extra producer property, `name=value` (repeatable), e.g. `retry.backoff.ms=10`.
        #[arg(long = "set", value_parser = parse_property)]
        properties: Vec<(String, String)>,
        /// Wait for deliveries with rust-rdkafka's `flush` (100 ms polls), as the processor did before.
        #[arg(long)]
        flush: bool,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fills the processor's state changelogs with remembered events (see `preload`), for the
    /// state-store benchmark.
    PreloadState {
        #[arg(long)]
        bootstrap: String,
        #[arg(long)]
        registry: String,
        #[arg(long)]
        events: u64,
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        #[arg(long, default_value_t = 5)]
        calls_every: u64,
        #[arg(long, default_value_t = 0)]
        origin_offset: i64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Waits until the processor's and the sink's consumer lag settles.
    Drain {
        /// `/metrics` URLs of the processor and the sink.
        #[arg(long = "metrics", required = true)]
        urls: Vec<String>,
        #[arg(long, default_value = "180s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Writes the report: the header file, then the figures of every JSON result in --dir.
    Report {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        header: PathBuf,
        /// Output of `cargo bench --bench eos_vs_alo`.
        #[arg(long)]
        eos: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Args)]
struct WorkloadArgs {
    /// Requests to pre-sign (runs wrap around when they use them all up).
    #[arg(long, default_value_t = 100_000)]
    requests: usize,
    #[command(flatten)]
    signing: SigningArgs,
}

/// What the pre-signed webhooks are made of and signed with.
#[derive(Debug, Clone, Args)]
struct SigningArgs {
    /// Seed of the CallSids and event ids; use a new one for each run against the same pipeline.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Ingest's SWITCHBOARD_PUBLIC_URL: what the signatures cover.
    #[arg(long)]
    public_url: String,
    #[arg(
        long,
        default_value = "dev-twilio-auth-token",
        env = "SWITCHBOARD_BENCH_TWILIO_AUTH_TOKEN"
    )]
    auth_token: String,
}

impl WorkloadArgs {
    fn spec(&self) -> Spec {
        Spec {
            requests: self.requests,
            seed: self.signing.seed,
            public_url: self.signing.public_url.clone(),
            auth_token: self.signing.auth_token.clone(),
        }
    }

    fn presign(&self) -> Arc<[Webhook]> {
        let started = std::time::Instant::now();
        let webhooks = workload::presign(&self.spec());
        eprintln!(
            "pre-signed {} webhooks in {:.1?}",
            webhooks.len(),
            started.elapsed()
        );
        webhooks.into()
    }
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Requests in flight (closed loop).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Requests per second (open loop) instead of a fixed concurrency.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured requests sent first (closed loop).
    #[arg(long, default_value_t = 2000)]
    warmup: usize,
    /// Where to write the figures (JSON).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct HttpArgs {
    /// The target's base URL, e.g. http://127.0.0.1:8080 (the path is /webhooks/twilio/calls).
    #[arg(long)]
    url: String,
    /// Name in the report.
    #[arg(long, default_value = "switchboard-ingest")]
    target: String,
    /// Sends Twilio Event Streams batches of this many CloudEvents to /webhooks/twilio-events
    /// instead of status callbacks; --requests then counts events, and the figures add events/s.
    #[arg(long)]
    batch: Option<usize>,
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Debug, Args)]
struct KafkaArgs {
    #[arg(long)]
    bootstrap: String,
    #[arg(long)]
    registry: String,
    /// A topic of its own, so that the processor does not read the baseline's records.
    #[arg(long, default_value = "switchboard.bench.raw-twilio")]
    topic: String,
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Debug, Args)]
struct E2eArgs {
    /// Ingest's base URL.
    #[arg(long)]
    url: String,
    #[arg(long)]
    bootstrap: String,
    /// The sink's base URL (calls API).
    #[arg(long)]
    sink: String,
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// Poll the calls API for one call in this many.
    #[arg(long, default_value_t = 20)]
    api_sample_every: usize,
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    api_poll_interval: Duration,
    /// `fetch.wait.max.ms` of the consumer that watches `switchboard.calls`: how long the broker
    /// may hold its fetch when nothing is new (its granularity, and its fetch load on the broker).
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    fetch_wait: Duration,
    /// How long to wait for the last events without progress.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    settle: Duration,
    /// A process whose peak RSS to report, `name=pid` (repeatable).
    #[arg(long = "pid", value_parser = parse_watched)]
    watched: Vec<Watched>,
    /// The processor's `/metrics` URL: its transactions and commit time per window.
    #[arg(long)]
    processor_metrics: Option<String>,
    /// The run is also reported in windows of this length.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    window: Duration,
    #[command(flatten)]
    signing: SigningArgs,
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once('=').ok_or("expected name=value")?;
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

fn write_json(out: Option<&PathBuf>, value: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(path) = out {
        std::fs::write(path, serde_json::to_string_pretty(value)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn http(args: HttpArgs) -> anyhow::Result<()> {
    let (webhooks, path) = match args.batch {
        None => (args.workload.presign(), workload::PATH),
        Some(batch) => {
            let webhooks: Arc<[Webhook]> =
                workload::presign_event_streams(&args.workload.spec(), batch).into();
            eprintln!("pre-signed {} Event Streams batches of {batch}", webhooks.len());
            (webhooks, workload::EVENTS_PATH)
        }
    };
    let url = format!("{}{path}", args.url.trim_end_matches('/'));
    let mut run = match args.load.rate {
        None => {
            http_load::closed_loop(
                &args.target,
                &url,
                webhooks,
                args.load.concurrency,
                args.load.duration,
                args.load.warmup,
            )
            .await?
        }
        Some(rate) => {
            let pacer = Pacer::new(rate)?;
            let count = pacer.requests_in(args.load.duration);
            http_load::open_loop(&args.target, &url, webhooks, pacer, count, None)
                .await?
                .0
        }
    };
    if let Some(batch) = args.batch {
        run.events_per_request = Some(batch as u64);
    }
    println!("{}", run.line());
    write_json(args.load.out.as_ref(), &run)
}

fn presign(workload: &WorkloadArgs, out: &std::path::Path) -> anyhow::Result<()> {
    let mut lines = String::new();
    for webhook in workload.presign().iter() {
        let body = std::str::from_utf8(&webhook.body).context("a form body is ASCII")?;
        anyhow::ensure!(
            !body.contains(['\t', '\n']),
            "a form body holds no tab or newline"
        );
        lines.push_str(&format!("{}\t{}\t{body}\n", webhook.signature, webhook.event_id));
    }
    std::fs::write(out, lines).with_context(|| format!("writing {}", out.display()))
}

async fn kafka(args: KafkaArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.load.rate.is_none(),
        "the Kafka baseline runs at a fixed concurrency only"
    );
    let webhooks = args.workload.presign();
    kafka_load::create_topic(&args.bootstrap, &args.topic).await?;
    let codec = Codec::new(&args.registry)?;
    let started = std::time::Instant::now();
    let records = kafka_load::prepare(
        &webhooks,
        &args.workload.signing.public_url,
        &args.workload.signing.auth_token,
        &codec,
        &args.topic,
    )
    .await?;
    eprintln!(
        "verified and encoded {} envelopes in {:.1?}",
        records.len(),
        started.elapsed()
    );
    drop(webhooks);
    let producer = kafka_load::producer(&args.bootstrap)?;
    let run = kafka_load::closed_loop(
        producer,
        &args.topic,
        records.into(),
        args.load.concurrency,
        args.load.duration,
        args.load.warmup,
    )
    .await?;
    println!("{}", run.line());
    write_json(args.load.out.as_ref(), &run)
}

async fn end_to_end(args: E2eArgs) -> anyhow::Result<()> {
    let pacer = Pacer::new(args.rate)?;
    let workload = WorkloadArgs {
        requests: pacer.requests_in(args.duration),
        signing: args.signing.clone(),
    };
    let webhooks = workload.presign();
    let settings = Settings {
        ingest_url: format!("{}{}", args.url.trim_end_matches('/'), workload::PATH),
        bootstrap: args.bootstrap,
        sink_url: args.sink,
        pacer,
        duration: args.duration,
        api_sample_every: args.api_sample_every,
        api_poll_interval: args.api_poll_interval,
        fetch_wait: args.fetch_wait,
        settle: args.settle,
        watched: args.watched,
        processor_metrics: args.processor_metrics,
        window: args.window,
    };
    let result = e2e::run(&settings, webhooks).await?;
    println!(
        "end to end at {:.0}/s: 2xx -> event p50 {:.1} ms p99 {:.1} ms (missing {}), 2xx -> calls API p50 {:.1} ms p99 {:.1} ms ({} calls, missing {}); peak RSS kB {:?}",
        args.rate,
        result.to_event.p50,
        result.to_event.p99,
        result.events_missing,
        result.to_api.p50,
        result.to_api.p99,
        result.to_api.count,
        result.api_missing,
        result.peak_rss_kb
    );
    write_json(args.out.as_ref(), &result)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Off unless RUST_LOG asks (e.g. `RUST_LOG=librdkafka=debug` with `txn-steps --set debug=eos`).
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::ServeOk { listen } => {
            let listener = TcpListener::bind(&listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            serve_ok::serve(listener).await
        }
        Command::ServeOtlp { listen } => {
            let listener = TcpListener::bind(&listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            switchboard_bench::serve_otlp::serve(listener).await
        }
        Command::Http(args) => http(args).await,
        Command::Kafka(args) => kafka(args).await,
        Command::E2e(args) => end_to_end(args).await,
        Command::Presign { workload, out } => presign(&workload, &out),
        Command::FetchSteps {
            bootstrap,
            topic,
            sizes,
            fetch_waits,
            samples,
            out,
        } => {
            anyhow::ensure!(sizes.is_sorted(), "--sizes must ascend");
            kafka_load::create_topic(&bootstrap, &topic).await?;
            let hops = tokio::task::spawn_blocking(move || {
                fetch_steps::measure(&fetch_steps::Run {
                    bootstrap: &bootstrap,
                    topic: &topic,
                    sizes: &sizes,
                    fetch_waits: &fetch_waits,
                    samples,
                })
            })
            .await??;
            print!("{}", fetch_steps::table(&hops));
            write_json(out.as_ref(), &hops)
        }
        Command::TxnSteps {
            bootstrap,
            topic,
            transactions,
            records,
            properties,
            flush,
            out,
        } => {
            kafka_load::create_topic(&bootstrap, &topic).await?;
            let steps = tokio::task::spawn_blocking(move || {
                txn_steps::measure(&txn_steps::Run {
                    bootstrap: &bootstrap,
                    topic: &topic,
                    group: "switchboard-bench-txn-steps",
                    transactions,
                    records,
                    properties: &properties,
                    flush,
                })
            })
            .await??;
            print!("{}", txn_steps::table(&steps));
            write_json(out.as_ref(), &steps)
        }
        Command::PreloadState {
            bootstrap,
            registry,
            events,
            partitions,
            calls_every,
            origin_offset,
            seed,
        } => {
            let took = preload::run(&preload::Preload {
                bootstrap,
                registry,
                events,
                partitions,
                calls_every: calls_every.max(1),
                origin_offset,
                seed,
            })
            .await?;
            eprintln!(
                "preloaded {events} events in {took:.1?} ({:.0}/s)",
                events as f64 / took.as_secs_f64()
            );
            Ok(())
        }
        Command::Drain { urls, timeout } => {
            let waited = drain::wait(&urls, timeout).await?;
            eprintln!("processor and sink caught up after {waited:.1?}");
            Ok(())
        }
        Command::Report {
            dir,
            header,
            eos,
            out,
        } => {
            let mut text =
                std::fs::read_to_string(&header).with_context(|| format!("reading {}", header.display()))?;
            let eos = eos.map(std::fs::read_to_string).transpose()?;
            text.push_str(&results::render(&dir, eos.as_deref())?);
            std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
    }
}
