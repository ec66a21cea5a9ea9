//! A small reader of the Prometheus text format, enough for the samples switchboard's own services
//! export (`name{label="value",…} number`). Pure, no I/O.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

/// The samples of `text` named `name` (comments, other names and malformed lines skipped).
pub(crate) fn samples(text: &str, name: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(parse_line)
        .filter(|sample| sample.name == name)
        .collect()
}

/// The cumulative buckets `(le, count)` of histogram `name` (its `<name>_bucket` samples, summed
/// over other labels), in ascending `le` order.
pub(crate) fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let mut by_bound: Vec<(f64, f64)> = Vec::new();
    for sample in samples(text, &format!("{name}_bucket")) {
        let Some(bound) = sample.labels.get("le").and_then(|le| match le.as_str() {
            "+Inf" => Some(f64::INFINITY),
            other => other.parse().ok(),
        }) else {
            continue;
        };
        match by_bound.iter_mut().find(|(b, _)| *b == bound) {
            Some((_, count)) => *count += sample.value,
            None => by_bound.push((bound, sample.value)),
        }
    }
    by_bound.sort_by(|a, b| a.0.total_cmp(&b.0));
    by_bound
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let (name, rest) = line.split_once(char::is_whitespace)?;
            (name, BTreeMap::new(), rest)
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name: name.trim().to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y\"z"` -> {a: x, b: y"z}.
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ',' || c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Some(labels);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=') {
            key.push(c);
        }
        chars.next()?; // '='
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        }
        labels.insert(key.trim().to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_labelled_and_bare_samples() {
        let text = "# HELP x\n# TYPE switchboard_actions_retry_depth gauge\n\
            switchboard_actions_retry_depth{action=\"crm\",topic=\"switchboard.retry.1s\"} 3\n\
            switchboard_actions_retry_depth_other 9\n\
            switchboard_dlq_depth{topic=\"switchboard.dlq\"} 2\n\
            switchboard_observed_sample 17\n\
            weird{a=\"q\\\"uo,te\"} +Inf\n";
        let depth = samples(text, "switchboard_actions_retry_depth");
        assert_eq!(depth.len(), 1);
        assert_eq!(depth[0].labels["action"], "crm");
        assert_eq!(depth[0].labels["topic"], "switchboard.retry.1s");
        assert_eq!(depth[0].value, 3.0);
        assert_eq!(samples(text, "switchboard_observed_sample")[0].value, 17.0);
        assert!(samples(text, "switchboard_observed_sample")[0].labels.is_empty());
        let weird = samples(text, "weird");
        assert_eq!(weird[0].labels["a"], "q\"uo,te");
        assert!(weird[0].value.is_infinite());
        assert!(samples(text, "missing").is_empty());
    }

    #[test]
    fn reads_histogram_buckets_in_bound_order() {
        let text = "a_seconds_bucket{le=\"0.5\"} 3\n\
            a_seconds_bucket{le=\"+Inf\"} 4\n\
            a_seconds_bucket{le=\"0.1\"} 1\n\
            a_seconds_sum 1.2\n\
            a_seconds_count 4\n";
        assert_eq!(
            buckets(text, "a_seconds"),
            vec![(0.1, 1.0), (0.5, 3.0), (f64::INFINITY, 4.0)]
        );
        assert!(buckets(text, "b_seconds").is_empty());
    }
}
