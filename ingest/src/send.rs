//! `switchboard-ingest send`: a developer tool, like `stripe trigger`, that builds a realistic sample
//! webhook for a provider ([`samples`](crate::samples)), signs it the way the provider does and POSTs
//! it to a running ingest.
//!
//! This module owns the command line and the sending. Keys come from flags or from the
//! `SWITCHBOARD_*` env vars ingest reads (the first entry of each list), and are never printed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use http::StatusCode;
use url::Url;

use crate::config::GenericScheme;
use crate::samples::{
    Outgoing, calendly_event, calendly_request, generic_event, generic_request, stripe_event, stripe_request,
    to_json, twilio_events_batch, twilio_events_request, twilio_params, twilio_request, twilio_signed_url,
};
use crate::verify::Secret;
use crate::verify::twilio::TwilioKey;

const TWILIO_AUTH_TOKENS_ENV: &str = "SWITCHBOARD_TWILIO_AUTH_TOKENS";
const TWILIO_SHARED_KEYS_ENV: &str = "SWITCHBOARD_TWILIO_SHARED_KEYS";
const TWILIO_EVENTS_BASIC_AUTH_ENV: &str = "SWITCHBOARD_TWILIO_EVENTS_BASIC_AUTH";
const STRIPE_SECRETS_ENV: &str = "SWITCHBOARD_STRIPE_WEBHOOK_SECRETS";
const CALENDLY_KEYS_ENV: &str = "SWITCHBOARD_CALENDLY_SIGNING_KEYS";

// ---------------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------------

/// `switchboard-ingest send <provider> --url …`.
#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(subcommand)]
    provider: Provider,
}

#[derive(Debug, Subcommand)]
enum Provider {
    /// A voice status callback, signed with an auth token (HMAC-SHA1) or a shared key (HMAC-SHA256).
    Twilio(TwilioArgs),
    /// An Event Streams webhook sink delivery: a JSON array of CloudEvents (by default one call's
    /// initiated, ringing, answered and completed events), signed as Twilio signs sinks.
    TwilioEvents(TwilioEventsArgs),
    /// An event (`invoice.paid` by default) with a `Stripe-Signature` header.
    Stripe(StripeArgs),
    /// An `invitee.created` (by default) event with a `Calendly-Webhook-Signature` header.
    Calendly(CalendlyArgs),
    /// A generic source: Standard Webhooks (`webhook-signature`) or GitHub (`X-Hub-Signature-256`).
    Generic(GenericArgs),
}

#[derive(Debug, Args)]
struct TwilioArgs {
    /// Where to send, e.g. http://127.0.0.1:8080/webhooks/twilio/calls.
    #[arg(long)]
    url: Url,
    /// The public base URL ingest is configured with (its SWITCHBOARD_PUBLIC_URL): the signature covers
    /// this base plus the path and query of --url. Default: --url itself.
    #[arg(long, env = "SWITCHBOARD_PUBLIC_URL", value_name = "URL")]
    public_url: Option<Url>,
    /// Sets or adds a parameter (repeatable), e.g. --param CallStatus=busy.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Sends the parameters as a JSON body: the signature covers the URL only and the body is proven by
    /// a `bodySHA256` query parameter.
    #[arg(long)]
    json: bool,
    /// Auth token to sign with (HMAC-SHA1). Default: the first of SWITCHBOARD_TWILIO_AUTH_TOKENS.
    #[arg(long, value_name = "TOKEN", value_parser = parse_secret)]
    auth_token: Option<Secret>,
    /// Shared key to sign with (HMAC-SHA256); wins over any auth token. Default when no auth token is
    /// found: the first of SWITCHBOARD_TWILIO_SHARED_KEYS.
    #[arg(long, value_name = "ID:SECRET", value_parser = parse_shared_key)]
    shared_key: Option<TwilioKey>,
}

