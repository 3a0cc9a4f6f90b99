//! SLA figures of one circuit over one assessment period: failures, outage time,
//! availability, and how they stand against the policy's limits (DOMAIN.md, "Network
//! quality: the annual limits" and "Line availability").
//!
//! Everything here is pure: facts and the event time `as_of` in, figures out. Nothing reads
//! a clock, so a figure recomputed from the same facts is the same figure, whether live,
//! replayed or recomputed after a late alarm.
//!
//! ## Layout
//! - [`Span`] and the interval algebra on half-open spans: [`union`], [`subtract`],
//!   [`intersect`], [`clip`], [`measure`]. Outage accounting is set arithmetic on time, and
//!   doing it on normalised span lists (sorted, disjoint, no empties) is what keeps
//!   overlapping alarms, maintenance windows and period boundaries from counting a second
//!   twice or losing one.
//! - [`Period`]: a day, month, quarter or year of the policy's local calendar, labelled
//!   `"2026-03-10"`, `"2026-03"`, `"2026-Q1"` or `"2026"`; bounds come from
//!   [`calendar::period_bounds`](crate::calendar::period_bounds), so periods tile the time
//!   line even across daylight-saving changes.
//! - [`circuit_figures`]: the record of topic `kpi.circuits`
//!   (`topics/schemas/kpi-circuit.schema.json`), built from [`CircuitFacts`], for a day,
//!   month, quarter or year; [`figures_over`]: the same over any span (the query API's and
//!   `replay`'s figures on request), by the same code, a span that is a period being that
//!   period; [`FactsSnapshot`]: the facts owned, for a circuit's view to answer later.
//! - [`Limits`] and [`budget_status`]: the judgement alone, figures against limits.
//! - [`warning_between`]: a [`RiskWarning`] when a circuit's standing gets worse
//!   (`topics/schemas/risk-warning.schema.json`).
//!
//! ## Rules
//! What is said here of a period holds for any span given to [`figures_over`], limits
//! aside (only a span that is a year has them).
//!
//! All figures of a period are measured over its *elapsed window*
//! `[period.start, min(period.end, as_of))`; facts after `as_of` are ignored, so figures as
//! of an earlier instant can be recomputed from a later, fuller history.
//!
//! - **Failures**: the counted faults ([`FaultFacts::counted`]; customer-caused and
//!   interconnection faults are not) whose `started_at` lies in the period and is not
//!   after `as_of`, except a fault whose down time lies wholly inside excluded time
//!   (maintenance with proper notice): that was the planned work, not a failure. A fault
//!   with no down time yet (it began exactly at `as_of`) is judged by its start instant
//!   instead. A re-failure inside the hold-down window is not a new fault: the caller has
//!   already merged it into the fault it reopened.
//! - **Outage**: `measure(clip(subtract(union(down of counted faults), union(excluded)),
//!   window))`. Overlapping faults count their common time once; a fault that began in an
//!   earlier period counts its down time inside this one.
//! - **Maintenance**: the down time of *all* faults (counted or not) that lies inside
//!   excluded time, over the same window: the time the outage figure left out.
//! - **Availability**: `1 − outage / elapsed`, with `elapsed` the window's length; 1 when
//!   nothing has elapsed. Always within `[0, 1]`, since the outage lies inside the window.
//! - **Limits**: the failure and outage limits of the policy are *annual* (004 table 7-5),
//!   so they apply to year periods only and are `null` for the others. So does the
//!   availability target (000): the policy's targets are for the year (judged monthly,
//!   99.99 % would allow 4.5 minutes, and every fault would breach its month). It is
//!   judged as a downtime budget for the *whole* year: `(1 − target) × (end − start)`. Judging the whole period, not the elapsed part,
//!   is what makes a figure comparable with the limit before the period ends: a circuit
//!   that was down for a minute on 1 January has not broken a 99.99 % yearly target.
//! - **Status**: `breached` when failures > failure limit, outage > outage limit or outage >
//!   availability budget (each listed in `breaches`); else `at_risk` when a figure has
//!   reached the policy's `budget_risk_threshold` share of its limit; else `ok`. A figure at
//!   exactly its limit is within it (DOMAIN.md: "≤ 4", "≤ 6 h").
//! - **Final**: `as_of ≥ period.end`.
//!
//! ## Arithmetic
//! Comparisons are exact: durations are compared in nanoseconds, and the two fractions of
//! the policy (availability target, risk threshold) are taken to 10⁻¹² before use, so that
//! `0.9999` means 1 − 10⁻⁴ and not the binary float next to it. This matters at the
//! boundaries the SLA is judged on: the AAA budget for 2026 is exactly 3153.6 s, and an
//! outage of 3153.6 s is within it. The record reports whole seconds rounded up: a reported
//! outage never understates the real one, and against a whole-second limit the rounded
//! figure gives the same verdict as the exact one.

use std::fmt;

use chrono::{DateTime, Datelike, Duration, NaiveDate, SecondsFormat, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::calendar::{period_bounds, PeriodKind};
use crate::levels::AssuranceLevel;
use crate::policy::Policy;

// ---------------------------------------------------------------------------------------
// Interval algebra
// ---------------------------------------------------------------------------------------

/// A half-open span of time `[start, end)`. A span whose `end` is not after its `start` is
/// empty: every function of this module treats it as no time at all, so callers never
/// need to filter or reorder their spans first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub start: DateTime<Utc>,
    /// Exclusive.
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub end: DateTime<Utc>,
}

