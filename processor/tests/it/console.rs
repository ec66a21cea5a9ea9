//! The operator console in a real browser: headless Chromium driven over WebDriver
//! (`chromedriver`, through `fantoccini`), against a processor and a sink (SQLite) as child
//! processes on a private broker, with an admin token and a calls API token configured.
//!
//! `search_a_call_open_a_dead_letter_and_redrive_it_from_the_browser`: the console asks for the
//! token (401 sign-in page) and keeps it in the tab, and the dashboard's polling sends it (its
//! numbers move); a search by call sid lists the call's webhooks and its page shows them in the
//! order they happened with their statuses; the dead letters list the poison record, its page
//! shows headers and body; a redrive with a wrong token
//! answers 401 (and so does a POST without one), a dry run counts 1, the redrive republishes it:
//! the record is marked redriven and, still poison, comes back dead-lettered with its
//! `redriven-from` header; a second redrive republishes nothing; the deliveries page lists an
//! event's attempts from the attempt log the sink stored, newest first, with their statuses.
//! Screenshots of each page are kept under the test output directory
//! (`target/tmp/test-output/console-*.png`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use switchboard_schemas::{ActionAttempt, topics};
use switchboard_tests::broker::PrivateBroker;

use crate::harness::*;
use crate::observe::{chromium, output_dir, start_processor};

const WAIT: Duration = Duration::from_secs(90);
const ADMIN_TOKEN: &str = "console-test-admin-token";
const SINK_TOKEN: &str = "console-test-sink-token";
const TOKEN_KEY: &str = "switchboard.admin-token";

/// `chromedriver` on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "`chromedriver` is not installed: install the Debian package (`apt-get install -y chromium-driver`; \
             .ci/run does)",
        );
    Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// A headless Chromium session with its own profile.
async fn browser(driver: &Driver, profile: &Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,1400",
                format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ClientBuilder::native()
            .capabilities(capabilities.clone())
            .connect(&driver.url)
            .await
        {
            Ok(client) => return client,
            Err(error) if Instant::now() < deadline => {
                println!("waiting for chromedriver: {error}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(error) => panic!("no WebDriver session: {error}"),
        }
    }
}

/// Waits for the element `css`, in whatever page the document holds by then.
async fn wait_for(client: &Client, css: &str) {
    client
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} in the page: {e}"));
}

async fn click(client: &Client, css: &str) {
    settled(client, css, |element| async move { element.click().await }).await;
}

async fn text(client: &Client, css: &str) -> String {
    settled(client, css, |element| async move { element.text().await }).await
}

