//! Stage 2, the circuit state: impacts and ticket commands applied in event-time order,
//! the circuits' timers, tickets, statuses, figures and warnings.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Message};
use serde::{Deserialize, Serialize};
use tracing::{error, warn};

use super::buffer::Buffer;
use super::changelog::{figures_key, figures_key_circuit, StateKind, CIRCUIT_ENTITY};
use super::processor::{Ctx, Out, PartitionRecord, Partitions, Processor};
use super::records::{bad_watermark, not_json, source_of, watermark_record};
use super::replica::{read, Change};
use super::{ServiceConfig, StageKind, TopicNames, INTERNAL_KEY_BYTE};
use crate::correlation::Impact;
use crate::engine::{CircuitStates, DecodedCircuit, DecodedFigures, Input, Output};
use crate::incident::TicketFacts;
use crate::intake::{decode, Stream};
use crate::live::{partition_for_key, Live};
use crate::maintenance::MaintenanceWindow;
use crate::rejection::{rejection_record_key, RejectReason, Rejection, Source};

/// Stage 2's state of one partition: the circuits, and the impacts and commands waiting
/// for the event-time clock.
#[derive(Default)]
pub(super) struct CircuitPartition {
    pub(super) states: CircuitStates,
    pub(super) buf: Buffer<Pending>,
}

/// An input of stage 2 waiting until every fan-out partition has passed its event time.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub(super) enum Pending {
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

/// The circuit stage's own state: per partition of `linewatch.impacts`, the circuits and
/// the inputs waiting for the clock, and what the views of the circuits still need.
#[derive(Default)]
pub(super) struct CircuitProcessor {
    circuits: BTreeMap<i32, CircuitPartition>,
    /// The clock last reported to the incident stage, per partition.
    reported: BTreeMap<i32, DateTime<Utc>>,
    /// Circuits (partition, id) changed by committed transactions (or restored) whose
    /// views are not built yet: they are built when a reader asks.
    stale_views: BTreeSet<(i32, String)>,
}

impl CircuitProcessor {
    /// Stage 2: a command read on partition `p` of the commands topic is held there when
    /// its circuit hashes to `p`, else sent on to the partition that keeps the circuit's
    /// state (whatever the record's key or the producer's partitioner).
    pub(super) fn place_command(
        &mut self,
        ctx: &mut Ctx<'_>,
        p: i32,
        msg: &BorrowedMessage<'_>,
        input: Input,
    ) -> Result<(), RejectReason> {
        let Input::Command(command) = &input else {
            return Ok(());
        };
        let home = partition_for_key(command.circuit_id.as_bytes(), ctx.partitions.impacts);
        if home == p {
            return self.command(ctx, p, msg, input);
        }
        let bytes = serde_json::to_vec(command).map_err(|e| RejectReason::Inconsistent {
            detail: format!("the command cannot be sent on to its circuit's partition: {e}"),
        })?;
        let topic = ctx.config.topics.commands_repartition.clone();
        ctx.send_on(
            topic,
            home,
            command.circuit_id.as_bytes().to_vec(),
            bytes,
            msg,
        );
        Ok(())
    }

    /// Stage 2: a ticket command, held until the clock reaches its time.
    pub(super) fn command(
        &mut self,
        ctx: &mut Ctx<'_>,
        p: i32,
        msg: &BorrowedMessage<'_>,
        input: Input,
    ) -> Result<(), RejectReason> {
        let Input::Command(command) = input else {
            return Ok(());
        };
        let now = Utc::now();
        let skew = ctx.config.policy.max_future_skew();
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
        self.release(ctx, p);
        Ok(())
    }

