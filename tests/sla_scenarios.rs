//! SLA figures end to end through the engine: the fibre-cut incident, an outage across
//! New Year's midnight, planned works with and without proper notice, and a fault
//! reclassified as customer-caused. Expected figures are worked out by hand in comments.

mod scenario;

use linewatch::engine::{CommandAction, Engine, Input, Output, TicketCommand, Warning};
use linewatch::incident::IncidentStatus;
use linewatch::inventory::{InventoryChange, ObjectKind};
use linewatch::levels::{AssuranceLevel, CustomerLevel, Scope, Severity};
use linewatch::maintenance::MaintenanceWindow;
use linewatch::policy::Policy;
use linewatch::sla::{CircuitFigures, Status};
use linewatch::ticket::{FaultCause, ReminderKind, SlaEvent};
use scenario::*;

/// The last figures emitted for `circuit` and `period`.
fn last_figures<'a>(out: &'a [Output], circuit: &str, period: &str) -> &'a CircuitFigures {
    out.iter()
        .rev()
        .find_map(|o| match o {
            Output::Figures(f) if f.circuit_id == circuit && f.period == period => Some(f.as_ref()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no figures for {circuit} {period}"))
}

fn upsert(id: &str, customer: CustomerLevel, level: AssuranceLevel, port: &str) -> Input {
    let path = vec![
        element(ObjectKind::Ne, &format!("CPE-{id}"), "cpe", "CPE"),
        element(ObjectKind::Port, port, "transmission", "PTN"),
        element(ObjectKind::Link, "L-FIBRE-1", "transmission", "OTN"),
    ];
    Input::Inventory(InventoryChange::Upsert(Box::new(circuit(
        id,
        customer,
        level,
        Scope::IntraCity,
        vec![path],
    ))))
}

/// A critical loss of signal on `port` from the PTN NMS.
fn los(id: &str, port: &str, at: chrono::DateTime<chrono::Utc>) -> linewatch::alarm::Alarm {
    alarm(id, "PTN-NMS", port, "LOS", Severity::Critical, at)
}

#[test]
fn fibre_cut_is_one_incident_with_circuits_in_restoration_order_and_hand_checked_outage() {
    // Eight circuits on one fibre, levels deliberately out of order in the inventory.
    let levels = [
        ("F1", CustomerLevel::Standard, AssuranceLevel::Ordinary),
        ("F2", CustomerLevel::Gold, AssuranceLevel::A),
        ("F3", CustomerLevel::Silver, AssuranceLevel::Aaa),
        ("F4", CustomerLevel::Key, AssuranceLevel::Aa),
        ("F5", CustomerLevel::Bronze, AssuranceLevel::Aaa),
        ("F6", CustomerLevel::Silver, AssuranceLevel::Ordinary),
        ("F7", CustomerLevel::Gold, AssuranceLevel::Aa),
        ("F8", CustomerLevel::Key, AssuranceLevel::Aaa),
    ];
    let mut inputs: Vec<Input> = levels
        .iter()
        .enumerate()
        .map(|(i, (id, c, a))| upsert(id, *c, *a, &format!("PTN-1/1/{i}")))
        .collect();
    // Cut at 09:00, repaired at 09:40 Shanghai time on 2026-08-03.
    let cut = alarm(
        "CUT",
        "OTN-NMS",
        "L-FIBRE-1",
        "LOS",
        Severity::Critical,
        sh(2026, 8, 3, 9, 0, 0),
    );
    inputs.push(Input::Alarm(cut.clone()));
    inputs.push(Input::Alarm(clear(&cut, sh(2026, 8, 3, 9, 40, 0))));
    let mut engine = Engine::new(Policy::builtin());
    // Run to the Thursday: the tickets of gold and key customers stay resolved until their
    // written report is due, by the end of the second working day after the restoration
    // (Wednesday), and the incident closes with its last ticket.
    let out = run(&mut engine, inputs, sh(2026, 8, 6, 0, 0, 0));

    let incidents: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Incident(i) => Some(i.as_ref()),
            _ => None,
        })
        .collect();
    let ids: std::collections::BTreeSet<_> =
        incidents.iter().map(|i| i.incident_id.clone()).collect();
    assert_eq!(ids.len(), 1, "one incident");
    let first = incidents[0];
    assert_eq!(first.status, IncidentStatus::Open);
    assert_eq!(first.root_alarm.key, "OTN-NMS:CUT");
    // Restoration priority: AAA (key F8, silver F3, bronze F5), AA (key F4, gold F7),
    // A (F2), ordinary (silver F6, standard F1).
    let order: Vec<_> = first
        .circuits
        .iter()
        .map(|c| c.circuit_id.as_str())
        .collect();
    assert_eq!(order, ["F8", "F3", "F5", "F4", "F7", "F2", "F6", "F1"]);
    assert_eq!(
        incidents.last().map(|i| i.status),
        Some(IncidentStatus::Closed)
    );

    // 40 minutes down = 2400 s. For AAA the 2026 availability budget is
    // 0.0001 × 365 × 86 400 s = 3153.6 s, at risk from 0.8 × 3153.6 = 2522.88 s: 2400 s is
    // still ok. For ordinary it is 0.0028 × 31 536 000 = 88 300.8 s: far away.
    let f8 = last_figures(&out, "F8", "2026");
    assert_eq!(
        (f8.failures, f8.outage_seconds, f8.status),
        (1, 2400, Status::Ok)
    );
    assert_eq!(f8.failure_limit, Some(4));
    assert_eq!(f8.outage_limit_seconds, Some(6 * 3600));
    // Availability so far: 1 − 2400 / (seconds from 2026-01-01 00:00 to the figures' time).
    let elapsed = (f8.as_of - sh(2026, 1, 1, 0, 0, 0)).num_seconds() as f64;
    assert!((f8.availability - (1.0 - 2400.0 / elapsed)).abs() < 1e-9);
    let f1 = last_figures(&out, "F1", "2026");
    assert_eq!(
        (f1.failures, f1.outage_seconds, f1.status),
        (1, 2400, Status::Ok)
    );
}

#[test]
fn an_outage_across_new_year_counts_in_both_years() {
    // Down from 23:00 on 2025-12-31 to 01:30 on 2026-01-01, Shanghai time.
    let los = los("NY", "PTN-9/1/1", sh(2025, 12, 31, 23, 0, 0));
    let inputs = vec![
        upsert("NY1", CustomerLevel::Gold, AssuranceLevel::A, "PTN-9/1/1"),
        Input::Alarm(los.clone()),
        Input::Alarm(clear(&los, sh(2026, 1, 1, 1, 30, 0))),
    ];
    let mut engine = Engine::new(Policy::builtin());
    let out = run(&mut engine, inputs, sh(2026, 1, 2, 0, 0, 0));
    // 2025: one failure, 23:00 to midnight = 3600 s. 2026: the remaining 5400 s, and no
    // failure (the fault started in 2025).
    let y2025 = last_figures(&out, "NY1", "2025");
    assert_eq!((y2025.failures, y2025.outage_seconds), (1, 3600));
    assert!(y2025.is_final);
    let y2026 = last_figures(&out, "NY1", "2026");
    assert_eq!((y2026.failures, y2026.outage_seconds), (0, 5400));
    assert_eq!(
        y2025.outage_seconds + y2026.outage_seconds,
        9000,
        "nothing lost or added"
    );
    assert_eq!(y2026.period_start, sh(2026, 1, 1, 0, 0, 0));
}

