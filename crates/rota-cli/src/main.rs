//! The `rota` command line: `rota next`, `rota explain`.

#[allow(dead_code)]
mod http;

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use rota::Schedule;

/// rota: a task scheduler. This binary shows when schedules fire.
#[derive(Debug, Parser)]
#[command(name = "rota", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the next fire times of a schedule, one per line, in RFC 3339.
    ///
    /// Examples:
    ///   rota next "30 2 * * *" --tz America/New_York --from 2026-03-08T00:00:00-05:00
    ///   rota next "0 */15 * * * *" -n 5
    ///   rota next "CRON_TZ=Australia/Lord_Howe 15 2 * * *" -n 3
    ///   rota next "@every 1h30m" -n 4
    #[command(verbatim_doc_comment)]
    Next {
        /// The schedule: 5, 6 or 7 cron fields, a descriptor (@daily) or @every <duration>.
        expr: String,
        /// Start strictly after this instant (RFC 3339, e.g. 2026-03-08T00:00:00-05:00). Default: now.
        #[arg(long)]
        from: Option<String>,
        /// IANA time zone to evaluate the schedule in (a CRON_TZ= prefix wins). Default: local zone.
        #[arg(long)]
        tz: Option<String>,
        /// How many fire times to print.
        #[arg(short = 'n', long = "count", default_value_t = 5)]
        n: usize,
    },
    /// Describe a schedule in plain English.
    ///
    /// Examples:
    ///   rota explain "30 2 * * MON-FRI"     # at 02:30, Monday through Friday
    ///   rota explain "0 0 12 ? * FRIL"      # at 12:00, on the last Friday of the month
    #[command(verbatim_doc_comment)]
    Explain {
        /// The schedule.
        expr: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Next { expr, from, tz, n } => next(&expr, from.as_deref(), tz.as_deref(), n),
        Command::Explain { expr } => {
            let s = Schedule::parse(&expr)?;
            println!("{}", s.explain());
            Ok(())
        }
    }
}

fn next(expr: &str, from: Option<&str>, tz: Option<&str>, n: usize) -> anyhow::Result<()> {
    let schedule = Schedule::parse(expr)?;
    let zone = match tz {
        Some(name) => {
            TimeZone::get(name).with_context(|| format!("--tz: unknown time zone {name:?}"))?
        }
        None => TimeZone::system(),
    };
    let zone = schedule.cron().and_then(|c| c.time_zone()).cloned().unwrap_or(zone);
    let from: Timestamp = match from {
        Some(s) => s.parse().with_context(|| {
            format!("--from: {s:?} is not an RFC 3339 timestamp (e.g. 2026-03-08T00:00:00-05:00)")
        })?,
        None => Timestamp::now(),
    };
    let start = from.to_zoned_datetime(zone.clone());
    let mut printed = 0;
    for fire in schedule.upcoming(&start).take(n) {
        println!("{}", fire.timestamp().display_with_offset(fire.offset()));
        printed += 1;
    }
    if printed == 0 && n > 0 {
        bail!("schedule {expr:?} never fires after {from}");
    }
    Ok(())
}
