//! rota: a task scheduler for Rust.
//!
//! rota implements the Laravel-Go scheduler module in Rust: tasks and
//! handlers, a cron engine that is right in every time zone, a scheduler with
//! pause and resume, stores, a monitor and cluster backends.
//!
//! ```
//! use rota::CronExpression;
//! use jiff::ZonedDateTime;
//!
//! let cron = CronExpression::parse("0 0 2 * * *")?;
//! let from: ZonedDateTime = "2026-12-04T10:00:00+00:00[UTC]".parse()?;
//! assert_eq!(cron.next_run(&from).unwrap().to_string(), "2026-12-05T02:00:00+00:00[UTC]");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! * [`cron`]: the cron engine ([`CronExpression`], [`Schedule`], [`parse_schedule`]).
//! * [`error`]: the one error type, with the seed's 17 kinds.

pub mod cron;
pub mod error;

pub use cron::{parse_schedule, CronExpression, Schedule, Upcoming};
pub use error::{CronField, Error, ErrorKind, ParseError, Result};
