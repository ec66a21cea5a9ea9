//! The debug endpoint and the dashboard against a processor with real traffic.
//!
//! The processor runs as a child process (not in-process): the Prometheus recorder is
//! process-wide, so an in-process processor's `/metrics` would also count the records of every
//! other test running in this binary, and their dashboard samplers would overwrite its
//! `switchboard_observed_*` gauges. A child's `/metrics` is its own, so "the numbers match
//! `/metrics`" can be asserted exactly.
//!
//! - `debug_endpoint_counts_what_was_sent_and_matches_the_metrics`: 401 without or with a wrong
//!   token; with it, counts per source and type equal what was sent and the processor's counters,
//!   top errors hold the poison's reason, recent events hold the ids sent, bodies only on request.
//! - `dashboard_in_headless_chromium_shows_the_numbers_of_metrics`: no token configured (the
//!   dashboard is open, the debug endpoint answers 403), a fake actions service for retry depth
//!   and breakers; Chromium loads `/` (its script polls `/dashboard.json`) and the numbers in the
//!   DOM equal the gauges `/metrics` exports for the same sample, and the consumer lag its lag
//!   metric; a screenshot is kept under the test's output directory
//!   (`target/tmp/test-output/dashboard.png`).
//! - `every_sample_shows_the_rates_that_were_sent`: under steady traffic at a known rate, each of
//!   several consecutive samples shows that rate (within a tolerance) for the raw topic and its
//!   domain topic, and 0 for every other source and topic: not merely a rate above zero.
//! - `a_webhook_is_visible_well_before_the_commit_interval_and_its_age_is_measured`: with a 5 s
//!   commit interval, one webhook at a time is visible downstream within a second or two (the
//!   transaction commits once the processor is caught up); the event-age histogram on `/metrics`
//!   counts each committed domain event once, with plausible ages, and the dashboard shows its
//!   p50/p99.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use switchboard_processor::metrics as processor_metrics;
use switchboard_processor::observe::metrics as observed;
use switchboard_schemas::domain::CallEvent;
use switchboard_schemas::{RawWebhook, Source, topics};
use switchboard_tests::broker::PrivateBroker;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(90);
const TOKEN: &str = "observe-test-token";

fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Where this test binary keeps its output (logs, the screenshot).
pub(crate) fn output_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-output");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A processor child with its admin server on a known port.
pub(crate) struct Processor {
    _proc: Proc,
    pub(crate) base: String,
}

