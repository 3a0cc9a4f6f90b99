//! Correlation cases: flapping, protected paths, out-of-order and duplicate alarms,
//! service-affecting filter, inventory changes under an active alarm, ticket commands.

mod scenario;

use linewatch::correlation::LineStatus;
use linewatch::engine::{CommandAction, Engine, Input, Output, TicketCommand};
use linewatch::inventory::{InventoryChange, ObjectKind};
use linewatch::levels::{AssuranceLevel, CustomerLevel, Scope, Severity};
use linewatch::policy::Policy;
use linewatch::ticket::{FaultCause, ReminderKind, SlaEvent, TicketStatus};
use scenario::*;

fn simple_circuit(id: &str, port: &str) -> Input {
    let path = vec![
        element(ObjectKind::Ne, "CPE-1", "cpe", "CPE"),
        element(ObjectKind::Port, port, "transmission", "PTN"),
    ];
    Input::Inventory(InventoryChange::Upsert(Box::new(circuit(
        id,
        CustomerLevel::Silver,
        AssuranceLevel::A,
        Scope::IntraCity,
        vec![path],
    ))))
}

fn count(out: &[Output], ev: &SlaEvent) -> usize {
    tickets(out).iter().filter(|e| &e.sla_event == ev).count()
}

#[test]
fn flapping_port_gives_one_fault_and_one_ticket() {
    let mut inputs = vec![simple_circuit("C1", "NE1/1/1")];
    let start = sh(2026, 5, 6, 9, 0, 0);
    // Down at :00, up at :10, every 20 s for 10 minutes: 30 cycles.
    for k in 0..30 {
        let down = start + chrono::Duration::seconds(20 * k);
        let a = alarm(
            &format!("F{k}"),
            "PTN-NMS",
            "NE1/1/1",
            "LOS",
            Severity::Critical,
            down,
        );
        inputs.push(Input::Alarm(a.clone()));
        inputs.push(Input::Alarm(clear(
            &a,
            down + chrono::Duration::seconds(10),
        )));
    }
    let mut engine = Engine::new(Policy::builtin());
    let out = run(&mut engine, inputs, sh(2026, 5, 7, 0, 0, 0));
    assert_eq!(count(&out, &SlaEvent::Opened), 1);
    assert_eq!(count(&out, &SlaEvent::Reopened), 29);
    let ids: std::collections::BTreeSet<_> = tickets(&out)
        .iter()
        .map(|e| e.ticket().id.clone())
        .collect();
    assert_eq!(ids.len(), 1, "one ticket");
    let last = tickets(&out)
        .last()
        .map(|e| e.ticket().clone())
        .expect("events");
    assert_eq!(last.status, TicketStatus::Closed);
    // 30 down intervals of 10 s each: 5 minutes of outage on one fault.
    assert_eq!(last.sla.down_intervals.len(), 30);
    assert_eq!(last.sla.down_minutes, 5);
}

#[test]
fn protected_circuit_is_unprotected_on_one_cut_and_down_on_both() {
    let working = vec![
        element(ObjectKind::Ne, "CPE-9", "cpe", "CPE"),
        element(ObjectKind::Link, "LW", "transmission", "SDH"),
    ];
    let protection = vec![
        element(ObjectKind::Ne, "CPE-9", "cpe", "CPE"),
        element(ObjectKind::Link, "LP", "transmission", "SDH"),
    ];
    let c = circuit(
        "P1",
        CustomerLevel::Gold,
        AssuranceLevel::Aaa,
        Scope::IntraCity,
        vec![working, protection],
    );
    let cut_w = alarm(
        "W",
        "SDH-NMS",
        "LW",
        "LOS",
        Severity::Critical,
        sh(2026, 7, 1, 8, 0, 0),
    );
    let cut_p = alarm(
        "P",
        "SDH-NMS",
        "LP",
        "LOS",
        Severity::Critical,
        sh(2026, 7, 1, 8, 30, 0),
    );

    let mut engine = Engine::new(Policy::builtin());
    let first = run(
        &mut engine,
        vec![
            Input::Inventory(InventoryChange::Upsert(Box::new(c))),
            Input::Alarm(cut_w),
        ],
        sh(2026, 7, 1, 8, 29, 0),
    );
    assert!(tickets(&first).is_empty(), "one route cut opens no ticket");
    assert_eq!(
        first,
        vec![Output::Line(linewatch::engine::LineEvent {
            circuit_id: "P1".into(),
            at: sh(2026, 7, 1, 8, 0, 0),
            status: LineStatus::Unprotected {
                since: sh(2026, 7, 1, 8, 0, 0)
            },
        })]
    );

    let second = run(
        &mut engine,
        vec![Input::Alarm(cut_p)],
        sh(2026, 7, 1, 8, 30, 0),
    );
    let opened = tickets(&second);
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].sla_event, SlaEvent::Opened);
    // The fault starts when the second route is cut, not the first.
    assert_eq!(opened[0].ticket().creation_date, sh(2026, 7, 1, 8, 30, 0));
    assert_eq!(opened[0].ticket().sla.restore_by, sh(2026, 7, 1, 10, 30, 0));
}

