//! The size accounting of ww's capped on-disk caches (compiled code, IPFS content): a
//! running total of what a cache directory holds, corrected by a full scan every so many
//! additions (other `ww` processes add to it too), and eviction down to nine tenths of the
//! cap once the total passes it. What a scan counts and what an eviction removes is each
//! cache's own business; when to do either is decided here, once.

use std::sync::Mutex;

/// A cache's cap and what this process knows of its size.
#[derive(Debug)]
pub(crate) struct Tally {
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

/// Which step of [`Tally::add`] failed.
#[derive(Debug)]
pub(crate) enum TallyError<E> {
    /// Scanning the cache for its size.
    Scan(E),
    /// Evicting from it.
    Evict(E),
}

impl Tally {
    /// A tally for a cache capped at `max` bytes, scanned again every `rescan_every`
    /// additions.
    pub(crate) fn new(max: u64, rescan_every: u32) -> Tally {
        Tally {
            max,
            rescan_every,
            state: Mutex::new(State::default()),
        }
    }

    /// The cap, in bytes.
    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// Counts `bytes` just added. When a scan is due, `scan` gives the cache's size; when
    /// the total passes the cap, `evict(target)` brings the cache down to `target` bytes
    /// (never removing what was just added) and gives what remains.
    pub(crate) fn add<E>(
        &self,
        bytes: u64,
        scan: impl FnOnce() -> Result<u64, E>,
        evict: impl FnOnce(u64) -> Result<u64, E>,
    ) -> Result<(), TallyError<E>> {
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
                scan().map_err(TallyError::Scan)?
            }
        };
        state.total = Some(total);
        if total <= self.max {
            return Ok(());
        }
        let remaining = evict(self.max - self.max / 10).map_err(TallyError::Evict)?;
        state.added = 0;
        state.total = Some(remaining);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_first_then_counts_then_scans_again() {
        let tally = Tally::new(1000, 3);
        let mut scans = 0;
        for _ in 0..7 {
            tally
                .add(
                    1,
                    || {
                        scans += 1;
                        Ok::<u64, ()>(10)
                    },
                    |_| unreachable!("under the cap"),
                )
                .unwrap();
        }
        // The first addition, and then every third.
        assert_eq!(scans, 3);
    }

    #[test]
    fn past_the_cap_evicts_to_nine_tenths() {
        let tally = Tally::new(100, 1000);
        tally
            .add(0, || Ok::<u64, ()>(95), |_| unreachable!())
            .unwrap();
        let mut target = None;
        tally
            .add(
                10,
                || unreachable!("counted, not scanned"),
                |t| {
                    target = Some(t);
                    Ok::<u64, ()>(t)
                },
            )
            .unwrap();
        assert_eq!(target, Some(90));
        assert!(matches!(
            tally.add(20, || Ok(0), |_| Err("no")),
            Err(TallyError::Evict("no"))
        ));
        let fresh = Tally::new(1, 1);
        assert!(matches!(
            fresh.add(1, || Err::<u64, _>("gone"), |_| Ok(0)),
            Err(TallyError::Scan("gone"))
        ));
    }
}
