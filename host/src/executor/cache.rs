//! Compiled programs, cached in memory by content hash and on disk under the user's cache
//! directory, so a second `ww run` of the same image compiles nothing.
//!
//! The disk cache lives in `$WW_CACHE_DIR`, else `$XDG_CACHE_HOME/ww`, else `~/.cache/ww`,
//! in a subdirectory named by the wasmtime version and a hash of the engine's configuration:
//! artifacts from another wasmtime or another configuration are never looked at.
//!
//! Both are bounded, since a cell with an executor can make the host compile any number of
//! different programs (spawning from bytes, or from files it writes): the memory cache keeps
//! at most [`MAX_MEMORY_BYTES`] of compiled images, forgetting the least recently used
//! first (a running cell keeps its own program alive; only the cache's copy goes), and the
//! disk cache at most [`MAX_DISK_BYTES`] of artifacts, removing the oldest.
//!
//! Architecture invariant: loading an artifact maps native code into the process, so only
//! files this cache wrote are loaded: the directory is created mode 0700, a directory that
//! others can write to (or that we do not own) is not used, and files are written to a
//! temporary name and renamed into place, so a half-written artifact is never read.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use crate::wasm::{self, Kind, Program, WasmError};

/// The content hash of a binary.
pub type ContentHash = [u8; 32];

/// Bytes of compiled images the memory cache keeps (the newest program is kept whatever
/// its size).
pub const MAX_MEMORY_BYTES: u64 = 64 << 20;

/// Bytes of artifacts the disk cache keeps, all engine configurations' directories apart.
pub const MAX_DISK_BYTES: u64 = 1 << 30;

/// Compiled programs by content hash.
pub struct CompileCache {
    engine: Engine,
    memory: Mutex<Memory>,
    disk: Option<PathBuf>,
}

/// The memory cache: programs, their sizes, and their order of last use.
#[derive(Default)]
struct Memory {
    programs: HashMap<ContentHash, (Program, u64)>,
    /// Least recently used first.
    order: VecDeque<ContentHash>,
    bytes: u64,
    /// Hashes forgotten since [`CompileCache::take_evicted`] was last called.
    evicted: Vec<ContentHash>,
}

impl Memory {
    fn get(&mut self, hash: &ContentHash) -> Option<Program> {
        let program = self.programs.get(hash)?.0.clone();
        self.touch(hash);
        Some(program)
    }

    fn touch(&mut self, hash: &ContentHash) {
        if let Some(at) = self.order.iter().position(|h| h == hash) {
            self.order.remove(at);
        }
        self.order.push_back(*hash);
    }

    fn insert(&mut self, hash: ContentHash, program: Program) {
        let size = image_bytes(&program);
        if let Some((_, old)) = self.programs.insert(hash, (program, size)) {
            self.bytes -= old;
        }
        self.bytes += size;
        self.touch(&hash);
        while self.bytes > MAX_MEMORY_BYTES && self.order.len() > 1 {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some((_, size)) = self.programs.remove(&oldest) {
                self.bytes -= size;
                self.evicted.push(oldest);
                tracing::debug!(hash = %hex(&oldest), size, "compiled program evicted");
            }
        }
    }
}

/// The size of a compiled program's image: its code and data, what keeping it holds.
fn image_bytes(program: &Program) -> u64 {
    let range = match program {
        Program::Component(c) => c.image_range(),
        Program::Module(m) => m.image_range(),
    };
    (range.end as u64).saturating_sub(range.start as u64)
}

impl CompileCache {
    /// A cache for `engine`; `disk` is the root directory of the disk cache, if any.
    pub fn new(engine: Engine, disk: Option<&Path>) -> CompileCache {
        let disk = disk.and_then(|root| prepare_dir(&root.join(engine_key(&engine))));
        CompileCache {
            engine,
            memory: Mutex::new(Memory::default()),
            disk,
        }
    }

