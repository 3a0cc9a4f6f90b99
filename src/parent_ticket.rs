//! An incident's parent trouble ticket (issue 14, item 2).
//!
//! A mass outage is a record on `incidents` for the NOC, and also, for a ticketing system
//! that speaks TMF621, a **parent ticket** on `tickets.events`: its id is the incident id,
//! its `troubleTicketRelationship` lists the child tickets (the circuits' tickets) in
//! restoration priority order with `relationshipType` `isChild`, and it evolves with the
//! incident: a `TroubleTicketCreateEvent` when the incident first exists, a status change
//! when it is restored (`resolved`) or closed (`closed`) or opens again (`inProgress`),
//! and an attribute-value change naming the fields that changed (`fieldPath`) when circuits
//! join or leave (`troubleTicketRelationship`), go down or come back (`description`,
//! `incident.downCount`), and so on.
//!
//! The parent ticket is a function of the incident record ([`ParentTicket::of`]); what
//! it last published is kept as a digest per field ([`ParentMemo`], in the incident's
//! state), so that an event names exactly the fields that changed without keeping the
//! whole last ticket. Pure: no I/O, no clock.
//!
//! `troubleTicketRelationship` names at most [`MAX_CIRCUITS_PER_RECORD`] children, the
//! first in restoration priority order, and `incident.unlistedChildTickets` says how many
//! more there are (the `incidents` records list them all, in parts): an event stays under
//! the 1 MB record limit whatever the incident's size.
//!
//! TMF621 (v4.0.0 and v5.0.1 alike) types `relationshipType` as free text ("isChiled,
//! dependent etc..." in v4's description): the parent names each child `isChild`, and a
//! child would name its parent `isParent`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::incident::{IncidentEvent, IncidentStatus, RootAlarm, MAX_CIRCUITS_PER_RECORD};
use crate::ticket::{
    restoration_priority, RelatedEntity, RelatedParty, TicketStatus, ATTRIBUTE_CHANGE_EVENT,
    CREATE_EVENT, PARTY_TEAM, STATUS_CHANGE_EVENT, TICKET_BASE_TYPE,
};

/// `@type` of a parent ticket: TMF621's TroubleTicket for a mass outage, extended with
/// the `incident` object.
pub const PARENT_TICKET_TYPE: &str = "MassOutageTicket";
/// `relationshipType` of a child ticket in its parent's `troubleTicketRelationship`.
pub const IS_CHILD: &str = "isChild";
/// `relationshipType` of a parent ticket in a child's `troubleTicketRelationship`.
pub const IS_PARENT: &str = "isParent";

/// A relationship between trouble tickets (TMF621 `TroubleTicketRelationship`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketRelationship {
    /// The related ticket's id.
    pub id: String,
    pub relationship_type: String,
}

/// The `incident` extension of a parent ticket: what ties it to the `incidents` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentFields {
    pub incident_id: String,
    pub root_alarm: RootAlarm,
    pub circuit_count: usize,
    pub down_count: usize,
    /// Child tickets left out of `troubleTicketRelationship`, which names at most
    /// [`MAX_CIRCUITS_PER_RECORD`] (the first in restoration priority order) so that the
    /// event stays far below the 1 MB record limit; absent when every child is named.
    /// The incident's records on `incidents` list them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlisted_child_tickets: Option<usize>,
}

/// An incident's parent ticket, in TMF621 v4.0.0 form (v5.0.1 by [`crate::tmf621`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentTicket {
    /// The incident id.
    pub id: String,
    pub name: String,
    pub description: String,
    /// `incident`.
    pub ticket_type: String,
    /// The root alarm's severity (critical, major, minor, ...).
    pub severity: String,
    /// The restoration priority of its first circuit ("1" when an AAA circuit is in it,
    /// through "4"), as the children's default priorities.
    pub priority: String,
    /// `inProgress` while some circuit is down, `resolved` when all are back, `closed`
    /// when every child ticket is closed.
    pub status: TicketStatus,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub creation_date: DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub last_update: DateTime<Utc>,
    /// When the last circuit came back; absent while the incident is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub resolution_date: Option<DateTime<Utc>>,
    /// The root-cause alarm.
    pub related_entity: Vec<RelatedEntity>,
    /// The lead team, when the incident has one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related_party: Vec<RelatedParty>,
    /// The child tickets in restoration priority order, `isChild` each: the first
    /// [`MAX_CIRCUITS_PER_RECORD`] of them (`incident.unlistedChildTickets` counts the
    /// others).
    pub trouble_ticket_relationship: Vec<TicketRelationship>,
    pub incident: IncidentFields,
    #[serde(rename = "@type")]
    pub at_type: String,
    #[serde(rename = "@baseType")]
    pub base_type: String,
}

