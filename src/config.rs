//! Settings of `linewatch run`: command-line flags, environment variables, a TOML config
//! file (`--config`) and built-in defaults, in that order of precedence.
//!
//! clap resolves a flag against its environment variable; this module layers the result
//! over the config file and the defaults ([`Layer::over`], [`resolve`]), so the merge is a
//! pure function the tests call directly. `examples/linewatch.toml` shows every key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::alarm::StndDefinedObject;
use crate::intake::NonFaultEvents;
use crate::kafka::service::TopicNames;
use crate::kafka::ClientOverride;
use crate::tmf621::Tmf621Version;

/// Default consumer-group prefix (`group_id`).
pub const DEFAULT_GROUP_ID: &str = "linewatch";
/// Default interval of the live SLA timer check, in milliseconds (`tick_ms`).
pub const DEFAULT_TICK_MS: u64 = 200;
/// Default quiet time before timers follow the wall clock, in milliseconds (`idle_after_ms`).
pub const DEFAULT_IDLE_AFTER_MS: u64 = 1000;
/// Hostname used in the default transactional id when none can be found.
pub const FALLBACK_HOSTNAME: &str = "local";
/// Default address of the HTTP listener (`http_listen`): loopback only.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9464";
/// Environment variable holding the bearer token of the query API and NOC view.
pub const HTTP_TOKEN_ENV: &str = "LINEWATCH_HTTP_TOKEN";

/// Librdkafka properties that linewatch sets itself: a `[kafka]` entry for one of them
/// would be ignored (`group.id`, `transactional.id`) or would beat `--bootstrap-servers`
/// (`bootstrap.servers`), so the file refuses them and names the key to use instead.
const RESERVED_KAFKA_KEYS: [(&str, &str); 4] = [
    ("bootstrap.servers", "bootstrap_servers"),
    ("group.id", "group_id"),
    ("transactional.id", "transactional_id"),
    // The stage consumers' client.id carries the instance and its URL (kafka::directory).
    ("client.id", "transactional_id (with http_advertise_url)"),
];

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("unknown log format {s:?}; expected text or json")),
        }
    }
}

/// One source of settings (flags and environment, or the config file): every key optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layer {
    pub bootstrap_servers: Option<String>,
    pub group_id: Option<String>,
    pub transactional_id: Option<String>,
    pub topic_prefix: Option<String>,
    pub policy: Option<PathBuf>,
    pub tick_ms: Option<u64>,
    pub idle_after_ms: Option<u64>,
    pub log_format: Option<LogFormat>,
    pub http_listen: Option<std::net::SocketAddr>,
    pub http_advertise_url: Option<String>,
    pub http_token_file: Option<PathBuf>,
    pub stnd_defined_object: Option<StndDefinedObject>,
    pub non_fault_events: Option<NonFaultEvents>,
    pub tmf621_version: Option<Tmf621Version>,
}

impl Layer {
    /// Each key from `self` if set there, else from `lower`.
    pub fn over(self, lower: Layer) -> Layer {
        Layer {
            bootstrap_servers: self.bootstrap_servers.or(lower.bootstrap_servers),
            group_id: self.group_id.or(lower.group_id),
            transactional_id: self.transactional_id.or(lower.transactional_id),
            topic_prefix: self.topic_prefix.or(lower.topic_prefix),
            policy: self.policy.or(lower.policy),
            tick_ms: self.tick_ms.or(lower.tick_ms),
            idle_after_ms: self.idle_after_ms.or(lower.idle_after_ms),
            log_format: self.log_format.or(lower.log_format),
            http_listen: self.http_listen.or(lower.http_listen),
            http_advertise_url: self.http_advertise_url.or(lower.http_advertise_url),
            http_token_file: self.http_token_file.or(lower.http_token_file),
            stnd_defined_object: self.stnd_defined_object.or(lower.stnd_defined_object),
            non_fault_events: self.non_fault_events.or(lower.non_fault_events),
            tmf621_version: self.tmf621_version.or(lower.tmf621_version),
        }
    }
}

