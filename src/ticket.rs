//! Fault tickets: one per fault of a circuit, with every SLA deadline of the policy, and
//! the TMF621 Trouble Ticket events that carry them to the ticketing system.
//!
//! A [`Fault`] stores only facts (when the circuit went down and came back, which alarm is
//! the root cause, which timers have fired); every deadline is derived from those facts and
//! the policy when needed, so revising the fault's start revises every deadline with it.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::correlation::Impact;
use crate::levels::{AssuranceLevel, CustomerLevel, Scope, Severity};
use crate::maintenance::{MaintenanceWindow, NoticeCheck};
use crate::network::CircuitRef;
use crate::policy::{CauseClass, EscalationAction, Policy, WrittenReport};

/// TMF621 ticket status, as this service uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TicketStatus {
    /// Created and dispatched to the lead team, not yet accepted.
    Acknowledged,
    /// Accepted by the lead team, being worked.
    InProgress,
    /// Service restored; the fault may still reopen within the hold-down window.
    Resolved,
    /// Final.
    Closed,
}

/// Who or what caused the fault. Only `Network` faults count against the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultCause {
    Network,
    Customer,
    Interconnection,
}

/// The alarm chosen as the fault's root cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RootCause {
    pub alarm_key: String,
    pub object: String,
    pub probable_cause: String,
    pub cause_class: CauseClass,
    pub source_system: String,
    pub severity: Severity,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub raised_at: DateTime<Utc>,
}

/// One down interval of a fault; `end` is `None` while the circuit is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub start: DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub end: Option<DateTime<Utc>>,
}

/// A planned-works window that covers the circuit during the fault. Only a window whose
/// notice met the policy's lead time stops the clocks; a late one is listed, so that it
/// is reported, and changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedWork {
    pub window_id: String,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub start: DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub end: DateTime<Utc>,
    #[serde(flatten)]
    pub notice: NoticeCheck,
}

impl PlannedWork {
    pub fn from_window(window: &MaintenanceWindow, level: CustomerLevel, policy: &Policy) -> Self {
        PlannedWork {
            window_id: window.window_id.clone(),
            start: window.start,
            end: window.end,
            notice: window.notice_check(level, policy),
        }
    }
}

/// `from + amount` of counted time, where time inside `excluded` spans does not count.
pub fn add_counted(
    from: DateTime<Utc>,
    amount: Duration,
    excluded: &[(DateTime<Utc>, DateTime<Utc>)],
) -> DateTime<Utc> {
    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = excluded
        .iter()
        .filter(|(s, e)| e > s && *e > from)
        .map(|(s, e)| ((*s).max(from), *e))
        .collect();
    spans.sort();
    let mut deadline = from + amount;
    let mut covered_to = from;
    for (start, end) in spans {
        // Only the part not already counted as excluded (overlapping windows).
        let start = start.max(covered_to);
        if end <= start {
            continue;
        }
        if start >= deadline {
            break;
        }
        deadline += end - start;
        covered_to = end;
    }
    deadline
}

/// What the engine remembers of an open (or restored, in hold-down) fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    pub ticket_id: String,
    pub circuit_id: String,
    pub customer_id: String,
    pub customer_name: String,
    pub customer_level: CustomerLevel,
    pub assurance_level: AssuranceLevel,
    pub scope: Scope,
    pub important: bool,
    pub status: TicketStatus,
    pub cause: FaultCause,
    pub root: RootCause,
    pub lead_team: String,
    pub notified_teams: Vec<String>,
    pub intervals: Vec<Interval>,
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// Planned-works windows covering the circuit during the fault.
    pub planned_works: Vec<PlannedWork>,
    pub timers: FiredTimers,
    /// Sequence of the next event of this ticket (event ids are `<ticket>-<seq>`).
    pub next_event: u32,
    /// The worst severity the root alarm has reached since it became the root, when worse
    /// than `root.severity` (an alarm upgraded, e.g. major to critical, while it stays the
    /// root). The ticket's severity follows it. Absent in state written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst_severity: Option<Severity>,
    /// When the ticketing system said the written fault report went to the customer (a
    /// `written_report_sent` command). A report sent before the last restoration (the
    /// fault reopened since) covers no longer the whole fault: one is owed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub written_report_sent_at: Option<DateTime<Utc>>,
    /// Sequence of the next reminder of this ticket (reminder ids are
    /// `<ticket>-R<seq>`). Absent in state written before reminders existed.
    #[serde(default)]
    pub next_reminder: u32,
}

/// Which timers have fired, so each fires once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FiredTimers {
    pub acceptance_overdue: bool,
    pub at_risk: bool,
    pub breached: bool,
    /// Number of escalation steps taken.
    pub escalations: u8,
    /// When joint handling started (bulletins run from here).
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub joint_since: Option<DateTime<Utc>>,
    pub bulletins: u32,
    pub feedbacks: u32,
    pub post_restore_feedback: bool,
    /// The written report's deadline passed without the report (since the last
    /// restoration).
    #[serde(default)]
    pub written_report_due: bool,
}

/// A timer of a fault, due at a time derived from the fault and the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Acceptance,
    AtRisk,
    Breach,
    Escalation(usize),
    Bulletin,
    Feedback,
    PostRestoreFeedback,
    WrittenReport,
    HoldDownEnd,
}

