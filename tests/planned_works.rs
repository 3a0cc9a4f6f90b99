//! Planned works: a window announced early enough stops the restoration clock for its
//! duration; the same window announced late changes nothing and is reported.

mod scenario;

use linewatch::engine::{Engine, Input, Output, Warning};
use linewatch::inventory::{InventoryChange, ObjectKind};
use linewatch::levels::{AssuranceLevel, CustomerLevel, Scope, Severity};
use linewatch::maintenance::MaintenanceWindow;
use linewatch::policy::Policy;
use linewatch::ticket::{ReminderKind, SlaEvent};
use scenario::*;

fn inputs(notice: chrono::DateTime<chrono::Utc>) -> Vec<Input> {
    let path = vec![
        element(ObjectKind::Ne, "CPE-1", "cpe", "CPE"),
        element(ObjectKind::Port, "GZ-PTN-9/2/1", "transmission", "PTN"),
    ];
    let c = circuit(
        "M1",
        CustomerLevel::Silver,
        AssuranceLevel::A,
        Scope::IntraCity,
        vec![path],
    );
    // Works on the whole NE, Wednesday 2026-06-10 01:00 to 05:00, Shanghai time.
    let window = MaintenanceWindow {
        window_id: "W-42".into(),
        objects: vec!["GZ-PTN-9".into()],
        circuits: vec![],
        start: sh(2026, 6, 10, 1, 0, 0),
        end: sh(2026, 6, 10, 5, 0, 0),
        notice_given_at: notice,
        emergency: false,
        cross_border: false,
    };
    // The port fails at midnight, before the works, and is back at 09:00.
    let los = alarm(
        "P1",
        "PTN-NMS",
        "GZ-PTN-9/2/1",
        "LOS",
        Severity::Critical,
        sh(2026, 6, 10, 0, 0, 0),
    );
    vec![
        Input::Inventory(InventoryChange::Upsert(Box::new(c))),
        Input::Maintenance(window),
        Input::Alarm(los.clone()),
        Input::Alarm(clear(&los, sh(2026, 6, 10, 9, 0, 0))),
    ]
}

fn restore_by_and_breach(out: &[Output]) -> (chrono::DateTime<chrono::Utc>, bool) {
    let evs = tickets(out);
    let opened = evs
        .iter()
        .find(|e| e.sla_event == SlaEvent::Opened)
        .expect("opened");
    let breached = reminders(out)
        .iter()
        .any(|r| r.kind == ReminderKind::DeadlineBreached);
    (opened.ticket().sla.restore_by, breached)
}

#[test]
fn works_announced_in_time_stop_the_clock_for_their_duration() {
    // Notice on Wednesday 2026-05-27: 9 working days before the works (5 needed).
    let mut engine = Engine::new(Policy::builtin());
    let out = run(
        &mut engine,
        inputs(sh(2026, 5, 27, 10, 0, 0)),
        sh(2026, 6, 11, 0, 0, 0),
    );
    let (restore_by, breached) = restore_by_and_breach(&out);
    // Level A in a city: 6 h, plus the 4 h of works → 10:00 instead of 06:00.
    assert_eq!(restore_by, sh(2026, 6, 10, 10, 0, 0));
    assert!(!breached, "restored at 09:00, inside the extended limit");
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::Warning(Warning::LateNotice(_)))));
}

#[test]
fn works_announced_late_change_nothing_and_are_reported() {
    // Notice on Monday 2026-06-08: one working day (Tuesday) before the works.
    let mut engine = Engine::new(Policy::builtin());
    let out = run(
        &mut engine,
        inputs(sh(2026, 6, 8, 10, 0, 0)),
        sh(2026, 6, 11, 0, 0, 0),
    );
    let (restore_by, breached) = restore_by_and_breach(&out);
    assert_eq!(restore_by, sh(2026, 6, 10, 6, 0, 0));
    assert!(breached, "restored at 09:00, three hours late");
    let warnings: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Warning(Warning::LateNotice(n)) => Some(n),
            _ => None,
        })
        .collect();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].window_id, "W-42");
    assert_eq!(warnings[0].late.len(), 1);
    assert_eq!(warnings[0].late[0].circuit_id, "M1");
    assert_eq!(warnings[0].late[0].notice.required_days, 5);
    assert_eq!(warnings[0].late[0].notice.given_days, 1);
}

#[test]
fn a_window_announced_while_the_fault_is_open_moves_its_deadline() {
    let mut all = inputs(sh(2026, 5, 27, 10, 0, 0));
    // Move the window's message after the alarm: the fault is already open.
    let window = all.remove(1);
    all.insert(2, window);
    let mut engine = Engine::new(Policy::builtin());
    let out = run(&mut engine, all, sh(2026, 6, 11, 0, 0, 0));
    let evs = tickets(&out);
    let noted = evs
        .iter()
        .find(|e| e.sla_event == SlaEvent::PlannedWorksNoted)
        .expect("noted");
    assert_eq!(noted.ticket().sla.restore_by, sh(2026, 6, 10, 10, 0, 0));
    // The deadline moved with the works: no breach.
    assert!(!reminders(&out)
        .iter()
        .any(|r| r.kind == ReminderKind::DeadlineBreached));
}
