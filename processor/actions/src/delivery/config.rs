//! One outbound action's configuration, the `[[action]]` TOML table: parsing, validation, and
//! resolving the secrets it names from env vars into a [`ResolvedAction`].
//!
//! ```toml
//! [[action]]
//! name = "app"                                   # [a-z0-9_-]+, unique; a metric label
//! on = ["booking.created", "call.*"]             # event types; a trailing `*` matches a prefix
//! url = "https://app.example.com/internal/events"
//! auth = { bearer_env = "APP_TOKEN" }            # optional: Authorization: Bearer $APP_TOKEN
//! signing_secret_env = "APP_SIGNING_SECRET"      # optional: whsec_…, Standard Webhooks signing
//! rate_limit = { per_second = 50, burst = 100 }  # optional; burst defaults to per_second
//! timeout = "5s"                                 # whole request, 1ms..=5m; default 5s
//! breaker = { failures = 5, cool_down = "60s" }  # optional; these are the defaults
//! ```
//!
//! Secret values are only ever held in [`SecretString`] / [`SigningSecret`], whose `Debug` is
//! `[redacted]`, and never appear in errors: errors name the env var instead.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use switchboard_service::config::{ConfigError, duration};
use url::Url;

use super::sign::SigningSecret;

/// Default whole-request timeout.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default consecutive transient failures that open the breaker.
pub(crate) const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// Default time the breaker stays open before a probe.
pub(crate) const DEFAULT_BREAKER_COOL_DOWN: Duration = Duration::from_secs(60);
const MIN_TIMEOUT: Duration = Duration::from_millis(1);
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// One `[[action]]` entry, as written in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// Unique, `[a-z0-9_-]+`; used in metric labels and Kafka headers.
    pub name: String,
    /// Event types that trigger the action; see [`matches()`].
    pub on: Vec<String>,
    /// Where events are POSTed (http or https).
    pub url: String,
    /// `Authorization: Bearer …` from an env var.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Env var holding a `whsec_…` secret; when set, requests carry Standard Webhooks signatures.
    #[serde(default)]
    pub signing_secret_env: Option<String>,
    /// Requests per second to this target; deliveries wait for their turn. Unlimited when absent.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Whole-request timeout (connect, send, response body).
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// The circuit breaker; always on, with these defaults when absent.
    #[serde(default)]
    pub breaker: BreakerConfig,
}

/// `auth = { bearer_env = "…" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Env var holding the bearer token.
    pub bearer_env: String,
}

/// `rate_limit = { per_second = …, burst = … }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second, at least 1.
    pub per_second: u32,
    /// Requests allowed at once after a quiet period, at least 1; defaults to `per_second`.
    #[serde(default)]
    pub burst: Option<u32>,
}

impl RateLimitConfig {
    /// The burst, defaulted.
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.per_second)
    }
}

/// `breaker = { failures = …, cool_down = "…" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive transient failures that open the breaker, at least 1.
    pub failures: u32,
    /// How long the breaker stays open before letting one probe through.
    #[serde(deserialize_with = "duration")]
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: DEFAULT_BREAKER_FAILURES,
            cool_down: DEFAULT_BREAKER_COOL_DOWN,
        }
    }
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

/// A secret string read from the environment. `Debug` prints `[redacted]`.
#[derive(Clone)]
pub struct SecretString(String);

