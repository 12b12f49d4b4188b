//! The cron parser: text to bit masks, with errors that name field, token and reason.

// `split(|c: char| c == ',')` on purpose: for items of a few bytes the closure
// beats the `char` pattern, whose fast search costs more than it saves.
#![allow(clippy::manual_pattern_char_comparison)]

use jiff::tz::TimeZone;

use super::{CronExpression, Years, FLAG_DOM_STAR, FLAG_DOW_STAR, FLAG_FIXED_TIME, FLAG_LW};
use super::{MAX_YEAR, MIN_YEAR};
use crate::error::{CronField, ErrorKind, ParseError};

const MONTHS: [&str; 12] =
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

struct Spec {
    field: CronField,
    min: u32,
    max: u32,
}

const SECOND: Spec = Spec { field: CronField::Second, min: 0, max: 59 };
const MINUTE: Spec = Spec { field: CronField::Minute, min: 0, max: 59 };
const HOUR: Spec = Spec { field: CronField::Hour, min: 0, max: 23 };
const DOM: Spec = Spec { field: CronField::DayOfMonth, min: 1, max: 31 };
const MONTH: Spec = Spec { field: CronField::Month, min: 1, max: 12 };
const DOW: Spec = Spec { field: CronField::DayOfWeek, min: 0, max: 7 };
const YEAR: Spec = Spec { field: CronField::Year, min: MIN_YEAR as u32, max: MAX_YEAR as u32 };

/// Parser state for one expression: the text (for errors) and the masks built so far.
struct Parser<'a> {
    expr: &'a str,
    out: CronExpression,
}

fn err(expr: &str, field: Option<CronField>, reason: impl Into<String>) -> ParseError {
    ParseError::new(ErrorKind::InvalidCronExpression, expr, field, reason)
}

/// Splits off a `CRON_TZ=Zone` / `TZ=Zone` prefix.
pub(crate) fn split_zone(expr: &str) -> Result<(Option<TimeZone>, &str), ParseError> {
    let trimmed = expr.trim_start();
    let rest = if let Some(r) = trimmed.strip_prefix("CRON_TZ=") {
        r
    } else if let Some(r) = trimmed.strip_prefix("TZ=") {
        r
    } else {
        return Ok((None, trimmed));
    };
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    let name = &rest[..end];
    if name.is_empty() {
        return Err(ParseError::new(
            ErrorKind::InvalidSchedule,
            expr,
            None,
            "time zone prefix has no zone name (expected for example CRON_TZ=Europe/London)",
        ));
    }
    let tz = TimeZone::get(name).map_err(|_| {
        ParseError::new(
            ErrorKind::InvalidSchedule,
            expr,
            None,
            format!("unknown time zone {name:?} (expected an IANA name such as America/New_York)"),
        )
    })?;
    Ok((Some(tz), rest[end..].trim_start()))
}

