//! Topics as code.
//!
//! Every topic linewatch reads or writes is described by one TOML file in `topics/`, named
//! after the topic (`topics/nms.alarms.toml`): partitions, replication factor, cleanup
//! policy, retention, any other topic config, what it is for, and the JSON schemas of its
//! keys and values. The same files drive three commands:
//!
//! - `validate` ([`load_dir`] + [`verify_schemas`]): offline; every file parses and every
//!   schema it names exists and is JSON.
//! - `create` ([`TopicAdmin::create`]): creates the missing topics; existing ones are left
//!   alone (never altered: changing partitions re-keys data, changing cleanup policy can
//!   delete it, so that stays a human decision) and reported.
//! - `check` ([`TopicAdmin::check`]): compares a live cluster with the files and reports
//!   every difference: missing topic, partition count, replication factor, config value.
//!
//! Two knobs adapt the files to a cluster without editing them ([`PlanOptions`]): a name
//! prefix (isolated test runs, several environments on one cluster) and a replication
//! factor cap for single-broker development clusters.
//!
//! File format (all keys except `tombstones`, `copartition` and `configs` are required):
//! ```toml
//! name = "inventory.circuits"          # must equal the file name without .toml
//! description = "What it carries, who writes and reads it, why these settings."
//! partitions = 6
//! replication_factor = 3
//! cleanup_policy = "compact"           # "delete" | "compact" | "compact,delete"
//! retention_ms = -1                    # -1 = keep forever
//! key_schema = "schemas/string-key.schema.json"     # relative to topics/
//! value_schema = "schemas/circuit.schema.json"
//! tombstones = true                    # a null value deletes the key (compacted only)
//! copartition = "circuit"              # topics of one group must have equal partitions
//! [configs]                            # any other topic config, as Kafka spells it
//! "min.insync.replicas" = 2
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::ClientConfig;
use serde::Deserialize;

/// Kafka's limit on topic name length.
const MAX_TOPIC_NAME_LEN: usize = 249;

/// Config keys that have their own field in a topic file; repeating them under `[configs]`
/// would give one setting two sources of truth.
const FIRST_CLASS_CONFIGS: [&str; 2] = ["cleanup.policy", "retention.ms"];

/// Everything that can go wrong while loading, creating or checking topics.
///
/// Each message is complete on its own (it includes the underlying error's text), so the
/// variants expose no `source()`: printing the chain would repeat librdkafka's message.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    /// The topics directory cannot be listed.
    #[error("cannot read topics directory {}: {error}", dir.display())]
    ReadDir { dir: PathBuf, error: std::io::Error },
    /// A topic file cannot be read.
    #[error("cannot read {}: {error}", path.display())]
    ReadFile {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A topic file is not valid TOML or does not match the format (unknown key, wrong
    /// type, missing key). The message, from the TOML parser, names the line and the key.
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// A topic file parses but one of its values is not acceptable.
    #[error("{}: `{key}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    /// The topics directory holds no `*.toml` file: almost certainly the wrong directory.
    #[error("no topic files (*.toml) in {}", dir.display())]
    NoTopics { dir: PathBuf },
    /// Two topics of one co-partitioning group have different partition counts, so keys
    /// would not land in the same partition number on both.
    #[error(
        "topics {first} ({first_partitions} partitions) and {second} ({second_partitions} \
         partitions) are both in copartition group {group:?} and must have equal partitions"
    )]
    Copartition {
        group: String,
        first: String,
        first_partitions: i32,
        second: String,
        second_partitions: i32,
    },
    /// A `--prefix` or `--replication-factor` value that cannot work.
    #[error("{0}")]
    Options(String),
    /// The admin client cannot be built from the client configuration (bad `-X` property).
    #[error("cannot create a Kafka admin client: {0}")]
    Client(KafkaError),
    /// The cluster did not answer a metadata request (unreachable, auth failure, timeout).
    #[error("cannot read cluster metadata: {0}")]
    Metadata(KafkaError),
    /// An admin request as a whole failed (timeout, connection lost).
    #[error("Kafka admin request {operation} failed: {error}")]
    Admin {
        operation: &'static str,
        error: KafkaError,
    },
    /// The cluster refused to create some topics; the others may have been created.
    #[error("cannot create topics: {}", format_failures(failures))]
    Create {
        failures: Vec<(String, RDKafkaErrorCode)>,
    },
    /// The cluster refused to describe a topic's configs.
    #[error("cannot describe configs of topic {topic}: {code}")]
    Describe {
        topic: String,
        code: RDKafkaErrorCode,
    },
    /// Topics were created but did not get a leader for every partition in time.
    #[error("topics created but not ready (no leader) after {waited:?}: {}", topics.join(", "))]
    NotReady {
        topics: Vec<String>,
        waited: Duration,
    },
}

