//! `linewatch run`: the engine driven from Kafka, in one process.
//!
//! Delivery rule: every input record's effects (ticket events, line-status events,
//! rejections) and its consumer offset are written in one Kafka transaction, so a
//! consumer of the output topics with `isolation.level=read_committed` sees each effect
//! once or not at all. The inventory replica is read from the start of the compacted
//! `inventory.circuits` topic (no group, nothing committed) and tailed; inputs wait until
//! it has caught up with the high watermarks seen at start.
//!
//! Scope of this first runtime: one instance, both stages in one engine, state in memory.
//! A transaction that must be aborted stops the process (the engine's in-memory state
//! cannot be rolled back), and a restart starts with no open faults: state changelogs,
//! partitioned stages and scale-out are the next step (see the README's status section).
//!
//! The loop owns a consumer and a transactional producer, whose calls block, so it runs on
//! its own OS thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::engine::{Engine, Output, Sink};
use crate::intake::{decode, Stream};
use crate::kafka::{client_config, ClientOverride};
use crate::policy::Policy;
use crate::rejection::{Rejection, Source};

/// Topic names the service reads and writes.
#[derive(Debug, Clone)]
pub struct TopicNames {
    pub alarms: String,
    pub inventory: String,
    pub maintenance: String,
    pub commands: String,
    pub tickets: String,
    pub line_status: String,
    pub warnings: String,
    pub figures: String,
    pub incidents: String,
    pub rejected: String,
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
            line_status: p("circuits.status"),
            warnings: p("sla.warnings"),
            figures: p("kpi.circuits"),
            incidents: p("incidents"),
            rejected: p("alarms.rejected"),
        }
    }
}

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub bootstrap_servers: String,
    pub client_overrides: Vec<ClientOverride>,
    pub group_id: String,
    /// Stable per instance: a restarted instance fences its previous self.
    pub transactional_id: String,
    pub topics: TopicNames,
    pub policy: Policy,
    /// How often live timers are checked against the wall clock.
    pub tick: Duration,
}

/// Errors that stop the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the consumer has no group metadata (is group.id set?)")]
    NoGroupMetadata,
    #[error("a transaction had to be aborted ({0}); stopping so that a restart starts clean")]
    Aborted(String),
}

/// Counts the loop reports when it stops (and that tests check).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub inputs: u64,
    pub rejected: u64,
    pub ticket_events: u64,
    pub transactions: u64,
}

const TXN_TIMEOUT: Duration = Duration::from_secs(30);
const BATCH_MAX: usize = 500;

