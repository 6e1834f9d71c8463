//! `ww:host/log`: guest log records, re-emitted as `tracing` events under the `ww::guest`
//! target with the cell's image name as a field.

use super::CellInfo;
use crate::bindings::ww::host::log::{Host, Level};

/// The bytes of one guest message that reach the log; the rest is cut so a guest cannot
/// flood the host's log with one call.
const MAX_MESSAGE: usize = 8 * 1024;

impl Host for CellInfo {
    fn enabled(&mut self, level: Level) -> bool {
        match level {
            Level::Trace => tracing::enabled!(target: "ww::guest", tracing::Level::TRACE),
            Level::Debug => tracing::enabled!(target: "ww::guest", tracing::Level::DEBUG),
            Level::Info => tracing::enabled!(target: "ww::guest", tracing::Level::INFO),
            Level::Warn => tracing::enabled!(target: "ww::guest", tracing::Level::WARN),
            Level::Error => tracing::enabled!(target: "ww::guest", tracing::Level::ERROR),
        }
    }

    fn log(&mut self, level: Level, target: String, message: String) {
        let message = truncate(&message, MAX_MESSAGE);
        let cell = self.image.as_str();
        match level {
            Level::Trace => {
                tracing::trace!(target: "ww::guest", cell, guest = %target, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "ww::guest", cell, guest = %target, "{message}")
            }
            Level::Info => tracing::info!(target: "ww::guest", cell, guest = %target, "{message}"),
            Level::Warn => tracing::warn!(target: "ww::guest", cell, guest = %target, "{message}"),
            Level::Error => {
                tracing::error!(target: "ww::guest", cell, guest = %target, "{message}")
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    #[test]
    fn truncates_on_a_char_boundary() {
        assert_eq!(super::truncate("héllo", 2), "h");
        assert_eq!(super::truncate("héllo", 3), "hé");
        assert_eq!(super::truncate("abc", 8), "abc");
    }
}
