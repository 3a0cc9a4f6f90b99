//! The `linewatch` command line. Only argument parsing and printing live here; the work is
//! done by the library (`linewatch::kafka::topics`, ...), which the tests call directly.
//!
//! Exit codes: 0 success, 1 the cluster differs from `topics/` (`topics check`) or a file is
//! invalid (`topics validate`, `policy check`), 2 any error (bad arguments, unreachable
//! cluster, ...).

use std::path::PathBuf;
use std::process::Command as Process;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use linewatch::alarm::{AlarmOptions, StndDefinedObject};
use linewatch::config::{self, LogFormat, RunSettings};
use linewatch::http::Token;
use linewatch::intake::{IntakeOptions, NonFaultEvents, Stream};
use linewatch::kafka::send::send_lines;
use linewatch::kafka::service::{self, HttpConfig, ServiceConfig, TopicNames};
use linewatch::kafka::topics::{self, PlanOptions, TopicAdmin};
use linewatch::kafka::{client_config, parse_client_override, ClientOverride};
use linewatch::policy::Policy;
use linewatch::tmf621::Tmf621Version;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Alarm correlation and SLA tracking for enterprise dedicated lines, on Apache Kafka.
#[derive(Debug, Parser)]
#[command(name = "linewatch", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: consume alarms, inventory, maintenance windows and ticket
    /// commands; produce fault-ticket events, circuit status, SLA figures, SLA warnings,
    /// incidents and rejections.
    ///
    /// Every input's effects and its offset are committed in one Kafka transaction.
    /// Stops cleanly on Ctrl-C or SIGTERM (finishes the transaction in flight).
    ///
    /// Each setting comes from its flag, else its environment variable, else the --config
    /// file, else its built-in default. examples/linewatch.toml shows every key.
    Run(RunArgs),
    /// Run the engine over JSON Lines files and write its output to a folder.
    ///
    /// Reads inventory.jsonl, alarms.jsonl, maintenance.jsonl and commands.jsonl from the
    /// input folder (a missing file is empty), in event-time order, and writes
    /// tickets.jsonl, circuits-status.jsonl, kpi.jsonl, warnings.jsonl, incidents.jsonl
    /// and rejections.jsonl. The same input always gives byte-identical output. A summary
    /// goes to stderr.
    Replay(ReplayArgs),
    /// Publish JSON Lines (a file, or stdin) to one of the service's input topics, each
    /// line keyed as the topic expects (circuit, alarmed object or window id).
    Send(SendArgs),
    /// Simulate a network and its NMS: publish the circuit inventory, then alarm traffic
    /// (noise, fibre cuts with their AIS storms, card failures, flapping ports, CPE
    /// power-offs, late and out-of-order alarms, planned works with and without enough
    /// notice) to Kafka at its event times, or write it all as replay files.
    ///
    /// The same seed gives the same network and traffic. To Kafka, the traffic starts
    /// now and plays in real time (--speed 1), or faster, starting --duration ago so that
    /// no alarm is from the future; Ctrl-C stops it.
    Simulate(SimulateArgs),
    /// A live terminal view of the service's output: open tickets soonest deadline first
    /// with their countdowns, incidents, circuits at risk of or past their annual limits,
    /// and the latest SLA warnings. Ctrl-C stops it.
    Watch(WatchArgs),
    /// Measure the engine alone, without Kafka, on one core: simulated traffic over a
    /// simulated network, decoded and applied as the service does, timed; and the memory
    /// the engine holds per circuit. Prints one JSON line of figures (see BENCHMARKS.md).
    Bench(BenchArgs),
    /// Measure the service on a Kafka cluster (the local broker of scripts/kafka-local
    /// will do): the raw transactional pipe, the service's throughput through its stages
    /// with exactly-once on, alarm-to-ticket latency at half that rate, and state restore
    /// time. Uses topics of its own (prefix bench-<pid>-). Prints one JSON line.
    BenchKafka(BenchKafkaArgs),
    /// Print or check an SLA policy file.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Create or check the Kafka topics described in topics/ (one TOML file per topic).
    #[command(subcommand)]
    Topics(TopicsCommand),
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Circuits in the simulated network.
    #[arg(long, default_value_t = 100_000)]
    circuits: usize,

    /// Event time of traffic to simulate.
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,

    /// Background alarm messages per second of event time.
    #[arg(long, default_value_t = 40.0)]
    noise_per_second: f64,

    /// Faults per hour of event time.
    #[arg(long, default_value_t = 600.0)]
    faults_per_hour: f64,

    /// The longest a fault lasts, e.g. 10m (each lasts from 2 minutes to this).
    #[arg(long, default_value = "4h", value_parser = humantime::parse_duration)]
    longest_fault: Duration,

    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Instead of the traffic mix, one fibre cut under each of these numbers of circuits
    /// (comma-separated, e.g. 100,1000,10000): the cost of a storm per circuit it touches.
    /// Each size gets a network of exactly that many circuits, all of them on one fibre
    /// link and sharing nothing else; the LOS on the link is raised, its tickets' timers run
    /// for an hour, the LOS clears, an hour later the written fault reports owed are sent
    /// (one command per ticket), and the tickets run on for a week to their close. Prints
    /// one JSON line per size with, per phase (raise, timers, clear, reports, close), the engine's
    /// time, the time to encode its outputs as JSON, the records and bytes written (and of
    /// them the incident records'), and each per circuit: flat per-circuit figures from
    /// 100 to 10 000 circuits mean a storm costs O(N) (BENCHMARKS.md, issue 12).
    #[arg(long, value_delimiter = ',', value_name = "N,N,...")]
    storm: Vec<usize>,

    /// With --storm: rounds over all the sizes, taking turns (in each round a size runs
    /// largest/N times, 1 to 100, each on a fresh engine); each phase's median time over
    /// all runs of a size is reported. Default 3.
    #[arg(long, value_name = "ROUNDS", requires = "storm")]
    storm_rounds: Option<usize>,
}

#[derive(Debug, Args)]
struct BenchKafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", value_name = "SERVERS")]
    bootstrap_servers: String,

    /// Circuits in the simulated network.
    #[arg(long, default_value_t = 20_000)]
    circuits: usize,

    /// Event time of traffic for the throughput runs.
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,

    /// Background alarm messages per second of event time.
    #[arg(long, default_value_t = 20.0)]
    noise_per_second: f64,

    /// Faults per hour of event time.
    #[arg(long, default_value_t = 300.0)]
    faults_per_hour: f64,

    /// Partitions per topic (co-partitioned topics stay equal).
    #[arg(long, default_value_t = 6)]
    partitions: i32,

    /// How long to publish at half the service's rate for the latency figures, in seconds.
    #[arg(long, default_value_t = 30)]
    latency_seconds: u64,

    /// Folder for the service's logs.
    #[arg(long, default_value = "target/bench", value_name = "DIR")]
    log_dir: PathBuf,

    /// Process id of the broker, when it runs on this machine (e.g. `$(pgrep -f
    /// kafka.Kafka)`): its CPU time is then measured in each phase too, so that the service
    /// and the raw pipe are compared by the CPU they and the broker spend per alarm, a
    /// figure that holds on a machine shared with other work.
    #[arg(long, value_name = "PID")]
    broker_pid: Option<u32>,

    /// Leave the bench's topics on the cluster after the run (they are deleted by default).
    #[arg(long)]
    keep_topics: bool,

    /// Then restore at scale: the circuit-state changelog, as compaction would leave it,
    /// copied under new ids until it holds this many circuits' state (e.g. 1000000), and
    /// the service started once more to time its restore. 0: not measured.
    #[arg(long, default_value_t = 0, value_name = "CIRCUITS")]
    restore_circuits: usize,

    /// A librdkafka client property for every client of the run, the raw pipe's and the
    /// service's alike, e.g. -X compression.type=lz4. Repeatable.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = linewatch::kafka::parse_client_override)]
    client_overrides: Vec<ClientOverride>,
}

#[derive(Debug, Args)]
struct WatchArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", value_name = "SERVERS")]
    bootstrap_servers: String,

    /// A librdkafka client property, e.g. -X security.protocol=SASL_SSL. Repeatable.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_client_override)]
    client_overrides: Vec<ClientOverride>,

    /// Prepended to every topic name (as for `topics create --prefix`).
    #[arg(long, env = "LINEWATCH_TOPIC_PREFIX", default_value = "")]
    topic_prefix: String,
}