impl SecretString {
    /// The secret itself; only for building the request.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A validated action with its secrets read: what a [`Target`](super::Target) is built from.
/// Only [`ActionConfig::resolve`] makes one. `Debug` shows no secret.
#[derive(Debug, Clone)]
pub struct ResolvedAction {
    pub name: String,
    pub on: Vec<String>,
    pub url: Url,
    /// The bearer token, when `auth` is configured.
    pub bearer: Option<SecretString>,
    /// The signing key, when `signing_secret_env` is configured.
    pub signing_secret: Option<SigningSecret>,
    pub rate_limit: Option<RateLimitConfig>,
    pub timeout: Duration,
    pub breaker: BreakerConfig,
}

impl ResolvedAction {
    /// Whether events of `event_type` trigger this action.
    pub fn matches(&self, event_type: &str) -> bool {
        matches(&self.on, event_type)
    }
}

/// Whether `event_type` matches any of `patterns`: exactly, or by prefix for a pattern ending
/// in `*` (`"call.*"` matches `"call.completed"` but not `"call"`; `"*"` matches everything).
pub(crate) fn matches(patterns: &[String], event_type: &str) -> bool {
    patterns.iter().any(|pattern| match pattern.strip_suffix('*') {
        Some(prefix) => event_type.starts_with(prefix),
        None => pattern == event_type,
    })
}

/// Validates every action and checks that names are unique.
pub(crate) fn validate_all(actions: &[ActionConfig]) -> Result<(), ConfigError> {
    let mut names = BTreeSet::new();
    for action in actions {
        action.validate()?;
        if !names.insert(action.name.as_str()) {
            return Err(ConfigError::invalid(
                "action.name",
                format!("{:?} is used by more than one action", action.name),
            ));
        }
    }
    Ok(())
}

impl ActionConfig {
    /// Checks every field; the error names it as `action.<name>.<field>`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let valid_name = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid_name {
            return Err(ConfigError::invalid(
                "action.name",
                format!("{:?} must be non-empty [a-z0-9_-]", self.name),
            ));
        }
        let invalid = |field: &str, reason: &str| {
            ConfigError::invalid(&format!("action.{}.{field}", self.name), reason)
        };
        if self.on.is_empty() {
            return Err(invalid("on", "must list at least one event type"));
        }
        for pattern in &self.on {
            let body = pattern.strip_suffix('*').unwrap_or(pattern);
            if pattern.trim().is_empty() || pattern.trim() != pattern || body.contains('*') {
                return Err(invalid(
                    "on",
                    "patterns are non-empty event types, `*` allowed only at the end",
                ));
            }
        }
        match Url::parse(&self.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
            _ => return Err(invalid("url", "must be an absolute http:// or https:// URL")),
        }
        if let Some(auth) = &self.auth
            && !valid_env_name(&auth.bearer_env)
        {
            return Err(invalid("auth.bearer_env", "must name an env var"));
        }
        if let Some(env) = &self.signing_secret_env
            && !valid_env_name(env)
        {
            return Err(invalid("signing_secret_env", "must name an env var"));
        }
        if let Some(limit) = &self.rate_limit {
            if limit.per_second < 1 {
                return Err(invalid("rate_limit.per_second", "must be at least 1"));
            }
            if limit.burst() < 1 {
                return Err(invalid("rate_limit.burst", "must be at least 1"));
            }
        }
        if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&self.timeout) {
            return Err(invalid("timeout", "must be between 1ms and 5m"));
        }
        if self.breaker.failures < 1 {
            return Err(invalid("breaker.failures", "must be at least 1"));
        }
        if self.breaker.cool_down.is_zero() {
            return Err(invalid("breaker.cool_down", "must be above zero"));
        }
        Ok(())
    }

    /// Validates, then reads the env vars the action names through `env` (`std::env::var(..).ok()`
    /// in production). A missing or empty variable, or a signing secret that is not `whsec_…`,
    /// is an error naming the variable and the action, never the value.
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<ResolvedAction, ConfigError> {
        self.validate()?;
        let read = |field: &str, var: &str| {
            env(var).filter(|value| !value.trim().is_empty()).ok_or_else(|| {
                ConfigError::invalid(
                    &format!("action.{}.{field}", self.name),
                    format!("env var {var} is not set"),
                )
            })
        };
        let bearer = match &self.auth {
            Some(auth) => {
                let token = read("auth.bearer_env", &auth.bearer_env)?;
                if reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
                    return Err(ConfigError::invalid(
                        &format!("action.{}.auth.bearer_env", self.name),
                        format!("env var {} is not a valid header value", auth.bearer_env),
                    ));
                }
                Some(SecretString(token))
            }
            None => None,
        };
        let signing_secret = match &self.signing_secret_env {
            Some(var) => {
                let secret = read("signing_secret_env", var)?;
                Some(SigningSecret::from_standard_webhooks(&secret).map_err(|error| {
                    ConfigError::invalid(
                        &format!("action.{}.signing_secret_env", self.name),
                        format!("env var {var}: {error}"),
                    )
                })?)
            }
            None => None,
        };
        Ok(ResolvedAction {
            name: self.name.clone(),
            on: self.on.clone(),
            url: Url::parse(&self.url)
                .map_err(|_| ConfigError::invalid(&format!("action.{}.url", self.name), "invalid"))?,
            bearer,
            signing_secret,
            rate_limit: self.rate_limit,
            timeout: self.timeout,
            breaker: self.breaker,
        })
    }
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