impl Span {
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Span {
        Span { start, end }
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Length of the span; zero when empty.
    pub fn duration(&self) -> Duration {
        if self.is_empty() {
            Duration::zero()
        } else {
            self.end - self.start
        }
    }

    /// Does the span contain `instant` (`start ≤ instant < end`)?
    pub fn contains(&self, instant: DateTime<Utc>) -> bool {
        self.start <= instant && instant < self.end
    }
}

/// The normal form of a set of spans: sorted by start, pairwise disjoint and not touching
/// (`[a, b)` and `[b, c)` become `[a, c)`), empty spans dropped. Two lists describe the same
/// time exactly when their unions are equal.
pub fn union(spans: &[Span]) -> Vec<Span> {
    let mut sorted: Vec<Span> = spans.iter().copied().filter(|s| !s.is_empty()).collect();
    sorted.sort_unstable_by_key(|s| (s.start, s.end));
    let mut out: Vec<Span> = Vec::with_capacity(sorted.len());
    for span in sorted {
        match out.last_mut() {
            Some(last) if span.start <= last.end => {
                if span.end > last.end {
                    last.end = span.end;
                }
            }
            _ => out.push(span),
        }
    }
    out
}

/// The time in `a` that is not in `b`, in normal form (see [`union`]).
pub fn subtract(a: &[Span], b: &[Span]) -> Vec<Span> {
    let a = union(a);
    let b = union(b);
    let mut out = Vec::with_capacity(a.len());
    // `first` is the first span of `b` that can still overlap the current span of `a`:
    // both lists are sorted and disjoint, so it only moves forward.
    let mut first = 0;
    for span in a {
        while first < b.len() && b[first].end <= span.start {
            first += 1;
        }
        let mut cursor = span.start;
        for cut in b[first..].iter().take_while(|cut| cut.start < span.end) {
            if cut.start > cursor {
                out.push(Span::new(cursor, cut.start));
            }
            cursor = cursor.max(cut.end);
        }
        if cursor < span.end {
            out.push(Span::new(cursor, span.end));
        }
    }
    out
}

/// The time in both `a` and `b`, in normal form (see [`union`]).
pub fn intersect(a: &[Span], b: &[Span]) -> Vec<Span> {
    let a = union(a);
    let b = union(b);
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
        let overlap = Span::new(x.start.max(y.start), x.end.min(y.end));
        if !overlap.is_empty() {
            out.push(overlap);
        }
        // Drop whichever ends first: it cannot overlap anything further in the other list.
        if x.end <= y.end {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The time of `spans` inside `window`, in normal form (see [`union`]).
pub fn clip(spans: &[Span], window: Span) -> Vec<Span> {
    intersect(spans, &[window])
}

/// Total time covered by `spans`, each instant counted once however many spans cover it.
pub fn measure(spans: &[Span]) -> Duration {
    union(spans)
        .iter()
        .fold(Duration::zero(), |total, s| total + s.duration())
}

// ---------------------------------------------------------------------------------------
// Periods
// ---------------------------------------------------------------------------------------

/// An assessment period of the local calendar in the policy's time zone, as `[start, end)`
/// in UTC.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Period {
    pub kind: PeriodKind,
    /// `"2026"` (year), `"2026-Q1"` (quarter), `"2026-03"` (month), `"2026-03-10"` (day):
    /// the local dates, so a Shanghai day's label is its Shanghai date.
    pub label: String,
    pub start: DateTime<Utc>,
    /// Exclusive: the next period's start.
    pub end: DateTime<Utc>,
}

impl Period {
    /// The period of `kind` that contains `instant`, in time zone `tz`.
    ///
    /// The figures ask for the same few periods again and again (the year, quarter, month
    /// and day of each event, for each circuit), and each answer costs time-zone lookups
    /// and a label; so each thread keeps the last period of each kind it computed and
    /// answers from them when one contains `instant` (periods tile, so it is then the
    /// answer). Two per kind: the figures look at this year and the last one.
    pub fn containing(kind: PeriodKind, instant: DateTime<Utc>, tz: Tz) -> Period {
        type Recent = [[Option<(Tz, Period)>; 2]; 4];
        thread_local! {
            static RECENT: std::cell::RefCell<Recent> =
                const { std::cell::RefCell::new([[None, None], [None, None], [None, None], [None, None]]) };
        }
        let slot = kind as usize;
        let cached = RECENT.with_borrow(|recent| {
            recent[slot]
                .iter()
                .flatten()
                .find(|(zone, p)| *zone == tz && p.contains(instant))
                .map(|(_, p)| p.clone())
        });
        if let Some(period) = cached {
            return period;
        }
        let period = Self::compute(kind, instant, tz);
        RECENT.with_borrow_mut(|recent| {
            let [newest, older] = &mut recent[slot];
            *older = newest.replace((tz, period.clone()));
        });
        period
    }

    fn compute(kind: PeriodKind, instant: DateTime<Utc>, tz: Tz) -> Period {
        let (start, end) = period_bounds(kind, instant, tz);
        let date = instant.with_timezone(&tz).date_naive();
        Period {
            kind,
            label: label(kind, date),
            start,
            end,
        }
    }

    /// The period of the same kind that starts where this one ends; `None` only for the
    /// last period chrono can represent.
    pub fn next(&self, tz: Tz) -> Option<Period> {
        if self.end == DateTime::<Utc>::MAX_UTC {
            None
        } else {
            Some(Period::containing(self.kind, self.end, tz))
        }
    }

    /// The period as a span.
    pub fn span(&self) -> Span {
        Span::new(self.start, self.end)
    }

    /// Does the period contain `instant`?
    pub fn contains(&self, instant: DateTime<Utc>) -> bool {
        self.span().contains(instant)
    }

    /// Length of the whole period (a Berlin day is 23, 24 or 25 hours).
    pub fn duration(&self) -> Duration {
        self.span().duration()
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label)
    }
}

fn label(kind: PeriodKind, date: NaiveDate) -> String {
    let year = date.year();
    match kind {
        PeriodKind::Year => format!("{year:04}"),
        PeriodKind::Quarter => format!("{year:04}-Q{}", date.month0() / 3 + 1),
        PeriodKind::Month => format!("{year:04}-{:02}", date.month()),
        PeriodKind::Day => format!("{year:04}-{:02}-{:02}", date.month(), date.day()),
    }
}

/// The periods of `kind` that share time with `span`, in order; empty for an empty span.
/// They tile: each starts where the previous ends, the first contains `span.start` and the
/// last reaches `span.end`, so clipping a span to each of them splits it without loss.
pub fn periods_overlapping(kind: PeriodKind, span: Span, tz: Tz) -> Vec<Period> {
    let mut out = Vec::new();
    if span.is_empty() {
        return out;
    }
    let mut period = Period::containing(kind, span.start, tz);
    while period.start < span.end {
        let next = period.next(tz);
        out.push(period);
        match next {
            Some(p) => period = p,
            None => break,
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Figures and judgement
// ---------------------------------------------------------------------------------------

/// What the SLA needs to know of one fault of a circuit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultFacts {
    /// Start of the fault (the SLA clock's start). Decides which period counts it.
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub started_at: DateTime<Utc>,
    /// When the circuit was down because of this fault. Closed spans: the caller closes an
    /// ongoing one at `as_of`. A re-failure inside the hold-down window is one more span of
    /// the same fault.
    pub down: Vec<Span>,
    /// False for faults caused by the customer or by interconnection with another carrier
    /// (and terminal-type faults): counted neither in failures nor in outage (004).
    pub counted: bool,
}

/// Everything about one circuit that its figures are computed from.
#[derive(Debug, Clone, Copy)]
pub struct CircuitFacts<'a> {
    pub circuit_id: &'a str,
    pub customer_id: Option<&'a str>,
    pub assurance_level: AssuranceLevel,
    pub faults: &'a [FaultFacts],
    /// Time inside maintenance windows whose notice met the policy; excluded from the
    /// outage. Windows whose notice was late are not here: their outage counts.
    pub excluded: &'a [Span],
    /// Whether the circuit is down at `as_of`.
    pub open_fault: bool,
}

/// How a circuit stands against its limits. Ordered from best to worst, so "got worse" is
/// `new > old`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// A figure has reached the policy's warning share of its limit.
    AtRisk,
    /// A limit is exceeded: the circuit scores 0 for the period (001).
    Breached,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::AtRisk => "at_risk",
            Self::Breached => "breached",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A limit that can be exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Breach {
    /// More failures than the annual limit.
    Failures,
    /// More outage time than the annual limit.
    Outage,
    /// More outage time than the availability target allows over the whole period.
    Availability,
}

impl Breach {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failures => "failures",
            Self::Outage => "outage",
            Self::Availability => "availability",
        }
    }
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The limits that apply to one circuit in one period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Most failures allowed; `None` outside year periods (the limit is annual).
    pub failures: Option<u32>,
    /// Most outage time allowed; `None` outside year periods (the limit is annual).
    pub outage: Option<Duration>,
    /// The availability target, a fraction in (0, 1]; `None` outside year periods: the
    /// policy's targets are for the year, the assessment period of the domestic SLA.
    pub availability_target: Option<f64>,
    /// Outage time the target allows over the whole period (see [`availability_budget`]).
    pub availability_budget: Option<Duration>,
    /// Share of a limit at which a circuit is at risk.
    pub risk_threshold: f64,
}

impl Limits {
    /// The policy's limits for a circuit of `level` in `period`.
    pub fn for_period(policy: &Policy, level: AssuranceLevel, period: &Period) -> Limits {
        Rules::of(policy, level).limits(period)
    }

    /// No limit at all (a span that is not a year): everything is `ok`.
    pub fn none(risk_threshold: f64) -> Limits {
        Limits {
            failures: None,
            outage: None,
            availability_target: None,
            availability_budget: None,
            risk_threshold,
        }
    }
}

/// What judging one circuit's figures takes of the policy: the time zone of its calendar
/// and the annual limits of the circuit's assurance level. Small and `Copy`, so that a
/// view of the circuit can carry it and answer figures over any span without the policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    pub time_zone: Tz,
    pub failures: u32,
    pub outage: Duration,
    pub availability_target: f64,
    pub risk_threshold: f64,
}

impl Rules {
    /// The policy's rules for a circuit of `level`.
    pub fn of(policy: &Policy, level: AssuranceLevel) -> Rules {
        Rules {
            time_zone: policy.time_zone(),
            failures: policy.annual_failure_limit(level),
            outage: policy.annual_outage_limit(level),
            availability_target: policy.availability_target(level),
            risk_threshold: policy.budget_risk_threshold(),
        }
    }

    /// The limits that apply in `period`: the annual ones in a year, none otherwise.
    pub fn limits(&self, period: &Period) -> Limits {
        if period.kind != PeriodKind::Year {
            return Limits::none(self.risk_threshold);
        }
        Limits {
            failures: Some(self.failures),
            outage: Some(self.outage),
            availability_target: Some(self.availability_target),
            availability_budget: Some(availability_budget(
                self.availability_target,
                period.duration(),
            )),
            risk_threshold: self.risk_threshold,
        }
    }
}

/// The outage time an availability `target` allows over a period of `length`:
/// `(1 − target) × length`, exact to the nanosecond (rounded down) with the target taken
/// to 10⁻¹². For AAA (99.99 %) over 2026 in Shanghai (365 days): 3153.6 s, 52 min 33.6 s.
pub fn availability_budget(target: f64, length: Duration) -> Duration {
    let unavailable = (PPT - parts_per_trillion(target)).clamp(0, PPT);
    from_nanos(nanos(length).max(0).saturating_mul(unavailable) / PPT)
}

/// Status and breaches of a circuit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: Status,
    /// The limits exceeded, in the order failures, outage, availability; empty unless the
    /// status is [`Status::Breached`].
    pub breaches: Vec<Breach>,
}

/// Judge `failures` and `outage` against `limits` (the rules are in the module doc).
pub fn budget_status(failures: u32, outage: Duration, limits: &Limits) -> Verdict {
    let mut breaches = Vec::new();
    if limits.failures.is_some_and(|limit| failures > limit) {
        breaches.push(Breach::Failures);
    }
    if limits.outage.is_some_and(|limit| outage > limit) {
        breaches.push(Breach::Outage);
    }
    if limits
        .availability_budget
        .is_some_and(|budget| outage > budget)
    {
        breaches.push(Breach::Availability);
    }
    let status = if !breaches.is_empty() {
        Status::Breached
    } else {
        let threshold = parts_per_trillion(limits.risk_threshold);
        let used = nanos(outage);
        let failures_at_risk = limits
            .failures
            .is_some_and(|limit| reaches(i128::from(failures), i128::from(limit), threshold));
        let outage_at_risk = limits
            .outage
            .is_some_and(|limit| reaches(used, nanos(limit), threshold));
        let budget_at_risk = limits
            .availability_budget
            .is_some_and(|budget| reaches(used, nanos(budget), threshold));
        if failures_at_risk || outage_at_risk || budget_at_risk {
            Status::AtRisk
        } else {
            Status::Ok
        }
    };
    Verdict { status, breaches }
}

/// Has `used` reached `threshold` (parts per trillion) of `limit`? Nothing used is never at
/// risk, not even against a zero budget (a 100 % target): the first second is a breach,
/// not a warning.
fn reaches(used: i128, limit: i128, threshold_ppt: i128) -> bool {
    used > 0 && used.saturating_mul(PPT) >= threshold_ppt.saturating_mul(limit)
}

