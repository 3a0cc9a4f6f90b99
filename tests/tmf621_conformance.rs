//! Every ticket event the service emits is valid against the official TMF621 Trouble
//! Ticket API v4.0.0 (issue 14): each event is checked against the swagger's definition of
//! its `eventType` (TroubleTicketCreateEvent, TroubleTicketStatusChangeEvent,
//! TroubleTicketAttributeValueChangeEvent), with the official document
//! (tests/fixtures/tmf621/, an unchanged copy) as the root of its `#/definitions/...` refs.
//! The events come from the engine (opened, acknowledged, acceptance overdue, escalations,
//! bulletins, feedback, deadline at risk and breached, planned works, reclassified,
//! restored, reopened, closed, closed by hand) and from the replay example.

mod scenario;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use linewatch::alarm::AlarmState;
use linewatch::engine::{CommandAction, Engine, Input, TicketCommand};
use linewatch::inventory::{InventoryChange, ObjectKind};
use linewatch::levels::{AssuranceLevel, CustomerLevel, Scope, Severity};
use linewatch::maintenance::MaintenanceWindow;
use linewatch::policy::Policy;
use linewatch::replay::replay;
use linewatch::ticket::{ticket_id, FaultCause, TicketEvent};
use scenario::*;
use serde_json::{json, Value};

const EVENT_TYPES: [&str; 3] = [
    "TroubleTicketCreateEvent",
    "TroubleTicketStatusChangeEvent",
    "TroubleTicketAttributeValueChangeEvent",
];

/// The official swagger's `definitions`.
fn definitions() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tmf621/TMF621-TroubleTicket-v4.0.0.swagger.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let swagger: Value = serde_json::from_str(&text).expect("swagger is JSON");
    assert_eq!(swagger["swagger"], "2.0");
    assert_eq!(swagger["info"]["version"], "4.0.0");
    swagger["definitions"].clone()
}

/// One validator per event type: `{"$ref": "#/definitions/<type>", "definitions": ...}`,
/// read as draft 4 (Swagger 2's schema dialect), formats (date-time, uri) checked.
fn validators() -> BTreeMap<&'static str, jsonschema::Validator> {
    let defs = definitions();
    EVENT_TYPES
        .iter()
        .map(|name| {
            assert!(defs.get(name).is_some(), "the swagger defines {name}");
            let schema = json!({ "$ref": format!("#/definitions/{name}"), "definitions": defs });
            let v = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft4)
                .should_validate_formats(true)
                .build(&schema)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            (*name, v)
        })
        .collect()
}

