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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use metrics::{counter, gauge, histogram};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};

use crate::alarm::{check_not_in_future, Alarm};
use crate::correlation::{AlarmRecord, FanOut, Impact};
use crate::engine::{late_notice, CircuitStates, Input, Output, Sink, Warning};
use crate::http::{App, HttpServer, Inventory, Token};
use crate::incident::{IncidentBook, IncidentEvent, TicketFacts};
use crate::intake::{decode, decode_with, IntakeOptions, Stream};
use crate::inventory::InventoryChange;
use crate::kafka::directory::KafkaDirectory;
use crate::kafka::{client_config, ClientOverride};
use crate::live::{partition_for_key, Live};
use crate::maintenance::MaintenanceWindow;
use crate::network::Network;
use crate::policy::Policy;
use crate::rejection::{batch_elements, rejection_record_key, RejectReason, Rejection, Source};
use crate::telemetry;
use crate::views::CircuitView;

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
/// How long a partition-count mismatch between co-partitioned topics may last before it
/// stops the service (an operator adding partitions does one topic after the other).
const TOPOLOGY_SETTLE: Duration = Duration::from_secs(20);
/// A restore that reads nothing for this long restarts the stage (a partition without a
/// leader, a log truncated under it) instead of waiting forever.
const RESTORE_STALL: Duration = Duration::from_secs(120);
/// How long a transaction call may still wait once the service is stopping.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long one transaction call may last before the instance stops: three times the
/// timeout it is given (a call that does not return is a client bug, see [`CallWatch`]).
const CALL_LIMIT: Duration = Duration::from_secs(90);
/// How often the views of down circuits are refreshed to the partition's clock.
const VIEW_REFRESH: Duration = Duration::from_secs(5);
/// How long a restore reads before the stage polls its group consumer again (which keeps
/// the member in its group, however long the whole restore takes).
const RESTORE_SLICE: Duration = Duration::from_millis(200);
/// How often the views of the circuits changed by committed transactions are built and
/// published: a circuit changed by several transactions in a row (a storm, its timers) is
/// built once for them, and the API is at most this much behind the topics.
const VIEW_PUBLISH: Duration = Duration::from_millis(250);
/// How long a stage reads before it commits what it read (a transaction's interval).
const BATCH_INTERVAL: Duration = Duration::from_millis(100);
/// A transaction is committed early once it has read this many bytes of input...
const BATCH_MAX_INPUT_BYTES: usize = 16 * 1024 * 1024;
/// ...or holds this many output records (a storm's outputs come from few inputs).
const BATCH_MAX_OUTPUTS: usize = 200_000;
/// Attempts at an ambiguous (retriable) commit before the stage gives up on it and starts
/// again from the last commit (its new producer settles the transaction).
const COMMIT_ATTEMPTS: u32 = 5;
/// Largest record (key and value) the stages write: under librdkafka's and the broker's
/// 1 000 000-byte defaults (`message.max.bytes`), with room for headers and framing.
const MAX_RECORD_BYTES: usize = 990_000;
/// First byte of the keys of the runtime's own records (watermarks between stages, a
/// partition's bookkeeping in its changelog). The byte 0xFF never occurs in UTF-8 text,
/// and every key derived from input (circuit ids, alarm keys, root alarms) is UTF-8 text:
/// no input can produce a key of the runtime's, whatever ids the NMS or the inventory use.
pub const INTERNAL_KEY_BYTE: u8 = 0xFF;
/// Key of the records that carry a partition's watermark to the next stage (on
/// `linewatch.impacts` and `linewatch.incident-facts`).
pub const WATERMARK_KEY: &[u8] = b"\xFFwatermark";

/// Header of a repartitioned record: the input record it was read from, as JSON
/// `{"topic", "partition", "offset"}`, so that a rejection names that record.
const ORIGIN_HEADER: &str = "linewatch-origin";

/// The watermark key of releases before 0.2 (`~watermark`), still read from topics
/// written then, when the record is a watermark record.
const LEGACY_WATERMARK_KEY: &[u8] = b"~watermark";
/// Changelog key of a partition's bookkeeping (watermarks, clock).
const META_KEY: &[u8] = b"\xFFmeta";
/// Changelog key prefix of an input waiting for the clock.
const PENDING_PREFIX: &[u8] = b"\xFFpending/";
/// The pending-input prefix of releases before 0.2, for their tombstones.
const LEGACY_PENDING_PREFIX: &[u8] = b"~pending/";

/// The replicated inventory and maintenance windows, shared by the stages of an instance.
#[derive(Debug, Default)]
pub struct Replica {
    pub network: Network,
    pub windows: BTreeMap<String, MaintenanceWindow>,
}

/// A replica change a stage must react to.
#[derive(Debug, Clone)]
enum Change {
    Circuit(String),
    Window(MaintenanceWindow),
    WindowCancelled(String),
}

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
    let mut threads = Vec::new();
    let kinds: [(StageKind, Option<Receiver<Change>>); 3] = [
        (StageKind::FanOut, Some(fan_rx)),
        (StageKind::Circuits, Some(cir_rx)),
        (StageKind::Incidents, None),
    ];
    for (kind, changes) in kinds {
        let ctx = StageEnv {
            watch: watch.clone(),
            config: config.clone(),
            live: live.clone(),
            replica: replica.clone(),
            shutdown: shutdown.clone(),
            summary: summary.clone(),
        };
        let failed = failed.clone();
        let shutdown = shutdown.clone();
        let handle = std::thread::Builder::new()
            .name(format!("stage-{}", kind.name()))
            .spawn(move || {
                if let Err(e) = supervise(kind, &ctx, changes) {
                    error!(stage = kind.name(), error = %e, "stage stopped");
                    if let Ok(mut f) = failed.lock() {
                        f.get_or_insert(e);
                    }
                    shutdown.store(true, Ordering::Relaxed);
                }
            })
            .map_err(|e| ServiceError::Aborted(format!("cannot start a stage thread: {e}")))?;
        threads.push((kind, handle));
    }
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

/// Circuits known to the inventory replica but without state.
struct ReplicaInventory {
    replica: Arc<RwLock<Replica>>,
    config: Arc<ServiceConfig>,
}

impl Inventory for ReplicaInventory {
    fn circuit(&self, circuit_id: &str, partition: i32) -> Option<CircuitView> {
        let r = read(&self.replica);
        CircuitStates::new().view(circuit_id, partition, &r.network, &self.config.policy, None)
    }
}

fn read(replica: &RwLock<Replica>) -> std::sync::RwLockReadGuard<'_, Replica> {
    replica.read().unwrap_or_else(|p| p.into_inner())
}

fn write(replica: &RwLock<Replica>) -> std::sync::RwLockWriteGuard<'_, Replica> {
    replica.write().unwrap_or_else(|p| p.into_inner())
}

/// Apply one replica record and tell the stages. Bad records are skipped here: stage 1
/// reads the same topics as a group member and rejects them once.
fn apply_replica(
    config: &ServiceConfig,
    replica: &RwLock<Replica>,
    msg: &BorrowedMessage<'_>,
    stages: &[Sender<Change>],
) {
    let stream = if msg.topic() == config.topics.inventory {
        Stream::Inventory
    } else {
        Stream::Maintenance
    };
    for input in decode(stream, msg.key(), msg.payload())
        .into_iter()
        .flatten()
    {
        let change = {
            let mut r = write(replica);
            match input {
                Input::Inventory(change) => {
                    let id = match &change {
                        InventoryChange::Upsert(c) => c.circuit_id.clone(),
                        InventoryChange::Delete { circuit_id } => circuit_id.clone(),
                    };
                    r.network.apply(change);
                    Change::Circuit(id)
                }
                Input::Maintenance(w) if w.end > w.start => {
                    r.windows.insert(w.window_id.clone(), w.clone());
                    Change::Window(w)
                }
                Input::CancelWindow { window_id } => {
                    r.windows.remove(&window_id);
                    Change::WindowCancelled(window_id)
                }
                _ => continue,
            }
        };
        for s in stages {
            let _ = s.send(change.clone());
        }
    }
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

/// When each stage's blocking transaction call (begin, offsets, commit) began, so that a
/// call that never returns is seen: librdkafka 2.12 waits without limit in
/// `send_offsets_to_transaction` once the coordinator it had cached is gone (a broker
/// killed, confluentinc/librdkafka#5456, #5511), whatever timeout it was given.
#[derive(Debug)]
struct CallWatch {
    origin: Instant,
    /// Per stage (in [`StageKind::ALL`] order): milliseconds since `origin` + 1 at the
    /// call's start; 0 while no call is in progress.
    calls: [AtomicU64; 3],
}

impl CallWatch {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            calls: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// Run `call` as a watched call of `stage`.
    fn watched<T>(&self, stage: StageKind, call: impl FnOnce() -> T) -> T {
        let slot = &self.calls[stage.index()];
        let now = self.origin.elapsed().as_millis() as u64 + 1;
        slot.store(now, Ordering::Relaxed);
        let result = call();
        slot.store(0, Ordering::Relaxed);
        result
    }

    /// A stage whose call has lasted `limit` or more, and for how long.
    fn stuck(&self, limit: Duration) -> Option<(StageKind, Duration)> {
        stuck_call(&self.calls, self.origin.elapsed(), limit)
    }
}

/// The first stage whose call (started at `calls[i]` ms + 1 after the origin, 0 for none)
/// has lasted `limit` or more at `now` after the origin.
fn stuck_call(
    calls: &[AtomicU64; 3],
    now: Duration,
    limit: Duration,
) -> Option<(StageKind, Duration)> {
    StageKind::ALL.into_iter().find_map(|kind| {
        let started = calls[kind.index()].load(Ordering::Relaxed);
        if started == 0 {
            return None;
        }
        let lasted = now.saturating_sub(Duration::from_millis(started - 1));
        (lasted >= limit).then_some((kind, lasted))
    })
}

struct StageEnv {
    watch: Arc<CallWatch>,
    config: Arc<ServiceConfig>,
    live: Arc<Live>,
    replica: Arc<RwLock<Replica>>,
    shutdown: Arc<AtomicBool>,
    summary: Arc<Mutex<RunSummary>>,
}

/// Run a stage; after an aborted transaction, start it again from the last commit (a new
/// group member with a new producer, which restores its partitions' state). A fenced
/// producer is started again too (a zombie that was paused past its transaction timeout
/// comes back as a fresh member), unless that keeps happening: three fences within five
/// minutes mean another instance uses the same transactional id, and stop this one.
/// Other errors stop the instance.
fn supervise(
    kind: StageKind,
    env: &StageEnv,
    changes: Option<Receiver<Change>>,
) -> Result<(), ServiceError> {
    let changes = changes.unwrap_or_else(|| channel().1);
    let mut fences: Vec<Instant> = Vec::new();
    // Commits of the stage when it last failed: a failure with none since is a stall.
    let mut commits_at_failure: Option<u64> = None;
    loop {
        let reason = match run_stage(kind, env, &changes) {
            Ok(()) => return Ok(()),
            Err(ServiceError::Aborted(reason)) => reason,
            Err(ServiceError::Fenced(reason)) => {
                fences.retain(|t| t.elapsed() < Duration::from_secs(300));
                fences.push(Instant::now());
                if fences.len() >= 3 {
                    return Err(ServiceError::Fenced(reason));
                }
                reason
            }
            Err(e) => return Err(e),
        };
        warn!(stage = kind.name(), %reason, "restarting the stage from the last commit");
        counter!(telemetry::STAGE_RESTARTS, "stage" => kind.name()).increment(1);
        let commits = env.live.commits(kind.name());
        if commits_at_failure == Some(commits) {
            error!(
                stage = kind.name(),
                %reason,
                "the stage keeps failing without committing anything; not ready"
            );
            env.live.mark_stalled(kind.name(), reason.clone());
            gauge!(telemetry::STAGE_STALLED, "stage" => kind.name()).set(1.0);
        }
        commits_at_failure = Some(commits);
        // Not ready, and nothing to show, until the new member has restored its share.
        env.live.update_stage(kind.name(), |info| {
            info.partitions.clear();
            info.restoring = true;
        });
        match kind {
            StageKind::Circuits => env.live.views.clear_circuits(),
            StageKind::Incidents => env.live.views.clear_incidents(),
            StageKind::FanOut => {}
        }
        if let Ok(mut s) = env.summary.lock() {
            s.aborts += 1;
        }
        if env.shutdown.load(Ordering::Relaxed) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One record to write in the stage's next transaction.
struct Out {
    topic: String,
    partition: Option<i32>,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    /// The input record a repartitioned record was read from (header `linewatch-origin`).
    origin: Option<Vec<u8>>,
}

/// What the consumer context shares with the stage loop: rebalance events, and the stage
/// itself, so that a clean revocation commits the batch in flight from inside the callback.
struct StageContext {
    stage: &'static str,
    core: Mutex<Option<Core>>,
    revoke_error: Mutex<Option<ServiceError>>,
}

impl ClientContext for StageContext {
    /// librdkafka's errors, logged as its default context does, except the end-of-partition
    /// notices the stage asks for (they are not errors).
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        error!("librdkafka: {}: {}", crate::kafka::redacted(&error), reason);
    }

    /// librdkafka's statistics (every few seconds): the consumer lag of the assigned
    /// partitions, summed per topic.
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            let lag: i64 = t
                .partitions
                .values()
                // Offsets are committed through the producer's transactions, which
                // librdkafka's committed offset does not follow: the lag is measured from
                // the offset stored as records are consumed.
                .filter(|p| p.partition >= 0 && p.desired && p.consumer_lag_stored >= 0)
                .map(|p| p.consumer_lag_stored)
                .sum();
            gauge!(telemetry::CONSUMER_LAG, "stage" => self.stage, "topic" => topic.clone())
                .set(lag as f64);
        }
    }
}

