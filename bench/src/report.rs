//! Results: a latency histogram summarized into figures, stored as JSON by each scenario, and the
//! markdown tables `bench/results.md` is made of.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A latency histogram in microseconds, 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Records `latency` (saturating at the histogram's bound).
pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, histogram.high());
    histogram.saturating_record(micros);
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

/// One load run against one target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// What was measured, e.g. `switchboard-ingest`.
    pub target: String,
    /// `concurrency 64` or `rate 2000/s`.
    pub mode: String,
    /// Requests completed (any outcome) in the measured interval.
    pub completed: u64,
    /// Successful (2xx, or delivered) among them.
    pub ok: u64,
    /// Failures by HTTP status (`503`) or error kind (`connect`, `timeout`, a Kafka error code).
    pub errors: BTreeMap<String, u64>,
    pub elapsed_secs: f64,
    /// Completed requests per second.
    pub throughput: f64,
    /// For fixed-rate runs: the rate asked for.
    pub offered_rate: Option<f64>,
    pub latency: Latency,
    /// Event Streams runs: CloudEvents per request (the batch size); events/s is
    /// `throughput` times this. Absent for callbacks (one event per request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_per_request: Option<u64>,
}

impl Run {
    /// Events stored per second: requests/s times the events each carries.
    pub fn events_per_second(&self) -> f64 {
        self.throughput * self.events_per_request.unwrap_or(1) as f64
    }
}

impl Run {
    pub fn new(target: &str, mode: String, histogram: &Histogram<u64>, elapsed: Duration) -> Self {
        let elapsed_secs = elapsed.as_secs_f64();
        let completed = histogram.len();
        Self {
            target: target.to_owned(),
            mode,
            completed,
            ok: completed,
            errors: BTreeMap::new(),
            elapsed_secs,
            throughput: if elapsed_secs > 0.0 {
                completed as f64 / elapsed_secs
            } else {
                0.0
            },
            offered_rate: None,
            latency: Latency::of(histogram),
            events_per_request: None,
        }
    }

    /// Records `errors` and takes them out of `ok`.
    pub fn with_errors(mut self, errors: BTreeMap<String, u64>) -> Self {
        let failed: u64 = errors.values().sum();
        self.ok = self.completed.saturating_sub(failed);
        self.errors = errors;
        self
    }

    /// A one-line summary for the terminal.
    pub fn line(&self) -> String {
        format!(
            "{:<24} {:<16} {:>9} req  {:>9.0} req/s  p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  errors {}",
            self.target,
            self.mode,
            self.completed,
            self.throughput,
            self.latency.p50,
            self.latency.p90,
            self.latency.p99,
            self.latency.p999,
            errors(&self.errors)
        )
    }
}

/// An end-to-end run at a fixed rate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndToEnd {
    pub ingest: Run,
    /// 2xx to the domain event readable on `switchboard.calls` (read_committed).
    pub to_event: Latency,
    /// Events answered 2xx but never seen on `switchboard.calls` within the wait.
    pub events_missing: u64,
    /// 2xx of a call's `completed` callback to the calls API answering `completed`.
    pub to_api: Latency,
    /// Calls polled through the API (every `api_sample_every`-th call).
    pub api_sample_every: usize,
    pub api_poll_interval_ms: u64,
    pub api_missing: u64,
    /// Peak RSS (VmHWM) during the run, kB, by process name.
    pub peak_rss_kb: BTreeMap<String, u64>,
    /// The run in consecutive windows (by when each event was answered), to show whether the
    /// latency holds still over a run at a constant rate or grows with what the broker holds.
    #[serde(default)]
    pub windows: Vec<Window>,
}

/// One window of an end-to-end run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Seconds since the load started: the window is `[from_secs, to_secs)`.
    pub from_secs: f64,
    pub to_secs: f64,
    /// 2xx to the domain event, for the events answered in the window.
    pub to_event: Latency,
    /// The processor's transactions committed in the window and their mean commit (from its
    /// `/metrics`), when the run was given the processor's metrics URL.
    pub transactions: Option<f64>,
    pub mean_commit_ms: Option<f64>,
}

