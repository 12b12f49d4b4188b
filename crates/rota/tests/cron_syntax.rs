//! Every form of the schedule syntax, and the errors for what is not.

use jiff::tz::TimeZone;
use jiff::Timestamp;
use rota::{CronExpression, CronField, ErrorKind, Schedule};

fn next_utc(expr: &str, from: &str, n: usize) -> Vec<String> {
    let c = CronExpression::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
    let mut t: Timestamp = from.parse().unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        t = c.next_after(t, &TimeZone::UTC).unwrap();
        out.push(t.to_string());
    }
    out
}

fn err(expr: &str) -> rota::ParseError {
    match Schedule::parse(expr) {
        Ok(s) => panic!("{expr:?} parsed: {s:?}"),
        Err(e) => e,
    }
}

#[test]
fn five_six_and_seven_fields() {
    assert_eq!(next_utc("30 2 * * *", "2026-12-04T10:00:00Z", 1), ["2026-12-05T02:30:00Z"]);
    assert_eq!(
        next_utc("0 * * * * *", "2026-12-04T10:00:30Z", 2),
        ["2026-12-04T10:01:00Z", "2026-12-04T10:02:00Z"]
    );
    assert_eq!(next_utc("0 0 2 * * *", "2026-12-04T10:00:00Z", 1), ["2026-12-05T02:00:00Z"]);
    assert_eq!(
        next_utc("0 0 0 1 1 * 2028,2030", "2026-12-04T10:00:00Z", 2),
        ["2028-01-01T00:00:00Z", "2030-01-01T00:00:00Z"]
    );
    let c = CronExpression::parse("0 0 0 1 1 ? 2027-2029").unwrap();
    assert_eq!(c.year(), vec![2027, 2028, 2029]);
    assert_eq!(CronExpression::parse("0 0 0 1 1 * *").unwrap().year().len(), 230);
}

#[test]
fn lists_ranges_steps_and_names() {
    let c = CronExpression::parse("*/15 5/20 1-9/4 * jan-Mar Mon-fri").unwrap();
    assert_eq!(c.second(), vec![0, 15, 30, 45]);
    assert_eq!(c.minute(), vec![5, 25, 45]);
    assert_eq!(c.hour(), vec![1, 5, 9]);
    let c = CronExpression::parse("0 10-40/7 * 1,5,9 JAN-MAR MON-FRI").unwrap();
    assert_eq!(c.minute(), vec![10, 17, 24, 31, 38]);
    assert_eq!(c.day_of_month(), vec![1, 5, 9]);
    assert_eq!(c.month(), vec![1, 2, 3]);
    assert_eq!(c.day_of_week(), vec![1, 2, 3, 4, 5]);
    let c = CronExpression::parse("0 0 * * 0,7").unwrap();
    assert_eq!(c.day_of_week(), vec![0]);
    let c = CronExpression::parse("0 0 * * 5-7").unwrap();
    assert_eq!(c.day_of_week(), vec![0, 5, 6]);
    let c = CronExpression::parse("0 0 ? * *").unwrap();
    assert_eq!(c.day_of_month().len(), 31);
}

#[test]
fn vixie_or_rule_when_both_day_fields_are_restricted() {
    // Friday 13ths and every other Friday and 13th: either field matches.
    assert_eq!(
        next_utc("0 0 13 * FRI", "2026-12-01T00:00:00Z", 4),
        [
            "2026-12-04T00:00:00Z",
            "2026-12-11T00:00:00Z",
            "2026-12-13T00:00:00Z",
            "2026-12-18T00:00:00Z",
        ]
    );
    // With `*` (or a step starting with `*`, or `?`) in one field, both must match.
    assert_eq!(
        next_utc("0 0 */2 * FRI", "2026-12-01T00:00:00Z", 2),
        ["2026-12-11T00:00:00Z", "2026-12-25T00:00:00Z"]
    );
    assert_eq!(next_utc("0 0 ? * FRI", "2026-12-01T00:00:00Z", 1), ["2026-12-04T00:00:00Z"]);
}