impl ConsumerContext for StageContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let mut guard = self.core.lock().unwrap_or_else(|p| p.into_inner());
        let Some(core) = guard.as_mut() else {
            return;
        };
        let revoked: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        if consumer.assignment_lost() {
            warn!(
                stage = core.kind.name(),
                "assignment lost; dropping the batch in flight"
            );
            core.discard();
        } else if let Err(e) = core.commit(consumer) {
            warn!(stage = core.kind.name(), error = %e, "commit on revocation failed");
            core.discard();
            let mut slot = self.revoke_error.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(e);
        }
        // The range assignor is eager: every partition is revoked, and state is restored
        // again for what is assigned next.
        core.discard();
        core.live.update_stage(core.kind.name(), |info| {
            info.partitions.clear();
            info.restoring = true;
        });
        info!(stage = core.kind.name(), partitions = ?revoked, "partitions revoked");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut guard = self.core.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(core) = guard.as_mut() {
                // State is kept per partition of the stage's keyed input only (the other
                // inputs of stage 1 carry no state; commands share stage 2's partitions).
                let keyed = core.keyed_input();
                let assigned: BTreeSet<i32> = tpl
                    .elements()
                    .iter()
                    .filter(|e| e.topic() == keyed)
                    .map(|e| e.partition())
                    .collect();
                info!(stage = core.kind.name(), partitions = ?assigned, "partitions assigned");
                let count = match core.kind {
                    StageKind::FanOut => core.alarm_partitions,
                    StageKind::Circuits => core.impact_partitions,
                    StageKind::Incidents => core.facts_partitions,
                };
                core.live.update_stage(core.kind.name(), |info| {
                    info.joined = true;
                    info.restoring = true;
                    info.partitions = assigned.iter().copied().collect();
                    info.partition_count = count;
                });
                core.to_restore.extend(assigned);
                core.assigned = true;
                // Nothing is read from the new assignment until its state is restored:
                // the restore goes on between polls of this consumer (so that the group
                // keeps the member however long it takes), and resumes them at its end.
                if let Err(e) = consumer.pause(tpl) {
                    warn!(stage = core.kind.name(), error = %e, "cannot pause the assignment for its restore");
                }
            }
        }
    }
}

fn lock_core(ctx: &StageContext) -> std::sync::MutexGuard<'_, Option<Core>> {
    ctx.core.lock().unwrap_or_else(|p| p.into_inner())
}

fn run_stage(
    kind: StageKind,
    env: &StageEnv,
    changes: &Receiver<Change>,
) -> Result<(), ServiceError> {
    let config = &env.config;
    let t = &config.topics;
    let mut consumer_cfg = client_config(&config.bootstrap_servers, &config.client_overrides);
    consumer_cfg
        .set("group.id", format!("{}-{}", config.group_id, kind.name()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("partition.assignment.strategy", "range")
        .set("fetch.queue.backoff.ms", "20")
        // How other instances find this one's HTTP listener (see kafka::directory).
        .set(
            "client.id",
            crate::kafka::directory::client_id(&config.transactional_id, &env.live.url),
        )
        .set("statistics.interval.ms", "5000");
    let mut producer_cfg = client_config(&config.bootstrap_servers, &config.client_overrides);
    producer_cfg
        .set(
            "transactional.id",
            format!("{}-{}", config.transactional_id, kind.name()),
        )
        .set("transaction.timeout.ms", "20000")
        .set("message.timeout.ms", "15000")
        .set("partitioner", "murmur2_random");
    crate::kafka::throughput_producer(&mut producer_cfg);
    let producer: BaseProducer = producer_cfg.create()?;
    with_retries(&env.shutdown, || producer.init_transactions(TXN_TIMEOUT)).map_err(classify)?;

    let inputs: Vec<String> = match kind {
        StageKind::FanOut => vec![
            t.alarms.clone(),
            t.alarms_repartition.clone(),
            t.maintenance.clone(),
            t.inventory.clone(),
        ],
        StageKind::Circuits => vec![
            t.impacts.clone(),
            t.commands.clone(),
            t.commands_repartition.clone(),
        ],
        StageKind::Incidents => vec![t.incident_facts.clone()],
    };
    let probe: BaseConsumer = client_config(&config.bootstrap_servers, &config.client_overrides)
        .set("group.id", format!("{}-probe", config.group_id))
        .create()?;
    let facts_partitions = partition_count(&probe, &t.incident_facts, &env.shutdown)?;
    // Topics read together by one stage must have equal partition counts: the range
    // assignor then gives each member the same partition numbers of each, and a record
    // repartitioned by content lands where its key's state is kept.
    let pairs = [
        (&t.commands, &t.impacts),
        (&t.commands_repartition, &t.impacts),
        (&t.alarms_repartition, &t.alarms),
    ];
    let count = |topic: &String| partition_count(&probe, topic, &env.shutdown);
    let mut counts = Vec::with_capacity(pairs.len());
    for (a, b) in pairs {
        counts.push((count(a)?, count(b)?));
    }
    // Partitions being added by an operator reach the topics one after the other: a
    // mismatch stops the service only if it lasts.
    let settling = Instant::now() + TOPOLOGY_SETTLE;
    while counts.iter().any(|(a, b)| a != b)
        && Instant::now() < settling
        && !env.shutdown.load(Ordering::Relaxed)
    {
        for ((a, b), (na, nb)) in pairs.iter().zip(&counts) {
            if na != nb {
                warn!(
                    topic = %a,
                    partitions = na,
                    other = %b,
                    other_partitions = nb,
                    "co-partitioned topics differ in partitions; checking again"
                );
            }
        }
        std::thread::sleep(Duration::from_secs(2));
        counts.clear();
        for (a, b) in pairs {
            counts.push((count(a)?, count(b)?));
        }
    }
    for ((a, b), (na, nb)) in pairs.iter().zip(&counts) {
        if na != nb {
            return Err(ServiceError::Topology(format!(
                "{a} has {na} partitions and {b} has {nb}: they must be co-partitioned \
                 (equal counts)"
            )));
        }
    }
    let impact_partitions = counts[0].1;
    let alarm_partitions = counts[2].1;
    // State is restored per partition number: each changelog needs a partition for every
    // partition of the input that keys its stage.
    let (keyed, keyed_count, changelog) = match kind {
        StageKind::FanOut => (&t.alarms, alarm_partitions, &t.fanout_changelog),
        StageKind::Circuits => (&t.impacts, impact_partitions, &t.circuit_changelog),
        StageKind::Incidents => (&t.incident_facts, facts_partitions, &t.incident_changelog),
    };
    let changelog_count = partition_count(&probe, changelog, &env.shutdown)?;
    if changelog_count < keyed_count {
        return Err(ServiceError::Topology(format!(
            "{changelog} has {changelog_count} partitions and {keyed} has {keyed_count}: a \
             changelog needs at least as many partitions as the input its state is kept for"
        )));
    }

    let context = StageContext {
        stage: kind.name(),
        core: Mutex::new(Some(Core {
            watch: env.watch.clone(),
            kind,
            config: config.clone(),
            live: env.live.clone(),
            views: Vec::new(),
            views_refreshed: Instant::now(),
            stale_views: BTreeSet::new(),
            views_published: Instant::now(),
            batch: BatchStats::default(),
            replica: env.replica.clone(),
            summary: env.summary.clone(),
            shutdown: env.shutdown.clone(),
            producer,
            pending: Vec::new(),
            offsets: BTreeMap::new(),
            to_restore: BTreeSet::new(),
            restoring: None,
            rewind: BTreeMap::new(),
            fanout: BTreeMap::new(),
            circuits: BTreeMap::new(),
            incidents: BTreeMap::new(),
            assigned: false,
            probe,
            owned: BTreeSet::new(),
            offsets_dirty: false,
            facts_partitions,
            last_alarm: BTreeMap::new(),
            reported: BTreeMap::new(),
            read_clock: BTreeMap::new(),
            sent_on: Vec::new(),
            in_flight: Vec::new(),
            group_probe: None,
            at_end: BTreeSet::new(),
            impact_partitions,
            alarm_partitions,
        })),
        revoke_error: Mutex::new(None),
    };
    let consumer: BaseConsumer<StageContext> = consumer_cfg.create_with_context(context)?;
    let topics: Vec<&str> = inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;

    let result = stage_loop(kind, env, changes, &consumer);
    // Leave the group; a clean revocation commits what is in flight.
    if result.is_ok() {
        consumer.unsubscribe();
        let _ = consumer.poll(Duration::from_millis(100));
    }
    result
}

fn stage_loop(
    kind: StageKind,
    env: &StageEnv,
    changes: &Receiver<Change>,
    consumer: &BaseConsumer<StageContext>,
) -> Result<(), ServiceError> {
    let config = &env.config;
    let mut last_tick = Instant::now();
    while !env.shutdown.load(Ordering::Relaxed) {
        // A transaction carries everything read in its interval, up to a size bound that
        // keeps it well inside the producer's queue and the transaction timeout.
        let deadline = Instant::now() + BATCH_INTERVAL;
        let mut taken_bytes = 0usize;
        let mut outputs = 0usize;
        while taken_bytes < BATCH_MAX_INPUT_BYTES && outputs < BATCH_MAX_OUTPUTS {
            // rdkafka passes whole milliseconds to librdkafka: a wait under 1 ms would
            // not wait at all, and the loop would spin to the deadline.
            let left = deadline.saturating_duration_since(Instant::now());
            if left < Duration::from_millis(1) {
                break;
            }
            // During a restore the assignment is paused: the poll only serves the group
            // (heartbeats, rebalances) between slices of the restore, without waiting.
            let restoring = lock_core(consumer.context())
                .as_ref()
                .is_some_and(|c| c.restoring.is_some());
            let wait = if restoring {
                Duration::ZERO
            } else {
                left.min(Duration::from_millis(20))
            };
            let polled = consumer.poll(wait);
            if let Some(e) = consumer
                .context()
                .revoke_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                return Err(e);
            }
            let mut guard = lock_core(consumer.context());
            let Some(core) = guard.as_mut() else {
                return Ok(());
            };
            core.restore_assigned(consumer)?;
            if core.restoring.is_some() {
                // Paused: a record polled anyway is read again once the restore is over.
                if let Some(Ok(msg)) = &polled {
                    core.read_again(msg.topic(), msg.partition(), msg.offset());
                }
                continue;
            }
            match polled {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    core.at_end.insert(p);
                }
                Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => return Err(e.into()),
                Some(Err(e)) => warn!(stage = kind.name(), error = %e, "consumer error; retrying"),
                Some(Ok(msg)) => {
                    taken_bytes += msg.payload_len() + msg.key_len();
                    core.handle(&msg);
                    outputs = core.pending.len();
                }
            }
        }
        let mut guard = lock_core(consumer.context());
        let Some(core) = guard.as_mut() else {
            return Ok(());
        };
        if core.restoring.is_some() {
            // Changes wait in the channel; timers and commits wait for the whole state.
            continue;
        }
        while let Ok(change) = changes.try_recv() {
            core.on_change(change);
        }
        if last_tick.elapsed() >= config.tick {
            last_tick = Instant::now();
            core.tick(consumer, config.idle_after);
        }
        core.commit(consumer)?;
    }
    let mut guard = lock_core(consumer.context());
    if let Some(core) = guard.as_mut() {
        core.commit(consumer)?;
    }
    Ok(())
}

/// Alarms read on partition `from` and sent on to partition `to` of the repartition
/// topic in one transaction, below offset `end` there; `at` is the oldest event time.
struct InFlight {
    from: i32,
    to: i32,
    end: i64,
    at: DateTime<Utc>,
}

/// A restore in progress: the changelog partitions being read, and how far.
struct Restore {
    restorer: BaseConsumer,
    topic: String,
    partitions: Vec<i32>,
    /// High watermark of each changelog partition when the restore began.
    ends: BTreeMap<i32, i64>,
    /// Partitions not read to their end yet.
    open: BTreeSet<i32>,
    records: u64,
    /// Records already added to the restore counter.
    counted: u64,
    since_check: u32,
    /// When a record was last read (or a partition found at its end).
    progress: Instant,
    last_log: Instant,
    started: Instant,
}

/// A view change to publish once the transaction that carries it commits (circuits' views
/// are built after the commit instead: [`Core::publish_stale_views`]).
enum ViewUpdate {
    Incident(String, Option<Box<IncidentEvent>>),
}

/// Counts of the batch in flight, added to the metrics when it commits.
#[derive(Default)]
struct BatchStats {
    messages_in: BTreeMap<String, u64>,
    ticket_events: BTreeMap<String, u64>,
    rejections: BTreeMap<&'static str, u64>,
    /// Kafka timestamps (ms) of the records consumed.
    timestamps: Vec<i64>,
}

