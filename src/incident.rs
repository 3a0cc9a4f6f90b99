//! Stage 3: mass-outage incidents, keyed by the root alarm.
//!
//! A fault that takes down many circuits from one root alarm is also an **incident**, the
//! parent of the circuit tickets. Its circuits are listed in restoration priority order
//! (DOMAIN.md "Mass outage: restore circuits in order of assurance level"): assurance level
//! first (AAA first), then customer level (key first), then circuit id.
//!
//! The circuit tickets come from stage 2, partitioned by circuit; stage 3 receives their
//! events keyed by the root alarm and folds them here, in an [`IncidentBook`]. Everything
//! in this module is pure: no I/O, no clock (every time comes from the ticket events).
//!
//! ## Rules
//! - A ticket belongs to the incident of its root alarm key. When stage 2 revises a ticket's
//!   root cause, the ticket moves: it leaves the old incident and joins the new one.
//! - An incident **exists** once at least `min_circuits` circuits' tickets share its root
//!   alarm. Before that it is a silent candidate: it emits nothing, and is forgotten if it
//!   empties or all its tickets close. Once emitted, it is updated on every visible change
//!   until it closes, even if it falls below `min_circuits` (down to no circuit at all, which
//!   closes it).
//! - Status: `open` while some circuit is down, `restored` when all are up, `closed` when
//!   all child tickets are closed. A closed incident emits its closed record and is then
//!   forgotten.
//! - One [`IncidentEvent`] per change of an incident, only when something visible in the
//!   record changed; `eventId` is `"<incidentId>-<sequence>"`, sequence from 1.
//! - Everything in a record is a function of the incident's member tickets, never of their
//!   arrival order; the same facts in the same order give identical records.
//! - A record of more than [`MAX_CIRCUITS_PER_RECORD`] circuits goes out in parts
//!   ([`IncidentEvent::into_parts`]), so that no record exceeds the producer's 1 MB limit
//!   whatever the incident's size.
//!
//! ## Partitioned deployment
//! [`IncidentBook::on_ticket`] handles a move entirely when the old and the new root alarm
//! are held by the same book. When they live in different partitions, the instance owning
//! the old root must be told too: deliver the revised ticket event under the old root key
//! as well, through [`IncidentBook::on_keyed_ticket`], which only lets the ticket leave
//! the incident filed under that key and never files anything under a key it was not given.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::changes::Changes;
use sha2::{Digest, Sha256};

use crate::levels::{AssuranceLevel, CustomerLevel, Severity};
use crate::parent_ticket::{ParentMemo, ParentTicket, ParentTicketEvent};
use crate::ticket::{restoration_priority, RootCause, TicketEvent, TicketStatus};

/// Default number of circuits that one root alarm must hit to make an incident.
pub const DEFAULT_MIN_CIRCUITS: usize = 2;

/// Most circuits one record on `incidents` lists (and most child tickets a parent ticket
/// names): a larger incident goes out as several records ([`IncidentEvent::into_parts`]).
///
/// Sized for the worst case, by construction. A circuit entry is at its largest with a
/// circuit id and a customer id of [`crate::intake::MAX_ID_BYTES`] (256) bytes each made
/// of `"` (escaped to two bytes in JSON; intake refuses control characters, the only
/// other escaped ones), a restoration time and the longest level names: 1 200 bytes with
/// its comma (measured by the test `a_worst_case_part_fits_the_record_limit`). 500 of them
/// are 600 000 bytes; the header, with the root alarm's key (513 bytes, also the record
/// key), object (256) and probable cause ([`crate::intake::MAX_TEXT_BYTES`], 1 024) and
/// the lead team all made of quotes, brings a part to at most 603 261 bytes, key
/// included: 61 % of the stages' 990 000-byte record limit, with room for fields added
/// later. A usual entry is about 165 bytes (a usual part about 83 KB); incidents of up to
/// 500 circuits, nearly all of them, are one record exactly as before.
pub const MAX_CIRCUITS_PER_RECORD: usize = 500;

/// Sort key of a circuit in restoration priority order: assurance level (AAA first, as
/// [`restoration_priority`]), then customer level (key first), then circuit id.
pub type PriorityKey<'a> = (u8, CustomerLevel, &'a str);

/// The restoration priority of a circuit in a mass outage; smaller sorts first. The NOC
/// view and every other list of affected circuits sort with this key so they agree.
pub fn priority_key(
    assurance: AssuranceLevel,
    customer_level: CustomerLevel,
    circuit_id: &str,
) -> PriorityKey<'_> {
    (restoration_priority(assurance), customer_level, circuit_id)
}

/// The deterministic id of the incident of `root`: `"INC-"` and 16 hex digits of the
/// SHA-256 of the root alarm key and its raise time. The raise time keeps two lives of
/// one alarm key apart (NMSs that reuse alarm ids per fault condition), so a later
/// incident never repeats the event ids of an earlier, forgotten one.
pub fn incident_id(root: &RootCause) -> String {
    let mut h = Sha256::new();
    h.update(root.alarm_key.as_bytes());
    h.update([0u8]);
    h.update(
        root.raised_at
            .to_rfc3339_opts(SecondsFormat::Nanos, true)
            .as_bytes(),
    );
    let digest = h.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("INC-{hex}")
}

/// What stage 3 needs to know of one ticket event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketFacts {
    pub ticket_id: String,
    /// The affected circuit (the ticket id if the ticket names none).
    pub circuit_id: String,
    /// The customer (related party of role `customer`), if named.
    pub customer_id: Option<String>,
    pub customer_level: CustomerLevel,
    pub assurance_level: AssuranceLevel,
    /// The ticket's root-cause alarm; its key is the incident's key.
    pub root: RootCause,
    /// Related party of role `leadTeam`; empty if the ticket names none.
    pub lead_team: String,
    /// When the circuit first went down in this fault (the ticket's creation date).
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub opened_at: DateTime<Utc>,
    /// The circuit is down (ticket acknowledged or in progress).
    pub down: bool,
    /// When service came back (the ticket's resolution date).
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub restored_at: Option<DateTime<Utc>>,
    /// The ticket is closed (final).
    pub closed: bool,
    /// The event time of the ticket event.
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub at: DateTime<Utc>,
}

impl TicketFacts {
    /// Read the facts out of a TMF621 ticket event.
    pub fn from_event(ev: &TicketEvent) -> TicketFacts {
        let t = ev.ticket();
        let circuit_id = t
            .related_entity
            .iter()
            .find(|e| e.role == "affectedCircuit")
            .map_or_else(|| t.id.clone(), |e| e.id.clone());
        let party = |role: &str| {
            t.related_party
                .iter()
                .find(|p| p.role == role)
                .map(|p| p.id.clone())
        };
        let down = matches!(
            t.status,
            TicketStatus::Acknowledged | TicketStatus::InProgress
        );
        TicketFacts {
            ticket_id: t.id.clone(),
            circuit_id,
            customer_id: party("customer"),
            customer_level: t.sla.customer_level,
            assurance_level: t.sla.assurance_level,
            root: t.root_cause.clone(),
            lead_team: party("leadTeam").unwrap_or_default(),
            opened_at: t.creation_date,
            down,
            restored_at: t.resolution_date,
            closed: t.status == TicketStatus::Closed,
            at: ev.event_time,
        }
    }
}

/// Status of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum IncidentStatus {
    /// Some circuits are down.
    Open,
    /// All circuits are up again.
    Restored,
    /// All child tickets are closed (final).
    Closed,
}

/// The root alarm of an incident, as the record carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RootAlarm {
    pub key: String,
    pub object: String,
    pub probable_cause: String,
    pub severity: Severity,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub raised_at: DateTime<Utc>,
}

impl From<&RootCause> for RootAlarm {
    fn from(r: &RootCause) -> Self {
        RootAlarm {
            key: r.alarm_key.clone(),
            object: r.object.clone(),
            probable_cause: r.probable_cause.clone(),
            severity: r.severity,
            raised_at: r.raised_at,
        }
    }
}

/// One affected circuit of an incident, with its child ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentCircuit {
    pub circuit_id: String,
    pub customer_id: Option<String>,
    pub customer_level: CustomerLevel,
    pub assurance_level: AssuranceLevel,
    pub ticket_id: String,
    pub down: bool,
    /// When the circuit came back; `None` while it is down.
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub restored_at: Option<DateTime<Utc>>,
}

/// One state of an incident (topic `incidents`, `topics/schemas/incident.schema.json`),
/// keyed by the root alarm key ([`IncidentEvent::key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentEvent {
    /// `"<incidentId>-<sequence>"`.
    pub event_id: String,
    pub incident_id: String,
    /// 1 for the incident's first record, then +1 per change.
    pub sequence: u32,
    /// Of a record sent in parts ([`IncidentEvent::into_parts`]): which part, from 1.
    /// Absent on a record of at most [`MAX_CIRCUITS_PER_RECORD`] circuits, which is
    /// written whole, as before parts existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<u32>,
    /// Of a record sent in parts: how many parts the record has (absent when whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<u32>,
    pub status: IncidentStatus,
    pub root_alarm: RootAlarm,
    /// Earliest down start among the incident's tickets.
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub opened_at: DateTime<Utc>,
    /// When the last circuit came back; `None` while the incident is open.
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub restored_at: Option<DateTime<Utc>>,
    /// Event time of the change this record reports.
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub updated_at: DateTime<Utc>,
    pub lead_team: Option<String>,
    pub circuit_count: usize,
    pub down_count: usize,
    /// In restoration priority order ([`priority_key`]); of a part, its slice of them.
    pub circuits: Vec<IncidentCircuit>,
}

