//! The working-day calendar and the local statistics periods.
//!
//! Everything here is local time in the policy's time zone (`Asia/Shanghai` by default):
//! a "working day" or a "month" is a date of the local calendar, turned into UTC instants
//! with `chrono-tz`. Local midnights that a daylight-saving change makes ambiguous or
//! skips are handled explicitly (see [`local_midnight`]), so periods tile the time line
//! without gap or overlap in every zone.
//!
//! A date is a working day when it is a configured make-up working day, or else when it
//! is neither a holiday nor a weekend day. DOMAIN.md leaves holidays and make-up days to
//! the operator; the built-in calendar has weekends (Saturday, Sunday) only.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// A calendar that cannot be built as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// Every day of the week is a weekend day: no date could ever be a working day
    /// except the make-up days, and working-day arithmetic would never end.
    #[error("every day of the week is a weekend day; at least one must be a working day")]
    NoWorkingWeekday,
    /// A make-up working day that is not on a weekend day is working already.
    #[error("{date} is a {weekday:?}, not a weekend day; make-up working days are weekend dates")]
    MakeUpNotOnWeekend { date: NaiveDate, weekday: Weekday },
    /// A date listed both as a holiday and as a make-up working day.
    #[error("{0} is listed both as a holiday and as a make-up working day")]
    HolidayAndMakeUp(NaiveDate),
}

/// Which dates are working days, in local time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    /// Weekend days, indexed by `Weekday::num_days_from_monday`.
    weekend: [bool; 7],
    holidays: BTreeSet<NaiveDate>,
    make_up_days: BTreeSet<NaiveDate>,
}

impl Default for Calendar {
    /// Saturday and Sunday off, no holidays: the built-in calendar.
    fn default() -> Self {
        Calendar {
            weekend: weekend_mask(&[Weekday::Sat, Weekday::Sun]),
            holidays: BTreeSet::new(),
            make_up_days: BTreeSet::new(),
        }
    }
}

fn weekend_mask(days: &[Weekday]) -> [bool; 7] {
    let mut mask = [false; 7];
    for d in days {
        mask[d.num_days_from_monday() as usize] = true;
    }
    mask
}

impl Calendar {
    /// A calendar with the given weekend days, holidays (non-working dates) and make-up
    /// working days (weekend dates that are worked, as in the operator's holiday calendar).
    ///
    /// # Errors
    /// [`CalendarError`] when no weekday is a working day, when a make-up day is not on a
    /// weekend day, or when a date is both a holiday and a make-up day.
    pub fn new(
        weekend: &[Weekday],
        holidays: impl IntoIterator<Item = NaiveDate>,
        make_up_days: impl IntoIterator<Item = NaiveDate>,
    ) -> Result<Calendar, CalendarError> {
        let weekend = weekend_mask(weekend);
        if weekend.iter().all(|&w| w) {
            return Err(CalendarError::NoWorkingWeekday);
        }
        let holidays: BTreeSet<NaiveDate> = holidays.into_iter().collect();
        let make_up_days: BTreeSet<NaiveDate> = make_up_days.into_iter().collect();
        for &date in &make_up_days {
            let weekday = date.weekday();
            if !weekend[weekday.num_days_from_monday() as usize] {
                return Err(CalendarError::MakeUpNotOnWeekend { date, weekday });
            }
            if holidays.contains(&date) {
                return Err(CalendarError::HolidayAndMakeUp(date));
            }
        }
        Ok(Calendar {
            weekend,
            holidays,
            make_up_days,
        })
    }

    /// Is `weekday` a weekend day of this calendar?
    pub fn is_weekend(&self, weekday: Weekday) -> bool {
        self.weekend[weekday.num_days_from_monday() as usize]
    }

    /// The configured holidays, in date order.
    pub fn holidays(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        self.holidays.iter().copied()
    }

    /// The configured make-up working days, in date order.
    pub fn make_up_days(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        self.make_up_days.iter().copied()
    }