    /// Stage 2: apply, in event-time order, the inputs of partition `p` older than its
    /// limit (the oldest fan-out watermark), firing the partition's timers up to each
    /// input's time first, as the replay's clock does; then fire the timers up to the
    /// limit.
    pub(super) fn release(&mut self, ctx: &mut Ctx<'_>, p: i32) {
        let cfg = Arc::clone(ctx.config);
        let policy = &cfg.policy;
        let replica = Arc::clone(ctx.replica);
        let upstream = ctx.partitions.alarms;
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
                self.circuit_outputs(ctx, p, timers);
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
            self.circuit_outputs(ctx, p, out);
            if let Some((reason, topic, partition, offset, key, original)) = rejected {
                let source = Source::Kafka {
                    topic,
                    partition,
                    offset,
                };
                let rej = Rejection::new(&reason, Some(original.as_bytes()), source, Utc::now())
                    .with_key(key.as_deref().map(str::as_bytes));
                ctx.push_rejection(rej, rejection_record_key(key.as_deref().map(str::as_bytes)));
            }
        }
        let Some(part) = self.circuits.get_mut(&p) else {
            return;
        };
        if part.buf.catch_up(limit) {
            let out = part.states.advance(limit, policy);
            self.circuit_outputs(ctx, p, out);
        }
    }

    pub(super) fn circuit_partition(&mut self, p: i32) -> Option<&mut CircuitPartition> {
        let part = self.circuits.get_mut(&p);
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
    pub(super) fn circuit_outputs(&mut self, ctx: &mut Ctx<'_>, p: i32, out: Vec<Output>) {
        let cfg = Arc::clone(ctx.config);
        let policy = &cfg.policy;
        let facts_topic = ctx.config.topics.incident_facts.clone();
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
        ctx.route(out);
        for (key, f) in facts {
            match serde_json::to_vec(&f) {
                Ok(bytes) => ctx.pending.push(Out {
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

    /// Answer a reader's request for fresh views ([`Live::fresh_circuit_views`]): build
    /// the views of the circuits changed since the last request, and of the circuits now
    /// down (their outage grows between two figure records), as of their partition's
    /// clock. Called when the state in memory is the committed state (after a commit, or
    /// when there was nothing to commit); nothing is built when nobody asked.
    pub(super) fn answer_view_requests(&mut self, ctx: &mut Ctx<'_>) {
        let Some(ticket) = ctx.live.views_wanted() else {
            return;
        };
        let mut build: BTreeSet<(i32, &str)> = BTreeSet::new();
        for (p, id) in &self.stale_views {
            build.insert((*p, id.as_str()));
        }
        for (p, part) in &self.circuits {
            if part.buf.meta.clock.is_some() {
                build.extend(
                    part.states
                        .faults()
                        .filter(|f| f.is_down())
                        .map(|f| (*p, f.circuit_id.as_str())),
                );
            }
        }
        {
            let replica = read(ctx.replica);
            let views = &ctx.live.views;
            for (p, id) in build {
                let Some(part) = self.circuits.get(&p) else {
                    continue;
                };
                match part.states.view(
                    id,
                    p,
                    &replica.network,
                    &ctx.config.policy,
                    part.buf.meta.clock,
                ) {
                    Some(view) => views.put_circuit(view),
                    None => views.remove_circuit(id),
                }
            }
        }
        self.stale_views.clear();
        ctx.live.views_built(ticket);
    }
}

/// A circuit-state changelog record decoded ahead of its restore.
pub(super) enum DecodedRecord {
    Circuit(Box<DecodedCircuit>),
    Figures(DecodedFigures),
    /// Bookkeeping and tombstones, read where they are put back.
    Other,
}

impl Processor for CircuitProcessor {
    const KIND: StageKind = StageKind::Circuits;
    const ENTITY: &'static str = CIRCUIT_ENTITY;

    fn inputs(topics: &TopicNames) -> Vec<String> {
        vec![
            topics.impacts.clone(),
            topics.commands.clone(),
            topics.commands_repartition.clone(),
        ]
    }

    fn keyed_input(topics: &TopicNames) -> &str {
        &topics.impacts
    }

    fn keyed_count(partitions: Partitions) -> i32 {
        partitions.impacts
    }

    fn changelog(topics: &TopicNames) -> &str {
        &topics.circuit_changelog
    }

    fn clear_views(live: &Live) {
        live.views.clear_circuits();
    }

    fn assign(&mut self, p: i32) {
        self.circuits.insert(p, CircuitPartition::default());
    }

    type Decoded = DecodedRecord;

    fn decode(raw_key: &[u8], opened: Option<(StateKind, &[u8])>) -> Result<DecodedRecord, String> {
        let error = |e: serde_json::Error| e.to_string();
        Ok(match opened {
            Some((StateKind::Figures, body)) => {
                if figures_key_circuit(raw_key).is_none() {
                    return Err("figures under a key that is not a circuit's figures key".into());
                }
                DecodedRecord::Figures(CircuitStates::decode_figures(body).map_err(error)?)
            }
            Some((StateKind::Entity, body)) => {
                DecodedRecord::Circuit(Box::new(CircuitStates::decode(body).map_err(error)?))
            }
            _ => DecodedRecord::Other,
        })
    }

    fn restore_record(
        &mut self,
        config: &ServiceConfig,
        p: i32,
        raw_key: &[u8],
        key: &str,
        opened: Option<(StateKind, &[u8])>,
        decoded: DecodedRecord,
    ) -> Result<(), String> {
        let policy = &config.policy;
        let Some(part) = self.circuits.get_mut(&p) else {
            return Ok(());
        };
        match (opened, decoded) {
            (_, DecodedRecord::Figures(figures)) => {
                if let Some(id) = figures_key_circuit(raw_key) {
                    part.states.import_decoded_figures(id, figures);
                }
            }
            (_, DecodedRecord::Circuit(state)) => part.states.import_decoded(key, *state, policy),
            (opened, DecodedRecord::Other) => match opened {
                // Written only with the circuit's own tombstone, which forgot them.
                None if figures_key_circuit(raw_key).is_some() => {}
                Some((kind, body)) if kind.is_bookkeeping() => {
                    if let Err(e) = part.buf.restore(raw_key, kind, body) {
                        // A release before 0.2 sealed a circuit keyed `~meta` or
                        // `~pending/…` as bookkeeping: read it as what it holds.
                        if raw_key.first() == Some(&INTERNAL_KEY_BYTE)
                            || part.states.import(key, body, policy).is_err()
                        {
                            return Err(e);
                        }
                    }
                }
                Some((_, body)) => part
                    .states
                    .import(key, body, policy)
                    .map_err(|e| e.to_string())?,
                None => {
                    if !part.buf.restore_tombstone(raw_key) {
                        part.states.forget(key);
                    }
                }
            },
        }
        part.states.take_dirty();
        part.states.take_figures_dirty();
        Ok(())
    }

    /// The restored (committed) state is what the views show once a reader asks; what
    /// follows reaches them with the next commit. Then the maintenance windows, replica
    /// facts that may have reached the previous owner's state only partly.
    fn restored(&mut self, ctx: &mut Ctx<'_>) {
        ctx.live.serve_views(true);
        for (p, part) in &self.circuits {
            self.stale_views
                .extend(part.states.ids().map(|id| (*p, id.to_string())));
        }
        let windows: Vec<MaintenanceWindow> = read(ctx.replica).windows.values().cloned().collect();
        for w in windows {
            self.on_change(ctx, Change::Window(w));
        }
    }

    /// Stage 2: a ticket command, an impact or a fan-out watermark read on partition `p`.
    fn handle(&mut self, ctx: &mut Ctx<'_>, p: i32, msg: &BorrowedMessage<'_>) {
        let cfg = Arc::clone(ctx.config);
        let t = &cfg.topics;
        if msg.topic() == t.commands || msg.topic() == t.commands_repartition {
            let placed = msg.topic() == t.commands_repartition;
            for result in decode(Stream::Commands, msg.key(), msg.payload()) {
                let result = result.and_then(|input| {
                    if placed {
                        self.command(ctx, p, msg, input)
                    } else {
                        self.place_command(ctx, p, msg, input)
                    }
                });
                if let Err(reason) = result {
                    ctx.reject(msg, &reason, None);
                }
            }
        } else if let Some(w) = watermark_record(msg) {
            match w {
                Ok(w) => {
                    let upstream = ctx.partitions.alarms;
                    let known = self
                        .circuit_partition(p)
                        .is_some_and(|part| part.buf.report(&w, upstream));
                    if known {
                        self.release(ctx, p);
                    } else {
                        ctx.reject(msg, &bad_watermark(&w, upstream), None);
                    }
                }
                Err(()) => ctx.reject(msg, &not_json("a watermark record"), None),
            }
        } else {
            match msg.payload().map(serde_json::from_slice::<Impact>) {
                Some(Ok(impact)) => {
                    if let Some(part) = self.circuit_partition(p) {
                        part.buf
                            .hold(impact.event_time, 1, Pending::Impact { impact });
                    }
                    self.release(ctx, p);
                }
                _ => ctx.reject(msg, &not_json("an impact"), None),
            }
        }
    }

    /// Stage 2: circuits re-checked against the inventory, maintenance windows noted or
    /// withdrawn.
    fn on_change(&mut self, ctx: &mut Ctx<'_>, change: Change) {
        let cfg = Arc::clone(ctx.config);
        let policy = &cfg.policy;
        let replica = Arc::clone(ctx.replica);
        let now = Utc::now();
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
            self.circuit_outputs(ctx, p, out);
        }
    }

    /// Stage 2: each partition's timers fire up to its clock, which is reported to the
    /// incident stage.
    fn tick<C: ConsumerContext>(
        &mut self,
        ctx: &mut Ctx<'_>,
        _consumer: &BaseConsumer<C>,
        _idle_after: Duration,
    ) {
        let parts: Vec<i32> = self.circuits.keys().copied().collect();
        for p in parts {
            self.release(ctx, p);
            // Report the partition's clock to the incident stage.
            let Some(clock) = self.circuits.get(&p).and_then(|c| c.buf.meta.clock) else {
                continue;
            };
            if self.reported.get(&p).is_some_and(|r| *r >= clock) {
                continue;
            }
            self.reported.insert(p, clock);
            let topic = ctx.config.topics.incident_facts.clone();
            ctx.broadcast_watermark(&topic, ctx.partitions.facts, p, clock);
        }
    }

    fn flush_state(&mut self, records: &mut Vec<PartitionRecord>) {
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
    }

    /// The views are built when a reader has asked for them since the last commit.
    fn committed(&mut self, ctx: &mut Ctx<'_>) {
        self.answer_view_requests(ctx);
    }

    fn unchanged(&mut self, ctx: &mut Ctx<'_>) {
        self.answer_view_requests(ctx);
    }

    fn discard(&mut self, live: &Live) {
        live.serve_views(false);
        self.stale_views.clear();
        live.views.clear_circuits();
        self.circuits.clear();
        self.reported.clear();
    }
}
