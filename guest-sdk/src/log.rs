//! Logging into the host's log.
//!
//! A cell does not write log lines to its own stderr: it sends records to the host, which
//! attributes them to the cell and decides what is recorded (`ww -v`, `-q`, `RUST_LOG`).
//! Use the macros [`trace!`](crate::trace), [`debug!`](crate::debug),
//! [`info!`](crate::info), [`warn!`](crate::warn) and [`error!`](crate::error), which take
//! [`format!`] arguments, skip formatting (and evaluating the arguments) when the host would
//! drop the record, and name the calling module as the record's target:
//!
//! ```no_run
//! let n = 3;
//! ww::info!("started with {n} workers");
//! if ww::log::enabled(ww::log::Level::Debug) {
//!     // prepare something costly to log
//! }
//! ```

use std::fmt;

use crate::bindings::ww::host::log as raw;

/// How important a record is, lowest first (`Trace < Debug < … < Error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing of what the cell does.
    Trace,
    /// Information useful when debugging the cell.
    Debug,
    /// Normal, noteworthy events.
    Info,
    /// Something unexpected that the cell can live with.
    Warn,
    /// A failure.
    Error,
}

impl Level {
    /// The level's name in lower case, as the WIT enum spells it (`"info"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Level> for raw::Level {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => raw::Level::Trace,
            Level::Debug => raw::Level::Debug,
            Level::Info => raw::Level::Info,
            Level::Warn => raw::Level::Warn,
            Level::Error => raw::Level::Error,
        }
    }
}

/// Whether the host would record a message at `level`.
///
/// The logging macros check this themselves; call it to skip preparing a costly record.
pub fn enabled(level: Level) -> bool {
    raw::enabled(level.into())
}

/// Records `message` at `level` in the host's log. `target` names the part of the cell that
/// speaks, by convention its module path.
///
/// Prefer the macros, which fill in `target` and format only when needed.
pub fn log(level: Level, target: &str, message: &str) {
    raw::log(level.into(), target, message);
}

/// Sends already checked, not yet formatted arguments; used by the macros.
#[doc(hidden)]
pub fn __log_args(level: Level, target: &str, args: fmt::Arguments<'_>) {
    match args.as_str() {
        Some(message) => log(level, target, message),
        None => log(level, target, &fmt::format(args)),
    }
}

/// Logs a [`format!`]-style message at the given [`Level`](crate::log::Level), with the
/// calling module's path as target, if the host would record it.
///
/// The arguments are neither evaluated nor formatted when the level is disabled.
///
/// ```no_run
/// ww::log!(ww::log::Level::Warn, "disk {}% full", 93);
/// ```
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {{
        let level: $crate::log::Level = $level;
        if $crate::log::enabled(level) {
            $crate::log::__log_args(level, ::core::module_path!(), ::core::format_args!($($arg)+));
        }
    }};
}

/// Logs a [`format!`]-style message at [`Level::Trace`](crate::log::Level::Trace); see
/// [`log!`](crate::log!).
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Trace, $($arg)+) };
}

/// Logs a [`format!`]-style message at [`Level::Debug`](crate::log::Level::Debug); see
/// [`log!`](crate::log!).
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Debug, $($arg)+) };
}

/// Logs a [`format!`]-style message at [`Level::Info`](crate::log::Level::Info); see
/// [`log!`](crate::log!).
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Info, $($arg)+) };
}

/// Logs a [`format!`]-style message at [`Level::Warn`](crate::log::Level::Warn); see
/// [`log!`](crate::log!).
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Warn, $($arg)+) };
}

/// Logs a [`format!`]-style message at [`Level::Error`](crate::log::Level::Error); see
/// [`log!`](crate::log!).
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log!($crate::log::Level::Error, $($arg)+) };
}
