//! The engine facade: input and time in, events out. Pure and synchronous.
//!
//! [`Engine`] runs both stages in one process (the replay command and the tests use it);
//! the Kafka runtime drives the same two halves, [`FanOut`] and [`CircuitStates`], on
//! separate partitions. Nothing here reads a clock: `now` is always passed in, and every
//! SLA figure is computed from event times carried by the input.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::changes::Changes;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::alarm::check_not_in_future;
use crate::alarm::Alarm;
use crate::calendar::PeriodKind;
use crate::correlation::{CircuitImpacts, FanOut, Impact, LineStatus};
use crate::incident::{IncidentBook, IncidentEvent, TicketFacts};
use crate::inventory::InventoryChange;
use crate::levels::AssuranceLevel;
use crate::maintenance::MaintenanceWindow;
use crate::network::{CircuitRef, Network};
use crate::parent_ticket::ParentTicketEvent;
use crate::policy::Policy;
use crate::rejection::RejectReason;
use crate::sla::{
    circuit_figures, label_kind, next_crossing, periods_overlapping, union, warning_between,
    CircuitFacts, CircuitFigures, FactsSnapshot, FaultFacts, Period, RiskWarning, Rules, Span,
};
use crate::ticket::{
    Fault, FaultCause, Fired, PlannedWork, SlaEvent, SlaReminder, TicketEvent, TicketStatus,
};
use crate::views::{CircuitView, TicketView};

/// A command from the ticketing system about one ticket
/// (schema `topics/schemas/ticket-command.schema.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TicketCommand {
    pub ticket_id: String,
    /// The ticket's circuit: commands are partitioned by circuit, like the tickets.
    pub circuit_id: String,
    pub action: CommandAction,
    /// The fault's cause, for [`CommandAction::Reclassify`] only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<FaultCause>,
    /// When the operator acted (event time).
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub at: DateTime<Utc>,
    #[serde(default)]
    pub by: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandAction {
    /// The lead team accepted the ticket.
    Acknowledge,
    /// The cause was found to be the customer's or another carrier's (or back to network).
    Reclassify,
    /// Close the ticket by hand.
    Close,
    /// The written fault report went to the customer (004 table 7-4), after restoration.
    WrittenReportSent,
}

/// A change of a circuit's service state, for dashboards. `Unprotected` is a warning of
/// its own: a protected circuit running on one route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineEvent {
    pub circuit_id: String,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub at: DateTime<Utc>,
    pub status: LineStatus,
}

/// Everything the engine emits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "output", rename_all = "snake_case")]
pub enum Output {
    /// A ticket changed: a TMF621 event (topic `tickets.events`).
    Ticket(Box<TicketEvent>),
    /// An SLA timer of a ticket that changes nothing on it: what the NOC must do now
    /// (topic `sla.reminders`). No figures follow it, and the incidents do not hear of it.
    Reminder(Box<SlaReminder>),
    Line(LineEvent),
    /// Something SLA managers must hear about (topic `sla.warnings`).
    Warning(Warning),
    /// A circuit's SLA figures for one period (topic `kpi.circuits`).
    Figures(Box<CircuitFigures>),
    /// A mass-outage incident changed (topic `incidents`).
    Incident(Box<IncidentEvent>),
    /// The incident's parent ticket changed: a TMF621 event (topic `tickets.events`,
    /// keyed by the incident id).
    ParentTicket(Box<ParentTicketEvent>),
}

/// Where an output goes: one topic (and one replay file) each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Sink {
    Tickets,
    Reminders,
    Status,
    Warnings,
    Figures,
    Incidents,
}

impl Sink {
    pub const ALL: [Sink; 6] = [
        Sink::Tickets,
        Sink::Reminders,
        Sink::Status,
        Sink::Warnings,
        Sink::Figures,
        Sink::Incidents,
    ];
}

impl Output {
    /// The topic (or replay file) this output belongs to.
    pub fn sink(&self) -> Sink {
        match self {
            Output::Ticket(_) => Sink::Tickets,
            Output::Reminder(_) => Sink::Reminders,
            Output::Line(_) => Sink::Status,
            Output::Warning(_) => Sink::Warnings,
            Output::Figures(_) => Sink::Figures,
            Output::Incident(_) => Sink::Incidents,
            Output::ParentTicket(_) => Sink::Tickets,
        }
    }

    /// The record key: the circuit for tickets, status and figures (with the period for
    /// figures, so that the compacted topic keeps one record per circuit and period), the
    /// window or circuit for warnings, the root alarm for incidents, the incident id for
    /// its parent ticket.
    pub fn key(&self) -> String {
        match self {
            Output::Ticket(ev) => ev
                .ticket()
                .related_entity
                .iter()
                .find(|e| e.role == "affectedCircuit")
                .map(|e| e.id.clone())
                .unwrap_or_default(),
            Output::Reminder(r) => r.circuit_id.clone(),
            Output::Line(ev) => ev.circuit_id.clone(),
            Output::Warning(Warning::LateNotice(n)) => n.window_id.clone(),
            Output::Warning(Warning::Risk(r)) => r.circuit_id.clone(),
            Output::Figures(f) => format!("{}@{}", f.circuit_id, f.period),
            Output::Incident(i) => i.key().to_string(),
            Output::ParentTicket(t) => t.ticket().id.clone(),
        }
    }

    /// The record value, as the topic's schema describes it.
    ///
    /// # Errors
    /// Only if serde_json fails, which the types here do not allow in practice.
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        self.to_json_as(crate::tmf621::Tmf621Version::default())
    }

    /// The record value, ticket events in the form of TMF621 `version`
    /// ([`crate::tmf621`]); every other output as [`Output::to_json`] writes it.
    ///
    /// # Errors
    /// As [`Output::to_json`].
    pub fn to_json_as(&self, version: crate::tmf621::Tmf621Version) -> serde_json::Result<Vec<u8>> {
        match self {
            Output::Ticket(ev) => crate::tmf621::event_json(ev, version),
            Output::Reminder(r) => serde_json::to_vec(r),
            Output::Line(ev) => serde_json::to_vec(ev),
            Output::Warning(w) => serde_json::to_vec(w),
            Output::Figures(f) => serde_json::to_vec(f),
            Output::Incident(i) => serde_json::to_vec(i),
            Output::ParentTicket(t) => crate::tmf621::event_json(t, version),
        }
    }
}

/// A warning for SLA managers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Warning {
    /// A maintenance window whose notice came too late for some of its customers.
    LateNotice(LateNotice),
    /// A circuit's figures got worse: at risk of, or past, an annual limit.
    Risk(RiskWarning),
}

/// Planned works announced later than the policy asks, for some circuits: their time is
/// not excluded from those circuits' SLA clocks, and the operator should know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LateNotice {
    pub window_id: String,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub start: DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub end: DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub notice_given_at: DateTime<Utc>,
    /// Circuits covered by the window, with their notice check.
    pub late: Vec<LateCircuit>,
    /// How many covered circuits did get enough notice.
    pub compliant_circuits: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LateCircuit {
    pub circuit_id: String,
    pub customer_id: String,
    pub customer_level: crate::levels::CustomerLevel,
    #[serde(flatten)]
    pub notice: crate::maintenance::NoticeCheck,
}

