//! Fetched content on disk, by CID: `<cache>/ipfs/<cid>` is a verified file or directory.
//!
//! An entry is built in a temporary directory beside it and renamed into place, so a
//! half-fetched entry is never seen; the directory is created 0700, and one that others can
//! write to (or that is not ours) is refused, since its files may be run.
//!
//! The cache is bounded ([`DEFAULT_MAX`] unless [`Cache::with_max`] says otherwise): after a
//! fetch takes it past its cap, whole entries are evicted, least recently used first (an
//! entry's modification time, touched whenever it is used), down to nine tenths of the cap.
//! Sizes are kept as a running total, so the directory is walked only when an eviction is
//! due or every [`RESCAN_EVERY`] fetches (other `ww` processes fetch too).
//!
//! An entry in use is never evicted: whoever uses one holds a [`Pin`], a shared `flock` on
//! the entry, and eviction (by any `ww`) takes an exclusive one without waiting, skipping
//! the entry when it cannot. Eviction works through a handle on the cache directory, never
//! follows a symlink, and only removes entries named by a CID (and its own leftovers).

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use cid::Cid;
use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags};

use super::IpfsError;
use crate::capped::{Evicted, Tally};

/// The default cap on the cache's size: 2 GiB.
pub const DEFAULT_MAX: u64 = 2 << 30;

/// Fetches between two walks of the cache, at most (see the module's docs).
pub const RESCAN_EVERY: u32 = 64;

/// The prefix of a directory an entry is built in.
const FETCH_PREFIX: &str = ".fetch-";

/// The prefix of a directory an evicted entry is moved into to be removed.
const EVICT_PREFIX: &str = ".evict-";

/// How old a leftover of a `ww` that died mid-fetch or mid-eviction must be before it is
/// removed (a fetch in progress may take long; a day is longer than any).
const STALE: Duration = Duration::from_secs(24 * 3600);

/// The on-disk cache of fetched IPFS content.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    /// Whether `dir` was created or checked (and how that failed), once.
    checked: Arc<OnceLock<Result<(), (&'static str, String)>>>,
    tally: Arc<Tally>,
}

/// Holds an entry in use: no `ww` evicts it while this lives.
#[derive(Debug)]
pub struct Pin {
    _lock: OwnedFd,
}

/// How much the cache holds, or how much was removed from it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes, by file size.
    pub bytes: u64,
    /// Entries (CIDs).
    pub entries: u64,
}

/// What [`prune`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// What was evicted.
    pub removed: Usage,
    /// What is left.
    pub remaining: Usage,
    /// Entries left because a running `ww` uses them.
    pub in_use: u64,
}

impl Cache {
    /// The cache in `dir` (created 0700 when missing).
    pub fn open(dir: &Path) -> Result<Cache, IpfsError> {
        let cache = Cache::deferred(dir);
        cache.check()?;
        Ok(cache)
    }

    /// The cache in `dir`, created and checked only when first used (by [`Cache::get`],
    /// which finds nothing if the check fails, or [`Cache::put`], which reports it).
    pub fn deferred(dir: &Path) -> Cache {
        Cache {
            dir: dir.to_path_buf(),
            checked: Arc::new(OnceLock::new()),
            tally: Arc::new(Tally::new("IPFS cache", DEFAULT_MAX, RESCAN_EVERY)),
        }
    }

    /// The same cache, holding at most `max` bytes.
    pub fn with_max(self, max: u64) -> Cache {
        Cache {
            tally: Arc::new(Tally::new("IPFS cache", max, RESCAN_EVERY)),
            ..self
        }
    }

    /// Creates `dir` when missing and checks that it is ours and private, once.
    fn check(&self) -> Result<(), IpfsError> {
        let checked = self
            .checked
            .get_or_init(|| create(&self.dir).map_err(|(action, e)| (action, e.to_string())));
        checked.clone().map_err(|(action, detail)| IpfsError::Io {
            action,
            path: self.dir.clone(),
            source: std::io::Error::other(detail),
        })
    }

    /// Where the entry for `cid` lives (whether or not it is there yet).
    pub fn entry(&self, cid: &Cid) -> PathBuf {
        // CIDv1 in base32 (the canonical text), CIDv0 as `Qm…`: one name per CID.
        self.dir.join(cid.to_string())
    }

