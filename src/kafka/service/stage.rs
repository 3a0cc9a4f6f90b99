//! A stage: its consumer group member and transactional producer, the loop that reads a
//! batch, processes it and commits it in one transaction, and its supervisor.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use metrics::{counter, gauge, histogram};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{ClientContext, Statistics};
use tracing::{error, info, warn};

use super::call_watch::CallWatch;
use super::changelog::{figures_key, seal_state, StateKind};
use super::circuits::CircuitPartition;
use super::fanout::InFlight;
use super::incidents::IncidentPartition;
use super::records::{source_of, Origin, WatermarkRecord};
use super::replica::{read, Change, Replica};
use super::restore::Restore;
use super::transaction::classify;
use super::{
    with_retries, RunSummary, ServiceConfig, ServiceError, StageKind, TXN_TIMEOUT, WATERMARK_KEY,
};
use crate::correlation::FanOut;
use crate::engine::Output;
use crate::incident::IncidentEvent;
use crate::kafka::client_config;
use crate::live::Live;
use crate::rejection::{rejection_record_key, RejectReason, Rejection};
use crate::telemetry;

/// How long a partition-count mismatch between co-partitioned topics may last before it
/// stops the service (an operator adding partitions does one topic after the other).
pub(super) const TOPOLOGY_SETTLE: Duration = Duration::from_secs(20);

/// How often the views of down circuits are refreshed to the partition's clock.
pub(super) const VIEW_REFRESH: Duration = Duration::from_secs(5);

/// How often the views of the circuits changed by committed transactions are built and
/// published: a circuit changed by several transactions in a row (a storm, its timers) is
/// built once for them, and the API is at most this much behind the topics.
pub(super) const VIEW_PUBLISH: Duration = Duration::from_millis(250);

/// How long a stage reads before it commits what it read (a transaction's interval).
pub(super) const BATCH_INTERVAL: Duration = Duration::from_millis(100);

/// A transaction is committed early once it has read this many bytes of input...
pub(super) const BATCH_MAX_INPUT_BYTES: usize = 16 * 1024 * 1024;

/// ...or holds this many output records (a storm's outputs come from few inputs).
pub(super) const BATCH_MAX_OUTPUTS: usize = 200_000;

pub(super) struct StageEnv {
    pub(super) watch: Arc<CallWatch>,
    pub(super) config: Arc<ServiceConfig>,
    pub(super) live: Arc<Live>,
    pub(super) replica: Arc<RwLock<Replica>>,
    pub(super) shutdown: Arc<AtomicBool>,
    pub(super) summary: Arc<Mutex<RunSummary>>,
}