impl TopicsError {
    /// Whether trying again later may succeed: the cluster was unreachable or slow, as
    /// opposed to the topic files or the options being wrong.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TopicsError::Metadata(_) | TopicsError::Admin { .. } | TopicsError::NotReady { .. }
        )
    }
}

fn format_failures(failures: &[(String, RDKafkaErrorCode)]) -> String {
    let mut text = failures
        .iter()
        .map(|(topic, code)| format!("{topic}: {code}"))
        .collect::<Vec<_>>()
        .join("; ");
    if failures
        .iter()
        .any(|(_, code)| *code == RDKafkaErrorCode::InvalidReplicationFactor)
    {
        text.push_str(
            " (the cluster has fewer brokers than the replication factor; \
             on a development cluster use --replication-factor)",
        );
    }
    text
}

/// How old records are removed (`cleanup.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum CleanupPolicy {
    /// Segments older than `retention.ms` are deleted: event streams.
    #[serde(rename = "delete")]
    Delete,
    /// Only the latest record per key is kept (and a null value removes the key): tables
    /// and state changelogs, which a consumer reads from the start to rebuild state.
    #[serde(rename = "compact")]
    Compact,
    /// Compacted, and also deleted after `retention.ms`.
    #[serde(rename = "compact,delete", alias = "delete,compact")]
    CompactDelete,
}

impl CleanupPolicy {
    /// The value as Kafka spells it.
    pub fn as_kafka(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }

    /// Whether the log is compacted (so that tombstones mean something).
    pub fn compacts(self) -> bool {
        !matches!(self, CleanupPolicy::Delete)
    }
}

/// One topic file, as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Topic name without any prefix; equals the file name without `.toml`.
    pub name: String,
    /// What the topic carries, who produces and consumes it, and why it is configured so.
    pub description: String,
    pub partitions: i32,
    /// The production replication factor; may be capped per cluster ([`PlanOptions`]).
    pub replication_factor: i32,
    pub cleanup_policy: CleanupPolicy,
    /// `retention.ms`; -1 keeps records forever (usual for compacted topics).
    pub retention_ms: i64,
    /// JSON schema of the record key, relative to the topics directory.
    pub key_schema: PathBuf,
    /// JSON schema of the record value, relative to the topics directory.
    pub value_schema: PathBuf,
    /// A record with a null value deletes its key (compacted topics only).
    #[serde(default)]
    pub tombstones: bool,
    /// Co-partitioning group: topics joined by key in one stage must have the same partition
    /// count, or equal keys would land in different partition numbers.
    #[serde(default)]
    pub copartition: Option<String>,
    /// Other topic configs, as Kafka names them. Strings, integers and booleans are
    /// accepted and compared in Kafka's string form.
    #[serde(default)]
    pub configs: BTreeMap<String, toml::Value>,
}

