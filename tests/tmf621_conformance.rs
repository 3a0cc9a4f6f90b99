//! Every ticket event the service emits is valid against the official TMF621 Trouble
//! Ticket API v4.0.0 (issue 14): each event is checked against the swagger's definition of
//! its `eventType` (TroubleTicketCreateEvent, TroubleTicketStatusChangeEvent,
//! TroubleTicketAttributeValueChangeEvent), with the official document
//! (tests/fixtures/tmf621/, an unchanged copy) as the root of its `#/definitions/...` refs.
//! The events come from the engine (opened, acknowledged, escalations, planned works,
//! reclassified, severity raised, restored, reopened, written report sent, closed, closed
//! by hand) and from replays of the example and of the simulator's traffic. SLA timers
//! that change nothing on the ticket are not ticket events (issue 14, item 3): they are
//! reminders, and every attribute-value change event names in `fieldPath` exactly the
//! fields that differ from the ticket's previous event.

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
use linewatch::ticket::{ticket_id, FaultCause, ReminderKind, TicketEvent};
use linewatch::tmf621::{to_v5, Tmf621Version};
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
    validators_of(Tmf621Version::V4)
}

/// The official v5.0.1 OAS's `components.schemas`, with each `oneOf` that has a
/// `discriminator` made to honour it (see [`honour_discriminators`]).
fn components_v5() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tmf621/TMF621-Trouble_Ticket-v5.0.1.oas.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let oas: Value = serde_json::from_str(&text).expect("OAS is JSON");
    assert_eq!(oas["openapi"], "3.0.1");
    assert_eq!(oas["info"]["version"], "5.0.1");
    let mut schemas = oas["components"]["schemas"].clone();
    honour_discriminators(&mut schemas);
    json!({ "schemas": schemas })
}