#[derive(Debug, Args)]
struct SimulateArgs {
    /// Random seed: the same seed gives the same network and traffic.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Number of customer circuits.
    #[arg(long, default_value_t = 200)]
    circuits: usize,

    /// Access NEs per access ring.
    #[arg(long, default_value_t = 6)]
    ring_size: usize,

    /// How much event time to simulate, e.g. 30m, 6h, 2days.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    duration: std::time::Duration,

    /// Background (non-service-affecting) alarm messages per second of event time.
    #[arg(long, default_value_t = 2.0)]
    noise_per_second: f64,

    /// Faults (cuts, card failures, flaps, power-offs, late alarms) per hour of event time.
    #[arg(long, default_value_t = 30.0)]
    faults_per_hour: f64,

    /// Planned works per day of event time (a third of them announced too late).
    #[arg(long, default_value_t = 4.0)]
    works_per_day: f64,

    /// The longest a fault lasts, e.g. 10m (each lasts from 2 minutes to this). Shorter
    /// faults reach a steady state sooner: `scripts/soak` uses this.
    #[arg(long, default_value = "4h", value_parser = humantime::parse_duration)]
    longest_fault: Duration,

    /// Write inventory.jsonl, alarms.jsonl and maintenance.jsonl here (for `replay`)
    /// instead of publishing to Kafka. Event time then starts at --start.
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,

    /// Event time of the start, RFC 3339 (files only; Kafka starts now).
    #[arg(long, value_name = "TIME")]
    start: Option<chrono::DateTime<chrono::Utc>>,

    /// Kafka: event-time seconds played per wall-clock second (1 = real time; 0 = as
    /// fast as possible).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,

    /// Kafka bootstrap servers (not needed with --output).
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", value_name = "SERVERS")]
    bootstrap_servers: Option<String>,

    /// A librdkafka client property, e.g. -X security.protocol=SASL_SSL. Repeatable.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_client_override)]
    client_overrides: Vec<ClientOverride>,

    /// Prepended to every topic name (as for `topics create --prefix`).
    #[arg(long, env = "LINEWATCH_TOPIC_PREFIX", default_value = "")]
    topic_prefix: String,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Print the built-in default policy (DOMAIN.md's numbers), to start a file from.
    Default,
    /// Load a policy file and report the first bad key; exit 1 if it is refused.
    Check {
        /// The policy file (TOML).
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
struct PolicyArg {
    /// SLA policy file (TOML). Default: the built-in policy (`linewatch policy default`).
    #[arg(long, env = "LINEWATCH_POLICY", value_name = "FILE")]
    policy: Option<PathBuf>,
}

/// Settings of `run`. None has a clap default: an absent flag (and environment variable)
/// leaves the key to the config file, then to the built-in default (`linewatch::config`).
#[derive(Debug, Args)]
#[command(next_help_heading = "Settings (flag > environment variable > config file > default)")]
struct RunArgs {
    /// TOML config file with any of the settings below: the long flag names in snake_case
    /// (bootstrap_servers, group_id, ...), a [kafka] table of librdkafka properties (as
    /// -X) and a [topics] table to rename individual topics. Unknown keys are an error.
    /// See examples/linewatch.toml. Default: none.
    #[arg(long, env = "LINEWATCH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Kafka bootstrap servers, host:port[,host:port...]. Required: here, in the
    /// environment or as bootstrap_servers in the config file. No default.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", value_name = "SERVERS")]
    bootstrap_servers: Option<String>,

    /// A librdkafka property for every Kafka client of the service, e.g.
    /// -X security.protocol=SASL_SSL -X sasl.mechanism=SCRAM-SHA-512. Repeatable. Applied
    /// after the config file's [kafka] table, so it wins over an entry with the same key.
    /// No environment variable. Default: none (librdkafka's defaults).
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_client_override)]
    client_overrides: Vec<ClientOverride>,

    /// Prefix of the consumer groups of the service's stages. All instances of one
    /// deployment use the same value, and share the input partitions between them. File
    /// key: group_id. Default: linewatch.
    #[arg(long, env = "LINEWATCH_GROUP_ID", value_name = "ID")]
    group_id: Option<String>,

    /// Prefix of this instance's Kafka transactional ids. Must be unique per instance (two
    /// instances with the same id fence each other), and should stay the same across
    /// restarts of one instance (a restarted instance then aborts its predecessor's open
    /// transaction at once instead of waiting for it to time out). File key:
    /// transactional_id. Default: <group id>-<hostname>, the hostname from $HOSTNAME, else
    /// /etc/hostname, else "local".
    #[arg(long, env = "LINEWATCH_TRANSACTIONAL_ID", value_name = "ID")]
    transactional_id: Option<String>,

    /// Prepended to every topic name (as for `topics create --prefix`), except topics
    /// renamed in the config file's [topics] table. File key: topic_prefix. Default: none.
    #[arg(long, env = "LINEWATCH_TOPIC_PREFIX", value_name = "PREFIX")]
    topic_prefix: Option<String>,

    /// SLA policy file (TOML). In the config file (key: policy), a relative path is
    /// relative to the config file's folder. Default: the built-in policy (`linewatch
    /// policy default` prints it).
    #[arg(long, env = "LINEWATCH_POLICY", value_name = "FILE")]
    policy: Option<PathBuf>,

    /// How often live SLA timers are checked and watermarks passed between the stages, in
    /// milliseconds (at least 10). File key: tick_ms. Default: 200.
    #[arg(long, env = "LINEWATCH_TICK_MS", value_name = "MS")]
    tick_ms: Option<u64>,

    /// How long an alarm partition must be quiet and read to its end before its watermark
    /// (and with it the SLA timers and the release of held inputs) follows the wall clock
    /// instead of the alarms' event time, in milliseconds. Also about the delay from an
    /// alarm to its ticket when the network is quiet. File key: idle_after_ms. Default:
    /// 1000.
    #[arg(long, env = "LINEWATCH_IDLE_AFTER_MS", value_name = "MS")]
    idle_after_ms: Option<u64>,

    /// Log format: text, or json (one JSON object per line). RUST_LOG sets the level
    /// (default: info). File key: log_format. Default: text.
    #[arg(
        long,
        env = "LINEWATCH_LOG_FORMAT",
        value_name = "FORMAT",
        value_parser = PossibleValuesParser::new(["text", "json"])
            .map(|s| s.parse::<LogFormat>().expect("one of the possible values"))
    )]
    log_format: Option<LogFormat>,

    /// Address of the HTTP listener: health (/healthz, /readyz), Prometheus metrics
    /// (/metrics), the query API (/api/v1/..., described by /openapi.json) and the NOC view
    /// (/). Loopback unless told otherwise; any other address needs a bearer token. File
    /// key: http_listen. Default: 127.0.0.1:9464.
    #[arg(long, env = "LINEWATCH_HTTP_LISTEN", value_name = "ADDR:PORT")]
    http_listen: Option<std::net::SocketAddr>,

    /// The base URL under which other instances and callers reach this instance's
    /// listener: the query API sends callers there for the circuits this instance owns.
    /// File key: http_advertise_url. Default: http://<listen address> (the host name
    /// when listening on all addresses).
    #[arg(long, env = "LINEWATCH_HTTP_ADVERTISE_URL", value_name = "URL")]
    http_advertise_url: Option<String>,

    /// File holding the bearer token that the query API and the NOC view require. The
    /// token may also come from the environment variable LINEWATCH_HTTP_TOKEN (which wins);
    /// it is never taken as a flag, where other users of the machine could read it. With
    /// neither, the API is open, which is allowed only on a loopback listener. File key:
    /// http_token_file. Default: none.
    #[arg(long, env = "LINEWATCH_HTTP_TOKEN_FILE", value_name = "FILE")]
    http_token_file: Option<PathBuf>,

    /// Where the alarmed object of a 3GPP stndDefined alarm (TS 28.532 in VES) is read
    /// from: auto (data.href when it is the VES header's sourceName or sourceName/...,
    /// else sourceName), href (data.href as sent, else sourceName), source-name (the VES
    /// header's sourceName: the device) or system-dn (data.systemDN, the notifying
    /// system). File key: stnd_defined_object. Default: auto.
    #[arg(long, env = "LINEWATCH_STND_DEFINED_OBJECT", value_name = "RULE")]
    stnd_defined_object: Option<StndDefinedObject>,

    /// VES events that are not about faults (heartbeats, measurements, ...): drop (count
    /// them by domain in linewatch_non_fault_events_total) or reject (one record each on
    /// the rejection topic). File key: non_fault_events. Default: drop.
    #[arg(long, env = "LINEWATCH_NON_FAULT_EVENTS", value_name = "drop|reject")]
    non_fault_events: Option<NonFaultEvents>,

    /// The TMF621 version of the events on tickets.events: 4 (v4.0.0) or 5 (v5.0.1, with
    /// @type on every reference and references nested under entity and partyOrPartyRole).
    /// File key: tmf621_version. Default: 4.
    #[arg(long, env = "LINEWATCH_TMF621_VERSION", value_name = "4|5")]
    tmf621_version: Option<Tmf621Version>,
}

