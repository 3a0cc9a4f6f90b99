//! Stage 1, the fan-out: alarms applied to the state of their object's partition, impacts
//! sent to the circuits they hit, and a watermark per partition.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{error, warn};

use super::changelog::StateKind;
use super::processor::{Ctx, Out, PartitionRecord, Partitions, Processor};
use super::records::not_json;
use super::replica::{read, Change};
use super::{ServiceConfig, StageKind, TopicNames};
use crate::alarm::{check_not_in_future, Alarm};
use crate::correlation::{AlarmRecord, FanOut, Impact};
use crate::engine::{late_notice, Input, Output, Warning};
use crate::intake::{decode_with, Stream};
use crate::kafka::client_config;
use crate::live::partition_for_key;
use crate::live::Live;
use crate::rejection::{batch_elements, RejectReason};

/// Alarms read on partition `from` and sent on to partition `to` of the repartition
/// topic in one transaction, below offset `end` there; `at` is the oldest event time.
/// `end` is `None` while the broker has not told it (it did not answer after the
/// commit): it is asked again at the next confirmation, and any end it gives then is at
/// or past the real one, so the alarms stay held until they are surely read.
pub(super) struct InFlight {
    pub(super) from: i32,
    pub(super) to: i32,
    pub(super) end: Option<i64>,
    pub(super) at: DateTime<Utc>,
}

/// How long one watermark or offsets query to the broker may wait. A tick makes several
/// (every alarms partition owned, two topics each): once one goes unanswered the tick
/// makes no more, so that a broker that does not answer costs a tick one wait, not one
/// per partition (which kept a stopping instance past its shutdown deadline).
const QUERY_WAIT: Duration = Duration::from_secs(2);

/// The fan-out stage's own state: per partition of the alarms topic, the active alarms of
/// its objects, and what it needs to report the partition's watermark.
#[derive(Default)]
pub(super) struct FanOutProcessor {
    fanout: BTreeMap<i32, FanOut>,
    /// When an alarm was last read from each alarms partition.
    last_alarm: BTreeMap<i32, Instant>,
    /// The watermark last sent for each alarms partition.
    reported: BTreeMap<i32, DateTime<Utc>>,
    /// The latest event time of the alarms read on each alarms partition and sent on to
    /// another (those applied here move the fan-out state's watermark).
    read_clock: BTreeMap<i32, DateTime<Utc>>,
    /// Alarms sent on to another partition in the transaction being built: (from, to,
    /// event time).
    sent_on: Vec<(i32, i32, DateTime<Utc>)>,
    /// Alarms sent on and committed, not yet read by the task of their partition; each
    /// holds back the watermark of the partition it was read from, so that the circuits'
    /// clock does not pass it before its impacts are out.
    in_flight: Vec<InFlight>,
    /// A client of the stage's group (not a member) that reads the offsets its tasks
    /// committed on the repartition topic.
    group_probe: Option<BaseConsumer>,
    /// Partitions the consumer reported at their end since their last record (librdkafka
    /// names the partition, not the topic: a hint, checked against the partition's high
    /// watermark).
    at_end: BTreeSet<i32>,
}

impl FanOutProcessor {
    /// Stage 1: an alarm read on partition `p` of the alarms topic is applied there when
    /// its object hashes to `p` (the topic's contract: keyed by alarmed object, Kafka's
    /// default partitioner), else sent on to the partition that keeps its object's state;
    /// other inputs are applied here.
    pub(super) fn place_alarm(
        &mut self,
        ctx: &mut Ctx<'_>,
        p: i32,
        msg: &BorrowedMessage<'_>,
        input: Input,
    ) -> Result<(), RejectReason> {
        let Input::Alarm(alarm) = &input else {
            return self.fan_out(ctx, p, input);
        };
        let home = partition_for_key(alarm.object.as_bytes(), ctx.partitions.alarms);
        if home == p {
            return self.fan_out(ctx, p, input);
        }
        // Checked here, so that a rejection carries the record as the NMS sent it (and a
        // time too far ahead moves no clock).
        check_not_in_future(alarm, Utc::now(), ctx.config.policy.max_future_skew())?;
        let bytes = serde_json::to_vec(alarm).map_err(|e| RejectReason::Inconsistent {
            detail: format!("the alarm cannot be sent on to its object's partition: {e}"),
        })?;
        // Read here, applied elsewhere: this partition's clock has seen it all the same.
        let read = self.read_clock.entry(p).or_insert(alarm.event_time);
        *read = (*read).max(alarm.event_time);
        let topic = ctx.config.topics.alarms_repartition.clone();
        self.sent_on.push((p, home, alarm.event_time));
        ctx.send_on(topic, home, alarm.object.as_bytes().to_vec(), bytes, msg);
        Ok(())
    }