#[derive(Debug, Args)]
struct TwilioEventsArgs {
    /// Where to send, e.g. http://127.0.0.1:8080/webhooks/twilio-events.
    #[arg(long)]
    url: Url,
    /// The public base URL ingest is configured with; see `send twilio --help`.
    #[arg(long, env = "SWITCHBOARD_PUBLIC_URL", value_name = "URL")]
    public_url: Option<Url>,
    /// Number of events in the batch: call status events cycling initiated, ringing, answered,
    /// completed over as many calls as needed.
    #[arg(long, default_value_t = 4)]
    events: usize,
    /// `user:password` for `Authorization: Basic`, as a sink URL with userinfo makes Twilio send.
    /// Default: the first of SWITCHBOARD_TWILIO_EVENTS_BASIC_AUTH, if set.
    #[arg(long, value_name = "USER:PASSWORD")]
    basic_auth: Option<String>,
    /// Auth token to sign with. Default: the first of SWITCHBOARD_TWILIO_AUTH_TOKENS.
    #[arg(long, value_name = "TOKEN", value_parser = parse_secret)]
    auth_token: Option<Secret>,
    /// Shared key to sign with (HMAC-SHA256); wins over any auth token.
    #[arg(long, value_name = "ID:SECRET", value_parser = parse_shared_key)]
    shared_key: Option<TwilioKey>,
}

#[derive(Debug, Args)]
struct StripeArgs {
    /// Where to send, e.g. http://127.0.0.1:8080/webhooks/stripe.
    #[arg(long)]
    url: Url,
    /// Endpoint secret (`whsec_…`). Default: the first of SWITCHBOARD_STRIPE_WEBHOOK_SECRETS.
    #[arg(long, value_parser = parse_secret)]
    secret: Option<Secret>,
    /// The event type.
    #[arg(long = "type", value_name = "TYPE", default_value = "invoice.paid")]
    event_type: String,
    /// Put into `data.object.metadata.phone_id`, which ingest keys the record by.
    #[arg(long)]
    phone_id: Option<String>,
}

#[derive(Debug, Args)]
struct CalendlyArgs {
    /// Where to send, e.g. http://127.0.0.1:8080/webhooks/calendly.
    #[arg(long)]
    url: Url,
    /// Webhook signing key. Default: the first of SWITCHBOARD_CALENDLY_SIGNING_KEYS.
    #[arg(long, value_parser = parse_secret)]
    key: Option<Secret>,
    /// The event name, e.g. invitee.created or invitee.canceled.
    #[arg(long, default_value = "invitee.created")]
    event: String,
    /// Put into `payload.tracking.utm_content` (ingest's default phone id pointer).
    #[arg(long)]
    phone_id: Option<String>,
}

#[derive(Debug, Args)]
struct GenericArgs {
    /// Where to send, e.g. http://127.0.0.1:8080/webhooks/generic/acme.
    #[arg(long)]
    url: Url,
    /// The source's scheme, as configured.
    #[arg(long, value_parser = parse_scheme, value_name = "standard-webhooks|github")]
    scheme: GenericScheme,
    /// The source's secret: `whsec_<base64>` for standard-webhooks, plain text for github.
    #[arg(long, value_parser = parse_secret)]
    secret: Secret,
    /// The raw body. Default: a sample `{"type":…,"timestamp":…,"data":{…}}` event.
    #[arg(long)]
    body: Option<String>,
    /// Put into the default body's `data.phone_id`.
    #[arg(long, conflicts_with = "body")]
    phone_id: Option<String>,
}

