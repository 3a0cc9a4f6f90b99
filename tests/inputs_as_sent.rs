//! Alarms as public NMS projects send them open the tickets they should (issue 14, items 5
//! and 6): the O-RAN SC OAM emitters' templates (`tests/fixtures/o-ran-sc-oam/`, filled
//! as the emitters fill them) and ONAP's VES collector test payloads
//! (`tests/fixtures/ves/`), through the same intake as `linewatch run` and `replay`, with
//! no Kafka.

mod scenario;

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use linewatch::alarm::{AlarmOptions, StndDefinedObject};
use linewatch::engine::{Engine, Input, Output};
use linewatch::intake::{decode_with, IntakeOptions, NonFaultEvents, Stream};
use linewatch::inventory::{InventoryChange, ObjectKind};
use linewatch::levels::{AssuranceLevel, CustomerLevel, Scope};
use linewatch::policy::Policy;
use linewatch::rejection::RejectReason;
use linewatch::replay::{replay_with, ReplayOptions, ReplaySummary};
use linewatch::ticket::{SlaEvent, TicketStatus};
use scenario::*;
use serde_json::{json, Value};

/// The O-RAN SC emitters' device `nSky` (`config`: pnfIdByType, interfaceByType, ...).
const PNF: &str = "O-RAN-FH-IPv6-01";
const INTERFACE: &str = "4af8681f-f2e4-4058-8052-4e9343ee7bf2";

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test time")
        .with_timezone(&Utc)
}

fn micros(at: DateTime<Utc>) -> String {
    at.timestamp_micros().to_string()
}

/// An O-RAN SC emitter template filled as its script fills it (`sed`: a quoted
/// `"@timestamp@"` becomes a bare number, any other `@name@` is replaced in its string),
/// for the alarm `alarm` of severity `severity` on device `nSky`, sent at `at`; as one
/// JSON Lines line.
fn oran(template: &str, alarm: &str, severity: &str, at: DateTime<Utc>) -> String {
    let text = fs::read_to_string(fixture(&format!("o-ran-sc-oam/{template}.json")))
        .expect("O-RAN SC template");
    let domain = match template {
        t if t.starts_with("stndDefined") => "stndDefined",
        "fault" | "event-list" => "fault",
        other => other,
    };
    let event_time = at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    let end = at.timestamp() - at.timestamp() % 900;
    let mut filled = text
        .replace("\"@timestamp@\"", &micros(at))
        .replace("\"@collectionStartTime@\"", &format!("{}000000", end - 900))
        .replace("\"@collectionEndTime@\"", &format!("{end}000000"));
    for (key, value) in [
        ("domain", domain.to_string()),
        ("controllerName", "sdnr.oam.example".to_string()),
        ("pnfId", PNF.to_string()),
        ("eventId", format!("{PNF}_{INTERFACE}_{alarm}")),
        ("eventType", "O_RAN_COMPONENT".to_string()),
        ("type", "NSKY".to_string()),
        ("interface", INTERFACE.to_string()),
        ("alarm", alarm.to_string()),
        ("severity", severity.to_string()),
        ("eventTime", event_time),
        ("vendor", "VENDORC".to_string()),
        ("model", "TheSkyIsTheLimit".to_string()),
        ("granularity", "PM15min".to_string()),
        (
            "intervalStartTime",
            "Thu, 01 Jan 2026 00:00:00 +0000".to_string(),
        ),
        (
            "intervalEndTime",
            "Thu, 01 Jan 2026 00:15:00 +0000".to_string(),
        ),
    ] {
        filled = filled.replace(&format!("@{key}@"), &value);
    }
    let left: Vec<&str> = filled
        .split('@')
        .skip(1)
        .step_by(2)
        .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()))
        .collect();
    assert!(left.is_empty(), "placeholders left unfilled: {left:?}");
    one_line(&filled)
}

/// A JSON file as one line (the replay's and the topic's one message per line).
fn one_line(text: &str) -> String {
    let v: Value = serde_json::from_str(text).expect("fixture is JSON");
    v.to_string()
}

fn onap(name: &str) -> String {
    one_line(&fs::read_to_string(fixture(&format!("ves/{name}"))).expect("ONAP fixture"))
}

/// A gold AAA circuit whose path crosses `object` (an NE, or a port of one).
fn circuit_through(id: &str, kind: ObjectKind, object: &str) -> linewatch::inventory::Circuit {
    let path = vec![
        element(ObjectKind::Ne, &format!("CPE-{id}"), "cpe", "CPE"),
        element(kind, object, "transmission", "OTN"),
    ];
    circuit(
        id,
        CustomerLevel::Gold,
        AssuranceLevel::Aaa,
        Scope::IntraCity,
        vec![path],
    )
}