/// One circuit's SLA figures for one period as of an event time: the record of topic
/// `kpi.circuits`, serialised exactly as `topics/schemas/kpi-circuit.schema.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CircuitFigures {
    pub circuit_id: String,
    pub customer_id: Option<String>,
    pub assurance_level: AssuranceLevel,
    /// The period's label (see [`Period::label`]).
    pub period: String,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub period_start: DateTime<Utc>,
    /// Exclusive.
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub period_end: DateTime<Utc>,
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub as_of: DateTime<Utc>,
    pub failures: u32,
    /// `None` outside year periods.
    pub failure_limit: Option<u32>,
    /// Rounded up to whole seconds (see the module doc, "Arithmetic").
    pub outage_seconds: u64,
    /// `None` outside year periods.
    pub outage_limit_seconds: Option<u64>,
    /// Down time inside notified maintenance, left out of the outage; rounded up.
    pub maintenance_seconds: u64,
    pub availability: f64,
    pub availability_target: Option<f64>,
    pub status: Status,
    pub breaches: Vec<Breach>,
    /// Whether the circuit is down at `as_of`.
    pub open_fault: bool,
    /// `as_of ≥ period end`: the period is over.
    #[serde(rename = "final")]
    pub is_final: bool,
}

impl CircuitFigures {
    /// Whether `other` is these figures as of another time: every field equal but `asOf`
    /// (nothing to record again). Field by field, without a copy; the destructuring makes
    /// a new field a compile error here until it is compared.
    pub fn same_apart_from_as_of(&self, other: &CircuitFigures) -> bool {
        let CircuitFigures {
            circuit_id,
            customer_id,
            assurance_level,
            period,
            period_start,
            period_end,
            as_of: _,
            failures,
            failure_limit,
            outage_seconds,
            outage_limit_seconds,
            maintenance_seconds,
            availability,
            availability_target,
            status,
            breaches,
            open_fault,
            is_final,
        } = self;
        *failures == other.failures
            && *outage_seconds == other.outage_seconds
            && *open_fault == other.open_fault
            && *is_final == other.is_final
            && *status == other.status
            && *availability == other.availability
            && *maintenance_seconds == other.maintenance_seconds
            && *breaches == other.breaches
            && *failure_limit == other.failure_limit
            && *outage_limit_seconds == other.outage_limit_seconds
            && *availability_target == other.availability_target
            && *assurance_level == other.assurance_level
            && *period_start == other.period_start
            && *period_end == other.period_end
            && *period == other.period
            && *circuit_id == other.circuit_id
            && *customer_id == other.customer_id
    }
}

/// The figures of `circuit` in `period` as of `as_of`, judged against `policy` (the rules
/// are in the module doc). The same as [`figures_over`] over the period's span.
pub fn circuit_figures(
    policy: &Policy,
    circuit: &CircuitFacts<'_>,
    period: &Period,
    as_of: DateTime<Utc>,
) -> CircuitFigures {
    let limits = Limits::for_period(policy, circuit.assurance_level, period);
    figures_in(circuit, &period.label, period.span(), &limits, as_of)
}

/// Longest span [`figures_over`] is asked for by the query API and `replay`: 366 days, a
/// leap year (a year of the local calendar is never longer, daylight saving or not).
pub const MAX_SPAN: Duration = Duration::days(366);

/// The figures of `circuit` over any span `[span.start, span.end)` as of `as_of` (000:
/// "statistics for any period on request"), counted by the same rules and the same code
/// as the periods' records ([`circuit_figures`]).
///
/// A span that is exactly a day, month, quarter or year of the local calendar in
/// `rules.time_zone` *is* that period: it carries the period's label and limits (annual
/// ones for a year), so that the answer equals the period's record as of the same time.
/// Any other span is labelled `"<start>/<end>"` (an RFC 3339 interval, UTC) and has no
/// limit (the limits are annual): `null` limits and status `ok`, as a month.
pub fn figures_over(
    rules: &Rules,
    circuit: &CircuitFacts<'_>,
    span: Span,
    as_of: DateTime<Utc>,
) -> CircuitFigures {
    match period_of_span(span, rules.time_zone) {
        Some(period) => figures_in(circuit, &period.label, span, &rules.limits(&period), as_of),
        None => {
            let text = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
            let label = format!("{}/{}", text(span.start), text(span.end));
            let limits = Limits::none(rules.risk_threshold);
            figures_in(circuit, &label, span, &limits, as_of)
        }
    }
}

/// An owned copy of what one circuit's figures are computed from, taken from the engine's
/// state for the query API, so that figures over any span can be answered later, off the
/// engine, from the same facts as the records ([`FactsSnapshot::figures_over`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FactsSnapshot {
    pub circuit_id: String,
    pub customer_id: Option<String>,
    pub assurance_level: AssuranceLevel,
    pub rules: Rules,
    /// The circuit's faults; a down span still going on ends at `DateTime::<Utc>::MAX_UTC`
    /// (the figures clip every fact at their `as_of`).
    pub faults: Vec<FaultFacts>,
    pub excluded: Vec<Span>,
    /// Whether the circuit is down at `as_of`.
    pub open_fault: bool,
    /// The time the facts are known up to (the event time of the state they were taken
    /// from); `None` when nothing is known of the circuit's faults (no state).
    pub as_of: Option<DateTime<Utc>>,
}

impl FactsSnapshot {
    /// The circuit's figures over `span` as of `as_of` (see [`figures_over`]); facts after
    /// `as_of` are ignored, so an `as_of` at or before [`FactsSnapshot::as_of`] gives the
    /// figures as they stood then (for facts that only grow: alarms, not a later
    /// reclassification or a late maintenance window).
    pub fn figures_over(&self, span: Span, as_of: DateTime<Utc>) -> CircuitFigures {
        let facts = CircuitFacts {
            circuit_id: &self.circuit_id,
            customer_id: self.customer_id.as_deref(),
            assurance_level: self.assurance_level,
            faults: &self.faults,
            excluded: &self.excluded,
            open_fault: self.open_fault,
        };
        figures_over(&self.rules, &facts, span, as_of)
    }
}

/// The calendar period (largest kind first) whose bounds are exactly `span`'s, if any.
pub fn period_of_span(span: Span, tz: Tz) -> Option<Period> {
    if span.is_empty() {
        return None;
    }
    [
        PeriodKind::Year,
        PeriodKind::Quarter,
        PeriodKind::Month,
        PeriodKind::Day,
    ]
    .into_iter()
    .map(|kind| Period::containing(kind, span.start, tz))
    .find(|p| p.start == span.start && p.end == span.end)
}

/// The kind of period a record's label names (`"2026"`, `"2026-Q1"`, `"2026-03"`,
/// `"2026-03-10"`); `None` for a span's `"<start>/<end>"` label.
pub fn label_kind(label: &str) -> Option<PeriodKind> {
    let b = label.as_bytes();
    match b.len() {
        4 => Some(PeriodKind::Year),
        7 if b[5] == b'Q' => Some(PeriodKind::Quarter),
        7 => Some(PeriodKind::Month),
        10 => Some(PeriodKind::Day),
        _ => None,
    }
}

/// The counting itself, shared by [`circuit_figures`] and [`figures_over`]: `circuit`'s
/// figures over `span` as of `as_of`, judged against `limits`, under `label`.
fn figures_in(
    circuit: &CircuitFacts<'_>,
    label: &str,
    span: Span,
    limits: &Limits,
    as_of: DateTime<Utc>,
) -> CircuitFigures {
    let window = Span::new(span.start, span.end.min(as_of));
    let known = Span::new(DateTime::<Utc>::MIN_UTC, as_of);
    let excluded = union(circuit.excluded);

    let mut all_down = Vec::new();
    let mut failures: u32 = 0;
    for fault in circuit.faults {
        let down = clip(&fault.down, known);
        all_down.extend_from_slice(&down);
        if !fault.counted {
            continue;
        }
        if span.contains(fault.started_at)
            && fault.started_at <= as_of
            && !within_maintenance(fault.started_at, &down, &excluded)
        {
            failures = failures.saturating_add(1);
        }
    }

    let outage = counted_outage(circuit, span, as_of);
    let maintenance = measure(&clip(&intersect(&all_down, &excluded), window));
    let availability = availability(outage, window.duration());

    let verdict = budget_status(failures, outage, limits);
    CircuitFigures {
        circuit_id: circuit.circuit_id.to_owned(),
        customer_id: circuit.customer_id.map(str::to_owned),
        assurance_level: circuit.assurance_level,
        period: label.to_owned(),
        period_start: span.start,
        period_end: span.end,
        as_of,
        failures,
        failure_limit: limits.failures,
        outage_seconds: ceil_seconds(outage),
        outage_limit_seconds: limits.outage.map(floor_seconds),
        maintenance_seconds: ceil_seconds(maintenance),
        availability,
        availability_target: limits.availability_target,
        status: verdict.status,
        breaches: verdict.breaches,
        open_fault: circuit.open_fault,
        is_final: as_of >= span.end,
    }
}

/// The outage of `circuit` in `span` as of `as_of`, exact (see the module doc,
/// "Outage").
fn counted_outage(circuit: &CircuitFacts<'_>, span: Span, as_of: DateTime<Utc>) -> Duration {
    let window = Span::new(span.start, span.end.min(as_of));
    let known = Span::new(DateTime::<Utc>::MIN_UTC, as_of);
    let down: Vec<Span> = circuit
        .faults
        .iter()
        .filter(|f| f.counted)
        .flat_map(|f| clip(&f.down, known))
        .collect();
    measure(&clip(&subtract(&down, circuit.excluded), window))
}