fn works(notice: chrono::DateTime<chrono::Utc>) -> Vec<Input> {
    let window = MaintenanceWindow {
        window_id: "W-7".into(),
        objects: vec!["PTN-5".into()],
        circuits: vec![],
        // Wednesday 2026-06-10, 01:00 to 03:00.
        start: sh(2026, 6, 10, 1, 0, 0),
        end: sh(2026, 6, 10, 3, 0, 0),
        notice_given_at: notice,
        emergency: false,
        cross_border: false,
    };
    // The works take the port down from 01:10 to 03:30: 2 h 20 min.
    let los = los("MW", "PTN-5/2/1", sh(2026, 6, 10, 1, 10, 0));
    vec![
        upsert(
            "MW1",
            CustomerLevel::Silver,
            AssuranceLevel::Ordinary,
            "PTN-5/2/1",
        ),
        Input::Maintenance(window),
        Input::Alarm(los.clone()),
        Input::Alarm(clear(&los, sh(2026, 6, 10, 3, 30, 0))),
    ]
}

#[test]
fn planned_works_with_notice_are_excluded_from_the_outage_and_late_ones_are_not() {
    let mut engine = Engine::new(Policy::builtin());
    // Notice on 2026-05-27, nine working days ahead (five needed).
    let out = run(
        &mut engine,
        works(sh(2026, 5, 27, 9, 0, 0)),
        sh(2026, 6, 11, 0, 0, 0),
    );
    let f = last_figures(&out, "MW1", "2026");
    // Down 01:10–03:30 = 8400 s; inside the window 01:10–03:00 = 6600 s excluded; 1800 s count.
    assert_eq!((f.outage_seconds, f.maintenance_seconds), (1800, 6600));
    assert_eq!(
        f.failures, 1,
        "the fault ran past the window, so it is a failure"
    );

    let mut engine = Engine::new(Policy::builtin());
    // Notice on Tuesday 2026-06-09: no whole working day before the works.
    let out = run(
        &mut engine,
        works(sh(2026, 6, 9, 9, 0, 0)),
        sh(2026, 6, 11, 0, 0, 0),
    );
    let f = last_figures(&out, "MW1", "2026");
    assert_eq!((f.outage_seconds, f.maintenance_seconds), (8400, 0));
    let late: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Warning(Warning::LateNotice(n)) => Some(n),
            _ => None,
        })
        .collect();
    assert_eq!(late.len(), 1, "the late notice is reported");
    assert_eq!(late[0].late[0].circuit_id, "MW1");
}

#[test]
fn a_customer_caused_fault_leaves_the_years_counts() {
    let los = los("CC", "PTN-7/1/1", sh(2026, 9, 1, 10, 0, 0));
    let mut engine = Engine::new(Policy::builtin());
    let out = run(
        &mut engine,
        vec![
            upsert("CC1", CustomerLevel::Bronze, AssuranceLevel::A, "PTN-7/1/1"),
            Input::Alarm(los.clone()),
        ],
        sh(2026, 9, 1, 10, 0, 0),
    );
    let opened = tickets(&out)[0].ticket().id.clone();
    let f = last_figures(&out, "CC1", "2026");
    assert_eq!(f.failures, 1);
    let out = run(
        &mut engine,
        vec![
            Input::Command(TicketCommand {
                ticket_id: opened,
                circuit_id: "CC1".into(),
                action: CommandAction::Reclassify,
                cause: Some(FaultCause::Customer),
                at: sh(2026, 9, 1, 10, 30, 0),
                by: Some("noc".into()),
                note: Some("customer powered off the CPE".into()),
            }),
            Input::Alarm(clear(&los, sh(2026, 9, 1, 12, 0, 0))),
        ],
        sh(2026, 9, 2, 0, 0, 0),
    );
    // Reclassified: neither the failure nor its two hours count.
    let f = last_figures(&out, "CC1", "2026");
    assert_eq!((f.failures, f.outage_seconds, f.status), (0, 0, Status::Ok));
}

#[test]
fn a_refailure_after_the_hold_down_is_a_second_failure_and_both_count() {
    // Down 09:00–10:00, then again 10:20–11:00: the second is past the 15 min hold-down
    // but before the first ticket's post-restore feedback (10:30) closed it.
    let a = los("R1", "PTN-3/1/1", sh(2026, 4, 2, 9, 0, 0));
    let b = los("R2", "PTN-3/1/1", sh(2026, 4, 2, 10, 20, 0));
    let inputs = vec![
        upsert(
            "RF1",
            CustomerLevel::Silver,
            AssuranceLevel::Ordinary,
            "PTN-3/1/1",
        ),
        Input::Alarm(a.clone()),
        Input::Alarm(clear(&a, sh(2026, 4, 2, 10, 0, 0))),
        Input::Alarm(b.clone()),
        Input::Alarm(clear(&b, sh(2026, 4, 2, 11, 0, 0))),
    ];
    let mut engine = Engine::new(Policy::builtin());
    let out = run(&mut engine, inputs, sh(2026, 4, 3, 0, 0, 0));
    // 3600 s + 2400 s.
    let f = last_figures(&out, "RF1", "2026");
    assert_eq!((f.failures, f.outage_seconds), (2, 6000));
}

/// AAA circuit RW1 of a bronze customer (no feedback timers), down from 09:00 Shanghai
/// time on 2 April 2026 and not restored; the engine run to 09:59.
fn down_from_nine() -> (Engine, Vec<Output>) {
    let a = los("W1", "PTN-4/1/1", sh(2026, 4, 2, 9, 0, 0));
    let inputs = vec![
        upsert(
            "RW1",
            CustomerLevel::Bronze,
            AssuranceLevel::Aaa,
            "PTN-4/1/1",
        ),
        Input::Alarm(a),
    ];
    let mut engine = Engine::new(Policy::builtin());
    let out = run(&mut engine, inputs, sh(2026, 4, 2, 9, 59, 0));
    (engine, out)
}

#[test]
fn an_ongoing_outage_warns_when_it_crosses_the_threshold_and_the_limit() {
    // AAA circuit of a bronze customer (no feedback timers), down from 09:00 and not
    // restored. Year budget 3153.6 s: at risk at 0.8 × 3153.6 = 2522.88 s → 2523 s
    // (09:42:03), breached past 3153.6 s → 3154 s (09:52:34).
    let (_, out) = down_from_nine();
    let risks: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Warning(Warning::Risk(r)) if r.period == "2026" => Some((r.to, r.at)),
            _ => None,
        })
        .collect();
    assert_eq!(
        risks,
        vec![
            (Status::AtRisk, sh(2026, 4, 2, 9, 42, 3)),
            (Status::Breached, sh(2026, 4, 2, 9, 52, 34)),
        ]
    );
}

#[test]
fn a_down_circuit_shows_its_outage_as_of_the_clock_between_figure_records() {
    // The circuit of the test above, down from 09:00; the engine's clock at 09:59, past the
    // last figure record (the breach's, as of 09:52:34).
    let (engine, _) = down_from_nine();
    let states = engine.states();
    let (policy, network) = (engine.policy(), engine.network());

    // As of the clock: 59 min down = 3540 s, past the limit.
    let live = states
        .view("RW1", 0, network, policy, Some(sh(2026, 4, 2, 9, 59, 0)))
        .and_then(|v| v.year_to_date)
        .expect("figures");
    assert_eq!((live.outage_seconds, live.status), (3540, Status::Breached));
    assert!(live.open_fault);
    // At 09:45 (2700 s): past the at-risk point (2523 s), not the limit (3154 s).
    let (year, month) = states
        .figures_as_of("RW1", sh(2026, 4, 2, 9, 45, 0), policy)
        .expect("down");
    assert_eq!((year.outage_seconds, year.status), (2700, Status::AtRisk));
    assert_eq!(
        (month.period.as_str(), month.outage_seconds),
        ("2026-04", 2700)
    );
    // An up circuit has no running outage.
    assert!(states
        .figures_as_of("nope", sh(2026, 4, 2, 9, 45, 0), policy)
        .is_none());
}