    /// The entry for `cid`, if it was fetched before.
    pub fn get(&self, cid: &Cid) -> Option<PathBuf> {
        self.check().ok()?;
        let entry = self.entry(cid);
        fs::symlink_metadata(&entry).is_ok().then_some(entry)
    }

    /// The entry for `cid`, if it was fetched before, pinned and marked as just used.
    /// `None` too when it is being evicted right now.
    pub fn pin(&self, cid: &Cid) -> Option<(PathBuf, Pin)> {
        let entry = self.get(cid)?;
        let lock = lock_entry(&entry, FlockOperation::LockShared).ok()?;
        // An evictor holds its exclusive lock until the entry has left this name: if the
        // name now holds something else (or nothing), this lock is on an evicted entry.
        let locked = rustix::fs::fstat(&lock).ok()?;
        let named = rustix::fs::lstat(&entry).ok()?;
        if (locked.st_dev, locked.st_ino) != (named.st_dev, named.st_ino) {
            return None;
        }
        touch(&lock);
        Some((entry, Pin { _lock: lock }))
    }

    /// Builds the entry for `cid` with `build` (given a path to create) and moves it into
    /// place atomically, pinned. If another process stored it first, theirs is kept. Then
    /// evicts other entries if the cache is past its cap.
    pub fn put(
        &self,
        cid: &Cid,
        build: impl FnOnce(&Path) -> Result<(), IpfsError>,
    ) -> Result<(PathBuf, Pin), IpfsError> {
        self.check()?;
        let tmp = tempfile::Builder::new()
            .prefix(FETCH_PREFIX)
            .tempdir_in(&self.dir)
            .map_err(|source| IpfsError::Io {
                action: "create a directory in",
                path: self.dir.clone(),
                source,
            })?;
        let staged = tmp.path().join("entry");
        build(&staged)?;
        // Pinned before it is visible, so that no eviction can take it from under us.
        let lock =
            lock_entry(&staged, FlockOperation::LockShared).map_err(|source| IpfsError::Io {
                action: "lock",
                path: staged.clone(),
                source,
            })?;
        let size = tree_size(&staged).unwrap_or(0);
        let entry = self.entry(cid);
        if let Err(source) = fs::rename(&staged, &entry) {
            // Another `ww` stored it first (a directory is not replaced): use theirs.
            return self.pin(cid).ok_or(IpfsError::Io {
                action: "store",
                path: entry,
                source,
            });
        }
        self.account(&cid.to_string(), size);
        Ok((entry, Pin { _lock: lock }))
    }

    /// Counts `size` more bytes, evicting (never `name`, just stored) past the cap.
    fn account(&self, name: &str, size: u64) {
        self.tally.add(
            size,
            &self.dir,
            || usage(&self.dir).map(|u| u.bytes),
            |target| {
                let pruned = prune(&self.dir, target, Some(name))?;
                Ok::<_, std::io::Error>(Evicted {
                    entries: pruned.removed.entries,
                    bytes: pruned.removed.bytes,
                    remaining: pruned.remaining.bytes,
                })
            },
        );
    }
}

/// Creates `dir` 0700 when missing; refuses one that is not ours or that others can write.
fn create(dir: &Path) -> Result<(), (&'static str, std::io::Error)> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| ("create", e))?;
    let meta = fs::metadata(dir).map_err(|e| ("read", e))?;
    if meta.uid() != rustix::process::geteuid().as_raw() || meta.mode() & 0o022 != 0 {
        return Err((
            "use",
            std::io::Error::other("the directory is not ours or others can write to it"),
        ));
    }
    Ok(())
}

