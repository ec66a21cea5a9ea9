//! The console's dead letters: the list with the CLI's filters, one record in full, and redrive.
//!
//! Every operation is the `dlq` command's own ([`crate::dlq::list`], [`crate::dlq::show`],
//! [`crate::dlq::redrive`]): the same bounded reads, the same [`Filter`], the same transactional
//! copy that marks each DLQ position in `switchboard.dlq.redriven` when its copy commits. This
//! module only turns form fields into a [`Filter`] and results into HTML or JSON.

use std::collections::HashSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use switchboard_schemas::{Source, topics};

use super::console::{self, Access, href};
use super::page::escape;
use crate::dlq::filter::{self, format_time, known_error_classes};
use crate::dlq::table::{REASON_WIDTH, truncate};
use crate::dlq::{Filter, Position, Row, Shown, Summary};

/// Rows the list shows unless the form asks for another number.
pub(crate) const DEFAULT_LIMIT: usize = 200;

/// The filter form's fields, as the query string or the POSTed form has them.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct FilterForm {
    #[serde(default)]
    source: String,
    #[serde(default)]
    error_class: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    limit: String,
    /// One record, `<partition>/<offset>`.
    #[serde(default)]
    position: String,
    /// Present (any value but empty) on a dry run.
    #[serde(default)]
    dry_run: String,
}

impl FilterForm {
    /// The [`Filter`] these fields describe, or the reason they do not describe one. The CLI's
    /// parsers and checks, so that the console accepts exactly what `dlq` accepts.
    pub(crate) fn filter(&self) -> Result<Filter, String> {
        let field = |value: &str| {
            Some(value.trim())
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
        };
        let filter = Filter {
            source: field(&self.source)
                .map(|source| source.parse::<Source>().map_err(|e| format!("source: {e}")))
                .transpose()?,
            error_class: field(&self.error_class)
                .map(|class| filter::parse_error_class(&class))
                .transpose()?,
            action: field(&self.action),
            since: field(&self.since)
                .map(|since| filter::parse_time(&since).map_err(|e| format!("since: {e}")))
                .transpose()?,
            until: field(&self.until)
                .map(|until| filter::parse_time(&until).map_err(|e| format!("until: {e}")))
                .transpose()?,
            positions: field(&self.position)
                .map(|position| position.parse::<Position>().map_err(|e| e.to_string()))
                .transpose()?
                .into_iter()
                .collect(),
            limit: field(&self.limit)
                .map(|limit| {
                    limit
                        .parse::<usize>()
                        .map_err(|_| format!("limit must be a whole number, not {limit:?}"))
                })
                .transpose()?,
        };
        filter.validate().map_err(|e| e.to_string())?;
        Ok(filter)
    }

    pub(crate) fn dry_run(&self) -> bool {
        !self.dry_run.trim().is_empty()
    }

