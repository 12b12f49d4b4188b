//! Finding the next and previous fire.
//!
//! Two layers. The civil layer ([`CronExpression::next_civil`] and
//! [`CronExpression::prev_civil`]) finds the nearest matching wall-clock time
//! field by field with bit tricks: a handful of steps per call, never a walk
//! over seconds or days, and at most one step per month across the year range
//! for a schedule that rarely matches. The zone layer turns wall-clock times
//! into instants and applies the DST rules of the module docs, asking jiff for
//! offsets and transitions only.

use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;

use super::civil::Civil;
use super::{CronExpression, MAX_YEAR, MIN_YEAR};

#[inline]
fn next_bit(mask: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let m = mask & (!0u64 << from);
    if m == 0 {
        None
    } else {
        Some(m.trailing_zeros())
    }
}

#[inline]
fn prev_bit(mask: u64, from: u32) -> Option<u32> {
    let m = if from >= 63 { mask } else { mask & ((1u64 << (from + 1)) - 1) };
    if m == 0 {
        None
    } else {
        Some(63 - m.leading_zeros())
    }
}

impl CronExpression {
    fn next_year(&self, y: i32) -> Option<i32> {
        let mut y = y.max(MIN_YEAR);
        while y <= MAX_YEAR {
            if self.year_ok(y) {
                return Some(y);
            }
            y += 1;
        }
        None
    }

    fn prev_year(&self, y: i32) -> Option<i32> {
        let mut y = y.min(MAX_YEAR);
        while y >= MIN_YEAR {
            if self.year_ok(y) {
                return Some(y);
            }
            y -= 1;
        }
        None
    }

    /// The earliest matching wall-clock time at or after `c`.
    pub(crate) fn next_civil(&self, c: Civil) -> Option<Civil> {
        let Civil {
            year: mut y,
            month: mut mo,
            day: mut d,
            hour: mut h,
            minute: mut mi,
            second: mut s,
        } = c;
        let mut cached: (i32, u32, u64) = (0, 0, 0);
        loop {
            let ny = self.next_year(y)?;
            if ny != y {
                (y, mo, d, h, mi, s) = (ny, 1, 1, 0, 0, 0);
            }
            match next_bit(u64::from(self.months), mo) {
                None => {
                    (y, mo, d, h, mi, s) = (y + 1, 1, 1, 0, 0, 0);
                    continue;
                }
                Some(m) if m != mo => (mo, d, h, mi, s) = (m, 1, 0, 0, 0),
                _ => {}
            }
            if cached.0 != y || cached.1 != mo {
                cached = (y, mo, self.day_mask(y, mo));
            }
            match next_bit(cached.2, d) {
                None => {
                    (mo, d, h, mi, s) = (mo + 1, 1, 0, 0, 0);
                    if mo > 12 {
                        (y, mo) = (y + 1, 1);
                    }
                    continue;
                }
                Some(x) if x != d => (d, h, mi, s) = (x, 0, 0, 0),
                _ => {}
            }
            match next_bit(u64::from(self.hours), h) {
                None => {
                    (d, h, mi, s) = (d + 1, 0, 0, 0);
                    continue;
                }
                Some(x) if x != h => (h, mi, s) = (x, 0, 0),
                _ => {}
            }
            match next_bit(self.minutes, mi) {
                None => {
                    (h, mi, s) = (h + 1, 0, 0);
                    if h == 24 {
                        (d, h) = (d + 1, 0);
                    }
                    continue;
                }
                Some(x) if x != mi => (mi, s) = (x, 0),
                _ => {}
            }
            match next_bit(self.seconds, s) {
                None => {
                    (mi, s) = (mi + 1, 0);
                    if mi == 60 {
                        (h, mi) = (h + 1, 0);
                        if h == 24 {
                            (d, h) = (d + 1, 0);
                        }
                    }
                    continue;
                }
                Some(x) => {
                    return Some(Civil {
                        year: y,
                        month: mo,
                        day: d,
                        hour: h,
                        minute: mi,
                        second: x,
                    })
                }
            }
        }
    }

