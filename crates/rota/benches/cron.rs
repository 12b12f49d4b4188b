//! Cron engine benchmark: rota against croner, cron and saffron, side by side,
//! on the same schedules.
//!
//! Groups (one per expression label):
//!
//! * `parse/<label>`: parsing the expression text.
//! * `next/<label>`: one "next fire strictly after t" call, where t cycles
//!   through 64 precomputed instants spread over 2026 (so nothing is reused
//!   from one call to the next).
//! * `iter10k/<label>`: iterating successive fires from 2026-01-01T00:00:00Z.
//!   10,000 fires, except where the schedule is too sparse for every crate's
//!   year range (see `iter_n` below); the count is printed at startup.
//!
//! Functions: `rota` (UTC), `rota_ny` (America/New_York), `croner`, `cron`,
//! `saffron` (UTC only), and in `next/*` also `rota_ts`, rota's allocation-free
//! core `next_after(Timestamp, &TimeZone)` in UTC. `rota`/`rota_ny` use the
//! zoned API (`next_run(&ZonedDateTime)`, `upcoming(&ZonedDateTime)`), which
//! returns a zoned value like croner's and cron's `DateTime<Tz>`.
//!
//! A crate that lacks a feature (or a granularity) an expression needs is
//! skipped for that expression; the reasons are printed at startup. Before
//! measuring, every crate's answers are checked against rota's for each of the
//! 64 instants and for the iteration's last fire; a mismatch is printed as
//! `MISMATCH`.
//!
//! Run: `cargo bench -p rota --bench cron`; tabulate: `python3 scripts/bench-table.py`.

use std::hint::black_box;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use criterion::{Criterion, SamplingMode, Throughput};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};
use rota::CronExpression;

/// The expression for one crate, or why that crate is skipped.
type Syntax = Result<&'static str, &'static str>;

struct Case {
    label: &'static str,
    /// rota's syntax (6 fields, seconds first, Quartz specials).
    rota: &'static str,
    /// croner, seconds optional (default parser), `?` accepted, `5#L` for last weekday.
    croner: Syntax,
    /// cron 0.17: 6/7 fields, seconds first, day of week by name (1-7 = SUN-SAT).
    cron: Syntax,
    /// saffron: 5 fields (minute granularity), UTC only, day of week by name (1-7 = SUN-SAT).
    saffron: Syntax,
    /// Fires iterated in `iter10k/<label>`.
    iter_n: usize,
}

const NO_CRON_L: &str = "cron 0.17 has no L (last day of month)";
const NO_CRON_LAST_DOW: &str = "cron 0.17 has no nL / #L (last weekday of month)";
const NO_CRON_NTH: &str = "cron 0.17 has no # (nth weekday of month)";
const NO_SAFFRON_SECONDS: &str = "saffron has minute granularity (5 fields), no seconds field";

/// 10,000 monthly fires would run to the 2800s: past rota's range (to 2199).
/// 2,000 monthly fires from 2026 end in the 2190s.
const MONTHLY_N: usize = 2_000;
/// Feb 29 from 2026: 2028..=2096 is 18 fires, all within cron 0.17's range (to 2100).
const FEB29_N: usize = 18;