/// State of one circuit in stage 2.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct CircuitEntry {
    impacts: CircuitImpacts,
    last_status: Option<LineStatus>,
    fault: Option<Fault>,
    /// Restored tickets of this circuit that a new fault has superseded (the circuit
    /// failed again after their hold-down): each stays open, resolved, until its
    /// post-restore feedback is due, and then closes (issue 15, defect 3). Their faults
    /// count in the figures like the current one until they join `history`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    superseded: Vec<Fault>,
    /// Closed by hand while still down: no new fault until the line is back (up, or on
    /// one route).
    suppressed_until_up: bool,
    /// The start of the fault in `history` whose ticket was closed by hand while the
    /// circuit was down, until the line is back (up or on one route): the outage ends at
    /// restoration, whatever the ticket, so that fault's last down span counts on up to
    /// the figures' time meanwhile, and ends when the line comes back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    outage_open_of: Option<DateTime<Utc>>,
    /// Closed faults of this and last year, for the SLA figures.
    history: Vec<FaultFacts>,
    /// Time of properly announced planned works seen by this circuit's faults.
    excluded: Vec<Span>,
    /// Customer and assurance level, as of the last fault (the circuit may be deleted).
    ident: Option<(String, AssuranceLevel)>,
    /// The figures last emitted, per period label. Not in the circuit's changelog record:
    /// they change only when figures are emitted, and have a record of their own
    /// ([`CircuitStates::export_figures`]), written only then. Read from a record of a
    /// release that still carried them.
    #[serde(default, skip_serializing)]
    figures: BTreeMap<String, CircuitFigures>,
    /// While the circuit is down: when its outage will next cross a risk threshold or a
    /// limit, so that the warning comes out then, not at the next ticket event.
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    figures_due: Option<DateTime<Utc>>,
    /// How many faults this circuit has had: the next fault's ordinal, for its ticket id.
    /// Kept when the circuit is deleted, so that a circuit re-created under the same id
    /// never reuses a ticket id.
    #[serde(default)]
    faults_opened: u64,
    /// The root alarm key under which the circuit's ticket was last handed to the incident
    /// stage (so that it can be told when the ticket leaves that incident).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    incident_key: Option<String>,
}

/// A circuit's state read from its changelog record, not yet put back
/// ([`CircuitStates::decode`]).
pub struct DecodedCircuit(CircuitEntry);

/// A circuit's last emitted figures read from their changelog record, not yet put back
/// ([`CircuitStates::decode_figures`]).
pub struct DecodedFigures(BTreeMap<String, CircuitFigures>);

/// Stage 2: per-circuit state, faults, tickets and their timers.
#[derive(Debug, Default, Clone)]
pub struct CircuitStates {
    circuits: BTreeMap<String, CircuitEntry>,
    /// (next due, circuit) for every circuit with a pending timer.
    timers: BTreeSet<(DateTime<Utc>, String)>,
    due_of: BTreeMap<String, DateTime<Utc>>,
    windows: BTreeMap<String, MaintenanceWindow>,
    /// Circuits whose state changed since the last [`CircuitStates::take_dirty`].
    dirty: Changes,
    /// Circuits whose last emitted figures changed since the last
    /// [`CircuitStates::take_figures_dirty`].
    figures_dirty: Changes,
}

impl CircuitStates {
    pub fn new() -> Self {
        Self::default()
    }

    /// States that note no changed circuits (for an engine with no changelog to write).
    pub fn without_changelog() -> Self {
        CircuitStates {
            dirty: Changes::off(),
            figures_dirty: Changes::off(),
            ..Self::default()
        }
    }

    /// The open (or restored, in hold-down) fault of a circuit.
    pub fn fault(&self, circuit_id: &str) -> Option<&Fault> {
        self.circuits.get(circuit_id).and_then(|e| e.fault.as_ref())
    }

    /// All open faults, in circuit order: each circuit's restored tickets that a new fault
    /// superseded, then its current one.
    pub fn faults(&self) -> impl Iterator<Item = &Fault> {
        self.circuits
            .values()
            .flat_map(|e| e.superseded.iter().chain(e.fault.as_ref()))
    }

    pub fn status(&self, circuit_id: &str) -> LineStatus {
        self.circuits
            .get(circuit_id)
            .and_then(|e| e.last_status)
            .unwrap_or(LineStatus::Up)
    }

