//! Cron expressions in plain English ("at 02:30, Monday through Friday").

use std::time::Duration;

use super::{CronExpression, FLAG_DOM_STAR, FLAG_DOW_STAR, FLAG_LW, MAX_YEAR, MIN_YEAR};

const MONTHS: [&str; 13] = [
    "",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] =
    ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const NTH: [&str; 6] = ["", "first", "second", "third", "fourth", "fifth"];

/// A set of values as runs: single values, `a through b`, or a step pattern.
enum Shape {
    All,
    Step { from: u32, step: u32 },
    Values(Vec<(u32, u32)>),
}

fn shape(mask: u64, min: u32, max: u32) -> Shape {
    let vals: Vec<u32> = (min..=max).filter(|v| mask & (1 << v) != 0).collect();
    if vals.len() as u32 == max - min + 1 {
        return Shape::All;
    }
    if vals.len() >= 3 {
        let step = vals[1] - vals[0];
        if step > 1
            && vals.windows(2).all(|w| w[1] - w[0] == step)
            && vals[0] < min + step
            && *vals.last().unwrap() + step > max
        {
            return Shape::Step { from: vals[0], step };
        }
    }
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for v in vals {
        match runs.last_mut() {
            Some((_, hi)) if *hi + 1 == v => *hi = v,
            _ => runs.push((v, v)),
        }
    }
    Shape::Values(runs)
}

fn join(items: &[String]) -> String {
    match items.len() {
        0 => String::new(),
        1 => items[0].clone(),
        n => format!("{} and {}", items[..n - 1].join(", "), items[n - 1]),
    }
}

fn runs_words(runs: &[(u32, u32)], name: impl Fn(u32) -> String) -> String {
    let parts: Vec<String> = runs
        .iter()
        .map(|&(a, b)| match b - a {
            0 => name(a),
            1 => format!("{} and {}", name(a), name(b)),
            _ => format!("{} through {}", name(a), name(b)),
        })
        .collect();
    join(&parts)
}

fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, x) if x != 11 => "st",
        (2, x) if x != 12 => "nd",
        (3, x) if x != 13 => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn single(mask: u64) -> Option<u32> {
    (mask.count_ones() == 1).then(|| mask.trailing_zeros())
}

/// "every 15 minutes", "at minute 5", "at minutes 0 and 30", "every minute".
fn unit_words(mask: u64, min: u32, max: u32, unit: &str) -> String {
    match shape(mask, min, max) {
        Shape::All => format!("every {unit}"),
        Shape::Step { from, step } if from == min => format!("every {step} {unit}s"),
        Shape::Step { from, step } => format!("every {step} {unit}s starting at {unit} {from}"),
        Shape::Values(runs) => {
            let plural = runs.len() > 1 || runs[0].0 != runs[0].1;
            let u = if plural { format!("{unit}s") } else { unit.to_string() };
            format!("at {u} {}", runs_words(&runs, |v| v.to_string()))
        }
    }
}

pub(crate) fn explain(c: &CronExpression) -> String {
    let mut out = time_words(c);
    if let Some(days) = day_words(c) {
        out.push_str(", ");
        out.push_str(&days);
    }
    if let Shape::Values(runs) = shape(u64::from(c.months), 1, 12) {
        out.push_str(", in ");
        out.push_str(&runs_words(&runs, |m| MONTHS[m as usize].to_string()));
    }
    if c.years.is_some() {
        let years: Vec<u32> = c.year();
        let mut runs: Vec<(u32, u32)> = Vec::new();
        for y in years {
            match runs.last_mut() {
                Some((_, hi)) if *hi + 1 == y => *hi = y,
                _ => runs.push((y, y)),
            }
        }
        if runs.len() <= 4 {
            out.push_str(", in ");
            out.push_str(&runs_words(&runs, |y| y.to_string()));
        } else {
            out.push_str(&format!(", in some years from {MIN_YEAR} to {MAX_YEAR}"));
        }
    }
    if let Some(name) = c.tz.as_ref().and_then(|t| t.iana_name()) {
        out.push_str(&format!(" ({name} time)"));
    }
    out
}

fn time_words(c: &CronExpression) -> String {
    let (s, m, h) = (c.seconds, c.minutes, u64::from(c.hours));
    // A few exact times of day: list them.
    if let (Some(sec), Some(min)) = (single(s), single(m)) {
        let hours: Vec<u32> = (0..24).filter(|v| h & (1 << v) != 0).collect();
        if hours.len() <= 4 {
            let times: Vec<String> = hours
                .iter()
                .map(|hh| {
                    if sec == 0 {
                        format!("{hh:02}:{min:02}")
                    } else {
                        format!("{hh:02}:{min:02}:{sec:02}")
                    }
                })
                .collect();
            return format!("at {}", join(&times));
        }
    }
    let mut parts = Vec::new();
    if single(s) != Some(0) {
        parts.push(unit_words(s, 0, 59, "second"));
    }
    let minute_all = matches!(shape(m, 0, 59), Shape::All);
    if !minute_all || parts.is_empty() {
        let w = unit_words(m, 0, 59, "minute");
        parts.push(if parts.is_empty() { w } else { format!("{w} past the hour") });
    } else {
        parts.push("of every minute".into());
    }
    match shape(h, 0, 23) {
        Shape::All => {}
        Shape::Step { from: 0, step } => parts.push(format!("every {step} hours")),
        Shape::Step { from, step } => parts.push(format!("every {step} hours from {from:02}:00")),
        Shape::Values(runs) => parts.push(runs_words_hours(&runs)),
    }
    parts.join(", ")
}