fn cases() -> Vec<Case> {
    vec![
        Case {
            label: "every_minute",
            rota: "0 * * * * *",
            croner: Ok("0 * * * * *"),
            cron: Ok("0 * * * * *"),
            saffron: Ok("* * * * *"),
            iter_n: 10_000,
        },
        Case {
            label: "every_15s",
            rota: "*/15 * * * * *",
            croner: Ok("*/15 * * * * *"),
            cron: Ok("*/15 * * * * *"),
            saffron: Err(NO_SAFFRON_SECONDS),
            iter_n: 10_000,
        },
        Case {
            label: "daily_0200",
            rota: "0 0 2 * * *",
            croner: Ok("0 0 2 * * *"),
            cron: Ok("0 0 2 * * *"),
            saffron: Ok("0 2 * * *"),
            iter_n: 10_000,
        },
        Case {
            label: "feb29",
            rota: "0 0 12 29 2 *",
            croner: Ok("0 0 12 29 2 *"),
            cron: Ok("0 0 12 29 2 *"),
            saffron: Ok("0 12 29 2 *"),
            iter_n: FEB29_N,
        },
        Case {
            label: "last_dom",
            rota: "0 0 12 L * *",
            croner: Ok("0 0 12 L * *"),
            cron: Err(NO_CRON_L),
            saffron: Ok("0 12 L * *"),
            iter_n: MONTHLY_N,
        },
        Case {
            label: "last_fri",
            rota: "0 0 12 ? * FRIL",
            croner: Ok("0 0 12 ? * FRI#L"),
            cron: Err(NO_CRON_LAST_DOW),
            saffron: Ok("0 12 * * FRIL"),
            iter_n: MONTHLY_N,
        },
        Case {
            label: "mon_2nd",
            rota: "0 0 12 ? * MON#2",
            croner: Ok("0 0 12 ? * MON#2"),
            cron: Err(NO_CRON_NTH),
            saffron: Ok("0 12 * * MON#2"),
            iter_n: MONTHLY_N,
        },
        Case {
            label: "list_step",
            rota: "0 5,10,15,20 8-18/2 * * MON-FRI",
            croner: Ok("0 5,10,15,20 8-18/2 * * MON-FRI"),
            cron: Ok("0 5,10,15,20 8-18/2 * * MON-FRI"),
            saffron: Ok("5,10,15,20 8-18/2 * * MON-FRI"),
            iter_n: 10_000,
        },
    ]
}

/// 2026-01-01T00:00:00Z.
const BASE: i64 = 1_767_225_600;
/// 5 days 3h17m13s: 64 steps cover most of 2026 (both New York DST changes),
/// and land at varied times of day and days of week.
const STEP: i64 = 5 * 86_400 + 3 * 3_600 + 17 * 60 + 13;
const N_INSTANTS: usize = 64;

struct Instants {
    ts: Vec<Timestamp>,
    utc: Vec<ZonedDateTime>,
    ny: Vec<ZonedDateTime>,
    chrono: Vec<DateTime<Utc>>,
}

fn instants(ny: &TimeZone) -> Instants {
    let secs: Vec<i64> = (0..N_INSTANTS as i64).map(|i| BASE + i * STEP).collect();
    let ts: Vec<Timestamp> = secs.iter().map(|&s| Timestamp::from_second(s).unwrap()).collect();
    Instants {
        utc: ts.iter().map(|t| t.to_zoned_datetime(TimeZone::UTC)).collect(),
        ny: ts.iter().map(|t| t.to_zoned_datetime(ny.clone())).collect(),
        chrono: secs.iter().map(|&s| DateTime::from_timestamp(s, 0).unwrap()).collect(),
        ts,
    }
}

/// The parsed schedules of one case (None where a crate is skipped).
struct Parsed {
    rota: CronExpression,
    croner: Option<croner::Cron>,
    cron: Option<cron::Schedule>,
    saffron: Option<saffron::Cron>,
}

fn parse_all(case: &Case) -> Parsed {
    let rota = CronExpression::parse(case.rota)
        .unwrap_or_else(|e| panic!("rota rejects {:?}: {e}", case.rota));
    let croner = case
        .croner
        .ok()
        .map(|s| croner::Cron::from_str(s).unwrap_or_else(|e| panic!("croner rejects {s:?}: {e}")));
    let cron = case
        .cron
        .ok()
        .map(|s| cron::Schedule::from_str(s).unwrap_or_else(|e| panic!("cron rejects {s:?}: {e}")));
    let saffron = case.saffron.ok().map(|s| {
        s.parse::<saffron::Cron>().unwrap_or_else(|e| panic!("saffron rejects {s:?}: {e:?}"))
    });
    Parsed { rota, croner, cron, saffron }
}

