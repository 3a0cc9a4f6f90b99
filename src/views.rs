//! What the NOC and SLA managers look at: per-circuit views of the committed state (line
//! state, open ticket with its deadlines, year and month figures) and the incidents, kept
//! in concurrent maps that the circuit and incident stages write after each commit and the
//! query API reads. Pure: no Kafka, no clock (the caller passes `now` where it matters).
//!
//! The maps hold only the partitions this instance owns; which instance owns the others is
//! the runtime's business ([`crate::kafka`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::Serialize;

use crate::correlation::LineStatus;
use crate::incident::{IncidentEvent, IncidentStatus};
use crate::levels::{AssuranceLevel, CustomerLevel};
use crate::policy::Policy;
use crate::sla::{CircuitFigures, FactsSnapshot, Status};
use crate::ticket::{Fault, TicketStatus};

/// The deadline a ticket's team must meet next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum DeadlineKind {
    /// Accept (acknowledge) the ticket.
    Accept,
    /// Restore the service.
    Restore,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deadline {
    pub kind: DeadlineKind,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RootRef {
    pub object: String,
    pub probable_cause: String,
}

/// An open ticket as the NOC sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketView {
    pub ticket_id: String,
    pub circuit_id: String,
    pub customer_id: String,
    pub customer_name: String,
    pub customer_level: CustomerLevel,
    pub assurance_level: AssuranceLevel,
    pub status: TicketStatus,
    pub lead_team: String,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub opened_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub acknowledged_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub accept_by: DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub restore_by: DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub at_risk_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub restored_at: Option<DateTime<Utc>>,
    /// When the written fault report is due, once restored, for customer levels that get
    /// one unasked (004 table 7-4), while it is owed; `None` otherwise.
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub written_report_by: Option<DateTime<Utc>>,
    pub down: bool,
    pub clock_runs: bool,
    pub at_risk: bool,
    pub breached: bool,
    pub escalation_level: u8,
    pub incident_key: Option<String>,
    pub root_cause: RootRef,
    pub next_deadline: Option<Deadline>,
}

impl TicketView {
    /// The view of a fault's ticket under `policy`, handed to the incident stage under
    /// `incident_key`.
    pub fn of(fault: &Fault, incident_key: Option<&str>, policy: &Policy) -> TicketView {
        let down = fault.is_down();
        let accept_by = fault.accept_by(policy);
        let restore_by = fault.restore_by(policy);
        let clock_runs = fault.clock_runs();
        let next_deadline = if !down || !clock_runs {
            None
        } else if fault.acknowledged_at.is_none()
            && !fault.timers.acceptance_overdue
            && accept_by < restore_by
        {
            Some(Deadline {
                kind: DeadlineKind::Accept,
                at: accept_by,
            })
        } else {
            Some(Deadline {
                kind: DeadlineKind::Restore,
                at: restore_by,
            })
        };
        TicketView {
            ticket_id: fault.ticket_id.clone(),
            circuit_id: fault.circuit_id.clone(),
            customer_id: fault.customer_id.clone(),
            customer_name: fault.customer_name.clone(),
            customer_level: fault.customer_level,
            assurance_level: fault.assurance_level,
            status: fault.status,
            lead_team: fault.lead_team.clone(),
            opened_at: fault.opened_at(),
            acknowledged_at: fault.acknowledged_at,
            accept_by,
            restore_by,
            at_risk_at: fault.at_risk_at(policy),
            restored_at: fault.restored_at(),
            written_report_by: fault.written_report_owed_by(policy),
            down,
            clock_runs,
            at_risk: fault.timers.at_risk,
            breached: fault.timers.breached,
            escalation_level: fault.timers.escalations,
            incident_key: incident_key.map(str::to_string),
            root_cause: RootRef {
                object: fault.root.object.clone(),
                probable_cause: fault.root.probable_cause.clone(),
            },
            next_deadline,
        }
    }
}

/// A circuit's line state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LineState {
    Up,
    Down,
    Unprotected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LineView {
    pub state: LineState,
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub since: Option<DateTime<Utc>>,
}

impl From<LineStatus> for LineView {
    fn from(status: LineStatus) -> Self {
        match status {
            LineStatus::Up => LineView {
                state: LineState::Up,
                since: None,
            },
            LineStatus::Down { since } => LineView {
                state: LineState::Down,
                since: Some(since),
            },
            LineStatus::Unprotected { since } => LineView {
                state: LineState::Unprotected,
                since: Some(since),
            },
        }
    }
}

