//! `bench/results.md`: the header `scripts/bench` writes (machine, versions, settings), then the
//! figures of every scenario, read back from the JSON files the scenarios wrote.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use crate::report::{self, EndToEnd, Run};
use crate::{fetch_steps, prom, txn_steps};

/// The throughput file of one target at one concurrency: `<target>-c<concurrency>.json`, target
/// one of [`HTTP_BASELINE`], [`KAFKA_BASELINE`], [`INGEST`].
pub fn throughput_file(target: &str, concurrency: usize) -> String {
    format!("{target}-c{concurrency}.json")
}
pub const HTTP_BASELINE: &str = "http-baseline";
pub const KAFKA_BASELINE: &str = "kafka-baseline";
pub const INGEST: &str = "ingest";
/// The same throughput runs made with wrk: `wrk-<target>-c<concurrency>.json`.
pub const WRK_PREFIX: &str = "wrk-";
/// Event Streams runs through ingest: `ingest-events-b<batch>-c<concurrency>.json`.
pub fn events_file(batch: usize, concurrency: usize) -> String {
    format!("{INGEST_EVENTS}-b{batch}-c{concurrency}.json")
}
pub const INGEST_EVENTS: &str = "ingest-events";
/// The broker's share of a transaction (`switchboard-load txn-steps`).
pub const TXN_STEPS: &str = "txn-steps.json";
/// The same with rust-rdkafka's flush (`txn-steps --flush`).
pub const TXN_STEPS_FLUSH: &str = "txn-steps-flush.json";
/// `switchboard-load fetch-steps --out`, in the results directory.
pub const FETCH_STEPS: &str = "fetch-steps.json";
/// End-to-end runs: `e2e-<rate>.json`.
pub const E2E_PREFIX: &str = "e2e-";

/// The numbers `<prefix><n><suffix>` among `names`, sorted.
fn numbered(names: &[String], prefix: &str, suffix: &str) -> Vec<u64> {
    let mut numbers: Vec<u64> = names
        .iter()
        .filter_map(|name| name.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok())
        .collect();
    numbers.sort_unstable();
    numbers
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The `EOS/ALO` line and the two rates from `cargo bench --bench eos_vs_alo` output.
pub fn eos_summary(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|line| {
            line.starts_with("exactly-once")
                || line.starts_with("at-least-once")
                || line.starts_with("EOS/ALO")
        })
        .map(|line| line.trim().to_owned())
        .collect()
}

/// The processor's transactions and the sink's batches during each end-to-end run, from the
/// `/metrics` scrapes taken before and after it (`e2e-<rate>-<service>-<before|after>.prom`).
fn where_the_time_goes(dir: &Path, names: &[String]) -> anyhow::Result<String> {
    let rates = numbered(names, E2E_PREFIX, "-processor-after.prom");
    if rates.is_empty() {
        return Ok(String::new());
    }
    let mut out = String::from(
        "### Transactions and batches during each run\n\n\
         From the services' own `/metrics`, scraped before and after the run (warm-up excluded):\n\n\
         | rate | processor transactions | records per transaction | mean commit ms | sink batches | events per batch | mean sink batch ms |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for rate in rates {
        let scrape = |service: &str, when: &str| {
            let path = dir.join(format!("{E2E_PREFIX}{rate}-{service}-{when}.prom"));
            std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
        };
        let processor = prom::Delta::between(
            &scrape("processor", "before")?,
            &scrape("processor", "after")?,
            "switchboard_processor_transaction_commit_seconds",
            "switchboard_processor_consumed_total",
        );
        let sink = prom::Delta::between(
            &scrape("sink", "before")?,
            &scrape("sink", "after")?,
            "switchboard_sink_batch_seconds",
            "switchboard_sink_events_total",
        );
        prom::row(&mut out, rate, processor, sink);
    }
    out.push('\n');
    Ok(out)
}

