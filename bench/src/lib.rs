//! switchboard-bench: the load generator behind `make bench` (`switchboard-load`).
//!
//! - [`workload`]: pre-signed, realistic Twilio status callbacks (signed like Twilio, before the
//!   clock starts);
//! - [`pacing`]: the open-loop schedule of fixed-rate runs;
//! - [`http_load`]: closed-loop (fixed concurrency) and open-loop (fixed rate) HTTP drivers;
//! - [`serve_ok`]: baseline (a), a bare axum server; [`kafka_load`]: baseline (b), the raw producer;
//! - [`e2e`]: 2xx → domain event → calls API latency; [`rss`]: peak memory; [`drain`]: waiting for
//!   the pipeline to catch up;
//! - [`preload`]: the processor's state changelogs filled with remembered events;
//! - [`report`]: figures, JSON results and the markdown of `bench/results.md`; [`results`]: that
//!   file.

pub mod drain;
pub mod e2e;
pub mod fetch_steps;
pub mod http_load;
pub mod kafka_load;
pub mod pacing;
pub mod preload;
pub mod prom;
pub mod report;
pub mod results;
pub mod rss;
pub mod serve_ok;
pub mod serve_otlp;
pub mod txn_steps;
pub mod workload;

use std::time::Duration;

/// Parses `30`, `30s`, `250ms`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number.parse().map_err(|_| format!("not a duration: {text}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit in {text}: use ms, s or m")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("s").is_err());
    }
}