/// Why a ticket event was emitted: a change of the ticket (extension of TMF621, the
/// event's `slaEvent`). SLA timers that change nothing on the ticket are not ticket
/// events: they are [`SlaReminder`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum SlaEvent {
    Opened,
    Acknowledged,
    /// An escalation step was taken: `sla.escalationLevel` goes up.
    Escalated {
        level: u8,
        action: EscalationAction,
    },
    RootCauseRevised,
    /// The root alarm got worse (e.g. major to critical) and the ticket's severity or
    /// priority with it, by the policy's `tickets` tables.
    SeverityRaised,
    FaultStartRevised,
    Restored,
    Reopened,
    /// The ticketing system sent the written fault report (command
    /// `written_report_sent`).
    WrittenReportSent,
    Closed,
    Reclassified {
        cause: FaultCause,
    },
    ManuallyClosed,
    CircuitDeleted,
    /// A maintenance window covering the circuit became known, was moved or was called
    /// off; deadlines may move.
    PlannedWorksNoted,
}

/// An SLA timer of a ticket that changes no field of the ticket: something the NOC must
/// do (or know) now. Written to `sla.reminders`, not as a TMF621 event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReminderKind {
    /// The lead team has not accepted the ticket within the acceptance time (004).
    AcceptanceOverdue,
    /// The restoration clock has passed the policy's risk share of its limit.
    DeadlineAtRisk,
    /// The restoration limit has passed with the circuit still down.
    DeadlineBreached,
    /// A status bulletin is due during joint handling (003: every hour).
    BulletinDue,
    /// Progress feedback to the customer is due (004 table 7-3).
    FeedbackDue,
    /// Cause and result are due to the customer after restoration (004).
    PostRestoreFeedbackDue,
    /// The written fault report's deadline passed and the report was not sent (004 table
    /// 7-4); the ticket closes with it, as far as its other obligations allow.
    WrittenReportDue,
}

impl ReminderKind {
    /// What the NOC must do, in one sentence.
    fn action(self) -> &'static str {
        match self {
            Self::AcceptanceOverdue => "lead team to accept the ticket now: acceptance time passed",
            Self::DeadlineAtRisk => "restoration deadline at risk: prioritise the restoration",
            Self::DeadlineBreached => "restoration deadline passed: restore and report the breach",
            Self::BulletinDue => "send the joint-handling status bulletin",
            Self::FeedbackDue => "send the customer progress feedback",
            Self::PostRestoreFeedbackDue => "tell the customer the fault's cause and result",
            Self::WrittenReportDue => "written fault report overdue: send it to the customer",
        }
    }
}

/// A due SLA timer of a ticket (topic `sla.reminders`, schema
/// `topics/schemas/sla-reminder.schema.json`), keyed by circuit id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlaReminder {
    /// `<ticket>-R<sequence>`: deterministic, the sequence counting the ticket's reminders
    /// from 0 (ticket events are `<ticket>-<sequence>`).
    pub event_id: String,
    pub ticket_id: String,
    pub circuit_id: String,
    pub kind: ReminderKind,
    /// The n-th bulletin or feedback of the ticket (from 1); absent for the other kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    /// The deadline the reminder is about: the acceptance or restoration deadline, the
    /// bulletin's, feedback's or report's due time.
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub due_at: DateTime<Utc>,
    /// When the timer fired (event time; the reminder's own due time).
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub event_time: DateTime<Utc>,
    /// What the NOC must do.
    pub action: String,
    pub lead_team: String,
    pub customer_level: CustomerLevel,
    pub assurance_level: AssuranceLevel,
    /// The ticket's status when the timer fired.
    pub ticket_status: TicketStatus,
}

/// What a fault's timers give: a ticket event (the ticket changed) or a reminder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fired {
    Ticket(Box<TicketEvent>),
    Reminder(Box<SlaReminder>),
}

/// TMF621 event types.
pub const CREATE_EVENT: &str = "TroubleTicketCreateEvent";
pub const STATUS_CHANGE_EVENT: &str = "TroubleTicketStatusChangeEvent";
pub const ATTRIBUTE_CHANGE_EVENT: &str = "TroubleTicketAttributeValueChangeEvent";

/// Fields of the ticket that change with time alone, not with the ticket: left out of
/// `fieldPath`, and a change of them alone is no event.
const TIME_FIELDS: [&str; 2] = ["lastUpdate", "sla.downMinutes"];

/// The fields of the ticket that differ between two versions of it, as `fieldPath`
/// names them, sorted by name (not by the JSON map's order, which a serde_json feature
/// changes); time-driven fields left out. TMF621's own fields are named whole
/// (`relatedParty`), the extension objects field by field (`sla.restoreBy`). Compared as
/// typed values: building both tickets as JSON trees was 8 % of the circuit stage.
pub fn changed_fields(before: &TroubleTicket, after: &TroubleTicket) -> Vec<String> {
    let (b, a) = (before, after);
    let mut out = Vec::new();
    // Every field named, so that a field added to the ticket fails to compile here until
    // it is compared too.
    let TroubleTicket {
        id: _,
        name: _,
        description: _,
        ticket_type: _,
        severity: _,
        priority: _,
        status: _,
        creation_date: _,
        last_update: _,
        expected_resolution_date: _,
        resolution_date: _,
        related_entity: _,
        related_party: _,
        root_cause: _,
        sla: _,
        at_type: _,
        base_type: _,
    } = b;
    // TMF621's own fields, compared as they are (`lastUpdate` moves with time alone).
    let own: [(&str, bool); 15] = [
        ("id", b.id != a.id),
        ("name", b.name != a.name),
        ("description", b.description != a.description),
        ("ticketType", b.ticket_type != a.ticket_type),
        ("severity", b.severity != a.severity),
        ("priority", b.priority != a.priority),
        ("status", b.status != a.status),
        ("creationDate", b.creation_date != a.creation_date),
        (
            "expectedResolutionDate",
            b.expected_resolution_date != a.expected_resolution_date,
        ),
        ("resolutionDate", b.resolution_date != a.resolution_date),
        ("relatedEntity", b.related_entity != a.related_entity),
        ("relatedParty", b.related_party != a.related_party),
        ("@type", b.at_type != a.at_type),
        ("@baseType", b.base_type != a.base_type),
        ("lastUpdate", false),
    ];
    out.extend(own.iter().filter(|(_, c)| *c).map(|(k, _)| k.to_string()));
    // The extension objects, field by field as their JSON names them; only when they
    // differ at all (most changes touch one of them, and a few of their fields).
    if b.root_cause != a.root_cause {
        nested_changes("rootCause", &b.root_cause, &a.root_cause, &mut out);
    }
    if b.sla != a.sla {
        nested_changes("sla", &b.sla, &a.sla, &mut out);
    }
    out.retain(|path| !TIME_FIELDS.contains(&path.as_str()));
    out.sort();
    out
}

