//! The dashboard page, rendered on the server from one [`Snapshot`] and the last hour of them
//! ([`Trends`]). Every value is HTML-escaped (event ids, paths and content types come from
//! providers, i.e. from anyone). A small inline script polls `/dashboard.json` and updates the
//! numbers in place with `textContent` only, and swaps in the charts the server renders at
//! `/trends` (parsed with `DOMParser`, which runs no script); the page is complete without it. Elements carry stable ids (`id="dlq-depth"`, …) and the metric
//! they show (`data-metric`), for tests and scrapers.

use std::fmt::Write as _;

use super::console::{self, Access, Nav};
use super::metrics as m;
use super::sample::{INTERVAL, Snapshot};
use super::trend::{self, Trends, WINDOW};

/// `text` escaped for HTML text and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A rate as the page prints it (the snapshot holds it rounded to 0.01).
pub(crate) fn rate(value: f64) -> String {
    format!("{value:.2}")
}

const SCRIPT: &str = r#"(function () {
  function set(id, text) { var el = document.getElementById(id); if (el) { el.textContent = text; } }
  function cell(row, text) { var td = document.createElement('td'); td.textContent = text == null ? '' : String(text); row.appendChild(td); }
  function update(s) {
    var heading = document.getElementById('dashboard');
    if (heading) { heading.setAttribute('data-sample', String(s.sample)); }
    set('sample', String(s.sample));
    set('taken-at', s.taken_at || '');
    set('sample-error', s.error || '');
    s.sources.forEach(function (r) { set('requests-per-second-' + r.source, r.requests_per_second.toFixed(2)); });
    s.events.forEach(function (r) { set('events-per-second-' + r.topic, r.events_per_second.toFixed(2)); });
    set('dlq-depth', String(s.dlq_depth));
    set('consumer-lag-total', String(s.consumer_lag_total));
    set('event-age-p50', s.event_age ? s.event_age.p50_seconds.toFixed(3) : '-');
    set('event-age-p99', s.event_age ? s.event_age.p99_seconds.toFixed(3) : '-');
    s.consumer_lag.forEach(function (r) { set('consumer-lag-' + r.topic, String(r.lag)); });
    if (s.actions && s.actions.reachable) {
      set('retry-depth', String(s.actions.retry_depth_total));
      s.actions.breakers.forEach(function (b) { set('breaker-' + b.action, b.state); });
    }
    var body = document.getElementById('recent');
    if (body) {
      while (body.firstChild) { body.removeChild(body.firstChild); }
      s.recent.forEach(function (e) {
        var row = document.createElement('tr');
        row.setAttribute('data-event-id', e.event_id || '');
        [e.time, e.source, e.event_id, e.phone_id, e.url_path, e.content_type, e.signature_scheme].forEach(function (v) { cell(row, v); });
        body.appendChild(row);
      });
    }
  }
  function charts(html) {
    var trends = document.getElementById('trends');
    if (!trends) { return; }
    var parsed = new DOMParser().parseFromString('<div>' + html + '</div>', 'text/html').body.firstChild;
    trends.replaceChildren.apply(trends, Array.prototype.slice.call(parsed.childNodes));
  }
  function poll() {
    fetch('/dashboard.json', { cache: 'no-store', credentials: 'omit', headers: window.switchboardAuth({}) })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) { if (s) { update(s); } })
      .catch(function () {});
    fetch('/trends', { cache: 'no-store', credentials: 'omit', headers: window.switchboardAuth({}) })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) { charts(html); } })
      .catch(function () {});
  }
  window.switchboardPoll = setInterval(poll, INTERVAL_MS);
})();"#;