/// Full names for individual topics (`[topics]` in the config file), used as written: the
/// topic prefix is not applied to them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRenames {
    pub alarms: Option<String>,
    pub inventory: Option<String>,
    pub maintenance: Option<String>,
    pub commands: Option<String>,
    pub tickets: Option<String>,
    pub reminders: Option<String>,
    pub line_status: Option<String>,
    pub warnings: Option<String>,
    pub figures: Option<String>,
    pub incidents: Option<String>,
    pub rejected: Option<String>,
    pub impacts: Option<String>,
    pub incident_facts: Option<String>,
    pub alarms_repartition: Option<String>,
    pub commands_repartition: Option<String>,
    pub fanout_changelog: Option<String>,
    pub circuit_changelog: Option<String>,
    pub incident_changelog: Option<String>,
}

impl TopicRenames {
    /// Replaces the names given here, leaving the others as they are.
    pub fn apply(&self, names: &mut TopicNames) {
        let pairs: [(&Option<String>, &mut String); 18] = [
            (&self.alarms, &mut names.alarms),
            (&self.inventory, &mut names.inventory),
            (&self.maintenance, &mut names.maintenance),
            (&self.commands, &mut names.commands),
            (&self.tickets, &mut names.tickets),
            (&self.reminders, &mut names.reminders),
            (&self.line_status, &mut names.line_status),
            (&self.warnings, &mut names.warnings),
            (&self.figures, &mut names.figures),
            (&self.incidents, &mut names.incidents),
            (&self.rejected, &mut names.rejected),
            (&self.impacts, &mut names.impacts),
            (&self.incident_facts, &mut names.incident_facts),
            (&self.alarms_repartition, &mut names.alarms_repartition),
            (&self.commands_repartition, &mut names.commands_repartition),
            (&self.fanout_changelog, &mut names.fanout_changelog),
            (&self.circuit_changelog, &mut names.circuit_changelog),
            (&self.incident_changelog, &mut names.incident_changelog),
        ];
        for (rename, name) in pairs {
            if let Some(rename) = rename {
                name.clone_from(rename);
            }
        }
    }
}

/// A parsed config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileConfig {
    /// The scalar keys. A relative `policy` path is already resolved against the file's
    /// folder by [`FileConfig::load`].
    pub settings: Layer,
    /// The `[kafka]` table, flattened to `key=value` properties (sorted by key).
    pub kafka: Vec<ClientOverride>,
    /// The `[topics]` table.
    pub topics: TopicRenames,
}

/// The whole file as written; `settings` takes the top-level scalar keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    bootstrap_servers: Option<String>,
    group_id: Option<String>,
    transactional_id: Option<String>,
    topic_prefix: Option<String>,
    policy: Option<PathBuf>,
    tick_ms: Option<u64>,
    idle_after_ms: Option<u64>,
    log_format: Option<LogFormat>,
    http_listen: Option<std::net::SocketAddr>,
    http_advertise_url: Option<String>,
    http_token_file: Option<PathBuf>,
    stnd_defined_object: Option<StndDefinedObject>,
    non_fault_events: Option<NonFaultEvents>,
    tmf621_version: Option<Tmf621Version>,
    #[serde(default)]
    kafka: toml::Table,
    #[serde(default)]
    topics: TopicRenames,
}

/// What can be wrong with the settings.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file is not valid TOML{}: {message}", at_line(*line))]
    Syntax {
        line: Option<usize>,
        message: String,
    },
    /// A key is unknown, has the wrong type or a refused value.
    #[error("{key}: {reason}{}", at_line(*line))]
    Invalid {
        /// Dotted path of the key, e.g. `topics.alarm` or `kafka.security.protocol`.
        key: String,
        reason: String,
        line: Option<usize>,
    },
    /// An error in the named config file.
    #[error("config file {}: {error}", path.display())]
    InFile {
        path: PathBuf,
        error: Box<ConfigError>,
    },
    #[error("no Kafka bootstrap servers: give --bootstrap-servers, set KAFKA_BOOTSTRAP_SERVERS, or set bootstrap_servers in the --config file")]
    NoBootstrapServers,
}

