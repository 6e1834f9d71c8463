//! The node's budget: one bound on the sum of what every cell makes the host hold, on the
//! number of cells alive and on how deep spawns nest.
//!
//! Per-cell limits ([`super::limits::Limits`]) nest inside it: a cell grows only while both
//! its own cap and the node's budget allow. What is charged, and when:
//!
//! - at spawn ([`NodeBudget::admit`]): [`CELL_OVERHEAD`] for the instance's state and stack,
//!   [`HANDLES_COST`] for the most resources the host may hold for it, the bytes of its
//!   arguments and environment, and [`STREAM_COST`] per pipe or line buffer made for it. A spawn that does not fit is refused with [`Exhausted`] before anything runs;
//! - while it runs (through its [`Ticket`] in the store's limiter): every byte of linear
//!   memory and every table element ([`TABLE_ELEMENT_BYTES`]) as they grow, from the first
//!   page on. A growth that does not fit ends that cell with a memory limit, never another;
//! - everything is given back when the cell's store is dropped (it ended or was killed).
//!
//! Compiled code is bounded apart, by the compile cache's own cap, which the operator's
//! budget is documented to include (see README, "Limits").

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// What one cell costs the host before its memories: instance state, its async stack (at
/// most wasmtime's 512 KiB wasm stack plus host frames is ever touched), its store and WASI
/// context. Measured at about 120 KiB for an idle cell (BENCHMARKS.md); charged generously.
pub const CELL_OVERHEAD: u64 = 1 << 20;

/// What the host may hold for one resource of a cell (a table entry, its boxed state and
/// the guest's handle slot): measured at about 240 bytes for a pollable, charged with room.
pub const HANDLE_BYTES: u64 = 256;

/// What the host may hold for a cell's resources at most: [`super::limits::MAX_HANDLES`] of
/// [`HANDLE_BYTES`] (1 MiB).
pub const HANDLES_COST: u64 = super::limits::MAX_HANDLES as u64 * HANDLE_BYTES;

/// What one pipe or line buffer made for a cell may hold.
pub const STREAM_COST: u64 = 128 << 10;

/// Bytes charged per table element (a function reference is a pointer).
pub const TABLE_ELEMENT_BYTES: u64 = 8;

/// The default bound on cells alive in one node.
pub const DEFAULT_MAX_CELLS: u32 = 16_384;

/// The default bound on how deep spawns nest (pid0 is depth 0).
pub const DEFAULT_MAX_DEPTH: u32 = 64;

/// The share of memory the node takes when `--node-memory` is not given: half of the
/// physical memory, or of the cgroup's limit when that is lower.
pub const DEFAULT_SHARE_PERCENT: u64 = 50;

/// What the node bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLimits {
    /// Bytes all cells together may make the host hold.
    pub memory: u64,
    /// Cells alive at once.
    pub cells: u32,
    /// The deepest a cell may be (pid0 and the services are 0 and 1).
    pub depth: u32,
}

impl Default for NodeLimits {
    /// No practical bound: for embedders and tests that set their own.
    fn default() -> NodeLimits {
        NodeLimits {
            memory: u64::MAX,
            cells: u32::MAX,
            depth: u32::MAX,
        }
    }
}

impl NodeLimits {
    /// The defaults of `ww run`: [`default_memory`], [`DEFAULT_MAX_CELLS`],
    /// [`DEFAULT_MAX_DEPTH`].
    pub fn for_node() -> NodeLimits {
        NodeLimits {
            memory: default_memory(),
            cells: DEFAULT_MAX_CELLS,
            depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// Which of the node's bounds a spawn would have exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Exhausted {
    /// The node's memory budget has no room for the new cell.
    #[error("the node's memory budget is exhausted: {needed} bytes needed, {free} of {limit} free")]
    Memory {
        /// What the cell needed to start.
        needed: u64,
        /// What was free.
        free: u64,
        /// The budget.
        limit: u64,
    },
    /// The node already runs its maximum of cells.
    #[error("the node already runs its maximum of {limit} cells")]
    Cells {
        /// The bound.
        limit: u32,
    },
    /// The cell would be nested deeper than the node allows.
    #[error("spawns may nest at most {limit} deep")]
    Depth {
        /// The bound.
        limit: u32,
    },
}

/// The node's shared budget. Every executor holds one; cells hold [`Ticket`]s on it.
#[derive(Debug)]
pub struct NodeBudget {
    limits: NodeLimits,
    used: AtomicU64,
    cells: AtomicU32,
}

impl NodeBudget {
    /// A budget enforcing `limits`.
    pub fn new(limits: NodeLimits) -> Arc<NodeBudget> {
        Arc::new(NodeBudget {
            limits,
            used: AtomicU64::new(0),
            cells: AtomicU32::new(0),
        })
    }

    /// The bounds.
    pub fn limits(&self) -> NodeLimits {
        self.limits
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Cells alive now.
    pub fn cells(&self) -> u32 {
        self.cells.load(Ordering::Relaxed)
    }

    /// Admits a cell at `depth` that needs `bytes` to start, or says which bound it would
    /// break. The ticket gives everything back when dropped.
    pub fn admit(self: &Arc<Self>, depth: u32, bytes: u64) -> Result<Ticket, Exhausted> {
        if depth > self.limits.depth {
            return Err(Exhausted::Depth {
                limit: self.limits.depth,
            });
        }
        let admitted = self
            .cells
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limits.cells).then_some(n + 1)
            });
        if admitted.is_err() {
            return Err(Exhausted::Cells {
                limit: self.limits.cells,
            });
        }
        let mut ticket = Ticket {
            budget: self.clone(),
            bytes: 0,
        };
        if !ticket.charge(bytes) {
            // Dropping the ticket gives the cell's place back.
            let used = self.used();
            return Err(Exhausted::Memory {
                needed: bytes,
                free: self.limits.memory.saturating_sub(used),
                limit: self.limits.memory,
            });
        }
        Ok(ticket)
    }

