//! Compatibility levels and the check behind them, delegated to apache-avro's schema resolution.

use std::fmt;
use std::str::FromStr;

use apache_avro::Schema;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use serde::{Deserialize, Serialize};

/// A subject's compatibility level, as Confluent names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    None,
    /// The new schema can read data written with the latest one (the default).
    #[default]
    Backward,
    BackwardTransitive,
    /// Data written with the new schema can be read with the latest one.
    Forward,
    ForwardTransitive,
    /// Both backward and forward.
    Full,
    FullTransitive,
}

impl Level {
    fn directions(self) -> (bool, bool) {
        match self {
            Level::None => (false, false),
            Level::Backward | Level::BackwardTransitive => (true, false),
            Level::Forward | Level::ForwardTransitive => (false, true),
            Level::Full | Level::FullTransitive => (true, true),
        }
    }

    fn is_transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }

    /// Checks `candidate` against a subject's existing schemas (oldest first) and returns the
    /// reasons it is incompatible; empty means compatible.
    pub fn check(self, candidate: &Schema, existing: &[Schema]) -> Vec<String> {
        let (backward, forward) = self.directions();
        let against: &[Schema] = match existing.split_last() {
            Some((latest, _)) if !self.is_transitive() => std::slice::from_ref(latest),
            _ => existing,
        };
        let mut problems = Vec::new();
        for previous in against {
            if backward && let Some(problem) = can_read(previous, candidate) {
                problems.push(format!(
                    "the new schema cannot read data written with an earlier one: {problem}"
                ));
            }
            if forward && let Some(problem) = can_read(candidate, previous) {
                problems.push(format!(
                    "an earlier schema cannot read data written with the new one: {problem}"
                ));
            }
        }
        problems
    }
}

/// `None` when a reader with `reader` can always read what `writer` wrote.
fn can_read(writer: &Schema, reader: &Schema) -> Option<String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => None,
        Ok(Compatibility::Partial) => {
            Some("some values (enum symbols or union branches) cannot be read".into())
        }
        Err(err) => Some(err.to_string()),
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned));
        f.write_str(name.as_deref().unwrap_or("BACKWARD"))
    }
}

impl FromStr for Level {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase())).map_err(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fields: &str) -> Schema {
        Schema::parse_str(&format!(r#"{{"type":"record","name":"R","fields":[{fields}]}}"#)).unwrap()
    }

    #[test]
    fn levels_decide_by_direction() {
        let v1 = record(r#"{"name":"a","type":"string"}"#);
        let added_optional =
            record(r#"{"name":"a","type":"string"},{"name":"b","type":["null","string"],"default":null}"#);
        let added_required = record(r#"{"name":"a","type":"string"},{"name":"b","type":"string"}"#);
        let removed = record(r#"{"name":"z","type":["null","string"],"default":null}"#);

        let cases = [
            (Level::Backward, &added_optional, true),
            (Level::Backward, &added_required, false),
            (Level::Forward, &added_required, true),
            (Level::Forward, &removed, false),
            (Level::Full, &added_optional, true),
            (Level::Full, &added_required, false),
            (Level::None, &added_required, true),
        ];
        for (level, candidate, compatible) in cases {
            let problems = level.check(candidate, std::slice::from_ref(&v1));
            assert_eq!(
                problems.is_empty(),
                compatible,
                "{level} {candidate:?}: {problems:?}"
            );
        }
    }

    #[test]
    fn transitive_levels_check_every_version() {
        let v1 = record(r#"{"name":"a","type":"string"}"#);
        let v2 = record(r#"{"name":"a","type":"string"},{"name":"b","type":"string","default":"x"}"#);
        // Drops `a` without a default: readable from v2's point of view only when `a` has a default.
        let v3 = record(r#"{"name":"b","type":"string","default":"x"},{"name":"c","type":"int"}"#);
        assert!(!Level::Backward.check(&v3, &[v1.clone(), v2.clone()]).is_empty());
        let v3_ok = record(r#"{"name":"b","type":"string","default":"x"}"#);
        assert!(
            Level::Backward
                .check(&v3_ok, &[v1.clone(), v2.clone()])
                .is_empty()
        );
        assert!(Level::BackwardTransitive.check(&v3_ok, &[v1, v2]).is_empty());
    }

    #[test]
    fn level_names_round_trip() {
        for level in [Level::None, Level::Backward, Level::FullTransitive] {
            assert_eq!(level.to_string().parse::<Level>(), Ok(level));
        }
        assert_eq!("forward".parse::<Level>(), Ok(Level::Forward));
        assert!("sideways".parse::<Level>().is_err());
    }
}
