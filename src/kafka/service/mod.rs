//! `linewatch run`: the engine driven from Kafka, as three partitioned stages.
//!
//! ```text
//!  nms.alarms ─┐ maintenance.windows, inventory.circuits (rejections, late notices)
//!              ▼
//!   [1 fan-out]   state per nms.alarms partition   → linewatch.fanout-changelog
//!              │  impacts keyed by circuit, and a watermark per fan-out partition
//!              ▼
//!   linewatch.impacts + tickets.commands (co-partitioned by circuit)
//!              ▼
//!   [2 circuit state]  state per partition        → linewatch.circuit-state-changelog
//!              │  tickets.events, circuits.status, kpi.circuits, sla.warnings
//!              │  ticket facts keyed by root alarm
//!              ▼
//!   linewatch.incident-facts
//!              ▼
//!   [3 incidents]  state per partition            → linewatch.incident-changelog
//!                  incidents
//! ```
//!
//! Every stage is a member of its own consumer group (`<group>-fanout`, `<group>-circuits`,
//! `<group>-incidents`), so instances share each stage's partitions and any instance can
//! take a partition over. A stage runs on its own OS thread (the transaction calls block)
//! with one transactional producer (KIP-447: offsets are sent with the consumer's group
//! metadata, so a zombie whose generation is stale cannot commit).
//!
//! Delivery rule: a batch of input records, everything it produced (outputs, rejections,
//! the next stage's input) and the changelog records of the state it changed are written
//! in one Kafka transaction with the batch's offsets. On assignment a stage waits for the
//! committed offsets to be stable, then restores each partition's state from its changelog
//! partition (same number) before processing it. On a clean revocation it commits the
//! batch in flight; on a lost assignment or an aborted transaction it drops its state and
//! starts again from the last commit. A fenced producer stops the instance.
//!
//! Time: stage 2 fires timers on event time. Each fan-out partition reports its watermark
//! (the latest alarm event time it has read, or the wall clock once it has been idle at the
//! end of its partition for `idle_after`); a circuit-state partition's clock is the oldest
//! watermark of all fan-out partitions, and before an input for a circuit that circuit's
//! timers up to the input's event time fire. So a backlog read after a restart gives what
//! the replay command gives, and a quiet network still sees its deadlines pass.
//!
//! Routing by content: an alarm read on a partition its object does not hash to, or a
//! command read on a partition its circuit does not hash to, is sent on (decoded, in the
//! same transaction) to that partition of `linewatch.alarms-repartition` /
//! `linewatch.commands-repartition`, read by the same stage; until the alarm's task has
//! committed past it, the watermark of the partition it came from stays at its event time.
//!
//! The inventory and maintenance windows are replicas: every instance reads both compacted
//! topics from the start (no group) before its stages start, then tails them and tells the
//! stages about each change.

mod buffer;
mod call_watch;
mod changelog;
mod circuits;
mod fanout;
mod incidents;
mod processor;
mod records;
mod replica;
mod restore;
mod stage;
mod transaction;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use metrics::gauge;
use rdkafka::error::KafkaError;
use tracing::{error, info, warn};

use crate::engine::Sink;
use crate::http::{App, HttpServer, Token};
use crate::intake::IntakeOptions;
use crate::kafka::directory::KafkaDirectory;
use crate::kafka::ClientOverride;
use crate::live::Live;
use crate::policy::Policy;
use crate::telemetry;

use call_watch::CallWatch;
pub(crate) use changelog::{figures_key, figures_key_circuit};
use circuits::CircuitProcessor;
use fanout::FanOutProcessor;
use incidents::IncidentProcessor;
use processor::Processor;
pub use replica::Replica;
use replica::{
    apply_replica, assign_from_start, caught_up, read, replica_consumer, usable, Change,
    ReplicaInventory,
};
use stage::{supervise, StageEnv};

/// Topic names the service reads and writes.
#[derive(Debug, Clone)]
pub struct TopicNames {
    pub alarms: String,
    pub inventory: String,
    pub maintenance: String,
    pub commands: String,
    pub tickets: String,
    pub reminders: String,
    pub line_status: String,
    pub warnings: String,
    pub figures: String,
    pub incidents: String,
    pub rejected: String,
    pub impacts: String,
    pub incident_facts: String,
    /// Alarms the fan-out stage read on a partition other than their object's, sent on to
    /// the partition that keeps that object's state.
    pub alarms_repartition: String,
    /// Ticket commands read on a partition other than their circuit's, sent on to the
    /// partition that keeps that circuit's state.
    pub commands_repartition: String,
    pub fanout_changelog: String,
    pub circuit_changelog: String,
    pub incident_changelog: String,
}