/// A stage's state and its transaction in flight.
struct Core {
    watch: Arc<CallWatch>,
    kind: StageKind,
    config: Arc<ServiceConfig>,
    live: Arc<Live>,
    /// View changes of the batch in flight.
    views: Vec<ViewUpdate>,
    /// When the views of down circuits were last brought to the partition's clock.
    views_refreshed: Instant,
    /// Circuits (partition, id) changed by committed transactions whose views are not
    /// built yet.
    stale_views: BTreeSet<(i32, String)>,
    /// When the stale views were last built and published.
    views_published: Instant,
    batch: BatchStats,
    replica: Arc<RwLock<Replica>>,
    summary: Arc<Mutex<RunSummary>>,
    /// Set on SIGTERM: a transaction the broker does not answer is then given up after
    /// [`SHUTDOWN_GRACE`] instead of being retried (uncommitted, it changes nothing).
    shutdown: Arc<AtomicBool>,
    producer: BaseProducer,
    pending: Vec<Out>,
    /// Next offset to read, per input topic and partition owned: sent with every
    /// transaction, so that each one is fenced by the group generation.
    offsets: BTreeMap<(String, i32), i64>,
    /// Partitions assigned whose state is not restored yet.
    to_restore: BTreeSet<i32>,
    /// The restore in progress, if any: while it lasts the assignment is paused and
    /// nothing is processed or committed.
    restoring: Option<Restore>,
    /// Records polled while the assignment was paused for a restore, per input partition
    /// the first one's offset: read again when the restore is over.
    rewind: BTreeMap<(String, i32), i64>,
    fanout: BTreeMap<i32, FanOut>,
    circuits: BTreeMap<i32, CircuitPartition>,
    incidents: BTreeMap<i32, IncidentPartition>,
    /// Stage 3: facts read in this batch, per partition, folded in at commit.
    /// A new assignment whose committed offsets are still to be read.
    assigned: bool,
    /// A client for metadata and watermark queries, off the stage consumer's connection.
    probe: BaseConsumer,
    /// The input partitions of the current assignment, once restored: records of any
    /// other partition (one polled just as the assignment was lost) are not processed.
    owned: BTreeSet<(String, i32)>,
    /// Records were consumed since the last commit.
    offsets_dirty: bool,
    facts_partitions: i32,
    /// Stage 1: when an alarm was last read from each alarms partition.
    last_alarm: BTreeMap<i32, Instant>,
    /// Stage 1: the watermark last sent for each alarms partition.
    reported: BTreeMap<i32, DateTime<Utc>>,
    /// Stage 1: the latest event time of the alarms read on each alarms partition and
    /// sent on to another (those applied here move the fan-out state's watermark).
    read_clock: BTreeMap<i32, DateTime<Utc>>,
    /// Stage 1: alarms sent on to another partition in the transaction being built:
    /// (from, to, event time).
    sent_on: Vec<(i32, i32, DateTime<Utc>)>,
    /// Stage 1: alarms sent on and committed, not yet read by the task of their
    /// partition; each holds back the watermark of the partition it was read from, so
    /// that the circuits' clock does not pass it before its impacts are out.
    in_flight: Vec<InFlight>,
    /// Stage 1: a client of the stage's group (not a member) that reads the offsets its
    /// tasks committed on the repartition topic.
    group_probe: Option<BaseConsumer>,
    /// Stage 1: partitions the consumer reported at their end since their last record
    /// (librdkafka names the partition, not the topic: a hint, checked against the
    /// partition's high watermark).
    at_end: BTreeSet<i32>,
    impact_partitions: i32,
    alarm_partitions: i32,
}

/// Stage 2's state of one partition: the circuits, and the impacts and commands waiting
/// for the event-time clock.
#[derive(Default)]
struct CircuitPartition {
    states: CircuitStates,
    buf: Buffer<Pending>,
}

/// Stage 3's state of one partition: the incidents, and the ticket facts waiting for the
/// event-time clock (with the record key each came under).
#[derive(Default)]
struct IncidentPartition {
    book: IncidentBook,
    buf: Buffer<(String, TicketFacts)>,
}

/// Inputs of a partition held until every upstream partition has passed their event
/// time, then released in event-time order: what makes a run give the replay's answers
/// although the upstream partitions progress at different speeds. Kept in the changelog
/// (keys [`META_KEY`] and `~pending/<seq>`).
struct Buffer<T> {
    meta: PartitionMeta,
    meta_dirty: bool,
    pending: BTreeMap<PendingKey, T>,
    /// Pending entries added or removed since the last changelog flush.
    pending_dirty: BTreeSet<PendingKey>,
    /// Pending entries added since the last changelog flush: one also released before it
    /// was never written, so neither it nor its tombstone goes to the changelog.
    pending_new: BTreeSet<PendingKey>,
    /// Sequence numbers of pending inputs read back from keys of a release before 0.2
    /// (`~pending/<seq>`): their tombstones go under that key too, or compaction would keep
    /// the old record and a later restore would apply the input again.
    legacy: BTreeSet<u64>,
}

impl<T> Default for Buffer<T> {
    fn default() -> Self {
        Buffer {
            meta: PartitionMeta::default(),
            meta_dirty: false,
            pending: BTreeMap::new(),
            pending_dirty: BTreeSet::new(),
            pending_new: BTreeSet::new(),
            legacy: BTreeSet::new(),
        }
    }
}

/// A partition's bookkeeping (changelog key [`META_KEY`]).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartitionMeta {
    /// The latest watermark reported by each upstream partition.
    watermarks: BTreeMap<i32, DateTime<Utc>>,
    /// The partition's event-time clock: inputs are applied and timers fired up to here.
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    clock: Option<DateTime<Utc>>,
    /// Sequence number of the next pending input.
    next_seq: u64,
}

/// Event time, class (commands before impacts at the same instant, as in the replay),
/// arrival sequence.
type PendingKey = (DateTime<Utc>, u8, u64);

/// An input of stage 2 waiting until every fan-out partition has passed its event time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
enum Pending {
    Impact {
        impact: Impact,
    },
    Command {
        command: crate::engine::TicketCommand,
        /// Where it came from and what it said, for a rejection when it is applied.
        topic: String,
        partition: i32,
        offset: i64,
        key: Option<String>,
        original: String,
    },
}

/// A pending input as its changelog record carries it (key `~pending/<seq>`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PendingRecord<T> {
    #[serde(serialize_with = "crate::timestamp::serialize")]
    time: DateTime<Utc>,
    class: u8,
    seq: u64,
    item: T,
}

fn pending_key(seq: u64) -> Vec<u8> {
    pending_key_under(PENDING_PREFIX, seq)
}

/// A pending input's changelog key under `prefix` (this release's, or one before 0.2).
fn pending_key_under(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{seq:020}").as_bytes());
    key
}

impl<T: Clone + Serialize + serde::de::DeserializeOwned> Buffer<T> {
    /// Up to when inputs may be applied: the oldest upstream watermark, once all
    /// `upstream` partitions have reported one. Every input with an earlier event time has
    /// arrived (each upstream partition writes in event-time order).
    fn limit(&self, upstream: i32) -> Option<DateTime<Utc>> {
        if (0..upstream).all(|q| self.meta.watermarks.contains_key(&q)) {
            self.meta.watermarks.values().min().copied()
        } else {
            None
        }
    }

    fn hold(&mut self, time: DateTime<Utc>, class: u8, item: T) {
        let key = (time, class, self.meta.next_seq);
        self.meta.next_seq += 1;
        self.meta_dirty = true;
        self.pending.insert(key, item);
        self.pending_dirty.insert(key);
        self.pending_new.insert(key);
    }

    /// An upstream partition reports its watermark; false for a partition that does not
    /// exist upstream.
    fn report(&mut self, w: &WatermarkRecord, upstream: i32) -> bool {
        if !(0..upstream).contains(&w.source_partition) {
            return false;
        }
        let slot = self
            .meta
            .watermarks
            .entry(w.source_partition)
            .or_insert(w.watermark);
        *slot = (*slot).max(w.watermark);
        self.meta_dirty = true;
        true
    }

    /// The next input older than `limit`, with the clock moved to its time.
    fn next_ready(&mut self, limit: DateTime<Utc>) -> Option<(PendingKey, T)> {
        let key = *self.pending.first_key_value()?.0;
        if key.0 >= limit {
            return None;
        }
        let item = self.pending.remove(&key)?;
        self.pending_dirty.insert(key);
        self.meta.clock = Some(self.meta.clock.map_or(key.0, |c| c.max(key.0)));
        self.meta_dirty = true;
        Some((key, item))
    }

    /// Move the clock to `limit` if it is behind; returns whether it moved.
    fn catch_up(&mut self, limit: DateTime<Utc>) -> bool {
        if self.meta.clock.is_some_and(|c| c >= limit) {
            return false;
        }
        self.meta.clock = Some(limit);
        self.meta_dirty = true;
        true
    }

    /// Read one of the buffer's changelog records under `key`, by the kind its envelope
    /// names.
    fn restore(&mut self, key: &[u8], kind: StateKind, body: &[u8]) -> Result<(), String> {
        match kind {
            StateKind::Meta => {
                self.meta = serde_json::from_slice(body).map_err(|e| e.to_string())?;
            }
            StateKind::Pending => {
                let r: PendingRecord<T> =
                    serde_json::from_slice(body).map_err(|e| e.to_string())?;
                if key.starts_with(LEGACY_PENDING_PREFIX) {
                    self.legacy.insert(r.seq);
                } else {
                    self.legacy.remove(&r.seq);
                }
                self.pending.insert((r.time, r.class, r.seq), r.item);
            }
            StateKind::Entity | StateKind::Figures => {
                return Err("not a record of the partition's buffer".into())
            }
        }
        Ok(())
    }

    /// A tombstone under `key`: true when it is one of the buffer's (a pending input
    /// applied), false when it is an entity's. A key of a release before 0.2
    /// (`~pending/<seq>`) removes only an input read back from such a key, and counts as
    /// an entity's too (an entity may be named like that): the caller forgets the entity
    /// as well.
    fn restore_tombstone(&mut self, key: &[u8]) -> bool {
        if key == META_KEY {
            return true;
        }
        let parse = |seq: &[u8]| {
            std::str::from_utf8(seq)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
        };
        if let Some(seq) = key.strip_prefix(PENDING_PREFIX) {
            let seq = parse(seq);
            self.pending.retain(|k, _| Some(k.2) != seq);
            return true;
        }
        if let Some(seq) = key.strip_prefix(LEGACY_PENDING_PREFIX).and_then(parse) {
            if self.legacy.remove(&seq) {
                self.pending.retain(|k, _| k.2 != seq);
            }
        }
        false
    }

    /// The changelog records of what changed since the last call.
    fn changelog(&mut self, out: &mut Vec<StateRecord>) {
        if std::mem::take(&mut self.meta_dirty) {
            out.push((
                META_KEY.to_vec(),
                StateKind::Meta,
                serde_json::to_vec(&self.meta).ok(),
            ));
        }
        let new = std::mem::take(&mut self.pending_new);
        for key in std::mem::take(&mut self.pending_dirty) {
            if new.contains(&key) && !self.pending.contains_key(&key) {
                continue; // held and released within one transaction
            }
            let value = self.pending.get(&key).and_then(|item| {
                serde_json::to_vec(&PendingRecord {
                    time: key.0,
                    class: key.1,
                    seq: key.2,
                    item: item.clone(),
                })
                .ok()
            });
            if value.is_none() && self.legacy.remove(&key.2) {
                out.push((
                    pending_key_under(LEGACY_PENDING_PREFIX, key.2),
                    StateKind::Pending,
                    None,
                ));
            }
            out.push((pending_key(key.2), StateKind::Pending, value));
        }
    }
}

/// The watermark record between stages: every input with an earlier event time from
/// `source_partition` has been written.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WatermarkRecord {
    source_partition: i32,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    watermark: DateTime<Utc>,
}

impl Core {
    /// The input topic whose partitions key the stage's state.
    fn keyed_input(&self) -> String {
        let t = &self.config.topics;
        match self.kind {
            StageKind::FanOut => t.alarms.clone(),
            StageKind::Circuits => t.impacts.clone(),
            StageKind::Incidents => t.incident_facts.clone(),
        }
    }

    /// Forget the batch in flight and every partition's state (after a lost assignment or
    /// an abort): what the last committed transaction left is restored on assignment.
    fn discard(&mut self) {
        self.views.clear();
        self.stale_views.clear();
        self.batch = BatchStats::default();
        match self.kind {
            StageKind::Circuits => self.live.views.clear_circuits(),
            StageKind::Incidents => self.live.views.clear_incidents(),
            StageKind::FanOut => {}
        }
        self.pending.clear();
        self.offsets.clear();
        self.offsets_dirty = false;
        self.fanout.clear();
        self.circuits.clear();
        self.incidents.clear();
        self.reported.clear();
        self.read_clock.clear();
        self.sent_on.clear();
        self.in_flight.clear();
        self.at_end.clear();
        self.to_restore.clear();
        self.restoring = None;
        self.rewind.clear();
        self.last_alarm.clear();
        self.owned.clear();
    }

    /// A record of the paused assignment was polled during a restore: its partition is
    /// read again from it (or an earlier one) once the restore is over.
    fn read_again(&mut self, topic: &str, partition: i32, offset: i64) {
        self.rewind
            .entry((topic.to_string(), partition))
            .and_modify(|o| *o = (*o).min(offset))
            .or_insert(offset);
    }

    fn changelog(&self) -> String {
        let t = &self.config.topics;
        match self.kind {
            StageKind::FanOut => t.fanout_changelog.clone(),
            StageKind::Circuits => t.circuit_changelog.clone(),
            StageKind::Incidents => t.incident_changelog.clone(),
        }
    }

    /// After an assignment: read the group's committed offsets (stable: no transaction of
    /// a previous owner still pending), then restore the state of the newly assigned
    /// partitions from the changelog, up to its high watermark at that point. Failures
    /// restart the stage.
    fn restore_assigned(
        &mut self,
        consumer: &BaseConsumer<StageContext>,
    ) -> Result<(), ServiceError> {
        if std::mem::take(&mut self.assigned) {
            self.begin_restore(consumer)?;
        }
        let Some(mut r) = self.restoring.take() else {
            return Ok(());
        };
        if self.restore_slice(&mut r)? {
            self.finish_restore(consumer, r)
        } else {
            self.restoring = Some(r);
            Ok(())
        }
    }