/// The fields of an extension object that differ, as `<name>.<field>`.
fn nested_changes<T: Serialize>(name: &str, before: &T, after: &T, out: &mut Vec<String>) {
    let (Ok(serde_json::Value::Object(o)), Ok(serde_json::Value::Object(n))) =
        (serde_json::to_value(before), serde_json::to_value(after))
    else {
        out.push(name.to_string());
        return;
    };
    let keys = n.keys().chain(o.keys().filter(|k| !n.contains_key(*k)));
    for k in keys {
        if o.get(k) != n.get(k) {
            out.push(format!("{name}.{k}"));
        }
    }
}

impl Fault {
    /// Open a fault on `circuit`, down since `since`, with `root` as the root-cause impact.
    /// Open the circuit's `ordinal`-th fault (1 for its first), down since `since`.
    pub fn open(
        circuit: CircuitRef<'_>,
        ordinal: u64,
        since: DateTime<Utc>,
        root: &Impact,
        policy: &Policy,
    ) -> Fault {
        let important = policy.is_important(circuit.customer.level, circuit.assurance_level);
        let lead_team = lead_team_for(root, policy);
        let notified_teams = policy.notify_teams(important, &lead_team);
        Fault {
            ticket_id: ticket_id(circuit.circuit_id, ordinal),
            circuit_id: circuit.circuit_id.to_string(),
            customer_id: circuit.customer.id.to_string(),
            customer_name: circuit.customer.name.to_string(),
            customer_level: circuit.customer.level,
            assurance_level: circuit.assurance_level,
            scope: circuit.scope,
            important,
            status: TicketStatus::Acknowledged,
            cause: FaultCause::Network,
            root: root_of(root),
            lead_team,
            notified_teams,
            intervals: vec![Interval {
                start: since,
                end: None,
            }],
            acknowledged_at: None,
            planned_works: Vec::new(),
            timers: FiredTimers::default(),
            next_event: 0,
            worst_severity: None,
            written_report_sent_at: None,
            next_reminder: 0,
        }
    }

    /// The worst severity of the fault's root alarm (severities order most severe first).
    pub fn severity(&self) -> Severity {
        self.worst_severity
            .map_or(self.root.severity, |w| w.min(self.root.severity))
    }

    /// When the circuit first went down in this fault.
    pub fn opened_at(&self) -> DateTime<Utc> {
        self.intervals
            .first()
            .map_or(DateTime::<Utc>::MIN_UTC, |i| i.start)
    }

    /// When service came back, while the fault is restored (in hold-down).
    pub fn restored_at(&self) -> Option<DateTime<Utc>> {
        self.intervals.last().and_then(|i| i.end)
    }

    pub fn is_down(&self) -> bool {
        self.restored_at().is_none() && self.status != TicketStatus::Closed
    }

    /// Total down time of this fault up to `now` (open intervals counted up to `now`).
    pub fn down_time(&self, now: DateTime<Utc>) -> Duration {
        self.intervals
            .iter()
            .map(|i| i.end.unwrap_or(now).max(i.start) - i.start)
            .fold(Duration::zero(), |a, b| a + b)
    }

    pub fn restore_limit(&self, policy: &Policy) -> Duration {
        policy.restore_limit(self.assurance_level, self.scope)
    }

    pub fn accept_by(&self, policy: &Policy) -> DateTime<Utc> {
        self.opened_at() + policy.accept_within()
    }