    /// The default root of the disk cache for this user, if one can be found.
    pub fn default_dir() -> Option<PathBuf> {
        // An empty variable is unset, as for XDG_CACHE_HOME: "" is no directory.
        if let Some(dir) = std::env::var_os("WW_CACHE_DIR").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir));
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir).join("ww"));
        }
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("ww"))
    }

    /// The engine programs are compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The program in `bytes` (read from `origin`, named in errors), compiled at most once
    /// per content.
    pub fn get(&self, origin: &Path, bytes: &[u8]) -> Result<(ContentHash, Program), WasmError> {
        let hash: ContentHash = Sha256::digest(bytes).into();
        if let Some(program) = self.lock().get(&hash) {
            return Ok((hash, program));
        }
        let program = match self.load(&hash, bytes) {
            Some(program) => program,
            None => {
                let program = wasm::compile(&self.engine, origin, bytes)?;
                self.store(&hash, &program);
                program
            }
        };
        self.lock().insert(hash, program.clone());
        Ok((hash, program))
    }

    /// Runs `keep` if the memory cache still holds the program of `hash`, while it is sure
    /// to: what `keep` remembers for the program is then forgotten with it (through
    /// [`CompileCache::take_evicted`]), never after it was already forgotten.
    pub fn while_cached(&self, hash: &ContentHash, keep: impl FnOnce()) {
        let memory = self.lock();
        if memory.programs.contains_key(hash) {
            keep();
        }
        drop(memory);
    }

    /// The hashes of the programs the memory cache forgot since the last call: whoever
    /// keeps something per program (links, file identities) forgets it too, or it would
    /// keep the program alive.
    pub fn take_evicted(&self) -> Vec<ContentHash> {
        std::mem::take(&mut self.lock().evicted)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        // A panic while holding this lock leaves the map as it was: still usable.
        self.memory
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn artifact(&self, hash: &ContentHash, kind: Kind) -> Option<PathBuf> {
        let suffix = match kind {
            Kind::Component => "component",
            Kind::Module => "module",
        };
        let dir = self.disk.as_ref()?;
        Some(dir.join(format!("{}.{suffix}.cwasm", hex(hash))))
    }

    fn load(&self, hash: &ContentHash, bytes: &[u8]) -> Option<Program> {
        let kind = Kind::of(bytes)?;
        let path = self.artifact(hash, kind)?;
        if !path.is_file() {
            return None;
        }
        let started = std::time::Instant::now();
        // SAFETY: the file is one this cache wrote (see the module's invariant), for this
        // wasmtime version and engine configuration; wasmtime checks both again.
        let loaded = unsafe {
            match kind {
                Kind::Component => {
                    Component::deserialize_file(&self.engine, &path).map(Program::Component)
                }
                Kind::Module => Module::deserialize_file(&self.engine, &path).map(Program::Module),
            }
        };
        match loaded {
            Ok(program) => {
                tracing::debug!(
                    path = %path.display(),
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "loaded compiled program from cache"
                );
                Some(program)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring unusable cached artifact: {e:#}");
                None
            }
        }
    }

    fn store(&self, hash: &ContentHash, program: &Program) {
        let (kind, serialized) = match program {
            Program::Component(c) => (Kind::Component, c.serialize()),
            Program::Module(m) => (Kind::Module, m.serialize()),
        };
        let Some(path) = self.artifact(hash, kind) else {
            return;
        };
        let result = serialized.map_err(|e| format!("{e:#}")).and_then(|bytes| {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            fs::write(&tmp, bytes)
                .and_then(|()| fs::rename(&tmp, &path))
                .map_err(|e| {
                    let _ = fs::remove_file(&tmp);
                    e.to_string()
                })
        });
        match result {
            Ok(()) => tracing::debug!(path = %path.display(), "cached compiled program"),
            Err(e) => tracing::warn!(path = %path.display(), "cannot cache compiled program: {e}"),
        }
        if let Some(dir) = &self.disk {
            trim_dir(dir, MAX_DISK_BYTES);
        }
    }
}

/// Removes the oldest artifacts (by modification time) of `dir` until they hold at most
/// `max` bytes. Another `ww` sharing the directory may be loading one of them: it has
/// mapped it (the mapping outlives the name) or it finds none and compiles.
fn trim_dir(dir: &Path, max: u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut artifacts: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((meta.modified().ok()?, meta.len(), e.path()))
        })
        .collect();
    let mut total: u64 = artifacts.iter().map(|(_, len, _)| len).sum();
    if total <= max {
        return;
    }
    artifacts.sort();
    for (_, len, path) in artifacts {
        if total <= max {
            break;
        }
        match fs::remove_file(&path) {
            Ok(()) => {
                total -= len;
                tracing::debug!(path = %path.display(), len, "cached artifact removed");
            }
            Err(e) => tracing::debug!(path = %path.display(), "cannot remove artifact: {e}"),
        }
    }
}

