//! The executor: runs cells concurrently on one engine, each as a task, with the limits,
//! stdio and capabilities it was given, and hands back a [`Process`] to supervise it.
//!
//! - [`cell`]: one cell's config, store, linking and run;
//! - [`limits`]: memory, time, fuel and children caps, and how a child's are derived;
//! - [`budget`]: the node's bound on what all cells hold, on cells alive and on depth;
//! - [`cache`]: compiled programs by content hash, in memory and on disk;
//! - [`process`]: the handle on a running cell, and how a cell ended;
//! - [`stdio`]: standard streams, pipes between cells, prefixed service output;
//! - `host`: the `ww:host/executor` interface a cell uses to spawn children;
//! - [`host_output`]: the host's stdout and stderr, written off the executor's thread.
//!
//! Architecture invariant: everything that runs wasm goes through [`Executor::spawn`], so
//! every cell gets the same limits enforcement, the same yielding to other cells, and the
//! same supervision.

pub mod budget;
pub mod cache;
pub mod cell;
pub(crate) mod host;
pub mod host_output;
pub mod limits;
pub mod process;
pub mod stdio;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use wasmtime::Engine;
use wasmtime::component::Linker as ComponentLinker;

use self::budget::{NodeBudget, NodeLimits};
use self::cache::lru::Lru;
use self::cache::{CacheLimits, CompileCache, ContentHash};
use self::cell::{CellConfig, CellError, CellState, ModuleState, Ready};
use self::limits::LimitExceeded;
use self::process::{Exit, Process, settle};
use crate::caps::{FileIdentity, ProgramFile, ReadError};
use crate::wasm::{EngineOptions, Program, WasmError};

/// How often the epoch advances: the longest a busy cell runs before yielding.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The most program files whose content the executor remembers (by identity, to skip
/// reading them again): each costs a few dozen bytes, the programs are in the cache.
const MAX_FILES: usize = 4096;

/// A compiled program and the hash it is cached under.
#[derive(Clone)]
pub struct Loaded {
    hash: ContentHash,
    program: Program,
}

/// A program file that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading it failed.
    #[error(transparent)]
    Read(ReadError),
    /// It is not a program ww can run.
    #[error(transparent)]
    Wasm(WasmError),
}

/// Runs cells. Cheap to clone; every clone is the same executor.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

struct Inner {
    cache: CompileCache,
    fuel_metered: bool,
    components: ComponentLinker<CellState>,
    modules: wasmtime::Linker<ModuleState>,
    /// The content each program file seen was found to hold. The programs themselves (and
    /// their links) live in `cache`, bounded; this maps to hashes only, bounded by count.
    files: Mutex<Lru<FileIdentity, ContentHash>>,
    next_id: AtomicU32,
    ticker: EpochTicker,
    budget: Arc<NodeBudget>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

impl Executor {
    /// An executor on a new engine configured by `options`, caching compiled programs under
    /// `cache_dir` (none: in memory only), at most `limits` of them, whose cells together
    /// stay within `node`.
    pub fn new(
        options: &EngineOptions,
        cache_dir: Option<&Path>,
        limits: CacheLimits,
        node: NodeLimits,
    ) -> Result<Executor, WasmError> {
        let engine = crate::wasm::engine(options)?;
        let link_err = |e: wasmtime::Error| WasmError::Engine {
            message: format!("{e:#}"),
        };
        let components = cell::component_linker(&engine).map_err(link_err)?;
        let modules = cell::module_linker(&engine).map_err(link_err)?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Executor {
            inner: Arc::new(Inner {
                cache: CompileCache::new(engine, cache_dir, limits),
                fuel_metered: options.fuel,
                components,
                modules,
                files: Mutex::new(Lru::new(u64::MAX, MAX_FILES)),
                next_id: AtomicU32::new(0),
                ticker,
                budget: NodeBudget::new(node),
            }),
        })
    }

    /// The engine every cell runs on.
    pub fn engine(&self) -> &Engine {
        self.inner.cache.engine()
    }