    /// Start restoring the partitions just assigned: their committed offsets, then a
    /// reader of their changelog partitions from the start to their current end.
    fn begin_restore(&mut self, consumer: &BaseConsumer<StageContext>) -> Result<(), ServiceError> {
        let retry = |e: KafkaError| ServiceError::Aborted(format!("restoring state: {e}"));
        let started = Instant::now();
        // An assignment starts from what the changelog holds and nothing else (the
        // assignor is eager: every partition was revoked before).
        let to_restore = std::mem::take(&mut self.to_restore);
        self.discard();
        self.to_restore = to_restore;
        let assignment = consumer.assignment().map_err(retry)?;
        self.owned = assignment
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        // Under read_committed, librdkafka asks for stable offsets (KIP-447): this waits
        // while a previous owner's transaction is pending.
        let committed = with_retries(&self.shutdown, || {
            consumer.committed_offsets(assignment.clone(), Duration::from_secs(10))
        })
        .map_err(retry)?;
        self.offsets.clear();
        for e in committed.elements() {
            if let Some(err) = e.error().err() {
                return Err(retry(err));
            }
            if let Offset::Offset(o) = e.offset() {
                self.offsets
                    .insert((e.topic().to_string(), e.partition()), o);
            }
        }
        let partitions: Vec<i32> = std::mem::take(&mut self.to_restore).into_iter().collect();
        let topic = self.changelog();
        let restorer: BaseConsumer = client_config(
            &self.config.bootstrap_servers,
            &self.config.client_overrides,
        )
        .set("group.id", format!("{}-restore", self.config.group_id))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.queue.backoff.ms", "20")
        .create()
        .map_err(retry)?;
        // The end to read to is the high watermark, which a read_uncommitted client
        // reports; a read_committed one reports the last stable offset, which can still
        // be before the previous owner's last committed transaction whose markers are not
        // written yet: the restore would stop short of it while the consumer resumes
        // after its offsets.
        let ends_client: BaseConsumer = client_config(
            &self.config.bootstrap_servers,
            &self.config.client_overrides,
        )
        .set("group.id", format!("{}-restore", self.config.group_id))
        .set("isolation.level", "read_uncommitted")
        .create()
        .map_err(retry)?;
        let mut tpl = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for p in &partitions {
            tpl.add_partition_offset(&topic, *p, Offset::Beginning)
                .map_err(retry)?;
            let (low, high) = with_retries(&self.shutdown, || {
                ends_client.fetch_watermarks(&topic, *p, Duration::from_secs(10))
            })
            .map_err(retry)?;
            // Nothing left to read (never written, or all compacted away): 0.
            ends.insert(*p, if high > low { high } else { 0 });
            match self.kind {
                StageKind::FanOut => {
                    // Quiet from the assignment on: an empty partition is idle only after
                    // `idle_after`, like any other.
                    self.last_alarm.insert(*p, Instant::now());
                    self.fanout.insert(*p, FanOut::new());
                }
                StageKind::Circuits => {
                    self.circuits.insert(*p, CircuitPartition::default());
                }
                StageKind::Incidents => {
                    self.incidents.insert(*p, IncidentPartition::default());
                }
            }
        }
        restorer.assign(&tpl).map_err(retry)?;
        gauge!(telemetry::RESTORE_PENDING, "stage" => self.kind.name())
            .set(partitions.len() as f64);
        // Partitions still to read: one is done when a record at its last offset has been
        // read, or when the consumer's position has reached the high watermark (a trailing
        // transaction marker moves the position past itself without a record).
        let open: BTreeSet<i32> = ends
            .iter()
            .filter(|(_, high)| **high > 0)
            .map(|(p, _)| *p)
            .collect();
        self.restoring = Some(Restore {
            restorer,
            topic,
            partitions,
            ends,
            open,
            records: 0,
            counted: 0,
            since_check: 0,
            progress: Instant::now(),
            last_log: Instant::now(),
            started,
        });
        Ok(())
    }

    /// Read the changelog for one slice of time; true once every partition is read to
    /// its end. The position is a round trip to librdkafka's thread: asked when the poll
    /// comes back empty or every 1 000 records, not per record (it cost 41 % of a restore).
    fn restore_slice(&mut self, r: &mut Restore) -> Result<bool, ServiceError> {
        let retry = |e: KafkaError| ServiceError::Aborted(format!("restoring state: {e}"));
        let slice_end = Instant::now() + RESTORE_SLICE;
        while !r.open.is_empty() && Instant::now() < slice_end {
            if r.progress.elapsed() > RESTORE_STALL {
                return Err(ServiceError::Aborted(format!(
                    "restoring state: nothing read from {} partitions {:?} for {}s \
                     (leader unavailable?)",
                    r.topic,
                    r.open,
                    RESTORE_STALL.as_secs()
                )));
            }
            match r.restorer.poll(Duration::from_millis(100)) {
                None => r.since_check = u32::MAX,
                Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => return Err(retry(e)),
                Some(Err(e)) => warn!(error = %e, "restore: consumer error; retrying"),
                Some(Ok(msg)) => {
                    r.records += 1;
                    r.progress = Instant::now();
                    r.since_check = r.since_check.saturating_add(1);
                    self.restore_record(&msg)?;
                    let p = msg.partition();
                    if r.ends.get(&p).is_some_and(|high| msg.offset() + 1 >= *high) {
                        r.open.remove(&p);
                    }
                }
            }
            if r.since_check >= 1_000 && !r.open.is_empty() {
                r.since_check = 0;
                let positions = r.restorer.position().map_err(retry)?;
                let before = r.open.len();
                let (topic, ends) = (&r.topic, &r.ends);
                r.open.retain(|p| {
                    let high = ends.get(p).copied().unwrap_or(0);
                    !positions
                        .find_partition(topic, *p)
                        .is_some_and(|e| matches!(e.offset(), Offset::Offset(o) if o >= high))
                });
                if r.open.len() < before {
                    r.progress = Instant::now();
                }
            }
            if r.last_log.elapsed() >= Duration::from_secs(5) {
                r.last_log = Instant::now();
                counter!(telemetry::RESTORE_RECORDS, "stage" => self.kind.name())
                    .increment(r.records - r.counted);
                r.counted = r.records;
                info!(
                    stage = self.kind.name(),
                    records = r.records,
                    "restoring state"
                );
            }
        }
        Ok(r.open.is_empty())
    }

    /// The restore is over: publish what it restored, and read the assignment's inputs
    /// from their committed offsets on.
    fn finish_restore(
        &mut self,
        consumer: &BaseConsumer<StageContext>,
        r: Restore,
    ) -> Result<(), ServiceError> {
        let retry = |e: KafkaError| ServiceError::Aborted(format!("restoring state: {e}"));
        let Restore {
            partitions,
            records,
            counted,
            started,
            ..
        } = r;
        counter!(telemetry::RESTORE_RECORDS, "stage" => self.kind.name())
            .increment(records - counted);
        // The restored (committed) state is what the views show; what follows reaches them
        // with the next commit.
        self.publish_all_views();
        // Replica facts that may have reached the previous owner's state only partly.
        if self.kind == StageKind::Circuits {
            let windows: Vec<MaintenanceWindow> =
                read(&self.replica).windows.values().cloned().collect();
            for w in windows {
                self.on_change(Change::Window(w));
            }
        }
        if let Ok(mut s) = self.summary.lock() {
            s.restored_records += records;
        }
        gauge!(telemetry::RESTORE_PENDING, "stage" => self.kind.name()).set(0.0);
        self.live
            .update_stage(self.kind.name(), |info| info.restoring = false);
        info!(
            stage = self.kind.name(),
            partitions = ?partitions,
            records,
            seconds = started.elapsed().as_secs_f64(),
            "state restored"
        );
        // A record polled before the pause took hold is read again.
        for ((topic, p), offset) in std::mem::take(&mut self.rewind) {
            consumer
                .seek(&topic, p, Offset::Offset(offset), Duration::from_secs(10))
                .map_err(retry)?;
        }
        let assignment = consumer.assignment().map_err(retry)?;
        consumer.resume(&assignment).map_err(retry)?;
        Ok(())
    }

    fn restore_record(&mut self, msg: &BorrowedMessage<'_>) -> Result<(), ServiceError> {
        let p = msg.partition();
        let raw_key = msg.key().unwrap_or_default();
        let key = String::from_utf8_lossy(raw_key).into_owned();
        let bad = |error: String| ServiceError::BadState {
            topic: msg.topic().to_string(),
            partition: p,
            key: key.escape_debug().to_string(),
            error,
        };
        let cfg = Arc::clone(&self.config);
        let policy = &cfg.policy;
        let entity = entity_kind(self.kind);
        let opened = msg
            .payload()
            .map(|bytes| open_state(bytes, entity))
            .transpose()
            .map_err(bad)?;
        let bookkeeping = |kind: StateKind| kind == StateKind::Meta || kind == StateKind::Pending;
        match self.kind {
            StageKind::FanOut => {
                let Some(fanout) = self.fanout.get_mut(&p) else {
                    return Ok(());
                };
                // The fan-out keeps no bookkeeping: every record is an alarm's (releases
                // before 0.2 sealed an alarm keyed `~meta` or `~pending/…` as bookkeeping).
                match opened {
                    Some((_, body)) => {
                        let record: AlarmRecord =
                            serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
                        fanout.import(&key, record);
                    }
                    None => fanout.import(&key, AlarmRecord::default()),
                }
            }
            StageKind::Circuits => {
                let Some(part) = self.circuits.get_mut(&p) else {
                    return Ok(());
                };
                match opened {
                    Some((StateKind::Figures, body)) => {
                        let id = figures_key_circuit(raw_key).ok_or_else(|| {
                            bad("figures under a key that is not a circuit's figures key".into())
                        })?;
                        part.states
                            .import_figures(id, body)
                            .map_err(|e| bad(e.to_string()))?;
                    }
                    // Written only with the circuit's own tombstone, which forgot them.
                    None if figures_key_circuit(raw_key).is_some() => {}
                    Some((kind, body)) if bookkeeping(kind) => {
                        if let Err(e) = part.buf.restore(raw_key, kind, body) {
                            // A release before 0.2 sealed a circuit keyed `~meta` or
                            // `~pending/…` as bookkeeping: read it as what it holds.
                            if raw_key.first() == Some(&INTERNAL_KEY_BYTE)
                                || part.states.import(&key, body, policy).is_err()
                            {
                                return Err(bad(e));
                            }
                        }
                    }
                    Some((_, body)) => part
                        .states
                        .import(&key, body, policy)
                        .map_err(|e| bad(e.to_string()))?,
                    None => {
                        if !part.buf.restore_tombstone(raw_key) {
                            part.states.forget(&key);
                        }
                    }
                }
                part.states.take_dirty();
                part.states.take_figures_dirty();
            }
            StageKind::Incidents => {
                let Some(part) = self.incidents.get_mut(&p) else {
                    return Ok(());
                };
                match opened {
                    Some((kind, body)) if bookkeeping(kind) => {
                        if let Err(e) = part.buf.restore(raw_key, kind, body) {
                            // As for circuits: an incident of a release before 0.2 keyed
                            // like bookkeeping.
                            match serde_json::from_slice(body) {
                                Ok(incident) if raw_key.first() != Some(&INTERNAL_KEY_BYTE) => {
                                    part.book.restore(incident);
                                }
                                _ => return Err(bad(e)),
                            }
                        }
                    }
                    Some((_, body)) => {
                        let incident =
                            serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
                        part.book.restore(incident);
                    }
                    None => {
                        if !part.buf.restore_tombstone(raw_key) {
                            part.book.forget_key(&key);
                        }
                    }
                }
                part.book.take_dirty();
            }
        }
        Ok(())
    }

    /// Process one input record.
    fn handle(&mut self, msg: &BorrowedMessage<'_>) {
        let p = msg.partition();
        if !self.owned.contains(&(msg.topic().to_string(), p)) {
            warn!(
                stage = self.kind.name(),
                topic = msg.topic(),
                partition = p,
                "record of a partition not owned; skipped"
            );
            return;
        }
        self.offsets
            .insert((msg.topic().to_string(), p), msg.offset() + 1);
        self.offsets_dirty = true;
        match self.batch.messages_in.get_mut(msg.topic()) {
            Some(n) => *n += 1,
            None => {
                self.batch.messages_in.insert(msg.topic().to_string(), 1);
            }
        }
        if let Some(ms) = msg.timestamp().to_millis() {
            self.batch.timestamps.push(ms);
        }
        if let Ok(mut s) = self.summary.lock() {
            s.inputs += 1;
        }
        let cfg = Arc::clone(&self.config);
        let t = &cfg.topics;
        match self.kind {
            StageKind::FanOut => {
                if msg.topic() == t.alarms_repartition {
                    // Sent on by the task of another partition: decoded and checked there.
                    self.last_alarm.insert(p, Instant::now());
                    match msg.payload().map(serde_json::from_slice::<Alarm>) {
                        Some(Ok(alarm)) => {
                            if let Err(reason) = self.fan_out(p, Input::Alarm(alarm)) {
                                self.reject(msg, &reason, None);
                            }
                        }
                        _ => self.reject(msg, &not_json("a repartitioned alarm"), None),
                    }
                    return;
                }
                if msg.topic() == t.alarms {
                    self.last_alarm.insert(p, Instant::now());
                    self.at_end.remove(&p);
                }
                let stream = if msg.topic() == t.alarms {
                    Stream::Alarms
                } else if msg.topic() == t.maintenance {
                    Stream::Maintenance
                } else {
                    Stream::Inventory
                };
                let decoded = decode_with(stream, msg.key(), msg.payload(), &cfg.intake);
                let batch = decoded.elements > 1;
                let mut failed = Vec::new();
                for (i, result) in decoded.results {
                    if let Err(reason) = result.and_then(|input| self.place_alarm(p, msg, input)) {
                        failed.push((i, reason));
                    }
                }
                if batch && !failed.is_empty() {
                    // Each rejection carries its own element, not the whole batch.
                    let elements = msg.payload().and_then(batch_elements).unwrap_or_default();
                    for (i, reason) in failed {
                        let element = elements.get(i).map(|e| e.get().as_bytes());
                        self.reject_with(msg, element.or(msg.payload()), &reason, Some(i));
                    }
                } else {
                    for (_, reason) in failed {
                        self.reject(msg, &reason, None);
                    }
                }
            }
            StageKind::Circuits => {
                if msg.topic() == t.commands || msg.topic() == t.commands_repartition {
                    let placed = msg.topic() == t.commands_repartition;
                    for result in decode(Stream::Commands, msg.key(), msg.payload()) {
                        let result = result.and_then(|input| {
                            if placed {
                                self.command(p, msg, input)
                            } else {
                                self.place_command(p, msg, input)
                            }
                        });
                        if let Err(reason) = result {
                            self.reject(msg, &reason, None);
                        }
                    }
                } else if let Some(w) = watermark_record(msg) {
                    match w {
                        Ok(w) => {
                            let upstream = self.alarm_partitions;
                            let known = self
                                .circuit_partition(p)
                                .is_some_and(|part| part.buf.report(&w, upstream));
                            if known {
                                self.release(p);
                            } else {
                                self.reject(msg, &bad_watermark(&w, upstream), None);
                            }
                        }
                        Err(()) => self.reject(msg, &not_json("a watermark record"), None),
                    }
                } else {
                    match msg.payload().map(serde_json::from_slice::<Impact>) {
                        Some(Ok(impact)) => {
                            if let Some(part) = self.circuit_partition(p) {
                                part.buf
                                    .hold(impact.event_time, 1, Pending::Impact { impact });
                            }
                            self.release(p);
                        }
                        _ => self.reject(msg, &not_json("an impact"), None),
                    }
                }
            }
            StageKind::Incidents => {
                let key = msg
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default();
                let upstream = self.impact_partitions;
                if let Some(w) = watermark_record(msg) {
                    match w {
                        Ok(w) => {
                            let known = self
                                .incident_partition(p)
                                .is_some_and(|part| part.buf.report(&w, upstream));
                            if known {
                                self.release_incidents(p);
                            } else {
                                self.reject(msg, &bad_watermark(&w, upstream), None);
                            }
                        }
                        Err(()) => self.reject(msg, &not_json("a watermark record"), None),
                    }
                    return;
                }
                match msg.payload().map(serde_json::from_slice::<TicketFacts>) {
                    Some(Ok(facts)) => {
                        if let Some(part) = self.incident_partition(p) {
                            part.buf.hold(facts.at, 0, (key, facts));
                        }
                        self.release_incidents(p);
                    }
                    _ => self.reject(msg, &not_json("ticket facts"), None),
                }
            }
        }
    }

