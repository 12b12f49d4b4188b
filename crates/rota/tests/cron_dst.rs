//! The DST rules of the cron engine, on both change days of New York, London,
//! Lord Howe (a 30-minute shift) and Santiago (where midnight is skipped),
//! starting before, inside and after each change.
//!
//! Expected values are written from the zone rules (tzdb), not read off the
//! implementation: New York 2026 springs forward on 8 March at 02:00 (to 03:00
//! EDT) and falls back on 1 November at 02:00 EDT (to 01:00 EST); London on
//! 29 March at 01:00 GMT and 25 October at 02:00 BST; Lord Howe on 4 October at
//! 02:00 (+10:30 to +11:00) and 5 April at 02:00 (+11:00 to +10:30); Santiago
//! on 6 September at 00:00 (-04 to -03) and 5 April at 00:00 (-03 to -04).

use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};
use rota::CronExpression;

fn zdt(s: &str, zone: &str) -> ZonedDateTime {
    let ts: Timestamp = s.parse().unwrap();
    ts.to_zoned_datetime(TimeZone::get(zone).unwrap())
}

fn rfc(z: &ZonedDateTime) -> String {
    z.timestamp().display_with_offset(z.offset()).to_string()
}

/// The next `n` fires after `from` in `zone`, as RFC 3339 with offset.
fn next_n(expr: &str, zone: &str, from: &str, n: usize) -> Vec<String> {
    let c = CronExpression::parse(expr).unwrap();
    c.upcoming(&zdt(from, zone)).take(n).map(|z| rfc(&z)).collect()
}

fn prev(expr: &str, zone: &str, from: &str) -> String {
    let c = CronExpression::parse(expr).unwrap();
    rfc(&c.prev_run(&zdt(from, zone)).unwrap())
}

const NY: &str = "America/New_York";

#[test]
fn fixed_time_in_spring_gap_fires_once_at_gap_end() {
    // Before the change.
    assert_eq!(
        next_n("30 2 * * *", NY, "2026-03-07T12:00:00-05:00", 3),
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"]
    );
    // Exactly at the gap's end: that fire is not after `from`.
    assert_eq!(
        next_n("30 2 * * *", NY, "2026-03-08T03:00:00-04:00", 1),
        ["2026-03-09T02:30:00-04:00"]
    );
    // After the change.
    assert_eq!(
        next_n("30 2 * * *", NY, "2026-03-08T03:10:00-04:00", 1),
        ["2026-03-09T02:30:00-04:00"]
    );
    // Two skipped times of one job still fire once.
    assert_eq!(
        next_n("0,30 2 * * *", NY, "2026-03-08T00:00:00-05:00", 2),
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"]
    );
    // A range of hours is still fixed-time (Vixie's rule).
    assert_eq!(
        next_n("30 1-3 * * *", NY, "2026-03-08T00:00:00-05:00", 3),
        ["2026-03-08T01:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T03:30:00-04:00"]
    );
}

#[test]
fn fixed_time_in_fall_fold_fires_at_first_occurrence_only() {
    assert_eq!(
        next_n("30 1 * * *", NY, "2026-11-01T00:00:00-04:00", 2),
        ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    );
    // Inside the first pass, before the fire.
    assert_eq!(
        next_n("30 1 * * *", NY, "2026-11-01T01:10:00-04:00", 1),
        ["2026-11-01T01:30:00-04:00"]
    );
    // Inside the first pass, after the fire.
    assert_eq!(
        next_n("30 1 * * *", NY, "2026-11-01T01:40:00-04:00", 1),
        ["2026-11-02T01:30:00-05:00"]
    );
    // Inside the second pass: 01:30 EST is the repeat, it does not fire.
    assert_eq!(
        next_n("30 1 * * *", NY, "2026-11-01T01:10:00-05:00", 1),
        ["2026-11-02T01:30:00-05:00"]
    );
    // After the change.
    assert_eq!(
        next_n("30 1 * * *", NY, "2026-11-01T02:00:00-05:00", 1),
        ["2026-11-02T01:30:00-05:00"]
    );
}

