//! Stage 3, the incidents: ticket facts folded in event-time order into the incidents of
//! their root alarm.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Message};
use tracing::error;

use super::buffer::Buffer;
use super::changelog::{members_key, members_key_parts, StateKind, INCIDENT_ENTITY};
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
    /// How many member parts the incidents written in parts have in the changelog, by
    /// root alarm key: those a smaller state no longer uses get tombstones.
    member_parts: BTreeMap<String, usize>,
}

/// The largest state body of an incident written as one record; a larger one goes in
/// parts ([`crate::incident::StateRecords`]), leaving room under the producer's record
/// limit for the key and the envelope.
const STATE_RECORD_LIMIT: usize = 900_000;

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
    const ENTITY: &'static str = INCIDENT_ENTITY;

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

    /// An incident's record is decoded where it is put back (its parts follow it).
    type Decoded = ();

    fn decode(_raw_key: &[u8], _opened: Option<(StateKind, &[u8])>) -> Result<(), String> {
        Ok(())
    }

    fn restore_record(
        &mut self,
        _config: &ServiceConfig,
        p: i32,
        raw_key: &[u8],
        key: &str,
        opened: Option<(StateKind, &[u8])>,
        (): (),
    ) -> Result<(), String> {
        let Some(part) = self.incidents.get_mut(&p) else {
            return Ok(());
        };
        // A part of an incident's members: after its incident's record.
        if let Some((index, root_key)) = members_key_parts(raw_key) {
            if let Some((_, body)) = opened {
                part.book
                    .restore_members(root_key, body)
                    .map_err(|e| e.to_string())?;
                let parts = part.member_parts.entry(root_key.to_string()).or_default();
                *parts = (*parts).max(index + 1);
            }
            part.book.take_dirty();
            return Ok(());
        }
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
                    if !known {
                        ctx.reject(msg, &bad_watermark(&w, upstream), None);
                    }
                }
                Err(()) => ctx.reject(msg, &not_json("a watermark record"), None),
            }
            return;
        }
        match msg.payload().map(serde_json::from_slice::<TicketFacts>) {
            Some(Ok(facts)) => {
                // Released at the end of the batch, not per record: facts that arrive
                // after the clock has passed their time (a late alarm's storm) would
                // otherwise make one record of their incident each, the whole incident
                // every time (2 500 records of a 2 500-circuit incident).
                if let Some(part) = self.incident_partition(p) {
                    part.buf.hold(facts.at, 0, (key, facts));
                }
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

    /// Stage 3: the facts of the batch each partition can release.
    fn end_of_batch(&mut self, ctx: &mut Ctx<'_>) {
        let parts: Vec<i32> = self.incidents.keys().copied().collect();
        for p in parts {
            self.release_incidents(ctx, p);
        }
    }

    fn flush_state(&mut self, records: &mut Vec<PartitionRecord>) {
        for (p, part) in &mut self.incidents {
            for key in part.book.take_dirty() {
                let incident = part.book.get(&key);
                let state = incident.and_then(|i| i.state_records(STATE_RECORD_LIMIT).ok());
                let record = incident.and_then(|i| i.record()).map(Box::new);
                self.views.push(ViewUpdate::Incident(key.clone(), record));
                let (value, parts) = match state {
                    Some(s) => (Some(s.head), s.parts),
                    None => (None, Vec::new()),
                };
                records.push((*p, key.clone().into_bytes(), StateKind::Entity, value));
                let before = part.member_parts.remove(&key).unwrap_or(0);
                for i in parts.len()..before {
                    records.push((*p, members_key(&key, i), StateKind::Members, None));
                }
                if !parts.is_empty() {
                    part.member_parts.insert(key.clone(), parts.len());
                }
                for (i, body) in parts.into_iter().enumerate() {
                    records.push((*p, members_key(&key, i), StateKind::Members, Some(body)));
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::service::changelog::{open_state, seal_state};
    use crate::kafka::service::transaction::MAX_RECORD_BYTES;
    use crate::levels::{AssuranceLevel, CustomerLevel, Severity};
    use crate::policy::{CauseClass, Policy};
    use crate::ticket::RootCause;
    use chrono::{DateTime, Utc};

    const ROOT: &str = "otn-nms:LOS-1";

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_772_400_000 + minute * 60, 0).expect("in range")
    }

    fn facts(i: usize) -> TicketFacts {
        TicketFacts {
            ticket_id: format!("TT-{i:06}"),
            circuit_id: format!("DL-{i:06}"),
            customer_id: Some(format!("CUST-{:04}", i % 700)),
            customer_level: CustomerLevel::Gold,
            assurance_level: AssuranceLevel::Aa,
            root: RootCause {
                alarm_key: ROOT.to_string(),
                object: "FIBRE-SZ-GZ-01".to_string(),
                probable_cause: "loss of signal".to_string(),
                cause_class: CauseClass::Physical,
                source_system: "otn-nms".to_string(),
                severity: Severity::Critical,
                raised_at: at(0),
            },
            lead_team: "transport".to_string(),
            opened_at: at(0),
            down: true,
            restored_at: None,
            closed: false,
            at: at(0),
        }
    }

    fn config() -> ServiceConfig {
        ServiceConfig {
            bootstrap_servers: String::new(),
            client_overrides: Vec::new(),
            group_id: "g".into(),
            transactional_id: "t".into(),
            topics: TopicNames::with_prefix(""),
            policy: Policy::builtin(),
            tick: Duration::from_millis(200),
            idle_after: Duration::from_secs(1),
            http: None,
            intake: Default::default(),
            tmf621: Default::default(),
        }
    }

    fn book(p: &mut IncidentProcessor) -> &mut IncidentBook {
        &mut p.incidents.get_mut(&0).expect("partition").book
    }

    /// A changelog: records in offset order (partition, key, kind, value).
    type Log = Vec<(i32, Vec<u8>, StateKind, Option<Vec<u8>>)>;

    /// What compaction keeps of `log`: the last record of each key, in offset order.
    fn compacted(log: &Log) -> Log {
        let last: BTreeMap<&Vec<u8>, usize> =
            log.iter().enumerate().map(|(i, r)| (&r.1, i)).collect();
        log.iter()
            .enumerate()
            .filter(|(i, r)| last.get(&r.1) == Some(i))
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// A fresh processor restored from `log` through the records' envelopes, as a restore
    /// reads them.
    fn restored(log: &Log) -> IncidentProcessor {
        let mut into = IncidentProcessor::default();
        into.assign(0);
        for (p, key, kind, value) in log {
            let sealed = value
                .as_ref()
                .map(|v| seal_state(kind.name(INCIDENT_ENTITY), v));
            if let Some(s) = &sealed {
                assert!(key.len() + s.len() <= MAX_RECORD_BYTES, "{} bytes", s.len());
            }
            let opened = sealed
                .as_deref()
                .map(|s| open_state(s, INCIDENT_ENTITY).expect("envelope"));
            IncidentProcessor::decode(key, opened).expect("decodes");
            into.restore_record(
                &config(),
                *p,
                key,
                &String::from_utf8_lossy(key),
                opened,
                (),
            )
            .expect("record reads back");
        }
        into
    }

    #[test]
    fn an_incident_too_large_for_one_record_goes_to_the_changelog_in_parts_and_comes_back() {
        let mut run = IncidentProcessor::default();
        run.assign(0);
        let mut log = Log::new();
        // About 450 bytes a member: 3 000 circuits make a state of about 1.4 MB.
        book(&mut run).on_tickets((0..3_000).map(facts));
        run.flush_state(&mut log);
        assert!(
            log.len() >= 3,
            "a head and two parts at least: {} records",
            log.len()
        );
        let mut back = restored(&log);
        assert_eq!(book(&mut back).get(ROOT), book(&mut run).get(ROOT));

        // 2 900 leave (their tickets move to another root): one part is enough now, and
        // the parts no longer used are tombstoned, so that compaction does not keep them
        // and a restore bring their members back.
        let parts_before = log.len() - 1;
        let moved = |i: usize| {
            let mut f = facts(i);
            f.root.alarm_key = "ptn-nms:AIS-9".into();
            f
        };
        book(&mut run).on_tickets((100..3_000).map(moved));
        let mut second = Log::new();
        run.flush_state(&mut second);
        let tombstones = second
            .iter()
            .filter(|r| r.3.is_none() && r.1.starts_with(b"\xFFmembers/"))
            .count();
        assert_eq!(
            tombstones, parts_before,
            "every part tombstoned: {second:?}"
        );
        log.extend(second);
        for read in [log.clone(), compacted(&log)] {
            let mut back = restored(&read);
            assert_eq!(book(&mut back).get(ROOT), book(&mut run).get(ROOT));
            assert_eq!(
                book(&mut back).get("ptn-nms:AIS-9"),
                book(&mut run).get("ptn-nms:AIS-9")
            );
        }
    }
}