#[test]
fn a_breach_by_a_figure_timer_is_not_warned_again_at_the_next_ticket_event() {
    // Issue 15, defect 1. The circuit of the tests above breaches its 2026 budget at
    // 09:52:34 through a figure timer; the acceptance timer (09:10) fired in the same step.
    // The escalations at 10:00 and 11:00 and the bulletin at 11:00 are ticket events: none
    // of them may warn again, and every warning's `from` is the status last warned.
    let (mut engine, mut out) = down_from_nine();
    out.extend(engine.advance(sh(2026, 4, 2, 11, 30, 0)));
    let warnings = risk_warnings(&out);
    assert_eq!(warning_chain_breaks(&warnings), Vec::<String>::new());
    let year: Vec<_> = warnings
        .iter()
        .filter(|w| w["period"] == "2026")
        .map(|w| (w["from"].clone(), w["to"].clone()))
        .collect();
    assert_eq!(
        year,
        vec![
            ("ok".into(), "at_risk".into()),
            ("at_risk".into(), "breached".into())
        ]
    );
    // The figures of a circuit and period never go back in time.
    let mut last = std::collections::BTreeMap::new();
    for o in &out {
        if let Output::Figures(f) = o {
            let key = (f.circuit_id.clone(), f.period.clone());
            if let Some(before) = last.insert(key, f.as_of) {
                assert!(
                    before <= f.as_of,
                    "{} {}: {before} then {}",
                    f.circuit_id,
                    f.period,
                    f.as_of
                );
            }
        }
    }
}

/// A gold customer's AAA circuit (important: joint handling at 1 h, all teams on site at
/// 2 h), down from 09:00 on 2 September 2026, reclassified as customer-caused at 09:20.
fn customer_caused_from_nine(level: AssuranceLevel, customer: CustomerLevel) -> (Engine, String) {
    let los = los("CU", "PTN-8/1/1", sh(2026, 9, 2, 9, 0, 0));
    let mut engine = Engine::new(Policy::builtin());
    let out = run(
        &mut engine,
        vec![
            upsert("CU1", customer, level, "PTN-8/1/1"),
            Input::Alarm(los),
        ],
        sh(2026, 9, 2, 9, 0, 0),
    );
    let id = tickets(&out)[0].ticket().id.clone();
    (engine, id)
}

fn command(
    ticket_id: &str,
    circuit: &str,
    action: CommandAction,
    at: chrono::DateTime<chrono::Utc>,
) -> Input {
    Input::Command(TicketCommand {
        ticket_id: ticket_id.into(),
        circuit_id: circuit.into(),
        action,
        cause: (action == CommandAction::Reclassify).then_some(FaultCause::Customer),
        at,
        by: Some("noc".into()),
        note: None,
    })
}

#[test]
fn a_customer_caused_fault_does_not_escalate() {
    // Issue 15, defect 4: once the clock is stopped, no joint handling, no all teams on
    // site, no hourly bulletins; the ticket shows no escalation still to come.
    let (mut engine, id) = customer_caused_from_nine(AssuranceLevel::Aaa, CustomerLevel::Gold);
    let out = run(
        &mut engine,
        vec![command(
            &id,
            "CU1",
            CommandAction::Reclassify,
            sh(2026, 9, 2, 9, 20, 0),
        )],
        sh(2026, 9, 2, 13, 0, 0),
    );
    let events: Vec<_> = tickets(&out);
    let reclassified = events
        .iter()
        .find(|t| matches!(t.sla_event, SlaEvent::Reclassified { .. }))
        .expect("reclassified");
    assert!(!reclassified.ticket().sla.clock_runs);
    assert!(
        reclassified.ticket().sla.escalations.is_empty(),
        "no escalation to come"
    );
    let escalating: Vec<_> = timeline(&out)
        .into_iter()
        .filter(|(_, kind, _)| kind == "escalated" || kind == "bulletinDue")
        .collect();
    assert_eq!(escalating, vec![]);
    // The gold customer is still told of progress every 30 min.
    assert!(reminders(&out)
        .iter()
        .any(|r| r.kind == ReminderKind::FeedbackDue));
}

#[test]
fn a_customer_caused_outage_does_not_re_emit_its_figures() {
    // Issue 15, defect 5. An AA circuit of a bronze customer (not important: joint
    // handling at 3 h; no progress feedback) was down 08:00-08:20 (1200 s counted). Its
    // next fault, from 09:00, is acknowledged at 09:04 and found customer-caused at 09:05.
    // Nothing of its figures changes while it stays down: no record until the restoration
    // (before the fix, a figure timer re-emitted them every 1323 s = 2523 s at risk minus
    // 1200 s used).
    let first = los("F0", "PTN-8/1/1", sh(2026, 9, 2, 8, 0, 0));
    let mut engine = Engine::new(Policy::builtin());
    run(
        &mut engine,
        vec![
            upsert(
                "CU1",
                CustomerLevel::Bronze,
                AssuranceLevel::Aa,
                "PTN-8/1/1",
            ),
            Input::Alarm(first.clone()),
            Input::Alarm(clear(&first, sh(2026, 9, 2, 8, 20, 0))),
        ],
        sh(2026, 9, 2, 9, 0, 0),
    );
    let second = los("CU", "PTN-8/1/1", sh(2026, 9, 2, 9, 0, 0));
    let out = run(
        &mut engine,
        vec![Input::Alarm(second.clone())],
        sh(2026, 9, 2, 9, 0, 0),
    );
    let id = tickets(&out)
        .last()
        .map(|t| t.ticket().id.clone())
        .expect("second ticket");
    let out = run(
        &mut engine,
        vec![
            command(
                &id,
                "CU1",
                CommandAction::Acknowledge,
                sh(2026, 9, 2, 9, 4, 0),
            ),
            command(
                &id,
                "CU1",
                CommandAction::Reclassify,
                sh(2026, 9, 2, 9, 5, 0),
            ),
        ],
        sh(2026, 9, 2, 11, 30, 0),
    );
    let f = last_figures(&out, "CU1", "2026");
    assert_eq!((f.failures, f.outage_seconds), (1, 1200));
    let later: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Figures(f) if f.as_of > sh(2026, 9, 2, 9, 5, 0) => {
                Some((f.period.clone(), f.as_of))
            }
            _ => None,
        })
        .collect();
    assert_eq!(later, vec![]);
}

