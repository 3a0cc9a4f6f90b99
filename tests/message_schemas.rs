//! The JSON schemas of `topics/schemas/` and the parsers of the edge agree on the fixtures.
//!
//! Fixture layout, per message kind (`tests/fixtures/{alarms,inventory,maintenance}/`):
//! - `valid/`: accepted by the schema and by the parser;
//! - `invalid/`: refused by both;
//! - `invalid_semantic/`: refused by the parser for a rule JSON Schema cannot state (a time
//!   before another, a hop listed twice) and therefore accepted by the schema.
//!
//! An invalid fixture's name starts with the expected `reason_code`, then `__`.
//! Every rejection produced on the way is also checked against `rejection.schema.json`.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use jsonschema::Validator;
use linewatch::alarm::parse_alarm_message;
use linewatch::inventory::parse_circuit_record;
use linewatch::maintenance::parse_maintenance_window;
use linewatch::rejection::{RejectReason, Rejection, Source};
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn validator(name: &str) -> Validator {
    let path = root().join("topics/schemas").join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn schema_errors(v: &Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no fixtures in {}", dir.display());
    out
}

fn expected_code(path: &Path) -> String {
    let name = path.file_stem().unwrap().to_string_lossy();
    let (code, _) = name
        .split_once("__")
        .unwrap_or_else(|| panic!("{name}: invalid fixtures are named <reason_code>__<what>"));
    code.to_string()
}

/// Parses a fixture as its kind of message; one result per alarm (or record).
fn parse(kind: &str, bytes: &[u8]) -> Vec<Result<(), RejectReason>> {
    match kind {
        "alarms" => parse_alarm_message(bytes)
            .into_iter()
            .map(|r| r.map(|_| ()))
            .collect(),
        "inventory" => vec![parse_circuit_record(None, Some(bytes)).map(|_| ())],
        "maintenance" => vec![parse_maintenance_window(bytes).map(|_| ())],
        other => panic!("unknown kind {other}"),
    }
}

fn at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-05-01T08:30:02Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Builds the rejection records the runtime would write and checks them against the schema.
fn check_rejection(rejections: &Validator, reason: &RejectReason, original: &[u8], file: &Path) {
    let from_kafka = Rejection::new(
        reason,
        Some(original),
        Source::Kafka {
            topic: "nms.alarms".into(),
            partition: 0,
            offset: 12,
        },
        at(),
    )
    .with_key(Some(b"NE1"));
    let from_file = Rejection::new(
        reason,
        Some(original),
        Source::File {
            file: file.display().to_string(),
            line: 1,
        },
        at(),
    )
    .with_batch_index(0);
    for r in [from_kafka, from_file] {
        let v = serde_json::to_value(&r).unwrap();
        let errs = schema_errors(rejections, &v);
        assert!(errs.is_empty(), "{v}: {errs:?}");
        assert_eq!(r.original_bytes().as_deref(), Some(original));
    }
}

fn check_kind(kind: &str, schema: &str) {
    let v = validator(schema);
    let rejections = validator("rejection.schema.json");
    let base = root().join("tests/fixtures").join(kind);

    for path in files(&base.join("valid")) {
        let bytes = fs::read(&path).unwrap();
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        let errs = schema_errors(&v, &doc);
        assert!(errs.is_empty(), "{}: schema says {errs:?}", path.display());
        for r in parse(kind, &bytes) {
            assert!(r.is_ok(), "{}: parser says {r:?}", path.display());
        }
    }

    for (dir, schema_refuses) in [("invalid", true), ("invalid_semantic", false)] {
        for path in files(&base.join(dir)) {
            let bytes = fs::read(&path).unwrap();
            let want = expected_code(&path);
            let results = parse(kind, &bytes);
            assert!(!results.is_empty());
            for r in results {
                let reason = r.expect_err(&format!("{}: parser accepted it", path.display()));
                assert_eq!(reason.code().as_str(), want, "{}: {reason}", path.display());
                check_rejection(&rejections, &reason, &bytes, &path);
            }
            if let Ok(doc) = serde_json::from_slice::<Value>(&bytes) {
                assert_eq!(
                    !v.is_valid(&doc),
                    schema_refuses,
                    "{}: schema disagrees ({dir})",
                    path.display()
                );
            }
        }
    }
}

#[test]
fn alarm_fixtures_agree_with_alarm_schema() {
    check_kind("alarms", "alarm.schema.json");
}

#[test]
fn circuit_fixtures_agree_with_circuit_schema() {
    check_kind("inventory", "circuit.schema.json");
}

#[test]
fn maintenance_fixtures_agree_with_maintenance_schema() {
    check_kind("maintenance", "maintenance-window.schema.json");
}

#[test]
fn onap_ves_fixtures_single_and_batch() {
    let v = validator("alarm.schema.json");
    let dir = root().join("tests/fixtures/ves");
    let good: Value =
        serde_json::from_slice(&fs::read(dir.join("ves7_valid.json")).unwrap()).unwrap();
    let placeholder: Value =
        serde_json::from_slice(&fs::read(dir.join("ves_stdnDefined_valid.json")).unwrap()).unwrap();
    assert!(schema_errors(&v, &good).is_empty());
    assert!(
        !v.is_valid(&placeholder),
        "the schema must refuse eventTime \"xyz\" as the parser does"
    );
    let batch = json!({"eventList": [good["event"], placeholder["event"]]});
    assert!(!v.is_valid(&batch));
    let batch = json!({"eventList": [good["event"], good]});
    assert!(schema_errors(&v, &batch).is_empty());
    let results = parse_alarm_message(batch.to_string().as_bytes());
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

#[test]
fn rejection_examples_match_schema_and_type() {
    let v = validator("rejection.schema.json");
    for path in files(&root().join("tests/fixtures/rejection")) {
        let doc: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let errs = schema_errors(&v, &doc);
        assert!(errs.is_empty(), "{}: {errs:?}", path.display());
        let r: Rejection = serde_json::from_value(doc.clone())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(serde_json::to_value(&r).unwrap(), doc);
    }
    // A tombstone rejection (no original at all) and a binary one are valid too.
    let reason = RejectReason::Invalid {
        field: "key".into(),
        problem: "a tombstone (null value) must carry the circuit id as its key".into(),
    };
    let src = Source::Kafka {
        topic: "inventory.circuits".into(),
        partition: 1,
        offset: 0,
    };
    let tomb = Rejection::new(&reason, None, src.clone(), at()).with_key(Some(&[0x80]));
    assert!(schema_errors(&v, &serde_json::to_value(&tomb).unwrap()).is_empty());
    let bin = Rejection::new(&reason, Some(&[0xff, 0x00]), src, at());
    assert!(schema_errors(&v, &serde_json::to_value(&bin).unwrap()).is_empty());
    // Both encodings at once are refused by the schema.
    let mut both = serde_json::to_value(&bin).unwrap();
    both["original"] = json!("x");
    assert!(!v.is_valid(&both));
}

#[test]
fn figures_of_every_period_kind_agree_with_the_kpi_circuit_schema() {
    use linewatch::calendar::PeriodKind;
    use linewatch::levels::AssuranceLevel;
    use linewatch::policy::Policy;
    use linewatch::sla::{circuit_figures, CircuitFacts, FaultFacts, Period, Span};

    let v = validator("kpi-circuit.schema.json");
    let policy = Policy::builtin();
    let start = at();
    let faults = [FaultFacts {
        started_at: start,
        down: vec![Span::new(start, start + chrono::Duration::hours(2))],
        counted: true,
    }];
    let circuit = CircuitFacts {
        circuit_id: "DL-1",
        customer_id: Some("CUST-1"),
        assurance_level: AssuranceLevel::Aa,
        faults: &faults,
        excluded: &[],
        open_fault: false,
    };
    let mut labels = Vec::new();
    for kind in PeriodKind::ALL {
        let period = Period::containing(kind, start, policy.time_zone());
        let figures = circuit_figures(&policy, &circuit, &period, period.end);
        let json = serde_json::to_value(&figures).unwrap();
        assert_eq!(schema_errors(&v, &json), Vec::<String>::new(), "{json}");
        labels.push(figures.period.clone());
        // Only the year has limits; the rest carry null limits, as a month always did.
        assert_eq!(
            json["failureLimit"].is_null(),
            kind != PeriodKind::Year,
            "{json}"
        );
        assert_eq!(
            json["outageLimitSeconds"].is_null(),
            kind != PeriodKind::Year
        );
        for bad in [
            "2026-Q0",
            "2026-Q5",
            "2026-13",
            "2026-03-32",
            "2026-3-1",
            "2026-03-10T00:00:00Z/2026-03-11T00:00:00Z",
        ] {
            let mut wrong = json.clone();
            wrong["period"] = json!(bad);
            assert!(!v.is_valid(&wrong), "{bad} accepted");
        }
    }
    // Day, month, quarter and year, as the calendar labels them.
    assert_eq!(labels.len(), 4);
    assert!(labels.iter().any(|l| l.contains("-Q")), "{labels:?}");
    assert!(labels.iter().any(|l| l.len() == 10), "{labels:?}");
}

/// Every valid alarm fixture, as the fan-out stage sends it on to its object's partition
/// (`linewatch.alarms-repartition`), is valid against that topic's schema and reads back
/// as the same alarm; the schema refuses what the stage never writes.
#[test]
fn repartitioned_alarms_agree_with_their_schema() {
    let v = validator("repartitioned-alarm.schema.json");
    let mut seen = 0;
    for path in files(&root().join("tests/fixtures/alarms/valid")) {
        let bytes = fs::read(&path).unwrap();
        for alarm in parse_alarm_message(&bytes).into_iter().flatten() {
            let doc = serde_json::to_value(&alarm).unwrap();
            let errs = schema_errors(&v, &doc);
            assert!(errs.is_empty(), "{}: schema says {errs:?}", path.display());
            let back: linewatch::alarm::Alarm = serde_json::from_value(doc).unwrap();
            assert_eq!(back, alarm, "{}", path.display());
            seen += 1;
        }
    }
    assert!(seen >= 5, "only {seen} alarms among the fixtures");
    let good = serde_json::to_value(
        parse_alarm_message(
            &fs::read(files(&root().join("tests/fixtures/alarms/valid"))[0].clone()).unwrap(),
        )
        .into_iter()
        .flatten()
        .next()
        .expect("an alarm"),
    )
    .unwrap();
    for (field, bad) in [
        ("state", json!("open")),
        ("severity", json!("fatal")),
        ("event_time", json!(42)),
        ("object", json!("")),
    ] {
        let mut doc = good.clone();
        doc[field] = bad;
        assert!(!schema_errors(&v, &doc).is_empty(), "{field} accepted");
    }
    let mut extra = good.clone();
    extra["unknown"] = json!(1);
    assert!(
        !schema_errors(&v, &extra).is_empty(),
        "an unknown field accepted"
    );
}
