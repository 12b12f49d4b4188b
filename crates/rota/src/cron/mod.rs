//! The cron engine: [`CronExpression`], [`Schedule`] and [`parse_schedule`].
//!
//! # Syntax
//!
//! * 5 fields `min hour dom month dow`, 6 fields `sec min hour dom month dow`,
//!   7 fields `sec min hour dom month dow year` (years 1970-2199).
//! * `*`, `?` (day fields), values, lists `1,5,9`, ranges `1-5`, steps `*/15`,
//!   `5/15`, `10-40/7`; `JAN`-`DEC` and `SUN`-`SAT` in any case, also in ranges;
//!   day of week 0-7 where 0 and 7 are Sunday.
//! * Quartz specials: `L`, `L-3`, `15W`, `LW` in day-of-month; `5L`/`FRIL`
//!   (last Friday), `MON#2` (second Monday) and `L` (Saturday) in day-of-week.
//! * `@yearly @annually @monthly @weekly @daily @midnight @hourly`, and
//!   `@every 1h30m` (see [`Schedule`]).
//! * A `CRON_TZ=Zone` or `TZ=Zone` prefix sets the schedule's zone.
//!
//! When day-of-month and day-of-week are both restricted (neither starts with
//! `*` nor is `?`), a day matches when **either** matches, as in Vixie cron:
//! `0 0 13 * FRI` fires on every 13th and on every Friday.
//!
//! # Time zones and daylight saving time
//!
//! A schedule is evaluated in its own zone (prefix) if it has one, else in the
//! zone the caller gives (the scheduler's zone, or the zone of the
//! [`ZonedDateTime`] passed to [`CronExpression::next_run`]).
//!
//! * A **fixed-time** schedule (its second, minute and hour fields do not start
//!   with `*`, Vixie cron's rule) fires once per matching wall-clock time. A time
//!   skipped by a forward change fires at the first instant after the gap; a time
//!   repeated by a backward change fires at its first occurrence only.
//! * Any other schedule follows elapsed time: it fires at every matching
//!   wall-clock time that exists, none in a skipped hour and twice in a repeated
//!   hour, in real-time order.
//!
//! ```
//! use rota::CronExpression;
//! use jiff::ZonedDateTime;
//!
//! let cron = CronExpression::parse("30 2 * * *")?;
//! // 2026-03-08 is spring-forward day in New York: 02:30 does not exist.
//! let from: ZonedDateTime = "2026-03-08T00:00:00-05:00[America/New_York]".parse()?;
//! let next = cron.next_run(&from).unwrap();
//! assert_eq!(next.to_string(), "2026-03-08T03:00:00-04:00[America/New_York]");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod civil;
mod explain;
mod parse;
mod search;

use std::fmt;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};

use crate::error::{ErrorKind, ParseError};
use civil::{days_in_month, weekday};

pub(crate) const MIN_YEAR: i32 = 1970;
pub(crate) const MAX_YEAR: i32 = 2199;

pub(crate) const FLAG_DOM_STAR: u8 = 1;
pub(crate) const FLAG_DOW_STAR: u8 = 2;
pub(crate) const FLAG_FIXED_TIME: u8 = 4;
pub(crate) const FLAG_LW: u8 = 8;

const ALL_DOM: u32 = 0xffff_fffe;
const ALL_DOW: u8 = 0x7f;

/// Bit `i` set when year `1970 + i` is allowed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Years(pub [u64; 4]);