/// The engine over `lines` of the alarm topic, decoded as `run` decodes them, in the
/// given order with the clock at each alarm's event time: the outputs and the rejections.
fn engine_run(
    options: &IntakeOptions,
    circuits: Vec<linewatch::inventory::Circuit>,
    lines: &[String],
) -> (Vec<Output>, Vec<RejectReason>) {
    let mut engine = Engine::new(Policy::builtin());
    let mut out = Vec::new();
    let mut rejected = Vec::new();
    let mut now = t("2000-01-01T00:00:00Z");
    for c in circuits {
        let input = Input::Inventory(InventoryChange::Upsert(Box::new(c)));
        out.extend(engine.handle(input, now).expect("circuit accepted"));
    }
    for line in lines {
        for (_, result) in decode_with(Stream::Alarms, None, Some(line.as_bytes()), options).results
        {
            match result {
                Ok(input) => {
                    now = now.max(time_of(&input, now));
                    out.extend(engine.advance(now));
                    match engine.handle(input, now) {
                        Ok(more) => out.extend(more),
                        Err(reason) => rejected.push(reason),
                    }
                }
                Err(reason) => rejected.push(reason),
            }
        }
    }
    out.extend(engine.advance(now + chrono::Duration::days(1)));
    (out, rejected)
}

fn opened(out: &[Output]) -> Vec<&linewatch::ticket::TicketEvent> {
    tickets(out)
        .into_iter()
        .filter(|e| e.sla_event == SlaEvent::Opened)
        .collect()
}

fn with_rule(rule: StndDefinedObject) -> IntakeOptions {
    IntakeOptions {
        alarms: AlarmOptions {
            stnd_defined_object: rule,
        },
        ..IntakeOptions::default()
    }
}

#[test]
fn oran_sc_3gpp_alarms_open_and_restore_the_ticket_of_the_device_they_name() {
    let raised = t("2026-03-02T01:00:00Z");
    let cleared = t("2026-03-02T01:40:00Z");
    let lines = [
        oran(
            "stndDefined-r16-notify-new-alarm",
            "LossOfSignalAlarm",
            "CRITICAL",
            raised,
        ),
        oran(
            "stndDefined-r16-notify-cleared-alarm",
            "LossOfSignalAlarm",
            "CRITICAL",
            cleared,
        ),
    ];
    let circuits = || vec![circuit_through("C-ORAN", ObjectKind::Ne, PNF)];

    // `href` is the emitter's placeholder "href1", `systemDN` its "xyz": the default rule
    // falls back to sourceName, the device the inventory knows.
    let (out, rejected) = engine_run(&IntakeOptions::default(), circuits(), &lines);
    assert!(rejected.is_empty(), "{rejected:?}");
    let opened = opened(&out);
    assert_eq!(opened.len(), 1, "one ticket for the device's circuit");
    let ticket = opened[0].ticket();
    assert_eq!(ticket.root_cause.object, PNF);
    assert_eq!(ticket.creation_date, raised);
    let last = tickets(&out)
        .last()
        .map(|e| e.ticket().clone())
        .expect("events");
    assert_ne!(last.status, TicketStatus::Acknowledged);
    assert_eq!(
        last.sla.down_minutes, 40,
        "down from the new alarm to its clear"
    );
    assert!(last.sla.down_intervals.iter().all(|i| i.end.is_some()));

    let (out, _) = engine_run(
        &with_rule(StndDefinedObject::SourceName),
        circuits(),
        &lines,
    );
    assert_eq!(self::opened(&out).len(), 1);

    // Read as it was before issue 14 (the notifying system's DN), nothing opens: "xyz"
    // names no object of the inventory.
    for rule in [StndDefinedObject::SystemDn, StndDefinedObject::Href] {
        let (out, rejected) = engine_run(&with_rule(rule), circuits(), &lines);
        assert!(rejected.is_empty(), "{rejected:?}");
        assert!(self::opened(&out).is_empty(), "{rule}");
    }
}

