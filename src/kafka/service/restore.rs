//! A stage's restore: on assignment, each partition's state read back from its changelog
//! partition, in slices between polls of the stage's consumer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::changelog::{open_state, StateKind};
use super::processor::Processor;
use super::stage::{Stage, StageContext};
use super::{with_retries, ServiceError};
use crate::kafka::client_config;
use crate::telemetry;

/// A restore that reads nothing for this long restarts the stage (a partition without a
/// leader, a log truncated under it) instead of waiting forever.
pub(super) const RESTORE_STALL: Duration = Duration::from_secs(120);

/// How long a restore reads before the stage polls its group consumer again (which keeps
/// the member in its group, however long the whole restore takes).
pub(super) const RESTORE_SLICE: Duration = Duration::from_millis(200);

/// Changelog records read before they are decoded together.
const RESTORE_CHUNK: usize = 2_000;

/// Most threads that decode a chunk of changelog records (the stage's own included).
const RESTORE_THREADS: usize = 4;

/// A changelog record as read, owned (librdkafka's messages stay on the reading thread).
pub(super) struct Read {
    p: i32,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

/// A restore in progress: the changelog partitions being read, and how far.
pub(super) struct Restore {
    pub(super) restorer: BaseConsumer,
    pub(super) topic: String,
    pub(super) partitions: Vec<i32>,
    /// High watermark of each changelog partition when the restore began.
    pub(super) ends: BTreeMap<i32, i64>,
    /// Partitions not read to their end yet.
    pub(super) open: BTreeSet<i32>,
    pub(super) records: u64,
    /// Records already added to the restore counter.
    pub(super) counted: u64,
    pub(super) since_check: u32,
    /// When a record was last read (or a partition found at its end).
    pub(super) progress: Instant,
    pub(super) last_log: Instant,
    pub(super) started: Instant,
}

impl<P: Processor> Stage<P> {
    /// After an assignment: read the group's committed offsets (stable: no transaction of
    /// a previous owner still pending), then restore the state of the newly assigned
    /// partitions from the changelog, up to its high watermark at that point. Failures
    /// restart the stage.
    pub(super) fn restore_assigned(
        &mut self,
        consumer: &BaseConsumer<StageContext<P>>,
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
    pub(super) fn begin_restore(
        &mut self,
        consumer: &BaseConsumer<StageContext<P>>,
    ) -> Result<(), ServiceError> {
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
        let topic = P::changelog(&self.config.topics).to_string();
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
            self.processor.assign(*p);
        }
        restorer.assign(&tpl).map_err(retry)?;
        gauge!(telemetry::RESTORE_PENDING, "stage" => P::KIND.name()).set(partitions.len() as f64);
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
    pub(super) fn restore_slice(&mut self, r: &mut Restore) -> Result<bool, ServiceError> {
        let retry = |e: KafkaError| ServiceError::Aborted(format!("restoring state: {e}"));
        let slice_end = Instant::now() + RESTORE_SLICE;
        let mut chunk = Vec::with_capacity(RESTORE_CHUNK);
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
                    let p = msg.partition();
                    chunk.push(Read {
                        p,
                        key: msg.key().unwrap_or_default().to_vec(),
                        value: msg.payload().map(<[u8]>::to_vec),
                    });
                    if chunk.len() >= RESTORE_CHUNK {
                        self.restore_chunk(&r.topic, &mut chunk)?;
                    }
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
                counter!(telemetry::RESTORE_RECORDS, "stage" => P::KIND.name())
                    .increment(r.records - r.counted);
                r.counted = r.records;
                info!(
                    stage = P::KIND.name(),
                    records = r.records,
                    "restoring state"
                );
            }
        }
        self.restore_chunk(&r.topic, &mut chunk)?;
        Ok(r.open.is_empty())
    }

    /// The restore is over: publish what it restored, and read the assignment's inputs
    /// from their committed offsets on.
    pub(super) fn finish_restore(
        &mut self,
        consumer: &BaseConsumer<StageContext<P>>,
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
        counter!(telemetry::RESTORE_RECORDS, "stage" => P::KIND.name())
            .increment(records - counted);
        // The restored (committed) state is what the views show; what follows reaches them
        // with the next commit.
        let (processor, mut ctx) = self.split();
        processor.restored(&mut ctx);
        if let Ok(mut s) = self.summary.lock() {
            s.restored_records += records;
        }
        gauge!(telemetry::RESTORE_PENDING, "stage" => P::KIND.name()).set(0.0);
        self.live
            .update_stage(P::KIND.name(), |info| info.restoring = false);
        info!(
            stage = P::KIND.name(),
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

    /// Decode the records of `chunk` on up to [`RESTORE_THREADS`] threads, then put them
    /// back in changelog order. Decoding is most of a restore's work (a circuit's state is
    /// several kilobytes of JSON); putting back is map inserts.
    fn restore_chunk(&mut self, topic: &str, chunk: &mut Vec<Read>) -> Result<(), ServiceError> {
        fn opened<'a>(r: &'a Read, entity: &str) -> Result<Option<(StateKind, &'a [u8])>, String> {
            r.value
                .as_deref()
                .map(|b| open_state(b, entity))
                .transpose()
        }
        let decode = |r: &Read| opened(r, P::ENTITY).and_then(|o| P::decode(&r.key, o));
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .clamp(1, RESTORE_THREADS);
        let decoded: Vec<Result<P::Decoded, String>> = if threads == 1 || chunk.len() < 256 {
            chunk.iter().map(decode).collect()
        } else {
            let per = chunk.len().div_ceil(threads);
            std::thread::scope(|scope| {
                let mut parts = chunk.chunks(per);
                let own = parts.next().unwrap_or_default();
                let others: Vec<_> = parts
                    .map(|part| scope.spawn(move || part.iter().map(decode).collect::<Vec<_>>()))
                    .collect();
                let mut out: Vec<Result<P::Decoded, String>> = own.iter().map(decode).collect();
                for handle in others {
                    match handle.join() {
                        Ok(part) => out.extend(part),
                        Err(_) => {
                            return Err(ServiceError::Aborted(
                                "restoring state: a decoding thread panicked".into(),
                            ))
                        }
                    }
                }
                Ok(out)
            })?
        };
        for (r, decoded) in chunk.drain(..).zip(decoded) {
            let key = String::from_utf8_lossy(&r.key).into_owned();
            let bad = |error: String| ServiceError::BadState {
                topic: topic.to_string(),
                partition: r.p,
                key: key.escape_debug().to_string(),
                error,
            };
            let decoded = decoded.map_err(bad)?;
            let opened = opened(&r, P::ENTITY).map_err(bad)?;
            self.processor
                .restore_record(&self.config, r.p, &r.key, &key, opened, decoded)
                .map_err(bad)?;
        }
        Ok(())
    }
}