impl Years {
    fn contains(&self, y: i32) -> bool {
        let i = (y - MIN_YEAR) as usize;
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
}

/// A parsed cron expression.
///
/// Each field is kept as a bit mask (a few machine words per expression, no
/// lists), so a scheduler holding a hundred thousand of them stays small. The
/// seed's seven list fields are available as [`second`](Self::second) ...
/// [`year`](Self::year), each a sorted list of the allowed values.
///
/// ```
/// use rota::CronExpression;
///
/// let c = CronExpression::parse("0 */20 9-17 * * MON-FRI")?;
/// assert_eq!(c.minute(), vec![0, 20, 40]);
/// assert_eq!(c.day_of_week(), vec![1, 2, 3, 4, 5]);
/// # Ok::<(), rota::ParseError>(())
/// ```
#[derive(Clone, PartialEq)]
pub struct CronExpression {
    pub(crate) seconds: u64,
    pub(crate) minutes: u64,
    pub(crate) hours: u32,
    /// Bits 1-31.
    pub(crate) dom: u32,
    /// Bit n: `L-n` (bit 0 is `L`).
    pub(crate) dom_last: u32,
    /// Bit d: `dW`.
    pub(crate) dom_nearest: u32,
    /// Bits 1-12.
    pub(crate) months: u16,
    /// Bits 0-6, 0 is Sunday.
    pub(crate) dow: u8,
    /// Per weekday, bit k: the k-th such weekday of the month (`#k`).
    pub(crate) dow_nth: [u8; 7],
    /// Bit w: the last weekday w of the month (`wL`).
    pub(crate) dow_last: u8,
    pub(crate) flags: u8,
    pub(crate) years: Option<Box<Years>>,
    pub(crate) tz: Option<TimeZone>,
}

impl CronExpression {
    fn empty() -> Self {
        CronExpression {
            seconds: 0,
            minutes: 0,
            hours: 0,
            dom: 0,
            dom_last: 0,
            dom_nearest: 0,
            months: 0,
            dow: 0,
            dow_nth: [0; 7],
            dow_last: 0,
            flags: 0,
            years: None,
            tz: None,
        }
    }

    /// Parses a cron expression: 5, 6 or 7 fields, or a descriptor such as
    /// `@daily`, optionally prefixed with `CRON_TZ=Zone`.
    ///
    /// `@every` intervals are not cron expressions; [`Schedule::parse`] takes them.
    ///
    /// # Errors
    ///
    /// A [`ParseError`] naming the field, the token and the reason:
    ///
    /// ```
    /// use rota::CronExpression;
    ///
    /// let err = CronExpression::parse("61 0 * * *").unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     r#"invalid cron expression "61 0 * * *": minute: 61 is out of range 0-59"#,
    /// );
    /// ```
    pub fn parse(expr: &str) -> Result<CronExpression, ParseError> {
        parse::parse(expr)
    }

    /// The zone of a `CRON_TZ=`/`TZ=` prefix, if the expression had one.
    pub fn time_zone(&self) -> Option<&TimeZone> {
        self.tz.as_ref()
    }

    /// True for a fixed-time schedule (second, minute and hour fields do not
    /// start with `*`): it fires once per matching wall-clock time across DST
    /// changes. See the module docs.
    pub fn is_fixed_time(&self) -> bool {
        self.flags & FLAG_FIXED_TIME != 0
    }

    /// Allowed seconds, sorted.
    pub fn second(&self) -> Vec<u32> {
        bits(self.seconds)
    }

    /// Allowed minutes, sorted.
    pub fn minute(&self) -> Vec<u32> {
        bits(self.minutes)
    }

    /// Allowed hours, sorted.
    pub fn hour(&self) -> Vec<u32> {
        bits(u64::from(self.hours))
    }

    /// Plain days of month, sorted (1-31). `*` and `?` give all 31 days; the
    /// Quartz specials (`L`, `W`) are not listed here.
    pub fn day_of_month(&self) -> Vec<u32> {
        bits(u64::from(self.dom))
    }

    /// Allowed months, sorted (1-12).
    pub fn month(&self) -> Vec<u32> {
        bits(u64::from(self.months))
    }

    /// Plain days of week, sorted (0-6, 0 is Sunday). `*` and `?` give all seven;
    /// `#` and `L` specials are not listed here.
    pub fn day_of_week(&self) -> Vec<u32> {
        bits(u64::from(self.dow))
    }

    /// True if day-of-month has a Quartz special (`L`, `L-n`, `W`, `LW`).
    fn dom_special(&self) -> bool {
        self.dom_last != 0 || self.dom_nearest != 0 || self.flags & FLAG_LW != 0
    }

