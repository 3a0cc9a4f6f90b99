//! A fiber cut under 50 circuits: one ticket per circuit, the link alarm as root cause,
//! the transport team as lead, and deadlines checked by hand against DOMAIN.md.

mod scenario;

use std::collections::BTreeMap;

use linewatch::engine::{Engine, Input};
use linewatch::inventory::{InventoryChange, ObjectKind};
use linewatch::levels::{AssuranceLevel, CustomerLevel, Scope, Severity};
use linewatch::policy::Policy;
use linewatch::ticket::{ReminderKind, SlaEvent, SlaReminder, TicketEvent, TicketStatus};
use scenario::*;

const ASSURANCE: [AssuranceLevel; 4] = [
    AssuranceLevel::Aaa,
    AssuranceLevel::Aa,
    AssuranceLevel::A,
    AssuranceLevel::Ordinary,
];
const CUSTOMER: [CustomerLevel; 5] = [
    CustomerLevel::Gold,
    CustomerLevel::Silver,
    CustomerLevel::Bronze,
    CustomerLevel::Standard,
    CustomerLevel::Key,
];

/// Circuit i: CPE → access PTN port → the cut fibre link → aggregation PTN NE → PE router port.
fn inventory() -> Vec<Input> {
    (0..50)
        .map(|i| {
            let path = vec![
                element(ObjectKind::Ne, &format!("CPE-{i}"), "cpe", "CPE"),
                element(
                    ObjectKind::Port,
                    &format!("SZ-PTN-A/1/{i}"),
                    "transmission",
                    "PTN",
                ),
                element(ObjectKind::Link, "L-SZ-01", "transmission", "OTN"),
                element(ObjectKind::Ne, "SZ-PTN-B", "transmission", "PTN"),
                element(
                    ObjectKind::Port,
                    &format!("SZ-PE-1/2/{i}"),
                    "data",
                    "router",
                ),
            ];
            let scope = if i % 2 == 0 {
                Scope::IntraCity
            } else {
                Scope::InterProvince
            };
            let c = circuit(
                &format!("C{i:03}"),
                CUSTOMER[i % 5],
                ASSURANCE[i % 4],
                scope,
                vec![path],
            );
            Input::Inventory(InventoryChange::Upsert(Box::new(c)))
        })
        .collect()
}

fn storm(los_first: bool) -> Vec<Input> {
    // 2026-03-10, Shanghai local time.
    let los = alarm(
        "LOS-1",
        "OTN-NMS",
        "L-SZ-01",
        "LOS",
        Severity::Critical,
        sh(2026, 3, 10, 10, 0, 0),
    );
    let ais = alarm(
        "AIS-7",
        "PTN-NMS",
        "SZ-PTN-B",
        "TU-AIS",
        Severity::Major,
        sh(2026, 3, 10, 10, 0, 1),
    );
    let bgp = alarm(
        "BGP-3",
        "IP-NMS",
        "SZ-PE-1",
        "BGP neighbor down",
        Severity::Major,
        sh(2026, 3, 10, 10, 0, 5),
    );
    let mut raised = vec![los.clone(), ais.clone(), bgp.clone()];
    if !los_first {
        // The consequential alarms reach the engine before their cause.
        raised.rotate_left(1);
    }
    let mut inputs = inventory();
    inputs.extend(raised.into_iter().map(Input::Alarm));
    inputs.push(Input::Alarm(clear(&los, sh(2026, 3, 10, 11, 20, 0))));
    inputs.push(Input::Alarm(clear(&ais, sh(2026, 3, 10, 11, 20, 1))));
    inputs.push(Input::Alarm(clear(&bgp, sh(2026, 3, 10, 11, 20, 30))));
    inputs
}

fn by_ticket(events: &[&TicketEvent]) -> BTreeMap<String, Vec<TicketEvent>> {
    let mut m: BTreeMap<String, Vec<TicketEvent>> = BTreeMap::new();
    for e in events {
        m.entry(e.ticket().id.clone())
            .or_default()
            .push((*e).clone());
    }
    m
}