impl ConfigError {
    /// The dotted key at fault, if the error is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::InFile { error, .. } => error.key(),
            _ => None,
        }
    }
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl FileConfig {
    /// Reads and parses a config file; a relative `policy` or `http_token_file` path is
    /// taken relative to the file's folder.
    ///
    /// # Errors
    /// [`ConfigError::Read`], or the errors of [`FileConfig::from_toml_str`] wrapped in
    /// [`ConfigError::InFile`] with the path.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let mut file = FileConfig::from_toml_str(&text).map_err(|error| ConfigError::InFile {
            path: path.to_path_buf(),
            error: Box::new(error),
        })?;
        if let (Some(policy), Some(dir)) = (&file.settings.policy, path.parent()) {
            file.settings.policy = Some(dir.join(policy));
        }
        if let (Some(token), Some(dir)) = (&file.settings.http_token_file, path.parent()) {
            file.settings.http_token_file = Some(dir.join(token));
        }
        Ok(file)
    }

    /// Parses config file text (a relative `policy` path is kept as written).
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] if the text is not TOML; [`ConfigError::Invalid`], naming
    /// the key, if a key is unknown or a value has the wrong type or is refused.
    pub fn from_toml_str(text: &str) -> Result<FileConfig, ConfigError> {
        if let Err(e) = text.parse::<toml::Table>() {
            return Err(ConfigError::Syntax {
                line: e.span().map(|s| line_of(text, s.start)),
                message: e.message().trim().replace('\n', "; "),
            });
        }
        let raw: RawFile = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| from_serde_error(text, e))?;
        let mut kafka = BTreeMap::new();
        flatten_kafka("", &raw.kafka, &mut kafka)?;
        Ok(FileConfig {
            settings: Layer {
                bootstrap_servers: raw.bootstrap_servers,
                group_id: raw.group_id,
                transactional_id: raw.transactional_id,
                topic_prefix: raw.topic_prefix,
                policy: raw.policy,
                tick_ms: raw.tick_ms,
                idle_after_ms: raw.idle_after_ms,
                log_format: raw.log_format,
                http_listen: raw.http_listen,
                http_advertise_url: raw.http_advertise_url,
                http_token_file: raw.http_token_file,
                stnd_defined_object: raw.stnd_defined_object,
                non_fault_events: raw.non_fault_events,
                tmf621_version: raw.tmf621_version,
            },
            kafka: kafka.into_iter().collect(),
            topics: raw.topics,
        })
    }
}

/// `[kafka]` keys hold dots (`security.protocol`): quoted, they are one TOML key; bare,
/// TOML reads them as nested tables. Both spellings are accepted and joined back with dots.
fn flatten_kafka(
    prefix: &str,
    table: &toml::Table,
    out: &mut BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (key, value) in table {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let invalid = |reason: String| ConfigError::Invalid {
            key: format!("kafka.{name}"),
            reason,
            line: None,
        };
        let text = match value {
            toml::Value::Table(inner) => {
                flatten_kafka(&name, inner, out)?;
                continue;
            }
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(_) | toml::Value::Datetime(_) => {
                return Err(invalid(
                    "a librdkafka property must be a string, number or boolean (write lists as one comma-separated string)".into(),
                ))
            }
        };
        if let Some((_, instead)) = RESERVED_KAFKA_KEYS.iter().find(|(k, _)| *k == name) {
            return Err(invalid(format!(
                "set by linewatch; use the top-level key {instead} instead"
            )));
        }
        if out.insert(name.clone(), text).is_some() {
            return Err(invalid(
                "given twice (once as a quoted key, once as a dotted key)".into(),
            ));
        }
    }
    Ok(())
}

fn from_serde_error(text: &str, e: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    let path = e.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let inner = e.into_inner();
    let line = inner.span().map(|s| line_of(text, s.start));
    let message = inner.message().trim().to_string();
    // serde names an unknown key in backquotes; put it into the key path instead.
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((name, rest)) = rest.split_once('`') {
            let key = if path.is_empty() {
                name.to_string()
            } else if path == name || path.ends_with(&format!(".{name}")) {
                path.clone()
            } else {
                format!("{path}.{name}")
            };
            let expected = rest.trim_start_matches(',').trim();
            return ConfigError::Invalid {
                key,
                reason: format!("unknown key; {expected}"),
                line,
            };
        }
    }
    ConfigError::Invalid {
        key: if path.is_empty() {
            "(config)".into()
        } else {
            path
        },
        reason: message,
        line,
    }
}