impl TopicSpec {
    /// Parses and validates one topic file's text; `path` is only used in errors and to
    /// check that the file is named after the topic.
    ///
    /// # Errors
    /// [`TopicsError::Parse`] for TOML or format errors (the message names line and key),
    /// [`TopicsError::Invalid`] for values out of range, naming the key.
    pub fn parse(text: &str, path: &Path) -> Result<TopicSpec, TopicsError> {
        let spec: TopicSpec = toml::from_str(text).map_err(|e| TopicsError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        spec.validate(path)?;
        Ok(spec)
    }

    fn validate(&self, path: &Path) -> Result<(), TopicsError> {
        let invalid = |key: &str, message: String| TopicsError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            message,
        };
        validate_topic_name(&self.name).map_err(|m| invalid("name", m))?;
        let stem = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".toml"));
        if stem != Some(self.name.as_str()) {
            return Err(invalid(
                "name",
                format!(
                    "topic {:?} must live in a file named {}.toml",
                    self.name, self.name
                ),
            ));
        }
        if self.description.trim().is_empty() {
            return Err(invalid("description", "must not be empty".into()));
        }
        if self.partitions < 1 {
            return Err(invalid("partitions", "must be at least 1".into()));
        }
        if self.replication_factor < 1 {
            return Err(invalid("replication_factor", "must be at least 1".into()));
        }
        if self.retention_ms < -1 {
            return Err(invalid(
                "retention_ms",
                "must be -1 (forever) or a number of milliseconds".into(),
            ));
        }
        for (key, schema) in [
            ("key_schema", &self.key_schema),
            ("value_schema", &self.value_schema),
        ] {
            if !is_plain_relative(schema) {
                return Err(invalid(
                    key,
                    format!(
                        "{} must be a path relative to the topics directory, without `..`",
                        schema.display()
                    ),
                ));
            }
        }
        if self.tombstones && !self.cleanup_policy.compacts() {
            return Err(invalid(
                "tombstones",
                "null values only delete keys on a compacted topic (cleanup_policy \"compact\")"
                    .into(),
            ));
        }
        if let Some(group) = &self.copartition {
            if group.trim().is_empty() {
                return Err(invalid("copartition", "must not be empty".into()));
            }
        }
        for (key, value) in &self.configs {
            let config_key = format!("configs.{key}");
            if FIRST_CLASS_CONFIGS.contains(&key.as_str()) {
                return Err(invalid(
                    &config_key,
                    "set it with its own field (cleanup_policy, retention_ms)".into(),
                ));
            }
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.')
            {
                return Err(invalid(
                    &config_key,
                    "not a Kafka topic config name (lowercase words separated by dots)".into(),
                ));
            }
            config_string(value).ok_or_else(|| {
                invalid(
                    &config_key,
                    "must be a string, an integer or a boolean".into(),
                )
            })?;
        }
        Ok(())
    }

    /// The topic as it should exist on one cluster, after applying `options`.
    ///
    /// With a replication factor cap, `min.insync.replicas` is capped too: a topic asking
    /// for 2 in-sync replicas on a one-broker cluster would refuse every `acks=all` write.
    pub fn plan(&self, options: &PlanOptions) -> TopicPlan {
        let replication_factor = match options.max_replication_factor {
            Some(cap) => self.replication_factor.min(cap),
            None => self.replication_factor,
        };
        let mut configs = BTreeMap::new();
        configs.insert(
            "cleanup.policy".to_owned(),
            self.cleanup_policy.as_kafka().to_owned(),
        );
        configs.insert("retention.ms".to_owned(), self.retention_ms.to_string());
        for (key, value) in &self.configs {
            if let Some(value) = config_string(value) {
                configs.insert(key.clone(), value);
            }
        }
        if options.max_replication_factor.is_some() {
            if let Some(min_isr) = configs.get_mut("min.insync.replicas") {
                if min_isr.parse::<i32>().is_ok_and(|n| n > replication_factor) {
                    *min_isr = replication_factor.to_string();
                }
            }
        }
        TopicPlan {
            name: format!("{}{}", options.prefix, self.name),
            partitions: self.partitions,
            replication_factor,
            configs,
        }
    }

    /// The key and value schema paths, resolved against the topics directory.
    pub fn schema_paths(&self, topics_dir: &Path) -> [PathBuf; 2] {
        [
            topics_dir.join(&self.key_schema),
            topics_dir.join(&self.value_schema),
        ]
    }
}