/// Parses a cron expression (fields or an `@` descriptor other than `@every`).
pub(crate) fn parse(expr: &str) -> Result<CronExpression, ParseError> {
    let (tz, body) = split_zone(expr)?;
    let body = body.trim();
    if body.is_empty() {
        return Err(ParseError::new(ErrorKind::InvalidSchedule, expr, None, "empty schedule"));
    }
    let mut p = Parser { expr, out: CronExpression::empty() };
    if let Some(name) = body.strip_prefix('@') {
        let fields: [&str; 6] =
            match name.to_ascii_lowercase().as_str() {
                "yearly" | "annually" => ["0", "0", "0", "1", "1", "*"],
                "monthly" => ["0", "0", "0", "1", "*", "*"],
                "weekly" => ["0", "0", "0", "*", "*", "0"],
                "daily" | "midnight" => ["0", "0", "0", "*", "*", "*"],
                "hourly" => ["0", "0", "*", "*", "*", "*"],
                _ if name.to_ascii_lowercase().starts_with("every") => return Err(err(
                    expr,
                    None,
                    "@every is an interval, not a cron expression: parse it with Schedule::parse",
                )),
                _ => {
                    return Err(err(
                        expr,
                        None,
                        format!(
                        "unknown descriptor \"@{name}\" (expected @yearly, @annually, @monthly, \
                         @weekly, @daily, @midnight, @hourly or @every <duration>)"
                    ),
                    ))
                }
            };
        p.fields(&fields, None)?;
    } else {
        let mut parts: [&str; 7] = [""; 7];
        let mut n = 0;
        for part in body.split_ascii_whitespace() {
            if n == 7 {
                n += 1;
                break;
            }
            parts[n] = part;
            n += 1;
        }
        match n {
            5 => p.fields(&["0", parts[0], parts[1], parts[2], parts[3], parts[4]], None)?,
            6 => p.fields(&[parts[0], parts[1], parts[2], parts[3], parts[4], parts[5]], None)?,
            7 => p.fields(
                &[parts[0], parts[1], parts[2], parts[3], parts[4], parts[5]],
                Some(parts[6]),
            )?,
            _ => {
                let got = if n > 7 { "more than 7".to_string() } else { n.to_string() };
                return Err(err(
                    expr,
                    None,
                    format!(
                        "expected 5 fields (min hour dom month dow), 6 (sec min hour dom month \
                         dow) or 7 (with a trailing year), got {got}"
                    ),
                ));
            }
        }
    }
    p.out.tz = tz;
    if !p.out.can_fire_some_day() {
        return Err(ParseError::new(
            ErrorKind::InvalidSchedule,
            expr,
            None,
            "can never fire: no month allowed by the month field has a day that matches the \
             day fields",
        ));
    }
    Ok(p.out)
}

fn starts_star(s: &str) -> bool {
    s.starts_with('*') || s == "?"
}