impl ParentTicket {
    /// The parent ticket of the incident as `record` shows it.
    pub fn of(record: &IncidentEvent) -> ParentTicket {
        let root = &record.root_alarm;
        let severity = serde_json::to_value(root.severity)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        ParentTicket {
            id: record.incident_id.clone(),
            name: format!("Mass outage: {} on {}", root.probable_cause, root.object),
            description: format!(
                "{} circuits, {} down, from alarm {}",
                record.circuit_count, record.down_count, root.key
            ),
            ticket_type: "incident".into(),
            severity,
            priority: record
                .circuits
                .first()
                .map_or(4, |c| restoration_priority(c.assurance_level))
                .to_string(),
            status: match record.status {
                IncidentStatus::Open => TicketStatus::InProgress,
                IncidentStatus::Restored => TicketStatus::Resolved,
                IncidentStatus::Closed => TicketStatus::Closed,
            },
            creation_date: record.opened_at,
            last_update: record.updated_at,
            resolution_date: record.restored_at,
            related_entity: vec![RelatedEntity {
                id: root.key.clone(),
                role: "rootCauseAlarm".into(),
                referred_type: "Alarm".into(),
            }],
            related_party: record
                .lead_team
                .iter()
                .map(|t| RelatedParty {
                    id: t.clone(),
                    name: None,
                    role: "leadTeam".into(),
                    referred_type: PARTY_TEAM.into(),
                })
                .collect(),
            trouble_ticket_relationship: record
                .circuits
                .iter()
                .take(MAX_CIRCUITS_PER_RECORD)
                .map(|c| TicketRelationship {
                    id: c.ticket_id.clone(),
                    relationship_type: IS_CHILD.into(),
                })
                .collect(),
            incident: IncidentFields {
                incident_id: record.incident_id.clone(),
                root_alarm: root.clone(),
                circuit_count: record.circuit_count,
                down_count: record.down_count,
                unlisted_child_tickets: record
                    .circuits
                    .len()
                    .checked_sub(MAX_CIRCUITS_PER_RECORD)
                    .filter(|n| *n > 0),
            },
            at_type: PARENT_TICKET_TYPE.into(),
            base_type: TICKET_BASE_TYPE.into(),
        }
    }
}

/// A TMF621 event of a parent ticket (topic `tickets.events`, keyed by the incident id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentTicketEvent {
    /// `<incidentId>-<sequence>`, the sequence from 0000 without gaps, as a circuit
    /// ticket's.
    pub event_id: String,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub event_time: DateTime<Utc>,
    pub event_type: String,
    /// Of an attribute-value change: the fields that changed, comma separated, sorted;
    /// the `incident` object's by dotted path (`incident.downCount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_path: Option<String>,
    pub event: ParentTicketEventBody,
}