#[test]
fn clear_before_raise_duplicate_raise_and_unknown_clear_leave_no_phantom_fault() {
    let raised = alarm(
        "X1",
        "PTN-NMS",
        "NE1/1/1",
        "LOS",
        Severity::Critical,
        sh(2026, 2, 2, 10, 0, 0),
    );
    let cleared = clear(&raised, sh(2026, 2, 2, 10, 5, 0));
    let never_seen = clear(
        &alarm(
            "GHOST",
            "PTN-NMS",
            "NE1/1/1",
            "LOS",
            Severity::Critical,
            sh(2026, 2, 2, 9, 0, 0),
        ),
        sh(2026, 2, 2, 10, 1, 0),
    );
    let inputs = vec![
        simple_circuit("C1", "NE1/1/1"),
        Input::Alarm(never_seen),
        Input::Alarm(cleared.clone()),
        Input::Alarm(raised.clone()),
        Input::Alarm(raised),
    ];
    let mut engine = Engine::new(Policy::builtin());
    let out = run(&mut engine, inputs, sh(2026, 2, 3, 0, 0, 0));
    // The late raise is replayed as raise-then-clear: one fault, 10:00 to 10:05, closed.
    assert_eq!(count(&out, &SlaEvent::Opened), 1);
    assert_eq!(count(&out, &SlaEvent::Restored), 1);
    let last = tickets(&out)
        .last()
        .map(|e| e.ticket().clone())
        .expect("events");
    assert_eq!(last.status, TicketStatus::Closed);
    assert_eq!(last.sla.down_minutes, 5);
    assert!(
        engine.states().faults().next().is_none(),
        "nothing left open"
    );
}

#[test]
fn warnings_do_not_open_faults_and_an_upgrade_does() {
    let warn = alarm(
        "T1",
        "PTN-NMS",
        "NE1/1/1",
        "highTemperature",
        Severity::Warning,
        sh(2026, 2, 2, 10, 0, 0),
    );
    let mut major = warn.clone();
    major.severity = Severity::Major;
    major.state = linewatch::alarm::AlarmState::Updated;
    major.event_time = sh(2026, 2, 2, 10, 3, 0);
    let mut engine = Engine::new(Policy::builtin());
    let out = run(
        &mut engine,
        vec![simple_circuit("C1", "NE1/1/1"), Input::Alarm(warn)],
        sh(2026, 2, 2, 10, 2, 0),
    );
    assert!(tickets(&out).is_empty());
    let out = run(
        &mut engine,
        vec![Input::Alarm(major)],
        sh(2026, 2, 2, 10, 4, 0),
    );
    assert_eq!(count(&out, &SlaEvent::Opened), 1);
}