/// Opens `entry` (a file or a directory, not a symlink) and locks it with `operation`.
fn lock_entry(entry: &Path, operation: FlockOperation) -> io::Result<OwnedFd> {
    let fd = rustix::fs::open(
        entry,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rustix::fs::flock(&fd, operation)?;
    Ok(fd)
}

/// Marks an entry as just used (its modification time, which eviction orders by).
fn touch(fd: &OwnedFd) {
    let now = rustix::fs::Timespec {
        tv_sec: 0,
        tv_nsec: rustix::fs::UTIME_NOW,
    };
    let omit = rustix::fs::Timespec {
        tv_sec: 0,
        tv_nsec: rustix::fs::UTIME_OMIT,
    };
    let times = rustix::fs::Timestamps {
        last_access: omit,
        last_modification: now,
    };
    if let Err(e) = rustix::fs::futimens(fd, &times) {
        tracing::debug!("cannot mark an IPFS cache entry as used: {e}");
    }
}

/// The size and count of the entries of the cache in `dir`. A missing `dir` holds nothing.
pub fn usage(dir: &Path) -> io::Result<Usage> {
    let mut usage = Usage::default();
    for entry in scan(dir)?.entries {
        usage.bytes += entry.size;
        usage.entries += u64::from(!entry.leftover);
    }
    Ok(usage)
}

/// Evicts the least recently used entries of the cache in `dir` that no `ww` uses (never
/// the one named `keep`) until at most `max` bytes remain, and leftovers of a `ww` that
/// died mid-fetch or mid-eviction.
pub fn prune(dir: &Path, max: u64, keep: Option<&str>) -> io::Result<Pruned> {
    let Scan { fd, mut entries } = scan(dir)?;
    let Some(fd) = fd else {
        return Ok(Pruned::default());
    };
    // Leftovers first, then the least recently used.
    entries.sort_by_key(|e| (!e.leftover, e.modified));
    let mut pruned = Pruned {
        remaining: Usage {
            bytes: entries.iter().map(|e| e.size).sum(),
            entries: entries.iter().filter(|e| !e.leftover).count() as u64,
        },
        ..Pruned::default()
    };
    for entry in &entries {
        if pruned.remaining.bytes <= max && !entry.leftover {
            break;
        }
        if keep.is_some_and(|keep| keep.as_bytes() == entry.name.as_bytes()) {
            continue;
        }
        match evict(dir, &fd, &entry.name) {
            Ok(true) => {}
            Ok(false) => {
                pruned.in_use += 1;
                continue;
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), entry = %entry.name, "cannot evict: {e}");
                continue;
            }
        }
        pruned.remaining.bytes -= entry.size;
        pruned.removed.bytes += entry.size;
        if !entry.leftover {
            pruned.remaining.entries -= 1;
            pruned.removed.entries += 1;
        }
    }
    Ok(pruned)
}