    /// Fire every timer due at or before `now`.
    pub fn advance(&mut self, now: DateTime<Utc>, policy: &Policy) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some((due, circuit_id)) = self.timers.first().cloned() {
            if due > now {
                break;
            }
            out.extend(self.fire(due, &circuit_id, policy));
        }
        out
    }

    /// Fire the timers of one circuit due at or before `now` (before an input for that
    /// circuit at event time `now`, as the replay's global clock would have).
    pub fn advance_circuit(
        &mut self,
        circuit_id: &str,
        now: DateTime<Utc>,
        policy: &Policy,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(due) = self.due_of.get(circuit_id).copied() {
            if due > now {
                break;
            }
            out.extend(self.fire(due, circuit_id, policy));
        }
        out
    }

    fn fire(&mut self, due: DateTime<Utc>, circuit_id: &str, policy: &Policy) -> Vec<Output> {
        let mut out = Vec::new();
        let circuit_id = circuit_id.to_string();
        {
            self.timers.remove(&(due, circuit_id.clone()));
            self.due_of.remove(&circuit_id);
            let mut figures_due = false;
            if let Some(entry) = self.circuits.get_mut(&circuit_id) {
                for old in &mut entry.superseded {
                    out.extend(old.fire_due(due, policy).into_iter().map(fired));
                }
                if let Some(fault) = entry.fault.as_mut() {
                    // Only what is due at `due`: timers of all circuits fire in time order.
                    out.extend(fault.fire_due(due, policy).into_iter().map(fired));
                }
                close_if_done(entry);
                figures_due = entry.figures_due.is_some_and(|t| t <= due);
            }
            if figures_due {
                out.extend(self.refresh_figures(&circuit_id, due, policy));
            }
            self.reschedule(&circuit_id, policy);
        }
        out
    }

    /// Each ticket event followed by its circuit's SLA figures as of the event (what the
    /// circuit stage emits after every step; the incidents are another stage's). A
    /// reminder changes no fact of the circuit: no figures follow it.
    pub fn with_figures(&mut self, out: Vec<Output>, policy: &Policy) -> Vec<Output> {
        let mut result = Vec::with_capacity(out.len());
        for o in out {
            let figures = match &o {
                Output::Ticket(ev) => Some((o.key(), ev.event_time)),
                _ => None,
            };
            result.push(o);
            if let Some((circuit_id, at)) = figures {
                result.extend(self.refresh_figures(&circuit_id, at, policy));
            }
        }
        result
    }

    /// The circuits whose state changed since the last call (for the changelog).
    pub fn take_dirty(&mut self) -> BTreeSet<String> {
        self.dirty.take()
    }

    /// The circuits whose last emitted figures changed since the last call (for their
    /// changelog record).
    pub fn take_figures_dirty(&mut self) -> BTreeSet<String> {
        self.figures_dirty.take()
    }

    /// The last emitted figures of one circuit, per period, as their changelog record
    /// carries them; `None` when the circuit has no state.
    ///
    /// # Errors
    /// Only if serde_json fails, which the types here do not allow in practice.
    pub fn export_figures(&self, circuit_id: &str) -> serde_json::Result<Option<Vec<u8>>> {
        self.circuits
            .get(circuit_id)
            .map(|e| serde_json::to_vec(&e.figures))
            .transpose()
    }

    /// Put back the last emitted figures of one circuit read from the changelog, before or
    /// after its state record (compaction keeps the latest of each, in either order).
    ///
    /// # Errors
    /// When the record is not figures this version can read.
    pub fn import_figures(&mut self, circuit_id: &str, bytes: &[u8]) -> serde_json::Result<()> {
        let figures = Self::decode_figures(bytes)?;
        self.import_decoded_figures(circuit_id, figures);
        Ok(())
    }

    /// A circuit's last emitted figures as its changelog record carries them, decoded
    /// apart from the states (on another thread during a restore); then
    /// [`CircuitStates::import_decoded_figures`].
    ///
    /// # Errors
    /// When the record is not a figures record this version can read.
    pub fn decode_figures(bytes: &[u8]) -> serde_json::Result<DecodedFigures> {
        serde_json::from_slice(bytes).map(DecodedFigures)
    }

    /// Put back a circuit's figures decoded by [`CircuitStates::decode_figures`].
    pub fn import_decoded_figures(&mut self, circuit_id: &str, figures: DecodedFigures) {
        self.circuits
            .entry(circuit_id.to_string())
            .or_default()
            .figures = figures.0;
        self.figures_dirty.forget(circuit_id);
    }

    /// The state of one circuit as its changelog record carries it, its last emitted
    /// figures aside; `None` when nothing is held (a tombstone).
    ///
    /// # Errors
    /// Only if serde_json fails, which the types here do not allow in practice.
    pub fn export(&self, circuit_id: &str) -> serde_json::Result<Option<Vec<u8>>> {
        self.circuits
            .get(circuit_id)
            .map(serde_json::to_vec)
            .transpose()
    }

    /// Put back the state of one circuit read from the changelog.
    ///
    /// # Errors
    /// When the record is not a circuit state this version can read.
    pub fn import(
        &mut self,
        circuit_id: &str,
        bytes: &[u8],
        policy: &Policy,
    ) -> serde_json::Result<()> {
        let state = Self::decode(bytes)?;
        self.import_decoded(circuit_id, state, policy);
        Ok(())
    }

    /// A circuit's state as its changelog record carries it, decoded apart from the
    /// states (on another thread during a restore); then [`CircuitStates::import_decoded`].
    ///
    /// # Errors
    /// When the record is not a circuit state this version can read.
    pub fn decode(bytes: &[u8]) -> serde_json::Result<DecodedCircuit> {
        serde_json::from_slice(bytes).map(DecodedCircuit)
    }

    /// Put back a circuit's state decoded by [`CircuitStates::decode`].
    pub fn import_decoded(&mut self, circuit_id: &str, state: DecodedCircuit, policy: &Policy) {
        let mut entry = state.0;
        // The figures are a record of their own, read before or after this one; a record
        // of a release that carried them in the state brings its own.
        if entry.figures.is_empty() {
            if let Some(old) = self.circuits.get_mut(circuit_id) {
                entry.figures = std::mem::take(&mut old.figures);
            }
        }
        self.circuits.insert(circuit_id.to_string(), entry);
        self.reschedule(circuit_id, policy);
        self.dirty.forget(circuit_id);
    }

    /// Whether the circuit has state here.
    pub fn contains(&self, circuit_id: &str) -> bool {
        self.circuits.contains_key(circuit_id)
    }

    /// Drop a circuit's state (a tombstone read from the changelog).
    pub fn forget(&mut self, circuit_id: &str) {
        if let Some(old) = self.due_of.remove(circuit_id) {
            self.timers.remove(&(old, circuit_id.to_string()));
        }
        self.circuits.remove(circuit_id);
    }

    /// The ids of the circuits with state.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.circuits.keys().map(String::as_str)
    }

    /// What the query API shows of a circuit: its line state, open ticket and latest year
    /// and month figures, with its customer from `network` where the inventory still has
    /// it. `None` for a circuit with neither state nor inventory record.
    ///
    /// With `now` (the partition's event-time clock), a circuit that is down shows its
    /// figures as of `now`, its outage counted up to then; otherwise the figures last
    /// emitted.
    pub fn view(
        &self,
        circuit_id: &str,
        partition: i32,
        network: &Network,
        policy: &Policy,
        now: Option<DateTime<Utc>>,
    ) -> Option<CircuitView> {
        let entry = self.circuits.get(circuit_id);
        let circuit = network.circuit(circuit_id);
        if entry.is_none() && circuit.is_none() {
            return None;
        }
        // Borrowed: the view clones only the figures it shows.
        let latest = |kind: PeriodKind| {
            entry.and_then(|e| {
                e.figures
                    .values()
                    .filter(|f| label_kind(&f.period) == Some(kind))
                    .max_by(|a, b| a.period.cmp(&b.period))
            })
        };
        let fault = entry.and_then(|e| e.fault.as_ref());
        let ident = entry.and_then(|e| e.ident.as_ref());
        let emitted_as_of = latest(PeriodKind::Year).map(|f| f.as_of);
        let live = now
            .filter(|now| emitted_as_of.is_none_or(|at| *now >= at))
            .and_then(|now| self.figures_as_of(circuit_id, now, policy));
        let (year_to_date, month) = match live {
            Some((year, month)) => (Some(year), Some(month)),
            None => (
                latest(PeriodKind::Year).cloned(),
                latest(PeriodKind::Month).cloned(),
            ),
        };
        let facts = self.facts_snapshot(circuit_id, circuit, policy, year_to_date.as_ref(), now);
        Some(CircuitView {
            circuit_id: circuit_id.to_string(),
            partition,
            in_inventory: circuit.is_some(),
            customer_id: circuit
                .map(|c| c.customer.id.to_string())
                .or_else(|| fault.map(|f| f.customer_id.clone()))
                .or_else(|| ident.map(|(id, _)| id.clone())),
            customer_name: circuit
                .map(|c| c.customer.name.to_string())
                .or_else(|| fault.map(|f| f.customer_name.clone())),
            assurance_level: circuit
                .map(|c| c.assurance_level)
                .or_else(|| ident.map(|(_, level)| *level)),
            line: self.status(circuit_id).into(),
            open_ticket: fault
                .filter(|f| f.status != TicketStatus::Closed)
                .map(|f| TicketView::of(f, entry.and_then(|e| e.incident_key.as_deref()), policy)),
            // A superseded ticket is handed to the incident stage under its own root.
            superseded_tickets: entry
                .map(|e| {
                    e.superseded
                        .iter()
                        .filter(|f| f.status != TicketStatus::Closed)
                        .map(|f| TicketView::of(f, Some(f.root.alarm_key.as_str()), policy))
                        .collect()
                })
                .unwrap_or_default(),
            year_to_date,
            month,
            facts,
        })
    }

    /// What a circuit's figures are computed from, known up to `now`, for figures over any
    /// span (`replay --figures-from/--figures-to`); `None` for a circuit with neither
    /// state nor inventory record.
    pub fn facts(
        &self,
        circuit_id: &str,
        network: &Network,
        policy: &Policy,
        now: DateTime<Utc>,
    ) -> Option<Arc<FactsSnapshot>> {
        self.facts_snapshot(
            circuit_id,
            network.circuit(circuit_id),
            policy,
            None,
            Some(now),
        )
    }

    /// What the circuit's figures are computed from, owned, for figures over any span
    /// later (the query API): its faults (an ongoing down span open-ended), the excluded
    /// time, and the rules of its level; known up to the latest of `year`'s `asOf` and
    /// `now`. The customer and level are those of its figures (of its last fault), else
    /// the inventory's; `None` without either.
    fn facts_snapshot(
        &self,
        circuit_id: &str,
        circuit: Option<CircuitRef<'_>>,
        policy: &Policy,
        year: Option<&CircuitFigures>,
        now: Option<DateTime<Utc>>,
    ) -> Option<Arc<FactsSnapshot>> {
        let entry = self.circuits.get(circuit_id);
        let fault = entry.and_then(|e| e.fault.as_ref());
        let (customer_id, level) = fault
            .map(|f| (f.customer_id.clone(), f.assurance_level))
            .or_else(|| entry.and_then(|e| e.ident.clone()))
            .or_else(|| circuit.map(|c| (c.customer.id.to_string(), c.assurance_level)))?;
        let mut faults = Vec::new();
        let mut excluded = Vec::new();
        if let Some(e) = entry {
            // Open-ended: the figures clip every fact at their own `as_of`.
            faults = history_as_of(e, DateTime::<Utc>::MAX_UTC);
            excluded.clone_from(&e.excluded);
            for f in e.superseded.iter().chain(fault) {
                faults.push(fault_facts(f, DateTime::<Utc>::MAX_UTC));
                excluded.extend(excluded_spans(f));
            }
        }
        Some(Arc::new(FactsSnapshot {
            circuit_id: circuit_id.to_string(),
            customer_id: Some(customer_id),
            assurance_level: level,
            rules: Rules::of(policy, level),
            faults,
            excluded,
            open_fault: fault.is_some_and(Fault::is_down)
                || entry.is_some_and(|e| e.outage_open_of.is_some()),
            as_of: year.map(|f| f.as_of).into_iter().chain(now).max(),
        }))
    }

    /// Number of circuits with state.
    pub fn len(&self) -> usize {
        self.circuits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.circuits.is_empty()
    }

    /// Record that the circuit's ticket is now handed to the incident stage under `key`;
    /// returns the key it was handed under before, if different.
    ///
    /// An event of a superseded ticket (restored, waiting for its post-restore
    /// obligations while a newer fault of the circuit is open) is handed under its own
    /// root and changes nothing: the circuit's current ticket stays where it was handed,
    /// and the old one's root incident is not told that a ticket left.
    pub fn hand_to_incident(&mut self, circuit_id: &str, key: &str) -> Option<String> {
        let entry = self.circuits.get_mut(circuit_id)?;
        if entry.incident_key.as_deref() == Some(key) {
            return None;
        }
        let current_root = entry.fault.as_ref().map(|f| f.root.alarm_key.as_str());
        if current_root.is_some_and(|root| root != key)
            && entry.superseded.iter().any(|f| f.root.alarm_key == key)
        {
            return None;
        }
        self.dirty.note(circuit_id);
        entry.incident_key.replace(key.to_string())
    }

    /// Apply one impact from the fan-out.
    pub fn on_impact(&mut self, impact: Impact, network: &Network, policy: &Policy) -> Vec<Output> {
        let Some(circuit) = network.circuit(&impact.circuit_id) else {
            return Vec::new(); // the circuit was deleted meanwhile
        };
        let at = impact.at;
        let circuit_id = impact.circuit_id.clone();
        let entry = self.circuits.entry(circuit_id.clone()).or_default();
        if !entry.impacts.apply(impact) {
            return Vec::new();
        }
        let (mut out, outage_ended) = evaluate(entry, circuit, at, &self.windows, policy);
        if let Some(up) = outage_ended {
            out.extend(self.refresh_figures(&circuit_id, up, policy));
        }
        self.settle(&circuit_id, policy);
        out
    }

    /// The inventory changed: re-check the circuit's impacts against its new routes
    /// (hits from the fan-out for the new routes arrive through [`Self::on_impact`]).
    pub fn on_inventory(
        &mut self,
        circuit_id: &str,
        network: &Network,
        now: DateTime<Utc>,
        policy: &Policy,
    ) -> Vec<Output> {
        let mut out = Vec::new();
        match network.circuit(circuit_id) {
            Some(circuit) => {
                if let Some(entry) = self.circuits.get_mut(circuit_id) {
                    entry.impacts.retain_on(circuit_id, network);
                    let (events, outage_ended) =
                        evaluate(entry, circuit, now, &self.windows, policy);
                    out.extend(events);
                    if let Some(up) = outage_ended {
                        out.extend(self.refresh_figures(circuit_id, up, policy));
                    }
                }
            }
            None => {
                if let Some(mut entry) = self.circuits.remove(circuit_id) {
                    for fault in entry.superseded.iter_mut().chain(entry.fault.as_mut()) {
                        if fault.status != crate::ticket::TicketStatus::Closed {
                            out.extend(
                                fault
                                    .close(SlaEvent::CircuitDeleted, now, policy)
                                    .map(ticket),
                            );
                        }
                    }
                    if entry.faults_opened > 0 {
                        let kept = CircuitEntry {
                            faults_opened: entry.faults_opened,
                            ..CircuitEntry::default()
                        };
                        self.circuits.insert(circuit_id.to_string(), kept);
                    }
                }
            }
        }
        self.settle(circuit_id, policy);
        out
    }

    /// A command from the ticketing system.
    ///
    /// # Errors
    /// [`RejectReason::Invalid`] (field `ticketId`) when the circuit has no open ticket of
    /// that id.
    pub fn on_command(
        &mut self,
        cmd: &TicketCommand,
        policy: &Policy,
    ) -> Result<Vec<Output>, RejectReason> {
        let unknown = || RejectReason::Invalid {
            field: "ticketId".into(),
            problem: format!(
                "{:?} is not an open ticket of circuit {:?}",
                cmd.ticket_id, cmd.circuit_id
            ),
        };
        let entry = self.circuits.get_mut(&cmd.circuit_id).ok_or_else(unknown)?;
        let current = entry
            .fault
            .as_ref()
            .is_some_and(|f| f.ticket_id == cmd.ticket_id);
        let fault = if current {
            entry.fault.as_mut()
        } else {
            entry
                .superseded
                .iter_mut()
                .find(|f| f.ticket_id == cmd.ticket_id)
        }
        .ok_or_else(unknown)?;
        // An operator cannot act on a ticket before it existed: such a date is a clock or
        // a form gone wrong, and applying it would date events (and figures) before the
        // fault.
        let opened = fault.opened_at();
        if cmd.at < opened {
            return Err(RejectReason::Inconsistent {
                detail: format!(
                    "the command is dated {}, before ticket {:?} was opened at {}",
                    crate::rejection::fmt_time(cmd.at),
                    cmd.ticket_id,
                    crate::rejection::fmt_time(opened)
                ),
            });
        }
        let event = match cmd.action {
            CommandAction::Acknowledge => fault.acknowledge(cmd.at, policy),
            CommandAction::Reclassify => {
                let cause = cmd.cause.ok_or_else(|| RejectReason::MissingField {
                    field: "cause".into(),
                })?;
                fault.reclassify(cause, cmd.at, policy)
            }
            CommandAction::Close => {
                let still_down = fault.is_down();
                let ev = fault.close(SlaEvent::ManuallyClosed, cmd.at, policy);
                if current {
                    entry.suppressed_until_up = still_down;
                    if still_down {
                        entry.outage_open_of = Some(opened);
                    }
                }
                ev
            }
            CommandAction::WrittenReportSent => {
                if cmd.cause.is_some() {
                    return Err(RejectReason::Invalid {
                        field: "cause".into(),
                        problem: "only a reclassify command carries a cause".into(),
                    });
                }
                fault
                    .report_sent(cmd.at, policy)
                    .map_err(|detail| RejectReason::Inconsistent { detail })?
            }
        };
        close_if_done(entry);
        let circuit_id = cmd.circuit_id.clone();
        self.settle(&circuit_id, policy);
        Ok(event.into_iter().map(ticket).collect())
    }

    /// Remember a maintenance window: faults of the circuits it covers exclude its time
    /// from their restoration clock (when its notice was early enough), including faults
    /// already open.
    ///
    /// # Errors
    /// [`RejectReason::Inconsistent`] when the window ends before it starts.
    pub fn on_window(
        &mut self,
        window: MaintenanceWindow,
        network: &Network,
        policy: &Policy,
    ) -> Result<Vec<Output>, RejectReason> {
        if window.end <= window.start {
            return Err(RejectReason::Inconsistent {
                detail: format!(
                    "maintenance window {:?} ends before it starts",
                    window.window_id
                ),
            });
        }
        let mut out = Vec::new();
        let mut touched = Vec::new();
        for (circuit_id, entry) in &mut self.circuits {
            let (Some(fault), Some(circuit)) = (entry.fault.as_mut(), network.circuit(circuit_id))
            else {
                continue;
            };
            if fault.status == crate::ticket::TicketStatus::Closed {
                continue;
            }
            let at = window.notice_given_at.max(fault.opened_at());
            // A window the fault noted may have moved: it follows, or drops out when it
            // no longer covers the circuit during the fault.
            let event = if window.end > fault.opened_at() && window.affects(circuit) {
                let work = PlannedWork::from_window(&window, circuit.customer.level, policy);
                fault.note_planned_work(work, at, policy)
            } else {
                fault.drop_planned_work(&window.window_id, at, policy)
            };
            if let Some(ev) = event {
                out.push(ticket(ev));
                touched.push(circuit_id.clone());
            }
        }
        for circuit_id in touched {
            self.reschedule(&circuit_id, policy);
        }
        self.windows.insert(window.window_id.clone(), window);
        Ok(out)
    }

    /// A down circuit's year and month figures as of `as_of` (at or after its last event),
    /// as [`CircuitStates::refresh_figures`] would compute them, without changing any state:
    /// what the NOC sees of an outage's growing cost between two figure records. `None`
    /// for a circuit that is not down.
    pub fn figures_as_of(
        &self,
        circuit_id: &str,
        as_of: DateTime<Utc>,
        policy: &Policy,
    ) -> Option<(CircuitFigures, CircuitFigures)> {
        let entry = self.circuits.get(circuit_id)?;
        let fault = entry.fault.as_ref().filter(|f| f.is_down());
        // Down with its ticket closed by hand: the outage still counts.
        let (customer_id, level) = match (fault, &entry.ident) {
            (Some(f), _) => (f.customer_id.as_str(), f.assurance_level),
            (None, Some((customer, level))) if entry.outage_open_of.is_some() => {
                (customer.as_str(), *level)
            }
            _ => return None,
        };
        let mut faults = history_as_of(entry, as_of);
        let mut excluded = entry.excluded.clone();
        for f in entry.superseded.iter().chain(fault) {
            faults.push(fault_facts(f, as_of));
            excluded.extend(excluded_spans(f));
        }
        let facts = CircuitFacts {
            circuit_id,
            customer_id: Some(customer_id),
            assurance_level: level,
            faults: &faults,
            excluded: &excluded,
            open_fault: true,
        };
        let tz = policy.time_zone();
        let year = Period::containing(PeriodKind::Year, as_of, tz);
        let month = Period::containing(PeriodKind::Month, as_of, tz);
        Some((
            circuit_figures(policy, &facts, &year, as_of),
            circuit_figures(policy, &facts, &month, as_of),
        ))
    }

    /// Recompute the SLA figures of a circuit as of `as_of` for the year and the month (and
    /// for the year and month its current or last fault started in, when they differ); emit
    /// those that changed, and a risk warning when a status got worse. The year is the
    /// assessment period of the annual limits and of the availability targets; months are
    /// counted for dashboards but have no limit of their own.
    pub fn refresh_figures(
        &mut self,
        circuit_id: &str,
        as_of: DateTime<Utc>,
        policy: &Policy,
    ) -> Vec<Output> {
        let Some(entry) = self.circuits.get_mut(circuit_id) else {
            return Vec::new();
        };
        if let Some(f) = &entry.fault {
            entry.ident = Some((f.customer_id.clone(), f.assurance_level));
        }
        let Some((customer_id, level)) = entry.ident.clone() else {
            return Vec::new();
        };
        // Figures never go back in time: a step's ticket events are followed by their
        // figures after the step's figure timers have fired, and a late command or alarm
        // carries an earlier event time. Figures as of an earlier time would replace newer
        // ones already published (and warned about), so that the next refresh would warn
        // again from the older status; they are computed as of the last figures instead,
        // with every fact known now.
        let as_of = entry
            .figures
            .values()
            .map(|f| f.as_of)
            .max()
            .map_or(as_of, |last| last.max(as_of));
        let year_start = Period::containing(PeriodKind::Year, as_of, policy.time_zone()).start;
        let last_year_start = Period::containing(
            PeriodKind::Year,
            year_start - Duration::seconds(1),
            policy.time_zone(),
        )
        .start;
        entry.history.retain(|f| {
            f.down.iter().any(|d| d.end >= last_year_start) || f.started_at >= last_year_start
        });
        // The open faults as of `as_of`: a fault opened later is not yet there. The
        // runtime fires the timers due before an input, applies the input, and only then
        // records the figures of the step's ticket events, each as of its event; the
        // replay records a timer event's figures before it reads the next input. A fault
        // the input opened must not count in the figures of the timer's event (issue 15,
        // item 8: with it, a day that the timer's event finished was neither computed
        // nor recorded final). Its ticket superseded the last one, which was the
        // circuit's current fault then.
        let mut superseded: Vec<&Fault> = entry
            .superseded
            .iter()
            .filter(|f| f.opened_at() <= as_of)
            .collect();
        superseded.sort_by_key(|f| f.opened_at());
        let current = match &entry.fault {
            Some(f) if f.opened_at() <= as_of => Some(f),
            Some(_) => superseded.pop(),
            None => None,
        };
        let mut faults = history_as_of(entry, as_of);
        let mut excluded = entry.excluded.clone();
        let mut started = vec![as_of];
        for f in &superseded {
            faults.push(fault_facts(f, as_of));
            excluded.extend(excluded_spans(f));
        }
        if let Some(f) = current {
            faults.push(fault_facts(f, as_of));
            excluded.extend(excluded_spans(f));
            started.push(f.opened_at());
        } else if let Some(last) = entry.history.last() {
            started.push(last.started_at);
        }
        let facts = CircuitFacts {
            circuit_id,
            customer_id: Some(&customer_id),
            assurance_level: level,
            faults: &faults,
            excluded: &excluded,
            open_fault: current.is_some_and(Fault::is_down) || entry.outage_open_of.is_some(),
        };
        // Only an outage that counts grows towards a threshold: a customer-caused or
        // interconnection fault needs no figure timer (its figures do not change).
        let outage_grows = current.is_some_and(|f| f.is_down() && f.cause == FaultCause::Network)
            || entry.outage_open_of.is_some_and(|started| {
                entry
                    .history
                    .iter()
                    .any(|f| f.started_at == started && f.counted)
            });
        // The periods whose figures may have changed: those of the figures' time and of
        // the start of the current (or last) fault, and every period the time since the
        // start of an outage still counting touches (a day between the first and the last
        // of a three-day outage). Years and months first, as before day and quarter
        // records existed (issue 15, item 8): the order of those records is unchanged.
        let counting = current
            .map(|f| f.opened_at())
            .or(entry.outage_open_of)
            .map(|start| Span::new(start, as_of));
        let mut periods: Vec<Period> = Vec::new();
        for kind in [
            PeriodKind::Year,
            PeriodKind::Month,
            PeriodKind::Quarter,
            PeriodKind::Day,
        ] {
            let tz = policy.time_zone();
            let touched = counting
                .map(|span| periods_overlapping(kind, span, tz))
                .unwrap_or_default();
            for p in started
                .iter()
                .map(|t| Period::containing(kind, *t, tz))
                .chain(touched)
            {
                if !periods.contains(&p) {
                    periods.push(p);
                }
            }
        }
        // The figure timer: the next crossing of a threshold or limit by the ongoing
        // outage, in every period it counts in. Only years have limits; an outage that
        // goes on past New Year counts in the next year from its first second, so that
        // year's crossings are timed too (issue 15, defect 2), not left to the next ticket
        // event. Once the timer fires in the new year, that year is the current one.
        let crossing_due = if outage_grows {
            let year = Period::containing(PeriodKind::Year, as_of, policy.time_zone());
            let following = year.next(policy.time_zone());
            std::iter::once(year)
                .chain(following)
                .filter_map(|p| next_crossing(policy, &facts, &p, as_of))
                .min()
        } else {
            None
        };
        let mut out = Vec::new();
        let mut same = Vec::new();
        let mut recorded = false;
        let computed: BTreeSet<String> = periods.iter().map(|p| p.label.clone()).collect();
        for period in periods {
            let new = circuit_figures(policy, &facts, &period, as_of);
            let old = entry.figures.get(&new.period);
            let unchanged = old.is_some_and(|o| o.same_apart_from_as_of(&new));
            if unchanged {
                same.push(new.period);
                continue;
            }
            if let Some(w) = warning_between(old, &new) {
                out.push(Output::Warning(Warning::Risk(w)));
            }
            out.push(Output::Figures(Box::new(new.clone())));
            entry.figures.insert(new.period.clone(), new);
            self.figures_dirty.note(circuit_id);
            recorded = true;
        }
        // When some of the circuit's figures were recorded, those of the periods that did
        // not change hold as of the same time: the state (and the query API's view of an
        // up circuit, built from it) is never older than the circuit's last record. Not
        // recorded again: only their `asOf` would differ.
        if recorded {
            for label in same {
                if let Some(f) = entry.figures.get_mut(&label) {
                    f.as_of = f.as_of.max(as_of);
                }
            }
        }
        entry.figures_due = crossing_due;
        // Keep the figures of this and last year only; of the days, only those just
        // computed (a day no later refresh computes again is final, and a circuit down on
        // many days would otherwise carry them all in its state record).
        let keep = Period::containing(PeriodKind::Year, last_year_start, policy.time_zone()).label;
        let kept = entry.figures.len();
        entry.figures.retain(|label, _| {
            label.as_str() >= keep.as_str()
                && (label_kind(label) != Some(PeriodKind::Day) || computed.contains(label))
        });
        if entry.figures.len() != kept {
            self.figures_dirty.note(circuit_id);
        }
        self.reschedule(circuit_id, policy);
        out
    }

    /// A maintenance window was called off at `at` (engine time): forget it, and the open
    /// faults that noted it no longer exclude its time (their deadlines move back; their
    /// figures count it again), each with a ticket event.
    pub fn withdraw_window(
        &mut self,
        window_id: &str,
        at: DateTime<Utc>,
        policy: &Policy,
    ) -> Vec<Output> {
        self.windows.remove(window_id);
        let mut out = Vec::new();
        let mut touched = Vec::new();
        for (circuit_id, entry) in &mut self.circuits {
            let Some(fault) = entry
                .fault
                .as_mut()
                .filter(|f| f.status != crate::ticket::TicketStatus::Closed)
            else {
                continue;
            };
            let when = at.max(fault.opened_at());
            if let Some(ev) = fault.drop_planned_work(window_id, when, policy) {
                out.push(ticket(ev));
                touched.push(circuit_id.clone());
            }
        }
        for circuit_id in touched {
            self.reschedule(&circuit_id, policy);
        }
        out
    }

    /// Drop circuits with nothing left to remember and re-index the circuit's timer.
    fn settle(&mut self, circuit_id: &str, policy: &Policy) {
        if let Some(e) = self.circuits.get(circuit_id) {
            if e.fault.is_none()
                && e.superseded.is_empty()
                && e.impacts.is_empty()
                && !e.suppressed_until_up
                && e.history.is_empty()
                && e.faults_opened == 0
            {
                self.circuits.remove(circuit_id);
            }
        }
        self.reschedule(circuit_id, policy);
    }

    fn reschedule(&mut self, circuit_id: &str, policy: &Policy) {
        self.dirty.note(circuit_id);
        let next = self.circuits.get(circuit_id).and_then(|e| {
            e.superseded
                .iter()
                .chain(e.fault.as_ref())
                .filter_map(|f| f.next_due(policy))
                .chain(e.figures_due)
                .min()
        });
        if self.due_of.get(circuit_id).copied() == next {
            return;
        }
        if let Some(old) = self.due_of.remove(circuit_id) {
            self.timers.remove(&(old, circuit_id.to_string()));
        }
        if let Some(due) = next {
            self.timers.insert((due, circuit_id.to_string()));
            self.due_of.insert(circuit_id.to_string(), due);
        }
    }
}

