//! Compiled artifacts on disk, bounded in size: `<root>/wasmtime-<version>-<hash>/<sha256
//! hex>.{component,module}.cwasm`, least recently used evicted first.
//!
//! "Used" is a file's modification time: set when it is written and touched whenever it is
//! loaded. Eviction never rescans on every write: each cache keeps a running total of what
//! it wrote since it last scanned, scans when that passes the cap (or after
//! [`RESCAN_EVERY`] writes, to see what other `ww` processes wrote), and then evicts down to
//! nine tenths of the cap, so the next scan is a tenth of the cap away.
//!
//! Safety: eviction works relative to an open handle on each artifact directory, checked to
//! be a real directory (not a symlink) owned by this user that nobody else can write; it
//! only ever unlinks names of this directory that look like artifacts (or like this cache's
//! temporary files), and unlinking never follows a symlink. Anything else in the directory
//! is left alone and not counted.

use std::ffi::{CString, OsStr};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::capped::{Evicted, Tally};

/// Writes between two scans of the directory, at most: the running total only counts this
/// process's writes, so it is brought back in step with the directory now and then.
pub const RESCAN_EVERY: u32 = 1024;

/// The prefix of a temporary file an artifact is written to before it is renamed in place.
const TMP_PREFIX: &str = ".tmp-";

/// How old a temporary file must be before eviction takes it for a leftover of a `ww` that
/// died mid-write rather than a write in progress.
const STALE_TMP: Duration = Duration::from_secs(3600);

/// The prefix of the directories of compiled code under the state directory.
pub const DIR_PREFIX: &str = "wasmtime-";

/// How much a cache holds, or how much was removed from it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes, by file size.
    pub bytes: u64,
    /// Entries (artifacts).
    pub entries: u64,
}

/// The artifacts of one engine: a directory of the disk cache, with its size cap.
pub(super) struct Disk {
    root: PathBuf,
    dir: PathBuf,
    tally: Tally,
}

impl Disk {
    /// The directory `<root>/<key>`, created 0700 when missing; `None` (with a warning) if
    /// it cannot be created or is not this user's alone. `max` caps all the compiled-code
    /// directories under `root` together.
    pub(super) fn open(root: &Path, key: &str, max: u64) -> Option<Disk> {
        let dir = root.join(key);
        if let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
        {
            tracing::warn!(dir = %dir.display(), "compile cache disabled: cannot create it: {e}");
            return None;
        }
        if let Err(e) = open_private(&dir) {
            tracing::warn!(dir = %dir.display(), "compile cache disabled: {e}");
            return None;
        }
        Some(Disk {
            root: root.to_path_buf(),
            dir,
            tally: Tally::new("compile cache", max, RESCAN_EVERY),
        })
    }

    /// The path of the artifact `name`.
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Opens the artifact `name` if it is there, a regular file (not a symlink) of this
    /// user's, and marks it as just used. `None` when it is missing (perhaps evicted a
    /// moment ago), with a warning when it is there but not usable.
    pub(super) fn open_artifact(&self, name: &str) -> Option<std::fs::File> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let path = self.path(name);
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring cached artifact: {e}");
                return None;
            }
        };
        let ours = file
            .metadata()
            .is_ok_and(|meta| meta.is_file() && meta.uid() == rustix::process::geteuid().as_raw());
        if !ours {
            tracing::warn!(path = %path.display(), "ignoring cached artifact: not a file of ours");
            return None;
        }
        // The owner may set a file's times through a read-only handle.
        if let Err(e) = file.set_modified(SystemTime::now()) {
            tracing::debug!(path = %path.display(), "cannot mark artifact as used: {e}");
        }
        Some(file)
    }

    /// Writes the artifact `name` (to a temporary file, renamed into place so that a
    /// half-written artifact is never seen), then evicts if the cache passed its cap.
    pub(super) fn write(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(&self.dir)?;
        tmp.write_all(bytes)?;
        // Stamped from the clock rather than left to the filesystem, whose timestamps are
        // coarse (a tick of some milliseconds): artifacts written within one tick would
        // otherwise tie, and eviction order among them be arbitrary.
        tmp.as_file().set_modified(SystemTime::now())?;
        tmp.persist(self.path(name)).map_err(|e| e.error)?;
        self.account(name, bytes.len() as u64);
        Ok(())
    }

    /// Counts `len` more bytes, evicting (never `name`, just written) past the cap.
    fn account(&self, name: &str, len: u64) {
        let keep = self.path(name);
        self.tally.add(
            len,
            &self.root,
            || usage(&self.root).map(|u| u.bytes),
            |target| {
                let pruned = prune(&self.root, target, Some(&keep))?;
                Ok::<_, io::Error>(Evicted {
                    entries: pruned.removed.entries,
                    bytes: pruned.removed.bytes,
                    remaining: pruned.remaining.bytes,
                })
            },
        );
    }
}

/// What [`prune`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// What was evicted.
    pub removed: Usage,
    /// What is left.
    pub remaining: Usage,
}

/// The size and count of the compiled artifacts under `root` (the state directory), over
/// every `wasmtime-*` directory this user owns alone. A missing `root` holds nothing.
pub fn usage(root: &Path) -> io::Result<Usage> {
    let mut usage = Usage::default();
    for artifact in scan(root)? {
        usage.bytes += artifact.size;
        usage.entries += u64::from(!artifact.temporary);
    }
    Ok(usage)
}