impl RunArgs {
    /// Reads the config file, if any, and layers the flags (with their environment
    /// variables) over it, then the defaults.
    fn settings(self) -> anyhow::Result<RunSettings> {
        let file = self
            .config
            .as_deref()
            .map(config::FileConfig::load)
            .transpose()?;
        let command_line = config::Layer {
            bootstrap_servers: self.bootstrap_servers,
            group_id: self.group_id,
            transactional_id: self.transactional_id,
            topic_prefix: self.topic_prefix,
            policy: self.policy,
            tick_ms: self.tick_ms,
            idle_after_ms: self.idle_after_ms,
            log_format: self.log_format,
            http_listen: self.http_listen,
            http_advertise_url: self.http_advertise_url,
            http_token_file: self.http_token_file,
            stnd_defined_object: self.stnd_defined_object,
            non_fault_events: self.non_fault_events,
            tmf621_version: self.tmf621_version,
        };
        Ok(config::resolve(
            command_line,
            self.client_overrides,
            file,
            config::hostname,
        )?)
    }
}

#[derive(Debug, Args)]
struct SendArgs {
    /// Which input: alarms, inventory, maintenance or commands.
    #[arg(value_enum)]
    stream: StreamArg,

    /// JSON Lines file to send; `-` or nothing reads stdin.
    file: Option<PathBuf>,

    /// Kafka bootstrap servers, host:port[,host:port...].
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", value_name = "SERVERS")]
    bootstrap_servers: String,

    /// A librdkafka client property, e.g. -X security.protocol=SSL. Repeatable.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_client_override)]
    client_overrides: Vec<ClientOverride>,

    /// Prepended to the topic name (as for `run --topic-prefix`).
    #[arg(long, env = "LINEWATCH_TOPIC_PREFIX", default_value = "")]
    topic_prefix: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StreamArg {
    Alarms,
    Inventory,
    Maintenance,
    Commands,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// Folder holding the input files.
    #[arg(long, value_name = "DIR")]
    input: PathBuf,

    /// Folder for the output files (created if needed; files are overwritten).
    #[arg(long, value_name = "DIR")]
    output: PathBuf,

    #[command(flatten)]
    policy: PolicyArg,

    /// Run the clock to this RFC 3339 time after the last input, so that later timers
    /// fire. Default: one day after the last input.
    #[arg(long, value_name = "TIME")]
    until: Option<chrono::DateTime<chrono::Utc>>,

    /// Where the alarmed object of a 3GPP stndDefined alarm is read from: auto, href,
    /// source-name or system-dn, as `run --stnd-defined-object` describes them.
    #[arg(long, value_name = "RULE", default_value_t = StndDefinedObject::Auto)]
    stnd_defined_object: StndDefinedObject,

    /// Non-fault VES events (heartbeats, measurements, ...): drop them (counted in the
    /// summary) or reject them (one line each in rejections.jsonl).
    #[arg(long, value_name = "drop|reject", default_value_t = NonFaultEvents::Drop)]
    non_fault_events: NonFaultEvents,

    /// The TMF621 version of the events in tickets.jsonl: 4 (v4.0.0) or 5 (v5.0.1), as
    /// `run --tmf621-version`.
    #[arg(long, value_name = "4|5", default_value_t = Tmf621Version::V4)]
    tmf621_version: Tmf621Version,

    /// With --figures-to: also write each circuit's SLA figures over [FROM, TO) to
    /// figures-span.jsonl, one line per circuit (in the kpi.circuits format), as of the end
    /// of the replay. Any span up to 366 days: an hour, a day, a week; one that is exactly
    /// a day, month, quarter or year of the policy's calendar is that period, with its
    /// label and limits (annual limits for a year), counted as its kpi.circuits records
    /// are (equal to one as of the same time); any other is labelled "<from>/<to>" and
    /// has no limits. RFC 3339, e.g. 2026-03-01T00:00:00+08:00.
    #[arg(long, value_name = "FROM", requires = "figures_to")]
    figures_from: Option<chrono::DateTime<chrono::Utc>>,

    /// End of the span of --figures-from (exclusive), RFC 3339.
    #[arg(long, value_name = "TO", requires = "figures_from")]
    figures_to: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// Create the topics that do not exist yet.
    ///
    /// Existing topics are left unchanged and listed (use `check` to compare them with
    /// their files). Waits until every new partition has a leader. Exits 0 when all exist.
    Create(ClusterArgs),
    /// Compare the cluster with the topic files; exit 1 if anything differs.
    ///
    /// Prints every difference: missing topics, partition counts, replication factors and
    /// each config value the files set (expected vs actual). Configs the files do not
    /// mention are not compared.
    Check(ClusterArgs),
    /// Check the topic files offline (no cluster needed).
    ///
    /// Parses every topic file and checks that the key and value schemas they name exist
    /// and are JSON. Exits 1 on the first invalid file or on any schema problem.
    Validate(TopicsDirArgs),
}

#[derive(Debug, Args)]
struct TopicsDirArgs {
    /// Directory holding one <topic>.toml per topic; schema paths are relative to it.
    #[arg(long, default_value = "topics", value_name = "DIR")]
    topics_dir: PathBuf,
}

#[derive(Debug, Args)]
struct ClusterArgs {
    #[command(flatten)]
    dir: TopicsDirArgs,

    /// Kafka bootstrap servers, host:port[,host:port...].
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", value_name = "SERVERS")]
    bootstrap_servers: String,

    /// A librdkafka client property, e.g. -X security.protocol=SASL_SSL. Repeatable; applied
    /// after --bootstrap-servers, so it wins.
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_client_override)]
    client_overrides: Vec<ClientOverride>,

    /// Prepended to every topic name, e.g. "staging." or a random test-run prefix, so that
    /// several isolated copies of the topics can share one cluster.
    #[arg(long, default_value = "", value_name = "PREFIX")]
    prefix: String,

    /// Cap every topic's replication factor (and min.insync.replicas) at N. For
    /// development clusters with fewer brokers than production (use 1 on a single
    /// broker); without it the files' production values are used as written.
    #[arg(long, value_name = "N")]
    replication_factor: Option<i32>,

    /// Timeout for each admin request, and for new topics to get partition leaders.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    timeout_secs: u64,
}

