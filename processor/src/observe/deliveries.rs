//! The console's deliveries: per action its circuit breaker and retry depth per ladder step (from
//! the sampler's scrape of the actions service, like the dashboard), and the delivery attempts the
//! sink stored from `switchboard.actions.attempts` (its `GET /attempts`), newest first, by action
//! and event id, like Svix's attempt log.

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

use super::calls_api::{self, SinkError};
use super::console::{self, href};
use super::page::escape;
use super::sample::Snapshot;
use crate::config::Config;

/// The filter form's fields, as the query string has them.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct AttemptParams {
    #[serde(default)]
    action: String,
    #[serde(default)]
    event_id: String,
    #[serde(default)]
    cursor: String,
}

impl AttemptParams {
    fn pairs(&self) -> [(&'static str, &str); 3] {
        [
            ("action", self.action.trim()),
            ("event_id", self.event_id.trim()),
            ("cursor", self.cursor.trim()),
        ]
    }
}

/// One page of attempts from the calls API.
pub(crate) async fn attempts(
    http: &reqwest::Client,
    config: &Config,
    params: &AttemptParams,
) -> Result<Value, SinkError> {
    let mut query = params.pairs().to_vec();
    query.push(("limit", "50"));
    calls_api::get(http, config, "/attempts", &query).await
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The page: every action's breaker and retry depth, the filter form, the attempts.
pub(crate) fn render(
    snapshot: &Snapshot,
    params: &AttemptParams,
    result: &Result<Value, SinkError>,
) -> String {
    let mut html = String::from(
        "<h1>Deliveries</h1><p class=\"meta\">What the actions service does with each event: its circuit \
         breakers and retry topics (sampled every few seconds), and every delivery attempt it committed.</p>\
         <h2>Actions</h2>",
    );
    match &snapshot.actions {
        None => html.push_str("<p id=\"actions\">not configured (set <code>actions_admin_url</code>)</p>"),
        Some(actions) if !actions.reachable => {
            html.push_str("<p id=\"actions\">actions service unreachable</p>")
        }
        Some(actions) => {
            html.push_str(
                "<table id=\"actions\"><thead><tr><th>action</th><th>breaker</th><th>retry topic</th>\
                 <th>waiting</th></tr></thead><tbody>",
            );
            for breaker in &actions.breakers {
                let action = escape(&breaker.action);
                let class = if breaker.state == "closed" {
                    ""
                } else {
                    " class=\"open\""
                };
                let retries: Vec<_> = actions
                    .retry
                    .iter()
                    .filter(|r| r.action == breaker.action)
                    .collect();
                let _ = write!(
                    html,
                    "<tr data-action=\"{action}\"><td><a href=\"{}\">{action}</a></td><td{class} \
                     id=\"deliveries-breaker-{action}\">{}</td><td></td><td></td></tr>",
                    href("/deliveries", &[("action", &breaker.action)]),
                    escape(breaker.state),
                );
                for retry in retries {
                    let _ = write!(
                        html,
                        "<tr><td></td><td></td><td>{}</td><td class=\"num\">{}</td></tr>",
                        escape(&retry.topic),
                        retry.depth
                    );
                }
            }
            html.push_str("</tbody></table>");
        }
    }
    html.push_str(
        "<h2>Delivery attempts</h2><form class=\"filters\" id=\"attempts-filters\" action=\"/deliveries\" method=\"get\">",
    );
    console::input(&mut html, "action", "action", &params.action, "");
    console::input(&mut html, "event id", "event_id", &params.event_id, "");
    html.push_str("<button type=\"submit\">Filter</button></form>");
    let page = match result {
        Err(error) => {
            console::error(&mut html, "attempts-error", &error.message());
            return html;
        }
        Ok(page) => page,
    };
    let attempts = page["attempts"].as_array().map(Vec::as_slice).unwrap_or_default();
    if attempts.is_empty() {
        html.push_str("<p id=\"no-attempts\">No delivery attempt matches.</p>");
        return html;
    }
    html.push_str(
        "<table id=\"attempts\"><thead><tr><th>time</th><th>action</th><th>event id</th><th>type</th>\
         <th>attempt</th><th>outcome</th><th>status</th><th>reason</th><th>routed to</th><th>ms</th></tr></thead><tbody>",
    );
    for attempt in attempts {
        let event_id = text(&attempt["event_id"]);
        let outcome = text(&attempt["outcome"]);
        let class = if outcome == "delivered" {
            ""
        } else {
            " class=\"error\""
        };
        let _ = write!(
            html,
            "<tr data-attempt-id=\"{}\" data-event-id=\"{}\"><td>{}</td><td>{}</td><td><a href=\"{}\">{}</a></td>\
             <td>{}</td><td class=\"num attempt\">{}</td><td{class}>{}</td><td class=\"status\">{}</td><td>{}</td>\
             <td class=\"routed\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&text(&attempt["attempt_id"])),
            escape(&event_id),
            escape(&text(&attempt["attempted_at"])),
            escape(&text(&attempt["action"])),
            href("/deliveries", &[("event_id", &event_id)]),
            escape(&event_id),
            escape(&text(&attempt["event_type"])),
            escape(&text(&attempt["attempt"])),
            escape(&outcome),
            escape(&text(&attempt["status_code"])),
            escape(&text(&attempt["reason"])),
            escape(&text(&attempt["routed_to"])),
            escape(&text(&attempt["latency_ms"])),
        );
    }
    html.push_str("</tbody></table>");
    if let Some(cursor) = page["next_cursor"].as_str() {
        let mut query = params.pairs();
        query[2].1 = cursor;
        let _ = write!(
            html,
            "<p><a id=\"next-page\" href=\"{}\">Older attempts</a></p>",
            href("/deliveries", &query)
        );
    }
    html
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::observe::sample::{ActionsView, Breaker, RetryDepth};

    #[test]
    fn breakers_retry_depth_and_attempts_are_shown_escaped() {
        let snapshot = Snapshot {
            actions: Some(ActionsView {
                reachable: true,
                retry_depth_total: 3,
                retry: vec![RetryDepth {
                    action: "crm".into(),
                    topic: "switchboard.retry.5s".into(),
                    depth: 3,
                }],
                breakers: vec![Breaker {
                    action: "crm".into(),
                    state: "open",
                }],
            }),
            ..Snapshot::default()
        };
        let page = json!({
            "attempts": [{
                "attempt_id": "crm/switchboard.calls/0/4", "action": "crm", "event_id": "<ev>",
                "event_type": "call.completed", "attempt": 2, "outcome": "transient", "status_code": 503,
                "reason": "HTTP 503", "routed_to": "switchboard.retry.5s", "latency_ms": 12,
                "attempted_at": "2026-12-07T09:00:00.000Z"
            }],
            "next_cursor": "c1"
        });
        let params = AttemptParams {
            action: "crm".into(),
            ..AttemptParams::default()
        };
        let html = render(&snapshot, &params, &Ok(page));
        assert!(html.contains("id=\"deliveries-breaker-crm\">open<"), "{html}");
        assert!(
            html.contains("<td>switchboard.retry.5s</td><td class=\"num\">3</td>"),
            "{html}"
        );
        assert!(html.contains("data-event-id=\"&lt;ev&gt;\""), "{html}");
        assert!(!html.contains("<ev>"), "{html}");
        assert!(html.contains("<td class=\"status\">503</td>"), "{html}");
        assert!(
            html.contains("href=\"/deliveries?action=crm&amp;cursor=c1\""),
            "{html}"
        );
    }

    #[test]
    fn without_actions_or_sink_the_page_says_what_to_configure() {
        let html = render(
            &Snapshot::default(),
            &AttemptParams::default(),
            &Err(SinkError::NotConfigured),
        );
        assert!(html.contains("set <code>actions_admin_url</code>"), "{html}");
        assert!(html.contains("set sink_api_url"), "{html}");
    }
}
