//! A stage: its consumer group member and transactional producer, the loop that reads a
//! batch, has its [`Processor`] process it and commits it in one transaction, and its
//! supervisor. Nothing here knows which stage it runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use metrics::{counter, gauge, histogram};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{ClientContext, Statistics};
use tracing::{error, info, warn};

use super::call_watch::CallWatch;
use super::changelog::seal_state;
use super::processor::{BatchStats, Ctx, Out, Partitions, Processor};
use super::replica::{Change, Replica};
use super::restore::Restore;
use super::transaction::classify;
use super::{with_retries, RunSummary, ServiceConfig, ServiceError};
use crate::kafka::client_config;
use crate::live::Live;
use crate::telemetry;

/// How long a partition-count mismatch between co-partitioned topics may last before it
/// stops the service (an operator adding partitions does one topic after the other).
pub(super) const TOPOLOGY_SETTLE: Duration = Duration::from_secs(20);

/// How long one call initialising a stage's transactional producer may wait (it is called
/// again until the cluster answers, or the service stops).
const INIT_SLICE: Duration = Duration::from_secs(5);

/// How long a stage reads before it commits what it read (a transaction's interval), at
/// most: a batch whose input stops for [`DRAINED_AFTER`] is committed then.
pub(super) const BATCH_INTERVAL: Duration = Duration::from_millis(100);