/// One circuit's committed state, as the query API answers it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CircuitView {
    pub circuit_id: String,
    pub partition: i32,
    pub in_inventory: bool,
    pub customer_id: Option<String>,
    pub customer_name: Option<String>,
    pub assurance_level: Option<AssuranceLevel>,
    pub line: LineView,
    pub open_ticket: Option<TicketView>,
    /// Restored tickets of the circuit that a newer fault superseded, still open until
    /// their post-restore obligations (feedback, written report) are met or due.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub superseded_tickets: Vec<TicketView>,
    /// The latest year's figures as last emitted (as of the circuit's last event).
    pub year_to_date: Option<CircuitFigures>,
    pub month: Option<CircuitFigures>,
    /// What the circuit's figures are computed from, for figures over any span on request
    /// (`GET /api/v1/circuits/{id}/figures`); not part of the circuit's JSON. Shared: the
    /// view is cloned per request, the facts are not.
    #[serde(skip)]
    pub facts: Option<Arc<FactsSnapshot>>,
}

/// A circuit's use of its annual limits.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetLine {
    pub circuit_id: String,
    pub customer_id: Option<String>,
    pub customer_name: Option<String>,
    pub assurance_level: AssuranceLevel,
    pub period: String,
    pub failures: u32,
    pub failure_limit: Option<u32>,
    pub outage_seconds: u64,
    pub outage_limit_seconds: Option<u64>,
    pub outage_used: f64,
    pub failures_used: f64,
    pub budget_used: f64,
    pub status: Status,
    pub down: bool,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub as_of: DateTime<Utc>,
}

impl BudgetLine {
    fn of(view: &CircuitView, year: &CircuitFigures) -> BudgetLine {
        let share = |used: f64, limit: Option<f64>| match limit {
            Some(l) if l > 0.0 => used / l,
            _ => 0.0,
        };
        let outage_used = share(
            year.outage_seconds as f64,
            year.outage_limit_seconds.map(|l| l as f64),
        );
        let failures_used = share(f64::from(year.failures), year.failure_limit.map(f64::from));
        BudgetLine {
            circuit_id: view.circuit_id.clone(),
            customer_id: view.customer_id.clone(),
            customer_name: view.customer_name.clone(),
            assurance_level: year.assurance_level,
            period: year.period.clone(),
            failures: year.failures,
            failure_limit: year.failure_limit,
            outage_seconds: year.outage_seconds,
            outage_limit_seconds: year.outage_limit_seconds,
            outage_used,
            failures_used,
            budget_used: outage_used.max(failures_used),
            status: year.status,
            down: view.line.state == LineState::Down,
            as_of: year.as_of,
        }
    }
}

/// Filters of the open-tickets list; `None` matches all.
#[derive(Debug, Clone, Default)]
pub struct TicketFilter {
    pub team: Option<String>,
    pub level: Option<AssuranceLevel>,
    pub status: Option<TicketStatus>,
}

impl TicketFilter {
    fn matches(&self, t: &TicketView) -> bool {
        self.team.as_ref().is_none_or(|team| *team == t.lead_team)
            && self.level.is_none_or(|l| l == t.assurance_level)
            && self.status.is_none_or(|s| s == t.status)
    }
}

/// Counts for the metrics gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Open tickets per (assurance level, status).
    pub open_tickets: Vec<((AssuranceLevel, TicketStatus), u64)>,
    pub tickets_at_risk: u64,
    pub tickets_breached: u64,
    pub circuits_down: u64,
    pub circuits_at_risk: u64,
    pub circuits_breached: u64,
    pub open_incidents: u64,
}

/// The views of the partitions this instance owns, shared between the stages (writers)
/// and the query API (readers).
#[derive(Debug, Default)]
pub struct Views {
    circuits: DashMap<String, CircuitView>,
    /// Open incidents by root alarm key.
    incidents: DashMap<String, IncidentEvent>,
}

impl Views {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put_circuit(&self, view: CircuitView) {
        self.circuits.insert(view.circuit_id.clone(), view);
    }

    pub fn remove_circuit(&self, circuit_id: &str) {
        self.circuits.remove(circuit_id);
    }

    /// Forget every circuit (the circuit stage lost or gave up its partitions).
    pub fn clear_circuits(&self) {
        self.circuits.clear();
    }

    /// The incident's latest record; a closed one is dropped.
    pub fn put_incident(&self, key: &str, record: IncidentEvent) {
        if record.status == IncidentStatus::Closed {
            self.incidents.remove(key);
        } else {
            self.incidents.insert(key.to_string(), record);
        }
    }

    pub fn remove_incident(&self, key: &str) {
        self.incidents.remove(key);
    }

    pub fn clear_incidents(&self) {
        self.incidents.clear();
    }

    pub fn circuit(&self, circuit_id: &str) -> Option<CircuitView> {
        self.circuits.get(circuit_id).map(|v| v.clone())
    }