/// The errors of one serialized event against the definition its `eventType` names.
fn errors(
    validators: &BTreeMap<&'static str, jsonschema::Validator>,
    event: &Value,
) -> Vec<String> {
    let Some(kind) = event["eventType"].as_str() else {
        return vec!["no eventType".into()];
    };
    let Some(v) = validators.get(kind) else {
        return vec![format!("eventType {kind} is not one of {EVENT_TYPES:?}")];
    };
    v.iter_errors(event)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

/// Check every event; the failures are listed together, one per event (first three errors).
fn assert_all_valid(events: &[Value]) {
    let validators = validators();
    let failures: Vec<String> = events
        .iter()
        .filter_map(|e| {
            let errs = errors(&validators, e);
            (!errs.is_empty()).then(|| {
                format!(
                    "{} ({} {}): {:?}",
                    e["eventId"],
                    e["eventType"],
                    e["slaEvent"]["kind"],
                    errs.iter().take(3).collect::<Vec<_>>()
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} ticket events are not valid TMF621 v4.0.0 events:\n{}",
        failures.len(),
        events.len(),
        failures.join("\n")
    );
}

/// What is not in TMF621 but the service promises on top of it.
fn assert_extensions(event: &Value) {
    let t = &event["event"]["troubleTicket"];
    assert_eq!(t["@type"], "DedicatedLineFaultTicket", "{event}");
    assert_eq!(t["@baseType"], "TroubleTicket", "{event}");
    assert!(
        t["sla"].is_object() && t["rootCause"].is_object(),
        "{event}"
    );
    // A TMF field that is not known is left out, never null.
    let defs = definitions();
    let tmf_fields = defs["TroubleTicket"]["properties"]
        .as_object()
        .expect("TroubleTicket properties");
    for (k, v) in t.as_object().expect("ticket object") {
        if tmf_fields.contains_key(k) {
            assert!(!v.is_null(), "{k} is null in {event}");
        }
    }
    for p in t["relatedParty"].as_array().expect("relatedParty") {
        let want = if p["role"] == "customer" {
            "Customer"
        } else {
            "Organization"
        };
        assert_eq!(p["@referredType"], want, "{p}");
    }
}

fn to_json(events: &[&TicketEvent]) -> Vec<Value> {
    events
        .iter()
        .map(|e| serde_json::to_value(e).expect("serializes"))
        .collect()
}

fn circuit_on(id: &str, port: &str, assurance: AssuranceLevel) -> Input {
    let path = vec![
        element(ObjectKind::Ne, &format!("CPE-{id}"), "cpe", "CPE"),
        element(ObjectKind::Port, port, "transmission", "PTN"),
    ];
    Input::Inventory(InventoryChange::Upsert(Box::new(circuit(
        id,
        CustomerLevel::Key,
        assurance,
        Scope::IntraCity,
        vec![path],
    ))))
}

fn command(
    circuit: &str,
    action: CommandAction,
    cause: Option<FaultCause>,
    h: u32,
    m: u32,
) -> Input {
    Input::Command(TicketCommand {
        ticket_id: ticket_id(circuit, 1),
        circuit_id: circuit.into(),
        action,
        cause,
        at: sh(2026, 4, 1, h, m, 0),
        by: Some("noc-7".into()),
        note: None,
    })
}

/// A day of faults through the engine: every kind of ticket event the service emits.
fn engine_events() -> Vec<Value> {
    let t0 = sh(2026, 4, 1, 9, 0, 0);
    // C1 (AAA): acknowledged late, planned works announced, breached, restored, closed.
    let c1 = alarm("A1", "PTN-NMS", "NE1/1/1", "LOS", Severity::Critical, t0);
    // C2: reclassified as the customer's, then closed by hand.
    let c2 = alarm("A2", "PTN-NMS", "NE2/1/1", "LOS", Severity::Major, t0);
    // C3: back, down again within the hold-down (reopened), back for good, its written
    // report sent; C1's is due by the end of Friday (2 working days after Wednesday).
    let c3 = alarm("A3", "PTN-NMS", "NE3/1/1", "LOS", Severity::Minor, t0);
    let c3_again = alarm(
        "A3b",
        "PTN-NMS",
        "NE3/1/1",
        "LOS",
        Severity::Minor,
        sh(2026, 4, 1, 9, 40, 0),
    );
    let window = MaintenanceWindow {
        window_id: "W-7".into(),
        objects: vec!["NE1/1/1".into()],
        circuits: vec![],
        start: sh(2026, 4, 1, 12, 0, 0),
        end: sh(2026, 4, 1, 13, 0, 0),
        notice_given_at: sh(2026, 4, 1, 9, 50, 0),
        emergency: false,
        cross_border: false,
    };
    let inputs = vec![
        circuit_on("C1", "NE1/1/1", AssuranceLevel::Aaa),
        circuit_on("C2", "NE2/1/1", AssuranceLevel::A),
        circuit_on("C3", "NE3/1/1", AssuranceLevel::Ordinary),
        Input::Alarm(c1.clone()),
        Input::Alarm(c2.clone()),
        Input::Alarm(c3.clone()),
        command(
            "C2",
            CommandAction::Reclassify,
            Some(FaultCause::Customer),
            9,
            10,
        ),
        Input::Alarm(clear(&c3, sh(2026, 4, 1, 9, 30, 0))),
        Input::Alarm(c3_again.clone()),
        command("C1", CommandAction::Acknowledge, None, 9, 45),
        Input::Maintenance(window),
        Input::Alarm(clear(&c3_again, sh(2026, 4, 1, 10, 0, 0))),
        command("C2", CommandAction::Close, None, 11, 0),
        command("C3", CommandAction::WrittenReportSent, None, 11, 30),
        Input::Alarm(clear(&c1, sh(2026, 4, 1, 20, 0, 0))),
    ];
    let mut engine = Engine::new(Policy::builtin());
    let out = run(&mut engine, inputs, sh(2026, 4, 4, 12, 0, 0));
    to_json(&tickets(&out))
}

#[test]
fn the_validator_holds_events_to_the_standard() {
    // What issue 14 found, each alone, on an otherwise valid event: each is rejected, so a
    // pass below means the events conform, not that the schema checks nothing.
    let validators = validators();
    let good = engine_events()
        .into_iter()
        .find(|e| e["eventType"] == "TroubleTicketCreateEvent")
        .expect("a create event");
    assert_eq!(errors(&validators, &good), Vec::<String>::new());
    let t = "/event/troubleTicket";
    let cases = [
        (format!("{t}/priority"), json!(1)),
        (format!("{t}/resolutionDate"), Value::Null),
        (format!("{t}/creationDate"), json!("yesterday")),
        (format!("{t}/status"), json!("open")),
    ];
    for (at, bad) in cases {
        let mut e = good.clone();
        let (parent, field) = at.rsplit_once('/').expect("a path");
        e.pointer_mut(parent).expect("parent")[field] = bad;
        assert!(!errors(&validators, &e).is_empty(), "{at} accepted");
    }
    let mut e = good.clone();
    e.pointer_mut("/event/troubleTicket/relatedParty/0")
        .and_then(Value::as_object_mut)
        .expect("a related party")
        .remove("@referredType");
    assert!(
        !errors(&validators, &e).is_empty(),
        "@referredType not required"
    );
}

#[test]
fn every_engine_ticket_event_is_a_valid_tmf621_v4_event() {
    let events = engine_events();
    let kinds: BTreeSet<String> = events
        .iter()
        .filter_map(|e| e["slaEvent"]["kind"].as_str().map(String::from))
        .collect();
    for kind in [
        "opened",
        "acknowledged",
        "acceptanceOverdue",
        "escalated",
        "bulletinDue",
        "feedbackDue",
        "deadlineAtRisk",
        "deadlineBreached",
        "plannedWorksNoted",
        "reclassified",
        "restored",
        "reopened",
        "postRestoreFeedbackDue",
        "writtenReportDue",
        "writtenReportSent",
        "closed",
        "manuallyClosed",
    ] {
        assert!(kinds.contains(kind), "no {kind} event in {kinds:?}");
    }
    let types: BTreeSet<&str> = events
        .iter()
        .filter_map(|e| e["eventType"].as_str())
        .collect();
    assert_eq!(types, EVENT_TYPES.into_iter().collect(), "every event type");
    assert_all_valid(&events);
    for e in &events {
        assert_extensions(e);
    }
}

#[test]
fn every_replayed_ticket_event_is_a_valid_tmf621_v4_event() {
    let input = tempfile::tempdir().expect("tempdir");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/replay");
    for name in ["inventory.jsonl", "alarms.jsonl", "commands.jsonl"] {
        fs::copy(example.join(name), input.path().join(name)).expect("copy");
    }
    let output = tempfile::tempdir().expect("tempdir");
    replay(input.path(), output.path(), Policy::builtin(), None).expect("replay");
    let text = fs::read_to_string(output.path().join("tickets.jsonl")).expect("read");
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert!(events.len() > 100, "the example makes tickets");
    assert_all_valid(&events);
    for e in &events {
        assert_extensions(e);
    }
}

#[test]
fn ticket_fields_in_tmf621_form() {
    let events = engine_events();
    let of = |circuit: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["event"]["troubleTicket"]["id"] == ticket_id(circuit, 1))
            .collect()
    };
    // Severity follows the root alarm (critical, major, minor), priority is the
    // restoration priority as a string ("1" for AAA through "4" for ordinary).
    for (circuit, severity, priority) in [
        ("C1", "critical", "1"),
        ("C2", "major", "3"),
        ("C3", "minor", "4"),
    ] {
        let evs = of(circuit);
        assert!(!evs.is_empty(), "{circuit}");
        for e in evs {
            let t = &e["event"]["troubleTicket"];
            assert_eq!(t["severity"], severity, "{circuit}: {e}");
            assert_eq!(t["priority"], priority, "{circuit}: {e}");
        }
    }
    // resolutionDate: absent while down, the restoration time once restored.
    for e in of("C1") {
        let t = &e["event"]["troubleTicket"];
        match e["slaEvent"]["kind"].as_str() {
            Some("restored" | "postRestoreFeedbackDue" | "writtenReportDue" | "closed") => {
                assert_eq!(t["resolutionDate"], "2026-04-01T12:00:00Z", "{e}")
            }
            _ => assert!(t.get("resolutionDate").is_none(), "{e}"),
        }
    }
}

#[test]
fn ticket_severity_follows_the_worst_severity_of_its_root_alarm() {
    let t0 = sh(2026, 4, 1, 9, 0, 0);
    let major = alarm("A1", "PTN-NMS", "NE1/1/1", "LOS", Severity::Major, t0);
    let mut critical = major.clone();
    critical.state = AlarmState::Updated;
    critical.severity = Severity::Critical;
    critical.event_time = sh(2026, 4, 1, 9, 5, 0);
    let mut major_again = critical.clone();
    major_again.severity = Severity::Major;
    major_again.event_time = sh(2026, 4, 1, 9, 20, 0);
    let inputs = vec![
        circuit_on("C1", "NE1/1/1", AssuranceLevel::Aaa),
        Input::Alarm(major.clone()),
        Input::Alarm(critical),
        Input::Alarm(major_again),
        Input::Alarm(clear(&major, sh(2026, 4, 1, 10, 0, 0))),
    ];
    let mut engine = Engine::new(Policy::builtin());
    let out = run(&mut engine, inputs, sh(2026, 4, 1, 12, 0, 0));
    let evs = tickets(&out);
    let severity_at = |kind: &str| -> Vec<String> {
        evs.iter()
            .map(|e| serde_json::to_value(e).expect("serializes"))
            .filter(|e| e["slaEvent"]["kind"] == kind)
            .map(|e| e["event"]["troubleTicket"]["severity"].to_string())
            .collect()
    };
    assert_eq!(severity_at("opened"), ["\"major\""]);
    // Upgraded to critical at 09:05 then back to major: the ticket stays critical.
    assert_eq!(severity_at("restored"), ["\"critical\""]);
    assert_all_valid(&to_json(&evs));
}