    /// Whether cells are metered by fuel.
    pub fn fuel_metered(&self) -> bool {
        self.inner.fuel_metered
    }

    /// Compiles `bytes` (read from `origin`, named in errors), or finds them compiled.
    pub fn load(&self, origin: &Path, bytes: &[u8]) -> Result<Loaded, WasmError> {
        let (hash, program) = self.inner.cache.get(origin, bytes)?;
        Ok(Loaded { hash, program })
    }

    /// The program in a file of this identity, if it was loaded before: what
    /// [`Executor::load_file`] would give without reading or compiling anything.
    pub fn find_file(&self, identity: &FileIdentity) -> Option<Loaded> {
        let hash = lock(&self.inner.files).get(identity).copied()?;
        let program = self.inner.cache.cached(&hash)?;
        Some(Loaded { hash, program })
    }

    /// Compiles the program in `file` (at `origin`), or finds it compiled; a file whose
    /// identity was seen before is not even read again.
    pub fn load_file(&self, origin: &Path, file: ProgramFile) -> Result<Loaded, LoadError> {
        let identity = file.identity();
        if let Some(loaded) = self.find_file(&identity) {
            return Ok(loaded);
        }
        let bytes = file.read().map_err(LoadError::Read)?;
        let loaded = self.load(origin, &bytes).map_err(LoadError::Wasm)?;
        lock(&self.inner.files).insert(identity, loaded.hash, 1);
        Ok(loaded)
    }

    /// Starts `loaded` as a cell configured by `config`. Must be called within the tokio
    /// runtime that will drive the cell.
    pub fn spawn(&self, loaded: &Loaded, config: CellConfig) -> Result<Process, CellError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let name = config.name().to_owned();
        let deadline = config.deadline();
        // Admitted first: a cell the node has no room for is refused before anything is built.
        let ticket = self
            .inner
            .budget
            .admit(config.depth(), config.host_bytes())?;
        let ready = self.prepare(loaded, config, ticket)?;

        let (status, _) = watch::channel(None);
        let status = Arc::new(status);
        let settle_to = status.clone();
        let task = tokio::spawn(async move {
            let exit = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline.into(), ready.run())
                    .await
                    .unwrap_or(Exit::Limit(LimitExceeded::Time)),
                None => ready.run().await,
            };
            settle(&settle_to, exit);
        });
        let process = Process::new(id, &name, status, task.abort_handle());
        tracing::debug!(id, name = %name, "spawned");
        Ok(process)
    }

    fn prepare(
        &self,
        loaded: &Loaded,
        config: CellConfig,
        ticket: budget::Ticket,
    ) -> Result<Ready, CellError> {
        let inner = &self.inner;
        match &loaded.program {
            Program::Component(component) => {
                let pre = cached_link(&inner.cache, loaded.hash, || {
                    cell::link_component(self.engine(), &inner.components, component, config.name())
                })?;
                cell::prepare_component(self, pre, config, ticket)
            }
            Program::Module(module) => {
                let pre = cached_link(&inner.cache, loaded.hash, || {
                    cell::link_module(self.engine(), &inner.modules, module, config.name())
                })?;
                cell::prepare_module(self, pre, config, ticket)
            }
        }
    }
}

/// The link kept with the program under `hash`, or the one `link` makes, kept with the
/// program for next time (and dropped with it when the cache evicts it).
fn cached_link<P: Clone + Send + 'static>(
    cache: &CompileCache,
    hash: ContentHash,
    link: impl FnOnce() -> Result<P, CellError>,
) -> Result<P, CellError> {
    if let Some(pre) = cache.link::<P>(&hash) {
        return Ok(pre);
    }
    let pre = link()?;
    cache.set_link(&hash, pre.clone());
    Ok(pre)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update of a map completes before anything that could panic: a panic elsewhere
    // cannot leave one half-updated.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on its own thread, so that even a cell
/// spinning on the executor's thread is interrupted and yields.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("ww-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the epoch thread; busy cells will not yield: {e}");
        }
        EpochTicker { stop }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