/// Run until `shutdown` is set; then finish the transaction in flight and leave the group.
///
/// # Errors
/// A [`ServiceError`] when Kafka fails in a way a retry does not fix (fenced, aborted
/// transaction, unreachable cluster at start).
pub fn run(config: ServiceConfig, shutdown: Arc<AtomicBool>) -> Result<RunSummary, ServiceError> {
    let t = &config.topics;
    let mut replica_cfg = client_config(&config.bootstrap_servers, &config.client_overrides);
    replica_cfg
        .set("group.id", format!("{}-replica-unused", config.group_id))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.queue.backoff.ms", "20");
    let replica: BaseConsumer = replica_cfg.create()?;
    let caught_up_at = assign_from_start(&replica, &[&t.inventory, &t.maintenance])?;
    let replica_streams: HashMap<&str, Stream> = [
        (t.inventory.as_str(), Stream::Inventory),
        (t.maintenance.as_str(), Stream::Maintenance),
    ]
    .into_iter()
    .collect();

    let mut consumer_cfg = client_config(&config.bootstrap_servers, &config.client_overrides);
    consumer_cfg
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("fetch.queue.backoff.ms", "20");
    let consumer: BaseConsumer = consumer_cfg.create()?;

    let mut producer_cfg = client_config(&config.bootstrap_servers, &config.client_overrides);
    producer_cfg
        .set("transactional.id", &config.transactional_id)
        .set("transaction.timeout.ms", "60000")
        .set("message.timeout.ms", "50000")
        .set("linger.ms", "5");
    let producer: BaseProducer = producer_cfg.create()?;
    producer.init_transactions(TXN_TIMEOUT)?;

    let mut engine = Engine::new(config.policy.clone());
    let mut summary = RunSummary::default();

    // 1. Load the inventory and maintenance replicas up to the high watermarks seen at
    // start. Their rejections are produced with the first transaction (and again after a
    // restart, which re-reads both topics).
    let started = Instant::now();
    let mut pending: Vec<(String, String, Vec<u8>)> = Vec::new();
    while !caught_up(&replica, &caught_up_at)? {
        if shutdown.load(Ordering::Relaxed) {
            return Ok(summary);
        }
        let polled = replica.poll(Duration::from_millis(100));
        apply_replica(
            polled,
            &replica_streams,
            &mut engine,
            t,
            &mut pending,
            &mut summary,
        )?;
    }
    info!(
        records = summary.inputs,
        circuits = engine.network().len(),
        seconds = started.elapsed().as_secs_f64(),
        "inventory replica caught up"
    );

    // 2. Consume inputs; every batch is one transaction.
    consumer.subscribe(&[t.alarms.as_str(), t.commands.as_str()])?;
    let streams: HashMap<&str, Stream> = [
        (t.alarms.as_str(), Stream::Alarms),
        (t.commands.as_str(), Stream::Commands),
    ]
    .into_iter()
    .collect();
    let mut last_tick = Instant::now();
    while !shutdown.load(Ordering::Relaxed) {
        let mut consumed = false;

        // Replica changes first: a circuit added under an active alarm is impacted.
        while let Some(polled) = replica.poll(Duration::ZERO) {
            apply_replica(
                Some(polled),
                &replica_streams,
                &mut engine,
                t,
                &mut pending,
                &mut summary,
            )?;
        }

        let deadline = Instant::now() + Duration::from_millis(100);
        while pending.len() < BATCH_MAX && Instant::now() < deadline {
            let Some(msg) = consumer.poll(Duration::from_millis(20)) else {
                continue;
            };
            let Some(msg) = usable(msg)? else {
                continue;
            };
            consumed = true;
            let Some(&stream) = streams.get(msg.topic()) else {
                continue;
            };
            let now = Utc::now();
            route(t, engine.advance(now), &mut pending, &mut summary);
            apply(
                &msg,
                stream,
                &mut engine,
                now,
                t,
                &mut pending,
                &mut summary,
            );
        }
        if last_tick.elapsed() >= config.tick {
            last_tick = Instant::now();
            route(t, engine.advance(Utc::now()), &mut pending, &mut summary);
        }
        if pending.is_empty() && !consumed {
            continue; // never commit an empty transaction
        }
        commit(&producer, &consumer, &pending)?;
        pending.clear();
        summary.transactions += 1;
    }
    consumer.unsubscribe();
    info!(?summary, "stopped");
    Ok(summary)
}

fn commit(
    producer: &BaseProducer,
    consumer: &BaseConsumer,
    pending: &[(String, String, Vec<u8>)],
) -> Result<(), ServiceError> {
    producer.begin_transaction()?;
    for (topic, key, value) in pending {
        let mut record = BaseRecord::to(topic).key(key).payload(value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    record = r;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return abort(producer, e),
            }
        }
    }
    let positions = consumer.position()?;
    let metadata = consumer
        .group_metadata()
        .ok_or(ServiceError::NoGroupMetadata)?;
    if let Err(e) = producer.send_offsets_to_transaction(&positions, &metadata, TXN_TIMEOUT) {
        return abort(producer, e);
    }
    loop {
        match producer.commit_transaction(TXN_TIMEOUT) {
            Ok(()) => return Ok(()),
            // An ambiguous commit is retried, never reprocessed (librdkafka #4558).
            Err(KafkaError::Transaction(e)) if e.is_retriable() => {
                warn!(error = %e, "retrying transaction commit");
            }
            Err(e) => return abort(producer, e),
        }
    }
}

fn abort(producer: &BaseProducer, error: KafkaError) -> Result<(), ServiceError> {
    let requires_abort = matches!(&error, KafkaError::Transaction(e) if e.txn_requires_abort());
    if requires_abort {
        let _ = producer.abort_transaction(TXN_TIMEOUT);
        return Err(ServiceError::Aborted(error.to_string()));
    }
    Err(ServiceError::Kafka(error))
}

