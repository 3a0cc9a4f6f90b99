//! The replay command over files: rejections with their line, the same tickets as the
//! engine, and byte-identical output for the same input.

mod scenario;

use std::fs;

use linewatch::inventory::ObjectKind;
use linewatch::levels::{AssuranceLevel, CustomerLevel, Scope};
use linewatch::policy::Policy;
use linewatch::replay::replay;
use scenario::*;

fn tmf642(
    id: &str,
    object: &str,
    cause: &str,
    state: &str,
    raised: &str,
    cleared: Option<&str>,
) -> String {
    let mut v = serde_json::json!({
        "id": id,
        "state": state,
        "alarmType": "communicationsAlarm",
        "perceivedSeverity": if state == "cleared" { "cleared" } else { "critical" },
        "probableCause": cause,
        "alarmedObject": { "id": object },
        "sourceSystemId": "otn-nms",
        "alarmRaisedTime": raised,
    });
    if let Some(c) = cleared {
        v["alarmClearedTime"] = c.into();
    }
    v.to_string()
}

fn write_inputs(dir: &std::path::Path) {
    let inventory: Vec<String> = (0..3)
        .map(|i| {
            let path = vec![
                element(ObjectKind::Ne, &format!("CPE-{i}"), "cpe", "CPE"),
                element(
                    ObjectKind::Port,
                    &format!("SZ-OTN-1/3/{i}"),
                    "transmission",
                    "OTN",
                ),
            ];
            let c = circuit(
                &format!("C{i}"),
                CustomerLevel::Gold,
                AssuranceLevel::Aaa,
                Scope::IntraCity,
                vec![path],
            );
            serde_json::to_string(&c).expect("circuit serializes")
        })
        .collect();
    fs::write(dir.join("inventory.jsonl"), inventory.join("\n") + "\n").expect("write");
    let alarms = [
        // The whole card fails at 08:30 Shanghai time, back at 09:47.
        tmf642(
            "A1",
            "SZ-OTN-1/3",
            "equipmentFailure",
            "raised",
            "2026-05-01T08:30:00+08:00",
            None,
        ),
        "{ this is not json".to_string(),
        tmf642(
            "A1",
            "SZ-OTN-1/3",
            "equipmentFailure",
            "cleared",
            "2026-05-01T08:30:00+08:00",
            Some("2026-05-01T09:47:00+08:00"),
        ),
    ];
    fs::write(dir.join("alarms.jsonl"), alarms.join("\n") + "\n").expect("write");
}