    /// Time excluded from the restoration clock: properly announced planned works.
    pub fn excluded(&self) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        self.planned_works
            .iter()
            .filter(|p| p.notice.compliant)
            .map(|p| (p.start, p.end))
            .collect()
    }

    /// The restoration deadline: the limit counted from the fault's start, skipping time
    /// inside properly announced planned works.
    pub fn restore_by(&self, policy: &Policy) -> DateTime<Utc> {
        add_counted(
            self.opened_at(),
            self.restore_limit(policy),
            &self.excluded(),
        )
    }

    pub fn at_risk_at(&self, policy: &Policy) -> DateTime<Utc> {
        let limit = self.restore_limit(policy);
        let ms = (limit.num_milliseconds() as f64 * policy.deadline_risk_fraction()).round();
        add_counted(
            self.opened_at(),
            Duration::milliseconds(ms as i64),
            &self.excluded(),
        )
    }

    /// When the written fault report is due, while the fault is restored: the policy's
    /// deadline for the customer's level, counted from the restoration, for levels that
    /// get one unasked (004 table 7-4: gold, and key and diamond with it, within 2
    /// working days). `None` while down, and for levels that get one only on request.
    pub fn written_report_by(&self, policy: &Policy) -> Option<DateTime<Utc>> {
        let restored = self.restored_at()?;
        match policy.written_report(self.customer_level) {
            WrittenReport::Always(deadline) => Some(policy.due(deadline, restored)),
            WrittenReport::OnRequest(_) => None,
        }
    }

    /// The written report sent since the last restoration, if any.
    fn written_report_sent(&self) -> Option<DateTime<Utc>> {
        let restored = self.restored_at()?;
        self.written_report_sent_at.filter(|at| *at >= restored)
    }

    /// Is a written report still owed (deadline not passed, report not sent)?
    fn written_report_owed(&self, policy: &Policy) -> bool {
        self.written_report_by(policy).is_some()
            && self.written_report_sent().is_none()
            && !self.timers.written_report_due
    }

    /// The written report's deadline while the report is still owed: not sent since the
    /// last restoration, and the deadline not yet passed.
    pub fn written_report_owed_by(&self, policy: &Policy) -> Option<DateTime<Utc>> {
        self.written_report_by(policy)
            .filter(|_| self.written_report_owed(policy))
    }

    /// Does the restoration clock run for this fault? Not for customer-caused or
    /// interconnection faults (DOMAIN.md: their time is excluded).
    pub fn clock_runs(&self) -> bool {
        self.cause == FaultCause::Network
    }

    /// Note a planned-works window covering the circuit; true if it was new.
    pub fn add_planned_work(&mut self, work: PlannedWork) -> bool {
        if self
            .planned_works
            .iter()
            .any(|p| p.window_id == work.window_id)
        {
            return false;
        }
        self.planned_works.push(work);
        self.planned_works
            .sort_by(|a, b| (a.start, &a.window_id).cmp(&(b.start, &b.window_id)));
        true
    }

    /// The earliest timer not yet fired, with its due time.
    fn next_timer(&self, policy: &Policy) -> Option<(DateTime<Utc>, Timer)> {
        if self.status == TicketStatus::Closed {
            return None;
        }
        let opened = self.opened_at();
        let mut due: Vec<(DateTime<Utc>, Timer)> = Vec::new();
        // None before it while down: the start of the current down interval.
        let mut floor = None;
        if let Some(restored) = self.restored_at() {
            if !self.timers.post_restore_feedback {
                due.push((
                    restored + policy.post_restore_feedback_within(),
                    Timer::PostRestoreFeedback,
                ));
            }
            let report_owed = self.written_report_owed(policy);
            if let Some(by) = self.written_report_by(policy).filter(|_| report_owed) {
                due.push((by, Timer::WrittenReport));
            }
            if self.timers.post_restore_feedback && !report_owed {
                // Close once the hold-down has passed, the customer has been told, and
                // the written report (where one is owed) was sent or is overdue.
                let told = restored + policy.post_restore_feedback_within();
                let reported = self
                    .written_report_sent()
                    .or(self.written_report_by(policy))
                    .unwrap_or(restored);
                due.push((
                    (restored + policy.hold_down()).max(told).max(reported),
                    Timer::HoldDownEnd,
                ));
            }
        } else {
            // A reopened fault keeps the deadlines of its first start (they are the same
            // fault's); one that passed while the line was up, in the hold-down, is due
            // at the re-failure, not dated back to a time the circuit was up (issue 15).
            floor = self.intervals.last().map(|i| i.start);
            if self.acknowledged_at.is_none() && !self.timers.acceptance_overdue {
                due.push((self.accept_by(policy), Timer::Acceptance));
            }
            if self.clock_runs() {
                if !self.timers.at_risk {
                    due.push((self.at_risk_at(policy), Timer::AtRisk));
                }
                if !self.timers.breached {
                    due.push((self.restore_by(policy), Timer::Breach));
                }
            }
            // The escalation ladder and the joint-handling bulletins follow the
            // restoration clock: a customer-caused or interconnection fault does not
            // escalate (issue 15).
            let steps = policy.escalation_steps(self.important);
            let taken = usize::from(self.timers.escalations);
            if let Some(step) = steps.get(taken).filter(|_| self.clock_runs()) {
                due.push((opened + step.after, Timer::Escalation(taken)));
            }
            if let Some(since) = self.timers.joint_since.filter(|_| self.clock_runs()) {
                let n = i32::try_from(self.timers.bulletins + 1).unwrap_or(i32::MAX);
                due.push((since + policy.joint_bulletin_every() * n, Timer::Bulletin));
            }
            if let Some(every) = policy.feedback_every(self.customer_level) {
                let n = i32::try_from(self.timers.feedbacks + 1).unwrap_or(i32::MAX);
                due.push((opened + every * n, Timer::Feedback));
            }
        }
        due.into_iter()
            .map(|(t, timer)| (floor.map_or(t, |f| t.max(f)), timer))
            .min_by_key(|(t, _)| *t)
    }

    /// The feedback deadline of the `n`-th progress feedback (from 1).
    fn feedback_by(&self, n: u32, policy: &Policy) -> Option<DateTime<Utc>> {
        let every = policy.feedback_every(self.customer_level)?;
        Some(self.opened_at() + every * i32::try_from(n).unwrap_or(i32::MAX))
    }

    /// When the next timer of this fault is due, if any.
    pub fn next_due(&self, policy: &Policy) -> Option<DateTime<Utc>> {
        self.next_timer(policy).map(|(t, _)| t)
    }

    /// Fire every timer due at or before `now`, in due order: a ticket event for a timer
    /// that changes the ticket (an escalation step, the close), a reminder for the others.
    /// Each carries its due time as event time, so late evaluation gives the same output as
    /// timely evaluation.
    pub fn fire_due(&mut self, now: DateTime<Utc>, policy: &Policy) -> Vec<Fired> {
        let mut out = Vec::new();
        while let Some((due, timer)) = self.next_timer(policy) {
            if due > now {
                break;
            }
            let (kind, number, deadline) = match timer {
                Timer::Acceptance => {
                    self.timers.acceptance_overdue = true;
                    (
                        ReminderKind::AcceptanceOverdue,
                        None,
                        self.accept_by(policy),
                    )
                }
                Timer::AtRisk => {
                    self.timers.at_risk = true;
                    (ReminderKind::DeadlineAtRisk, None, self.restore_by(policy))
                }
                Timer::Breach => {
                    self.timers.breached = true;
                    (
                        ReminderKind::DeadlineBreached,
                        None,
                        self.restore_by(policy),
                    )
                }
                Timer::Escalation(idx) => {
                    let steps = policy.escalation_steps(self.important);
                    let Some(step) = steps.get(idx) else { break };
                    let before = self.published(due, policy);
                    self.timers.escalations += 1;
                    if step.action == EscalationAction::JointHandling
                        && self.timers.joint_since.is_none()
                    {
                        // On the fault's clock, from its first start, even when the step
                        // comes late, at a re-failure.
                        self.timers.joint_since = Some(self.opened_at() + step.after);
                    }
                    let why = SlaEvent::Escalated {
                        level: self.timers.escalations,
                        action: step.action,
                    };
                    out.extend(
                        self.changed(why, due, policy, &before)
                            .map(|e| Fired::Ticket(Box::new(e))),
                    );
                    continue;
                }
                Timer::Bulletin => {
                    self.timers.bulletins += 1;
                    let n = self.timers.bulletins;
                    let by = self.timers.joint_since.map_or(due, |since| {
                        since + policy.joint_bulletin_every() * i32::try_from(n).unwrap_or(i32::MAX)
                    });
                    (ReminderKind::BulletinDue, Some(n), by)
                }
                Timer::Feedback => {
                    self.timers.feedbacks += 1;
                    let n = self.timers.feedbacks;
                    let by = self.feedback_by(n, policy).unwrap_or(due);
                    (ReminderKind::FeedbackDue, Some(n), by)
                }
                Timer::PostRestoreFeedback => {
                    self.timers.post_restore_feedback = true;
                    (ReminderKind::PostRestoreFeedbackDue, None, due)
                }
                Timer::WrittenReport => {
                    self.timers.written_report_due = true;
                    (ReminderKind::WrittenReportDue, None, due)
                }
                Timer::HoldDownEnd => {
                    let before = self.published(due, policy);
                    self.status = TicketStatus::Closed;
                    out.extend(
                        self.changed(SlaEvent::Closed, due, policy, &before)
                            .map(|e| Fired::Ticket(Box::new(e))),
                    );
                    continue;
                }
            };
            out.push(Fired::Reminder(Box::new(
                self.reminder(kind, number, deadline, due),
            )));
        }
        out
    }

    /// The next reminder of this ticket.
    fn reminder(
        &mut self,
        kind: ReminderKind,
        number: Option<u32>,
        due_at: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> SlaReminder {
        let seq = self.next_reminder;
        self.next_reminder += 1;
        SlaReminder {
            event_id: format!("{}-R{:04}", self.ticket_id, seq),
            ticket_id: self.ticket_id.clone(),
            circuit_id: self.circuit_id.clone(),
            kind,
            number,
            due_at,
            event_time: at,
            action: kind.action().to_string(),
            lead_team: self.lead_team.clone(),
            customer_level: self.customer_level,
            assurance_level: self.assurance_level,
            ticket_status: self.status,
        }
    }

    /// The circuit came back at `at`.
    pub fn restore(&mut self, at: DateTime<Utc>, policy: &Policy) -> Option<TicketEvent> {
        let before = self.published(at, policy);
        if let Some(last) = self.intervals.last_mut() {
            last.end = Some(at.max(last.start));
        }
        self.status = TicketStatus::Resolved;
        self.timers.post_restore_feedback = false;
        self.timers.written_report_due = false;
        self.changed(SlaEvent::Restored, at, policy, &before)
    }

    /// The circuit failed again at `at`, inside the hold-down window: same fault.
    pub fn reopen(&mut self, at: DateTime<Utc>, policy: &Policy) -> Option<TicketEvent> {
        let before = self.published(at, policy);
        let start = self.restored_at().map_or(at, |r| at.max(r));
        self.intervals.push(Interval { start, end: None });
        self.status = if self.acknowledged_at.is_some() {
            TicketStatus::InProgress
        } else {
            TicketStatus::Acknowledged
        };
        self.changed(SlaEvent::Reopened, at, policy, &before)
    }

    /// Is a failure at `at` inside this fault's hold-down window?
    pub fn within_hold_down(&self, at: DateTime<Utc>, policy: &Policy) -> bool {
        self.status != TicketStatus::Closed
            && self
                .restored_at()
                .is_some_and(|r| at <= r + policy.hold_down())
    }

    /// The current down interval started earlier than thought (a late root alarm).
    pub fn revise_start(
        &mut self,
        since: DateTime<Utc>,
        at: DateTime<Utc>,
        policy: &Policy,
    ) -> Option<TicketEvent> {
        let floor = if self.intervals.len() > 1 {
            self.intervals[self.intervals.len() - 2].end
        } else {
            None
        };
        let since = floor.map_or(since, |f| since.max(f));
        if since >= self.intervals.last()?.start {
            return None;
        }
        let before = self.published(at, policy);
        let last = self.intervals.last_mut()?;
        last.start = since;
        self.changed(SlaEvent::FaultStartRevised, at, policy, &before)
    }

    /// A better root cause arrived (a better cause class, or the same class raised
    /// earlier): route the ticket again. A root alarm that clears while the circuit stays
    /// down leaves the root cause as it was.
    pub fn revise_root(
        &mut self,
        root: &Impact,
        at: DateTime<Utc>,
        policy: &Policy,
    ) -> Option<TicketEvent> {
        let new_root = root_of(root);
        let same_alarm = new_root.alarm_key == self.root.alarm_key;
        // The root alarm got worse (severities order most severe first): the ticket's
        // severity, and its priority, follow it.
        let worse = same_alarm && new_root.severity < self.severity();
        let rank = |r: &RootCause| (r.cause_class, r.raised_at, r.alarm_key.clone());
        let better_root = rank(&new_root) < rank(&self.root);
        if !worse && !better_root {
            return None;
        }
        let before = self.published(at, policy);
        if worse {
            self.worst_severity = Some(new_root.severity);
        }
        if !better_root {
            return self.changed(SlaEvent::SeverityRaised, at, policy, &before);
        }
        self.root = new_root;
        if !same_alarm {
            self.worst_severity = None;
        }
        self.lead_team = lead_team_for(root, policy);
        self.notified_teams = policy.notify_teams(self.important, &self.lead_team);
        self.changed(SlaEvent::RootCauseRevised, at, policy, &before)
    }

    pub fn acknowledge(&mut self, at: DateTime<Utc>, policy: &Policy) -> Option<TicketEvent> {
        if self.acknowledged_at.is_some() || self.status == TicketStatus::Closed {
            return None;
        }
        let before = self.published(at, policy);
        self.acknowledged_at = Some(at);
        if self.status == TicketStatus::Acknowledged {
            self.status = TicketStatus::InProgress;
        }
        self.changed(SlaEvent::Acknowledged, at, policy, &before)
    }

    /// The written fault report went to the customer at `at`. Only a restored ticket has
    /// one to send; a second report for the same restoration changes nothing (`None`).
    ///
    /// # Errors
    /// A description of why not, while the circuit is still down.
    pub fn report_sent(
        &mut self,
        at: DateTime<Utc>,
        policy: &Policy,
    ) -> Result<Option<TicketEvent>, String> {
        if self.status == TicketStatus::Closed {
            return Ok(None);
        }
        let Some(restored) = self.restored_at() else {
            return Err("the circuit is still down: a written report follows restoration".into());
        };
        if self.written_report_sent().is_some() {
            return Ok(None);
        }
        let before = self.published(at, policy);
        self.written_report_sent_at = Some(at.max(restored));
        Ok(self.changed(SlaEvent::WrittenReportSent, at, policy, &before))
    }

    pub fn reclassify(
        &mut self,
        cause: FaultCause,
        at: DateTime<Utc>,
        policy: &Policy,
    ) -> Option<TicketEvent> {
        if self.cause == cause {
            return None;
        }
        let before = self.published(at, policy);
        self.cause = cause;
        self.changed(SlaEvent::Reclassified { cause }, at, policy, &before)
    }

    /// Close now, whatever the circuit's state (a manual close or the circuit's deletion).
    pub fn close(
        &mut self,
        why: SlaEvent,
        at: DateTime<Utc>,
        policy: &Policy,
    ) -> Option<TicketEvent> {
        let before = self.published(at, policy);
        if let Some(last) = self.intervals.last_mut() {
            if last.end.is_none() {
                last.end = Some(at.max(last.start));
            }
        }
        self.status = TicketStatus::Closed;
        self.changed(why, at, policy, &before)
    }

    /// Note a planned-works window covering the circuit, or its new times or notice when
    /// it was moved; an event when the ticket changes (its time may move the deadlines,
    /// and the ticket lists it).
    pub fn note_planned_work(
        &mut self,
        work: PlannedWork,
        at: DateTime<Utc>,
        policy: &Policy,
    ) -> Option<TicketEvent> {
        if self.planned_works.contains(&work) {
            return None;
        }
        let before = self.published(at, policy);
        self.planned_works.retain(|p| p.window_id != work.window_id);
        self.add_planned_work(work);
        self.changed(SlaEvent::PlannedWorksNoted, at, policy, &before)
    }

    /// A planned-works window the fault noted no longer covers it (called off, or moved
    /// away from the circuit or the fault): its time counts again, and the deadlines move
    /// back. An event when the fault had noted it.
    pub fn drop_planned_work(
        &mut self,
        window_id: &str,
        at: DateTime<Utc>,
        policy: &Policy,
    ) -> Option<TicketEvent> {
        if !self.planned_works.iter().any(|p| p.window_id == window_id) {
            return None;
        }
        let before = self.published(at, policy);
        self.planned_works.retain(|p| p.window_id != window_id);
        self.changed(SlaEvent::PlannedWorksNoted, at, policy, &before)
    }

    /// The ticket as an event publishes it at `at`: take it before changing the fault,
    /// and hand it to [`Fault::changed`] after.
    pub fn published(&self, at: DateTime<Utc>, policy: &Policy) -> TroubleTicket {
        self.snapshot(at, policy)
    }

    /// The ticket's first event (TroubleTicketCreateEvent).
    pub fn created(&mut self, at: DateTime<Utc>, policy: &Policy) -> TicketEvent {
        let ticket = self.snapshot(at, policy);
        self.next(SlaEvent::Opened, CREATE_EVENT, None, ticket, at)
    }

    /// The event of a change of the ticket from `before`: a status change event when its
    /// status changed, else an attribute-value change event whose `fieldPath` names the
    /// fields that changed; none when no field changed but those that move with time.
    pub fn changed(
        &mut self,
        why: SlaEvent,
        at: DateTime<Utc>,
        policy: &Policy,
        before: &TroubleTicket,
    ) -> Option<TicketEvent> {
        let after = self.snapshot(at, policy);
        if after.status != before.status {
            return Some(self.next(why, STATUS_CHANGE_EVENT, None, after, at));
        }
        let fields = changed_fields(before, &after);
        if fields.is_empty() {
            return None;
        }
        let path = Some(fields.join(","));
        Some(self.next(why, ATTRIBUTE_CHANGE_EVENT, path, after, at))
    }

    fn next(
        &mut self,
        why: SlaEvent,
        event_type: &str,
        field_path: Option<String>,
        ticket: TroubleTicket,
        at: DateTime<Utc>,
    ) -> TicketEvent {
        let seq = self.next_event;
        self.next_event += 1;
        TicketEvent {
            event_id: format!("{}-{:04}", self.ticket_id, seq),
            event_time: at,
            event_type: event_type.to_string(),
            field_path,
            sla_event: why,
            event: TicketEventBody {
                trouble_ticket: ticket,
            },
        }
    }

    fn snapshot(&self, at: DateTime<Utc>, policy: &Policy) -> TroubleTicket {
        let steps = policy.escalation_steps(self.important);
        let opened = self.opened_at();
        let restored = self.restored_at();
        TroubleTicket {
            id: self.ticket_id.clone(),
            name: format!("Circuit {} down", self.circuit_id),
            description: format!(
                "{} on {} ({})",
                self.root.probable_cause, self.root.object, self.customer_name
            ),
            ticket_type: "fault".into(),
            severity: policy.ticket_severity(self.severity()).to_string(),
            priority: policy
                .ticket_priority(self.assurance_level, self.severity())
                .to_string(),
            status: self.status,
            creation_date: opened,
            last_update: at,
            expected_resolution_date: self.restore_by(policy),
            resolution_date: restored,
            related_entity: vec![
                RelatedEntity {
                    id: self.circuit_id.clone(),
                    role: "affectedCircuit".into(),
                    referred_type: "Circuit".into(),
                },
                RelatedEntity {
                    id: self.root.alarm_key.clone(),
                    role: "rootCauseAlarm".into(),
                    referred_type: "Alarm".into(),
                },
            ],
            related_party: std::iter::once(RelatedParty {
                id: self.customer_id.clone(),
                name: Some(self.customer_name.clone()),
                role: "customer".into(),
                referred_type: PARTY_CUSTOMER.into(),
            })
            .chain(std::iter::once(RelatedParty {
                id: self.lead_team.clone(),
                name: None,
                role: "leadTeam".into(),
                referred_type: PARTY_TEAM.into(),
            }))
            .chain(self.notified_teams.iter().map(|t| RelatedParty {
                id: t.clone(),
                name: None,
                role: "notifiedTeam".into(),
                referred_type: PARTY_TEAM.into(),
            }))
            .collect(),
            root_cause: self.root.clone(),
            sla: SlaFields {
                customer_level: self.customer_level,
                assurance_level: self.assurance_level,
                scope: self.scope,
                important: self.important,
                cause: self.cause,
                clock_runs: self.clock_runs(),
                restore_limit_minutes: self.restore_limit(policy).num_minutes(),
                accept_by: self.accept_by(policy),
                restore_by: self.restore_by(policy),
                at_risk_at: self.at_risk_at(policy),
                // While the clock is stopped, only the steps already taken: none is to
                // come.
                escalations: steps
                    .iter()
                    .take(if self.clock_runs() {
                        steps.len()
                    } else {
                        usize::from(self.timers.escalations)
                    })
                    .enumerate()
                    .map(|(i, s)| EscalationDue {
                        level: u8::try_from(i + 1).unwrap_or(u8::MAX),
                        action: s.action,
                        at: opened + s.after,
                    })
                    .collect(),
                escalation_level: self.timers.escalations,
                feedback_every_minutes: policy
                    .feedback_every(self.customer_level)
                    .map(|d| d.num_minutes()),
                post_restore_feedback_by: restored
                    .map(|r| r + policy.post_restore_feedback_within()),
                written_report_by: self.written_report_by(policy),
                written_report_sent_at: self.written_report_sent(),
                leadership_notice: policy
                    .leadership_notice_levels()
                    .contains(&self.assurance_level),
                acknowledged_at: self.acknowledged_at,
                down_intervals: self.intervals.clone(),
                down_minutes: self.down_time(at).num_minutes(),
                planned_works: self.planned_works.clone(),
            },
            at_type: TICKET_TYPE.into(),
            base_type: TICKET_BASE_TYPE.into(),
        }
    }
}