#[test]
fn an_outage_across_new_year_warns_for_the_new_year_at_its_own_instants() {
    // Issue 15, defect 2. AAA circuit of a bronze customer (no progress feedback), down from
    // 23:50 on 31 December 2026 Shanghai time, accepted at 23:55, not restored. Its next
    // ticket event is the first escalation at 00:50 (1 h). 2027 has 365 days: budget
    // 0.0001 × 31 536 000 s = 3153.6 s, at risk from 2522.88 s → 2523 s after midnight
    // (00:42:03), breached past 3153.6 s → 3154 s (00:52:34). Before the fix the 2027
    // figures had no timer until a ticket event: at risk reported at 00:50.
    let los = los("NY2", "PTN-6/1/1", sh(2026, 12, 31, 23, 50, 0));
    let mut engine = Engine::new(Policy::builtin());
    let out = run(
        &mut engine,
        vec![
            upsert(
                "NY2",
                CustomerLevel::Bronze,
                AssuranceLevel::Aaa,
                "PTN-6/1/1",
            ),
            Input::Alarm(los),
        ],
        sh(2026, 12, 31, 23, 50, 0),
    );
    let id = tickets(&out)[0].ticket().id.clone();
    let out = run(
        &mut engine,
        vec![command(
            &id,
            "NY2",
            CommandAction::Acknowledge,
            sh(2026, 12, 31, 23, 55, 0),
        )],
        sh(2027, 1, 1, 1, 0, 0),
    );
    let warnings: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Warning(Warning::Risk(r)) => Some((r.period.clone(), r.to, r.at)),
            _ => None,
        })
        .collect();
    assert_eq!(
        warnings,
        vec![
            ("2027".to_owned(), Status::AtRisk, sh(2027, 1, 1, 0, 42, 3)),
            (
                "2027".to_owned(),
                Status::Breached,
                sh(2027, 1, 1, 0, 52, 34)
            ),
        ]
    );
    // The last 2027 record is the breach's: 3154 s, no failure (the fault is 2026's).
    let y2027 = last_figures(&out, "NY2", "2027");
    assert_eq!((y2027.failures, y2027.outage_seconds), (0, 3154));
    // 2026 keeps its 600 s, and is final.
    let y2026 = last_figures(&out, "NY2", "2026");
    assert_eq!((y2026.failures, y2026.outage_seconds), (1, 600));
    assert!(y2026.is_final);
}

#[test]
fn a_new_fault_does_not_drop_the_post_restore_feedback_of_the_last_ticket() {
    // Issue 15, defect 3. A silver customer's circuit down 02:00-02:20: post-restore
    // feedback due 02:50. It fails again past the hold-down: at 02:40 with the default
    // 15 min (02:35), at 02:25 with none. The restored ticket stays open (resolved) until
    // its feedback is due, gets its postRestoreFeedbackDue at 02:50 and closes then; the
    // new fault has a ticket of its own. Before the fix the old ticket was closed when
    // the new one opened, at the end of its hold-down, without the feedback.
    let no_hold_down = Policy::from_toml_str(
        &linewatch::policy::DEFAULT_POLICY_TOML
            .replace("hold_down = \"15m\"", "hold_down = \"0s\""),
    )
    .expect("valid policy");
    for (policy, again) in [
        (Policy::builtin(), sh(2026, 5, 4, 2, 40, 0)),
        (no_hold_down, sh(2026, 5, 4, 2, 25, 0)),
    ] {
        let first = los("PR1", "PTN-2/1/1", sh(2026, 5, 4, 2, 0, 0));
        let second = alarm(
            "PR2",
            "PTN-NMS",
            "PTN-2/1/1",
            "LOS",
            Severity::Critical,
            again,
        );
        let mut engine = Engine::new(policy);
        let out = run(
            &mut engine,
            vec![
                upsert(
                    "PR",
                    CustomerLevel::Silver,
                    AssuranceLevel::Ordinary,
                    "PTN-2/1/1",
                ),
                Input::Alarm(first.clone()),
                Input::Alarm(clear(&first, sh(2026, 5, 4, 2, 20, 0))),
                Input::Alarm(second),
            ],
            sh(2026, 5, 4, 3, 30, 0),
        );
        let events = tickets(&out);
        let old = events[0].ticket().id.clone();
        let of_old: Vec<_> = timeline(&out)
            .into_iter()
            .filter(|(id, _, _)| *id == old)
            .map(|(_, kind, at)| (kind, at))
            .collect();
        assert_eq!(
            of_old,
            vec![
                ("opened".to_string(), sh(2026, 5, 4, 2, 0, 0)),
                ("acceptanceOverdue".to_string(), sh(2026, 5, 4, 2, 10, 0)),
                ("restored".to_string(), sh(2026, 5, 4, 2, 20, 0)),
                (
                    "postRestoreFeedbackDue".to_string(),
                    sh(2026, 5, 4, 2, 50, 0)
                ),
                ("closed".to_string(), sh(2026, 5, 4, 2, 50, 0)),
            ],
            "new fault at {again}"
        );
        let new = events
            .iter()
            .find(|t| t.ticket().id != old)
            .expect("a second ticket");
        assert_eq!(
            (new.sla_event.clone(), new.event_time),
            (SlaEvent::Opened, again)
        );
        // Both faults count: 20 min, and the second's 50 min so far.
        let f = last_figures(&out, "PR", "2026");
        assert_eq!(f.failures, 2);
    }
}

/// A circuit of `customer` down from 10:00 to 15:00 on Friday 8 May 2026 (Shanghai), the
/// engine run to `until` with `commands` (built from the ticket id) after the restoration.
fn restored_friday(
    customer: CustomerLevel,
    commands: impl Fn(&str) -> Vec<Input>,
    until: chrono::DateTime<chrono::Utc>,
) -> (Engine, Vec<Output>) {
    let los = los("WR", "PTN-1/9/1", sh(2026, 5, 8, 10, 0, 0));
    let mut engine = Engine::new(Policy::builtin());
    let mut out = run(
        &mut engine,
        vec![
            upsert("WR1", customer, AssuranceLevel::A, "PTN-1/9/1"),
            Input::Alarm(los.clone()),
            Input::Alarm(clear(&los, sh(2026, 5, 8, 15, 0, 0))),
        ],
        sh(2026, 5, 8, 15, 0, 0),
    );
    let id = tickets(&out)[0].ticket().id.clone();
    out.extend(run(&mut engine, commands(&id), until));
    (engine, out)
}

/// The ticket's events and reminders after its restoration, by kind, with their times.
fn after_restoration(out: &[Output]) -> Vec<(&'static str, chrono::DateTime<chrono::Utc>)> {
    let kinds = [
        "opened",
        "restored",
        "postRestoreFeedbackDue",
        "writtenReportDue",
        "writtenReportSent",
        "closed",
    ];
    timeline(out)
        .into_iter()
        .skip_while(|(_, kind, _)| kind != "restored")
        .map(|(_, kind, at)| {
            let known = kinds.iter().find(|k| **k == kind);
            (*known.unwrap_or(&"other"), at)
        })
        .collect()
}

