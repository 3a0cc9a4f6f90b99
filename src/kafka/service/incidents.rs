//! Stage 3, the incidents: ticket facts folded in event-time order into the incidents of
//! their root alarm.

use rdkafka::message::{BorrowedMessage, Message};
use tracing::error;

use super::buffer::Buffer;
use super::records::{bad_watermark, not_json, watermark_record};
use super::stage::Core;
use crate::engine::Output;
use crate::incident::{IncidentBook, IncidentEvent, TicketFacts};

/// Stage 3's state of one partition: the incidents, and the ticket facts waiting for the
/// event-time clock (with the record key each came under).
#[derive(Default)]
pub(super) struct IncidentPartition {
    pub(super) book: IncidentBook,
    pub(super) buf: Buffer<(String, TicketFacts)>,
}

impl Core {
    /// Stage 3: fold in, in event-time order, the facts of partition `p` older than its
    /// limit (the oldest circuit-state clock), those of one instant together.
    pub(super) fn release_incidents(&mut self, p: i32) {
        let upstream = self.impact_partitions;
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
        self.route(
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

    /// Stage 3: ticket facts or a circuit-state partition's watermark read on partition `p`.
    pub(super) fn handle_incidents(&mut self, p: i32, msg: &BorrowedMessage<'_>) {
        let key = msg
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let upstream = self.impact_partitions;
        if let Some(w) = watermark_record(msg) {
            match w {
                Ok(w) => {
                    let known = self
                        .incident_partition(p)
                        .is_some_and(|part| part.buf.report(&w, upstream));
                    if known {
                        self.release_incidents(p);
                    } else {
                        self.reject(msg, &bad_watermark(&w, upstream), None);
                    }
                }
                Err(()) => self.reject(msg, &not_json("a watermark record"), None),
            }
            return;
        }
        match msg.payload().map(serde_json::from_slice::<TicketFacts>) {
            Some(Ok(facts)) => {
                if let Some(part) = self.incident_partition(p) {
                    part.buf.hold(facts.at, 0, (key, facts));
                }
                self.release_incidents(p);
            }
            _ => self.reject(msg, &not_json("ticket facts"), None),
        }
    }

    /// Stage 3: the facts each partition can release now.
    pub(super) fn incidents_tick(&mut self) {
        let parts: Vec<i32> = self.incidents.keys().copied().collect();
        for p in parts {
            self.release_incidents(p);
        }
    }
}