impl IncidentEvent {
    /// The record key: the root alarm key (every part of a record has it too).
    pub fn key(&self) -> &str {
        &self.root_alarm.key
    }

    /// The records that carry this one on `incidents`: itself when it lists at most
    /// [`MAX_CIRCUITS_PER_RECORD`] circuits, else one record per slice of that many
    /// circuits, in order. Each part has the whole incident's header (status, counts,
    /// root alarm, times), `part` (from 1) and `parts`, and the `eventId`
    /// `"<incidentId>-<sequence>.<part>"`; all keep the root alarm key, so they land on
    /// one partition in order (the topic is not compacted: nothing of an earlier,
    /// larger record needs deleting; a reader takes the parts of the newest sequence).
    pub fn into_parts(self) -> Vec<IncidentEvent> {
        self.into_parts_of(MAX_CIRCUITS_PER_RECORD)
    }

    fn into_parts_of(mut self, bound: usize) -> Vec<IncidentEvent> {
        let bound = bound.max(1);
        if self.circuits.len() <= bound {
            return vec![self];
        }
        let circuits = std::mem::take(&mut self.circuits);
        let parts = u32::try_from(circuits.len().div_ceil(bound)).unwrap_or(u32::MAX);
        let mut out = Vec::new();
        let mut rest = circuits.into_iter();
        for part in 1..=parts {
            let slice: Vec<IncidentCircuit> = rest.by_ref().take(bound).collect();
            out.push(IncidentEvent {
                event_id: format!("{}.{part}", self.event_id),
                part: Some(part),
                parts: Some(parts),
                circuits: slice,
                ..self.clone()
            });
        }
        out
    }
}

/// The visible content of a record, without its identity and time: two records with the
/// same view report no change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
struct View {
    status: IncidentStatus,
    root_alarm: RootAlarm,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    opened_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    restored_at: Option<DateTime<Utc>>,
    lead_team: Option<String>,
    circuit_count: usize,
    down_count: usize,
    circuits: Vec<IncidentCircuit>,
}

impl View {
    /// SHA-256 (hex) of the view's JSON, stored instead of the last record itself.
    fn digest(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// One child ticket of an incident, as last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Member {
    ticket_id: String,
    circuit_id: String,
    customer_id: Option<String>,
    customer_level: CustomerLevel,
    assurance_level: AssuranceLevel,
    root: RootCause,
    lead_team: String,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    opened_at: DateTime<Utc>,
    down: bool,
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    restored_at: Option<DateTime<Utc>>,
    closed: bool,
}

impl Member {
    /// The member for `facts`; `previous` is the same ticket's member, if any, whose
    /// restoration time stands in when an up ticket gives none.
    fn new(facts: &TicketFacts, previous: Option<&Member>) -> Member {
        let down = facts.down && !facts.closed;
        let restored_at = if down {
            None
        } else {
            facts
                .restored_at
                .or_else(|| previous.and_then(|p| p.restored_at))
                .or(Some(facts.at))
        };
        Member {
            ticket_id: facts.ticket_id.clone(),
            circuit_id: facts.circuit_id.clone(),
            customer_id: facts.customer_id.clone(),
            customer_level: facts.customer_level,
            assurance_level: facts.assurance_level,
            root: facts.root.clone(),
            lead_team: facts.lead_team.clone(),
            opened_at: facts.opened_at,
            down,
            restored_at,
            closed: facts.closed,
        }
    }

    fn priority(&self) -> PriorityKey<'_> {
        priority_key(self.assurance_level, self.customer_level, &self.circuit_id)
    }

    /// Is `other` this member with at most its `closed` flag changed? Nothing else of
    /// the incident's record then changes, unless the status does (when the last open
    /// ticket closes). Every field is named, so that a new one must be placed here.
    fn same_but_closed(&self, other: &Member) -> bool {
        let Member {
            ticket_id,
            circuit_id,
            customer_id,
            customer_level,
            assurance_level,
            root,
            lead_team,
            opened_at,
            down,
            restored_at,
            closed: _,
        } = self;
        *ticket_id == other.ticket_id
            && *circuit_id == other.circuit_id
            && *customer_id == other.customer_id
            && *customer_level == other.customer_level
            && *assurance_level == other.assurance_level
            && *root == other.root
            && *lead_team == other.lead_team
            && *opened_at == other.opened_at
            && *down == other.down
            && *restored_at == other.restored_at
    }

    fn circuit(&self) -> IncidentCircuit {
        IncidentCircuit {
            circuit_id: self.circuit_id.clone(),
            customer_id: self.customer_id.clone(),
            customer_level: self.customer_level,
            assurance_level: self.assurance_level,
            ticket_id: self.ticket_id.clone(),
            down: self.down,
            restored_at: self.restored_at,
        }
    }
}

/// The state of one root alarm's incident (or candidate incident, before it has enough
/// circuits). Serializable, for the stage's changelog; put back with
/// [`IncidentBook::restore`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    incident_id: String,
    root_key: String,
    /// Root alarm of the last record (stands in when no circuit is left).
    root: RootAlarm,
    /// `openedAt` of the last record (stands in when no circuit is left).
    #[serde(serialize_with = "crate::timestamp::serialize")]
    opened_at: DateTime<Utc>,
    /// Child tickets by circuit id: one ticket per circuit. Changed only through
    /// [`Incident::put`] and [`Incident::take`], which keep `closed_members`.
    members: BTreeMap<String, Member>,
    /// How many members are closed: the status without a pass over the members. Not in
    /// the changelog; counted again by [`IncidentBook::restore`].
    #[serde(skip)]
    closed_members: usize,
    /// Sequence of the last record; 0 while never emitted.
    sequence: u32,
    /// In a changelog record written in parts ([`Incident::state_records`]): how many
    /// records of members follow this one, which then holds none. 0 otherwise.
    #[serde(default, skip_serializing_if = "is_zero")]
    member_parts: u32,
    /// `updatedAt` of the last record.
    #[serde(serialize_with = "crate::timestamp::serialize")]
    updated_at: DateTime<Utc>,
    /// Digest of the last record's visible content.
    digest: String,
    /// What the incident's parent ticket last published on `tickets.events` (empty in
    /// the state of earlier versions: the next record then creates the parent ticket).
    #[serde(default)]
    parent: ParentMemo,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The incident's state as changelog record bodies, each at most `limit` bytes where it
/// can be: one record of the whole state when it fits, else a head without members
/// (naming how many parts follow) and the members in parts, each a JSON array of members
/// in circuit order. An incident of a few thousand circuits (about 450 bytes each) would
/// otherwise exceed the producer's record limit, and its state be lost to the changelog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRecords {
    pub head: Vec<u8>,
    pub parts: Vec<Vec<u8>>,
}

impl Incident {
    /// The changelog record bodies of this state (see [`StateRecords`]).
    ///
    /// # Errors
    /// Only if serde_json fails, which these types do not allow in practice.
    pub fn state_records(&self, limit: usize) -> serde_json::Result<StateRecords> {
        let whole = serde_json::to_vec(self)?;
        if whole.len() <= limit {
            return Ok(StateRecords {
                head: whole,
                parts: Vec::new(),
            });
        }
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let mut part = Vec::new();
        for member in self.members.values() {
            let bytes = serde_json::to_vec(member)?;
            // `[` + members + `,` between them + `]`.
            if !part.is_empty() && part.len() + bytes.len() + 2 > limit {
                part.push(b']');
                parts.push(std::mem::take(&mut part));
            }
            part.push(if part.is_empty() { b'[' } else { b',' });
            part.extend_from_slice(&bytes);
        }
        if !part.is_empty() {
            part.push(b']');
            parts.push(part);
        }
        let head = self.head(u32::try_from(parts.len()).unwrap_or(u32::MAX));
        Ok(StateRecords {
            head: serde_json::to_vec(&head)?,
            parts,
        })
    }

    /// How many member parts follow this state read from a head record (0: it is whole).
    pub fn member_parts(&self) -> u32 {
        self.member_parts
    }

    /// The state without its members, naming how many parts of members follow.
    fn head(&self, member_parts: u32) -> Incident {
        Incident {
            incident_id: self.incident_id.clone(),
            root_key: self.root_key.clone(),
            root: self.root.clone(),
            opened_at: self.opened_at,
            members: BTreeMap::new(),
            closed_members: 0,
            sequence: self.sequence,
            member_parts,
            updated_at: self.updated_at,
            digest: self.digest.clone(),
            parent: self.parent.clone(),
        }
    }

    fn new(facts: &TicketFacts) -> Incident {
        Incident {
            incident_id: incident_id(&facts.root),
            root_key: facts.root.alarm_key.clone(),
            root: RootAlarm::from(&facts.root),
            opened_at: facts.opened_at,
            members: BTreeMap::new(),
            closed_members: 0,
            sequence: 0,
            member_parts: 0,
            updated_at: facts.at,
            digest: String::new(),
            parent: ParentMemo::default(),
        }
    }

    pub fn incident_id(&self) -> &str {
        &self.incident_id
    }

    /// File `member` under its circuit, replacing (and returning) the one there.
    fn put(&mut self, member: Member) -> Option<Member> {
        self.closed_members += usize::from(member.closed);
        let old = self.members.insert(member.circuit_id.clone(), member);
        if let Some(o) = &old {
            self.closed_members -= usize::from(o.closed);
        }
        old
    }