/// Creates `dir` (mode 0700) and checks it is ours alone; `None` (with a warning) if not.
fn prepare_dir(dir: &Path) -> Option<PathBuf> {
    if let Err(e) = fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        tracing::warn!(dir = %dir.display(), "compile cache disabled: cannot create it: {e}");
        return None;
    }
    let meta = match fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "compile cache disabled: {e}");
            return None;
        }
    };
    // SAFETY-free check via the metadata of our own process: owner and mode.
    let ours = meta.uid()
        == fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(meta.uid());
    if !ours || meta.mode() & 0o022 != 0 {
        tracing::warn!(
            dir = %dir.display(),
            "compile cache disabled: the directory is writable by others or not ours"
        );
        return None;
    }
    Some(dir.to_path_buf())
}

/// `wasmtime-<version>-<hash of the engine configuration>`.
fn engine_key(engine: &Engine) -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("wasmtime-{}-{:016x}", wasmtime_version(), hasher.finish())
}

fn wasmtime_version() -> &'static str {
    // Kept in step with Cargo.toml by the test below.
    "48.0.8"
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program() -> Vec<u8> {
        wat::parse_str("(component)").unwrap()
    }

    #[test]
    fn compiles_once_and_reloads_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let engine = wasm::engine(&wasm::EngineOptions::default()).unwrap();
        let first = CompileCache::new(engine.clone(), Some(dir.path()));
        let (hash, _) = first.get(Path::new("x.wasm"), &program()).unwrap();
        let artifact = first.artifact(&hash, Kind::Component).unwrap();
        assert!(artifact.is_file());
        // A second cache (a second `ww run`) loads the artifact instead of compiling.
        let second = CompileCache::new(engine, Some(dir.path()));
        assert!(second.load(&hash, &program()).is_some());
    }

    #[test]
    fn a_corrupt_artifact_is_ignored_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let engine = wasm::engine(&wasm::EngineOptions::default()).unwrap();
        let cache = CompileCache::new(engine, Some(dir.path()));
        let hash: ContentHash = Sha256::digest(program()).into();
        let artifact = cache.artifact(&hash, Kind::Component).unwrap();
        fs::write(&artifact, b"garbage").unwrap();
        assert!(cache.get(Path::new("x.wasm"), &program()).is_ok());
        assert_ne!(fs::read(&artifact).unwrap(), b"garbage");
    }

    #[test]
    fn the_memory_cache_forgets_the_least_recently_used_past_its_cap() {
        let engine = wasm::engine(&wasm::EngineOptions::default()).unwrap();
        let cache = CompileCache::new(engine, None);
        // Modules of 1 MiB of data each, all different: 300 MiB in all.
        let module = |i: u32| {
            wat::parse_str(format!(
                r#"(module (memory 16) (data (i32.const 0) "{i:08}") (data (i32.const 16) "{}"))"#,
                "x".repeat(1 << 20)
            ))
            .unwrap()
        };
        let (first, _) = cache.get(Path::new("0.wasm"), &module(0)).unwrap();
        let mut evicted = Vec::new();
        for i in 1..300 {
            cache.get(Path::new("m.wasm"), &module(i)).unwrap();
            // The first stays in use: never the least recently used.
            cache.get(Path::new("0.wasm"), &module(0)).unwrap();
            evicted.extend(cache.take_evicted());
        }
        assert!(!evicted.is_empty());
        assert!(!evicted.contains(&first));
        let memory = cache.lock();
        assert!(memory.bytes <= MAX_MEMORY_BYTES, "{} bytes", memory.bytes);
        assert_eq!(memory.programs.len(), memory.order.len());
    }

    #[test]
    fn the_disk_cache_removes_the_oldest_past_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let path = dir.path().join(format!("{name}.module.cwasm"));
            fs::write(&path, vec![0u8; 100]).unwrap();
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64);
            fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(at)
                .unwrap();
        }
        fs::write(dir.path().join("other"), vec![0u8; 1000]).unwrap();
        trim_dir(dir.path(), 250);
        let left: Vec<bool> = ["a", "b", "c"]
            .iter()
            .map(|n| dir.path().join(format!("{n}.module.cwasm")).exists())
            .collect();
        assert_eq!(left, [false, true, true]);
        assert!(dir.path().join("other").exists());
    }

    #[test]
    fn a_world_writable_directory_is_not_used() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        assert!(prepare_dir(dir.path()).is_none());
    }

    #[test]
    fn the_version_matches_the_dependency() {
        let manifest = include_str!("../../../Cargo.toml");
        assert!(manifest.contains(&format!(
            "wasmtime = {{ version = \"{}\"",
            wasmtime_version()
        )));
    }
}