#[test]
fn an_href_naming_a_port_of_the_source_hits_that_port_only() {
    let mut v: Value = serde_json::from_str(&oran(
        "stndDefined-r16-notify-new-alarm",
        "LossOfSignalAlarm",
        "MAJOR",
        t("2026-03-02T01:00:00Z"),
    ))
    .expect("json");
    v["event"]["stndDefinedFields"]["data"]["href"] = json!(format!("{PNF}/1/2"));
    let circuits = vec![
        circuit_through("C-PORT-2", ObjectKind::Port, &format!("{PNF}/1/2")),
        circuit_through("C-PORT-3", ObjectKind::Port, &format!("{PNF}/1/3")),
    ];
    let (out, rejected) = engine_run(&IntakeOptions::default(), circuits, &[v.to_string()]);
    assert!(rejected.is_empty(), "{rejected:?}");
    let ids: Vec<&str> = opened(&out)
        .iter()
        .flat_map(|e| e.ticket().related_entity.iter())
        .filter(|r| r.role == "affectedCircuit")
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(ids, ["C-PORT-2"]);
}

#[test]
fn a_fault_first_seen_as_an_update_is_down_from_its_raise() {
    // VES: the emitter's fault, as its NMS repeats it ten minutes on (VES 7.1: an update
    // keeps the first startEpochMicrosec), then cleared (eventSeverity NORMAL).
    let start = t("2026-03-02T01:00:00Z");
    let update = t("2026-03-02T01:10:00Z");
    let clear = t("2026-03-02T01:25:00Z");
    let at = |severity: &str, last: DateTime<Utc>| {
        let mut v: Value =
            serde_json::from_str(&oran("fault", "LossOfSignal", severity, start)).expect("json");
        v["event"]["commonEventHeader"]["lastEpochMicrosec"] = json!(last.timestamp_micros());
        v.to_string()
    };
    let port = format!("{PNF}/{INTERFACE}");
    let (out, rejected) = engine_run(
        &IntakeOptions::default(),
        vec![circuit_through("C-VES", ObjectKind::Port, &port)],
        &[at("CRITICAL", update), at("NORMAL", clear)],
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    let opened = opened(&out);
    assert_eq!(opened.len(), 1);
    assert_eq!(
        opened[0].ticket().creation_date,
        start,
        "not the update's time"
    );
    let last = tickets(&out)
        .last()
        .map(|e| e.ticket().clone())
        .expect("events");
    assert_eq!(last.sla.down_minutes, 25);

    // TMF642: an attribute-value change seen before (or instead of) its create.
    let raised = "2026-03-02T09:00:00+08:00";
    let alarm = |state: &str, changed: &str| {
        json!({
            "eventType": if state == "cleared" { "AlarmStateChangeEvent" } else { "AlarmAttributeValueChangeEvent" },
            "eventTime": changed,
            "event": {"alarm": {
                "id": 5521907, "state": state, "perceivedSeverity": if state == "cleared" { "cleared" } else { "critical" },
                "probableCause": "LOS", "sourceSystemId": "ptn-nms",
                "alarmedObject": [{"id": "PTN-7/2/1"}],
                "alarmRaisedTime": raised, "alarmChangedTime": changed
            }}
        })
        .to_string()
    };
    let (out, rejected) = engine_run(
        &IntakeOptions::default(),
        vec![circuit_through("C-TMF", ObjectKind::Port, "PTN-7/2/1")],
        &[
            alarm("updated", "2026-03-02T09:12:00+08:00"),
            alarm("cleared", "2026-03-02T09:30:00+08:00"),
        ],
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    let opened = self::opened(&out);
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].ticket().creation_date, t(raised));
    let last = tickets(&out)
        .last()
        .map(|e| e.ticket().clone())
        .expect("events");
    assert_eq!(last.sla.down_minutes, 30);
}