/// The whole page: `snapshot`'s numbers and the charts of `trends`.
pub(crate) fn render(snapshot: &Snapshot, trends: &Trends, access: Access) -> String {
    let mut html = String::with_capacity(16 * 1024);
    let _ = write!(
        html,
        "<h1 data-sample=\"{sample}\" id=\"dashboard\">Dashboard</h1>\
         <div class=\"meta\">sample <span id=\"sample\" data-metric=\"{sample_metric}\">{sample}</span> \
         taken <span id=\"taken-at\">{taken}</span> (every {interval} s) \
         <span id=\"sample-error\" class=\"error\">{error}</span></div>",
        sample = snapshot.sample,
        sample_metric = m::SAMPLE,
        taken = escape(snapshot.taken_at.as_deref().unwrap_or("not yet")),
        interval = INTERVAL.as_secs(),
        error = escape(snapshot.error.unwrap_or("")),
    );

    html.push_str("<h2>Depths and lag</h2><div class=\"cards\">");
    let _ = write!(
        html,
        "<div class=\"card\"><div class=\"n\" id=\"dlq-depth\" data-metric=\"{}\">{}</div><div class=\"l\">DLQ depth</div></div>",
        m::DLQ_DEPTH,
        snapshot.dlq_depth
    );
    let retry = match &snapshot.actions {
        None => "not configured".to_owned(),
        Some(actions) if !actions.reachable => "unreachable".to_owned(),
        Some(actions) => actions.retry_depth_total.to_string(),
    };
    let _ = write!(
        html,
        "<div class=\"card\"><div class=\"n\" id=\"retry-depth\" data-metric=\"{}\">{}</div><div class=\"l\">retry depth</div></div>",
        m::RETRY_DEPTH,
        escape(&retry)
    );
    let _ = write!(
        html,
        "<div class=\"card\"><div class=\"n\" id=\"consumer-lag-total\" data-metric=\"{}\">{}</div><div class=\"l\">consumer lag</div></div>",
        crate::metrics::LAG,
        snapshot.consumer_lag_total
    );
    let age = snapshot.event_age.as_ref();
    for (name, quantile, value) in [
        ("p50", "0.5", age.map(|a| a.p50_seconds)),
        ("p99", "0.99", age.map(|a| a.p99_seconds)),
    ] {
        let _ = write!(
            html,
            "<div class=\"card\"><div class=\"n\" id=\"event-age-{name}\" data-metric=\"{}\" data-quantile=\"{quantile}\">{}</div>\
             <div class=\"l\">event age {name} (s): received to committed, last {} s</div></div>",
            m::EVENT_AGE_QUANTILE,
            value.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}")),
            INTERVAL.as_secs(),
        );
    }
    html.push_str("</div>");

    let _ = write!(
        html,
        "<h2>Trends, last {} minutes</h2><div id=\"trends\">{}</div>",
        WINDOW.as_secs() / 60,
        trend::section(trends)
    );

    html.push_str("<h2>Request rate per source</h2><table><tr><th>source</th><th>requests/s</th></tr>");
    for source in &snapshot.sources {
        let name = escape(&source.source);
        let _ = write!(
            html,
            "<tr><td>{name}</td><td class=\"num\" id=\"requests-per-second-{name}\" data-metric=\"{}\" data-source=\"{name}\">{}</td></tr>",
            m::REQUESTS_PER_SECOND,
            rate(source.requests_per_second)
        );
    }
    html.push_str("</table><h2>Event rate per topic</h2><table><tr><th>topic</th><th>events/s</th></tr>");
    for topic in &snapshot.events {
        let name = escape(&topic.topic);
        let _ = write!(
            html,
            "<tr><td>{name}</td><td class=\"num\" id=\"events-per-second-{name}\" data-metric=\"{}\" data-topic=\"{name}\">{}</td></tr>",
            m::EVENTS_PER_SECOND,
            rate(topic.events_per_second)
        );
    }
    html.push_str("</table><h2>Consumer lag per topic</h2><table><tr><th>topic</th><th>lag</th></tr>");
    if snapshot.consumer_lag.is_empty() {
        html.push_str("<tr><td colspan=\"2\">not measured yet</td></tr>");
    }
    for lag in &snapshot.consumer_lag {
        let name = escape(&lag.topic);
        let _ = write!(
            html,
            "<tr><td>{name}</td><td class=\"num\" id=\"consumer-lag-{name}\" data-topic=\"{name}\">{}</td></tr>",
            lag.lag
        );
    }

    html.push_str("</table><h2>Circuit breakers</h2>");
    match &snapshot.actions {
        None => html.push_str("<p id=\"breakers\">not configured (set <code>actions_admin_url</code>)</p>"),
        Some(actions) if !actions.reachable => {
            html.push_str("<p id=\"breakers\">actions service unreachable</p>")
        }
        Some(actions) => {
            html.push_str("<table id=\"breakers\"><tr><th>action</th><th>state</th><th>retry topic</th><th>depth</th></tr>");
            for breaker in &actions.breakers {
                let action = escape(&breaker.action);
                let class = if breaker.state == "closed" { "" } else { "open" };
                let _ = write!(
                    html,
                    "<tr><td>{action}</td><td id=\"breaker-{action}\" class=\"{class}\">{}</td><td></td><td></td></tr>",
                    escape(breaker.state)
                );
            }
            for depth in &actions.retry {
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td></td><td>{}</td><td class=\"num\">{}</td></tr>",
                    escape(&depth.action),
                    escape(&depth.topic),
                    depth.depth
                );
            }
            html.push_str("</table>");
        }
    }

    html.push_str(
        "<h2>Recent events</h2><table><thead><tr><th>time</th><th>source</th><th>event id</th><th>phone id</th>\
         <th>path</th><th>content type</th><th>signature</th></tr></thead><tbody id=\"recent\">",
    );
    for event in &snapshot.recent {
        let id = escape(event.event_id.as_deref().unwrap_or(""));
        let _ = write!(html, "<tr data-event-id=\"{id}\">");
        for value in [
            Some(event.time.as_str()),
            Some(event.source.as_str()),
            event.event_id.as_deref(),
            event.phone_id.as_deref(),
            event.url_path.as_deref(),
            event.content_type.as_deref(),
            event.signature_scheme.as_deref(),
        ] {
            let _ = write!(html, "<td>{}</td>", escape(value.unwrap_or("")));
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table>");
    let script = SCRIPT.replace("INTERVAL_MS", &INTERVAL.as_millis().to_string());
    console::page("Dashboard", Nav::Dashboard, access, &html, &script)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::events::EventMeta;
    use crate::observe::sample::{ActionsView, Breaker, SourceRate, TopicLag, TopicRate};

    const EVIL: &str = "<script>alert(1)</script>\"'&";

    #[test]
    fn escapes_the_five_characters() {
        assert_eq!(
            escape(EVIL),
            "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"
        );
        assert_eq!(escape("plain +1555 /path"), "plain +1555 /path");
    }

    #[test]
    fn every_rendered_value_is_escaped() {
        let evil = || EVIL.to_owned();
        let snapshot = Snapshot {
            sample: 7,
            taken_at: Some(evil()),
            sources: vec![SourceRate {
                source: evil(),
                requests_per_second: 1.25,
            }],
            events: vec![TopicRate {
                topic: evil(),
                events_per_second: 0.5,
            }],
            dlq_depth: 3,
            consumer_lag: vec![TopicLag {
                topic: evil(),
                lag: 2,
            }],
            consumer_lag_total: 2,
            event_age: Some(crate::observe::sample::EventAge {
                events: 4,
                p50_seconds: 0.042,
                p99_seconds: 0.25,
            }),
            actions: Some(ActionsView {
                reachable: true,
                retry_depth_total: 0,
                retry: vec![crate::observe::sample::RetryDepth {
                    action: evil(),
                    topic: evil(),
                    depth: 1,
                }],
                breakers: vec![Breaker {
                    action: evil(),
                    state: "open",
                }],
            }),
            recent: vec![EventMeta {
                time: evil(),
                source: evil(),
                event_id: Some(evil()),
                phone_id: Some(evil()),
                url_path: Some("/x\"><img src=x onerror=alert(1)>".into()),
                content_type: Some(evil()),
                signature_scheme: Some(evil()),
                topic: evil(),
                partition: 0,
                offset: 0,
                decoded: true,
                body: None,
                body_base64: None,
            }],
            error: None,
        };
        let html = render(&snapshot, &Trends::default(), Access::ReadOnly);
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("\"'&"), "{html}");
        // The only script elements are the console's and the page's own.
        assert_eq!(html.matches("<script>").count(), 2);
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
        assert!(html.contains("data-sample=\"7\""));
        assert!(html.contains(">1.25</td>"));
        assert!(html.contains("id=\"dlq-depth\" data-metric=\"switchboard_observed_dlq_depth\">3<"));
        assert!(html.contains("id=\"event-age-p50\" data-metric=\"switchboard_observed_event_age_quantile_seconds\" data-quantile=\"0.5\">0.042<"));
        assert!(html.contains("id=\"event-age-p99\" data-metric=\"switchboard_observed_event_age_quantile_seconds\" data-quantile=\"0.99\">0.250<"));
    }

    #[test]
    fn actions_not_configured_is_said() {
        let html = render(&Snapshot::default(), &Trends::default(), Access::ReadOnly);
        assert!(
            html.contains(
                "id=\"retry-depth\" data-metric=\"switchboard_observed_retry_depth\">not configured<"
            )
        );
        assert!(html.contains("not configured (set <code>actions_admin_url</code>)"));
        assert!(html.contains("data-sample=\"0\""));
        assert!(html.contains("id=\"event-age-p99\" data-metric=\"switchboard_observed_event_age_quantile_seconds\" data-quantile=\"0.99\">-<"));
    }
}