fn main() -> ExitCode {
    restart_with_allocator_settings();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            let text = format!("{error:#}");
            let source: &(dyn std::error::Error + 'static) = error.as_ref();
            eprintln!(
                "error: {}",
                linewatch::kafka::hide_config_values(&text, source)
            );
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr; RUST_LOG sets the level, else `default_level`.
fn init_logging(default_level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
}

/// The allocator's settings for the service, which mimalloc reads from its environment
/// when the process starts (before `main`): `MIMALLOC_ALLOW_THP=0` and
/// `MIMALLOC_PURGE_DELAY=-1`. By default mimalloc gives pages freed for 10 ms back to the
/// kernel, and the next batch's records fault them in again, zeroed (2 MB at a time with
/// transparent huge pages): 10-17 % of the service's CPU under load went to the kernel's
/// page clearing (`perf` of `bench-kafka`; BENCHMARKS.md, "Issue 13, second round").
/// Both settings are needed: either alone still left 9-16 % there. The service keeps
/// freed memory for reuse instead (its resident memory stays at its peak). So
/// `linewatch run` started without them starts itself again (same process, same
/// arguments) with them; a variable the user set is left as it is.
fn restart_with_allocator_settings() {
    #[cfg(all(target_os = "linux", feature = "mimalloc", not(feature = "heap-stats")))]
    {
        use std::os::unix::process::CommandExt;
        const SETTINGS: [(&str, &str); 2] =
            [("MIMALLOC_ALLOW_THP", "0"), ("MIMALLOC_PURGE_DELAY", "-1")];
        let missing: Vec<(&str, &str)> = SETTINGS
            .into_iter()
            .filter(|(var, _)| std::env::var_os(var).is_none())
            .collect();
        if missing.is_empty()
            || std::env::args_os().nth(1).as_deref() != Some(std::ffi::OsStr::new("run"))
        {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let error = Process::new(exe)
            .args(std::env::args_os().skip(1))
            .envs(missing)
            .exec();
        eprintln!("warning: running with the allocator's defaults: {error}");
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // `run` starts logging once its settings (and so the log format) are known.
    if !matches!(cli.command, Command::Run(_)) {
        init_logging("warn", LogFormat::Text);
    }
    match cli.command {
        Command::Run(args) => serve(args.settings()?),
        Command::Send(args) => send(args),
        Command::Simulate(args) => simulate(args),
        Command::Bench(args) => bench(args),
        Command::BenchKafka(args) => bench_kafka(args),
        Command::Watch(args) => {
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let signals = runtime()?;
            std::thread::spawn(move || {
                signals.block_on(async {
                    let _ = tokio::signal::ctrl_c().await;
                    flag.store(true, Ordering::Relaxed);
                });
            });
            linewatch::kafka::watch::watch(
                &args.bootstrap_servers,
                &args.client_overrides,
                &TopicNames::with_prefix(&args.topic_prefix),
                stop,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay(args) => {
            let policy = load_policy(&args.policy)?;
            let options = IntakeOptions {
                alarms: AlarmOptions {
                    stnd_defined_object: args.stnd_defined_object,
                },
                non_fault_events: args.non_fault_events,
            };
            let span = match (args.figures_from, args.figures_to) {
                (Some(from), Some(to)) => {
                    if to <= from {
                        anyhow::bail!("--figures-to must be after --figures-from");
                    }
                    if to - from > linewatch::sla::MAX_SPAN {
                        anyhow::bail!(
                            "--figures-from and --figures-to may be at most {} days apart",
                            linewatch::sla::MAX_SPAN.num_days()
                        );
                    }
                    Some(linewatch::sla::Span::new(from, to))
                }
                _ => None,
            };
            let options = linewatch::replay::ReplayOptions {
                until: args.until,
                intake: options,
                tmf621: args.tmf621_version,
                figures_over: span,
            };
            let summary =
                linewatch::replay::replay_with(&args.input, &args.output, policy, &options)
                    .context("replay failed")?;
            eprintln!(
                "replay: {} inputs, {} rejected, {} non-fault events dropped, {} tickets opened, {} ticket events, {} SLA reminders, {} status events, {} warnings, {} KPI records, {} incident events; event time {} to {}; output in {}",
                summary.inputs,
                summary.rejected,
                summary.non_fault_dropped,
                summary.tickets_opened,
                summary.ticket_events,
                summary.reminders,
                summary.status_events,
                summary.warnings,
                summary.figures,
                summary.incident_events,
                summary.first_event.map_or("-".into(), |t| t.to_rfc3339()),
                summary.last_event.map_or("-".into(), |t| t.to_rfc3339()),
                args.output.display()
            );
            if let Some(span) = span {
                eprintln!(
                    "replay: each circuit's figures over {} to {} in {}",
                    span.start.to_rfc3339(),
                    span.end.to_rfc3339(),
                    args.output
                        .join(linewatch::replay::SPAN_FIGURES_FILE)
                        .display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Default) => {
            print!("{}", linewatch::policy::DEFAULT_POLICY_TOML);
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Check { file }) => match Policy::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                println!("{e}");
                Ok(ExitCode::from(1))
            }
        },
        Command::Topics(TopicsCommand::Validate(args)) => validate(&args),
        Command::Topics(TopicsCommand::Create(args)) => {
            let (admin, plans) = prepare(&args)?;
            let report = runtime()?.block_on(admin.create(&plans))?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Topics(TopicsCommand::Check(args)) => {
            let (admin, plans) = prepare(&args)?;
            let report = runtime()?.block_on(admin.check(&plans))?;
            println!("{report}");
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn validate(args: &TopicsDirArgs) -> anyhow::Result<ExitCode> {
    let specs = match topics::load_dir(&args.topics_dir) {
        Ok(specs) => specs,
        Err(error) => {
            println!("invalid: {error}");
            return Ok(ExitCode::from(1));
        }
    };
    let problems = topics::verify_schemas(&args.topics_dir, &specs);
    for problem in &problems {
        println!("schema problem: {problem}");
    }
    println!(
        "{} topic files, {} schema problems",
        specs.len(),
        problems.len()
    );
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn prepare(args: &ClusterArgs) -> anyhow::Result<(TopicAdmin, Vec<topics::TopicPlan>)> {
    let specs = topics::load_dir(&args.dir.topics_dir)?;
    let options = PlanOptions::new(args.prefix.clone(), args.replication_factor)?;
    let plans = topics::plan_all(&specs, &options)?;
    let config = client_config(&args.bootstrap_servers, &args.client_overrides);
    let admin = TopicAdmin::new(&config, Duration::from_secs(args.timeout_secs))?;
    Ok((admin, plans))
}

fn simulate(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    use linewatch::simulate::{topology, traffic, SimConfig, SimStream};
    let duration = chrono::Duration::from_std(args.duration).context("--duration is too long")?;
    let now = chrono::Utc::now();
    let start = match (&args.output, args.start) {
        (Some(_), Some(start)) => start,
        (Some(_), None) => now - duration,
        // Faster than real time: start in the past so that no alarm is from the future.
        (None, _) if args.speed != 1.0 => now - duration,
        (None, _) => now,
    };
    let cfg = SimConfig {
        seed: args.seed,
        circuits: args.circuits,
        ring_size: args.ring_size,
        start,
        duration,
        noise_per_second: args.noise_per_second,
        faults_per_hour: args.faults_per_hour,
        works_per_day: args.works_per_day,
        longest_fault: chrono::Duration::from_std(args.longest_fault)
            .context("--longest-fault is too long")?,
    };
    let topo = topology(&cfg);
    let records = traffic(&cfg, &topo);
    if let Some(dir) = &args.output {
        use std::io::Write;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let open = |name: &str| -> anyhow::Result<std::io::BufWriter<std::fs::File>> {
            let path = dir.join(name);
            let f = std::fs::File::create(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(std::io::BufWriter::new(f))
        };
        let mut inventory = open("inventory.jsonl")?;
        for (_, c) in &topo.circuits {
            writeln!(inventory, "{c}")?;
        }
        let mut alarms = open("alarms.jsonl")?;
        let mut works = open("maintenance.jsonl")?;
        for r in &records {
            match r.stream {
                SimStream::Alarms => writeln!(alarms, "{}", r.value)?,
                SimStream::Maintenance => writeln!(works, "{}", r.value)?,
            }
        }
        inventory.flush()?;
        alarms.flush()?;
        works.flush()?;
        eprintln!(
            "wrote {} circuits and {} records to {}",
            topo.circuits.len(),
            records.len(),
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let Some(bootstrap) = args.bootstrap_servers.as_deref() else {
        anyhow::bail!("give --bootstrap-servers (or KAFKA_BOOTSTRAP_SERVERS), or --output DIR");
    };
    let names = TopicNames::with_prefix(&args.topic_prefix);
    let publisher = linewatch::kafka::send::Publisher::new(bootstrap, &args.client_overrides)?;
    for (id, c) in &topo.circuits {
        publisher.send(&names.inventory, Some(id), c.to_string().as_bytes())?;
    }
    publisher.flush()?;
    eprintln!(
        "published {} circuits to {}; playing {} records over {} of event time at speed {}",
        topo.circuits.len(),
        names.inventory,
        records.len(),
        humantime::format_duration(args.duration),
        args.speed
    );
    let wall_start = std::time::Instant::now();
    let mut sent = 0u64;
    for r in &records {
        if args.speed > 0.0 {
            let offset = (r.publish_at - start).num_milliseconds().max(0) as f64 / args.speed;
            let due = wall_start + Duration::from_millis(offset as u64);
            if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let topic = match r.stream {
            SimStream::Alarms => &names.alarms,
            SimStream::Maintenance => &names.maintenance,
        };
        publisher.send(topic, Some(&r.key), r.value.to_string().as_bytes())?;
        sent += 1;
        if sent % 1000 == 0 {
            eprintln!("sent {sent} of {}", records.len());
        }
    }
    publisher.flush()?;
    eprintln!("sent {sent} records");
    Ok(ExitCode::SUCCESS)
}

/// The system allocator, counting the bytes it holds, so that `bench` can tell how much
/// memory the engine keeps per circuit (resident size alone cannot: freed memory stays
/// resident and is reused). One relaxed atomic add per allocation: only in builds with the
/// `heap-stats` feature, never in the service's default build.
#[cfg(feature = "heap-stats")]
struct Counting;

#[cfg(feature = "heap-stats")]
static HELD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Bytes held on the heap, in a `heap-stats` build.
fn held_bytes() -> Option<usize> {
    #[cfg(feature = "heap-stats")]
    {
        Some(HELD.load(Ordering::Relaxed))
    }
    #[cfg(not(feature = "heap-stats"))]
    {
        None
    }
}

#[cfg(feature = "heap-stats")]
// SAFETY: every call is passed to the system allocator unchanged; only a counter is kept.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        HELD.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        HELD.fetch_add(new, Ordering::Relaxed);
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[cfg(feature = "heap-stats")]
#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[cfg(all(feature = "mimalloc", not(feature = "heap-stats")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(
    feature = "jemalloc",
    not(feature = "mimalloc"),
    not(feature = "heap-stats")
))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Resident memory of this process, from /proc (Linux), in bytes.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if !args.storm.is_empty() {
        return bench_storm(&args);
    }
    use linewatch::engine::{Engine, Input};
    use linewatch::intake::decode;
    use linewatch::simulate::{topology, traffic, SimConfig, SimStream};
    let start: chrono::DateTime<chrono::Utc> = "2026-03-02T00:00:00Z".parse()?;
    let cfg = SimConfig {
        seed: args.seed,
        circuits: args.circuits,
        start,
        duration: chrono::Duration::from_std(args.duration).context("--duration is too long")?,
        noise_per_second: args.noise_per_second,
        faults_per_hour: args.faults_per_hour,
        longest_fault: chrono::Duration::from_std(args.longest_fault)
            .context("--longest-fault is too long")?,
        ..SimConfig::default()
    };
    let topo = topology(&cfg);
    let mut records = traffic(&cfg, &topo);
    records.sort_by_key(|r| r.event_time);
    // Serialized as the NMS would send them, so that decoding is part of the cost.
    let inventory: Vec<(String, Vec<u8>)> = topo
        .circuits
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string().into_bytes()))
        .collect();
    let alarms: Vec<Vec<u8>> = records
        .iter()
        .filter(|r| r.stream == SimStream::Alarms)
        .map(|r| r.value.to_string().into_bytes())
        .collect();
    drop(records);
    drop(topo);

    let mut engine = Engine::new(Policy::builtin());
    if held_bytes().is_none() {
        eprintln!(
            "bench: heap figures need a build with `--features heap-stats` (they are null here)"
        );
    }
    let before = held_bytes();
    let loaded = std::time::Instant::now();
    for (key, bytes) in &inventory {
        for input in decode(Stream::Inventory, Some(key.as_bytes()), Some(bytes))
            .into_iter()
            .flatten()
        {
            let _ = engine.handle(input, start);
        }
    }
    let load_seconds = loaded.elapsed().as_secs_f64();
    let after = held_bytes();
    drop(inventory);

    let mut outputs = 0u64;
    let mut rejected = 0u64;
    let timed = std::time::Instant::now();
    let mut clock = start;
    for bytes in &alarms {
        for result in decode(Stream::Alarms, None, Some(bytes)) {
            match result {
                Ok(input) => {
                    if let Input::Alarm(a) = &input {
                        clock = clock.max(a.event_time);
                    }
                    outputs += engine.advance(clock).len() as u64;
                    match engine.handle(input, clock) {
                        Ok(out) => outputs += out.len() as u64,
                        Err(_) => rejected += 1,
                    }
                }
                Err(_) => rejected += 1,
            }
        }
    }
    let seconds = timed.elapsed().as_secs_f64();
    let heap = |now: Option<usize>| Some(now?.saturating_sub(before?));
    let figures = serde_json::json!({
        "circuits": args.circuits,
        "alarms": alarms.len(),
        "rejected": rejected,
        "outputs": outputs,
        "engineSeconds": seconds,
        "alarmsPerSecondPerCore": alarms.len() as f64 / seconds.max(1e-9),
        "inventoryLoadSeconds": load_seconds,
        "engineHeapAfterInventoryBytes": heap(after),
        "bytesPerCircuit": heap(after).map(|b| b as f64 / args.circuits.max(1) as f64),
        "engineHeapAfterTrafficBytes": heap(held_bytes()),
        "peakRssBytes": rss_bytes(),
    });
    println!("{figures}");
    Ok(ExitCode::SUCCESS)
}

/// The phases of `bench --storm`, in order.
const STORM_PHASES: [&str; 5] = ["raise", "timers", "clear", "reports", "close"];

/// What one phase of a storm wrote, and how long it took.
#[derive(Debug, Clone, Copy, Default)]
struct StormPhase {
    engine_seconds: f64,
    encode_seconds: f64,
    records: u64,
    bytes: u64,
    incident_records: u64,
    incident_bytes: u64,
}

impl StormPhase {
    /// Encode `outputs` as the replay and the service do (key and JSON value), timed.
    fn encoded(engine_seconds: f64, outputs: &[linewatch::engine::Output]) -> Self {
        let mut phase = StormPhase {
            engine_seconds,
            ..StormPhase::default()
        };
        let started = Instant::now();
        for o in outputs {
            let bytes = (o.key().len() + o.to_json().map_or(0, |v| v.len())) as u64;
            phase.records += 1;
            phase.bytes += bytes;
            if let linewatch::engine::Output::Incident(_) = o {
                phase.incident_records += 1;
                phase.incident_bytes += bytes;
            }
        }
        phase.encode_seconds = started.elapsed().as_secs_f64();
        phase
    }

    fn json(&self, circuits: usize) -> serde_json::Value {
        let n = circuits.max(1) as f64;
        serde_json::json!({
            "engineSeconds": self.engine_seconds,
            "encodeSeconds": self.encode_seconds,
            "records": self.records,
            "bytes": self.bytes,
            "incidentRecords": self.incident_records,
            "incidentBytes": self.incident_bytes,
            "nsPerCircuit": (self.engine_seconds + self.encode_seconds) * 1e9 / n,
            "engineNsPerCircuit": self.engine_seconds * 1e9 / n,
            "recordsPerCircuit": self.records as f64 / n,
            "bytesPerCircuit": self.bytes as f64 / n,
        })
    }
}

/// One storm (see [`BenchArgs`]'s `storm`): the engine loaded with `inventory`, the cut
/// raised at `t0`, its timers run to `cleared`, cleared, an hour later the written fault
/// reports sent (one `written_report_sent` command per ticket that owes one, each its own
/// input, as the ticketing system sends them), and the timers run to `closed`; each phase
/// timed and encoded. Also returns the most circuits down in an incident record of the
/// raise, and the number of report commands.
fn storm_run(
    inventory: &[(String, Vec<u8>)],
    (raise, clear): (&[u8], &[u8]),
    (t0, cleared, closed): (
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    ),
) -> ([StormPhase; STORM_PHASES.len()], usize, usize) {
    use linewatch::engine::{Engine, Output};
    use linewatch::intake::decode;
    let mut engine = Engine::new(Policy::builtin());
    for (key, bytes) in inventory {
        for input in decode(Stream::Inventory, Some(key.as_bytes()), Some(bytes))
            .into_iter()
            .flatten()
        {
            let _ = engine.handle(input, t0);
        }
    }
    let input = |engine: &mut Engine, stream, bytes: &[u8], now| {
        let mut out = engine.advance(now);
        for input in decode(stream, None, Some(bytes)).into_iter().flatten() {
            out.extend(engine.handle(input, now).unwrap_or_default());
        }
        out
    };
    let reported = cleared + chrono::Duration::hours(1);
    let mut reports: Vec<Vec<u8>> = Vec::new();
    let mut phases = [StormPhase::default(); STORM_PHASES.len()];
    let mut down = 0;
    for (i, phase) in phases.iter_mut().enumerate() {
        let started = Instant::now();
        let out = match i {
            0 => input(&mut engine, Stream::Alarms, raise, t0),
            1 => engine.advance(cleared),
            2 => input(&mut engine, Stream::Alarms, clear, cleared),
            3 => {
                let mut out = engine.advance(reported);
                for cmd in &reports {
                    out.extend(input(&mut engine, Stream::Commands, cmd, reported));
                }
                out
            }
            _ => engine.advance(closed),
        };
        let seconds = started.elapsed().as_secs_f64();
        *phase = StormPhase::encoded(seconds, &out);
        for o in &out {
            match o {
                Output::Incident(inc) if i == 0 => down = down.max(inc.down_count),
                Output::Ticket(ev) if i == 2 => {
                    let ticket = ev.ticket();
                    if ticket.sla.written_report_by.is_some() {
                        let command = serde_json::json!({
                            "ticketId": ticket.id,
                            "circuitId": o.key(),
                            "action": "written_report_sent",
                            "at": reported.to_rfc3339(),
                        });
                        reports.push(command.to_string().into_bytes());
                    }
                }
                _ => {}
            }
        }
    }
    (phases, down, reports.len())
}

/// `bench --storm`: one fibre cut over networks of the given sizes (see [`BenchArgs`]).
/// The sizes take turns, round after round, so that whatever else the machine does
/// weighs on all of them alike; in a round a size runs `largest / N` times (1 to 100).
fn bench_storm(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    use linewatch::simulate::{storm, storm_cut};
    let t0: chrono::DateTime<chrono::Utc> = "2026-03-02T08:00:00Z".parse()?;
    let cleared = t0 + chrono::Duration::hours(1);
    let closed = cleared + chrono::Duration::days(7);
    let (raise, clear) = storm_cut(t0, cleared);
    let (raise, clear) = (
        raise.to_string().into_bytes(),
        clear.to_string().into_bytes(),
    );
    let largest = args.storm.iter().copied().max().unwrap_or(1).max(1);
    let rounds = args.storm_rounds.unwrap_or(3).max(1);
    let inventories: Vec<Vec<(String, Vec<u8>)>> = args
        .storm
        .iter()
        .map(|&n| {
            storm(args.seed, n)
                .into_iter()
                .map(|(k, v)| (k, v.to_string().into_bytes()))
                .collect()
        })
        .collect();
    let mut runs: Vec<Vec<[StormPhase; STORM_PHASES.len()]>> = vec![Vec::new(); args.storm.len()];
    let mut down = vec![0; args.storm.len()];
    let mut reports = vec![0; args.storm.len()];
    for round in 0..rounds {
        for (s, &n) in args.storm.iter().enumerate() {
            for _ in 0..(largest / n.max(1)).clamp(1, 100) {
                let (phases, d, r) =
                    storm_run(&inventories[s], (&raise, &clear), (t0, cleared, closed));
                runs[s].push(phases);
                down[s] = d;
                reports[s] = r;
            }
        }
        eprintln!("bench: storm round {} of {rounds} done", round + 1);
    }
    for (s, &n) in args.storm.iter().enumerate() {
        let runs = &runs[s];
        let median = |phase: usize, f: fn(&StormPhase) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(|r| f(&r[phase])).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        let mut total = StormPhase::default();
        let mut phases = Vec::with_capacity(STORM_PHASES.len());
        for (i, name) in STORM_PHASES.iter().enumerate() {
            let mut p = runs.last().map(|r| r[i]).unwrap_or_default();
            p.engine_seconds = median(i, |p| p.engine_seconds);
            p.encode_seconds = median(i, |p| p.encode_seconds);
            total.engine_seconds += p.engine_seconds;
            total.encode_seconds += p.encode_seconds;
            total.records += p.records;
            total.bytes += p.bytes;
            total.incident_records += p.incident_records;
            total.incident_bytes += p.incident_bytes;
            let mut figures = p.json(n);
            figures["phase"] = serde_json::json!(name);
            phases.push(figures);
        }
        let figures = serde_json::json!({
            "stormCircuits": n,
            "circuitsDown": down[s],
            "reportCommands": reports[s],
            "runs": runs.len(),
            "phases": phases,
            "total": total.json(n),
        });
        println!("{figures}");
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_kafka(args: BenchKafkaArgs) -> anyhow::Result<ExitCode> {
    use linewatch::kafka::bench::{committed_and_end_with, offsets_probe, raw_pipe, start_service};
    use linewatch::kafka::send::Publisher;
    use linewatch::simulate::{topology, traffic, SimConfig, SimStream};
    use std::collections::HashMap;
    let b = args.bootstrap_servers.as_str();
    let x: &[ClientOverride] = &args.client_overrides;
    let prefix = format!("bench-{}-", std::process::id());
    let group = format!("bench-{}", std::process::id());
    std::fs::create_dir_all(&args.log_dir)?;

    // Topics.
    let specs = topics::load_dir(std::path::Path::new("topics"))?;
    let mut plans = topics::plan_all(&specs, &PlanOptions::new(&prefix, Some(1))?)?;
    for p in &mut plans {
        p.partitions = p.partitions.min(args.partitions);
    }
    let mut raw_plan = plans
        .iter()
        .find(|p| p.name.ends_with("nms.alarms"))
        .cloned()
        .context("no nms.alarms topic in topics/")?;
    raw_plan.name = format!("{prefix}bench.raw");
    plans.push(raw_plan);
    let admin = TopicAdmin::new(&client_config(b, x), Duration::from_secs(60))?;
    runtime()?.block_on(admin.create(&plans))?;
    let names = TopicNames::with_prefix(&prefix);

    // Input: the network and a throughput load of alarms, in the past.
    let duration = chrono::Duration::from_std(args.duration).context("--duration is too long")?;
    let now = chrono::Utc::now();
    let cfg = SimConfig {
        seed: 7,
        circuits: args.circuits,
        start: now - duration - chrono::Duration::hours(2),
        duration,
        noise_per_second: args.noise_per_second,
        faults_per_hour: args.faults_per_hour,
        ..SimConfig::default()
    };
    let topo = topology(&cfg);
    let mut load = traffic(&cfg, &topo);
    load.retain(|r| r.stream == SimStream::Alarms);
    let publisher = Publisher::new(b, x)?;
    for (id, c) in &topo.circuits {
        publisher.send(&names.inventory, Some(id), c.to_string().as_bytes())?;
    }
    for r in &load {
        publisher.send(&names.alarms, Some(&r.key), r.value.to_string().as_bytes())?;
    }
    publisher.flush()?;
    let n = load.len() as u64;
    eprintln!(
        "bench: {} circuits, {n} alarms on {}",
        args.circuits, names.alarms
    );

    // 1. The raw pipe.
    let cpu = |pid: Option<u32>| -> f64 {
        pid.map_or(0.0, |p| {
            linewatch::kafka::bench::thread_cpu_seconds(p)
                .values()
                .sum()
        })
    };
    let (raw_cpu_before, raw_broker_before) = (cpu(Some(std::process::id())), cpu(args.broker_pid));
    let raw_seconds = raw_pipe(
        b,
        x,
        &names.alarms,
        &format!("{prefix}bench.raw"),
        &format!("{group}-raw"),
        n,
    )?;
    let raw_rate = n as f64 / raw_seconds.max(1e-9);
    let raw_cpu = cpu(Some(std::process::id())) - raw_cpu_before;
    let raw_broker_cpu = cpu(args.broker_pid) - raw_broker_before;
    eprintln!("bench: raw pipe {n} in {raw_seconds:.2} s = {raw_rate:.0}/s");

    // 2. The service, through both stages.
    let mut service = start_service(b, x, &prefix, &group, &args.log_dir.join("service.log"))?;
    let fanout_probe = offsets_probe(b, x, &format!("{group}-fanout"))?;
    let circuits_probe = offsets_probe(b, x, &format!("{group}-circuits"))?;
    let mut started = None;
    let mut cpu_before = std::collections::BTreeMap::new();
    let mut broker_before = 0.0;
    let mut last = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let (fan, end) = committed_and_end_with(&fanout_probe, &names.alarms)?;
        let (cir, cir_end) = committed_and_end_with(&circuits_probe, &names.impacts)?;
        if fan > 0 && started.is_none() {
            started = Some(Instant::now());
            cpu_before = linewatch::kafka::bench::thread_cpu_seconds(service.id());
            broker_before = cpu(args.broker_pid);
        }
        if (fan, cir) != last {
            last = (fan, cir);
        }
        // Done when stage 1 has committed every alarm and stage 2 is at the end of the
        // impacts (transaction markers aside: at most a couple per partition).
        let impacts_done = cir_end - cir <= 2 * i64::from(args.partitions);
        if fan >= end && impacts_done && started.is_some() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the service did not finish in 15 minutes"
        );
    }
    let service_seconds = started.map_or(0.0, |s| s.elapsed().as_secs_f64()).max(1e-9);
    let service_cpu = linewatch::kafka::bench::cpu_used(
        &cpu_before,
        &linewatch::kafka::bench::thread_cpu_seconds(service.id()),
    );
    let service_cpu_total: f64 = service_cpu.values().sum();
    let service_broker_cpu = cpu(args.broker_pid) - broker_before;
    let service_rate = n as f64 / service_seconds;
    eprintln!("bench: service {n} in {service_seconds:.2} s = {service_rate:.0}/s, {service_cpu_total:.2} s of CPU ({:.1} µs per alarm)", service_cpu_total * 1e6 / n.max(1) as f64);
    // What the service wrote for those alarms, internal topics and changelogs included
    // (the last stage may still be writing incidents; counted as it stands).
    let (_, input_bytes) = linewatch::kafka::bench::written(b, x, &[&names.alarms])?;
    let out_topics = [
        &names.tickets,
        &names.reminders,
        &names.line_status,
        &names.warnings,
        &names.figures,
        &names.incidents,
        &names.rejected,
        &names.impacts,
        &names.incident_facts,
        &names.alarms_repartition,
        &names.commands_repartition,
        &names.fanout_changelog,
        &names.circuit_changelog,
        &names.incident_changelog,
    ];
    let out_topics: Vec<&str> = out_topics.iter().map(|t| t.as_str()).collect();
    let per_topic = linewatch::kafka::bench::written_per_topic(b, x, &out_topics)?;
    let (mut out_records, mut out_bytes) = (0u64, 0u64);
    for (topic, (records, bytes)) in &per_topic {
        out_records += records;
        out_bytes += bytes;
        eprintln!(
            "bench: {:>9} records {:>12} bytes  {}",
            records,
            bytes,
            topic.strip_prefix(&prefix).unwrap_or(topic)
        );
    }
    eprintln!(
        "bench: {out_records} records, {out_bytes} bytes written for {input_bytes} bytes of alarms"
    );

    // 3. Latency at half that rate: fresh alarms, paced; a ticketing-system reader sees
    // each ticket open.
    let latency_cfg = SimConfig {
        seed: 8,
        start: chrono::Utc::now() - chrono::Duration::hours(1),
        duration: chrono::Duration::hours(1),
        ..cfg.clone()
    };
    let mut live = traffic(&latency_cfg, &topo);
    live.retain(|r| r.stream == SimStream::Alarms);
    // Ids of their own: the simulator numbers its alarms from 1 in every run, and a
    // ticket of the throughput traffic must not be timed from a latency alarm.
    for r in &mut live {
        if let Some(id) = r.value["id"].as_str().map(|id| format!("lat-{id}")) {
            r.value["id"] = serde_json::Value::String(id);
        }
    }
    let rate = (service_rate / 2.0).max(1.0);
    let count = ((rate * args.latency_seconds as f64) as usize).min(live.len());
    live.truncate(count);
    let reader: rdkafka::consumer::BaseConsumer = client_config(b, x)
        .set("group.id", format!("{group}-reader"))
        .set("auto.offset.reset", "latest")
        .set("isolation.level", "read_committed")
        .create()?;
    rdkafka::consumer::Consumer::subscribe(&reader, &[names.tickets.as_str()])?;
    let warm = Instant::now();
    while rdkafka::consumer::Consumer::assignment(&reader)?.count() == 0
        && warm.elapsed() < Duration::from_secs(30)
    {
        let _ = reader.poll(Duration::from_millis(100));
    }
    let sent_at = std::sync::Arc::new(std::sync::Mutex::new(HashMap::<String, Instant>::new()));
    let sender = {
        let sent_at = sent_at.clone();
        let live = live.clone();
        let alarms = names.alarms.clone();
        let b = b.to_string();
        std::thread::spawn(move || -> anyhow::Result<()> {
            let publisher = Publisher::new(&b, &[])?;
            let t0 = Instant::now();
            for (i, r) in live.iter().enumerate() {
                let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                if r.value["state"] == "raised" {
                    if let (Ok(mut m), Some(id)) = (sent_at.lock(), r.value["id"].as_str()) {
                        m.insert(format!("sim-nms:{id}"), Instant::now());
                    }
                }
                publisher.send(&alarms, Some(&r.key), r.value.to_string().as_bytes())?;
            }
            publisher.flush()?;
            Ok(())
        })
    };
    let mut latencies: Vec<f64> = Vec::new();
    // Tickets per root alarm, with the slowest latency of each: a storm opens many
    // tickets from one alarm, and they become visible together.
    let mut by_root: HashMap<String, (usize, f64)> = HashMap::new();
    let until = Instant::now() + Duration::from_secs(args.latency_seconds + 15);
    while Instant::now() < until {
        let Some(Ok(msg)) = reader.poll(Duration::from_millis(50)) else {
            continue;
        };
        use rdkafka::message::Message;
        let Some(v) = msg
            .payload()
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
        else {
            continue;
        };
        if v["slaEvent"]["kind"] != "opened" {
            continue;
        }
        let key = v["event"]["troubleTicket"]["rootCause"]["alarmKey"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if let Some(t) = sent_at.lock().ok().and_then(|m| m.get(&key).copied()) {
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            latencies.push(ms);
            let entry = by_root.entry(key).or_insert((0, 0.0));
            entry.0 += 1;
            entry.1 = entry.1.max(ms);
        }
    }
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("the latency sender panicked"))??;
    latencies.sort_by(f64::total_cmp);
    let mut storms: Vec<(String, usize, f64)> =
        by_root.into_iter().map(|(k, (n, ms))| (k, n, ms)).collect();
    storms.sort_by(|a, b| b.2.total_cmp(&a.2));
    storms.truncate(5);
    let pct = |q: f64| -> Option<f64> {
        if latencies.is_empty() {
            return None;
        }
        let i = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies.get(i).copied()
    };

    // 4. Restore: stop the service, start it again, read how long its state took.
    let _ = Process::new("kill")
        .args(["-TERM", &service.id().to_string()])
        .status();
    let _ = service.wait();
    let restore_log = args.log_dir.join("service-restart.log");
    let mut again = start_service(b, x, &prefix, &group, &restore_log)?;
    let mut restored = Vec::new();
    let until = Instant::now() + Duration::from_secs(300);
    while restored.len() < 3 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
        let text = std::fs::read_to_string(&restore_log).unwrap_or_default();
        restored = text
            .lines()
            .filter(|l| l.contains("state restored"))
            .map(str::to_string)
            .collect();
    }
    let _ = Process::new("kill")
        .args(["-TERM", &again.id().to_string()])
        .status();
    let _ = again.wait();
    let field = |line: &str, name: &str| -> Option<f64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
    };
    let circuits_restore = restored.iter().find(|l| l.contains("stage=\"circuits\""));
    let restore_records = circuits_restore.and_then(|l| field(l, "records"));
    let restore_seconds = circuits_restore.and_then(|l| field(l, "seconds"));

    // 5. Restore at scale (--restore-circuits): the same, from a changelog of that many
    // circuits' state with nothing superseded in it.
    let mut at_scale = serde_json::Value::Null;
    if args.restore_circuits > 0 {
        let (circuits, records) = linewatch::kafka::bench::grow_circuit_changelog(
            b,
            x,
            &names.circuit_changelog,
            args.restore_circuits,
        )
        .map_err(|e| anyhow::anyhow!("cannot grow the circuit changelog: {e}"))?;
        let log = args.log_dir.join("service-restore-at-scale.log");
        let mut service = start_service(b, x, &prefix, &group, &log)?;
        let mut line = None;
        let until = Instant::now() + Duration::from_secs(900);
        while line.is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(200));
            line = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .find(|l| l.contains("state restored") && l.contains("stage=\"circuits\""))
                .map(str::to_string);
        }
        let peak_rss_mib = linewatch::kafka::bench::rss_mib(service.id());
        let _ = Process::new("kill")
            .args(["-TERM", &service.id().to_string()])
            .status();
        let _ = service.wait();
        let line = line.ok_or_else(|| {
            anyhow::anyhow!(
                "no circuit-stage restore within 15 minutes (see {})",
                log.display()
            )
        })?;
        at_scale = serde_json::json!({
            "circuits": circuits,
            "recordsAdded": records,
            "records": field(&line, "records"),
            "seconds": field(&line, "seconds"),
            "residentMiB": peak_rss_mib,
        });
    }

    let figures = serde_json::json!({
        "circuits": args.circuits,
        "partitions": args.partitions,
        "alarms": n,
        "rawPipeSeconds": raw_seconds,
        "rawPipeAlarmsPerSecond": raw_rate,
        "serviceSeconds": service_seconds,
        "serviceAlarmsPerSecond": service_rate,
        "ratioToRawPipe": service_rate / raw_rate,
        "writtenRecordsPerAlarm": out_records as f64 / n.max(1) as f64,
        "serviceCpuSeconds": service_cpu_total,
        "serviceCpuMicrosPerAlarm": service_cpu_total * 1e6 / n.max(1) as f64,
        "serviceCpuSecondsByThread": service_cpu,
        "rawPipeCpuMicrosPerAlarm": raw_cpu * 1e6 / n.max(1) as f64,
        "brokerCpuMicrosPerAlarmRawPipe": args.broker_pid.map(|_| raw_broker_cpu * 1e6 / n.max(1) as f64),
        "brokerCpuMicrosPerAlarmService": args.broker_pid.map(|_| service_broker_cpu * 1e6 / n.max(1) as f64),
        "cpuRatioToRawPipe": args.broker_pid.map(|_| (raw_cpu + raw_broker_cpu) / (service_cpu_total + service_broker_cpu).max(1e-9)),
        "writtenBytesPerInputByte": out_bytes as f64 / input_bytes.max(1) as f64,
        "latencyRate": rate,
        "latencyTickets": latencies.len(),
        "latencyP50Ms": pct(0.50),
        "latencyP99Ms": pct(0.99),
        "latencyP999Ms": pct(0.999),
        "slowestRootAlarms": storms
            .iter()
            .map(|(k, n, ms)| serde_json::json!({ "alarm": k, "tickets": n, "maxMs": ms }))
            .collect::<Vec<_>>(),
        "restoreCircuitRecords": restore_records,
        "restoreSeconds": restore_seconds,
        "restoreSecondsPerMillionCircuits": restore_seconds.map(|s| s * 1e6 / args.circuits.max(1) as f64),
        "restoreAtScale": at_scale,
    });
    println!("{figures}");
    // The bench's topics hold a gigabyte or more per run: left behind, they would weigh on
    // the broker (its log cleaner, its memory) in every later run.
    if !args.keep_topics {
        let names: Vec<String> = plans.iter().map(|p| p.name.clone()).collect();
        runtime()?.block_on(admin.delete(&names))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    let names = TopicNames::with_prefix(&args.topic_prefix);
    let (stream, topic) = match args.stream {
        StreamArg::Alarms => (Stream::Alarms, names.alarms),
        StreamArg::Inventory => (Stream::Inventory, names.inventory),
        StreamArg::Maintenance => (Stream::Maintenance, names.maintenance),
        StreamArg::Commands => (Stream::Commands, names.commands),
    };
    let sent = match args.file.as_deref().filter(|p| p.as_os_str() != "-") {
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            send_lines(
                &args.bootstrap_servers,
                &args.client_overrides,
                &topic,
                stream,
                std::io::BufReader::new(file),
            )?
        }
        None => send_lines(
            &args.bootstrap_servers,
            &args.client_overrides,
            &topic,
            stream,
            std::io::stdin().lock(),
        )?,
    };
    eprintln!("sent {sent} records to {topic}");
    Ok(ExitCode::SUCCESS)
}

fn load_policy(arg: &PolicyArg) -> anyhow::Result<Policy> {
    match &arg.policy {
        Some(path) => Ok(Policy::load(path)?),
        None => Ok(Policy::builtin()),
    }
}

/// `linewatch run`: the service loop on this thread, signals watched on another.
fn serve(settings: RunSettings) -> anyhow::Result<ExitCode> {
    init_logging("info", settings.log_format);
    let token = http_token(settings.http_token_file.as_deref())?;
    linewatch::http::check_exposure(settings.http_listen, token.as_ref())
        .map_err(anyhow::Error::msg)?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(linewatch::telemetry::LATENCY_BUCKETS)
        .context("histogram buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    linewatch::telemetry::describe();
    let policy = match &settings.policy {
        Some(path) => Policy::load(path)?,
        None => Policy::builtin(),
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    let flag = shutdown.clone();
    let signals = runtime()?;
    std::thread::spawn(move || {
        signals.block_on(async {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            tracing::info!("shutdown requested; finishing the transaction in flight");
            flag.store(true, Ordering::Relaxed);
        });
    });
    tracing::info!(
        group_id = %settings.group_id,
        transactional_id = %settings.transactional_id,
        "starting"
    );
    let config = ServiceConfig {
        bootstrap_servers: settings.bootstrap_servers,
        client_overrides: settings.client_overrides,
        group_id: settings.group_id,
        transactional_id: settings.transactional_id,
        topics: settings.topics,
        policy,
        tick: Duration::from_millis(settings.tick_ms.max(10)),
        idle_after: Duration::from_millis(settings.idle_after_ms),
        http: Some(HttpConfig {
            listen: settings.http_listen,
            advertise_url: settings.http_advertise_url,
            token,
            metrics: Some(metrics),
        }),
        intake: settings.intake,
        tmf621: settings.tmf621_version,
    };
    // The cluster named in the error: librdkafka's own messages may not say which broker
    // could not be reached, nor may its log have said so yet.
    let cluster = config.bootstrap_servers.clone();
    service::run(config, shutdown).with_context(|| format!("Kafka cluster at {cluster}"))?;
    Ok(ExitCode::SUCCESS)
}

/// The bearer token: `LINEWATCH_HTTP_TOKEN`, else the token file's first line. Errors
/// name the file, never its content.
fn http_token(file: Option<&std::path::Path>) -> anyhow::Result<Option<Token>> {
    if let Ok(value) = std::env::var(linewatch::config::HTTP_TOKEN_ENV) {
        return match Token::new(&value) {
            Some(t) => Ok(Some(t)),
            None => anyhow::bail!("{} is set but empty", linewatch::config::HTTP_TOKEN_ENV),
        };
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the HTTP token file {}", path.display()))?;
    match Token::new(text.lines().next().unwrap_or_default()) {
        Some(t) => Ok(Some(t)),
        None => anyhow::bail!("the HTTP token file {} is empty", path.display()),
    }
}

/// The admin commands are one-shot: a small current-thread runtime is enough (the blocking
/// metadata call goes to tokio's blocking pool).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    fn run_args(args: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from([&["linewatch", "run"], args].concat()).unwrap();
        match cli.command {
            Command::Run(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    /// Flags win over the config file whatever the environment holds; the file's values
    /// are only checked where the environment does not set the key.
    #[test]
    fn flags_win_over_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("linewatch.toml");
        std::fs::write(
            &path,
            r#"
                bootstrap_servers = "file:9092"
                group_id = "from-file"
                tick_ms = 42
                [kafka]
                "security.protocol" = "SSL"
                "socket.timeout.ms" = 1000
                [topics]
                alarms = "renamed.alarms"
            "#,
        )
        .unwrap();
        let settings = run_args(&[
            "--config",
            path.to_str().unwrap(),
            "--group-id",
            "from-flag",
            "--topic-prefix",
            "p.",
            "--log-format",
            "json",
            "-X",
            "security.protocol=SASL_SSL",
        ])
        .settings()
        .unwrap();
        assert_eq!(settings.group_id, "from-flag");
        assert_eq!(settings.log_format, LogFormat::Json);
        assert_eq!(settings.topics.alarms, "renamed.alarms");
        assert_eq!(settings.topics.inventory, "p.inventory.circuits");
        let kafka = client_config(&settings.bootstrap_servers, &settings.client_overrides);
        assert_eq!(kafka.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(kafka.get("socket.timeout.ms"), Some("1000"));
        if std::env::var_os("LINEWATCH_TICK_MS").is_none() {
            assert_eq!(settings.tick_ms, 42);
        }
        if std::env::var_os("KAFKA_BOOTSTRAP_SERVERS").is_none() {
            assert_eq!(settings.bootstrap_servers, "file:9092");
        }
    }

    #[test]
    fn config_file_errors_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("linewatch.toml");
        std::fs::write(&path, "bootstrap_servers = \"k:9092\"\ngroupid = \"x\"\n").unwrap();
        let error = run_args(&["--config", path.to_str().unwrap()])
            .settings()
            .unwrap_err();
        let text = format!("{error:#}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("groupid: unknown key"), "{text}");
    }
}