    /// Stage 1: one decoded input from the alarms, maintenance or inventory topic.
    pub(super) fn fan_out(
        &mut self,
        ctx: &mut Ctx<'_>,
        p: i32,
        input: Input,
    ) -> Result<(), RejectReason> {
        let cfg = Arc::clone(ctx.config);
        let policy = &cfg.policy;
        let replica = Arc::clone(ctx.replica);
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
                self.send_impacts(ctx, impacts);
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
                    ctx.route(vec![Output::Warning(Warning::LateNotice(n))]);
                }
            }
            // Applied by the replica; read here only so that a bad record is rejected once.
            Input::Inventory(_) | Input::CancelWindow { .. } | Input::Command(_) => {}
        }
        Ok(())
    }

    pub(super) fn send_impacts(&mut self, ctx: &mut Ctx<'_>, impacts: Vec<Impact>) {
        let topic = ctx.config.topics.impacts.clone();
        for impact in impacts {
            match serde_json::to_vec(&impact) {
                Ok(bytes) => ctx.pending.push(Out {
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

    /// Forget the alarms in flight that their partition's task has read and committed.
    /// False when the broker did not answer.
    pub(super) fn confirm_in_flight(&mut self, ctx: &mut Ctx<'_>) -> bool {
        if self.in_flight.is_empty() {
            return true;
        }
        let topic = ctx.config.topics.alarms_repartition.clone();
        if self.group_probe.is_none() {
            let probe = client_config(&ctx.config.bootstrap_servers, &ctx.config.client_overrides)
                .set(
                    "group.id",
                    format!("{}-{}", ctx.config.group_id, Self::KIND.name()),
                )
                .set("enable.auto.commit", "false")
                .set("isolation.level", "read_committed")
                .create::<BaseConsumer>();
            match probe {
                Ok(c) => self.group_probe = Some(c),
                Err(e) => {
                    warn!(error = %e, "cannot read the stage's committed offsets");
                    return true;
                }
            }
        }
        let Some(probe) = &self.group_probe else {
            return false;
        };
        // Ends the broker did not give after the commit: asked again now.
        let mut answered = true;
        for f in self.in_flight.iter_mut().filter(|f| f.end.is_none()) {
            if !answered {
                break;
            }
            match ctx.probe.fetch_watermarks(&topic, f.to, QUERY_WAIT) {
                Ok((_, high)) => f.end = Some(high),
                Err(_) => answered = false,
            }
        }
        if !answered {
            return false;
        }
        let mut tpl = TopicPartitionList::new();
        let targets: BTreeSet<i32> = self.in_flight.iter().map(|f| f.to).collect();
        for q in targets {
            tpl.add_partition(&topic, q);
        }
        let Ok(committed) = probe.committed_offsets(tpl, QUERY_WAIT) else {
            return false;
        };
        self.in_flight.retain(|f| {
            let at = committed
                .find_partition(&topic, f.to)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            // A committed offset one short of the end is the transaction's closing marker.
            match (at, f.end) {
                (Some(o), Some(end)) => o.saturating_add(1) < end,
                _ => true,
            }
        });
        true
    }
}

impl Processor for FanOutProcessor {
    const KIND: StageKind = StageKind::FanOut;
    const ENTITY: &'static str = "fanout";

    fn inputs(topics: &TopicNames) -> Vec<String> {
        vec![
            topics.alarms.clone(),
            topics.alarms_repartition.clone(),
            topics.maintenance.clone(),
            topics.inventory.clone(),
        ]
    }

    fn keyed_input(topics: &TopicNames) -> &str {
        &topics.alarms
    }

    fn keyed_count(partitions: Partitions) -> i32 {
        partitions.alarms
    }

    fn changelog(topics: &TopicNames) -> &str {
        &topics.fanout_changelog
    }

    fn assign(&mut self, p: i32) {
        // Quiet from the assignment on: an empty partition is idle only after
        // `idle_after`, like any other.
        self.last_alarm.insert(p, Instant::now());
        self.fanout.insert(p, FanOut::new());
    }

    /// An alarm's record; a tombstone is an alarm with nothing active.
    type Decoded = AlarmRecord;

    fn decode(_raw_key: &[u8], opened: Option<(StateKind, &[u8])>) -> Result<AlarmRecord, String> {
        // The fan-out keeps no bookkeeping: every record is an alarm's (releases
        // before 0.2 sealed an alarm keyed `~meta` or `~pending/…` as bookkeeping).
        match opened {
            Some((_, body)) => serde_json::from_slice(body).map_err(|e| e.to_string()),
            None => Ok(AlarmRecord::default()),
        }
    }

    fn restore_record(
        &mut self,
        _config: &ServiceConfig,
        p: i32,
        _raw_key: &[u8],
        key: &str,
        _opened: Option<(StateKind, &[u8])>,
        record: AlarmRecord,
    ) -> Result<(), String> {
        if let Some(fanout) = self.fanout.get_mut(&p) {
            fanout.import(key, record);
        }
        Ok(())
    }

    fn restored(&mut self, _ctx: &mut Ctx<'_>) {}

    /// Stage 1: an alarm (one record, or a VES batch), a maintenance window or a circuit record
    /// read on partition `p`.
    fn handle(&mut self, ctx: &mut Ctx<'_>, p: i32, msg: &BorrowedMessage<'_>) {
        let cfg = Arc::clone(ctx.config);
        let t = &cfg.topics;
        if msg.topic() == t.alarms_repartition {
            // Sent on by the task of another partition: decoded and checked there.
            self.last_alarm.insert(p, Instant::now());
            match msg.payload().map(serde_json::from_slice::<Alarm>) {
                Some(Ok(alarm)) => {
                    if let Err(reason) = self.fan_out(ctx, p, Input::Alarm(alarm)) {
                        ctx.reject(msg, &reason, None);
                    }
                }
                _ => ctx.reject(msg, &not_json("a repartitioned alarm"), None),
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
            if let Err(reason) = result.and_then(|input| self.place_alarm(ctx, p, msg, input)) {
                failed.push((i, reason));
            }
        }
        if batch && !failed.is_empty() {
            // Each rejection carries its own element, not the whole batch.
            let elements = msg.payload().and_then(batch_elements).unwrap_or_default();
            for (i, reason) in failed {
                let element = elements.get(i).map(|e| e.get().as_bytes());
                ctx.reject_with(msg, element.or(msg.payload()), &reason, Some(i));
            }
        } else {
            for (_, reason) in failed {
                ctx.reject(msg, &reason, None);
            }
        }
    }

    fn partition_end(&mut self, p: i32) {
        self.at_end.insert(p);
    }

    /// Stage 1: a circuit added or re-routed under active alarms is hit by them.
    fn on_change(&mut self, ctx: &mut Ctx<'_>, change: Change) {
        let replica = Arc::clone(ctx.replica);
        let now = Utc::now();
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
        self.send_impacts(ctx, impacts);
    }

    /// Stage 1: the watermark of partitions idle at their end moves to the wall clock, and
    /// each partition reports its watermark when it has moved.
    fn tick<C: ConsumerContext>(
        &mut self,
        ctx: &mut Ctx<'_>,
        consumer: &BaseConsumer<C>,
        idle_after: Duration,
    ) {
        let now = Utc::now();
        let partitions: Vec<i32> = self.fanout.keys().copied().collect();
        let positions = consumer.position().ok();
        let alarms = ctx.config.topics.alarms.clone();
        let repartition = ctx.config.topics.alarms_repartition.clone();
        // Whether the broker answers this tick's queries: once one goes unanswered, no
        // partition is taken as read to its end (and none is asked about) until the next.
        let mut answered = self.confirm_in_flight(ctx);
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
                && answered
                && [&alarms, &repartition].into_iter().all(|topic| {
                    match read_to_end(ctx, topic, p, positions.as_ref(), at_end) {
                        Some(end) => end,
                        None => {
                            answered = false;
                            false
                        }
                    }
                });
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
            let topic = ctx.config.topics.impacts.clone();
            ctx.broadcast_watermark(&topic, ctx.partitions.impacts, p, mark);
        }
    }

    fn flush_state(&mut self, records: &mut Vec<PartitionRecord>) {
        for (p, fanout) in &mut self.fanout {
            for key in fanout.take_dirty() {
                let value = fanout
                    .export(&key)
                    .and_then(|r| serde_json::to_vec(&r).ok());
                records.push((*p, key.into_bytes(), StateKind::Entity, value));
            }
        }
    }

    /// After a commit: the alarms it sent on are below the current end of their
    /// repartition partitions; each is in flight until the stage's group has committed an
    /// offset at or past that end on the partition.
    fn committed(&mut self, ctx: &mut Ctx<'_>) {
        if self.sent_on.is_empty() {
            return;
        }
        let topic = ctx.config.topics.alarms_repartition.clone();
        let mut oldest: BTreeMap<(i32, i32), DateTime<Utc>> = BTreeMap::new();
        for (from, to, at) in std::mem::take(&mut self.sent_on) {
            let t = oldest.entry((from, to)).or_insert(at);
            *t = (*t).min(at);
        }
        let mut ends: BTreeMap<i32, Option<i64>> = BTreeMap::new();
        let mut answered = true;
        for ((from, to), at) in oldest {
            let end = match ends.get(&to) {
                Some(e) => *e,
                None => {
                    // Unknown when the broker does not answer: asked again at the next
                    // confirmation (`InFlight::end`).
                    let e = if answered {
                        ctx.probe
                            .fetch_watermarks(&topic, to, QUERY_WAIT)
                            .map(|(_, high)| high)
                            .ok()
                    } else {
                        None
                    };
                    answered &= e.is_some();
                    ends.insert(to, e);
                    e
                }
            };
            self.in_flight.push(InFlight { from, to, end, at });
        }
    }

    fn discard(&mut self, _live: &Live) {
        self.fanout.clear();
        self.reported.clear();
        self.read_clock.clear();
        self.sent_on.clear();
        self.in_flight.clear();
        self.at_end.clear();
        self.last_alarm.clear();
    }
}

/// Has the stage read partition `p` of `topic` to its end (`None`: the broker did not
/// answer)? Where the stage is in the
/// partition is the consumer's position once it has read a record, else the offset it
/// resumed from: after a restart on a quiet network nothing is read, and the position
/// stays unknown however old the partition's data.
fn read_to_end(
    ctx: &Ctx<'_>,
    topic: &str,
    p: i32,
    positions: Option<&TopicPartitionList>,
    at_end: bool,
) -> Option<bool> {
    let position = positions
        .and_then(|tpl| tpl.find_partition(topic, p))
        .and_then(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        });
    let resumed = ctx.offsets.get(&(topic.to_string(), p)).copied();
    // Asked through a client of its own: on the stage consumer's connection the
    // request waits behind a fetch long-poll (fetch.wait.max.ms), which stalled the
    // stage for seconds.
    match ctx.probe.fetch_watermarks(topic, p, QUERY_WAIT) {
        // librdkafka moves a position it knows past transaction markers. Without one,
        // the consumer starts at the offset it resumed from (at least the partition's
        // start: records may have been deleted meanwhile); there one record short of
        // the end is a closing marker once the consumer has said it is at the end.
        Ok((low, high)) => Some(match (position, resumed) {
            (Some(o), _) => o >= high,
            (None, Some(r)) => {
                let r = r.clamp(low, high);
                r >= high || (at_end && r + 1 >= high)
            }
            (None, None) => low == high,
        }),
        Err(_) => None,
    }
}
