//! A fibre cut under 13 000 circuits through the engine (issue 16, defect 2): the
//! incident's records on `incidents` go out in parts, each under the producer's 1 MB limit,
//! together listing every circuit exactly once in restoration priority order, each with the
//! whole incident's counts; its parent ticket on `tickets.events` fits as well, in both
//! TMF621 forms. Before parts, the record was about 2.1 MB and was left out.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use linewatch::engine::{Engine, Output};
use linewatch::incident::{IncidentEvent, MAX_CIRCUITS_PER_RECORD};
use linewatch::intake::{decode, Stream};
use linewatch::policy::Policy;
use linewatch::simulate::{storm, storm_cut};
use linewatch::tmf621::Tmf621Version;

/// The stages' record limit (key and value), under the producer's 1 000 000 bytes.
const MAX_RECORD_BYTES: usize = 990_000;
const CIRCUITS: usize = 13_000;

fn alarm(engine: &mut Engine, value: &serde_json::Value, now: DateTime<Utc>) -> Vec<Output> {
    let bytes = value.to_string().into_bytes();
    let mut out = Vec::new();
    for input in decode(Stream::Alarms, None, Some(&bytes)) {
        out.extend(
            engine
                .handle(input.expect("an alarm"), now)
                .expect("handled"),
        );
    }
    out
}

/// The incident records of `out`, each checked to fit; and the parent ticket events,
/// checked likewise in both TMF621 forms.
fn records(out: &[Output]) -> Vec<IncidentEvent> {
    let mut incidents = Vec::new();
    for o in out {
        match o {
            Output::Incident(i) => {
                let size = o.key().len() + o.to_json().expect("json").len();
                assert!(size <= MAX_RECORD_BYTES, "{}: {size} bytes", i.event_id);
                incidents.push(i.as_ref().clone());
            }
            Output::ParentTicket(t) => {
                for version in [Tmf621Version::V4, Tmf621Version::V5] {
                    let size = o.key().len() + o.to_json_as(version).expect("json").len();
                    assert!(size <= MAX_RECORD_BYTES, "{}: {size} bytes", t.event_id);
                }
                let ticket = t.ticket();
                assert_eq!(
                    ticket.trouble_ticket_relationship.len(),
                    MAX_CIRCUITS_PER_RECORD
                );
                assert_eq!(
                    ticket.incident.unlisted_child_tickets,
                    Some(CIRCUITS - MAX_CIRCUITS_PER_RECORD)
                );
                assert_eq!(ticket.incident.circuit_count, CIRCUITS);
            }
            _ => {}
        }
    }
    incidents
}

/// Checks that `parts` are the parts of one record, equal to `whole` once joined.
fn check_parts(parts: &[IncidentEvent], whole: &IncidentEvent) {
    let n = CIRCUITS.div_ceil(MAX_CIRCUITS_PER_RECORD);
    assert_eq!(parts.len(), n, "{n} parts");
    let mut listed = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p.part, u32::try_from(i + 1).ok());
        assert_eq!(p.parts, u32::try_from(n).ok());
        assert_eq!(p.sequence, whole.sequence);
        assert_eq!(p.event_id, format!("{}.{}", whole.event_id, i + 1));
        assert_eq!(p.key(), whole.key());
        assert_eq!(
            (p.status, p.circuit_count, p.down_count),
            (whole.status, whole.circuit_count, whole.down_count),
            "part {} carries the whole incident's counts",
            i + 1
        );
        assert_eq!(
            (&p.root_alarm, p.opened_at, p.restored_at, p.updated_at),
            (
                &whole.root_alarm,
                whole.opened_at,
                whole.restored_at,
                whole.updated_at
            )
        );
        assert!(!p.circuits.is_empty() && p.circuits.len() <= MAX_CIRCUITS_PER_RECORD);
        listed.extend(p.circuits.iter().cloned());
    }
    let distinct: BTreeSet<&str> = listed.iter().map(|c| c.circuit_id.as_str()).collect();
    assert_eq!(distinct.len(), CIRCUITS, "every circuit exactly once");
    assert_eq!(listed, whole.circuits, "in the record's order");
}

#[test]
fn a_cut_under_13000_circuits_goes_out_in_parts_that_fit() {
    let t0: DateTime<Utc> = "2026-03-02T00:00:00Z".parse().expect("time");
    let mut engine = Engine::new(Policy::builtin());
    for (key, value) in storm(16, CIRCUITS) {
        let bytes = serde_json::to_vec(&value).expect("json");
        for input in decode(Stream::Inventory, Some(key.as_bytes()), Some(&bytes)) {
            let input = input.unwrap_or_else(|e| panic!("{key}: {e}"));
            assert!(engine.handle(input, t0).is_ok());
        }
    }
    let (raise, clear) = storm_cut(t0, t0 + Duration::hours(1));

    let out = alarm(&mut engine, &raise, t0);
    let parts = records(&out);
    let incident = engine.incidents().incidents().next().expect("an incident");
    let whole = incident.record().expect("emitted");
    assert_eq!(
        (whole.circuit_count, whole.down_count),
        (CIRCUITS, CIRCUITS)
    );
    let whole_bytes = serde_json::to_vec(&whole).expect("json").len();
    assert!(
        whole_bytes > 1_000_000,
        "the whole record ({whole_bytes} bytes) would not fit"
    );
    check_parts(&parts, &whole);

    // The clear: every circuit back, the next state in parts again.
    let out = alarm(&mut engine, &clear, t0 + Duration::hours(1));
    let mut parts = records(&out);
    // Only the incident's last state matters here (the circuits may come back in steps).
    let last = parts.last().map(|p| p.sequence).expect("records");
    parts.retain(|p| p.sequence == last);
    let incident = engine.incidents().incidents().next().expect("an incident");
    let whole = incident.record().expect("emitted");
    assert_eq!(whole.down_count, 0);
    assert_eq!(whole.sequence, last);
    check_parts(&parts, &whole);
}
