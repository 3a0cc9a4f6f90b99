//! Builders shared by the engine scenario tests: circuits, alarms and a driver that feeds
//! inputs in order, advancing the engine's time to each input's event time first.
#![allow(dead_code)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Asia::Shanghai;

use linewatch::alarm::{Alarm, AlarmState};
use linewatch::engine::{Engine, Input, Output};
use linewatch::inventory::{
    Circuit, Customer, ObjectKind, PathElement, Route, RouteRole, ServiceKind,
};
use linewatch::levels::{AssuranceLevel, CustomerLevel, Scope, Severity};
use linewatch::ticket::{SlaReminder, TicketEvent};

/// A local time in Asia/Shanghai, as UTC.
pub fn sh(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Shanghai
        .with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("valid local time")
        .with_timezone(&Utc)
}

pub fn element(kind: ObjectKind, id: &str, domain: &str, ne_type: &str) -> PathElement {
    PathElement {
        kind,
        id: id.to_string(),
        domain: Some(domain.to_string()),
        ne_type: Some(ne_type.to_string()),
        ne: None,
        card: None,
    }
}

pub fn circuit(
    id: &str,
    customer_level: CustomerLevel,
    assurance: AssuranceLevel,
    scope: Scope,
    routes: Vec<Vec<PathElement>>,
) -> Circuit {
    let roles = [RouteRole::Working, RouteRole::Protection];
    Circuit {
        circuit_id: id.to_string(),
        customer: Customer {
            id: format!("CUST-{id}"),
            name: format!("Customer of {id}"),
            level: customer_level,
        },
        assurance_level: assurance,
        scope,
        service: ServiceKind::Data,
        routes: routes
            .into_iter()
            .enumerate()
            .map(|(i, path)| Route {
                role: roles[i.min(1)],
                path,
            })
            .collect(),
    }
}

pub fn alarm(
    id: &str,
    system: &str,
    object: &str,
    cause: &str,
    severity: Severity,
    at: DateTime<Utc>,
) -> Alarm {
    Alarm {
        id: id.to_string(),
        source_system: system.to_string(),
        object: object.to_string(),
        object_type: None,
        state: AlarmState::Raised,
        severity,
        probable_cause: cause.to_string(),
        alarm_type: "communicationsAlarm".to_string(),
        specific_problem: None,
        raised_at: at,
        cleared_at: None,
        event_time: at,
    }
}

pub fn clear(raised: &Alarm, at: DateTime<Utc>) -> Alarm {
    Alarm {
        state: AlarmState::Cleared,
        severity: Severity::Cleared,
        cleared_at: Some(at),
        event_time: at,
        ..raised.clone()
    }
}

/// Event time of an input, for ordering and for the engine's `now`.
pub fn time_of(input: &Input, fallback: DateTime<Utc>) -> DateTime<Utc> {
    match input {
        Input::Alarm(a) => a.event_time,
        Input::Command(c) => c.at,
        Input::Maintenance(w) => w.notice_given_at,
        Input::Inventory(_) | Input::CancelWindow { .. } => fallback,
    }
}

/// Feed inputs in the given order (engine time = each input's event time, never moving
/// back), then advance to `until`. Returns every output.
pub fn run(engine: &mut Engine, inputs: Vec<Input>, until: DateTime<Utc>) -> Vec<Output> {
    let mut out = Vec::new();
    let mut now = DateTime::<Utc>::MIN_UTC;
    for input in inputs {
        now = now.max(time_of(&input, now));
        out.extend(engine.advance(now));
        out.extend(engine.handle(input, now).expect("input accepted"));
    }
    out.extend(engine.advance(until));
    out
}

pub fn tickets(out: &[Output]) -> Vec<&TicketEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Ticket(t) => Some(t.as_ref()),
            _ => None,
        })
        .collect()
}

pub fn reminders(out: &[Output]) -> Vec<&SlaReminder> {
    out.iter()
        .filter_map(|o| match o {
            Output::Reminder(r) => Some(r.as_ref()),
            _ => None,
        })
        .collect()
}

/// Ticket events and reminders in output order, as (ticket id, kind as the topics name it:
/// `opened`, `feedbackDue`, ..., event time).
pub fn timeline(out: &[Output]) -> Vec<(String, String, DateTime<Utc>)> {
    let name = |v: serde_json::Value| match v {
        serde_json::Value::String(s) => s,
        v => v["kind"].as_str().unwrap_or_default().to_string(),
    };
    out.iter()
        .filter_map(|o| match o {
            Output::Ticket(t) => Some((
                t.ticket().id.clone(),
                name(serde_json::to_value(&t.sla_event).unwrap_or_default()),
                t.event_time,
            )),
            Output::Reminder(r) => Some((
                r.ticket_id.clone(),
                name(serde_json::to_value(r.kind).unwrap_or_default()),
                r.event_time,
            )),
            _ => None,
        })
        .collect()
}

pub fn minutes(n: i64) -> Duration {
    Duration::minutes(n)
}

/// Where risk warnings break their chain: for each circuit and period, every warning's
/// `from` must be the previous warning's `to` ("ok" for the first), and its `to` must be
/// worse than the previous `to` (a warning only when the standing got worse), except that
/// a breached circuit is warned again, breached to breached, when it exceeds one more
/// limit (`topics/schemas/risk-warning.schema.json`): its `breaches` must then hold every
/// limit of the previous warning and more. Works on warnings as JSON values (`circuitId`,
/// `period`, `from`, `to`, `breaches`), so that it checks the engine's outputs and the
/// replay's `warnings.jsonl` alike. Returns one line per break.
pub fn warning_chain_breaks<'a>(
    warnings: impl IntoIterator<Item = &'a serde_json::Value>,
) -> Vec<String> {
    let rank = |s: &str| ["ok", "at_risk", "breached"].iter().position(|x| *x == s);
    let limits = |w: &serde_json::Value| -> std::collections::BTreeSet<String> {
        w["breaches"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|b| b.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut last: std::collections::BTreeMap<(String, String), &serde_json::Value> =
        Default::default();
    let mut breaks = Vec::new();
    for w in warnings {
        let (Some(circuit), Some(period), Some(from), Some(to)) = (
            w["circuitId"].as_str(),
            w["period"].as_str(),
            w["from"].as_str(),
            w["to"].as_str(),
        ) else {
            continue; // not a risk warning
        };
        let key = (circuit.to_string(), period.to_string());
        let previous = last.get(&key).copied();
        let previous_to = previous.and_then(|p| p["to"].as_str()).unwrap_or("ok");
        let worse = rank(to) > rank(previous_to)
            || (to == "breached"
                && previous_to == "breached"
                && previous
                    .is_some_and(|p| limits(w).is_superset(&limits(p)) && limits(w) != limits(p)));
        if from != previous_to || !worse {
            breaks.push(format!("{circuit} {period}: after {previous_to}, {w}"));
        }
        last.insert(key, w);
    }
    breaks
}

/// The risk warnings among `out`, as JSON values for [`warning_chain_breaks`].
pub fn risk_warnings(out: &[Output]) -> Vec<serde_json::Value> {
    out.iter()
        .filter_map(|o| match o {
            Output::Warning(linewatch::engine::Warning::Risk(r)) => serde_json::to_value(r).ok(),
            _ => None,
        })
        .collect()
}