    /// The form's filter fields as query pairs (for links and the redrive form).
    fn pairs(&self) -> [(&'static str, &str); 6] {
        [
            ("source", self.source.trim()),
            ("error_class", self.error_class.trim()),
            ("action", self.action.trim()),
            ("since", self.since.trim()),
            ("until", self.until.trim()),
            ("position", self.position.trim()),
        ]
    }
}

/// A redrive's answer: the CLI's summary line and its counts.
#[derive(Debug, Serialize)]
pub(crate) struct RedriveAnswer {
    pub summary: String,
    pub dry_run: bool,
    pub matched: u64,
    pub redriven: u64,
    pub already_redriven: u64,
    pub unroutable: u64,
    pub limited: bool,
}

impl From<Summary> for RedriveAnswer {
    fn from(summary: Summary) -> Self {
        RedriveAnswer {
            summary: summary.to_string(),
            dry_run: summary.dry_run,
            matched: summary.matched,
            redriven: summary.redriven,
            already_redriven: summary.already_redriven,
            unroutable: summary.unroutable,
            limited: summary.limited,
        }
    }
}

/// The buttons of a redrive form over `pairs` (the filter, or one position). Disabled when the
/// console is read-only.
fn redrive_form(html: &mut String, id: &str, pairs: &[(&str, &str)], access: Access, what: &str) {
    let _ = write!(
        html,
        "<form id=\"{id}\" class=\"filters\" method=\"post\" action=\"/dead-letters/redrive\" data-result=\"{id}-result\">"
    );
    for (name, value) in pairs.iter().filter(|(_, value)| !value.is_empty()) {
        let _ = write!(
            html,
            "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
            escape(value)
        );
    }
    let disabled = match access {
        Access::ReadOnly => " disabled title=\"read-only: no admin token is configured\"",
        Access::Admin => "",
    };
    let _ = write!(
        html,
        "<button type=\"submit\" name=\"dry_run\" value=\"true\" id=\"{id}-dry-run\"{disabled}>Count (dry run)</button>\
         <button type=\"submit\" id=\"{id}-go\"{disabled}>{what}</button></form>\
         <div class=\"result\" id=\"{id}-result\" aria-live=\"polite\"></div>"
    );
}

/// The list page: the filter form, the matching records (newest first) with their redrive
/// marks, and the redrive form for the whole filtered set.
pub(crate) fn render_list(
    form: &FilterForm,
    result: &Result<(Vec<Row>, HashSet<Position>), String>,
    access: Access,
) -> String {
    let mut html = String::from(
        "<h1>Dead letters</h1><p class=\"meta\">Records of <code>switchboard.dlq</code>, newest first: what the \
         processor could not turn into events and what actions could not deliver. A redrive republishes each \
         matching record to the topic it came from, at most once per DLQ position (the same transactional copy \
         as <code>switchboard-processor dlq redrive</code>).</p>\
         <form class=\"filters\" id=\"dlq-filters\" action=\"/dead-letters\" method=\"get\">",
    );
    let sources: Vec<&str> = Source::ALL.iter().map(|source| source.as_str()).collect();
    console::select(&mut html, "source", "source", form.source.trim(), &sources);
    console::select(
        &mut html,
        "error class",
        "error_class",
        form.error_class.trim(),
        &known_error_classes(),
    );
    console::input(&mut html, "action", "action", &form.action, "");
    console::input(
        &mut html,
        "failed since",
        "since",
        &form.since,
        "2026-12-07T09:00:00Z",
    );
    console::input(&mut html, "failed before", "until", &form.until, "");
    console::input(
        &mut html,
        "show at most",
        "limit",
        &form.limit,
        &DEFAULT_LIMIT.to_string(),
    );
    html.push_str("<button type=\"submit\">Filter</button></form>");
    let (rows, redriven) = match result {
        Err(reason) => {
            console::error(&mut html, "dlq-error", reason);
            return html;
        }
        Ok(found) => found,
    };
    let _ = write!(
        html,
        "<p id=\"dlq-count\" data-count=\"{n}\">{n} record{s} shown</p>",
        n = rows.len(),
        s = if rows.len() == 1 { "" } else { "s" }
    );
    html.push_str("<h2>Redrive every record that matches these filters</h2>");
    redrive_form(
        &mut html,
        "redrive-all",
        &form.pairs(),
        access,
        "Redrive matching",
    );
    html.push_str(
        "<table id=\"dead-letters\"><thead><tr><th>position</th><th>failed</th><th>source</th><th>error class</th>\
         <th>reason</th><th>action</th><th>event id</th><th>redriven</th></tr></thead><tbody>",
    );
    for row in rows.iter().rev() {
        let headers = &row.headers;
        let position = row.position.to_string();
        let _ = write!(
            html,
            "<tr data-position=\"{position}\" data-event-id=\"{event}\"><td><a href=\"/dead-letters/{partition}/{offset}\" \
             class=\"dlq-link\">{position}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{event}</td>\
             <td class=\"redriven\">{}</td></tr>",
            headers.failed_at.map(format_time).unwrap_or_default(),
            escape(headers.source().unwrap_or("")),
            escape(headers.error_class.as_deref().unwrap_or("")),
            escape(&truncate(
                headers.error_reason.as_deref().unwrap_or(""),
                REASON_WIDTH
            )),
            escape(headers.action.as_deref().unwrap_or("")),
            if redriven.contains(&row.position) {
                "yes"
            } else {
                ""
            },
            partition = row.position.partition,
            offset = row.position.offset,
            event = escape(headers.event_id.as_deref().unwrap_or("")),
        );
    }
    html.push_str("</tbody></table>");
    html
}

/// One record's page: the `dlq show` text (headers, envelope, body as UTF-8 or base64) and the
/// redrive form for its position.
pub(crate) fn render_record(
    position: Position,
    result: &Result<(Shown, bool), String>,
    access: Access,
) -> String {
    let mut html = format!(
        "<h1>Dead letter {}/<span id=\"dlq-position\">{position}</span></h1>",
        topics::DLQ
    );
    let (shown, redriven) = match result {
        Err(reason) => {
            console::error(&mut html, "dlq-error", reason);
            return html;
        }
        Ok(found) => found,
    };
    let _ = write!(
        html,
        "<p id=\"dlq-redriven\" data-redriven=\"{redriven}\">{}</p>",
        if *redriven {
            "Already redriven: a redrive skips it."
        } else {
            "Not redriven yet."
        }
    );
    let position_text = position.to_string();
    redrive_form(
        &mut html,
        "redrive-one",
        &[("position", position_text.as_str())],
        access,
        "Redrive this record",
    );
    // Bodies carry personal data: only with the admin token, as on /debug/webhooks.
    let text = match access {
        Access::Admin => shown.to_string(),
        Access::ReadOnly => shown.without_body().to_string(),
    };
    let _ = write!(html, "<pre id=\"dlq-record\">{}</pre>", escape(&text));
    if access == Access::ReadOnly {
        html.push_str(
            "<p class=\"meta\" id=\"body-withheld\">The body is withheld: a console without an admin token \
             shows no webhook bodies.</p>",
        );
    }
    let _ = write!(
        html,
        "<p><a href=\"{}\">Back to the dead letters of this source</a></p>",
        href("/dead-letters", &[("source", shown.dlq.source().unwrap_or(""))])
    );
    html
}

#[cfg(test)]
mod tests {
    use switchboard_schemas::RawWebhook;