impl Parser<'_> {
    fn fields(&mut self, f: &[&str; 6], year: Option<&str>) -> Result<(), ParseError> {
        self.out.seconds = self.plain(f[0], &SECOND)?;
        self.out.minutes = self.plain(f[1], &MINUTE)?;
        self.out.hours = self.plain(f[2], &HOUR)? as u32;
        self.dom(f[3])?;
        self.out.months = self.plain(f[4], &MONTH)? as u16;
        self.dow(f[5])?;
        if let Some(y) = year {
            if !starts_star(y) {
                self.out.years = Some(Box::new(self.years(y)?));
            } else {
                // `*` or `*/n`: only a step restricts.
                let years = self.years(y)?;
                if years.0.iter().map(|w| w.count_ones()).sum::<u32>()
                    != (MAX_YEAR - MIN_YEAR + 1) as u32
                {
                    self.out.years = Some(Box::new(years));
                }
            }
        }
        if starts_star(f[3]) {
            self.out.flags |= FLAG_DOM_STAR;
        }
        if starts_star(f[5]) {
            self.out.flags |= FLAG_DOW_STAR;
        }
        if !f[0].starts_with('*') && !f[1].starts_with('*') && !f[2].starts_with('*') {
            self.out.flags |= FLAG_FIXED_TIME;
        }
        Ok(())
    }

    fn err(&self, spec: &Spec, reason: impl Into<String>) -> ParseError {
        err(self.expr, Some(spec.field), reason)
    }

    /// A field of plain values, lists, ranges and steps.
    fn plain(&self, text: &str, spec: &Spec) -> Result<u64, ParseError> {
        if text == "*" {
            return Ok(span(spec.min, spec.max));
        }
        let mut mask = 0u64;
        for item in text.split(|c: char| c == ',') {
            mask |= self.item(item, spec)?;
        }
        Ok(mask)
    }

    fn years(&self, text: &str) -> Result<Years, ParseError> {
        let mut y = Years([0; 4]);
        for item in text.split(|c: char| c == ',') {
            let (lo, hi, step) = self.range(item, &YEAR)?;
            let mut v = lo;
            while v <= hi {
                let i = (v - MIN_YEAR as u32) as usize;
                y.0[i / 64] |= 1 << (i % 64);
                v += step;
            }
        }
        Ok(y)
    }

    /// One list item of a plain field, as a mask.
    fn item(&self, item: &str, spec: &Spec) -> Result<u64, ParseError> {
        let (lo, hi, step) = self.range(item, spec)?;
        if step == 1 {
            return Ok(span(lo, hi));
        }
        let mut mask = 0u64;
        let mut v = lo;
        while v <= hi {
            mask |= 1 << v;
            v += step;
        }
        Ok(mask)
    }

    /// Parses `*`, `?`, `a`, `a-b`, with an optional `/step`, into (low, high, step).
    fn range(&self, item: &str, spec: &Spec) -> Result<(u32, u32, u32), ParseError> {
        if item.is_empty() {
            return Err(self.err(spec, "empty value (two commas in a row, or a trailing comma?)"));
        }
        let (base, step) = match split_byte(item, b'/') {
            Some((b, s)) => (b, Some(self.step(s, item, spec)?)),
            None => (item, None),
        };
        let (lo, hi) = if base == "*" {
            (spec.min, spec.max)
        } else if base == "?" {
            if !matches!(spec.field, CronField::DayOfMonth | CronField::DayOfWeek) {
                return Err(self.err(spec, "? is only allowed in day-of-month and day-of-week"));
            }
            if step.is_some() {
                return Err(self.err(spec, format!("{item:?}: ? cannot take a step")));
            }
            (spec.min, spec.max)
        } else if let Some((a, b)) = split_byte(base, b'-') {
            let a = self.value(a, spec)?;
            let b = self.value(b, spec)?;
            if a > b {
                return Err(self.err(
                    spec,
                    format!("range {base} is reversed (the start must not be after the end)"),
                ));
            }
            (a, b)
        } else {
            let v = self.value(base, spec)?;
            match step {
                // `5/15` means from 5 to the end of the range, every 15.
                Some(_) => (v, spec.max),
                None => (v, v),
            }
        };
        Ok((lo, hi, step.unwrap_or(1)))
    }

    fn step(&self, s: &str, item: &str, spec: &Spec) -> Result<u32, ParseError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.err(spec, format!("{item:?}: step {s:?} is not a number")));
        }
        match s.parse::<u32>() {
            Ok(0) => Err(self.err(spec, format!("{item:?}: step must be at least 1"))),
            Ok(n) if n <= spec.max - spec.min + 1 => Ok(n),
            _ => Err(self.err(
                spec,
                format!("{item:?}: step {s} is larger than the range {}-{}", spec.min, spec.max),
            )),
        }
    }

    /// A number or a month/day name, range-checked.
    fn value(&self, s: &str, spec: &Spec) -> Result<u32, ParseError> {
        if s.is_empty() {
            return Err(self.err(spec, "empty value in range"));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u32>() {
                Ok(v) if v >= spec.min && v <= spec.max => Ok(v),
                _ => Err(self.err(spec, format!("{s} is out of range {}-{}", spec.min, spec.max))),
            };
        }
        let names: &[&str] = match spec.field {
            CronField::Month => &MONTHS,
            CronField::DayOfWeek => &DAYS,
            _ => &[],
        };
        if s.len() == 3 {
            let first = if spec.field == CronField::Month { 1 } else { 0 };
            for (i, n) in names.iter().enumerate() {
                if s.eq_ignore_ascii_case(n) {
                    return Ok(i as u32 + first);
                }
            }
        }
        if names.is_empty() {
            Err(self.err(spec, format!("{s:?} is not a number")))
        } else {
            Err(self.err(
                spec,
                format!(
                    "unknown name {s:?} (expected a number {}-{} or {}-{})",
                    spec.min,
                    spec.max,
                    names[0],
                    names[names.len() - 1]
                ),
            ))
        }
    }

    /// Day of month: plain items plus `L`, `L-n`, `nW`, `LW`.
    fn dom(&mut self, text: &str) -> Result<(), ParseError> {
        let spec = &DOM;
        if text == "*" || text == "?" {
            self.out.dom |= span(1, 31) as u32;
            return Ok(());
        }
        for item in text.split(|c: char| c == ',') {
            let l_minus = item.len() >= 2 && item.as_bytes()[..2].eq_ignore_ascii_case(b"L-");
            if item.eq_ignore_ascii_case("L") {
                self.out.dom_last |= 1;
            } else if item.eq_ignore_ascii_case("LW") {
                self.out.flags |= FLAG_LW;
            } else if let Some(n) = l_minus.then(|| &item[2..]) {
                match n.parse::<u32>() {
                    Ok(n) if n <= 30 => self.out.dom_last |= 1 << n,
                    _ => {
                        return Err(
                            self.err(spec, format!("{item:?}: L-n needs an offset n from 0 to 30"))
                        )
                    }
                }
            } else if let Some(day) = item.strip_suffix(['W', 'w']) {
                if day.contains(['-', '/', '*', '?']) {
                    return Err(self.err(
                        spec,
                        format!("{item:?}: W needs a single day (like 15W), not a range or step"),
                    ));
                }
                let d = self.value(day, spec)?;
                self.out.dom_nearest |= 1 << d;
            } else {
                if item.contains(['L', 'l', 'W', 'w', '#']) {
                    return Err(
                        self.err(spec, format!("{item:?}: expected L, L-n, nW, LW, or a day 1-31"))
                    );
                }
                self.out.dom |= self.item(item, spec)? as u32;
            }
        }
        Ok(())
    }

    /// Day of week: plain items (7 is Sunday too) plus `L` (Saturday), `nL`, `n#k`.
    fn dow(&mut self, text: &str) -> Result<(), ParseError> {
        let spec = &DOW;
        for item in text.split(|c: char| c == ',') {
            if let Some((day, nth)) = split_byte(item, b'#') {
                if day.contains(['-', '/', '*', '?']) {
                    return Err(self.err(
                        spec,
                        format!("{item:?}: # needs a single day (like MON#2), not a range"),
                    ));
                }
                let d = self.value(day, spec)? % 7;
                match nth.parse::<u32>() {
                    Ok(k @ 1..=5) => self.out.dow_nth[d as usize] |= 1 << k,
                    _ => {
                        return Err(self.err(
                            spec,
                            format!("{item:?}: #{nth} is not a week of the month (expected #1-#5)"),
                        ))
                    }
                }
            } else if item.eq_ignore_ascii_case("L") {
                // Quartz: L alone in day-of-week is the last day of the week, Saturday.
                self.out.dow |= 1 << 6;
            } else if item.len() > 1 && (item.ends_with('L') || item.ends_with('l')) {
                let day = &item[..item.len() - 1];
                if day.contains(['-', '/', '*', '?']) {
                    return Err(self.err(
                        spec,
                        format!("{item:?}: L needs a single day (like 5L or FRIL), not a range"),
                    ));
                }
                let d = self.value(day, spec)? % 7;
                self.out.dow_last |= 1 << d;
            } else {
                let m = self.item(item, spec)?;
                // 7 is Sunday, like 0.
                let m = (m | (m >> 7)) & 0x7f;
                self.out.dow |= m as u8;
            }
        }
        Ok(())
    }
}

/// Bits `lo..=hi` (hi <= 63).
#[inline]
fn span(lo: u32, hi: u32) -> u64 {
    (!0u64 >> (63 - hi)) & (!0u64 << lo)
}

/// `s.split_once(b)` for an ASCII byte, inlined (no memchr call: the items are a few bytes).
#[inline]
fn split_byte(s: &str, b: u8) -> Option<(&str, &str)> {
    let i = s.bytes().position(|x| x == b)?;
    Some((&s[..i], &s[i + 1..]))
}
