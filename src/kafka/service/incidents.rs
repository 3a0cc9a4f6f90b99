//! Stage 3, the incidents: ticket facts folded in event-time order into the incidents of
//! their root alarm.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Message};
use tracing::error;

use super::buffer::Buffer;
use super::changelog::StateKind;
use super::processor::{Ctx, PartitionRecord, Partitions, Processor};
use super::records::{bad_watermark, not_json, watermark_record};
use super::{ServiceConfig, StageKind, TopicNames, INTERNAL_KEY_BYTE};
use crate::engine::Output;
use crate::incident::{IncidentBook, IncidentEvent, TicketFacts};
use crate::live::Live;

/// Stage 3's state of one partition: the incidents, and the ticket facts waiting for the
/// event-time clock (with the record key each came under).
#[derive(Default)]
pub(super) struct IncidentPartition {
    pub(super) book: IncidentBook,
    pub(super) buf: Buffer<(String, TicketFacts)>,
}

/// A view change to publish once the transaction that carries it commits (circuits' views
/// are built after the commit instead, from the committed state).
enum ViewUpdate {
    Incident(String, Option<Box<IncidentEvent>>),
}

/// The incident stage's own state: per partition of `linewatch.incident-facts`, the
/// incidents and the facts waiting for the clock, and the view changes of the batch in
/// flight.
#[derive(Default)]
pub(super) struct IncidentProcessor {
    incidents: BTreeMap<i32, IncidentPartition>,
    /// View changes of the batch in flight.
    views: Vec<ViewUpdate>,
}

impl IncidentProcessor {
    /// Stage 3: fold in, in event-time order, the facts of partition `p` older than its
    /// limit (the oldest circuit-state clock), those of one instant together.
    pub(super) fn release_incidents(&mut self, ctx: &mut Ctx<'_>, p: i32) {
        let upstream = ctx.partitions.impacts;
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
        ctx.route(
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

    pub(super) fn incident_partition(&mut self, p: i32) -> Option<&mut IncidentPartition> {
        let part = self.incidents.get_mut(&p);
        if part.is_none() {
            error!(
                partition = p,
                "no state for an assigned partition; input ignored"
            );
        }
        part
    }
}

impl Processor for IncidentProcessor {
    const KIND: StageKind = StageKind::Incidents;
    const ENTITY: &'static str = "incident";

    fn inputs(topics: &TopicNames) -> Vec<String> {
        vec![topics.incident_facts.clone()]
    }

    fn keyed_input(topics: &TopicNames) -> &str {
        &topics.incident_facts
    }

    fn keyed_count(partitions: Partitions) -> i32 {
        partitions.facts
    }

    fn changelog(topics: &TopicNames) -> &str {
        &topics.incident_changelog
    }

    fn clear_views(live: &Live) {
        live.views.clear_incidents();
    }

    fn assign(&mut self, p: i32) {
        self.incidents.insert(p, IncidentPartition::default());
    }

    fn restore_record(
        &mut self,
        _config: &ServiceConfig,
        p: i32,
        raw_key: &[u8],
        key: &str,
        opened: Option<(StateKind, &[u8])>,
    ) -> Result<(), String> {
        let Some(part) = self.incidents.get_mut(&p) else {
            return Ok(());
        };
        match opened {
            Some((kind, body)) if kind.is_bookkeeping() => {
                if let Err(e) = part.buf.restore(raw_key, kind, body) {
                    // As for circuits: an incident of a release before 0.2 keyed
                    // like bookkeeping.
                    match serde_json::from_slice(body) {
                        Ok(incident) if raw_key.first() != Some(&INTERNAL_KEY_BYTE) => {
                            part.book.restore(incident);
                        }
                        _ => return Err(e),
                    }
                }
            }
            Some((_, body)) => {
                let incident = serde_json::from_slice(body).map_err(|e| e.to_string())?;
                part.book.restore(incident);
            }
            None => {
                if !part.buf.restore_tombstone(raw_key) {
                    part.book.forget_key(key);
                }
            }
        }
        part.book.take_dirty();
        Ok(())
    }

    /// The restored (committed) state is what the views show; what follows reaches them
    /// with the next commit.
    fn restored(&mut self, ctx: &mut Ctx<'_>) {
        let views = &ctx.live.views;
        for part in self.incidents.values() {
            for incident in part.book.incidents() {
                if let Some(record) = incident.record() {
                    views.put_incident(incident.root_key(), record);
                }
            }
        }
    }

    /// Stage 3: ticket facts or a circuit-state partition's watermark read on partition `p`.
    fn handle(&mut self, ctx: &mut Ctx<'_>, p: i32, msg: &BorrowedMessage<'_>) {
        let key = msg
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let upstream = ctx.partitions.impacts;
        if let Some(w) = watermark_record(msg) {
            match w {
                Ok(w) => {
                    let known = self
                        .incident_partition(p)
                        .is_some_and(|part| part.buf.report(&w, upstream));
                    if known {
                        self.release_incidents(ctx, p);
                    } else {
                        ctx.reject(msg, &bad_watermark(&w, upstream), None);
                    }
                }
                Err(()) => ctx.reject(msg, &not_json("a watermark record"), None),
            }
            return;
        }
        match msg.payload().map(serde_json::from_slice::<TicketFacts>) {
            Some(Ok(facts)) => {
                if let Some(part) = self.incident_partition(p) {
                    part.buf.hold(facts.at, 0, (key, facts));
                }
                self.release_incidents(ctx, p);
            }
            _ => ctx.reject(msg, &not_json("ticket facts"), None),
        }
    }

    /// Stage 3: the facts each partition can release now.
    fn tick<C: ConsumerContext>(
        &mut self,
        ctx: &mut Ctx<'_>,
        _consumer: &BaseConsumer<C>,
        _idle_after: Duration,
    ) {
        let parts: Vec<i32> = self.incidents.keys().copied().collect();
        for p in parts {
            self.release_incidents(ctx, p);
        }
    }

    fn flush_state(&mut self, records: &mut Vec<PartitionRecord>) {
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
    }

    /// The batch's view changes are published.
    fn committed(&mut self, ctx: &mut Ctx<'_>) {
        let views = &ctx.live.views;
        for update in self.views.drain(..) {
            match update {
                ViewUpdate::Incident(key, Some(record)) => views.put_incident(&key, *record),
                ViewUpdate::Incident(key, None) => views.remove_incident(&key),
            }
        }
    }

    fn discard(&mut self, live: &Live) {
        self.views.clear();
        live.views.clear_incidents();
        self.incidents.clear();
    }
}
