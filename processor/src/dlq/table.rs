//! The `dlq list` output: one row per DLQ record, as plain aligned columns. Pure, no I/O.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;

use super::filter::format_time;
use super::record::{DlqHeaders, Position};

/// Widest reason shown in a table; longer reasons end with `…` (`dlq show` prints them whole).
pub const REASON_WIDTH: usize = 60;

/// One DLQ record, as `dlq list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Where the record is in the DLQ.
    pub position: Position,
    /// The record's headers.
    pub headers: DlqHeaders,
}

impl Row {
    /// Sort key: oldest first (records without `failed-at` first), then by position.
    fn order(&self) -> (Option<i64>, Position) {
        (self.headers.failed_at, self.position)
    }
}

/// The rows a DLQ read keeps: every one, or with a limit only the newest `limit` seen so far,
/// so that listing the newest rows of a DLQ of millions of records holds `limit` rows, not all
/// of them.
#[derive(Debug)]
pub struct Newest {
    limit: Option<usize>,
    /// Oldest on top, where the next push past the limit drops it.
    rows: BinaryHeap<Reverse<ByAge>>,
}

/// A row ordered by [`Row::order`].
#[derive(Debug, PartialEq, Eq)]
struct ByAge(Row);

impl Ord for ByAge {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.order().cmp(&other.0.order())
    }
}

impl PartialOrd for ByAge {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Newest {
    pub fn new(limit: Option<usize>) -> Self {
        Self {
            limit,
            rows: BinaryHeap::new(),
        }
    }

    pub fn push(&mut self, row: Row) {
        self.rows.push(Reverse(ByAge(row)));
        if self.limit.is_some_and(|limit| self.rows.len() > limit) {
            self.rows.pop();
        }
    }

    /// The rows kept, oldest first (newest last).
    pub fn into_rows(self) -> Vec<Row> {
        // Ascending `Reverse` is newest first.
        let mut rows: Vec<Row> = self.rows.into_sorted_vec().into_iter().map(|r| r.0.0).collect();
        rows.reverse();
        rows
    }
}

/// `text` on one line (control characters become spaces), at most `width` characters.
pub fn truncate(text: &str, width: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= width {
        return clean;
    }
    let mut cut: String = clean.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The table: a header line, then one line per row, columns separated by two spaces.
pub fn format_table(rows: &[Row]) -> String {
    const HEADINGS: [&str; 7] = [
        "FAILED AT",
        "SOURCE",
        "EVENT ID",
        "CLASS",
        "ACTION",
        "REASON",
        "DLQ",
    ];
    let dash = || "-".to_owned();
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|row| {
            let h = &row.headers;
            [
                h.failed_at.map_or_else(dash, format_time),
                h.source().map_or_else(dash, |s| truncate(s, 16)),
                h.event_id.as_deref().map_or_else(dash, |id| truncate(id, 80)),
                h.error_class.as_deref().map_or_else(dash, |c| truncate(c, 24)),
                h.action.as_deref().map_or_else(dash, |a| truncate(a, 24)),
                h.error_reason
                    .as_deref()
                    .map_or_else(dash, |r| truncate(r, REASON_WIDTH)),
                row.position.to_string(),
            ]
        })
        .collect();
    let mut widths = HEADINGS.map(|h| h.chars().count());
    for line in &cells {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut write_line = |line: &[&str]| {
        let mut text = String::new();
        for (i, (cell, width)) in line.iter().zip(widths).enumerate() {
            if i + 1 == line.len() {
                text.push_str(cell);
            } else {
                let pad = width - cell.chars().count();
                let _ = write!(text, "{cell}{:pad$}  ", "");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    write_line(&HEADINGS);
    for line in &cells {
        let refs: Vec<&str> = line.iter().map(String::as_str).collect();
        write_line(&refs);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(partition: i32, offset: i64, failed_at: Option<i64>, reason: &str) -> Row {
        Row {
            position: Position { partition, offset },
            headers: DlqHeaders {
                event_id: Some(format!("EV-{partition}-{offset}")),
                source: Some("twilio".into()),
                error_class: Some("missing_field".into()),
                error_reason: Some(reason.into()),
                failed_at,
                origin: None,
                action: None,
            },
        }
    }

    #[test]
    fn rows_sort_newest_last_and_the_limit_keeps_the_newest() {
        let rows = || {
            vec![
                row(0, 5, Some(3_000), "c"),
                row(1, 2, Some(1_000), "a"),
                row(2, 9, None, "unknown time"),
                row(0, 4, Some(2_000), "b"),
                row(1, 3, Some(1_000), "a, later in its partition"),
            ]
        };
        let kept = |limit| {
            let mut newest = Newest::new(limit);
            for row in rows() {
                newest.push(row);
            }
            newest
                .into_rows()
                .into_iter()
                .map(|r| r.headers.error_reason.unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kept(None),
            ["unknown time", "a", "a, later in its partition", "b", "c"]
        );
        assert_eq!(kept(Some(2)), ["b", "c"]);
        assert_eq!(kept(Some(3)), ["a, later in its partition", "b", "c"]);
        assert_eq!(kept(Some(0)), Vec::<String>::new());
    }

    #[test]
    fn long_reasons_are_cut_and_kept_on_one_line() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("exactly10!", 10), "exactly10!");
        assert_eq!(truncate("a much longer reason", 10), "a much lo…");
        assert_eq!(truncate("two\nlines", 20), "two lines");
        assert_eq!(
            truncate("ééééé", 3).chars().count(),
            3,
            "counts characters, not bytes"
        );
    }

    #[test]
    fn the_table_aligns_columns_under_their_headings() {
        let long = "x".repeat(100);
        let table = format_table(&[
            row(0, 7, Some(1_764_421_200_250), "missing field CallSid"),
            row(12, 1041, None, &long),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("FAILED AT"));
        assert!(lines[1].starts_with("2025-11-29T13:00:00.250Z  twilio"));
        assert!(lines[2].starts_with("-  "), "no failed-at: a dash");
        let dlq_column = lines[0].find("DLQ").unwrap();
        assert_eq!(&lines[1][dlq_column..], "0/7");
        assert_eq!(lines[2].chars().skip(dlq_column).collect::<String>(), "12/1041");
        let reason_column = lines[0].find("REASON").unwrap();
        let cut: String = lines[2].chars().skip(reason_column).take(REASON_WIDTH).collect();
        assert!(cut.ends_with('…'), "{cut}");
        assert!(!table.contains(&long));
    }

    #[test]
    fn an_empty_table_is_its_heading() {
        assert_eq!(format_table(&[]).lines().count(), 1);
    }
}
