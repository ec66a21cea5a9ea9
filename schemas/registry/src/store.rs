//! The registry's state: schemas by id, subjects with their versions, compatibility levels. Kept
//! in memory and written through to one JSON file (write to a temporary file, fsync, rename), so
//! that state survives restarts and a crash never leaves a half-written file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use apache_avro::Schema;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::compat::Level;
use crate::error::ApiError;

const STATE_FILE: &str = "registry.json";

/// One registered version of a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
}

/// Which version of a subject a request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    Latest,
    Number(u32),
}

impl VersionSpec {
    /// Parses a path segment: a positive number, `latest`, or `-1` (Confluent's alias for latest).
    pub fn parse(segment: &str) -> Result<Self, ApiError> {
        match segment {
            "latest" | "-1" => Ok(VersionSpec::Latest),
            number => match number.parse::<u32>() {
                Ok(n) if (1..=i32::MAX as u32).contains(&n) => Ok(VersionSpec::Number(n)),
                _ => Err(ApiError::InvalidVersion(segment.to_owned())),
            },
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Schema text (compact JSON) by id. An identical schema gets the same id in every subject.
    schemas: BTreeMap<u32, String>,
    /// Subject -> schema id of each version, version `n` at index `n - 1`.
    subjects: BTreeMap<String, Vec<u32>>,
    global_level: Level,
    subject_levels: BTreeMap<String, Level>,
}

impl State {
    fn id_of(&self, schema: &str) -> Option<u32> {
        self.schemas
            .iter()
            .find(|(_, text)| text.as_str() == schema)
            .map(|(id, _)| *id)
    }

    fn versions(&self, subject: &str) -> Result<&Vec<u32>, ApiError> {
        self.subjects
            .get(subject)
            .filter(|versions| !versions.is_empty())
            .ok_or_else(|| ApiError::SubjectNotFound(subject.to_owned()))
    }

    fn registered(&self, subject: &str, version: u32, id: u32) -> Registered {
        Registered {
            subject: subject.to_owned(),
            version,
            id,
            schema: self.schemas.get(&id).cloned().unwrap_or_default(),
        }
    }

    fn level(&self, subject: &str) -> Level {
        self.subject_levels
            .get(subject)
            .copied()
            .unwrap_or(self.global_level)
    }

    fn parsed_versions(&self, subject: &str) -> Result<Vec<Schema>, ApiError> {
        self.subjects
            .get(subject)
            .into_iter()
            .flatten()
            .map(|id| {
                let text = self.schemas.get(id).ok_or(ApiError::SchemaNotFound)?;
                Schema::parse_str(text).map_err(|e| ApiError::Storage(format!("stored schema {id}: {e}")))
            })
            .collect()
    }
}

/// Parses a schema as a client sent it and returns its compact form (the identity used to give
/// an identical schema the same id) together with the parsed schema.
pub(crate) fn normalize(schema: &str) -> Result<(String, Schema), ApiError> {
    let json: serde_json::Value =
        serde_json::from_str(schema).map_err(|e| ApiError::InvalidSchema(format!("not JSON: {e}")))?;
    let parsed = Schema::parse(&json).map_err(|e| ApiError::InvalidSchema(e.to_string()))?;
    let compact = serde_json::to_string(&json).map_err(|e| ApiError::InvalidSchema(e.to_string()))?;
    Ok((compact, parsed))
}

/// The registry's state, shared by all requests.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    state: Mutex<State>,
}

impl Store {
    /// Opens the state kept in `dir`, creating the directory and an empty registry when missing.
    pub async fn open(dir: &Path) -> anyhow::Result<Self> {
        tokio::fs::create_dir_all(dir).await?;
        let path = dir.join(STATE_FILE);
        let state = match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{} is not a registry state file: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        };
        Ok(Self {
            path,
            state: Mutex::new(state),
        })
    }