#[test]
fn circuit_added_under_an_active_alarm_is_impacted_and_deletion_resolves() {
    let a = alarm(
        "L1",
        "OTN-NMS",
        "NE7",
        "powerFailure",
        Severity::Critical,
        sh(2026, 4, 1, 1, 0, 0),
    );
    let mut engine = Engine::new(Policy::builtin());
    let out = run(&mut engine, vec![Input::Alarm(a)], sh(2026, 4, 1, 1, 0, 0));
    assert!(out.is_empty());
    let later = sh(2026, 4, 1, 1, 30, 0);
    engine.advance(later);
    let out = engine
        .handle(simple_circuit("C7", "NE7/2/1"), later)
        .expect("accepted");
    let opened = tickets(&out);
    assert_eq!(opened.len(), 1);
    // Hit from when it was routed through the dead NE, not from the alarm's raise.
    assert_eq!(opened[0].ticket().creation_date, later);
    let out = engine
        .handle(
            Input::Inventory(InventoryChange::Delete {
                circuit_id: "C7".into(),
            }),
            later,
        )
        .expect("accepted");
    assert_eq!(tickets(&out)[0].sla_event, SlaEvent::CircuitDeleted);
    assert_eq!(tickets(&out)[0].ticket().status, TicketStatus::Closed);
}

#[test]
fn acknowledge_and_reclassify_commands_reach_the_ticket() {
    let a = alarm(
        "A1",
        "PTN-NMS",
        "NE1/1/1",
        "LOS",
        Severity::Critical,
        sh(2026, 2, 2, 10, 0, 0),
    );
    let mut engine = Engine::new(Policy::builtin());
    let out = run(
        &mut engine,
        vec![simple_circuit("C1", "NE1/1/1"), Input::Alarm(a.clone())],
        sh(2026, 2, 2, 10, 0, 0),
    );
    let ticket_id = tickets(&out)[0].ticket().id.clone();
    let cmd = |action, cause, m| {
        Input::Command(TicketCommand {
            ticket_id: ticket_id.clone(),
            circuit_id: "C1".into(),
            action,
            cause,
            at: sh(2026, 2, 2, 10, m, 0),
            by: Some("noc-7".into()),
            note: None,
        })
    };
    // Dated before the ticket was opened (10:00): rejected, nothing changes.
    for action in [CommandAction::Acknowledge, CommandAction::Close] {
        let mut early = cmd(action, None, 0);
        if let Input::Command(c) = &mut early {
            c.at = sh(2000, 1, 1, 0, 0, 0);
        }
        let err = engine
            .handle(early, sh(2026, 2, 2, 10, 1, 0))
            .expect_err("a command dated before its ticket");
        assert_eq!(err.code(), linewatch::rejection::RejectCode::Inconsistent);
        assert!(err.to_string().contains("before ticket"), "{err}");
    }
    let inputs = vec![
        cmd(CommandAction::Acknowledge, None, 5),
        cmd(CommandAction::Reclassify, Some(FaultCause::Customer), 20),
        Input::Alarm(clear(&a, sh(2026, 2, 2, 18, 0, 0))),
    ];
    let out = run(&mut engine, inputs, sh(2026, 2, 3, 0, 0, 0));
    let evs = tickets(&out);
    assert_eq!(evs[0].sla_event, SlaEvent::Acknowledged);
    assert_eq!(evs[0].ticket().status, TicketStatus::InProgress);
    let due: Vec<ReminderKind> = reminders(&out).iter().map(|r| r.kind).collect();
    assert!(!due.contains(&ReminderKind::AcceptanceOverdue), "{due:?}");
    assert!(evs.iter().any(|e| e.sla_event
        == SlaEvent::Reclassified {
            cause: FaultCause::Customer
        }));
    // Customer-caused: the 6 h clock stops, so no breach though restored after 8 h.
    assert!(!due.contains(&ReminderKind::DeadlineBreached), "{due:?}");
    assert!(evs.iter().any(|e| e.sla_event == SlaEvent::Restored));

    let bad = engine.handle(
        Input::Command(TicketCommand {
            ticket_id: "TT-nope".into(),
            circuit_id: "C1".into(),
            action: CommandAction::Acknowledge,
            cause: None,
            at: sh(2026, 2, 3, 0, 0, 0),
            by: None,
            note: None,
        }),
        sh(2026, 2, 3, 0, 0, 0),
    );
    assert!(bad.is_err());
}