/// A TOML config value in Kafka's string form; `None` for arrays, tables, floats, dates.
fn config_string(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn is_plain_relative(path: &Path) -> bool {
    !path.as_os_str().is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Kafka's rules for topic names: 1 to 249 characters among ASCII letters, digits, `.`,
/// `_` and `-`, and not `.` or `..`.
fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_TOPIC_NAME_LEN {
        return Err(format!(
            "{name:?} must be 1 to {MAX_TOPIC_NAME_LEN} characters long"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid topic name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{name:?} contains {c:?}; topic names use ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Loads and validates every `*.toml` file of `dir`, sorted by topic name, and checks that
/// co-partitioned topics agree on their partition count.
///
/// # Errors
/// The first file that cannot be read, parsed or validated, naming the file and the key;
/// [`TopicsError::NoTopics`] for a directory without topic files.
pub fn load_dir(dir: &Path) -> Result<Vec<TopicSpec>, TopicsError> {
    let entries = std::fs::read_dir(dir).map_err(|error| TopicsError::ReadDir {
        dir: dir.to_owned(),
        error,
    })?;
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|error| TopicsError::ReadDir {
                dir: dir.to_owned(),
                error,
            })?
            .path();
        if path.extension().is_some_and(|ext| ext == "toml") && path.is_file() {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        return Err(TopicsError::NoTopics {
            dir: dir.to_owned(),
        });
    }
    let mut specs = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|error| TopicsError::ReadFile {
            path: path.clone(),
            error,
        })?;
        specs.push(TopicSpec::parse(&text, &path)?);
    }
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    check_copartitioning(&specs)?;
    Ok(specs)
}

fn check_copartitioning(specs: &[TopicSpec]) -> Result<(), TopicsError> {
    let mut first_of_group: BTreeMap<&str, &TopicSpec> = BTreeMap::new();
    for spec in specs {
        let Some(group) = spec.copartition.as_deref() else {
            continue;
        };
        match first_of_group.get(group) {
            Some(first) if first.partitions != spec.partitions => {
                return Err(TopicsError::Copartition {
                    group: group.to_owned(),
                    first: first.name.clone(),
                    first_partitions: first.partitions,
                    second: spec.name.clone(),
                    second_partitions: spec.partitions,
                });
            }
            Some(_) => {}
            None => {
                first_of_group.insert(group, spec);
            }
        }
    }
    Ok(())
}

/// A schema file that a topic names but that is missing or not JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaProblem {
    pub topic: String,
    pub path: PathBuf,
    pub problem: String,
}

impl fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.topic,
            self.path.display(),
            self.problem
        )
    }
}

/// Checks that every schema named by `specs` exists under `topics_dir` and is a JSON
/// object. Returns every problem found, not just the first, so one run lists them all.
pub fn verify_schemas(topics_dir: &Path, specs: &[TopicSpec]) -> Vec<SchemaProblem> {
    let mut problems = Vec::new();
    for spec in specs {
        for path in spec.schema_paths(topics_dir) {
            let problem = match std::fs::read(&path) {
                Err(e) => Some(format!("cannot read: {e}")),
                Ok(bytes) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
                    Err(e) => Some(format!("not valid JSON: {e}")),
                    Ok(serde_json::Value::Object(_)) => None,
                    Ok(_) => Some("a JSON schema must be a JSON object".to_owned()),
                },
            };
            if let Some(problem) = problem {
                problems.push(SchemaProblem {
                    topic: spec.name.clone(),
                    path,
                    problem,
                });
            }
        }
    }
    problems
}

/// How the topic files are adapted to one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Prepended to every topic name (e.g. `test-1234.` or `staging.`), so that isolated
    /// sets of the same topics can live on one cluster.
    pub prefix: String,
    /// Caps every replication factor (and `min.insync.replicas`) at this value, for
    /// development clusters with fewer brokers than production. `None` keeps the files'.
    pub max_replication_factor: Option<i32>,
}

impl PlanOptions {
    /// Validated options.
    ///
    /// # Errors
    /// [`TopicsError::Options`] if the prefix has characters a topic name cannot have or the
    /// cap is below 1.
    pub fn new(
        prefix: impl Into<String>,
        max_replication_factor: Option<i32>,
    ) -> Result<PlanOptions, TopicsError> {
        let prefix = prefix.into();
        if let Some(c) = prefix
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(TopicsError::Options(format!(
                "--prefix {prefix:?} contains {c:?}; topic names use ASCII letters, digits, \
                 '.', '_' and '-'"
            )));
        }
        if max_replication_factor.is_some_and(|rf| rf < 1) {
            return Err(TopicsError::Options(
                "--replication-factor must be at least 1".into(),
            ));
        }
        Ok(PlanOptions {
            prefix,
            max_replication_factor,
        })
    }
}

/// A topic as it should exist on one cluster: final name, counts and every config value
/// the files set (in Kafka's string form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPlan {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub configs: BTreeMap<String, String>,
}

/// Plans every spec and checks the final names (a long prefix can push one past Kafka's
/// length limit).
///
/// # Errors
/// [`TopicsError::Options`] naming the topic whose final name is invalid.
pub fn plan_all(specs: &[TopicSpec], options: &PlanOptions) -> Result<Vec<TopicPlan>, TopicsError> {
    specs
        .iter()
        .map(|spec| {
            let plan = spec.plan(options);
            validate_topic_name(&plan.name).map_err(TopicsError::Options)?;
            Ok(plan)
        })
        .collect()
}