#[test]
fn elapsed_time_jobs_skip_the_gap_and_repeat_the_fold() {
    assert_eq!(
        next_n("0 */15 * * * *", NY, "2026-03-08T01:00:00-05:00", 6),
        [
            "2026-03-08T01:15:00-05:00",
            "2026-03-08T01:30:00-05:00",
            "2026-03-08T01:45:00-05:00",
            "2026-03-08T03:00:00-04:00",
            "2026-03-08T03:15:00-04:00",
            "2026-03-08T03:30:00-04:00",
        ]
    );
    assert_eq!(
        next_n("0 */15 * * * *", NY, "2026-11-01T00:50:00-04:00", 9),
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:15:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T01:45:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T01:15:00-05:00",
            "2026-11-01T01:30:00-05:00",
            "2026-11-01T01:45:00-05:00",
            "2026-11-01T02:00:00-05:00",
        ]
    );
    // Starting inside the second pass finds the second pass.
    assert_eq!(
        next_n("0 */15 * * * *", NY, "2026-11-01T01:20:00-05:00", 1),
        ["2026-11-01T01:30:00-05:00"]
    );
    // An hourly job in the skipped hour: nothing at 02:00, next at 03:00.
    assert_eq!(
        next_n("0 * * * *", NY, "2026-03-08T01:30:00-05:00", 2),
        ["2026-03-08T03:00:00-04:00", "2026-03-08T04:00:00-04:00"]
    );
    // A minute-by-minute job restricted to hour 2 does not fire on spring-forward day.
    assert_eq!(
        next_n("* 2 * * *", NY, "2026-03-08T00:00:00-05:00", 1),
        ["2026-03-09T02:00:00-04:00"]
    );
}

#[test]
fn every_fifteen_minutes_is_fifteen_real_minutes_through_both_changes() {
    for from in ["2026-03-07T00:00:00-05:00", "2026-10-31T00:00:00-04:00"] {
        let c = CronExpression::parse("0 */15 * * * *").unwrap();
        let fires: Vec<Timestamp> =
            c.upcoming(&zdt(from, NY)).take(4 * 72).map(|z| z.timestamp()).collect();
        for w in fires.windows(2) {
            assert_eq!(w[1].as_second() - w[0].as_second(), 900, "between {} and {}", w[0], w[1]);
        }
    }
}

#[test]
fn london() {
    const L: &str = "Europe/London";
    assert_eq!(
        next_n("30 1 * * *", L, "2026-03-28T12:00:00+00:00", 2),
        ["2026-03-29T02:00:00+01:00", "2026-03-30T01:30:00+01:00"]
    );
    assert_eq!(
        next_n("30 1 * * *", L, "2026-03-29T02:00:00+01:00", 1),
        ["2026-03-30T01:30:00+01:00"]
    );
    assert_eq!(
        next_n("30 1 * * *", L, "2026-10-25T00:00:00+01:00", 2),
        ["2026-10-25T01:30:00+01:00", "2026-10-26T01:30:00+00:00"]
    );
    assert_eq!(
        next_n("30 1 * * *", L, "2026-10-25T01:05:00+00:00", 1),
        ["2026-10-26T01:30:00+00:00"]
    );
    assert_eq!(
        next_n("0 */30 * * * *", L, "2026-10-25T00:00:00+00:00", 4),
        [
            "2026-10-25T01:30:00+01:00",
            "2026-10-25T01:00:00+00:00",
            "2026-10-25T01:30:00+00:00",
            "2026-10-25T02:00:00+00:00"
        ]
    );
}

#[test]
fn lord_howe_half_hour_shift() {
    const LH: &str = "Australia/Lord_Howe";
    // 02:00-02:30 is skipped on 4 October: 02:15 fires when the gap ends.
    assert_eq!(
        next_n("15 2 * * *", LH, "2026-10-03T12:00:00+10:30", 2),
        ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"]
    );
    assert_eq!(
        next_n("15 2 * * *", LH, "2026-10-04T02:31:00+11:00", 1),
        ["2026-10-05T02:15:00+11:00"]
    );
    assert_eq!(
        next_n("0 */15 * * * *", LH, "2026-10-04T01:40:00+10:30", 3),
        ["2026-10-04T01:45:00+10:30", "2026-10-04T02:30:00+11:00", "2026-10-04T02:45:00+11:00"]
    );
    // 01:30-02:00 repeats on 5 April.
    assert_eq!(
        next_n("0 */15 * * * *", LH, "2026-04-05T01:20:00+11:00", 5),
        [
            "2026-04-05T01:30:00+11:00",
            "2026-04-05T01:45:00+11:00",
            "2026-04-05T01:30:00+10:30",
            "2026-04-05T01:45:00+10:30",
            "2026-04-05T02:00:00+10:30",
        ]
    );
    assert_eq!(
        next_n("45 1 * * *", LH, "2026-04-05T00:00:00+11:00", 2),
        ["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"]
    );
    assert_eq!(
        next_n("45 1 * * *", LH, "2026-04-05T01:35:00+10:30", 1),
        ["2026-04-06T01:45:00+10:30"]
    );
}