    use super::*;
    use crate::dlq::DlqHeaders;

    fn form(fields: &[(&str, &str)]) -> FilterForm {
        let mut form = FilterForm::default();
        for (name, value) in fields {
            let field = match *name {
                "source" => &mut form.source,
                "error_class" => &mut form.error_class,
                "since" => &mut form.since,
                "until" => &mut form.until,
                "limit" => &mut form.limit,
                "position" => &mut form.position,
                "dry_run" => &mut form.dry_run,
                other => panic!("no field {other}"),
            };
            *field = (*value).to_owned();
        }
        form
    }

    #[test]
    fn form_fields_become_the_clis_filter_with_its_errors() {
        let filter = form(&[
            ("source", "twilio"),
            ("error_class", "unknown_kind"),
            ("since", "2026-12-07T09:00:00Z"),
            ("position", "2/41"),
            ("limit", ""),
        ])
        .filter()
        .unwrap();
        assert_eq!(filter.source, Some(Source::Twilio));
        assert_eq!(filter.error_class, Some("unknown_kind"));
        assert_eq!(
            filter.positions,
            vec![Position {
                partition: 2,
                offset: 41
            }]
        );
        assert_eq!(filter.limit, None);
        assert!(
            form(&[("error_class", "nope")])
                .filter()
                .unwrap_err()
                .contains("unknown error class")
        );
        assert!(
            form(&[("position", "x")])
                .filter()
                .unwrap_err()
                .contains("<partition>/<offset>")
        );
        assert!(
            form(&[("limit", "0")])
                .filter()
                .unwrap_err()
                .contains("at least 1")
        );
        assert!(
            form(&[
                ("since", "2026-12-07T10:00:00Z"),
                ("until", "2026-12-07T09:00:00Z")
            ])
            .filter()
            .unwrap_err()
            .contains("before")
        );
        assert!(form(&[("dry_run", "true")]).dry_run());
        assert!(!form(&[]).dry_run());
    }

    fn row(offset: i64, event_id: &str) -> Row {
        Row {
            position: Position { partition: 1, offset },
            headers: DlqHeaders {
                event_id: Some(event_id.into()),
                source: Some("twilio".into()),
                error_class: Some("unknown_kind".into()),
                error_reason: Some("<b>bad</b>".into()),
                failed_at: Some(1_765_098_000_000),
                origin: None,
                action: None,
            },
        }
    }

    #[test]
    fn the_list_is_newest_first_marks_redriven_positions_and_is_read_only_without_a_token() {
        let rows = vec![row(3, "old"), row(9, "new")];
        let redriven = HashSet::from([Position {
            partition: 1,
            offset: 3,
        }]);
        let html = render_list(&form(&[]), &Ok((rows, redriven)), Access::ReadOnly);
        assert!(html.find("data-event-id=\"new\"").unwrap() < html.find("data-event-id=\"old\"").unwrap());
        assert!(
            html.contains("<a href=\"/dead-letters/1/3\" class=\"dlq-link\">1/3</a>"),
            "{html}"
        );
        assert!(html.contains("&lt;b&gt;bad&lt;/b&gt;"), "{html}");
        let old = &html[html.find("data-event-id=\"old\"").unwrap()..];
        assert!(old.contains("<td class=\"redriven\">yes</td>"), "{html}");
        assert!(html.contains("id=\"redrive-all-go\" disabled"), "{html}");
        let html = render_list(&form(&[]), &Ok((vec![], HashSet::new())), Access::Admin);
        assert!(
            html.contains("<button type=\"submit\" id=\"redrive-all-go\">"),
            "{html}"
        );
    }

    #[test]
    fn a_record_page_shows_the_cli_text_escaped_and_redrives_its_position() {
        let position = Position {
            partition: 1,
            offset: 3,
        };
        let shown = Shown {
            position,
            timestamp: Some(1),
            key: Some(b"+1555".to_vec()),
            headers: vec![("error-reason".into(), Some(b"<script>".to_vec()))],
            dlq: row(3, "ev-1").headers,
            value: Some(vec![0xff]),
            envelope: Err::<RawWebhook, _>("not a Confluent-framed record".into()),
        };
        let html = render_record(position, &Ok((shown.clone(), false)), Access::Admin);
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("<input type=\"hidden\" name=\"position\" value=\"1/3\">"),
            "{html}"
        );
        assert!(html.contains("data-redriven=\"false\""), "{html}");
        assert!(
            html.contains("base64"),
            "with the token the value is shown: {html}"
        );
        let html = render_record(position, &Ok((shown, false)), Access::ReadOnly);
        assert!(html.contains("id=\"body-withheld\""), "{html}");
        assert!(!html.contains("base64"), "{html}");
    }
}