/// Serialize the engine's outputs to their topics. Ticket events and warnings are also
/// logged (one line per ticket lifecycle event; nothing per alarm at info).
fn route(
    t: &TopicNames,
    outputs: Vec<Output>,
    pending: &mut Vec<(String, String, Vec<u8>)>,
    summary: &mut RunSummary,
) {
    for output in outputs {
        let topic = match output.sink() {
            Sink::Tickets => &t.tickets,
            Sink::Status => &t.line_status,
            Sink::Warnings => &t.warnings,
            Sink::Figures => &t.figures,
            Sink::Incidents => &t.incidents,
        };
        match &output {
            Output::Ticket(ev) => {
                summary.ticket_events += 1;
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
            Output::Line(_) | Output::Figures(_) => {}
        }
        match output.to_json() {
            Ok(bytes) => pending.push((topic.clone(), output.key(), bytes)),
            Err(e) => warn!(error = %e, "cannot serialize an output"),
        }
    }
}

/// A polled record, or `None` after a transient consumer error (a broker restarting,
/// a connection lost), which is logged and retried by librdkafka; only a fatal consumer
/// error stops the service.
fn usable(
    msg: Result<rdkafka::message::BorrowedMessage<'_>, KafkaError>,
) -> Result<Option<rdkafka::message::BorrowedMessage<'_>>, ServiceError> {
    match msg {
        Ok(m) => Ok(Some(m)),
        Err(e @ KafkaError::MessageConsumptionFatal(_)) => Err(ServiceError::Kafka(e)),
        Err(e) => {
            warn!(error = %e, "consumer error; retrying");
            Ok(None)
        }
    }
}

/// Apply a record polled from a replica topic (inventory, maintenance windows), if any.
fn apply_replica(
    polled: Option<Result<rdkafka::message::BorrowedMessage<'_>, KafkaError>>,
    streams: &HashMap<&str, Stream>,
    engine: &mut Engine,
    t: &TopicNames,
    pending: &mut Vec<(String, String, Vec<u8>)>,
    summary: &mut RunSummary,
) -> Result<(), ServiceError> {
    let Some(msg) = polled.map(usable).transpose()?.flatten() else {
        return Ok(());
    };
    if let Some(&stream) = streams.get(msg.topic()) {
        apply(&msg, stream, engine, Utc::now(), t, pending, summary);
    }
    Ok(())
}

/// Apply one record of `stream` to the engine at `now`: its outputs, or a rejection
/// carrying the reason, the original bytes and where the record came from.
fn apply(
    msg: &rdkafka::message::BorrowedMessage<'_>,
    stream: Stream,
    engine: &mut Engine,
    now: chrono::DateTime<Utc>,
    t: &TopicNames,
    pending: &mut Vec<(String, String, Vec<u8>)>,
    summary: &mut RunSummary,
) {
    let results = decode(stream, msg.key(), msg.payload());
    let batch = results.len() > 1;
    for (index, result) in results.into_iter().enumerate() {
        summary.inputs += 1;
        match result.and_then(|input| engine.handle(input, now)) {
            Ok(outputs) => route(t, outputs, pending, summary),
            Err(reason) => {
                let source = Source::Kafka {
                    topic: msg.topic().into(),
                    partition: msg.partition(),
                    offset: msg.offset(),
                };
                let mut rej =
                    Rejection::new(&reason, msg.payload(), source, now).with_key(msg.key());
                if batch {
                    rej = rej.with_batch_index(index);
                }
                warn!(reason = %rej.reason, code = %rej.reason_code, "input rejected");
                summary.rejected += 1;
                let key = msg
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default();
                match serde_json::to_vec(&rej) {
                    Ok(bytes) => pending.push((t.rejected.clone(), key, bytes)),
                    Err(e) => warn!(error = %e, "cannot serialize a rejection"),
                }
            }
        }
    }
}

/// A partition of a replica topic and its high watermark when the service started.
type Mark = (String, i32, i64);

/// Assign every partition of `topics` from the beginning; return the high watermarks now.
fn assign_from_start(consumer: &BaseConsumer, topics: &[&str]) -> Result<Vec<Mark>, ServiceError> {
    let mut tpl = TopicPartitionList::new();
    let mut marks = Vec::new();
    for topic in topics {
        let metadata =
            with_retries(|| consumer.fetch_metadata(Some(topic), Duration::from_secs(10)))?;
        for t in metadata.topics() {
            if let Some(err) = t.error() {
                return Err(ServiceError::Kafka(KafkaError::MetadataFetch(err.into())));
            }
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
                let (_, high) = with_retries(|| {
                    consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                })?;
                marks.push(((*topic).to_string(), p.id(), high));
            }
        }
    }
    consumer.assign(&tpl)?;
    Ok(marks)
}

/// Retry a metadata call that fails while the cluster settles (a topic just created has no
/// leader yet, a coordinator is loading): up to 30 s, then give up with the last error.
fn with_retries<T>(mut call: impl FnMut() -> Result<T, KafkaError>) -> Result<T, KafkaError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match call() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() < deadline => {
                warn!(error = %e, "Kafka metadata not ready; retrying");
                std::thread::sleep(Duration::from_millis(500));
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