/// When the figures of `circuit` in `period` will next cross a risk threshold or a limit
/// of the outage (the outage limit or the availability budget), if the circuit stays down
/// from `as_of` on: the figure timer of a down circuit, so that its warning comes out at
/// that second and not at the next ticket event. `None` when no further crossing falls
/// inside the period (or the period has no such limit: only years have).
///
/// The ongoing outage grows one second per second from `as_of`, or from the period's start
/// for a period that has not begun yet (an outage across New Year counts in the next year
/// from its first second, with that year's budget). Time inside excluded planned works
/// does not count, so the instant returned may come early, never late: recomputed then,
/// the figures give the next one. The instant is rounded up to a whole second after
/// `as_of` (or the period's start), so that the figures computed then have crossed.
pub fn next_crossing(
    policy: &Policy,
    circuit: &CircuitFacts<'_>,
    period: &Period,
    as_of: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let limits = Limits::for_period(policy, circuit.assurance_level, period);
    let used = nanos(counted_outage(circuit, period.span(), as_of));
    let threshold = parts_per_trillion(limits.risk_threshold);
    let remaining = [limits.availability_budget, limits.outage]
        .into_iter()
        .flatten()
        .flat_map(|limit| {
            let limit = nanos(limit);
            // At risk from the first nanosecond at which `reaches` holds; breached one
            // nanosecond past the limit (a figure at its limit is within it).
            let at_risk = (threshold.saturating_mul(limit) + PPT - 1).div_euclid(PPT);
            [at_risk.max(1), limit + 1]
        })
        .filter(|point| *point > used)
        .map(|point| point - used)
        .min()?;
    let seconds = i64::try_from((remaining + NANOS_PER_SECOND - 1) / NANOS_PER_SECOND).ok()?;
    as_of
        .max(period.start)
        .checked_add_signed(Duration::try_seconds(seconds)?)
        .filter(|t| *t < period.end)
}

/// Is a fault wholly inside notified maintenance? Its down time decides; a fault with no
/// down time yet is judged by its start instant. `excluded` is in normal form.
fn within_maintenance(started_at: DateTime<Utc>, down: &[Span], excluded: &[Span]) -> bool {
    if measure(down).is_zero() {
        excluded.iter().any(|s| s.contains(started_at))
    } else {
        subtract(down, excluded).is_empty()
    }
}

/// `1 − outage / elapsed` within [0, 1]; 1 when nothing has elapsed.
fn availability(outage: Duration, elapsed: Duration) -> f64 {
    let elapsed = nanos(elapsed);
    if elapsed <= 0 {
        return 1.0;
    }
    let down = nanos(outage).clamp(0, elapsed);
    (1.0 - down as f64 / elapsed as f64).clamp(0.0, 1.0)
}

// ---------------------------------------------------------------------------------------
// Risk warnings
// ---------------------------------------------------------------------------------------

/// A circuit's standing got worse in a period (000: "warn before and when a figure goes
/// past its limit"). Serialised as `topics/schemas/risk-warning.schema.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RiskWarning {
    pub circuit_id: String,
    /// The period's label.
    pub period: String,
    pub from: Status,
    pub to: Status,
    /// The `asOf` of the figures that got worse.
    #[serde(serialize_with = "crate::timestamp::serialize")]
    pub at: DateTime<Utc>,
    /// Every limit exceeded now (not only the new ones).
    pub breaches: Vec<Breach>,
}

/// The warning owed when a circuit's figures change from `old` to `new`, if any.
///
/// A warning is owed when the status gets worse (ok → at_risk, ok or at_risk → breached)
/// and also when a breached circuit exceeds one more limit (breached on availability, then
/// on outage too): each limit passed is news for whoever watches it. Nothing is owed when
/// the standing stays or improves (a late maintenance window can lower an outage).
///
/// `old` of another circuit or period is no history for `new`, and is treated as absent;
/// with no history, `new` is compared with `ok`.
pub fn warning_between(old: Option<&CircuitFigures>, new: &CircuitFigures) -> Option<RiskWarning> {
    let old = old.filter(|o| {
        o.circuit_id == new.circuit_id
            && o.period == new.period
            && o.period_start == new.period_start
    });
    let (from, old_breaches) = old.map_or((Status::Ok, &[][..]), |o| (o.status, &o.breaches[..]));
    let new_breach = new.breaches.iter().any(|b| !old_breaches.contains(b));
    (new.status > from || new_breach).then(|| RiskWarning {
        circuit_id: new.circuit_id.clone(),
        period: new.period.clone(),
        from,
        to: new.status,
        at: new.as_of,
        breaches: new.breaches.clone(),
    })
}

// ---------------------------------------------------------------------------------------
// Exact arithmetic
// ---------------------------------------------------------------------------------------

/// One, in parts per trillion.
const PPT: i128 = 1_000_000_000_000;
const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// A fraction in parts per trillion, rounded: the policy's decimal fractions become exact
/// integers. A NaN becomes 0 (the policy refuses NaN anyway).
fn parts_per_trillion(fraction: f64) -> i128 {
    (fraction * 1e12).round() as i128
}

/// A duration in nanoseconds. Infallible, unlike `num_nanoseconds`, which gives up beyond
/// 292 years.
fn nanos(d: Duration) -> i128 {
    i128::from(d.num_seconds()) * NANOS_PER_SECOND + i128::from(d.subsec_nanos())
}

/// The inverse of [`nanos`] for non-negative values, saturating at `Duration::MAX`.
fn from_nanos(n: i128) -> Duration {
    let seconds = i64::try_from(n.div_euclid(NANOS_PER_SECOND)).ok();
    let sub = i64::try_from(n.rem_euclid(NANOS_PER_SECOND)).unwrap_or(0);
    seconds
        .and_then(Duration::try_seconds)
        .and_then(|d| d.checked_add(&Duration::nanoseconds(sub)))
        .unwrap_or(Duration::MAX)
}

/// Whole seconds, rounded up; 0 for a negative duration.
fn ceil_seconds(d: Duration) -> u64 {
    let n = nanos(d).max(0);
    u64::try_from((n + NANOS_PER_SECOND - 1) / NANOS_PER_SECOND).unwrap_or(u64::MAX)
}

