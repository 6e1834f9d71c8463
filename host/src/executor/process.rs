//! Processes: the host's handle on a running or finished cell, and how a cell ended.
//!
//! A [`Process`] is shared by whoever supervises the cell (its parent, the CLI for pid0).
//! Its status is set exactly once: by the cell's task when the cell ends, or by [`Process::kill`]
//! first, whichever comes first.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::limits::LimitExceeded;

/// How a cell ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The cell returned, or exited with this code.
    Code(u8),
    /// The cell trapped (or ended with a malformed exit).
    Trap {
        /// What happened, in one line.
        message: String,
        /// Wasmtime's full report, with the wasm backtrace when there is one.
        detail: String,
    },
    /// The cell was killed by its parent, or because its parent ended.
    Killed,
    /// A limit ended the cell.
    Limit(LimitExceeded),
}

impl Exit {
    /// The status `ww` exits with when pid0 ends like this: its own code; 124 for its time
    /// limit (as `timeout(1)`), 134 for a trap (128 + SIGABRT, as `wasmtime run`), 135 for
    /// its memory limit (or the node's, or its handle cap: host memory too), 136 for its fuel, 137 when killed (128 + SIGKILL).
    pub fn status(&self) -> u8 {
        match self {
            Exit::Code(code) => *code,
            Exit::Limit(LimitExceeded::Time) => 124,
            Exit::Trap { .. } => 134,
            Exit::Limit(
                LimitExceeded::Memory { .. }
                | LimitExceeded::NodeMemory { .. }
                | LimitExceeded::Handles { .. },
            ) => 135,
            Exit::Limit(LimitExceeded::Fuel) => 136,
            Exit::Killed => 137,
        }
    }
}

/// A handle on a running or finished cell.
#[derive(Clone)]
pub struct Process {
    id: u32,
    name: Arc<str>,
    status: Arc<watch::Sender<Option<Exit>>>,
    task: AbortHandle,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("status", &*self.status.borrow())
            .finish()
    }
}

impl Process {
    pub(super) fn new(
        id: u32,
        name: &str,
        status: Arc<watch::Sender<Option<Exit>>>,
        task: AbortHandle,
    ) -> Process {
        Process {
            id,
            name: name.into(),
            status,
            task,
        }
    }

    /// A number naming the cell, unique within this `ww` process.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The cell's name (its `argv[0]`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the cell ended, or `None` while it runs.
    pub fn try_wait(&self) -> Option<Exit> {
        self.status.borrow().clone()
    }

    /// Waits until the cell ends.
    pub async fn wait(&self) -> Exit {
        let mut rx = self.status.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(status) => status.clone().unwrap_or(Exit::Killed),
            // The sender lives in `self`, so this cannot happen; treat it as a kill.
            Err(_) => Exit::Killed,
        }
    }

    /// Ends the cell now, unless it already ended.
    pub fn kill(&self) {
        if settle(&self.status, Exit::Killed) {
            tracing::debug!(id = self.id, name = %self.name, "killed");
        }
        self.task.abort();
    }
}

/// Sets `status` to `exit` unless it is already set; whether it was set now.
pub(super) fn settle(status: &watch::Sender<Option<Exit>>, exit: Exit) -> bool {
    status.send_if_modified(|current| {
        if current.is_none() {
            *current = Some(exit);
            true
        } else {
            false
        }
    })
}

/// The children of one cell: killed when the cell ends, so no child outlives its parent.
#[derive(Debug, Default)]
pub struct Children {
    live: Vec<Process>,
}

impl Children {
    /// How many children are still running.
    pub fn live(&mut self) -> usize {
        self.live.retain(|p| p.try_wait().is_none());
        self.live.len()
    }

    /// Records a new child.
    pub fn push(&mut self, process: Process) {
        self.live.push(process);
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in &self.live {
            child.kill();
        }
    }
}