fn root_of(impact: &Impact) -> RootCause {
    RootCause {
        alarm_key: impact.alarm.key.clone(),
        object: impact.alarm.object.clone(),
        probable_cause: impact.alarm.probable_cause.clone(),
        cause_class: impact.alarm.cause_class,
        source_system: impact.alarm.source_system.clone(),
        severity: impact.alarm.severity,
        raised_at: impact.alarm.raised_at,
    }
}

fn lead_team_for(root: &Impact, policy: &Policy) -> String {
    policy
        .lead_team(
            &root.alarm.source_system,
            root.domain.as_deref(),
            root.ne_type.as_deref(),
            &root.alarm.probable_cause,
        )
        .to_string()
}

/// Restoration priority in a mass outage: by assurance level, AAA first (DOMAIN.md).
pub fn restoration_priority(level: AssuranceLevel) -> u8 {
    match level {
        AssuranceLevel::Aaa => 1,
        AssuranceLevel::Aa => 2,
        AssuranceLevel::A => 3,
        AssuranceLevel::Ordinary => 4,
    }
}

/// A ticket id that depends only on the circuit and the fault's ordinal among the
/// circuit's faults (1 for its first), so the same input always gives the same id, in
/// whatever order the alarms of a storm arrive (the ticketing system dedupes on it).
pub fn ticket_id(circuit_id: &str, ordinal: u64) -> String {
    let mut h = Sha256::new();
    h.update(circuit_id.as_bytes());
    h.update([0u8]);
    h.update(ordinal.to_be_bytes());
    let digest = h.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("TT-{hex}")
}