/// Whole seconds, rounded down: a reported limit is never more generous than the real one.
fn floor_seconds(d: Duration) -> u64 {
    u64::try_from(nanos(d).max(0) / NANOS_PER_SECOND).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::DEFAULT_POLICY_TOML;
    use serde_json::Value;

    const SH: Tz = chrono_tz::Asia::Shanghai;
    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("valid test instant")
    }

    fn span(start: &str, end: &str) -> Span {
        Span::new(t(start), t(end))
    }

    fn secs(n: i64) -> Duration {
        Duration::seconds(n)
    }

    proptest::proptest! {
        /// The periods kept per thread answer as computing afresh would, whatever the
        /// order of the instants and zones asked about (a Berlin day of 23 or 25 hours,
        /// New Year, either side of a bound).
        #[test]
        fn a_period_remembered_is_the_period_computed(
            asks in proptest::collection::vec(
                (0usize..4, 0usize..2, 1_700_000_000i64..1_800_000_000i64), 1..200)
        ) {
            for (kind, zone, secs) in asks {
                let kind = PeriodKind::ALL[kind];
                let tz = [SH, BERLIN][zone];
                let instant = DateTime::<Utc>::from_timestamp(secs, 0).expect("in range");
                let period = Period::containing(kind, instant, tz);
                proptest::prop_assert_eq!(&period, &Period::compute(kind, instant, tz));
                // The bounds themselves, asked next, from either side.
                for at in [period.start, period.end, period.end - Duration::nanoseconds(1)] {
                    proptest::prop_assert_eq!(
                        Period::containing(kind, at, tz),
                        Period::compute(kind, at, tz)
                    );
                }
            }
        }
    }

    fn period(kind: PeriodKind, local: &str) -> Period {
        Period::containing(kind, t(local), SH)
    }

    fn year_2026() -> Period {
        period(PeriodKind::Year, "2026-06-01T00:00:00+08:00")
    }

    /// A counted fault down from `start` for `down`.
    fn fault_at(start: DateTime<Utc>, down: Duration) -> FaultFacts {
        FaultFacts {
            started_at: start,
            down: vec![Span::new(start, start + down)],
            counted: true,
        }
    }

    fn figures_with(
        policy: &Policy,
        level: AssuranceLevel,
        faults: &[FaultFacts],
        excluded: &[Span],
        period: &Period,
        as_of: DateTime<Utc>,
    ) -> CircuitFigures {
        let circuit = CircuitFacts {
            circuit_id: "C-1",
            customer_id: Some("K-1"),
            assurance_level: level,
            faults,
            excluded,
            open_fault: false,
        };
        circuit_figures(policy, &circuit, period, as_of)
    }

    /// Figures at the end of `period` of a circuit with one counted fault of `outage`.
    fn one_outage(
        policy: &Policy,
        level: AssuranceLevel,
        period: &Period,
        outage: Duration,
    ) -> CircuitFigures {
        let faults = [fault_at(period.start + Duration::days(1), outage)];
        figures_with(policy, level, &faults, &[], period, period.end)
    }

    /// The default policy with every availability target set to `target`, to watch the
    /// outage limits alone (the default targets are tighter than the outage limits).
    fn policy_with_availability(target: &str) -> Policy {
        let default_line =
            "availability = { AAA = 0.9999, AA = 0.9999, A = 0.9986, ordinary = 0.9972 }";
        assert!(
            DEFAULT_POLICY_TOML.contains(default_line),
            "default policy changed"
        );
        let line = format!(
            "availability = {{ AAA = {target}, AA = {target}, A = {target}, ordinary = {target} }}"
        );
        Policy::from_toml_str(&DEFAULT_POLICY_TOML.replace(default_line, &line))
            .expect("valid policy")
    }

    /// DOMAIN.md, 004 table 7-5 and 000: (level, failures ≤, outage ≤, availability target).
    fn domain_table() -> [(AssuranceLevel, u32, Duration, f64); 4] {
        [
            (AssuranceLevel::Aaa, 4, Duration::hours(6), 0.9999),
            (AssuranceLevel::Aa, 6, Duration::hours(12), 0.9999),
            (AssuranceLevel::A, 8, Duration::hours(24), 0.9986),
            (AssuranceLevel::Ordinary, 10, Duration::hours(48), 0.9972),
        ]
    }

    // --- interval algebra -------------------------------------------------------------

    #[test]
    fn union_sorts_merges_touching_and_drops_empty() {
        let spans = [
            span("2026-01-01T03:00:00Z", "2026-01-01T04:00:00Z"),
            span("2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"),
            span("2026-01-01T02:00:00Z", "2026-01-01T02:30:00Z"), // touches the previous
            span("2026-01-01T05:00:00Z", "2026-01-01T05:00:00Z"), // empty
            span("2026-01-01T07:00:00Z", "2026-01-01T06:00:00Z"), // reversed: empty
            span("2026-01-01T03:30:00Z", "2026-01-01T03:45:00Z"), // inside another
        ];
        assert_eq!(
            union(&spans),
            vec![
                span("2026-01-01T01:00:00Z", "2026-01-01T02:30:00Z"),
                span("2026-01-01T03:00:00Z", "2026-01-01T04:00:00Z"),
            ]
        );
        assert_eq!(measure(&spans), Duration::minutes(150));
        assert!(union(&[]).is_empty());
    }

    #[test]
    fn subtract_intersect_and_clip() {
        let a = [
            span("2026-01-01T00:00:00Z", "2026-01-01T10:00:00Z"),
            span("2026-01-01T12:00:00Z", "2026-01-01T14:00:00Z"),
        ];
        let b = [
            span("2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"),
            span("2026-01-01T09:00:00Z", "2026-01-01T13:00:00Z"),
        ];
        assert_eq!(
            subtract(&a, &b),
            vec![
                span("2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"),
                span("2026-01-01T02:00:00Z", "2026-01-01T09:00:00Z"),
                span("2026-01-01T13:00:00Z", "2026-01-01T14:00:00Z"),
            ]
        );
        assert_eq!(
            intersect(&a, &b),
            vec![
                span("2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"),
                span("2026-01-01T09:00:00Z", "2026-01-01T10:00:00Z"),
                span("2026-01-01T12:00:00Z", "2026-01-01T13:00:00Z"),
            ]
        );
        // Everything in a is either in b or in a − b, never both.
        assert_eq!(
            measure(&subtract(&a, &b)) + measure(&intersect(&a, &b)),
            measure(&a)
        );
        assert_eq!(
            clip(&a, span("2026-01-01T09:30:00Z", "2026-01-01T12:30:00Z")),
            vec![
                span("2026-01-01T09:30:00Z", "2026-01-01T10:00:00Z"),
                span("2026-01-01T12:00:00Z", "2026-01-01T12:30:00Z"),
            ]
        );
        assert!(subtract(&a, &a).is_empty());
        assert_eq!(subtract(&a, &[]), union(&a));
        assert!(intersect(&a, &[]).is_empty());
    }

    // --- periods --------------------------------------------------------------------------

    #[test]
    fn period_labels_are_local_dates() {
        // 2026-03-10 00:30 in Shanghai is still 2026-03-09 in UTC.
        let instant = t("2026-03-10T00:30:00+08:00");
        let labels: Vec<String> = PeriodKind::ALL
            .iter()
            .map(|&k| Period::containing(k, instant, SH).label)
            .collect();
        assert_eq!(labels, ["2026-03-10", "2026-03", "2026-Q1", "2026"]);
        let day = Period::containing(PeriodKind::Day, instant, SH);
        assert_eq!(day.start, t("2026-03-09T16:00:00Z"));
        assert_eq!(day.end, t("2026-03-10T16:00:00Z"));
        let quarters: Vec<String> = ["02-01", "05-01", "08-01", "11-01"]
            .iter()
            .map(|md| period(PeriodKind::Quarter, &format!("2026-{md}T00:00:00+08:00")).label)
            .collect();
        assert_eq!(quarters, ["2026-Q1", "2026-Q2", "2026-Q3", "2026-Q4"]);
    }

    #[test]
    fn next_period_follows_without_gap() {
        let dec = period(PeriodKind::Month, "2025-12-15T00:00:00+08:00");
        let jan = dec.next(SH).expect("not the end of time");
        assert_eq!(jan.label, "2026-01");
        assert_eq!(jan.start, dec.end);
        let q4 = period(PeriodKind::Quarter, "2025-11-15T00:00:00+08:00");
        assert_eq!(q4.next(SH).map(|p| p.label), Some("2026-Q1".to_owned()));
        assert_eq!(
            year_2026()
                .next(SH)
                .map(|p| (p.label.clone(), p.duration())),
            Some(("2027".to_owned(), Duration::days(365)))
        );
        let last = Period::containing(PeriodKind::Year, DateTime::<Utc>::MAX_UTC, chrono_tz::UTC);
        assert_eq!(last.next(chrono_tz::UTC), None);
    }

    #[test]
    fn berlin_days_around_daylight_saving() {
        // 2026-03-29: clocks go from 02:00 to 03:00; 2026-10-25: from 03:00 back to 02:00.
        let spring = Period::containing(PeriodKind::Day, t("2026-03-29T12:00:00+02:00"), BERLIN);
        assert_eq!(
            (spring.label.as_str(), spring.duration()),
            ("2026-03-29", Duration::hours(23))
        );
        let autumn = Period::containing(PeriodKind::Day, t("2026-10-25T12:00:00+01:00"), BERLIN);
        assert_eq!(
            (autumn.label.as_str(), autumn.duration()),
            ("2026-10-25", Duration::hours(25))
        );
        // An outage from 23:00 on the 24th to 23:00 on the 25th (local) lasts 25 h:
        // 1 h on the 24th, and 24 h on the 25th, a 25 h day of which it misses the last hour.
        let outage = span("2026-10-24T23:00:00+02:00", "2026-10-25T23:00:00+01:00");
        let days = periods_overlapping(PeriodKind::Day, outage, BERLIN);
        let split: Vec<(String, Duration)> = days
            .iter()
            .map(|d| (d.label.clone(), measure(&clip(&[outage], d.span()))))
            .collect();
        assert_eq!(
            split,
            [
                ("2026-10-24".to_owned(), Duration::hours(1)),
                ("2026-10-25".to_owned(), Duration::hours(24)),
            ]
        );
    }

    #[test]
    fn periods_overlapping_a_span() {
        let s = span("2026-01-30T12:00:00+08:00", "2026-03-01T00:00:00+08:00");
        let months: Vec<String> = periods_overlapping(PeriodKind::Month, s, SH)
            .into_iter()
            .map(|p| p.label)
            .collect();
        // Ends exactly where March begins: March is not touched.
        assert_eq!(months, ["2026-01", "2026-02"]);
        assert!(periods_overlapping(PeriodKind::Month, Span::new(s.end, s.end), SH).is_empty());
    }

    // --- the limits of DOMAIN.md ----------------------------------------------------------

    #[test]
    fn builtin_policy_has_the_domain_limits() {
        let policy = Policy::builtin();
        for (level, failures, outage, target) in domain_table() {
            assert_eq!(policy.annual_failure_limit(level), failures, "{level}");
            assert_eq!(policy.annual_outage_limit(level), outage, "{level}");
            assert_eq!(policy.availability_target(level), target, "{level}");
        }
        assert_eq!(policy.budget_risk_threshold(), 0.8);
    }

    #[test]
    fn failures_at_the_limit_are_within_it_one_more_breaches() {
        let policy = Policy::builtin();
        let year = year_2026();
        for (level, limit, _, _) in domain_table() {
            // One second down per fault, one fault a day: the outage stays far below every
            // budget (AAA: 0.8 × 3153.6 s = 2522.88 s), so failures alone decide.
            let faults: Vec<FaultFacts> = (0..=limit)
                .map(|i| fault_at(year.start + Duration::days(i64::from(i)), secs(1)))
                .collect();
            let at_limit = figures_with(
                &policy,
                level,
                &faults[..limit as usize],
                &[],
                &year,
                year.end,
            );
            assert_eq!(at_limit.failures, limit);
            assert_eq!(at_limit.failure_limit, Some(limit));
            assert_eq!(at_limit.status, Status::AtRisk, "{level}: {limit} failures");
            assert!(at_limit.breaches.is_empty(), "{level}");

            let over = figures_with(&policy, level, &faults, &[], &year, year.end);
            assert_eq!(over.failures, limit + 1);
            assert_eq!(
                over.status,
                Status::Breached,
                "{level}: {} failures",
                limit + 1
            );
            assert_eq!(over.breaches, [Breach::Failures]);
        }
    }

    #[test]
    fn failures_turn_at_risk_at_the_threshold() {
        let policy = Policy::builtin();
        let year = year_2026();
        // Threshold 0.8 (default): at risk from 0.8 × limit failures, rounded up:
        // AAA 3.2 → 4, AA 4.8 → 5, A 6.4 → 7, ordinary 8.0 → 8.
        let expected = [
            (AssuranceLevel::Aaa, 4),
            (AssuranceLevel::Aa, 5),
            (AssuranceLevel::A, 7),
            (AssuranceLevel::Ordinary, 8),
        ];
        let threshold_ppm = (policy.budget_risk_threshold() * 1e6).round() as u64;
        for (level, first_at_risk) in expected {
            let limit = u64::from(policy.annual_failure_limit(level));
            // ceil(limit × threshold), from the policy, in integers.
            assert_eq!(
                (limit * threshold_ppm).div_ceil(1_000_000),
                first_at_risk,
                "{level}"
            );
            let faults: Vec<FaultFacts> = (0..first_at_risk)
                .map(|i| fault_at(year.start + Duration::days(i as i64), secs(1)))
                .collect();
            let n = first_at_risk as usize;
            let below = figures_with(&policy, level, &faults[..n - 1], &[], &year, year.end);
            assert_eq!(below.status, Status::Ok, "{level}: {} failures", n - 1);
            let at = figures_with(&policy, level, &faults, &[], &year, year.end);
            assert_eq!(at.status, Status::AtRisk, "{level}: {n} failures");
        }
    }

    #[test]
    fn outage_at_the_limit_is_within_it_one_second_more_breaches() {
        let year = year_2026();
        // With the default targets the availability budget of the year is smaller than the
        // outage limit at every level (AAA 52 min 33.6 s < 6 h, A 12 h 15 min 50.4 s < 24 h,
        // ordinary 24 h 31 min 40.8 s < 48 h): at the outage limit the circuit has already
        // breached availability, but not the outage limit.
        let builtin = Policy::builtin();
        for (level, _, limit, _) in domain_table() {
            let at = one_outage(&builtin, level, &year, limit);
            assert_eq!(at.outage_seconds, limit.num_seconds() as u64);
            assert_eq!(at.outage_limit_seconds, Some(limit.num_seconds() as u64));
            assert_eq!(at.breaches, [Breach::Availability], "{level} at {limit}");
            let over = one_outage(&builtin, level, &year, limit + secs(1));
            assert_eq!(
                over.breaches,
                [Breach::Outage, Breach::Availability],
                "{level}"
            );
        }
        // With 99 % targets (budget 0.01 × 365 d = 87.6 h, at risk from 70.08 h, more than
        // every outage limit) the outage limit alone decides the status.
        let relaxed = policy_with_availability("0.99");
        for (level, _, limit, _) in domain_table() {
            let at = one_outage(&relaxed, level, &year, limit);
            assert_eq!(
                (at.status, at.breaches.as_slice()),
                (Status::AtRisk, &[][..]),
                "{level}"
            );
            let over = one_outage(&relaxed, level, &year, limit + secs(1));
            assert_eq!(
                (over.status, over.breaches.as_slice()),
                (Status::Breached, &[Breach::Outage][..])
            );
        }
    }

    #[test]
    fn outage_turns_at_risk_at_the_threshold() {
        let year = year_2026();
        let relaxed = policy_with_availability("0.99");
        // 0.8 × limit: AAA 6 h → 4 h 48 min (17 280 s), AA 12 h → 9 h 36 min (34 560 s),
        // A 24 h → 19 h 12 min (69 120 s), ordinary 48 h → 38 h 24 min (138 240 s).
        let expected = [
            (AssuranceLevel::Aaa, 17_280),
            (AssuranceLevel::Aa, 34_560),
            (AssuranceLevel::A, 69_120),
            (AssuranceLevel::Ordinary, 138_240),
        ];
        let threshold_ppm = (relaxed.budget_risk_threshold() * 1e6).round() as i64;
        for (level, first_at_risk) in expected {
            let limit = relaxed.annual_outage_limit(level).num_seconds();
            assert_eq!((limit * threshold_ppm).div_euclid(1_000_000), first_at_risk);
            let below = one_outage(&relaxed, level, &year, secs(first_at_risk - 1));
            assert_eq!(below.status, Status::Ok, "{level}");
            let at = one_outage(&relaxed, level, &year, secs(first_at_risk));
            assert_eq!(at.status, Status::AtRisk, "{level}");
        }
    }

    #[test]
    fn availability_targets_as_yearly_budgets() {
        let policy = Policy::builtin();
        let year = year_2026();
        assert_eq!(year.duration(), Duration::days(365));
        // (1 − target) × 365 d = (1 − target) × 31 536 000 s:
        //   AAA, AA  0.0001 × 31 536 000 =  3 153.6 s = 52 min 33.6 s, at risk from 2 522.88 s
        //   A        0.0014 × 31 536 000 = 44 150.4 s = 12 h 15 min 50.4 s, at risk from 35 320.32 s
        //   ordinary 0.0028 × 31 536 000 = 88 300.8 s = 24 h 31 min 40.8 s, at risk from 70 640.64 s
        // The at-risk points are below 0.8 × the outage limits (17 280 s and more), so the
        // availability budget alone decides.
        let expected = [
            (AssuranceLevel::Aaa, 3_153_600, 2_522),
            (AssuranceLevel::Aa, 3_153_600, 2_522),
            (AssuranceLevel::A, 44_150_400, 35_320),
            (AssuranceLevel::Ordinary, 88_300_800, 70_640),
        ];
        for (level, budget_ms, last_ok) in expected {
            let limits = Limits::for_period(&policy, level, &year);
            let budget = Duration::milliseconds(budget_ms);
            assert_eq!(limits.availability_budget, Some(budget), "{level}");
            assert_eq!(
                one_outage(&policy, level, &year, secs(last_ok)).status,
                Status::Ok
            );
            let risk = one_outage(&policy, level, &year, secs(last_ok + 1));
            assert_eq!(risk.status, Status::AtRisk, "{level}");
            // Exactly the budget, to the millisecond, is within it.
            let at = one_outage(&policy, level, &year, budget);
            assert_eq!(at.status, Status::AtRisk, "{level}");
            assert_eq!(
                at.outage_seconds,
                (budget_ms as u64).div_ceil(1000),
                "rounded up"
            );
            let over = one_outage(&policy, level, &year, budget + Duration::milliseconds(1));
            assert_eq!(
                (over.status, over.breaches),
                (Status::Breached, vec![Breach::Availability])
            );
            assert_eq!(
                at.availability_target,
                Some(policy.availability_target(level))
            );
        }
        // A leap year is a day longer: 0.0001 × 31 622 400 s = 3 162.24 s.
        let y2028 = period(PeriodKind::Year, "2028-06-01T00:00:00+08:00");
        let aaa = Limits::for_period(&policy, AssuranceLevel::Aaa, &y2028);
        assert_eq!(
            aaa.availability_budget,
            Some(Duration::milliseconds(3_162_240))
        );
    }

    /// An AAA circuit down since `since`, its outage closed at `as_of`.
    fn aaa_down(faults: &[FaultFacts]) -> CircuitFacts<'_> {
        CircuitFacts {
            circuit_id: "C-1",
            customer_id: None,
            assurance_level: AssuranceLevel::Aaa,
            faults,
            excluded: &[],
            open_fault: true,
        }
    }

    fn down_since(since: DateTime<Utc>, as_of: DateTime<Utc>) -> Vec<FaultFacts> {
        vec![FaultFacts {
            started_at: since,
            down: vec![Span::new(since, as_of)],
            counted: true,
        }]
    }

    #[test]
    fn the_next_crossing_of_an_ongoing_outage_is_exact() {
        let policy = Policy::builtin();
        let year = year_2026();
        let since = t("2026-04-02T09:00:00+08:00");
        let crossing = |period: &Period, as_of: DateTime<Utc>| {
            next_crossing(&policy, &aaa_down(&down_since(since, as_of)), period, as_of)
        };
        // At risk from 2522.88 s, breached past 3153.6 s: 09:42:03 and 09:52:34.
        assert_eq!(crossing(&year, since), Some(t("2026-04-02T09:42:03+08:00")));
        // 100.5 s down: 2422.38 s to go, rounded up to 2423 s, so that the figures then
        // (2523.5 s) are at risk. Counting from whole seconds (101 s used, 2422 s to go)
        // would land at 2522.5 s, still ok, and then skip the at-risk point altogether.
        let as_of = since + Duration::milliseconds(100_500);
        let due = crossing(&year, as_of).expect("a crossing");
        assert_eq!(due, as_of + secs(2423));
        let then = down_since(since, due);
        assert_eq!(
            circuit_figures(&policy, &aaa_down(&then), &year, due).status,
            Status::AtRisk
        );
        // 630.1 s more to pass 3153.6 s: 631 s.
        assert_eq!(crossing(&year, due), Some(due + secs(631)));
        // Past the budget, the outage limit is next: 0.8 × 6 h = 4 h 48 min (13:48).
        assert_eq!(
            crossing(&year, since + secs(4000)),
            Some(t("2026-04-02T13:48:00+08:00"))
        );
        // Past every limit: no further crossing this year.
        assert_eq!(crossing(&year, since + Duration::hours(7)), None);

        // Down from 23:50 on New Year's Eve: 2027 counts from its midnight, with its own
        // budget (365 days: 3153.6 s again), so its first crossing is 00:42:03; a month
        // has no limit and no crossing.
        let eve = t("2026-12-31T23:50:00+08:00");
        let ny = down_since(eve, eve);
        let y2027 = year.next(SH).expect("2027");
        assert_eq!(
            next_crossing(&policy, &aaa_down(&ny), &y2027, eve),
            Some(t("2027-01-01T00:42:03+08:00"))
        );
        let january = period(PeriodKind::Month, "2027-01-15T00:00:00+08:00");
        assert_eq!(next_crossing(&policy, &aaa_down(&ny), &january, eve), None);
    }

    #[test]
    fn months_are_counted_but_not_judged() {
        let policy = Policy::builtin();
        let march = period(PeriodKind::Month, "2026-03-15T00:00:00+08:00");
        // The targets are yearly: a month has no limit of its own. (Judged monthly, AAA's
        // 99.99 % would allow 0.0001 × 2 678 400 s = 267.84 s in March.)
        let limits = Limits::for_period(&policy, AssuranceLevel::Aaa, &march);
        assert_eq!(limits.availability_budget, None);
        assert_eq!(limits.availability_target, None);
        assert_eq!((limits.failures, limits.outage), (None, None));
        assert_eq!(
            availability_budget(0.9999, march.duration()),
            Duration::milliseconds(267_840)
        );

        // Twelve one-second failures in March: no failure limit applies to a month.
        let faults: Vec<FaultFacts> = (0..12)
            .map(|i| fault_at(march.start + Duration::days(i), secs(1)))
            .collect();
        let f = figures_with(
            &policy,
            AssuranceLevel::Aaa,
            &faults,
            &[],
            &march,
            march.end,
        );
        assert_eq!(
            (f.failures, f.failure_limit, f.outage_limit_seconds),
            (12, None, None)
        );
        assert_eq!(f.status, Status::Ok);
        let f = one_outage(&policy, AssuranceLevel::Aaa, &march, secs(268));
        assert_eq!((f.status, f.breaches), (Status::Ok, vec![]));
        assert_eq!(f.outage_seconds, 268);
    }

    // --- the counting rules ---------------------------------------------------------------

    #[test]
    fn maintenance_and_uncounted_faults() {
        let policy = Policy::builtin();
        let year = year_2026();
        let window = span("2026-05-01T01:00:00+08:00", "2026-05-01T05:00:00+08:00");
        let faults = [
            // Wholly inside the notified window: no failure, no outage, 1 h maintenance.
            FaultFacts {
                started_at: t("2026-05-01T02:00:00+08:00"),
                down: vec![span(
                    "2026-05-01T02:00:00+08:00",
                    "2026-05-01T03:00:00+08:00",
                )],
                counted: true,
            },
            // Overruns the window by 30 min: a failure, 30 min outage, 1 h maintenance.
            FaultFacts {
                started_at: t("2026-05-01T04:00:00+08:00"),
                down: vec![span(
                    "2026-05-01T04:00:00+08:00",
                    "2026-05-01T05:30:00+08:00",
                )],
                counted: true,
            },
            // Customer-caused: neither failure nor outage.
            FaultFacts {
                started_at: t("2026-06-01T00:00:00+08:00"),
                down: vec![span(
                    "2026-06-01T00:00:00+08:00",
                    "2026-06-01T10:00:00+08:00",
                )],
                counted: false,
            },
        ];
        let f = figures_with(
            &policy,
            AssuranceLevel::A,
            &faults,
            &[window],
            &year,
            year.end,
        );
        assert_eq!(f.failures, 1);
        assert_eq!(f.outage_seconds, 1800);
        assert_eq!(f.maintenance_seconds, 2 * 3600);
        assert!(f.is_final);
    }

    #[test]
    fn a_fault_counts_in_the_period_it_started_and_its_outage_where_it_falls() {
        let policy = Policy::builtin();
        let year = year_2026();
        let faults = [FaultFacts {
            started_at: t("2025-12-31T22:00:00+08:00"),
            down: vec![span(
                "2025-12-31T22:00:00+08:00",
                "2026-01-01T03:00:00+08:00",
            )],
            counted: true,
        }];
        let f = figures_with(
            &policy,
            AssuranceLevel::Ordinary,
            &faults,
            &[],
            &year,
            year.end,
        );
        assert_eq!((f.failures, f.outage_seconds), (0, 3 * 3600));
        let y2025 = period(PeriodKind::Year, "2025-06-01T00:00:00+08:00");
        let f = figures_with(
            &policy,
            AssuranceLevel::Ordinary,
            &faults,
            &[],
            &y2025,
            year.end,
        );
        assert_eq!((f.failures, f.outage_seconds), (1, 2 * 3600));
    }

    #[test]
    fn figures_are_the_same_apart_from_as_of_only_when_every_other_field_is() {
        let policy = Policy::builtin();
        let year = period(PeriodKind::Year, "2026-03-10T12:00:00+08:00");
        let faults = [FaultFacts {
            started_at: t("2026-03-10T09:00:00+08:00"),
            down: vec![span(
                "2026-03-10T09:00:00+08:00",
                "2026-03-10T11:00:00+08:00",
            )],
            counted: true,
        }];
        let circuit = CircuitFacts {
            circuit_id: "C-1",
            customer_id: Some("K-1"),
            assurance_level: AssuranceLevel::Aaa,
            faults: &faults,
            excluded: &[],
            open_fault: false,
        };
        let noon = circuit_figures(&policy, &circuit, &year, t("2026-03-10T12:00:00+08:00"));
        let mut later = noon.clone();
        later.as_of += Duration::hours(1);
        assert!(noon.same_apart_from_as_of(&later));
        // Availability grows with the time elapsed: not the same.
        let next_day = circuit_figures(&policy, &circuit, &year, t("2026-03-11T13:00:00+08:00"));
        assert!(!noon.same_apart_from_as_of(&next_day));
        let changes: [fn(&mut CircuitFigures); 6] = [
            |f| f.failures += 1,
            |f| f.outage_seconds += 1,
            |f| f.customer_id = None,
            |f| f.open_fault = !f.open_fault,
            |f| f.is_final = !f.is_final,
            |f| f.breaches.push(Breach::Outage),
        ];
        for change in changes {
            let mut other = noon.clone();
            change(&mut other);
            assert!(!noon.same_apart_from_as_of(&other), "{other:?}");
        }
    }

    #[test]
    fn figures_read_back_from_their_record_are_the_figures_written() {
        // Availabilities that serde_json's default float parser reads back one unit in the
        // last place off: a circuit restored from its changelog then saw figures that had
        // not changed as changed, and recorded them again after a rebalance (the runtime
        // tests' run then differed from the replay in a record's `asOf`).
        let policy = Policy::builtin();
        let year = period(PeriodKind::Year, "2026-03-10T12:00:00+08:00");
        let circuit = CircuitFacts {
            circuit_id: "C-1",
            customer_id: Some("K-1"),
            assurance_level: AssuranceLevel::Aa,
            faults: &[],
            excluded: &[],
            open_fault: false,
        };
        let written = circuit_figures(&policy, &circuit, &year, t("2026-03-10T12:00:00+08:00"));
        for availability in [0.9854699689466007, 0.9390918438926941, 0.9150462962962963] {
            let figures = CircuitFigures {
                availability,
                ..written.clone()
            };
            let json = serde_json::to_vec(&figures).expect("figures serialize");
            let read: CircuitFigures = serde_json::from_slice(&json).expect("figures parse");
            assert_eq!(read.availability.to_bits(), availability.to_bits());
            assert!(read.same_apart_from_as_of(&figures));
        }
    }

    #[test]
    fn an_ongoing_fault_counts_up_to_as_of() {
        let policy = Policy::builtin();
        let day = period(PeriodKind::Day, "2026-03-10T12:00:00+08:00");
        let as_of = t("2026-03-10T12:00:00+08:00");
        // The caller closed the open fault at as_of; later facts would be ignored anyway.
        let faults = [FaultFacts {
            started_at: t("2026-03-10T09:00:00+08:00"),
            down: vec![span(
                "2026-03-10T09:00:00+08:00",
                "2026-03-10T23:00:00+08:00",
            )],
            counted: true,
        }];
        let circuit = CircuitFacts {
            circuit_id: "C-1",
            customer_id: None,
            assurance_level: AssuranceLevel::Ordinary,
            faults: &faults,
            excluded: &[],
            open_fault: true,
        };
        let f = circuit_figures(&policy, &circuit, &day, as_of);
        assert_eq!((f.failures, f.outage_seconds), (1, 3 * 3600));
        // 3 h down of 12 h elapsed.
        assert_eq!(f.availability, 0.75);
        assert!(f.open_fault && !f.is_final);
        // A day has no limit of its own (the targets are yearly).
        assert_eq!((f.status, f.breaches), (Status::Ok, vec![]));
        // A fault that begins at as_of is a failure at once, with no outage yet.
        let starting = [FaultFacts {
            started_at: as_of,
            down: vec![Span::new(as_of, as_of)],
            counted: true,
        }];
        let f = figures_with(
            &policy,
            AssuranceLevel::Ordinary,
            &starting,
            &[],
            &day,
            as_of,
        );
        assert_eq!((f.failures, f.outage_seconds, f.availability), (1, 0, 1.0));
    }

    #[test]
    fn figures_over_any_span_count_as_the_periods_do() {
        let policy = Policy::builtin();
        let rules = Rules::of(&policy, AssuranceLevel::Aaa);
        // Down 23:30-01:30 across the night of 10/11 March, and 1 h on 12 March.
        let faults = [
            fault_at(t("2026-03-10T23:30:00+08:00"), Duration::hours(2)),
            fault_at(t("2026-03-12T09:00:00+08:00"), Duration::hours(1)),
        ];
        let circuit = CircuitFacts {
            circuit_id: "C-1",
            customer_id: Some("K-1"),
            assurance_level: AssuranceLevel::Aaa,
            faults: &faults,
            excluded: &[],
            open_fault: false,
        };
        let as_of = t("2026-04-01T00:00:00+08:00");
        // A span that is a period is that period: label, limits, status and all.
        for (kind, local) in [
            (PeriodKind::Day, "2026-03-11T12:00:00+08:00"),
            (PeriodKind::Month, "2026-03-11T12:00:00+08:00"),
            (PeriodKind::Quarter, "2026-03-11T12:00:00+08:00"),
            (PeriodKind::Year, "2026-03-11T12:00:00+08:00"),
        ] {
            let p = period(kind, local);
            let over = figures_over(&rules, &circuit, p.span(), as_of);
            assert_eq!(over, circuit_figures(&policy, &circuit, &p, as_of), "{p}");
            assert_eq!(label_kind(&over.period), Some(kind));
        }
        let year = figures_over(&rules, &circuit, year_2026().span(), as_of);
        assert_eq!(year.failure_limit, Some(4));
        assert_eq!(
            (year.status, year.breaches),
            (Status::Breached, vec![Breach::Availability])
        );
        // An hour: 00:00-01:00 on 11 March is wholly down; no failure started in it.
        let hour = span("2026-03-11T00:00:00+08:00", "2026-03-11T01:00:00+08:00");
        let f = figures_over(&rules, &circuit, hour, as_of);
        assert_eq!(f.period, "2026-03-10T16:00:00Z/2026-03-10T17:00:00Z");
        assert_eq!(label_kind(&f.period), None);
        assert_eq!(
            (f.failures, f.outage_seconds, f.availability),
            (0, 3600, 0.0)
        );
        assert_eq!((f.failure_limit, f.availability_target), (None, None));
        assert_eq!((f.status, f.is_final), (Status::Ok, true));
        // Three days, 10-12 March: both failures, 3 h down, whatever the day boundaries;
        // no limit for a span that is not a year, even one past every annual budget.
        let three = span("2026-03-10T00:00:00+08:00", "2026-03-13T00:00:00+08:00");
        let f = figures_over(&rules, &circuit, three, as_of);
        assert_eq!((f.failures, f.outage_seconds), (2, 3 * 3600));
        assert_eq!((f.status, f.breaches), (Status::Ok, vec![]));
        // Over a span not over yet, as of its middle: the elapsed part.
        let f = figures_over(&rules, &circuit, three, t("2026-03-11T00:30:00+08:00"));
        assert_eq!((f.failures, f.outage_seconds, f.is_final), (1, 3600, false));
    }

    #[test]
    fn labels_name_their_kind() {
        assert_eq!(label_kind("2026"), Some(PeriodKind::Year));
        assert_eq!(label_kind("2026-Q3"), Some(PeriodKind::Quarter));
        assert_eq!(label_kind("2026-03"), Some(PeriodKind::Month));
        assert_eq!(label_kind("2026-03-10"), Some(PeriodKind::Day));
        assert_eq!(
            label_kind("2026-03-10T00:00:00Z/2026-03-11T00:00:00Z"),
            None
        );
        // Berlin's day of the spring change is 23 h long, and still a day.
        let d = Period::containing(PeriodKind::Day, t("2026-03-29T12:00:00+02:00"), BERLIN);
        assert_eq!(
            period_of_span(d.span(), BERLIN).map(|p| p.label),
            Some("2026-03-29".into())
        );
        assert_eq!(period_of_span(d.span(), SH), None);
    }

    #[test]
    fn nothing_elapsed_is_fully_available_and_final_at_the_end() {
        let policy = Policy::builtin();
        let year = year_2026();
        let faults = [fault_at(year.start + Duration::days(2), Duration::hours(1))];
        let before = figures_with(
            &policy,
            AssuranceLevel::Aaa,
            &faults,
            &[],
            &year,
            year.start - secs(1),
        );
        assert_eq!(
            (before.failures, before.outage_seconds, before.availability),
            (0, 0, 1.0)
        );
        assert_eq!(before.status, Status::Ok);
        assert!(!before.is_final);
        assert!(
            !figures_with(
                &policy,
                AssuranceLevel::Aaa,
                &faults,
                &[],
                &year,
                year.end - secs(1)
            )
            .is_final
        );
        assert!(figures_with(&policy, AssuranceLevel::Aaa, &faults, &[], &year, year.end).is_final);
    }

    #[test]
    fn budget_status_lists_every_breach() {
        let limits = Limits {
            failures: Some(4),
            outage: Some(Duration::hours(6)),
            availability_target: Some(0.9999),
            availability_budget: Some(Duration::minutes(50)),
            risk_threshold: 0.8,
        };
        let v = budget_status(5, Duration::hours(7), &limits);
        assert_eq!(v.status, Status::Breached);
        assert_eq!(
            v.breaches,
            [Breach::Failures, Breach::Outage, Breach::Availability]
        );
        assert_eq!(
            budget_status(0, Duration::zero(), &limits).status,
            Status::Ok
        );
        // 40 min is 0.8 × 50 min.
        assert_eq!(
            budget_status(0, Duration::minutes(40), &limits).status,
            Status::AtRisk
        );
        // A 100 % target leaves no budget: nothing down is ok, one second is a breach.
        let strict = Limits {
            availability_budget: Some(availability_budget(1.0, Duration::days(365))),
            ..limits
        };
        assert_eq!(strict.availability_budget, Some(Duration::zero()));
        assert_eq!(
            budget_status(0, Duration::zero(), &strict).status,
            Status::Ok
        );
        assert_eq!(budget_status(0, secs(1), &strict).status, Status::Breached);
    }

    // --- records and warnings -------------------------------------------------------------

    fn validator(name: &str) -> jsonschema::Validator {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("topics/schemas")
            .join(name);
        let text = std::fs::read_to_string(&path).expect("schema file");
        let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
        jsonschema::validator_for(&schema).expect("schema compiles")
    }

    fn assert_valid(v: &jsonschema::Validator, instance: &Value) {
        let errors: Vec<String> = v.iter_errors(instance).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{instance}: {errors:?}");
    }

    #[test]
    fn figures_serialise_to_the_kpi_circuit_schema() {
        let policy = Policy::builtin();
        let schema = validator("kpi-circuit.schema.json");
        let year = year_2026();
        let f = one_outage(&policy, AssuranceLevel::Aaa, &year, Duration::hours(7));
        let json = serde_json::to_value(&f).expect("serialises");
        let keys: Vec<&str> = json
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = [
            "circuitId",
            "customerId",
            "assuranceLevel",
            "period",
            "periodStart",
            "periodEnd",
            "asOf",
            "failures",
            "failureLimit",
            "outageSeconds",
            "outageLimitSeconds",
            "maintenanceSeconds",
            "availability",
            "availabilityTarget",
            "status",
            "breaches",
            "openFault",
            "final",
        ];
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(json["period"], "2026");
        assert_eq!(json["periodStart"], "2025-12-31T16:00:00Z");
        assert_eq!(json["assuranceLevel"], "AAA");
        assert_eq!(json["status"], "breached");
        assert_eq!(
            json["breaches"],
            serde_json::json!(["outage", "availability"])
        );
        assert_eq!(json["final"], true);
        assert_valid(&schema, &json);
        let back: CircuitFigures = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, f);

        let march = period(PeriodKind::Month, "2026-03-15T00:00:00+08:00");
        let f = one_outage(&policy, AssuranceLevel::A, &march, secs(10));
        let json = serde_json::to_value(&f).expect("serialises");
        assert_eq!(json["failureLimit"], Value::Null);
        assert_eq!(json["outageLimitSeconds"], Value::Null);
        assert_valid(&schema, &json);
    }

    fn with_status(status: Status, breaches: &[Breach]) -> CircuitFigures {
        let policy = Policy::builtin();
        let mut f = one_outage(&policy, AssuranceLevel::Aaa, &year_2026(), Duration::zero());
        f.status = status;
        f.breaches = breaches.to_vec();
        f
    }

    #[test]
    fn warnings_when_the_standing_gets_worse() {
        use Status::*;
        let ok = with_status(Ok, &[]);
        let risk = with_status(AtRisk, &[]);
        let avail = with_status(Breached, &[Breach::Availability]);
        let both = with_status(Breached, &[Breach::Outage, Breach::Availability]);
        let steps = |old: Option<&CircuitFigures>, new: &CircuitFigures| {
            warning_between(old, new).map(|w| (w.from, w.to, w.breaches))
        };
        assert_eq!(steps(None, &ok), None);
        assert_eq!(steps(None, &risk), Some((Ok, AtRisk, vec![])));
        assert_eq!(steps(Some(&ok), &ok), None);
        assert_eq!(steps(Some(&ok), &risk), Some((Ok, AtRisk, vec![])));
        assert_eq!(steps(Some(&risk), &risk), None);
        assert_eq!(
            steps(Some(&risk), &avail),
            Some((AtRisk, Breached, vec![Breach::Availability]))
        );
        assert_eq!(steps(Some(&ok), &avail).map(|s| s.0), Some(Ok));
        assert_eq!(steps(Some(&avail), &avail), None);
        // One more limit passed is news.
        assert_eq!(
            steps(Some(&avail), &both),
            Some((
                Breached,
                Breached,
                vec![Breach::Outage, Breach::Availability]
            ))
        );
        // Better is no news.
        assert_eq!(steps(Some(&both), &avail), None);
        assert_eq!(steps(Some(&avail), &risk), None);
        assert_eq!(steps(Some(&risk), &ok), None);
        // Another period's figures are no history.
        let mut other = avail.clone();
        other.period = "2025".to_owned();
        assert_eq!(steps(Some(&other), &avail).map(|s| s.0), Some(Ok));
    }

    #[test]
    fn warnings_serialise_to_their_schema() {
        let schema = validator("risk-warning.schema.json");
        let new = with_status(Status::Breached, &[Breach::Availability]);
        let warning = warning_between(None, &new).expect("a warning");
        let json = serde_json::to_value(&warning).expect("serialises");
        assert_eq!(json["circuitId"], "C-1");
        assert_eq!(json["from"], "ok");
        assert_eq!(json["to"], "breached");
        assert_valid(&schema, &json);
        for label in ["2026-Q4", "2026-03-10", "2026-12"] {
            let mut json = json.clone();
            json["period"] = Value::from(label);
            assert_valid(&schema, &json);
        }
        let mut bad = json.clone();
        bad["to"] = Value::from("ok");
        assert!(!schema.is_valid(&bad));
    }
}
