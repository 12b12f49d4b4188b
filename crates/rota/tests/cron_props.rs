//! placeholder
#[test]
fn scratch() {
    let c = rota::CronExpression::parse("0 0 */2 * *").unwrap();
    println!("{:?}", c.day_of_month());
    let from: jiff::ZonedDateTime = "2026-12-04T10:00:00+00:00[UTC]".parse().unwrap();
    let v: Vec<String> = c.upcoming(&from).take(4).map(|z| z.to_string()).collect();
    println!("{v:?}");
    let c = rota::CronExpression::parse("0 0 * * */2").unwrap();
    println!("{:?}", c.day_of_week());
    let v: Vec<String> = c.upcoming(&from).take(4).map(|z| z.to_string()).collect();
    println!("{v:?}");
    let c = rota::CronExpression::parse("0 0 */2 * MON").unwrap();
    let v: Vec<String> = c.upcoming(&from).take(4).map(|z| z.to_string()).collect();
    println!("{v:?} {}", c.explain());
}