/// A TMF621 Trouble Ticket event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketEvent {
    pub event_id: String,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub event_time: DateTime<Utc>,
    /// `TroubleTicketCreateEvent`, `TroubleTicketStatusChangeEvent` or
    /// `TroubleTicketAttributeValueChangeEvent`.
    pub event_type: String,
    /// Of an attribute-value change event: the fields of the ticket that changed, comma
    /// separated, sorted by name: TMF621 fields by name (`severity`,
    /// `relatedParty`), the extension's by dotted path (`sla.escalationLevel`,
    /// `rootCause.alarmKey`). `lastUpdate` and `sla.downMinutes`, which move with time,
    /// are never named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_path: Option<String>,
    /// Why this event was emitted (extension of TMF621).
    pub sla_event: SlaEvent,
    pub event: TicketEventBody,
}

impl TicketEvent {
    pub fn ticket(&self) -> &TroubleTicket {
        &self.event.trouble_ticket
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketEventBody {
    pub trouble_ticket: TroubleTicket,
}

/// `@type` of the ticket: TMF621's TroubleTicket extended with the root cause and the SLA.
pub const TICKET_TYPE: &str = "DedicatedLineFaultTicket";
/// `@baseType` of the ticket.
pub const TICKET_BASE_TYPE: &str = "TroubleTicket";
/// `@referredType` of the customer party (a TMF629 Customer, by its id).
pub const PARTY_CUSTOMER: &str = "Customer";
/// `@referredType` of a team party (lead or notified team: an organisation unit).
pub const PARTY_TEAM: &str = "Organization";

/// The ticket as TMF621 v4.0.0 describes it, extended (`@type` DedicatedLineFaultTicket,
/// `@baseType` TroubleTicket) with the root cause and the SLA fields. Every event is valid
/// against the official TMF621 v4.0.0 event schemas (tests/tmf621_conformance.rs): TMF
/// fields that are unknown are left out, never null.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TroubleTicket {
    pub id: String,
    pub name: String,
    pub description: String,
    pub ticket_type: String,
    /// By the policy (`tickets.severity`) from the worst severity of the root alarm; by
    /// default its name: critical, major, minor (TMF621 free text).
    pub severity: String,
    /// By the policy (`tickets.priority`) from the circuit's assurance level and the root
    /// alarm's worst severity; by default "1" for AAA through "4" for ordinary.
    pub priority: String,
    pub status: TicketStatus,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub creation_date: DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub last_update: DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub expected_resolution_date: DateTime<Utc>,
    /// When service came back; absent while the circuit is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub resolution_date: Option<DateTime<Utc>>,
    pub related_entity: Vec<RelatedEntity>,
    pub related_party: Vec<RelatedParty>,
    pub root_cause: RootCause,
    pub sla: SlaFields,
    #[serde(rename = "@type")]
    pub at_type: String,
    #[serde(rename = "@baseType")]
    pub base_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelatedEntity {
    pub id: String,
    pub role: String,
    #[serde(rename = "@referredType")]
    pub referred_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelatedParty {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    pub role: String,
    /// `Customer` or `Organization` (a team); TMF621 v4 requires it.
    #[serde(rename = "@referredType")]
    pub referred_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EscalationDue {
    pub level: u8,
    pub action: EscalationAction,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub at: DateTime<Utc>,
}

/// The SLA fields the ticketing system needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlaFields {
    pub customer_level: CustomerLevel,
    pub assurance_level: AssuranceLevel,
    pub scope: Scope,
    pub important: bool,
    pub cause: FaultCause,
    /// False when the restoration clock is stopped (customer-caused or interconnection).
    /// Properly announced planned works do not stop it: they move `restore_by`.
    pub clock_runs: bool,
    pub restore_limit_minutes: i64,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub accept_by: DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub restore_by: DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub at_risk_at: DateTime<Utc>,
    pub escalations: Vec<EscalationDue>,
    pub escalation_level: u8,
    pub feedback_every_minutes: Option<i64>,
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub post_restore_feedback_by: Option<DateTime<Utc>>,
    /// When the written fault report is due (004 table 7-4), once restored, for customer
    /// levels that get one unasked; `null` otherwise.
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub written_report_by: Option<DateTime<Utc>>,
    /// When the written report was sent (since the last restoration); `null` until then.
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub written_report_sent_at: Option<DateTime<Utc>>,
    pub leadership_notice: bool,
    #[serde(serialize_with = "crate::timestamp::serialize_option")]
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub down_intervals: Vec<Interval>,
    pub down_minutes: i64,
    pub planned_works: Vec<PlannedWork>,
}
