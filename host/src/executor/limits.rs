//! Limits the host enforces on every cell: memory (linear memories and tables), wall time,
//! fuel, live children, resource handles, and the size of a program spawned from bytes. The node's budget
//! ([`super::budget`]) bounds what all cells hold together; these nest inside it.
//!
//! A child's limits come from [`Limits::tighten`], the one place where a request is checked
//! against the spawner's own limits: a request may tighten a limit, never loosen it.

use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;

use super::budget::{TABLE_ELEMENT_BYTES, Ticket};

/// The default cap on a cell's linear memory: 1 GiB.
pub const DEFAULT_MAX_MEMORY: u64 = 1 << 30;
/// The default cap on children alive at once, per cell.
pub const DEFAULT_MAX_CHILDREN: u32 = 256;
/// The cap on a program spawned from bytes: 64 MiB.
pub const MAX_PROGRAM_BYTES: u64 = 64 << 20;
/// Resources the host holds for one cell at once (streams, pollables, descriptors,
/// processes, …: the entries of its resource table). Each is host memory outside the
/// cell's linear memory, so the cap's worst case is charged to the node at spawn
/// ([`super::budget::HANDLE_BYTES`] each); wasmtime's default was a million entries, about
/// 240 bytes per pollable.
pub const MAX_HANDLES: usize = 4096;
/// Component-model handles a cell's store may have live at once: those of host resources
/// (at most [`MAX_HANDLES`], so that cap is met first and named) and of the guest's own
/// resources (a slot each).
pub const MAX_GUEST_HANDLES: usize = 2 * MAX_HANDLES;
/// Table elements a cell may have per table.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// Tables, memories and instances a store may hold: a component instantiates a few dozen
/// core instances; nothing legitimate needs thousands of tables.
const MAX_TABLES: usize = 1_000;
const MAX_MEMORIES: usize = 100;
const MAX_INSTANCES: usize = 1_000;

/// Which limit ended a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    /// It tried to grow its memory (linear memories and tables) past its cap.
    #[error("memory limit exceeded: {limit} bytes of linear memory and tables")]
    Memory {
        /// The cap, in bytes.
        limit: u64,
    },
    /// It tried to grow its memory while the node's budget, shared by every cell, was spent.
    #[error("the node's memory budget ({limit} bytes for all cells) is spent")]
    NodeMemory {
        /// The node's budget, in bytes.
        limit: u64,
    },
    /// It tried to hold more resources (streams, pollables, descriptors, …) than a cell may.
    #[error("handle limit exceeded: a cell may hold at most {limit} resources at once")]
    Handles {
        /// The cap.
        limit: usize,
    },
    /// It ran past its deadline.
    #[error("time limit exceeded")]
    Time,
    /// It ran out of fuel.
    #[error("fuel exhausted")]
    Fuel,
}

/// What a cell may use. Every cell has one; pid0's comes from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of linear memory over all the cell's memories.
    pub max_memory: u64,
    /// When the cell is ended, if ever.
    pub deadline: Option<Instant>,
    /// Fuel to start with, when the engine meters fuel.
    pub fuel: Option<u64>,
    /// Children alive at once.
    pub max_children: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_memory: DEFAULT_MAX_MEMORY,
            deadline: None,
            fuel: None,
            max_children: DEFAULT_MAX_CHILDREN,
        }
    }
}

/// A request for a child's limits; `None` inherits the spawner's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitRequest {
    /// Bytes of linear memory.
    pub max_memory: Option<u64>,
    /// Wall time from now.
    pub timeout: Option<Duration>,
    /// Fuel.
    pub fuel: Option<u64>,
    /// Children alive at once.
    pub max_children: Option<u32>,
}

/// A request that would loosen a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: asked for {asked}, but the spawner is limited to {held}")]
pub struct LooserThanHeld {
    /// Which limit.
    pub what: &'static str,
    /// What was asked.
    pub asked: String,
    /// What the spawner has.
    pub held: String,
}

impl Limits {
    /// The limits for a child of a cell holding `self`, as `request` asks: each field the
    /// request sets must be at most the held one; unset fields are inherited.
    pub fn tighten(&self, request: &LimitRequest, now: Instant) -> Result<Limits, LooserThanHeld> {
        fn check<T: PartialOrd + ToString + Copy>(
            what: &'static str,
            held: T,
            asked: Option<T>,
        ) -> Result<T, LooserThanHeld> {
            match asked {
                Some(asked) if asked > held => Err(LooserThanHeld {
                    what,
                    asked: asked.to_string(),
                    held: held.to_string(),
                }),
                Some(asked) => Ok(asked),
                None => Ok(held),
            }
        }
        let deadline = match (self.deadline, request.timeout.map(|t| now + t)) {
            (Some(held), Some(asked)) if asked > held => {
                return Err(LooserThanHeld {
                    what: "timeout",
                    asked: format!("{} ms", request.timeout.unwrap_or_default().as_millis()),
                    held: format!(
                        "{} ms left",
                        held.saturating_duration_since(now).as_millis()
                    ),
                });
            }
            (_, Some(asked)) => Some(asked),
            (held, None) => held,
        };
        let fuel = match (self.fuel, request.fuel) {
            (None, Some(_)) => {
                return Err(LooserThanHeld {
                    what: "fuel",
                    asked: "metered fuel".into(),
                    held: "no fuel metering (start ww with --fuel)".into(),
                });
            }
            (held, asked) => match held {
                Some(held) => Some(check("fuel", held, asked)?),
                None => None,
            },
        };
        Ok(Limits {
            max_memory: check("max-memory", self.max_memory, request.max_memory)?,
            deadline,
            fuel,
            max_children: check("max-children", self.max_children, request.max_children)?,
        })
    }
}

