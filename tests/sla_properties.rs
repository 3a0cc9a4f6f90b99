//! Properties of the SLA figures (`linewatch::sla`), checked against brute force.
//!
//! The interval algebra is checked second by second on small random inputs whose ends lie
//! on whole seconds: there, "is second `s` covered" is exactly "is the instant `s`
//! covered", so a plain count over seconds is an independent measure to compare with.
//! Period splitting is checked in Asia/Shanghai (the default zone) and in Europe/Berlin,
//! whose 23 h and 25 h days are where a careless split gains or loses an hour.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use linewatch::calendar::PeriodKind;
use linewatch::levels::AssuranceLevel;
use linewatch::policy::Policy;
use linewatch::sla::{
    circuit_figures, clip, intersect, measure, periods_overlapping, subtract, union, CircuitFacts,
    FaultFacts, Period, Span,
};
use proptest::prelude::*;

const SH: Tz = chrono_tz::Asia::Shanghai;
const BERLIN: Tz = chrono_tz::Europe::Berlin;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("valid test instant")
}

/// Second `s` of the small test line, which starts at 2026-01-01 00:00 Shanghai.
fn at(s: i64) -> DateTime<Utc> {
    t("2026-01-01T00:00:00+08:00") + Duration::seconds(s)
}

fn covers(spans: &[Span], s: i64) -> bool {
    spans
        .iter()
        .any(|span| span.start <= at(s) && at(s) < span.end)
}

/// Seconds `s` in `[from, to)` for which `keep(s)` holds.
fn count(from: i64, to: i64, keep: impl Fn(i64) -> bool) -> i64 {
    (from..to).filter(|&s| keep(s)).count() as i64
}

/// A span of the small line; a third of them empty or reversed.
fn small_span() -> impl Strategy<Value = Span> {
    (0i64..150, -20i64..40).prop_map(|(start, len)| Span::new(at(start), at(start + len)))
}

fn small_spans() -> impl Strategy<Value = Vec<Span>> {
    prop::collection::vec(small_span(), 0..6)
}

fn small_fault() -> impl Strategy<Value = FaultFacts> {
    (0i64..150, small_spans(), any::<bool>()).prop_map(|(start, down, counted)| FaultFacts {
        started_at: at(start),
        down,
        counted,
    })
}

/// An assessment window of the small line, labelled as a year so the annual limits apply.
fn small_period() -> impl Strategy<Value = Period> {
    (0i64..60, 0i64..120).prop_map(|(start, len)| Period {
        kind: PeriodKind::Year,
        label: "2026".to_owned(),
        start: at(start),
        end: at(start + len),
    })
}

fn levels() -> impl Strategy<Value = AssuranceLevel> {
    prop::sample::select(AssuranceLevel::ALL.to_vec())
}

fn kinds() -> impl Strategy<Value = PeriodKind> {
    prop::sample::select(PeriodKind::ALL.to_vec())
}

fn zones() -> impl Strategy<Value = Tz> {
    prop::sample::select(vec![SH, BERLIN])
}

/// An instant between late 2023 and late 2027, to the nanosecond.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (1_700_000_000i64..1_825_000_000, 0u32..1_000_000_000).prop_map(|(secs, nanos)| {
        DateTime::<Utc>::from_timestamp(secs, nanos).expect("in chrono's range")
    })
}

fn figures(
    level: AssuranceLevel,
    faults: &[FaultFacts],
    excluded: &[Span],
    period: &Period,
    as_of: DateTime<Utc>,
) -> linewatch::sla::CircuitFigures {
    let circuit = CircuitFacts {
        circuit_id: "C-1",
        customer_id: None,
        assurance_level: level,
        faults,
        excluded,
        open_fault: false,
    };
    circuit_figures(&Policy::builtin(), &circuit, period, as_of)
}