/// What `create` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateReport {
    /// Topics created by this call.
    pub created: Vec<String>,
    /// Topics that already existed and were left as they are (run `check` to compare).
    pub existing: Vec<String>,
}

impl fmt::Display for CreateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for name in &self.created {
            writeln!(f, "created  {name}")?;
        }
        for name in &self.existing {
            writeln!(f, "exists   {name} (left unchanged)")?;
        }
        write!(
            f,
            "{} created, {} already existed",
            self.created.len(),
            self.existing.len()
        )
    }
}

/// One way a live topic differs from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// The topic does not exist.
    Missing,
    Partitions {
        expected: i32,
        actual: i32,
    },
    /// The smallest replica count over the topic's partitions, against the (capped) file.
    ReplicationFactor {
        expected: i32,
        actual: i32,
    },
    /// A config value differs; `actual` is `None` when the cluster reports no value.
    Config {
        key: String,
        expected: String,
        actual: Option<String>,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::Missing => write!(f, "missing"),
            Difference::Partitions { expected, actual } => {
                write!(f, "partitions: expected {expected}, actual {actual}")
            }
            Difference::ReplicationFactor { expected, actual } => {
                write!(
                    f,
                    "replication factor: expected {expected}, actual {actual}"
                )
            }
            Difference::Config {
                key,
                expected,
                actual: Some(actual),
            } => write!(f, "config {key}: expected {expected:?}, actual {actual:?}"),
            Difference::Config {
                key,
                expected,
                actual: None,
            } => write!(f, "config {key}: expected {expected:?}, actual unset"),
        }
    }
}

/// The comparison of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicCheck {
    pub topic: String,
    /// Empty when the topic matches its file.
    pub differences: Vec<Difference>,
}

/// What `check` found, one entry per topic file, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub topics: Vec<TopicCheck>,
}

impl CheckReport {
    /// Whether the cluster matches the files.
    pub fn is_ok(&self) -> bool {
        self.topics.iter().all(|t| t.differences.is_empty())
    }

    /// Every difference as `<topic>: <difference>`, the form the CLI prints.
    pub fn difference_lines(&self) -> Vec<String> {
        self.topics
            .iter()
            .flat_map(|t| t.differences.iter().map(|d| format!("{}: {d}", t.topic)))
            .collect()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut differing = 0;
        for topic in &self.topics {
            if topic.differences.is_empty() {
                writeln!(f, "ok       {}", topic.topic)?;
            } else {
                differing += 1;
                for difference in &topic.differences {
                    writeln!(f, "DIFFERS  {}: {difference}", topic.topic)?;
                }
            }
        }
        write!(
            f,
            "{} topics checked, {} match, {differing} differ",
            self.topics.len(),
            self.topics.len() - differing
        )
    }
}

/// What the cluster's metadata says about one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LiveTopic {
    partitions: i32,
    /// Smallest replica count over the partitions.
    replication_factor: i32,
    /// Every partition has a leader and no error.
    ready: bool,
}

/// Creates and checks topics on one cluster through rdkafka's admin API.
pub struct TopicAdmin {
    /// In an `Arc` so that the blocking metadata call can run on tokio's blocking pool.
    client: Arc<AdminClient<DefaultClientContext>>,
    timeout: Duration,
}

impl TopicAdmin {
    /// An admin client for the cluster `config` points at; `timeout` bounds every request
    /// and the wait for new topics to get leaders.
    ///
    /// # Errors
    /// [`TopicsError::Client`] when the configuration is rejected by librdkafka.
    pub fn new(config: &ClientConfig, timeout: Duration) -> Result<TopicAdmin, TopicsError> {
        let client = config.create().map_err(TopicsError::Client)?;
        Ok(TopicAdmin {
            client: Arc::new(client),
            timeout,
        })
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .request_timeout(Some(self.timeout))
            .operation_timeout(Some(self.timeout))
    }