    /// The latest matching wall-clock time at or before `c`.
    pub(crate) fn prev_civil(&self, c: Civil) -> Option<Civil> {
        let Civil {
            year: mut y,
            month: mut mo,
            day: mut d,
            hour: mut h,
            minute: mut mi,
            second: mut s,
        } = c;
        let mut cached: (i32, u32, u64) = (0, 0, 0);
        loop {
            let py = self.prev_year(y)?;
            if py != y {
                (y, mo, d, h, mi, s) = (py, 12, 31, 23, 59, 59);
            }
            match prev_bit(u64::from(self.months), mo) {
                None => {
                    (y, mo, d, h, mi, s) = (y - 1, 12, 31, 23, 59, 59);
                    continue;
                }
                Some(m) if m != mo => (mo, d, h, mi, s) = (m, 31, 23, 59, 59),
                _ => {}
            }
            if cached.0 != y || cached.1 != mo {
                cached = (y, mo, self.day_mask(y, mo));
            }
            match prev_bit(cached.2, d) {
                None => {
                    (d, h, mi, s) = (31, 23, 59, 59);
                    if mo == 1 {
                        (y, mo) = (y - 1, 12);
                    } else {
                        mo -= 1;
                    }
                    continue;
                }
                Some(x) if x != d => (d, h, mi, s) = (x, 23, 59, 59),
                _ => {}
            }
            match prev_bit(u64::from(self.hours), h) {
                None => {
                    // Day 0 matches nothing, so this moves to the previous month.
                    (d, h, mi, s) = (d - 1, 23, 59, 59);
                    continue;
                }
                Some(x) if x != h => (h, mi, s) = (x, 59, 59),
                _ => {}
            }
            match prev_bit(self.minutes, mi) {
                None => {
                    if h == 0 {
                        (d, h) = (d - 1, 23);
                    } else {
                        h -= 1;
                    }
                    (mi, s) = (59, 59);
                    continue;
                }
                Some(x) if x != mi => (mi, s) = (x, 59),
                _ => {}
            }
            match prev_bit(self.seconds, s) {
                None => {
                    if mi == 0 {
                        mi = 59;
                        if h == 0 {
                            (d, h) = (d - 1, 23);
                        } else {
                            h -= 1;
                        }
                    } else {
                        mi -= 1;
                    }
                    s = 59;
                    continue;
                }
                Some(x) => {
                    return Some(Civil {
                        year: y,
                        month: mo,
                        day: d,
                        hour: h,
                        minute: mi,
                        second: x,
                    })
                }
            }
        }
    }
}

/// `from` rounded down to a whole second, in seconds.
#[inline]
fn floor_second(t: Timestamp) -> i64 {
    let s = t.as_second();
    if t.subsec_nanosecond() < 0 {
        s - 1
    } else {
        s
    }
}

/// `from` rounded up to a whole second, in seconds.
#[inline]
fn ceil_second(t: Timestamp) -> i64 {
    let s = t.as_second();
    if t.subsec_nanosecond() > 0 {
        s + 1
    } else {
        s
    }
}

#[inline]
fn ts(s: i64) -> Option<Timestamp> {
    Timestamp::from_second(s).ok()
}

/// The offset of a zone that has a single offset forever (UTC, fixed offsets).
#[inline]
fn fixed_offset(tz: &TimeZone) -> Option<i64> {
    match tz.iana_name() {
        Some("UTC") => Some(0),
        Some(_) => None,
        None => tz.to_fixed_offset().ok().map(|o| i64::from(o.seconds())),
    }
}

pub(crate) fn next_after(c: &CronExpression, from: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
    let start = floor_second(from) + 1;
    if let Some(off) = fixed_offset(tz) {
        let civil = c.next_civil(Civil::from_local_seconds(start + off))?;
        return ts(civil.to_local_seconds() - off);
    }
    if c.is_fixed_time() {
        next_fixed(c, start, tz)
    } else {
        next_elapsed(c, start, tz)
    }
}

