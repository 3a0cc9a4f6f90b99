//! The SLA policy: every number and rule of DOMAIN.md, as one validated configuration.
//!
//! A policy is a TOML file (reference: `policy/README.md`). The built-in default,
//! `policy/default.toml`, is embedded in the binary and reproduces DOMAIN.md; an operator
//! copies it and changes what differs (holidays, routing, the alternative tables of the
//! other specifications). A file is always complete: there is no layering, so what a file
//! says is exactly what runs.
//!
//! Loading is parse, then validate, once, at the edge: unknown keys, bad values and
//! inconsistent values are refused with the dotted key and the reason, e.g.
//! `restoration.limit.AAA.inter_province: must be a positive duration, got "0h"`.
//! After that, a [`Policy`] cannot be wrong, and its accessors are infallible.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{DateTime, Duration, NaiveDate, Utc, Weekday};
use chrono_tz::Tz;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::alarm::Alarm;
use crate::calendar::{Calendar, CalendarError};
use crate::levels::{AssuranceLevel, CustomerLevel, Scope, Severity};

/// The text of the built-in policy, `policy/default.toml`.
pub const DEFAULT_POLICY_TOML: &str = include_str!("../policy/default.toml");

/// A policy file that cannot be used. Every variant is bad input: fix the file and restart.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read SLA policy file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The text is not TOML.
    #[error("SLA policy is not valid TOML{}: {message}", at_line(*line))]
    Syntax {
        line: Option<usize>,
        message: String,
    },
    /// A key is unknown, missing, of the wrong type, or has a value the policy refuses.
    #[error("{key}: {reason}{}", at_line(*line))]
    Invalid {
        /// Dotted path of the key, e.g. `restoration.limit.AAA.inter_province` or
        /// `escalation.important[1].after`.
        key: String,
        reason: String,
        line: Option<usize>,
    },
    /// An error in the named file.
    #[error("{}: {error}", path.display())]
    InFile {
        path: PathBuf,
        error: Box<PolicyError>,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

impl PolicyError {
    /// The dotted key at fault, if the error is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            PolicyError::Invalid { key, .. } => Some(key),
            PolicyError::InFile { error, .. } => error.key(),
            PolicyError::Read { .. } | PolicyError::Syntax { .. } => None,
        }
    }
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        key: key.into(),
        reason: reason.into(),
        line: None,
    }
}

/// What an escalation step starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationAction {
    /// Joint emergency handling by every specialist team (003).
    JointHandling,
    /// Every team on the equipment site and the customer's site (003).
    AllTeamsOnSite,
}

impl EscalationAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::JointHandling => "joint_handling",
            Self::AllTeamsOnSite => "all_teams_on_site",
        }
    }
}

/// One step of escalation: if the fault is not restored `after` its start, do `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EscalationStep {
    /// Time from the start of the fault (the SLA clock's start).
    pub after: Duration,
    pub action: EscalationAction,
    /// Escalation level reached by this step: 1 for the first step of its list, 2 for the
    /// second, and so on (0 is "not escalated").
    pub level: u8,
}

/// When a written report is due, counted from restoration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportDeadline {
    /// By the end of the n-th working day after restoration (see
    /// [`Calendar::add_working_days`]).
    WorkingDays(u32),
    /// Within this much elapsed time.
    Elapsed(Duration),
}

/// The written fault report owed to a customer level (004 table 7-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrittenReport {
    /// Sent unasked, by the deadline.
    Always(ReportDeadline),
    /// Sent only when the customer asks; by the deadline if there is one.
    OnRequest(Option<ReportDeadline>),
}

impl WrittenReport {
    /// The deadline, if any.
    pub fn deadline(self) -> Option<ReportDeadline> {
        match self {
            WrittenReport::Always(d) => Some(d),
            WrittenReport::OnRequest(d) => d,
        }
    }
}

/// Class of an alarm's cause, for choosing a fault's root alarm. Ordered best first: the
/// lowest class among a fault's alarms is its root cause (physical transmission faults
/// over their consequential alarms, over data-link, over IP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CauseClass {
    /// LOS, LOF, fibre cut, power, card or equipment failure; link down on transmission.
    Physical,
    /// Signals sent because of a fault elsewhere: AIS, RDI, BDI, LOP, UNEQ, CSF.
    Consequential,
    /// Ethernet link or port down, LACP, CRC errors on data equipment.
    DataLink,
    /// Routing protocol neighbours, LDP, BFD, ping loss.
    Ip,
    /// Anything no rule names.
    Other,
}

impl CauseClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Physical => "physical",
            Self::Consequential => "consequential",
            Self::DataLink => "data_link",
            Self::Ip => "ip",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for CauseClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The validated SLA policy. Build it with [`Policy::builtin`], [`Policy::from_toml_str`]
/// or [`Policy::load`].
#[derive(Debug, Clone)]
pub struct Policy {
    time_zone: Tz,
    calendar: Calendar,
    restore_limit: PerAssurance<PerScope<Duration>>,
    accept_within: Duration,
    leadership_notice_levels: Vec<AssuranceLevel>,
    important_customer_levels: Vec<CustomerLevel>,
    important_assurance_levels: Vec<AssuranceLevel>,
    escalation_important: Vec<EscalationStep>,
    escalation_others: Vec<EscalationStep>,
    joint_bulletin_every: Duration,
    post_restore_feedback_within: Duration,
    feedback_every: PerCustomer<Option<Duration>>,
    written_report: PerCustomer<WrittenReport>,
    failures_per_year: PerAssurance<u32>,
    outage_per_year: PerAssurance<Duration>,
    availability: PerAssurance<f64>,
    budget_risk_threshold: f64,
    deadline_risk_fraction: f64,
    hold_down: Duration,
    service_affecting: Vec<Severity>,
    late_alarm_allowance: Duration,
    max_future_skew: Duration,
    cause_rules: Vec<CauseRule>,
    teams: Vec<String>,
    default_team: String,
    notify_others: Vec<String>,
    routing_rules: Vec<RoutingRule>,
    notice: NoticeDays,
    notice_by_level: BTreeMap<CustomerLevel, NoticeOverride>,
    notice_day_count: NoticeDayCount,
    ticket_severity: PerSeverity<String>,
    ticket_priority: PerAssurance<PerSeverity<String>>,
}

impl Policy {
    /// The built-in default policy (`policy/default.toml`), which reproduces DOMAIN.md.
    pub fn builtin() -> Policy {
        static BUILTIN: OnceLock<Policy> = OnceLock::new();
        BUILTIN
            .get_or_init(|| {
                Policy::from_toml_str(DEFAULT_POLICY_TOML)
                    .expect("policy/default.toml is valid (tested by builtin_policy_parses)")
            })
            .clone()
    }

