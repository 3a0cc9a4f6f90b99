//! Properties of the engine: arrival order across circuits changes no ticket, and the
//! same input gives the same events, ids included.

mod scenario;

use std::collections::BTreeMap;

use proptest::prelude::*;

use linewatch::engine::{Engine, Input};
use linewatch::inventory::{InventoryChange, ObjectKind};
use linewatch::levels::{AssuranceLevel, CustomerLevel, Scope, Severity};
use linewatch::policy::Policy;
use linewatch::ticket::TicketEvent;
use scenario::*;

const CIRCUITS: usize = 6;

fn inventory() -> Vec<Input> {
    (0..CIRCUITS)
        .map(|i| {
            let path = vec![
                element(ObjectKind::Ne, &format!("CPE-{i}"), "cpe", "CPE"),
                element(
                    ObjectKind::Port,
                    &format!("NE{i}/1/1"),
                    "transmission",
                    "PTN",
                ),
                element(ObjectKind::Port, &format!("PE{i}/1/1"), "data", "router"),
            ];
            let c = circuit(
                &format!("C{i}"),
                CustomerLevel::ALL[i % 6],
                AssuranceLevel::ALL[i % 4],
                Scope::ALL[i % 3],
                vec![path],
            );
            Input::Inventory(InventoryChange::Upsert(Box::new(c)))
        })
        .collect()
}

/// Per circuit, a sequence of raises and clears within five minutes (shorter than any
/// SLA timer), from a list of (object choice, raise offset s, duration s).
fn circuit_alarms(i: usize, spec: &[(u8, u16, u16)]) -> Vec<Input> {
    let base = sh(2026, 6, 1, 12, 0, 0);
    let mut items = Vec::new();
    for (n, &(obj, off, dur)) in spec.iter().enumerate() {
        let (object, cause) = match obj % 3 {
            0 => (format!("NE{i}/1/1"), "LOS"),
            1 => (format!("NE{i}"), "AIS"),
            _ => (format!("PE{i}"), "BGP neighbor down"),
        };
        let t = base + chrono::Duration::seconds(i64::from(off % 150));
        let a = alarm(
            &format!("A{i}-{n}"),
            "NMS",
            &object,
            cause,
            Severity::Major,
            t,
        );
        let c = clear(&a, t + chrono::Duration::seconds(i64::from(dur % 150)));
        items.push(Input::Alarm(a));
        items.push(Input::Alarm(c));
    }
    // Per-circuit order is event-time order.
    items.sort_by_key(|inp| time_of(inp, base));
    items
}

fn per_ticket(out: &[linewatch::engine::Output]) -> BTreeMap<String, Vec<TicketEvent>> {
    let mut m: BTreeMap<String, Vec<TicketEvent>> = BTreeMap::new();
    for e in tickets(out) {
        m.entry(e.ticket().id.clone()).or_default().push(e.clone());
    }
    m
}

/// Feed with engine time fixed at the start of the scenario, then run every timer.
fn feed(inputs: Vec<Input>) -> Vec<linewatch::engine::Output> {
    let mut engine = Engine::new(Policy::builtin());
    let now = sh(2026, 6, 1, 12, 0, 0);
    let mut out = Vec::new();
    for input in inputs {
        out.extend(
            engine
                .handle(input, now + chrono::Duration::minutes(10))
                .expect("accepted"),
        );
    }
    out.extend(engine.advance(sh(2026, 6, 3, 0, 0, 0)));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn arrival_order_across_circuits_changes_no_ticket(
        specs in proptest::collection::vec(proptest::collection::vec((0u8..3, 0u16..150, 1u16..150), 1..4), CIRCUITS),
        picks in proptest::collection::vec(0usize..CIRCUITS, 0..200),
    ) {
        let streams: Vec<Vec<Input>> = specs.iter().enumerate().map(|(i, s)| circuit_alarms(i, s)).collect();
        let in_circuit_order: Vec<Input> = inventory().into_iter().chain(streams.iter().flatten().cloned()).collect();

        // Interleave the circuits' streams as `picks` says, keeping each stream's order.
        let mut queues: Vec<std::collections::VecDeque<Input>> = streams.into_iter().map(Into::into).collect();
        let mut interleaved = inventory();
        for p in picks {
            if let Some(x) = queues[p].pop_front() {
                interleaved.push(x);
            }
        }
        for q in &mut queues {
            interleaved.extend(q.drain(..));
        }

        let a = per_ticket(&feed(in_circuit_order));
        let b = per_ticket(&feed(interleaved));
        prop_assert!(!a.is_empty());
        prop_assert_eq!(a, b);
    }

    #[test]
    fn same_input_twice_gives_identical_events(
        specs in proptest::collection::vec(proptest::collection::vec((0u8..3, 0u16..150, 1u16..150), 1..4), CIRCUITS),
    ) {
        let inputs: Vec<Input> = inventory().into_iter().chain(specs.iter().enumerate().flat_map(|(i, s)| circuit_alarms(i, s))).collect();
        let first = feed(inputs.clone());
        let second = feed(inputs);
        prop_assert!(!first.is_empty());
        prop_assert_eq!(first, second);
    }
}

