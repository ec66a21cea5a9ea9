//! The delivery layer against real HTTP: an axum server on 127.0.0.1:0 that answers per a
//! script and records what it received.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use figment::Figment;
use figment::providers::{Format, Toml};
use serde::Deserialize;
use serde_json::json;

use super::breaker::BreakerState;
use super::classify::classify_error;
use super::config::{AuthConfig, BreakerConfig, RateLimitConfig, matches};
use super::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOKEN: &str = "tok-very-secret-123";

/// How the test server answers one request.
#[derive(Debug, Clone, Copy)]
enum Reply {
    Ok,
    Status(u16),
    /// 429 with `Retry-After: <secs>`.
    TooMany(u64),
    /// 500 with a long body (the reason must carry only a snippet).
    ErrorBody,
    /// Answers 200 after this long.
    Slow(Duration),
    /// Never answers in time.
    Hang,
}

#[derive(Debug, Clone)]
struct Seen {
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Debug)]
struct Script {
    replies: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    seen: Mutex<Vec<Seen>>,
}

struct Server {
    addr: SocketAddr,
    script: Arc<Script>,
}

impl Server {
    async fn start(default: Reply) -> Self {
        let script = Arc::new(Script {
            replies: Mutex::new(VecDeque::new()),
            default: Mutex::new(default),
            seen: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(answer).with_state(Arc::clone(&script));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, script }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn then(&self, replies: &[Reply]) {
        self.script.replies.lock().unwrap().extend(replies);
    }

    fn set_default(&self, reply: Reply) {
        *self.script.default.lock().unwrap() = reply;
    }

    fn requests(&self) -> usize {
        self.script.seen.lock().unwrap().len()
    }

    fn seen(&self) -> Vec<Seen> {
        self.script.seen.lock().unwrap().clone()
    }
}

async fn answer(State(script): State<Arc<Script>>, headers: HeaderMap, body: Bytes) -> Response {
    script.seen.lock().unwrap().push(Seen { headers, body });
    let next = script.replies.lock().unwrap().pop_front();
    let reply = next.unwrap_or_else(|| *script.default.lock().unwrap());
    match reply {
        Reply::Ok => StatusCode::OK.into_response(),
        Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Reply::TooMany(secs) => {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", secs.to_string())]).into_response()
        }
        Reply::ErrorBody => (StatusCode::INTERNAL_SERVER_ERROR, "x".repeat(5_000)).into_response(),
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            StatusCode::OK.into_response()
        }
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK.into_response()
        }
    }
}

fn action(name: &str, url: String) -> ActionConfig {
    ActionConfig {
        name: name.into(),
        on: vec!["call.*".into()],
        url,
        auth: None,
        signing_secret_env: None,
        rate_limit: None,
        timeout: Duration::from_millis(300),
        breaker: BreakerConfig {
            failures: 3,
            cool_down: Duration::from_millis(200),
        },
    }
}

fn target(action: ActionConfig) -> Target {
    let resolved = action
        .resolve(|var| match var {
            "APP_TOKEN" => Some(TOKEN.into()),
            "APP_SIGNING_SECRET" => Some(SECRET.into()),
            _ => None,
        })
        .unwrap();
    Target::new(resolved, http_client().unwrap())
}

fn event(id: &str) -> OutboundEvent {
    OutboundEvent {
        event_id: id.into(),
        event_type: "call.completed".into(),
        occurred_at_millis: 1_700_000_000_123,
        data: json!({"call_id": "CA1", "duration": 42}),
    }
}

fn assert_transient(outcome: &Outcome, context: &str) {
    assert!(
        matches!(outcome, Outcome::Transient { .. }),
        "{context}: {outcome:?}"
    );
}