    /// Parse and validate a policy from TOML text.
    ///
    /// # Errors
    /// [`PolicyError::Syntax`] if the text is not TOML; [`PolicyError::Invalid`], naming
    /// the key, if a key is unknown or missing or a value is refused.
    pub fn from_toml_str(text: &str) -> Result<Policy, PolicyError> {
        if let Err(e) = text.parse::<toml::Table>() {
            return Err(PolicyError::Syntax {
                line: e.span().map(|s| line_of(text, s.start)),
                message: e.message().trim().replace('\n', "; "),
            });
        }
        let file: PolicyFile = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| from_serde_error(text, e))?;
        file.into_policy()
    }

    /// Read, parse and validate a policy file.
    ///
    /// # Errors
    /// [`PolicyError::Read`] if the file cannot be read; otherwise the errors of
    /// [`Policy::from_toml_str`], wrapped in [`PolicyError::InFile`] with the path.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|error| PolicyError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Policy::from_toml_str(&text).map_err(|error| PolicyError::InFile {
            path: path.to_path_buf(),
            error: Box::new(error),
        })
    }

    /// Restoration time limit of a circuit (004 table 7-2): from the monitoring alarm or
    /// the customer's report until service is restored.
    pub fn restore_limit(&self, level: AssuranceLevel, scope: Scope) -> Duration {
        *self.restore_limit.get(level).get(scope)
    }

    /// The department a ticket is sent to must accept it within this (004).
    pub fn accept_within(&self) -> Duration {
        self.accept_within
    }

    /// Is a fault on this customer's circuit handled as important (003)? Default: key,
    /// diamond or gold customers, or AAA circuits.
    pub fn is_important(&self, customer: CustomerLevel, assurance: AssuranceLevel) -> bool {
        self.important_customer_levels.contains(&customer)
            || self.important_assurance_levels.contains(&assurance)
    }

    /// Escalation steps, in order of `after`, for important faults or the others.
    pub fn escalation_steps(&self, important: bool) -> &[EscalationStep] {
        if important {
            &self.escalation_important
        } else {
            &self.escalation_others
        }
    }

    /// Interval of status bulletins during joint handling (003: every hour).
    pub fn joint_bulletin_every(&self) -> Duration {
        self.joint_bulletin_every
    }

    /// Interval of progress feedback to the customer while the fault is open (004 table
    /// 7-3); `None` when feedback is given on request only.
    pub fn feedback_every(&self, level: CustomerLevel) -> Option<Duration> {
        *self.feedback_every.get(level)
    }

    /// After restoration, cause and result go to every customer within this (004).
    pub fn post_restore_feedback_within(&self) -> Duration {
        self.post_restore_feedback_within
    }

    /// The written fault report owed to a customer level (004 table 7-4).
    pub fn written_report(&self, level: CustomerLevel) -> WrittenReport {
        *self.written_report.get(level)
    }

    /// The instant a deadline counted from `from` falls due: working days by the policy's
    /// calendar and time zone, elapsed time as is.
    pub fn due(&self, deadline: ReportDeadline, from: DateTime<Utc>) -> DateTime<Utc> {
        match deadline {
            ReportDeadline::WorkingDays(n) => {
                self.calendar.add_working_days(from, n, self.time_zone)
            }
            ReportDeadline::Elapsed(d) => from
                .checked_add_signed(d)
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }

    /// Most failures a circuit may have in a year (004 table 7-5).
    pub fn annual_failure_limit(&self, level: AssuranceLevel) -> u32 {
        *self.failures_per_year.get(level)
    }

    /// Most total outage time a circuit may have in a year (004 table 7-5).
    pub fn annual_outage_limit(&self, level: AssuranceLevel) -> Duration {
        *self.outage_per_year.get(level)
    }

    /// Line availability target, a fraction in (0, 1] (000, domestic).
    pub fn availability_target(&self, level: AssuranceLevel) -> f64 {
        *self.availability.get(level)
    }

    /// Share of an annual budget (failures or outage time) at which a circuit is at risk.
    pub fn budget_risk_threshold(&self) -> f64 {
        self.budget_risk_threshold
    }

    /// Share of a restoration limit elapsed at which a ticket's deadline is at risk.
    pub fn deadline_risk_fraction(&self) -> f64 {
        self.deadline_risk_fraction
    }

    /// A re-failure within this of restoration reopens the same fault. Zero disables it.
    pub fn hold_down(&self) -> Duration {
        self.hold_down
    }

    /// How late, in event time, an out-of-order alarm may arrive and still be applied.
    pub fn late_alarm_allowance(&self) -> Duration {
        self.late_alarm_allowance
    }

    /// Alarms timestamped further than this in the future of the engine's time are
    /// rejected.
    pub fn max_future_skew(&self) -> Duration {
        self.max_future_skew
    }

    /// Assurance levels whose full outages are reported to department leadership (004).
    pub fn leadership_notice_levels(&self) -> &[AssuranceLevel] {
        &self.leadership_notice_levels
    }

    /// Does an active alarm of this severity take a circuit down? Never for `Cleared`.
    pub fn is_service_affecting(&self, severity: Severity) -> bool {
        self.service_affecting.contains(&severity)
    }

    /// The cause class of an alarm: the first cause rule that matches its probable cause
    /// (and its alarm type, object type and the alarmed object's network `domain` where
    /// the rule names them), else [`CauseClass::Other`].
    pub fn cause_class(&self, alarm: &Alarm, domain: Option<&str>) -> CauseClass {
        let cause = alarm.probable_cause.to_lowercase();
        let alarm_type = alarm.alarm_type.to_lowercase();
        let domain = domain.map(str::to_lowercase);
        let ne_type = alarm.object_type.as_deref().map(str::to_lowercase);
        self.cause_rules
            .iter()
            .find(|r| r.matches(&cause, &alarm_type, domain.as_deref(), ne_type.as_deref()))
            .map_or(CauseClass::Other, |r| r.class)
    }

    /// The team that leads a fault (003): the team of the first routing rule any of whose
    /// lists matches, else the default team.
    pub fn lead_team(
        &self,
        source_system: &str,
        domain: Option<&str>,
        ne_type: Option<&str>,
        probable_cause: &str,
    ) -> &str {
        let source = source_system.to_lowercase();
        let domain = domain.map(str::to_lowercase);
        let ne_type = ne_type.map(str::to_lowercase);
        let cause = probable_cause.to_lowercase();
        self.routing_rules
            .iter()
            .find(|r| r.matches(&source, domain.as_deref(), ne_type.as_deref(), &cause))
            .map_or(self.default_team.as_str(), |r| r.team.as_str())
    }

    /// Teams notified besides the lead team (003): every specialist team for an
    /// important fault, `routing.notify_others` (service support) for the others. The
    /// lead team itself is never in the list.
    pub fn notify_teams(&self, important: bool, lead: &str) -> Vec<String> {
        let teams = if important {
            &self.teams
        } else {
            &self.notify_others
        };
        teams
            .iter()
            .filter(|t| t.as_str() != lead)
            .cloned()
            .collect()
    }

    /// Every specialist team, in the policy's order.
    pub fn teams(&self) -> &[String] {
        &self.teams
    }

    /// Working days of notice planned works need (000: domestic 5, emergency 1,
    /// cross-border 7), with the customer level's override where one is configured.
    /// Emergency works (a major safety hazard) take the emergency figure even when
    /// cross-border.
    pub fn notice_lead_working_days(
        &self,
        level: CustomerLevel,
        emergency: bool,
        cross_border: bool,
    ) -> u32 {
        let o = self.notice_by_level.get(&level);
        let pick = |over: Option<u32>, base: u32| over.unwrap_or(base);
        if emergency {
            pick(
                o.and_then(|o| o.emergency_working_days),
                self.notice.emergency,
            )
        } else if cross_border {
            pick(
                o.and_then(|o| o.cross_border_working_days),
                self.notice.cross_border,
            )
        } else {
            pick(o.and_then(|o| o.working_days), self.notice.domestic)
        }
    }

    /// How days of notice are counted (`notice.day_count`).
    pub fn notice_day_count(&self) -> NoticeDayCount {
        self.notice_day_count
    }

    /// Working days of notice given by a notice at `notice` for works starting at `start`,
    /// in the policy's calendar and time zone, counted as `notice.day_count` says: the
    /// working days strictly between the two local dates, plus the notice's own date
    /// (when a working day before the start's date) if `inclusive`.
    pub fn notice_days_given(&self, notice: DateTime<Utc>, start: DateTime<Utc>) -> u32 {
        let between = self
            .calendar
            .working_days_between(notice, start, self.time_zone);
        let notice_date = notice.with_timezone(&self.time_zone).date_naive();
        let start_date = start.with_timezone(&self.time_zone).date_naive();
        let own_day = self.notice_day_count == NoticeDayCount::Inclusive
            && notice_date < start_date
            && self.calendar.is_working_day(notice_date);
        between.saturating_add(u32::from(own_day))
    }

    /// The TMF621 `severity` of a ticket whose root alarm's worst severity is `alarm`
    /// (`tickets.severity`). A root alarm is active, so never cleared; were it, the
    /// ticket takes `indeterminate`'s.
    pub fn ticket_severity(&self, alarm: Severity) -> &str {
        self.ticket_severity.get(alarm)
    }

    /// The TMF621 `priority` of a ticket (`tickets.priority`): by the circuit's assurance
    /// level and the root alarm's worst severity (`cleared` read as `indeterminate`).
    pub fn ticket_priority(&self, level: AssuranceLevel, alarm: Severity) -> &str {
        self.ticket_priority.get(level).get(alarm)
    }

    /// Time zone of every local date (working days, statistics periods).
    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// The working-day calendar, in [`Policy::time_zone`].
    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }
}

// ---------------------------------------------------------------------------------------
// Parsing errors

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn from_serde_error(text: &str, e: serde_path_to_error::Error<toml::de::Error>) -> PolicyError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let line = inner.span().map(|s| line_of(text, s.start));
    let message = inner.message().trim().to_string();
    let path = if path == "." { String::new() } else { path };
    let join = |name: &str| {
        if path == name || path.ends_with(&format!(".{name}")) {
            path.clone()
        } else if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    };
    // serde's messages name the key in backquotes: put it into the path instead.
    if let Some(name) = quoted_name(&message, "missing field `") {
        return PolicyError::Invalid {
            key: join(name),
            reason: "missing; every key of the policy is required".into(),
            // The span is the enclosing table's, which would only mislead.
            line: None,
        };
    }
    if let Some(name) = quoted_name(&message, "unknown field `") {
        let expected = message.split_once(", ").map_or("", |(_, rest)| rest);
        return PolicyError::Invalid {
            key: join(name),
            reason: format!("unknown key; {expected}"),
            line,
        };
    }
    PolicyError::Invalid {
        key: if path.is_empty() {
            "(policy)".into()
        } else {
            path
        },
        reason: message,
        line,
    }
}

fn quoted_name<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split_once('`').map(|(name, _)| name)
}

// ---------------------------------------------------------------------------------------
// Typed values of the file

/// A duration written as a string ("10m", "2h", "1h 30m", "30d"), never negative.
#[derive(Debug, Clone)]
struct PolicyDuration {
    value: Duration,
    text: String,
}

impl<'de> Deserialize<'de> for PolicyDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = PolicyDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a duration string such as "10m", "2h" or "30d""#)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<PolicyDuration, E> {
                parse_duration(s).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

fn parse_duration(text: &str) -> Result<PolicyDuration, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        return Err(format!("must not be negative, got {text:?}"));
    }
    let std = humantime::parse_duration(trimmed).map_err(|e| {
        format!(r#"must be a duration such as "10m", "2h" or "30d", got {text:?} ({e})"#)
    })?;
    let value = Duration::from_std(std).map_err(|_| format!("duration {text:?} is too long"))?;
    Ok(PolicyDuration {
        value,
        text: text.to_string(),
    })
}

fn positive(d: PolicyDuration, key: &str) -> Result<Duration, PolicyError> {
    if d.value > Duration::zero() {
        Ok(d.value)
    } else {
        Err(invalid(
            key,
            format!("must be a positive duration, got {:?}", d.text),
        ))
    }
}

fn unit_fraction(x: f64, key: &str) -> Result<f64, PolicyError> {
    if x > 0.0 && x <= 1.0 {
        Ok(x)
    } else {
        Err(invalid(
            key,
            format!("must be a fraction in (0, 1], got {x}"),
        ))
    }
}

/// A time zone name of the IANA database.
#[derive(Debug, Clone, Copy)]
struct TimeZoneName(Tz);

impl<'de> Deserialize<'de> for TimeZoneName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.trim()
            .parse::<Tz>()
            .map(TimeZoneName)
            .map_err(|_| de::Error::custom(format!("unknown time zone {name:?}")))
    }
}

/// A day of the week: "mon" or "monday", any case.
#[derive(Debug, Clone, Copy)]
struct WeekdayName(Weekday);