/// The circuit stage's changelog carries each circuit's state and its last emitted figures
/// as two records, which compaction may leave in either order (and a release before this
/// one wrote the figures inside the state): restored from them in any of those forms, the
/// state is the same, and fires the same events and figures from then on.
#[test]
fn a_circuit_comes_back_from_its_state_and_figures_records_in_either_order() {
    use linewatch::engine::CircuitStates;
    let policy = Policy::builtin();
    let mut engine = Engine::new(policy.clone());
    let now = sh(2026, 6, 1, 12, 10, 0);
    let spec = [(0u8, 0u16, 149u16), (2, 30, 60)];
    let inputs = inventory()
        .into_iter()
        .chain((0..CIRCUITS).flat_map(|i| circuit_alarms(i, &spec[..1 + i % 2])));
    for input in inputs {
        engine.handle(input, now).expect("accepted");
    }
    // Faults restored, their tickets in hold-down with timers pending.
    let original = engine.states();
    let ids: Vec<String> = original.ids().map(str::to_string).collect();
    assert!(!ids.is_empty());
    let records: Vec<(String, Vec<u8>, Vec<u8>)> = ids
        .iter()
        .map(|id| {
            let state = original.export(id).expect("encodes").expect("has state");
            let figures = original
                .export_figures(id)
                .expect("encodes")
                .expect("has state");
            (id.clone(), state, figures)
        })
        .collect();
    assert!(
        records.iter().any(|(_, _, f)| f.len() > 2),
        "some circuit has figures"
    );
    assert!(
        records
            .iter()
            .all(|(_, s, _)| !String::from_utf8_lossy(s).contains("\"figures\"")),
        "the state record does not repeat the figures"
    );
    let mut state_first = CircuitStates::new();
    let mut figures_first = CircuitStates::new();
    let mut combined = CircuitStates::new();
    for (id, state, figures) in &records {
        state_first.import(id, state, &policy).expect("state");
        state_first.import_figures(id, figures).expect("figures");
        figures_first.import_figures(id, figures).expect("figures");
        figures_first.import(id, state, &policy).expect("state");
        // As a release before this one wrote it: the figures inside the state.
        let mut old: serde_json::Value = serde_json::from_slice(state).expect("json");
        old["figures"] = serde_json::from_slice(figures).expect("json");
        combined
            .import(id, &serde_json::to_vec(&old).expect("json"), &policy)
            .expect("old form");
    }
    let later = sh(2026, 6, 3, 0, 0, 0);
    let expected = original.clone().advance(later, &policy);
    assert!(!expected.is_empty(), "timers left to fire");
    for (name, restored) in [
        ("state first", state_first),
        ("figures first", figures_first),
        ("old form", combined),
    ] {
        for (id, state, figures) in &records {
            assert_eq!(
                &restored.export(id).expect("encodes").expect("state"),
                state,
                "{name}: {id}"
            );
            assert_eq!(
                &restored
                    .export_figures(id)
                    .expect("encodes")
                    .expect("state"),
                figures,
                "{name}: {id}"
            );
        }
        assert_eq!(restored.clone().advance(later, &policy), expected, "{name}");
    }
}