/// A batch is committed before its interval is over once no record has come for this long
/// (its input is drained for now).
pub(super) const DRAINED_AFTER: Duration = Duration::from_millis(3);

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
pub(super) fn supervise<P: Processor>(
    env: &StageEnv,
    changes: Option<Receiver<Change>>,
) -> Result<(), ServiceError> {
    let kind = P::KIND;
    let changes = changes.unwrap_or_else(|| channel().1);
    let mut fences: Vec<Instant> = Vec::new();
    // Commits of the stage when it last failed: a failure with none since is a stall.
    let mut commits_at_failure: Option<u64> = None;
    loop {
        let reason = match run_stage::<P>(env, &changes) {
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
        P::clear_views(&env.live);
        if let Ok(mut s) = env.summary.lock() {
            s.aborts += 1;
        }
        if env.shutdown.load(Ordering::Relaxed) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What the consumer context shares with the stage loop: rebalance events, and the stage
/// itself, so that a clean revocation commits the batch in flight from inside the callback.
pub(super) struct StageContext<P: Processor> {
    pub(super) stage: &'static str,
    pub(super) core: Mutex<Option<Stage<P>>>,
    pub(super) revoke_error: Mutex<Option<ServiceError>>,
}

impl<P: Processor> ClientContext for StageContext<P> {
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

impl<P: Processor> ConsumerContext for StageContext<P> {
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
                stage = P::KIND.name(),
                "assignment lost; dropping the batch in flight"
            );
            core.discard();
        } else if let Err(e) = core.commit(consumer) {
            warn!(stage = P::KIND.name(), error = %e, "commit on revocation failed");
            core.discard();
            let mut slot = self.revoke_error.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(e);
        }
        // The range assignor is eager: every partition is revoked, and state is restored
        // again for what is assigned next.
        core.discard();
        core.live.update_stage(P::KIND.name(), |info| {
            info.partitions.clear();
            info.restoring = true;
        });
        info!(stage = P::KIND.name(), partitions = ?revoked, "partitions revoked");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut guard = self.core.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(core) = guard.as_mut() {
                // State is kept per partition of the stage's keyed input only (the other
                // inputs of stage 1 carry no state; commands share stage 2's partitions).
                let keyed = P::keyed_input(&core.config.topics);
                let assigned: BTreeSet<i32> = tpl
                    .elements()
                    .iter()
                    .filter(|e| e.topic() == keyed)
                    .map(|e| e.partition())
                    .collect();
                info!(stage = P::KIND.name(), partitions = ?assigned, "partitions assigned");
                let count = P::keyed_count(core.partitions);
                core.live.update_stage(P::KIND.name(), |info| {
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
                    warn!(stage = P::KIND.name(), error = %e, "cannot pause the assignment for its restore");
                }
            }
        }
    }
}

pub(super) fn lock_core<P: Processor>(
    ctx: &StageContext<P>,
) -> std::sync::MutexGuard<'_, Option<Stage<P>>> {
    ctx.core.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn run_stage<P: Processor>(
    env: &StageEnv,
    changes: &Receiver<Change>,
) -> Result<(), ServiceError> {
    let kind = P::KIND;
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
    // A member that dies without leaving its group (SIGKILL, or a stage started again
    // while the broker was away) holds its partitions until the broker drops it after its
    // session timeout: librdkafka's default, 45 s, was the whole of a 50-s recovery after a
    // 2-minute broker outage (3 outages in 5; issue 16 defect 7). Heartbeats are sent by
    // librdkafka's own thread, so a busy stage does not miss them. The rebalance timeout
    // (`max.poll.interval.ms`, 300 s by default) bounds how long a new member waits for
    // an old one to rejoin; a stage polls at least every batch (100 ms) or restore slice.
    // Defaults: a value given with -X wins, and a default never exceeds the value given
    // for the other (librdkafka refuses a poll interval under the session timeout).
    let given = |key: &str| -> Option<u64> { consumer_cfg.get(key).and_then(|v| v.parse().ok()) };
    let session_ms = given("session.timeout.ms")
        .unwrap_or_else(|| given("max.poll.interval.ms").map_or(10_000, |poll| poll.min(10_000)));
    for (key, value) in [
        ("session.timeout.ms", session_ms.to_string()),
        (
            "heartbeat.interval.ms",
            (session_ms / 5).clamp(100, 2_000).to_string(),
        ),
        ("max.poll.interval.ms", session_ms.max(60_000).to_string()),
    ] {
        if consumer_cfg.get(key).is_none() {
            consumer_cfg.set(key, value);
        }
    }
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
    // In short calls: a call is not interrupted by SIGTERM, and librdkafka resumes the
    // initialisation where a call that timed out left it.
    with_retries(&env.shutdown, || producer.init_transactions(INIT_SLICE)).map_err(classify)?;

    let inputs = P::inputs(t);
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
    let partitions = Partitions {
        alarms: alarm_partitions,
        impacts: impact_partitions,
        facts: facts_partitions,
    };
    let (keyed, keyed_count, changelog) = (
        P::keyed_input(t),
        P::keyed_count(partitions),
        P::changelog(t),
    );
    let changelog_count = partition_count(&probe, changelog, &env.shutdown)?;
    if changelog_count < keyed_count {
        return Err(ServiceError::Topology(format!(
            "{changelog} has {changelog_count} partitions and {keyed} has {keyed_count}: a \
             changelog needs at least as many partitions as the input its state is kept for"
        )));
    }

    let context = StageContext {
        stage: kind.name(),
        core: Mutex::new(Some(Stage {
            watch: env.watch.clone(),
            config: config.clone(),
            live: env.live.clone(),
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
            assigned: false,
            probe,
            owned: BTreeSet::new(),
            offsets_dirty: false,
            partitions,
            processor: P::default(),
        })),
        revoke_error: Mutex::new(None),
    };
    let consumer: BaseConsumer<StageContext<P>> = consumer_cfg.create_with_context(context)?;
    let topics: Vec<&str> = inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;

    let result = stage_loop(env, changes, &consumer);
    // Leave the group; a clean revocation commits what is in flight.
    if result.is_ok() {
        consumer.unsubscribe();
        let _ = consumer.poll(Duration::from_millis(100));
    }
    result
}

pub(super) fn stage_loop<P: Processor>(
    env: &StageEnv,
    changes: &Receiver<Change>,
    consumer: &BaseConsumer<StageContext<P>>,
) -> Result<(), ServiceError> {
    let kind = P::KIND;
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
            // Once the batch holds something, a short wait: input that stops arriving
            // is committed now rather than at the end of the interval (latency at low and
            // middling rates); under load every poll returns a record and the batch runs
            // its whole interval.
            let wait = if restoring {
                Duration::ZERO
            } else if taken_bytes > 0 {
                left.min(DRAINED_AFTER)
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
                // Nothing more to read now: commit what was read.
                None if taken_bytes > 0 => break,
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    core.processor.partition_end(p);
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

/// A stage: the state its processor keeps, its transaction in flight, and what it owns
/// of its group's assignment.
pub(super) struct Stage<P: Processor> {
    pub(super) watch: Arc<CallWatch>,
    pub(super) config: Arc<ServiceConfig>,
    pub(super) live: Arc<Live>,
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
    /// A new assignment whose committed offsets are still to be read.
    pub(super) assigned: bool,
    /// A client for metadata and watermark queries, off the stage consumer's connection.
    pub(super) probe: BaseConsumer,
    /// The input partitions of the current assignment, once restored: records of any
    /// other partition (one polled just as the assignment was lost) are not processed.
    pub(super) owned: BTreeSet<(String, i32)>,
    /// Records were consumed since the last commit.
    pub(super) offsets_dirty: bool,
    pub(super) partitions: Partitions,
    /// The stage's own work, and the state of its partitions.
    pub(super) processor: P,
}

impl<P: Processor> Stage<P> {
    /// The processor, and the context it writes through.
    pub(super) fn split(&mut self) -> (&mut P, Ctx<'_>) {
        (
            &mut self.processor,
            Ctx {
                config: &self.config,
                replica: &self.replica,
                live: &self.live,
                partitions: self.partitions,
                probe: &self.probe,
                offsets: &self.offsets,
                pending: &mut self.pending,
                batch: &mut self.batch,
                summary: &self.summary,
            },
        )
    }

    /// Forget the batch in flight and every partition's state (after a lost assignment or
    /// an abort): what the last committed transaction left is restored on assignment.
    pub(super) fn discard(&mut self) {
        self.batch = BatchStats::default();
        self.processor.discard(&self.live);
        self.pending.clear();
        self.offsets.clear();
        self.offsets_dirty = false;
        self.to_restore.clear();
        self.restoring = None;
        self.rewind.clear();
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

    /// Process one input record.
    pub(super) fn handle(&mut self, msg: &BorrowedMessage<'_>) {
        let p = msg.partition();
        if !self.owned.contains(&(msg.topic().to_string(), p)) {
            warn!(
                stage = P::KIND.name(),
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
        let (processor, mut ctx) = self.split();
        processor.handle(&mut ctx, p, msg);
    }

    /// A replica change.
    pub(super) fn on_change(&mut self, change: Change) {
        let (processor, mut ctx) = self.split();
        processor.on_change(&mut ctx, change);
    }

    /// Live timers.
    pub(super) fn tick(&mut self, consumer: &BaseConsumer<StageContext<P>>, idle_after: Duration) {
        let (processor, mut ctx) = self.split();
        processor.tick(&mut ctx, consumer, idle_after);
    }

    /// After a commit: count what it carried, and let the processor publish what it
    /// changed.
    pub(super) fn committed(&mut self) {
        let mut out: BTreeMap<&str, u64> = BTreeMap::new();
        for o in &self.pending {
            *out.entry(o.topic.as_str()).or_default() += 1;
        }
        for (topic, n) in out {
            counter!(telemetry::MESSAGES_OUT, "topic" => topic.to_string()).increment(n);
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
        let latency = histogram!(telemetry::PROCESSING_LATENCY, "stage" => P::KIND.name());
        for ms in batch.timestamps {
            latency.record((now - ms).max(0) as f64 / 1000.0);
        }
        let (processor, mut ctx) = self.split();
        processor.committed(&mut ctx);
    }

    /// The batch's last work, then every stage writes the changelog records of the state
    /// it changed.
    pub(super) fn flush_state(&mut self) {
        {
            let (processor, mut ctx) = self.split();
            processor.end_of_batch(&mut ctx);
        }
        let changelog = P::changelog(&self.config.topics).to_string();
        let mut records = Vec::new();
        self.processor.flush_state(&mut records);
        for (p, key, kind, value) in records {
            let value = value.map(|state| seal_state(kind.name(P::ENTITY), &state));
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