#[test]
fn a_gold_customer_gets_a_written_report_within_two_working_days() {
    // Issue 15, missing 7 (004 table 7-4; policy feedback.written_report.gold = 2 working
    // days). Restored Friday 15:00: due by the end of Tuesday, Wednesday 13 May 00:00
    // local (no holidays in the default calendar). The ticket stays resolved until then.
    let due = sh(2026, 5, 13, 0, 0, 0);
    let (_, out) = restored_friday(CustomerLevel::Gold, |_| vec![], sh(2026, 5, 14, 0, 0, 0));
    let restored = tickets(&out)
        .into_iter()
        .find(|t| t.sla_event == SlaEvent::Restored)
        .expect("restored");
    assert_eq!(restored.ticket().sla.written_report_by, Some(due));
    assert_eq!(restored.ticket().sla.written_report_sent_at, None);
    assert_eq!(
        after_restoration(&out),
        vec![
            ("restored", sh(2026, 5, 8, 15, 0, 0)),
            ("postRestoreFeedbackDue", sh(2026, 5, 8, 15, 30, 0)),
            ("writtenReportDue", due),
            ("closed", due),
        ]
    );
    // While down there is no report deadline yet.
    let opened = tickets(&out)[0];
    assert_eq!(opened.ticket().sla.written_report_by, None);

    // Sent on Monday 10:00: acknowledged on the ticket, which then closes.
    let monday = sh(2026, 5, 11, 10, 0, 0);
    let (_, out) = restored_friday(
        CustomerLevel::Gold,
        |id| vec![command(id, "WR1", CommandAction::WrittenReportSent, monday)],
        sh(2026, 5, 14, 0, 0, 0),
    );
    assert_eq!(
        after_restoration(&out),
        vec![
            ("restored", sh(2026, 5, 8, 15, 0, 0)),
            ("postRestoreFeedbackDue", sh(2026, 5, 8, 15, 30, 0)),
            ("writtenReportSent", monday),
            ("closed", monday),
        ]
    );
    let sent = tickets(&out)
        .into_iter()
        .find(|t| t.sla_event == SlaEvent::WrittenReportSent)
        .expect("sent");
    assert_eq!(sent.ticket().sla.written_report_sent_at, Some(monday));

    // A silver customer gets one only on request: no deadline, closed after the
    // post-restore feedback as before.
    let (_, out) = restored_friday(CustomerLevel::Silver, |_| vec![], sh(2026, 5, 9, 0, 0, 0));
    assert_eq!(
        after_restoration(&out),
        vec![
            ("restored", sh(2026, 5, 8, 15, 0, 0)),
            ("postRestoreFeedbackDue", sh(2026, 5, 8, 15, 30, 0)),
            ("closed", sh(2026, 5, 8, 15, 30, 0)),
        ]
    );
}

#[test]
fn a_written_report_follows_restoration() {
    // A report sent while the circuit is still down is refused; one for a closed ticket
    // finds no open ticket.
    let los = los("WD", "PTN-1/9/2", sh(2026, 5, 8, 10, 0, 0));
    let mut engine = Engine::new(Policy::builtin());
    let out = run(
        &mut engine,
        vec![
            upsert("WD1", CustomerLevel::Gold, AssuranceLevel::A, "PTN-1/9/2"),
            Input::Alarm(los.clone()),
        ],
        sh(2026, 5, 8, 10, 0, 0),
    );
    let id = tickets(&out)[0].ticket().id.clone();
    let early = engine.handle(
        command(
            &id,
            "WD1",
            CommandAction::WrittenReportSent,
            sh(2026, 5, 8, 11, 0, 0),
        ),
        sh(2026, 5, 8, 11, 0, 0),
    );
    assert!(early.is_err(), "{early:?}");
    run(
        &mut engine,
        vec![Input::Alarm(clear(&los, sh(2026, 5, 8, 12, 0, 0)))],
        sh(2026, 5, 14, 0, 0, 0),
    );
    let late = engine.handle(
        command(
            &id,
            "WD1",
            CommandAction::WrittenReportSent,
            sh(2026, 5, 14, 0, 0, 0),
        ),
        sh(2026, 5, 14, 0, 0, 0),
    );
    assert!(late.is_err(), "closed: {late:?}");
}

#[test]
fn a_superseded_tickets_events_leave_the_circuit_handed_to_its_current_incident() {
    // The circuit of the test above, its second fault open from 02:40 and its first
    // ticket superseded until 02:50. The runtime hands each ticket event to the incident
    // stage under the event's root alarm, and tells the incident the circuit was handed to
    // before when that changes: an event of the superseded ticket (root PR1) must not move
    // the circuit away from its current ticket's incident (root PR2), or the PR2 incident's
    // stage would be sent the old ticket and the PR1 one the new ticket, back and forth.
    let first = los("PR1", "PTN-2/1/1", sh(2026, 5, 4, 2, 0, 0));
    let second = los("PR2", "PTN-2/1/1", sh(2026, 5, 4, 2, 40, 0));
    let mut engine = Engine::new(Policy::builtin());
    run(
        &mut engine,
        vec![
            upsert(
                "PR",
                CustomerLevel::Silver,
                AssuranceLevel::Ordinary,
                "PTN-2/1/1",
            ),
            Input::Alarm(first.clone()),
            Input::Alarm(clear(&first, sh(2026, 5, 4, 2, 20, 0))),
            Input::Alarm(second),
        ],
        sh(2026, 5, 4, 2, 45, 0),
    );
    let mut states = engine.states().clone();
    assert_eq!(states.faults().count(), 2, "the first ticket is still open");
    assert_eq!(states.hand_to_incident("PR", "PTN-NMS:PR2"), None);
    assert_eq!(states.hand_to_incident("PR", "PTN-NMS:PR1"), None);
    assert_eq!(states.hand_to_incident("PR", "PTN-NMS:PR2"), None);
    // Another root of the current ticket (a revised root cause) still moves it.
    assert_eq!(
        states.hand_to_incident("PR", "OTN-NMS:CUT"),
        Some("PTN-NMS:PR2".to_owned())
    );
}

#[test]
fn a_superseded_ticket_takes_its_written_report() {
    // The gold customer's circuit of the written-report test, restored Friday 15:00, fails
    // again on Monday 09:00 (past the hold-down): a new ticket opens, and the first stays
    // open for its report. The report sent on Monday 10:00 names the first ticket, which
    // then closes; the new one carries on.
    let monday = sh(2026, 5, 11, 10, 0, 0);
    let again = los("WR2", "PTN-1/9/1", sh(2026, 5, 11, 9, 0, 0));
    let (engine, out) = restored_friday(
        CustomerLevel::Gold,
        |id| {
            vec![
                Input::Alarm(again.clone()),
                command(id, "WR1", CommandAction::WrittenReportSent, monday),
            ]
        },
        sh(2026, 5, 11, 11, 0, 0),
    );
    assert_eq!(
        after_restoration(&out)
            .into_iter()
            .filter(|(e, _)| matches!(*e, "writtenReportSent" | "closed" | "opened"))
            .collect::<Vec<_>>(),
        vec![
            ("opened", sh(2026, 5, 11, 9, 0, 0)),
            ("writtenReportSent", monday),
            ("closed", monday),
        ]
    );
    let first = tickets(&out)[0].ticket().id.clone();
    let closed = tickets(&out)
        .into_iter()
        .find(|t| t.sla_event == SlaEvent::Closed)
        .expect("closed");
    assert_eq!(closed.ticket().id, first, "the first ticket closes");
    let open: Vec<_> = engine
        .states()
        .faults()
        .map(|f| f.ticket_id.clone())
        .collect();
    assert_eq!(open.len(), 1);
    assert_ne!(open[0], first, "the new ticket stays");
    // Both faults count in the year.
    let f = last_figures(&out, "WR1", "2026");
    assert_eq!(f.failures, 2);
}