proptest! {
    #[test]
    fn union_is_idempotent_order_independent_and_normal(
        spans in prop::collection::vec(small_span(), 0..10).prop_shuffle(),
        seed in any::<u64>(),
    ) {
        let u = union(&spans);
        prop_assert_eq!(union(&u), u.clone());
        // Order: reversed, and rotated by a random amount.
        let mut reversed = spans.clone();
        reversed.reverse();
        prop_assert_eq!(union(&reversed), u.clone());
        let mut rotated = spans.clone();
        if !rotated.is_empty() {
            let by = (seed % rotated.len() as u64) as usize;
            rotated.rotate_left(by);
        }
        prop_assert_eq!(union(&rotated), u.clone());
        // Duplicates change nothing.
        let doubled: Vec<Span> = spans.iter().chain(spans.iter()).copied().collect();
        prop_assert_eq!(union(&doubled), u.clone());
        // Normal form: non-empty, sorted, neither overlapping nor touching.
        prop_assert!(u.iter().all(|s| !s.is_empty()));
        prop_assert!(u.windows(2).all(|w| w[0].end < w[1].start));
        // Same time covered, second by second.
        for s in -30..200 {
            prop_assert_eq!(covers(&u, s), covers(&spans, s), "second {}", s);
        }
        prop_assert_eq!(
            measure(&spans).num_seconds(),
            count(-30, 200, |s| covers(&spans, s))
        );
    }

    #[test]
    fn subtract_and_intersect_match_brute_force(a in small_spans(), b in small_spans()) {
        let minus = subtract(&a, &b);
        let both = intersect(&a, &b);
        for s in -30..200 {
            prop_assert_eq!(covers(&minus, s), covers(&a, s) && !covers(&b, s), "second {}", s);
            prop_assert_eq!(covers(&both, s), covers(&a, s) && covers(&b, s), "second {}", s);
        }
        prop_assert_eq!(union(&minus), minus.clone());
        prop_assert_eq!(union(&both), both.clone());
    }

    #[test]
    fn figures_match_a_count_by_the_second(
        faults in prop::collection::vec(small_fault(), 0..5),
        excluded in small_spans(),
        period in small_period(),
        as_of in (0i64..200).prop_map(at),
        level in levels(),
    ) {
        let f = figures(level, &faults, &excluded, &period, as_of);
        let from = (period.start - at(0)).num_seconds();
        let to = (period.end.min(as_of) - at(0)).num_seconds();
        let end_known = (as_of - at(0)).num_seconds();
        let counted: Vec<Span> = faults.iter().filter(|f| f.counted).flat_map(|f| f.down.clone()).collect();
        let all: Vec<Span> = faults.iter().flat_map(|f| f.down.clone()).collect();

        // outage = down time of counted faults, minus excluded time, in the window.
        let outage = count(from, to, |s| covers(&counted, s) && !covers(&excluded, s));
        prop_assert_eq!(f.outage_seconds as i64, outage);
        // maintenance = down time of any fault inside excluded time, in the window.
        let maintenance = count(from, to, |s| covers(&all, s) && covers(&excluded, s));
        prop_assert_eq!(f.maintenance_seconds as i64, maintenance);

        // failures = counted faults started in the period (by as_of), unless all their
        // known down time is excluded (or, with none, their start is).
        let failures = faults
            .iter()
            .filter(|fault| fault.counted)
            .filter(|fault| period.start <= fault.started_at && fault.started_at < period.end)
            .filter(|fault| fault.started_at <= as_of)
            .filter(|fault| {
                let down = count(-30, end_known, |s| covers(&fault.down, s));
                let outside = count(-30, end_known, |s| {
                    covers(&fault.down, s) && !covers(&excluded, s)
                });
                let start = (fault.started_at - at(0)).num_seconds();
                !(outside == 0 && (down > 0 || covers(&excluded, start)))
            })
            .count();
        prop_assert_eq!(f.failures as usize, failures);

        let elapsed = (to - from).max(0);
        let expected = if elapsed == 0 { 1.0 } else { 1.0 - outage as f64 / elapsed as f64 };
        prop_assert!((f.availability - expected).abs() < 1e-12);
    }

    #[test]
    fn availability_stays_within_0_and_1(
        downs in prop::collection::vec((instant(), 0i64..30 * 86_400), 0..6),
        excluded in prop::collection::vec((instant(), 0i64..5 * 86_400), 0..3),
        anchor in instant(),
        as_of in instant(),
        kind in kinds(),
        tz in zones(),
        level in levels(),
    ) {
        let faults: Vec<FaultFacts> = downs
            .iter()
            .map(|&(start, len)| FaultFacts {
                started_at: start,
                down: vec![Span::new(start, start + Duration::seconds(len))],
                counted: true,
            })
            .collect();
        let excluded: Vec<Span> = excluded
            .iter()
            .map(|&(start, len)| Span::new(start, start + Duration::seconds(len)))
            .collect();
        let period = Period::containing(kind, anchor, tz);
        let f = figures(level, &faults, &excluded, &period, as_of);
        prop_assert!((0.0..=1.0).contains(&f.availability), "{}", f.availability);
        let elapsed = Span::new(period.start, period.end.min(as_of)).duration();
        prop_assert!(f.outage_seconds as i64 <= elapsed.num_seconds() + 1);
        prop_assert_eq!(f.is_final, as_of >= period.end);
        prop_assert_eq!(f.breaches.is_empty(), f.status != linewatch::sla::Status::Breached);
    }

    #[test]
    fn splitting_an_outage_over_periods_loses_and_adds_nothing(
        start in instant(),
        len_ms in 0i64..400 * 86_400_000,
        kind in kinds(),
        tz in zones(),
    ) {
        let outage = Span::new(start, start + Duration::milliseconds(len_ms));
        let periods = periods_overlapping(kind, outage, tz);
        // The periods tile the span: contiguous, from its start to its end.
        if let (Some(first), Some(last)) = (periods.first(), periods.last()) {
            prop_assert!(first.contains(outage.start));
            prop_assert!(last.start < outage.end && outage.end <= last.end);
        } else {
            prop_assert!(outage.is_empty());
        }
        for pair in periods.windows(2) {
            prop_assert_eq!(pair[0].end, pair[1].start);
            prop_assert!(pair[0].label != pair[1].label);
        }
        // Clipping to each period and adding up gives the span back, to the nanosecond.
        let total = periods
            .iter()
            .fold(Duration::zero(), |sum, p| sum + measure(&clip(&[outage], p.span())));
        prop_assert_eq!(total, outage.duration());
    }

    #[test]
    fn outage_figures_add_up_over_periods(
        start_s in 1_700_000_000i64..1_825_000_000,
        len_s in 0i64..400 * 86_400,
        kind in kinds(),
        tz in zones(),
    ) {
        // Whole seconds, so the figures' rounding to seconds cannot blur the sum.
        let start = DateTime::<Utc>::from_timestamp(start_s, 0).expect("in range");
        let outage = Span::new(start, start + Duration::seconds(len_s));
        let faults = [FaultFacts { started_at: start, down: vec![outage], counted: true }];
        let periods = periods_overlapping(kind, outage, tz);
        let as_of = periods.last().map_or(outage.end, |p| p.end);
        let per_period: Vec<_> = periods
            .iter()
            .map(|p| figures(AssuranceLevel::Ordinary, &faults, &[], p, as_of))
            .collect();
        let total: u64 = per_period.iter().map(|f| f.outage_seconds).sum();
        prop_assert_eq!(total as i64, len_s);
        // The one fault is counted once, in the period where it started.
        let failures: u32 = per_period.iter().map(|f| f.failures).sum();
        prop_assert_eq!(failures, u32::from(len_s > 0));
        prop_assert!(per_period.iter().all(|f| f.is_final));
    }
}