#[test]
fn quartz_specials() {
    // Last day, third-to-last day.
    assert_eq!(
        next_utc("0 0 L * *", "2027-01-15T00:00:00Z", 3),
        ["2027-01-31T00:00:00Z", "2027-02-28T00:00:00Z", "2027-03-31T00:00:00Z"]
    );
    assert_eq!(next_utc("0 0 L-3 2 *", "2028-01-01T00:00:00Z", 1), ["2028-02-26T00:00:00Z"]);
    // 15W: 15 Aug 2026 is a Saturday, so Friday the 14th; 15 Nov 2026 a Sunday, so Monday the 16th.
    assert_eq!(next_utc("0 0 15W 8 *", "2026-01-01T00:00:00Z", 1), ["2026-08-14T00:00:00Z"]);
    assert_eq!(next_utc("0 0 15W 11 *", "2026-01-01T00:00:00Z", 1), ["2026-11-16T00:00:00Z"]);
    // 1W on Saturday 1 Aug 2026 stays in the month: Monday the 3rd.
    assert_eq!(next_utc("0 0 1W 8 *", "2026-01-01T00:00:00Z", 1), ["2026-08-03T00:00:00Z"]);
    // LW: 31 Jan 2027 is a Sunday, so Friday the 29th.
    assert_eq!(next_utc("0 0 LW 1 *", "2027-01-01T00:00:00Z", 1), ["2027-01-29T00:00:00Z"]);
    // Last Friday, as 5L and FRIL.
    for e in ["0 0 12 ? * 5L", "0 0 12 ? * FRIL", "0 0 12 ? * friL"] {
        assert_eq!(
            next_utc(e, "2026-12-01T00:00:00Z", 2),
            ["2026-12-25T12:00:00Z", "2027-01-29T12:00:00Z"]
        );
    }
    // Second Monday.
    assert_eq!(
        next_utc("0 0 12 ? * MON#2", "2026-12-01T00:00:00Z", 2),
        ["2026-12-14T12:00:00Z", "2027-01-11T12:00:00Z"]
    );
    // Fifth Monday skips months without one (December 2026 and Jan-Feb 2027 have four).
    assert_eq!(
        next_utc("0 0 0 ? * 1#5", "2026-12-01T00:00:00Z", 2),
        ["2027-03-29T00:00:00Z", "2027-05-31T00:00:00Z"]
    );
}

#[test]
fn descriptors_and_intervals() {
    for (d, first) in [
        ("@yearly", "2027-01-01T00:00:00Z"),
        ("@annually", "2027-01-01T00:00:00Z"),
        ("@monthly", "2027-01-01T00:00:00Z"),
        ("@weekly", "2026-12-06T00:00:00Z"),
        ("@daily", "2026-12-05T00:00:00Z"),
        ("@midnight", "2026-12-05T00:00:00Z"),
        ("@hourly", "2026-12-04T11:00:00Z"),
        ("@DAILY", "2026-12-05T00:00:00Z"),
    ] {
        assert_eq!(next_utc(d, "2026-12-04T10:30:00Z", 1), [first], "{d}");
    }
    let s = Schedule::parse("@every 1h30m").unwrap();
    assert_eq!(s.interval(), Some(std::time::Duration::from_secs(5400)));
    let anchor: Timestamp = "2026-12-04T10:00:10Z".parse().unwrap();
    let s = Schedule::parse("@every 90s").unwrap();
    let n1 = s.next_after(anchor, &TimeZone::UTC, anchor).unwrap();
    assert_eq!(n1.to_string(), "2026-12-04T10:01:40Z");
    let later: Timestamp = "2026-12-04T10:02:00Z".parse().unwrap();
    assert_eq!(
        s.next_after(later, &TimeZone::UTC, anchor).unwrap().to_string(),
        "2026-12-04T10:03:10Z"
    );
    assert_eq!(
        s.prev_before(later, &TimeZone::UTC, anchor).unwrap().to_string(),
        "2026-12-04T10:01:40Z"
    );
}

#[test]
fn never_firing_schedules_fail_fast() {
    let e = err("0 0 30 2 *");
    assert_eq!(e.kind(), ErrorKind::InvalidSchedule);
    assert!(e.to_string().contains("can never fire"), "{e}");
    assert_eq!(err("0 0 31 4,6,9,11 *").kind(), ErrorKind::InvalidSchedule);
    // Feb 29 fires in leap years.
    assert_eq!(
        next_utc("0 0 12 29 2 *", "2026-12-01T00:00:00Z", 2),
        ["2028-02-29T12:00:00Z", "2032-02-29T12:00:00Z"]
    );
    // A year list that holds no leap year: parses, and next_after says None quickly.
    let c = CronExpression::parse("0 0 0 29 2 ? 2025-2027").unwrap();
    let start = std::time::Instant::now();
    assert_eq!(c.next_after("2020-01-01T00:00:00Z".parse().unwrap(), &TimeZone::UTC), None);
    let c = CronExpression::parse("0 0 0 29 2 ? 2199").unwrap();
    assert_eq!(c.next_after("1970-01-01T00:00:00Z".parse().unwrap(), &TimeZone::UTC), None);
    assert!(start.elapsed() < std::time::Duration::from_millis(50));
}

