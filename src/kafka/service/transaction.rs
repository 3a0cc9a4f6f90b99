//! A stage's transaction: the batch's outputs, its changelog records and the offsets of
//! every partition the stage owns, committed at once.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, error, warn};

use super::processor::Processor;
use super::records::ORIGIN_HEADER;
use super::stage::{Stage, StageContext};
use super::{ServiceError, TXN_TIMEOUT};
use crate::telemetry;

/// How long a transaction call may still wait once the service is stopping: the grace a
/// commit under way is cut to ([`crate::kafka::commit_drained`]) applies to every call.
pub(super) const SHUTDOWN_GRACE: Duration = crate::kafka::STOPPING_GRACE;

/// Attempts at an ambiguous (retriable) commit before the stage gives up on it and starts
/// again from the last commit (its new producer settles the transaction).
pub(super) const COMMIT_ATTEMPTS: u32 = 5;

/// Largest record (key and value) the stages write: under librdkafka's and the broker's
/// 1 000 000-byte defaults (`message.max.bytes`), with room for headers and framing.
pub(super) const MAX_RECORD_BYTES: usize = 990_000;

impl<P: Processor> Stage<P> {
    /// Write the batch in flight, its state changes and its offsets in one transaction.
    pub(super) fn commit(
        &mut self,
        consumer: &BaseConsumer<StageContext<P>>,
    ) -> Result<(), ServiceError> {
        self.flush_state();
        if self.pending.is_empty() && !self.offsets_dirty {
            // Never commit an empty transaction; the state in memory is the committed one.
            let (processor, mut ctx) = self.split();
            processor.unchanged(&mut ctx);
            return Ok(());
        }
        let started = Instant::now();
        let result = self.transact(consumer);
        let stage = P::KIND.name();
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
                debug!(
                    stage = P::KIND.name(),
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
    pub(super) fn patience(&self) -> Duration {
        if self.shutdown.load(Ordering::Relaxed) {
            SHUTDOWN_GRACE
        } else {
            TXN_TIMEOUT
        }
    }

    pub(super) fn transact(
        &mut self,
        consumer: &BaseConsumer<StageContext<P>>,
    ) -> Result<(), ServiceError> {
        let producer = &self.producer;
        // Asked at every call that may wait on the broker: a SIGTERM received during the
        // transaction shortens what is left of it to the shutdown grace.
        let patience = || self.patience();
        let stopping = || self.shutdown.load(Ordering::Relaxed);
        let watch = &self.watch;
        let stage = P::KIND;
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
                    // The producer's queue is full: wait for deliveries, unless stopping
                    // (a broker that does not answer would never make room).
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                        if stopping() =>
                    {
                        let _ = producer.abort_transaction(patience());
                        return Err(ServiceError::Aborted(
                            "transaction given up at shutdown: the producer's queue is full".into(),
                        ));
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(abort(producer, e, patience())),
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
                    return Err(abort(producer, e, patience()));
                }
            }
            let Some(metadata) = consumer.group_metadata() else {
                let _ = producer.abort_transaction(patience());
                return Err(ServiceError::Aborted(
                    "the consumer has no group metadata yet".into(),
                ));
            };
            // In slices, so that a SIGTERM while the broker does not answer is obeyed
            // within a slice; librdkafka lets a call that timed out be made again.
            let deadline = Instant::now() + patience();
            loop {
                let wait = patience()
                    .min(OFFSETS_SLICE)
                    .min(deadline.saturating_duration_since(Instant::now()));
                let sent = watch.watched(stage, || {
                    producer.send_offsets_to_transaction(&tpl, &metadata, wait)
                });
                match sent {
                    Ok(()) => break,
                    Err(KafkaError::Transaction(e))
                        if e.is_retriable() && !stopping() && Instant::now() < deadline => {}
                    Err(e) => return Err(abort(producer, e, patience())),
                }
            }
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            let wait = patience();
            let stopping = || self.shutdown.load(Ordering::Relaxed);
            match watch.watched(stage, || {
                crate::kafka::commit_drained(producer, wait, &stopping)
            }) {
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
                Err(e) => return Err(abort(producer, e, patience())),
            }
        }
    }
}

/// The longest single wait for the broker to take a transaction's offsets.
const OFFSETS_SLICE: Duration = Duration::from_secs(2);

/// Abort after an abortable error; a fatal error (fenced) is reported as such.
pub(super) fn abort(
    producer: &BaseProducer,
    error: KafkaError,
    patience: Duration,
) -> ServiceError {
    let e = classify(error);
    if matches!(e, ServiceError::Aborted(_)) {
        let _ = producer.abort_transaction(patience);
    }
    e
}

pub(super) fn classify(error: KafkaError) -> ServiceError {
    match &error {
        KafkaError::Transaction(e) if e.is_fatal() => ServiceError::Fenced(error.to_string()),
        KafkaError::Transaction(e) if e.txn_requires_abort() => {
            ServiceError::Aborted(error.to_string())
        }
        _ => ServiceError::Aborted(error.to_string()),
    }
}
