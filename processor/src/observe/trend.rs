//! Trends: the last hour of samples, kept by the sampler in a ring buffer ([`Trends`]) and drawn
//! as inline SVG charts ([`charts`], [`svg`]): request rate per source, event rate per domain
//! topic, DLQ depth, retry depth, consumer lag and the event age's p50/p99. A chart shows at a
//! glance whether things are getting worse; a number does not.
//!
//! Every chart is built from the same snapshots the page, `/dashboard.json` and the
//! `switchboard_observed_*` gauges show, so a series' last point is the current sample's number.
//! Each series carries its metric and labels and its last value as attributes (`data-metric`,
//! `data-source`/`data-topic`/`data-quantile`, `data-last`), for tests and scrapers.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::metrics as m;
use super::page::escape;
use super::sample::{INTERVAL, Snapshot};

/// How far back the charts reach.
pub(crate) const WINDOW: Duration = Duration::from_secs(3600);

/// Samples held: one [`WINDOW`] of them.
pub(crate) const CAPACITY: usize = (WINDOW.as_secs() / INTERVAL.as_secs()) as usize;

/// The last [`CAPACITY`] samples, oldest first, without their recent events.
#[derive(Debug, Clone, Default)]
pub(crate) struct Trends {
    samples: VecDeque<Snapshot>,
}

impl Trends {
    /// Appends `snapshot` (its recent events are not kept), dropping the oldest past [`CAPACITY`].
    pub(crate) fn push(&mut self, mut snapshot: Snapshot) {
        if self.samples.len() == CAPACITY {
            self.samples.pop_front();
        }
        snapshot.recent = Vec::new();
        self.samples.push_back(snapshot);
    }
}

/// One line of a chart: a value per sample (`None`: not measured in that sample).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Series {
    pub(crate) name: String,
    /// The gauge this series shows, and the label that picks it.
    pub(crate) metric: &'static str,
    pub(crate) label: Option<(&'static str, String)>,
    pub(crate) values: Vec<Option<f64>>,
}

impl Series {
    fn last(&self) -> Option<f64> {
        self.values.last().copied().flatten()
    }
}

/// One chart: its id, title, unit and lines, over the same samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Chart {
    pub(crate) id: &'static str,
    pub(crate) title: &'static str,
    pub(crate) unit: &'static str,
    /// Sample numbers, oldest first.
    pub(crate) samples: Vec<u64>,
    pub(crate) series: Vec<Series>,
}

/// A series of `name` whose value in each sample is `value(sample)`.
fn series(
    trends: &Trends,
    name: impl Into<String>,
    metric: &'static str,
    label: Option<(&'static str, String)>,
    value: impl Fn(&Snapshot) -> Option<f64>,
) -> Series {
    Series {
        name: name.into(),
        metric,
        label,
        values: trends.samples.iter().map(value).collect(),
    }
}

/// The charts of `trends`, in page order.
pub(crate) fn charts(trends: &Trends) -> Vec<Chart> {
    let samples: Vec<u64> = trends.samples.iter().map(|s| s.sample).collect();
    let chart = |id, title, unit, series| Chart {
        id,
        title,
        unit,
        samples: samples.clone(),
        series,
    };
    // A series per name any sample has (sources, domain topics), labelled `label`.
    let per_name = |label: &'static str, metric: &'static str, rates: fn(&Snapshot) -> Vec<(&str, f64)>| {
        let mut names: Vec<String> = trends
            .samples
            .iter()
            .flat_map(|s| rates(s).into_iter().map(|(name, _)| name.to_owned()))
            .collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let labelled = Some((label, name.clone()));
                series(trends, name.clone(), metric, labelled, move |s| {
                    rates(s)
                        .into_iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, rate)| rate)
                })
            })
            .collect()
    };
    vec![
        chart(
            "requests",
            "Requests per source",
            "requests/s",
            per_name("source", m::REQUESTS_PER_SECOND, |s| {
                s.sources
                    .iter()
                    .map(|r| (r.source.as_str(), r.requests_per_second))
                    .collect()
            }),
        ),
        chart(
            "events",
            "Events per domain topic",
            "events/s",
            per_name("topic", m::EVENTS_PER_SECOND, |s| {
                s.events
                    .iter()
                    .map(|r| (r.topic.as_str(), r.events_per_second))
                    .collect()
            }),
        ),
        chart(
            "dlq",
            "DLQ depth",
            "records",
            vec![series(trends, "DLQ", m::DLQ_DEPTH, None, |s| {
                Some(s.dlq_depth as f64)
            })],
        ),
        chart(
            "retry",
            "Retry depth",
            "records",
            vec![series(trends, "retry topics", m::RETRY_DEPTH, None, |s| {
                s.actions
                    .as_ref()
                    .filter(|a| a.reachable)
                    .map(|a| a.retry_depth_total as f64)
            })],
        ),
        chart(
            "lag",
            "Consumer lag",
            "records",
            vec![series(trends, "raw topics", crate::metrics::LAG, None, |s| {
                Some(s.consumer_lag_total as f64)
            })],
        ),
        chart(
            "age",
            "Event age, received to committed",
            "s",
            [("p50", "0.5"), ("p99", "0.99")]
                .into_iter()
                .map(|(name, quantile)| {
                    let label = Some(("quantile", quantile.to_owned()));
                    series(trends, name, m::EVENT_AGE_QUANTILE, label, move |s| {
                        s.event_age.as_ref().map(|a| {
                            if name == "p50" {
                                a.p50_seconds
                            } else {
                                a.p99_seconds
                            }
                        })
                    })
                })
                .collect(),
        ),
    ]
}