fn ticket(e: TicketEvent) -> Output {
    Output::Ticket(Box::new(e))
}

fn fired(f: Fired) -> Output {
    match f {
        Fired::Ticket(e) => Output::Ticket(e),
        Fired::Reminder(r) => Output::Reminder(r),
    }
}

/// Move closed faults (the current one and superseded ones) into the circuit's history
/// (for the SLA figures).
fn close_if_done(entry: &mut CircuitEntry) {
    let closed = |f: &Fault| f.status == crate::ticket::TicketStatus::Closed;
    let mut done = Vec::new();
    if entry.fault.as_ref().is_some_and(closed) {
        done.extend(entry.fault.take());
    }
    if entry.superseded.iter().any(closed) {
        let (finished, open): (Vec<Fault>, Vec<Fault>) = std::mem::take(&mut entry.superseded)
            .into_iter()
            .partition(closed);
        entry.superseded = open;
        done.extend(finished);
    }
    for fault in done {
        entry.excluded = union(&[entry.excluded.clone(), excluded_spans(&fault)].concat());
        entry.history.push(fault_facts(
            &fault,
            fault.restored_at().unwrap_or(fault.opened_at()),
        ));
    }
    // In the order the faults started: the last is the latest fault.
    entry.history.sort_by_key(|f| f.started_at);
}