/// Everything `run` needs, resolved. Its Debug output leaves out the client properties'
/// values, which may hold passwords.
#[derive(Clone)]
pub struct RunSettings {
    pub bootstrap_servers: String,
    /// The file's `[kafka]` properties, then the command line's `-X` ones: applied in this
    /// order by [`crate::kafka::client_config`], so a `-X` wins over the file.
    pub client_overrides: Vec<ClientOverride>,
    pub group_id: String,
    pub transactional_id: String,
    pub topics: TopicNames,
    /// `None`: the built-in policy.
    pub policy: Option<PathBuf>,
    pub tick_ms: u64,
    pub idle_after_ms: u64,
    pub log_format: LogFormat,
    pub http_listen: std::net::SocketAddr,
    /// `None`: `http://<listen address>`.
    pub http_advertise_url: Option<String>,
    /// File holding the bearer token (when `LINEWATCH_HTTP_TOKEN` is not set).
    pub http_token_file: Option<PathBuf>,
    /// How inputs are read (3GPP alarmed object, non-fault VES events).
    pub intake: crate::intake::IntakeOptions,
    /// The TMF621 version of the events on `tickets.events` (4 unless set).
    pub tmf621_version: Tmf621Version,
}

/// Merges the command line (flags, each already resolved by clap against its environment
/// variable) over the config file, then the built-in defaults. `hostname` is called only
/// when no transactional id is given, which then defaults to `<group_id>-<hostname>`.
///
/// # Errors
/// [`ConfigError::NoBootstrapServers`] when no layer names the bootstrap servers.
pub fn resolve(
    command_line: Layer,
    command_line_overrides: Vec<ClientOverride>,
    file: Option<FileConfig>,
    hostname: impl FnOnce() -> String,
) -> Result<RunSettings, ConfigError> {
    let file = file.unwrap_or_default();
    let merged = command_line.over(file.settings);
    let bootstrap_servers = merged
        .bootstrap_servers
        .filter(|s| !s.trim().is_empty())
        .ok_or(ConfigError::NoBootstrapServers)?;
    let group_id = merged
        .group_id
        .unwrap_or_else(|| DEFAULT_GROUP_ID.to_owned());
    let transactional_id = merged
        .transactional_id
        .unwrap_or_else(|| format!("{group_id}-{}", hostname()));
    let mut topics = TopicNames::with_prefix(merged.topic_prefix.as_deref().unwrap_or(""));
    file.topics.apply(&mut topics);
    let mut client_overrides = file.kafka;
    client_overrides.extend(command_line_overrides);
    Ok(RunSettings {
        bootstrap_servers,
        client_overrides,
        group_id,
        transactional_id,
        topics,
        policy: merged.policy,
        tick_ms: merged.tick_ms.unwrap_or(DEFAULT_TICK_MS),
        idle_after_ms: merged.idle_after_ms.unwrap_or(DEFAULT_IDLE_AFTER_MS),
        log_format: merged.log_format.unwrap_or_default(),
        http_listen: merged.http_listen.unwrap_or_else(|| {
            DEFAULT_HTTP_LISTEN
                .parse()
                .unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 9464)))
        }),
        http_advertise_url: match merged.http_advertise_url {
            Some(url)
                if !(url.starts_with("http://") || url.starts_with("https://"))
                    || url.contains('|')
                    || url.chars().any(char::is_whitespace) =>
            {
                return Err(ConfigError::Invalid {
                    key: "http_advertise_url".into(),
                    reason: format!(
                        "must be an http:// or https:// URL without spaces or '|', got {url:?}"
                    ),
                    line: None,
                })
            }
            other => other.map(|u| u.trim_end_matches('/').to_string()),
        },
        http_token_file: merged.http_token_file,
        intake: crate::intake::IntakeOptions {
            alarms: crate::alarm::AlarmOptions {
                stnd_defined_object: merged.stnd_defined_object.unwrap_or_default(),
            },
            non_fault_events: merged.non_fault_events.unwrap_or_default(),
        },
        tmf621_version: merged.tmf621_version.unwrap_or_default(),
    })
}

/// This machine's name for the default transactional id: `$HOSTNAME`, else
/// `/etc/hostname`, else [`FALLBACK_HOSTNAME`].
pub fn hostname() -> String {
    pick_hostname(
        std::env::var("HOSTNAME").ok(),
        std::fs::read_to_string("/etc/hostname").ok(),
    )
}

/// The first non-blank candidate, trimmed, else [`FALLBACK_HOSTNAME`].
pub fn pick_hostname(from_env: Option<String>, from_file: Option<String>) -> String {
    [from_env, from_file]
        .into_iter()
        .flatten()
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| FALLBACK_HOSTNAME.to_owned())
}