/// Builds, signs and sends the sample; prints the answer. Fails unless ingest answers 2xx.
pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    let now = unix_now();
    let env = |name: &str| std::env::var(name).ok();
    let (provider, request) = match args.provider {
        Provider::Twilio(args) => {
            let key = twilio_key(args.auth_token, args.shared_key, env)?;
            if let Some(base) = &args.public_url {
                check_public_url(base)?;
            }
            let params = twilio_params(now, &args.params);
            let request = twilio_request(args.url, args.public_url.as_ref(), &params, args.json, &key);
            ("twilio", request)
        }
        Provider::TwilioEvents(args) => {
            let key = twilio_key(args.auth_token, args.shared_key, env)?;
            if let Some(base) = &args.public_url {
                check_public_url(base)?;
            }
            let basic = args.basic_auth.or_else(|| {
                env(TWILIO_EVENTS_BASIC_AUTH_ENV).and_then(|list| first_entry(&list).map(str::to_owned))
            });
            let callback_url = twilio_signed_url(&args.url, args.public_url.as_ref())
                .replace("twilio-events", "twilio/calls");
            let events = twilio_events_batch(now, args.events, &callback_url);
            let request = twilio_events_request(
                args.url,
                args.public_url.as_ref(),
                &events,
                &key,
                basic.as_deref(),
            );
            ("twilio-events", request)
        }
        Provider::Stripe(args) => {
            let secret = secret_or_env(args.secret, STRIPE_SECRETS_ENV, "--secret", env)?;
            let event = stripe_event(&args.event_type, args.phone_id.as_deref(), now);
            ("stripe", stripe_request(args.url, &secret, to_json(&event), now))
        }
        Provider::Calendly(args) => {
            let key = secret_or_env(args.key, CALENDLY_KEYS_ENV, "--key", env)?;
            let event = calendly_event(&args.event, args.phone_id.as_deref(), now);
            ("calendly", calendly_request(args.url, &key, to_json(&event), now))
        }
        Provider::Generic(args) => {
            let secret = match args.scheme {
                GenericScheme::StandardWebhooks => std::str::from_utf8(args.secret.expose())
                    .ok()
                    .and_then(|text| Secret::from_standard_webhooks(text).ok())
                    .context("--secret: a Standard Webhooks secret is `whsec_` followed by base64")?,
                GenericScheme::Github => args.secret,
            };
            let body = match args.body {
                Some(body) => body.into_bytes(),
                None => to_json(&generic_event(args.phone_id.as_deref(), now)),
            };
            (
                "generic",
                generic_request(args.url, args.scheme, &secret, body, now),
            )
        }
    };

    match &request.signed_url {
        Some(signed) => println!("POST {} ({provider}, signed for {signed})", request.url),
        None => println!("POST {} ({provider})", request.url),
    }
    let client = reqwest::Client::builder()
        .user_agent(concat!("switchboard-ingest-send/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(20))
        .build()
        .context("building the HTTP client")?;
    let url = request.url.clone();
    let reply = send(&client, request)
        .await
        .with_context(|| format!("sending to {url}"))?;
    println!("{}", reply.status);
    if !reply.body.is_empty() {
        println!("{}", reply.body);
    }
    if !reply.status.is_success() {
        bail!("ingest answered {}", reply.status);
    }
    Ok(())
}

/// `Name=value`; the value may contain `=` and may be empty.
fn parse_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err("expected NAME=VALUE".to_owned()),
    }
}

fn parse_secret(text: &str) -> Result<Secret, String> {
    if text.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(Secret::new(text))
}

/// `id:secret`, as in SWITCHBOARD_TWILIO_SHARED_KEYS. The id goes into a header, so it must be visible
/// ASCII without `,`, `=` or spaces.
fn parse_shared_key(text: &str) -> Result<TwilioKey, String> {
    let (id, key) = text.split_once(':').ok_or("expected ID:SECRET")?;
    let valid_id = !id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic() && b != b',' && b != b'=');
    if !valid_id {
        return Err("the key id must be visible ASCII without ',' or '='".to_owned());
    }
    Ok(TwilioKey::SharedKey {
        id: id.to_owned(),
        key: parse_secret(key)?,
    })
}

fn parse_scheme(text: &str) -> Result<GenericScheme, String> {
    match text {
        "standard-webhooks" => Ok(GenericScheme::StandardWebhooks),
        "github" => Ok(GenericScheme::Github),
        _ => Err("expected standard-webhooks or github".to_owned()),
    }
}

/// The first non-empty entry of a comma-separated env list, as ingest's config reads it.
fn first_entry(list: &str) -> Option<&str> {
    list.split(',').map(str::trim).find(|entry| !entry.is_empty())
}