const WIDTH: f64 = 360.0;
const HEIGHT: f64 = 90.0;
/// Line colours, by series index.
const COLOURS: [&str; 6] = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

/// A number as a chart label: integers as such, others with up to three decimals.
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    }
}

/// `chart` as an inline SVG with its legend: x is the sample's place in the window (the newest at
/// the right edge), y runs from 0 to the largest value shown. A gap in a series (a sample that did
/// not measure it) breaks its line.
pub(crate) fn svg(chart: &Chart) -> String {
    let max = chart
        .series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .fold(0.0_f64, |max, &v| if v.is_finite() { max.max(v) } else { max });
    let top = if max > 0.0 { max } else { 1.0 };
    let step = WIDTH / (CAPACITY.max(2) - 1) as f64;
    let offset = CAPACITY.saturating_sub(chart.samples.len());
    let mut out = String::new();
    let _ = write!(
        out,
        "<figure class=\"chart\" id=\"chart-{id}\" data-chart=\"{id}\" data-samples=\"{n}\" data-sample=\"{last}\"><figcaption>{title} \
         <span class=\"meta\">({unit}, last hour; max {max})</span></figcaption>\
         <svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\" \
         aria-label=\"{title}\" preserveAspectRatio=\"none\"><rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#fff\"/>",
        id = chart.id,
        n = chart.samples.len(),
        last = chart.samples.last().copied().unwrap_or_default(),
        title = escape(chart.title),
        unit = escape(chart.unit),
        max = number(max),
    );
    for (index, series) in chart.series.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let mut runs: Vec<String> = vec![String::new()];
        for (at, value) in series.values.iter().enumerate() {
            match value.filter(|v| v.is_finite()) {
                Some(value) => {
                    let x = (offset + at) as f64 * step;
                    let y = HEIGHT - value / top * (HEIGHT - 4.0) - 2.0;
                    let run = runs.last_mut().expect("never empty");
                    let _ = write!(run, "{x:.1},{y:.1} ");
                }
                None if !runs.last().is_some_and(String::is_empty) => runs.push(String::new()),
                None => {}
            }
        }
        for points in runs.iter().filter(|r| !r.is_empty()) {
            let _ = write!(
                out,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\" points=\"{}\"/>",
                points.trim_end()
            );
        }
    }
    out.push_str("</svg><ul class=\"legend\">");
    for (index, series) in chart.series.iter().enumerate() {
        let label = series
            .label
            .as_ref()
            .map(|(name, value)| format!(" data-{name}=\"{}\"", escape(value)))
            .unwrap_or_default();
        let last = series.last().map_or_else(|| "-".to_owned(), number);
        let _ = write!(
            out,
            "<li><span class=\"swatch\" style=\"background:{colour}\"></span>{name} \
             <span class=\"series-last\" data-chart=\"{id}\" data-metric=\"{metric}\"{label} data-last=\"{last}\">{last}</span></li>",
            colour = COLOURS[index % COLOURS.len()],
            name = escape(&series.name),
            id = chart.id,
            metric = series.metric,
        );
    }
    out.push_str("</ul></figure>");
    out
}

/// Every chart of `trends`, as the page's trends section holds them.
pub(crate) fn section(trends: &Trends) -> String {
    charts(trends).iter().map(svg).collect()
}