/// Enforces a cell's memory cap, and the node's budget through the cell's [`Ticket`], as
/// wasmtime grows its memories and tables (from nothing, at instantiation, on).
#[derive(Debug)]
pub struct MemoryLimiter {
    limit: u64,
    used: u64,
    ticket: Ticket,
}

impl MemoryLimiter {
    /// A limiter allowing `limit` bytes of memories and tables in all, each byte also
    /// charged to the node through `ticket`.
    pub fn new(limit: u64, ticket: Ticket) -> MemoryLimiter {
        MemoryLimiter {
            limit,
            used: 0,
            ticket,
        }
    }

    /// Grows the cell's use by `bytes`, or says which limit that breaks. An error, not
    /// `false`: the cell traps here with a cause the runner can name, instead of an
    /// allocator failure that looks like any other trap.
    fn grow(&mut self, bytes: u64) -> wasmtime::Result<bool> {
        let used = self.used.saturating_add(bytes);
        if used > self.limit {
            return Err(LimitExceeded::Memory { limit: self.limit }.into());
        }
        if !self.ticket.charge(bytes) {
            return Err(LimitExceeded::NodeMemory {
                limit: self.ticket.limit(),
            }
            .into());
        }
        self.used = used;
        Ok(true)
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow((desired as u64).saturating_sub(current as u64))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        let elements = (desired as u64).saturating_sub(current as u64);
        self.grow(elements.saturating_mul(TABLE_ELEMENT_BYTES))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held() -> Limits {
        Limits {
            max_memory: 1000,
            deadline: None,
            fuel: Some(50),
            max_children: 4,
        }
    }

    #[test]
    fn unset_fields_are_inherited() {
        let now = Instant::now();
        assert_eq!(
            held().tighten(&LimitRequest::default(), now).unwrap(),
            held()
        );
    }

    #[test]
    fn tighter_requests_are_granted() {
        let now = Instant::now();
        let req = LimitRequest {
            max_memory: Some(10),
            timeout: Some(Duration::from_secs(1)),
            fuel: Some(5),
            max_children: Some(0),
        };
        let child = held().tighten(&req, now).unwrap();
        assert_eq!(child.max_memory, 10);
        assert_eq!(child.deadline, Some(now + Duration::from_secs(1)));
        assert_eq!((child.fuel, child.max_children), (Some(5), 0));
    }

    #[test]
    fn looser_requests_are_refused() {
        let now = Instant::now();
        let cases = [
            (
                LimitRequest {
                    max_memory: Some(1001),
                    ..Default::default()
                },
                "max-memory",
            ),
            (
                LimitRequest {
                    fuel: Some(51),
                    ..Default::default()
                },
                "fuel",
            ),
            (
                LimitRequest {
                    max_children: Some(5),
                    ..Default::default()
                },
                "max-children",
            ),
        ];
        for (req, what) in cases {
            assert_eq!(held().tighten(&req, now).unwrap_err().what, what);
        }
        let bounded = Limits {
            deadline: Some(now + Duration::from_secs(1)),
            ..held()
        };
        let req = LimitRequest {
            timeout: Some(Duration::from_secs(2)),
            ..Default::default()
        };
        assert_eq!(bounded.tighten(&req, now).unwrap_err().what, "timeout");
        let unmetered = Limits {
            fuel: None,
            ..held()
        };
        let req = LimitRequest {
            fuel: Some(1),
            ..Default::default()
        };
        assert_eq!(unmetered.tighten(&req, now).unwrap_err().what, "fuel");
    }

    #[test]
    fn the_memory_limiter_counts_every_memory() {
        let mut limiter = MemoryLimiter::new(100, Ticket::unbounded());
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        assert!(limiter.memory_growing(0, 40, None).unwrap());
        let err = limiter.memory_growing(40, 41, None).unwrap_err();
        assert!(err.downcast_ref::<LimitExceeded>().is_some());
    }

    #[test]
    fn tables_count_against_the_cell_and_the_node() {
        use super::super::budget::{NodeBudget, NodeLimits};
        let mut limiter = MemoryLimiter::new(1000, Ticket::unbounded());
        assert!(limiter.table_growing(0, 100, None).unwrap());
        let err = limiter.table_growing(100, 200, None).unwrap_err();
        assert_eq!(
            err.downcast_ref::<LimitExceeded>(),
            Some(&LimitExceeded::Memory { limit: 1000 })
        );
        let node = NodeBudget::new(NodeLimits {
            memory: 500,
            ..NodeLimits::default()
        });
        let mut limiter = MemoryLimiter::new(1000, node.admit(0, 0).unwrap());
        assert!(limiter.memory_growing(0, 400, None).unwrap());
        let err = limiter.table_growing(0, 20, None).unwrap_err();
        assert_eq!(
            err.downcast_ref::<LimitExceeded>(),
            Some(&LimitExceeded::NodeMemory { limit: 500 })
        );
        drop(limiter);
        assert_eq!(node.used(), 0);
    }
}