/// The flag's secret, else the first entry of `var`.
fn secret_or_env(
    flag: Option<Secret>,
    var: &str,
    flag_name: &str,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Secret> {
    if let Some(secret) = flag {
        return Ok(secret);
    }
    let list = env(var).unwrap_or_default();
    let first = first_entry(&list).with_context(|| format!("no key: pass {flag_name} or set {var}"))?;
    Ok(Secret::new(first))
}

/// The Twilio key: `--shared-key`, else `--auth-token`, else the first auth token in the env, else the
/// first shared key in the env.
fn twilio_key(
    auth_token: Option<Secret>,
    shared_key: Option<TwilioKey>,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<TwilioKey> {
    if let Some(key) = shared_key {
        return Ok(key);
    }
    if let Some(token) = auth_token {
        return Ok(TwilioKey::AuthToken(token));
    }
    if let Some(token) = env(TWILIO_AUTH_TOKENS_ENV).as_deref().and_then(first_entry) {
        return Ok(TwilioKey::AuthToken(Secret::new(token)));
    }
    if let Some(entry) = env(TWILIO_SHARED_KEYS_ENV).as_deref().and_then(first_entry) {
        return parse_shared_key(entry)
            .map_err(|problem| anyhow::anyhow!("{TWILIO_SHARED_KEYS_ENV}: {problem}"));
    }
    bail!("no Twilio key: pass --auth-token or --shared-key, or set {TWILIO_AUTH_TOKENS_ENV}")
}

/// The same rule ingest applies to SWITCHBOARD_PUBLIC_URL.
fn check_public_url(base: &Url) -> anyhow::Result<()> {
    let origin_only = matches!(base.scheme(), "http" | "https")
        && base.host_str().is_some()
        && base.path() == "/"
        && base.query().is_none()
        && base.fragment().is_none();
    if !origin_only {
        bail!(
            "--public-url must be http(s)://host[:port] without a path, like ingest's SWITCHBOARD_PUBLIC_URL"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------------------------------

/// What ingest answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub body: String,
}

/// POSTs `request` and reads the whole answer.
pub async fn send(client: &reqwest::Client, request: Outgoing) -> Result<Reply, reqwest::Error> {
    let response = client
        .post(request.url)
        .headers(request.headers)
        .body(request.body)
        .send()
        .await?;
    let status = response.status();
    let body = response.text().await?;
    Ok(Reply { status, body })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::{OriginalUri, State};
    use axum::routing::post;
    use http::{HeaderMap, header};
    use switchboard_schemas::media_type::FORM;

    use super::*;
    use crate::config::Config;
    use crate::samples::SAMPLE_TO;
    use crate::verify::twilio;
    use crate::verify::{Scheme, SecretSet, SharedKeys};

    const NOW: i64 = 1_700_000_000;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn keys_come_from_flags_then_the_first_env_entry() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(var, _)| *var == name)
                    .map(|(_, value)| value.to_string())
            }
        };
        let describe = |key: TwilioKey| match key {
            TwilioKey::AuthToken(token) => format!("token {}", String::from_utf8_lossy(token.expose())),
            TwilioKey::SharedKey { id, key } => {
                format!("shared {id} {}", String::from_utf8_lossy(key.expose()))
            }
        };
        let both: &[_] = &[
            (TWILIO_AUTH_TOKENS_ENV, " , tok1,tok2"),
            (TWILIO_SHARED_KEYS_ENV, "k1:s1,k2:s2"),
        ];
        let flag_token = || Some(Secret::new("flag-token"));
        let flag_shared = || Some(parse_shared_key("fk:fs").unwrap());

        let twilio = |token, shared, vars| {
            twilio_key(token, shared, env(vars))
                .map(describe)
                .map_err(|e| e.to_string())
        };
        assert_eq!(twilio(flag_token(), flag_shared(), both).unwrap(), "shared fk fs");
        assert_eq!(twilio(flag_token(), None, both).unwrap(), "token flag-token");
        assert_eq!(twilio(None, None, both).unwrap(), "token tok1");
        assert_eq!(twilio(None, None, &both[1..]).unwrap(), "shared k1 s1");
        assert!(
            twilio(None, None, &[])
                .unwrap_err()
                .contains(TWILIO_AUTH_TOKENS_ENV)
        );
        assert!(twilio(None, None, &[(TWILIO_SHARED_KEYS_ENV, "no-colon")]).is_err());

        let vars: &[_] = &[(STRIPE_SECRETS_ENV, "whsec_a,whsec_b")];
        let secret = |flag| {
            secret_or_env(flag, STRIPE_SECRETS_ENV, "--secret", env(vars)).map(|s| s.expose().to_vec())
        };
        assert_eq!(secret(None).unwrap(), b"whsec_a");
        assert_eq!(secret(Some(Secret::new("whsec_flag"))).unwrap(), b"whsec_flag");
        let missing = secret_or_env(None, CALENDLY_KEYS_ENV, "--key", env(vars))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("--key") && missing.contains(CALENDLY_KEYS_ENV),
            "{missing}"
        );
    }

    #[test]
    fn parses_arguments() {
        assert_eq!(
            parse_param("CallStatus=busy"),
            Ok(("CallStatus".into(), "busy".into()))
        );
        assert_eq!(parse_param("Body=a=b"), Ok(("Body".into(), "a=b".into())));
        assert_eq!(parse_param("Empty="), Ok(("Empty".into(), String::new())));
        assert!(parse_param("=x").is_err() && parse_param("novalue").is_err());
        assert!(parse_secret("").is_err());
        for bad in [
            "nocolon",
            ":secret",
            "id:",
            "a b:secret",
            "a,b:secret",
            "a=b:secret",
        ] {
            assert!(parse_shared_key(bad).is_err(), "{bad}");
        }
        assert!(
            matches!(parse_shared_key("id:s:with:colons"), Ok(TwilioKey::SharedKey { id, .. }) if id == "id")
        );
        assert_eq!(parse_scheme("github"), Ok(GenericScheme::Github));
        assert_eq!(
            parse_scheme("standard-webhooks"),
            Ok(GenericScheme::StandardWebhooks)
        );
        assert!(parse_scheme("svix").is_err());
        assert!(check_public_url(&url("https://hooks.example.com")).is_ok());
        assert!(check_public_url(&url("http://127.0.0.1:8080/")).is_ok());
        assert!(check_public_url(&url("https://hooks.example.com/prefix")).is_err());
    }

    #[test]
    fn keys_never_show_in_debug_output() {
        let key = parse_shared_key("key-1:hunter2-secret").unwrap();
        let printed = format!("{key:?} {:?}", TwilioKey::AuthToken(Secret::new("hunter2-token")));
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    /// Keeps what ingest would have written to Kafka.
    #[derive(Default)]
    struct Keep(Mutex<Vec<crate::envelope::Envelope>>);

    impl crate::publish::Publisher for Keep {
        fn publish<'a>(
            &'a self,
            envelope: &'a crate::envelope::Envelope,
        ) -> futures::future::BoxFuture<'a, Result<(), crate::publish::PublishError>> {
            self.0.lock().unwrap().push(envelope.clone());
            Box::pin(async { Ok(()) })
        }

        fn ready(&self) -> futures::future::BoxFuture<'_, Result<(), crate::publish::NotReady>> {
            Box::pin(async { Ok(()) })
        }

        fn flush(&self, _timeout: Duration) -> futures::future::BoxFuture<'_, ()> {
            Box::pin(async {})
        }
    }

    #[tokio::test]
    async fn ingest_accepts_every_sample() {
        use crate::config::{GenericSource, SecretStrings};
        let strings = |values: &[&str]| SecretStrings(values.iter().map(|s| s.to_string()).collect());
        let whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let config = Config {
            public_url: Some("https://hooks.example.com".into()),
            twilio_auth_tokens: strings(&["tok_test"]),
            twilio_shared_keys: strings(&["k1:shared"]),
            stripe_webhook_secrets: strings(&["whsec_stripe"]),
            calendly_signing_keys: strings(&["cal_key"]),
            generic: vec![
                GenericSource {
                    name: "acme".into(),
                    scheme: GenericScheme::StandardWebhooks,
                    secrets: strings(&[whsec]),
                    phone_id_pointer: Some("/data/phone_id".into()),
                },
                GenericSource {
                    name: "gh".into(),
                    scheme: GenericScheme::Github,
                    secrets: strings(&["gh_secret"]),
                    phone_id_pointer: Some("/data/phone_id".into()),
                },
            ],
            twilio_events_basic_auth: strings(&["twilio:s3cret"]),
            // Two samples are the same callback: count what reaches Kafka without the replay cache.
            replay_cache_entries: 0,
            ..Config::default()
        };
        let kept = Arc::new(Keep::default());
        let state = crate::AppState::new(Arc::new(config.validate().unwrap()), Arc::clone(&kept) as _);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, crate::app(state)).await });

        let now = unix_now();
        let public = url("https://hooks.example.com");
        const PHONE: &str = "+14155550123";
        let phone = Some(PHONE);
        let target = |path: &str| url(&format!("{base}{path}"));
        let token = TwilioKey::AuthToken(Secret::new("tok_test"));
        let shared = parse_shared_key("k1:shared").unwrap();
        let calls = twilio_params(now, &[]);
        let generic = || to_json(&generic_event(phone, now));
        let requests = [
            twilio_request(
                target("/webhooks/twilio/calls"),
                Some(&public),
                &calls,
                false,
                &token,
            ),
            twilio_request(
                target("/webhooks/twilio/calls?x=1"),
                Some(&public),
                &calls,
                true,
                &token,
            ),
            // Another event: the same signed content would be the same event, answered from the
            // recent-events cache without a second record.
            twilio_request(
                target("/webhooks/twilio/calls"),
                Some(&public),
                &twilio_params(now, &[]),
                false,
                &shared,
            ),
            twilio_events_request(
                target("/webhooks/twilio-events"),
                Some(&public),
                &twilio_events_batch(now, 4, "https://hooks.example.com/webhooks/twilio/calls"),
                &token,
                Some("twilio:s3cret"),
            ),
            stripe_request(
                target("/webhooks/stripe"),
                &Secret::new("whsec_stripe"),
                to_json(&stripe_event("invoice.paid", phone, now)),
                now,
            ),
            calendly_request(
                target("/webhooks/calendly"),
                &Secret::new("cal_key"),
                to_json(&calendly_event("invitee.created", phone, now)),
                now,
            ),
            generic_request(
                target("/webhooks/generic/acme"),
                GenericScheme::StandardWebhooks,
                &Secret::from_standard_webhooks(whsec).unwrap(),
                generic(),
                now,
            ),
            generic_request(
                target("/webhooks/generic/gh"),
                GenericScheme::Github,
                &Secret::new("gh_secret"),
                generic(),
                now,
            ),
        ];
        let client = reqwest::Client::new();
        for request in requests {
            let url = request.url.clone();
            let reply = send(&client, request).await.unwrap();
            assert_eq!(reply.status, StatusCode::OK, "{url}: {}", reply.body);
        }
        server.abort();

        let keys: Vec<String> = kept
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|envelope| envelope.key().to_owned())
            .collect();
        // Twilio keys inbound calls by `To`; the others by the phone id the sample carries.
        let expected = [
            SAMPLE_TO, SAMPLE_TO, SAMPLE_TO, SAMPLE_TO, SAMPLE_TO, SAMPLE_TO, SAMPLE_TO, PHONE, PHONE, PHONE,
            PHONE,
        ];
        assert_eq!(keys, expected);
    }

    /// What the test server saw.
    #[derive(Debug, Clone)]
    struct Recorded {
        method: http::Method,
        uri: String,
        headers: HeaderMap,
        body: Bytes,
    }

    #[tokio::test]
    async fn sends_the_request_to_a_real_server() {
        let recorded: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let record = |State(log): State<Arc<Mutex<Vec<Recorded>>>>,
                      method: http::Method,
                      OriginalUri(uri): OriginalUri,
                      headers: HeaderMap,
                      body: Bytes| async move {
            log.lock().unwrap().push(Recorded {
                method,
                uri: uri.to_string(),
                headers,
                body,
            });
            (
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"status":"stored"}"#,
            )
        };
        let router = Router::new()
            .route("/webhooks/twilio/{*rest}", post(record))
            .with_state(Arc::clone(&recorded));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router).await });

        let key = TwilioKey::AuthToken(Secret::new("tok_test"));
        let params = twilio_params(NOW, &[]);
        let target = url(&format!("http://{address}/webhooks/twilio/calls?tenant=a"));
        let request = twilio_request(
            target,
            Some(&url("https://hooks.example.com")),
            &params,
            false,
            &key,
        );
        let expected = request.clone();
        let reply = send(&reqwest::Client::new(), request).await.unwrap();
        server.abort();

        assert_eq!(
            reply,
            Reply {
                status: StatusCode::OK,
                body: r#"{"status":"stored"}"#.into()
            }
        );
        let seen = recorded.lock().unwrap().clone();
        let [seen] = seen.as_slice() else {
            panic!("expected one request, got {seen:?}")
        };
        assert_eq!(seen.method, http::Method::POST);
        assert_eq!(seen.uri, "/webhooks/twilio/calls?tenant=a");
        assert_eq!(seen.body, expected.body);
        for (name, value) in &expected.headers {
            assert_eq!(seen.headers.get(name), Some(value), "{name}");
        }
        assert_eq!(seen.headers["content-type"], FORM);
        // What ingest does with it: rebuild the public URL from its config and verify.
        let signed = format!("https://hooks.example.com{}", seen.uri);
        let tokens = SecretSet::from_strings(["tok_test"]).unwrap();
        let verified = twilio::verify(
            &tokens,
            &SharedKeys::default(),
            &seen.headers,
            &signed,
            FORM,
            &seen.body,
        );
        assert_eq!(verified.map(|v| v.scheme()), Ok(Scheme::TwilioHmacSha1));
    }
}
