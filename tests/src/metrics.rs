//! Reads the Prometheus text exposition the services serve on `/metrics`.

/// The sum of the samples of `name` whose labels include `labels` (0 when there is none).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_opt(text, name, labels).unwrap_or(0.0)
}

/// [`metric`], `None` when no sample matches.
pub fn metric_opt(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let matches = labels.iter().all(|(k, v)| {
            series_labels
                .split(',')
                .any(|pair| pair == format!("{k}=\"{v}\""))
        });
        if matches {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap();
        }
    }
    found
}