#[test]
fn a_ticket_closed_by_hand_while_down_leaves_the_outage_counting_until_the_line_is_up() {
    // Issue 15, item 6. The AAA circuit of `down_from_nine` (down from 09:00) has its
    // ticket closed by hand at 09:10 while still down; the line comes back at 10:00. The
    // outage ends at the restoration, not at the close: 3600 s, past the at-risk point
    // (2523 s, 09:42:03) and the budget (3154 s, 09:52:34), each warned at its second.
    // Before the fix the outage stopped at the close (600 s) and nothing was warned.
    let a = los("MC", "PTN-4/2/1", sh(2026, 4, 2, 9, 0, 0));
    let mut engine = Engine::new(Policy::builtin());
    let mut out = run(
        &mut engine,
        vec![
            upsert(
                "MC1",
                CustomerLevel::Bronze,
                AssuranceLevel::Aaa,
                "PTN-4/2/1",
            ),
            Input::Alarm(a.clone()),
        ],
        sh(2026, 4, 2, 9, 0, 0),
    );
    let id = tickets(&out)[0].ticket().id.clone();
    out.extend(run(
        &mut engine,
        vec![command(
            &id,
            "MC1",
            CommandAction::Close,
            sh(2026, 4, 2, 9, 10, 0),
        )],
        sh(2026, 4, 2, 9, 59, 0),
    ));
    // Down and closed: the NOC still sees the outage grow.
    let live = engine
        .states()
        .view(
            "MC1",
            0,
            engine.network(),
            engine.policy(),
            Some(sh(2026, 4, 2, 9, 59, 0)),
        )
        .and_then(|v| v.year_to_date)
        .expect("figures");
    assert_eq!((live.outage_seconds, live.open_fault), (3540, true));
    out.extend(run(
        &mut engine,
        vec![Input::Alarm(clear(&a, sh(2026, 4, 2, 10, 0, 0)))],
        sh(2026, 4, 3, 0, 0, 0),
    ));
    let risks: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Warning(Warning::Risk(r)) if r.period == "2026" => Some((r.to, r.at)),
            _ => None,
        })
        .collect();
    assert_eq!(
        risks,
        vec![
            (Status::AtRisk, sh(2026, 4, 2, 9, 42, 3)),
            (Status::Breached, sh(2026, 4, 2, 9, 52, 34)),
        ]
    );
    let year = last_figures(&out, "MC1", "2026");
    assert_eq!(
        (
            year.failures,
            year.outage_seconds,
            year.open_fault,
            year.as_of
        ),
        (1, 3600, false, sh(2026, 4, 2, 10, 0, 0))
    );
    assert_eq!(last_figures(&out, "MC1", "2026-04").outage_seconds, 3600);
    // No new ticket while it stayed down, and none at the restoration.
    let ids: std::collections::BTreeSet<_> = tickets(&out)
        .iter()
        .map(|t| t.ticket().id.clone())
        .collect();
    assert_eq!(ids.len(), 1);
}

#[test]
fn a_reopened_fault_keeps_the_deadlines_of_its_first_start() {
    // Issue 15, item 6. AAA circuit of a bronze customer within a city (restore within
    // 2 h, at risk at 80 %: 96 min; joint handling at 1 h, all teams on site at 2 h), down
    // 09:00-10:30, down again at 10:40, inside the 15 min hold-down: the same fault, whose
    // deadlines still count from 09:00 (restore by 11:00, at risk at 10:36), not from the
    // re-failure. The at-risk point passed while the line was up: its reminder comes at
    // the re-failure (10:40), never dated before it (it was dated 10:36 before the fix);
    // the breach at 11:00.
    let a = los("RO1", "PTN-4/3/1", sh(2026, 4, 2, 9, 0, 0));
    let b = los("RO2", "PTN-4/3/1", sh(2026, 4, 2, 10, 40, 0));
    let mut engine = Engine::new(Policy::builtin());
    let out = run(
        &mut engine,
        vec![
            upsert(
                "RO",
                CustomerLevel::Bronze,
                AssuranceLevel::Aaa,
                "PTN-4/3/1",
            ),
            Input::Alarm(a.clone()),
            Input::Alarm(clear(&a, sh(2026, 4, 2, 10, 30, 0))),
            Input::Alarm(b),
        ],
        sh(2026, 4, 2, 11, 30, 0),
    );
    let events = tickets(&out);
    let reopened = events
        .iter()
        .find(|t| t.sla_event == SlaEvent::Reopened)
        .expect("reopened");
    let sla = &reopened.ticket().sla;
    assert_eq!(
        (sla.restore_by, sla.at_risk_at, sla.accept_by),
        (
            sh(2026, 4, 2, 11, 0, 0),
            sh(2026, 4, 2, 10, 36, 0),
            sh(2026, 4, 2, 9, 10, 0)
        )
    );
    assert_eq!(
        reopened.ticket().expected_resolution_date,
        sh(2026, 4, 2, 11, 0, 0)
    );
    assert_eq!(
        reopened
            .ticket()
            .sla
            .escalations
            .iter()
            .map(|e| e.at)
            .collect::<Vec<_>>(),
        vec![sh(2026, 4, 2, 10, 0, 0), sh(2026, 4, 2, 11, 0, 0)]
    );
    assert_eq!(
        events
            .iter()
            .filter(|t| t.sla_event == SlaEvent::Opened)
            .count(),
        1
    );
    let after: Vec<_> = timeline(&out)
        .into_iter()
        .skip_while(|(_, kind, _)| kind != "reopened")
        .map(|(_, kind, at)| (kind, at))
        .collect();
    assert_eq!(
        after,
        vec![
            ("reopened".to_string(), sh(2026, 4, 2, 10, 40, 0)),
            ("deadlineAtRisk".to_string(), sh(2026, 4, 2, 10, 40, 0)),
            ("deadlineBreached".to_string(), sh(2026, 4, 2, 11, 0, 0)),
            ("escalated".to_string(), sh(2026, 4, 2, 11, 0, 0)),
            // Joint handling since 10:00: hourly bulletins.
            ("bulletinDue".to_string(), sh(2026, 4, 2, 11, 0, 0)),
        ]
    );
}

#[test]
fn figures_after_a_late_command_are_not_older_than_those_published() {
    // Issue 15, item 6. The circuit of `down_from_nine` breached its 2026 budget at
    // 09:52:34 (a figure timer); at 09:59 the ticketing system's acknowledgement dated
    // 09:30 arrives. Its ticket event is dated 09:30, but the figures that follow it are
    // not as of 09:30 (ok, 1800 s): figures already published as of 09:52:34 (breached)
    // would be replaced by older ones, and the next record would warn again.
    let (mut engine, out) = down_from_nine();
    let id = tickets(&out)[0].ticket().id.clone();
    let published = last_figures(&out, "RW1", "2026").clone();
    assert_eq!(
        (published.as_of, published.status),
        (sh(2026, 4, 2, 9, 52, 34), Status::Breached)
    );
    let late = command(
        &id,
        "RW1",
        CommandAction::Acknowledge,
        sh(2026, 4, 2, 9, 30, 0),
    );
    let now = sh(2026, 4, 2, 9, 59, 0);
    let mut after = engine.advance(now);
    after.extend(engine.handle(late, now).expect("accepted"));
    let acknowledged = tickets(&after);
    assert_eq!(
        acknowledged
            .iter()
            .map(|t| (t.sla_event.clone(), t.event_time))
            .collect::<Vec<_>>(),
        vec![(SlaEvent::Acknowledged, sh(2026, 4, 2, 9, 30, 0))]
    );
    for o in &after {
        if let Output::Figures(f) = o {
            assert!(
                f.as_of >= published.as_of,
                "{} as of {}, after a record as of {}",
                f.period,
                f.as_of,
                published.as_of
            );
            assert_eq!(f.status, published.status, "{}", f.period);
        }
    }
    assert!(risk_warnings(&after).is_empty(), "nothing warned again");
    let mut all = out;
    all.extend(after);
    all.extend(engine.advance(sh(2026, 4, 2, 11, 30, 0)));
    assert_eq!(
        warning_chain_breaks(&risk_warnings(&all)),
        Vec::<String>::new()
    );
}

