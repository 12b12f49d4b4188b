//! Property, robustness and differential tests for the cron engine.
//!
//! * Generated valid expressions (5/6/7 fields, lists, ranges, steps, names,
//!   `?`, and the Quartz specials `L`, `L-n`, `nW`, `LW`, `nL`, `n#k`) are checked
//!   against an independent model written here: a naive matcher for wall-clock
//!   times plus the DST rules of the module docs, turned into "the set of fire
//!   instants" by enumerating candidate wall-clock times. `next_after`,
//!   `prev_before` and `upcoming` must agree with that set in every zone.
//! * `Schedule::parse` and the searches must never panic on arbitrary input.
//! * The next and previous fires must agree with the `croner` crate on the
//!   syntax both support, with the exclusions listed in `croner_differential`.

use std::fmt;

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, Offset, TimeZone};
use jiff::{Timestamp, ZonedDateTime};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rota::{CronExpression, ErrorKind, Schedule};

// ------------------------------------------------------------------ syntax tree

#[derive(Clone, Copy, Debug, PartialEq)]
enum Names {
    None,
    Month,
    Dow,
}

#[derive(Clone, Copy, Debug)]
struct Spec {
    min: u32,
    max: u32,
    names: Names,
}

const SECOND: Spec = Spec { min: 0, max: 59, names: Names::None };
const MINUTE: Spec = Spec { min: 0, max: 59, names: Names::None };
const HOUR: Spec = Spec { min: 0, max: 23, names: Names::None };
const DOM: Spec = Spec { min: 1, max: 31, names: Names::None };
const MONTH: Spec = Spec { min: 1, max: 12, names: Names::Month };
const DOW: Spec = Spec { min: 0, max: 7, names: Names::Dow };
const YEAR: Spec = Spec { min: 1970, max: 2199, names: Names::None };

const MONTH_NAMES: [&str; 12] =
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One list item of a plain field.
#[derive(Clone, Debug)]
enum Item {
    Star,
    StarStep(u32),
    Val(u32),
    Range(u32, u32),
    RangeStep(u32, u32, u32),
    /// `v/k`: from v to the end of the field's range, every k.
    ValStep(u32, u32),
}

impl Item {
    fn values(&self, spec: Spec) -> Vec<u32> {
        let (lo, hi, step) = match *self {
            Item::Star => (spec.min, spec.max, 1),
            Item::StarStep(k) => (spec.min, spec.max, k),
            Item::Val(v) => (v, v, 1),
            Item::Range(a, b) => (a, b, 1),
            Item::RangeStep(a, b, k) => (a, b, k),
            Item::ValStep(v, k) => (v, spec.max, k),
        };
        (lo..=hi).step_by(step as usize).collect()
    }
}

/// An item and how to spell it: bit 0 uses a name for the first value, bit 1
/// for the second, the higher bits choose the letter case of names.
#[derive(Clone, Debug)]
struct Tok {
    item: Item,
    style: u8,
}

#[derive(Clone, Debug)]
enum DomItem {
    Plain(Tok),
    Last,
    LastOffset(u32),
    Nearest(u32),
    LastWeekday,
}

#[derive(Clone, Debug)]
enum DowItem {
    Plain(Tok),
    /// `L` alone: Saturday.
    Saturday,
    /// `wL`: the last weekday w of the month.
    LastOf(u32, u8),
    /// `w#k`.
    Nth(u32, u32, u8),
}

/// A day field: `?`, or a list (spelled in lower case when the flag is set).
#[derive(Clone, Debug)]
enum DayField<T> {
    Question,
    Items(Vec<T>, bool),
}

#[derive(Clone)]
struct Expr {
    sec: Option<Vec<Tok>>,
    min: Vec<Tok>,
    hour: Vec<Tok>,
    dom: DayField<DomItem>,
    month: Vec<Tok>,
    dow: DayField<DowItem>,
    year: Option<Vec<Tok>>,
    /// Spell it so that croner reads it the same way (see `croner_differential`).
    for_croner: bool,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text())
    }
}

fn with_case(s: &str, style: u8) -> String {
    match (style >> 2) % 3 {
        0 => s.to_string(),
        1 => s.to_ascii_lowercase(),
        _ => format!("{}{}", &s[..1], s[1..].to_ascii_lowercase()),
    }
}

fn value_text(v: u32, spec: Spec, named: bool, style: u8) -> String {
    let name = match spec.names {
        Names::Month => Some(MONTH_NAMES[v as usize - 1]),
        Names::Dow if v < 7 => Some(DAY_NAMES[v as usize]),
        _ => None,
    };
    match name {
        Some(n) if named => with_case(n, style),
        _ => v.to_string(),
    }
}

impl Tok {
    fn text(&self, spec: Spec, for_croner: bool) -> String {
        let first = |v| value_text(v, spec, self.style & 1 != 0, self.style);
        // croner rewrites "-SUN" to "-7" before it parses, so "SUN-SUN" means
        // 0-7 (every day) there; spell a range end of Sunday as 0 for croner.
        let second = |v| {
            let named = self.style & 2 != 0 && !(for_croner && spec.names == Names::Dow && v == 0);
            value_text(v, spec, named, self.style)
        };
        match self.item {
            Item::Star => "*".into(),
            Item::StarStep(k) => format!("*/{k}"),
            Item::Val(v) => first(v),
            Item::Range(a, b) => format!("{}-{}", first(a), second(b)),
            Item::RangeStep(a, b, k) => format!("{}-{}/{k}", first(a), second(b)),
            Item::ValStep(v, k) => format!("{}/{k}", first(v)),
        }
    }
}

fn list_text(toks: &[Tok], spec: Spec, for_croner: bool) -> String {
    toks.iter().map(|t| t.text(spec, for_croner)).collect::<Vec<_>>().join(",")
}

