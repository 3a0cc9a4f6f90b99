//! What plugs a stage's own work into the generic stage: the [`Processor`] trait, one
//! implementation per stage (the fan-out, the circuit state, the incidents), and the
//! narrow context, [`Ctx`], through which a processor writes its outputs, rejections and
//! watermarks into the stage's transaction in flight.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use metrics::counter;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Message};
use tracing::{info, warn};

use super::changelog::StateKind;
use super::records::{source_of, Origin, WatermarkRecord};
use super::replica::{Change, Replica};
use super::{RunSummary, ServiceConfig, StageKind, TopicNames, WATERMARK_KEY};
use crate::engine::Output;
use crate::live::Live;
use crate::rejection::{rejection_record_key, RejectReason, Rejection};
use crate::telemetry;

/// The partition counts of the topics that tie the stages together, read when a stage
/// starts.
#[derive(Debug, Clone, Copy)]
pub(super) struct Partitions {
    /// `nms.alarms` (and `linewatch.alarms-repartition`): the fan-out stage's partitions.
    pub(super) alarms: i32,
    /// `linewatch.impacts` (and the commands topics): the circuit stage's partitions.
    pub(super) impacts: i32,
    /// `linewatch.incident-facts`: the incident stage's partitions.
    pub(super) facts: i32,
}

/// A changelog record of a partition: partition, key, what it holds, value (`None`: a
/// tombstone).
pub(super) type PartitionRecord = (i32, Vec<u8>, StateKind, Option<Vec<u8>>);

/// A stage's own work, plugged into the generic [`Stage`](super::stage::Stage), which owns
/// the loop (poll, process, transact, after-commit), the timers' cadence, the restore and
/// the rebalances. A processor holds the state of the partitions its stage owns; what it
/// writes goes through the [`Ctx`] it is given into the stage's transaction in flight.
pub(super) trait Processor: Default + Send + 'static {
    /// The stage this processor makes (its name, its consumer group, its watched calls).
    const KIND: StageKind;
    /// The envelope name of the entities of the stage's changelog.
    const ENTITY: &'static str;

    /// The topics the stage reads.
    fn inputs(topics: &TopicNames) -> Vec<String>;

    /// The input topic whose partitions key the stage's state.
    fn keyed_input(topics: &TopicNames) -> &str;

    /// How many partitions the keyed input has.
    fn keyed_count(partitions: Partitions) -> i32;

    /// The changelog of the stage's state.
    fn changelog(topics: &TopicNames) -> &str;

    /// Forget the views the stage publishes (while it starts again).
    fn clear_views(_live: &Live) {}

    /// Partition `p` is assigned: its state starts empty, and its changelog is read next.
    fn assign(&mut self, p: i32);

    /// What [`Processor::decode`] makes of a changelog record: a restore decodes records
    /// on several threads, then hands them to [`Processor::restore_record`] in order.
    type Decoded: Send;

    /// Decode one changelog record's state body, on any thread (pure): its key as written
    /// and, unless it is a tombstone, what its envelope says it holds and the body. What
    /// is not worth decoding ahead (a partition's bookkeeping) is left to
    /// [`Processor::restore_record`]. An error says why the record cannot be read.
    fn decode(raw_key: &[u8], opened: Option<(StateKind, &[u8])>) -> Result<Self::Decoded, String>;

    /// One changelog record of partition `p`, in changelog order: its key (as written, and
    /// as text), unless it is a tombstone what its envelope says it holds and the state
    /// body, and what [`Processor::decode`] made of it. An error says why the record
    /// cannot be read.
    fn restore_record(
        &mut self,
        config: &ServiceConfig,
        p: i32,
        raw_key: &[u8],
        key: &str,
        opened: Option<(StateKind, &[u8])>,
        decoded: Self::Decoded,
    ) -> Result<(), String>;

    /// The restore is over: what it restored is the committed state.
    fn restored(&mut self, ctx: &mut Ctx<'_>);

    /// One input record, of partition `p`, owned by the stage.
    fn handle(&mut self, ctx: &mut Ctx<'_>, p: i32, msg: &BorrowedMessage<'_>);

    /// The consumer is at the end of partition `p` of one of the inputs (librdkafka names
    /// the partition, not the topic).
    fn partition_end(&mut self, _p: i32) {}

    /// A change of the replicated inventory or maintenance windows.
    fn on_change(&mut self, _ctx: &mut Ctx<'_>, _change: Change) {}

    /// Live timers, every `tick` of the configuration.
    fn tick<C: ConsumerContext>(
        &mut self,
        ctx: &mut Ctx<'_>,
        consumer: &BaseConsumer<C>,
        idle_after: Duration,
    );

    /// The batch read is over and its transaction is about to be written: work best done
    /// once per batch rather than per record read (the incidents of all the facts read).
    fn end_of_batch(&mut self, _ctx: &mut Ctx<'_>) {}

    /// The changelog records of the state changed since the last call.
    fn flush_state(&mut self, records: &mut Vec<PartitionRecord>);

    /// After a commit: the state in memory is the committed state.
    fn committed(&mut self, _ctx: &mut Ctx<'_>) {}

    /// Nothing was committed: the state in memory is the committed state.
    fn unchanged(&mut self, _ctx: &mut Ctx<'_>) {}

    /// Forget every partition's state, and what the batch in flight changed (after a lost
    /// assignment or an abort).
    fn discard(&mut self, live: &Live);
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

/// Counts of the batch in flight, added to the metrics when it commits.
#[derive(Default)]
pub(super) struct BatchStats {
    pub(super) messages_in: BTreeMap<String, u64>,
    pub(super) ticket_events: BTreeMap<String, u64>,
    pub(super) rejections: BTreeMap<&'static str, u64>,
    /// Kafka timestamps (ms) of the records consumed.
    pub(super) timestamps: Vec<i64>,
}

/// What a processor is given of its stage: the configuration, the replica, the instance's
/// shared state, and the transaction in flight, to which it adds records.
pub(super) struct Ctx<'a> {
    pub(super) config: &'a Arc<ServiceConfig>,
    pub(super) replica: &'a Arc<RwLock<Replica>>,
    pub(super) live: &'a Live,
    pub(super) partitions: Partitions,
    /// A client for metadata and watermark queries, off the stage consumer's connection.
    pub(super) probe: &'a BaseConsumer,
    /// Next offset to read, per input topic and partition owned.
    pub(super) offsets: &'a BTreeMap<(String, i32), i64>,
    pub(super) pending: &'a mut Vec<Out>,
    pub(super) batch: &'a mut BatchStats,
    pub(super) summary: &'a Mutex<RunSummary>,
}

impl Ctx<'_> {
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

    /// [`Ctx::reject`] with `original` standing for the record's value (a batch's
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

    /// Tell every partition (`partitions` of them) of the next stage's input `topic` that
    /// partition `p` of this stage has written everything older than `watermark`.
    pub(super) fn broadcast_watermark(
        &mut self,
        topic: &str,
        partitions: i32,
        p: i32,
        watermark: DateTime<Utc>,
    ) {
        let record = WatermarkRecord {
            source_partition: p,
            watermark,
        };
        let Ok(bytes) = serde_json::to_vec(&record) else {
            return;
        };
        for target in 0..partitions {
            self.pending.push(Out {
                topic: topic.to_string(),
                partition: Some(target),
                key: WATERMARK_KEY.to_vec(),
                value: Some(bytes.clone()),
                origin: None,
            });
        }
    }
}