/// Checks that every crate agrees with rota (UTC) on the 64 "next" answers and
/// on the count and last fire of the iteration; prints what it finds.
fn check(case: &Case, p: &Parsed, at: &Instants) {
    let mut bad = 0;
    for (i, t) in at.ts.iter().enumerate() {
        let want = p.rota.next_after(*t, &TimeZone::UTC).map(|t| t.as_second());
        let got_zoned = p.rota.next_run(&at.utc[i]).map(|z| z.timestamp().as_second());
        let mut cmp = |who: &str, got: Option<i64>| {
            if got != want {
                bad += 1;
                println!("MISMATCH next/{}/{who} from {t}: got {got:?}, rota {want:?}", case.label);
            }
        };
        cmp("rota(zoned)", got_zoned);
        if let Some(c) = &p.croner {
            cmp("croner", c.find_next_occurrence(&at.chrono[i], false).ok().map(|d| d.timestamp()));
        }
        if let Some(c) = &p.cron {
            cmp("cron", c.after(&at.chrono[i]).next().map(|d| d.timestamp()));
        }
        if let Some(c) = &p.saffron {
            cmp("saffron", c.next_after(at.chrono[i]).map(|d| d.timestamp()));
        }
    }
    let n = case.iter_n;
    let (rc, rl) =
        count_last(p.rota.upcoming(&at.utc[0]).take(n).map(|z| z.timestamp().as_second()));
    let (nc, _) = count_last(p.rota.upcoming(&at.ny[0]).take(n).map(|z| z.timestamp().as_second()));
    let mut line = format!("check {:<13} iter n={n}: rota {rc}/{rl:?}", case.label);
    let mut it = |who: &str, (c, l): (usize, Option<i64>)| {
        line += &format!(", {who} {}", if (c, l) == (rc, rl) { "same" } else { "DIFFERENT" });
        if (c, l) != (rc, rl) {
            bad += 1;
            println!(
                "MISMATCH iter10k/{}/{who}: {c} fires, last {l:?}; rota {rc}, last {rl:?}",
                case.label
            );
        }
    };
    if nc != n {
        it("rota_ny(count)", (nc, rl));
    }
    if let Some(c) = &p.croner {
        it("croner", count_last(c.iter_after(at.chrono[0]).take(n).map(|d| d.timestamp())));
    }
    if let Some(c) = &p.cron {
        it("cron", count_last(c.after(&at.chrono[0]).take(n).map(|d| d.timestamp())));
    }
    if let Some(c) = &p.saffron {
        it(
            "saffron",
            count_last(c.clone().iter_after(at.chrono[0]).take(n).map(|d| d.timestamp())),
        );
    }
    println!("{line}; next: {}", if bad == 0 { "all agree" } else { "see MISMATCH lines" });
}

/// Shows that a skipped crate does reject the feature: it parses rota's
/// spelling (and, for saffron, the 5-field form without seconds).
fn confirm_skip(who: &str, rota_expr: &str) -> String {
    match who {
        "cron" => {
            let try_cron = |e: &str| {
                let r = cron::Schedule::from_str(e).map(|_| ());
                format!("cron on {e:?}: {:?}", r.map_err(|e| e.to_string().replace('\n', " ")))
            };
            let alt = rota_expr.replace("FRIL", "FRI#L");
            if alt == rota_expr {
                try_cron(rota_expr)
            } else {
                format!("{}; {}", try_cron(rota_expr), try_cron(&alt))
            }
        }
        "saffron" => {
            let r = rota_expr.parse::<saffron::Cron>().map(|_| ()).map_err(|e| format!("{e:?}"));
            format!("saffron on {rota_expr:?}: {r:?}")
        }
        _ => String::new(),
    }
}

fn count_last(it: impl Iterator<Item = i64>) -> (usize, Option<i64>) {
    it.fold((0, None), |(c, _), x| (c + 1, Some(x)))
}