    /// Remove the member of `circuit_id`.
    fn take(&mut self, circuit_id: &str) -> Option<Member> {
        let old = self.members.remove(circuit_id);
        if let Some(o) = &old {
            self.closed_members -= usize::from(o.closed);
        }
        old
    }

    /// Count the closed members again (after reading the state from the changelog).
    fn recount(&mut self) {
        self.closed_members = self.members.values().filter(|m| m.closed).count();
    }

    /// Are all child tickets closed (or none left)?
    fn all_closed(&self) -> bool {
        self.closed_members == self.members.len()
    }

    /// The root alarm key (the record key).
    pub fn root_key(&self) -> &str {
        &self.root_key
    }

    /// Sequence of the last record emitted; 0 if none yet.
    pub fn sequence(&self) -> u32 {
        self.sequence
    }

    /// Has the incident been emitted (does it exist for the outside)?
    pub fn is_emitted(&self) -> bool {
        self.sequence > 0
    }

    /// Event time of the last record emitted (or of the first ticket, before any).
    pub fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }

    pub fn circuit_count(&self) -> usize {
        self.members.len()
    }

    pub fn down_count(&self) -> usize {
        self.members.values().filter(|m| m.down).count()
    }

    /// Current status, from the child tickets.
    pub fn status(&self) -> IncidentStatus {
        if self.all_closed() {
            IncidentStatus::Closed
        } else if self.members.values().any(|m| m.down) {
            IncidentStatus::Open
        } else {
            IncidentStatus::Restored
        }
    }

    /// The child ticket ids, by circuit id.
    pub fn ticket_ids(&self) -> impl Iterator<Item = &str> {
        self.members.values().map(|m| m.ticket_id.as_str())
    }

    /// The circuits in restoration priority order.
    pub fn circuits(&self) -> Vec<IncidentCircuit> {
        self.ordered().into_iter().map(Member::circuit).collect()
    }

    /// The incident's current record: the last one emitted (every visible change is
    /// emitted), or `None` before the incident has been emitted.
    pub fn record(&self) -> Option<IncidentEvent> {
        self.is_emitted().then(|| self.event(self.view()))
    }

    fn ordered(&self) -> Vec<&Member> {
        let mut v: Vec<&Member> = self.members.values().collect();
        v.sort_by(|a, b| a.priority().cmp(&b.priority()));
        v
    }

    fn view(&self) -> View {
        let ordered = self.ordered();
        let status = self.status();
        let restored_at = if status == IncidentStatus::Open {
            None
        } else {
            self.members.values().filter_map(|m| m.restored_at).max()
        };
        View {
            status,
            root_alarm: ordered
                .first()
                .map_or_else(|| self.root.clone(), |m| RootAlarm::from(&m.root)),
            opened_at: self
                .members
                .values()
                .map(|m| m.opened_at)
                .min()
                .unwrap_or(self.opened_at),
            restored_at,
            lead_team: ordered
                .iter()
                .map(|m| m.lead_team.as_str())
                .find(|t| !t.is_empty())
                .map(str::to_string),
            circuit_count: self.members.len(),
            down_count: self.down_count(),
            circuits: ordered.into_iter().map(Member::circuit).collect(),
        }
    }

    fn event(&self, view: View) -> IncidentEvent {
        IncidentEvent {
            event_id: format!("{}-{}", self.incident_id, self.sequence),
            incident_id: self.incident_id.clone(),
            sequence: self.sequence,
            part: None,
            parts: None,
            status: view.status,
            root_alarm: view.root_alarm,
            opened_at: view.opened_at,
            restored_at: view.restored_at,
            updated_at: self.updated_at,
            lead_team: view.lead_team,
            circuit_count: view.circuit_count,
            down_count: view.down_count,
            circuits: view.circuits,
        }
    }
}

/// Where a ticket is filed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Filing {
    root_key: String,
    circuit_id: String,
}

/// Stage 3's state: the incidents by root alarm key, and where each ticket is filed.
#[derive(Debug, Clone)]
pub struct IncidentBook {
    min_circuits: usize,
    /// Root alarm key → incident (or candidate).
    incidents: BTreeMap<String, Incident>,
    /// Ticket id → where it is filed.
    filed: HashMap<String, Filing>,
    /// Root alarm keys whose state changed since the last [`IncidentBook::take_dirty`].
    dirty: Changes,
    /// Build and compare the record after every change, even one that cannot show (the
    /// reference the tests compare the book against).
    always_evaluate: bool,
    /// The parent tickets' events since the last [`IncidentBook::take_ticket_events`],
    /// in the order of the records they follow.
    ticket_events: Vec<ParentTicketEvent>,
}

impl Default for IncidentBook {
    fn default() -> Self {
        IncidentBook::new(DEFAULT_MIN_CIRCUITS)
    }
}

/// Incidents touched by some input, in order of first touch, with the latest event time
/// and whether a change may show in the record (`false` when every change was only a
/// ticket closing that left the status as it was: then the record cannot have changed,
/// and a storm's N closes cost O(1) each instead of a view of all N circuits each).
type Touched = Vec<(String, DateTime<Utc>, bool)>;

fn touch(touched: &mut Touched, key: &str, at: DateTime<Utc>, visible: bool) {
    match touched.iter_mut().find(|(k, _, _)| k == key) {
        Some((_, t, v)) => {
            *t = (*t).max(at);
            *v |= visible;
        }
        None => touched.push((key.to_string(), at, visible)),
    }
}

impl IncidentBook {
    /// A book in which an incident exists once at least `min_circuits` circuits' tickets
    /// share one root alarm (0 counts as 1).
    pub fn new(min_circuits: usize) -> Self {
        IncidentBook {
            min_circuits: min_circuits.max(1),
            incidents: BTreeMap::new(),
            filed: HashMap::new(),
            dirty: Changes::default(),
            always_evaluate: false,
            ticket_events: Vec::new(),
        }
    }

    /// The same book, noting no changed keys (for an engine with no changelog to write).
    pub fn without_changelog(mut self) -> Self {
        self.dirty = Changes::off();
        self
    }

    pub fn min_circuits(&self) -> usize {
        self.min_circuits
    }

    /// Fold one ticket's facts in; returns the records of the incidents that changed
    /// visibly (the one the ticket left first, then the one it is in).
    pub fn on_ticket(&mut self, facts: TicketFacts) -> Vec<IncidentEvent> {
        let mut touched = Touched::new();
        self.apply(facts, &mut touched);
        self.emit(touched)
    }

    /// Fold a batch of facts in, in order, and emit at most one record per incident for
    /// the whole batch (its `updatedAt` is the latest event time applied to it). Fewer,
    /// larger steps than [`IncidentBook::on_ticket`]: a storm of thousands of tickets
    /// gives one record per incident per batch instead of one per ticket.
    pub fn on_tickets(
        &mut self,
        facts: impl IntoIterator<Item = TicketFacts>,
    ) -> Vec<IncidentEvent> {
        let mut touched = Touched::new();
        for f in facts {
            self.apply(f, &mut touched);
        }
        self.emit(touched)
    }

    /// Fold in facts delivered under the record key `key`, for a book that owns only some
    /// root alarm keys. Under the facts' own root key this is [`IncidentBook::on_ticket`];
    /// under another key it is a departure notice: the ticket leaves the incident filed
    /// under `key`, if it is there, and is filed nowhere else by this call.
    pub fn on_keyed_ticket(&mut self, key: &str, facts: TicketFacts) -> Vec<IncidentEvent> {
        if key == facts.root.alarm_key {
            return self.on_ticket(facts);
        }
        let filed_here = self
            .filed
            .get(&facts.ticket_id)
            .is_some_and(|f| f.root_key == key);
        if !filed_here {
            return Vec::new();
        }
        let mut touched = Touched::new();
        self.leave(&facts.ticket_id);
        touch(&mut touched, key, facts.at, true);
        self.emit(touched)
    }