    /// True if day-of-week has a Quartz special (`#`, `nL`).
    fn dow_special(&self) -> bool {
        self.dow_last != 0 || self.dow_nth != [0; 7]
    }

    /// Allowed years, sorted (1970-2199).
    pub fn year(&self) -> Vec<u32> {
        (MIN_YEAR..=MAX_YEAR).filter(|&y| self.year_ok(y)).map(|y| y as u32).collect()
    }

    /// The next fire strictly after `from`, in the zone of `from` unless the
    /// expression has its own zone. `None` when it never fires again (before
    /// the end of 2199).
    ///
    /// ```
    /// use rota::CronExpression;
    /// use jiff::ZonedDateTime;
    ///
    /// let c = CronExpression::parse("0 0 12 * * MON#2")?;
    /// let from: ZonedDateTime = "2026-12-04T00:00:00+00:00[UTC]".parse()?;
    /// assert_eq!(
    ///     c.next_run(&from).unwrap().to_string(),
    ///     "2026-12-14T12:00:00+00:00[UTC]",
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn next_run(&self, from: &ZonedDateTime) -> Option<ZonedDateTime> {
        let tz = self.tz.as_ref().unwrap_or(from.time_zone());
        let t = self.next_after(from.timestamp(), tz)?;
        Some(t.to_zoned_datetime(tz.clone()))
    }

    /// The latest fire strictly before `from`; the mirror of [`next_run`](Self::next_run).
    pub fn prev_run(&self, from: &ZonedDateTime) -> Option<ZonedDateTime> {
        let tz = self.tz.as_ref().unwrap_or(from.time_zone());
        let t = self.prev_before(from.timestamp(), tz)?;
        Some(t.to_zoned_datetime(tz.clone()))
    }

    /// The upcoming fires after `from`, strictly increasing.
    ///
    /// ```
    /// use rota::CronExpression;
    /// use jiff::ZonedDateTime;
    ///
    /// let c = CronExpression::parse("0 0 9 * * *")?;
    /// let from: ZonedDateTime = "2026-12-04T10:00:00+01:00[Europe/Paris]".parse()?;
    /// let days: Vec<String> = c.upcoming(&from).take(2).map(|z| z.to_string()).collect();
    /// assert_eq!(days, [
    ///     "2026-12-05T09:00:00+01:00[Europe/Paris]",
    ///     "2026-12-06T09:00:00+01:00[Europe/Paris]",
    /// ]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn upcoming(&self, from: &ZonedDateTime) -> Upcoming<'_> {
        let tz = self.tz.clone().unwrap_or_else(|| from.time_zone().clone());
        Upcoming { cron: self, tz, cur: Some(from.timestamp()), seg: search::SegCache::default() }
    }

    /// The next fire strictly after the instant `from`, evaluating wall-clock
    /// times in the expression's own zone, else in `tz`. The allocation-free
    /// core of [`next_run`](Self::next_run).
    pub fn next_after(&self, from: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let tz = self.tz.as_ref().unwrap_or(tz);
        search::next_after(self, from, tz)
    }

    /// The latest fire strictly before the instant `from`; see [`next_after`](Self::next_after).
    pub fn prev_before(&self, from: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let tz = self.tz.as_ref().unwrap_or(tz);
        search::prev_before(self, from, tz)
    }

    /// The schedule in plain English, for example "at 02:30, Monday through Friday".
    pub fn explain(&self) -> String {
        explain::explain(self)
    }

    #[inline]
    pub(crate) fn year_ok(&self, y: i32) -> bool {
        match &self.years {
            None => (MIN_YEAR..=MAX_YEAR).contains(&y),
            Some(ys) => (MIN_YEAR..=MAX_YEAR).contains(&y) && ys.contains(y),
        }
    }