fn benches(c: &mut Criterion) {
    let ny = TimeZone::get("America/New_York").expect("America/New_York in the tz database");
    let at = instants(&ny);
    let cases = cases();
    println!("cron bench: rota vs croner 4, cron 0.17, saffron 0.1");
    for case in &cases {
        for (who, s) in [("croner", case.croner), ("cron", case.cron), ("saffron", case.saffron)] {
            if let Err(why) = s {
                println!("skip {}/{who}: {why} ({})", case.label, confirm_skip(who, case.rota));
            }
        }
    }
    let parsed: Vec<Parsed> = cases.iter().map(parse_all).collect();
    for (case, p) in cases.iter().zip(&parsed) {
        check(case, p, &at);
    }

    let configure_group = |g: &mut criterion::BenchmarkGroup<'_, _>| {
        g.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(2))
            .sample_size(30);
    };

    for case in &cases {
        let mut g = c.benchmark_group(format!("parse/{}", case.label));
        configure_group(&mut g);
        g.bench_function("rota", |b| b.iter(|| CronExpression::parse(black_box(case.rota))));
        if let Ok(s) = case.croner {
            g.bench_function("croner", |b| b.iter(|| croner::Cron::from_str(black_box(s))));
        }
        if let Ok(s) = case.cron {
            g.bench_function("cron", |b| b.iter(|| cron::Schedule::from_str(black_box(s))));
        }
        if let Ok(s) = case.saffron {
            g.bench_function("saffron", |b| b.iter(|| black_box(s).parse::<saffron::Cron>()));
        }
        g.finish();
    }

    for (case, p) in cases.iter().zip(&parsed) {
        let mut g = c.benchmark_group(format!("next/{}", case.label));
        configure_group(&mut g);
        // Each call starts from the next of the 64 instants.
        g.bench_function("rota", |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % N_INSTANTS;
                p.rota.next_run(black_box(&at.utc[i]))
            })
        });
        g.bench_function("rota_ts", |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % N_INSTANTS;
                p.rota.next_after(black_box(at.ts[i]), &TimeZone::UTC)
            })
        });
        g.bench_function("rota_ny", |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) % N_INSTANTS;
                p.rota.next_run(black_box(&at.ny[i]))
            })
        });
        if let Some(cr) = &p.croner {
            g.bench_function("croner", |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % N_INSTANTS;
                    cr.find_next_occurrence(black_box(&at.chrono[i]), false)
                })
            });
        }
        if let Some(cr) = &p.cron {
            g.bench_function("cron", |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % N_INSTANTS;
                    cr.after(black_box(&at.chrono[i])).next()
                })
            });
        }
        if let Some(cr) = &p.saffron {
            g.bench_function("saffron", |b| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) % N_INSTANTS;
                    cr.next_after(black_box(at.chrono[i]))
                })
            });
        }
        g.finish();
    }

    for (case, p) in cases.iter().zip(&parsed) {
        let n = case.iter_n;
        let mut g = c.benchmark_group(format!("iter10k/{}", case.label));
        configure_group(&mut g);
        // One iteration is milliseconds: flat sampling keeps the run short.
        g.sampling_mode(SamplingMode::Flat);
        // Records the fire count in benchmark.json (read by scripts/bench-table.py).
        g.throughput(Throughput::Elements(n as u64));
        let start_utc = &at.utc[0];
        let start_ny = &at.ny[0];
        let start_chrono = at.chrono[0];
        g.bench_function("rota", |b| {
            b.iter(|| drain(p.rota.upcoming(black_box(start_utc)).take(n)))
        });
        g.bench_function("rota_ny", |b| {
            b.iter(|| drain(p.rota.upcoming(black_box(start_ny)).take(n)))
        });
        if let Some(cr) = &p.croner {
            g.bench_function("croner", |b| {
                b.iter(|| drain(cr.iter_after(black_box(start_chrono)).take(n)))
            });
        }
        if let Some(cr) = &p.cron {
            g.bench_function("cron", |b| {
                b.iter(|| drain(cr.after(black_box(&start_chrono)).take(n)))
            });
        }
        if let Some(cr) = &p.saffron {
            g.bench_function("saffron", |b| {
                b.iter(|| drain(cr.clone().iter_after(black_box(start_chrono)).take(n)))
            });
        }
        g.finish();
    }
}

/// Consumes an iterator, keeping every item observable.
#[inline]
fn drain<T>(it: impl Iterator<Item = T>) -> usize {
    let mut n = 0;
    for x in it {
        black_box(&x);
        n += 1;
    }
    n
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