#[test]
fn tmf642_alarms_as_the_swagger_and_the_mef_profile_type_them_pair_up() {
    // An integer id (TMF642 v4 swagger), a list of alarmed objects and the acknowledgement
    // in `state` (MEF LSO profile); the clear names the alarm by its id as a string.
    let raise = fs::read_to_string(fixture(
        "alarms/valid/tmf642_mef_profile_integer_id_object_list.json",
    ))
    .expect("fixture");
    let mut clear: Value = serde_json::from_str(&raise).expect("json");
    clear["id"] = json!("184233");
    clear["state"] = json!("cleared");
    clear["perceivedSeverity"] = json!("cleared");
    clear["alarmClearedTime"] = json!("2024-05-01T09:00:00Z");
    let (out, rejected) = engine_run(
        &IntakeOptions::default(),
        vec![circuit_through("C-MEF", ObjectKind::Port, "SZ-PE-02/1/1")],
        &[one_line(&raise), clear.to_string()],
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    let opened = opened(&out);
    assert_eq!(opened.len(), 1);
    assert_eq!(
        opened[0].ticket().root_cause.alarm_key,
        "lso-seller-nms:184233"
    );
    assert_eq!(opened[0].ticket().creation_date, t("2024-05-01T08:30:00Z"));
    let last = tickets(&out)
        .last()
        .map(|e| e.ticket().clone())
        .expect("events");
    assert_eq!(
        last.sla.down_minutes, 30,
        "the string id clears the integer one"
    );
}

/// Replay `alarms` over `circuits` under `options`: the summary and the rejections.
fn replay_alarms(
    dir: &Path,
    circuits: &[linewatch::inventory::Circuit],
    alarms: &[String],
    options: &IntakeOptions,
) -> (ReplaySummary, Vec<Value>) {
    let input = dir.join("in");
    let output = dir.join("out");
    fs::create_dir_all(&input).expect("mkdir");
    let inventory: Vec<String> = circuits
        .iter()
        .map(|c| serde_json::to_string(c).expect("circuit"))
        .collect();
    fs::write(input.join("inventory.jsonl"), inventory.join("\n") + "\n").expect("write");
    fs::write(input.join("alarms.jsonl"), alarms.join("\n") + "\n").expect("write");
    let options = ReplayOptions {
        intake: *options,
        ..ReplayOptions::default()
    };
    let summary = replay_with(&input, &output, Policy::builtin(), &options).expect("replay");
    let rejections = fs::read_to_string(output.join("rejections.jsonl"))
        .expect("rejections")
        .lines()
        .map(|l| serde_json::from_str(l).expect("rejection is JSON"))
        .collect();
    (summary, rejections)
}

#[test]
fn heartbeats_and_measurements_are_dropped_not_rejected_unless_asked() {
    let at = t("2026-03-02T01:00:00Z");
    let alarms = vec![
        oran("heartbeat", "", "", at),
        oran(
            "stndDefined-heartbeat",
            "",
            "",
            at + chrono::Duration::seconds(20),
        ),
        oran("measurement", "", "", at + chrono::Duration::seconds(40)),
        // A batch of a heartbeat and a fault: the fault still opens its ticket.
        oran(
            "event-list",
            "LossOfSignal",
            "CRITICAL",
            at + chrono::Duration::seconds(60),
        ),
        onap("measurement7x.json"),
    ];
    // The fault of the batch is on the emitter's interface of the device.
    let circuits = [circuit_through(
        "C-ORAN",
        ObjectKind::Port,
        &format!("{PNF}/{INTERFACE}"),
    )];
    let dir = tempfile::tempdir().expect("tempdir");
    let (summary, rejections) =
        replay_alarms(dir.path(), &circuits, &alarms, &IntakeOptions::default());
    assert!(rejections.is_empty(), "{rejections:#?}");
    assert_eq!(summary.non_fault_dropped, 5);
    assert_eq!(summary.tickets_opened, 1);

    let reject = IntakeOptions {
        non_fault_events: NonFaultEvents::Reject,
        ..IntakeOptions::default()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let (summary, rejections) = replay_alarms(dir.path(), &circuits, &alarms, &reject);
    assert_eq!(summary.non_fault_dropped, 0);
    assert_eq!(summary.tickets_opened, 1);
    let codes: Vec<(&str, Option<u64>)> = rejections
        .iter()
        .map(|r| {
            (
                r["reason_code"].as_str().unwrap_or("?"),
                r["batch_index"].as_u64(),
            )
        })
        .collect();
    assert_eq!(codes.len(), 5, "{rejections:#?}");
    assert!(
        codes.iter().all(|(c, _)| *c == "not_fault_event"),
        "{codes:?}"
    );
    assert!(
        codes.contains(&("not_fault_event", Some(0))),
        "the batch's heartbeat"
    );
}

#[test]
fn onap_batch_opens_the_fault_ticket_and_rejects_only_its_placeholder_3gpp_element() {
    let alarms = vec![onap("ves7_batch_valid_two_different_domain.json")];
    let dir = tempfile::tempdir().expect("tempdir");
    let circuits = [circuit_through(
        "C-ONAP",
        ObjectKind::Ne,
        "scfx0001vm002cap001",
    )];
    let (summary, rejections) =
        replay_alarms(dir.path(), &circuits, &alarms, &IntakeOptions::default());
    assert_eq!(summary.tickets_opened, 1);
    assert_eq!(rejections.len(), 1, "{rejections:#?}");
    assert_eq!(rejections[0]["reason_code"], "bad_time");
    assert_eq!(rejections[0]["batch_index"], 1);
}