    /// Stage 1: an alarm read on partition `p` of the alarms topic is applied there when
    /// its object hashes to `p` (the topic's contract: keyed by alarmed object, Kafka's
    /// default partitioner), else sent on to the partition that keeps its object's state;
    /// other inputs are applied here.
    fn place_alarm(
        &mut self,
        p: i32,
        msg: &BorrowedMessage<'_>,
        input: Input,
    ) -> Result<(), RejectReason> {
        let Input::Alarm(alarm) = &input else {
            return self.fan_out(p, input);
        };
        let home = partition_for_key(alarm.object.as_bytes(), self.alarm_partitions);
        if home == p {
            return self.fan_out(p, input);
        }
        // Checked here, so that a rejection carries the record as the NMS sent it (and a
        // time too far ahead moves no clock).
        check_not_in_future(alarm, Utc::now(), self.config.policy.max_future_skew())?;
        let bytes = serde_json::to_vec(alarm).map_err(|e| RejectReason::Inconsistent {
            detail: format!("the alarm cannot be sent on to its object's partition: {e}"),
        })?;
        // Read here, applied elsewhere: this partition's clock has seen it all the same.
        let read = self.read_clock.entry(p).or_insert(alarm.event_time);
        *read = (*read).max(alarm.event_time);
        let topic = self.config.topics.alarms_repartition.clone();
        self.sent_on.push((p, home, alarm.event_time));
        self.send_on(topic, home, alarm.object.as_bytes().to_vec(), bytes, msg);
        Ok(())
    }

    /// Stage 2: a command read on partition `p` of the commands topic is held there when
    /// its circuit hashes to `p`, else sent on to the partition that keeps the circuit's
    /// state (whatever the record's key or the producer's partitioner).
    fn place_command(
        &mut self,
        p: i32,
        msg: &BorrowedMessage<'_>,
        input: Input,
    ) -> Result<(), RejectReason> {
        let Input::Command(command) = &input else {
            return Ok(());
        };
        let home = partition_for_key(command.circuit_id.as_bytes(), self.impact_partitions);
        if home == p {
            return self.command(p, msg, input);
        }
        let bytes = serde_json::to_vec(command).map_err(|e| RejectReason::Inconsistent {
            detail: format!("the command cannot be sent on to its circuit's partition: {e}"),
        })?;
        let topic = self.config.topics.commands_repartition.clone();
        self.send_on(
            topic,
            home,
            command.circuit_id.as_bytes().to_vec(),
            bytes,
            msg,
        );
        Ok(())
    }

    /// Write `value` to partition `home` of a repartition topic, in this transaction,
    /// naming the record it came from.
    fn send_on(
        &mut self,
        topic: String,
        home: i32,
        key: Vec<u8>,
        value: Vec<u8>,
        msg: &BorrowedMessage<'_>,
    ) {
        let origin = Origin {
            topic: msg.topic().to_string(),
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        };
        counter!(telemetry::REPARTITIONED, "topic" => msg.topic().to_string()).increment(1);
        self.pending.push(Out {
            topic,
            partition: Some(home),
            key,
            value: Some(value),
            origin: serde_json::to_vec(&origin).ok(),
        });
    }

    /// Stage 1: one decoded input from the alarms, maintenance or inventory topic.
    fn fan_out(&mut self, p: i32, input: Input) -> Result<(), RejectReason> {
        let cfg = Arc::clone(&self.config);
        let policy = &cfg.policy;
        let replica = self.replica.clone();
        let r = read(&replica);
        match input {
            Input::Alarm(alarm) => {
                check_not_in_future(&alarm, Utc::now(), policy.max_future_skew())?;
                let Some(fanout) = self.fanout.get_mut(&p) else {
                    error!(
                        partition = p,
                        "no state for an assigned partition; input ignored"
                    );
                    return Ok(());
                };
                let impacts = fanout.on_alarm(&alarm, &r.network, policy);
                drop(r);
                self.send_impacts(impacts);
            }
            Input::Maintenance(window) => {
                if window.end <= window.start {
                    return Err(RejectReason::Inconsistent {
                        detail: format!(
                            "maintenance window {:?} ends before it starts",
                            window.window_id
                        ),
                    });
                }
                let notice = late_notice(&window, &r.network, policy);
                drop(r);
                if let Some(n) = notice {
                    self.route(vec![Output::Warning(Warning::LateNotice(n))]);
                }
            }
            // Applied by the replica; read here only so that a bad record is rejected once.
            Input::Inventory(_) | Input::CancelWindow { .. } | Input::Command(_) => {}
        }
        Ok(())
    }

    fn send_impacts(&mut self, impacts: Vec<Impact>) {
        let topic = self.config.topics.impacts.clone();
        for impact in impacts {
            match serde_json::to_vec(&impact) {
                Ok(bytes) => self.pending.push(Out {
                    topic: topic.clone(),
                    partition: None,
                    key: impact.circuit_id.clone().into_bytes(),
                    value: Some(bytes),
                    origin: None,
                }),
                Err(e) => warn!(error = %e, "cannot serialize an impact"),
            }
        }
    }

    /// Stage 2: a ticket command, held until the clock reaches its time.
    fn command(
        &mut self,
        p: i32,
        msg: &BorrowedMessage<'_>,
        input: Input,
    ) -> Result<(), RejectReason> {
        let Input::Command(command) = input else {
            return Ok(());
        };
        let now = Utc::now();
        let skew = self.config.policy.max_future_skew();
        if now
            .checked_add_signed(skew)
            .is_some_and(|limit| command.at > limit)
        {
            return Err(RejectReason::future_time(
                "command time",
                command.at,
                now,
                skew,
            ));
        }
        let (
            Source::Kafka {
                topic,
                partition,
                offset,
            },
            key,
        ) = source_of(msg)
        else {
            return Ok(());
        };
        let Some(part) = self.circuit_partition(p) else {
            return Ok(());
        };
        let at = command.at;
        part.buf.hold(
            at,
            0,
            Pending::Command {
                command,
                topic,
                partition,
                offset,
                key: key.map(|k| String::from_utf8_lossy(&k).into_owned()),
                original: String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned(),
            },
        );
        self.release(p);
        Ok(())
    }

    /// Stage 2: apply, in event-time order, the inputs of partition `p` older than its
    /// limit (the oldest fan-out watermark), firing the partition's timers up to each
    /// input's time first, as the replay's clock does; then fire the timers up to the
    /// limit.
    fn release(&mut self, p: i32) {
        let cfg = Arc::clone(&self.config);
        let policy = &cfg.policy;
        let replica = self.replica.clone();
        let upstream = self.alarm_partitions;
        let Some(limit) = self
            .circuits
            .get(&p)
            .and_then(|part| part.buf.limit(upstream))
        else {
            return;
        };
        loop {
            let Some(part) = self.circuits.get_mut(&p) else {
                return;
            };
            let Some((key, item)) = part.buf.next_ready(limit) else {
                break;
            };
            // The timers due before the input go out first, with their figures as of
            // their own time, as the replay's clock gives them.
            let timers = part.states.advance(key.0, policy);
            if !timers.is_empty() {
                self.circuit_outputs(p, timers);
            }
            let Some(part) = self.circuits.get_mut(&p) else {
                return;
            };
            let mut out = Vec::new();
            let mut rejected = None;
            match item {
                Pending::Impact { impact } => {
                    let r = read(&replica);
                    out.extend(part.states.on_impact(impact, &r.network, policy));
                }
                Pending::Command {
                    command,
                    topic,
                    partition,
                    offset,
                    key,
                    original,
                } => match part.states.on_command(&command, policy) {
                    Ok(o) => out.extend(o),
                    Err(reason) => {
                        rejected = Some((reason, topic, partition, offset, key, original))
                    }
                },
            }
            self.circuit_outputs(p, out);
            if let Some((reason, topic, partition, offset, key, original)) = rejected {
                let source = Source::Kafka {
                    topic,
                    partition,
                    offset,
                };
                let rej = Rejection::new(&reason, Some(original.as_bytes()), source, Utc::now())
                    .with_key(key.as_deref().map(str::as_bytes));
                self.push_rejection(rej, rejection_record_key(key.as_deref().map(str::as_bytes)));
            }
        }
        let Some(part) = self.circuits.get_mut(&p) else {
            return;
        };
        if part.buf.catch_up(limit) {
            let out = part.states.advance(limit, policy);
            self.circuit_outputs(p, out);
        }
    }

    /// Stage 3: fold in, in event-time order, the facts of partition `p` older than its
    /// limit (the oldest circuit-state clock), those of one instant together.
    fn release_incidents(&mut self, p: i32) {
        let upstream = self.impact_partitions;
        let Some(part) = self.incidents.get_mut(&p) else {
            return;
        };
        let Some(limit) = part.buf.limit(upstream) else {
            return;
        };
        let mut events = Vec::new();
        let mut batch: Vec<(String, TicketFacts)> = Vec::new();
        let mut batch_time = None;
        while let Some((key, item)) = part.buf.next_ready(limit) {
            if batch_time.is_some_and(|t| t != key.0) {
                events.extend(part.book.on_keyed_batch(std::mem::take(&mut batch)));
            }
            batch_time = Some(key.0);
            batch.push(item);
        }
        events.extend(part.book.on_keyed_batch(batch));
        part.buf.catch_up(limit);
        let parents = part.book.take_ticket_events();
        self.route(
            events
                .into_iter()
                .flat_map(IncidentEvent::into_parts)
                .map(|e| Output::Incident(Box::new(e)))
                .chain(
                    parents
                        .into_iter()
                        .map(|t| Output::ParentTicket(Box::new(t))),
                )
                .collect(),
        );
    }

    fn circuit_partition(&mut self, p: i32) -> Option<&mut CircuitPartition> {
        let part = self.circuits.get_mut(&p);
        if part.is_none() {
            error!(
                partition = p,
                "no state for an assigned partition; input ignored"
            );
        }
        part
    }

    fn incident_partition(&mut self, p: i32) -> Option<&mut IncidentPartition> {
        let part = self.incidents.get_mut(&p);
        if part.is_none() {
            error!(
                partition = p,
                "no state for an assigned partition; input ignored"
            );
        }
        part
    }

    /// Stage 2: outputs of one step, with the figures that follow each ticket event, and
    /// the facts of each ticket event for the incident stage.
    fn circuit_outputs(&mut self, p: i32, out: Vec<Output>) {
        let cfg = Arc::clone(&self.config);
        let policy = &cfg.policy;
        let facts_topic = self.config.topics.incident_facts.clone();
        let Some(part) = self.circuits.get_mut(&p) else {
            return;
        };
        let out = part.states.with_figures(out, policy);
        let mut facts = Vec::new();
        for o in &out {
            if let Output::Ticket(ev) = o {
                let f = TicketFacts::from_event(ev);
                let key = f.root.alarm_key.clone();
                if let Some(old) = part.states.hand_to_incident(&f.circuit_id, &key) {
                    facts.push((old, f.clone()));
                }
                facts.push((key, f));
            }
        }
        self.route(out);
        for (key, f) in facts {
            match serde_json::to_vec(&f) {
                Ok(bytes) => self.pending.push(Out {
                    topic: facts_topic.clone(),
                    partition: None,
                    key: key.into_bytes(),
                    value: Some(bytes),
                    origin: None,
                }),
                Err(e) => warn!(error = %e, "cannot serialize ticket facts"),
            }
        }
    }