/// Removes the entry `name` of the cache `dir` (open as `fd`) unless a `ww` uses it
/// (`Ok(false)`). It first leaves its name, moved into a fresh directory of the cache,
/// under the lock, so nobody can pin it after; then that directory is removed.
fn evict(dir: &Path, fd: &OwnedFd, name: &str) -> io::Result<bool> {
    let lock = match rustix::fs::openat(
        fd,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(lock) => lock,
        // Evicted by another `ww` since the scan.
        Err(rustix::io::Errno::NOENT) => return Ok(true),
        Err(e) => return Err(e.into()),
    };
    match rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    let bin = tempfile::Builder::new()
        .prefix(EVICT_PREFIX)
        .tempdir_in(dir)?;
    let bin_name = bin
        .path()
        .file_name()
        .ok_or_else(|| io::Error::other("a temporary directory without a name"))?;
    let bin_fd = rustix::fs::openat(
        fd,
        bin_name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    match rustix::fs::renameat(fd, name, &bin_fd, "entry") {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    drop(lock);
    // Removing a tree never follows the symlinks in it.
    bin.close()?;
    Ok(true)
}

/// The cache directory, open, and what it holds.
struct Scan {
    fd: Option<OwnedFd>,
    entries: Vec<Entry>,
}

/// One entry eviction may take.
struct Entry {
    name: String,
    size: u64,
    modified: (i64, i64),
    /// A stale leftover of a fetch or an eviction rather than an entry.
    leftover: bool,
}

/// The entries (and stale leftovers) of the cache in `dir`; anything not named by a CID is
/// left out.
fn scan(dir: &Path) -> io::Result<Scan> {
    let fd = match open_private(dir) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Scan {
                fd: None,
                entries: Vec::new(),
            });
        }
        Err(e) => return Err(e),
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut entries = Vec::new();
    for dirent in rustix::fs::Dir::read_from(&fd)? {
        let dirent = dirent?;
        let Ok(name) = std::str::from_utf8(dirent.file_name().to_bytes()) else {
            continue;
        };
        let leftover = name.starts_with(FETCH_PREFIX) || name.starts_with(EVICT_PREFIX);
        if !leftover && !is_entry_name(name) {
            continue;
        }
        let stat = match rustix::fs::statat(&fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        let kind = FileType::from_raw_mode(stat.st_mode);
        #[allow(clippy::unnecessary_cast)] // The field types differ between platforms.
        let modified = (stat.st_mtime as i64, stat.st_mtime_nsec as i64);
        if leftover && now - modified.0 < STALE.as_secs() as i64 {
            continue;
        }
        let size = match kind {
            FileType::RegularFile => u64::try_from(stat.st_size).unwrap_or(0),
            FileType::Directory => tree_size(&dir.join(name)).unwrap_or(0),
            // ww never stores anything else (a symlink, say): not an entry of ours.
            _ => continue,
        };
        entries.push(Entry {
            name: name.to_owned(),
            size,
            modified,
            leftover,
        });
    }
    Ok(Scan {
        fd: Some(fd),
        entries,
    })
}

/// Whether `name` is the canonical text of a CID, as [`Cache::entry`] names entries.
fn is_entry_name(name: &str) -> bool {
    Cid::try_from(name).is_ok_and(|cid| cid.to_string() == name)
}

/// The total size of the regular files under `path` (itself, if it is one), not following
/// symlinks.
fn tree_size(path: &Path) -> io::Result<u64> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    if !meta.is_dir() {
        return Ok(0);
    }
    let mut total = 0;
    for entry in fs::read_dir(path)? {
        total += tree_size(&entry?.path())?;
    }
    Ok(total)
}