    /// Is the local date a working day? Make-up days are; otherwise holidays and weekend
    /// days are not, and every other date is.
    pub fn is_working_day(&self, date: NaiveDate) -> bool {
        if self.make_up_days.contains(&date) {
            return true;
        }
        !self.holidays.contains(&date) && !self.is_weekend(date.weekday())
    }

    /// The deadline "within `n` working days" of `instant`: the end of the `n`-th working
    /// day after the instant's local date, as the UTC instant of the following local
    /// midnight (the deadline is met by anything strictly before it).
    ///
    /// The instant's own date never counts, working day or not: a report due "within 2
    /// working days" of a restoration on Friday 15:00 is due by the end of Tuesday
    /// (Wednesday 00:00 local), with no holidays. With `n = 0` it is the end of the
    /// instant's own local day. Saturates at the end of chrono's date range.
    pub fn add_working_days(&self, instant: DateTime<Utc>, n: u32, tz: Tz) -> DateTime<Utc> {
        let mut date = instant.with_timezone(&tz).date_naive();
        let mut left = n;
        while left > 0 {
            match date.succ_opt() {
                Some(next) => date = next,
                None => return DateTime::<Utc>::MAX_UTC,
            }
            if self.is_working_day(date) {
                left -= 1;
            }
        }
        match date.succ_opt() {
            Some(next) => local_midnight(next, tz),
            None => DateTime::<Utc>::MAX_UTC,
        }
    }

    /// Notice lead time as the policy's default `notice.day_count = "exclusive"` counts
    /// it: the number of whole working days strictly between the local date of `notice`
    /// and the local date of `start`. Neither end date counts, since neither is a whole
    /// day of notice: a notice on Monday for works on the next Monday has 4 working days
    /// (Tuesday to Friday), so "5 working days' notice" needs the notice by the Friday
    /// before. 0 when `start` is not after `notice`'s date. The `inclusive` reading adds
    /// the notice's own date ([`Policy::notice_days_given`](crate::policy::Policy::notice_days_given)).
    pub fn working_days_between(&self, notice: DateTime<Utc>, start: DateTime<Utc>, tz: Tz) -> u32 {
        self.working_days_between_dates(
            notice.with_timezone(&tz).date_naive(),
            start.with_timezone(&tz).date_naive(),
        )
    }

    /// The number of working days `d` with `from < d < to` (both ends excluded); 0 when
    /// `to` is not at least two days after `from`. Runs in time proportional to the number
    /// of holidays and make-up days in the range, not to its length.
    pub fn working_days_between_dates(&self, from: NaiveDate, to: NaiveDate) -> u32 {
        let (Some(first), Some(last)) = (from.succ_opt(), to.pred_opt()) else {
            return 0;
        };
        if first > last {
            return 0;
        }
        let mut count = self.plain_weekdays_in(first, last);
        for &h in self.holidays.range(first..=last) {
            if !self.is_weekend(h.weekday()) && !self.make_up_days.contains(&h) {
                count -= 1;
            }
        }
        // Make-up days are weekend days (checked in `new`), so none was counted above.
        count += self.make_up_days.range(first..=last).count() as i64;
        u32::try_from(count.max(0)).unwrap_or(u32::MAX)
    }

    /// Number of dates in `first..=last` whose weekday is not a weekend day.
    fn plain_weekdays_in(&self, first: NaiveDate, last: NaiveDate) -> i64 {
        let days = (last - first).num_days() + 1;
        let per_week = self.weekend.iter().filter(|&&w| !w).count() as i64;
        let mut count = (days / 7) * per_week;
        let mut weekday = first.weekday();
        for _ in 0..(days % 7) {
            if !self.is_weekend(weekday) {
                count += 1;
            }
            weekday = weekday.succ();
        }
        count
    }
}

/// A statistics period of the local calendar (DOMAIN.md: figures per day, month, quarter
/// and year).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodKind {
    Day,
    Month,
    Quarter,
    Year,
}