impl<'de> Deserialize<'de> for WeekdayName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.trim()
            .parse::<Weekday>()
            .map(WeekdayName)
            .map_err(|_| {
                de::Error::custom(format!(
                "unknown day of the week {name:?}; expected mon, tue, wed, thu, fri, sat or sun"
            ))
            })
    }
}

/// A local date ("2026-10-01" or a bare TOML date), or an inclusive range of them
/// (`{ from = "2026-10-01", to = "2026-10-07" }`).
#[derive(Debug, Clone, Copy)]
struct DateSpec {
    from: NaiveDate,
    to: NaiveDate,
}

impl<'de> Deserialize<'de> for DateSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = toml::Value::deserialize(d)?;
        date_spec(&value).map_err(de::Error::custom)
    }
}

fn date_spec(value: &toml::Value) -> Result<DateSpec, String> {
    let toml::Value::Table(table) = value else {
        let date = date_value(value)?;
        return Ok(DateSpec {
            from: date,
            to: date,
        });
    };
    if let Some(k) = table.keys().find(|k| *k != "from" && *k != "to") {
        return Err(format!(
            "unknown key `{k}` in a date range; expected `from` and `to`"
        ));
    }
    let (Some(from), Some(to)) = (table.get("from"), table.get("to")) else {
        return Err("a date range needs both `from` and `to`".into());
    };
    let (from, to) = (date_value(from)?, date_value(to)?);
    if to < from {
        return Err(format!("date range ends ({to}) before it starts ({from})"));
    }
    Ok(DateSpec { from, to })
}

fn date_value(value: &toml::Value) -> Result<NaiveDate, String> {
    match value {
        toml::Value::String(s) => NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .map_err(|_| format!(r#"expected a date such as "2026-10-01", got {s:?}"#)),
        toml::Value::Datetime(dt) => match (dt.date, dt.time, dt.offset) {
            (Some(date), None, None) => NaiveDate::from_ymd_opt(
                i32::from(date.year),
                u32::from(date.month),
                u32::from(date.day),
            )
            .ok_or_else(|| format!("no such date {dt}")),
            _ => Err(format!("expected a date without a time of day, got {dt}")),
        },
        other => Err(format!(
            r#"expected a date such as "2026-10-01" or a range {{ from, to }}, got {other}"#
        )),
    }
}

impl DateSpec {
    fn days(self) -> impl Iterator<Item = NaiveDate> {
        let to = self.to;
        self.from.iter_days().take_while(move |d| *d <= to)
    }
}

/// Progress feedback cadence: a duration, or "on_request".
#[derive(Debug, Clone)]
enum Cadence {
    Every(PolicyDuration),
    OnRequest,
}

impl<'de> Deserialize<'de> for Cadence {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Cadence;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a duration string such as "30m", or "on_request""#)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Cadence, E> {
                if s.trim() == "on_request" {
                    Ok(Cadence::OnRequest)
                } else {
                    parse_duration(s).map(Cadence::Every).map_err(E::custom)
                }
            }
        }
        d.deserialize_str(V)
    }
}

// ---------------------------------------------------------------------------------------
// Tables keyed by level: a struct per key set, so a missing or unknown level is a serde
// error naming it, and a lookup can never fail.

macro_rules! level_table {
    ($(#[$doc:meta])* $name:ident, $key:ty, [$($field:ident = $variant:pat => $text:literal),+ $(,)?]) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name<T> {
            $(#[serde(rename = $text)] $field: T,)+
        }

        impl<T> $name<T> {
            fn get(&self, key: $key) -> &T {
                match key {
                    $($variant => &self.$field,)+
                }
            }

            /// Convert every entry, with its dotted key for error messages.
            fn try_map<U>(
                self,
                path: &str,
                mut f: impl FnMut(T, &str) -> Result<U, PolicyError>,
            ) -> Result<$name<U>, PolicyError> {
                Ok($name {
                    $($field: f(self.$field, &format!("{path}.{}", $text))?,)+
                })
            }
        }
    };
}

level_table!(
    /// One value per assurance level: keys `AAA`, `AA`, `A`, `ordinary`.
    PerAssurance, AssuranceLevel, [
        aaa = AssuranceLevel::Aaa => "AAA",
        aa = AssuranceLevel::Aa => "AA",
        a = AssuranceLevel::A => "A",
        ordinary = AssuranceLevel::Ordinary => "ordinary",
    ]
);

level_table!(
    /// One value per scope: keys `intra_city`, `intra_province`, `inter_province`.
    PerScope, Scope, [
        intra_city = Scope::IntraCity => "intra_city",
        intra_province = Scope::IntraProvince => "intra_province",
        inter_province = Scope::InterProvince => "inter_province",
    ]
);

level_table!(
    /// One value per customer level: keys `key` to `standard`.
    PerCustomer, CustomerLevel, [
        key = CustomerLevel::Key => "key",
        diamond = CustomerLevel::Diamond => "diamond",
        gold = CustomerLevel::Gold => "gold",
        silver = CustomerLevel::Silver => "silver",
        bronze = CustomerLevel::Bronze => "bronze",
        standard = CustomerLevel::Standard => "standard",
    ]
);

level_table!(
    /// One value per severity of an active alarm: keys `critical` to `indeterminate`.
    PerSeverity, Severity, [
        critical = Severity::Critical => "critical",
        major = Severity::Major => "major",
        minor = Severity::Minor => "minor",
        warning = Severity::Warning => "warning",
        // A root alarm is active, so never cleared; were it, it reads as indeterminate.
        indeterminate = Severity::Indeterminate | Severity::Cleared => "indeterminate",
    ]
);

// ---------------------------------------------------------------------------------------
// The file, as written. Every key is required unless it has `#[serde(default)]`; see
// policy/README.md.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    /// IANA time zone of every local date (working days, statistics periods).
    time_zone: TimeZoneName,
    /// The working-day calendar.
    calendar: CalendarSpec,
    /// Restoration time limits.
    restoration: RestorationSpec,
    /// Acceptance of tickets and leadership notices.
    dispatch: DispatchSpec,
    /// Which faults are handled as important.
    importance: ImportanceSpec,
    /// Escalation steps and joint-handling bulletins.
    escalation: EscalationSpec,
    /// Feedback to the customer.
    feedback: FeedbackSpec,
    /// Annual limits and availability targets per circuit.
    network_quality: NetworkQualitySpec,
    /// Thresholds of the risk warnings.
    risk: RiskSpec,
    /// Fault lifecycle.
    faults: FaultsSpec,
    /// Alarm intake.
    alarms: AlarmsSpec,
    /// Ordered rules classifying alarm causes; first match wins.
    cause_classes: Vec<CauseRuleSpec>,
    /// Lead-team routing and notification.
    routing: RoutingSpec,
    /// Notice lead times of planned works.
    notice: NoticeSpec,
    /// TMF621 severity and priority of the tickets; optional, [`TicketsSpec::default`]
    /// (the built-in policy's) when absent.
    #[serde(default)]
    tickets: TicketsSpec,
}

/// TMF621 `severity` and `priority` of a ticket, from its root alarm's worst severity and
/// its circuit's assurance level. DOMAIN.md names neither; see `policy/default.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TicketsSpec {
    /// Ticket severity per root-alarm severity.
    severity: PerSeverity<String>,
    /// Ticket priority per assurance level, then per root-alarm severity.
    priority: PerAssurance<PerSeverity<String>>,
}

impl Default for TicketsSpec {
    /// What `policy/default.toml` says: the alarm's severity by name; priority "1" for
    /// AAA to "4" for ordinary, whatever the severity (restoration order is by assurance
    /// level, DOMAIN.md "Mass outage").
    fn default() -> Self {
        let names = PerSeverity {
            critical: "critical".to_string(),
            major: "major".to_string(),
            minor: "minor".to_string(),
            warning: "warning".to_string(),
            indeterminate: "indeterminate".to_string(),
        };
        let all = |p: &str| PerSeverity {
            critical: p.to_string(),
            major: p.to_string(),
            minor: p.to_string(),
            warning: p.to_string(),
            indeterminate: p.to_string(),
        };
        TicketsSpec {
            severity: names,
            priority: PerAssurance {
                aaa: all("1"),
                aa: all("2"),
                a: all("3"),
                ordinary: all("4"),
            },
        }
    }
}

/// Longest severity or priority text a policy may give a ticket.
const TICKET_TEXT_MAX: usize = 64;