#[test]
fn fiber_cut_gives_one_ticket_per_circuit_with_the_link_as_root_cause() {
    let mut engine = Engine::new(Policy::builtin());
    // To Saturday: the tickets of gold and key customers stay resolved until their written
    // report is due, by the end of Thursday (2 working days after Tuesday's restoration).
    let out = run(&mut engine, storm(true), sh(2026, 3, 14, 0, 0, 0));
    let events = tickets(&out);
    let per_ticket = by_ticket(&events);

    // Exactly one ticket per circuit.
    assert_eq!(per_ticket.len(), 50);
    let creates: Vec<_> = events
        .iter()
        .filter(|e| e.sla_event == SlaEvent::Opened)
        .collect();
    assert_eq!(creates.len(), 50);
    let mut circuits: Vec<_> = creates
        .iter()
        .map(|e| e.ticket().related_entity[0].id.clone())
        .collect();
    circuits.sort();
    circuits.dedup();
    assert_eq!(circuits.len(), 50);

    for (i, create) in creates.iter().enumerate() {
        let t = create.ticket();
        let idx: usize = t.related_entity[0].id[1..].parse().expect("circuit index");
        assert_eq!(create.event_type, "TroubleTicketCreateEvent", "ticket {i}");
        // The fibre's LOS is the root cause and transport leads, on every circuit.
        assert_eq!(t.root_cause.alarm_key, "OTN-NMS:LOS-1");
        assert_eq!(t.related_party[1].id, "transport");
        assert_eq!(t.creation_date, sh(2026, 3, 10, 10, 0, 0));
        // Accept within 10 min: 10:10.
        assert_eq!(t.sla.accept_by, sh(2026, 3, 10, 10, 10, 0));
        // Restoration limits (table 7-2), from 10:00:
        //   AAA: 2 h in a city or province → 12:00, 4 h between provinces → 14:00
        //   AA:  4 h → 14:00, 5 h → 15:00;   A: 6 h → 16:00;   ordinary: 8 h → 18:00
        let expected_restore_by = match (ASSURANCE[idx % 4], idx % 2 == 0) {
            (AssuranceLevel::Aaa, true) => sh(2026, 3, 10, 12, 0, 0),
            (AssuranceLevel::Aaa, false) => sh(2026, 3, 10, 14, 0, 0),
            (AssuranceLevel::Aa, true) => sh(2026, 3, 10, 14, 0, 0),
            (AssuranceLevel::Aa, false) => sh(2026, 3, 10, 15, 0, 0),
            (AssuranceLevel::A, _) => sh(2026, 3, 10, 16, 0, 0),
            (AssuranceLevel::Ordinary, _) => sh(2026, 3, 10, 18, 0, 0),
        };
        assert_eq!(t.sla.restore_by, expected_restore_by, "circuit {idx}");
        // Important (gold/key customer or AAA circuit): joint handling at 11:00, all on
        // site at 12:00. Others: joint handling at 13:00.
        let important = matches!(CUSTOMER[idx % 5], CustomerLevel::Gold | CustomerLevel::Key)
            || ASSURANCE[idx % 4] == AssuranceLevel::Aaa;
        let escalation_times: Vec<_> = t.sla.escalations.iter().map(|e| e.at).collect();
        if important {
            assert_eq!(
                escalation_times,
                vec![sh(2026, 3, 10, 11, 0, 0), sh(2026, 3, 10, 12, 0, 0)]
            );
        } else {
            assert_eq!(escalation_times, vec![sh(2026, 3, 10, 13, 0, 0)]);
        }
        // Leadership notice for AAA and AA full outages.
        assert_eq!(
            t.sla.leadership_notice,
            matches!(ASSURANCE[idx % 4], AssuranceLevel::Aaa | AssuranceLevel::Aa)
        );
    }

    let reminders = reminders(&out);
    for (id, evs) in &per_ticket {
        let t0 = evs[0].ticket();
        let due: Vec<&SlaReminder> = reminders
            .iter()
            .copied()
            .filter(|r| &r.ticket_id == id)
            .collect();
        let kinds_due: Vec<ReminderKind> = due.iter().map(|r| r.kind).collect();
        let idx: usize = t0.related_entity[0].id[1..].parse().expect("circuit index");
        let important = matches!(CUSTOMER[idx % 5], CustomerLevel::Gold | CustomerLevel::Key)
            || ASSURANCE[idx % 4] == AssuranceLevel::Aaa;
        // Nobody accepted the ticket: acceptance overdue at 10:10.
        let overdue = due
            .iter()
            .find(|r| r.kind == ReminderKind::AcceptanceOverdue)
            .expect("overdue");
        assert_eq!(overdue.event_time, sh(2026, 3, 10, 10, 10, 0));
        assert_eq!(overdue.due_at, sh(2026, 3, 10, 10, 10, 0));
        // Restored by the last clear, 11:20:30, before any restoration deadline.
        let restored = evs
            .iter()
            .find(|e| e.sla_event == SlaEvent::Restored)
            .expect("restored");
        assert_eq!(restored.event_time, sh(2026, 3, 10, 11, 20, 30), "{id}");
        assert_eq!(restored.ticket().status, TicketStatus::Resolved);
        assert!(
            !kinds_due.contains(&ReminderKind::DeadlineBreached),
            "{id}: {kinds_due:?}"
        );
        // Only important circuits reached an escalation (joint handling at 11:00).
        let escalations = evs
            .iter()
            .filter(|e| matches!(e.sla_event, SlaEvent::Escalated { .. }))
            .count();
        assert_eq!(escalations, usize::from(important), "{id}");
        // Feedback: gold and key every 30 min → 10:30 and 11:00; silver hourly → 11:00.
        let feedback: Vec<_> = due
            .iter()
            .filter(|r| r.kind == ReminderKind::FeedbackDue)
            .map(|r| r.event_time)
            .collect();
        let expected_feedback = match CUSTOMER[idx % 5] {
            CustomerLevel::Gold | CustomerLevel::Key => {
                vec![sh(2026, 3, 10, 10, 30, 0), sh(2026, 3, 10, 11, 0, 0)]
            }
            CustomerLevel::Silver => vec![sh(2026, 3, 10, 11, 0, 0)],
            _ => vec![],
        };
        assert_eq!(feedback, expected_feedback, "{id}");
        // Cause and result to the customer within 30 min of restoration: 11:50:30.
        let post = due
            .iter()
            .find(|r| r.kind == ReminderKind::PostRestoreFeedbackDue)
            .expect("post-restore feedback");
        assert_eq!(post.event_time, sh(2026, 3, 10, 11, 50, 30));
        // Reminders are numbered on their own, without gaps; ticket events never carry
        // them (a reminder changes no field of the ticket).
        for (n, r) in due.iter().enumerate() {
            assert_eq!(r.event_id, format!("{id}-R{n:04}"));
            assert_eq!(&r.circuit_id, &t0.related_entity[0].id);
        }
        // The ticket ends closed, and its event ids are unique and in sequence.
        assert_eq!(evs.last().map(|e| &e.sla_event), Some(&SlaEvent::Closed));
        for (n, e) in evs.iter().enumerate() {
            assert_eq!(e.event_id, format!("{id}-{n:04}"));
        }
    }
}