impl TopicNames {
    /// The names of `topics/`, each with `prefix` in front.
    pub fn with_prefix(prefix: &str) -> Self {
        let p = |n: &str| format!("{prefix}{n}");
        Self {
            alarms: p("nms.alarms"),
            inventory: p("inventory.circuits"),
            maintenance: p("maintenance.windows"),
            commands: p("tickets.commands"),
            tickets: p("tickets.events"),
            reminders: p("sla.reminders"),
            line_status: p("circuits.status"),
            warnings: p("sla.warnings"),
            figures: p("kpi.circuits"),
            incidents: p("incidents"),
            rejected: p("alarms.rejected"),
            impacts: p("linewatch.impacts"),
            incident_facts: p("linewatch.incident-facts"),
            alarms_repartition: p("linewatch.alarms-repartition"),
            commands_repartition: p("linewatch.commands-repartition"),
            fanout_changelog: p("linewatch.fanout-changelog"),
            circuit_changelog: p("linewatch.circuit-state-changelog"),
            incident_changelog: p("linewatch.incident-changelog"),
        }
    }

    fn sink(&self, sink: Sink) -> &str {
        match sink {
            Sink::Tickets => &self.tickets,
            Sink::Reminders => &self.reminders,
            Sink::Status => &self.line_status,
            Sink::Warnings => &self.warnings,
            Sink::Figures => &self.figures,
            Sink::Incidents => &self.incidents,
        }
    }
}

/// Everything `run` needs.
#[derive(Clone)]
pub struct ServiceConfig {
    pub bootstrap_servers: String,
    pub client_overrides: Vec<ClientOverride>,
    /// Prefix of the three stages' consumer groups.
    pub group_id: String,
    /// Prefix of the three stages' transactional ids; unique per instance, and best kept
    /// stable across restarts (a restarted instance then aborts its predecessor's open
    /// transaction at once instead of waiting for it to time out).
    pub transactional_id: String,
    pub topics: TopicNames,
    pub policy: Policy,
    /// How often live timers are checked.
    pub tick: Duration,
    /// How long a fan-out partition must sit at its end before its watermark follows the
    /// wall clock.
    pub idle_after: Duration,
    /// The HTTP listener (health, metrics, query API, NOC view); `None` for none.
    pub http: Option<HttpConfig>,
    /// How inputs are read: the 3GPP alarmed-object rule, non-fault VES events dropped or
    /// rejected.
    pub intake: IntakeOptions,
    /// The TMF621 version of the events on `tickets.events`.
    pub tmf621: crate::tmf621::Tmf621Version,
}

/// Without the client properties' values (they may hold passwords).
impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field(
                "client_overrides",
                &crate::kafka::override_keys(&self.client_overrides),
            )
            .field("group_id", &self.group_id)
            .field("transactional_id", &self.transactional_id)
            .field("topics", &self.topics)
            .field("tick", &self.tick)
            .field("idle_after", &self.idle_after)
            .field("http", &self.http)
            .field("intake", &self.intake)
            .finish_non_exhaustive()
    }
}