impl Expr {
    fn dom_text(&self) -> String {
        match &self.dom {
            DayField::Question => "?".into(),
            DayField::Items(items, lower) => {
                let s = items
                    .iter()
                    .map(|i| match i {
                        DomItem::Plain(t) => t.text(DOM, self.for_croner),
                        DomItem::Last => "L".into(),
                        DomItem::LastOffset(n) => format!("L-{n}"),
                        DomItem::Nearest(d) => format!("{d}W"),
                        DomItem::LastWeekday => "LW".into(),
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                if *lower {
                    s.to_ascii_lowercase()
                } else {
                    s
                }
            }
        }
    }

    fn dow_text(&self) -> String {
        match &self.dow {
            DayField::Question => "?".into(),
            DayField::Items(items, lower) => {
                let s = items
                    .iter()
                    .map(|i| match i {
                        DowItem::Plain(t) => t.text(DOW, self.for_croner),
                        DowItem::Saturday => "L".into(),
                        DowItem::LastOf(w, style) => {
                            format!("{}L", value_text(*w, DOW, style & 1 != 0, *style))
                        }
                        DowItem::Nth(w, k, style) => {
                            format!("{}#{k}", value_text(*w, DOW, style & 1 != 0, *style))
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                if *lower {
                    s.to_ascii_lowercase()
                } else {
                    s
                }
            }
        }
    }

    fn text(&self) -> String {
        let c = self.for_croner;
        let mut parts = Vec::new();
        if let Some(s) = &self.sec {
            parts.push(list_text(s, SECOND, c));
        }
        parts.push(list_text(&self.min, MINUTE, c));
        parts.push(list_text(&self.hour, HOUR, c));
        parts.push(self.dom_text());
        parts.push(list_text(&self.month, MONTH, c));
        parts.push(self.dow_text());
        if let Some(y) = &self.year {
            parts.push(list_text(y, YEAR, c));
        }
        parts.join(" ")
    }
}

// ------------------------------------------------------------------ generators

fn item_strategy(spec: Spec, allow_star_step: bool) -> BoxedStrategy<Item> {
    let (min, max) = (spec.min, spec.max);
    let size = max - min + 1;
    let sorted = (min..=max, min..=max).prop_map(|(a, b)| (a.min(b), a.max(b)));
    let step = prop_oneof![2 => 1..=size.min(6), 1 => 1..=size];
    let star_step_weight = if allow_star_step { 2 } else { 0 };
    // Hours 0-3 hold most DST transitions of the test zones: weigh them up.
    let value = if spec.max == 23 {
        prop_oneof![1 => 0..=3u32, 2 => min..=max].boxed()
    } else {
        (min..=max).boxed()
    };
    prop_oneof![
        3 => Just(Item::Star),
        star_step_weight => step.clone().prop_map(Item::StarStep),
        4 => value.prop_map(Item::Val),
        2 => sorted.clone().prop_map(|(a, b)| Item::Range(a, b)),
        1 => (sorted, step.clone()).prop_map(|((a, b), k)| Item::RangeStep(a, b, k)),
        1 => (min..=max, step).prop_map(|(v, k)| Item::ValStep(v, k)),
    ]
    .boxed()
}

fn tok_strategy(spec: Spec, allow_star_step: bool) -> BoxedStrategy<Tok> {
    (item_strategy(spec, allow_star_step), any::<u8>())
        .prop_map(|(item, style)| Tok { item, style })
        .boxed()
}

/// A list: usually one item, sometimes two or three. croner rejects `*` as a
/// list item ("5,*"), so for croner only a single `*` is generated.
fn list_strategy(spec: Spec, for_croner: bool, allow_star_step: bool) -> BoxedStrategy<Vec<Tok>> {
    let tok = tok_strategy(spec, allow_star_step);
    let list = prop::collection::vec(tok.clone(), 2..=3)
        .prop_filter("croner: no * in a list", move |v| {
            !for_croner || v.iter().all(|t| !matches!(t.item, Item::Star))
        });
    prop_oneof![3 => tok.prop_map(|t| vec![t]), 1 => list].boxed()
}

fn dom_strategy(for_croner: bool) -> BoxedStrategy<DayField<DomItem>> {
    // croner has no `L-n`.
    let last_offset_weight = if for_croner { 0 } else { 1 };
    let item = prop_oneof![
        8 => tok_strategy(DOM, true).prop_map(DomItem::Plain),
        1 => Just(DomItem::Last),
        last_offset_weight => (0..=30u32).prop_map(DomItem::LastOffset),
        1 => prop_oneof![(1..=31u32), prop::sample::select(vec![1u32, 2, 28, 29, 30, 31])]
            .prop_map(DomItem::Nearest),
        1 => Just(DomItem::LastWeekday),
    ];
    let items = prop_oneof![3 => item.clone().prop_map(|i| vec![i]), 1 => prop::collection::vec(item, 2..=3)]
        .prop_filter("croner: no * in a list", move |v| {
            !for_croner || v.len() == 1 || v.iter().all(|i| !matches!(i, DomItem::Plain(Tok { item: Item::Star, .. })))
        });
    prop_oneof![
        1 => Just(DayField::Question),
        2 => Just(DayField::Items(vec![DomItem::Plain(Tok { item: Item::Star, style: 0 })], false)),
        5 => (items, prop::bool::weighted(0.2)).prop_map(|(v, l)| DayField::Items(v, l)),
    ]
    .boxed()
}

fn dow_strategy(for_croner: bool) -> BoxedStrategy<DayField<DowItem>> {
    // croner reads `L` alone in day-of-week as nothing (rota: Saturday, Quartz).
    let saturday_weight = if for_croner { 0 } else { 1 };
    let item = prop_oneof![
        8 => tok_strategy(DOW, true).prop_map(DowItem::Plain),
        saturday_weight => Just(DowItem::Saturday),
        1 => (0..=7u32, any::<u8>()).prop_map(|(w, s)| DowItem::LastOf(w, s)),
        2 => (0..=7u32, 1..=5u32, any::<u8>()).prop_map(|(w, k, s)| DowItem::Nth(w, k, s)),
    ];
    let items = prop_oneof![3 => item.clone().prop_map(|i| vec![i]), 1 => prop::collection::vec(item, 2..=3)]
        .prop_filter("croner: no * in a list", move |v| {
            !for_croner || v.len() == 1 || v.iter().all(|i| !matches!(i, DowItem::Plain(Tok { item: Item::Star, .. })))
        });
    prop_oneof![
        1 => Just(DayField::Question),
        3 => Just(DayField::Items(vec![DowItem::Plain(Tok { item: Item::Star, style: 0 })], false)),
        4 => (items, prop::bool::weighted(0.2)).prop_map(|(v, l)| DayField::Items(v, l)),
    ]
    .boxed()
}

fn year_strategy(for_croner: bool) -> BoxedStrategy<Vec<Tok>> {
    // croner's year field runs from year 1, so `*/k` steps from year 1 there and
    // from 1970 in rota (the documented year range): no `*/k` for croner.
    prop_oneof![
        4 => Just(vec![Tok { item: Item::Star, style: 0 }]),
        1 => list_strategy(YEAR, for_croner, !for_croner),
    ]
    .boxed()
}

fn is_star(field: &str) -> bool {
    field == "*" || field == "?"
}

/// Expressions; about a third are daily (month and day fields `*`), so that
/// starting instants near a DST transition meet fires on the transition day.
fn expr_strategy(for_croner: bool) -> impl Strategy<Value = Expr> {
    (
        (0..3u8, prop::bool::weighted(0.35)),
        list_strategy(SECOND, for_croner, true),
        list_strategy(MINUTE, for_croner, true),
        list_strategy(HOUR, for_croner, true),
        dom_strategy(for_croner),
        list_strategy(MONTH, for_croner, true),
        dow_strategy(for_croner),
        year_strategy(for_croner),
    )
        .prop_map(move |((n, daily), sec, min, hour, dom, month, dow, year)| {
            let (dom, month, dow) =
                if daily { (star_dom(), vec![star_tok()], star_dow()) } else { (dom, month, dow) };
            let mut e = Expr {
                sec: (n >= 1).then_some(sec),
                min,
                hour,
                dom,
                month,
                dow,
                year: (n == 2).then_some(year),
                for_croner,
            };
            if for_croner {
                croner_compatible(&mut e);
            }
            e
        })
}

/// Daily schedules at the wall-clock times where the test zones change
/// offset: New York 02:00, London 01:00/02:00, Lord Howe 02:00 (30 min),
/// Santiago 24:00/00:00, Chatham 02:45/03:45.
fn dst_expr_strategy() -> impl Strategy<Value = Expr> {
    let tok = |item| Tok { item, style: 0 };
    // A second before the transition in the new offset's wall-clock time is
    // x:59:59 (x:29:59 in Lord Howe, 2:44:59 in Chatham): include those.
    let hour_val = prop::sample::select(vec![0u32, 1, 2, 3, 22, 23]);
    let hour_item = prop_oneof![
        4 => hour_val.clone().prop_map(Item::Val),
        1 => (hour_val.clone(), hour_val).prop_map(|(a, b)| Item::Range(a.min(b), a.max(b))),
        1 => Just(Item::Star),
        1 => (1..=3u32).prop_map(Item::StarStep),
    ];
    let second_item = prop_oneof![
        3 => prop::sample::select(vec![0u32, 1, 30, 58, 59]).prop_map(Item::Val),
        1 => Just(Item::Star),
        1 => (50..=59u32).prop_map(|a| Item::Range(a, 59)),
    ];
    let minute_item = prop_oneof![
        3 => prop::sample::select(vec![0u32, 15, 29, 30, 31, 44, 45, 46, 59]).prop_map(Item::Val),
        1 => Just(Item::Star),
        1 => (1..=30u32).prop_map(Item::StarStep),
        1 => (0..=59u32, 0..=59u32).prop_map(|(a, b)| Item::Range(a.min(b), a.max(b))),
    ];
    (
        prop_oneof![
            2 => Just(None),
            1 => list_strategy(SECOND, false, true).prop_map(Some),
            1 => prop::collection::vec(second_item.prop_map(tok), 1..=2).prop_map(Some),
        ],
        prop::collection::vec(minute_item.prop_map(tok), 1..=2),
        prop::collection::vec(hour_item.prop_map(tok), 1..=2),
        any::<bool>(),
    )
        .prop_map(|(sec, min, hour, question)| Expr {
            sec,
            min,
            hour,
            dom: if question { DayField::Question } else { star_dom() },
            month: vec![star_tok()],
            dow: star_dow(),
            year: None,
            for_croner: false,
        })
}

fn star_tok() -> Tok {
    Tok { item: Item::Star, style: 0 }
}

fn star_dom() -> DayField<DomItem> {
    DayField::Items(vec![DomItem::Plain(Tok { item: Item::Star, style: 0 })], false)
}

fn star_dow() -> DayField<DowItem> {
    DayField::Items(vec![DowItem::Plain(Tok { item: Item::Star, style: 0 })], false)
}

/// Rewrites an expression into the part of the syntax where croner follows
/// rota's documented rules (see `croner_differential` for each exclusion).
fn croner_compatible(e: &mut Expr) {
    // croner loses `L` next to `LW` in one day-of-month list (it keeps only LW).
    if let DayField::Items(items, _) = &mut e.dom {
        if items.iter().any(|i| matches!(i, DomItem::LastWeekday)) && items.len() > 1 {
            items.retain(|i| !matches!(i, DomItem::Last));
        }
    }
    // rota (Vixie): a day field that starts with `*` (like `*/2`) is not
    // "restricted", so the day fields AND. croner treats only a bare `*`/`?` that
    // way and ORs `*/2` with a restricted other field. Keep the other field a
    // bare `*` when one starts with `*` without being bare.
    let (dom, dow) = (e.dom_text(), e.dow_text());
    if dom.starts_with('*') && !is_star(&dom) && !is_star(&dow) {
        e.dow = star_dow();
    }
    let (dom, dow) = (e.dom_text(), e.dow_text());
    if dow.starts_with('*') && !is_star(&dow) && !is_star(&dom) {
        e.dom = star_dom();
    }
}

// ------------------------------------------------------------------ the model

/// An independent evaluation of an expression: which wall-clock times match
/// and, in a zone, which instants fire.
struct Model {
    sec: [bool; 60],
    min: [bool; 60],
    hour: [bool; 24],
    month: [bool; 13],
    /// Index `year - 1970`.
    year: Vec<bool>,
    dom_plain: [bool; 32],
    dom_last_offsets: Vec<u32>,
    dom_nearest: Vec<u32>,
    dom_last_weekday: bool,
    dow_plain: [bool; 7],
    dow_last: [bool; 7],
    /// `[weekday][k]` for `weekday#k`.
    dow_nth: [[bool; 6]; 7],
    /// The documented rule: restricted unless it starts with `*` or is `?`.
    dom_restricted: bool,
    dow_restricted: bool,
    /// Second, minute and hour fields do not start with `*`.
    fixed: bool,
}

fn mark(set: &mut [bool], toks: &[Tok], spec: Spec) {
    for t in toks {
        for v in t.item.values(spec) {
            set[v as usize] = true;
        }
    }
}

impl Model {
    fn new(e: &Expr) -> Model {
        let mut m = Model {
            sec: [false; 60],
            min: [false; 60],
            hour: [false; 24],
            month: [false; 13],
            year: vec![false; 230],
            dom_plain: [false; 32],
            dom_last_offsets: Vec::new(),
            dom_nearest: Vec::new(),
            dom_last_weekday: false,
            dow_plain: [false; 7],
            dow_last: [false; 7],
            dow_nth: [[false; 6]; 7],
            dom_restricted: false,
            dow_restricted: false,
            fixed: false,
        };
        match &e.sec {
            Some(s) => mark(&mut m.sec, s, SECOND),
            None => m.sec[0] = true,
        }
        mark(&mut m.min, &e.min, MINUTE);
        mark(&mut m.hour, &e.hour, HOUR);
        mark(&mut m.month, &e.month, MONTH);
        match &e.year {
            Some(y) => {
                for t in y {
                    for v in t.item.values(YEAR) {
                        m.year[(v - 1970) as usize] = true;
                    }
                }
            }
            None => m.year.iter_mut().for_each(|b| *b = true),
        }
        match &e.dom {
            DayField::Question => m.dom_plain[1..].iter_mut().for_each(|b| *b = true),
            DayField::Items(items, _) => {
                for i in items {
                    match i {
                        DomItem::Plain(t) => mark(&mut m.dom_plain, std::slice::from_ref(t), DOM),
                        DomItem::Last => m.dom_last_offsets.push(0),
                        DomItem::LastOffset(n) => m.dom_last_offsets.push(*n),
                        DomItem::Nearest(d) => m.dom_nearest.push(*d),
                        DomItem::LastWeekday => m.dom_last_weekday = true,
                    }
                }
            }
        }
        match &e.dow {
            DayField::Question => m.dow_plain = [true; 7],
            DayField::Items(items, _) => {
                for i in items {
                    match i {
                        DowItem::Plain(t) => {
                            for v in t.item.values(DOW) {
                                m.dow_plain[(v % 7) as usize] = true;
                            }
                        }
                        DowItem::Saturday => m.dow_plain[6] = true,
                        DowItem::LastOf(w, _) => m.dow_last[(w % 7) as usize] = true,
                        DowItem::Nth(w, k, _) => m.dow_nth[(w % 7) as usize][*k as usize] = true,
                    }
                }
            }
        }
        let restricted = |s: String| !(s.starts_with('*') || s == "?");
        m.dom_restricted = restricted(e.dom_text());
        m.dow_restricted = restricted(e.dow_text());
        let time_fixed = |f: &[Tok]| !matches!(f[0].item, Item::Star | Item::StarStep(_));
        m.fixed =
            e.sec.as_deref().is_none_or(time_fixed) && time_fixed(&e.min) && time_fixed(&e.hour);
        m
    }

    fn year_ok(&self, y: i32) -> bool {
        (1970..=2199).contains(&y) && self.year[(y - 1970) as usize]
    }

    /// Whether day `d` of a month of `dim` days whose 1st is weekday `wd1`
    /// (0 = Sunday) matches the day fields.
    fn day_matches(&self, d: u32, dim: u32, wd1: u32) -> bool {
        let wd_of = |x: u32| (wd1 + x - 1) % 7;
        let wd = wd_of(d);
        // Quartz `W`: a Saturday moves to Friday (Monday the 3rd for the 1st), a
        // Sunday to Monday (Friday for the last day); never leaves the month.
        let nearest = |x: u32| match wd_of(x) {
            6 if x == 1 => 3,
            6 => x - 1,
            0 if x == dim => x - 2,
            0 => x + 1,
            _ => x,
        };
        let last_weekday = match wd_of(dim) {
            6 => dim - 1,
            0 => dim - 2,
            _ => dim,
        };
        let dom = self.dom_plain[d as usize]
            || self.dom_last_offsets.iter().any(|&n| n < dim && d == dim - n)
            || self.dom_nearest.iter().any(|&x| x <= dim && nearest(x) == d)
            || (self.dom_last_weekday && d == last_weekday);
        let dow = self.dow_plain[wd as usize]
            || (self.dow_last[wd as usize] && d + 7 > dim)
            || self.dow_nth[wd as usize][((d - 1) / 7 + 1) as usize];
        if self.dom_restricted && self.dow_restricted {
            dom || dow
        } else {
            dom && dow
        }
    }

    fn matches(&self, dt: DateTime) -> bool {
        let (y, mo, d) = (i32::from(dt.year()), dt.month() as u32, dt.day() as u32);
        if !self.year_ok(y) || !self.month[mo as usize] {
            return false;
        }
        let first = Date::new(dt.year(), dt.month(), 1).unwrap();
        self.day_matches(d, first.days_in_month() as u32, weekday0(first))
            && self.hour[dt.hour() as usize]
            && self.min[dt.minute() as usize]
            && self.sec[dt.second() as usize]
    }

    /// The instants at which matching wall-clock time `dt` (at `local`
    /// seconds) fires in `tz`, per the module docs' DST rules.
    fn fires_of(&self, tz: &TimeZone, dt: DateTime, local: i64, out: &mut Vec<i64>) {
        match tz.to_ambiguous_timestamp(dt).offset() {
            AmbiguousOffset::Unambiguous { offset } => out.push(local - secs(offset)),
            AmbiguousOffset::Fold { before, after } => {
                // Fixed-time: the first occurrence only. Otherwise both.
                out.push(local - secs(before));
                if !self.fixed {
                    out.push(local - secs(after));
                }
            }
            AmbiguousOffset::Gap { before, after } => {
                // Fixed-time: the first instant after the gap. Otherwise none.
                if self.fixed {
                    let tr = tz
                        .preceding(ts(local - secs(before) + 1))
                        .next()
                        .expect("a gap has a transition")
                        .timestamp()
                        .as_second();
                    assert!(tr > local - secs(after), "transition {tr} is not this gap's");
                    out.push(tr);
                }
            }
        }
    }

    /// Calls `f(datetime, local seconds)` for every matching wall-clock time in
    /// `[llo, lhi]` (local seconds), in order, until `f` returns false.
    fn each_match(&self, llo: i64, lhi: i64, mut f: impl FnMut(DateTime, i64) -> bool) {
        let llo = llo.max(0);
        let lhi = lhi.min(local_end());
        if llo > lhi {
            return;
        }
        let y0 = i32::from(civil_of_local(llo).year());
        let y1 = i32::from(civil_of_local(lhi).year());
        for y in y0..=y1 {
            if !self.year_ok(y) {
                continue;
            }
            for mo in 1..=12u32 {
                if !self.month[mo as usize] {
                    continue;
                }
                let first = Date::new(y as i16, mo as i8, 1).unwrap();
                let dim = first.days_in_month() as u32;
                let wd1 = weekday0(first);
                let mstart = epoch_days(first) * 86_400;
                let mend = mstart + i64::from(dim) * 86_400 - 1;
                if mend < llo || mstart > lhi {
                    continue;
                }
                let dfirst = ((llo - mstart).div_euclid(86_400) + 1).max(1) as u32;
                let dlast = ((lhi - mstart).div_euclid(86_400) + 1).min(i64::from(dim)) as u32;
                for d in dfirst..=dlast {
                    if !self.day_matches(d, dim, wd1) {
                        continue;
                    }
                    let ds = mstart + i64::from(d - 1) * 86_400;
                    for h in (0..24).filter(|&h| self.hour[h]) {
                        let hs = ds + h as i64 * 3600;
                        if hs + 3599 < llo || hs > lhi {
                            continue;
                        }
                        for mi in (0..60).filter(|&m| self.min[m]) {
                            let ms = hs + mi as i64 * 60;
                            if ms + 59 < llo || ms > lhi {
                                continue;
                            }
                            for s in (0..60).filter(|&s| self.sec[s]) {
                                let l = ms + s as i64;
                                if l < llo || l > lhi {
                                    continue;
                                }
                                let dt = DateTime::new(
                                    y as i16, mo as i8, d as i8, h as i8, mi as i8, s as i8, 0,
                                )
                                .unwrap();
                                if !f(dt, l) {
                                    return;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// All fire instants (seconds) in `[lo, hi]`, sorted; stops early once it
    /// has found more than a few (callers expect at most two).
    fn fires_in(&self, tz: &TimeZone, lo: i64, hi: i64) -> Vec<i64> {
        // Every instant in [lo, hi] (and the gap ending at lo) has one of these offsets.
        let mut offs = vec![offset_at(tz, lo - 1), offset_at(tz, lo), offset_at(tz, hi)];
        for tr in tz.following(ts(lo)) {
            if tr.timestamp().as_second() > hi {
                break;
            }
            offs.push(secs(tr.offset()));
        }
        let omin = *offs.iter().min().unwrap();
        let omax = *offs.iter().max().unwrap();
        // Several skipped times can fire at the same gap end: a set.
        let mut out = std::collections::BTreeSet::new();
        let mut buf = Vec::new();
        self.each_match(lo + omin, hi + omax, |dt, local| {
            self.fires_of(tz, dt, local, &mut buf);
            out.extend(buf.drain(..).filter(|f| (lo..=hi).contains(f)));
            out.len() < 16
        });
        out.into_iter().collect()
    }

    /// Whether any day in any year 1970-2199 matches (month and day fields
    /// only, as rota's "can never fire" parse check).
    fn some_day_matches_ignoring_years(&self) -> bool {
        (1970..=2199).any(|y: i16| {
            (1..=12i8).filter(|&m| self.month[m as usize]).any(|m| {
                let first = Date::new(y, m, 1).unwrap();
                let dim = first.days_in_month() as u32;
                (1..=dim).any(|d| self.day_matches(d, dim, weekday0(first)))
            })
        })
    }
}

// ------------------------------------------------------------------ time helpers

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

fn secs(o: Offset) -> i64 {
    i64::from(o.seconds())
}

fn offset_at(tz: &TimeZone, s: i64) -> i64 {
    secs(tz.to_offset(ts(s)))
}

fn weekday0(d: Date) -> u32 {
    d.weekday().to_sunday_zero_offset() as u32
}

fn epoch_days(d: Date) -> i64 {
    d.duration_since(Date::constant(1970, 1, 1)).as_secs() / 86_400
}

/// Local seconds of 2199-12-31T23:59:59, the last wall-clock time rota searches.
fn local_end() -> i64 {
    epoch_days(Date::constant(2200, 1, 1)) * 86_400 - 1
}

fn civil_of_local(l: i64) -> DateTime {
    ts(l).to_zoned_datetime(TimeZone::UTC).datetime()
}

fn floor_sec(t: Timestamp) -> i64 {
    t.as_second() - i64::from(t.subsec_nanosecond() < 0)
}

fn ceil_sec(t: Timestamp) -> i64 {
    t.as_second() + i64::from(t.subsec_nanosecond() > 0)
}

const ZONES: [&str; 7] = [
    "UTC",
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Asia/Kolkata",
    "Pacific/Chatham",
];

/// Zone `i`: the IANA zones above, then two fixed offsets (+05:45, -03:30).
fn zone(i: usize) -> (TimeZone, Option<&'static str>) {
    match i {
        0..=6 => (TimeZone::get(ZONES[i]).unwrap(), Some(ZONES[i])),
        7 => (TimeZone::fixed(Offset::from_seconds(5 * 3600 + 45 * 60).unwrap()), None),
        _ => (TimeZone::fixed(Offset::from_seconds(-(3 * 3600 + 30 * 60)).unwrap()), None),
    }
}

/// A zone with one offset forever (UTC and fixed offsets).
fn is_fixed_zone(tz: &TimeZone) -> bool {
    tz.following(ts(0)).next().is_none() && tz.preceding(ts(7_300_000_000)).next().is_none()
}

/// A starting instant: uniform in 1971-2190, or within a few hours of a DST
/// transition of the zone (when it has one after `base`).
#[derive(Clone, Debug)]
enum When {
    Uniform(i64, i32),
    NearTransition(i64, i64, i32),
}

const T1971: i64 = 31_536_000;
const T2191: i64 = 6_974_121_600;

fn when_strategy() -> impl Strategy<Value = When> {
    let nanos = prop_oneof![3 => Just(0i32), 1 => 1..1_000_000_000i32];
    prop_oneof![
        1 => (T1971..T2191, nanos.clone()).prop_map(|(s, n)| When::Uniform(s, n)),
        1 => (T1971..T2191 - 86_400 * 366, -4 * 3600..4 * 3600i64, nanos)
            .prop_map(|(b, d, n)| When::NearTransition(b, d, n)),
    ]
}

/// Within a day and a bit before, or a few hours after, a DST transition.
fn dst_when_strategy() -> impl Strategy<Value = When> {
    let nanos = prop_oneof![3 => Just(0i32), 1 => 1..1_000_000_000i32];
    (T1971..T2191 - 86_400 * 366, -30 * 3600..3 * 3600i64, nanos)
        .prop_map(|(b, d, n)| When::NearTransition(b, d, n))
}

impl When {
    fn resolve(&self, tz: &TimeZone) -> Timestamp {
        let (s, n) = match *self {
            When::Uniform(s, n) => (s, n),
            When::NearTransition(base, delta, n) => {
                let tr = tz.following(ts(base)).next().map_or(base, |t| t.timestamp().as_second());
                (tr + delta, n)
            }
        };
        Timestamp::new(s, n).unwrap()
    }
}

// ------------------------------------------------------------------ checks

/// Parses `e`; on an error, checks it is the documented "can never fire"
/// error and that it is true. `None` when the expression is rightly rejected.
fn parse_checked(e: &Expr, m: &Model) -> Result<Option<CronExpression>, TestCaseError> {
    let text = e.text();
    match CronExpression::parse(&text) {
        Ok(c) => Ok(Some(c)),
        Err(err) => {
            prop_assert_eq!(err.kind(), ErrorKind::InvalidSchedule, "{:?} rejected: {}", text, err);
            prop_assert!(
                !m.some_day_matches_ignoring_years(),
                "{:?} rejected as never firing, but some day matches: {}",
                text,
                err
            );
            Ok(None)
        }
    }
}

/// The getters list the same values as the model's own expansion.
fn check_getters(e: &Expr, c: &CronExpression, m: &Model) -> Result<(), TestCaseError> {
    let list = |set: &[bool], lo: usize| -> Vec<u32> {
        (lo..set.len()).filter(|&i| set[i]).map(|i| i as u32).collect()
    };
    let text = e.text();
    prop_assert_eq!(c.second(), list(&m.sec, 0), "second() of {:?}", text);
    prop_assert_eq!(c.minute(), list(&m.min, 0), "minute() of {:?}", text);
    prop_assert_eq!(c.hour(), list(&m.hour, 0), "hour() of {:?}", text);
    prop_assert_eq!(c.day_of_month(), list(&m.dom_plain, 1), "day_of_month() of {:?}", text);
    prop_assert_eq!(c.month(), list(&m.month, 1), "month() of {:?}", text);
    prop_assert_eq!(c.day_of_week(), list(&m.dow_plain, 0), "day_of_week() of {:?}", text);
    let years: Vec<u32> = (0..230).filter(|&i| m.year[i]).map(|i| 1970 + i as u32).collect();
    prop_assert_eq!(c.year(), years, "year() of {:?}", text);
    prop_assert_eq!(c.is_fixed_time(), m.fixed, "is_fixed_time() of {:?}", text);
    Ok(())
}

/// `n` (a fire reported by rota) is a fire of the model: its wall-clock time
/// matches (for a fixed-time schedule: its first occurrence), or, for a
/// fixed-time schedule, it is the end of a gap that skipped a matching time.
fn check_is_fire(text: &str, m: &Model, tz: &TimeZone, n: Timestamp) -> Result<(), TestCaseError> {
    prop_assert_eq!(n.subsec_nanosecond(), 0, "{:?}: fire {} is not a whole second", text, n);
    let dt = n.to_zoned_datetime(tz.clone()).datetime();
    if m.matches(dt) {
        if m.fixed {
            if let AmbiguousOffset::Fold { before, .. } = tz.to_ambiguous_timestamp(dt).offset() {
                let local = n.as_second() + offset_at(tz, n.as_second());
                prop_assert_eq!(
                    n.as_second(),
                    local - secs(before),
                    "{:?}: fixed-time fire {} is the second pass of a repeated time",
                    text,
                    n
                );
            }
        }
        return Ok(());
    }
    let s = n.as_second();
    let (before, after) = (offset_at(tz, s - 1), offset_at(tz, s));
    prop_assert!(
        m.fixed && after > before,
        "{:?}: fire {} ({}) does not match and is not the end of a gap",
        text,
        n,
        dt
    );
    let mut skipped = false;
    m.each_match(s + before, s + after - 1, |_, _| {
        skipped = true;
        false
    });
    prop_assert!(skipped, "{:?}: fire {} ends a gap that skipped no matching time", text, n);
    Ok(())
}

/// In a fixed-offset zone, walk every second of `(t, n]`: only `n` matches.
fn brute_force(text: &str, m: &Model, off: i64, t: Timestamp, n: i64) -> Result<(), TestCaseError> {
    let mut day = i64::MIN;
    let mut day_ok = false;
    for u in floor_sec(t) + 1..=n {
        let local = u + off;
        if local.div_euclid(86_400) != day {
            day = local.div_euclid(86_400);
            let date = civil_of_local(day * 86_400).date();
            let first = date.first_of_month();
            day_ok = m.year_ok(i32::from(date.year()))
                && m.month[date.month() as usize]
                && m.day_matches(date.day() as u32, date.days_in_month() as u32, weekday0(first));
        }
        let sod = local.rem_euclid(86_400) as usize;
        let hit = day_ok && m.hour[sod / 3600] && m.min[sod / 60 % 60] && m.sec[sod % 60];
        prop_assert_eq!(
            hit,
            u == n,
            "{:?} from {}: second {} (local {})",
            text,
            t,
            u,
            civil_of_local(local)
        );
    }
    Ok(())
}

/// A far-away bound for "no fire at all": local 2199-12-31 is at most 14 h
/// after this instant, 1970-01-01 local at most 14 h before `EARLY`.
fn late() -> i64 {
    local_end() + 15 * 3600
}
const EARLY: i64 = -15 * 3600;

fn check_next_prev(e: &Expr, zone_i: usize, when: &When) -> Result<(), TestCaseError> {
    let m = Model::new(e);
    let Some(c) = parse_checked(e, &m)? else {
        return Ok(());
    };
    check_getters(e, &c, &m)?;
    let text = e.text();
    let (tz, name) = zone(zone_i);
    let t = when.resolve(&tz);
    let tf = floor_sec(t);

    let next = c.next_after(t, &tz);
    // The same through the other entry points.
    let from = t.to_zoned_datetime(tz.clone());
    prop_assert_eq!(c.next_run(&from).map(|z| z.timestamp()), next, "next_run of {:?}", text);
    if let Some(name) = name {
        let prefixed = CronExpression::parse(&format!("CRON_TZ={name} {text}")).unwrap();
        prop_assert_eq!(
            prefixed.next_after(t, &TimeZone::UTC),
            next,
            "CRON_TZ={} {:?}",
            name,
            text
        );
    }

    let Some(n) = next else {
        let f = m.fires_in(&tz, tf + 1, late());
        prop_assert!(
            f.is_empty(),
            "{:?} from {} in {:?}: None, but fires at {:?}",
            text,
            t,
            name,
            f
        );
        return Ok(());
    };
    prop_assert!(n > t, "{:?}: next {} not after {}", text, n, t);
    check_is_fire(&text, &m, &tz, n)?;
    let ns = n.as_second();
    // Nothing fires strictly between t and n.
    let f = m.fires_in(&tz, tf + 1, ns);
    prop_assert_eq!(
        &f,
        &vec![ns],
        "{:?} from {} ({:?}): next {}, model fires {:?}",
        text,
        t,
        name,
        n,
        f
    );
    if is_fixed_zone(&tz) && ns - tf < 2 * 86_400 {
        brute_force(&text, &m, offset_at(&tz, 0), t, ns)?;
    }

    // prev mirrors next.
    match c.prev_before(n, &tz) {
        Some(p) => {
            prop_assert!(p <= t, "{:?}: prev_before({}) = {} is after from {}", text, n, p, t);
            prop_assert_eq!(
                c.next_after(p, &tz),
                Some(n),
                "{:?}: next_after(prev_before(n))",
                text
            );
            let ps = p.as_second();
            let f = m.fires_in(&tz, ps, ns);
            prop_assert_eq!(
                &f,
                &vec![ps, ns],
                "{:?}: prev {} next {}, model fires {:?}",
                text,
                p,
                n,
                f
            );
        }
        None => {
            let f = m.fires_in(&tz, EARLY, ns - 1);
            prop_assert!(f.is_empty(), "{:?}: prev_before({}) None, model fires {:?}", text, n, f);
        }
    }
    // prev_before(t) directly.
    let prev = c.prev_before(t, &tz);
    prop_assert_eq!(c.prev_run(&from).map(|z| z.timestamp()), prev, "prev_run of {:?}", text);
    let tc = ceil_sec(t);
    match prev {
        Some(q) => {
            prop_assert!(q < t, "{:?}: prev_before({}) = {}", text, t, q);
            let f = m.fires_in(&tz, q.as_second(), tc - 1);
            prop_assert_eq!(
                &f,
                &vec![q.as_second()],
                "{:?} before {}: prev {}, model {:?}",
                text,
                t,
                q,
                f
            );
            let t_fires = t.subsec_nanosecond() == 0 && !m.fires_in(&tz, tc, tc).is_empty();
            let want = if t_fires { t } else { n };
            prop_assert_eq!(
                c.next_after(q, &tz),
                Some(want),
                "{:?}: next_after(prev_before(t))",
                text
            );
        }
        None => {
            let f = m.fires_in(&tz, EARLY, tc - 1);
            prop_assert!(f.is_empty(), "{:?}: prev_before({}) None, model fires {:?}", text, t, f);
        }
    }
    Ok(())
}

fn check_upcoming(e: &Expr, zone_i: usize, when: &When) -> Result<(), TestCaseError> {
    let m = Model::new(e);
    let Some(c) = parse_checked(e, &m)? else {
        return Ok(());
    };
    let text = e.text();
    let (tz, _) = zone(zone_i);
    let t = when.resolve(&tz);
    let from = t.to_zoned_datetime(tz.clone());
    let fires: Vec<ZonedDateTime> = c.upcoming(&from).take(50).collect();
    let mut last = t;
    let second = jiff::SignedDuration::from_secs(1);
    for (i, z) in fires.iter().enumerate() {
        let u = z.timestamp();
        prop_assert!(u > last, "{:?}: upcoming not increasing: {} then {}", text, last, u);
        prop_assert_eq!(c.next_after(last, &tz), Some(u), "{:?}: upcoming vs next_after", text);
        check_is_fire(&text, &m, &tz, u)?;
        // Around each fire, one second either side.
        prop_assert_eq!(
            c.prev_before(u + second, &tz),
            Some(u),
            "{:?}: prev_before({} + 1s)",
            text,
            u
        );
        if i > 0 {
            prop_assert_eq!(c.prev_before(u, &tz), Some(last), "{:?}: prev_before({})", text, u);
            if u.as_second() - last.as_second() > 1 {
                prop_assert_eq!(
                    c.next_after(u - second, &tz),
                    Some(u),
                    "{:?}: next_after({} - 1s)",
                    text,
                    u
                );
            }
            // Consecutive: the model has nothing in between.
            let f = m.fires_in(&tz, last.as_second(), u.as_second());
            prop_assert_eq!(
                &f,
                &vec![last.as_second(), u.as_second()],
                "{:?}: upcoming {} then {}, model fires {:?}",
                text,
                last,
                u,
                f
            );
        }
        last = u;
    }
    if fires.len() < 50 {
        prop_assert_eq!(c.next_after(last, &tz), None, "{:?}: upcoming ended early", text);
    }
    let s = Schedule::parse(&text).unwrap();
    let via_schedule: Vec<Timestamp> = s.upcoming(&from).take(50).map(|z| z.timestamp()).collect();
    let direct: Vec<Timestamp> = fires.iter().map(|z| z.timestamp()).collect();
    prop_assert_eq!(via_schedule, direct, "{:?}: Schedule::upcoming", text);
    Ok(())
}

/// A fixed number of cases, so the run time is predictable; `PROPTEST_CASES`
/// overrides it for a deeper local run.
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c
}

proptest! {
    #![proptest_config(config(512))]

    /// next_after: after `from`, a fire, nothing fires in between (model and,
    /// in fixed-offset zones, a walk over seconds); prev_before mirrors it.
    #[test]
    fn next_and_prev_match_the_model(e in expr_strategy(false), z in 0..9usize, when in when_strategy()) {
        check_next_prev(&e, z, &when)?;
    }

    /// The same in UTC only, where every short gap is also walked second by second.
    #[test]
    fn next_and_prev_match_the_model_utc(e in expr_strategy(false), when in when_strategy()) {
        check_next_prev(&e, 0, &when)?;
    }

    /// upcoming is strictly increasing, chains next_after, and yields fires.
    #[test]
    fn upcoming_is_strictly_increasing(e in expr_strategy(false), z in 0..9usize, when in when_strategy()) {
        check_upcoming(&e, z, &when)?;
    }

    /// Daily schedules at transition times, from instants near a transition, in
    /// the zones with DST: the gap and fold rules of the module docs.
    #[test]
    fn dst_transitions_match_the_model(
        e in dst_expr_strategy(),
        z in prop::sample::select(vec![1usize, 2, 3, 4, 6]),
        when in dst_when_strategy(),
    ) {
        check_next_prev(&e, z, &when)?;
        check_upcoming(&e, z, &when)?;
    }
}

/// Found by `dst_transitions_match_the_model`: a fixed-time schedule searched
/// from the last second before a gap (so the search starts exactly at the
/// transition) must still fire the skipped time at the gap's end.
#[test]
fn fixed_time_fires_a_skipped_time_when_searched_from_just_before_the_gap() {
    let ny = TimeZone::get("America/New_York").unwrap();
    // 2026-03-08 02:00 EST does not exist in New York: 03:00 EDT (07:00Z) follows 01:59:59 EST.
    let gap_end: Timestamp = "2026-03-08T07:00:00Z".parse().unwrap();
    let c = CronExpression::parse("30 2 * * *").unwrap();
    for from in ["2026-03-08T06:59:59Z", "2026-03-08T06:59:59.5Z", "2026-03-08T06:00:00Z"] {
        let from: Timestamp = from.parse().unwrap();
        assert_eq!(c.next_after(from, &ny), Some(gap_end), "30 2 * * * from {from}");
    }
    // 01:59:59 EST fires, then the skipped 02:59:59 at 03:00:00 EDT.
    let c = CronExpression::parse("59 59 1,2 * * *").unwrap();
    let from: ZonedDateTime = "2026-03-07T12:00:00-05:00[America/New_York]".parse().unwrap();
    let fires: Vec<String> = c.upcoming(&from).take(3).map(|z| z.to_string()).collect();
    assert_eq!(
        fires,
        [
            "2026-03-08T01:59:59-05:00[America/New_York]",
            "2026-03-08T03:00:00-04:00[America/New_York]",
            "2026-03-09T01:59:59-04:00[America/New_York]",
        ]
    );
}

// ------------------------------------------------------------------ no panics

const TOKENS: &[&str] = &[
    "*",
    "?",
    ",",
    "-",
    "/",
    "#",
    "L",
    "W",
    "l",
    "w",
    "0",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "15",
    "23",
    "24",
    "29",
    "30",
    "31",
    "32",
    "59",
    "60",
    "99",
    "1970",
    "2199",
    "2200",
    "65535",
    "4294967296",
    "18446744073709551616",
    "JAN",
    "feb",
    "Dec",
    "MON",
    "fri",
    "Sun",
    "SAT",
    "@",
    "@every",
    "@daily",
    "@yearly",
    "@hourly",
    "@weekly",
    "@monthly",
    "@midnight",
    "@annually",
    "every",
    "CRON_TZ=",
    "TZ=",
    "UTC",
    "America/New_York",
    "Australia/Lord_Howe",
    "Nope/Zone",
    " ",
    " ",
    " ",
    "\t",
    "h",
    "m",
    "s",
    "ms",
    "d",
    "L-",
    "LW",
    "+",
    "é",
    "\u{0}",
];

fn token_string() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..24).prop_map(|v| v.concat())
}

/// Numbers at and beyond every field's edges, and past u32, u64.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "5",
    "7",
    "8",
    "12",
    "13",
    "23",
    "24",
    "30",
    "31",
    "32",
    "59",
    "60",
    "61",
    "231",
    "1969",
    "1970",
    "2199",
    "2200",
    "65536",
    "4294967295",
    "4294967296",
    "18446744073709551616",
    "-1",
    "",
    "00",
    "007",
];

/// Strings that follow the field grammar loosely: lists of items such as
/// `a-b/k`, `nW`, `L-n`, `w#k`, `wL` with numbers and names from the edges,
/// so that the parser's inner paths see out-of-range and overflowing values.
fn grammar_string() -> impl Strategy<Value = String> {
    let num = prop_oneof![
        3 => prop::sample::select(NUMBERS).prop_map(str::to_string),
        1 => prop::sample::select(&MONTH_NAMES[..]).prop_map(str::to_string),
        1 => prop::sample::select(&DAY_NAMES[..]).prop_map(str::to_string),
        1 => any::<u64>().prop_map(|n| n.to_string()),
    ];
    let base = prop_oneof![
        Just("*".to_string()),
        Just("?".to_string()),
        Just("L".to_string()),
        Just("LW".to_string()),
        num.clone(),
        (num.clone(), num.clone()).prop_map(|(a, b)| format!("{a}-{b}")),
        num.clone().prop_map(|n| format!("L-{n}")),
        num.clone().prop_map(|n| format!("{n}W")),
        num.clone().prop_map(|n| format!("{n}L")),
        (num.clone(), num.clone()).prop_map(|(a, b)| format!("{a}#{b}")),
    ];
    let item = (base, prop::option::of(num))
        .prop_map(|(b, step)| step.map_or(b.clone(), |k| format!("{b}/{k}")));
    let field = prop_oneof![
        2 => Just("*".to_string()),
        1 => prop::collection::vec(item, 1..4).prop_map(|v| v.join(",")),
    ];
    (
        prop::sample::select(&["", "CRON_TZ=America/Santiago ", "TZ=UTC "][..]),
        prop::collection::vec(field, 5..=7),
    )
        .prop_map(|(p, f)| format!("{p}{}", f.join(" ")))
}

/// `@every` with numbers and units from the edges.
fn every_string() -> impl Strategy<Value = String> {
    let part = (
        prop::sample::select(NUMBERS),
        prop::sample::select(&["d", "h", "m", "s", "ms", "", "us", "H"][..]),
    )
        .prop_map(|(n, u)| format!("{n}{u}"));
    (
        prop::sample::select(&["@every ", "@EVERY", "@every\t", "CRON_TZ=UTC @every "][..]),
        prop::collection::vec(part, 0..4),
    )
        .prop_map(|(p, v)| format!("{p}{}", v.concat()))
}

/// Field-shaped strings: 1-8 space-separated runs of cron-ish tokens.
fn field_string() -> impl Strategy<Value = String> {
    let field = prop::collection::vec(prop::sample::select(&TOKENS[..TOKENS.len() - 20]), 1..5)
        .prop_map(|v| v.concat());
    (
        prop::option::of(prop::sample::select(
            &["CRON_TZ=UTC ", "TZ=Pacific/Chatham ", "CRON_TZ="][..],
        )),
        prop::collection::vec(field, 1..9),
    )
        .prop_map(|(p, f)| format!("{}{}", p.unwrap_or(""), f.join(" ")))
}

fn exercise(s: &str) {
    let Ok(schedule) = Schedule::parse(s) else {
        return;
    };
    let _ = schedule.explain();
    let instants = [
        Timestamp::MIN,
        Timestamp::new(-1, 999_999_999).unwrap(),
        Timestamp::UNIX_EPOCH,
        "2026-03-08T07:00:00Z".parse::<Timestamp>().unwrap(),
        "2199-12-31T23:59:59.5Z".parse::<Timestamp>().unwrap(),
        Timestamp::MAX,
    ];
    for tz in [
        TimeZone::UTC,
        TimeZone::get("America/New_York").unwrap(),
        TimeZone::get("Australia/Lord_Howe").unwrap(),
    ] {
        for &t in &instants {
            let _ = schedule.next_after(t, &tz, Timestamp::UNIX_EPOCH);
            let _ = schedule.prev_before(t, &tz, Timestamp::UNIX_EPOCH);
            let _ = schedule.next_after(t, &tz, t);
        }
    }
}

proptest! {
    #![proptest_config(config(10_000))]

    /// Schedule::parse returns Ok or Err on any input, and a parsed schedule
    /// searches without panicking from any instant.
    #[test]
    fn parse_and_search_never_panic(s in prop_oneof![
        any::<String>(),
        prop::collection::vec(any::<char>(), 0..40).prop_map(|v| v.into_iter().collect::<String>()),
        token_string(),
        field_string(),
        grammar_string(),
        every_string(),
        expr_strategy(false).prop_map(|e| e.text()),
    ]) {
        exercise(&s);
    }
}

// ------------------------------------------------------------------ croner

/// croner configured for rota's documented rules: optional seconds field
/// (5, 6 or 7 fields), `v/k` accepted as "from v every k" (`sloppy_ranges`),
/// and the default Vixie OR of the day fields (`dom_and_dow` off).
///
/// Left out of generation (`croner_compatible`, `*_strategy(true)`), each a
/// documented rota rule croner does not follow:
/// * `*/k` (or any `*`-prefixed list) in one day field with the other field
///   restricted: rota ANDs (a field starting with `*` is not restricted);
///   croner treats only a bare `*` as unrestricted and ORs.
/// * `L` alone in day-of-week: rota reads Saturday (Quartz); croner ignores it.
/// * `L-n` in day-of-month: croner does not support it.
/// * `L` and `LW` in one day-of-month list: croner keeps only `LW`.
/// * `*/k` in the year field: rota's years start at 1970, croner's at 1.
/// * `*` inside a list (`5,*`): croner rejects it.
/// * a range ending in the name `SUN` (`SUN-SUN`): croner rewrites `-SUN` as
///   `-7`, so `SUN-SUN` is every day there; it is spelt `SUN-0` instead.
fn croner_parser() -> croner::parser::CronParser {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .sloppy_ranges(true)
        .build()
}

fn check_against_croner(e: &Expr, t: i64) -> Result<(), TestCaseError> {
    let text = e.text();
    let Ok(c) = CronExpression::parse(&text) else {
        // Never fires; croner would search to year 5000.
        return Ok(());
    };
    let theirs = croner_parser().parse(&text);
    prop_assert!(theirs.is_ok(), "croner rejects {:?}: {:?}", text, theirs.err());
    let theirs = theirs.unwrap();
    let from = ts(t).to_zoned_datetime(TimeZone::UTC);
    let ours: Vec<i64> = c.upcoming(&from).take(20).map(|z| z.timestamp().as_second()).collect();
    let start = chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0).unwrap();
    let want = (ours.len() + 1).min(20);
    let cr: Vec<i64> = theirs.iter_after(start).take(want).map(|d| d.timestamp()).collect();
    prop_assert_eq!(
        &ours[..],
        &cr[..ours.len().min(cr.len())],
        "next fires of {:?} after {}",
        text,
        from
    );
    if ours.len() < 20 {
        // rota stops at the end of 2199; croner must not have another fire before.
        if let Some(&x) = cr.get(ours.len()) {
            prop_assert!(x > local_end(), "{:?}: rota stops, croner fires at {}", text, ts(x));
        }
    }
    let ours_prev: Vec<i64> = std::iter::successors(c.prev_before(ts(t), &TimeZone::UTC), |&p| {
        c.prev_before(p, &TimeZone::UTC)
    })
    .take(5)
    .map(|p| p.as_second())
    .collect();
    let want = (ours_prev.len() + 1).min(5);
    let cr_prev: Vec<i64> = theirs.iter_before(start).take(want).map(|d| d.timestamp()).collect();
    prop_assert_eq!(
        &ours_prev[..],
        &cr_prev[..ours_prev.len().min(cr_prev.len())],
        "previous fires of {:?} before {}",
        text,
        from
    );
    if ours_prev.len() < 5 {
        if let Some(&x) = cr_prev.get(ours_prev.len()) {
            prop_assert!(x < 0, "{:?}: rota stops at 1970, croner fires at {}", text, ts(x));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    /// The next 20 and previous 5 fires agree with croner in UTC.
    #[test]
    fn croner_differential(e in expr_strategy(true), t in T1971..T2191) {
        check_against_croner(&e, t)?;
    }
}
