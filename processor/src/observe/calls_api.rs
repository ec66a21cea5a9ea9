//! The console's client of the sink's calls API (`sink_api_url`, `sink_api_token`): what the
//! search, call and deliveries pages read. The console keeps no index of its own.

use std::time::Duration;

use serde_json::Value;

use crate::config::Config;

/// How long one calls API request may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Why the calls API gave no answer to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SinkError {
    /// `sink_api_url` is not set.
    NotConfigured,
    /// The API refused the request (400, 404): its reason, shown as it is.
    Refused(String),
    /// Unreachable, 401 (a wrong `sink_api_token`), 5xx, or an answer that is not its JSON.
    Unavailable(&'static str),
}

impl SinkError {
    pub(crate) fn message(&self) -> String {
        match self {
            SinkError::NotConfigured => {
                "This page reads the sink's calls API: set sink_api_url (e.g. http://sink:9091) on the processor.".into()
            }
            SinkError::Refused(reason) => reason.clone(),
            SinkError::Unavailable(why) => format!("The sink's calls API is unavailable ({why}); try again."),
        }
    }
}

/// The console's client of the calls API (one, so that its connections are reused).
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .unwrap_or_default()
}

/// GETs `path` with `query` from the calls API.
pub(crate) async fn get(
    http: &reqwest::Client,
    config: &Config,
    path: &str,
    query: &[(&str, &str)],
) -> Result<Value, SinkError> {
    let base = config.sink_api_url.as_deref().ok_or(SinkError::NotConfigured)?;
    let mut url = url::Url::parse(base).map_err(|_| SinkError::NotConfigured)?;
    url.set_path(path);
    url.query_pairs_mut()
        .extend_pairs(query.iter().filter(|(_, value)| !value.is_empty()));
    let mut request = http.get(url);
    if let Some(token) = &config.sink_api_token {
        request = request.bearer_auth(token.expose());
    }
    let response = request.send().await.map_err(|error| {
        tracing::warn!(error = %error.without_url(), "console: the calls API is unreachable");
        SinkError::Unavailable("unreachable")
    })?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|_| SinkError::Unavailable("an answer that is not JSON"))?;
    match status.as_u16() {
        200 => Ok(body),
        400 | 404 => Err(SinkError::Refused(
            body["error"].as_str().unwrap_or("refused").to_owned(),
        )),
        401 => {
            tracing::warn!("console: the calls API refused sink_api_token");
            Err(SinkError::Unavailable("it refused sink_api_token"))
        }
        _ => Err(SinkError::Unavailable("it answered an error")),
    }
}