#[cfg(test)]
mod tests {
    use super::super::sample::{EventAge, SourceRate, TopicRate};
    use super::*;

    fn snapshot(sample: u64, twilio: f64, dlq: i64) -> Snapshot {
        Snapshot {
            sample,
            sources: vec![SourceRate {
                source: "twilio".into(),
                requests_per_second: twilio,
            }],
            events: vec![TopicRate {
                topic: "switchboard.calls".into(),
                events_per_second: twilio / 2.0,
            }],
            dlq_depth: dlq,
            event_age: sample.is_multiple_of(2).then_some(EventAge {
                events: 3,
                p50_seconds: 0.05,
                p99_seconds: 0.25,
            }),
            ..Snapshot::default()
        }
    }

    #[test]
    fn keeps_the_last_hour_oldest_first_without_recent_events() {
        let mut trends = Trends::default();
        for sample in 1..=(CAPACITY as u64 + 5) {
            let mut s = snapshot(sample, sample as f64, 0);
            s.recent = vec![Default::default()];
            trends.push(s);
        }
        assert_eq!(trends.samples.len(), CAPACITY);
        let samples: Vec<u64> = trends.samples.iter().map(|s| s.sample).collect();
        assert_eq!(samples.first(), Some(&6));
        assert_eq!(samples.last(), Some(&(CAPACITY as u64 + 5)));
        assert!(samples.windows(2).all(|w| w[1] == w[0] + 1));
        assert!(trends.samples.iter().all(|s| s.recent.is_empty()));
    }

    #[test]
    fn each_series_holds_each_samples_number_and_gaps_where_not_measured() {
        let mut trends = Trends::default();
        for (sample, twilio, dlq) in [(1, 2.0, 0), (2, 4.0, 1), (3, 6.0, 1)] {
            trends.push(snapshot(sample, twilio, dlq));
        }
        let charts = charts(&trends);
        let ids: Vec<&str> = charts.iter().map(|c| c.id).collect();
        assert_eq!(ids, ["requests", "events", "dlq", "retry", "lag", "age"]);
        assert_eq!(charts[0].samples, [1, 2, 3]);
        assert_eq!(charts[0].series[0].name, "twilio");
        assert_eq!(charts[0].series[0].values, [Some(2.0), Some(4.0), Some(6.0)]);
        assert_eq!(charts[1].series[0].values, [Some(1.0), Some(2.0), Some(3.0)]);
        assert_eq!(charts[2].series[0].values, [Some(0.0), Some(1.0), Some(1.0)]);
        // No actions service configured: retry depth not measured.
        assert_eq!(charts[3].series[0].values, [None, None, None]);
        let age = &charts[5];
        assert_eq!(age.series[1].values, [None, Some(0.25), None]);
    }

    #[test]
    fn svg_draws_each_series_and_labels_its_last_value() {
        let mut trends = Trends::default();
        for (sample, twilio, dlq) in [(1, 2.0, 0), (2, 4.0, 1), (3, 6.5, 1)] {
            trends.push(snapshot(sample, twilio, dlq));
        }
        let charts = charts(&trends);
        let requests = svg(&charts[0]);
        assert!(
            requests.contains("data-chart=\"requests\" data-samples=\"3\" data-sample=\"3\""),
            "{requests}"
        );
        assert!(requests.contains("max 6.5"), "{requests}");
        assert!(
            requests.contains(&format!(
                "data-chart=\"requests\" data-metric=\"{}\" data-source=\"twilio\" data-last=\"6.5\">6.5<",
                m::REQUESTS_PER_SECOND
            )),
            "{requests}"
        );
        // Three points, the newest at the right edge at the top.
        let points = requests
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(points.split(' ').count(), 3, "{points}");
        assert!(points.ends_with(&format!("{WIDTH:.1},2.0")), "{points}");
        // A gap breaks the line: p99 measured in sample 2 only is one one-point line.
        let age = svg(&charts[5]);
        assert_eq!(age.matches("<polyline").count(), 2, "{age}");
        assert!(age.contains("data-quantile=\"0.99\" data-last=\"-\">-<"), "{age}");
    }

    #[test]
    fn names_from_providers_are_escaped() {
        let mut trends = Trends::default();
        let mut s = snapshot(1, 1.0, 0);
        s.sources[0].source = "<script>\"x\"".into();
        trends.push(s);
        let html = section(&trends);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;&quot;x&quot;"), "{html}");
    }
}