    /// A replica change: stage 1 hits circuits added or re-routed under active alarms;
    /// stage 2 re-checks circuits and notes maintenance windows.
    fn on_change(&mut self, change: Change) {
        let cfg = Arc::clone(&self.config);
        let policy = &cfg.policy;
        let replica = self.replica.clone();
        let now = Utc::now();
        match self.kind {
            StageKind::FanOut => {
                let Change::Circuit(id) = change else {
                    return;
                };
                let r = read(&replica);
                let Some(circuit) = r.network.circuit(&id) else {
                    return;
                };
                let impacts: Vec<Impact> = self
                    .fanout
                    .values()
                    .flat_map(|f| f.on_circuit_changed(circuit, &r.network, now))
                    .collect();
                drop(r);
                self.send_impacts(impacts);
            }
            StageKind::Circuits => {
                let parts: Vec<i32> = self.circuits.keys().copied().collect();
                for p in parts {
                    let r = read(&replica);
                    let Some(part) = self.circuits.get_mut(&p) else {
                        continue;
                    };
                    let out = match &change {
                        Change::Circuit(id) if part.states.contains(id) => {
                            part.states.on_inventory(id, &r.network, now, policy)
                        }
                        Change::Circuit(_) => Vec::new(),
                        Change::Window(w) => part
                            .states
                            .on_window(w.clone(), &r.network, policy)
                            .unwrap_or_default(),
                        // The faults that noted the window count its time again, dated
                        // at the partition's event-time clock (the replay's clock when
                        // it reads the cancellation).
                        Change::WindowCancelled(id) => {
                            let at = part.buf.meta.clock.unwrap_or(now);
                            part.states.withdraw_window(id, at, policy)
                        }
                    };
                    drop(r);
                    self.circuit_outputs(p, out);
                }
            }
            StageKind::Incidents => {}
        }
    }

    /// Live timers. Stage 1 moves the watermark of partitions idle at their end to the
    /// wall clock and reports watermarks; stage 2 fires the timers of each partition up
    /// to its clock.
    fn tick(&mut self, consumer: &BaseConsumer<StageContext>, idle_after: Duration) {
        match self.kind {
            StageKind::FanOut => {
                let now = Utc::now();
                let partitions: Vec<i32> = self.fanout.keys().copied().collect();
                let positions = consumer.position().ok();
                let alarms = self.config.topics.alarms.clone();
                let repartition = self.config.topics.alarms_repartition.clone();
                self.confirm_in_flight();
                for p in partitions {
                    // Quiet since the last alarm read, or since the assignment.
                    let quiet = self
                        .last_alarm
                        .get(&p)
                        .is_some_and(|t| t.elapsed() >= idle_after);
                    // Quiet, and read to the end: the alarms partition and the partition
                    // of alarms sent on to it by the other tasks.
                    let at_end = self.at_end.contains(&p);
                    let idle = quiet
                        && [&alarms, &repartition]
                            .into_iter()
                            .all(|topic| self.read_to_end(topic, p, positions.as_ref(), at_end));
                    let applied = self.fanout.get(&p).and_then(FanOut::watermark);
                    let event_time = match (applied, self.read_clock.get(&p)) {
                        (Some(a), Some(r)) => Some(a.max(*r)),
                        (a, r) => a.or(r.copied()),
                    };
                    let mark = if idle {
                        Some(event_time.map_or(now, |w| w.max(now)))
                    } else {
                        event_time
                    };
                    let Some(mark) = mark else { continue };
                    // Not past an alarm sent on to another partition that its task has
                    // not read yet: the circuits' clock must not pass it before its
                    // impacts are out.
                    let held = self
                        .in_flight
                        .iter()
                        .filter(|f| f.from == p)
                        .map(|f| f.at)
                        .chain(
                            self.sent_on
                                .iter()
                                .filter(|(from, _, _)| *from == p)
                                .map(|(_, _, at)| *at),
                        )
                        .min();
                    let mark = held.map_or(mark, |h| h.min(mark));
                    // A quiet partition's watermark follows the wall clock in steps of a
                    // second at least, not at every tick: timers need no finer grain, and
                    // an idle service should not write a steady stream of watermarks.
                    let step = if idle {
                        chrono::Duration::seconds(1)
                    } else {
                        chrono::Duration::zero()
                    };
                    if self.reported.get(&p).is_some_and(|r| mark <= *r + step) {
                        continue;
                    }
                    self.reported.insert(p, mark);
                    self.broadcast_watermark(p, mark);
                }
            }
            StageKind::Circuits => {
                let parts: Vec<i32> = self.circuits.keys().copied().collect();
                for p in parts {
                    self.release(p);
                    // Report the partition's clock to the incident stage.
                    let Some(clock) = self.circuits.get(&p).and_then(|c| c.buf.meta.clock) else {
                        continue;
                    };
                    if self.reported.get(&p).is_some_and(|r| *r >= clock) {
                        continue;
                    }
                    self.reported.insert(p, clock);
                    self.broadcast_watermark(p, clock);
                }
            }
            StageKind::Incidents => {
                let parts: Vec<i32> = self.incidents.keys().copied().collect();
                for p in parts {
                    self.release_incidents(p);
                }
            }
        }
    }

    /// After a commit: the alarms it sent on are below the current end of their
    /// repartition partitions; each is in flight until the stage's group has committed an
    /// offset at or past that end on the partition.
    fn note_in_flight(&mut self) {
        if self.sent_on.is_empty() {
            return;
        }
        let topic = self.config.topics.alarms_repartition.clone();
        let mut oldest: BTreeMap<(i32, i32), DateTime<Utc>> = BTreeMap::new();
        for (from, to, at) in std::mem::take(&mut self.sent_on) {
            let t = oldest.entry((from, to)).or_insert(at);
            *t = (*t).min(at);
        }
        let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
        for ((from, to), at) in oldest {
            let end = match ends.get(&to) {
                Some(e) => *e,
                None => {
                    // Unknown: held until the partition's committed offset is past any
                    // end it may have had (the next query sees a real one).
                    let e = self
                        .probe
                        .fetch_watermarks(&topic, to, Duration::from_secs(5))
                        .map_or(i64::MAX, |(_, high)| high);
                    ends.insert(to, e);
                    e
                }
            };
            self.in_flight.push(InFlight { from, to, end, at });
        }
    }

    /// Forget the alarms in flight that their partition's task has read and committed.
    fn confirm_in_flight(&mut self) {
        if self.in_flight.is_empty() {
            return;
        }
        let topic = self.config.topics.alarms_repartition.clone();
        if self.group_probe.is_none() {
            let probe = client_config(
                &self.config.bootstrap_servers,
                &self.config.client_overrides,
            )
            .set(
                "group.id",
                format!("{}-{}", self.config.group_id, self.kind.name()),
            )
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create::<BaseConsumer>();
            match probe {
                Ok(c) => self.group_probe = Some(c),
                Err(e) => {
                    warn!(error = %e, "cannot read the stage's committed offsets");
                    return;
                }
            }
        }
        let Some(probe) = &self.group_probe else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        let targets: BTreeSet<i32> = self.in_flight.iter().map(|f| f.to).collect();
        for q in targets {
            tpl.add_partition(&topic, q);
        }
        let Ok(committed) = probe.committed_offsets(tpl, Duration::from_secs(2)) else {
            return;
        };
        self.in_flight.retain(|f| {
            let at = committed
                .find_partition(&topic, f.to)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            // A committed offset one short of the end is the transaction's closing marker.
            at.is_none_or(|o| o.saturating_add(1) < f.end)
        });
    }

    /// Has the stage read partition `p` of `topic` to its end? Where the stage is in the
    /// partition is the consumer's position once it has read a record, else the offset it
    /// resumed from: after a restart on a quiet network nothing is read, and the position
    /// stays unknown however old the partition's data.
    fn read_to_end(
        &self,
        topic: &str,
        p: i32,
        positions: Option<&TopicPartitionList>,
        at_end: bool,
    ) -> bool {
        let position = positions
            .and_then(|tpl| tpl.find_partition(topic, p))
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        let resumed = self.offsets.get(&(topic.to_string(), p)).copied();
        // Asked through a client of its own: on the stage consumer's connection the
        // request waits behind a fetch long-poll (fetch.wait.max.ms), which stalled the
        // stage for seconds.
        match self
            .probe
            .fetch_watermarks(topic, p, Duration::from_secs(2))
        {
            // librdkafka moves a position it knows past transaction markers. Without one,
            // the consumer starts at the offset it resumed from (at least the partition's
            // start: records may have been deleted meanwhile); there one record short of
            // the end is a closing marker once the consumer has said it is at the end.
            Ok((low, high)) => match (position, resumed) {
                (Some(o), _) => o >= high,
                (None, Some(r)) => {
                    let r = r.clamp(low, high);
                    r >= high || (at_end && r + 1 >= high)
                }
                (None, None) => low == high,
            },
            Err(_) => false,
        }
    }

    /// Tell every partition of the next stage's input that partition `p` of this stage has
    /// written everything older than `watermark`.
    fn broadcast_watermark(&mut self, p: i32, watermark: DateTime<Utc>) {
        let (topic, partitions) = match self.kind {
            StageKind::FanOut => (self.config.topics.impacts.clone(), self.impact_partitions),
            StageKind::Circuits => (
                self.config.topics.incident_facts.clone(),
                self.facts_partitions,
            ),
            StageKind::Incidents => return,
        };
        let record = WatermarkRecord {
            source_partition: p,
            watermark,
        };
        let Ok(bytes) = serde_json::to_vec(&record) else {
            return;
        };
        for target in 0..partitions {
            self.pending.push(Out {
                topic: topic.clone(),
                partition: Some(target),
                key: WATERMARK_KEY.to_vec(),
                value: Some(bytes.clone()),
                origin: None,
            });
        }
    }

