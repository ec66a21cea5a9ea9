//! Reads the Prometheus text the services serve on `/metrics` (two scrapes around a run) into the
//! figures of the report's "where the time goes" table.

use std::fmt::Write as _;

/// The sum over every label set of the samples named exactly `name` in a Prometheus text
/// exposition (`name{labels} value` or `name value`); 0 when there is none.
pub fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = match rest.as_bytes().first()? {
                b'{' => rest.split_once("} ")?.1,
                b' ' => &rest[1..],
                _ => return None,
            };
            value.trim().parse::<f64>().ok()
        })
        .sum()
}

/// What a service did between two scrapes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delta {
    /// Units of work (transactions, batches): the histogram's `_count`.
    pub count: f64,
    /// Records they carried.
    pub records: f64,
    /// Mean duration of one, in milliseconds (the histogram's `_sum` / `_count`).
    pub mean_ms: f64,
}

impl Delta {
    /// `histogram` (seconds) and `records` (a counter) from `before` to `after`.
    pub fn between(before: &str, after: &str, histogram: &str, records: &str) -> Self {
        let diff = |name: &str| total(after, name) - total(before, name);
        let count = diff(&format!("{histogram}_count"));
        let sum = diff(&format!("{histogram}_sum"));
        Self {
            count,
            records: diff(records),
            mean_ms: if count > 0.0 { sum / count * 1000.0 } else { 0.0 },
        }
    }

    fn per_unit(&self) -> f64 {
        if self.count > 0.0 {
            self.records / self.count
        } else {
            0.0
        }
    }
}

/// The table row of one end-to-end rate: the processor's transactions and the sink's batches.
pub fn row(out: &mut String, rate: u64, processor: Delta, sink: Delta) {
    let _ = writeln!(
        out,
        "| {rate}/s | {:.0} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} |",
        processor.count,
        processor.per_unit(),
        processor.mean_ms,
        sink.count,
        sink.per_unit(),
        sink.mean_ms
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# TYPE x counter\n\
        switchboard_processor_consumed_total{topic=\"a\"} 10\n\
        switchboard_processor_consumed_total{topic=\"b\"} 5\n\
        switchboard_processor_transaction_commit_seconds_sum 1.5\n\
        switchboard_processor_transaction_commit_seconds_count 10\n";
    const AFTER: &str = "switchboard_processor_consumed_total{topic=\"a\"} 110\n\
        switchboard_processor_consumed_total{topic=\"b\"} 105\n\
        switchboard_processor_consumed_total_other 7\n\
        switchboard_processor_transaction_commit_seconds_sum 5.5\n\
        switchboard_processor_transaction_commit_seconds_count 50\n";

    #[test]
    fn sums_label_sets_and_ignores_longer_names() {
        assert_eq!(total(AFTER, "switchboard_processor_consumed_total"), 215.0);
        assert_eq!(total(AFTER, "missing"), 0.0);
    }

    #[test]
    fn deltas_between_two_scrapes() {
        let delta = Delta::between(
            BEFORE,
            AFTER,
            "switchboard_processor_transaction_commit_seconds",
            "switchboard_processor_consumed_total",
        );
        assert_eq!(delta.count, 40.0);
        assert_eq!(delta.records, 200.0);
        assert_eq!(delta.mean_ms, 100.0);
        assert_eq!(delta.per_unit(), 5.0);
    }
}