    /// Open tickets matching `filter`, soonest next deadline first (tickets without one
    /// last), then by ticket id; at most `limit`.
    pub fn tickets(&self, filter: &TicketFilter, limit: usize) -> Vec<TicketView> {
        let mut tickets: Vec<TicketView> = self
            .circuits
            .iter()
            .flat_map(|v| {
                v.open_ticket
                    .clone()
                    .into_iter()
                    .chain(v.superseded_tickets.clone())
                    .collect::<Vec<_>>()
            })
            .filter(|t| t.status != TicketStatus::Closed && filter.matches(t))
            .collect();
        tickets.sort_by(|a, b| {
            let due = |t: &TicketView| t.next_deadline.as_ref().map(|d| d.at);
            match (due(a), due(b)) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            }
            .then_with(|| a.ticket_id.cmp(&b.ticket_id))
        });
        tickets.truncate(limit);
        tickets
    }

    /// Circuits with year figures, most of their annual budget used first (then by
    /// circuit id), optionally only those of one status; at most `limit`.
    pub fn budget(&self, status: Option<Status>, limit: usize) -> Vec<BudgetLine> {
        let mut lines: Vec<BudgetLine> = self
            .circuits
            .iter()
            .filter_map(|v| v.year_to_date.as_ref().map(|y| BudgetLine::of(&v, y)))
            .filter(|l| status.is_none_or(|s| s == l.status))
            .collect();
        lines.sort_by(|a, b| {
            b.budget_used
                .total_cmp(&a.budget_used)
                .then_with(|| a.circuit_id.cmp(&b.circuit_id))
        });
        lines.truncate(limit);
        lines
    }

    /// Open incidents, most circuits down first (then by incident id).
    pub fn incidents(&self) -> Vec<IncidentEvent> {
        let mut list: Vec<IncidentEvent> = self.incidents.iter().map(|i| i.clone()).collect();
        list.sort_by(|a, b| {
            b.down_count
                .cmp(&a.down_count)
                .then_with(|| a.incident_id.cmp(&b.incident_id))
        });
        list
    }

    /// The gauges' values.
    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        let mut open: std::collections::BTreeMap<(u8, u8), ((AssuranceLevel, TicketStatus), u64)> =
            std::collections::BTreeMap::new();
        for v in self.circuits.iter() {
            if v.line.state == LineState::Down {
                counts.circuits_down += 1;
            }
            match v.year_to_date.as_ref().map(|y| y.status) {
                Some(Status::AtRisk) => counts.circuits_at_risk += 1,
                Some(Status::Breached) => counts.circuits_breached += 1,
                _ => {}
            }
            for t in v.open_ticket.iter().chain(&v.superseded_tickets) {
                if t.status == TicketStatus::Closed {
                    continue;
                }
                let slot = open
                    .entry((t.assurance_level as u8, t.status as u8))
                    .or_insert(((t.assurance_level, t.status), 0));
                slot.1 += 1;
                if t.breached {
                    counts.tickets_breached += 1;
                } else if t.at_risk {
                    counts.tickets_at_risk += 1;
                }
            }
        }
        counts.open_tickets = open.into_values().collect();
        counts.open_incidents = self.incidents.len() as u64;
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, hour, 0, 0).unwrap()
    }

    fn ticket(id: &str, level: AssuranceLevel, team: &str, due: Option<u32>) -> TicketView {
        TicketView {
            ticket_id: format!("TT-{id}"),
            circuit_id: id.to_string(),
            customer_id: "CU-1".into(),
            customer_name: "Acme".into(),
            customer_level: CustomerLevel::Gold,
            assurance_level: level,
            status: TicketStatus::Acknowledged,
            lead_team: team.into(),
            opened_at: at(1),
            acknowledged_at: None,
            accept_by: at(2),
            restore_by: at(9),
            at_risk_at: at(8),
            restored_at: None,
            written_report_by: None,
            down: true,
            clock_runs: true,
            at_risk: false,
            breached: false,
            escalation_level: 0,
            incident_key: None,
            root_cause: RootRef {
                object: "NE-1".into(),
                probable_cause: "LOS".into(),
            },
            next_deadline: due.map(|h| Deadline {
                kind: DeadlineKind::Restore,
                at: at(h),
            }),
        }
    }

    fn figures(id: &str, failures: u32, outage: u64, status: Status) -> CircuitFigures {
        CircuitFigures {
            circuit_id: id.into(),
            customer_id: None,
            assurance_level: AssuranceLevel::A,
            period: "2026".into(),
            period_start: at(0),
            period_end: at(23),
            as_of: at(5),
            failures,
            failure_limit: Some(8),
            outage_seconds: outage,
            outage_limit_seconds: Some(24 * 3600),
            maintenance_seconds: 0,
            availability: 0.99,
            availability_target: None,
            status,
            breaches: Vec::new(),
            open_fault: false,
            is_final: false,
        }
    }

    fn circuit(id: &str, ticket: Option<TicketView>, year: Option<CircuitFigures>) -> CircuitView {
        CircuitView {
            circuit_id: id.into(),
            partition: 0,
            in_inventory: true,
            customer_id: None,
            customer_name: None,
            assurance_level: Some(AssuranceLevel::A),
            line: LineView {
                state: if ticket.is_some() {
                    LineState::Down
                } else {
                    LineState::Up
                },
                since: None,
            },
            open_ticket: ticket,
            superseded_tickets: Vec::new(),
            year_to_date: year,
            month: None,
            facts: None,
        }
    }

    #[test]
    fn open_tickets_come_soonest_deadline_first_and_filter_by_team_and_level() {
        let views = Views::new();
        views.put_circuit(circuit(
            "C3",
            Some(ticket("C3", AssuranceLevel::A, "transport", None)),
            None,
        ));
        views.put_circuit(circuit(
            "C1",
            Some(ticket("C1", AssuranceLevel::Aaa, "transport", Some(9))),
            None,
        ));
        views.put_circuit(circuit(
            "C2",
            Some(ticket("C2", AssuranceLevel::A, "access", Some(4))),
            None,
        ));
        views.put_circuit(circuit("C4", None, None));
        let ids =
            |list: Vec<TicketView>| list.into_iter().map(|t| t.circuit_id).collect::<Vec<_>>();
        assert_eq!(
            ids(views.tickets(&TicketFilter::default(), 10)),
            ["C2", "C1", "C3"]
        );
        assert_eq!(
            ids(views.tickets(&TicketFilter::default(), 2)),
            ["C2", "C1"]
        );
        let transport = TicketFilter {
            team: Some("transport".into()),
            ..TicketFilter::default()
        };
        assert_eq!(ids(views.tickets(&transport, 10)), ["C1", "C3"]);
        let aaa = TicketFilter {
            level: Some(AssuranceLevel::Aaa),
            ..TicketFilter::default()
        };
        assert_eq!(ids(views.tickets(&aaa, 10)), ["C1"]);
        let counts = views.counts();
        assert_eq!(counts.circuits_down, 3);
        assert_eq!(
            counts.open_tickets,
            vec![
                ((AssuranceLevel::Aaa, TicketStatus::Acknowledged), 1),
                ((AssuranceLevel::A, TicketStatus::Acknowledged), 2)
            ]
        );
        views.clear_circuits();
        assert!(views.tickets(&TicketFilter::default(), 10).is_empty());
    }

    #[test]
    fn superseded_tickets_are_listed_and_counted_with_the_circuits_open_ticket() {
        let views = Views::new();
        let mut view = circuit(
            "C1",
            Some(ticket("C1", AssuranceLevel::A, "transport", Some(9))),
            None,
        );
        let mut old = ticket("C1", AssuranceLevel::A, "transport", None);
        old.status = TicketStatus::Resolved;
        view.superseded_tickets.push(old);
        views.put_circuit(view);
        assert_eq!(views.tickets(&TicketFilter::default(), 10).len(), 2);
        assert_eq!(
            views.counts().open_tickets,
            vec![
                ((AssuranceLevel::A, TicketStatus::Acknowledged), 1),
                ((AssuranceLevel::A, TicketStatus::Resolved), 1)
            ]
        );
    }

    #[test]
    fn budgets_rank_by_the_larger_share_of_either_limit() {
        let views = Views::new();
        // 2 of 8 failures (25%), 12 h of 24 h (50%): 50%.
        views.put_circuit(circuit(
            "C1",
            None,
            Some(figures("C1", 2, 12 * 3600, Status::Ok)),
        ));
        // 7 of 8 failures: 87.5%.
        views.put_circuit(circuit(
            "C2",
            None,
            Some(figures("C2", 7, 0, Status::AtRisk)),
        ));
        // 30 h of 24 h: past the limit.
        views.put_circuit(circuit(
            "C3",
            None,
            Some(figures("C3", 1, 30 * 3600, Status::Breached)),
        ));
        views.put_circuit(circuit("C4", None, None));
        let lines = views.budget(None, 10);
        let order: Vec<&str> = lines.iter().map(|l| l.circuit_id.as_str()).collect();
        assert_eq!(order, ["C3", "C2", "C1"]);
        assert!((lines[0].outage_used - 1.25).abs() < 1e-9);
        assert!((lines[1].failures_used - 0.875).abs() < 1e-9);
        assert!((lines[2].budget_used - 0.5).abs() < 1e-9);
        let at_risk: Vec<String> = views
            .budget(Some(Status::AtRisk), 10)
            .into_iter()
            .map(|l| l.circuit_id)
            .collect();
        assert_eq!(at_risk, ["C2"]);
        let counts = views.counts();
        assert_eq!((counts.circuits_at_risk, counts.circuits_breached), (1, 1));
    }
}