    /// Serialize engine outputs to their topics. Ticket events, warnings and incidents are
    /// logged, one line each; nothing per alarm at info.
    fn route(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            let topic = self.config.topics.sink(output.sink()).to_string();
            match &output {
                Output::Ticket(ev) => {
                    if let Ok(mut s) = self.summary.lock() {
                        s.ticket_events += 1;
                    }
                    *self
                        .batch
                        .ticket_events
                        .entry(telemetry::serde_name(&ev.sla_event))
                        .or_default() += 1;
                    info!(
                        ticket = %ev.ticket().id,
                        circuit = %output.key(),
                        event = ?ev.sla_event,
                        status = ?ev.ticket().status,
                        "ticket event"
                    );
                }
                Output::Warning(w) => info!(warning = ?w, "SLA warning"),
                Output::Incident(i) => info!(
                    incident = %i.incident_id,
                    status = ?i.status,
                    circuits = i.circuit_count,
                    down = i.down_count,
                    "incident"
                ),
                Output::ParentTicket(t) => info!(
                    ticket = %t.ticket().id,
                    status = ?t.ticket().status,
                    circuits = t.ticket().incident.circuit_count,
                    "parent ticket"
                ),
                Output::Reminder(_) | Output::Line(_) | Output::Figures(_) => {}
            }
            match output.to_json_as(self.config.tmf621) {
                Ok(bytes) => self.pending.push(Out {
                    topic,
                    partition: None,
                    key: output.key().into_bytes(),
                    value: Some(bytes),
                    origin: None,
                }),
                Err(e) => warn!(error = %e, "cannot serialize an output"),
            }
        }
    }

    /// A rejection carrying the reason, the original bytes and where the record came from.
    fn reject(&mut self, msg: &BorrowedMessage<'_>, reason: &RejectReason, index: Option<usize>) {
        self.reject_with(msg, msg.payload(), reason, index);
    }

    /// [`Core::reject`] with `original` standing for the record's value (a batch's
    /// element).
    fn reject_with(
        &mut self,
        msg: &BorrowedMessage<'_>,
        original: Option<&[u8]>,
        reason: &RejectReason,
        index: Option<usize>,
    ) {
        let (source, key) = source_of(msg);
        let mut rej = Rejection::new(reason, original, source, Utc::now()).with_key(key.as_deref());
        if let Some(i) = index {
            rej = rej.with_batch_index(i);
        }
        self.push_rejection(rej, rejection_record_key(key.as_deref()));
    }

    fn push_rejection(&mut self, rej: Rejection, key: Vec<u8>) {
        warn!(reason = %rej.reason, code = %rej.reason_code, "input rejected");
        *self
            .batch
            .rejections
            .entry(rej.reason_code.as_str())
            .or_default() += 1;
        if let Ok(mut s) = self.summary.lock() {
            s.rejected += 1;
        }
        match serde_json::to_vec(&rej) {
            Ok(bytes) => self.pending.push(Out {
                topic: self.config.topics.rejected.clone(),
                partition: None,
                key,
                value: Some(bytes),
                origin: None,
            }),
            Err(e) => warn!(error = %e, "cannot serialize a rejection"),
        }
    }

    /// After a commit: publish the batch's view changes and count what it carried.
    fn committed(&mut self) {
        let mut out: BTreeMap<&str, u64> = BTreeMap::new();
        for o in &self.pending {
            *out.entry(o.topic.as_str()).or_default() += 1;
        }
        for (topic, n) in out {
            counter!(telemetry::MESSAGES_OUT, "topic" => topic.to_string()).increment(n);
        }
        if self.kind == StageKind::Circuits && self.views_refreshed.elapsed() >= VIEW_REFRESH {
            self.views_refreshed = Instant::now();
            self.refresh_down_views();
        }
        if self.views_published.elapsed() >= VIEW_PUBLISH {
            self.publish_stale_views();
        }
        let views = &self.live.views;
        for update in self.views.drain(..) {
            match update {
                ViewUpdate::Incident(key, Some(record)) => views.put_incident(&key, *record),
                ViewUpdate::Incident(key, None) => views.remove_incident(&key),
            }
        }
        let batch = std::mem::take(&mut self.batch);
        for (topic, n) in batch.messages_in {
            counter!(telemetry::MESSAGES_IN, "topic" => topic).increment(n);
        }
        for (event, n) in batch.ticket_events {
            counter!(telemetry::TICKET_EVENTS, "event" => event).increment(n);
        }
        for (reason, n) in batch.rejections {
            counter!(telemetry::REJECTIONS, "reason" => reason).increment(n);
        }
        let now = Utc::now().timestamp_millis();
        let latency = histogram!(telemetry::PROCESSING_LATENCY, "stage" => self.kind.name());
        for ms in batch.timestamps {
            latency.record((now - ms).max(0) as f64 / 1000.0);
        }
    }

    /// Build and publish the views of the circuits changed since the last call. Called
    /// when the state in memory is the committed state (after a commit, or when there was
    /// nothing to commit).
    fn publish_stale_views(&mut self) {
        self.views_published = Instant::now();
        if self.stale_views.is_empty() {
            return;
        }
        let replica = read(&self.replica);
        let views = &self.live.views;
        for (p, id) in std::mem::take(&mut self.stale_views) {
            let Some(part) = self.circuits.get(&p) else {
                continue;
            };
            match part.states.view(
                &id,
                p,
                &replica.network,
                &self.config.policy,
                part.buf.meta.clock,
            ) {
                Some(view) => views.put_circuit(view),
                None => views.remove_circuit(&id),
            }
        }
    }

    /// The views of the circuits now down, their figures as of the partition's clock (their
    /// outage grows between two figure records). Called after a commit, when the state
    /// in memory is the committed state.
    fn refresh_down_views(&self) {
        let replica = read(&self.replica);
        for (p, part) in &self.circuits {
            let Some(clock) = part.buf.meta.clock else {
                continue;
            };
            let down: Vec<&str> = part
                .states
                .faults()
                .filter(|f| f.is_down())
                .map(|f| f.circuit_id.as_str())
                .collect();
            for id in down {
                if let Some(view) =
                    part.states
                        .view(id, *p, &replica.network, &self.config.policy, Some(clock))
                {
                    self.live.views.put_circuit(view);
                }
            }
        }
    }

    /// After a restore: publish the views of everything restored.
    fn publish_all_views(&mut self) {
        let views = &self.live.views;
        let replica = read(&self.replica);
        for (p, part) in &self.circuits {
            for id in part.states.ids() {
                if let Some(view) = part.states.view(
                    id,
                    *p,
                    &replica.network,
                    &self.config.policy,
                    part.buf.meta.clock,
                ) {
                    views.put_circuit(view);
                }
            }
        }
        for part in self.incidents.values() {
            for incident in part.book.incidents() {
                if let Some(record) = incident.record() {
                    views.put_incident(incident.root_key(), record);
                }
            }
        }
    }

    /// Stage 3 folds in the batch's facts; every stage writes the changelog records of the
    /// state it changed.
    fn flush_state(&mut self) {
        let changelog = self.changelog();
        let mut records = Vec::new();
        for (p, fanout) in &mut self.fanout {
            for key in fanout.take_dirty() {
                let value = fanout
                    .export(&key)
                    .and_then(|r| serde_json::to_vec(&r).ok());
                records.push((*p, key.into_bytes(), StateKind::Entity, value));
            }
        }
        for (p, part) in &mut self.circuits {
            for key in part.states.take_dirty() {
                let value = part.states.export(&key).ok().flatten();
                self.stale_views.insert((*p, key.clone()));
                if value.is_none() {
                    // A circuit without state has no figures either.
                    records.push((*p, figures_key(&key), StateKind::Figures, None));
                }
                records.push((*p, key.into_bytes(), StateKind::Entity, value));
            }
            for key in part.states.take_figures_dirty() {
                if let Some(value) = part.states.export_figures(&key).ok().flatten() {
                    records.push((*p, figures_key(&key), StateKind::Figures, Some(value)));
                }
            }
            let mut buffered = Vec::new();
            part.buf.changelog(&mut buffered);
            records.extend(buffered.into_iter().map(|(k, kind, v)| (*p, k, kind, v)));
        }
        for (p, part) in &mut self.incidents {
            for key in part.book.take_dirty() {
                let incident = part.book.get(&key);
                let value = incident.and_then(|i| serde_json::to_vec(i).ok());
                let record = incident.and_then(|i| i.record()).map(Box::new);
                self.views.push(ViewUpdate::Incident(key.clone(), record));
                records.push((*p, key.into_bytes(), StateKind::Entity, value));
            }
            let mut buffered = Vec::new();
            part.buf.changelog(&mut buffered);
            records.extend(buffered.into_iter().map(|(k, kind, v)| (*p, k, kind, v)));
        }
        for (p, key, kind, value) in records {
            let value = value.map(|state| seal_state(kind.name(self.kind), &state));
            self.pending.push(Out {
                topic: changelog.clone(),
                partition: Some(p),
                key,
                value,
                origin: None,
            });
        }
    }

    /// Write the batch in flight, its state changes and its offsets in one transaction.
    fn commit(&mut self, consumer: &BaseConsumer<StageContext>) -> Result<(), ServiceError> {
        self.flush_state();
        if self.pending.is_empty() && !self.offsets_dirty {
            // Never commit an empty transaction; the state in memory is the committed one.
            self.publish_stale_views();
            return Ok(());
        }
        let started = Instant::now();
        let result = self.transact(consumer);
        let stage = self.kind.name();
        histogram!(telemetry::TRANSACTION_DURATION, "stage" => stage)
            .record(started.elapsed().as_secs_f64());
        let outcome = if result.is_ok() {
            "committed"
        } else {
            "aborted"
        };
        counter!(telemetry::TRANSACTIONS, "stage" => stage, "outcome" => outcome).increment(1);
        match &result {
            Ok(()) => {
                if let Ok(mut s) = self.summary.lock() {
                    s.transactions += 1;
                }
                if self.live.note_commit(stage) {
                    gauge!(telemetry::STAGE_STALLED, "stage" => stage).set(0.0);
                }
                self.committed();
                self.note_in_flight();
                debug!(
                    stage = self.kind.name(),
                    records = self.pending.len(),
                    "committed"
                );
                self.pending.clear();
                self.offsets_dirty = false;
            }
            Err(_) => self.discard(),
        }
        result
    }

    /// How long a transaction call may wait: the transaction timeout, or once the service
    /// is stopping, a short grace.
    fn patience(&self) -> Duration {
        if self.shutdown.load(Ordering::Relaxed) {
            SHUTDOWN_GRACE
        } else {
            TXN_TIMEOUT
        }
    }

    fn transact(&mut self, consumer: &BaseConsumer<StageContext>) -> Result<(), ServiceError> {
        let producer = &self.producer;
        let patience = self.patience();
        let watch = &self.watch;
        let stage = self.kind;
        watch
            .watched(stage, || producer.begin_transaction())
            .map_err(classify)?;
        for out in &self.pending {
            let size = out.key.len() + out.value.as_ref().map_or(0, Vec::len);
            if size > MAX_RECORD_BYTES {
                // Inputs are bounded at intake so that no output gets here; one that does
                // anyway is left out rather than fail every retry of the transaction.
                error!(
                    topic = %out.topic,
                    key = %String::from_utf8_lossy(out.key.get(..64).unwrap_or(&out.key)),
                    bytes = size,
                    "an output record over the size limit is left out (a bug; please report it)"
                );
                counter!(telemetry::OVERSIZED_RECORDS, "topic" => out.topic.clone()).increment(1);
                continue;
            }
            let mut record = BaseRecord::to(&out.topic).key(&out.key);
            if let Some(v) = &out.value {
                record = record.payload(v);
            }
            if let Some(p) = out.partition {
                record = record.partition(p);
            }
            if let Some(origin) = &out.origin {
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: ORIGIN_HEADER,
                    value: Some(origin),
                }));
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(abort(producer, e, patience)),
                }
            }
        }
        // Every owned partition's offset goes with every transaction, read or not, so
        // that the group coordinator fences a member whose generation is over (a zombie)
        // even when it only fires timers.
        if !self.offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for ((topic, p), next) in &self.offsets {
                if let Err(e) = tpl.add_partition_offset(topic, *p, Offset::Offset(*next)) {
                    return Err(abort(producer, e, patience));
                }
            }
            let Some(metadata) = consumer.group_metadata() else {
                let _ = producer.abort_transaction(patience);
                return Err(ServiceError::Aborted(
                    "the consumer has no group metadata yet".into(),
                ));
            };
            let sent = watch.watched(stage, || {
                producer.send_offsets_to_transaction(&tpl, &metadata, patience)
            });
            if let Err(e) = sent {
                return Err(abort(producer, e, patience));
            }
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            let patience = self.patience();
            match watch.watched(stage, || crate::kafka::commit_drained(producer, patience)) {
                Ok(()) => return Ok(()),
                // Stopping, and the broker does not answer: give the transaction up. It
                // is aborted by the coordinator (or by the next producer with this
                // transactional id), and the next owner resumes from the last commit.
                Err(e) if self.shutdown.load(Ordering::Relaxed) => {
                    return Err(ServiceError::Aborted(format!(
                        "commit given up at shutdown: {e}"
                    )));
                }
                // An ambiguous commit is retried, never reprocessed (librdkafka #4558)...
                Err(KafkaError::Transaction(e))
                    if e.is_retriable() && attempts < COMMIT_ATTEMPTS =>
                {
                    warn!(error = %e, attempts, "retrying transaction commit");
                }
                // ...a bounded number of times: then the stage starts again from the last
                // commit, and its new producer (same transactional id) settles this one.
                Err(KafkaError::Transaction(e)) if e.is_retriable() => {
                    return Err(ServiceError::Aborted(format!(
                        "transaction commit still ambiguous after {attempts} attempts: {e}"
                    )));
                }
                Err(e) => return Err(abort(producer, e, patience)),
            }
        }
    }
}

/// Version of the changelog records' state bodies; a reader meeting another stops rather
/// than guess (see `topics/schemas/state.schema.json`).
const STATE_VERSION: u32 = 1;

/// A changelog record to write: key, what it holds, value (`None`: a tombstone).
type StateRecord = (Vec<u8>, StateKind, Option<Vec<u8>>);

/// What a changelog record holds: an entity of the stage (an alarm's fan-out, a circuit,
/// an incident), or the partition's bookkeeping. The envelope names it, so that a record
/// is read for what it is whatever its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StateKind {
    Entity,
    Meta,
    Pending,
    /// A circuit's last emitted figures (circuit-state changelog, key
    /// [`figures_key`]): apart from the circuit's record, so that they are written only
    /// when they change.
    Figures,
}

/// Suffix of the key of a circuit's figures record: the byte 0xFF, which no id (UTF-8
/// text) holds, then `figures`.
const FIGURES_KEY_SUFFIX: &[u8] = b"\xFFfigures";

/// The changelog key of circuit `id`'s figures record.
fn figures_key(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + FIGURES_KEY_SUFFIX.len());
    key.extend_from_slice(id.as_bytes());
    key.extend_from_slice(FIGURES_KEY_SUFFIX);
    key
}

/// The circuit id of a figures record's key; `None` for any other key.
fn figures_key_circuit(key: &[u8]) -> Option<&str> {
    key.strip_suffix(FIGURES_KEY_SUFFIX)
        .and_then(|id| std::str::from_utf8(id).ok())
}

/// The envelope name of the entities of `stage`'s changelog.
fn entity_kind(stage: StageKind) -> &'static str {
    match stage {
        StageKind::FanOut => "fanout",
        StageKind::Circuits => "circuit",
        StageKind::Incidents => "incident",
    }
}

impl StateKind {
    fn name(self, stage: StageKind) -> &'static str {
        match self {
            StateKind::Entity => entity_kind(stage),
            StateKind::Meta => "meta",
            StateKind::Pending => "pending",
            StateKind::Figures => "figures",
        }
    }
}

/// Wrap a state body in its changelog envelope: `{"kind", "version", "state"}`.
fn seal_state(kind: &str, state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(state.len() + 48);
    out.extend_from_slice(b"{\"kind\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"version\":");
    out.extend_from_slice(STATE_VERSION.to_string().as_bytes());
    out.extend_from_slice(b",\"state\":");
    out.extend_from_slice(state);
    out.push(b'}');
    out
}

/// The kind and state body of a changelog record, if its kind is `entity` or the
/// bookkeeping's and its version the expected one.
fn open_state<'a>(bytes: &'a [u8], entity: &str) -> Result<(StateKind, &'a [u8]), String> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        kind: std::borrow::Cow<'a, str>,
        version: u32,
        #[serde(borrow)]
        state: &'a serde_json::value::RawValue,
    }
    let e: Envelope<'_> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let kind = match &*e.kind {
        k if k == entity => Some(StateKind::Entity),
        "meta" => Some(StateKind::Meta),
        "pending" => Some(StateKind::Pending),
        "figures" if entity == entity_kind(StageKind::Circuits) => Some(StateKind::Figures),
        _ => None,
    };
    match kind {
        // The body is read where it lies in the record, not copied.
        Some(kind) if e.version == STATE_VERSION => Ok((kind, e.state.get().as_bytes())),
        _ => Err(format!(
            "state of kind {:?} version {}, expected {entity:?}, \"meta\", \"pending\" or \
             (circuits) \"figures\" version {STATE_VERSION}",
            e.kind, e.version
        )),
    }
}

/// A watermark record between stages: `Some(Ok)` for one, `Some(Err)` for a record under
/// the watermark key that is not one, `None` for any other record. A record under the key
/// of releases before 0.2 counts only when it reads as a watermark (an entity may be named
/// `~watermark`).
fn watermark_record(msg: &BorrowedMessage<'_>) -> Option<Result<WatermarkRecord, ()>> {
    let parsed = || {
        msg.payload()
            .and_then(|bytes| serde_json::from_slice::<WatermarkRecord>(bytes).ok())
    };
    match msg.key() {
        Some(WATERMARK_KEY) => Some(parsed().ok_or(())),
        Some(LEGACY_WATERMARK_KEY) => parsed().map(Ok),
        _ => None,
    }
}

/// The input record a repartitioned record was read from.
#[derive(Debug, Serialize, Deserialize)]
struct Origin {
    topic: String,
    partition: i32,
    offset: i64,
    /// The input record's key, as text (a key that is not UTF-8 has its bad bytes
    /// replaced); `None` for a record without a key.
    key: Option<String>,
}