fn excluded_spans(fault: &Fault) -> Vec<Span> {
    fault
        .excluded()
        .into_iter()
        .map(|(start, end)| Span::new(start, end))
        .collect()
}

/// The circuit's closed faults as the SLA figures see them at `as_of`: the fault whose
/// ticket was closed by hand while the circuit was down counts its outage up to `as_of`
/// until the line is back.
fn history_as_of(entry: &CircuitEntry, as_of: DateTime<Utc>) -> Vec<FaultFacts> {
    let mut faults = entry.history.clone();
    if let Some(started) = entry.outage_open_of {
        if let Some(last) = faults
            .iter_mut()
            .rev()
            .find(|f| f.started_at == started)
            .and_then(|f| f.down.last_mut())
        {
            last.end = last.end.max(as_of);
        }
    }
    faults
}

/// A fault as the SLA figures see it; an interval still open is closed at `as_of`.
fn fault_facts(fault: &Fault, as_of: DateTime<Utc>) -> FaultFacts {
    FaultFacts {
        started_at: fault.opened_at(),
        down: fault
            .intervals
            .iter()
            .map(|i| Span::new(i.start, i.end.unwrap_or(as_of.max(i.start))))
            .collect(),
        counted: fault.cause == FaultCause::Network,
    }
}

/// Re-decide a circuit's status after a change at event time `at`, and move its fault.
/// With the events, when the outage of a fault closed by hand while down ended (no ticket
/// event says so: the caller refreshes the figures then).
fn evaluate(
    entry: &mut CircuitEntry,
    circuit: CircuitRef<'_>,
    at: DateTime<Utc>,
    windows: &BTreeMap<String, MaintenanceWindow>,
    policy: &Policy,
) -> (Vec<Output>, Option<DateTime<Utc>>) {
    let mut out = Vec::new();
    let mut outage_ended = None;
    let status = entry.impacts.status(circuit.routes.len());
    let changed_kind = entry
        .last_status
        .is_none_or(|s| std::mem::discriminant(&s) != std::mem::discriminant(&status));
    if changed_kind && !(entry.last_status.is_none() && status == LineStatus::Up) {
        out.push(Output::Line(LineEvent {
            circuit_id: circuit.circuit_id.to_string(),
            at,
            status,
        }));
    }
    entry.last_status = Some(status);

    match status {
        LineStatus::Down { since } => {
            if entry.suppressed_until_up {
                return (out, outage_ended);
            }
            let Some(root) = entry.impacts.root_cause().cloned() else {
                return (out, outage_ended);
            };
            let root = &root;
            match entry.fault.as_mut() {
                Some(fault) if fault.is_down() => {
                    out.extend(fault.revise_start(since, at, policy).map(ticket));
                    out.extend(fault.revise_root(root, at, policy).map(ticket));
                }
                Some(fault) if fault.within_hold_down(since, policy) => {
                    out.extend(fault.reopen(since, policy).map(ticket));
                    out.extend(fault.revise_root(root, at, policy).map(ticket));
                }
                _ => {
                    if let Some(old) = entry.fault.as_mut() {
                        // Restored and past its hold-down: what was due of it comes first.
                        out.extend(old.fire_due(since, policy).into_iter().map(fired));
                    }
                    // A closed old fault joins the history. One still waiting for its
                    // post-restore feedback is superseded, not closed: the feedback is
                    // owed whatever happens next (issue 15, defect 3); it closes when the
                    // feedback is due, as it would have.
                    close_if_done(entry);
                    entry.superseded.extend(entry.fault.take());
                    entry.faults_opened += 1;
                    let mut fault = Fault::open(circuit, entry.faults_opened, since, root, policy);
                    for work in planned_works_for(circuit, since, windows, policy) {
                        fault.add_planned_work(work);
                    }
                    out.push(ticket(fault.created(since, policy)));
                    entry.fault = Some(fault);
                }
            }
        }
        LineStatus::Up | LineStatus::Unprotected { .. } => {
            // The line is back (on one route is back: the service is restored), so a
            // ticket closed by hand while down no longer holds back a new fault: down
            // again is a new failure with a new ticket, as its outage ended here (issue
            // 15, item 6; before, a protected circuit stayed suppressed until fully up,
            // and a second spell counted neither as a failure nor as outage).
            entry.suppressed_until_up = false;
            // Back up at the latest clear, in whatever order the clears arrived.
            let at = match (status, entry.impacts.latest_clear()) {
                (LineStatus::Up, Some(latest)) => at.max(latest),
                _ => at,
            };
            if let Some(fault) = entry.fault.as_mut().filter(|f| f.is_down()) {
                out.extend(fault.restore(at, policy).map(ticket));
            }
            if let Some(started) = entry.outage_open_of.take() {
                // The fault closed by hand while down: its outage ends now.
                if let Some(last) = entry
                    .history
                    .iter_mut()
                    .rev()
                    .find(|f| f.started_at == started)
                    .and_then(|f| f.down.last_mut())
                {
                    last.end = last.end.max(at);
                }
                outage_ended = Some(at);
            }
        }
    }
    (out, outage_ended)
}