impl ParentTicketEvent {
    pub fn ticket(&self) -> &ParentTicket {
        &self.event.trouble_ticket
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentTicketEventBody {
    pub trouble_ticket: ParentTicket,
}

/// What a parent ticket last published: a digest per field (the `incident` object's per
/// field of it), and the sequence of its next event. Kept in the incident's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentMemo {
    /// Sequence of the next event, from 0.
    pub next_event: u32,
    /// Field name (as `fieldPath` names it) → digest of its JSON; empty until the first
    /// event (a create event) is published.
    pub fields: BTreeMap<String, String>,
}

/// The parent ticket's fields as `fieldPath` names them, with a digest of each; `lastUpdate`
/// (which moves with every record) left out.
fn digests(ticket: &ParentTicket) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(ticket) else {
        return out;
    };
    let digest = |v: &serde_json::Value| -> String {
        let bytes = serde_json::to_vec(v).unwrap_or_default();
        Sha256::digest(&bytes)
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    for (k, v) in &fields {
        match (k.as_str(), v) {
            ("lastUpdate", _) => {}
            ("incident", serde_json::Value::Object(inner)) => {
                for (f, w) in inner {
                    out.insert(format!("incident.{f}"), digest(w));
                }
            }
            _ => {
                out.insert(k.clone(), digest(v));
            }
        }
    }
    out
}

impl ParentMemo {
    /// The event that publishes `ticket` at `at`, after what this memo says was published
    /// (nothing, for a memo never used): a create event first, then a status change when
    /// the status changed, else an attribute-value change naming the fields that changed;
    /// `None` when no field changed. The memo then holds `ticket`.
    pub fn publish(
        &mut self,
        ticket: ParentTicket,
        at: DateTime<Utc>,
    ) -> Option<ParentTicketEvent> {
        let fields = digests(&ticket);
        let (event_type, field_path) = if self.fields.is_empty() {
            (CREATE_EVENT, None)
        } else if fields.get("status") != self.fields.get("status") {
            (STATUS_CHANGE_EVENT, None)
        } else {
            let changed: Vec<&str> = fields
                .iter()
                .filter(|(k, v)| self.fields.get(*k) != Some(*v))
                .map(|(k, _)| k.as_str())
                .chain(
                    self.fields
                        .keys()
                        .filter(|k| !fields.contains_key(*k))
                        .map(String::as_str),
                )
                .collect();
            if changed.is_empty() {
                return None;
            }
            let mut changed = changed;
            changed.sort_unstable();
            (ATTRIBUTE_CHANGE_EVENT, Some(changed.join(",")))
        };
        let seq = self.next_event;
        self.next_event += 1;
        self.fields = fields;
        Some(ParentTicketEvent {
            event_id: format!("{}-{:04}", ticket.id, seq),
            event_time: at,
            event_type: event_type.to_string(),
            field_path,
            event: ParentTicketEventBody {
                trouble_ticket: ticket,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::IncidentCircuit;
    use crate::levels::{AssuranceLevel, CustomerLevel, Severity};
    use chrono::TimeZone;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 4, 1, 9, minute, 0)
            .single()
            .expect("a time")
    }

    fn circuit(id: &str, level: AssuranceLevel, down: bool) -> IncidentCircuit {
        IncidentCircuit {
            circuit_id: id.into(),
            customer_id: None,
            customer_level: CustomerLevel::Key,
            assurance_level: level,
            ticket_id: format!("TT-{id}"),
            down,
            restored_at: (!down).then(|| at(30)),
        }
    }

    fn record(
        status: IncidentStatus,
        circuits: Vec<IncidentCircuit>,
        minute: u32,
    ) -> IncidentEvent {
        IncidentEvent {
            event_id: String::new(),
            incident_id: "INC-0123456789abcdef".into(),
            sequence: 1,
            part: None,
            parts: None,
            status,
            root_alarm: RootAlarm {
                key: "nms:LOS-1".into(),
                object: "NE1/1".into(),
                probable_cause: "LOS".into(),
                severity: Severity::Critical,
                raised_at: at(0),
            },
            opened_at: at(0),
            restored_at: (status != IncidentStatus::Open).then(|| at(minute)),
            updated_at: at(minute),
            lead_team: Some("transport".into()),
            circuit_count: circuits.len(),
            down_count: circuits.iter().filter(|c| c.down).count(),
            circuits,
        }
    }

    #[test]
    fn the_parent_ticket_follows_its_incident_field_by_field() {
        use AssuranceLevel::{Aaa, A};
        let mut memo = ParentMemo::default();
        let two = vec![circuit("C2", Aaa, true), circuit("C1", A, true)];
        let open = record(IncidentStatus::Open, two.clone(), 0);
        let created = memo
            .publish(ParentTicket::of(&open), at(0))
            .expect("created");
        assert_eq!(created.event_type, CREATE_EVENT);
        assert_eq!(created.event_id, "INC-0123456789abcdef-0000");
        let t = created.ticket();
        assert_eq!(
            (t.status, t.priority.as_str()),
            (TicketStatus::InProgress, "1")
        );
        let children: Vec<(&str, &str)> = t
            .trouble_ticket_relationship
            .iter()
            .map(|r| (r.id.as_str(), r.relationship_type.as_str()))
            .collect();
        assert_eq!(children, [("TT-C2", IS_CHILD), ("TT-C1", IS_CHILD)]);
        // The same incident later: only lastUpdate moved, no event.
        assert_eq!(
            memo.publish(
                ParentTicket::of(&record(IncidentStatus::Open, two.clone(), 5)),
                at(5)
            ),
            None
        );
        // A circuit joins: the relationship, the counts and the description change.
        let mut three = two.clone();
        three.push(circuit("C3", A, true));
        let joined = memo
            .publish(
                ParentTicket::of(&record(IncidentStatus::Open, three, 10)),
                at(10),
            )
            .expect("joined");
        assert_eq!(joined.event_type, ATTRIBUTE_CHANGE_EVENT);
        assert_eq!(
            joined.field_path.as_deref(),
            Some("description,incident.circuitCount,incident.downCount,troubleTicketRelationship")
        );
        assert_eq!(joined.event_id, "INC-0123456789abcdef-0001");
        // It leaves again and the others come back: a status change (resolved).
        let back = vec![circuit("C2", Aaa, false), circuit("C1", A, false)];
        let restored = memo
            .publish(
                ParentTicket::of(&record(IncidentStatus::Restored, back, 30)),
                at(30),
            )
            .expect("restored");
        assert_eq!(restored.event_type, STATUS_CHANGE_EVENT);
        assert_eq!(restored.ticket().status, TicketStatus::Resolved);
        assert_eq!(restored.ticket().resolution_date, Some(at(30)));
        assert_eq!(restored.ticket().trouble_ticket_relationship.len(), 2);
    }
}