    /// Days of month (bits 1-31) of `y-m` that match the day fields.
    #[inline]
    pub(crate) fn day_mask(&self, y: i32, m: u32) -> u64 {
        let dim = days_in_month(y, m);
        self.day_mask_for(dim, weekday(y, m, 1))
    }

    /// Day mask for a month of `dim` days whose first day is weekday `first`.
    pub(crate) fn day_mask_for(&self, dim: u32, first: u32) -> u64 {
        let valid: u64 = ((1u64 << (dim + 1)) - 1) & !1;
        let dom_plain_all = self.dom == ALL_DOM && !self.dom_special();
        let dow_plain_all = self.dow == ALL_DOW && !self.dow_special();
        if dom_plain_all && dow_plain_all {
            return valid;
        }
        let star = self.flags & (FLAG_DOM_STAR | FLAG_DOW_STAR);
        let mut dom = u64::from(self.dom);
        if self.dom_last != 0 {
            let mut l = self.dom_last;
            while l != 0 {
                let n = l.trailing_zeros();
                l &= l - 1;
                if n < dim {
                    dom |= 1 << (dim - n);
                }
            }
        }
        if self.dom_nearest != 0 {
            let mut w = self.dom_nearest;
            while w != 0 {
                let d = w.trailing_zeros();
                w &= w - 1;
                if d <= dim {
                    dom |= 1 << nearest_weekday(d, dim, first);
                }
            }
        }
        if self.flags & FLAG_LW != 0 {
            dom |= 1 << nearest_weekday(dim, dim, first);
        }
        dom &= valid;
        let dow = if dow_plain_all {
            valid
        } else {
            // Bits 0, 7, 14, 21, 28, 35: one weekday through a month.
            const WEEKLY: u64 = 0x8_1020_4081;
            let mut m = 0u64;
            for w in 0..7u32 {
                let bit = 1u8 << w;
                let d0 = 1 + (w + 7 - first) % 7;
                if self.dow & bit != 0 {
                    m |= WEEKLY << d0;
                }
                let nth = self.dow_nth[w as usize];
                if nth != 0 {
                    for k in 1..=5u32 {
                        if nth & (1 << k) != 0 {
                            m |= 1 << (d0 + 7 * (k - 1));
                        }
                    }
                }
                if self.dow_last & bit != 0 {
                    m |= 1 << (d0 + 7 * ((dim - d0) / 7));
                }
            }
            m & valid
        };
        if star != 0 {
            dom & dow
        } else {
            dom | dow
        }
    }

    /// Whether some month allowed by the month field has a matching day in
    /// some year: the parse-time check behind "can never fire".
    fn can_fire_some_day(&self) -> bool {
        let or_mode = self.flags & (FLAG_DOM_STAR | FLAG_DOW_STAR) == 0;
        if or_mode && self.dow != 0 {
            // Every month has every weekday.
            return true;
        }
        // Without weekday rules on either side, only the month length matters.
        let weekday_free = (self.dow == ALL_DOW && !self.dow_special())
            && self.dom_nearest == 0
            && self.flags & FLAG_LW == 0;
        for m in 1..=12u32 {
            if self.months & (1 << m) == 0 {
                continue;
            }
            let dims: &[u32] = match m {
                2 => &[28, 29],
                4 | 6 | 9 | 11 => &[30],
                _ => &[31],
            };
            for &dim in dims {
                let firsts = if weekday_free { 0..1 } else { 0..7 };
                for first in firsts {
                    if self.day_mask_for(dim, first) != 0 {
                        return true;
                    }
                }
            }
        }
        false
    }
}

/// The weekday (Monday-Friday) nearest to day `d` of a month of `dim` days,
/// never leaving the month (Quartz's `W`).
fn nearest_weekday(d: u32, dim: u32, first: u32) -> u32 {
    let wd = (first + d - 1) % 7;
    match wd {
        6 if d == 1 => 3,       // Saturday the 1st: Monday the 3rd
        6 => d - 1,             // Saturday: Friday
        0 if d == dim => d - 2, // Sunday the last: Friday
        0 => d + 1,             // Sunday: Monday
        _ => d,
    }
}