/// Every maintenance window covering `circuit` that has not ended by `since`.
fn planned_works_for(
    circuit: CircuitRef<'_>,
    since: DateTime<Utc>,
    windows: &BTreeMap<String, MaintenanceWindow>,
    policy: &Policy,
) -> Vec<PlannedWork> {
    windows
        .values()
        .filter(|w| w.end > since && w.affects(circuit))
        .map(|w| PlannedWork::from_window(w, circuit.customer.level, policy))
        .collect()
}

/// Both stages in one process, over one inventory replica.
#[derive(Debug, Clone)]
pub struct Engine {
    policy: Policy,
    network: Network,
    fanout: FanOut,
    states: CircuitStates,
    incidents: IncidentBook,
    /// Whether the incidents take the ticket events of one instant as one group, whatever
    /// input or timer they came from ([`Engine::by_instant`]), as the Kafka runtime's
    /// incident stage does.
    by_instant: bool,
    /// With `by_instant`: the facts of the instant not yet handed to the incidents, and
    /// that instant.
    held: Vec<TicketFacts>,
    held_at: Option<DateTime<Utc>>,
}

/// One input to the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Alarm(Alarm),
    Inventory(InventoryChange),
    Maintenance(MaintenanceWindow),
    /// A maintenance window was called off (a tombstone on its compacted topic). Open
    /// faults that noted it no longer exclude its time.
    CancelWindow {
        window_id: String,
    },
    Command(TicketCommand),
}