impl PeriodKind {
    pub const ALL: [PeriodKind; 4] = [Self::Day, Self::Month, Self::Quarter, Self::Year];
}

/// The local period of `kind` that contains `instant`, as `[start, end)` in UTC: `start`
/// is the period's first local midnight, `end` the next period's (see [`local_midnight`]).
/// Consecutive periods tile: one's `end` is the next one's `start`. Saturates at the ends
/// of chrono's date range.
pub fn period_bounds(
    kind: PeriodKind,
    instant: DateTime<Utc>,
    tz: Tz,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let date = instant.with_timezone(&tz).date_naive();
    let (first, next) = period_dates(kind, date);
    let start = first.map_or(DateTime::<Utc>::MIN_UTC, |d| local_midnight(d, tz));
    let end = next.map_or(DateTime::<Utc>::MAX_UTC, |d| local_midnight(d, tz));
    (start, end)
}

/// First date of the period containing `date`, and first date of the next period.
fn period_dates(kind: PeriodKind, date: NaiveDate) -> (Option<NaiveDate>, Option<NaiveDate>) {
    let year = date.year();
    match kind {
        PeriodKind::Day => (Some(date), date.succ_opt()),
        PeriodKind::Month => {
            let next = if date.month() == 12 {
                NaiveDate::from_ymd_opt(year + 1, 1, 1)
            } else {
                NaiveDate::from_ymd_opt(year, date.month() + 1, 1)
            };
            (NaiveDate::from_ymd_opt(year, date.month(), 1), next)
        }
        PeriodKind::Quarter => {
            let first_month = (date.month0() / 3) * 3 + 1;
            let next = if first_month == 10 {
                NaiveDate::from_ymd_opt(year + 1, 1, 1)
            } else {
                NaiveDate::from_ymd_opt(year, first_month + 3, 1)
            };
            (NaiveDate::from_ymd_opt(year, first_month, 1), next)
        }
        PeriodKind::Year => (
            NaiveDate::from_ymd_opt(year, 1, 1),
            NaiveDate::from_ymd_opt(year + 1, 1, 1),
        ),
    }
}