/// A ticket's severity or priority text: printable, not blank, at most 64 characters.
fn ticket_text(text: String, key: &str) -> Result<String, PolicyError> {
    let trimmed = text.trim();
    if trimmed.is_empty()
        || trimmed.chars().count() > TICKET_TEXT_MAX
        || trimmed.chars().any(char::is_control)
    {
        return Err(invalid(
            key,
            format!("must be printable text of 1 to {TICKET_TEXT_MAX} characters, got {text:?}"),
        ));
    }
    Ok(trimmed.to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarSpec {
    /// Days of the week that are not working days, e.g. `["sat", "sun"]`.
    weekend: Vec<WeekdayName>,
    /// Non-working dates: "2026-10-01" or `{ from = "2026-10-01", to = "2026-10-07" }`.
    holidays: Vec<DateSpec>,
    /// Weekend dates that are working days (make-up days of the holiday calendar).
    make_up_working_days: Vec<DateSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestorationSpec {
    /// Limit per assurance level and scope, from the alarm until service is restored.
    limit: PerAssurance<PerScope<PolicyDuration>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DispatchSpec {
    /// The department a ticket is sent to must accept it within this.
    accept_within: PolicyDuration,
    /// Full outages at these assurance levels are reported to department leadership.
    leadership_notice_levels: Vec<AssuranceLevel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportanceSpec {
    /// Customers of these levels are important.
    customer_levels: Vec<CustomerLevel>,
    /// Circuits of these assurance levels are important, whatever their customer.
    assurance_levels: Vec<AssuranceLevel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EscalationSpec {
    /// Steps for important faults, in increasing `after`.
    important: Vec<StepSpec>,
    /// Steps for other faults, in increasing `after`.
    others: Vec<StepSpec>,
    /// Interval of status bulletins during joint handling.
    joint_bulletin_every: PolicyDuration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepSpec {
    /// Time from the start of the fault; positive.
    after: PolicyDuration,
    /// `joint_handling` or `all_teams_on_site`.
    action: EscalationAction,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackSpec {
    /// After restoration, cause and result to every customer within this.
    post_restore_within: PolicyDuration,
    /// Progress feedback interval per customer level, or "on_request".
    progress_every: PerCustomer<Cadence>,
    /// Written report per customer level.
    written_report: PerCustomer<ReportSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ReportWhen {
    Always,
    OnRequest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportSpec {
    /// `always`, or `on_request` (only when the customer asks).
    when: ReportWhen,
    /// Deadline: end of the n-th working day after restoration. At most one of this and
    /// `within`; `always` needs one.
    within_working_days: Option<u32>,
    /// Deadline as elapsed time after restoration.
    within: Option<PolicyDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkQualitySpec {
    /// Most failures per circuit per year; at least 1.
    failures_per_year: PerAssurance<u32>,
    /// Most total outage time per circuit per year; positive.
    outage_per_year: PerAssurance<PolicyDuration>,
    /// Availability target, a fraction in (0, 1].
    availability: PerAssurance<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RiskSpec {
    /// Used share of an annual budget at which a circuit is at risk; in (0, 1].
    budget_threshold: f64,
    /// Elapsed share of a restoration limit at which a deadline is at risk; in (0, 1].
    deadline_fraction: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsSpec {
    /// A re-failure within this of restoration reopens the same fault; "0s" disables.
    hold_down: PolicyDuration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlarmsSpec {
    /// Severities of an active alarm that take a circuit down (not `cleared`).
    service_affecting: Vec<Severity>,
    /// Bounded lateness of out-of-order alarms, in event time.
    late_allowance: PolicyDuration,
    /// Alarms further than this in the future of the engine's time are rejected.
    max_future_skew: PolicyDuration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CauseRuleSpec {
    /// The class of an alarm this rule matches.
    class: CauseClass,
    /// Probable causes (globs, case-insensitive); at least one.
    probable_causes: Vec<String>,
    /// If not empty, the alarm's type must match one of these too.
    #[serde(default)]
    alarm_types: Vec<String>,
    /// If not empty, the alarmed object's network domain must match one of these too.
    #[serde(default)]
    domains: Vec<String>,
    /// If not empty, the alarmed object's type must match one of these too.
    #[serde(default)]
    ne_types: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingSpec {
    /// Every specialist team; names unique.
    teams: Vec<String>,
    /// Lead team when no rule matches; one of `teams`.
    default_team: String,
    /// Teams notified of faults that are not important; each one of `teams`.
    notify_others: Vec<String>,
    /// Ordered rules; the first match names the lead team.
    #[serde(default)]
    rules: Vec<RoutingRuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutingRuleSpec {
    /// Lead team of a matching alarm; one of `routing.teams`.
    team: String,
    /// The rule matches if any list matches (globs, case-insensitive). Source NMS names.
    #[serde(default)]
    source_systems: Vec<String>,
    /// Network domains of the alarmed object, e.g. "transmission".
    #[serde(default)]
    domains: Vec<String>,
    /// Equipment types, e.g. "OTN".
    #[serde(default)]
    ne_types: Vec<String>,
    /// Probable causes.
    #[serde(default)]
    probable_causes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoticeSpec {
    /// Working days of notice for domestic planned works.
    working_days: u32,
    /// Working days of notice for emergency works (major safety hazard).
    emergency_working_days: u32,
    /// Working days of notice for works on cross-border circuits.
    cross_border_working_days: u32,
    /// How the days of notice are counted; optional, `exclusive` when absent.
    #[serde(default)]
    day_count: NoticeDayCount,
    /// Per-customer-level overrides of any of the three.
    #[serde(default)]
    by_customer_level: BTreeMap<CustomerLevel, NoticeOverride>,
}

/// How "n working days' notice" counts (policy key `notice.day_count`). Operators read
/// it both ways; the day the works start is never a day of notice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeDayCount {
    /// The whole working days strictly between the notice's date and the start's date:
    /// a notice on Monday for works the next Monday gives 4 (Tuesday to Friday).
    #[default]
    Exclusive,
    /// The notice's date counts too when it is a working day: a notice on Monday for
    /// works the next Monday gives 5 (Monday to Friday).
    Inclusive,
}

/// Per-customer-level notice figures; an absent one falls back to `[notice]`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoticeOverride {
    /// Replaces `notice.working_days` for this level.
    working_days: Option<u32>,
    /// Replaces `notice.emergency_working_days` for this level.
    emergency_working_days: Option<u32>,
    /// Replaces `notice.cross_border_working_days` for this level.
    cross_border_working_days: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
struct NoticeDays {
    domestic: u32,
    emergency: u32,
    cross_border: u32,
}

// ---------------------------------------------------------------------------------------
// Validation: the file into a Policy.

impl PolicyFile {
    fn into_policy(self) -> Result<Policy, PolicyError> {
        let restore_limit = self
            .restoration
            .limit
            .try_map("restoration.limit", |row, path| row.try_map(path, positive))?;

        let escalation_important =
            escalation_steps(self.escalation.important, "escalation.important")?;
        let escalation_others = escalation_steps(self.escalation.others, "escalation.others")?;

        let feedback_every =
            self.feedback
                .progress_every
                .try_map("feedback.progress_every", |c, key| match c {
                    Cadence::OnRequest => Ok(None),
                    Cadence::Every(d) => positive(d, key).map(Some),
                })?;
        let written_report = self
            .feedback
            .written_report
            .try_map("feedback.written_report", written_report)?;

        let nq = self.network_quality;
        let failures_per_year =
            nq.failures_per_year
                .try_map("network_quality.failures_per_year", |n, key| {
                    if n >= 1 {
                        Ok(n)
                    } else {
                        Err(invalid(key, "must be at least 1"))
                    }
                })?;
        let outage_per_year = nq
            .outage_per_year
            .try_map("network_quality.outage_per_year", positive)?;
        let availability = nq
            .availability
            .try_map("network_quality.availability", unit_fraction)?;

        for (i, s) in self.alarms.service_affecting.iter().enumerate() {
            if *s == Severity::Cleared {
                return Err(invalid(
                    format!("alarms.service_affecting[{i}]"),
                    "\"cleared\" is not the severity of an active alarm",
                ));
            }
        }

        let cause_rules = self
            .cause_classes
            .into_iter()
            .enumerate()
            .map(|(i, r)| cause_rule(r, &format!("cause_classes[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;

        let routing = self.routing;
        let teams = team_names(&routing.teams)?;
        let known_team = |name: &str, key: &str| {
            if teams.iter().any(|t| t == name) {
                Ok(name.to_string())
            } else {
                Err(invalid(
                    key,
                    format!("unknown team {name:?}; routing.teams lists {teams:?}"),
                ))
            }
        };
        let default_team = known_team(&routing.default_team, "routing.default_team")?;
        let notify_others = routing
            .notify_others
            .iter()
            .enumerate()
            .map(|(i, t)| known_team(t, &format!("routing.notify_others[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let routing_rules = routing
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let path = format!("routing.rules[{i}]");
                let team = known_team(&r.team, &format!("{path}.team"))?;
                routing_rule(team, r, &path)
            })
            .collect::<Result<Vec<_>, _>>()?;

        let calendar = calendar(self.calendar)?;

        let ticket_severity = self
            .tickets
            .severity
            .try_map("tickets.severity", ticket_text)?;
        let ticket_priority = self
            .tickets
            .priority
            .try_map("tickets.priority", |row, path| {
                row.try_map(path, ticket_text)
            })?;

        Ok(Policy {
            time_zone: self.time_zone.0,
            calendar,
            restore_limit,
            accept_within: positive(self.dispatch.accept_within, "dispatch.accept_within")?,
            leadership_notice_levels: self.dispatch.leadership_notice_levels,
            important_customer_levels: self.importance.customer_levels,
            important_assurance_levels: self.importance.assurance_levels,
            escalation_important,
            escalation_others,
            joint_bulletin_every: positive(
                self.escalation.joint_bulletin_every,
                "escalation.joint_bulletin_every",
            )?,
            post_restore_feedback_within: positive(
                self.feedback.post_restore_within,
                "feedback.post_restore_within",
            )?,
            feedback_every,
            written_report,
            failures_per_year,
            outage_per_year,
            availability,
            budget_risk_threshold: unit_fraction(
                self.risk.budget_threshold,
                "risk.budget_threshold",
            )?,
            deadline_risk_fraction: unit_fraction(
                self.risk.deadline_fraction,
                "risk.deadline_fraction",
            )?,
            hold_down: self.faults.hold_down.value,
            service_affecting: self.alarms.service_affecting,
            late_alarm_allowance: self.alarms.late_allowance.value,
            max_future_skew: self.alarms.max_future_skew.value,
            cause_rules,
            teams,
            default_team,
            notify_others,
            routing_rules,
            notice: NoticeDays {
                domestic: self.notice.working_days,
                emergency: self.notice.emergency_working_days,
                cross_border: self.notice.cross_border_working_days,
            },
            notice_by_level: self.notice.by_customer_level,
            notice_day_count: self.notice.day_count,
            ticket_severity,
            ticket_priority,
        })
    }
}

fn escalation_steps(specs: Vec<StepSpec>, path: &str) -> Result<Vec<EscalationStep>, PolicyError> {
    let mut steps: Vec<EscalationStep> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.into_iter().enumerate() {
        let key = format!("{path}[{i}].after");
        let text = spec.after.text.clone();
        let after = positive(spec.after, &key)?;
        if let Some(prev) = steps.last() {
            if after <= prev.after {
                return Err(invalid(
                    key,
                    format!("steps must be in increasing order of `after`; {text:?} is not after the step before"),
                ));
            }
        }
        let level = u8::try_from(i + 1).map_err(|_| invalid(path, "at most 255 steps"))?;
        steps.push(EscalationStep {
            after,
            action: spec.action,
            level,
        });
    }
    Ok(steps)
}

fn written_report(spec: ReportSpec, key: &str) -> Result<WrittenReport, PolicyError> {
    let deadline = match (spec.within_working_days, spec.within) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                key,
                "give `within_working_days` or `within`, not both",
            ))
        }
        (Some(n), None) => Some(ReportDeadline::WorkingDays(n)),
        (None, Some(d)) => Some(ReportDeadline::Elapsed(positive(
            d,
            &format!("{key}.within"),
        )?)),
        (None, None) => None,
    };
    match (spec.when, deadline) {
        (ReportWhen::Always, Some(d)) => Ok(WrittenReport::Always(d)),
        (ReportWhen::Always, None) => Err(invalid(
            key,
            "a report sent `always` needs a deadline: `within_working_days` or `within`",
        )),
        (ReportWhen::OnRequest, d) => Ok(WrittenReport::OnRequest(d)),
    }
}

fn team_names(teams: &[String]) -> Result<Vec<String>, PolicyError> {
    if teams.is_empty() {
        return Err(invalid("routing.teams", "must name at least one team"));
    }
    let mut out: Vec<String> = Vec::with_capacity(teams.len());
    for (i, t) in teams.iter().enumerate() {
        let key = format!("routing.teams[{i}]");
        let name = t.trim();
        if name.is_empty() {
            return Err(invalid(key, "a team name must not be empty"));
        }
        if out.iter().any(|o| o == name) {
            return Err(invalid(key, format!("team {name:?} is listed twice")));
        }
        out.push(name.to_string());
    }
    Ok(out)
}

fn calendar(spec: CalendarSpec) -> Result<Calendar, PolicyError> {
    let weekend: Vec<Weekday> = spec.weekend.iter().map(|w| w.0).collect();
    let holidays = spec.holidays.iter().flat_map(|d| d.days());
    let make_ups = spec.make_up_working_days.iter().flat_map(|d| d.days());
    Calendar::new(&weekend, holidays, make_ups).map_err(|e| {
        let key = match e {
            CalendarError::NoWorkingWeekday => "calendar.weekend",
            CalendarError::MakeUpNotOnWeekend { .. } | CalendarError::HolidayAndMakeUp(_) => {
                "calendar.make_up_working_days"
            }
        };
        invalid(key, e.to_string())
    })
}

// ---------------------------------------------------------------------------------------
// Matching rules

/// A case-insensitive name pattern: `*` matches any run of characters (also none);
/// everything else matches itself.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Glob {
    /// The lowercased pattern split at `*`; one part means no `*`.
    parts: Vec<String>,
}

impl Glob {
    fn new(pattern: &str) -> Glob {
        Glob {
            parts: pattern
                .to_lowercase()
                .split('*')
                .map(str::to_string)
                .collect(),
        }
    }

    /// Does the already lowercased `text` match?
    fn matches(&self, text: &str) -> bool {
        let (first, rest) = match self.parts.split_first() {
            Some(split) => split,
            None => return text.is_empty(),
        };
        let Some((last, middle)) = rest.split_last() else {
            return text == first;
        };
        if text.len() < first.len() + last.len()
            || !text.starts_with(first.as_str())
            || !text.ends_with(last.as_str())
        {
            return false;
        }
        let mut inner = &text[first.len()..text.len() - last.len()];
        for part in middle {
            match inner.find(part.as_str()) {
                Some(at) => inner = &inner[at + part.len()..],
                None => return false,
            }
        }
        true
    }
}

fn globs(patterns: &[String], key: &str) -> Result<Vec<Glob>, PolicyError> {
    patterns
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if p.trim().is_empty() {
                Err(invalid(
                    format!("{key}[{i}]"),
                    "a pattern must not be empty",
                ))
            } else {
                Ok(Glob::new(p.trim()))
            }
        })
        .collect()
}

fn any_match(globs: &[Glob], text: &str) -> bool {
    globs.iter().any(|g| g.matches(text))
}

#[derive(Debug, Clone)]
struct CauseRule {
    class: CauseClass,
    probable_causes: Vec<Glob>,
    alarm_types: Vec<Glob>,
    domains: Vec<Glob>,
    ne_types: Vec<Glob>,
}

fn cause_rule(spec: CauseRuleSpec, path: &str) -> Result<CauseRule, PolicyError> {
    if spec.probable_causes.is_empty() {
        return Err(invalid(
            format!("{path}.probable_causes"),
            "must list at least one probable cause",
        ));
    }
    Ok(CauseRule {
        class: spec.class,
        probable_causes: globs(&spec.probable_causes, &format!("{path}.probable_causes"))?,
        alarm_types: globs(&spec.alarm_types, &format!("{path}.alarm_types"))?,
        domains: globs(&spec.domains, &format!("{path}.domains"))?,
        ne_types: globs(&spec.ne_types, &format!("{path}.ne_types"))?,
    })
}

impl CauseRule {
    /// All inputs lowercased. A qualifier list that is not empty must match; an absent
    /// domain or object type does not match a rule that names some.
    fn matches(
        &self,
        cause: &str,
        alarm_type: &str,
        domain: Option<&str>,
        ne_type: Option<&str>,
    ) -> bool {
        let qualifier = |globs: &[Glob], value: Option<&str>| {
            globs.is_empty() || value.is_some_and(|v| any_match(globs, v))
        };
        any_match(&self.probable_causes, cause)
            && qualifier(&self.alarm_types, Some(alarm_type))
            && qualifier(&self.domains, domain)
            && qualifier(&self.ne_types, ne_type)
    }
}

#[derive(Debug, Clone)]
struct RoutingRule {
    team: String,
    source_systems: Vec<Glob>,
    domains: Vec<Glob>,
    ne_types: Vec<Glob>,
    probable_causes: Vec<Glob>,
}

fn routing_rule(
    team: String,
    spec: RoutingRuleSpec,
    path: &str,
) -> Result<RoutingRule, PolicyError> {
    let rule = RoutingRule {
        team,
        source_systems: globs(&spec.source_systems, &format!("{path}.source_systems"))?,
        domains: globs(&spec.domains, &format!("{path}.domains"))?,
        ne_types: globs(&spec.ne_types, &format!("{path}.ne_types"))?,
        probable_causes: globs(&spec.probable_causes, &format!("{path}.probable_causes"))?,
    };
    if rule.source_systems.is_empty()
        && rule.domains.is_empty()
        && rule.ne_types.is_empty()
        && rule.probable_causes.is_empty()
    {
        return Err(invalid(
            path,
            "a rule must list source_systems, domains, ne_types or probable_causes",
        ));
    }
    Ok(rule)
}

impl RoutingRule {
    /// All inputs lowercased; any one list matching is enough.
    fn matches(
        &self,
        source: &str,
        domain: Option<&str>,
        ne_type: Option<&str>,
        cause: &str,
    ) -> bool {
        any_match(&self.source_systems, source)
            || domain.is_some_and(|d| any_match(&self.domains, d))
            || ne_type.is_some_and(|t| any_match(&self.ne_types, t))
            || any_match(&self.probable_causes, cause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm::AlarmState;
    use AssuranceLevel::{Aa, Aaa, Ordinary, A};
    use CustomerLevel::{Bronze, Diamond, Gold, Key, Silver, Standard};

    fn h(n: i64) -> Duration {
        Duration::hours(n)
    }

    fn m(n: i64) -> Duration {
        Duration::minutes(n)
    }

    fn p() -> Policy {
        Policy::builtin()
    }

    #[test]
    fn builtin_policy_parses() {
        let policy = Policy::from_toml_str(DEFAULT_POLICY_TOML);
        assert!(policy.is_ok(), "{:?}", policy.err());
    }

    #[test]
    fn restoration_limits_table_7_2() {
        let p = p();
        // (level, intra_city, intra_province, inter_province), hours.
        let table = [
            (Aaa, 2, 2, 4),
            (Aa, 4, 4, 5),
            (A, 6, 6, 6),
            (Ordinary, 8, 8, 8),
        ];
        for (level, city, province, inter) in table {
            assert_eq!(p.restore_limit(level, Scope::IntraCity), h(city), "{level}");
            assert_eq!(
                p.restore_limit(level, Scope::IntraProvince),
                h(province),
                "{level}"
            );
            assert_eq!(
                p.restore_limit(level, Scope::InterProvince),
                h(inter),
                "{level}"
            );
        }
    }

    #[test]
    fn dispatch_and_escalation() {
        let p = p();
        assert_eq!(p.accept_within(), m(10));
        assert_eq!(
            p.escalation_steps(true),
            &[
                EscalationStep {
                    after: h(1),
                    action: EscalationAction::JointHandling,
                    level: 1
                },
                EscalationStep {
                    after: h(2),
                    action: EscalationAction::AllTeamsOnSite,
                    level: 2
                },
            ]
        );
        assert_eq!(
            p.escalation_steps(false),
            &[EscalationStep {
                after: h(3),
                action: EscalationAction::JointHandling,
                level: 1
            }]
        );
        assert_eq!(p.joint_bulletin_every(), h(1));
        assert_eq!(p.leadership_notice_levels(), &[Aaa, Aa]);
    }

    #[test]
    fn importance() {
        let p = p();
        for level in [Key, Diamond, Gold] {
            assert!(p.is_important(level, Ordinary), "{level}");
        }
        for level in [Silver, Bronze, Standard] {
            assert!(!p.is_important(level, Aa), "{level}");
            assert!(p.is_important(level, Aaa), "{level} on an AAA circuit");
        }
    }

    #[test]
    fn feedback_table_7_3_and_reports_table_7_4() {
        let p = p();
        for level in [Key, Diamond, Gold] {
            assert_eq!(p.feedback_every(level), Some(m(30)), "{level}");
            assert_eq!(
                p.written_report(level),
                WrittenReport::Always(ReportDeadline::WorkingDays(2)),
                "{level}"
            );
        }
        assert_eq!(p.feedback_every(Silver), Some(h(1)));
        assert_eq!(p.feedback_every(Bronze), None);
        assert_eq!(p.feedback_every(Standard), None);
        assert_eq!(p.post_restore_feedback_within(), m(30));
        assert_eq!(
            p.written_report(Silver),
            WrittenReport::OnRequest(Some(ReportDeadline::Elapsed(Duration::days(7))))
        );
        assert_eq!(p.written_report(Bronze), WrittenReport::OnRequest(None));
        assert_eq!(p.written_report(Standard), WrittenReport::OnRequest(None));
    }

    #[test]
    fn written_report_due_in_working_days() {
        let p = p();
        // Restored Friday 2026-01-09 15:00 Shanghai → due by end of Tuesday 01-13.
        let restored: DateTime<Utc> = "2026-01-09T07:00:00Z".parse().expect("test instant");
        let Some(deadline) = p.written_report(Gold).deadline() else {
            panic!("gold has a deadline");
        };
        assert_eq!(
            p.due(deadline, restored),
            "2026-01-13T16:00:00Z"
                .parse::<DateTime<Utc>>()
                .expect("test instant")
        );
        let week = ReportDeadline::Elapsed(Duration::days(7));
        assert_eq!(p.due(week, restored), restored + Duration::days(7));
    }

    #[test]
    fn network_quality_table_7_5_and_availability() {
        let p = p();
        let table = [
            (Aaa, 4, 6, 0.9999),
            (Aa, 6, 12, 0.9999),
            (A, 8, 24, 0.9986),
            (Ordinary, 10, 48, 0.9972),
        ];
        for (level, failures, outage_h, availability) in table {
            assert_eq!(p.annual_failure_limit(level), failures, "{level}");
            assert_eq!(p.annual_outage_limit(level), h(outage_h), "{level}");
            assert_eq!(p.availability_target(level), availability, "{level}");
        }
    }

    #[test]
    fn operational_defaults() {
        let p = p();
        assert_eq!(p.budget_risk_threshold(), 0.8);
        assert_eq!(p.deadline_risk_fraction(), 0.8);
        assert_eq!(p.hold_down(), m(15));
        assert_eq!(p.late_alarm_allowance(), m(10));
        assert_eq!(p.max_future_skew(), h(1));
        assert_eq!(p.time_zone(), chrono_tz::Asia::Shanghai);
        for s in [Severity::Critical, Severity::Major, Severity::Minor] {
            assert!(p.is_service_affecting(s), "{s}");
        }
        for s in [
            Severity::Warning,
            Severity::Indeterminate,
            Severity::Cleared,
        ] {
            assert!(!p.is_service_affecting(s), "{s}");
        }
        let cal = p.calendar();
        assert_eq!(cal.holidays().count(), 0);
        assert!(cal.is_weekend(Weekday::Sat) && cal.is_weekend(Weekday::Sun));
        assert!(!cal.is_weekend(Weekday::Fri));
    }

    #[test]
    fn notice_day_count_exclusive_and_inclusive_at_the_edge() {
        use crate::maintenance::MaintenanceWindow;
        let sh = |s: &str| -> DateTime<Utc> { s.parse().expect("valid instant") };
        // Notice on Monday 2026-01-05 at 17:00 for works on Monday 2026-01-12 at 01:00.
        let window = |notice: &str| MaintenanceWindow {
            window_id: "W-EDGE".into(),
            objects: vec!["PTN-1".into()],
            circuits: vec![],
            start: sh("2026-01-12T01:00:00+08:00"),
            end: sh("2026-01-12T03:00:00+08:00"),
            notice_given_at: sh(notice),
            emergency: false,
            cross_border: false,
        };
        let monday = window("2026-01-05T17:00:00+08:00");
        let exclusive = Policy::builtin();
        assert_eq!(exclusive.notice_day_count(), NoticeDayCount::Exclusive);
        let check = monday.notice_check(CustomerLevel::Gold, &exclusive);
        assert_eq!(
            (check.required_days, check.given_days, check.compliant),
            (5, 4, false),
            "Tuesday to Friday"
        );
        let text =
            DEFAULT_POLICY_TOML.replace("day_count = \"exclusive\"", "day_count = \"inclusive\"");
        let inclusive = Policy::from_toml_str(&text).expect("valid policy");
        assert_eq!(inclusive.notice_day_count(), NoticeDayCount::Inclusive);
        let check = monday.notice_check(CustomerLevel::Gold, &inclusive);
        assert_eq!(
            (check.given_days, check.compliant),
            (5, true),
            "Monday to Friday"
        );
        // A notice on Saturday 2026-01-03 gains nothing from its own date; on the day of
        // the works, no day at all either way.
        let saturday = window("2026-01-03T10:00:00+08:00");
        assert_eq!(
            saturday
                .notice_check(CustomerLevel::Gold, &inclusive)
                .given_days,
            5
        );
        assert_eq!(
            saturday
                .notice_check(CustomerLevel::Gold, &exclusive)
                .given_days,
            5
        );
        let same_day = window("2026-01-12T00:10:00+08:00");
        assert_eq!(
            same_day
                .notice_check(CustomerLevel::Gold, &inclusive)
                .given_days,
            0
        );
        // Absent: exclusive. Unknown: refused, naming the key.
        let absent = DEFAULT_POLICY_TOML.replace("day_count = \"exclusive\"\n", "");
        assert_eq!(
            Policy::from_toml_str(&absent)
                .expect("valid policy")
                .notice_day_count(),
            NoticeDayCount::Exclusive
        );
        let bad = DEFAULT_POLICY_TOML.replace("day_count = \"exclusive\"", "day_count = \"both\"");
        let err = Policy::from_toml_str(&bad)
            .expect_err("refused")
            .to_string();
        assert!(err.contains("day_count"), "{err}");
    }

    #[test]
    fn notice_lead_times() {
        let p = p();
        for level in CustomerLevel::ALL {
            assert_eq!(p.notice_lead_working_days(level, false, false), 5);
            assert_eq!(p.notice_lead_working_days(level, true, false), 1);
            assert_eq!(p.notice_lead_working_days(level, false, true), 7);
            assert_eq!(p.notice_lead_working_days(level, true, true), 1);
        }
        // 004's table as per-level overrides.
        assert!(DEFAULT_POLICY_TOML.ends_with("[notice.by_customer_level]\n"));
        let text = format!(
            "{DEFAULT_POLICY_TOML}gold = {{ working_days = 7 }}\nsilver = {{ working_days = 5 }}\n\
             bronze = {{ working_days = 4, cross_border_working_days = 9 }}\n"
        );
        let q = Policy::from_toml_str(&text).expect("valid overrides");
        assert_eq!(q.notice_lead_working_days(Gold, false, false), 7);
        assert_eq!(q.notice_lead_working_days(Silver, false, false), 5);
        assert_eq!(q.notice_lead_working_days(Bronze, false, false), 4);
        assert_eq!(q.notice_lead_working_days(Bronze, false, true), 9);
        assert_eq!(q.notice_lead_working_days(Gold, false, true), 7);
        assert_eq!(q.notice_lead_working_days(Gold, true, false), 1);
        assert_eq!(q.notice_lead_working_days(Standard, false, false), 5);
    }

    #[test]
    fn routing_default() {
        let p = p();
        assert_eq!(
            p.lead_team("nms-1", Some("transmission"), None, "LOS"),
            "transport"
        );
        assert_eq!(
            p.lead_team("nms-1", Some("Transmission"), None, "AIS"),
            "transport"
        );
        for ne in ["SDH", "MSTP", "PTN", "OTN", "WDM", "otn"] {
            assert_eq!(
                p.lead_team("", None, Some(ne), "linkDown"),
                "transport",
                "{ne}"
            );
        }
        assert_eq!(
            p.lead_team(
                "nms-2",
                Some("data"),
                Some("router"),
                "bgpBackwardTransition"
            ),
            "service-support"
        );
        assert_eq!(p.lead_team("", None, None, "LOS"), "service-support");
        assert_eq!(
            p.lead_team("", Some("cpe"), Some("CPE"), "linkDown"),
            "service-support"
        );
    }

    #[test]
    fn notified_teams() {
        let p = p();
        assert_eq!(
            p.notify_teams(true, "transport"),
            vec!["data-network", "service-support"]
        );
        assert_eq!(
            p.notify_teams(true, "service-support"),
            vec!["transport", "data-network"]
        );
        assert_eq!(p.notify_teams(false, "transport"), vec!["service-support"]);
        assert!(p.notify_teams(false, "service-support").is_empty());
    }

    fn alarm(cause: &str, object_type: Option<&str>) -> Alarm {
        let t: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().expect("test instant");
        Alarm {
            id: "1".into(),
            source_system: "nms".into(),
            object: "NE1/1/1".into(),
            object_type: object_type.map(str::to_string),
            state: AlarmState::Raised,
            severity: Severity::Critical,
            probable_cause: cause.into(),
            alarm_type: "CommunicationsAlarm".into(),
            specific_problem: None,
            raised_at: t,
            cleared_at: None,
            event_time: t,
        }
    }

    #[test]
    fn cause_classes_of_realistic_names() {
        let p = p();
        let class = |cause: &str, ne: Option<&str>, domain: Option<&str>| {
            p.cause_class(&alarm(cause, ne), domain)
        };
        // Vendor and standard names, '|'-separated.
        let physical = "LOS|R_LOS|ETH_LOS|OTS_LOS|T_ALOS|LOS-L|lossOfSignal|Loss of Signal|\
            LOF|R_LOF|OTU2_LOF|OOF|Fibre cut|fiberCut|POWER_FAIL|powerProblem|\
            equipmentMalfunction|HARD_BAD|BD_STATUS|Card failure|boardFault";
        for cause in physical.split('|') {
            assert_eq!(class(cause, None, None), CauseClass::Physical, "{cause}");
        }
        let consequential = "AIS|MS-AIS|MS_AIS|AU-AIS|AU_AIS|TU-AIS|TU_AIS|ODU-AIS|ODU2_PM_AIS|\
            AIS-P|RDI|MS_RDI|HP-RDI|FERF|OTU_BDI|ODU_PM_BDI|LOP|AU_LOP|TU-LOP|UNEQ|HP_UNEQ|\
            ODU_LCK|OPU_CSF|alarmIndicationSignal";
        for cause in consequential.split('|') {
            assert_eq!(
                class(cause, None, None),
                CauseClass::Consequential,
                "{cause}"
            );
        }
        // Link down is physical on transmission, a data-link fault elsewhere.
        assert_eq!(
            class("linkDown", None, Some("transmission")),
            CauseClass::Physical
        );
        assert_eq!(class("LINK_DOWN", Some("PTN"), None), CauseClass::Physical);
        let data_link = "linkDown|LINK_DOWN|ETH_LINK_DOWN|PORT_DOWN|ifDown|interface down|\
            hwLacpNegotiateFailed|LACP_FAIL|LAG_DOWN|CRC_ERR|hwIfMonitorCrcErrorRising|MAC_FCS_EXC";
        for cause in data_link.split('|') {
            let got = class(cause, Some("router"), Some("data"));
            assert_eq!(got, CauseClass::DataLink, "{cause}");
        }
        let ip = "bgpBackwardTransition|hwBgpPeerSessionDown|BGP_PEER_DOWN|ospfNbrStateChange|\
            ISIS_ADJACENCY_DOWN|mplsLdpSessionDown|BFD_SESSION_DOWN|neighbourDown|ping loss|\
            PING_TIMEOUT|PW_DOWN";
        for cause in ip.split('|') {
            assert_eq!(
                class(cause, Some("router"), Some("data")),
                CauseClass::Ip,
                "{cause}"
            );
        }
        for cause in ["HIGH_TEMPERATURE", "FAN_FAIL_PARTIAL", "NE_COMMU_BREAK", ""] {
            assert_eq!(class(cause, None, None), CauseClass::Other, "{cause}");
        }
    }

    #[test]
    fn cause_classes_order_best_root_first() {
        assert!(CauseClass::Physical < CauseClass::Consequential);
        assert!(CauseClass::Consequential < CauseClass::DataLink);
        assert!(CauseClass::DataLink < CauseClass::Ip);
        assert!(CauseClass::Ip < CauseClass::Other);
        let p = p();
        let best = ["bgpBackwardTransition", "MS-AIS", "R_LOS", "linkDown"]
            .iter()
            .map(|c| (p.cause_class(&alarm(c, None), Some("data")), *c))
            .min();
        assert_eq!(best, Some((CauseClass::Physical, "R_LOS")));
    }

    #[test]
    fn globs() {
        let g = |p: &str, t: &str| Glob::new(p).matches(&t.to_lowercase());
        assert!(g("LOS", "los"));
        assert!(!g("LOS", "R_LOS"));
        assert!(g("*_LOS", "R_LOS"));
        assert!(!g("*_LOS", "_LO"));
        assert!(g("*link*down*", "linkDown"));
        assert!(g("*link*down*", "ETH_LINK_DOWN"));
        assert!(!g("*link*down*", "downlink"));
        assert!(g("a*a", "aa"));
        assert!(!g("a*a", "a"));
        assert!(g("*", ""));
        assert!(g("光*丢失", "光信号丢失"));
        assert!(g("OTU*_LOF", "otu2_lof"));
    }

    // ---- refusals: each names the key ------------------------------------------------

    fn refused(text: &str) -> PolicyError {
        match Policy::from_toml_str(text) {
            Ok(_) => panic!("policy should have been refused"),
            Err(e) => e,
        }
    }

    fn with(old: &str, new: &str) -> String {
        assert!(
            DEFAULT_POLICY_TOML.contains(old),
            "default policy has {old:?}"
        );
        DEFAULT_POLICY_TOML.replacen(old, new, 1)
    }

    fn assert_refused(text: &str, key: &str, reason: &str) {
        let e = refused(text);
        assert_eq!(e.key(), Some(key), "{e}");
        let msg = e.to_string();
        assert!(msg.starts_with(key), "{msg}");
        assert!(msg.contains(reason), "{msg:?} should contain {reason:?}");
    }

    /// The default policy with its `[tickets]` table replaced by `table`.
    fn with_tickets(table: &str) -> String {
        let start = DEFAULT_POLICY_TOML
            .find("[tickets]\n")
            .expect("the default has [tickets]");
        let end = DEFAULT_POLICY_TOML
            .find("[alarms]\n")
            .expect("the default has [alarms]");
        format!(
            "{}{table}\n{}",
            &DEFAULT_POLICY_TOML[..start],
            &DEFAULT_POLICY_TOML[end..]
        )
    }

    const SEVERITY_NAMES: &str = r#"severity = { critical = "Critical", major = "Major", minor = "Minor", warning = "Warning", indeterminate = "Unknown" }"#;

    #[test]
    fn ticket_severity_and_priority_by_default() {
        let p = p();
        let active = [
            Severity::Critical,
            Severity::Major,
            Severity::Minor,
            Severity::Warning,
            Severity::Indeterminate,
        ];
        for s in active {
            assert_eq!(p.ticket_severity(s), s.as_str());
        }
        // A root alarm is never cleared; were it, the ticket reads indeterminate.
        assert_eq!(p.ticket_severity(Severity::Cleared), "indeterminate");
        for (level, want) in [(Aaa, "1"), (Aa, "2"), (A, "3"), (Ordinary, "4")] {
            for s in active.into_iter().chain([Severity::Cleared]) {
                assert_eq!(p.ticket_priority(level, s), want, "{level:?} {s:?}");
            }
        }
        // Without a [tickets] table, the same as the default file says.
        let q = Policy::from_toml_str(&with_tickets("")).expect("tickets is optional");
        for level in AssuranceLevel::ALL {
            for s in active {
                assert_eq!(q.ticket_priority(level, s), p.ticket_priority(level, s));
                assert_eq!(q.ticket_severity(s), p.ticket_severity(s));
            }
        }
    }

    #[test]
    fn ticket_priority_by_level_and_severity() {
        let text = with_tickets(&format!(
            r#"[tickets]
{SEVERITY_NAMES}
[tickets.priority]
AAA = {{ critical = "1", major = "1", minor = "2", warning = "3", indeterminate = "2" }}
AA = {{ critical = "1", major = "2", minor = "3", warning = "4", indeterminate = "3" }}
A = {{ critical = "2", major = "3", minor = "4", warning = "5", indeterminate = "4" }}
ordinary = {{ critical = "3", major = "4", minor = "5", warning = "5", indeterminate = " Low " }}
"#
        ));
        let p = Policy::from_toml_str(&text).expect("valid tickets table");
        assert_eq!(p.ticket_severity(Severity::Critical), "Critical");
        assert_eq!(p.ticket_severity(Severity::Indeterminate), "Unknown");
        assert_eq!(p.ticket_severity(Severity::Cleared), "Unknown");
        // Each cell of the matrix, corners and neighbours.
        assert_eq!(p.ticket_priority(Aaa, Severity::Critical), "1");
        assert_eq!(p.ticket_priority(Aaa, Severity::Minor), "2");
        assert_eq!(p.ticket_priority(Aaa, Severity::Warning), "3");
        assert_eq!(p.ticket_priority(Aa, Severity::Critical), "1");
        assert_eq!(p.ticket_priority(Aa, Severity::Major), "2");
        assert_eq!(p.ticket_priority(A, Severity::Warning), "5");
        assert_eq!(p.ticket_priority(Ordinary, Severity::Critical), "3");
        // Trimmed; cleared reads as indeterminate.
        assert_eq!(p.ticket_priority(Ordinary, Severity::Indeterminate), "Low");
        assert_eq!(p.ticket_priority(Ordinary, Severity::Cleared), "Low");
    }

    #[test]
    fn bad_ticket_tables_are_refused() {
        let row = |v: &str| {
            format!(
                r#"{{ critical = "1", major = "1", minor = "1", warning = "1", indeterminate = {v} }}"#
            )
        };
        let table = |aaa: &str, extra: &str| {
            with_tickets(&format!(
                "[tickets]\n{SEVERITY_NAMES}\n[tickets.priority]\nAAA = {aaa}\nAA = {r}\nA = {r}\n{extra}",
                r = row("\"1\"")
            ))
        };
        let full = format!("ordinary = {}\n", row("\"4\""));
        // 64 characters is the most.
        let longest = format!("\"{}\"", "x".repeat(64));
        let p = Policy::from_toml_str(&table(&row(&longest), &full)).expect("64 characters");
        assert_eq!(p.ticket_priority(Aaa, Severity::Indeterminate).len(), 64);
        let too_long = format!("\"{}\"", "x".repeat(65));
        assert_refused(
            &table(&row(&too_long), &full),
            "tickets.priority.AAA.indeterminate",
            "1 to 64 characters",
        );
        assert_refused(
            &table(&row("\"  \""), &full),
            "tickets.priority.AAA.indeterminate",
            "1 to 64 characters",
        );
        assert_refused(
            &table(&row("\"1\\u0007x\""), &full),
            "tickets.priority.AAA.indeterminate",
            "printable",
        );
        assert_refused(
            &table(&row("1"), &full),
            "tickets.priority.AAA.indeterminate",
            "invalid type",
        );
        assert_refused(
            &table(&row("\"1\""), ""),
            "tickets.priority.ordinary",
            "missing",
        );
        assert_refused(
            &table(
                r#"{ critical = "1", major = "1", minor = "1", warning = "1" }"#,
                &full,
            ),
            "tickets.priority.AAA.indeterminate",
            "missing",
        );
        assert_refused(
            &table(
                r#"{ critical = "1", major = "1", minor = "1", warning = "1", indeterminate = "1", cleared = "9" }"#,
                &full,
            ),
            "tickets.priority.AAA.cleared",
            "unknown key",
        );
        assert_refused(
            &with(
                r#"severity = { critical = "critical", major = "major", minor = "minor", warning = "warning", indeterminate = "indeterminate" }"#,
                "",
            ),
            "tickets.severity",
            "missing",
        );
        assert_refused(
            &with(
                r#"severity = { critical = "critical""#,
                r#"severity = { critical = """#,
            ),
            "tickets.severity.critical",
            "1 to 64 characters",
        );
    }

    #[test]
    fn zero_and_negative_durations_are_refused() {
        assert_refused(
            &with(r#"inter_province = "4h""#, r#"inter_province = "0h""#),
            "restoration.limit.AAA.inter_province",
            r#"must be a positive duration, got "0h""#,
        );
        assert_refused(
            &with(r#"accept_within = "10m""#, r#"accept_within = "-10m""#),
            "dispatch.accept_within",
            "must not be negative",
        );
        assert_refused(
            &with(r#"{ after = "2h", action"#, r#"{ after = "30m", action"#),
            "escalation.important[1].after",
            "increasing order",
        );
        assert_refused(
            &with(r#"silver = "1h""#, r#"silver = "soon""#),
            "feedback.progress_every.silver",
            r#"got "soon""#,
        );
        assert_refused(
            &with(r#"accept_within = "10m""#, r#"accept_within = 10"#),
            "dispatch.accept_within",
            "invalid type",
        );
        assert_refused(
            &with(r#"ordinary = "48h""#, r#"ordinary = "0s""#),
            "network_quality.outage_per_year.ordinary",
            "positive",
        );
    }

    #[test]
    fn unknown_and_missing_keys_are_refused() {
        assert_refused(
            &with("AAA      = {", "AAAA = {"),
            "restoration.limit.AAAA",
            "unknown key",
        );
        assert_refused(
            &with(r#", inter_province = "5h" }"#, " }"),
            "restoration.limit.AA.inter_province",
            "missing",
        );
        assert_refused(
            &with("hold_down = ", "hold_dwon = "),
            "faults.hold_dwon",
            "unknown key",
        );
        assert_refused(
            &with(
                "customer_levels = [\"key\", ",
                "customer_levels = [\"platinum\", ",
            ),
            "importance.customer_levels[0]",
            "platinum",
        );
        assert_refused(
            &with("hold_down = \"15m\"", ""),
            "faults.hold_down",
            "missing",
        );
        assert_refused(
            &with("time_zone = \"Asia/Shanghai\"", ""),
            "time_zone",
            "missing",
        );
        assert_refused(
            &with("silver = { when = \"on_request\", within = \"7d\" }\n", ""),
            "feedback.written_report.silver",
            "missing",
        );
    }

    #[test]
    fn bad_values_are_refused() {
        assert_refused(
            &with(
                r#"time_zone = "Asia/Shanghai""#,
                r#"time_zone = "Mars/Base""#,
            ),
            "time_zone",
            r#"unknown time zone "Mars/Base""#,
        );
        assert_refused(
            &with("budget_threshold = 0.8", "budget_threshold = 1.5"),
            "risk.budget_threshold",
            "must be a fraction in (0, 1], got 1.5",
        );
        assert_refused(
            &with("deadline_fraction = 0.8", "deadline_fraction = 0.0"),
            "risk.deadline_fraction",
            "(0, 1]",
        );
        assert_refused(
            &with("AAA = 0.9999", "AAA = 99.99"),
            "network_quality.availability.AAA",
            "got 99.99",
        );
        assert_refused(
            &with("AAA = 4,", "AAA = 0,"),
            "network_quality.failures_per_year.AAA",
            "at least 1",
        );
        assert_refused(
            &with(
                r#"service_affecting = ["critical""#,
                r#"service_affecting = ["cleared""#,
            ),
            "alarms.service_affecting[0]",
            "cleared",
        );
        assert_refused(
            &with(
                r#"gold = { when = "always", within_working_days = 2 }"#,
                r#"gold = { when = "always" }"#,
            ),
            "feedback.written_report.gold",
            "needs a deadline",
        );
    }

    #[test]
    fn bad_routing_and_rules_are_refused() {
        assert_refused(
            &with(
                r#"default_team = "service-support""#,
                r#"default_team = "noc""#,
            ),
            "routing.default_team",
            r#"unknown team "noc""#,
        );
        assert_refused(
            &with("team = \"transport\"\n", "team = \"transmission\"\n"),
            "routing.rules[0].team",
            "unknown team",
        );
        assert_refused(
            &with(
                "domains = [\"transmission\"]\nne_types = [\"SDH\", \"MSTP\", \"PTN\", \"OTN\", \"WDM\"]\n\n# Notice",
                "\n# Notice",
            ),
            "routing.rules[0]",
            "must list",
        );
        assert_refused(
            &with(r#"class = "data_link""#, r#"class = "datalink""#),
            "cause_classes[4].class",
            "unknown variant",
        );
        assert_refused(
            &with(
                r#"probable_causes = ["*link*down*", "*port*down*", "ifDown", "*interface*down*"]
domains"#,
                "probable_causes = []\ndomains",
            ),
            "cause_classes[2].probable_causes",
            "at least one",
        );
    }

    #[test]
    fn calendar_keys() {
        let text = with(
            "holidays = []\nmake_up_working_days = []",
            "holidays = [\"2026-01-01\", { from = 2026-10-01, to = \"2026-10-07\" }]\n\
             make_up_working_days = [2026-10-10]",
        );
        let p = Policy::from_toml_str(&text).expect("valid calendar");
        let cal = p.calendar();
        let d = |y, mo, da| NaiveDate::from_ymd_opt(y, mo, da).expect("test date");
        assert!(!cal.is_working_day(d(2026, 1, 1)));
        assert!(!cal.is_working_day(d(2026, 10, 7)));
        assert!(cal.is_working_day(d(2026, 10, 8)));
        assert!(cal.is_working_day(d(2026, 10, 10)), "make-up Saturday");
        assert_eq!(cal.holidays().count(), 8);

        assert_refused(
            &with(
                "make_up_working_days = []",
                "make_up_working_days = [\"2026-10-12\"]",
            ),
            "calendar.make_up_working_days",
            "not a weekend day",
        );
        assert_refused(
            &with("holidays = []", "holidays = [\"2026-02-30\"]"),
            "calendar.holidays[0]",
            "2026-02-30",
        );
        assert_refused(
            &with(
                "holidays = []",
                "holidays = [{ from = \"2026-10-07\", to = \"2026-10-01\" }]",
            ),
            "calendar.holidays[0]",
            "before it starts",
        );
        assert_refused(
            &with(
                r#"weekend = ["sat", "sun"]"#,
                r#"weekend = ["sat", "sunday", "funday"]"#,
            ),
            "calendar.weekend[2]",
            "funday",
        );
    }

    /// The TOML block of policy/README.md that starts with `header`.
    fn readme_block(header: &str) -> &'static str {
        let readme = include_str!("../policy/README.md");
        let start = readme
            .find(&format!("```toml\n{header}"))
            .map(|i| i + "```toml\n".len())
            .expect("README has the block");
        let len = readme[start..].find("```").expect("block is closed");
        &readme[start..start + len]
    }

    #[test]
    fn readme_examples_are_valid() {
        let default_calendar = "[calendar]\nweekend = [\"sat\", \"sun\"]\nholidays = []\n\
                                make_up_working_days = []\n";
        let text = with(default_calendar, readme_block("[calendar]"));
        let p = Policy::from_toml_str(&text).expect("README calendar is valid");
        let d = |y, mo, da| NaiveDate::from_ymd_opt(y, mo, da).expect("test date");
        assert!(!p.calendar().is_working_day(d(2025, 10, 8)));
        assert!(p.calendar().is_working_day(d(2025, 10, 11)));
        assert!(p.calendar().is_working_day(d(2025, 2, 8)));

        let text = with(
            "[notice.by_customer_level]\n",
            readme_block("[notice.by_customer_level]"),
        );
        let p = Policy::from_toml_str(&text).expect("README notice block is valid");
        assert_eq!(p.notice_lead_working_days(Gold, false, false), 7);
        assert_eq!(p.notice_lead_working_days(Standard, false, false), 4);
    }

    #[test]
    fn syntax_errors_give_a_line() {
        let e = refused("time_zone = \"Asia/Shanghai\"\n[calendar\n");
        assert!(
            matches!(e, PolicyError::Syntax { line: Some(2), .. }),
            "{e:?}"
        );
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sla.toml");
        std::fs::write(
            &path,
            with("deadline_fraction = 0.8", "deadline_fraction = 2.0"),
        )
        .expect("write policy");
        let e = Policy::load(&path).expect_err("refused");
        assert_eq!(e.key(), Some("risk.deadline_fraction"));
        assert!(e.to_string().contains("sla.toml"), "{e}");

        std::fs::write(&path, DEFAULT_POLICY_TOML).expect("write policy");
        assert!(Policy::load(&path).is_ok());
        let missing = Policy::load(&dir.path().join("absent.toml"));
        assert!(matches!(missing, Err(PolicyError::Read { .. })));
    }
}