    /// The incidents that exist (have been emitted), by root alarm key.
    pub fn incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.values().filter(|i| i.is_emitted())
    }

    /// The state under one root alarm key, incident or candidate.
    pub fn get(&self, root_key: &str) -> Option<&Incident> {
        self.incidents.get(root_key)
    }

    /// The root alarm key a ticket is filed under, if any.
    pub fn filed_under(&self, ticket_id: &str) -> Option<&str> {
        self.filed.get(ticket_id).map(|f| f.root_key.as_str())
    }

    /// Put back a state read from the changelog (replacing any under the same key).
    pub fn restore(&mut self, mut incident: Incident) {
        incident.recount();
        // Its members, if written in parts, follow ([`IncidentBook::restore_members`]).
        incident.member_parts = 0;
        let key = incident.root_key.clone();
        if let Some(old) = self.incidents.remove(&key) {
            self.unfile(&key, &old);
        }
        for m in incident.members.values() {
            self.filed.insert(
                m.ticket_id.clone(),
                Filing {
                    root_key: key.clone(),
                    circuit_id: m.circuit_id.clone(),
                },
            );
        }
        self.incidents.insert(key, incident);
    }

    /// Put back one part of the members of the state under `root_key` read from the
    /// changelog after its head ([`Incident::state_records`]); a part of no state held is
    /// ignored (its head was replaced or forgotten since).
    ///
    /// # Errors
    /// When the part is not a JSON array of members.
    pub fn restore_members(&mut self, root_key: &str, part: &[u8]) -> serde_json::Result<()> {
        let members: Vec<Member> = serde_json::from_slice(part)?;
        let Some(incident) = self.incidents.get_mut(root_key) else {
            return Ok(());
        };
        for m in members {
            self.filed.insert(
                m.ticket_id.clone(),
                Filing {
                    root_key: root_key.to_string(),
                    circuit_id: m.circuit_id.clone(),
                },
            );
            incident.put(m);
        }
        Ok(())
    }

    /// Drop the state under one root alarm key (a tombstone read from the changelog).
    pub fn forget_key(&mut self, key: &str) {
        self.forget(key);
    }

    /// Apply one ticket's facts to the state, noting the incidents touched.
    fn apply(&mut self, facts: TicketFacts, touched: &mut Touched) {
        let key = facts.root.alarm_key.clone();
        let filed = self.filed.get(&facts.ticket_id).cloned();
        if let Some(f) = &filed {
            if f.root_key != key {
                self.leave(&facts.ticket_id);
                touch(touched, &f.root_key, facts.at, true);
            }
        }
        let known = filed
            .as_ref()
            .is_some_and(|f| f.root_key == key && f.circuit_id == facts.circuit_id);
        if let Some(f) = filed.as_ref().filter(|f| f.root_key == key && !known) {
            // Same ticket, another circuit id: drop the stale entry.
            if let Some(inc) = self.incidents.get_mut(&key) {
                inc.take(&f.circuit_id);
            }
            self.filed.remove(&facts.ticket_id);
            touch(touched, &key, facts.at, true);
        }
        // A closed ticket starts nothing and joins nothing.
        if facts.closed && !known {
            return;
        }
        let incident = self
            .incidents
            .entry(key.clone())
            .or_insert_with(|| Incident::new(&facts));
        let previous = match incident.members.get(&facts.circuit_id) {
            Some(m) if m.ticket_id != facts.ticket_id => {
                // Another ticket of the same circuit: the later fault stands for it.
                if (&m.opened_at, &m.ticket_id) > (&facts.opened_at, &facts.ticket_id) {
                    return;
                }
                self.filed.remove(&m.ticket_id);
                None
            }
            other => other,
        };
        let member = Member::new(&facts, previous);
        if previous == Some(&member) {
            return;
        }
        let quiet = previous.is_some_and(|p| p.same_but_closed(&member));
        let was_closed = incident.all_closed();
        incident.put(member);
        let visible = !quiet || was_closed != incident.all_closed() || self.always_evaluate;
        self.filed.insert(
            facts.ticket_id.clone(),
            Filing {
                root_key: key.clone(),
                circuit_id: facts.circuit_id.clone(),
            },
        );
        touch(touched, &key, facts.at, visible);
    }

    /// The ticket leaves the incident it is filed under.
    fn leave(&mut self, ticket_id: &str) {
        let Some(f) = self.filed.remove(ticket_id) else {
            return;
        };
        if let Some(inc) = self.incidents.get_mut(&f.root_key) {
            if inc
                .members
                .get(&f.circuit_id)
                .is_some_and(|m| m.ticket_id == ticket_id)
            {
                inc.take(&f.circuit_id);
            }
        }
    }

    /// The events of the incidents' parent tickets ([`crate::parent_ticket`]) since the
    /// last call: each record the book emits updates its incident's parent ticket, which
    /// publishes an event when one of its fields changed. The caller writes them to
    /// `tickets.events` after the records.
    pub fn take_ticket_events(&mut self) -> Vec<ParentTicketEvent> {
        std::mem::take(&mut self.ticket_events)
    }

    /// The root alarm keys changed since the last call (for the changelog; read each
    /// one's state with [`IncidentBook::get`]).
    pub fn take_dirty(&mut self) -> BTreeSet<String> {
        self.dirty.take()
    }

    /// Fold in a batch of facts, each delivered under its record key (see
    /// [`IncidentBook::on_keyed_ticket`]), and emit at most one record per incident for
    /// the whole batch.
    pub fn on_keyed_batch(
        &mut self,
        batch: impl IntoIterator<Item = (String, TicketFacts)>,
    ) -> Vec<IncidentEvent> {
        let mut touched = Touched::new();
        for (key, facts) in batch {
            if key == facts.root.alarm_key {
                self.apply(facts, &mut touched);
            } else if self
                .filed
                .get(&facts.ticket_id)
                .is_some_and(|f| f.root_key == key)
            {
                self.leave(&facts.ticket_id);
                touch(&mut touched, &key, facts.at, true);
            }
        }
        self.emit(touched)
    }

    fn emit(&mut self, touched: Touched) -> Vec<IncidentEvent> {
        for (key, _, _) in &touched {
            self.dirty.note(key);
        }
        touched
            .into_iter()
            .filter_map(|(key, at, visible)| self.evaluate(&key, at, visible))
            .collect()
    }

    /// Decide what becomes of the incident under `key` after a change at `at`: emit a
    /// record if it exists and changed visibly, forget it when closed (or when a
    /// candidate can no longer become an incident). `visible` false: no change since the
    /// last record can show in it (see [`Touched`]), so the record, of all the incident's
    /// circuits, is neither built nor compared.
    fn evaluate(&mut self, key: &str, at: DateTime<Utc>, visible: bool) -> Option<IncidentEvent> {
        let min = self.min_circuits;
        let inc = self.incidents.get_mut(key)?;
        if !inc.is_emitted() {
            if inc.all_closed() {
                self.forget(key);
                return None;
            }
            if inc.members.len() < min {
                return None;
            }
        } else if !visible {
            return None;
        }
        let view = inc.view();
        let digest = view.digest();
        if digest == inc.digest {
            return None;
        }
        inc.sequence += 1;
        inc.digest = digest;
        inc.updated_at = at;
        inc.root = view.root_alarm.clone();
        inc.opened_at = view.opened_at;
        let closed = view.status == IncidentStatus::Closed;
        let event = inc.event(view);
        if let Some(t) = inc.parent.publish(ParentTicket::of(&event), at) {
            self.ticket_events.push(t);
        }
        if closed {
            self.forget(key);
        }
        Some(event)
    }

    fn forget(&mut self, key: &str) {
        if let Some(inc) = self.incidents.remove(key) {
            self.unfile(key, &inc);
        }
    }

    fn unfile(&mut self, key: &str, incident: &Incident) {
        for m in incident.members.values() {
            if self
                .filed
                .get(&m.ticket_id)
                .is_some_and(|f| f.root_key == key)
            {
                self.filed.remove(&m.ticket_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::levels::Scope;
    use crate::policy::CauseClass;
    use crate::ticket::{
        ticket_id, FaultCause, Interval, RelatedEntity, RelatedParty, SlaEvent, SlaFields,
        TicketEventBody, TroubleTicket,
    };
    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;
    use serde_json::Value;

    const LOS: &str = "nms1:LOS-7";
    const AIS: &str = "nms1:AIS-9";

    fn t(minutes: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 8, 0, 0)
            .single()
            .expect("a valid instant")
            + Duration::minutes(minutes)
    }

    fn root(key: &str) -> RootCause {
        let physical = key.contains("LOS");
        RootCause {
            alarm_key: key.to_string(),
            object: format!("NE-{key}"),
            probable_cause: if physical { "LOS" } else { "AIS" }.to_string(),
            cause_class: if physical {
                CauseClass::Physical
            } else {
                CauseClass::Consequential
            },
            source_system: "nms1".to_string(),
            severity: Severity::Critical,
            raised_at: t(0),
        }
    }

    /// A circuit's ticket, from which ticket events are built by hand.
    #[derive(Debug, Clone)]
    struct Tk {
        circuit: String,
        assurance: AssuranceLevel,
        customer: CustomerLevel,
        root: RootCause,
        opened: DateTime<Utc>,
    }

    impl Tk {
        fn new(
            circuit: &str,
            assurance: AssuranceLevel,
            customer: CustomerLevel,
            root_key: &str,
        ) -> Tk {
            Tk {
                circuit: circuit.to_string(),
                assurance,
                customer,
                root: root(root_key),
                opened: t(1),
            }
        }

        fn id(&self) -> String {
            ticket_id(&self.circuit, self.opened.timestamp().unsigned_abs())
        }

        fn lead(&self) -> &'static str {
            if self.root.cause_class == CauseClass::Physical {
                "transport"
            } else {
                "service_support"
            }
        }

        fn event(
            &self,
            why: SlaEvent,
            status: TicketStatus,
            resolved: Option<DateTime<Utc>>,
            at: DateTime<Utc>,
        ) -> TicketEvent {
            let restore_by = self.opened + Duration::hours(4);
            TicketEvent {
                event_id: format!("{}-0000", self.id()),
                event_time: at,
                event_type: "TroubleTicketAttributeValueChangeEvent".to_string(),
                field_path: Some("status".to_string()),
                sla_event: why,
                event: TicketEventBody {
                    trouble_ticket: TroubleTicket {
                        id: self.id(),
                        name: format!("Circuit {} down", self.circuit),
                        description: "test".to_string(),
                        ticket_type: "fault".to_string(),
                        severity: "critical".to_string(),
                        priority: restoration_priority(self.assurance).to_string(),
                        status,
                        creation_date: self.opened,
                        last_update: at,
                        expected_resolution_date: restore_by,
                        resolution_date: resolved,
                        related_entity: vec![
                            RelatedEntity {
                                id: self.circuit.clone(),
                                role: "affectedCircuit".to_string(),
                                referred_type: "Circuit".to_string(),
                            },
                            RelatedEntity {
                                id: self.root.alarm_key.clone(),
                                role: "rootCauseAlarm".to_string(),
                                referred_type: "Alarm".to_string(),
                            },
                        ],
                        related_party: vec![
                            RelatedParty {
                                id: format!("CUST-{}", self.circuit),
                                name: Some("Acme".to_string()),
                                role: "customer".to_string(),
                                referred_type: "Customer".to_string(),
                            },
                            RelatedParty {
                                id: self.lead().to_string(),
                                name: None,
                                role: "leadTeam".to_string(),
                                referred_type: "Organization".to_string(),
                            },
                            RelatedParty {
                                id: "noc".to_string(),
                                name: None,
                                role: "notifiedTeam".to_string(),
                                referred_type: "Organization".to_string(),
                            },
                        ],
                        root_cause: self.root.clone(),
                        sla: SlaFields {
                            customer_level: self.customer,
                            assurance_level: self.assurance,
                            scope: Scope::IntraCity,
                            important: false,
                            cause: FaultCause::Network,
                            clock_runs: true,
                            restore_limit_minutes: 240,
                            accept_by: self.opened + Duration::minutes(10),
                            restore_by,
                            at_risk_at: self.opened + Duration::hours(3),
                            escalations: Vec::new(),
                            escalation_level: 0,
                            feedback_every_minutes: None,
                            post_restore_feedback_by: None,
                            written_report_by: None,
                            written_report_sent_at: None,
                            leadership_notice: false,
                            acknowledged_at: None,
                            down_intervals: vec![Interval {
                                start: self.opened,
                                end: resolved,
                            }],
                            down_minutes: 0,
                            planned_works: Vec::new(),
                        },
                        at_type: "DedicatedLineFaultTicket".to_string(),
                        base_type: "TroubleTicket".to_string(),
                    },
                },
            }
        }

        fn open(&self) -> TicketFacts {
            TicketFacts::from_event(&self.event(
                SlaEvent::Opened,
                TicketStatus::Acknowledged,
                None,
                self.opened,
            ))
        }

        fn restored(&self, at: DateTime<Utc>) -> TicketFacts {
            TicketFacts::from_event(&self.event(
                SlaEvent::Restored,
                TicketStatus::Resolved,
                Some(at),
                at,
            ))
        }

        fn reopened(&self, at: DateTime<Utc>) -> TicketFacts {
            TicketFacts::from_event(&self.event(
                SlaEvent::Reopened,
                TicketStatus::InProgress,
                None,
                at,
            ))
        }

        fn closed(&self, restored: DateTime<Utc>, at: DateTime<Utc>) -> TicketFacts {
            TicketFacts::from_event(&self.event(
                SlaEvent::Closed,
                TicketStatus::Closed,
                Some(restored),
                at,
            ))
        }

        /// The ticket after its root cause was revised to `key`.
        fn revise(&mut self, key: &str, at: DateTime<Utc>) -> TicketFacts {
            self.root = root(key);
            TicketFacts::from_event(&self.event(
                SlaEvent::RootCauseRevised,
                TicketStatus::Acknowledged,
                None,
                at,
            ))
        }
    }

    fn ids(ev: &IncidentEvent) -> Vec<&str> {
        ev.circuits.iter().map(|c| c.circuit_id.as_str()).collect()
    }

    fn schema_check(events: &[IncidentEvent]) {
        let schema: Value =
            serde_json::from_str(include_str!("../topics/schemas/incident.schema.json"))
                .expect("schema is JSON");
        let validator = jsonschema::validator_for(&schema).expect("schema compiles");
        for ev in events {
            let value = serde_json::to_value(ev).expect("record serializes");
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{}: {errors:?}", ev.event_id);
            let object = value.as_object().expect("an object");
            let known = schema["properties"].as_object().expect("properties");
            for k in object.keys() {
                assert!(known.contains_key(k), "{k} is not in the schema");
            }
        }
    }

    /// 50 circuits of mixed levels under one LOS root.
    fn fifty() -> Vec<Tk> {
        (0..50)
            .map(|i| {
                Tk::new(
                    &format!("C{i:03}"),
                    AssuranceLevel::ALL[i % 4],
                    CustomerLevel::ALL[(i * 7) % 6],
                    LOS,
                )
            })
            .collect()
    }

    #[test]
    fn facts_are_read_from_the_ticket_event() {
        let tk = Tk::new("C1", AssuranceLevel::Aa, CustomerLevel::Gold, LOS);
        let f = tk.open();
        assert_eq!(f.ticket_id, tk.id());
        assert_eq!(f.circuit_id, "C1");
        assert_eq!(f.customer_id.as_deref(), Some("CUST-C1"));
        assert_eq!(f.customer_level, CustomerLevel::Gold);
        assert_eq!(f.assurance_level, AssuranceLevel::Aa);
        assert_eq!(f.root.alarm_key, LOS);
        assert_eq!(f.lead_team, "transport");
        assert_eq!(f.opened_at, t(1));
        assert!(f.down && !f.closed);
        assert_eq!(f.restored_at, None);
        assert_eq!(f.at, t(1));

        let r = tk.restored(t(30));
        assert!(!r.down && !r.closed);
        assert_eq!(r.restored_at, Some(t(30)));
        assert!(tk.reopened(t(40)).down);
        let c = tk.closed(t(30), t(90));
        assert!(!c.down && c.closed);

        // A ticket that names no circuit nor lead team still gives usable facts.
        let mut ev = tk.event(SlaEvent::Opened, TicketStatus::InProgress, None, t(1));
        ev.event.trouble_ticket.related_entity.clear();
        ev.event.trouble_ticket.related_party.clear();
        let f = TicketFacts::from_event(&ev);
        assert_eq!(f.circuit_id, tk.id());
        assert_eq!(f.lead_team, "");
        assert_eq!(f.customer_id, None);
        assert!(f.down);
    }

    #[test]
    fn fifty_circuits_under_one_root_make_one_incident_in_priority_order() {
        let tickets = fifty();
        let mut book = IncidentBook::new(2);
        let mut events = Vec::new();
        // Arrive in a scrambled order (17 is prime to 50).
        for k in 0..50 {
            events.extend(book.on_ticket(tickets[(k * 17) % 50].open()));
        }
        schema_check(&events);
        assert_eq!(
            events.len(),
            49,
            "one record per change from the 2nd circuit on"
        );
        let incident = incident_id(&root(LOS));
        for (n, ev) in events.iter().enumerate() {
            let seq = u32::try_from(n + 1).expect("small");
            assert_eq!(ev.sequence, seq);
            assert_eq!(ev.event_id, format!("{incident}-{seq}"));
            assert_eq!(ev.key(), LOS);
            assert_eq!(ev.status, IncidentStatus::Open);
        }
        let last = events.last().expect("records");
        assert_eq!(last.circuit_count, 50);
        assert_eq!(last.down_count, 50);
        assert_eq!(last.opened_at, t(1));
        assert_eq!(last.restored_at, None);
        assert_eq!(last.lead_team.as_deref(), Some("transport"));
        assert_eq!(last.root_alarm.probable_cause, "LOS");
        // AAA circuits with key customers first, by circuit id; then AAA gold.
        assert_eq!(
            &ids(last)[..6],
            &["C000", "C012", "C024", "C036", "C048", "C008"]
        );
        let ranks: Vec<(u8, CustomerLevel)> = last
            .circuits
            .iter()
            .map(|c| (restoration_priority(c.assurance_level), c.customer_level))
            .collect();
        assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
        let aaa = last
            .circuits
            .iter()
            .take_while(|c| c.assurance_level == AssuranceLevel::Aaa)
            .count();
        assert_eq!(aaa, 13);
        assert!(last.circuits[aaa..]
            .iter()
            .all(|c| c.assurance_level != AssuranceLevel::Aaa));
        let mut expected: Vec<&Tk> = tickets.iter().collect();
        expected.sort_by(|a, b| {
            priority_key(a.assurance, a.customer, &a.circuit).cmp(&priority_key(
                b.assurance,
                b.customer,
                &b.circuit,
            ))
        });
        let expected_ids: Vec<&str> = expected.iter().map(|t| t.circuit.as_str()).collect();
        assert_eq!(ids(last), expected_ids);
        for c in &last.circuits {
            assert!(c.down);
            assert_eq!(
                c.ticket_id,
                ticket_id(&c.circuit_id, t(1).timestamp().unsigned_abs())
            );
        }
        assert_eq!(book.incidents().count(), 1);
        assert_eq!(
            book.get(LOS).and_then(Incident::record).as_ref(),
            Some(last)
        );
    }

    /// The circuits of `parts` in order, each part checked against the whole record.
    fn joined(whole: &IncidentEvent, parts: &[IncidentEvent]) -> Vec<IncidentCircuit> {
        let n = parts.len();
        let mut circuits = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.part, Some(u32::try_from(i + 1).expect("small")));
            assert_eq!(p.parts, Some(u32::try_from(n).expect("small")));
            assert_eq!(p.event_id, format!("{}.{}", whole.event_id, i + 1));
            assert_eq!(p.key(), whole.key());
            assert!(p.circuits.len() <= MAX_CIRCUITS_PER_RECORD);
            let header = IncidentEvent {
                event_id: whole.event_id.clone(),
                part: None,
                parts: None,
                circuits: whole.circuits.clone(),
                ..p.clone()
            };
            assert_eq!(&header, whole, "part {} carries the whole header", i + 1);
            circuits.extend(p.circuits.iter().cloned());
        }
        circuits
    }

    /// The largest circuit entry intake lets through: ids of `MAX_ID_BYTES` quotes (two
    /// bytes each in JSON), the longest level names, a restoration time.
    fn worst_circuit(i: usize) -> IncidentCircuit {
        let id = |prefix: &str| {
            let mut s = format!("{prefix}{i}");
            s.push_str(&"\"".repeat(crate::intake::MAX_ID_BYTES - s.len()));
            s
        };
        IncidentCircuit {
            circuit_id: id("C"),
            customer_id: Some(id("K")),
            customer_level: CustomerLevel::Standard,
            assurance_level: AssuranceLevel::Ordinary,
            ticket_id: ticket_id(&id("C"), u64::MAX),
            down: false,
            restored_at: Some(t(0) + Duration::nanoseconds(123_456_789)),
        }
    }

    #[test]
    fn a_worst_case_part_fits_the_record_limit() {
        let entry = serde_json::to_vec(&worst_circuit(0)).expect("json").len() + 1;
        assert!(
            entry <= 1_200,
            "a worst-case circuit entry is {entry} bytes"
        );
        let long = |n: usize| "\"".repeat(n);
        let key = long(2 * crate::intake::MAX_ID_BYTES + 1);
        let whole = IncidentEvent {
            event_id: format!("INC-0123456789abcdef-{}", u32::MAX),
            incident_id: "INC-0123456789abcdef".into(),
            sequence: u32::MAX,
            part: None,
            parts: None,
            status: IncidentStatus::Restored,
            root_alarm: RootAlarm {
                key: key.clone(),
                object: long(crate::intake::MAX_ID_BYTES),
                probable_cause: long(crate::intake::MAX_TEXT_BYTES),
                severity: Severity::Indeterminate,
                raised_at: t(0),
            },
            opened_at: t(0),
            restored_at: Some(t(1)),
            updated_at: t(2),
            lead_team: Some(long(crate::intake::MAX_ID_BYTES)),
            circuit_count: 13_000,
            down_count: 13_000,
            circuits: (0..3 * MAX_CIRCUITS_PER_RECORD + 1)
                .map(worst_circuit)
                .collect(),
        };
        let parts = whole.clone().into_parts();
        assert_eq!(parts.len(), 4);
        schema_check(&parts);
        for p in &parts {
            let bytes = key.len() + serde_json::to_vec(p).expect("json").len();
            assert!(bytes <= 603_261, "part {:?}: {bytes} bytes", p.part);
        }
        assert_eq!(joined(&whole, &parts), whole.circuits);
        // The parent ticket of such an incident, in both TMF621 forms, fits as well.
        let parent = ParentTicket::of(&whole);
        assert_eq!(
            parent.trouble_ticket_relationship.len(),
            MAX_CIRCUITS_PER_RECORD
        );
        assert_eq!(
            parent.incident.unlisted_child_tickets,
            Some(2 * MAX_CIRCUITS_PER_RECORD + 1)
        );
        let event = ParentMemo::default()
            .publish(parent, t(2))
            .expect("a create event");
        for version in [
            crate::tmf621::Tmf621Version::V4,
            crate::tmf621::Tmf621Version::V5,
        ] {
            let bytes = crate::tmf621::event_json(&event, version)
                .expect("json")
                .len();
            assert!(bytes < 60_000, "{version:?}: {bytes} bytes");
        }
    }

    #[test]
    fn a_small_record_is_one_record_as_before() {
        let mut book = IncidentBook::default();
        let events = book.on_tickets(fifty().iter().map(Tk::open));
        let whole = events[0].clone();
        assert_eq!(whole.clone().into_parts(), std::slice::from_ref(&whole));
        let json = serde_json::to_value(&whole).expect("json");
        assert!(json.get("part").is_none() && json.get("parts").is_none());
        // A record of exactly the bound is still whole; one more circuit makes two parts.
        let at_bound = whole.clone().into_parts_of(50);
        assert_eq!(at_bound, std::slice::from_ref(&whole));
        let split = whole.clone().into_parts_of(49);
        assert_eq!(split.len(), 2);
        assert_eq!(split[1].circuits.len(), 1);
        assert_eq!(joined(&whole, &split), whole.circuits);
    }

    #[test]
    fn an_incident_that_grows_and_shrinks_goes_out_in_as_many_parts_as_it_needs() {
        let bound = MAX_CIRCUITS_PER_RECORD;
        let mut tks: Vec<Tk> = (0..2 * bound + 7)
            .map(|i| {
                Tk::new(
                    &format!("C{i:05}"),
                    AssuranceLevel::ALL[i % 4],
                    CustomerLevel::ALL[(i * 7) % 6],
                    LOS,
                )
            })
            .collect();
        let mut book = IncidentBook::default();
        let events = book.on_tickets(tks.iter().map(Tk::open));
        assert_eq!(events.len(), 1);
        let whole = events[0].clone();
        let parts = whole.clone().into_parts();
        assert_eq!(parts.len(), 3);
        schema_check(&parts);
        let circuits = joined(&whole, &parts);
        assert_eq!(circuits.len(), 2 * bound + 7);
        let distinct: BTreeSet<&str> = circuits.iter().map(|c| c.circuit_id.as_str()).collect();
        assert_eq!(distinct.len(), circuits.len(), "each circuit once");
        assert_eq!(parts[2].circuits.len(), 7);
        // All but 10 circuits move to another root: the LOS incident shrinks to one whole
        // record (the topic is not compacted, so the parts of the earlier sequence need no
        // tombstones: a reader takes the newest sequence), the AIS one is in parts.
        let moved: Vec<TicketFacts> = tks[10..]
            .iter_mut()
            .map(|tk| tk.revise(AIS, t(5)))
            .collect();
        let events = book.on_tickets(moved);
        let out: Vec<IncidentEvent> = events
            .into_iter()
            .flat_map(IncidentEvent::into_parts)
            .collect();
        let los: Vec<&IncidentEvent> = out.iter().filter(|e| e.key() == LOS).collect();
        assert_eq!(los.len(), 1);
        assert_eq!((los[0].part, los[0].parts), (None, None));
        assert_eq!(los[0].sequence, 2);
        assert_eq!(los[0].circuit_count, 10);
        assert_eq!(los[0].circuits.len(), 10);
        let ais: Vec<IncidentEvent> = out.iter().filter(|e| e.key() == AIS).cloned().collect();
        assert_eq!(ais.len(), 2, "997 circuits in two parts");
        assert!(ais.iter().all(|e| e.circuit_count == 2 * bound - 3));
        let current = book.get(AIS).and_then(Incident::record).expect("emitted");
        assert_eq!(joined(&current, &ais), current.circuits);
        // A reader that keeps the parts of the newest sequence per key sees every current
        // state exactly, the shrunk one included.
        let mut latest: BTreeMap<&str, (u32, Vec<&IncidentCircuit>)> = BTreeMap::new();
        for e in parts.iter().chain(out.iter()) {
            let slot = latest.entry(e.key()).or_default();
            if slot.0 != e.sequence {
                *slot = (e.sequence, Vec::new());
            }
            slot.1.extend(e.circuits.iter());
        }
        for (key, (_, circuits)) in latest {
            let record = book.get(key).and_then(Incident::record).expect("emitted");
            assert_eq!(
                circuits.into_iter().cloned().collect::<Vec<_>>(),
                record.circuits
            );
        }
    }

    #[test]
    fn a_batch_gives_one_record_per_incident() {
        let mut book = IncidentBook::default();
        let events = book.on_tickets(fifty().iter().map(Tk::open));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].sequence, 1);
        assert_eq!(events[0].circuit_count, 50);
        let mut one_by_one = IncidentBook::default();
        let last = fifty()
            .iter()
            .flat_map(|tk| one_by_one.on_ticket(tk.open()))
            .last()
            .expect("records");
        assert_eq!(events[0].circuits, last.circuits);
    }

    #[test]
    fn a_root_revision_moves_the_circuit_to_the_other_incident() {
        let mut book = IncidentBook::new(2);
        let mut ais: Vec<Tk> = ["A1", "A2", "A3"]
            .iter()
            .map(|c| Tk::new(c, AssuranceLevel::A, CustomerLevel::Silver, AIS))
            .collect();
        let los: Vec<Tk> = ["L1", "L2"]
            .iter()
            .map(|c| Tk::new(c, AssuranceLevel::Aa, CustomerLevel::Gold, LOS))
            .collect();
        let mut events = Vec::new();
        for tk in ais.iter().chain(los.iter()) {
            events.extend(book.on_ticket(tk.open()));
        }
        assert_eq!(events.len(), 3, "AIS at 2 and 3 circuits, LOS at 2");

        // The LOS alarm turns out to be the root of A1 as well.
        let moved = ais[0].revise(LOS, t(5));
        let events = book.on_ticket(moved);
        schema_check(&events);
        assert_eq!(events.len(), 2);
        let (old, new) = (&events[0], &events[1]);
        assert_eq!(old.key(), AIS);
        assert_eq!(old.sequence, 3);
        assert_eq!(ids(old), ["A2", "A3"]);
        assert_eq!(old.lead_team.as_deref(), Some("service_support"));
        assert_eq!(old.updated_at, t(5));
        assert_eq!(new.key(), LOS);
        assert_eq!(new.sequence, 2);
        // AA circuits before the A circuit.
        assert_eq!(ids(new), ["L1", "L2", "A1"]);
        assert_eq!(new.circuit_count, 3);
        assert_eq!(book.filed_under(&ais[0].id()), Some(LOS));

        // The AIS incident, once emitted, keeps being updated below the minimum ...
        let events = book.on_ticket(ais[1].revise(LOS, t(6)));
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].circuit_count, 1);
        assert_eq!(events[0].status, IncidentStatus::Open);
        assert_eq!(events[1].circuit_count, 4);

        // ... and closes, and is forgotten, when no circuit is left in it.
        let events = book.on_ticket(ais[2].revise(LOS, t(7)));
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].key(), AIS);
        assert_eq!(events[0].status, IncidentStatus::Closed);
        assert_eq!(events[0].circuit_count, 0);
        assert!(events[0].circuits.is_empty());
        assert_eq!(events[0].opened_at, t(1));
        assert_eq!(events[0].root_alarm.key, AIS);
        assert_eq!(events[1].circuit_count, 5);
        schema_check(&events);
        assert!(book.get(AIS).is_none());
        assert_eq!(book.incidents().count(), 1);
    }

    #[test]
    fn a_candidate_that_loses_its_circuit_emits_nothing() {
        let mut book = IncidentBook::new(2);
        let mut a = Tk::new("A1", AssuranceLevel::A, CustomerLevel::Silver, AIS);
        let l = Tk::new("L1", AssuranceLevel::Aaa, CustomerLevel::Gold, LOS);
        assert!(book.on_ticket(a.open()).is_empty());
        assert!(book.on_ticket(l.open()).is_empty());
        let events = book.on_ticket(a.revise(LOS, t(3)));
        assert_eq!(events.len(), 1, "only the LOS incident comes to exist");
        assert_eq!(events[0].key(), LOS);
        assert_eq!(ids(&events[0]), ["L1", "A1"]);
        assert!(book.get(AIS).is_none(), "an empty candidate is forgotten");
    }

    #[test]
    fn restored_then_closed_then_forgotten() {
        let mut book = IncidentBook::new(2);
        let tks: Vec<Tk> = ["X1", "X2", "X3"]
            .iter()
            .map(|c| Tk::new(c, AssuranceLevel::Aa, CustomerLevel::Bronze, LOS))
            .collect();
        let mut events = Vec::new();
        for tk in &tks {
            events.extend(book.on_ticket(tk.open()));
        }
        // Restorations reach stage 3 out of event-time order.
        let r = book.on_ticket(tks[2].restored(t(50)));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].status, IncidentStatus::Open);
        assert_eq!(r[0].down_count, 2);
        assert_eq!(r[0].restored_at, None);
        assert_eq!(r[0].circuits[2].restored_at, Some(t(50)));
        events.extend(r);
        events.extend(book.on_ticket(tks[0].restored(t(20))));
        let r = book.on_ticket(tks[1].restored(t(40)));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].status, IncidentStatus::Restored);
        assert_eq!(r[0].down_count, 0);
        assert_eq!(
            r[0].restored_at,
            Some(t(50)),
            "when the last circuit came back"
        );
        events.extend(r);

        // A re-failure in hold-down opens the incident again.
        let r = book.on_ticket(tks[0].reopened(t(60)));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].status, IncidentStatus::Open);
        assert_eq!(r[0].restored_at, None);
        assert!(r[0].circuits[0].down);
        events.extend(r);
        let r = book.on_ticket(tks[0].restored(t(70)));
        assert_eq!(r[0].status, IncidentStatus::Restored);
        assert_eq!(r[0].restored_at, Some(t(70)));
        events.extend(r);

        // Closing child tickets is not visible until the last one closes.
        assert!(book.on_ticket(tks[0].closed(t(70), t(200))).is_empty());
        assert!(book.on_ticket(tks[2].closed(t(50), t(180))).is_empty());
        let r = book.on_ticket(tks[1].closed(t(40), t(190)));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].status, IncidentStatus::Closed);
        assert_eq!(r[0].updated_at, t(190));
        assert_eq!(r[0].restored_at, Some(t(70)));
        assert_eq!(r[0].circuit_count, 3);
        events.extend(r);
        schema_check(&events);
        let seqs: Vec<u32> = events.iter().map(|e| e.sequence).collect();
        assert_eq!(seqs, (1..=8).collect::<Vec<u32>>());

        assert!(book.get(LOS).is_none());
        assert_eq!(book.incidents().count(), 0);
        assert!(tks.iter().all(|tk| book.filed_under(&tk.id()).is_none()));
        // A late event of a closed ticket starts nothing.
        assert!(book.on_ticket(tks[1].closed(t(40), t(191))).is_empty());
        assert!(book.get(LOS).is_none());
    }

    #[test]
    fn a_single_circuit_root_is_no_incident() {
        let tk = Tk::new("S1", AssuranceLevel::Aaa, CustomerLevel::Key, LOS);
        let mut book = IncidentBook::new(2);
        assert!(book.on_ticket(tk.open()).is_empty());
        assert!(book.on_ticket(tk.restored(t(9))).is_empty());
        assert_eq!(book.incidents().count(), 0);
        assert!(book.get(LOS).is_some_and(|i| !i.is_emitted()));
        assert!(book.on_ticket(tk.closed(t(9), t(99))).is_empty());
        assert!(book.get(LOS).is_none(), "a closed candidate is forgotten");

        let mut book = IncidentBook::new(1);
        let events = book.on_ticket(tk.open());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].circuit_count, 1);
    }

    #[test]
    fn nothing_visible_changed_gives_no_record() {
        let a = Tk::new("N1", AssuranceLevel::A, CustomerLevel::Gold, LOS);
        let b = Tk::new("N2", AssuranceLevel::A, CustomerLevel::Gold, LOS);
        let mut book = IncidentBook::new(2);
        assert!(book.on_ticket(a.open()).is_empty());
        assert_eq!(book.on_ticket(b.open()).len(), 1);
        assert!(book.on_ticket(b.open()).is_empty(), "a duplicate");
        let escalated = TicketFacts::from_event(&b.event(
            SlaEvent::Escalated {
                level: 1,
                action: crate::policy::EscalationAction::JointHandling,
            },
            TicketStatus::Acknowledged,
            None,
            t(31),
        ));
        assert!(book.on_ticket(escalated).is_empty(), "an escalation");
        let ack = TicketFacts::from_event(&b.event(
            SlaEvent::Acknowledged,
            TicketStatus::InProgress,
            None,
            t(5),
        ));
        assert!(book.on_ticket(ack).is_empty(), "still down");
        assert_eq!(book.get(LOS).map(Incident::sequence), Some(1));
    }

    #[test]
    fn the_same_input_gives_the_same_records() {
        let run = || {
            let mut book = IncidentBook::default();
            let mut tks = fifty();
            let mut out = Vec::new();
            for tk in &tks {
                out.extend(book.on_ticket(tk.open()));
            }
            for (i, tk) in tks.iter_mut().enumerate().filter(|(i, _)| i % 3 == 0) {
                let at = t(10 + i64::try_from(i).expect("small"));
                out.extend(book.on_ticket(tk.revise(AIS, at)));
            }
            for (i, tk) in tks.iter().enumerate() {
                let at = t(100 + i64::try_from(i).expect("small"));
                out.extend(book.on_ticket(tk.restored(at)));
            }
            serde_json::to_string(&out).expect("records serialize")
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn a_state_too_large_for_one_record_survives_the_changelog_in_parts() {
        let tks = fifty();
        let mut book = IncidentBook::default();
        for tk in &tks {
            book.on_ticket(tk.open());
        }
        for tk in &tks[..7] {
            book.on_ticket(tk.closed(t(30), t(90)));
        }
        let incident = book.get(LOS).expect("incident");
        let whole = incident.state_records(1_000_000).expect("records");
        assert!(whole.parts.is_empty(), "fits in one record");
        // A limit that takes a few members per part: the head and several parts.
        let limit = 2_500;
        let split = incident.state_records(limit).expect("records");
        assert!(split.parts.len() > 1, "{} parts", split.parts.len());
        assert!(split.parts.iter().all(|p| p.len() <= limit));
        assert!(split.head.len() < whole.head.len());
        let head: Incident = serde_json::from_slice(&split.head).expect("head reads back");
        assert_eq!(head.member_parts() as usize, split.parts.len());
        assert!(head.members.is_empty());

        let mut restored = IncidentBook::default();
        restored.restore(head);
        for part in &split.parts {
            restored
                .restore_members(LOS, part)
                .expect("part reads back");
        }
        assert_eq!(restored.get(LOS), book.get(LOS));
        for tk in &tks {
            assert_eq!(restored.filed_under(&tk.id()), Some(LOS));
        }
        // What follows is the same in both.
        let a = book.on_ticket(tks[9].restored(t(40)));
        let b = restored.on_ticket(tks[9].restored(t(40)));
        assert_eq!(a, b);
        // A part whose head is gone is ignored.
        let mut empty = IncidentBook::default();
        empty
            .restore_members(LOS, &split.parts[0])
            .expect("part reads");
        assert!(empty.get(LOS).is_none());
    }

    #[test]
    fn the_state_survives_the_changelog() {
        let tks = fifty();
        let mut book = IncidentBook::default();
        for tk in &tks[..10] {
            book.on_ticket(tk.open());
        }
        let state = serde_json::to_string(book.get(LOS).expect("incident")).expect("state");
        let mut restored = IncidentBook::default();
        restored.restore(serde_json::from_str(&state).expect("state reads back"));
        assert_eq!(restored.filed_under(&tks[3].id()), Some(LOS));
        // A state of a version before parent tickets (no `parent`).
        let mut old: serde_json::Value = serde_json::from_str(&state).expect("JSON");
        old.as_object_mut().expect("object").remove("parent");
        let mut upgraded = IncidentBook::default();
        upgraded.restore(serde_json::from_value(old).expect("old state reads"));
        let before = book.take_ticket_events();
        assert_eq!(before[0].event_type, crate::ticket::CREATE_EVENT);
        for tk in &tks[10..20] {
            let a = book.on_ticket(tk.open());
            let b = restored.on_ticket(tk.open());
            assert_eq!(a, b);
            upgraded.on_ticket(tk.open());
        }
        let a = book.on_ticket(tks[0].restored(t(30)));
        let b = restored.on_ticket(tks[0].restored(t(30)));
        assert_eq!(a, b);
        assert_eq!(a.len(), 1);
        // The parent ticket goes on where it was: the same events, numbered on, no
        // second create; from an old state, it is created at the next record.
        let a = book.take_ticket_events();
        assert_eq!(a, restored.take_ticket_events());
        assert_eq!(a.len(), 11, "10 circuits join, one comes back: {a:#?}");
        assert!(a
            .iter()
            .all(|e| e.event_type != crate::ticket::CREATE_EVENT));
        assert_eq!(
            a[0].event_id,
            format!("{}-{:04}", a[0].ticket().id, before.len())
        );
        let u = upgraded.take_ticket_events();
        assert_eq!(u[0].event_type, crate::ticket::CREATE_EVENT);
        assert_eq!(u[0].ticket().trouble_ticket_relationship.len(), 11);
    }

    #[test]
    fn keyed_books_move_a_ticket_across_partitions() {
        // The AIS key lives in one book, the LOS key in another.
        let mut ais_book = IncidentBook::new(2);
        let mut los_book = IncidentBook::new(2);
        let mut a: Vec<Tk> = ["A1", "A2"]
            .iter()
            .map(|c| Tk::new(c, AssuranceLevel::A, CustomerLevel::Silver, AIS))
            .collect();
        let l = Tk::new("L1", AssuranceLevel::Aa, CustomerLevel::Gold, LOS);
        for tk in &a {
            ais_book.on_keyed_ticket(AIS, tk.open());
        }
        assert!(los_book.on_keyed_ticket(LOS, l.open()).is_empty());
        let revised = a[0].revise(LOS, t(4));
        let left = ais_book.on_keyed_ticket(AIS, revised.clone());
        let joined = los_book.on_keyed_ticket(LOS, revised.clone());
        assert_eq!(left.len(), 1);
        assert_eq!(ids(&left[0]), ["A2"]);
        assert!(
            ais_book.get(LOS).is_none(),
            "nothing filed under a foreign key"
        );
        assert_eq!(joined.len(), 1);
        assert_eq!(ids(&joined[0]), ["L1", "A1"]);
        // A repeated departure notice is a no-op.
        assert!(ais_book.on_keyed_ticket(AIS, revised).is_empty());
    }

    #[test]
    fn a_later_ticket_of_the_same_circuit_replaces_the_earlier() {
        let mut book = IncidentBook::new(2);
        let first = Tk::new("R1", AssuranceLevel::A, CustomerLevel::Gold, LOS);
        let other = Tk::new("R2", AssuranceLevel::A, CustomerLevel::Gold, LOS);
        let mut second = first.clone();
        second.opened = t(500);
        book.on_ticket(first.open());
        book.on_ticket(other.open());
        let events = book.on_ticket(second.open());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].circuit_count, 2);
        assert_eq!(events[0].circuits[0].ticket_id, second.id());
        assert_eq!(events[0].opened_at, t(1));
        assert_eq!(book.filed_under(&first.id()), None);
        // A late event of the earlier ticket does not take the circuit back.
        assert!(book.on_ticket(first.restored(t(20))).is_empty());
    }

    #[test]
    fn incident_ids_are_deterministic() {
        let r = root(LOS);
        assert_eq!(incident_id(&r), incident_id(&root(LOS)));
        assert!(incident_id(&r).starts_with("INC-"));
        assert_eq!(incident_id(&r).len(), 4 + 16);
        assert_ne!(incident_id(&r), incident_id(&root(AIS)));
        let mut again = r.clone();
        again.raised_at = t(600);
        assert_ne!(
            incident_id(&r),
            incident_id(&again),
            "a new life of the key"
        );
    }

    fn mixed() -> Vec<Tk> {
        (0..8)
            .map(|i| {
                Tk::new(
                    &format!("P{}", 7 - i),
                    AssuranceLevel::ALL[(i * 3) % 4],
                    CustomerLevel::ALL[(i * 5) % 6],
                    LOS,
                )
            })
            .collect()
    }

    fn final_record(order: &[Tk]) -> (usize, IncidentEvent) {
        let mut book = IncidentBook::default();
        let events: Vec<IncidentEvent> = order
            .iter()
            .flat_map(|tk| book.on_ticket(tk.open()))
            .collect();
        let last = events.last().cloned().expect("records");
        (events.len(), last)
    }

    proptest! {
        #[test]
        fn circuit_order_does_not_depend_on_arrival(order in Just(mixed()).prop_shuffle()) {
            let (n, last) = final_record(&order);
            let (n0, reference) = final_record(&mixed());
            prop_assert_eq!(n, n0);
            prop_assert_eq!(&last, &reference);
            let keys: Vec<PriorityKey<'_>> = last
                .circuits
                .iter()
                .map(|c| priority_key(c.assurance_level, c.customer_level, &c.circuit_id))
                .collect();
            prop_assert!(keys.windows(2).all(|w| w[0] < w[1]));
        }
    }

    /// A random life of six tickets under two root alarms: opens, restorations out of
    /// order, re-failures, closes and root revisions, in batches of one to four facts.
    fn storm_ops() -> impl Strategy<Value = Vec<(usize, u8, i64, usize)>> {
        prop::collection::vec((0..6usize, 0..6u8, 0..120i64, 1..5usize), 1..60)
    }

    proptest! {
        /// The book skips building the record when only a ticket's `closed` changed and
        /// the status stays: the records are exactly those of building and comparing it
        /// after every change, through a restore from the changelog half-way.
        #[test]
        fn skipping_invisible_closes_changes_no_record(ops in storm_ops(), cut in 0..60usize) {
            let mut tks: Vec<Tk> = (0..6)
                .map(|i| {
                    Tk::new(
                        &format!("C{i}"),
                        AssuranceLevel::ALL[i % 4],
                        CustomerLevel::ALL[(i * 5) % 6],
                        if i % 2 == 0 { LOS } else { AIS },
                    )
                })
                .collect();
            let mut book = IncidentBook::new(2);
            let mut reference = IncidentBook::new(2);
            reference.always_evaluate = true;
            let mut batch = Vec::new();
            // When each ticket was last restored: its close carries that time, so that
            // most closes change nothing but `closed`.
            let mut restored_at = [None; 6];
            for (step, (i, op, minute, size)) in ops.into_iter().enumerate() {
                let at = t(10 + minute);
                let tk = &mut tks[i];
                batch.push(match op {
                    0 => tk.open(),
                    1 => {
                        restored_at[i] = Some(at);
                        tk.restored(at)
                    }
                    2 => tk.reopened(at),
                    3 | 4 => {
                        let restored = restored_at[i].unwrap_or(at);
                        tk.closed(restored, at + Duration::minutes(30))
                    }
                    _ => {
                        let other = if tk.root.alarm_key == LOS { AIS } else { LOS };
                        tk.revise(other, at)
                    }
                });
                if batch.len() >= size {
                    let facts = std::mem::take(&mut batch);
                    prop_assert_eq!(book.on_tickets(facts.clone()), reference.on_tickets(facts));
                }
                if step == cut {
                    let mut restored = IncidentBook::new(2);
                    for inc in book.incidents.values() {
                        let state = serde_json::to_string(inc).expect("state");
                        restored.restore(serde_json::from_str(&state).expect("state reads back"));
                    }
                    book = restored;
                }
            }
            prop_assert_eq!(book.on_tickets(batch.clone()), reference.on_tickets(batch));
            for (key, inc) in &book.incidents {
                prop_assert_eq!(inc.closed_members, inc.members.values().filter(|m| m.closed).count());
                prop_assert_eq!(reference.get(key).map(Incident::record), Some(inc.record()));
            }
        }
    }

    #[test]
    fn closing_the_tickets_of_a_storm_one_by_one_gives_the_same_records() {
        let tks: Vec<Tk> = (0..300)
            .map(|i| {
                Tk::new(
                    &format!("S{i:04}"),
                    AssuranceLevel::ALL[i % 4],
                    CustomerLevel::ALL[i % 6],
                    LOS,
                )
            })
            .collect();
        let run = |always_evaluate: bool| {
            let mut book = IncidentBook {
                always_evaluate,
                ..IncidentBook::default()
            };
            let mut out = book.on_tickets(tks.iter().map(Tk::open));
            out.extend(book.on_tickets(tks.iter().map(|tk| tk.restored(t(60)))));
            for (i, tk) in tks.iter().enumerate() {
                let at = t(120 + i64::try_from(i).expect("small"));
                out.extend(book.on_ticket(tk.closed(t(60), at)));
            }
            out
        };
        let out = run(false);
        assert_eq!(out, run(true));
        let statuses: Vec<IncidentStatus> = out.iter().map(|e| e.status).collect();
        assert_eq!(
            statuses,
            [
                IncidentStatus::Open,
                IncidentStatus::Restored,
                IncidentStatus::Closed
            ]
        );
        assert_eq!(out[2].circuit_count, 300);
        assert_eq!(out[2].updated_at, t(120 + 299));
    }
}