#[test]
fn santiago_skips_midnight() {
    const S: &str = "America/Santiago";
    // Midnight of 6 September does not exist: a daily midnight job fires at 01:00.
    assert_eq!(
        next_n("0 0 * * *", S, "2026-09-05T12:00:00-04:00", 2),
        ["2026-09-06T01:00:00-03:00", "2026-09-07T00:00:00-03:00"]
    );
    assert_eq!(
        next_n("0 */30 * * * *", S, "2026-09-05T23:10:00-04:00", 3),
        ["2026-09-05T23:30:00-04:00", "2026-09-06T01:00:00-03:00", "2026-09-06T01:30:00-03:00"]
    );
    // 23:00-24:00 of 4 April repeats.
    assert_eq!(
        next_n("30 23 * * *", S, "2026-04-04T12:00:00-03:00", 2),
        ["2026-04-04T23:30:00-03:00", "2026-04-05T23:30:00-04:00"]
    );
    assert_eq!(
        next_n("30 23 * * *", S, "2026-04-04T23:10:00-04:00", 1),
        ["2026-04-05T23:30:00-04:00"]
    );
    assert_eq!(
        next_n("0 */30 * * * *", S, "2026-04-04T22:45:00-03:00", 5),
        [
            "2026-04-04T23:00:00-03:00",
            "2026-04-04T23:30:00-03:00",
            "2026-04-04T23:00:00-04:00",
            "2026-04-04T23:30:00-04:00",
            "2026-04-05T00:00:00-04:00",
        ]
    );
}

#[test]
fn prev_run_mirrors_the_rules() {
    assert_eq!(prev("30 2 * * *", NY, "2026-03-08T03:00:01-04:00"), "2026-03-08T03:00:00-04:00");
    assert_eq!(prev("30 2 * * *", NY, "2026-03-08T03:00:00-04:00"), "2026-03-07T02:30:00-05:00");
    assert_eq!(prev("30 1 * * *", NY, "2026-11-01T01:40:00-05:00"), "2026-11-01T01:30:00-04:00");
    assert_eq!(prev("30 1 * * *", NY, "2026-11-01T01:20:00-05:00"), "2026-11-01T01:30:00-04:00");
    assert_eq!(
        prev("0 */15 * * * *", NY, "2026-03-08T03:00:00-04:00"),
        "2026-03-08T01:45:00-05:00"
    );
    assert_eq!(
        prev("0 */15 * * * *", NY, "2026-11-01T01:10:00-05:00"),
        "2026-11-01T01:00:00-05:00"
    );
    assert_eq!(
        prev("0 */15 * * * *", NY, "2026-11-01T01:00:00-05:00"),
        "2026-11-01T01:45:00-04:00"
    );
    assert_eq!(
        prev("15 2 * * *", "Australia/Lord_Howe", "2026-10-04T03:00:00+11:00"),
        "2026-10-04T02:30:00+11:00"
    );
    assert_eq!(
        prev("0 0 * * *", "America/Santiago", "2026-09-06T05:00:00-03:00"),
        "2026-09-06T01:00:00-03:00"
    );
}

#[test]
fn upcoming_is_strictly_increasing_across_many_transitions() {
    for zone in [NY, "Europe/London", "Australia/Lord_Howe", "America/Santiago"] {
        for expr in ["30 2 * * *", "0 */15 * * * *", "0 0 * * *", "30 1-2 * * *", "*/20 * * * * *"]
        {
            let c = CronExpression::parse(expr).unwrap();
            let from = zdt("2025-12-30T00:00:00Z", zone);
            let limit = if expr.starts_with("*/20") { 2000 } else { 800 };
            let fires: Vec<Timestamp> =
                c.upcoming(&from).take(limit).map(|z| z.timestamp()).collect();
            assert!(fires.windows(2).all(|w| w[0] < w[1]), "{expr} in {zone}");
        }
    }
}

#[test]
fn schedule_zone_prefix_wins_over_caller_zone() {
    let c = CronExpression::parse("CRON_TZ=Asia/Tokyo 0 9 * * *").unwrap();
    let from = zdt("2026-12-04T00:00:00Z", NY);
    let next = c.next_run(&from).unwrap();
    assert_eq!(rfc(&next), "2026-12-05T09:00:00+09:00");
    assert_eq!(next.time_zone().iana_name(), Some("Asia/Tokyo"));
    let c = CronExpression::parse("TZ=Europe/London 0 9 * * *").unwrap();
    assert_eq!(c.time_zone().and_then(|t| t.iana_name()), Some("Europe/London"));
}