/// One row of the goals table.
fn goal_row(
    out: &mut String,
    figure: &str,
    measured: Option<f64>,
    unit: &str,
    goal: &str,
    met: Option<bool>,
) {
    let measured = match measured {
        Some(value) if unit == "×" => format!("{value:.2}×"),
        Some(value) => format!("{value:.0} {unit}"),
        None => "not measured".to_owned(),
    };
    let met = match met {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "–",
    };
    let _ = writeln!(out, "| {figure} | {measured} | {goal} | {met} |");
}

/// The figures of this run against the latency and throughput goals (issue 15): `e2e` highest
/// rate first, with their rates; `ratios` ingest's throughput over each ceiling by concurrency.
fn goals(e2e: &[(u64, EndToEnd)], ratios: &Ratios, eos_ratio: Option<f64>) -> String {
    let mut out = String::from(
        "## Goals\n\nThis run's figures against the goals (each measured in this run, on this machine; \
         the sections below have every figure and how it was measured):\n\n\
         | figure | this run | goal | |\n|---|---:|---:|---|\n",
    );
    if let Some((top, highest)) = e2e.first() {
        let (event, api) = (highest.to_event.p99, highest.to_api.p99);
        goal_row(
            &mut out,
            &format!("2xx → domain event p99 at {top}/s"),
            Some(event),
            "ms",
            "≤ 250 ms",
            Some(event <= 250.0),
        );
        goal_row(
            &mut out,
            &format!("2xx → calls API p99 at {top}/s"),
            Some(api),
            "ms",
            "≤ 400 ms",
            Some(api <= 400.0),
        );
        for (rate, run) in &e2e[1..] {
            let (e, a) = (run.to_event.p99, run.to_api.p99);
            goal_row(
                &mut out,
                &format!("2xx → domain event p99 at {rate}/s"),
                Some(e),
                "ms",
                &format!("≤ {event:.0} ms (the {top}/s figure)"),
                Some(e <= event),
            );
            goal_row(
                &mut out,
                &format!("2xx → calls API p99 at {rate}/s"),
                Some(a),
                "ms",
                &format!("≤ {api:.0} ms (the {top}/s figure)"),
                Some(a <= api),
            );
        }
    }
    let at =
        |list: &[(u64, f64)], concurrency: u64| list.iter().find(|(c, _)| *c == concurrency).map(|(_, r)| *r);
    let raw = at(&ratios.kafka, 64);
    goal_row(
        &mut out,
        "ingest / raw producer at 64 in flight",
        raw,
        "×",
        "≥ 0.95×",
        raw.map(|r| r >= 0.95),
    );
    let bare = at(&ratios.http, 256);
    goal_row(
        &mut out,
        "ingest / bare axum at 256 in flight (`switchboard-load`)",
        bare,
        "×",
        "≥ 0.75×",
        bare.map(|r| r >= 0.75),
    );
    let wrk = at(&ratios.wrk, 256);
    goal_row(
        &mut out,
        "ingest / bare axum at 256 in flight (`wrk`)",
        wrk,
        "×",
        "≥ 0.75×",
        wrk.map(|r| r >= 0.75),
    );
    goal_row(
        &mut out,
        "processor exactly-once / at-least-once",
        eos_ratio,
        "×",
        "≥ 0.9×",
        eos_ratio.map(|r| r >= 0.9),
    );
    out.push('\n');
    out
}

/// Ingest's throughput over each ceiling, by concurrency.
#[derive(Debug, Default)]
struct Ratios {
    http: Vec<(u64, f64)>,
    wrk: Vec<(u64, f64)>,
    kafka: Vec<(u64, f64)>,
}

fn over(ingest: &Run, baseline: &Run) -> Option<f64> {
    (baseline.throughput > 0.0).then(|| ingest.throughput / baseline.throughput)
}

/// The `EOS/ALO ratio` figure of `cargo bench --bench eos_vs_alo` output.
fn eos_ratio(output: &str) -> Option<f64> {
    output
        .lines()
        .find_map(|line| line.strip_prefix("EOS/ALO ratio")?.trim().parse().ok())
}