#[test]
fn consequential_alarm_first_revises_the_root_cause_on_the_same_ticket() {
    let mut in_order = Engine::new(Policy::builtin());
    let expected = run(&mut in_order, storm(true), sh(2026, 3, 14, 0, 0, 0));
    let mut engine = Engine::new(Policy::builtin());
    let out = run(&mut engine, storm(false), sh(2026, 3, 14, 0, 0, 0));
    let events = tickets(&out);
    let per_ticket = by_ticket(&events);
    assert_eq!(per_ticket.len(), 50, "still one ticket per circuit");
    for evs in per_ticket.values() {
        let create = &evs[0];
        // Opened on the AIS (the first to arrive), then revised to the LOS.
        assert_eq!(create.ticket().root_cause.alarm_key, "PTN-NMS:AIS-7");
        assert_eq!(create.ticket().related_party[1].id, "transport");
        assert!(evs
            .iter()
            .any(|e| e.sla_event == SlaEvent::RootCauseRevised));
        assert!(evs
            .iter()
            .any(|e| e.sla_event == SlaEvent::FaultStartRevised));
        let last = evs.last().expect("events").ticket();
        assert_eq!(last.root_cause.alarm_key, "OTN-NMS:LOS-1");
        assert_eq!(last.creation_date, sh(2026, 3, 10, 10, 0, 0));
        assert_eq!(last.status, TicketStatus::Closed);
    }
    // The final state of every ticket matches the in-order run's, deadlines included.
    let finals =
        |evs: &[&TicketEvent]| -> BTreeMap<String, (chrono::DateTime<chrono::Utc>, String)> {
            by_ticket(evs)
                .values()
                .map(|v| {
                    let t = v.last().expect("events").ticket();
                    (
                        t.related_entity[0].id.clone(),
                        (t.sla.restore_by, t.root_cause.alarm_key.clone()),
                    )
                })
                .collect()
        };
    assert_eq!(finals(&events), finals(&tickets(&expected)));
}

/// The incident records of a run of `inputs`, as (root alarm key, sequence, circuits).
fn incident_records(engine: Engine, inputs: Vec<Input>) -> Vec<(String, u32, usize)> {
    let mut engine = engine;
    let mut out = run(&mut engine, inputs, sh(2026, 3, 10, 10, 30, 0));
    out.extend(engine.finish());
    out.iter()
        .filter_map(|o| match o {
            linewatch::engine::Output::Incident(i) => {
                Some((i.root_alarm.key.clone(), i.sequence, i.circuit_count))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn an_engine_by_instant_hands_the_incidents_one_group_per_instant_as_the_runtime_does() {
    // The transport alarm and its cause at the same second, each its own input, the
    // consequence first: taken input by input, the incidents first see the AIS as the
    // root of 50 tickets, then the LOS; the runtime's incident stage gets the tickets'
    // facts of that second together and sees only the LOS.
    let at = sh(2026, 3, 10, 10, 0, 0);
    let los = alarm("LOS-1", "OTN-NMS", "L-SZ-01", "LOS", Severity::Critical, at);
    let ais = alarm(
        "AIS-7",
        "PTN-NMS",
        "SZ-PTN-B",
        "TU-AIS",
        Severity::Major,
        at,
    );
    let mut inputs = inventory();
    inputs.push(Input::Alarm(ais));
    inputs.push(Input::Alarm(los));

    let per_input = incident_records(Engine::new(Policy::builtin()), inputs.clone());
    let by_instant = incident_records(Engine::new(Policy::builtin()).by_instant(), inputs);

    let los_key = "OTN-NMS:LOS-1".to_string();
    assert_eq!(by_instant, vec![(los_key.clone(), 1, 50)]);
    assert!(
        per_input.iter().any(|(key, _, _)| key == "PTN-NMS:AIS-7"),
        "input by input, the AIS had an incident first: {per_input:?}"
    );
    assert_eq!(per_input.last(), Some(&(los_key, 1, 50)));
}