    /// Deletes the named topics (the bench's own, after a run). Topics the cluster does
    /// not know are skipped.
    ///
    /// # Errors
    /// [`TopicsError::Admin`] when the cluster cannot be reached or refuses the request.
    pub async fn delete(&self, names: &[String]) -> Result<(), TopicsError> {
        let live = self.live_topics().await?;
        let names: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| live.contains_key(*n))
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let results = self
            .client
            .delete_topics(&names, &self.options())
            .await
            .map_err(|error| TopicsError::Admin {
                operation: "DeleteTopics",
                error,
            })?;
        for result in results {
            if let Err((topic, code)) = result {
                tracing::warn!(topic, error = %code, "topic not deleted");
            }
        }
        Ok(())
    }

    /// Creates the planned topics that do not exist yet and waits until every partition of
    /// them has a leader, so that producers started right after do not race the cluster.
    /// Existing topics are never altered.
    ///
    /// # Errors
    /// [`TopicsError::Metadata`] / [`TopicsError::Admin`] when the cluster cannot be
    /// reached, [`TopicsError::Create`] listing every topic the cluster refused (the others
    /// are created), [`TopicsError::NotReady`] when leaders do not appear in time.
    pub async fn create(&self, plans: &[TopicPlan]) -> Result<CreateReport, TopicsError> {
        let live = self.live_topics().await?;
        let mut report = CreateReport::default();
        let mut to_create = Vec::new();
        for plan in plans {
            if live.contains_key(&plan.name) {
                report.existing.push(plan.name.clone());
            } else {
                to_create.push(plan);
            }
        }
        if to_create.is_empty() {
            return Ok(report);
        }

        let new_topics: Vec<NewTopic<'_>> = to_create
            .iter()
            .map(|plan| {
                plan.configs.iter().fold(
                    NewTopic::new(
                        &plan.name,
                        plan.partitions,
                        TopicReplication::Fixed(plan.replication_factor),
                    ),
                    |topic, (key, value)| topic.set(key, value),
                )
            })
            .collect();
        let results = self
            .client
            .create_topics(&new_topics, &self.options())
            .await
            .map_err(|error| TopicsError::Admin {
                operation: "CreateTopics",
                error,
            })?;
        let mut failures = Vec::new();
        for result in results {
            match result {
                Ok(name) => report.created.push(name),
                // Created meanwhile by someone else: that is "existing", not a failure.
                Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => report.existing.push(name),
                Err((name, code)) => failures.push((name, code)),
            }
        }
        if !failures.is_empty() {
            return Err(TopicsError::Create { failures });
        }
        self.wait_until_ready(&report.created).await?;
        Ok(report)
    }

    /// Compares the cluster with the plans: existence, partition count, replication factor
    /// and every config value the files set. Configs the files do not mention are not
    /// compared (they are the cluster's business).
    ///
    /// # Errors
    /// [`TopicsError::Metadata`] / [`TopicsError::Admin`] when the cluster cannot be
    /// reached, [`TopicsError::Describe`] when it refuses to describe a topic.
    pub async fn check(&self, plans: &[TopicPlan]) -> Result<CheckReport, TopicsError> {
        let live = self.live_topics().await?;
        let existing: Vec<&TopicPlan> = plans
            .iter()
            .filter(|p| live.contains_key(&p.name))
            .collect();
        let specifiers: Vec<ResourceSpecifier<'_>> = existing
            .iter()
            .map(|p| ResourceSpecifier::Topic(&p.name))
            .collect();
        let mut live_configs: BTreeMap<String, BTreeMap<String, Option<String>>> = BTreeMap::new();
        if !specifiers.is_empty() {
            let results = self
                .client
                .describe_configs(&specifiers, &self.options())
                .await
                .map_err(|error| TopicsError::Admin {
                    operation: "DescribeConfigs",
                    error,
                })?;
            // Results come back in request order.
            for (plan, result) in existing.iter().zip(results) {
                let resource = result.map_err(|code| TopicsError::Describe {
                    topic: plan.name.clone(),
                    code,
                })?;
                let entries = resource
                    .entries
                    .into_iter()
                    .map(|e| (e.name, e.value))
                    .collect();
                live_configs.insert(plan.name.clone(), entries);
            }
        }

        let topics = plans
            .iter()
            .map(|plan| TopicCheck {
                topic: plan.name.clone(),
                differences: match live.get(&plan.name) {
                    None => vec![Difference::Missing],
                    Some(topic) => compare(plan, topic, live_configs.get(&plan.name)),
                },
            })
            .collect();
        Ok(CheckReport { topics })
    }

    /// All topics of the cluster, from one metadata request. librdkafka's metadata call
    /// blocks, so it runs on tokio's blocking pool.
    async fn live_topics(&self) -> Result<BTreeMap<String, LiveTopic>, TopicsError> {
        let client = Arc::clone(&self.client);
        let timeout = self.timeout;
        let fetched = tokio::task::spawn_blocking(move || {
            let metadata = client.inner().fetch_metadata(None, timeout)?;
            let mut topics = BTreeMap::new();
            for topic in metadata.topics() {
                let error = topic.error().map(RDKafkaErrorCode::from);
                if error == Some(RDKafkaErrorCode::UnknownTopicOrPartition) {
                    continue;
                }
                let partitions = topic.partitions();
                let live = LiveTopic {
                    partitions: i32::try_from(partitions.len()).unwrap_or(i32::MAX),
                    replication_factor: partitions
                        .iter()
                        .map(|p| i32::try_from(p.replicas().len()).unwrap_or(i32::MAX))
                        .min()
                        .unwrap_or(0),
                    ready: error.is_none()
                        && !partitions.is_empty()
                        && partitions
                            .iter()
                            .all(|p| p.error().is_none() && p.leader() >= 0),
                };
                topics.insert(topic.name().to_owned(), live);
            }
            Ok(topics)
        })
        .await;
        match fetched {
            Ok(result) => result.map_err(TopicsError::Metadata),
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            // Cancelled: the runtime is shutting down under us.
            Err(_) => Err(TopicsError::Metadata(KafkaError::Canceled)),
        }
    }

    async fn wait_until_ready(&self, names: &[String]) -> Result<(), TopicsError> {
        let started = Instant::now();
        loop {
            let live = self.live_topics().await?;
            let pending: Vec<String> = names
                .iter()
                .filter(|name| !live.get(*name).is_some_and(|t| t.ready))
                .cloned()
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            if started.elapsed() >= self.timeout {
                return Err(TopicsError::NotReady {
                    topics: pending,
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The differences between one existing topic and its plan.
fn compare(
    plan: &TopicPlan,
    live: &LiveTopic,
    live_configs: Option<&BTreeMap<String, Option<String>>>,
) -> Vec<Difference> {
    let mut differences = Vec::new();
    if plan.partitions != live.partitions {
        differences.push(Difference::Partitions {
            expected: plan.partitions,
            actual: live.partitions,
        });
    }
    if plan.replication_factor != live.replication_factor {
        differences.push(Difference::ReplicationFactor {
            expected: plan.replication_factor,
            actual: live.replication_factor,
        });
    }
    for (key, expected) in &plan.configs {
        let actual = live_configs.and_then(|c| c.get(key)).cloned().flatten();
        let same = actual
            .as_deref()
            .is_some_and(|a| normalize_config(key, a) == normalize_config(key, expected));
        if !same {
            differences.push(Difference::Config {
                key: key.clone(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    differences
}

/// Puts a config value in a comparable form: list-valued configs are order-insensitive
/// ("delete,compact" is "compact,delete"), other values are compared as written.
fn normalize_config(key: &str, value: &str) -> String {
    if key == "cleanup.policy" {
        let items: BTreeSet<&str> = value.split(',').map(str::trim).collect();
        items.into_iter().collect::<Vec<_>>().join(",")
    } else {
        value.trim().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CIRCUITS: &str = r#"
name = "inventory.circuits"
description = "Circuit inventory."
partitions = 6
replication_factor = 3
cleanup_policy = "compact"
retention_ms = -1
key_schema = "schemas/string-key.schema.json"
value_schema = "schemas/circuit.schema.json"
tombstones = true
copartition = "circuit"

[configs]
"min.insync.replicas" = 2
"unclean.leader.election.enable" = false
"#;

    fn parse(text: &str) -> Result<TopicSpec, TopicsError> {
        TopicSpec::parse(text, Path::new("topics/inventory.circuits.toml"))
    }

    #[test]
    fn a_full_topic_file_parses() {
        let spec = parse(CIRCUITS).expect("valid file");
        assert_eq!(spec.name, "inventory.circuits");
        assert_eq!(spec.cleanup_policy, CleanupPolicy::Compact);
        assert!(spec.tombstones);
        assert_eq!(spec.copartition.as_deref(), Some("circuit"));
    }

    #[test]
    fn an_unknown_key_names_the_file_and_the_key() {
        let text = CIRCUITS.replace("tombstones = true", "tombstone = true");
        let message = parse(&text).expect_err("unknown key").to_string();
        assert!(message.contains("inventory.circuits.toml"), "{message}");
        assert!(message.contains("tombstone"), "{message}");
    }

    #[test]
    fn a_missing_key_is_named() {
        let text = CIRCUITS.replace("retention_ms = -1\n", "");
        let message = parse(&text).expect_err("missing key").to_string();
        assert!(message.contains("retention_ms"), "{message}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("partitions = 6", "partitions = 0", "`partitions`"),
            ("retention_ms = -1", "retention_ms = -2", "`retention_ms`"),
            (
                "cleanup_policy = \"compact\"",
                "cleanup_policy = \"delete\"",
                "`tombstones`",
            ),
            (
                "schemas/circuit.schema.json",
                "../circuit.schema.json",
                "`value_schema`",
            ),
            (
                "\"min.insync.replicas\" = 2",
                "\"retention.ms\" = 2",
                "`configs.retention.ms`",
            ),
            (
                "\"min.insync.replicas\" = 2",
                "\"min.insync.replicas\" = 2.5",
                "`configs.min.insync.replicas`",
            ),
        ];
        for (from, to, key) in cases {
            let message = parse(&CIRCUITS.replace(from, to))
                .expect_err(to)
                .to_string();
            assert!(message.contains(key), "{to}: {message}");
        }
    }

    #[test]
    fn the_file_must_be_named_after_the_topic() {
        let err = TopicSpec::parse(CIRCUITS, Path::new("topics/circuits.toml"))
            .expect_err("name mismatch");
        assert!(err.to_string().contains("inventory.circuits.toml"), "{err}");
    }

    #[test]
    fn plan_adds_first_class_configs_and_prefix() {
        let spec = parse(CIRCUITS).expect("valid file");
        let plan = spec.plan(&PlanOptions::new("t1.", None).expect("options"));
        assert_eq!(plan.name, "t1.inventory.circuits");
        assert_eq!(plan.replication_factor, 3);
        assert_eq!(plan.configs["cleanup.policy"], "compact");
        assert_eq!(plan.configs["retention.ms"], "-1");
        assert_eq!(plan.configs["min.insync.replicas"], "2");
        assert_eq!(plan.configs["unclean.leader.election.enable"], "false");
    }

    #[test]
    fn a_replication_cap_also_caps_min_insync_replicas() {
        let spec = parse(CIRCUITS).expect("valid file");
        let plan = spec.plan(&PlanOptions::new("", Some(1)).expect("options"));
        assert_eq!(plan.replication_factor, 1);
        assert_eq!(plan.configs["min.insync.replicas"], "1");
    }

    #[test]
    fn bad_options_are_refused() {
        assert!(PlanOptions::new("a b", None).is_err());
        assert!(PlanOptions::new("", Some(0)).is_err());
        let spec = parse(CIRCUITS).expect("valid file");
        let long = PlanOptions::new("x".repeat(240), None).expect("options");
        assert!(plan_all(&[spec], &long).is_err());
    }

    #[test]
    fn copartitioned_topics_must_agree_on_partitions() {
        let a = parse(CIRCUITS).expect("valid file");
        let mut b = a.clone();
        b.name = "linewatch.impacts".into();
        b.partitions = 12;
        let err = check_copartitioning(&[a, b]).expect_err("mismatch");
        assert!(err.to_string().contains("linewatch.impacts"), "{err}");
    }

    #[test]
    fn compare_reports_each_difference() {
        let plan = TopicPlan {
            name: "t".into(),
            partitions: 6,
            replication_factor: 1,
            configs: BTreeMap::from([
                ("cleanup.policy".into(), "compact,delete".into()),
                ("retention.ms".into(), "-1".into()),
                ("min.insync.replicas".into(), "1".into()),
            ]),
        };
        let live = LiveTopic {
            partitions: 7,
            replication_factor: 1,
            ready: true,
        };
        let configs = BTreeMap::from([
            ("cleanup.policy".into(), Some("delete,compact".into())),
            ("retention.ms".into(), Some("604800000".into())),
            ("min.insync.replicas".into(), None),
        ]);
        let differences = compare(&plan, &live, Some(&configs));
        let lines: Vec<String> = differences.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "partitions: expected 6, actual 7",
                "config min.insync.replicas: expected \"1\", actual unset",
                "config retention.ms: expected \"-1\", actual \"604800000\"",
            ]
        );
    }
}