/// Run a stage; after an aborted transaction, start it again from the last commit (a new
/// group member with a new producer, which restores its partitions' state). A fenced
/// producer is started again too (a zombie that was paused past its transaction timeout
/// comes back as a fresh member), unless that keeps happening: three fences within five
/// minutes mean another instance uses the same transactional id, and stop this one.
/// Other errors stop the instance.
pub(super) fn supervise(
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
pub(super) struct Out {
    pub(super) topic: String,
    pub(super) partition: Option<i32>,
    pub(super) key: Vec<u8>,
    pub(super) value: Option<Vec<u8>>,
    /// The input record a repartitioned record was read from (header `linewatch-origin`).
    pub(super) origin: Option<Vec<u8>>,
}

/// What the consumer context shares with the stage loop: rebalance events, and the stage
/// itself, so that a clean revocation commits the batch in flight from inside the callback.
pub(super) struct StageContext {
    pub(super) stage: &'static str,
    pub(super) core: Mutex<Option<Core>>,
    pub(super) revoke_error: Mutex<Option<ServiceError>>,
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

pub(super) fn lock_core(ctx: &StageContext) -> std::sync::MutexGuard<'_, Option<Core>> {
    ctx.core.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn run_stage(
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

pub(super) fn stage_loop(
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

/// A view change to publish once the transaction that carries it commits (circuits' views
/// are built after the commit instead: [`Core::publish_stale_views`]).
pub(super) enum ViewUpdate {
    Incident(String, Option<Box<IncidentEvent>>),
}

/// Counts of the batch in flight, added to the metrics when it commits.
#[derive(Default)]
pub(super) struct BatchStats {
    pub(super) messages_in: BTreeMap<String, u64>,
    pub(super) ticket_events: BTreeMap<String, u64>,
    pub(super) rejections: BTreeMap<&'static str, u64>,
    /// Kafka timestamps (ms) of the records consumed.
    pub(super) timestamps: Vec<i64>,
}

/// A stage's state and its transaction in flight.
pub(super) struct Core {
    pub(super) watch: Arc<CallWatch>,
    pub(super) kind: StageKind,
    pub(super) config: Arc<ServiceConfig>,
    pub(super) live: Arc<Live>,
    /// View changes of the batch in flight.
    pub(super) views: Vec<ViewUpdate>,
    /// When the views of down circuits were last brought to the partition's clock.
    pub(super) views_refreshed: Instant,
    /// Circuits (partition, id) changed by committed transactions whose views are not
    /// built yet.
    pub(super) stale_views: BTreeSet<(i32, String)>,
    /// When the stale views were last built and published.
    pub(super) views_published: Instant,
    pub(super) batch: BatchStats,
    pub(super) replica: Arc<RwLock<Replica>>,
    pub(super) summary: Arc<Mutex<RunSummary>>,
    /// Set on SIGTERM: a transaction the broker does not answer is then given up after
    /// [`SHUTDOWN_GRACE`](super::transaction::SHUTDOWN_GRACE) instead of being retried
    /// (uncommitted, it changes nothing).
    pub(super) shutdown: Arc<AtomicBool>,
    pub(super) producer: BaseProducer,
    pub(super) pending: Vec<Out>,
    /// Next offset to read, per input topic and partition owned: sent with every
    /// transaction, so that each one is fenced by the group generation.
    pub(super) offsets: BTreeMap<(String, i32), i64>,
    /// Partitions assigned whose state is not restored yet.
    pub(super) to_restore: BTreeSet<i32>,
    /// The restore in progress, if any: while it lasts the assignment is paused and
    /// nothing is processed or committed.
    pub(super) restoring: Option<Restore>,
    /// Records polled while the assignment was paused for a restore, per input partition
    /// the first one's offset: read again when the restore is over.
    pub(super) rewind: BTreeMap<(String, i32), i64>,
    pub(super) fanout: BTreeMap<i32, FanOut>,
    pub(super) circuits: BTreeMap<i32, CircuitPartition>,
    pub(super) incidents: BTreeMap<i32, IncidentPartition>,
    /// Stage 3: facts read in this batch, per partition, folded in at commit.
    /// A new assignment whose committed offsets are still to be read.
    pub(super) assigned: bool,
    /// A client for metadata and watermark queries, off the stage consumer's connection.
    pub(super) probe: BaseConsumer,
    /// The input partitions of the current assignment, once restored: records of any
    /// other partition (one polled just as the assignment was lost) are not processed.
    pub(super) owned: BTreeSet<(String, i32)>,
    /// Records were consumed since the last commit.
    pub(super) offsets_dirty: bool,
    pub(super) facts_partitions: i32,
    /// Stage 1: when an alarm was last read from each alarms partition.
    pub(super) last_alarm: BTreeMap<i32, Instant>,
    /// Stage 1: the watermark last sent for each alarms partition.
    pub(super) reported: BTreeMap<i32, DateTime<Utc>>,
    /// Stage 1: the latest event time of the alarms read on each alarms partition and
    /// sent on to another (those applied here move the fan-out state's watermark).
    pub(super) read_clock: BTreeMap<i32, DateTime<Utc>>,
    /// Stage 1: alarms sent on to another partition in the transaction being built:
    /// (from, to, event time).
    pub(super) sent_on: Vec<(i32, i32, DateTime<Utc>)>,
    /// Stage 1: alarms sent on and committed, not yet read by the task of their
    /// partition; each holds back the watermark of the partition it was read from, so
    /// that the circuits' clock does not pass it before its impacts are out.
    pub(super) in_flight: Vec<InFlight>,
    /// Stage 1: a client of the stage's group (not a member) that reads the offsets its
    /// tasks committed on the repartition topic.
    pub(super) group_probe: Option<BaseConsumer>,
    /// Stage 1: partitions the consumer reported at their end since their last record
    /// (librdkafka names the partition, not the topic: a hint, checked against the
    /// partition's high watermark).
    pub(super) at_end: BTreeSet<i32>,
    pub(super) impact_partitions: i32,
    pub(super) alarm_partitions: i32,
}

impl Core {
    /// The input topic whose partitions key the stage's state.
    pub(super) fn keyed_input(&self) -> String {
        let t = &self.config.topics;
        match self.kind {
            StageKind::FanOut => t.alarms.clone(),
            StageKind::Circuits => t.impacts.clone(),
            StageKind::Incidents => t.incident_facts.clone(),
        }
    }

    /// Forget the batch in flight and every partition's state (after a lost assignment or
    /// an abort): what the last committed transaction left is restored on assignment.
    pub(super) fn discard(&mut self) {
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
    pub(super) fn read_again(&mut self, topic: &str, partition: i32, offset: i64) {
        self.rewind
            .entry((topic.to_string(), partition))
            .and_modify(|o| *o = (*o).min(offset))
            .or_insert(offset);
    }

    pub(super) fn changelog(&self) -> String {
        let t = &self.config.topics;
        match self.kind {
            StageKind::FanOut => t.fanout_changelog.clone(),
            StageKind::Circuits => t.circuit_changelog.clone(),
            StageKind::Incidents => t.incident_changelog.clone(),
        }
    }

    /// Process one input record.
    pub(super) fn handle(&mut self, msg: &BorrowedMessage<'_>) {
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
        match self.kind {
            StageKind::FanOut => self.handle_fanout(p, msg),
            StageKind::Circuits => self.handle_circuits(p, msg),
            StageKind::Incidents => self.handle_incidents(p, msg),
        }
    }

    /// Write `value` to partition `home` of a repartition topic, in this transaction,
    /// naming the record it came from.
    pub(super) fn send_on(
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

    /// A replica change: stage 1 hits circuits added or re-routed under active alarms;
    /// stage 2 re-checks circuits and notes maintenance windows.
    pub(super) fn on_change(&mut self, change: Change) {
        match self.kind {
            StageKind::FanOut => self.fanout_change(change),
            StageKind::Circuits => self.circuits_change(&change),
            StageKind::Incidents => {}
        }
    }

    /// Live timers. Stage 1 moves the watermark of partitions idle at their end to the
    /// wall clock and reports watermarks; stage 2 fires the timers of each partition up
    /// to its clock.
    pub(super) fn tick(&mut self, consumer: &BaseConsumer<StageContext>, idle_after: Duration) {
        match self.kind {
            StageKind::FanOut => self.fanout_tick(consumer, idle_after),
            StageKind::Circuits => self.circuits_tick(),
            StageKind::Incidents => self.incidents_tick(),
        }
    }

    /// Tell every partition of the next stage's input that partition `p` of this stage has
    /// written everything older than `watermark`.
    pub(super) fn broadcast_watermark(&mut self, p: i32, watermark: DateTime<Utc>) {
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
    pub(super) fn route(&mut self, outputs: Vec<Output>) {
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
    pub(super) fn reject(
        &mut self,
        msg: &BorrowedMessage<'_>,
        reason: &RejectReason,
        index: Option<usize>,
    ) {
        self.reject_with(msg, msg.payload(), reason, index);
    }

    /// [`Core::reject`] with `original` standing for the record's value (a batch's
    /// element).
    pub(super) fn reject_with(
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

    pub(super) fn push_rejection(&mut self, rej: Rejection, key: Vec<u8>) {
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
    pub(super) fn committed(&mut self) {
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

    /// After a restore: publish the views of everything restored.
    pub(super) fn publish_all_views(&mut self) {
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
    pub(super) fn flush_state(&mut self) {
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
}

pub(super) fn partition_count<C: ConsumerContext>(
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