    fn try_charge(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|total| *total <= self.limits.memory)
            })
            .is_ok()
    }

    fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// One cell's place in the node and the bytes charged for it, given back on drop.
#[derive(Debug)]
pub struct Ticket {
    budget: Arc<NodeBudget>,
    bytes: u64,
}

impl Ticket {
    /// A ticket on a budget of its own with no bounds: for throwaway stores.
    pub fn unbounded() -> Ticket {
        let budget = NodeBudget::new(NodeLimits::default());
        budget.cells.fetch_add(1, Ordering::AcqRel);
        Ticket { budget, bytes: 0 }
    }

    /// Charges `bytes` more to the node, if they fit.
    pub fn charge(&mut self, bytes: u64) -> bool {
        if !self.budget.try_charge(bytes) {
            return false;
        }
        self.bytes += bytes;
        true
    }

    /// The node's memory budget, for messages.
    pub fn limit(&self) -> u64 {
        self.budget.limits.memory
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
        self.budget.cells.fetch_sub(1, Ordering::AcqRel);
    }
}

/// [`DEFAULT_SHARE_PERCENT`] of the physical memory, or of the cgroup's memory limit when
/// that is lower; 1 GiB when neither can be read.
pub fn default_memory() -> u64 {
    let physical = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total(&text));
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    let base = match (physical, cgroup) {
        (Some(p), Some(c)) => p.min(c),
        (Some(p), None) => p,
        (None, Some(c)) => c,
        (None, None) => return 1 << 30,
    };
    base / 100 * DEFAULT_SHARE_PERCENT
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(memory: u64, cells: u32, depth: u32) -> Arc<NodeBudget> {
        NodeBudget::new(NodeLimits {
            memory,
            cells,
            depth,
        })
    }

    #[test]
    fn admits_within_every_bound_and_gives_back_on_drop() {
        let b = budget(100, 2, 3);
        let first = b.admit(0, 40).unwrap();
        let mut second = b.admit(3, 40).unwrap();
        assert_eq!((b.used(), b.cells()), (80, 2));
        assert!(second.charge(20));
        assert!(!second.charge(1));
        drop(first);
        assert_eq!((b.used(), b.cells()), (60, 1));
        drop(second);
        assert_eq!((b.used(), b.cells()), (0, 0));
    }

    #[test]
    fn refuses_past_each_bound_without_leaking() {
        let b = budget(100, 1, 2);
        assert!(matches!(b.admit(3, 0), Err(Exhausted::Depth { limit: 2 })));
        assert!(matches!(
            b.admit(0, 101),
            Err(Exhausted::Memory { needed: 101, .. })
        ));
        assert_eq!((b.used(), b.cells()), (0, 0));
        let held = b.admit(0, 10).unwrap();
        assert!(matches!(b.admit(0, 0), Err(Exhausted::Cells { limit: 1 })));
        drop(held);
        assert!(b.admit(0, 100).is_ok());
    }

    #[test]
    fn charges_never_overflow() {
        let b = budget(u64::MAX, 4, 4);
        let mut t = b.admit(0, u64::MAX - 1).unwrap();
        assert!(!t.charge(2));
        assert!(t.charge(1));
    }

    #[test]
    fn reads_mem_total() {
        let text = "MemTotal:       24565412 kB\nMemFree:         1 kB\n";
        assert_eq!(mem_total(text), Some(24565412 * 1024));
        assert_eq!(mem_total("nothing"), None);
        assert!(default_memory() > 0);
    }
}