#[test]
fn an_up_circuits_view_is_as_of_its_last_record() {
    // Issue 15, item 6. A customer-caused fault (nothing counted) of an AAA circuit of a
    // bronze customer, down 23:00-23:50 on 31 March 2026 (Shanghai); its ticket closes at
    // 00:20 on 1 April (post-restore feedback due). The close's figures: March is over
    // (final) and April begins, both recorded as of 00:20; the year's figures are the
    // same as at 23:50 and are not recorded again. The circuit is up: its view shows what
    // its state recorded, and that must not be older than its last record (before the fix
    // its year was as of 23:50).
    let a = los("UV", "PTN-4/4/1", sh(2026, 3, 31, 23, 0, 0));
    let mut engine = Engine::new(Policy::builtin());
    let mut out = run(
        &mut engine,
        vec![
            upsert(
                "UV1",
                CustomerLevel::Bronze,
                AssuranceLevel::Aaa,
                "PTN-4/4/1",
            ),
            Input::Alarm(a.clone()),
        ],
        sh(2026, 3, 31, 23, 0, 0),
    );
    let id = tickets(&out)[0].ticket().id.clone();
    out.extend(run(
        &mut engine,
        vec![
            command(
                &id,
                "UV1",
                CommandAction::Reclassify,
                sh(2026, 3, 31, 23, 5, 0),
            ),
            Input::Alarm(clear(&a, sh(2026, 3, 31, 23, 50, 0))),
        ],
        sh(2026, 4, 1, 2, 0, 0),
    ));
    assert!(timeline(&out)
        .iter()
        .any(|(_, kind, at)| kind == "closed" && *at == sh(2026, 4, 1, 0, 20, 0)));
    let last = out
        .iter()
        .filter_map(|o| match o {
            Output::Figures(f) => Some(f.as_of),
            _ => None,
        })
        .max()
        .expect("figures");
    assert_eq!(last, sh(2026, 4, 1, 0, 20, 0));
    assert!(last_figures(&out, "UV1", "2026-03").is_final);
    let view = engine
        .states()
        .view(
            "UV1",
            0,
            engine.network(),
            engine.policy(),
            Some(sh(2026, 4, 1, 2, 0, 0)),
        )
        .expect("a view");
    let year = view.year_to_date.expect("year");
    let month = view.month.expect("month");
    assert_eq!(
        (year.period.as_str(), month.period.as_str()),
        ("2026", "2026-04")
    );
    assert_eq!((year.as_of, month.as_of), (last, last));
    // The same figures as the year's last record, as of then.
    let recorded = last_figures(&out, "UV1", "2026");
    assert_eq!(
        (year.failures, year.outage_seconds, year.status),
        (recorded.failures, recorded.outage_seconds, recorded.status)
    );
}

#[test]
fn a_moved_or_cancelled_window_is_applied_again_to_the_fault_that_noted_it() {
    // Issue 15, item 6. The works of `works` (window W-7 01:00-03:00, notice nine working
    // days ahead): the fault from 01:10 (ordinary: restore within 8 h) noted the window,
    // restore by 01:10 + 8 h + 1 h 50 min excluded = 11:00. The window is then moved to
    // 01:00-02:00 (the fault excludes 50 min: restore by 10:00), or called off (nothing
    // excluded: restore by 09:10), before the port comes back at 03:30. Before the fix the
    // fault kept the window as first noted, in its deadlines and in the figures.
    let moved = MaintenanceWindow {
        window_id: "W-7".into(),
        objects: vec!["PTN-5".into()],
        circuits: vec![],
        start: sh(2026, 6, 10, 1, 0, 0),
        end: sh(2026, 6, 10, 2, 0, 0),
        notice_given_at: sh(2026, 5, 27, 9, 0, 0),
        emergency: false,
        cross_border: false,
    };
    let cancelled = Input::CancelWindow {
        window_id: "W-7".into(),
    };
    for (change, restore_by, seconds) in [
        (
            vec![Input::Maintenance(moved.clone())],
            sh(2026, 6, 10, 10, 0, 0),
            (8400 - 3000, 3000),
        ),
        (
            vec![Input::Maintenance(moved.clone()), cancelled.clone()],
            sh(2026, 6, 10, 9, 10, 0),
            (8400, 0),
        ),
        (vec![cancelled], sh(2026, 6, 10, 9, 10, 0), (8400, 0)),
    ] {
        let mut inputs = works(sh(2026, 5, 27, 9, 0, 0));
        let clear = inputs.pop().expect("the clear");
        let what = format!("{change:?}");
        inputs.extend(change);
        inputs.push(clear);
        let mut engine = Engine::new(Policy::builtin());
        let out = run(&mut engine, inputs, sh(2026, 6, 11, 0, 0, 0));
        let events = tickets(&out);
        assert_eq!(
            events[0].ticket().sla.restore_by,
            sh(2026, 6, 10, 11, 0, 0),
            "{what}"
        );
        let last_noted = events
            .iter()
            .rfind(|t| t.sla_event == SlaEvent::PlannedWorksNoted)
            .unwrap_or_else(|| panic!("{what}: the ticket follows the window"));
        assert_eq!(last_noted.ticket().sla.restore_by, restore_by, "{what}");
        assert_eq!(
            last_noted.field_path.as_deref(),
            Some("expectedResolutionDate,sla.atRiskAt,sla.plannedWorks,sla.restoreBy"),
            "{what}"
        );
        let restored = events
            .iter()
            .find(|t| t.sla_event == SlaEvent::Restored)
            .expect("restored");
        assert_eq!(restored.ticket().sla.restore_by, restore_by, "{what}");
        let f = last_figures(&out, "MW1", "2026");
        assert_eq!((f.outage_seconds, f.maintenance_seconds), seconds, "{what}");
    }
}

/// A protected AAA circuit of a bronze customer: working route through `PTN-5/1/1`,
/// protection route through `PTN-5/2/1`.
fn protected(id: &str) -> Input {
    let route = |port: &str, link: &str| {
        vec![
            element(ObjectKind::Ne, &format!("CPE-{id}"), "cpe", "CPE"),
            element(ObjectKind::Port, port, "transmission", "PTN"),
            element(ObjectKind::Link, link, "transmission", "OTN"),
        ]
    };
    Input::Inventory(InventoryChange::Upsert(Box::new(circuit(
        id,
        CustomerLevel::Bronze,
        AssuranceLevel::Aaa,
        Scope::IntraCity,
        vec![route("PTN-5/1/1", "L-W5"), route("PTN-5/2/1", "L-P5")],
    ))))
}