/// OpenAPI 3's `discriminator` picks the `oneOf` branch by the value of `@type`; plain
/// JSON Schema ignores it, and then a `PartyRef` is also a valid `PartyRoleRef` (the
/// latter only adds optional fields), so every `oneOf` of the two fails. Each branch
/// `{"$ref": X}` becomes `{"allOf": [{"$ref": X}, {"@type" one of the mapping's names
/// for X, required}]}`: what OpenAPI tools do with the discriminator.
fn honour_discriminators(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let mapping = o
                .get("discriminator")
                .and_then(|d| d.get("mapping"))
                .and_then(Value::as_object)
                .cloned();
            if let (Some(mapping), Some(Value::Array(branches))) = (mapping, o.get_mut("oneOf")) {
                for b in branches.iter_mut() {
                    let Some(target) = b.get("$ref").cloned() else {
                        continue;
                    };
                    let names: Vec<&String> = mapping
                        .iter()
                        .filter(|(_, t)| **t == target)
                        .map(|(n, _)| n)
                        .collect();
                    *b = json!({"allOf": [
                        {"$ref": target},
                        {"properties": {"@type": {"enum": names}}, "required": ["@type"]}
                    ]});
                }
            }
            for child in o.values_mut() {
                honour_discriminators(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(honour_discriminators),
        _ => {}
    }
}

/// One validator per event type of `version`'s official schema: v4 as above; v5 as
/// `{"$ref": "#/components/schemas/<type>", "components": ...}` (OpenAPI 3.0's schema
/// objects, read as draft 4, formats checked).
fn validators_of(version: Tmf621Version) -> BTreeMap<&'static str, jsonschema::Validator> {
    let (root, defs) = match version {
        Tmf621Version::V4 => ("#/definitions", json!({ "definitions": definitions() })),
        Tmf621Version::V5 => (
            "#/components/schemas",
            json!({ "components": components_v5() }),
        ),
    };
    EVENT_TYPES
        .iter()
        .map(|name| {
            assert!(
                defs.pointer(&format!("{}/{name}", &root[1..])).is_some(),
                "TMF621 {version} defines {name}"
            );
            let mut schema = defs.clone();
            schema["$ref"] = json!(format!("{root}/{name}"));
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
    assert_all_valid_as(Tmf621Version::V4, events);
}

/// [`assert_all_valid`] against `version`'s official schema.
fn assert_all_valid_as(version: Tmf621Version, events: &[Value]) {
    let validators = validators_of(version);
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
        "{} of {} ticket events are not valid TMF621 v{version} events:\n{}",
        failures.len(),
        events.len(),
        failures.join("\n")
    );
}

/// What is not in TMF621 but the service promises on top of it.
fn assert_extensions(event: &Value) {
    let t = &event["event"]["troubleTicket"];
    if t["@type"] == "MassOutageTicket" {
        return assert_parent_extensions(event);
    }
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

/// An incident's parent ticket: its id is the incident's, it lists its children (`isChild`),
/// and carries the `incident` object.
fn assert_parent_extensions(event: &Value) {
    let t = &event["event"]["troubleTicket"];
    assert_eq!(t["@baseType"], "TroubleTicket", "{event}");
    assert_eq!(t["ticketType"], "incident", "{event}");
    assert_eq!(t["id"], t["incident"]["incidentId"], "{event}");
    let children = t["troubleTicketRelationship"]
        .as_array()
        .expect("troubleTicketRelationship");
    // Empty only when every circuit left (their root cause revised): that closes it.
    assert!(!children.is_empty() || t["status"] == "closed", "{event}");
    assert_eq!(
        t["incident"]["circuitCount"].as_u64(),
        Some(children.len() as u64),
        "{event}"
    );
    for c in children {
        assert_eq!(c["relationshipType"], "isChild", "{c}");
        assert!(
            c["id"].as_str().is_some_and(|id| id.starts_with("TT-")),
            "{c}"
        );
    }
    assert!(event.get("slaEvent").is_none(), "{event}");
}

/// The fields that differ between two versions of a ticket, as `fieldPath` names them
/// (`rootCause` and `sla` by their fields), sorted; the fields that move with time alone
/// (`lastUpdate`, `sla.downMinutes`) left out.
fn differing_fields(before: &Value, after: &Value) -> Vec<String> {
    let mut keys: BTreeSet<String> = BTreeSet::new();
    for t in [before, after] {
        keys.extend(t.as_object().expect("ticket").keys().cloned());
    }
    let mut out = Vec::new();
    for k in keys {
        let (b, a) = (&before[k.as_str()], &after[k.as_str()]);
        if b == a {
            continue;
        }
        if k == "sla" || k == "rootCause" || k == "incident" {
            let mut inner: BTreeSet<String> = BTreeSet::new();
            for t in [b, a] {
                inner.extend(t.as_object().expect("object").keys().cloned());
            }
            out.extend(
                inner
                    .into_iter()
                    .filter(|f| b[f.as_str()] != a[f.as_str()])
                    .map(|f| format!("{k}.{f}")),
            );
        } else {
            out.push(k);
        }
    }
    out.retain(|f| f != "lastUpdate" && f != "sla.downMinutes");
    out.sort();
    out
}

/// Per ticket, in event order: the first event creates it, a status change changes its
/// status, and an attribute-value change names in `fieldPath` exactly the fields that
/// differ from the previous event (and some do). Returns one line per event that does
/// not.
fn field_path_breaks(events: &[Value]) -> Vec<String> {
    let mut last: BTreeMap<String, &Value> = BTreeMap::new();
    let mut breaks = Vec::new();
    for e in events {
        let t = &e["event"]["troubleTicket"];
        let id = t["id"].as_str().expect("ticket id").to_string();
        let kind = e["eventType"].as_str().unwrap_or_default();
        let previous = last.insert(id, t);
        let problem = match (previous, kind) {
            (None, "TroubleTicketCreateEvent") | (Some(_), "TroubleTicketStatusChangeEvent")
                if e.get("fieldPath").is_some() =>
            {
                Some("fieldPath on a create or status change event".to_string())
            }
            (None, "TroubleTicketCreateEvent") => None,
            (None, _) | (Some(_), "TroubleTicketCreateEvent") => {
                Some("create event not first".to_string())
            }
            (Some(p), "TroubleTicketStatusChangeEvent") => {
                (p["status"] == t["status"]).then(|| "status unchanged".to_string())
            }
            (Some(p), _) => {
                let want = differing_fields(p, t).join(",");
                let got = e["fieldPath"].as_str().unwrap_or_default();
                (want.is_empty() || want != got || p["status"] != t["status"])
                    .then(|| format!("fieldPath {got:?}, changed {want:?}"))
            }
        };
        if let Some(p) = problem {
            breaks.push(format!("{} ({}): {p}", e["eventId"], e["slaEvent"]["kind"]));
        }
    }
    breaks
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
    engine_output().0
}

/// The ticket events of [`engine_events`], and the kinds of its reminders.
fn engine_output() -> (Vec<Value>, BTreeSet<ReminderKind>) {
    let t0 = sh(2026, 4, 1, 9, 0, 0);
    // C1 (AAA): acknowledged late, planned works announced, breached, restored, closed.
    let c1 = alarm("A1", "PTN-NMS", "NE1/1/1", "LOS", Severity::Critical, t0);
    // C2: reclassified as the customer's, then closed by hand.
    let c2 = alarm("A2", "PTN-NMS", "NE2/1/1", "LOS", Severity::Major, t0);
    // C3: back, down again within the hold-down (reopened), back for good, its written
    // report sent; C1's is due by the end of Friday (2 working days after Wednesday).
    let c3 = alarm("A3", "PTN-NMS", "NE3/1/1", "LOS", Severity::Minor, t0);
    // C1's LOS is upgraded to... it is critical already; C2's goes major to critical.
    let mut c2_worse = c2.clone();
    c2_worse.state = AlarmState::Updated;
    c2_worse.severity = Severity::Critical;
    c2_worse.event_time = sh(2026, 4, 1, 9, 5, 0);
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
        Input::Alarm(c2_worse),
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
    let due = reminders(&out).iter().map(|r| r.kind).collect();
    (to_json(&tickets(&out)), due)
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
    let (events, due) = engine_output();
    let kinds: BTreeSet<String> = events
        .iter()
        .filter_map(|e| e["slaEvent"]["kind"].as_str().map(String::from))
        .collect();
    for kind in [
        "opened",
        "acknowledged",
        "escalated",
        "plannedWorksNoted",
        "reclassified",
        "severityRaised",
        "restored",
        "reopened",
        "writtenReportSent",
        "closed",
        "manuallyClosed",
    ] {
        assert!(kinds.contains(kind), "no {kind} event in {kinds:?}");
    }
    // The SLA timers of the same day are reminders, not ticket events.
    for kind in [
        ReminderKind::AcceptanceOverdue,
        ReminderKind::BulletinDue,
        ReminderKind::FeedbackDue,
        ReminderKind::DeadlineAtRisk,
        ReminderKind::DeadlineBreached,
        ReminderKind::PostRestoreFeedbackDue,
        ReminderKind::WrittenReportDue,
    ] {
        assert!(due.contains(&kind), "no {kind:?} reminder in {due:?}");
        let name = serde_json::to_value(kind).expect("kind");
        assert!(
            !kinds.contains(name.as_str().unwrap_or_default()),
            "{name} as a ticket event"
        );
    }
    let breaks = field_path_breaks(&events);
    assert!(breaks.is_empty(), "{breaks:#?}");
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

/// The ticket events a replay of `input` writes.
fn replayed(input: &Path) -> Vec<Value> {
    let output = tempfile::tempdir().expect("tempdir");
    replay(input, output.path(), Policy::builtin(), None).expect("replay");
    read_events(output.path())
}

/// The ticket events a replay of `input` writes with `--tmf621-version <version>`.
fn replayed_as(input: &Path, version: Tmf621Version) -> Vec<Value> {
    let output = tempfile::tempdir().expect("tempdir");
    let options = linewatch::replay::ReplayOptions {
        tmf621: version,
        ..Default::default()
    };
    linewatch::replay::replay_with(input, output.path(), Policy::builtin(), &options)
        .expect("replay");
    read_events(output.path())
}

fn read_events(output: &Path) -> Vec<Value> {
    let text = fs::read_to_string(output.join("tickets.jsonl")).expect("read");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect()
}

#[test]
fn every_replayed_ticket_event_is_a_valid_tmf621_v4_event() {
    let input = tempfile::tempdir().expect("tempdir");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/replay");
    for name in ["inventory.jsonl", "alarms.jsonl", "commands.jsonl"] {
        fs::copy(example.join(name), input.path().join(name)).expect("copy");
    }
    let events = replayed(input.path());
    assert!(events.len() > 30, "the example makes tickets");
    assert_all_valid(&events);
    for e in &events {
        assert_extensions(e);
    }
    let breaks = field_path_breaks(&events);
    assert!(breaks.is_empty(), "{breaks:#?}");
}

/// Issue 14, "done means": every ticket event of a replay of the simulator's traffic (300
/// circuits, 12 h) is valid, and each attribute change names what changed.
#[test]
fn every_ticket_event_of_simulated_traffic_is_valid_and_names_its_change() {
    let input = simulated_traffic();
    let events = replayed(input.path());
    let attribute_changes = events
        .iter()
        .filter(|e| e["eventType"] == "TroubleTicketAttributeValueChangeEvent")
        .count();
    assert!(
        events.len() > 100 && attribute_changes > 10,
        "{} events, {attribute_changes} attribute changes",
        events.len()
    );
    assert_all_valid(&events);
    for e in &events {
        assert_extensions(e);
    }
    let breaks = field_path_breaks(&events);
    assert!(
        breaks.is_empty(),
        "{} of {} events: {:#?}",
        breaks.len(),
        events.len(),
        &breaks[..breaks.len().min(10)]
    );
}

/// The replay files of the simulator's traffic: 300 circuits, 12 h, seed 14.
fn simulated_traffic() -> tempfile::TempDir {
    use linewatch::simulate::{topology, traffic, SimConfig, SimStream};
    use std::io::Write;
    let cfg = SimConfig {
        seed: 14,
        circuits: 300,
        start: sh(2026, 3, 10, 0, 0, 0),
        duration: chrono::Duration::hours(12),
        faults_per_hour: 30.0,
        ..SimConfig::default()
    };
    let topo = topology(&cfg);
    let input = tempfile::tempdir().expect("tempdir");
    let open = |name: &str| {
        std::io::BufWriter::new(fs::File::create(input.path().join(name)).expect("create"))
    };
    let mut inventory = open("inventory.jsonl");
    for (_, c) in &topo.circuits {
        writeln!(inventory, "{c}").expect("write");
    }
    let (mut alarms, mut works) = (open("alarms.jsonl"), open("maintenance.jsonl"));
    for r in traffic(&cfg, &topo) {
        match r.stream {
            SimStream::Alarms => writeln!(alarms, "{}", r.value),
            SimStream::Maintenance => writeln!(works, "{}", r.value),
        }
        .expect("write");
    }
    for mut f in [inventory, alarms, works] {
        f.flush().expect("flush");
    }
    input
}

/// Issue 14, item 1: with `--tmf621-version 5`, every ticket event of the replay of the
/// simulator's traffic is valid against the official TMF621 v5.0.1 OAS, and is the v4 event
/// with v5's form (same events, same order, same ids, same fieldPath).
#[test]
fn every_ticket_event_of_simulated_traffic_is_a_valid_tmf621_v5_event() {
    let input = simulated_traffic();
    let v5 = replayed_as(input.path(), Tmf621Version::V5);
    assert_all_valid_as(Tmf621Version::V5, &v5);
    let v4 = replayed(input.path());
    assert!(v4.len() > 100);
    assert_eq!(v5.len(), v4.len());
    for (a, b) in v4.iter().zip(&v5) {
        assert_eq!(&to_v5(a.clone()), b);
        assert_v5_form(b);
    }
    // The v4 events are not valid v5 events (no @type on the event, the parties, ...):
    // the check above is not one that anything passes.
    assert!(v4
        .iter()
        .all(|e| !errors(&validators_of(Tmf621Version::V5), e).is_empty()));
}

/// What v5 wants beyond the schema's letter: every reference typed and nested.
fn assert_v5_form(event: &Value) {
    assert_eq!(event["@type"], event["eventType"], "{event}");
    let t = &event["event"]["troubleTicket"];
    assert!(t["@type"].is_string(), "{event}");
    for r in t["relatedEntity"].as_array().into_iter().flatten() {
        assert_eq!(r["@type"], "RelatedEntity", "{r}");
        assert!(r["role"].is_string() && r.get("id").is_none(), "{r}");
        assert_eq!(r["entity"]["@type"], "EntityRef", "{r}");
        assert!(r["entity"]["id"].is_string() && r["entity"]["@referredType"].is_string());
    }
    for p in t["relatedParty"].as_array().into_iter().flatten() {
        assert_eq!(p["@type"], "RelatedPartyRefOrPartyRoleRef", "{p}");
        let party = &p["partyOrPartyRole"];
        let want = if p["role"] == "customer" {
            ("PartyRoleRef", "Customer")
        } else {
            ("PartyRef", "Organization")
        };
        assert_eq!(
            (&party["@type"], &party["@referredType"]),
            (&json!(want.0), &json!(want.1)),
            "{p}"
        );
        assert!(party["id"].is_string() && p.get("id").is_none(), "{p}");
    }
    for r in t["troubleTicketRelationship"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert_eq!(r["@type"], "TroubleTicketRelationship", "{r}");
    }
}

#[test]
fn every_engine_and_example_ticket_event_is_a_valid_tmf621_v5_event() {
    let (events, _) = engine_output();
    let v5: Vec<Value> = events.into_iter().map(to_v5).collect();
    assert!(v5.len() > 10);
    assert_all_valid_as(Tmf621Version::V5, &v5);
    v5.iter().for_each(assert_v5_form);
    let input = tempfile::tempdir().expect("tempdir");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/replay");
    for name in ["inventory.jsonl", "alarms.jsonl", "commands.jsonl"] {
        fs::copy(example.join(name), input.path().join(name)).expect("copy");
    }
    let replayed = replayed_as(input.path(), Tmf621Version::V5);
    assert!(replayed.len() > 30);
    assert_all_valid_as(Tmf621Version::V5, &replayed);
    replayed.iter().for_each(assert_v5_form);
}

#[test]
fn the_v5_validator_holds_events_to_the_standard() {
    let validators = validators_of(Tmf621Version::V5);
    let good = to_v5(
        engine_events()
            .into_iter()
            .find(|e| e["eventType"] == "TroubleTicketCreateEvent")
            .expect("a create event"),
    );
    assert_eq!(errors(&validators, &good), Vec::<String>::new());
    let t = "/event/troubleTicket";
    let cases = [
        (format!("{t}/priority"), json!(1)),
        (format!("{t}/creationDate"), json!("yesterday")),
        (format!("{t}/status"), json!("open")),
        // A party reference typed as neither PartyRef nor PartyRoleRef.
        (
            format!("{t}/relatedParty/0/partyOrPartyRole/@type"),
            json!("Customer"),
        ),
        (format!("{t}/relatedEntity/0/entity/id"), json!(7)),
    ];
    for (at, bad) in cases {
        let mut e = good.clone();
        let (parent, field) = at.rsplit_once('/').expect("a path");
        e.pointer_mut(parent).expect("parent")[field] = bad;
        assert!(!errors(&validators, &e).is_empty(), "{at} accepted");
    }
    // @type is required on the event, the ticket, and every reference.
    for at in [
        "",
        t,
        "/event/troubleTicket/relatedEntity/0",
        "/event/troubleTicket/relatedEntity/0/entity",
        "/event/troubleTicket/relatedParty/0",
        "/event/troubleTicket/relatedParty/0/partyOrPartyRole",
    ] {
        let mut e = good.clone();
        e.pointer_mut(at)
            .and_then(Value::as_object_mut)
            .expect("an object")
            .remove("@type");
        assert!(
            !errors(&validators, &e).is_empty(),
            "no @type at {at:?} accepted"
        );
    }
    // A trouble ticket relationship is an EntityRef in v5: @type required too.
    let mut e = good.clone();
    e["event"]["troubleTicket"]["troubleTicketRelationship"] =
        json!([{"id": "INC-0123456789abcdef", "relationshipType": "isParent"}]);
    assert!(!errors(&validators, &e).is_empty(), "untyped relationship");
    let e = to_v5(e);
    assert_eq!(errors(&validators, &e), Vec::<String>::new());
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
    // restoration priority as a string ("1" for AAA through "4" for ordinary). C2's
    // alarm went major to critical at 09:05 (checked below).
    for (circuit, severity, priority) in [("C1", "critical", "1"), ("C3", "minor", "4")] {
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
            Some("restored" | "closed") => {
                assert_eq!(t["resolutionDate"], "2026-04-01T12:00:00Z", "{e}")
            }
            _ => assert!(t.get("resolutionDate").is_none(), "{e}"),
        }
    }
}

#[test]
fn ticket_severity_follows_the_worst_severity_of_its_root_alarm() {
    // The default policy: severity by name, priority by level only.
    let evs = upgraded_root(Policy::builtin());
    let at = |kind: &str| -> Vec<(String, String, Value)> {
        evs.iter()
            .filter(|e| e["slaEvent"]["kind"] == kind)
            .map(|e| {
                let t = &e["event"]["troubleTicket"];
                (
                    t["severity"].as_str().unwrap_or_default().to_string(),
                    t["priority"].as_str().unwrap_or_default().to_string(),
                    e["fieldPath"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(at("opened"), [("major".into(), "1".into(), Value::Null)]);
    // Upgraded to critical at 09:05: an attribute change of the severity alone.
    assert_eq!(
        at("severityRaised"),
        [("critical".into(), "1".into(), json!("severity"))]
    );
    // Back to major at 09:20: the ticket stays critical, and no event says otherwise.
    assert_eq!(
        at("restored"),
        [("critical".into(), "1".into(), Value::Null)]
    );
    assert_eq!(evs.len(), 4, "opened, severityRaised, restored, closed");
    assert_all_valid(&evs);
    assert!(field_path_breaks(&evs).is_empty());
}

#[test]
fn ticket_severity_and_priority_by_the_policy() {
    // An AAA circuit whose major alarms are priority 2 and critical ones 1, with the
    // severities named as the operator's ticketing system names them.
    let default = Policy::builtin();
    let text = linewatch::policy::DEFAULT_POLICY_TOML
        .replacen(
            r#"AAA      = { critical = "1", major = "1","#,
            r#"AAA      = { critical = "1", major = "2","#,
            1,
        )
        .replacen(r#"critical = "critical""#, r#"critical = "Sev-1""#, 1)
        .replacen(r#"major = "major""#, r#"major = "Sev-2""#, 1);
    let policy = Policy::from_toml_str(&text).expect("valid policy");
    assert_ne!(
        policy.ticket_priority(AssuranceLevel::Aaa, Severity::Major),
        default.ticket_priority(AssuranceLevel::Aaa, Severity::Major)
    );
    let evs = upgraded_root(policy);
    let t = |e: &Value| {
        let t = &e["event"]["troubleTicket"];
        (t["severity"].clone(), t["priority"].clone())
    };
    assert_eq!(t(&evs[0]), (json!("Sev-2"), json!("2")));
    assert_eq!(evs[1]["slaEvent"]["kind"], "severityRaised");
    assert_eq!(
        evs[1]["eventType"],
        "TroubleTicketAttributeValueChangeEvent"
    );
    assert_eq!(evs[1]["fieldPath"], "priority,severity");
    assert_eq!(t(&evs[1]), (json!("Sev-1"), json!("1")));
    assert_all_valid(&evs);
    assert!(field_path_breaks(&evs).is_empty());

    // A policy that names major and critical alike: the upgrade changes no field of the
    // ticket, so no event.
    let same = linewatch::policy::DEFAULT_POLICY_TOML.replacen(
        r#"major = "major""#,
        r#"major = "critical""#,
        1,
    );
    let evs = upgraded_root(Policy::from_toml_str(&same).expect("valid policy"));
    let kinds: Vec<&Value> = evs.iter().map(|e| &e["slaEvent"]["kind"]).collect();
    assert_eq!(kinds, ["opened", "restored", "closed"]);
}

/// An AAA circuit's ticket whose major root alarm is upgraded to critical at 09:05, back
/// to major at 09:20, cleared at 09:50 (before its first escalation): its ticket events
/// under `policy`.
fn upgraded_root(policy: Policy) -> Vec<Value> {
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
        Input::Alarm(clear(&major, sh(2026, 4, 1, 9, 50, 0))),
    ];
    let mut engine = Engine::new(policy);
    // Key customer: closed once its written report is due (Friday 3 April, end of day).
    let out = run(&mut engine, inputs, sh(2026, 4, 6, 0, 0, 0));
    to_json(&tickets(&out))
}

/// Issue 14, item 2: every incident of the simulated traffic is also a parent ticket on
/// `tickets.events`, created with the incident's first record; each parent event lists as
/// `isChild` exactly the tickets of the incident's record it follows (the same record's
/// circuits, in restoration priority order), so that circuits joining and leaving show in
/// `troubleTicketRelationship`; its status follows the incident's; every child is a
/// ticket of the same stream.
#[test]
fn every_incident_is_a_parent_ticket_listing_its_children() {
    let input = simulated_traffic();
    let output = tempfile::tempdir().expect("tempdir");
    replay(input.path(), output.path(), Policy::builtin(), None).expect("replay");
    let events = read_events(output.path());
    let records: Vec<Value> = fs::read_to_string(output.path().join("incidents.jsonl"))
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let child_ids: BTreeSet<&str> = events
        .iter()
        .map(|e| &e["event"]["troubleTicket"])
        .filter(|t| t["@type"] == "DedicatedLineFaultTicket")
        .filter_map(|t| t["id"].as_str())
        .collect();
    let parents: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"]["troubleTicket"]["@type"] == "MassOutageTicket")
        .collect();
    let incident_ids: BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r["incidentId"].as_str())
        .collect();
    assert!(incident_ids.len() > 3, "{} incidents", incident_ids.len());
    let created: BTreeSet<&str> = parents
        .iter()
        .filter(|e| e["eventType"] == "TroubleTicketCreateEvent")
        .filter_map(|e| e["event"]["troubleTicket"]["id"].as_str())
        .collect();
    assert_eq!(created, incident_ids, "one parent ticket per incident");
    // Event ids as a circuit ticket's: <ticket id>-0000, -0001, ... without gaps.
    let mut next: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &parents {
        let id = e["event"]["troubleTicket"]["id"].as_str().expect("id");
        let n = next.entry(id).or_default();
        assert_eq!(e["eventId"], format!("{id}-{n:04}"), "{e}");
        *n += 1;
    }
    let mut membership_changes = 0;
    for e in &parents {
        let t = &e["event"]["troubleTicket"];
        // The record it follows: the incident's last record as of the event's time.
        let record = records
            .iter()
            .rfind(|r| r["incidentId"] == t["id"] && r["updatedAt"] == e["eventTime"])
            .unwrap_or_else(|| panic!("no incident record for {e}"));
        let want: Vec<&Value> = record["circuits"]
            .as_array()
            .expect("circuits")
            .iter()
            .map(|c| &c["ticketId"])
            .collect();
        let got: Vec<&Value> = t["troubleTicketRelationship"]
            .as_array()
            .expect("relationships")
            .iter()
            .map(|r| &r["id"])
            .collect();
        assert_eq!(got, want, "{e}");
        for id in &got {
            assert!(child_ids.contains(id.as_str().unwrap_or_default()), "{id}");
        }
        let status = match record["status"].as_str() {
            Some("open") => "inProgress",
            Some("restored") => "resolved",
            _ => "closed",
        };
        assert_eq!(t["status"], status, "{e}");
        assert_eq!(t["resolutionDate"], record["restoredAt"].clone(), "{e}");
        if e["fieldPath"]
            .as_str()
            .is_some_and(|p| p.split(',').any(|f| f == "troubleTicketRelationship"))
        {
            membership_changes += 1;
        }
    }
    assert!(
        membership_changes > 0,
        "no circuit joined or left an incident"
    );
}