/// The circuits a window covers whose customers were not told early enough, if any.
pub fn late_notice(
    window: &MaintenanceWindow,
    network: &Network,
    policy: &Policy,
) -> Option<LateNotice> {
    let mut covered: BTreeSet<&str> = window.circuits.iter().map(String::as_str).collect();
    for object in &window.objects {
        covered.extend(network.circuits_on(object).map(|(c, _)| c));
    }
    let mut late = Vec::new();
    let mut compliant_circuits = 0;
    for circuit in covered.into_iter().filter_map(|c| network.circuit(c)) {
        let notice = window.notice_check(circuit.customer.level, policy);
        if notice.compliant {
            compliant_circuits += 1;
        } else {
            late.push(LateCircuit {
                circuit_id: circuit.circuit_id.to_string(),
                customer_id: circuit.customer.id.to_string(),
                customer_level: circuit.customer.level,
                notice,
            });
        }
    }
    (!late.is_empty()).then(|| LateNotice {
        window_id: window.window_id.clone(),
        start: window.start,
        end: window.end,
        notice_given_at: window.notice_given_at,
        late,
        compliant_circuits,
    })
}

impl Engine {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            network: Network::new(),
            fanout: FanOut::without_changelog(),
            states: CircuitStates::without_changelog(),
            incidents: IncidentBook::new(crate::incident::DEFAULT_MIN_CIRCUITS).without_changelog(),
            by_instant: false,
            held: Vec::new(),
            held_at: None,
        }
    }

    /// An engine whose incidents take the ticket events of one instant as one group,
    /// across inputs and timers: what the Kafka runtime's incident stage does, which
    /// releases the facts of the circuit partitions by event time, every fact of an
    /// instant at once. `replay` runs so, so that its incident records, their `sequence`
    /// and `eventId`, and the parent tickets' events are the run's. The incidents of an
    /// instant come out when the engine moves past it ([`Engine::advance`] to a later time,
    /// or a ticket event of a later time) or at [`Engine::finish`].
    pub fn by_instant(mut self) -> Self {
        self.by_instant = true;
        self
    }

    /// The incident records still held for the last instant (see [`Engine::by_instant`]);
    /// nothing otherwise.
    pub fn finish(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        self.flush_held(&mut out);
        out
    }

    fn flush_held(&mut self, out: &mut Vec<Output>) {
        self.held_at = None;
        let mut held = std::mem::take(&mut self.held);
        self.flush_incidents(&mut held, out);
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn states(&self) -> &CircuitStates {
        &self.states
    }

    /// The incidents currently open or restored.
    pub fn incidents(&self) -> &IncidentBook {
        &self.incidents
    }

    /// Fire every timer due at or before `now`.
    pub fn advance(&mut self, now: DateTime<Utc>) -> Vec<Output> {
        let mut held = Vec::new();
        if self.held_at.is_some_and(|t| t < now) {
            self.flush_held(&mut held);
        }
        let out = self.states.advance(now, &self.policy);
        held.extend(self.follow_tickets(out, true));
        held
    }

    /// What follows from ticket events: each event's circuit's SLA figures as of the
    /// event, and the incidents. Incidents take the ticket events in groups: one per input
    /// (`by_time` false), or one per due time for timer events (`by_time` true), so that
    /// the grouping, and with it the incident records, does not depend on how often the
    /// runtime advances the clock.
    fn follow_tickets(&mut self, out: Vec<Output>, by_time: bool) -> Vec<Output> {
        if self.by_instant {
            return self.follow_tickets_by_instant(out);
        }
        let mut result = Vec::with_capacity(out.len());
        let mut group: Vec<TicketFacts> = Vec::new();
        let mut group_time = None;
        for o in out {
            let Output::Ticket(ev) = &o else {
                result.push(o);
                continue;
            };
            let at = ev.event_time;
            if by_time && group_time.is_some_and(|t| t != at) {
                self.flush_incidents(&mut group, &mut result);
            }
            group_time = Some(at);
            group.push(TicketFacts::from_event(ev));
            let circuit_id = o.key();
            result.push(o);
            result.extend(self.states.refresh_figures(&circuit_id, at, &self.policy));
        }
        self.flush_incidents(&mut group, &mut result);
        result
    }

    /// [`Engine::follow_tickets`] of an engine [`Engine::by_instant`]: the facts wait
    /// for the end of their instant.
    fn follow_tickets_by_instant(&mut self, out: Vec<Output>) -> Vec<Output> {
        let mut result = Vec::with_capacity(out.len());
        for o in out {
            let Output::Ticket(ev) = &o else {
                result.push(o);
                continue;
            };
            let at = ev.event_time;
            if self.held_at.is_some_and(|t| t != at) {
                self.flush_held(&mut result);
            }
            self.held_at = Some(at);
            self.held.push(TicketFacts::from_event(ev));
            let circuit_id = o.key();
            result.push(o);
            result.extend(self.states.refresh_figures(&circuit_id, at, &self.policy));
        }
        result
    }

    fn flush_incidents(&mut self, group: &mut Vec<TicketFacts>, out: &mut Vec<Output>) {
        if group.is_empty() {
            return;
        }
        out.extend(
            self.incidents
                .on_tickets(std::mem::take(group))
                .into_iter()
                .flat_map(IncidentEvent::into_parts)
                .map(|i| Output::Incident(Box::new(i))),
        );
        out.extend(
            self.incidents
                .take_ticket_events()
                .into_iter()
                .map(|t| Output::ParentTicket(Box::new(t))),
        );
    }

    /// Apply one input at engine time `now`. Call [`Self::advance`] with `now` first, so
    /// that timer events due before the input come out before the input's own events.
    ///
    /// # Errors
    /// A [`RejectReason`] when the input is well-formed but cannot be acted on (an alarm
    /// from too far in the future, a command for a ticket that is not open); the engine's
    /// state is then unchanged.
    pub fn handle(
        &mut self,
        input: Input,
        now: DateTime<Utc>,
    ) -> Result<Vec<Output>, RejectReason> {
        let mut out = Vec::new();
        match input {
            Input::Alarm(alarm) => {
                check_not_in_future(&alarm, now, self.policy.max_future_skew())?;
                for impact in self.fanout.on_alarm(&alarm, &self.network, &self.policy) {
                    out.extend(self.states.on_impact(impact, &self.network, &self.policy));
                }
            }
            Input::Inventory(change) => {
                let circuit_id = match &change {
                    InventoryChange::Upsert(c) => c.circuit_id.clone(),
                    InventoryChange::Delete { circuit_id } => circuit_id.clone(),
                };
                self.network.apply(change);
                out.extend(
                    self.states
                        .on_inventory(&circuit_id, &self.network, now, &self.policy),
                );
                if let Some(circuit) = self.network.circuit(&circuit_id) {
                    for impact in self.fanout.on_circuit_changed(circuit, &self.network, now) {
                        out.extend(self.states.on_impact(impact, &self.network, &self.policy));
                    }
                }
            }
            Input::Maintenance(window) => {
                let notice = late_notice(&window, &self.network, &self.policy);
                out.extend(self.states.on_window(window, &self.network, &self.policy)?);
                out.extend(notice.map(|n| Output::Warning(Warning::LateNotice(n))));
            }
            Input::CancelWindow { window_id } => {
                out.extend(self.states.withdraw_window(&window_id, now, &self.policy));
            }
            Input::Command(cmd) => {
                let skew = self.policy.max_future_skew();
                if now
                    .checked_add_signed(skew)
                    .is_some_and(|limit| cmd.at > limit)
                {
                    return Err(RejectReason::future_time("command time", cmd.at, now, skew));
                }
                out.extend(self.states.on_command(&cmd, &self.policy)?)
            }
        }
        Ok(self.follow_tickets(out, false))
    }
}