fn runs_words_hours(runs: &[(u32, u32)]) -> String {
    let parts: Vec<String> = runs
        .iter()
        .map(|&(a, b)| {
            if a == b {
                format!("during hour {a:02}:00-{a:02}:59")
            } else {
                format!("between {a:02}:00 and {b:02}:59")
            }
        })
        .collect();
    join(&parts)
}

fn day_words(c: &CronExpression) -> Option<String> {
    let or_mode = c.flags & (FLAG_DOM_STAR | FLAG_DOW_STAR) == 0;
    let dom_all =
        c.dom == 0xffff_fffe && c.dom_last == 0 && c.dom_nearest == 0 && c.flags & FLAG_LW == 0;
    let dow_all = c.dow == 0x7f && c.dow_last == 0 && c.dow_nth == [0; 7];
    let dom = (!dom_all).then(|| dom_words(c));
    let dow = (!dow_all).then(|| dow_words(c));
    match (dom, dow) {
        (None, None) => None,
        (Some(d), None) => Some(d),
        (None, Some(w)) => Some(w),
        (Some(d), Some(w)) if or_mode => Some(format!("{d} or {w}")),
        (Some(d), Some(w)) => Some(format!("{d}, if it is also {w}")),
    }
}

fn dom_words(c: &CronExpression) -> String {
    let mut parts = Vec::new();
    if c.dom != 0 {
        match shape(u64::from(c.dom), 1, 31) {
            Shape::All => parts.push("every day".to_string()),
            Shape::Step { from, step } => {
                parts.push(format!("every {step} days of the month from the {}", ordinal(from)))
            }
            Shape::Values(runs) => {
                parts.push(format!("on the {} of the month", runs_words(&runs, ordinal)))
            }
        }
    }
    let mut l = c.dom_last;
    while l != 0 {
        let n = l.trailing_zeros();
        l &= l - 1;
        parts.push(match n {
            0 => "on the last day of the month".to_string(),
            1 => "on the day before the last day of the month".to_string(),
            n => format!("{n} days before the last day of the month"),
        });
    }
    let mut w = c.dom_nearest;
    while w != 0 {
        let d = w.trailing_zeros();
        w &= w - 1;
        parts.push(format!("on the weekday nearest the {} of the month", ordinal(d)));
    }
    if c.flags & FLAG_LW != 0 {
        parts.push("on the last weekday of the month".to_string());
    }
    join(&parts)
}

fn dow_words(c: &CronExpression) -> String {
    let mut parts = Vec::new();
    if c.dow != 0 {
        match shape(u64::from(c.dow), 0, 6) {
            Shape::All => parts.push("every day of the week".to_string()),
            Shape::Step { .. } | Shape::Values(_) => {
                let runs = match shape(u64::from(c.dow), 0, 6) {
                    Shape::Values(r) => r,
                    _ => (0..7).filter(|v| c.dow & (1 << v) != 0).map(|v| (v, v)).collect(),
                };
                parts.push(format!("on {}", runs_words(&runs, |d| DAYS[d as usize].to_string())));
            }
        }
    }
    for (d, &nth) in c.dow_nth.iter().enumerate() {
        for (k, word) in NTH.iter().enumerate().skip(1) {
            if nth & (1 << k) != 0 {
                parts.push(format!("on the {word} {} of the month", DAYS[d]));
            }
        }
    }
    for (d, day) in DAYS.iter().enumerate() {
        if c.dow_last & (1 << d) != 0 {
            parts.push(format!("on the last {day} of the month"));
        }
    }
    let text = join(&parts);
    // The phrasing: "at 02:30, Monday through Friday".
    text.strip_prefix("on ").filter(|t| !t.starts_with("the ")).map(str::to_string).unwrap_or(text)
}

/// "1 hour 30 minutes", "90 seconds" style words for an interval.
pub(crate) fn duration_words(d: Duration) -> String {
    let mut secs = d.as_secs();
    let ms = d.subsec_millis();
    let mut parts = Vec::new();
    for (unit, size) in [("day", 86_400), ("hour", 3600), ("minute", 60), ("second", 1)] {
        let n = secs / size;
        secs %= size;
        if n > 0 {
            parts.push(format!("{n} {unit}{}", if n == 1 { "" } else { "s" }));
        }
    }
    if ms > 0 {
        parts.push(format!("{ms} ms"));
    }
    parts.join(" ")
}