/// Opens `dir` without following a symlink and checks that it is a directory of this
/// user's that nobody else can write to.
fn open_private(dir: &Path) -> io::Result<OwnedFd> {
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let stat = rustix::fs::fstat(fd.as_fd())?;
    if stat.st_uid != rustix::process::geteuid().as_raw() || stat.st_mode & 0o022 != 0 {
        return Err(io::Error::other(
            "the directory is not ours or others can write to it",
        ));
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CID for `tag` (raw codec, sha-256 of the tag: the content need not match it here).
    fn cid(tag: &str) -> Cid {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(tag.as_bytes()).into();
        Cid::new_v1(
            0x55,
            cid::multihash::Multihash::wrap(0x12, &digest).unwrap(),
        )
    }

    /// Stores a file entry of `len` bytes for `tag`, unpinned.
    fn put_file(cache: &Cache, tag: &str, len: usize) -> PathBuf {
        let (path, _pin) = cache
            .put(&cid(tag), |dest| {
                fs::write(dest, vec![b'x'; len]).map_err(|source| IpfsError::Io {
                    action: "write",
                    path: dest.to_path_buf(),
                    source,
                })
            })
            .unwrap();
        path
    }

    /// Stores a directory entry holding two files of `len` bytes for `tag`, unpinned.
    fn put_dir(cache: &Cache, tag: &str, len: usize) -> PathBuf {
        let (path, _pin) = cache
            .put(&cid(tag), |dest| {
                let io = |source| IpfsError::Io {
                    action: "write",
                    path: dest.to_path_buf(),
                    source,
                };
                fs::create_dir_all(dest.join("sub")).map_err(io)?;
                fs::write(dest.join("a"), vec![b'a'; len]).map_err(io)?;
                fs::write(dest.join("sub/b"), vec![b'b'; len]).map_err(io)
            })
            .unwrap();
        path
    }

    /// Sets the modification time of `path` (not following a symlink) to `secs`.
    fn age(path: &Path, secs: i64) {
        let time = rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        };
        let times = rustix::fs::Timestamps {
            last_access: time,
            last_modification: time,
        };
        rustix::fs::utimensat(rustix::fs::CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }

    #[test]
    fn usage_counts_files_and_whole_directories() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("ipfs")).unwrap();
        put_file(&cache, "f", 100);
        put_dir(&cache, "d", 50);
        let usage = usage(&cache.dir).unwrap();
        assert_eq!(
            usage,
            Usage {
                bytes: 200,
                entries: 2
            }
        );
        assert_eq!(
            super::usage(&dir.path().join("missing")).unwrap(),
            Usage::default()
        );
    }

    #[test]
    fn puts_past_the_cap_evict_the_least_recently_used_but_never_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("ipfs"))
            .unwrap()
            .with_max(1000);
        let a = put_file(&cache, "a", 300);
        let b = put_dir(&cache, "b", 150);
        let c = put_file(&cache, "c", 300);
        age(&a, 10);
        age(&b, 20);
        age(&c, 30);
        // Using `a` makes `b` the least recently used.
        drop(cache.pin(&cid("a")).unwrap());
        let d = put_file(&cache, "d", 300);
        assert!(!b.exists() && a.exists() && c.exists() && d.exists());
        assert!(usage(&cache.dir).unwrap().bytes <= 1000);
        // An entry larger than the cap stays (it was just fetched), alone.
        let huge = put_file(&cache, "huge", 2000);
        assert!(huge.exists());
        assert_eq!(usage(&cache.dir).unwrap().entries, 1);
    }

    #[test]
    fn a_pinned_entry_is_never_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("ipfs")).unwrap();
        let a = put_dir(&cache, "a", 10);
        let b = put_file(&cache, "b", 10);
        let pin = cache.pin(&cid("a")).unwrap();
        let pruned = prune(&cache.dir, 0, None).unwrap();
        assert_eq!(pruned.in_use, 1);
        assert_eq!(
            pruned.removed,
            Usage {
                bytes: 10,
                entries: 1
            }
        );
        assert!(a.join("sub/b").exists() && !b.exists());
        drop(pin);
        assert_eq!(prune(&cache.dir, 0, None).unwrap().removed.entries, 1);
        assert!(!a.exists());
        // Nothing is left behind, not even the directory the entry was moved into.
        assert_eq!(fs::read_dir(&cache.dir).unwrap().count(), 0);
    }

    #[test]
    fn foreign_files_symlinks_and_fresh_leftovers_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("ipfs")).unwrap();
        put_file(&cache, "a", 10);
        let victim = outside.path().join("victim");
        fs::create_dir(&victim).unwrap();
        fs::write(victim.join("file"), b"keep").unwrap();
        // A symlink named like an entry, someone's notes, a fetch in progress and a stale
        // one, which goes.
        std::os::unix::fs::symlink(&victim, cache.entry(&cid("link"))).unwrap();
        fs::write(cache.dir.join("notes"), b"mine").unwrap();
        fs::create_dir(cache.dir.join(".fetch-fresh")).unwrap();
        fs::create_dir(cache.dir.join(".fetch-stale")).unwrap();
        fs::write(cache.dir.join(".fetch-stale/entry"), b"partial").unwrap();
        age(&cache.dir.join(".fetch-stale"), 1);
        assert_eq!(
            usage(&cache.dir).unwrap(),
            Usage {
                bytes: 17,
                entries: 1
            }
        );
        let pruned = prune(&cache.dir, 0, None).unwrap();
        assert_eq!(
            pruned.removed,
            Usage {
                bytes: 17,
                entries: 1
            }
        );
        let mut left: Vec<_> = fs::read_dir(&cache.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![
            ".fetch-fresh".to_owned(),
            "notes".to_owned(),
            cid("link").to_string(),
        ];
        want.sort();
        assert_eq!(left, want);
        assert_eq!(fs::read(victim.join("file")).unwrap(), b"keep");
    }

    #[test]
    fn a_symlinked_cache_directory_is_not_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("real")).unwrap();
        let a = put_file(&cache, "a", 10);
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        assert!(prune(&dir.path().join("link"), 0, None).is_err());
        assert!(a.exists());
    }

    #[test]
    fn a_pin_on_an_evicted_entry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("ipfs")).unwrap();
        put_file(&cache, "a", 10);
        prune(&cache.dir, 0, None).unwrap();
        assert!(cache.pin(&cid("a")).is_none());
    }
}