#[test]
fn replay_is_byte_identical_and_rejects_bad_lines_with_their_place() {
    let input = tempfile::tempdir().expect("tempdir");
    write_inputs(input.path());
    let out1 = tempfile::tempdir().expect("tempdir");
    let out2 = tempfile::tempdir().expect("tempdir");

    // Run the clock to Thursday: the gold customers' tickets, restored on Friday 1 May,
    // stay resolved until their written report is due, by the end of Tuesday 5 May.
    let until = Some(sh(2026, 5, 7, 0, 0, 0));
    let s1 = replay(input.path(), out1.path(), Policy::builtin(), until).expect("replay");
    let s2 = replay(input.path(), out2.path(), Policy::builtin(), until).expect("replay");
    assert_eq!(s1, s2);
    assert_eq!(s1.tickets_opened, 3, "the card carries three circuits");
    assert_eq!(s1.rejected, 1);

    for name in [
        "tickets.jsonl",
        "reminders.jsonl",
        "circuits-status.jsonl",
        "rejections.jsonl",
    ] {
        let a = fs::read(out1.path().join(name)).expect("read");
        let b = fs::read(out2.path().join(name)).expect("read");
        assert_eq!(a, b, "{name} differs between two replays");
    }

    let rejections = fs::read_to_string(out1.path().join("rejections.jsonl")).expect("read");
    let rej: serde_json::Value = serde_json::from_str(rejections.trim()).expect("json");
    assert_eq!(rej["reason_code"], "not_json");
    assert_eq!(rej["source"]["file"], "alarms.jsonl");
    assert_eq!(rej["source"]["line"], 2);
    assert_eq!(rej["original"], "{ this is not json");

    // Each ticket: opened at 08:30, restored at 09:47 (77 minutes down), closed.
    let tickets = fs::read_to_string(out1.path().join("tickets.jsonl")).expect("read");
    let events: Vec<serde_json::Value> = tickets
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let restored: Vec<_> = events
        .iter()
        .filter(|e| e["slaEvent"]["kind"] == "restored")
        .collect();
    assert_eq!(restored.len(), 3);
    for r in restored {
        let t = &r["event"]["troubleTicket"];
        assert_eq!(t["creationDate"], "2026-05-01T00:30:00Z");
        assert_eq!(t["resolutionDate"], "2026-05-01T01:47:00Z");
        assert_eq!(t["sla"]["downMinutes"], 77);
        assert_eq!(t["relatedParty"][1]["id"], "transport");
    }
    let closed = events
        .iter()
        .filter(|e| e["slaEvent"]["kind"] == "closed")
        .count();
    assert_eq!(closed, 3);
    // Each with its written report overdue at Wednesday 00:00 Shanghai time: a reminder,
    // not a ticket event (the ticket does not change).
    let reminders = fs::read_to_string(out1.path().join("reminders.jsonl")).expect("read");
    let reminders: Vec<serde_json::Value> = reminders
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(s1.reminders, reminders.len() as u64);
    let overdue: Vec<_> = reminders
        .iter()
        .filter(|e| e["kind"] == "writtenReportDue")
        .map(|e| (e["eventTime"].as_str(), e["dueAt"].as_str()))
        .collect();
    let wednesday = Some("2026-05-05T16:00:00Z");
    assert_eq!(overdue, vec![(wednesday, wednesday); 3]);
    assert!(!events
        .iter()
        .any(|e| e["slaEvent"]["kind"] == "writtenReportDue"));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(16))]

    /// Any mix of raises, clears and junk lines replays to the same bytes twice.
    #[test]
    fn replay_twice_is_byte_identical(
        spec in proptest::collection::vec((0u8..4, 0u32..86_400, 1u32..20_000), 1..40),
    ) {
        let input = tempfile::tempdir().expect("tempdir");
        write_inputs(input.path());
        let objects = ["SZ-OTN-1/3", "SZ-OTN-1/3/0", "SZ-OTN-1/3/1", "CPE-2"];
        let mut lines = Vec::new();
        for (n, (obj, start, dur)) in spec.iter().enumerate() {
            let raised = chrono::DateTime::<chrono::Utc>::from_timestamp(1_780_000_000 + i64::from(*start), 0)
                .expect("time")
                .to_rfc3339();
            let cleared = chrono::DateTime::<chrono::Utc>::from_timestamp(1_780_000_000 + i64::from(*start + *dur), 0)
                .expect("time")
                .to_rfc3339();
            let id = format!("P{n}");
            let object = objects[usize::from(*obj)];
            lines.push(tmf642(&id, object, "LOS", "raised", &raised, None));
            lines.push(tmf642(&id, object, "LOS", "cleared", &raised, Some(&cleared)));
            if n % 7 == 0 {
                lines.push(format!("{{\"broken\": {n}"));
            }
        }
        fs::write(input.path().join("alarms.jsonl"), lines.join("\n") + "\n").expect("write");
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        replay(input.path(), a.path(), Policy::builtin(), None).expect("replay");
        replay(input.path(), b.path(), Policy::builtin(), None).expect("replay");
        for entry in fs::read_dir(a.path()).expect("dir") {
            let name = entry.expect("entry").file_name();
            let x = fs::read(a.path().join(&name)).expect("read");
            let y = fs::read(b.path().join(&name)).expect("read");
            proptest::prop_assert_eq!(x, y, "{:?} differs", name);
        }
    }
}