/// The UTC instant at which the local date `date` begins in `tz`.
///
/// - Usual case: local 00:00 exists once.
/// - Ambiguous (a clock set back across midnight makes 00:00 occur twice): the earlier
///   occurrence, since the date has begun by then.
/// - Nonexistent (a clock set forward across midnight skips 00:00, as in some South
///   American zones, or a whole skipped day, as in Pacific/Apia on 2011-12-30): the
///   instant of the jump, found as the first valid local minute after midnight.
pub fn local_midnight(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let midnight = date.and_time(chrono::NaiveTime::MIN);
    // A gap never exceeds a day and a bit; 26 h of minutes bounds the search.
    for minutes in 0..=(26 * 60) {
        let local = midnight + Duration::minutes(minutes);
        match tz.from_local_datetime(&local) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(earlier, _) => return earlier.with_timezone(&Utc),
            LocalResult::None => continue,
        }
    }
    // Unreachable for real zones; fall back to the standard offset of that instant.
    let offset = tz.offset_from_utc_datetime(&midnight);
    Utc.from_utc_datetime(&midnight)
        - Duration::seconds(i64::from(chrono::Offset::fix(&offset).local_minus_utc()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("valid test date")
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse::<DateTime<Utc>>().expect("valid test instant")
    }

    const SH: Tz = chrono_tz::Asia::Shanghai;
    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    /// 2025 National Day golden week: Oct 1–8 off, Sunday Sep 28 and Saturday Oct 11
    /// worked (the State Council's 2025 calendar).
    fn national_day_2025() -> Calendar {
        let holidays = (1..=8).map(|day| d(2025, 10, day));
        Calendar::new(
            &[Weekday::Sat, Weekday::Sun],
            holidays,
            [d(2025, 9, 28), d(2025, 10, 11)],
        )
        .expect("valid calendar")
    }

    #[test]
    fn default_calendar_is_weekends_only() {
        let cal = Calendar::default();
        assert!(cal.is_working_day(d(2026, 1, 2))); // Friday
        assert!(!cal.is_working_day(d(2026, 1, 3))); // Saturday
        assert!(!cal.is_working_day(d(2026, 1, 4))); // Sunday
        assert!(cal.is_working_day(d(2026, 1, 1))); // no holidays configured
    }

    #[test]
    fn holidays_and_make_up_days() {
        let cal = national_day_2025();
        assert!(cal.is_working_day(d(2025, 9, 28)), "make-up Sunday");
        assert!(cal.is_working_day(d(2025, 10, 11)), "make-up Saturday");
        assert!(
            !cal.is_working_day(d(2025, 10, 1)),
            "holiday on a Wednesday"
        );
        assert!(!cal.is_working_day(d(2025, 10, 4)), "holiday on a Saturday");
        assert!(cal.is_working_day(d(2025, 10, 9)), "ordinary Thursday");
        assert!(!cal.is_working_day(d(2025, 10, 12)), "ordinary Sunday");
    }

    #[test]
    fn calendar_rejects_inconsistent_days() {
        assert_eq!(
            Calendar::new(&[Weekday::Sat], [], [d(2025, 10, 13)]),
            Err(CalendarError::MakeUpNotOnWeekend {
                date: d(2025, 10, 13),
                weekday: Weekday::Mon
            })
        );
        assert_eq!(
            Calendar::new(&[Weekday::Sat], [d(2025, 10, 11)], [d(2025, 10, 11)]),
            Err(CalendarError::HolidayAndMakeUp(d(2025, 10, 11)))
        );
        let all = [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ];
        assert_eq!(
            Calendar::new(&all, [], []),
            Err(CalendarError::NoWorkingWeekday)
        );
    }

    #[test]
    fn add_working_days_ends_at_local_midnight_after_the_nth_day() {
        let cal = Calendar::default();
        // Friday 2026-01-09 15:00 Shanghai = 07:00 UTC → end of Tuesday 01-13.
        let got = cal.add_working_days(utc("2026-01-09T07:00:00Z"), 2, SH);
        assert_eq!(got, utc("2026-01-13T16:00:00Z")); // 2026-01-14 00:00 local
                                                      // Saturday counts neither itself nor the weekend: end of Tuesday too.
        let got = cal.add_working_days(utc("2026-01-10T02:00:00Z"), 2, SH);
        assert_eq!(got, utc("2026-01-13T16:00:00Z"));
        // n = 0: end of the instant's own local day (UTC date differs from local).
        let got = cal.add_working_days(utc("2026-01-09T17:00:00Z"), 0, SH);
        assert_eq!(got, utc("2026-01-10T16:00:00Z"));
    }

    #[test]
    fn add_working_days_skips_holidays_and_uses_make_up_saturday() {
        let cal = national_day_2025();
        // Tuesday 2025-09-30 10:00 local: Oct 1–8 off, Thu 9 (1), Fri 10 (2).
        let got = cal.add_working_days(utc("2025-09-30T02:00:00Z"), 2, SH);
        assert_eq!(got, utc("2025-10-10T16:00:00Z"));
        // Thursday Oct 9: Fri 10 (1), make-up Sat 11 (2).
        let got = cal.add_working_days(utc("2025-10-09T02:00:00Z"), 2, SH);
        assert_eq!(got, utc("2025-10-11T16:00:00Z"));
    }

    #[test]
    fn working_days_between_excludes_both_ends() {
        let cal = Calendar::default();
        // Monday to next Monday: Tue..Fri.
        assert_eq!(
            cal.working_days_between_dates(d(2026, 1, 5), d(2026, 1, 12)),
            4
        );
        // Friday before to Monday: Mon..Fri of the week between.
        assert_eq!(
            cal.working_days_between_dates(d(2026, 1, 2), d(2026, 1, 12)),
            5
        );
        assert_eq!(
            cal.working_days_between_dates(d(2026, 1, 5), d(2026, 1, 6)),
            0
        );
        assert_eq!(
            cal.working_days_between_dates(d(2026, 1, 6), d(2026, 1, 5)),
            0
        );
        // Local dates, not UTC dates: 2026-01-04T17:00Z is Monday 01:00 in Shanghai.
        let n =
            cal.working_days_between(utc("2026-01-04T17:00:00Z"), utc("2026-01-12T01:00:00Z"), SH);
        assert_eq!(n, 4);
    }

    #[test]
    fn working_days_between_counts_holidays_and_make_up_days() {
        let cal = national_day_2025();
        // Fri Sep 26 → Thu Oct 9: Sun 28 (make-up), Mon 29, Tue 30; Oct 1–8 off.
        assert_eq!(
            cal.working_days_between_dates(d(2025, 9, 26), d(2025, 10, 9)),
            3
        );
        // Wed Oct 8 → Mon Oct 13: Thu 9, Fri 10, Sat 11 (make-up).
        assert_eq!(
            cal.working_days_between_dates(d(2025, 10, 8), d(2025, 10, 13)),
            3
        );
    }

    #[test]
    fn new_year_in_shanghai() {
        // 2025-12-31T16:00:00Z is 2026-01-01 00:00 in Shanghai.
        let new_year = utc("2025-12-31T16:00:00Z");
        let just_before = new_year - Duration::seconds(1);
        for kind in [
            PeriodKind::Day,
            PeriodKind::Month,
            PeriodKind::Quarter,
            PeriodKind::Year,
        ] {
            let (start, _) = period_bounds(kind, new_year, SH);
            assert_eq!(start, new_year, "{kind:?} starts at local midnight");
            let (_, end) = period_bounds(kind, just_before, SH);
            assert_eq!(end, new_year, "{kind:?} before ends at local midnight");
        }
        let (start, end) = period_bounds(PeriodKind::Year, just_before, SH);
        assert_eq!(start, utc("2024-12-31T16:00:00Z"));
        assert_eq!(end, new_year);
        let (start, end) = period_bounds(PeriodKind::Quarter, new_year, SH);
        assert_eq!((start, end), (new_year, utc("2026-03-31T16:00:00Z")));
    }

    #[test]
    fn berlin_months_across_daylight_saving() {
        // March 2026: starts in CET (+1), ends in CEST (+2); 743 hours long.
        let (start, end) = period_bounds(PeriodKind::Month, utc("2026-03-15T12:00:00Z"), BERLIN);
        assert_eq!(start, utc("2026-02-28T23:00:00Z"));
        assert_eq!(end, utc("2026-03-31T22:00:00Z"));
        assert_eq!((end - start).num_hours(), 31 * 24 - 1);
        // October 2026: CEST to CET; 745 hours.
        let (start, end) = period_bounds(PeriodKind::Month, utc("2026-10-31T22:30:00Z"), BERLIN);
        assert_eq!(start, utc("2026-09-30T22:00:00Z"));
        assert_eq!(end, utc("2026-10-31T23:00:00Z"));
        assert_eq!((end - start).num_hours(), 31 * 24 + 1);
        // The day of the spring change is 23 h long.
        let (start, end) = period_bounds(PeriodKind::Day, utc("2026-03-29T12:00:00Z"), BERLIN);
        assert_eq!((end - start).num_hours(), 23);
    }

    #[test]
    fn nonexistent_and_skipped_midnights() {
        // São Paulo, 2018-11-04: clocks jumped from 00:00 to 01:00 (-03 → -02).
        let sp: Tz = chrono_tz::America::Sao_Paulo;
        assert_eq!(
            local_midnight(d(2018, 11, 4), sp),
            utc("2018-11-04T03:00:00Z")
        );
        // Apia skipped 2011-12-30 entirely: the 29th ends when the 31st begins.
        let apia: Tz = chrono_tz::Pacific::Apia;
        let (start, end) = period_bounds(PeriodKind::Day, utc("2011-12-29T12:00:00Z"), apia);
        assert_eq!(end, local_midnight(d(2011, 12, 31), apia));
        assert_eq!(end, utc("2011-12-30T10:00:00Z"));
        assert_eq!((end - start).num_hours(), 24);
    }

    #[test]
    fn ambiguous_midnight_takes_the_earlier_occurrence() {
        // São Paulo, 2019-02-17 00:00: clocks went back from 00:00 to 23:00 on the 16th,
        // so 23:xx of the 16th happened twice and the 17th began once, at 03:00 UTC.
        let sp: Tz = chrono_tz::America::Sao_Paulo;
        assert_eq!(
            local_midnight(d(2019, 2, 17), sp),
            utc("2019-02-17T03:00:00Z")
        );
        let (start, end) = period_bounds(PeriodKind::Day, utc("2019-02-17T01:30:00Z"), sp);
        assert_eq!((end - start).num_hours(), 25);
        assert_eq!(start, utc("2019-02-16T02:00:00Z"));
    }

    fn zones() -> impl Strategy<Value = Tz> {
        prop::sample::select(vec![
            chrono_tz::Asia::Shanghai,
            chrono_tz::Europe::Berlin,
            chrono_tz::America::Sao_Paulo,
            chrono_tz::America::New_York,
            chrono_tz::Australia::Lord_Howe,
            chrono_tz::Asia::Kathmandu,
            chrono_tz::Pacific::Apia,
            chrono_tz::UTC,
        ])
    }

    fn kinds() -> impl Strategy<Value = PeriodKind> {
        prop::sample::select(PeriodKind::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn periods_contain_the_instant_and_tile(
            secs in 0i64..4_102_444_800, // 1970 .. 2100
            tz in zones(),
            kind in kinds(),
        ) {
            let instant = DateTime::<Utc>::from_timestamp(secs, 0).expect("in range");
            let (start, end) = period_bounds(kind, instant, tz);
            prop_assert!(start <= instant && instant < end, "{start} <= {instant} < {end}");
            // The next period starts where this one ends; the previous ends where it starts.
            let (next_start, next_end) = period_bounds(kind, end, tz);
            prop_assert_eq!(next_start, end);
            prop_assert!(next_end > next_start);
            let (prev_start, prev_end) = period_bounds(kind, start - Duration::nanoseconds(1), tz);
            prop_assert_eq!(prev_end, start);
            prop_assert!(prev_start < prev_end);
        }

        #[test]
        fn working_day_count_matches_a_day_by_day_count(
            from_offset in 0i64..2000,
            len in 0i64..400,
        ) {
            let cal = national_day_2025();
            let from = d(2024, 1, 1) + Duration::days(from_offset);
            let to = from + Duration::days(len);
            let mut expected = 0u32;
            let mut day = from + Duration::days(1);
            while day < to {
                if cal.is_working_day(day) {
                    expected += 1;
                }
                day += Duration::days(1);
            }
            prop_assert_eq!(cal.working_days_between_dates(from, to), expected);
        }

        #[test]
        fn add_working_days_lands_after_n_working_days(
            secs in 1_700_000_000i64..1_800_000_000,
            n in 0u32..30,
        ) {
            let cal = national_day_2025();
            let instant = DateTime::<Utc>::from_timestamp(secs, 0).expect("in range");
            let deadline = cal.add_working_days(instant, n, SH);
            let last_day = (deadline - Duration::seconds(1)).with_timezone(&SH).date_naive();
            let from = instant.with_timezone(&SH).date_naive();
            // Exactly n working days after the instant's date, up to and including the last day.
            let counted = cal.working_days_between_dates(from, last_day + Duration::days(1));
            prop_assert_eq!(counted, n);
            prop_assert!(n == 0 || cal.is_working_day(last_day));
        }
    }
}