/// `act` on the element `css`, again if the page was written over between finding it and acting
/// on it (the console writes each page it loads into the document).
async fn settled<T, F, Fut>(client: &Client, css: &str, act: F) -> T
where
    F: Fn(fantoccini::elements::Element) -> Fut,
    Fut: std::future::Future<Output = Result<T, fantoccini::error::CmdError>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        wait_for(client, css).await;
        let found = client.find(Locator::Css(css)).await;
        match found {
            Ok(element) => match act(element).await {
                Ok(value) => return value,
                Err(error) if Instant::now() < deadline => println!("{css}: {error}, again"),
                Err(error) => panic!("{css}: {error}"),
            },
            Err(error) if Instant::now() < deadline => println!("{css}: {error}, again"),
            Err(error) => panic!("{css}: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of `attribute` on every element matching `css`.
async fn attributes(client: &Client, css: &str, attribute: &str) -> Vec<String> {
    let mut values = Vec::new();
    for element in client.find_all(Locator::Css(css)).await.unwrap() {
        values.push(element.attr(attribute).await.unwrap().unwrap_or_default());
    }
    values
}

async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let path = output_dir().join(format!("console-{name}.png"));
    std::fs::write(&path, client.screenshot().await.unwrap()).unwrap();
    println!("screenshot: {}", path.display());
    path
}

/// Submits a redrive form (`id`: `redrive-one` or `redrive-all`) with the button `button`
/// (`dry-run` or `go`) and returns its result's status and text.
async fn redrive(client: &Client, id: &str, button: &str) -> (String, String) {
    client
        .execute(
            &format!("var r = document.getElementById('{id}-result'); r.removeAttribute('data-status'); r.textContent = '';"),
            vec![],
        )
        .await
        .unwrap();
    click(client, &format!("#{id}-{button}")).await;
    let result = format!("#{id}-result[data-status]");
    wait_for(client, &result).await;
    let element = client.find(Locator::Css(&result)).await.unwrap();
    (
        element.attr("data-status").await.unwrap().unwrap(),
        element.text().await.unwrap(),
    )
}

async fn set_token(client: &Client, token: &str) {
    client
        .execute(
            &format!("sessionStorage.setItem('{TOKEN_KEY}', arguments[0]);"),
            vec![Value::String(token.to_owned())],
        )
        .await
        .unwrap();
}

/// A Twilio call status callback `EV-console-<status>`, received now (the search's time).
fn received_now(phone: &str, call_sid: &str, status: &str, sequence: u32) -> switchboard_schemas::RawWebhook {
    switchboard_schemas::RawWebhook {
        received_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
        ..twilio_call(phone, call_sid, status, sequence, &format!("EV-console-{status}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_a_call_open_a_dead_letter_and_redrive_it_from_the_browser() {
    chromium();
    let driver = chromedriver();
    let broker = PrivateBroker::start().unwrap();
    create_raw_topics(&broker).await;
    let dir = tempfile::tempdir().unwrap();

    // The sink, with its calls API on a known port behind a token.
    let sink_port = free_port();
    let sink_url = format!("http://127.0.0.1:{sink_port}");
    let sink_log = output_dir().join("console-sink.log");
    let _sink = spawn(
        &broker,
        &["sink"],
        &[
            ("SWITCHBOARD_INSTANCE_ID", "console-sink".to_owned()),
            (
                "SWITCHBOARD_DATABASE_URL",
                format!("sqlite://{}", dir.path().join("sink.db").display()),
            ),
            ("SWITCHBOARD_ADMIN_LISTEN", format!("127.0.0.1:{sink_port}")),
            ("SWITCHBOARD_API_TOKEN", SINK_TOKEN.to_owned()),
        ],
        &sink_log,
    );
    let processor = start_processor(
        &broker,
        "console-0",
        Some(ADMIN_TOKEN),
        None,
        &[
            ("SWITCHBOARD_SINK_API_URL", sink_url.clone()),
            ("SWITCHBOARD_SINK_API_TOKEN", SINK_TOKEN.to_owned()),
        ],
    )
    .await;

    // One call's three webhooks, and a poison one.
    let raw = RawProducer::new(&broker);
    let (phone, call_sid) = ("+15557770001", "CA0000000000000000000000000000c0de");
    let statuses = ["ringing", "in-progress", "completed"];
    for (sequence, status) in statuses.iter().enumerate() {
        raw.send(&received_now(phone, call_sid, status, sequence as u32))
            .await;
    }
    // Another call's webhook, which a search by the first call's sid must leave out.
    raw.send(&received_now(
        phone,
        "CA0000000000000000000000000000beef",
        "busy",
        0,
    ))
    .await;
    let mut poison = received_now(phone, "CA-poison", "poison", 0);
    poison.body = b"AccountSid=AC1&Foo=bar".to_vec();
    raw.send(&poison).await;
    // Two attempts of one event as the actions service records them (the actions tests prove
    // that it does), for the deliveries page.
    let attempts = send_attempts(&broker, &raw).await;

    // The sink stored the call and the other one (through the API the console uses).
    let http = reqwest::Client::new();
    let sink_json = |path: String| {
        let request = http.get(format!("{sink_url}{path}")).bearer_auth(SINK_TOKEN);
        async move { request.send().await.ok()?.json::<Value>().await.ok() }
    };
    eventually(WAIT, || async {
        let call = sink_json(format!("/calls/{call_sid}/events")).await?;
        let phone = sink_json("/events?phone_id=%2B15557770001".to_owned()).await?;
        (call["events"].as_array()?.len() == statuses.len()
            && phone["events"].as_array()?.len() == statuses.len() + 1)
            .then_some(())
    })
    .await;

    let profile = tempfile::tempdir().unwrap();
    let client = browser(&driver, profile.path()).await;

    // Reads need the token: the console asks for it, then shows the dashboard.
    client.goto(&processor.base).await.unwrap();
    wait_for(&client, "body[data-sign-in] #sign-in").await;
    client
        .find(Locator::Css("#sign-in input[name=token]"))
        .await
        .unwrap()
        .send_keys(ADMIN_TOKEN)
        .await
        .unwrap();
    click(&client, "#sign-in button[type=submit]").await;
    wait_for(&client, "body[data-access=admin] #dashboard").await;
    assert!(
        !client.current_url().await.unwrap().as_str().contains(ADMIN_TOKEN),
        "the token is never in a URL"
    );
    assert!(
        !client.source().await.unwrap().contains(ADMIN_TOKEN),
        "nor in a page"
    );
    // The dashboard's polling carries the token too: its numbers move without a reload.
    let sample = || async {
        settled(&client, "#dashboard", |heading| async move {
            heading.attr("data-sample").await
        })
        .await
        .and_then(|sample| sample.parse::<u64>().ok())
    };
    let first = sample().await.unwrap_or(0);
    eventually(Duration::from_secs(30), || async {
        (sample().await? > first).then_some(())
    })
    .await;

    // Search by call sid, then the call's page.
    click(&client, "#nav-search").await;
    wait_for(&client, "form#search").await;
    client
        .find(Locator::Css("#filter-call_sid"))
        .await
        .unwrap()
        .send_keys(call_sid)
        .await
        .unwrap();
    click(&client, "form#search button[type=submit]").await;
    wait_for(&client, &format!("#filter-call_sid[value='{call_sid}']")).await;
    let mut found = attributes(&client, "#results tbody tr", "data-event-id").await;
    found.sort();
    let mut sent: Vec<String> = statuses.iter().map(|s| format!("EV-console-{s}")).collect();
    sent.sort();
    assert_eq!(found, sent, "the search finds exactly the call's webhooks");
    let url = client.current_url().await.unwrap();
    assert!(
        url.as_str().contains(&format!("call_sid={call_sid}")),
        "the search is in the URL: {url}"
    );
    screenshot(&client, "search").await;

    click(&client, "#results a.call-link").await;
    wait_for(&client, "#call-events tbody tr").await;
    assert_eq!(text(&client, "#call-sid").await, call_sid);
    assert_eq!(
        attributes(&client, "#call-events tbody tr", "data-event-id").await,
        statuses
            .iter()
            .map(|s| format!("EV-console-{s}"))
            .collect::<Vec<_>>(),
        "the call's webhooks in the order they happened"
    );
    let mut shown = Vec::new();
    for cell in client
        .find_all(Locator::Css("#call-events td.status"))
        .await
        .unwrap()
    {
        shown.push(cell.text().await.unwrap());
    }
    assert_eq!(shown, statuses);
    assert_eq!(text(&client, "#call-status").await, "completed");
    screenshot(&client, "call").await;

    // The dead letters list the poison record; its page shows it in full.
    let poison_row = "#dead-letters tr[data-event-id='EV-console-poison']";
    eventually(WAIT, || async {
        click(&client, "#nav-dead-letters").await;
        wait_for(&client, "#dlq-count").await;
        let rows = client.find_all(Locator::Css(poison_row)).await.unwrap();
        (!rows.is_empty()).then_some(())
    })
    .await;
    screenshot(&client, "dead-letters").await;
    let position = attributes(&client, poison_row, "data-position").await.remove(0);
    click(&client, &format!("{poison_row} a.dlq-link")).await;
    wait_for(&client, "#dlq-record").await;
    assert_eq!(text(&client, "#dlq-position").await, position);
    let record = text(&client, "#dlq-record").await;
    for expected in [
        "error-class: unknown_kind",
        "EV-console-poison",
        "AccountSid=AC1&Foo=bar",
    ] {
        assert!(record.contains(expected), "{expected:?} in\n{record}");
    }
    screenshot(&client, "dead-letter").await;

    // Without the token a redrive is refused, from the page and from anywhere else.
    set_token(&client, "wrong-token").await;
    let (status, refused) = redrive(&client, "redrive-one", "go").await;
    assert_eq!(status, "401", "{refused}");
    let without = http
        .post(format!("{}/dead-letters/redrive", processor.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("position={}", position.replace('/', "%2F")))
        .send()
        .await
        .unwrap();
    assert_eq!(without.status(), 401);
    set_token(&client, ADMIN_TOKEN).await;

    // A dry run counts it, the redrive republishes it once.
    let (status, counted) = redrive(&client, "redrive-one", "dry-run").await;
    assert_eq!(status, "200", "{counted}");
    assert!(counted.starts_with("matched 1, would redrive 1"), "{counted}");
    let (status, done) = redrive(&client, "redrive-one", "go").await;
    assert_eq!(status, "200", "{done}");
    assert!(
        done.starts_with("matched 1, redriven 1, already redriven 0"),
        "{done}"
    );
    let (status, again) = redrive(&client, "redrive-one", "go").await;
    assert_eq!(status, "200", "{again}");
    assert!(
        again.starts_with("matched 1, redriven 0, already redriven 1"),
        "{again}"
    );

    // Delivered: the processor read it again and, still poison, dead-lettered the copy, which
    // names where it came from; the original is marked redriven.
    let redriven_from = format!("redriven-from: {}/{position}", topics::DLQ);
    eventually(WAIT, || async {
        click(&client, "#nav-dead-letters").await;
        wait_for(&client, "#dlq-count").await;
        let positions = attributes(&client, poison_row, "data-position").await;
        (positions.len() == 2).then_some(())
    })
    .await;
    let redriven_cells = client
        .find_all(Locator::Css(&format!(
            "{poison_row}[data-position='{position}'] td.redriven"
        )))
        .await
        .unwrap();
    assert_eq!(redriven_cells[0].text().await.unwrap(), "yes");
    let copy = attributes(&client, poison_row, "data-position")
        .await
        .into_iter()
        .find(|p| *p != position)
        .unwrap();
    click(
        &client,
        &format!("{poison_row}[data-position='{copy}'] a.dlq-link"),
    )
    .await;
    let record = text(&client, "#dlq-record").await;
    assert!(record.contains(&redriven_from), "{redriven_from:?} in\n{record}");
    screenshot(&client, "redriven").await;

    // Deliveries: the attempt log the sink stored, newest first, filtered by event id.
    eventually(WAIT, || async {
        let page = sink_json("/attempts?event_id=EV-console-completed".to_owned()).await?;
        (page["attempts"].as_array()?.len() == attempts.len()).then_some(())
    })
    .await;
    click(&client, "#nav-deliveries").await;
    wait_for(&client, "form#attempts-filters").await;
    client
        .find(Locator::Css("#attempts-filters input[name=event_id]"))
        .await
        .unwrap()
        .send_keys("EV-console-completed")
        .await
        .unwrap();
    click(&client, "#attempts-filters button[type=submit]").await;
    wait_for(&client, "#filter-event_id[value='EV-console-completed']").await;
    assert_eq!(
        attributes(&client, "#attempts tbody tr", "data-attempt-id").await,
        attempts
            .iter()
            .rev()
            .map(|a| a.attempt_id.clone())
            .collect::<Vec<_>>(),
        "newest first"
    );
    let mut statuses = Vec::new();
    for cell in client
        .find_all(Locator::Css("#attempts td.status"))
        .await
        .unwrap()
    {
        statuses.push(cell.text().await.unwrap());
    }
    assert_eq!(statuses, ["", "503"]);
    screenshot(&client, "deliveries").await;

    client.close().await.unwrap();
    drop(processor);
}

/// Writes a failed and a successful attempt of `EV-console-completed` to the attempt log, oldest
/// first, encoded as the actions service encodes them.
async fn send_attempts(broker: &PrivateBroker, raw: &RawProducer) -> Vec<ActionAttempt> {
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .create()
            .unwrap();
    let topic = rdkafka::admin::NewTopic::new(
        topics::ACTIONS_ATTEMPTS,
        1,
        rdkafka::admin::TopicReplication::Fixed(1),
    );
    for result in admin
        .create_topics([&topic], &rdkafka::admin::AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let attempt = |offset: i64, n: i32, failed: bool| ActionAttempt {
        attempt_id: format!("crm/{}/0/{offset}", topics::CALLS),
        action: "crm".into(),
        event_id: "EV-console-completed".into(),
        event_type: "call.completed".into(),
        attempt: n,
        outcome: if failed { "transient" } else { "delivered" }.into(),
        status_code: failed.then_some(503),
        reason: failed.then(|| "HTTP 503".to_owned()),
        routed_to: failed.then(|| "switchboard.retry.1s".to_owned()),
        latency_ms: 9,
        attempted_at: now + offset,
    };
    let attempts = vec![attempt(1, 1, true), attempt(2, 2, false)];
    let codec = switchboard_schemas::Codec::new(&switchboard_tests::registry_url()).unwrap();
    for attempt in &attempts {
        let value = codec
            .encode(topics::ACTIONS_ATTEMPTS, ActionAttempt::schema_def(), attempt)
            .await
            .unwrap();
        raw.send_at(
            topics::ACTIONS_ATTEMPTS,
            &attempt.event_id,
            &value,
            &attempt.event_id,
            "actions",
            None,
        )
        .await;
    }
    attempts
}