/// Issue 15, "done means": the replay of a day of the simulator's traffic over 2 000
/// circuits warns in a chain: per circuit and period, every risk warning's `from` is the
/// previous warning's `to` ("ok" for the first) and the status of the previous figure
/// record, and no two consecutive warnings have the same `to` (but for a breached circuit
/// passing one more limit, as the warning schema says).
#[test]
fn replay_of_simulated_traffic_warns_each_worsening_once() {
    use linewatch::simulate::{topology, traffic, SimConfig, SimStream};
    use std::io::Write;
    let cfg = SimConfig {
        seed: 15,
        circuits: 2_000,
        start: sh(2026, 3, 10, 0, 0, 0),
        duration: chrono::Duration::hours(24),
        ..SimConfig::default()
    };
    let topo = topology(&cfg);
    let records = traffic(&cfg, &topo);
    let input = tempfile::tempdir().expect("tempdir");
    let open = |name: &str| {
        std::io::BufWriter::new(fs::File::create(input.path().join(name)).expect("create"))
    };
    let mut inventory = open("inventory.jsonl");
    for (_, c) in &topo.circuits {
        writeln!(inventory, "{c}").expect("write");
    }
    let (mut alarms, mut works) = (open("alarms.jsonl"), open("maintenance.jsonl"));
    for r in &records {
        match r.stream {
            SimStream::Alarms => writeln!(alarms, "{}", r.value),
            SimStream::Maintenance => writeln!(works, "{}", r.value),
        }
        .expect("write");
    }
    for mut f in [inventory, alarms, works] {
        f.flush().expect("flush");
    }
    let output = tempfile::tempdir().expect("tempdir");
    replay(input.path(), output.path(), Policy::builtin(), None).expect("replay");

    let text = fs::read_to_string(output.path().join("warnings.jsonl")).expect("read");
    let warnings: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let risks = warnings
        .iter()
        .filter(|w| w["circuitId"].is_string())
        .count();
    assert!(risks > 0, "the day has risk warnings to check");
    let breaks = warning_chain_breaks(&warnings);
    assert!(
        breaks.is_empty(),
        "{} of {risks} risk warnings break the chain, e.g. {:?}",
        breaks.len(),
        &breaks[..breaks.len().min(5)]
    );

    // Every warning's `from` is the status of the circuit's previous figure record for
    // the period: the record emitted with a warning has the warning's `at` as its `asOf`
    // and its `to` as its status, and the one before it (in the order of kpi.jsonl,
    // which is the order the engine emitted them) had the status the warning starts from.
    let text = fs::read_to_string(output.path().join("kpi.jsonl")).expect("read");
    let mut records: std::collections::BTreeMap<(String, String), Vec<(String, String)>> =
        Default::default();
    for line in text.lines() {
        let r: serde_json::Value = serde_json::from_str(line).expect("json");
        let field = |k: &str| r[k].as_str().unwrap_or_default().to_string();
        records
            .entry((field("circuitId"), field("period")))
            .or_default()
            .push((field("asOf"), field("status")));
    }
    // Where each circuit and period's matching has got to in its records.
    let mut cursor: std::collections::BTreeMap<(String, String), usize> = Default::default();
    let mut mismatches = Vec::new();
    for w in warnings.iter().filter(|w| w["circuitId"].is_string()) {
        let field = |k: &str| w[k].as_str().unwrap_or_default().to_string();
        let key = (field("circuitId"), field("period"));
        let list = records.get(&key).map(Vec::as_slice).unwrap_or_default();
        let from = cursor.get(&key).copied().unwrap_or(0);
        let at = chrono::DateTime::parse_from_rfc3339(&field("at")).expect("time");
        let found = list
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, (as_of, status))| {
                chrono::DateTime::parse_from_rfc3339(as_of).is_ok_and(|t| t == at)
                    && *status == field("to")
            });
        let Some((i, _)) = found else {
            mismatches.push(format!("no record for {w}"));
            continue;
        };
        let previous = if i == 0 { "ok" } else { list[i - 1].1.as_str() };
        if previous != field("from") {
            mismatches.push(format!("after a {previous} record: {w}"));
        }
        cursor.insert(key, i + 1);
    }
    assert!(
        mismatches.is_empty(),
        "{} of {risks} warnings do not start from the previous record, e.g. {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(5)]
    );
}