/// `none`, or `503: 12, timeout: 3`.
pub fn errors(errors: &BTreeMap<String, u64>) -> String {
    if errors.values().all(|&n| n == 0) {
        return "none".to_owned();
    }
    errors
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(kind, n)| format!("{kind}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// Thousands separators: `12,345`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The throughput table: one row per run, and ingest's ratio to each baseline.
pub fn throughput_table(runs: &[Run]) -> String {
    let mut out = String::from(
        "| target | mode | requests | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | errors |\n|---|---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for run in runs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            run.target,
            run.mode,
            thousands(run.completed as f64),
            thousands(run.throughput),
            ms(run.latency.p50),
            ms(run.latency.p90),
            ms(run.latency.p99),
            ms(run.latency.p999),
            errors(&run.errors)
        );
    }
    out
}

/// Ingest's events/s through the per-callback route and through Event Streams batches.
pub fn events_table(runs: &[Run]) -> String {
    let mut out = String::from(
        "| route | events per request | mode | requests/s | events/s | p50 ms | p99 ms | errors |\n|---|---:|---|---:|---:|---:|---:|---|\n",
    );
    for run in runs {
        let (route, batch) = match run.events_per_request {
            Some(batch) => ("`/webhooks/twilio-events`", batch),
            None => ("`/webhooks/twilio/calls`", 1),
        };
        let _ = writeln!(
            out,
            "| {route} | {batch} | {} | {} | **{}** | {} | {} | {} |",
            run.mode,
            thousands(run.throughput),
            thousands(run.events_per_second()),
            ms(run.latency.p50),
            ms(run.latency.p99),
            errors(&run.errors)
        );
    }
    out
}

/// `ratio` of ingest's throughput to a baseline's, or `n/a`.
pub fn ratio(ingest: &Run, baseline: &Run) -> String {
    if baseline.throughput > 0.0 {
        format!("{:.2}×", ingest.throughput / baseline.throughput)
    } else {
        "n/a".to_owned()
    }
}

/// The end-to-end table: one row per run.
pub fn end_to_end_table(runs: &[EndToEnd]) -> String {
    let mut out = String::from(
        "| offered | sustained (2xx/s) | 2xx p50 / p99 ms | → event p50 / p99 ms | events missing | → calls API p50 / p99 ms | calls polled | errors |\n|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for run in runs {
        let _ = writeln!(
            out,
            "| {}/s for {:.0} s | {} | {} / {} | {} / {} | {} | {} / {} | {} (1 in {}, every {} ms) | {} |",
            thousands(run.ingest.offered_rate.unwrap_or_default()),
            run.ingest.elapsed_secs,
            thousands(run.ingest.ok as f64 / run.ingest.elapsed_secs.max(f64::MIN_POSITIVE)),
            ms(run.ingest.latency.p50),
            ms(run.ingest.latency.p99),
            ms(run.to_event.p50),
            ms(run.to_event.p99),
            run.events_missing,
            ms(run.to_api.p50),
            ms(run.to_api.p99),
            thousands(run.to_api.count as f64),
            run.api_sample_every,
            run.api_poll_interval_ms,
            errors(&run.ingest.errors)
        );
    }
    out
}

/// Each run in its windows: one row per window, for each rate the 2xx -> event p50 / p99 and the
/// processor's mean commit in that window. Empty when no run has windows.
pub fn windows_table(runs: &[(u64, EndToEnd)]) -> String {
    let rows = runs.iter().map(|(_, run)| run.windows.len()).max().unwrap_or(0);
    if rows == 0 {
        return String::new();
    }
    let mut out = String::from("| seconds |");
    for (rate, _) in runs {
        let _ = write!(
            out,
            " {}/s: → event p50 / p99 ms | commit ms |",
            thousands(*rate as f64)
        );
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|---:|".repeat(runs.len()));
    out.push('\n');
    let first = runs
        .iter()
        .find_map(|(_, run)| (run.windows.len() == rows).then_some(run));
    for row in 0..rows {
        let span = first
            .and_then(|run| run.windows.get(row))
            .map_or(String::new(), |w| format!("{:.0}–{:.0}", w.from_secs, w.to_secs));
        let _ = write!(out, "| {span} |");
        for (_, run) in runs {
            match run.windows.get(row) {
                Some(w) => {
                    let commit = w.mean_commit_ms.map_or("–".to_owned(), |ms| format!("{ms:.1}"));
                    let _ = write!(
                        out,
                        " {} / {} | {commit} |",
                        ms(w.to_event.p50),
                        ms(w.to_event.p99)
                    );
                }
                None => out.push_str(" | |"),
            }
        }
        out.push('\n');
    }
    out
}

/// Peak RSS per process and run, MiB.
pub fn rss_table(runs: &[EndToEnd]) -> String {
    let names: Vec<&String> = runs
        .iter()
        .flat_map(|run| run.peak_rss_kb.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if names.is_empty() {
        return "No peak RSS figures.\n".to_owned();
    }
    let mut out = String::from("| during | ");
    out.push_str(&names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(" | "));
    out.push_str(" |\n|---|");
    out.push_str(&"---:|".repeat(names.len()));
    out.push('\n');
    for run in runs {
        let _ = write!(
            out,
            "| {}/s |",
            thousands(run.ingest.offered_rate.unwrap_or_default())
        );
        for name in &names {
            match run.peak_rss_kb.get(*name) {
                Some(kb) => {
                    let _ = write!(out, " {:.1} MiB |", *kb as f64 / 1024.0);
                }
                None => out.push_str(" n/a |"),
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(target: &str, throughput: f64) -> Run {
        let mut h = histogram();
        for micros in 1..=1000u64 {
            h.record(micros * 1000).unwrap();
        }
        Run {
            throughput,
            ..Run::new(target, "concurrency 64".to_owned(), &h, Duration::from_secs(10))
        }
    }

    #[test]
    fn percentiles_come_from_the_histogram_in_milliseconds() {
        let r = run("bare axum", 100.0);
        assert_eq!(r.completed, 1000);
        assert!((r.latency.p50 - 500.0).abs() < 1.0, "{}", r.latency.p50);
        assert!((r.latency.p99 - 990.0).abs() < 1.0, "{}", r.latency.p99);
        assert!((r.latency.max - 1000.0).abs() < 1.0, "{}", r.latency.max);
    }

    #[test]
    fn the_windows_table_has_a_row_per_window_and_a_column_pair_per_rate() {
        let window = |from: f64, p99: f64, commit: Option<f64>| Window {
            from_secs: from,
            to_secs: from + 5.0,
            to_event: Latency {
                count: 1,
                p50: p99 / 2.0,
                p99,
                ..Latency::default()
            },
            transactions: commit.map(|_| 10.0),
            mean_commit_ms: commit,
        };
        let fast = EndToEnd {
            windows: vec![window(0.0, 80.0, Some(30.0)), window(5.0, 300.0, Some(60.0))],
            ..EndToEnd::default()
        };
        let slow = EndToEnd {
            windows: vec![window(0.0, 90.0, None)],
            ..EndToEnd::default()
        };
        let table = windows_table(&[(2000, fast), (200, slow)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(
            lines[0].contains("2,000/s") && lines[0].contains("200/s"),
            "{table}"
        );
        assert!(
            lines[2].starts_with("| 0–5 |") && lines[2].contains("80.00") && lines[2].contains("| 30.0 |"),
            "{table}"
        );
        assert!(
            lines[3].starts_with("| 5–10 |") && lines[3].contains("300") && lines[3].contains("| 60.0 |"),
            "{table}"
        );
        assert!(
            lines[2].contains("| – |"),
            "a window without commit figures shows a dash: {table}"
        );
        assert!(windows_table(&[(200, EndToEnd::default())]).is_empty());
    }

    #[test]
    fn an_empty_histogram_reports_zeros() {
        assert_eq!(Latency::of(&histogram()), Latency::default());
    }

    #[test]
    fn recording_saturates_instead_of_failing() {
        let mut h = histogram();
        record(&mut h, Duration::from_secs(3600));
        record(&mut h, Duration::ZERO);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn errors_are_listed_by_kind_and_taken_out_of_ok() {
        let mut errs = BTreeMap::new();
        errs.insert("503".to_owned(), 3);
        errs.insert("timeout".to_owned(), 1);
        let r = run("ingest", 1.0).with_errors(errs.clone());
        assert_eq!(r.ok, 996);
        assert_eq!(errors(&r.errors), "503: 3, timeout: 1");
        assert_eq!(errors(&BTreeMap::new()), "none");
    }

    #[test]
    fn tables_are_markdown_with_thousands_separators() {
        let table = throughput_table(&[run("bare axum", 12_345.4)]);
        assert!(table.starts_with("| target | mode |"));
        assert!(
            table.contains("| bare axum | concurrency 64 | 1,000 | 12,345 | 500 | 900 | 990 | 999 | none |"),
            "{table}"
        );
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }

    #[test]
    fn ratios_are_ingest_over_baseline() {
        assert_eq!(ratio(&run("ingest", 600.0), &run("axum", 1000.0)), "0.60×");
        assert_eq!(ratio(&run("ingest", 600.0), &run("axum", 0.0)), "n/a");
    }

    #[test]
    fn rss_table_has_a_column_per_process() {
        let mut e2e = EndToEnd::default();
        e2e.ingest.offered_rate = Some(2000.0);
        e2e.peak_rss_kb.insert("ingest".to_owned(), 20_480);
        e2e.peak_rss_kb.insert("sink".to_owned(), 51_200);
        let table = rss_table(&[e2e]);
        assert_eq!(
            table,
            "| during | ingest | sink |\n|---|---:|---:|\n| 2,000/s | 20.0 MiB | 50.0 MiB |\n"
        );
    }
}