pub(crate) async fn start_processor(
    broker: &PrivateBroker,
    instance: &str,
    token: Option<&str>,
    actions_admin_url: Option<&str>,
    extra_env: &[(&str, String)],
) -> Processor {
    let port = free_port();
    let mut env = vec![
        ("SWITCHBOARD_INSTANCE_ID", instance.to_owned()),
        ("SWITCHBOARD_ADMIN_LISTEN", format!("127.0.0.1:{port}")),
        ("SWITCHBOARD_TOPIC_PARTITIONS", PARTITIONS.to_string()),
    ];
    env.extend(extra_env.iter().cloned());
    if let Some(token) = token {
        env.push(("SWITCHBOARD_ADMIN_TOKEN", token.to_owned()));
    }
    if let Some(url) = actions_admin_url {
        env.push(("SWITCHBOARD_ACTIONS_ADMIN_URL", url.to_owned()));
    }
    let log = output_dir().join(format!("observe-{instance}.log"));
    println!("processor log: {}", log.display());
    let proc = spawn(broker, &[], &env, &log);
    let base = format!("http://127.0.0.1:{port}");
    let readyz = format!("{base}/readyz");
    eventually(WAIT, || async {
        let response = reqwest::get(&readyz).await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    Processor { _proc: proc, base }
}

/// A Twilio call envelope received now (so that its record time is inside any window).
fn call_now(phone: &str, call_sid: &str, event_id: &str, sequence: u32) -> RawWebhook {
    RawWebhook {
        received_at: now_millis(),
        ..twilio_call(phone, call_sid, "completed", sequence, event_id)
    }
}

async fn metrics_text(processor: &Processor) -> String {
    reqwest::get(format!("{}/metrics", processor.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn debug(processor: &Processor, query: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(format!("{}/debug/webhooks{query}", processor.base));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn recent_ids(report: &Value) -> Vec<String> {
    report["recent"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_endpoint_counts_what_was_sent_and_matches_the_metrics() {
    let broker = PrivateBroker::start().unwrap();
    create_raw_topics(&broker).await;
    let processor = start_processor(&broker, "observe-debug", Some(TOKEN), None, &[]).await;
    let raw = RawProducer::new(&broker);
    let phone = "+15552220001";

    let good: Vec<String> = (1..=4).map(|n| format!("EV-obs-{n}")).collect();
    for (n, id) in good.iter().enumerate() {
        raw.send(&call_now(phone, &format!("CA{n:032}"), id, 10)).await;
    }
    // Poison: a Twilio recording callback without CallSid, and junk on the Stripe topic.
    let mut missing = call_now(phone, "CA-M", "EV-obs-poison", 1);
    missing.body = b"AccountSid=AC1&RecordingSid=RE1&RecordingStatus=completed".to_vec();
    raw.send(&missing).await;
    raw.send_bytes(
        Source::Stripe.raw_topic(),
        phone,
        b"not an avro record",
        "EV-obs-junk",
        "stripe",
    )
    .await;

    // Refused without the token or with a wrong one.
    let (status, body) = debug(&processor, "", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body, serde_json::json!({"error": "unauthorized"}));
    assert_eq!(debug(&processor, "", Some("wrong")).await.0, 401);
    assert_eq!(debug(&processor, "?hours=0", Some(TOKEN)).await.0, 400);

    // Wait until every record went through (4 domain events, 2 DLQ records).
    let report = eventually(WAIT, || async {
        let (status, report) = debug(&processor, "?hours=24", Some(TOKEN)).await;
        if status == 503 {
            // "Kafka is unavailable, try again": its reads timed out (a loaded machine).
            println!("waiting: {report}");
            return None;
        }
        assert_eq!(status, 200, "{report}");
        let done = report["processed"] == 4 && report["dead_lettered"] == 2;
        if !done {
            println!(
                "waiting: processed {} dead-lettered {}",
                report["processed"], report["dead_lettered"]
            );
        }
        done.then_some(report)
    })
    .await;
    println!("{}", serde_json::to_string_pretty(&report).unwrap());

    // Counts equal what was sent.
    assert_eq!(
        report["sources"],
        serde_json::json!({"twilio": 5, "stripe": 1, "calendly": 0, "generic": 0})
    );
    assert_eq!(
        report["types"],
        serde_json::json!({"calls": 4, "messages": 0, "billing": 0, "bookings": 0, "generic": 0})
    );
    assert_eq!(report["dlq_records"], 2);
    assert_eq!(report["retrying"], 0);
    assert_eq!(report["actions_dead_lettered"], 0);
    assert_eq!(report["success_rate"], 0.6667);
    assert_eq!(report["window"]["hours"], 24);
    assert_eq!(
        report["dlq_scan"],
        serde_json::json!({"scanned": 2, "truncated": false})
    );

    // ... and the processor's own counters.
    let text = metrics_text(&processor).await;
    for source in Source::ALL {
        assert_eq!(
            metric(
                &text,
                processor_metrics::CONSUMED,
                &[("topic", source.raw_topic())]
            ),
            report["sources"][source.as_str()].as_f64().unwrap(),
            "{source:?}\n{text}"
        );
    }
    for topic in topics::DOMAIN_TOPICS {
        let type_name = topic.strip_prefix("switchboard.").unwrap();
        assert_eq!(
            metric(&text, processor_metrics::PRODUCED, &[("topic", topic)]),
            report["types"][type_name].as_f64().unwrap(),
            "{topic}\n{text}"
        );
    }
    assert_eq!(
        metric(&text, processor_metrics::DLQ, &[]),
        report["dead_lettered"].as_f64().unwrap(),
        "{text}"
    );

    // The most common reasons hold the poison's, as the DLQ record says it.
    let dlq = read_raw(&broker, topics::DLQ).await;
    let poison = dlq
        .iter()
        .find(|m| header(m, "event-id").as_deref() == Some("EV-obs-poison"))
        .expect("the poison is in the DLQ");
    let reason = header(poison, "error-reason").unwrap();
    let class = header(poison, "error-class").unwrap();
    assert_eq!(class, "missing_field");
    let top = report["top_errors"].as_array().unwrap();
    assert!(
        top.iter()
            .any(|r| r["class"] == class.as_str() && r["reason"] == reason.as_str() && r["count"] == 1),
        "{top:?}"
    );
    assert!(top.iter().any(|r| r["class"] == "undecodable"), "{top:?}");

    // The newest events: every id sent, metadata only.
    let ids = recent_ids(&report);
    for id in good
        .iter()
        .chain(["EV-obs-poison".to_owned(), "EV-obs-junk".to_owned()].iter())
    {
        assert!(ids.contains(id), "{id} missing from {ids:?}");
    }
    let first_good = report["recent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == "EV-obs-1")
        .unwrap();
    assert_eq!(first_good["source"], "twilio");
    assert_eq!(first_good["phone_id"], phone);
    assert_eq!(first_good["url_path"], "/webhooks/twilio/calls");
    assert_eq!(first_good["content_type"], "application/x-www-form-urlencoded");
    assert_eq!(first_good["signature_scheme"], "twilio-hmac-sha1");
    assert_eq!(first_good["decoded"], true);
    assert!(
        report["recent"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e.get("body").is_none() && e.get("body_base64").is_none()),
        "no bodies unless asked"
    );
    let junk = report["recent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == "EV-obs-junk")
        .unwrap();
    assert_eq!(junk["decoded"], false);
    assert_eq!(junk["source"], "stripe");

    // One source, a limit, and bodies on request.
    let (status, twilio) = debug(
        &processor,
        "?source=twilio&hours=1&limit=2&include_body=true",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{twilio}");
    assert_eq!(twilio["window"]["source"], "twilio");
    assert_eq!(twilio["sources"], serde_json::json!({"twilio": 5}));
    assert_eq!(twilio["types"], serde_json::json!({"calls": 4, "messages": 0}));
    assert_eq!(twilio["dead_lettered"], 1);
    assert_eq!(
        metric(&text, processor_metrics::DLQ, &[("source", "twilio")]),
        1.0,
        "{text}"
    );
    assert_eq!(twilio["success_rate"], 0.8);
    assert_eq!(twilio["top_errors"].as_array().unwrap().len(), 1);
    let recent = twilio["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 2);
    for event in recent {
        assert!(event["body"].as_str().unwrap().contains("AccountSid="), "{event}");
    }
}

/// Fails (not skips) without Chromium: the dashboard test is part of the suite.
pub(crate) fn chromium() -> &'static str {
    let binary = "chromium";
    let found = Command::new(binary)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`chromium` is not installed or does not run: install the Debian package (`apt-get install -y chromium`; \
         .ci/run installs it) to run the dashboard test"
    );
    binary
}

fn chromium_args(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--virtual-time-budget=5000",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// The DOM of `url` after Chromium ran the page's script.
fn dump_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(chromium())
        .args(chromium_args(profile.path()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "chromium --dump-dom failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The text of the element with id `id` in `dom`.
fn dom_text(dom: &str, id: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let open_end = at + dom[at..].find('>')? + 1;
    let close = open_end + dom[open_end..].find('<')?;
    Some(dom[open_end..close].trim().to_owned())
}

fn dom_number(dom: &str, id: &str) -> f64 {
    let text = dom_text(dom, id).unwrap_or_else(|| panic!("no element {id} in\n{dom}"));
    text.parse()
        .unwrap_or_else(|_| panic!("{id} is {text:?}, not a number"))
}

fn dom_sample(dom: &str) -> f64 {
    let at = dom
        .find("<h1 data-sample=\"")
        .expect("the heading carries data-sample")
        + "<h1 data-sample=\"".len();
    let end = at + dom[at..].find('"').unwrap();
    dom[at..end].parse().unwrap()
}

/// Loads the dashboard until the DOM and `/metrics` show the same sample (a new sample may land
/// between the two reads), and returns both.
async fn same_sample(processor: &Processor) -> (String, String) {
    let url = format!("{}/", processor.base);
    for _ in 0..6 {
        let dom = {
            let url = url.clone();
            tokio::task::spawn_blocking(move || dump_dom(&url)).await.unwrap()
        };
        let text = metrics_text(processor).await;
        let sample = metric_opt(&text, observed::SAMPLE, &[]).expect("the sample gauge is exported");
        if dom_sample(&dom) == sample
            && dom_text(&dom, "sample").map(|s| s.parse::<f64>().ok()) == Some(Some(sample))
            && charts_sample(&dom) == Some(sample)
        {
            return (dom, text);
        }
    }
    panic!("the dashboard and /metrics never showed the same sample");
}

/// The sample the trend charts end with, when every chart ends with the same one.
fn charts_sample(dom: &str) -> Option<f64> {
    let samples: Vec<f64> = dom
        .split("<figure class=\"chart\"")
        .skip(1)
        .map(|figure| attribute(figure, "data-sample").and_then(|s| s.parse().ok()))
        .collect::<Option<_>>()?;
    (samples.len() == 6 && samples.windows(2).all(|w| w[0] == w[1])).then(|| samples[0])
}

/// The value of the first `name="…"` attribute in `html`.
fn attribute<'a>(html: &'a str, name: &str) -> Option<&'a str> {
    let at = html.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(&html[at..at + html[at..].find('"')?])
}

/// The last point of a trend chart's series, from its legend (`None`: not measured).
fn chart_last(dom: &str, chart: &str, metric: &str, label: Option<(&str, &str)>) -> Option<f64> {
    let label = label
        .map(|(name, value)| format!(" data-{name}=\"{value}\""))
        .unwrap_or_default();
    let needle =
        format!("class=\"series-last\" data-chart=\"{chart}\" data-metric=\"{metric}\"{label} data-last=\"");
    let at = dom
        .find(&needle)
        .unwrap_or_else(|| panic!("no series {needle} in\n{dom}"))
        + needle.len();
    let last = &dom[at..at + dom[at..].find('"').unwrap()];
    (last != "-").then(|| {
        last.parse()
            .unwrap_or_else(|_| panic!("{chart}: {last:?} is not a number"))
    })
}

/// Every number the dashboard shows, and the last point of every trend chart, equals the gauge
/// of the same sample.
fn assert_dom_matches_metrics(dom: &str, text: &str) {
    for source in Source::ALL {
        let name = source.as_str();
        assert_eq!(
            chart_last(
                dom,
                "requests",
                observed::REQUESTS_PER_SECOND,
                Some(("source", name))
            ),
            Some(metric(text, observed::REQUESTS_PER_SECOND, &[("source", name)])),
            "the requests chart's last point of {name}"
        );
    }
    for topic in topics::DOMAIN_TOPICS {
        assert_eq!(
            chart_last(dom, "events", observed::EVENTS_PER_SECOND, Some(("topic", topic))),
            Some(metric(text, observed::EVENTS_PER_SECOND, &[("topic", topic)])),
            "the events chart's last point of {topic}"
        );
    }
    assert_eq!(
        chart_last(dom, "dlq", observed::DLQ_DEPTH, None),
        Some(metric(text, observed::DLQ_DEPTH, &[])),
        "the DLQ chart's last point"
    );
    assert_eq!(
        chart_last(dom, "retry", observed::RETRY_DEPTH, None),
        Some(metric(text, observed::RETRY_DEPTH, &[])),
        "the retry chart's last point"
    );
    assert_eq!(
        chart_last(dom, "lag", processor_metrics::LAG, None),
        Some(dom_number(dom, "consumer-lag-total")),
        "the lag chart's last point"
    );
    for source in Source::ALL {
        let name = source.as_str();
        assert_eq!(
            dom_number(dom, &format!("requests-per-second-{name}")),
            metric(text, observed::REQUESTS_PER_SECOND, &[("source", name)]),
            "requests/s of {name}"
        );
    }
    for topic in topics::DOMAIN_TOPICS {
        assert_eq!(
            dom_number(dom, &format!("events-per-second-{topic}")),
            metric(text, observed::EVENTS_PER_SECOND, &[("topic", topic)]),
            "events/s of {topic}"
        );
    }
    assert_eq!(
        dom_number(dom, "dlq-depth"),
        metric(text, observed::DLQ_DEPTH, &[]),
        "DLQ depth"
    );
    // Scraped from the (fake) actions service.
    assert_eq!(
        dom_number(dom, "retry-depth"),
        metric(text, observed::RETRY_DEPTH, &[])
    );
    assert_eq!(dom_number(dom, "retry-depth"), 4.0);
    assert_eq!(dom_text(dom, "breaker-crm").as_deref(), Some("open"));
    assert_eq!(dom_text(dom, "breaker-sms").as_deref(), Some("closed"));
}

/// What the actions service's `/metrics` says about retries and breakers.
const ACTIONS_METRICS: &str = "# TYPE switchboard_actions_retry_depth gauge\n\
    switchboard_actions_retry_depth{action=\"crm\",topic=\"switchboard.retry.1s\"} 3\n\
    switchboard_actions_retry_depth{action=\"crm\",topic=\"switchboard.retry.1m\"} 1\n\
    switchboard_actions_breaker_state{action=\"crm\"} 1\n\
    switchboard_actions_breaker_state{action=\"sms\"} 0\n";

/// An HTTP server answering `/metrics` like the actions service; returns its base URL.
async fn fake_actions_service() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/metrics", axum::routing::get(|| async { ACTIONS_METRICS }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium_shows_the_numbers_of_metrics() {
    chromium();
    let broker = PrivateBroker::start().unwrap();
    create_raw_topics(&broker).await;
    let actions = fake_actions_service().await;
    let processor = start_processor(&broker, "observe-dash", None, Some(&actions), &[]).await;
    let raw = Arc::new(RawProducer::new(&broker));
    let phone = "+15552220002";

    // Without a token the debug endpoint is disabled (the dashboard is open).
    let (status, body) = debug(&processor, "", Some(TOKEN)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("disabled"), "{body}");

    // A poison record (DLQ depth 1), then steady traffic while the page is loaded.
    let mut missing = call_now(phone, "CA-M", "EV-dash-poison", 1);
    missing.body = b"AccountSid=AC1&RecordingSid=RE1&RecordingStatus=completed".to_vec();
    raw.send(&missing).await;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (raw, stop) = (Arc::clone(&raw), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                raw.send(&call_now(
                    phone,
                    &format!("CA{n:032}"),
                    &format!("EV-dash-{n}"),
                    10,
                ))
                .await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            n
        })
    };
    // Wait until a sample saw the traffic flowing and the poison dead-lettered.
    eventually(WAIT, || async {
        let text = metrics_text(&processor).await;
        let flowing = metric(&text, observed::REQUESTS_PER_SECOND, &[("source", "twilio")]) > 0.0
            && metric(&text, observed::EVENTS_PER_SECOND, &[("topic", topics::CALLS)]) > 0.0;
        (flowing && metric(&text, observed::DLQ_DEPTH, &[]) >= 1.0).then_some(())
    })
    .await;

    let (dom, text) = same_sample(&processor).await;
    assert_dom_matches_metrics(&dom, &text);
    assert!(dom_number(&dom, "requests-per-second-twilio") > 0.0, "{dom}");
    // Without an admin token the console says it is read-only, and refuses a redrive.
    assert!(dom.contains("data-access=\"read-only\""), "{dom}");
    assert!(
        dom_text(&dom, "access").is_some_and(|t| t.contains("Read-only console")),
        "{dom}"
    );
    let redrive = reqwest::Client::new()
        .post(format!("{}/dead-letters/redrive", processor.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("dry_run=true")
        .send()
        .await
        .unwrap();
    assert_eq!(redrive.status(), 403);
    // The charts hold every sample so far (the sampler started with the processor), and the
    // requests line of twilio is drawn.
    let requests = dom
        .split("<figure class=\"chart\" id=\"chart-requests\"")
        .nth(1)
        .expect("a requests chart");
    let held: f64 = attribute(requests, "data-samples").unwrap().parse().unwrap();
    assert!(
        held >= 2.0 && held <= metric(&text, observed::SAMPLE, &[]),
        "{held} samples charted"
    );
    assert!(
        requests.split("</figure>").next().unwrap().contains("<polyline"),
        "{requests}"
    );
    // `/trends.json` has the same data: its twilio series ends with the gauge's value.
    let charts: Value = reqwest::get(format!("{}/trends.json", processor.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let twilio = charts
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "requests")
        .and_then(|c| {
            c["series"]
                .as_array()?
                .iter()
                .find(|s| s["name"] == "twilio")
                .cloned()
        })
        .expect("a twilio series");
    assert!(!twilio["values"].as_array().unwrap().is_empty(), "{twilio}");
    assert_eq!(dom_number(&dom, "dlq-depth"), 1.0);
    let rows = dom.matches("<tr data-event-id=\"EV-dash-").count();
    assert!((1..=20).contains(&rows), "{rows} recent rows in\n{dom}");

    // A screenshot, kept.
    let screenshot = output_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    {
        let (url, screenshot) = (format!("{}/", processor.base), screenshot.clone());
        tokio::task::spawn_blocking(move || {
            let profile = tempfile::tempdir().unwrap();
            let output = Command::new(chromium())
                .args(chromium_args(profile.path()))
                .arg(format!("--screenshot={}", screenshot.display()))
                .arg("--window-size=1280,900")
                .arg(url)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "chromium --screenshot failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        })
        .await
        .unwrap();
    }
    let png = std::fs::read(&screenshot).unwrap();
    assert!(
        png.len() > 1_000 && png.starts_with(b"\x89PNG"),
        "{} bytes",
        png.len()
    );
    println!("dashboard screenshot: {}", screenshot.display());

    // Traffic stops: once the processor caught up, the page's consumer lag is its lag metric's.
    stop.store(true, Ordering::Relaxed);
    let sent = traffic.await.unwrap();
    println!("sent {sent} calls while sampling");
    eventually(WAIT, || async {
        let text = metrics_text(&processor).await;
        let lag = metric_opt(&text, processor_metrics::LAG, &[])?;
        (lag == 0.0 && metric(&text, processor_metrics::CONSUMED, &[]) >= f64::from(sent as u32 + 1))
            .then_some(())
    })
    .await;
    // Two more samples, so that the snapshot's lag is read after the lag metric settled.
    let settled = metric(&metrics_text(&processor).await, observed::SAMPLE, &[]);
    eventually(WAIT, || async {
        (metric(&metrics_text(&processor).await, observed::SAMPLE, &[]) >= settled + 2.0).then_some(())
    })
    .await;
    let (dom, text) = same_sample(&processor).await;
    assert_dom_matches_metrics(&dom, &text);
    let lag: BTreeMap<&str, f64> = Source::ALL
        .iter()
        .map(|s| {
            (
                s.raw_topic(),
                metric(&text, processor_metrics::LAG, &[("topic", s.raw_topic())]),
            )
        })
        .collect();
    assert_eq!(
        dom_number(&dom, "consumer-lag-total"),
        lag.values().sum::<f64>(),
        "consumer lag {lag:?}"
    );
    assert_eq!(
        dom_number(&dom, &format!("consumer-lag-{}", topics::RAW_TWILIO)),
        lag[topics::RAW_TWILIO]
    );
}

/// The event ids of the committed view of `switchboard.calls`.
async fn committed_call_ids(broker: &PrivateBroker) -> Vec<String> {
    read_decoded::<CallEvent>(broker, topics::CALLS, "read_committed", CallEvent::schema_def())
        .await
        .into_iter()
        .map(|(event, _)| event.event_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_visible_well_before_the_commit_interval_and_its_age_is_measured() {
    const COMMIT_INTERVAL: Duration = Duration::from_secs(5);
    const EVENTS: u32 = 3;
    let broker = PrivateBroker::start().unwrap();
    create_raw_topics(&broker).await;
    let extra = [
        ("SWITCHBOARD_COMMIT_INTERVAL", "5s".to_owned()),
        ("SWITCHBOARD_TRANSACTION_TIMEOUT", "30s".to_owned()),
    ];
    let processor = start_processor(&broker, "observe-fresh", None, None, &extra).await;
    let raw = RawProducer::new(&broker);

    // One at a time: each waits for the previous one to be visible. The first one's time also
    // holds the group join and the restore.
    let mut visible_after = Vec::new();
    for n in 0..EVENTS {
        let event_id = format!("EV-fresh-{n}");
        let sent = Instant::now();
        raw.send(&call_now(
            "+15554100001",
            &format!("CAfresh{n:028}"),
            &event_id,
            n,
        ))
        .await;
        eventually(WAIT, || async {
            committed_call_ids(&broker)
                .await
                .contains(&event_id)
                .then_some(())
        })
        .await;
        visible_after.push(sent.elapsed());
    }
    println!("visible after {visible_after:?} (commit interval {COMMIT_INTERVAL:?})");
    for elapsed in &visible_after[1..] {
        assert!(
            *elapsed < COMMIT_INTERVAL / 2,
            "a lone webhook waited for the commit interval: {visible_after:?}"
        );
    }

    let text = metrics_text(&processor).await;
    let name = processor_metrics::EVENT_AGE_SECONDS;
    assert_eq!(
        metric(&text, &format!("{name}_count"), &[]),
        f64::from(EVENTS),
        "one age per committed domain event\n{text}"
    );
    let sum = metric(&text, &format!("{name}_sum"), &[]);
    assert!(sum > 0.0, "ages sum to {sum}");
    // Every age below the longest wait above (the first one's group join included), and the
    // later ones below half the commit interval (received_at is taken just before the send).
    assert_eq!(
        metric(&text, &format!("{name}_bucket"), &[("le", "60")]),
        f64::from(EVENTS)
    );
    assert!(
        metric(&text, &format!("{name}_bucket"), &[("le", "2")]) >= f64::from(EVENTS - 1),
        "{text}"
    );

    // The dashboard's sample after the commits shows the p50/p99 of those ages.
    let age = eventually(Duration::from_secs(15), || async {
        let json: Value = reqwest::get(format!("{}/dashboard.json", processor.base))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (!json["event_age"].is_null()).then(|| json["event_age"].clone())
    })
    .await;
    let (p50, p99) = (
        age["p50_seconds"].as_f64().unwrap(),
        age["p99_seconds"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= 60.0, "{age}");
}

/// `/dashboard.json`'s rates of one sample: (sample, requests/s per source, events/s per topic).
type Rates = (u64, BTreeMap<String, f64>, BTreeMap<String, f64>);

fn rates(json: &Value) -> Rates {
    let by = |list: &str, key: &str, value: &str| -> BTreeMap<String, f64> {
        json[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[key].as_str().unwrap().to_owned(), r[value].as_f64().unwrap()))
            .collect()
    };
    (
        json["sample"].as_u64().unwrap(),
        by("sources", "source", "requests_per_second"),
        by("events", "topic", "events_per_second"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_shows_the_rates_that_were_sent() {
    /// Calls sent per second, one every 200 ms.
    const RATE: f64 = 5.0;
    /// Consecutive samples checked, each covering one sampler interval of steady traffic.
    const SAMPLES: usize = 6;
    /// How far a sample may be from the rate sent: a sample counts what was committed between
    /// two samples, and the processor commits when caught up, so its edges move by less than
    /// the time a batch waits (well under a second of a 5 s interval).
    const TOLERANCE: f64 = 0.4;
    let broker = PrivateBroker::start().unwrap();
    create_raw_topics(&broker).await;
    let processor = start_processor(&broker, "observe-rate", None, None, &[]).await;
    let raw = Arc::new(RawProducer::new(&broker));
    let phone = "+15552220003";

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (raw, stop) = (Arc::clone(&raw), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / RATE));
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                raw.send(&call_now(
                    phone,
                    &format!("CA{n:032}"),
                    &format!("EV-rate-{n}"),
                    10,
                ))
                .await;
            }
            n
        })
    };
    // Steady state: the processor joined its group and produces, and the sample interval that
    // follows the next sample is all steady traffic.
    eventually(WAIT, || async {
        let text = metrics_text(&processor).await;
        (metric(&text, processor_metrics::PRODUCED, &[("topic", topics::CALLS)]) >= RATE).then_some(())
    })
    .await;
    let dashboard = format!("{}/dashboard.json", processor.base);
    let json = || async {
        let response = reqwest::get(&dashboard).await.ok()?;
        response.json::<Value>().await.ok()
    };
    let first = eventually(WAIT, json).await["sample"].as_u64().unwrap() + 2;
    let mut samples: Vec<Rates> = Vec::new();
    while samples.len() < SAMPLES {
        let sample = rates(&eventually(WAIT, json).await);
        if sample.0 >= first && samples.last().is_none_or(|last| last.0 < sample.0) {
            assert_eq!(
                sample.0,
                samples.last().map_or(first, |last| last.0 + 1),
                "a sample was missed"
            );
            println!(
                "sample {}: sources {:?} events {:?}",
                sample.0, sample.1, sample.2
            );
            samples.push(sample);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.store(true, Ordering::Relaxed);
    println!("sent {} calls", traffic.await.unwrap());

    let near = |value: f64| (value - RATE).abs() <= RATE * TOLERANCE;
    for (sample, sources, events) in &samples {
        for source in Source::ALL {
            let expected = if source == Source::Twilio { RATE } else { 0.0 };
            let shown = sources[source.as_str()];
            assert!(
                if expected > 0.0 { near(shown) } else { shown == 0.0 },
                "sample {sample}: {shown} requests/s of {source:?}, sent {expected}/s; every sample: {samples:?}"
            );
        }
        for topic in topics::DOMAIN_TOPICS {
            let expected = if topic == topics::CALLS { RATE } else { 0.0 };
            let shown = events[topic];
            assert!(
                if expected > 0.0 { near(shown) } else { shown == 0.0 },
                "sample {sample}: {shown} events/s of {topic}, sent {expected}/s; every sample: {samples:?}"
            );
        }
    }
}