impl std::fmt::Debug for RunSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunSettings")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field(
                "client_overrides",
                &crate::kafka::override_keys(&self.client_overrides),
            )
            .field("group_id", &self.group_id)
            .field("transactional_id", &self.transactional_id)
            .field("topics", &self.topics)
            .field("policy", &self.policy)
            .field("tick_ms", &self.tick_ms)
            .field("idle_after_ms", &self.idle_after_ms)
            .field("log_format", &self.log_format)
            .field("http_listen", &self.http_listen)
            .field("http_advertise_url", &self.http_advertise_url)
            .field("http_token_file", &self.http_token_file)
            .field("intake", &self.intake)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::client_config;

    fn layer_with_group(group: &str) -> Layer {
        Layer {
            group_id: Some(group.into()),
            ..Layer::default()
        }
    }

    fn file_with(settings: Layer, kafka: &[(&str, &str)]) -> FileConfig {
        FileConfig {
            settings,
            kafka: kafka
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            topics: TopicRenames::default(),
        }
    }

    fn servers(s: &str) -> Layer {
        Layer {
            bootstrap_servers: Some(s.into()),
            ..Layer::default()
        }
    }

    #[test]
    fn example_file_parses_with_every_key() {
        let text = include_str!("../examples/linewatch.toml");
        let as_is = FileConfig::from_toml_str(text).expect("examples/linewatch.toml is valid");
        assert!(as_is.settings.bootstrap_servers.is_some());
        // Settings left at their default are written `#key = value` (prose is `# ...`).
        let uncommented: String = text
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '"') => {
                    rest
                }
                _ => line,
            })
            .flat_map(|line| [line, "\n"])
            .collect();
        let file = FileConfig::from_toml_str(&uncommented)
            .expect("examples/linewatch.toml is valid with every setting uncommented");
        let s = &file.settings;
        assert!(s.bootstrap_servers.is_some());
        assert!(s.group_id.is_some());
        assert!(s.transactional_id.is_some());
        assert!(s.topic_prefix.is_some());
        assert!(s.policy.is_some());
        assert!(s.tick_ms.is_some());
        assert!(s.idle_after_ms.is_some());
        assert!(s.log_format.is_some());
        assert_eq!(s.stnd_defined_object, Some(StndDefinedObject::Auto));
        assert_eq!(s.non_fault_events, Some(NonFaultEvents::Drop));
        assert_eq!(s.tmf621_version, Some(Tmf621Version::V4));
        assert!(!file.kafka.is_empty());
        // The example shows every topic of TopicNames.
        let t = &file.topics;
        let all = [
            &t.alarms,
            &t.inventory,
            &t.maintenance,
            &t.commands,
            &t.tickets,
            &t.reminders,
            &t.line_status,
            &t.warnings,
            &t.figures,
            &t.incidents,
            &t.rejected,
            &t.impacts,
            &t.incident_facts,
            &t.alarms_repartition,
            &t.commands_repartition,
            &t.fanout_changelog,
            &t.circuit_changelog,
            &t.incident_changelog,
        ];
        assert!(all.iter().all(|name| name.is_some()), "{t:?}");
    }

    #[test]
    fn file_parses_scalars_kafka_and_topics() {
        let text = r#"
            bootstrap_servers = "k1:9092,k2:9092"
            group_id = "lw"
            transactional_id = "lw-a"
            topic_prefix = "staging."
            policy = "policy.toml"
            tick_ms = 250
            idle_after_ms = 9000
            log_format = "json"

            [kafka]
            "security.protocol" = "SASL_SSL"
            sasl.mechanism = "SCRAM-SHA-512"
            "enable.ssl.certificate.verification" = false
            "socket.timeout.ms" = 30000

            [topics]
            alarms = "nms.alarms.v2"
            incident_changelog = "lw.incidents-log"
        "#;
        let file = FileConfig::from_toml_str(text).unwrap();
        assert_eq!(
            file.settings,
            Layer {
                bootstrap_servers: Some("k1:9092,k2:9092".into()),
                group_id: Some("lw".into()),
                transactional_id: Some("lw-a".into()),
                topic_prefix: Some("staging.".into()),
                policy: Some("policy.toml".into()),
                tick_ms: Some(250),
                idle_after_ms: Some(9000),
                log_format: Some(LogFormat::Json),
                http_listen: None,
                http_advertise_url: None,
                http_token_file: None,
                stnd_defined_object: None,
                non_fault_events: None,
                tmf621_version: None,
            }
        );
        let kafka: Vec<(&str, &str)> = file
            .kafka
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            kafka,
            [
                ("enable.ssl.certificate.verification", "false"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("security.protocol", "SASL_SSL"),
                ("socket.timeout.ms", "30000"),
            ]
        );
        let settings = resolve(Layer::default(), vec![], Some(file), || "h".into()).unwrap();
        // Renamed topics are used as written; the others get the prefix.
        assert_eq!(settings.topics.alarms, "nms.alarms.v2");
        assert_eq!(settings.topics.incident_changelog, "lw.incidents-log");
        assert_eq!(settings.topics.inventory, "staging.inventory.circuits");
    }

    #[test]
    fn an_empty_file_sets_nothing() {
        assert_eq!(
            FileConfig::from_toml_str("").unwrap(),
            FileConfig::default()
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = FileConfig::from_toml_str("bootstrap_servers = \"k:9092\"\ngroup = \"x\"\n")
            .unwrap_err();
        assert_eq!(err.key(), Some("group"));
        let text = err.to_string();
        assert!(text.contains("unknown key"), "{text}");
        assert!(text.contains("group_id"), "lists the expected keys: {text}");
        assert!(text.contains("(line 2)"), "{text}");

        let err =
            FileConfig::from_toml_str("[topics]\nalarms = \"a\"\nalarm = \"b\"\n").unwrap_err();
        assert_eq!(err.key(), Some("topics.alarm"), "{err}");
        assert!(err.to_string().contains("(line 3)"), "{err}");

        let err = FileConfig::from_toml_str("[kafkaa]\n\"a.b\" = \"c\"\n").unwrap_err();
        assert_eq!(err.key(), Some("kafkaa"), "{err}");
    }

    #[test]
    fn errors_in_a_file_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lw.toml");
        std::fs::write(&path, "tick_ms = 100\nbootstrap = \"k:9092\"\n").unwrap();
        let err = FileConfig::load(&path).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("bootstrap: unknown key"), "{text}");

        let missing = dir.path().join("absent.toml");
        let text = FileConfig::load(&missing).unwrap_err().to_string();
        assert!(text.contains("cannot read config file"), "{text}");
        assert!(text.contains("absent.toml"), "{text}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = FileConfig::from_toml_str("tick_ms = \"fast\"\n").unwrap_err();
        assert_eq!(err.key(), Some("tick_ms"), "{err}");
        let err = FileConfig::from_toml_str("log_format = \"xml\"\n").unwrap_err();
        assert_eq!(err.key(), Some("log_format"), "{err}");
        let err = FileConfig::from_toml_str("tick_ms = -1\n").unwrap_err();
        assert_eq!(err.key(), Some("tick_ms"), "{err}");
        let err = FileConfig::from_toml_str("[kafka]\n\"a.b\" = [1, 2]\n").unwrap_err();
        assert_eq!(err.key(), Some("kafka.a.b"), "{err}");
        let err = FileConfig::from_toml_str("[kafka]\n\"a.b\" = \"1\"\na.b = \"2\"\n").unwrap_err();
        assert_eq!(err.key(), Some("kafka.a.b"), "{err}");
        assert!(matches!(
            FileConfig::from_toml_str("tick_ms = = 1\n"),
            Err(ConfigError::Syntax { line: Some(1), .. })
        ));
    }

    #[test]
    fn kafka_table_refuses_what_linewatch_sets_itself() {
        for (key, instead) in RESERVED_KAFKA_KEYS {
            let err =
                FileConfig::from_toml_str(&format!("[kafka]\n\"{key}\" = \"x\"\n")).unwrap_err();
            assert_eq!(err.key(), Some(format!("kafka.{key}").as_str()));
            assert!(err.to_string().contains(instead), "{err}");
        }
    }

    #[test]
    fn relative_policy_path_is_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lw.toml");
        std::fs::write(&path, "policy = \"policy/prod.toml\"\n").unwrap();
        let file = FileConfig::load(&path).unwrap();
        assert_eq!(
            file.settings.policy,
            Some(dir.path().join("policy/prod.toml"))
        );
        std::fs::write(&path, "policy = \"/etc/linewatch/policy.toml\"\n").unwrap();
        let file = FileConfig::load(&path).unwrap();
        assert_eq!(
            file.settings.policy,
            Some(PathBuf::from("/etc/linewatch/policy.toml"))
        );
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let flag = layer_with_group("from-flag");
        let env = Layer {
            group_id: Some("from-env".into()),
            topic_prefix: Some("env.".into()),
            ..Layer::default()
        };
        let file = Layer {
            group_id: Some("from-file".into()),
            topic_prefix: Some("file.".into()),
            tick_ms: Some(42),
            ..servers("file:9092")
        };
        let merged = flag.clone().over(env.clone()).over(file.clone());
        assert_eq!(merged.group_id.as_deref(), Some("from-flag"));
        assert_eq!(merged.topic_prefix.as_deref(), Some("env."));
        assert_eq!(merged.tick_ms, Some(42));
        assert_eq!(merged.bootstrap_servers.as_deref(), Some("file:9092"));
        assert_eq!(merged.idle_after_ms, None);

        // `resolve` takes the command line (flag over env, as clap gives it) over the file,
        // then the defaults.
        let settings = resolve(flag.over(env), vec![], Some(file_with(file, &[])), || {
            "host".into()
        })
        .unwrap();
        assert_eq!(settings.group_id, "from-flag");
        assert_eq!(settings.topics.alarms, "env.nms.alarms");
        assert_eq!(settings.tick_ms, 42);
        assert_eq!(settings.idle_after_ms, DEFAULT_IDLE_AFTER_MS);
        assert_eq!(settings.log_format, LogFormat::Text);
        assert_eq!(settings.policy, None);
        assert_eq!(settings.bootstrap_servers, "file:9092");
    }

    #[test]
    fn defaults_without_a_file() {
        let settings = resolve(servers("k:9092"), vec![], None, || "node-7".into()).unwrap();
        assert_eq!(settings.group_id, DEFAULT_GROUP_ID);
        assert_eq!(settings.transactional_id, "linewatch-node-7");
        assert_eq!(settings.topics.alarms, "nms.alarms");
        assert_eq!(
            settings.topics.incident_changelog,
            "linewatch.incident-changelog"
        );
        assert_eq!(settings.tick_ms, DEFAULT_TICK_MS);
        assert_eq!(settings.idle_after_ms, DEFAULT_IDLE_AFTER_MS);
        assert_eq!(settings.log_format, LogFormat::Text);
        assert!(settings.client_overrides.is_empty());

        assert!(matches!(
            resolve(Layer::default(), vec![], None, || "h".into()),
            Err(ConfigError::NoBootstrapServers)
        ));
        assert!(matches!(
            resolve(servers(" "), vec![], None, || "h".into()),
            Err(ConfigError::NoBootstrapServers)
        ));
    }

    #[test]
    fn transactional_id_defaults_to_group_and_hostname() {
        let from_file_group = resolve(
            servers("k:9092"),
            vec![],
            Some(file_with(layer_with_group("lw-prod"), &[])),
            || "pod-2".into(),
        )
        .unwrap();
        assert_eq!(from_file_group.transactional_id, "lw-prod-pod-2");

        let given = Layer {
            transactional_id: Some("explicit".into()),
            ..servers("k:9092")
        };
        let settings = resolve(given, vec![], None, || panic!("not needed")).unwrap();
        assert_eq!(settings.transactional_id, "explicit");
    }

    #[test]
    fn hostname_falls_back_in_order() {
        assert_eq!(pick_hostname(Some("a".into()), Some("b\n".into())), "a");
        assert_eq!(pick_hostname(Some("  ".into()), Some("b\n".into())), "b");
        assert_eq!(pick_hostname(None, Some("b\n".into())), "b");
        assert_eq!(pick_hostname(None, Some("\n".into())), FALLBACK_HOSTNAME);
        assert_eq!(pick_hostname(None, None), FALLBACK_HOSTNAME);
    }

    #[test]
    fn command_line_properties_win_over_the_kafka_table() {
        let file = file_with(
            Layer::default(),
            &[("security.protocol", "SSL"), ("socket.timeout.ms", "1000")],
        );
        let settings = resolve(
            servers("k:9092"),
            vec![("security.protocol".into(), "SASL_SSL".into())],
            Some(file),
            || "h".into(),
        )
        .unwrap();
        assert_eq!(
            settings.client_overrides,
            [
                ("security.protocol".to_owned(), "SSL".to_owned()),
                ("socket.timeout.ms".to_owned(), "1000".to_owned()),
                ("security.protocol".to_owned(), "SASL_SSL".to_owned()),
            ]
        );
        let config = client_config(&settings.bootstrap_servers, &settings.client_overrides);
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("socket.timeout.ms"), Some("1000"));
        assert_eq!(config.get("bootstrap.servers"), Some("k:9092"));
    }
}