pub(crate) fn prev_before(c: &CronExpression, from: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
    let end = ceil_second(from) - 1;
    if let Some(off) = fixed_offset(tz) {
        let civil = c.prev_civil(Civil::from_local_seconds(end + off))?;
        return ts(civil.to_local_seconds() - off);
    }
    if c.is_fixed_time() {
        prev_fixed(c, end, tz)
    } else {
        prev_elapsed(c, end, tz)
    }
}

/// Elapsed-time rule: walk the offset segments forward; in each, the first
/// matching wall-clock time that lies inside the segment is the answer.
fn next_elapsed(c: &CronExpression, start: i64, tz: &TimeZone) -> Option<Timestamp> {
    let mut t0 = start;
    loop {
        let t0_ts = ts(t0)?;
        let off = i64::from(tz.to_offset(t0_ts).seconds());
        let civil = c.next_civil(Civil::from_local_seconds(t0 + off))?;
        let cand = civil.to_local_seconds() - off;
        match tz.following(t0_ts).next() {
            Some(tr) if cand >= tr.timestamp().as_second() => t0 = tr.timestamp().as_second(),
            _ => return ts(cand),
        }
    }
}

/// Mirror of [`next_elapsed`]: walk the offset segments backward.
fn prev_elapsed(c: &CronExpression, end: i64, tz: &TimeZone) -> Option<Timestamp> {
    let mut t1 = end;
    loop {
        let t1_ts = ts(t1)?;
        let off = i64::from(tz.to_offset(t1_ts).seconds());
        let civil = c.prev_civil(Civil::from_local_seconds(t1 + off))?;
        let cand = civil.to_local_seconds() - off;
        // The transition that starts t1's segment (at or before t1).
        let seg_start = tz.preceding(ts(t1 + 1)?).next().map(|tr| tr.timestamp().as_second());
        match seg_start {
            Some(s) if cand < s => t1 = s - 1,
            _ => return ts(cand),
        }
    }
}

/// Where a wall-clock time lands for a fixed-time schedule.
enum Landing {
    /// Exists once (or, in a fold, its first occurrence): the instant.
    At(i64),
    /// Skipped by a gap: the instant the gap ends, and the wall-clock time the gap starts.
    Gap { end: i64, civil_start: i64 },
    /// In a fold (first occurrence returned) and the wall-clock time the fold ends.
    Fold { first: i64, civil_end: i64 },
}

fn land(civil: Civil, tz: &TimeZone) -> Option<Landing> {
    let local = civil.to_local_seconds();
    let dt = jiff::civil::DateTime::new(
        civil.year as i16,
        civil.month as i8,
        civil.day as i8,
        civil.hour as i8,
        civil.minute as i8,
        civil.second as i8,
        0,
    )
    .ok()?;
    Some(match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => Landing::At(local - i64::from(offset.seconds())),
        AmbiguousOffset::Gap { before, after } => {
            // The transition lies in (local - after, local - before].
            let lo = local - i64::from(after.seconds());
            let tr = tz.following(ts(lo)?).next()?.timestamp().as_second();
            Landing::Gap { end: tr, civil_start: tr + i64::from(before.seconds()) }
        }
        AmbiguousOffset::Fold { before, after } => {
            let first = local - i64::from(before.seconds());
            let tr = tz.following(ts(first)?).next()?.timestamp().as_second();
            debug_assert!(after.seconds() < before.seconds());
            Landing::Fold { first, civil_end: tr + i64::from(before.seconds()) }
        }
    })
}

