//! The size accounting of ww's capped on-disk caches (compiled code, IPFS content): a
//! running total of what a cache directory holds, corrected by a full scan every so many
//! additions (other `ww` processes add to it too), and eviction down to nine tenths of the
//! cap once the total passes it. What a scan counts and what an eviction removes is each
//! cache's own business; when to do either is decided here, once.

use std::path::Path;
use std::sync::Mutex;

/// A cache's cap and what this process knows of its size.
#[derive(Debug)]
pub(crate) struct Tally {
    /// The cache's name, for the log.
    what: &'static str,
    max: u64,
    rescan_every: u32,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The size at the last scan or eviction plus what was added since; `None` before any.
    total: Option<u64>,
    /// Additions since the last scan or eviction.
    added: u32,
}

/// What an eviction removed and left, in bytes and entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Evicted {
    /// Entries removed.
    pub entries: u64,
    /// Bytes removed.
    pub bytes: u64,
    /// Bytes left in the cache.
    pub remaining: u64,
}

impl Tally {
    /// A tally for the cache named `what` (in logs), capped at `max` bytes, scanned again
    /// every `rescan_every` additions.
    pub(crate) fn new(what: &'static str, max: u64, rescan_every: u32) -> Tally {
        Tally {
            what,
            max,
            rescan_every,
            state: Mutex::new(State::default()),
        }
    }

    /// Counts `bytes` just added to the cache at `dir`. When a scan is due, `scan` gives the
    /// cache's size; when the total passes the cap, `evict(target)` brings the cache down to
    /// `target` bytes (never removing what was just added). A scan or eviction that fails is
    /// logged and tried again at the next addition: the cache still works, only larger.
    pub(crate) fn add<E: std::fmt::Display>(
        &self,
        bytes: u64,
        dir: &Path,
        scan: impl FnOnce() -> Result<u64, E>,
        evict: impl FnOnce(u64) -> Result<Evicted, E>,
    ) {
        // A panic while holding this lock leaves a stale total, which the next scan fixes.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.added += 1;
        let total = match state.total {
            Some(total) if state.added < self.rescan_every => total.saturating_add(bytes),
            _ => {
                state.added = 0;
                match scan() {
                    Ok(total) => total,
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), "cannot size the {}: {e}", self.what);
                        return;
                    }
                }
            }
        };
        state.total = Some(total);
        if total <= self.max {
            return;
        }
        match evict(self.max - self.max / 10) {
            Ok(evicted) => {
                state.added = 0;
                state.total = Some(evicted.remaining);
                tracing::debug!(
                    evicted = evicted.entries,
                    evicted_bytes = evicted.bytes,
                    remaining_bytes = evicted.remaining,
                    max = self.max,
                    "evicted from the {}",
                    self.what
                );
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "cannot evict from the {}: {e}", self.what)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn left(remaining: u64) -> Evicted {
        Evicted {
            entries: 1,
            bytes: 1,
            remaining,
        }
    }

    #[test]
    fn scans_first_then_counts_then_scans_again() {
        let tally = Tally::new("test cache", 1000, 3);
        let mut scans = 0;
        for _ in 0..7 {
            tally.add(
                1,
                Path::new("/nowhere"),
                || {
                    scans += 1;
                    Ok::<u64, String>(10)
                },
                |_| unreachable!("under the cap"),
            );
        }
        // The first addition, and then every third.
        assert_eq!(scans, 3);
    }

    #[test]
    fn past_the_cap_evicts_to_nine_tenths() {
        let dir = Path::new("/nowhere");
        let tally = Tally::new("test cache", 100, 1000);
        tally.add(0, dir, || Ok::<u64, String>(95), |_| unreachable!());
        let mut target = None;
        tally.add(
            10,
            dir,
            || unreachable!("counted, not scanned"),
            |t| {
                target = Some(t);
                Ok::<_, String>(left(t))
            },
        );
        assert_eq!(target, Some(90));
        // A failed eviction is tried again at the next addition.
        tally.add(20, dir, || unreachable!(), |_| Err("no".to_owned()));
        let mut again = false;
        tally.add(
            0,
            dir,
            || unreachable!(),
            |t| {
                again = true;
                Ok::<_, String>(left(t))
            },
        );
        assert!(again);
    }
}