#[test]
fn an_unrestored_fault_breaches_at_its_limit() {
    let a = alarm(
        "A1",
        "PTN-NMS",
        "NE1/1/1",
        "LOS",
        Severity::Critical,
        sh(2026, 2, 2, 10, 0, 0),
    );
    let mut engine = Engine::new(Policy::builtin());
    let out = run(
        &mut engine,
        vec![simple_circuit("C1", "NE1/1/1"), Input::Alarm(a)],
        sh(2026, 2, 2, 23, 0, 0),
    );
    let evs = tickets(&out);
    // Level A, in a city: 6 h → breach at 16:00; at risk at 80 % of 6 h = 14:48.
    let due = reminders(&out);
    let at = |kind: ReminderKind| {
        due.iter()
            .find(|r| r.kind == kind)
            .map(|r| (r.event_time, r.due_at))
    };
    // Both name the restoration deadline as due.
    assert_eq!(
        at(ReminderKind::DeadlineBreached),
        Some((sh(2026, 2, 2, 16, 0, 0), sh(2026, 2, 2, 16, 0, 0)))
    );
    assert_eq!(
        at(ReminderKind::DeadlineAtRisk),
        Some((sh(2026, 2, 2, 14, 48, 0), sh(2026, 2, 2, 16, 0, 0)))
    );
    // Not important (silver, A): joint handling at 3 h, then bulletins every hour.
    let escalated: Vec<_> = evs
        .iter()
        .filter(|e| matches!(e.sla_event, SlaEvent::Escalated { .. }))
        .map(|e| e.event_time)
        .collect();
    assert_eq!(escalated, vec![sh(2026, 2, 2, 13, 0, 0)]);
    let bulletins: Vec<_> = due
        .iter()
        .filter(|r| r.kind == ReminderKind::BulletinDue)
        .map(|r| r.event_time)
        .collect();
    let numbers: Vec<_> = due
        .iter()
        .filter(|r| r.kind == ReminderKind::BulletinDue)
        .filter_map(|r| r.number)
        .collect();
    assert_eq!(numbers, (1..=10).collect::<Vec<u32>>());
    assert_eq!(bulletins.first(), Some(&sh(2026, 2, 2, 14, 0, 0)));
    assert_eq!(bulletins.len(), 10, "14:00 through 23:00");
}

#[test]
fn a_clear_before_its_raise_survives_a_backlog_read_long_after() {
    // The service reads both an hour late (a backlog after a restart): wall clock 10:00.
    let raised = alarm(
        "B1",
        "PTN-NMS",
        "NE1/1/1",
        "LOS",
        Severity::Critical,
        sh(2026, 2, 2, 9, 0, 0),
    );
    let cleared = clear(&raised, sh(2026, 2, 2, 9, 5, 0));
    let mut engine = Engine::new(Policy::builtin());
    let now = sh(2026, 2, 2, 10, 0, 0);
    for input in [
        simple_circuit("C1", "NE1/1/1"),
        Input::Alarm(cleared),
        Input::Alarm(raised),
    ] {
        engine.advance(now);
        engine.handle(input, now).expect("accepted");
    }
    engine.advance(sh(2026, 2, 3, 0, 0, 0));
    assert!(
        engine.states().faults().next().is_none(),
        "no fault left open"
    );
}

#[test]
fn a_duplicate_raise_after_the_clear_does_not_bring_the_fault_back() {
    let raised = alarm(
        "D1",
        "PTN-NMS",
        "NE1/1/1",
        "LOS",
        Severity::Critical,
        sh(2026, 2, 2, 9, 0, 0),
    );
    let cleared = clear(&raised, sh(2026, 2, 2, 9, 20, 0));
    let mut resent = raised.clone();
    resent.event_time = sh(2026, 2, 2, 9, 25, 0);
    let inputs = vec![
        simple_circuit("C1", "NE1/1/1"),
        Input::Alarm(raised),
        Input::Alarm(cleared),
        Input::Alarm(resent),
    ];
    let mut engine = Engine::new(Policy::builtin());
    let out = run(&mut engine, inputs, sh(2026, 2, 3, 0, 0, 0));
    assert_eq!(count(&out, &SlaEvent::Opened), 1);
    assert_eq!(count(&out, &SlaEvent::Reopened), 0);
    assert!(
        engine.states().faults().next().is_none(),
        "nothing left open"
    );
}