/// Fixed-time rule: wall-clock times map to instants (a gap to its end, a fold
/// to its first pass); that map never decreases, so the first matching time
/// whose instant is after `from` is the answer.
fn next_fixed(c: &CronExpression, start: i64, tz: &TimeZone) -> Option<Timestamp> {
    // The offset just before `start`: when `start` is the end of a gap, the
    // skipped times land at `start` and are still ahead.
    let off = i64::from(tz.to_offset(ts(start - 1)?).seconds());
    let mut local = start + off;
    loop {
        let civil = c.next_civil(Civil::from_local_seconds(local))?;
        match land(civil, tz)? {
            Landing::At(t) | Landing::Gap { end: t, .. } | Landing::Fold { first: t, .. }
                if t >= start =>
            {
                return ts(t)
            }
            // `from` is in the second pass of this fold: its wall-clock times
            // already fired in the first pass. Go on after the fold.
            Landing::Fold { civil_end, .. } => local = civil_end.max(civil.to_local_seconds() + 1),
            _ => local = civil.to_local_seconds() + 1,
        }
    }
}

/// Mirror of [`next_fixed`].
fn prev_fixed(c: &CronExpression, end: i64, tz: &TimeZone) -> Option<Timestamp> {
    let off = i64::from(tz.to_offset(ts(end)?).seconds());
    let mut local = end + off;
    // In the second pass of a fold, later wall-clock times of the fold fired in
    // the first pass, before `from`: start from the fold's end.
    let here = Civil::from_local_seconds(local);
    if let Some(Landing::Fold { first, civil_end }) = land(here, tz) {
        if first < end {
            local = local.max(civil_end - 1);
        }
    }
    loop {
        let civil = c.prev_civil(Civil::from_local_seconds(local))?;
        match land(civil, tz)? {
            Landing::At(t) | Landing::Fold { first: t, .. } if t <= end => return ts(t),
            Landing::Gap { end: t, .. } if t <= end => return ts(t),
            Landing::Gap { civil_start, .. } => local = civil_start - 1,
            _ => local = civil.to_local_seconds() - 1,
        }
    }
}

/// One stretch of a zone with a single offset: instants `start..end`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seg {
    start: i64,
    end: i64,
    off: i64,
}

fn segment(tz: &TimeZone, t: i64) -> Option<Seg> {
    let t_ts = ts(t)?;
    let off = i64::from(tz.to_offset(t_ts).seconds());
    let start =
        tz.preceding(ts(t + 1)?).next().map_or(i64::MIN / 2, |tr| tr.timestamp().as_second());
    let end = tz.following(t_ts).next().map_or(i64::MAX / 2, |tr| tr.timestamp().as_second());
    Some(Seg { start, end, off })
}

/// The state [`next_after_cached`] keeps between calls.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SegCache {
    seg: Option<Seg>,
    /// The last fire came less than a day after its start: worth a segment.
    frequent: bool,
}

/// [`next_after`] with the offset segment kept between calls: inside a
/// segment, and a day away from its ends for a fixed-time schedule (so that
/// no gap or fold can be involved), the answer needs no zone look-up at all.
/// Only used while fires come less than a day apart; sparser schedules cross
/// segments too often for the cache to pay.
pub(crate) fn next_after_cached(
    c: &CronExpression,
    from: Timestamp,
    tz: &TimeZone,
    cache: &mut SegCache,
) -> Option<Timestamp> {
    if fixed_offset(tz).is_some() {
        return next_after(c, from, tz);
    }
    let start = floor_second(from) + 1;
    if cache.frequent {
        if cache.seg.is_none_or(|s| start < s.start || start >= s.end) {
            cache.seg = segment(tz, start);
        }
        // No fire left in the year range: the full search below decides.
        let found = cache
            .seg
            .and_then(|s| Some((s, c.next_civil(Civil::from_local_seconds(start + s.off))?)));
        if let Some((s, civil)) = found {
            let cand = civil.to_local_seconds() - s.off;
            let safe = if c.is_fixed_time() {
                // `start - 1` in the segment too: times skipped by a gap that
                // ends at `s.start` fire at `s.start` (see `next_fixed`).
                start > s.start && cand >= s.start + 86_400 && cand + 86_400 < s.end
            } else {
                cand < s.end
            };
            if safe && cand >= start {
                cache.frequent = cand - start < 86_400;
                return ts(cand);
            }
        }
    }
    let next = next_after(c, from, tz)?;
    cache.frequent = next.as_second() - start < 86_400;
    Some(next)
}