fn bits(mut m: u64) -> Vec<u32> {
    let mut v = Vec::with_capacity(m.count_ones() as usize);
    while m != 0 {
        v.push(m.trailing_zeros());
        m &= m - 1;
    }
    v
}

impl fmt::Debug for CronExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronExpression")
            .field("second", &self.second())
            .field("minute", &self.minute())
            .field("hour", &self.hour())
            .field("day_of_month", &self.day_of_month())
            .field("month", &self.month())
            .field("day_of_week", &self.day_of_week())
            .field("years_restricted", &self.years.is_some())
            .field("time_zone", &self.tz.as_ref().and_then(|t| t.iana_name()))
            .finish()
    }
}

/// Iterator of upcoming fires, from [`CronExpression::upcoming`] or [`Schedule::upcoming`].
#[derive(Debug)]
pub struct Upcoming<'a> {
    cron: &'a CronExpression,
    tz: TimeZone,
    cur: Option<Timestamp>,
    /// The zone's offset segment around `cur`, kept between calls.
    seg: search::SegCache,
}

impl Iterator for Upcoming<'_> {
    type Item = ZonedDateTime;

    fn next(&mut self) -> Option<ZonedDateTime> {
        let next = search::next_after_cached(self.cron, self.cur?, &self.tz, &mut self.seg);
        self.cur = next;
        next.map(|t| t.to_zoned_datetime(self.tz.clone()))
    }
}

/// Any schedule rota accepts: a cron expression (fields or descriptor), or a
/// fixed interval (`@every 1h30m`).
///
/// An interval counts from an anchor, the task's start, not from the clock:
/// `@every 90s` started at 10:00:10 fires at 10:01:40, 10:03:10 and so on.
///
/// ```
/// use rota::Schedule;
/// use std::time::Duration;
///
/// let s = Schedule::parse("@every 1h30m")?;
/// assert_eq!(s.interval(), Some(Duration::from_secs(5400)));
/// assert!(Schedule::parse("CRON_TZ=Europe/London 0 9 * * MON-FRI")?.cron().is_some());
/// # Ok::<(), rota::ParseError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Schedule {
    /// A cron expression.
    Cron(CronExpression),
    /// A fixed interval, counted from an anchor.
    Every(Duration),
}

impl Schedule {
    /// Parses any schedule form: 5/6/7 fields, descriptors and `@every <duration>`
    /// (units `d`, `h`, `m`, `s`, `ms`, combined like `1h30m`; at least one second).
    ///
    /// # Errors
    ///
    /// A [`ParseError`] saying what and where.
    pub fn parse(expr: &str) -> Result<Schedule, ParseError> {
        let (_, body) = parse::split_zone(expr)?;
        let body = body.trim();
        let lower = body.get(..6).map(|s| s.to_ascii_lowercase());
        if lower.as_deref() == Some("@every") {
            let d = parse_duration(body[6..].trim()).map_err(|reason| {
                ParseError::new(ErrorKind::InvalidSchedule, expr, None, reason)
            })?;
            if d < Duration::from_secs(1) {
                return Err(ParseError::new(
                    ErrorKind::InvalidSchedule,
                    expr,
                    None,
                    format!("@every interval {d:?} is shorter than the minimum of 1s"),
                ));
            }
            return Ok(Schedule::Every(d));
        }
        CronExpression::parse(expr).map(Schedule::Cron)
    }

    /// The cron expression, if this is one.
    pub fn cron(&self) -> Option<&CronExpression> {
        match self {
            Schedule::Cron(c) => Some(c),
            Schedule::Every(_) => None,
        }
    }

    /// The interval, if this is `@every`.
    pub fn interval(&self) -> Option<Duration> {
        match self {
            Schedule::Every(d) => Some(*d),
            Schedule::Cron(_) => None,
        }
    }