#[test]
fn errors_name_field_token_and_reason() {
    let cases: &[(&str, ErrorKind, Option<CronField>, &str)] = &[
        (
            "61 0 * * *",
            ErrorKind::InvalidCronExpression,
            Some(CronField::Minute),
            "61 is out of range 0-59",
        ),
        (
            "0 61 * * *",
            ErrorKind::InvalidCronExpression,
            Some(CronField::Hour),
            "61 is out of range 0-23",
        ),
        (
            "60 * * * * *",
            ErrorKind::InvalidCronExpression,
            Some(CronField::Second),
            "60 is out of range 0-59",
        ),
        (
            "* * 0 * *",
            ErrorKind::InvalidCronExpression,
            Some(CronField::DayOfMonth),
            "0 is out of range 1-31",
        ),
        (
            "* * * 13 *",
            ErrorKind::InvalidCronExpression,
            Some(CronField::Month),
            "13 is out of range 1-12",
        ),
        (
            "* * * * 8",
            ErrorKind::InvalidCronExpression,
            Some(CronField::DayOfWeek),
            "8 is out of range 0-7",
        ),
        (
            "0 0 0 1 1 * 1969",
            ErrorKind::InvalidCronExpression,
            Some(CronField::Year),
            "1969 is out of range 1970-2199",
        ),
        ("* * *", ErrorKind::InvalidCronExpression, None, "got 3"),
        ("* * * * * * * *", ErrorKind::InvalidCronExpression, None, "more than 7"),
        ("", ErrorKind::InvalidSchedule, None, "empty schedule"),
        ("1,,2 * * * *", ErrorKind::InvalidCronExpression, Some(CronField::Minute), "empty value"),
        (
            "*/0 * * * *",
            ErrorKind::InvalidCronExpression,
            Some(CronField::Minute),
            "step must be at least 1",
        ),
        (
            "5-1 * * * *",
            ErrorKind::InvalidCronExpression,
            Some(CronField::Minute),
            "range 5-1 is reversed",
        ),
        (
            "0 0 * FOO *",
            ErrorKind::InvalidCronExpression,
            Some(CronField::Month),
            "unknown name \"FOO\"",
        ),
        (
            "0 0 * * FUNDAY",
            ErrorKind::InvalidCronExpression,
            Some(CronField::DayOfWeek),
            "unknown name",
        ),
        (
            "0 0 ? * MON#6",
            ErrorKind::InvalidCronExpression,
            Some(CronField::DayOfWeek),
            "#6 is not a week",
        ),
        (
            "0 0 1-5W * *",
            ErrorKind::InvalidCronExpression,
            Some(CronField::DayOfMonth),
            "W needs a single day",
        ),
        (
            "0 0 L-31 * *",
            ErrorKind::InvalidCronExpression,
            Some(CronField::DayOfMonth),
            "L-n needs an offset",
        ),
        ("0 ? * * *", ErrorKind::InvalidCronExpression, Some(CronField::Hour), "? is only allowed"),
        (
            "*/x * * * *",
            ErrorKind::InvalidCronExpression,
            Some(CronField::Minute),
            "is not a number",
        ),
        ("@fortnightly", ErrorKind::InvalidCronExpression, None, "unknown descriptor"),
        ("@every", ErrorKind::InvalidSchedule, None, "needs a duration"),
        ("@every 0s", ErrorKind::InvalidSchedule, None, "shorter than the minimum"),
        ("@every 5x", ErrorKind::InvalidSchedule, None, "unknown unit"),
        (
            "CRON_TZ=Mars/Base 0 0 * * *",
            ErrorKind::InvalidSchedule,
            None,
            "unknown time zone \"Mars/Base\"",
        ),
    ];
    for (expr, kind, field, reason) in cases {
        let e = err(expr);
        assert_eq!(e.kind(), *kind, "{expr}: {e}");
        assert_eq!(e.field(), *field, "{expr}: {e}");
        assert!(e.to_string().contains(reason), "{expr}: {e} should contain {reason:?}");
        assert!(e.to_string().contains(&format!("{expr:?}")), "{e} should quote the expression");
    }
    assert_eq!(
        err("61 0 * * *").to_string(),
        r#"invalid cron expression "61 0 * * *": minute: 61 is out of range 0-59"#
    );
    // The seed's error kinds through the crate-wide error type.
    let e: rota::Error = err("0 0 30 2 *").into();
    assert_eq!(e.kind(), ErrorKind::InvalidSchedule);
}

#[test]
fn parse_schedule_is_the_next_run_after_now() {
    let before = Timestamp::now();
    let next = rota::parse_schedule("* * * * * *").unwrap();
    assert!(next > before);
    assert!(next.as_second() - before.as_second() <= 2);
    let e = rota::parse_schedule("0 0 0 1 1 ? 1999").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSchedule);
    assert!(e.to_string().contains("never fires again"), "{e}");
    assert_eq!(rota::parse_schedule("nope").unwrap_err().kind(), ErrorKind::InvalidCronExpression);
}

#[test]
fn explain_in_plain_english() {
    let cases = [
        ("30 2 * * MON-FRI", "at 02:30, Monday through Friday"),
        ("0 0 12 ? * FRIL", "at 12:00, on the last Friday of the month"),
        ("0 0 12 ? * MON#2", "at 12:00, on the second Monday of the month"),
        ("*/15 * * * *", "every 15 minutes"),
        ("0 9 L * *", "at 09:00, on the last day of the month"),
        ("0 0 1 1 *", "at 00:00, on the 1st of the month, in January"),
    ];
    for (expr, words) in cases {
        assert_eq!(CronExpression::parse(expr).unwrap().explain(), words, "{expr}");
    }
    assert_eq!(Schedule::parse("@every 1h30m").unwrap().explain(), "every 1 hour 30 minutes");
}