    async fn persist(&self, state: &State) -> Result<(), ApiError> {
        let storage = |e: std::io::Error| ApiError::Storage(e.to_string());
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| ApiError::Storage(e.to_string()))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut file = tokio::fs::File::create(&tmp).await.map_err(storage)?;
        file.write_all(&bytes).await.map_err(storage)?;
        file.sync_all().await.map_err(storage)?;
        tokio::fs::rename(&tmp, &self.path).await.map_err(storage)
    }

    /// Registers `schema` under `subject` and returns its id; an identical schema already
    /// registered under the subject returns its existing id without a new version.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, ApiError> {
        let (compact, parsed) = normalize(schema)?;
        let mut state = self.state.lock().await;
        if let Some(id) = state.id_of(&compact)
            && state
                .subjects
                .get(subject)
                .is_some_and(|versions| versions.contains(&id))
        {
            return Ok(id);
        }
        let problems = state
            .level(subject)
            .check(&parsed, &state.parsed_versions(subject)?);
        if !problems.is_empty() {
            return Err(ApiError::Incompatible {
                subject: subject.to_owned(),
                details: problems.join("; "),
            });
        }
        let id = match state.id_of(&compact) {
            Some(id) => id,
            None => {
                let id = state.schemas.keys().next_back().map_or(1, |last| last + 1);
                state.schemas.insert(id, compact);
                id
            }
        };
        state.subjects.entry(subject.to_owned()).or_default().push(id);
        self.persist(&state).await?;
        Ok(id)
    }

    pub async fn schema(&self, id: u32) -> Result<String, ApiError> {
        self.state
            .lock()
            .await
            .schemas
            .get(&id)
            .cloned()
            .ok_or(ApiError::SchemaNotFound)
    }

    pub async fn subjects(&self) -> Vec<String> {
        let state = self.state.lock().await;
        state
            .subjects
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(s, _)| s.clone())
            .collect()
    }

    pub async fn versions(&self, subject: &str) -> Result<Vec<u32>, ApiError> {
        let state = self.state.lock().await;
        Ok((1..=state.versions(subject)?.len() as u32).collect())
    }

    pub async fn version(&self, subject: &str, spec: VersionSpec) -> Result<Registered, ApiError> {
        let state = self.state.lock().await;
        let versions = state.versions(subject)?;
        let version = match spec {
            VersionSpec::Latest => versions.len() as u32,
            VersionSpec::Number(n) => n,
        };
        let id = versions
            .get(version as usize - 1)
            .ok_or(ApiError::VersionNotFound)?;
        Ok(state.registered(subject, version, *id))
    }

    /// Finds the version of `subject` that holds `schema`.
    pub async fn lookup(&self, subject: &str, schema: &str) -> Result<Registered, ApiError> {
        let (compact, _) = normalize(schema)?;
        let state = self.state.lock().await;
        let versions = state.versions(subject)?;
        let id = state.id_of(&compact).ok_or(ApiError::SchemaNotFound)?;
        let index = versions
            .iter()
            .position(|v| *v == id)
            .ok_or(ApiError::SchemaNotFound)?;
        Ok(state.registered(subject, index as u32 + 1, id))
    }

    /// The reasons `schema` is incompatible with `subject` under the subject's level: with the
    /// one version `spec` names (`latest` included, as in Confluent), or for `None` with what
    /// registering checks (the latest version, or every version under a transitive level).
    pub async fn check(
        &self,
        subject: &str,
        spec: Option<VersionSpec>,
        schema: &str,
    ) -> Result<Vec<String>, ApiError> {
        let (_, parsed) = normalize(schema)?;
        let state = self.state.lock().await;
        let level = state.level(subject);
        let mut existing = match state.subjects.get(subject) {
            // Confluent answers "compatible" for a subject with no versions yet.
            None => return Ok(Vec::new()),
            Some(_) => state.parsed_versions(subject)?,
        };
        let against = match spec {
            None => existing,
            Some(VersionSpec::Latest) => existing.pop().into_iter().collect(),
            Some(VersionSpec::Number(n)) => {
                let schema = existing.get(n as usize - 1).ok_or(ApiError::VersionNotFound)?;
                vec![schema.clone()]
            }
        };
        Ok(level.check(&parsed, &against))
    }

    /// The level of `subject`, or the global level for `None`. With `fallback` false, a subject
    /// without its own level is an error, as in Confluent's `GET /config/{subject}`.
    pub async fn level(&self, subject: Option<&str>, fallback: bool) -> Result<Level, ApiError> {
        let state = self.state.lock().await;
        match subject {
            None => Ok(state.global_level),
            Some(subject) => match state.subject_levels.get(subject) {
                Some(level) => Ok(*level),
                None if fallback => Ok(state.global_level),
                None => Err(ApiError::SubjectConfigNotFound(subject.to_owned())),
            },
        }
    }

    pub async fn set_level(&self, subject: Option<&str>, level: Level) -> Result<(), ApiError> {
        let mut state = self.state.lock().await;
        match subject {
            None => state.global_level = level,
            Some(subject) => {
                state.subject_levels.insert(subject.to_owned(), level);
            }
        }
        self.persist(&state).await
    }
}