    /// The next fire strictly after `from`. An interval schedule is anchored at
    /// `anchor` (the task's start): it fires at `anchor + k * interval`.
    pub fn next_after(
        &self,
        from: Timestamp,
        tz: &TimeZone,
        anchor: Timestamp,
    ) -> Option<Timestamp> {
        match self {
            Schedule::Cron(c) => c.next_after(from, tz),
            Schedule::Every(d) => every_next(*d, from, anchor),
        }
    }

    /// The latest fire strictly before `from`; the mirror of [`next_after`](Self::next_after).
    pub fn prev_before(
        &self,
        from: Timestamp,
        tz: &TimeZone,
        anchor: Timestamp,
    ) -> Option<Timestamp> {
        match self {
            Schedule::Cron(c) => c.prev_before(from, tz),
            Schedule::Every(d) => {
                let step = d.as_nanos() as i128;
                let since = from.as_nanosecond() - anchor.as_nanosecond();
                if since <= 0 {
                    return None;
                }
                let k = (since - 1) / step;
                Timestamp::from_nanosecond(anchor.as_nanosecond() + k * step).ok()
            }
        }
    }

    /// The upcoming fires after `from` (an interval counts from `from`).
    pub fn upcoming(&self, from: &ZonedDateTime) -> impl Iterator<Item = ZonedDateTime> + '_ {
        let tz = match self {
            Schedule::Cron(c) => c.tz.clone().unwrap_or_else(|| from.time_zone().clone()),
            Schedule::Every(_) => from.time_zone().clone(),
        };
        let anchor = from.timestamp();
        let mut cur = Some(anchor);
        std::iter::from_fn(move || {
            let next = self.next_after(cur?, &tz, anchor);
            cur = next;
            next.map(|t| t.to_zoned_datetime(tz.clone()))
        })
    }

    /// The schedule in plain English.
    pub fn explain(&self) -> String {
        match self {
            Schedule::Cron(c) => c.explain(),
            Schedule::Every(d) => format!("every {}", explain::duration_words(*d)),
        }
    }
}

fn every_next(d: Duration, from: Timestamp, anchor: Timestamp) -> Option<Timestamp> {
    let step = d.as_nanos() as i128;
    let since = from.as_nanosecond() - anchor.as_nanosecond();
    let k = if since < 0 { 0 } else { since / step + 1 };
    Timestamp::from_nanosecond(anchor.as_nanosecond() + k * step).ok()
}

/// Parses `1h30m`, `90s`, `500ms`, `2d`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err("@every needs a duration, for example @every 90s or @every 1h30m".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!(
                "duration {s:?}: expected a number at {rest:?} (units d, h, m, s, ms)"
            ));
        }
        let n: u64 =
            rest[..digits].parse().map_err(|_| format!("duration {s:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        let part = match unit {
            "d" => n.checked_mul(86_400).map(Duration::from_secs),
            "h" => n.checked_mul(3600).map(Duration::from_secs),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            "s" => Some(Duration::from_secs(n)),
            "ms" => Some(Duration::from_millis(n)),
            "" => return Err(format!("duration {s:?}: {n} has no unit (d, h, m, s, ms)")),
            _ => return Err(format!("duration {s:?}: unknown unit {unit:?} (d, h, m, s, ms)")),
        };
        total = part
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| format!("duration {s:?} is too large"))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// The seed's `ParseSchedule`: parses any schedule form and returns its next
/// fire after now, in the process's local zone (or the schedule's own zone).
///
/// # Errors
///
/// The parse error, or [`ErrorKind::InvalidSchedule`] when it never fires again.
///
/// ```
/// let next = rota::parse_schedule("0 * * * * *")?;
/// assert!(next > jiff::Timestamp::now());
/// # Ok::<(), rota::ParseError>(())
/// ```
pub fn parse_schedule(expr: &str) -> Result<Timestamp, ParseError> {
    let s = Schedule::parse(expr)?;
    let now = Timestamp::now();
    s.next_after(now, &TimeZone::system(), now)
        .ok_or_else(|| ParseError::new(ErrorKind::InvalidSchedule, expr, None, "never fires again"))
}