fn header<'a>(seen: &'a Seen, name: &str) -> &'a str {
    seen.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn delivered_request_carries_the_headers_body_and_a_valid_signature() {
    let server = Server::start(Reply::Ok).await;
    let target = target(ActionConfig {
        auth: Some(AuthConfig {
            bearer_env: "APP_TOKEN".into(),
        }),
        signing_secret_env: Some("APP_SIGNING_SECRET".into()),
        ..action("app", server.url())
    });
    let before = unix_now();
    assert_eq!(target.deliver(&event("evt_1")).await, Outcome::Delivered);
    let after = unix_now();

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        json!({
            "type": "call.completed",
            "timestamp": "2023-11-14T22:13:20.123Z",
            "data": {"call_id": "CA1", "duration": 42},
        })
    );
    assert_eq!(header(request, "content-type"), "application/json");
    assert_eq!(header(request, "idempotency-key"), "evt_1");
    assert_eq!(
        header(request, "user-agent"),
        format!("switchboard/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(header(request, "authorization"), format!("Bearer {TOKEN}"));
    assert_eq!(header(request, "webhook-id"), "evt_1");
    let timestamp: i64 = header(request, "webhook-timestamp").parse().unwrap();
    assert!((before..=after).contains(&timestamp), "{timestamp}");

    // Recompute the signature by hand: HMAC-SHA256(key, "{id}.{timestamp}.{body}").
    use hmac::{Hmac, Mac};
    let key = STANDARD.decode(SECRET.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("evt_1.{timestamp}.").as_bytes());
    mac.update(&request.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(header(request, "webhook-signature"), expected);

    // And with the ingest crate's verifier, as a receiver would.
    use switchboard_ingest::verify::{SecretSet, standard_webhooks};
    let secrets = SecretSet::from_standard_webhooks([SECRET]).unwrap();
    standard_webhooks::verify(
        &secrets,
        &request.headers,
        &request.body,
        unix_now(),
        standard_webhooks::DEFAULT_TOLERANCE,
    )
    .expect("ingest verifies our signature");
}

#[tokio::test]
async fn unsigned_actions_send_no_signature_or_authorization() {
    let server = Server::start(Reply::Ok).await;
    let target = target(action("plain", server.url()));
    assert_eq!(target.deliver(&event("evt_1")).await, Outcome::Delivered);
    let seen = server.seen();
    assert!(seen[0].headers.get("webhook-signature").is_none());
    assert!(seen[0].headers.get("authorization").is_none());
    assert_eq!(header(&seen[0], "webhook-id"), "evt_1");
}

#[tokio::test]
async fn the_idempotency_key_is_stable_across_redeliveries() {
    let server = Server::start(Reply::Ok).await;
    server.then(&[Reply::Status(500)]);
    let target = target(action("app", server.url()));
    let event = event("evt_same");
    assert_transient(&target.deliver(&event).await, "first attempt");
    assert_eq!(target.deliver(&event).await, Outcome::Delivered);
    assert_eq!(target.deliver(&event).await, Outcome::Delivered);
    let keys: Vec<String> = server
        .seen()
        .iter()
        .map(|seen| header(seen, "idempotency-key").to_owned())
        .collect();
    assert_eq!(keys, ["evt_same", "evt_same", "evt_same"]);
}

#[tokio::test]
async fn the_breaker_opens_probes_once_and_closes() {
    let server = Server::start(Reply::Status(500)).await;
    let target = target(action("app", server.url()));
    let event = event("evt_1");

    for attempt in 1..=3 {
        assert_transient(&target.deliver(&event).await, &format!("attempt {attempt}"));
    }
    assert_eq!(server.requests(), 3);
    assert_eq!(target.breaker_state(), BreakerState::Open);
    let refused = target.deliver(&event).await;
    assert!(
        matches!(refused, Outcome::CircuitOpen { retry_after: Some(_) }),
        "{refused:?}"
    );
    assert!(refused.is_transient());
    assert_eq!(server.requests(), 3, "an open circuit does not call the target");

    // After the cool-down one probe goes through; it fails, so the circuit opens again.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_transient(&target.deliver(&event).await, "failed probe");
    assert_eq!(server.requests(), 4);
    assert_eq!(target.breaker_state(), BreakerState::Open);
    assert_eq!(target.deliver(&event).await.class(), "circuit_open");
    assert_eq!(server.requests(), 4, "the failed probe restarted the cool-down");

    // Next cool-down: two concurrent calls, exactly one is the probe; it succeeds and closes.
    tokio::time::sleep(Duration::from_millis(250)).await;
    server.set_default(Reply::Slow(Duration::from_millis(100)));
    let (first, second) = tokio::join!(target.deliver(&event), target.deliver(&event));
    let mut classes = [first.class(), second.class()];
    classes.sort_unstable();
    assert_eq!(classes, ["circuit_open", "delivered"]);
    assert_eq!(server.requests(), 5, "exactly one probe");
    assert_eq!(target.breaker_state(), BreakerState::Closed);
    assert_eq!(target.deliver(&event).await, Outcome::Delivered);
    assert_eq!(server.requests(), 6);
}

#[tokio::test]
async fn retry_after_is_carried_and_permanent_failures_do_not_open_the_breaker() {
    let server = Server::start(Reply::Status(400)).await;
    server.then(&[Reply::TooMany(2)]);
    let target = target(action("app", server.url()));
    let event = event("evt_1");

    match target.deliver(&event).await {
        Outcome::Transient { reason, retry_after } => {
            assert_eq!(retry_after, Some(Duration::from_secs(2)));
            assert!(reason.contains("429"), "{reason}");
        }
        other => panic!("expected transient, got {other:?}"),
    }
    for attempt in 0..5 {
        let outcome = target.deliver(&event).await;
        assert!(
            matches!(&outcome, Outcome::Permanent { reason } if reason.contains("400")),
            "attempt {attempt}: {outcome:?}"
        );
    }
    assert_eq!(target.breaker_state(), BreakerState::Closed);
    assert_eq!(server.requests(), 6, "every 400 reached the target");
}

#[tokio::test]
async fn failure_reasons_carry_only_a_short_snippet_of_the_body() {
    let server = Server::start(Reply::ErrorBody).await;
    let target = target(action("app", server.url()));
    let outcome = target.deliver(&event("evt_1")).await;
    let reason = outcome.reason().unwrap();
    assert!(reason.starts_with("HTTP 500: xxx"), "{reason}");
    assert!(reason.chars().count() <= 200, "{}", reason.len());
}

#[tokio::test]
async fn a_hanging_target_times_out_as_transient() {
    let server = Server::start(Reply::Hang).await;
    let target = target(action("app", server.url()));
    let outcome = tokio::time::timeout(Duration::from_secs(10), target.deliver(&event("evt_1")))
        .await
        .expect("deliver returns on its own timeout");
    assert_transient(&outcome, "hang");
    assert!(outcome.reason().unwrap().contains("timed out"), "{outcome:?}");
}

#[tokio::test]
async fn a_failing_target_does_not_block_another() {
    let hanging = Server::start(Reply::Hang).await;
    let healthy = Server::start(Reply::Ok).await;
    let a = target(action("a", hanging.url()));
    let b = target(action("b", healthy.url()));
    let client_a = async {
        let mut outcomes = Vec::new();
        for i in 0..4 {
            outcomes.push(a.deliver(&event(&format!("a{i}"))).await);
        }
        outcomes
    };
    let client_b = async {
        let mut outcomes = Vec::new();
        for i in 0..10 {
            outcomes.push(b.deliver(&event(&format!("b{i}"))).await);
        }
        outcomes
    };
    let (outcomes_a, outcomes_b) = tokio::join!(client_a, client_b);
    assert!(outcomes_a.iter().all(Outcome::is_transient), "{outcomes_a:?}");
    assert!(
        outcomes_b.iter().all(|outcome| *outcome == Outcome::Delivered),
        "{outcomes_b:?}"
    );
    assert_eq!(healthy.requests(), 10);
}

#[tokio::test]
async fn rate_limited_deliveries_wait_instead_of_failing() {
    let server = Server::start(Reply::Ok).await;
    let target = target(ActionConfig {
        rate_limit: Some(RateLimitConfig {
            per_second: 5,
            burst: Some(1),
        }),
        ..action("app", server.url())
    });
    for i in 0..6 {
        assert_eq!(
            target.deliver(&event(&format!("evt_{i}"))).await,
            Outcome::Delivered,
            "delivery {i}"
        );
    }
    assert_eq!(server.requests(), 6);
}

#[tokio::test]
async fn transport_errors_are_classified() {
    // A port nobody listens on: bind, note it, close.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let hanging = Server::start(Reply::Hang).await;
    let client = http_client().unwrap();
    let timeout = Duration::from_millis(300);
    let refused = client
        .post(format!("http://{closed}/"))
        .timeout(timeout)
        .send()
        .await
        .unwrap_err();
    let timed_out = client
        .post(hanging.url())
        .timeout(timeout)
        .send()
        .await
        .unwrap_err();
    let unresolvable = client
        .post("http://switchboard-test.invalid/")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap_err();
    let invalid = client.post("not a url").send().await.unwrap_err();
    let cases = [
        ("connection refused", refused, "transient"),
        ("timeout", timed_out, "transient"),
        ("dns failure", unresolvable, "transient"),
        ("invalid url", invalid, "permanent"),
    ];
    for (name, error, class) in cases {
        let outcome = classify_error(&error);
        assert_eq!(outcome.class(), class, "{name}: {outcome:?}");
        assert!(outcome.retry_after().is_none(), "{name}");
        let reason = outcome.reason().unwrap();
        assert!(!reason.contains("http://"), "{name}: the URL stays out: {reason}");
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

// --- configuration ---

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    action: Vec<ActionConfig>,
}

fn parse(toml: &str) -> Result<Vec<ActionConfig>, String> {
    Figment::new()
        .merge(Toml::string(toml))
        .extract::<File>()
        .map(|file| file.action)
        .map_err(|error| error.to_string())
}

const EXAMPLE: &str = r#"
[[action]]
name = "app"
on = ["booking.created", "call.completed", "call.*"]
url = "https://app.example.com/internal/events"
auth = { bearer_env = "APP_TOKEN" }
signing_secret_env = "APP_SIGNING_SECRET"
rate_limit = { per_second = 50, burst = 100 }
timeout = "5s"
breaker = { failures = 5, cool_down = "60s" }

[[action]]
name = "audit_log-2"
on = ["*"]
url = "http://audit.internal:8080/"
"#;

#[test]
fn the_example_parses_and_defaults_apply() {
    let actions = parse(EXAMPLE).unwrap();
    validate_all(&actions).unwrap();
    assert_eq!(
        actions[0],
        ActionConfig {
            name: "app".into(),
            on: vec!["booking.created".into(), "call.completed".into(), "call.*".into()],
            url: "https://app.example.com/internal/events".into(),
            auth: Some(AuthConfig {
                bearer_env: "APP_TOKEN".into()
            }),
            signing_secret_env: Some("APP_SIGNING_SECRET".into()),
            rate_limit: Some(RateLimitConfig {
                per_second: 50,
                burst: Some(100)
            }),
            timeout: Duration::from_secs(5),
            breaker: BreakerConfig {
                failures: 5,
                cool_down: Duration::from_secs(60)
            },
        }
    );
    let defaults = &actions[1];
    assert_eq!(defaults.auth, None);
    assert_eq!(defaults.signing_secret_env, None);
    assert_eq!(defaults.rate_limit, None);
    assert_eq!(defaults.timeout, Duration::from_secs(5));
    assert_eq!(defaults.breaker, BreakerConfig::default());
    assert_eq!(defaults.breaker.failures, 5);
    assert_eq!(defaults.breaker.cool_down, Duration::from_secs(60));

    let partial = parse(
        r#"
[[action]]
name = "x"
on = ["a"]
url = "http://x/"
timeout = "200ms"
rate_limit = { per_second = 7 }
breaker = { failures = 2 }
"#,
    )
    .unwrap();
    assert_eq!(partial[0].timeout, Duration::from_millis(200));
    assert_eq!(
        partial[0].rate_limit.unwrap().burst(),
        7,
        "burst defaults to per_second"
    );
    assert_eq!(partial[0].breaker.cool_down, Duration::from_secs(60));
}

#[test]
fn unknown_keys_and_bad_durations_are_rejected() {
    let unknown = parse("[[action]]\nname = \"x\"\non = [\"a\"]\nurl = \"http://x/\"\nretries = 3\n");
    assert!(unknown.unwrap_err().contains("retries"));
    let nested =
        parse("[[action]]\nname = \"x\"\non = [\"a\"]\nurl = \"http://x/\"\nbreaker = { failure = 3 }\n");
    assert!(nested.unwrap_err().contains("failure"));
    let duration = parse("[[action]]\nname = \"x\"\non = [\"a\"]\nurl = \"http://x/\"\ntimeout = \"soon\"\n");
    assert!(duration.unwrap_err().contains("timeout"));
}

#[test]
fn every_validation_error_names_its_field() {
    let base = || action("app", "https://app.example.com/hook".into());
    let cases: Vec<(ActionConfig, &str)> = vec![
        (
            ActionConfig {
                name: "".into(),
                ..base()
            },
            "action.name",
        ),
        (
            ActionConfig {
                name: "App".into(),
                ..base()
            },
            "action.name",
        ),
        (
            ActionConfig {
                name: "a b".into(),
                ..base()
            },
            "action.name",
        ),
        (ActionConfig { on: vec![], ..base() }, "action.app.on"),
        (
            ActionConfig {
                on: vec!["".into()],
                ..base()
            },
            "action.app.on",
        ),
        (
            ActionConfig {
                on: vec!["a*b".into()],
                ..base()
            },
            "action.app.on",
        ),
        (
            ActionConfig {
                url: "ftp://x/".into(),
                ..base()
            },
            "action.app.url",
        ),
        (
            ActionConfig {
                url: "not a url".into(),
                ..base()
            },
            "action.app.url",
        ),
        (
            ActionConfig {
                auth: Some(AuthConfig {
                    bearer_env: "".into(),
                }),
                ..base()
            },
            "action.app.auth.bearer_env",
        ),
        (
            ActionConfig {
                signing_secret_env: Some("A-B".into()),
                ..base()
            },
            "action.app.signing_secret_env",
        ),
        (
            ActionConfig {
                rate_limit: Some(RateLimitConfig {
                    per_second: 0,
                    burst: Some(1),
                }),
                ..base()
            },
            "action.app.rate_limit.per_second",
        ),
        (
            ActionConfig {
                rate_limit: Some(RateLimitConfig {
                    per_second: 1,
                    burst: Some(0),
                }),
                ..base()
            },
            "action.app.rate_limit.burst",
        ),
        (
            ActionConfig {
                timeout: Duration::ZERO,
                ..base()
            },
            "action.app.timeout",
        ),
        (
            ActionConfig {
                timeout: Duration::from_secs(301),
                ..base()
            },
            "action.app.timeout",
        ),
        (
            ActionConfig {
                breaker: BreakerConfig {
                    failures: 0,
                    ..BreakerConfig::default()
                },
                ..base()
            },
            "action.app.breaker.failures",
        ),
        (
            ActionConfig {
                breaker: BreakerConfig {
                    cool_down: Duration::ZERO,
                    ..BreakerConfig::default()
                },
                ..base()
            },
            "action.app.breaker.cool_down",
        ),
    ];
    for (config, field) in cases {
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains(&format!("{field}:")), "{field}: {error}");
    }
    base().validate().unwrap();
    ActionConfig {
        timeout: Duration::from_secs(300),
        ..base()
    }
    .validate()
    .unwrap();
    ActionConfig {
        timeout: Duration::from_millis(1),
        ..base()
    }
    .validate()
    .unwrap();

    let duplicate = validate_all(&[base(), action("other", base().url), base()]).unwrap_err();
    assert!(duplicate.to_string().contains("action.name"), "{duplicate}");
    assert!(duplicate.to_string().contains("\"app\""), "{duplicate}");
}

#[test]
fn resolving_reads_env_vars_and_names_the_missing_ones() {
    let config = ActionConfig {
        auth: Some(AuthConfig {
            bearer_env: "APP_TOKEN".into(),
        }),
        signing_secret_env: Some("APP_SIGNING_SECRET".into()),
        ..action("app", "https://app.example.com/hook".into())
    };
    let only_token = |var: &str| (var == "APP_TOKEN").then(|| TOKEN.to_owned());
    let error = config.resolve(only_token).unwrap_err().to_string();
    assert!(
        error.contains("APP_SIGNING_SECRET") && error.contains("app"),
        "{error}"
    );
    let error = config
        .resolve(|var| (var == "APP_SIGNING_SECRET").then(|| SECRET.to_owned()))
        .unwrap_err()
        .to_string();
    assert!(error.contains("APP_TOKEN") && error.contains("app"), "{error}");
    let error = config
        .resolve(|var| {
            Some(
                if var == "APP_TOKEN" {
                    TOKEN
                } else {
                    "whsec_not base64 %%"
                }
                .to_owned(),
            )
        })
        .unwrap_err()
        .to_string();
    assert!(error.contains("APP_SIGNING_SECRET"), "{error}");
    assert!(!error.contains("not base64 %%"), "the value stays out: {error}");
    let error = config
        .resolve(|var| Some(if var == "APP_TOKEN" { "line\nbreak" } else { SECRET }.to_owned()))
        .unwrap_err()
        .to_string();
    assert!(error.contains("APP_TOKEN") && !error.contains("line"), "{error}");

    let resolved = config
        .resolve(|var| match var {
            "APP_TOKEN" => Some(TOKEN.into()),
            "APP_SIGNING_SECRET" => Some(SECRET.into()),
            _ => None,
        })
        .unwrap();
    assert!(resolved.matches("call.completed"));
    assert_eq!(resolved.bearer.as_ref().map(|t| t.expose()), Some(TOKEN));
    let printed = format!("{resolved:?} {resolved:#?}");
    for secret in [TOKEN, SECRET, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
        assert!(!printed.contains(secret), "Debug leaks {secret}: {printed}");
    }
    assert!(printed.contains("[redacted]"), "{printed}");
    let target = Target::new(resolved, http_client().unwrap());
    let printed = format!("{target:?}");
    assert!(
        !printed.contains(TOKEN) && !printed.contains("MfKQ9r8"),
        "{printed}"
    );
}

#[test]
fn patterns_match_exactly_or_by_prefix() {
    let patterns: Vec<String> = ["booking.created", "call.*", "sms*"]
        .iter()
        .map(|p| (*p).to_owned())
        .collect();
    let cases = [
        ("booking.created", true),
        ("booking.cancelled", false),
        ("booking.created.v2", false),
        ("call.completed", true),
        ("call.started", true),
        ("call", false),
        ("callback.x", false),
        ("sms", true),
        ("sms.received", true),
        ("payment.succeeded", false),
    ];
    for (event_type, expected) in cases {
        assert_eq!(matches(&patterns, event_type), expected, "{event_type}");
    }
    assert!(matches(&["*".to_owned()], "anything.at.all"));
    assert!(!matches(&[], "call.completed"));
}
