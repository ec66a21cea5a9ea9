//! Waits until the processor and the sink have caught up: their consumer-lag gauges (Prometheus
//! text on `/metrics`) are present, small and no longer moving.

use std::time::{Duration, Instant};

/// The summed `*_consumer_lag` samples of a Prometheus text page and how many series there are.
pub fn lag(text: &str) -> (u64, usize) {
    let mut total = 0.0;
    let mut series = 0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let metric = name.split('{').next().unwrap_or_default();
        if metric.ends_with("_consumer_lag")
            && let Ok(value) = value.parse::<f64>()
        {
            total += value.max(0.0);
            series += 1;
        }
    }
    (total as u64, series)
}

/// Caught up: every page has lag series, no more lag than one transaction marker per partition,
/// and the same totals as the previous poll.
pub fn settled(previous: Option<&[(u64, usize)]>, current: &[(u64, usize)]) -> bool {
    current
        .iter()
        .all(|&(total, series)| series > 0 && total <= series as u64)
        && previous == Some(current)
}

/// Polls `urls` every second until [`settled`] holds three times in a row, or `timeout`.
pub async fn wait(urls: &[String], timeout: Duration) -> anyhow::Result<Duration> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()?;
    let started = Instant::now();
    let mut previous: Option<Vec<(u64, usize)>> = None;
    let mut streak = 0;
    loop {
        let mut current = Vec::new();
        for url in urls {
            let text = match client.get(url).send().await {
                Ok(response) => response.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            current.push(lag(&text));
        }
        streak = if settled(previous.as_deref(), &current) {
            streak + 1
        } else {
            0
        };
        if streak >= 3 {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "lag did not settle within {timeout:?}: {current:?}"
        );
        previous = Some(current);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# TYPE switchboard_sink_consumer_lag gauge\n\
        switchboard_sink_consumer_lag{topic=\"switchboard.calls\",partition=\"0\"} 1\n\
        switchboard_sink_consumer_lag{topic=\"switchboard.calls\",partition=\"1\"} 0\n\
        switchboard_sink_events_total{outcome=\"stored\"} 1234\n";

    #[test]
    fn sums_the_lag_series_only() {
        assert_eq!(lag(PAGE), (1, 2));
        assert_eq!(lag(""), (0, 0));
    }

    #[test]
    fn settled_needs_series_small_lag_and_no_movement() {
        assert!(settled(Some(&[(1, 2)]), &[(1, 2)]));
        assert!(!settled(None, &[(1, 2)]), "needs a previous poll");
        assert!(!settled(Some(&[(0, 0)]), &[(0, 0)]), "no series yet");
        assert!(!settled(Some(&[(500, 6)]), &[(500, 6)]), "stuck with real lag");
        assert!(!settled(Some(&[(2, 6)]), &[(1, 6)]), "still moving");
    }
}