#[test]
fn down_again_after_a_hand_closed_outage_came_back_on_one_route_is_a_new_failure() {
    // Issue 15, item 6, the case left over. Both routes of a protected AAA circuit are cut
    // (08:59 working, 09:00 protection): down from 09:00, ticket 1. The ticket is closed by
    // hand at 09:10 while still down; the outage counts on. At 09:30 the protection route
    // is back: the line is back (on one route), so the outage ends there (1800 s), and so
    // does "no new ticket until the line is back". At 09:40 the protection route is cut
    // again: the circuit is down again, a new failure with a new ticket (the old one is
    // closed and cannot be reopened), and its outage counts (09:40-10:00, 1200 s) until
    // both routes are back at 10:00. Year 2026: 2 failures, 3000 s.
    // Before the fix the circuit stayed "closed by hand" until it was fully up: the second
    // spell opened no ticket and counted neither as a failure nor as outage (1, 1800 s).
    let w = los("MRW", "PTN-5/1/1", sh(2026, 5, 6, 8, 59, 0));
    let p = los("MRP", "PTN-5/2/1", sh(2026, 5, 6, 9, 0, 0));
    let p2 = los("MRP2", "PTN-5/2/1", sh(2026, 5, 6, 9, 40, 0));
    let mut engine = Engine::new(Policy::builtin());
    let mut out = run(
        &mut engine,
        vec![
            protected("MR1"),
            Input::Alarm(w.clone()),
            Input::Alarm(p.clone()),
        ],
        sh(2026, 5, 6, 9, 0, 0),
    );
    let first = tickets(&out)[0].ticket().id.clone();
    out.extend(run(
        &mut engine,
        vec![
            command(
                &first,
                "MR1",
                CommandAction::Close,
                sh(2026, 5, 6, 9, 10, 0),
            ),
            Input::Alarm(clear(&p, sh(2026, 5, 6, 9, 30, 0))),
            Input::Alarm(p2.clone()),
            Input::Alarm(clear(&p2, sh(2026, 5, 6, 10, 0, 0))),
            Input::Alarm(clear(&w, sh(2026, 5, 6, 10, 0, 0))),
        ],
        sh(2026, 5, 7, 0, 0, 0),
    ));
    let opened: Vec<_> = tickets(&out)
        .iter()
        .filter(|t| t.sla_event == SlaEvent::Opened)
        .map(|t| (t.ticket().id.clone(), t.ticket().creation_date))
        .collect();
    assert_eq!(
        opened.len(),
        2,
        "a new ticket for the second spell: {opened:?}"
    );
    assert_eq!(opened[0].0, first);
    assert_eq!(opened[1].1, sh(2026, 5, 6, 9, 40, 0));
    let year = last_figures(&out, "MR1", "2026");
    assert_eq!(
        (year.failures, year.outage_seconds, year.open_fault),
        (2, 3000, false)
    );
    let may = last_figures(&out, "MR1", "2026-05");
    assert_eq!((may.failures, may.outage_seconds), (2, 3000));
}

#[test]
fn day_and_quarter_figures_are_recorded_as_months_are() {
    // Issue 15, item 8. An A circuit down from 22:00 on 30 March to 02:00 on 1 April
    // (Shanghai), 28 h: days 30 March (2 h), 31 March (24 h, no event of its own) and
    // 1 April (2 h); quarters Q1 (26 h) and Q2 (2 h); one failure, in 30 March and Q1.
    let a = los("DQ", "PTN-6/1/1", sh(2026, 3, 30, 22, 0, 0));
    let mut engine = Engine::new(Policy::builtin());
    let out = run(
        &mut engine,
        vec![
            upsert("DQ1", CustomerLevel::Bronze, AssuranceLevel::A, "PTN-6/1/1"),
            Input::Alarm(a.clone()),
            Input::Alarm(clear(&a, sh(2026, 4, 1, 2, 0, 0))),
        ],
        sh(2026, 4, 2, 0, 0, 0),
    );
    let h = 3600;
    for (period, failures, outage) in [
        ("2026-03-30", 1, 2 * h),
        ("2026-03-31", 0, 24 * h),
        ("2026-04-01", 0, 2 * h),
        ("2026-Q1", 1, 26 * h),
        ("2026-Q2", 0, 2 * h),
        ("2026-03", 1, 26 * h),
        ("2026-04", 0, 2 * h),
        ("2026", 1, 28 * h),
    ] {
        let f = last_figures(&out, "DQ1", period);
        assert_eq!(
            (f.failures, f.outage_seconds),
            (failures, outage),
            "{period}"
        );
        // Limits are annual: days, months and quarters have none, and stay ok.
        let annual = period == "2026";
        assert_eq!(f.failure_limit.is_some(), annual, "{period}");
        assert_eq!(f.outage_limit_seconds.is_some(), annual, "{period}");
        assert_eq!(f.availability_target.is_some(), annual, "{period}");
        if !annual {
            assert_eq!((f.status, f.breaches.len()), (Status::Ok, 0), "{period}");
        }
    }
    assert_eq!(last_figures(&out, "DQ1", "2026-03-31").availability, 0.0);
    // The year is judged: 28 h is past A's 24 h outage limit.
    assert_eq!(last_figures(&out, "DQ1", "2026").status, Status::Breached);
    // Warnings only for the year, the one period with limits.
    assert!(out.iter().all(|o| match o {
        Output::Warning(Warning::Risk(r)) => r.period == "2026",
        _ => true,
    }));
    // The circuit's view still shows the year and the month.
    let view = engine
        .states()
        .view("DQ1", 0, engine.network(), engine.policy(), None)
        .expect("view");
    assert_eq!(view.year_to_date.map(|f| f.period).as_deref(), Some("2026"));
    assert_eq!(view.month.map(|f| f.period).as_deref(), Some("2026-04"));
}

#[test]
fn a_timer_event_before_an_input_gets_the_same_figures_when_both_are_applied_first() {
    // Issue 15, item 8 (the broker test's DL-0030): a fault from 22:00 to 23:40 on
    // 3 March (Shanghai) closes at the end of its hold-down, 00:10 on 4 March, and the
    // circuit fails again at 04:00. The replay fires the close and records its figures
    // (3 March, over, final) before it reads the 04:00 alarm; the runtime fires the
    // timers due before an input, applies the input, and then records the figures of
    // every ticket event of the step, each as of its event. The close's figures must not
    // see the fault that opens later: with it the finished day was neither computed nor
    // recorded.
    let first = los("DB1", "PTN-7/1/1", sh(2026, 3, 3, 22, 0, 0));
    let second = los("DB2", "PTN-7/1/1", sh(2026, 3, 4, 4, 0, 0));
    let mut engine = Engine::new(Policy::builtin());
    run(
        &mut engine,
        vec![
            upsert("DB", CustomerLevel::Silver, AssuranceLevel::A, "PTN-7/1/1"),
            Input::Alarm(first.clone()),
            Input::Alarm(clear(&first, sh(2026, 3, 3, 23, 40, 0))),
        ],
        sh(2026, 3, 3, 23, 45, 0),
    );
    let policy = engine.policy().clone();
    let network = engine.network();
    let at = second.event_time;
    let impacts = linewatch::correlation::FanOut::new().on_alarm(&second, network, &policy);
    assert!(!impacts.is_empty(), "the second alarm hits the circuit");
    let figures = |out: Vec<Output>| -> Vec<CircuitFigures> {
        out.into_iter()
            .filter_map(|o| match o {
                Output::Figures(f) => Some(*f),
                _ => None,
            })
            .collect()
    };
    // As the replay: the timers, their figures, then the input and its figures.
    let mut replay = engine.states().clone();
    let timers = replay.advance(at, &policy);
    let mut out = replay.with_figures(timers, &policy);
    for impact in impacts.clone() {
        let o = replay.on_impact(impact, network, &policy);
        out.extend(replay.with_figures(o, &policy));
    }
    let replayed = figures(out);
    let day = replayed
        .iter()
        .rfind(|f| f.period == "2026-03-03")
        .expect("the finished day's figures at the close");
    assert!(day.is_final, "{day:?}");
    // As the runtime: the timers and the input, then the figures of every ticket event.
    let mut runtime = engine.states().clone();
    let mut out = runtime.advance(at, &policy);
    for impact in impacts {
        out.extend(runtime.on_impact(impact, network, &policy));
    }
    let run = figures(runtime.with_figures(out, &policy));
    assert_eq!(run, replayed);
}