/// Evicts the least recently used artifacts under `root` until at most `max` bytes remain
/// (never `keep`), along with temporary files left by a `ww` that died mid-write.
pub fn prune(root: &Path, max: u64, keep: Option<&Path>) -> io::Result<Pruned> {
    let mut artifacts = scan(root)?;
    // Leftover temporary files first, then the least recently used.
    artifacts.sort_by_key(|a| (!a.temporary, a.modified));
    let mut remaining = Usage {
        bytes: artifacts.iter().map(|a| a.size).sum(),
        entries: artifacts.iter().filter(|a| !a.temporary).count() as u64,
    };
    let mut removed = Usage::default();
    for artifact in &artifacts {
        if remaining.bytes <= max && !artifact.temporary {
            break;
        }
        if keep.is_some_and(|keep| *keep == artifact.path()) {
            continue;
        }
        match rustix::fs::unlinkat(&artifact.dir.fd, &artifact.name, AtFlags::empty()) {
            // Gone already: another `ww` evicted it first.
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(e) => {
                tracing::warn!(path = %artifact.path().display(), "cannot evict: {e}");
                continue;
            }
        }
        remaining.bytes -= artifact.size;
        removed.bytes += artifact.size;
        if !artifact.temporary {
            remaining.entries -= 1;
            removed.entries += 1;
        }
    }
    Ok(Pruned { removed, remaining })
}

/// An artifact directory, open.
struct ArtifactDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// One file eviction may take.
struct Artifact {
    dir: Arc<ArtifactDir>,
    name: CString,
    size: u64,
    modified: (i64, i64),
    /// A stale temporary file rather than an artifact.
    temporary: bool,
}

impl Artifact {
    fn path(&self) -> PathBuf {
        self.dir.path.join(OsStr::from_bytes(self.name.to_bytes()))
    }
}

/// The artifacts (and stale temporary files) in every compiled-code directory under `root`.
fn scan(root: &Path) -> io::Result<Vec<Artifact>> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let now = SystemTime::now();
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        if !entry
            .file_name()
            .as_bytes()
            .starts_with(DIR_PREFIX.as_bytes())
        {
            continue;
        }
        let path = entry.path();
        let fd = match open_private(&path) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::debug!(dir = %path.display(), "not a compile cache directory: {e}");
                continue;
            }
        };
        let dir = Arc::new(ArtifactDir { fd, path });
        for entry in rustix::fs::Dir::read_from(&dir.fd)? {
            let entry = entry?;
            let name = entry.file_name();
            let temporary = is_temporary(name.to_bytes());
            if !temporary && !is_artifact(name.to_bytes()) {
                continue;
            }
            let stat = match rustix::fs::statat(&dir.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                // Evicted or renamed by another `ww` since it was listed.
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
                continue;
            }
            #[allow(clippy::unnecessary_cast)] // The field types differ between platforms.
            let modified = (stat.st_mtime as i64, stat.st_mtime_nsec as i64);
            if temporary && !stale(modified, now) {
                continue;
            }
            found.push(Artifact {
                dir: dir.clone(),
                name: name.to_owned(),
                size: u64::try_from(stat.st_size).unwrap_or(0),
                modified,
                temporary,
            });
        }
    }
    Ok(found)
}

/// Opens `dir` without following a symlink, and checks that it is a directory of this
/// user's that nobody else can write to.
fn open_private(dir: &Path) -> io::Result<OwnedFd> {
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let stat = rustix::fs::fstat(&fd)?;
    if stat.st_uid != rustix::process::geteuid().as_raw() {
        return Err(io::Error::other("the directory is not ours"));
    }
    if stat.st_mode & 0o022 != 0 {
        return Err(io::Error::other("others can write to the directory"));
    }
    Ok(fd)
}

/// `<64 lowercase hex digits>.component.cwasm` or `<…>.module.cwasm`.
fn is_artifact(name: &[u8]) -> bool {
    let Some((hash, suffix)) = name.split_at_checked(64) else {
        return false;
    };
    hash.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && matches!(suffix, b".component.cwasm" | b".module.cwasm")
}

/// A temporary file of this cache: `.tmp-…` now, `<hash>.<kind>.tmp<pid>` before.
fn is_temporary(name: &[u8]) -> bool {
    if name.starts_with(TMP_PREFIX.as_bytes()) {
        return true;
    }
    let Some((hash, suffix)) = name.split_at_checked(64) else {
        return false;
    };
    let digits = suffix
        .strip_prefix(b".component.tmp")
        .or_else(|| suffix.strip_prefix(b".module.tmp"));
    hash.iter().all(u8::is_ascii_hexdigit)
        && digits.is_some_and(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit))
}

/// Whether a temporary file last written at `modified` is a leftover.
fn stale(modified: (i64, i64), now: SystemTime) -> bool {
    let age = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|now| now.as_secs() as i64 - modified.0)
        .unwrap_or(0);
    age > STALE_TMP.as_secs() as i64
}

/// Sets the modification time of `name` in `dir`, not following symlinks (for tests).
#[cfg(test)]
pub(super) fn set_modified(dir: &Path, name: &str, secs: i64) {
    let dir = open_private(dir).unwrap();
    let time = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: time,
        last_modification: time,
    };
    rustix::fs::utimensat(&dir, name, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}