/// DOMAIN.md scenario: an outage across New Year's midnight in Shanghai is split between
/// the two years, an hour each; the failure belongs to the year in which it started.
#[test]
fn new_year_outage_in_shanghai_counts_an_hour_in_each_year() {
    let down = Span::new(
        t("2025-12-31T23:00:00+08:00"),
        t("2026-01-01T01:00:00+08:00"),
    );
    let faults = [FaultFacts {
        started_at: down.start,
        down: vec![down],
        counted: true,
    }];
    let years = periods_overlapping(PeriodKind::Year, down, SH);
    let labels: Vec<&str> = years.iter().map(|p| p.label.as_str()).collect();
    assert_eq!(labels, ["2025", "2026"]);
    let as_of = t("2026-01-01T08:00:00+08:00");
    let split: Vec<(String, u64, u32)> = years
        .iter()
        .map(|p| {
            let f = figures(AssuranceLevel::Aaa, &faults, &[], p, as_of);
            (f.period, f.outage_seconds, f.failures)
        })
        .collect();
    assert_eq!(
        split,
        [("2025".to_owned(), 3600, 1), ("2026".to_owned(), 3600, 0)]
    );
    // New Year in Shanghai is 16:00 UTC on 31 December.
    assert_eq!(years[1].start, t("2025-12-31T16:00:00Z"));
}