/// Renders the figures part of the report from `dir`.
pub fn render(dir: &Path, eos_output: Option<&str>) -> anyhow::Result<String> {
    let names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    let mut e2e: Vec<EndToEnd> = Vec::new();
    let mut e2e_rates: Vec<(u64, EndToEnd)> = Vec::new();
    for rate in numbered(&names, E2E_PREFIX, ".json").into_iter().rev() {
        let run: EndToEnd = read(&dir.join(format!("{E2E_PREFIX}{rate}.json")))?;
        e2e_rates.push((rate, run.clone()));
        e2e.push(run);
    }
    let mut measured = Ratios::default();

    let mut out = String::new();
    out.push_str("## Ingest throughput and its ceilings\n\n");
    let concurrencies = numbered(&names, &format!("{INGEST}-c"), ".json");
    let mut runs = Vec::new();
    let mut ratios = String::new();
    let mut with_wrk = false;
    for concurrency in concurrencies {
        let file = |target| dir.join(throughput_file(target, concurrency as usize));
        let (http, kafka, ingest): (Run, Run, Run) = (
            read(&file(HTTP_BASELINE))?,
            read(&file(KAFKA_BASELINE))?,
            read(&file(INGEST))?,
        );
        let wrk = |target: &str| {
            let path = dir.join(format!(
                "{WRK_PREFIX}{}",
                throughput_file(target, concurrency as usize)
            ));
            path.exists().then(|| read::<Run>(&path)).transpose()
        };
        measured
            .http
            .extend(over(&ingest, &http).map(|r| (concurrency, r)));
        measured
            .kafka
            .extend(over(&ingest, &kafka).map(|r| (concurrency, r)));
        let _ = write!(
            ratios,
            "| {concurrency} | **{}** |",
            report::ratio(&ingest, &http)
        );
        runs.extend([http, ingest.clone()]);
        match (wrk(HTTP_BASELINE)?, wrk(INGEST)?) {
            (Some(wrk_http), Some(wrk_ingest)) => {
                with_wrk = true;
                measured
                    .wrk
                    .extend(over(&wrk_ingest, &wrk_http).map(|r| (concurrency, r)));
                let _ = write!(ratios, " **{}** |", report::ratio(&wrk_ingest, &wrk_http));
                runs.extend([wrk_http, wrk_ingest]);
            }
            _ => ratios.push_str(" – |"),
        }
        let _ = writeln!(ratios, " **{}** |", report::ratio(&ingest, &kafka));
        runs.push(kafka);
    }
    out.push_str(&report::throughput_table(&runs));
    out.push_str("\nswitchboard-ingest's throughput as a ratio to each ceiling, each measured with the same generator (goals: ≥ 0.75× the bare axum server with either generator, ≥ 0.95× the raw producer):\n\n");
    out.push_str("| in flight | ingest / bare axum (HTTP ceiling) | same, with wrk | ingest / raw rdkafka producer (Kafka ceiling) |\n|---:|---:|---:|---:|\n");
    out.push_str(&ratios);
    if !with_wrk {
        out.push_str("\nNo wrk run: wrk was not installed (or SWITCHBOARD_BENCH_WRK=0).\n");
    }
    out.push('\n');

    out.push_str("## Twilio Event Streams through ingest\n\n");
    let mut event_runs = Vec::new();
    for concurrency in numbered(&names, &format!("{INGEST}-c"), ".json") {
        let mut batches: Vec<u64> = names
            .iter()
            .filter_map(|name| {
                let rest = name.strip_prefix(&format!("{INGEST_EVENTS}-b"))?;
                let (batch, tail) = rest.split_once("-c")?;
                (tail == format!("{concurrency}.json")).then(|| batch.parse().ok())?
            })
            .collect();
        if batches.is_empty() {
            continue;
        }
        batches.sort_unstable();
        event_runs.push(read::<Run>(
            &dir.join(throughput_file(INGEST, concurrency as usize)),
        )?);
        for batch in batches {
            event_runs.push(read(
                &dir.join(events_file(batch as usize, concurrency as usize)),
            )?);
        }
    }
    if event_runs.is_empty() {
        out.push_str("No Event Streams run.\n\n");
    } else {
        out.push_str(&report::events_table(&event_runs));
        out.push_str(
            "\nThe same calls' status events, one per callback request or as CloudEvents in one Event Streams \
             request (one signature check and one HTTP exchange per batch; one Kafka record per event, the \
             answer waiting for all of them).\n\n",
        );
    }

    out.push_str("## End-to-end latency at a fixed rate\n\n");
    if e2e.is_empty() {
        out.push_str("No end-to-end run.\n\n");
    } else {
        out.push_str(&report::end_to_end_table(&e2e));
        let calls_missing: u64 = e2e.iter().map(|r| r.api_missing).sum();
        let _ = writeln!(
            out,
            "\nGoal: p99 ≤ 250 ms. \"Sustained\" is 2xx answers per second over the run (the generator is open-loop: \
             latency counts from each request's scheduled time, so a generator or server falling behind shows up as latency). \
             Calls polled but never served `completed` within the wait: {calls_missing}.\n"
        );
        out.push_str(&where_the_time_goes(dir, &names)?);
        let windows = report::windows_table(&e2e_rates);
        if !windows.is_empty() {
            out.push_str(
                "### Over each run\n\n\
                 Each run in 5 s windows: the events answered in the window, and the processor's transactions \
                 committed in it (from its `/metrics`, scraped at each window's edges). The rate is constant \
                 over a run, and so is the work per event on our side; what grows is what the broker holds \
                 (see [PROFILE.md](PROFILE.md)):\n\n",
            );
            out.push_str(&windows);
            out.push('\n');
        }
        let steps = dir.join(TXN_STEPS);
        if steps.exists() {
            let steps: txn_steps::Steps = read(&steps)?;
            let _ = writeln!(
                out,
                "### The broker's share of a transaction\n\n\
                 `switchboard-load txn-steps`: a transactional producer configured as the processor's runs \
                 {} transactions of {} records on the idle broker, one step at a time (no consuming, no processing):\n",
                steps.transactions, steps.records_per_transaction
            );
            out.push_str(&txn_steps::table(&steps));
            let flushed = dir.join(TXN_STEPS_FLUSH);
            if flushed.exists() {
                let flushed: txn_steps::Steps = read(&flushed)?;
                out.push_str(
                    "\nThe same with rust-rdkafka's `Producer::flush` before the offsets (what `commit_transaction` \
                     does first; it polls in whole 100 ms steps while anything is in flight), as the processor \
                     committed before waiting for its delivery reports itself:\n\n",
                );
                out.push_str(&txn_steps::table(&flushed));
            }
            out.push('\n');
        }
        let hops = dir.join(FETCH_STEPS);
        if hops.exists() {
            let hops: Vec<fetch_steps::Hop> = read(&hops)?;
            out.push_str(
                "### The broker's share of a consumer hop\n\n\
                 `switchboard-load fetch-steps`: on the idle broker, one partition filled with single-record \
                 batches up to each size, then one record at a time produced and timed from its delivery report \
                 until a `read_committed` consumer waiting at the end returns it, for consumers with three \
                 `fetch.wait.max.ms` (5 ms: the watching consumer above; 20 ms: the processor's, the sink's and \
                 the actions' default). Every hop of the pipeline is such a wait; on Apache Kafka a fetch finds \
                 its offset through the segment index, whatever the partition holds:\n\n",
            );
            out.push_str(&fetch_steps::table(&hops));
            out.push('\n');
        }
        out.push_str("### Peak RSS during the end-to-end runs (VmHWM, reset before each run)\n\n");
        out.push_str(&report::rss_table(&e2e));
        out.push('\n');
    }

    out.push_str("## Processor, exactly-once vs at-least-once\n\n");
    match eos_output.map(eos_summary) {
        Some(lines) if !lines.is_empty() => {
            out.push_str("`cargo bench -p switchboard-processor --bench eos_vs_alo` (its own private broker):\n\n```\n");
            for line in lines {
                out.push_str(&line);
                out.push('\n');
            }
            out.push_str("```\n");
        }
        _ => out.push_str("Not run, or it failed: see the bench log.\n"),
    }
    let goals = goals(&e2e_rates, &measured, eos_output.and_then(eos_ratio));
    Ok(goals + &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_numbered_files() {
        let names = [
            "ingest-c256.json",
            "ingest-c64.json",
            "ingest-cx.json",
            "e2e-500.json",
        ]
        .map(String::from);
        assert_eq!(numbered(&names, "ingest-c", ".json"), [64, 256]);
        assert_eq!(numbered(&names, "e2e-", ".json"), [500]);
    }

    #[test]
    fn keeps_the_eos_figures() {
        let output = "warming up\nexactly-once        15030 events/s  (3.33s)\nat-least-once       14385 events/s  (3.48s)\nEOS/ALO ratio        1.04\n";
        assert_eq!(
            eos_summary(output),
            [
                "exactly-once        15030 events/s  (3.33s)",
                "at-least-once       14385 events/s  (3.48s)",
                "EOS/ALO ratio        1.04"
            ]
        );
    }

    #[test]
    fn renders_every_scenario_from_a_directory() {
        let dir = std::env::temp_dir().join(format!("switchboard-bench-results-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let run = |target: &str, throughput: f64| Run {
            target: target.to_owned(),
            mode: "concurrency 64".to_owned(),
            throughput,
            ..Run::default()
        };
        let write =
            |name: &str, value: &dyn erased::Json| std::fs::write(dir.join(name), value.json()).unwrap();
        write(&throughput_file(HTTP_BASELINE, 64), &run("bare axum", 10_000.0));
        write(
            &throughput_file(KAFKA_BASELINE, 64),
            &run("raw rdkafka producer", 8_000.0),
        );
        write(&throughput_file(INGEST, 64), &run("switchboard-ingest", 6_000.0));
        let wrk_file = |target| format!("{WRK_PREFIX}{}", throughput_file(target, 64));
        write(&wrk_file(HTTP_BASELINE), &run("bare axum (wrk)", 20_000.0));
        write(&wrk_file(INGEST), &run("switchboard-ingest (wrk)", 8_000.0));
        let batch = Run {
            events_per_request: Some(100),
            ..run("switchboard-ingest (Event Streams)", 150.0)
        };
        write(&events_file(100, 64), &batch);
        let mut e2e = EndToEnd::default();
        e2e.ingest.offered_rate = Some(500.0);
        e2e.ingest.elapsed_secs = 30.0;
        write("e2e-500.json", &e2e);
        let text = render(&dir, Some("EOS/ALO ratio  1.02\n")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            text.contains("| 64 | **0.60×** | **0.40×** | **0.75×** |"),
            "{text}"
        );
        assert!(
            text.contains("| switchboard-ingest (wrk) | concurrency 64 |"),
            "{text}"
        );
        assert!(text.contains("| 500/s for 30 s |"), "{text}");
        assert!(
            text.contains("| `/webhooks/twilio/calls` | 1 | concurrency 64 | 6,000 | **6,000** |"),
            "{text}"
        );
        assert!(
            text.contains("| `/webhooks/twilio-events` | 100 | concurrency 64 | 150 | **15,000** |"),
            "{text}"
        );
        assert!(text.contains("EOS/ALO ratio  1.02"), "{text}");
        // The goals table comes first, each figure from the same run.
        assert!(text.starts_with("## Goals"), "{text}");
        assert!(
            text.contains("| ingest / raw producer at 64 in flight | 0.75× | ≥ 0.95× | **not met** |"),
            "{text}"
        );
        assert!(
            text.contains("| processor exactly-once / at-least-once | 1.02× | ≥ 0.9× | met |"),
            "{text}"
        );
        assert!(
            text.contains("| 2xx → domain event p99 at 500/s | 0 ms | ≤ 250 ms | met |"),
            "{text}"
        );
    }

    /// Serializing either result type through one closure.
    mod erased {
        pub(super) trait Json {
            fn json(&self) -> String;
        }
        impl<T: serde::Serialize> Json for T {
            fn json(&self) -> String {
                serde_json::to_string(self).unwrap()
            }
        }
    }
}