/// Settings of the HTTP listener.
#[derive(Clone)]
pub struct HttpConfig {
    pub listen: std::net::SocketAddr,
    /// The base URL other instances and callers use to reach this one; default
    /// `http://<listen address>` (the host name instead of an unspecified address).
    pub advertise_url: Option<String>,
    pub token: Option<Token>,
    /// The Prometheus recorder's handle, when one is installed.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("advertise_url", &self.advertise_url)
            .field("token", &self.token)
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

/// Errors that stop the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("Kafka: {}", crate::kafka::redacted(.0))]
    Kafka(#[from] KafkaError),
    #[error("the consumer has no group metadata (is group.id set?)")]
    NoGroupMetadata,
    #[error("the transactional producer was fenced (a newer instance uses the same transactional id, or the coordinator aborted a transaction that ran past its timeout): {0}")]
    Fenced(String),
    #[error("transaction aborted: {0}")]
    Aborted(String),
    #[error("state record {key:?} in {topic}[{partition}] cannot be read: {error}")]
    BadState {
        topic: String,
        partition: i32,
        key: String,
        error: String,
    },
    #[error("the topics do not fit together (fix them and start again; `linewatch topics check` lists every difference from topics/): {0}")]
    Topology(String),
    #[error("stage {0} stopped unexpectedly")]
    StagePanicked(&'static str),
    #[error("HTTP listener: {0}")]
    Http(String),
    #[error("stuck: {0}")]
    Stuck(String),
}

/// Counts the service reports when it stops (and that tests check).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub inputs: u64,
    pub rejected: u64,
    pub ticket_events: u64,
    pub transactions: u64,
    pub aborts: u64,
    pub restored_records: u64,
}

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one transaction call may last before the instance stops: three times the
/// timeout it is given (a call that does not return is a client bug, see [`CallWatch`]).
const CALL_LIMIT: Duration = Duration::from_secs(90);

/// First byte of the keys of the runtime's own records (watermarks between stages, a
/// partition's bookkeeping in its changelog). The byte 0xFF never occurs in UTF-8 text,
/// and every key derived from input (circuit ids, alarm keys, root alarms) is UTF-8 text:
/// no input can produce a key of the runtime's, whatever ids the NMS or the inventory use.
pub const INTERNAL_KEY_BYTE: u8 = 0xFF;

/// Key of the records that carry a partition's watermark to the next stage (on
/// `linewatch.impacts` and `linewatch.incident-facts`).
pub const WATERMARK_KEY: &[u8] = b"\xFFwatermark";

/// Run until `shutdown` is set; then every stage finishes its transaction in flight and
/// leaves its group.
///
/// # Errors
/// A [`ServiceError`] when Kafka fails in a way a retry does not fix (fenced, unreachable
/// cluster at start, unreadable state).
pub fn run(config: ServiceConfig, shutdown: Arc<AtomicBool>) -> Result<RunSummary, ServiceError> {
    let config = Arc::new(config);
    let summary = Arc::new(Mutex::new(RunSummary::default()));
    let replica = Arc::new(RwLock::new(Replica::default()));
    let (live, _http) = start_http(&config, &replica)?;

    // 1. The replicas, up to the high watermarks seen at start.
    let replica_consumer = replica_consumer(&config)?;
    let marks = assign_from_start(
        &replica_consumer,
        &[&config.topics.inventory, &config.topics.maintenance],
        &shutdown,
    )?;
    let started = Instant::now();
    while !caught_up(&replica_consumer, &marks)? {
        if shutdown.load(Ordering::Relaxed) {
            return Ok(RunSummary::default());
        }
        let polled = replica_consumer.poll(Duration::from_millis(100));
        if let Some(msg) = polled.map(usable).transpose()?.flatten() {
            apply_replica(&config, &replica, &msg, &[]);
        }
    }
    {
        let r = read(&replica);
        live.set_replica_ready(r.network.len());
        info!(
            circuits = r.network.len(),
            windows = r.windows.len(),
            seconds = started.elapsed().as_secs_f64(),
            "inventory replica caught up"
        );
    }

    // 2. The stages, each on its own thread, and the replica tail on this one.
    let (fan_tx, fan_rx) = channel();
    let (cir_tx, cir_rx) = channel();
    let failed = Arc::new(Mutex::new(None::<ServiceError>));
    let watch = Arc::new(CallWatch::new());
    let env = || StageEnv {
        watch: watch.clone(),
        config: config.clone(),
        live: live.clone(),
        replica: replica.clone(),
        shutdown: shutdown.clone(),
        summary: summary.clone(),
    };
    // The three stages, each a generic stage with its processor plugged in.
    let threads = [
        spawn_stage::<FanOutProcessor>(env(), Some(fan_rx), &failed)?,
        spawn_stage::<CircuitProcessor>(env(), Some(cir_rx), &failed)?,
        spawn_stage::<IncidentProcessor>(env(), None, &failed)?,
    ];
    let senders = [fan_tx, cir_tx];
    while !shutdown.load(Ordering::Relaxed) {
        if let Some((kind, lasted)) = watch.stuck(CALL_LIMIT) {
            let reason = format!(
                "the {} stage has waited {} s in a Kafka transaction call that should end \
                 within {} s; stopping the instance so that it can be started again",
                kind.name(),
                lasted.as_secs(),
                TXN_TIMEOUT.as_secs()
            );
            error!(stage = kind.name(), "{reason}");
            live.mark_stalled(kind.name(), reason.clone());
            gauge!(telemetry::STAGE_STALLED, "stage" => kind.name()).set(1.0);
            if let Ok(mut f) = failed.lock() {
                f.get_or_insert(ServiceError::Stuck(reason));
            }
            shutdown.store(true, Ordering::Relaxed);
            break;
        }
        let polled = replica_consumer.poll(Duration::from_millis(100));
        match polled.map(usable).transpose() {
            Ok(Some(Some(msg))) => {
                apply_replica(&config, &replica, &msg, &senders);
                live.set_inventory_circuits(read(&replica).network.len());
            }
            Ok(_) => {}
            Err(e) => {
                error!(error = %e, "inventory replica failed");
                shutdown.store(true, Ordering::Relaxed);
            }
        }
    }
    // Each stage finishes its transaction in flight, within its shutdown grace; one
    // stuck in a call that does not return is left behind when the instance exits.
    let deadline = Instant::now() + TXN_TIMEOUT + Duration::from_secs(10);
    while threads.iter().any(|(_, h)| !h.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut panicked = None;
    let mut stuck = None;
    for (kind, handle) in threads {
        if !handle.is_finished() {
            stuck = Some(kind);
            continue;
        }
        if handle.join().is_err() {
            panicked = Some(kind.name());
        }
    }
    if let Some(kind) = stuck {
        let reason = format!(
            "the {} stage did not stop within {} s (a Kafka call that does not return)",
            kind.name(),
            (TXN_TIMEOUT + Duration::from_secs(10)).as_secs()
        );
        error!(stage = kind.name(), "{reason}");
        let first = failed.lock().ok().and_then(|mut f| f.take());
        return Err(first.unwrap_or(ServiceError::Stuck(reason)));
    }
    if let Some(e) = failed.lock().ok().and_then(|mut f| f.take()) {
        return Err(e);
    }
    if let Some(name) = panicked {
        return Err(ServiceError::StagePanicked(name));
    }
    let summary = summary.lock().map(|s| s.clone()).unwrap_or_default();
    info!(?summary, "stopped");
    Ok(summary)
}

/// Start the stage of processor `P` on a thread of its own; the first error that stops a
/// stage is kept in `failed`, and stops the instance.
fn spawn_stage<P: Processor>(
    env: StageEnv,
    changes: Option<Receiver<Change>>,
    failed: &Arc<Mutex<Option<ServiceError>>>,
) -> Result<(StageKind, std::thread::JoinHandle<()>), ServiceError> {
    let kind = P::KIND;
    let failed = failed.clone();
    let handle = std::thread::Builder::new()
        .name(format!("stage-{}", kind.name()))
        .spawn(move || {
            if let Err(e) = supervise::<P>(&env, changes) {
                error!(stage = kind.name(), error = %e, "stage stopped");
                if let Ok(mut f) = failed.lock() {
                    f.get_or_insert(e);
                }
                env.shutdown.store(true, Ordering::Relaxed);
            }
        })
        .map_err(|e| ServiceError::Aborted(format!("cannot start a stage thread: {e}")))?;
    Ok((kind, handle))
}

/// The instance's shared state, and its HTTP listener when one is configured (bound
/// before the replica is read, so that health answers from the start).
fn start_http(
    config: &Arc<ServiceConfig>,
    replica: &Arc<RwLock<Replica>>,
) -> Result<(Arc<Live>, Option<HttpServer>), ServiceError> {
    let Some(http) = &config.http else {
        return Ok((Arc::new(Live::new(&config.transactional_id, "")), None));
    };
    // Bind first: with port 0 the URL is only known afterwards.
    let listener = std::net::TcpListener::bind(http.listen)
        .map_err(|e| ServiceError::Http(format!("cannot listen on {}: {e}", http.listen)))?;
    let bound = listener
        .local_addr()
        .map_err(|e| ServiceError::Http(e.to_string()))?;
    let url = http.advertise_url.clone().unwrap_or_else(|| {
        if bound.ip().is_unspecified() {
            format!("http://{}:{}", crate::config::hostname(), bound.port())
        } else {
            format!("http://{bound}")
        }
    });
    let live = Arc::new(Live::new(&config.transactional_id, url));
    let directory = KafkaDirectory::new(config).map_err(ServiceError::Kafka)?;
    let app = App::new(
        live.clone(),
        Arc::new(directory),
        Arc::new(ReplicaInventory {
            replica: replica.clone(),
            config: config.clone(),
        }),
        http.token.clone(),
        http.metrics.clone(),
    );
    let server = HttpServer::serve(listener, app)
        .map_err(|e| ServiceError::Http(format!("cannot listen on {bound}: {e}")))?;
    Ok((live, Some(server)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StageKind {
    FanOut,
    Circuits,
    Incidents,
}

impl StageKind {
    const ALL: [StageKind; 3] = [StageKind::FanOut, StageKind::Circuits, StageKind::Incidents];

    fn index(self) -> usize {
        match self {
            StageKind::FanOut => 0,
            StageKind::Circuits => 1,
            StageKind::Incidents => 2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            StageKind::FanOut => "fanout",
            StageKind::Circuits => "circuits",
            StageKind::Incidents => "incidents",
        }
    }
}

/// Retry a call that fails while the cluster settles (a topic just created has no leader
/// yet, a coordinator is loading, a previous owner's transaction is pending): up to 60 s,
/// then give up with the last error; at once when `stop` is set (SIGTERM), so that a
/// cluster that does not answer cannot hold a shutdown for a minute.
fn with_retries<T>(
    stop: &AtomicBool,
    mut call: impl FnMut() -> Result<T, KafkaError>,
) -> Result<T, KafkaError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match call() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() < deadline && !stop.load(Ordering::Relaxed) => {
                warn!(error = %e, "Kafka not ready; retrying");
                let pause = Instant::now() + Duration::from_millis(500);
                while Instant::now() < pause && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Err(e) => return Err(e),
        }
    }
}
