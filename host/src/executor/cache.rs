//! Compiled programs, cached in memory by content hash and on disk under the user's cache
//! directory, so a second `ww run` of the same image compiles nothing. Both are bounded
//! ([`CacheLimits`]), least recently used evicted first: a cell spawning endless distinct
//! programs costs the node a fixed amount of memory and disk, not more with every spawn.
//!
//! - `lru`: the bounded map behind the memory cache (and the executor's file map);
//! - [`disk`]: artifacts on disk, their size cap and eviction (also `ww cache`'s).
//!
//! The disk cache lives in `$WW_CACHE_DIR`, else `$XDG_CACHE_HOME/ww`, else `~/.cache/ww`,
//! in a subdirectory named by the wasmtime version and a hash of the engine's configuration:
//! artifacts from another wasmtime or another configuration are never loaded (they are only
//! counted against the cap, and evicted first since nothing uses them).
//!
//! A program in memory is weighed by its compiled image (`image_range`) plus
//! [`ENTRY_OVERHEAD`] for what the image does not show (metadata, its link); a program's
//! link (`InstancePre`) lives in its entry, so evicting the program drops its link.
//!
//! Architecture invariant: loading an artifact maps native code into the process, so only
//! files this cache wrote are loaded: the directory is created mode 0700, a directory that
//! others can write to (or that we do not own) is not used, an artifact that is a symlink
//! or not ours is not opened, and files are written to a temporary name and renamed into
//! place, so a half-written artifact is never read. Eviction unlinks only artifact names in
//! such a directory, through a handle on it, and never follows a symlink.

pub mod disk;
pub(crate) mod lru;

use std::any::Any;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use self::disk::Disk;
use self::lru::Lru;
use crate::wasm::{self, Kind, Program, WasmError};

/// The content hash of a binary.
pub type ContentHash = [u8; 32];

/// What a program costs in memory beyond its compiled image: wasmtime's metadata about it,
/// its link, the memfd page its memory is initialized from, the cache's bookkeeping.
/// Measured roughly: a tiny module with a data segment costs ~24 KiB resident, ~18 KiB of it
/// its image, plus a 4 KiB page of memfd. It matters only for tiny programs.
pub const ENTRY_OVERHEAD: u64 = 8 << 10;

/// How much the compile cache keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// The most compiled code kept in memory, in bytes ([`ENTRY_OVERHEAD`] included).
    pub memory: u64,
    /// The most programs kept in memory. Besides its image, a cached module with data
    /// segments holds a file descriptor (the memfd its memory is initialized from), so this
    /// bounds the descriptors the cache holds too.
    pub programs: usize,
    /// The most compiled code kept on disk, in bytes, over every `wasmtime-*` directory of
    /// the cache's root.
    pub disk: u64,
}

impl CacheLimits {
    /// The default of [`CacheLimits::memory`]: 256 MiB.
    pub const DEFAULT_MEMORY: u64 = 256 << 20;
    /// The default of [`CacheLimits::programs`]: 512.
    pub const DEFAULT_PROGRAMS: usize = 512;
    /// The default of [`CacheLimits::disk`]: 1 GiB.
    pub const DEFAULT_DISK: u64 = 1 << 30;
}

impl Default for CacheLimits {
    fn default() -> CacheLimits {
        CacheLimits {
            memory: CacheLimits::DEFAULT_MEMORY,
            programs: CacheLimits::DEFAULT_PROGRAMS,
            disk: CacheLimits::DEFAULT_DISK,
        }
    }
}

/// A program in memory, with its link once it has one.
struct Entry {
    program: Program,
    /// The executor's link of the program (an `InstancePre` of its kind), type-erased so
    /// that this cache need not know the executor's store types.
    link: Option<Box<dyn Any + Send>>,
}

/// Compiled programs by content hash.
pub struct CompileCache {
    engine: Engine,
    memory: Mutex<Lru<ContentHash, Entry>>,
    disk: Option<Disk>,
}

