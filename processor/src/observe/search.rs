//! The console's search and call pages, answered from the sink's database through its calls API
//! (`GET /events`, `GET /calls/{call_sid}/events`; `sink_api_url`): the raw topics are not
//! searchable at scale, the sink's tables are indexed by phone id, call sid, event id and time.
//! The console renders what the API answers; it keeps no index of its own.

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

use super::calls_api::{self, SinkError};
use super::console::{self, href};
use super::page::escape;
use crate::config::Config;

/// The search form's fields, as the query string has them (checked by the sink's API, whose 400
/// reasons the page shows).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct SearchParams {
    #[serde(default)]
    phone_id: String,
    #[serde(default)]
    call_sid: String,
    #[serde(default)]
    event_id: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    cursor: String,
}

impl SearchParams {
    fn pairs(&self) -> [(&'static str, &str); 7] {
        [
            ("phone_id", self.phone_id.trim()),
            ("call_sid", self.call_sid.trim()),
            ("event_id", self.event_id.trim()),
            ("source", self.source.trim()),
            ("since", self.since.trim()),
            ("until", self.until.trim()),
            ("cursor", self.cursor.trim()),
        ]
    }
}

/// One page of search results.
pub(crate) async fn search(
    http: &reqwest::Client,
    config: &Config,
    params: &SearchParams,
) -> Result<Value, SinkError> {
    let mut query = params.pairs().to_vec();
    query.push(("limit", "50"));
    calls_api::get(http, config, "/events", &query).await
}

/// One call and its events.
pub(crate) async fn call(
    http: &reqwest::Client,
    config: &Config,
    call_sid: &str,
) -> Result<Value, SinkError> {
    let path = format!("/calls/{}/events", urlencoding(call_sid));
    calls_api::get(http, config, &path, &[]).await
}

/// `text` percent-encoded as one path segment.
fn urlencoding(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn call_link(call_sid: &str) -> String {
    format!(
        "<a href=\"/calls/{}\" class=\"call-link\">{}</a>",
        escape(&urlencoding(call_sid)),
        escape(call_sid)
    )
}

/// The search page: the form, then the results or why there are none.
pub(crate) fn render_search(params: &SearchParams, result: &Result<Value, SinkError>) -> String {
    let mut html = String::from(
        "<h1>Search</h1><p class=\"meta\">Webhooks stored by the sink, newest first. Every field is optional; \
         times are RFC 3339 (e.g. 2026-12-07T09:00:00Z) on when switchboard received the webhook.</p>\
         <form class=\"filters\" id=\"search\" action=\"/search\" method=\"get\">",
    );
    console::input(&mut html, "phone id", "phone_id", &params.phone_id, "");
    console::input(&mut html, "call sid", "call_sid", &params.call_sid, "CA…");
    console::input(&mut html, "event id", "event_id", &params.event_id, "");
    console::select(
        &mut html,
        "source",
        "source",
        params.source.trim(),
        &["twilio", "stripe", "calendly"],
    );
    console::input(&mut html, "since", "since", &params.since, "2026-12-07T09:00:00Z");
    console::input(&mut html, "until", "until", &params.until, "");
    html.push_str("<button type=\"submit\">Search</button></form>");
    let page = match result {
        Err(error) => {
            console::error(&mut html, "search-error", &error.message());
            return html;
        }
        Ok(page) => page,
    };
    let events = page["events"].as_array().map(Vec::as_slice).unwrap_or_default();
    if events.is_empty() {
        html.push_str("<p id=\"no-results\">No stored webhook matches.</p>");
        return html;
    }
    html.push_str(
        "<table id=\"results\"><thead><tr><th>received</th><th>source</th><th>kind</th><th>status</th><th>phone id</th>\
         <th>subject</th><th>event id</th></tr></thead><tbody>",
    );
    for event in events {
        let subject = text(&event["subject"]);
        let subject = if event["subject_kind"] == "call" {
            call_link(&subject)
        } else {
            escape(&subject)
        };
        let _ = write!(
            html,
            "<tr data-event-id=\"{id}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{subject}</td><td>{id}</td></tr>",
            escape(&text(&event["received_at"])),
            escape(&text(&event["source"])),
            escape(&text(&event["kind"])),
            escape(&text(&event["status"])),
            escape(&text(&event["phone_id"])),
            id = escape(&text(&event["event_id"])),
        );
    }
    html.push_str("</tbody></table>");
    if let Some(cursor) = page["next_cursor"].as_str() {
        let mut query = params.pairs();
        query[6].1 = cursor;
        let _ = write!(
            html,
            "<p><a id=\"next-page\" href=\"{}\">Older results</a></p>",
            href("/search", &query)
        );
    }
    html
}

/// A call's page: the call as the sink folded it, then its webhooks in the order they happened
/// with the status each carried.
pub(crate) fn render_call(call_sid: &str, result: &Result<Value, SinkError>) -> String {
    let mut html = format!("<h1>Call <span id=\"call-sid\">{}</span></h1>", escape(call_sid));
    let answer = match result {
        Err(error) => {
            console::error(&mut html, "call-error", &error.message());
            return html;
        }
        Ok(answer) => answer,
    };
    let call = &answer["call"];
    html.push_str("<table id=\"call\">");
    for (label, field) in [
        ("status", "status"),
        ("phone id", "phone_id"),
        ("from", "from"),
        ("to", "to"),
        ("direction", "direction"),
        ("started", "started_at"),
        ("ended", "ended_at"),
        ("duration (s)", "duration_seconds"),
        ("recording", "recording_url"),
        ("transcription", "transcription_text"),
        ("updated", "updated_at"),
    ] {
        let _ = write!(
            html,
            "<tr><th>{label}</th><td id=\"call-{field}\">{}</td></tr>",
            escape(&text(&call[field]))
        );
    }
    html.push_str(
        "</table><h2>Webhooks, in the order they happened</h2><table id=\"call-events\"><thead><tr><th>#</th>\
         <th>occurred</th><th>kind</th><th>status</th><th>received</th><th>event id</th></tr></thead><tbody>",
    );
    let events = answer["events"].as_array().map(Vec::as_slice).unwrap_or_default();
    for (n, event) in events.iter().enumerate() {
        let _ = write!(
            html,
            "<tr data-event-id=\"{id}\"><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"status\">{}</td><td>{}</td><td>{id}</td></tr>",
            n + 1,
            escape(&text(&event["occurred_at"])),
            escape(&text(&event["kind"])),
            escape(&text(&event["status"])),
            escape(&text(&event["received_at"])),
            id = escape(&text(&event["event_id"])),
        );
    }
    html.push_str("</tbody></table>");
    if answer["truncated"] == true {
        let _ = write!(
            html,
            "<p id=\"call-events-truncated\">Only the first {} webhooks of this call are listed.</p>",
            events.len()
        );
    }
    let _ = write!(
        html,
        "<p><a href=\"{}\">Search this call's webhooks</a></p>",
        href("/search", &[("call_sid", call_sid)])
    );
    html
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const EVIL: &str = "<script>alert(1)</script>";

    #[test]
    fn results_link_calls_escape_everything_and_page_on() {
        let page = json!({
            "events": [
                {"event_id": EVIL, "source": "twilio", "kind": "call.status", "status": "ringing",
                 "phone_id": "+1555", "subject": "CA\"1", "subject_kind": "call",
                 "received_at": "2026-12-07T09:00:00.000Z"},
                {"event_id": "evt_1", "source": "stripe", "kind": "invoice.paid", "status": null,
                 "phone_id": "+1555", "subject": "in_1", "subject_kind": "payment",
                 "received_at": "2026-12-07T08:00:00.000Z"}
            ],
            "next_cursor": "abc+/="
        });
        let params = SearchParams {
            phone_id: "+1555".into(),
            ..SearchParams::default()
        };
        let html = render_search(&params, &Ok(page));
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(
            html.contains("<a href=\"/calls/CA%221\" class=\"call-link\">CA&quot;1</a>"),
            "{html}"
        );
        assert!(html.contains("<td>in_1</td>"), "payments are not links: {html}");
        assert!(
            html.contains("href=\"/search?phone_id=%2B1555&amp;cursor=abc%2B%2F%3D\""),
            "{html}"
        );
        assert!(
            html.contains("value=\"+1555\""),
            "the form keeps its values: {html}"
        );
    }

    #[test]
    fn errors_are_said_plainly() {
        let html = render_search(&SearchParams::default(), &Err(SinkError::NotConfigured));
        assert!(html.contains("set sink_api_url"), "{html}");
        let html = render_search(&SearchParams::default(), &Err(SinkError::Refused(EVIL.into())));
        assert!(html.contains("&lt;script&gt;"), "{html}");
        let html = render_call("CA1", &Err(SinkError::Refused("call not found".into())));
        assert!(html.contains("id=\"call-error\">call not found<"), "{html}");
        let html = render_search(
            &SearchParams::default(),
            &Ok(json!({"events": [], "next_cursor": null})),
        );
        assert!(html.contains("id=\"no-results\""), "{html}");
    }

    #[test]
    fn a_call_page_lists_its_webhooks_in_order() {
        let answer = json!({
            "call": {"call_sid": "CA1", "status": "completed", "phone_id": "+1555"},
            "events": [
                {"event_id": "e1", "kind": "call.status", "status": "ringing", "occurred_at": "t1", "received_at": "t1"},
                {"event_id": "e2", "kind": "call.status", "status": "completed", "occurred_at": "t2", "received_at": "t2"}
            ]
        });
        let html = render_call("CA1", &Ok(answer));
        let first = html.find("data-event-id=\"e1\"").unwrap();
        let second = html.find("data-event-id=\"e2\"").unwrap();
        assert!(first < second, "{html}");
        assert!(html.contains("id=\"call-status\">completed<"), "{html}");
        assert!(!html.contains("call-events-truncated"), "{html}");
    }

    #[test]
    fn a_call_page_says_when_the_api_capped_its_webhooks() {
        let answer = json!({
            "call": {"call_sid": "CA1", "status": "completed"},
            "events": [{"event_id": "e1", "kind": "call.status", "status": "ringing"}],
            "truncated": true
        });
        let html = render_call("CA1", &Ok(answer));
        assert!(
            html.contains(
                "<p id=\"call-events-truncated\">Only the first 1 webhooks of this call are listed.</p>"
            ),
            "{html}"
        );
        assert!(
            html.contains("Search this call&#39;s webhooks") || html.contains("Search this call's webhooks"),
            "{html}"
        );
    }
}