/// `replay --figures-from/--figures-to` as the library does it: each circuit's figures over
/// the span in figures-span.jsonl; a calendar day is that day, as its records count it.
#[test]
fn replay_writes_each_circuits_figures_over_a_span() {
    use linewatch::replay::{replay_with, ReplayOptions, SPAN_FIGURES_FILE};
    use linewatch::sla::Span;

    let input = tempfile::tempdir().expect("tempdir");
    write_inputs(input.path());
    let lines = |dir: &std::path::Path, name: &str| -> Vec<serde_json::Value> {
        fs::read_to_string(dir.join(name))
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect()
    };
    let run = |span: Option<Span>| {
        let out = tempfile::tempdir().expect("tempdir");
        let options = ReplayOptions {
            until: Some(sh(2026, 5, 7, 0, 0, 0)),
            figures_over: span,
            ..ReplayOptions::default()
        };
        replay_with(input.path(), out.path(), Policy::builtin(), &options).expect("replay");
        out
    };

    // 1 May in Shanghai: each circuit down 08:30-09:47, one failure.
    let day = Span::new(sh(2026, 5, 1, 0, 0, 0), sh(2026, 5, 2, 0, 0, 0));
    let out = run(Some(day));
    let figures = lines(out.path(), SPAN_FIGURES_FILE);
    let ids: Vec<_> = figures.iter().map(|f| f["circuitId"].clone()).collect();
    assert_eq!(ids, ["C0", "C1", "C2"]);
    let kpi = lines(out.path(), "kpi.jsonl");
    for f in &figures {
        assert_eq!(f["period"], "2026-05-01");
        assert_eq!(
            (f["failures"].as_u64(), f["outageSeconds"].as_u64()),
            (Some(1), Some(77 * 60))
        );
        assert_eq!(
            f["asOf"], "2026-05-06T16:00:00Z",
            "as of the end of the replay"
        );
        // The day's last record, final, is the same but for its time.
        let mut record = kpi
            .iter()
            .rev()
            .find(|r| r["circuitId"] == f["circuitId"] && r["period"] == "2026-05-01")
            .expect("a day record")
            .clone();
        assert_eq!(record["final"], true);
        record["asOf"] = f["asOf"].clone();
        assert_eq!(&record, f);
    }
    // The quarter is streamed too.
    assert!(kpi.iter().any(|r| r["period"] == "2026-Q2"));

    // 09:00-10:00: 47 minutes down, no failure starts in it, no limits.
    let out = run(Some(Span::new(
        sh(2026, 5, 1, 9, 0, 0),
        sh(2026, 5, 1, 10, 0, 0),
    )));
    let figures = lines(out.path(), SPAN_FIGURES_FILE);
    assert_eq!(figures.len(), 3);
    assert_eq!(
        figures[0]["period"],
        "2026-05-01T01:00:00Z/2026-05-01T02:00:00Z"
    );
    assert_eq!(
        (
            figures[0]["failures"].as_u64(),
            figures[0]["outageSeconds"].as_u64()
        ),
        (Some(0), Some(47 * 60))
    );
    assert_eq!(figures[0]["failureLimit"], serde_json::Value::Null);

    // Without a span, no such file.
    let out = run(None);
    assert!(!out.path().join(SPAN_FIGURES_FILE).exists());
}
