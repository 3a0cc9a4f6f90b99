//! Every record the engine writes matches the JSON schema of its topic in `topics/`: the
//! replay example (a fibre cut, a warning, a malformed line, a command, planned works
//! announced late) is replayed and each output line is validated, SLA reminders included;
//! and the reminder schema refuses what a reminder must not be.

use std::fs;
use std::path::Path;

use linewatch::policy::Policy;
use linewatch::replay::replay;
use serde_json::Value;

fn validator(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("topics/schemas")
        .join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_output_record_matches_its_topic_schema() {
    let input = tempfile::tempdir().expect("tempdir");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/replay");
    for name in ["inventory.jsonl", "alarms.jsonl", "commands.jsonl"] {
        fs::copy(example.join(name), input.path().join(name)).expect("copy");
    }
    // Works on the aggregation NE announced the day before: reported as late.
    fs::write(
        input.path().join("maintenance.jsonl"),
        r#"{"windowId":"W-1","objects":["SZ-PTN-AGG-1"],"start":"2026-03-10T20:00:00+08:00","end":"2026-03-10T22:00:00+08:00","noticeGivenAt":"2026-03-09T18:00:00+08:00"}"#,
    )
    .expect("write");
    let output = tempfile::tempdir().expect("tempdir");
    replay(input.path(), output.path(), Policy::builtin(), None).expect("replay");

    let files = [
        ("tickets.jsonl", "ticket-event.schema.json"),
        ("reminders.jsonl", "sla-reminder.schema.json"),
        ("circuits-status.jsonl", "line-status.schema.json"),
        ("warnings.jsonl", "sla-warning.schema.json"),
        ("kpi.jsonl", "kpi-circuit.schema.json"),
        ("incidents.jsonl", "incident.schema.json"),
        ("rejections.jsonl", "rejection.schema.json"),
    ];
    for (file, schema) in files {
        let v = validator(schema);
        let text = fs::read_to_string(output.path().join(file)).expect("read");
        let mut n = 0;
        for (i, line) in text.lines().enumerate() {
            let record: Value = serde_json::from_str(line).expect("output is JSON");
            let errors: Vec<String> = v
                .iter_errors(&record)
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{file} line {}: {errors:?}\n{line}",
                i + 1
            );
            n += 1;
        }
        assert!(n > 0, "{file} is empty: the example should exercise it");
    }
}

#[test]
fn the_reminder_schema_holds_reminders_to_their_form() {
    let v = validator("sla-reminder.schema.json");
    let good = serde_json::json!({
        "eventId": "TT-0123456789abcdef-R0002",
        "ticketId": "TT-0123456789abcdef",
        "circuitId": "C1",
        "kind": "feedbackDue",
        "number": 2,
        "dueAt": "2026-03-10T02:30:00Z",
        "eventTime": "2026-03-10T02:30:00Z",
        "action": "send the customer progress feedback",
        "leadTeam": "transport",
        "customerLevel": "gold",
        "assuranceLevel": "AA",
        "ticketStatus": "inProgress"
    });
    assert!(
        v.is_valid(&good),
        "{:?}",
        v.iter_errors(&good)
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
    );
    let bad = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut r = good.clone();
        edit(&mut r);
        !v.is_valid(&r)
    };
    assert!(bad(&|r| r["kind"] = "bulletin".into()), "unknown kind");
    assert!(
        bad(&|r| {
            r.as_object_mut().map(|o| o.remove("number"));
        }),
        "feedback without its number"
    );
    assert!(
        bad(&|r| r["kind"] = "deadlineBreached".into()),
        "a number on a breach"
    );
    assert!(
        bad(&|r| r["eventId"] = "TT-0123456789abcdef-0002".into()),
        "a ticket event id"
    );
    assert!(
        bad(&|r| r["event"] = serde_json::json!({})),
        "a whole ticket"
    );
}

#[test]
fn the_incident_schema_takes_the_parts_of_a_large_incident() {
    use linewatch::incident::{
        IncidentCircuit, IncidentEvent, IncidentStatus, RootAlarm, MAX_CIRCUITS_PER_RECORD,
    };
    use linewatch::levels::{AssuranceLevel, CustomerLevel, Severity};
    let at: chrono::DateTime<chrono::Utc> = "2026-03-10T02:30:00Z".parse().expect("time");
    let n = 2 * MAX_CIRCUITS_PER_RECORD + 1;
    let whole = IncidentEvent {
        event_id: "INC-0123456789abcdef-3".into(),
        incident_id: "INC-0123456789abcdef".into(),
        sequence: 3,
        part: None,
        parts: None,
        status: IncidentStatus::Open,
        root_alarm: RootAlarm {
            key: "nms1:CUT-1".into(),
            object: "FIBRE-1".into(),
            probable_cause: "LOS".into(),
            severity: Severity::Critical,
            raised_at: at,
        },
        opened_at: at,
        restored_at: None,
        updated_at: at,
        lead_team: Some("transport".into()),
        circuit_count: n,
        down_count: n,
        circuits: (0..n)
            .map(|i| IncidentCircuit {
                circuit_id: format!("DL-{i:06}"),
                customer_id: Some("CU-1".into()),
                customer_level: CustomerLevel::Gold,
                assurance_level: AssuranceLevel::Aa,
                ticket_id: format!("TT-{i:016x}"),
                down: true,
                restored_at: None,
            })
            .collect(),
    };
    let v = validator("incident.schema.json");
    let parts = whole.into_parts();
    assert_eq!(parts.len(), 3);
    for p in &parts {
        let record = serde_json::to_value(p).expect("json");
        let errors: Vec<String> = v.iter_errors(&record).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", p.event_id);
        assert_eq!(record["parts"], 3);
    }
    // A part must say how many parts there are, and the other way round.
    let mut record = serde_json::to_value(&parts[0]).expect("json");
    if let Some(o) = record.as_object_mut() {
        o.remove("parts");
    }
    assert!(!v.is_valid(&record), "part without parts");
    let mut record = serde_json::to_value(&parts[0]).expect("json");
    record["part"] = serde_json::json!(0);
    assert!(!v.is_valid(&record), "part 0");
}