// --- figures over any span equal the streamed records of the periods ----------------------

mod scenario;

/// One step of a random fault history of circuit `P1`, protected (a working route through
/// one port, a protection route through another, the customer's CPE on both): after `gap`
/// minutes, raise or clear the alarm on one of the three objects (one port leaves the
/// circuit unprotected, both or the CPE take it down, overlapping), or close the
/// circuit's ticket by hand.
#[derive(Debug, Clone)]
enum Step {
    Raise(usize),
    Clear(usize),
    CloseByHand,
}

fn steps() -> impl Strategy<Value = Vec<(i64, Step)>> {
    let step = prop_oneof![
        3 => (0usize..3).prop_map(Step::Raise),
        3 => (0usize..3).prop_map(Step::Clear),
        1 => Just(Step::CloseByHand),
    ];
    // Gaps of up to 20 h from 30 March 20:00: the history crosses days, the end of March
    // and of the first quarter; the level decides how soon the year is at risk.
    prop::collection::vec((1i64..1200, step), 0..14)
}

/// The records streamed for `P1`, and the facts its view holds at the end.
fn streamed(
    level: AssuranceLevel,
    steps: &[(i64, Step)],
) -> (
    Vec<linewatch::sla::CircuitFigures>,
    std::sync::Arc<linewatch::sla::FactsSnapshot>,
) {
    use linewatch::engine::{CommandAction, Engine, Input, Output, TicketCommand};
    use linewatch::inventory::{InventoryChange, ObjectKind};
    use linewatch::levels::{CustomerLevel, Scope, Severity};
    use scenario::{alarm, circuit, clear, element, sh};

    let objects = ["PTN-9/1/1", "PTN-9/2/1", "CPE-P1"];
    let route = |port: &str| {
        vec![
            element(ObjectKind::Ne, objects[2], "cpe", "CPE"),
            element(ObjectKind::Port, port, "transmission", "PTN"),
        ]
    };
    let mut engine = Engine::new(Policy::builtin());
    let mut out = Vec::new();
    let mut now = sh(2026, 3, 30, 20, 0, 0);
    let inventory = circuit(
        "P1",
        CustomerLevel::Gold,
        level,
        Scope::IntraCity,
        vec![route(objects[0]), route(objects[1])],
    );
    out.extend(
        engine
            .handle(
                Input::Inventory(InventoryChange::Upsert(Box::new(inventory))),
                now,
            )
            .expect("inventory accepted"),
    );
    let mut raised: [Option<linewatch::alarm::Alarm>; 3] = [None, None, None];
    for (n, (gap, step)) in steps.iter().enumerate() {
        now += Duration::minutes(*gap);
        let input = match step {
            Step::Raise(i) => {
                let a = alarm(
                    &format!("A{n}"),
                    "PTN-NMS",
                    objects[*i],
                    "LOS",
                    Severity::Critical,
                    now,
                );
                raised[*i] = Some(a.clone());
                Input::Alarm(a)
            }
            Step::Clear(i) => match raised[*i].take() {
                Some(a) => Input::Alarm(clear(&a, now)),
                None => continue,
            },
            Step::CloseByHand => match engine.states().fault("P1") {
                Some(f) => Input::Command(TicketCommand {
                    ticket_id: f.ticket_id.clone(),
                    circuit_id: "P1".into(),
                    action: CommandAction::Close,
                    cause: None,
                    at: now,
                    by: Some("noc".into()),
                    note: None,
                }),
                None => continue,
            },
        };
        out.extend(engine.advance(now));
        // A command the ticket refuses (already closed) is a rejection, not a fact.
        out.extend(engine.handle(input, now).unwrap_or_default());
    }
    now += Duration::days(2);
    out.extend(engine.advance(now));
    let records = out
        .into_iter()
        .filter_map(|o| match o {
            Output::Figures(f) if f.circuit_id == "P1" => Some(*f),
            _ => None,
        })
        .collect();
    let facts = engine
        .states()
        .view("P1", 0, engine.network(), engine.policy(), Some(now))
        .and_then(|v| v.facts)
        .expect("a circuit in the inventory has facts");
    (records, facts)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Issue 15, item 8: the figures over a span that is exactly a day, month, quarter or
    /// year, computed from the facts the query API holds (the view's snapshot), equal
    /// every record streamed for that period, as of the record's time: same label, counts,
    /// outage, availability, limits and status.
    #[test]
    fn figures_over_a_periods_span_equal_its_streamed_records(
        level in levels(),
        steps in steps(),
    ) {
        let (records, facts) = streamed(level, &steps);
        for r in &records {
            let span = Span::new(r.period_start, r.period_end);
            let mut over = facts.figures_over(span, r.as_of);
            // Whether the circuit is down is a fact of the record's time, not a count.
            over.open_fault = r.open_fault;
            prop_assert_eq!(&over, r);
            prop_assert!(facts.as_of.is_some_and(|known| known >= r.as_of));
        }
        // Whenever something was recorded, every kind of period was.
        let kinds: std::collections::BTreeSet<_> = records
            .iter()
            .filter_map(|r| linewatch::sla::label_kind(&r.period))
            .collect();
        prop_assert!(records.is_empty() || kinds.len() == 4, "{:?}", kinds);
    }

    /// The same on the counting alone: over a period's span, `figures_over` is
    /// `circuit_figures` of that period, in any zone, as of any time.
    #[test]
    fn figures_over_a_period_span_is_the_periods_figures(
        faults in prop::collection::vec(small_fault(), 0..5),
        excluded in small_spans(),
        kind in kinds(),
        tz in zones(),
        level in levels(),
        from in 0i64..150,
        as_of in -10i64..200,
    ) {
        let policy = Policy::builtin();
        let mut rules = linewatch::sla::Rules::of(&policy, level);
        rules.time_zone = tz;
        let period = Period::containing(kind, at(from), tz);
        let circuit = CircuitFacts {
            circuit_id: "C-1",
            customer_id: None,
            assurance_level: level,
            faults: &faults,
            excluded: &excluded,
            open_fault: false,
        };
        // The policy's zone plays no part once the period is chosen.
        let by_period = circuit_figures(&policy, &circuit, &period, at(as_of));
        let over = linewatch::sla::figures_over(&rules, &circuit, period.span(), at(as_of));
        prop_assert_eq!(over, by_period);
    }
}