impl CompileCache {
    /// A cache for `engine` holding at most `limits`; `disk` is the root directory of the
    /// disk cache, if any.
    pub fn new(engine: Engine, disk: Option<&Path>, limits: CacheLimits) -> CompileCache {
        let disk = disk.and_then(|root| Disk::open(root, &engine_key(&engine), limits.disk));
        CompileCache {
            engine,
            memory: Mutex::new(Lru::new(limits.memory, limits.programs)),
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
    /// per content while it stays cached.
    pub fn get(&self, origin: &Path, bytes: &[u8]) -> Result<(ContentHash, Program), WasmError> {
        let hash: ContentHash = Sha256::digest(bytes).into();
        if let Some(program) = self.cached(&hash) {
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
        self.remember(hash, program.clone());
        Ok((hash, program))
    }

    /// The program cached in memory under `hash`, marked as just used.
    pub fn cached(&self, hash: &ContentHash) -> Option<Program> {
        self.lock().get(hash).map(|entry| entry.program.clone())
    }

    /// The link kept with the program under `hash`, if the program is cached in memory and
    /// was linked as a `P`; marks the program as just used.
    pub fn link<P: Clone + 'static>(&self, hash: &ContentHash) -> Option<P> {
        let mut memory = self.lock();
        let link = memory.get(hash)?.link.as_ref()?;
        link.downcast_ref::<P>().cloned()
    }

    /// Keeps `link` with the program under `hash` for as long as the program stays cached
    /// in memory (nothing, if it is not cached now).
    pub fn set_link<P: Send + 'static>(&self, hash: &ContentHash, link: P) {
        if let Some(entry) = self.lock().get(hash) {
            entry.link = Some(Box::new(link));
        }
    }

    /// How many programs are in memory and what they weigh, in bytes.
    pub fn memory_usage(&self) -> (usize, u64) {
        let memory = self.lock();
        (memory.len(), memory.weight())
    }

    fn remember(&self, hash: ContentHash, program: Program) {
        let weight = weight(&program);
        let entry = Entry {
            program,
            link: None,
        };
        let evicted = self.lock().insert(hash, entry, weight);
        // Dropped here, outside the lock: freeing a program unmaps its code.
        if !evicted.is_empty() {
            tracing::trace!(
                evicted = evicted.len(),
                "evicted compiled programs from memory"
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru<ContentHash, Entry>> {
        // A panic while holding this lock leaves the map consistent: every update of it
        // completes before anything that could panic.
        self.memory
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn artifact_name(hash: &ContentHash, kind: Kind) -> String {
        let suffix = match kind {
            Kind::Component => "component",
            Kind::Module => "module",
        };
        format!("{}.{suffix}.cwasm", hex(hash))
    }

    #[cfg(test)]
    fn artifact(&self, hash: &ContentHash, kind: Kind) -> Option<PathBuf> {
        let disk = self.disk.as_ref()?;
        Some(disk.path(&CompileCache::artifact_name(hash, kind)))
    }

    fn load(&self, hash: &ContentHash, bytes: &[u8]) -> Option<Program> {
        let kind = Kind::of(bytes)?;
        let disk = self.disk.as_ref()?;
        let name = CompileCache::artifact_name(hash, kind);
        let file = disk.open_artifact(&name)?;
        let path = disk.path(&name);
        let started = std::time::Instant::now();
        // SAFETY: the file is one this cache wrote (see the module's invariant: a regular
        // file of ours, not a symlink, in a directory only we can write), for this wasmtime
        // version and engine configuration; wasmtime checks both again.
        let loaded = unsafe {
            match kind {
                // Components have no `deserialize_open_file`; the path names the file just
                // checked, in a directory nobody else can change.
                Kind::Component => {
                    Component::deserialize_file(&self.engine, &path).map(Program::Component)
                }
                Kind::Module => {
                    Module::deserialize_open_file(&self.engine, file).map(Program::Module)
                }
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
        let Some(disk) = self.disk.as_ref() else {
            return;
        };
        let (kind, serialized) = match program {
            Program::Component(c) => (Kind::Component, c.serialize()),
            Program::Module(m) => (Kind::Module, m.serialize()),
        };
        let name = CompileCache::artifact_name(hash, kind);
        let path = disk.path(&name);
        let result = serialized
            .map_err(|e| format!("{e:#}"))
            .and_then(|bytes| disk.write(&name, &bytes).map_err(|e| e.to_string()));
        match result {
            Ok(()) => tracing::debug!(path = %path.display(), "cached compiled program"),
            Err(e) => tracing::warn!(path = %path.display(), "cannot cache compiled program: {e}"),
        }
    }
}

/// What `program` costs in memory, as the cache counts it.
fn weight(program: &Program) -> u64 {
    let image = match program {
        Program::Component(c) => c.image_range(),
        Program::Module(m) => m.image_range(),
    };
    let len = (image.end as usize).saturating_sub(image.start as usize);
    (len as u64).saturating_add(ENTRY_OVERHEAD)
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
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn component() -> Vec<u8> {
        wat::parse_str("(component)").unwrap()
    }

    /// A distinct module for each `i`.
    fn module(i: u32) -> Vec<u8> {
        wat::parse_str(format!(r#"(module (memory 1) (data (i32.const 0) "{i}"))"#)).unwrap()
    }

    fn engine() -> Engine {
        wasm::engine(&wasm::EngineOptions::default()).unwrap()
    }

    fn memory_only(limits: CacheLimits) -> CompileCache {
        CompileCache::new(engine(), None, limits)
    }

    fn hash(bytes: &[u8]) -> ContentHash {
        Sha256::digest(bytes).into()
    }

    fn get(cache: &CompileCache, bytes: &[u8]) -> ContentHash {
        cache.get(Path::new("x.wasm"), bytes).unwrap().0
    }

    #[test]
    fn compiles_once_and_reloads_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let first = CompileCache::new(engine(), Some(dir.path()), CacheLimits::default());
        let hash = get(&first, &component());
        let artifact = first.artifact(&hash, Kind::Component).unwrap();
        assert!(artifact.is_file());
        // A second cache (a second `ww run`) loads the artifact instead of compiling.
        let second = CompileCache::new(
            first.engine.clone(),
            Some(dir.path()),
            CacheLimits::default(),
        );
        assert!(second.load(&hash, &component()).is_some());
    }

    #[test]
    fn a_corrupt_artifact_is_ignored_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(engine(), Some(dir.path()), CacheLimits::default());
        let artifact = cache
            .artifact(&hash(&component()), Kind::Component)
            .unwrap();
        fs::write(&artifact, b"garbage").unwrap();
        assert!(cache.get(Path::new("x.wasm"), &component()).is_ok());
        assert_ne!(fs::read(&artifact).unwrap(), b"garbage");
    }

    #[test]
    fn a_symlinked_artifact_is_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(engine(), Some(dir.path()), CacheLimits::default());
        let bytes = module(1);
        // A real artifact, elsewhere, and a symlink to it where the cache looks.
        let elsewhere = tempfile::tempdir().unwrap();
        let real = CompileCache::new(
            cache.engine.clone(),
            Some(elsewhere.path()),
            CacheLimits::default(),
        );
        let h = get(&real, &bytes);
        let target = real.artifact(&h, Kind::Module).unwrap();
        let link = cache.artifact(&h, Kind::Module).unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(cache.load(&h, &bytes).is_none());
        // Compiling anew replaces the link by a file of the cache's own; the target stays.
        get(&cache, &bytes);
        assert!(fs::symlink_metadata(&link).unwrap().is_file());
        assert!(target.is_file());
    }

    #[test]
    fn a_world_writable_directory_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let key = engine_key(&engine());
        fs::create_dir(dir.path().join(&key)).unwrap();
        fs::set_permissions(dir.path().join(&key), fs::Permissions::from_mode(0o777)).unwrap();
        assert!(Disk::open(dir.path(), &key, u64::MAX).is_none());
    }

    #[test]
    fn memory_evicts_the_least_recently_used_program() {
        let cache = memory_only(CacheLimits {
            programs: 2,
            ..CacheLimits::default()
        });
        let (a, b, c) = (get(&cache, &module(1)), get(&cache, &module(2)), module(3));
        // Using `a` makes `b` the oldest.
        assert!(cache.cached(&a).is_some());
        let c = get(&cache, &c);
        assert!(cache.cached(&b).is_none());
        assert!(cache.cached(&a).is_some() && cache.cached(&c).is_some());
        assert_eq!(cache.memory_usage().0, 2);
    }

    #[test]
    fn memory_is_bounded_by_compiled_size() {
        let probe = memory_only(CacheLimits::default());
        let one = weight(&probe.get(Path::new("x"), &module(1)).unwrap().1);
        assert!(one > ENTRY_OVERHEAD, "the image counts: {one}");
        // Room for two and a half programs of about that size.
        let cache = memory_only(CacheLimits {
            memory: one * 5 / 2,
            ..CacheLimits::default()
        });
        let hashes: Vec<_> = (0..10).map(|i| get(&cache, &module(i))).collect();
        let (count, bytes) = cache.memory_usage();
        assert!(bytes <= one * 5 / 2, "{bytes} > {}", one * 5 / 2);
        assert_eq!(count, 2);
        assert!(cache.cached(&hashes[9]).is_some() && cache.cached(&hashes[8]).is_some());
        assert!(cache.cached(&hashes[0]).is_none());
    }

    #[test]
    fn a_program_larger_than_the_cap_runs_but_is_not_kept() {
        let cache = memory_only(CacheLimits {
            memory: 1,
            ..CacheLimits::default()
        });
        let (h, _) = cache.get(Path::new("x"), &module(1)).unwrap();
        assert!(cache.cached(&h).is_none());
        assert_eq!(cache.memory_usage(), (0, 0));
    }

    #[test]
    fn a_link_lives_and_dies_with_its_program() {
        let cache = memory_only(CacheLimits {
            programs: 1,
            ..CacheLimits::default()
        });
        let a = get(&cache, &module(1));
        cache.set_link(&a, 7u32);
        assert_eq!(cache.link::<u32>(&a), Some(7));
        // A link of another type is not this one.
        assert_eq!(cache.link::<u64>(&a), None);
        let b = get(&cache, &module(2));
        assert_eq!(cache.link::<u32>(&a), None);
        // A link for a program not cached is not kept.
        cache.set_link(&a, 8u32);
        assert_eq!(cache.link::<u32>(&a), None);
        assert_eq!(cache.link::<u32>(&b), None);
    }

    /// The artifacts in `dir`'s one compiled-code directory, by name.
    fn artifacts(root: &Path) -> Vec<String> {
        let mut names = Vec::new();
        for dir in fs::read_dir(root).unwrap() {
            let dir = dir.unwrap().path();
            for entry in fs::read_dir(&dir).unwrap() {
                names.push(entry.unwrap().file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        names
    }

    #[test]
    fn the_disk_cache_evicts_past_its_cap_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(engine(), Some(dir.path()), CacheLimits::default());
        let first = get(&cache, &module(0));
        let one = disk::usage(dir.path()).unwrap().bytes;
        // A cap of about four artifacts, and a cache that keeps none in memory, so that
        // each `get` goes to disk.
        let max = one * 4 + one / 2;
        let cache = CompileCache::new(
            cache.engine.clone(),
            Some(dir.path()),
            CacheLimits {
                programs: 0,
                disk: max,
                ..CacheLimits::default()
            },
        );
        let key = engine_key(&cache.engine);
        disk::set_modified(
            &dir.path().join(&key),
            &CompileCache::artifact_name(&first, Kind::Module),
            1,
        );
        let mut hashes = vec![first];
        for i in 1..4 {
            hashes.push(get(&cache, &module(i)));
        }
        // Loading the first again marks it used: it is no longer the oldest.
        assert!(cache.load(&first, &module(0)).is_some());
        // Each write past the cap evicts the oldest: 1, then 2, then 3.
        for i in 4..7 {
            hashes.push(get(&cache, &module(i)));
            let usage = disk::usage(dir.path()).unwrap();
            assert!(usage.bytes <= max, "{usage:?} > {max}");
        }
        let names = artifacts(dir.path());
        let name = |h: &ContentHash| CompileCache::artifact_name(h, Kind::Module);
        let mut want: Vec<String> = [0, 4, 5, 6].iter().map(|&i| name(&hashes[i])).collect();
        want.sort();
        assert_eq!(names, want);
    }

    #[test]
    fn pruning_leaves_foreign_files_symlinks_and_other_directories_alone() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let cache = CompileCache::new(engine(), Some(root.path()), CacheLimits::default());
        let h = get(&cache, &module(1));
        let dir = root.path().join(engine_key(&cache.engine));
        let fake = hex(&[7; 32]);
        // Someone else's file, a symlink and a directory named like artifacts, a fresh
        // temporary file (a write in progress) and a stale one (a write that died).
        fs::write(dir.join("notes.txt"), b"mine").unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, b"do not delete").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(format!("{fake}.module.cwasm"))).unwrap();
        fs::create_dir(dir.join(format!("{fake}.component.cwasm"))).unwrap();
        fs::write(dir.join(".tmp-fresh"), b"partial").unwrap();
        fs::write(dir.join(".tmp-stale"), b"partial").unwrap();
        disk::set_modified(&dir, ".tmp-stale", 1);
        // A directory that looks like the cache's but is a symlink elsewhere.
        let decoy = outside.path().join("decoy");
        fs::create_dir(&decoy).unwrap();
        fs::write(decoy.join(format!("{fake}.module.cwasm")), b"x").unwrap();
        std::os::unix::fs::symlink(&decoy, root.path().join("wasmtime-0.0.0-decoy")).unwrap();

        let usage = disk::usage(root.path()).unwrap();
        assert_eq!(usage.entries, 1, "{usage:?}");
        let pruned = disk::prune(root.path(), 0, None).unwrap();
        assert_eq!(pruned.removed.entries, 1);
        assert_eq!(pruned.remaining, disk::Usage::default());
        let names = artifacts(root.path());
        assert!(!names.contains(&CompileCache::artifact_name(&h, Kind::Module)));
        assert!(!names.contains(&".tmp-stale".to_owned()), "{names:?}");
        for kept in [
            "notes.txt".to_owned(),
            ".tmp-fresh".to_owned(),
            format!("{fake}.module.cwasm"),
            format!("{fake}.component.cwasm"),
        ] {
            assert!(names.contains(&kept), "{kept} was removed: {names:?}");
        }
        assert_eq!(fs::read(&victim).unwrap(), b"do not delete");
        assert!(decoy.join(format!("{fake}.module.cwasm")).is_file());
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
