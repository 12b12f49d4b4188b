//! The `rota` command line: the daemon (`rota run`, `rota validate`), its
//! clients (`rota tasks`, `rota history`, `rota run-now`), and the schedule
//! tools (`rota next`, `rota explain`).

mod client;
mod cluster;
mod config;
mod daemon;
mod http;
mod jobs;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use rota::Schedule;

/// rota: a task scheduler. Runs jobs from a config file, serves an HTTP API,
/// and shows when schedules fire.
#[derive(Debug, Parser)]
#[command(name = "rota", version, about)]
#[command(after_help = "Examples:
  rota validate --config examples/rota.toml
  rota run --config examples/rota.toml
  rota tasks
  rota history heartbeat --limit 5
  rota run-now heartbeat --token change-me
  rota next \"0 */15 * * * *\" -n 3")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: the config's jobs, the HTTP API and the dashboard.
    ///
    /// Without --config, or with a config without [store], the store is
    /// sqlite://rota.db in the working directory. SIGTERM or SIGINT stops it
    /// (running jobs get [scheduler] stop_grace to finish); SIGHUP reloads the
    /// config. An invalid config is refused with every error listed (exit 2).
    #[command(after_help = "Examples:
  rota run --config examples/rota.toml
  ROTA_TOKEN=secret rota run --config rota.toml
  kill -HUP $(pidof rota)        # reload the config
  ROTA_LOG=debug rota run         # no tasks of its own; serves the store's")]
    Run {
        /// The config file (TOML).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Check a config file: print every error with its line, or "ok: N tasks".
    #[command(after_help = "Examples:
  rota validate --config rota.toml
  rota validate -c examples/rota.toml && rota run -c examples/rota.toml

Output for a bad file, one line per error (exit status 2):
  rota.toml:12: task 'backup': schedule: minute: 61 is out of range 0-59
  rota.toml:14: task 'backup': timeout: \"10x\" is not a duration: ...")]
    Validate {
        /// The config file (TOML).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// List tasks, from the running daemon (default) or straight from a store.
    #[command(after_help = "Examples:
  rota tasks                                   # the daemon at $ROTA_API or http://127.0.0.1:7878
  rota tasks --api http://scheduler.internal:7878 --json
  rota tasks --store sqlite://rota.db          # no daemon needed
  rota tasks --config rota.toml                # the store that config names")]
    Tasks {
        #[command(flatten)]
        source: SourceArgs,
        /// Print JSON (the tasks' stored form) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a task's run history, newest first, with captured output.
    #[command(after_help = "Examples:
  rota history heartbeat
  rota history heartbeat --limit 5 --json
  rota history backup --store sqlite://rota.db")]
    History {
        /// The task ID (see `rota tasks`).
        id: String,
        #[command(flatten)]
        source: SourceArgs,
        /// At most this many runs.
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: usize,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running daemon to run a task now (needs the API token).
    #[command(after_help = "Examples:
  rota run-now heartbeat --token change-me
  ROTA_TOKEN=change-me rota run-now backup --api http://127.0.0.1:7878")]
    RunNow {
        /// The task ID (see `rota tasks`).
        id: String,
        /// The daemon's base URL. Default: $ROTA_API, else http://127.0.0.1:7878.
        #[arg(long, value_name = "URL")]
        api: Option<String>,
        /// Bearer token. Default: $ROTA_TOKEN.
        #[arg(long)]
        token: Option<String>,
    },
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

/// Where `tasks` and `history` read from: one of --api, --store, --config.
#[derive(Debug, clap::Args)]
#[group(multiple = false)]
struct SourceArgs {
    /// The running daemon's base URL. Default: $ROTA_API, else http://127.0.0.1:7878.
    #[arg(long, value_name = "URL")]
    api: Option<String>,
    /// Read this store directly: sqlite://PATH, postgres://..., redis://...
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Read the store this config file names.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Bearer token for the API. Default: $ROTA_TOKEN.
    #[arg(long)]
    token: Option<String>,
}

impl SourceArgs {
    fn source(self) -> anyhow::Result<client::Source> {
        client::Source::pick(self.api, self.store, self.config.as_deref(), env_token(self.token))
    }
}

/// `--token`, else `$ROTA_TOKEN`.
fn env_token(flag: Option<String>) -> Option<String> {
    flag.or_else(|| std::env::var("ROTA_TOKEN").ok()).filter(|t| !t.trim().is_empty())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Next { expr, from, tz, n } => {
            next(&expr, from.as_deref(), tz.as_deref(), n)?;
        }
        Command::Explain { expr } => {
            let s = Schedule::parse(&expr)?;
            println!("{}", s.explain());
        }
        Command::Run { config } => return runtime()?.block_on(daemon::run(config)),
        Command::Validate { config } => return Ok(daemon::validate(&config)),
        Command::Tasks { source, json } => {
            let source = source.source()?;
            runtime()?.block_on(client::tasks(source, json))?;
        }
        Command::History { id, source, limit, json } => {
            let source = source.source()?;
            runtime()?.block_on(client::history(source, &id, limit, json))?;
        }
        Command::RunNow { id, api, token } => {
            let api = api.unwrap_or_else(client::default_api);
            let token = env_token(token);
            runtime()?.block_on(client::run_now(&api, token.as_deref(), &id))?;
        }
    }
    Ok(ExitCode::SUCCESS)
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
