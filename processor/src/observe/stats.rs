//! The arithmetic of the debug endpoint and the dashboard: rates from two samples, success rate,
//! the most common error reasons. Pure, no I/O.

use std::collections::BTreeMap;

use serde::Serialize;

/// A growing total (sum of end offsets) at a time (epoch milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Point {
    pub(crate) at_millis: i64,
    pub(crate) total: i64,
}

/// Per-second rate between two samples of a total, rounded to 0.01 (the precision the dashboard
/// shows, so that page and metric print the same number). 0 without an earlier sample, when no
/// time passed, or when the total went down (a recreated topic).
pub(crate) fn rate(previous: Option<Point>, current: Point) -> f64 {
    let Some(previous) = previous else {
        return 0.0;
    };
    let elapsed = current.at_millis - previous.at_millis;
    let grown = current.total - previous.total;
    if elapsed <= 0 || grown <= 0 {
        return 0.0;
    }
    round2(grown as f64 * 1000.0 / elapsed as f64)
}

/// `value` rounded to two decimals.
pub(crate) fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// processed / (processed + dead-lettered), rounded to 0.0001; `None` when both are 0.
pub(crate) fn success_rate(processed: u64, dead_lettered: u64) -> Option<f64> {
    let total = processed + dead_lettered;
    (total > 0).then(|| (processed as f64 / total as f64 * 10_000.0).round() / 10_000.0)
}

/// The `q` quantile (0..1) of a histogram given as cumulative buckets `(upper bound, count)` in
/// ascending bound order (the last one `+Inf`), interpolated linearly inside the bucket as
/// Prometheus' `histogram_quantile` does; a quantile in the `+Inf` bucket is the highest finite
/// bound. `None` without observations. Rounded to the millisecond.
pub(crate) fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            let value = if bound.is_infinite() {
                lower.0
            } else if count > lower.1 {
                lower.0 + (bound - lower.0) * (rank - lower.1) / (count - lower.1)
            } else {
                bound
            };
            return Some((value * 1000.0).round() / 1000.0);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

/// `current - previous` per bucket (both cumulative, same bounds): the observations between two
/// samples. `current` alone when the bounds differ or a count went down (a restart).
pub(crate) fn bucket_delta(previous: &[(f64, f64)], current: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let comparable = previous.len() == current.len()
        && previous
            .iter()
            .zip(current)
            .all(|(p, c)| p.0 == c.0 && p.1 <= c.1);
    if !comparable {
        return current.to_vec();
    }
    previous
        .iter()
        .zip(current)
        .map(|(p, c)| (c.0, c.1 - p.1))
        .collect()
}

/// One error reason and how many DLQ records gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Reason {
    /// The `error-class` header (`unknown` when missing).
    pub(crate) class: String,
    /// The `error-reason` header (`unknown` when missing).
    pub(crate) reason: String,
    pub(crate) count: u64,
}

/// The `top` most common (class, reason) pairs, most common first, ties by class then reason.
pub(crate) fn top_reasons<I>(records: I, top: usize) -> Vec<Reason>
where
    I: IntoIterator<Item = (Option<String>, Option<String>)>,
{
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (class, reason) in records {
        let key = (
            class.unwrap_or_else(|| "unknown".into()),
            reason.unwrap_or_else(|| "unknown".into()),
        );
        *counts.entry(key).or_default() += 1;
    }
    let mut reasons: Vec<Reason> = counts
        .into_iter()
        .map(|((class, reason), count)| Reason { class, reason, count })
        .collect();
    // Stable sort: equal counts keep the map's (class, reason) order.
    reasons.sort_by_key(|r| std::cmp::Reverse(r.count));
    reasons.truncate(top);
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at_millis: i64, total: i64) -> Point {
        Point { at_millis, total }
    }

    #[test]
    fn rates_come_from_offset_deltas() {
        assert_eq!(rate(None, point(5_000, 100)), 0.0);
        assert_eq!(rate(Some(point(0, 100)), point(5_000, 110)), 2.0);
        assert_eq!(rate(Some(point(0, 0)), point(3_000, 1)), 0.33);
        assert_eq!(
            rate(Some(point(0, 100)), point(5_000, 50)),
            0.0,
            "recreated topic"
        );
        assert_eq!(
            rate(Some(point(5_000, 100)), point(5_000, 150)),
            0.0,
            "no time passed"
        );
    }

    #[test]
    fn quantiles_interpolate_inside_cumulative_buckets() {
        let buckets = [(0.1, 50.0), (0.25, 90.0), (0.5, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(&buckets, 0.5), Some(0.1));
        assert_eq!(quantile(&buckets, 0.7), Some(0.175));
        assert_eq!(quantile(&buckets, 0.99), Some(0.475));
        assert_eq!(quantile(&[(0.1, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(
            quantile(&[(0.1, 0.0), (1.0, 1.0), (f64::INFINITY, 3.0)], 0.99),
            Some(1.0),
            "in +Inf: the highest finite bound"
        );
        let before = [(0.1, 10.0), (f64::INFINITY, 10.0)];
        let after = [(0.1, 10.0), (f64::INFINITY, 14.0)];
        assert_eq!(
            bucket_delta(&before, &after),
            vec![(0.1, 0.0), (f64::INFINITY, 4.0)]
        );
        assert_eq!(bucket_delta(&after, &before), before.to_vec(), "a restart");
    }

    #[test]
    fn success_rate_is_processed_over_processed_and_dead_lettered() {
        assert_eq!(success_rate(0, 0), None);
        assert_eq!(success_rate(4, 1), Some(0.8));
        assert_eq!(success_rate(2, 1), Some(0.6667));
        assert_eq!(success_rate(0, 3), Some(0.0));
    }

    #[test]
    fn top_reasons_groups_counts_and_truncates() {
        let s = |v: &str| Some(v.to_owned());
        let records = vec![
            (s("missing_field"), s("CallSid")),
            (s("undecodable"), s("bad magic byte")),
            (s("missing_field"), s("CallSid")),
            (None, None),
            (s("unknown_kind"), s("Foo")),
            (s("missing_field"), s("CallSid")),
            (s("undecodable"), s("bad magic byte")),
        ];
        let top = top_reasons(records, 3);
        assert_eq!(
            top,
            vec![
                Reason {
                    class: "missing_field".into(),
                    reason: "CallSid".into(),
                    count: 3
                },
                Reason {
                    class: "undecodable".into(),
                    reason: "bad magic byte".into(),
                    count: 2
                },
                Reason {
                    class: "unknown".into(),
                    reason: "unknown".into(),
                    count: 1
                },
            ]
        );
        let many = (0..30).map(|i| (s("c"), Some(format!("r{i:02}"))));
        assert_eq!(top_reasons(many, 10).len(), 10);
    }
}