/// The input record a repartitioned record was read from (its `linewatch-origin`
/// header); `None` for any other record.
fn origin_of(msg: &BorrowedMessage<'_>) -> Option<Origin> {
    msg.headers().and_then(|headers| {
        headers
            .iter()
            .find(|h| h.key == ORIGIN_HEADER)
            .and_then(|h| h.value)
            .and_then(|v| serde_json::from_slice::<Origin>(v).ok())
    })
}

/// Where a record came from, for a rejection: the input record a repartitioned record was
/// read from, else the record itself; and that record's key.
fn source_of(msg: &BorrowedMessage<'_>) -> (Source, Option<Vec<u8>>) {
    match origin_of(msg) {
        Some(o) => (
            Source::Kafka {
                topic: o.topic,
                partition: o.partition,
                offset: o.offset,
            },
            o.key.map(String::into_bytes),
        ),
        None => (
            Source::Kafka {
                topic: msg.topic().into(),
                partition: msg.partition(),
                offset: msg.offset(),
            },
            msg.key().map(<[u8]>::to_vec),
        ),
    }
}

fn bad_watermark(w: &WatermarkRecord, upstream: i32) -> RejectReason {
    RejectReason::Invalid {
        field: "sourcePartition".into(),
        problem: format!(
            "watermark from partition {} of an upstream topic with {upstream} partitions",
            w.source_partition
        ),
    }
}

fn not_json(what: &str) -> RejectReason {
    RejectReason::Invalid {
        field: "(record value)".into(),
        problem: format!("not {what} as linewatch writes it"),
    }
}

/// Abort after an abortable error; a fatal error (fenced) is reported as such.
fn abort(producer: &BaseProducer, error: KafkaError, patience: Duration) -> ServiceError {
    let e = classify(error);
    if matches!(e, ServiceError::Aborted(_)) {
        let _ = producer.abort_transaction(patience);
    }
    e
}

fn classify(error: KafkaError) -> ServiceError {
    match &error {
        KafkaError::Transaction(e) if e.is_fatal() => ServiceError::Fenced(error.to_string()),
        KafkaError::Transaction(e) if e.txn_requires_abort() => {
            ServiceError::Aborted(error.to_string())
        }
        _ => ServiceError::Aborted(error.to_string()),
    }
}

fn replica_consumer(config: &ServiceConfig) -> Result<BaseConsumer, ServiceError> {
    let mut cfg = client_config(&config.bootstrap_servers, &config.client_overrides);
    cfg.set("group.id", format!("{}-replica-unused", config.group_id))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.queue.backoff.ms", "20");
    Ok(cfg.create()?)
}

fn partition_count<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    stop: &AtomicBool,
) -> Result<i32, ServiceError> {
    let metadata = with_retries(stop, || {
        consumer.fetch_metadata(Some(topic), Duration::from_secs(10))
    })?;
    let n = metadata
        .topics()
        .iter()
        .map(|t| t.partitions().len())
        .sum::<usize>();
    if n == 0 {
        return Err(ServiceError::Kafka(KafkaError::MetadataFetch(
            RDKafkaErrorCode::UnknownTopicOrPartition,
        )));
    }
    Ok(i32::try_from(n).unwrap_or(i32::MAX))
}

/// A polled record, or `None` after a transient consumer error (a broker restarting,
/// a connection lost), which is logged and retried by librdkafka; only a fatal consumer
/// error stops the service.
fn usable(
    msg: Result<BorrowedMessage<'_>, KafkaError>,
) -> Result<Option<BorrowedMessage<'_>>, ServiceError> {
    match msg {
        Ok(m) => Ok(Some(m)),
        Err(e @ KafkaError::MessageConsumptionFatal(_)) => Err(ServiceError::Kafka(e)),
        Err(KafkaError::PartitionEOF(_)) => Ok(None),
        Err(e) => {
            warn!(error = %e, "consumer error; retrying");
            Ok(None)
        }
    }
}

/// A partition of a replica topic and its high watermark when the service started.
type Mark = (String, i32, i64);

/// Assign every partition of `topics` from the beginning; return the high watermarks now.
fn assign_from_start(
    consumer: &BaseConsumer,
    topics: &[&str],
    stop: &AtomicBool,
) -> Result<Vec<Mark>, ServiceError> {
    let mut tpl = TopicPartitionList::new();
    let mut marks = Vec::new();
    for topic in topics {
        let metadata = with_retries(stop, || {
            consumer.fetch_metadata(Some(topic), Duration::from_secs(10))
        })?;
        for t in metadata.topics() {
            if let Some(err) = t.error() {
                return Err(ServiceError::Kafka(KafkaError::MetadataFetch(err.into())));
            }
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
                let (_, high) = with_retries(stop, || {
                    consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                })?;
                marks.push(((*topic).to_string(), p.id(), high));
            }
        }
    }
    consumer.assign(&tpl)?;
    Ok(marks)
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

fn caught_up(consumer: &BaseConsumer, marks: &[Mark]) -> Result<bool, ServiceError> {
    let positions = consumer.position()?;
    Ok(marks.iter().all(|(topic, partition, high)| {
        *high == 0
            || positions
                .find_partition(topic, *partition)
                .is_some_and(|e| matches!(e.offset(), Offset::Offset(o) if o >= *high))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_call_that_outlasts_its_limit_is_seen_with_its_stage() {
        let calls = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
        let limit = Duration::from_secs(90);
        let at = |s: u64| Duration::from_secs(s);
        assert_eq!(
            stuck_call(&calls, at(500), limit),
            None,
            "no call in progress"
        );
        // The circuit stage entered a call 10 s after the origin.
        calls[StageKind::Circuits.index()].store(10_000 + 1, Ordering::Relaxed);
        assert_eq!(
            stuck_call(&calls, at(99), limit),
            None,
            "89 s: within the limit"
        );
        assert_eq!(
            stuck_call(&calls, at(100), limit),
            Some((StageKind::Circuits, at(90)))
        );
        // Back from the call: nothing stuck, however late.
        calls[StageKind::Circuits.index()].store(0, Ordering::Relaxed);
        assert_eq!(stuck_call(&calls, at(1000), limit), None);
        // A call that began at the origin itself is seen too (stored as 1).
        calls[StageKind::Incidents.index()].store(1, Ordering::Relaxed);
        assert_eq!(
            stuck_call(&calls, at(95), limit),
            Some((StageKind::Incidents, at(95)))
        );
    }

    #[test]
    fn a_watched_call_is_in_progress_only_while_it_runs() {
        let watch = CallWatch::new();
        let seen = watch.watched(StageKind::FanOut, || {
            watch.calls[StageKind::FanOut.index()].load(Ordering::Relaxed)
        });
        assert!(seen > 0, "marked during the call");
        assert_eq!(
            watch.calls[StageKind::FanOut.index()].load(Ordering::Relaxed),
            0,
            "cleared after it"
        );
        assert_eq!(watch.stuck(Duration::ZERO), None);
    }

    fn t(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, 10, minute, 0)
            .single()
            .expect("time")
    }

    fn wm(source_partition: i32, minute: u32) -> WatermarkRecord {
        WatermarkRecord {
            source_partition,
            watermark: t(minute),
        }
    }

    #[test]
    fn a_buffer_releases_in_event_time_order_once_every_upstream_partition_has_passed() {
        let mut buf: Buffer<String> = Buffer::default();
        buf.hold(t(7), 1, "impact at :07".to_string());
        buf.hold(t(3), 1, "impact at :03".to_string());
        buf.hold(t(3), 0, "command at :03".to_string());
        assert_eq!(buf.limit(2), None, "no watermark yet");
        assert!(buf.report(&wm(0, 10), 2));
        assert_eq!(buf.limit(2), None, "partition 1 has not reported");
        assert!(buf.report(&wm(1, 5), 2));
        assert!(!buf.report(&wm(2, 9), 2), "no partition 2 upstream");
        let limit = buf.limit(2).expect("both reported");
        assert_eq!(limit, t(5));
        let released: Vec<_> = std::iter::from_fn(|| buf.next_ready(limit))
            .map(|(_, item)| item)
            .collect();
        assert_eq!(released, ["command at :03", "impact at :03"]);
        assert_eq!(buf.meta.clock, Some(t(3)));
        assert!(buf.catch_up(limit));
        assert!(!buf.catch_up(t(4)), "the clock never goes back");
        // A watermark never goes back either.
        buf.report(&wm(1, 2), 2);
        assert_eq!(buf.limit(2), Some(t(5)));
        buf.report(&wm(1, 8), 2);
        let limit = buf.limit(2).expect("limit");
        assert_eq!(
            buf.next_ready(limit).map(|(_, i)| i),
            Some("impact at :07".to_string())
        );
    }

    #[test]
    fn a_buffer_comes_back_from_its_changelog_records() {
        let mut buf: Buffer<String> = Buffer::default();
        buf.report(&wm(0, 9), 1);
        buf.hold(t(4), 1, "a".into());
        buf.hold(t(2), 1, "b".into());
        let mut records = Vec::new();
        buf.changelog(&mut records);
        let _ = buf.next_ready(t(9));
        buf.changelog(&mut records);
        let mut back: Buffer<String> = Buffer::default();
        for (key, kind, value) in &records {
            assert_eq!(
                key.first(),
                Some(&INTERNAL_KEY_BYTE),
                "a key no input can have"
            );
            match value {
                Some(body) => back.restore(key, *kind, body).expect("readable"),
                None => assert!(back.restore_tombstone(key), "a buffer key"),
            }
        }
        assert!(!back.restore_tombstone(b"DL-0001"), "not a buffer key");
        // An entity named like a bookkeeping key of an older release stays an entity.
        assert!(!back.restore_tombstone(b"~pending/77"));
        assert!(!back.restore_tombstone(b"~meta"));
        assert_eq!(back.pending, buf.pending);
        assert_eq!(back.meta.next_seq, 2);
        assert_eq!(back.meta.watermarks, buf.meta.watermarks);
    }

    #[test]
    fn an_input_held_and_released_within_one_transaction_is_never_written() {
        let mut buf: Buffer<String> = Buffer::default();
        buf.report(&wm(0, 9), 1);
        buf.hold(t(2), 1, "gone".into());
        buf.hold(t(12), 1, "kept".into());
        let released = buf.next_ready(t(9)).map(|(_, item)| item);
        assert_eq!(released.as_deref(), Some("gone"));
        let mut records = Vec::new();
        buf.changelog(&mut records);
        let kinds: Vec<StateKind> = records.iter().map(|r| r.1).collect();
        assert_eq!(kinds, [StateKind::Meta, StateKind::Pending], "{records:?}");
        assert!(records[1].2.is_some(), "only the input still held");
        // Released in a later transaction: now its tombstone is written.
        let _ = buf.next_ready(t(13));
        let mut later = Vec::new();
        buf.changelog(&mut later);
        assert!(later.iter().any(|(k, kind, v)| *kind == StateKind::Pending
            && v.is_none()
            && *k == pending_key(1)));
    }

    #[test]
    fn an_input_read_back_from_an_older_releases_key_is_tombstoned_under_that_key_too() {
        let mut buf: Buffer<String> = Buffer::default();
        let record = serde_json::to_vec(&PendingRecord {
            time: t(3),
            class: 1,
            seq: 7,
            item: "old".to_string(),
        })
        .expect("json");
        let old_key = b"~pending/00000000000000000007";
        buf.restore(old_key, StateKind::Pending, &record)
            .expect("readable");
        // An entity named like it does not touch it...
        assert!(!buf.restore_tombstone(b"~pending/00000000000000000008"));
        assert_eq!(buf.pending.len(), 1);
        // ...and once applied, both keys get their tombstone.
        let _ = buf.next_ready(t(9));
        let mut records = Vec::new();
        buf.changelog(&mut records);
        let tombstones: Vec<&[u8]> = records
            .iter()
            .filter(|(_, kind, v)| *kind == StateKind::Pending && v.is_none())
            .map(|(k, _, _)| k.as_slice())
            .collect();
        assert_eq!(tombstones, [&old_key[..], &pending_key(7)[..]]);
    }

    #[test]
    fn changelog_records_carry_their_kind_and_version() {
        let sealed = seal_state("circuit", br#"{"fault":null}"#);
        let value: serde_json::Value = serde_json::from_slice(&sealed).expect("JSON");
        assert_eq!(value["kind"], "circuit");
        assert_eq!(value["version"], STATE_VERSION);
        assert_eq!(
            open_state(&sealed, "circuit").expect("opens"),
            (StateKind::Entity, &br#"{"fault":null}"#[..])
        );
        assert!(open_state(&sealed, "fanout").is_err());
        let future = br#"{"kind":"circuit","version":99,"state":{}}"#;
        let err = open_state(future, "circuit").expect_err("unknown version");
        assert!(err.contains("version 99"), "{err}");
        // The kind comes from the envelope, never from the key.
        let meta = seal_state(StateKind::Meta.name(StageKind::Circuits), b"{}");
        assert_eq!(
            open_state(&meta, "circuit").expect("opens").0,
            StateKind::Meta
        );
        assert_eq!(StateKind::Pending.name(StageKind::Incidents), "pending");
        assert_eq!(StateKind::Entity.name(StageKind::Incidents), "incident");
    }

    #[test]
    fn a_circuits_figures_have_a_key_and_kind_of_their_own() {
        let key = figures_key("DL-000001");
        assert_eq!(figures_key_circuit(&key), Some("DL-000001"));
        // No id can end like it: ids are UTF-8 text, which never holds the byte 0xFF.
        assert_eq!(figures_key_circuit(b"DL-000001"), None);
        assert_eq!(figures_key_circuit(b"DL-figures"), None);
        let sealed = seal_state(StateKind::Figures.name(StageKind::Circuits), b"{}");
        assert_eq!(
            open_state(&sealed, "circuit").expect("opens").0,
            StateKind::Figures
        );
        // Only the circuit-state changelog holds figures.
        assert!(open_state(&sealed, "incident").is_err());
    }
}
