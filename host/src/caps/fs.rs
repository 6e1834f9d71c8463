//! The filesystem capability: which host directories a cell holds, where it sees them, and
//! whether it may write there.
//!
//! Every directory a cell can reach is a preopen built here; there is no other path from a
//! cell to the host filesystem. Read-only is enforced by wasmtime-wasi's permission checks on
//! the preopen, not by anything the guest does.
//!
//! **Grants are handles, never paths.** A `--dir` flag ([`DirGrant`]) names a host path; it
//! is opened once, in [`Filesystem::new`], and from then on the grant is that open directory
//! ([`Preopen`]): a child's narrowed grant shares its parent's handle, a program is read
//! through it, and wasmtime-wasi is handed the same directory through its
//! `/proc/self/fd/N` magic link (which resolves to the open directory itself, not to any
//! name). Renaming or replacing a granted directory, or any of its ancestors, after it was
//! opened changes nothing about what any cell can reach. Opening a host path is ambient
//! authority: every place that does it says `cap_std::ambient_authority()`, the one marker
//! to grep for.

use std::os::fd::AsRawFd as _;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// A malformed or unusable directory grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum DirGrantError {
    /// The grant has an empty host path.
    #[error("bad --dir value `{value}`: the host path is empty")]
    #[diagnostic(
        code(ww::dir::syntax),
        help("write --dir HOST[::GUEST][:ro], e.g. --dir ./data::/data:ro")
    )]
    EmptyHost {
        /// The value as given.
        value: String,
    },

    /// A single `:` where `::` separates HOST from GUEST, or a host path with a `:`.
    #[error("bad --dir value `{value}`: a single `:` is not a separator")]
    #[diagnostic(
        code(ww::dir::single_colon),
        help(
            "separate HOST and GUEST with two colons: --dir HOST::GUEST[:ro] (e.g. \
             --dir ./data::/data:ro); a host path that itself contains `:` cannot be granted"
        )
    )]
    SingleColon {
        /// The value as given.
        value: String,
    },

    /// A suffix other than one `:ro` or `:rw`.
    #[error("bad --dir value `{value}`: {problem}")]
    #[diagnostic(
        code(ww::dir::suffix),
        help("end --dir with at most one of `:ro` (read-only) or `:rw` (the default)")
    )]
    Suffix {
        /// The value as given.
        value: String,
        /// What is wrong with its suffix.
        problem: String,
    },

    /// A writable grant would give a cell ww's own state (its compile cache or merged images).
    #[error("--dir {}: it holds ww's own state at {}", host.display(), state.display())]
    #[diagnostic(
        code(ww::dir::state),
        help(
            "ww loads compiled code from its state directory; a cell that could write there \
             could run native code. Grant a narrower directory, grant it read-only (:ro), or \
             move ww's state elsewhere with WW_CACHE_DIR"
        )
    )]
    HoldsState {
        /// The host path as given.
        host: PathBuf,
        /// ww's state directory it overlaps.
        state: PathBuf,
    },

    /// The guest path is not absolute, or climbs with `..`.
    #[error("bad --dir value `{value}`: guest path `{guest}` must be absolute, without `..`")]
    #[diagnostic(
        code(ww::dir::guest_path),
        help("write --dir HOST[::GUEST][:ro] with an absolute GUEST such as /data")
    )]
    BadGuestPath {
        /// The value as given.
        value: String,
        /// The guest path as given.
        guest: String,
    },

    /// The host path is missing or not a directory.
    #[error("--dir {}: {reason}", host.display())]
    #[diagnostic(
        code(ww::dir::host_path),
        help("--dir grants an existing host directory; create it first or fix the path")
    )]
    HostPath {
        /// The host path as given.
        host: PathBuf,
        /// Why it cannot be granted.
        reason: String,
    },

    /// A cell asked to pass on a directory it does not hold.
    #[error("`{path}` is not a directory this cell holds")]
    #[diagnostic(
        code(ww::dir::not_held),
        help("a cell can pass on only the directories it holds, by the path it sees them at")
    )]
    NotHeld {
        /// The path as asked.
        path: String,
    },

    /// Two grants claim the same guest path.
    #[error("two --dir grants are both mounted at `{guest}`")]
    #[diagnostic(
        code(ww::dir::duplicate),
        help("give each --dir a distinct GUEST path (HOST::GUEST)")
    )]
    Duplicate {
        /// The contested guest path.
        guest: String,
    },
}

/// One host directory granted to a cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    host: PathBuf,
    guest: String,
    read_only: bool,
}

impl DirGrant {
    /// A grant of `host` at `guest`, validated like a parsed one.
    pub fn new(host: PathBuf, guest: &str, read_only: bool) -> Result<DirGrant, DirGrantError> {
        let guest = normalize_guest(guest).ok_or_else(|| DirGrantError::BadGuestPath {
            value: format!("{}::{guest}", host.display()),
            guest: guest.to_owned(),
        })?;
        Ok(DirGrant {
            host,
            guest,
            read_only,
        })
    }

    /// The directory on the host.
    pub fn host(&self) -> &Path {
        &self.host
    }

    /// Where the cell sees it: an absolute, normalized path.
    pub fn guest(&self) -> &str {
        &self.guest
    }

    /// Whether the host refuses writes under it.
    pub fn read_only(&self) -> bool {
        self.read_only
    }
}

impl FromStr for DirGrant {
    type Err = DirGrantError;

    /// Parses `HOST[::GUEST][:ro|:rw]`. Without `::GUEST` the guest path is the host path
    /// made absolute. A single `:` elsewhere, a repeated or unknown suffix, and more than one
    /// `::` are refused with a hint, never read as part of a path.
    fn from_str(value: &str) -> Result<DirGrant, DirGrantError> {
        let (rest, read_only) = split_mode(value)?;
        let (host, guest) = match rest.split_once("::") {
            Some((host, guest)) => (host, Some(guest)),
            None => (rest, None),
        };
        if host.is_empty() {
            return Err(DirGrantError::EmptyHost {
                value: value.to_owned(),
            });
        }
        if host.contains(':') || guest.is_some_and(|g| g.contains(':')) {
            return Err(DirGrantError::SingleColon {
                value: value.to_owned(),
            });
        }
        let host = PathBuf::from(host);
        let guest = match guest {
            Some(guest) => guest.to_owned(),
            None => std::path::absolute(&host)
                .unwrap_or_else(|_| host.clone())
                .to_string_lossy()
                .into_owned(),
        };
        let normalized = normalize_guest(&guest).ok_or_else(|| DirGrantError::BadGuestPath {
            value: value.to_owned(),
            guest: guest.clone(),
        })?;
        Ok(DirGrant {
            host,
            guest: normalized,
            read_only,
        })
    }
}

/// Splits the mode suffix off a `--dir` value: `(rest, read_only)`. Only a `:` that is not
/// half of a `::` can start a suffix; what follows it must be `ro` or `rw`, once.
fn split_mode(value: &str) -> Result<(&str, bool), DirGrantError> {
    let suffix_at = |s: &str| -> Option<usize> {
        let i = s.rfind(':')?;
        // `::` separates HOST from GUEST: its second colon starts no suffix.
        (i == 0 || s.as_bytes()[i - 1] != b':').then_some(i)
    };
    let Some(i) = suffix_at(value) else {
        return Ok((value, false));
    };
    let (rest, suffix) = (&value[..i], &value[i + 1..]);
    let read_only = match suffix {
        "ro" => true,
        "rw" => false,
        _ if suffix.contains('/') || suffix.is_empty() => {
            return Err(DirGrantError::SingleColon {
                value: value.to_owned(),
            });
        }
        other => {
            return Err(DirGrantError::Suffix {
                value: value.to_owned(),
                problem: format!("unknown suffix `:{other}`"),
            });
        }
    };
    if let Some(j) = suffix_at(rest)
        && matches!(&rest[j + 1..], "ro" | "rw")
    {
        return Err(DirGrantError::Suffix {
            value: value.to_owned(),
            problem: "the mode is given twice".into(),
        });
    }
    Ok((rest, read_only))
}

/// A failure to read a file from a cell's filesystem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No such file in what the cell holds.
    #[error("no such file: {0}")]
    NotFound(String),
    /// The file is larger than allowed, in bytes.
    #[error("file too large: {0} bytes")]
    TooLarge(u64),
    /// Another I/O failure.
    #[error("{0}")]
    Io(String),
}

/// Identifies a file's content by where it is and when it last changed: device, inode,
/// size, modification and status-change times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// A program file opened in a cell's filesystem, not yet read.
#[derive(Debug)]
pub struct ProgramFile {
    file: cap_std::fs::File,
    path: String,
    max: u64,
    identity: FileIdentity,
}

impl ProgramFile {
    /// What identifies its content.
    pub fn identity(&self) -> FileIdentity {
        self.identity
    }

    /// Its bytes (at most the cap it was opened with).
    pub fn read(self) -> Result<Vec<u8>, ReadError> {
        use std::io::Read as _;
        let mut bytes = Vec::with_capacity(self.identity.len as usize);
        self.file
            .take(self.max + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error(&self.path, e))?;
        if bytes.len() as u64 > self.max {
            return Err(ReadError::TooLarge(bytes.len() as u64));
        }
        Ok(bytes)
    }
}

fn io_error(guest_path: &str, e: std::io::Error) -> ReadError {
    match e.kind() {
        std::io::ErrorKind::NotFound => ReadError::NotFound(guest_path.to_owned()),
        _ => ReadError::Io(format!("{guest_path}: {e}")),
    }
}

/// `path` relative to the directory `dir` (both normalized), if it is inside it.
fn relative_to<'a>(path: &'a str, dir: &str) -> Option<&'a str> {
    if dir == "/" {
        return Some(path.trim_start_matches('/'));
    }
    let rest = path.strip_prefix(dir)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/')
    }
}

/// `/a//b/./c/` → `/a/b/c`; `None` for a relative path or one with `..`.
fn normalize_guest(guest: &str) -> Option<String> {
    let path = Path::new(guest);
    if !path.is_absolute() {
        return None;
    }
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// An open host directory a cell holds, where it sees it, and whether it may write there.
///
/// The directory is the handle opened when the grant was made: cloning a `Preopen` (for a
/// child) shares it, and nothing reopens it by its host path.
#[derive(Debug, Clone)]
pub struct Preopen {
    dir: Arc<cap_std::fs::Dir>,
    /// What was granted; its host path is for messages only once the directory is open.
    grant: DirGrant,
}

impl Preopen {
    /// Opens `grant`'s host directory: the one step from a host path to a handle.
    fn open(grant: &DirGrant) -> Result<Preopen, DirGrantError> {
        Ok(Preopen {
            dir: Arc::new(open_host_dir(&grant.host)?),
            grant: grant.clone(),
        })
    }

    /// The open directory.
    pub fn dir(&self) -> &cap_std::fs::Dir {
        &self.dir
    }

    /// The host path it was opened at, for messages only: the path may name something else
    /// by now, and is never opened again.
    pub fn host(&self) -> &Path {
        self.grant.host()
    }

    /// Where the cell sees it: an absolute, normalized path.
    pub fn guest(&self) -> &str {
        self.grant.guest()
    }

    /// Whether the host refuses writes under it.
    pub fn read_only(&self) -> bool {
        self.grant.read_only()
    }

    /// The same directory at `guest`, read-only if this one is or `read_only` asks.
    fn narrowed(&self, guest: &str, read_only: bool) -> Result<Preopen, DirGrantError> {
        Ok(Preopen {
            dir: Arc::clone(&self.dir),
            grant: DirGrant::new(
                self.grant.host.clone(),
                guest,
                self.grant.read_only || read_only,
            )?,
        })
    }
}

/// Opens the host directory at `host` (following the operator's symlinks: the path is
/// theirs), checking that it is a directory.
fn open_host_dir(host: &Path) -> Result<cap_std::fs::Dir, DirGrantError> {
    let fail = |reason: String| DirGrantError::HostPath {
        host: host.to_path_buf(),
        reason,
    };
    // Ambient authority: the operator named this path on the command line (or it is the
    // image they asked for); it is opened here once and used only as a handle afterwards.
    match cap_std::fs::Dir::open_ambient_dir(host, cap_std::ambient_authority()) {
        Ok(dir) => Ok(dir),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Err(fail("not a directory".into())),
        Err(e) => Err(fail(e.to_string())),
    }
}

/// Everything a cell can see of the host filesystem, in preopen order.
#[derive(Debug, Clone, Default)]
pub struct Filesystem {
    preopens: Vec<Preopen>,
}

impl Filesystem {
    /// The image root (read-only at `/`, unless a grant claims `/`) plus `grants`, each
    /// opened once and checked: the host directory exists, and no two share a guest path.
    pub fn new(
        image_root: Option<&Path>,
        grants: &[DirGrant],
    ) -> Result<Filesystem, DirGrantError> {
        // A grant at `/` replaces the image root, which is then not opened at all.
        let root_granted = grants.iter().any(|g| g.guest == "/");
        Filesystem::image(image_root.filter(|_| !root_granted))?.granting(grants)
    }

    /// The image root alone, opened once, read-only at `/` (empty without a root).
    pub fn image(image_root: Option<&Path>) -> Result<Filesystem, DirGrantError> {
        let root = image_root
            .map(|root| {
                Preopen::open(&DirGrant {
                    host: root.to_path_buf(),
                    guest: "/".into(),
                    read_only: true,
                })
            })
            .transpose()?;
        Ok(Filesystem {
            preopens: root.into_iter().collect(),
        })
    }

    /// This filesystem's directories plus `grants`, each opened once; a grant at `/`
    /// replaces this filesystem's root. The directories held here are shared, not reopened.
    pub fn granting(&self, grants: &[DirGrant]) -> Result<Filesystem, DirGrantError> {
        let mut preopens: Vec<Preopen> = Vec::with_capacity(grants.len() + 1);
        for grant in grants {
            if preopens.iter().any(|p| p.guest() == grant.guest) {
                return Err(DirGrantError::Duplicate {
                    guest: grant.guest.clone(),
                });
            }
            preopens.push(Preopen::open(grant)?);
        }
        for held in &self.preopens {
            if !preopens.iter().any(|p| p.guest() == held.guest()) {
                preopens.push(held.clone());
            }
        }
        Filesystem::of(preopens)
    }

    /// A filesystem of directories already held (a child's, from [`Filesystem::attenuate`]),
    /// checked that no two share a guest path.
    pub fn of(mut preopens: Vec<Preopen>) -> Result<Filesystem, DirGrantError> {
        for (i, p) in preopens.iter().enumerate() {
            if preopens[..i].iter().any(|q| q.guest() == p.guest()) {
                return Err(DirGrantError::Duplicate {
                    guest: p.guest().to_owned(),
                });
            }
        }
        // The root comes first, as `ww:host/cell.directories` promises.
        if let Some(i) = preopens.iter().position(|p| p.guest() == "/") {
            let root = preopens.remove(i);
            preopens.insert(0, root);
        }
        Ok(Filesystem { preopens })
    }

    /// The directories, image root first when there is one.
    pub fn preopens(&self) -> &[Preopen] {
        &self.preopens
    }

    /// The directories for a child, chosen from this filesystem: each `(path, at,
    /// read_only)` names a directory held here by the path it is seen at, where the child
    /// sees it (`None`: the same path), and whether to narrow it to read-only. A read-only
    /// directory stays read-only; a directory not held here is refused. The child's
    /// directories are the same open handles as this cell's.
    pub fn attenuate<'a>(
        &self,
        requests: impl IntoIterator<Item = (&'a str, Option<&'a str>, bool)>,
    ) -> Result<Vec<Preopen>, DirGrantError> {
        requests
            .into_iter()
            .map(|(path, at, read_only)| {
                let normalized = normalize_guest(path);
                let held = self
                    .preopens
                    .iter()
                    .find(|p| Some(p.guest()) == normalized.as_deref())
                    .ok_or_else(|| DirGrantError::NotHeld {
                        path: path.to_owned(),
                    })?;
                held.narrowed(at.unwrap_or(path), read_only)
            })
            .collect()
    }

    /// Opens the file at `guest_path` as the cell would: through the directory handle that
    /// holds it (cap-std), so `..` and symlinks cannot lead outside what the cell holds.
    fn open(&self, guest_path: &str) -> Result<cap_std::fs::File, ReadError> {
        let (dir, rel) = self.resolve(guest_path)?;
        let rel = rel.as_str();
        if rel.is_empty() {
            return Err(ReadError::Io(format!("{guest_path} is a directory")));
        }
        let io = |e: std::io::Error| io_error(guest_path, e);
        // Non-blocking, so that opening a FIFO (or a device) an image or a grant holds
        // returns at once instead of waiting for a writer with the caller's thread; anything
        // but a regular file is then refused.
        let mut options = cap_std::fs::OpenOptions::new();
        options.read(true);
        cap_std::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
        let file = dir.dir.open_with(rel, &options).map_err(io)?;
        let kind = file.metadata().map_err(io)?.file_type();
        if kind.is_dir() {
            return Err(ReadError::Io(format!("{guest_path} is a directory")));
        }
        if !kind.is_file() {
            return Err(ReadError::Io(format!("{guest_path} is not a regular file")));
        }
        Ok(file)
    }

    /// The directory `guest_dir` held here, as the read-only root of a filesystem of its own
    /// (a service's image inside pid0's). It is opened through the handle that holds it, so
    /// a symlink or `..` cannot lead outside.
    pub fn nested_root(&self, guest_dir: &str) -> Result<Filesystem, ReadError> {
        let (held, rel) = self.resolve(guest_dir)?;
        let io = |e: std::io::Error| io_error(guest_dir, e);
        let dir = if rel.is_empty() {
            held.dir.try_clone().map_err(io)?
        } else {
            held.dir.open_dir(&rel).map_err(io)?
        };
        Ok(Filesystem {
            preopens: vec![Preopen {
                dir: Arc::new(dir),
                grant: DirGrant {
                    host: held.host().join(&rel),
                    guest: "/".into(),
                    read_only: true,
                },
            }],
        })
    }

    /// The names of the directories in `guest_dir` held here, sorted; none when it is
    /// missing. Entries that are not directories (symlinks included) are left out.
    pub fn subdirectories(&self, guest_dir: &str) -> Vec<String> {
        let Ok((held, rel)) = self.resolve(guest_dir) else {
            return Vec::new();
        };
        let entries = if rel.is_empty() {
            held.dir.entries()
        } else {
            match held.dir.open_dir(rel) {
                Ok(dir) => dir.entries(),
                Err(_) => return Vec::new(),
            }
        };
        let Ok(entries) = entries else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    /// The preopen holding `guest_path` (the deepest one) and the path relative to it.
    fn resolve<'a>(&'a self, guest_path: &str) -> Result<(&'a Preopen, String), ReadError> {
        let not_found = || ReadError::NotFound(guest_path.to_owned());
        let path = normalize_guest(guest_path).ok_or_else(not_found)?;
        self.preopens
            .iter()
            .filter_map(|p| relative_to(&path, p.guest()).map(|rel| (p, rel.to_owned())))
            .max_by_key(|(p, _)| p.guest().len())
            .ok_or_else(not_found)
    }

    /// Opens the program at `guest_path`, refusing a file larger than `max` bytes. Its
    /// identity comes from the same open file its bytes will be read from, so the two always
    /// agree.
    pub fn program(&self, guest_path: &str, max: u64) -> Result<ProgramFile, ReadError> {
        use cap_std::fs::MetadataExt as _;
        let file = self.open(guest_path)?;
        let meta = file.metadata().map_err(|e| io_error(guest_path, e))?;
        if meta.len() > max {
            return Err(ReadError::TooLarge(meta.len()));
        }
        Ok(ProgramFile {
            file,
            path: guest_path.to_owned(),
            max,
            identity: FileIdentity {
                dev: meta.dev(),
                ino: meta.ino(),
                len: meta.len(),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                ctime: (meta.ctime(), meta.ctime_nsec()),
            },
        })
    }

    /// Reads the file at `guest_path` as the cell would, refusing one larger than `max`
    /// bytes.
    pub fn read(&self, guest_path: &str, max: u64) -> Result<Vec<u8>, ReadError> {
        self.program(guest_path, max)?.read()
    }

    /// Preopens every directory in `builder` with the permissions it was granted.
    ///
    /// wasmtime-wasi takes a preopen only by path, so each is handed over as
    /// `/proc/self/fd/N` of the handle held here: the kernel resolves that magic link to the
    /// open directory itself, whatever its host path names now. Without `/proc` this fails:
    /// ww never falls back to the host path.
    pub fn apply(&self, builder: &mut WasiCtxBuilder) -> Result<(), DirGrantError> {
        for dir in &self.preopens {
            let perms = if dir.read_only() {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            let handle = format!("/proc/self/fd/{}", dir.dir.as_raw_fd());
            builder
                .preopened_dir(&handle, dir.guest(), perms)
                .map_err(|e| DirGrantError::HostPath {
                    host: dir.host().to_path_buf(),
                    reason: format!("cannot hand the open directory over through {handle}: {e:#} (is /proc mounted?)"),
                })?;
        }
        Ok(())
    }
}

/// Refuses a writable grant that would give a cell ww's own state: one of `state` (the
/// compile cache, the merged images) or a directory holding it or held by it. Compiled code is native code,
/// so a cell that could write the cache could run anything as ww.
pub fn refuse_state(grants: &[DirGrant], state: &[PathBuf]) -> Result<(), DirGrantError> {
    let canonical: Vec<(PathBuf, PathBuf)> = state
        .iter()
        .filter_map(|s| Some((s.clone(), deepest_existing(s)?)))
        .collect();
    // A read-only grant cannot change the state; only a writable one is refused.
    for grant in grants.iter().filter(|g| !g.read_only) {
        let Ok(host) = grant.host.canonicalize() else {
            continue; // Filesystem::new reports it
        };
        for (shown, state) in &canonical {
            if state.starts_with(&host) || host.starts_with(state) {
                return Err(DirGrantError::HoldsState {
                    host: grant.host.clone(),
                    state: shown.clone(),
                });
            }
        }
    }
    Ok(())
}

/// `path` canonicalized, or, when it does not exist yet, its nearest existing ancestor's
/// canonical path with the rest appended.
fn deepest_existing(path: &Path) -> Option<PathBuf> {
    let mut rest = Vec::new();
    let mut at = path;
    loop {
        if let Ok(canonical) = at.canonicalize() {
            return Some(rest.iter().rev().fold(canonical, |p, c| p.join(c)));
        }
        rest.push(at.file_name()?.to_owned());
        at = at.parent()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(s: &str) -> Result<DirGrant, DirGrantError> {
        s.parse()
    }

    #[test]
    fn parses_every_shape() {
        let cases = [
            ("/srv/data::/data", "/srv/data", "/data", false),
            ("/srv/data::/data:ro", "/srv/data", "/data", true),
            ("/srv/data", "/srv/data", "/srv/data", false),
            ("/srv/data:ro", "/srv/data", "/srv/data", true),
            ("/srv::/a//b/./c/", "/srv", "/a/b/c", false),
            ("/srv::/", "/srv", "/", false),
        ];
        for (input, host, guest, ro) in cases {
            let g = grant(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(
                (g.host().to_str().unwrap(), g.guest(), g.read_only()),
                (host, guest, ro),
                "{input}"
            );
        }
    }

    #[test]
    fn colons_and_suffixes_are_refused_with_a_hint() {
        for value in [
            "H:/g",
            "/srv/data:/data",
            "/a:b::/g",
            "/a::/b::/c",
            "/a::/b:/c",
        ] {
            assert!(
                matches!(grant(value), Err(DirGrantError::SingleColon { .. })),
                "{value}: {:?}",
                grant(value)
            );
        }
        for value in [
            "/a:ro:ro",
            "/a::/b:rw:ro",
            "/a:x",
            "/a::/b:RO",
            "/a::/b:readonly",
        ] {
            assert!(
                matches!(grant(value), Err(DirGrantError::Suffix { .. })),
                "{value}: {:?}",
                grant(value)
            );
        }
        let help = miette::Diagnostic::help(&grant("H:/g").unwrap_err())
            .map(|h| h.to_string())
            .unwrap_or_default();
        assert!(help.contains("HOST::GUEST"), "{help}");
        let g = grant("/srv::/data:rw").unwrap();
        assert_eq!((g.guest(), g.read_only()), ("/data", false));
    }

    #[test]
    fn a_grant_is_its_handle_not_its_path() {
        let root = tempfile::tempdir().unwrap();
        let (data, victim) = (root.path().join("data"), root.path().join("victim"));
        std::fs::create_dir(&data).unwrap();
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(data.join("x.wasm"), b"granted").unwrap();
        std::fs::write(victim.join("x.wasm"), b"victim").unwrap();
        let g = DirGrant::new(data.clone(), "/data", false).unwrap();
        let fs = Filesystem::new(None, &[g]).unwrap();
        // The granted directory is renamed away and a symlink to another put in its place.
        std::fs::rename(&data, root.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&victim, &data).unwrap();
        assert_eq!(fs.read("/data/x.wasm", 100).unwrap(), b"granted");
        let child = Filesystem::of(fs.attenuate([("/data", Some("/d"), false)]).unwrap()).unwrap();
        assert_eq!(child.read("/d/x.wasm", 100).unwrap(), b"granted");
        // What wasmtime-wasi is handed is the same directory, by its fd's magic link.
        let mut builder = WasiCtxBuilder::new();
        child.apply(&mut builder).unwrap();
        let handle = format!("/proc/self/fd/{}", child.preopens()[0].dir().as_raw_fd());
        assert_eq!(
            std::fs::read(Path::new(&handle).join("x.wasm")).unwrap(),
            b"granted"
        );
    }

    #[test]
    fn nested_roots_stay_beneath_their_handle() {
        let (img, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::create_dir_all(img.path().join("svc/a/bin")).unwrap();
        std::fs::write(img.path().join("svc/a/bin/main.wasm"), b"a").unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.path(), img.path().join("svc/evil")).unwrap();
        std::os::unix::fs::symlink("../..", img.path().join("svc/up")).unwrap();
        let fs = Filesystem::new(Some(img.path()), &[]).unwrap();
        assert_eq!(
            fs.subdirectories("/svc"),
            ["a"],
            "symlinks are not services"
        );
        let a = fs.nested_root("/svc/a").unwrap();
        assert_eq!(a.read("/bin/main.wasm", 10).unwrap(), b"a");
        assert!(a.preopens()[0].read_only());
        assert!(fs.nested_root("/svc/evil").is_err());
        assert!(fs.nested_root("/svc/up").is_err());
        assert!(fs.subdirectories("/nope").is_empty());
    }

    #[test]
    fn writable_grants_of_state_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("cache/ww");
        std::fs::create_dir_all(&state).unwrap();
        let other = tempfile::tempdir().unwrap();
        let refused = |host: &Path, ro: bool| {
            let g = DirGrant::new(host.to_path_buf(), "/x", ro).unwrap();
            refuse_state(&[g], std::slice::from_ref(&state))
        };
        assert!(matches!(
            refused(root.path(), false),
            Err(DirGrantError::HoldsState { .. })
        ));
        assert!(refused(&state.join("..").join("ww"), false).is_err());
        assert!(refused(&state, false).is_err());
        assert!(
            refused(root.path(), true).is_ok(),
            "read-only cannot change it"
        );
        assert!(refused(other.path(), false).is_ok());
        // A state directory not made yet is compared by where it will be.
        let later = root.path().join("not/yet");
        let g = DirGrant::new(root.path().to_path_buf(), "/x", false).unwrap();
        assert!(refuse_state(&[g], &[later]).is_err());
    }

    #[test]
    fn relative_host_maps_to_its_absolute_path() {
        let g = grant("data").unwrap();
        assert!(
            g.guest().starts_with('/') && g.guest().ends_with("/data"),
            "{}",
            g.guest()
        );
    }

    #[test]
    fn rejects_bad_values() {
        assert!(matches!(grant(""), Err(DirGrantError::EmptyHost { .. })));
        assert!(matches!(
            grant("::/x"),
            Err(DirGrantError::EmptyHost { .. })
        ));
        assert!(matches!(
            grant("/a::data"),
            Err(DirGrantError::BadGuestPath { .. })
        ));
        assert!(matches!(
            grant("/a::/x/../y"),
            Err(DirGrantError::BadGuestPath { .. })
        ));
        assert!(matches!(
            grant("/a::"),
            Err(DirGrantError::BadGuestPath { .. })
        ));
    }

    #[test]
    fn image_root_comes_first_read_only() {
        let (d, img) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let g = DirGrant::new(d.path().to_path_buf(), "/data", false).unwrap();
        let fs = Filesystem::new(Some(img.path()), &[g]).unwrap();
        let guests: Vec<_> = fs
            .preopens()
            .iter()
            .map(|p| (p.guest(), p.read_only()))
            .collect();
        assert_eq!(guests, [("/", true), ("/data", false)]);
    }

    #[test]
    fn a_grant_at_root_replaces_the_image() {
        let d = tempfile::tempdir().unwrap();
        let g = DirGrant::new(d.path().to_path_buf(), "/", false).unwrap();
        let fs = Filesystem::new(Some(Path::new("/nonexistent-image")), &[g]).unwrap();
        assert_eq!(fs.preopens().len(), 1);
        assert_eq!(fs.preopens()[0].host(), d.path());
    }

    #[test]
    fn attenuation_keeps_held_directories_and_narrows_them() {
        let (img, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let g = DirGrant::new(data.path().to_path_buf(), "/data", false).unwrap();
        let fs = Filesystem::new(Some(img.path()), &[g]).unwrap();
        let child = fs
            .attenuate([
                ("/data", Some("/d"), true),
                ("/", None, false),
                ("/data/", None, false),
            ])
            .unwrap();
        let got: Vec<_> = child
            .iter()
            .map(|g| (g.host(), g.guest(), g.read_only()))
            .collect();
        assert_eq!(
            got,
            [
                (data.path(), "/d", true),
                (img.path(), "/", true),
                (data.path(), "/data", false)
            ]
        );
        for path in ["/elsewhere", "/data/sub", "data", "/../data"] {
            let err = fs.attenuate([(path, None, false)]).unwrap_err();
            assert!(
                matches!(err, DirGrantError::NotHeld { .. }),
                "{path}: {err}"
            );
        }
    }

    #[test]
    fn reads_only_inside_held_directories() {
        let (img, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::create_dir_all(img.path().join("usr/lib")).unwrap();
        std::fs::write(img.path().join("usr/lib/x.wasm"), b"img").unwrap();
        std::fs::write(data.path().join("x.wasm"), b"data").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", img.path().join("leak")).unwrap();
        let g = DirGrant::new(data.path().to_path_buf(), "/data", true).unwrap();
        let fs = Filesystem::new(Some(img.path()), &[g]).unwrap();
        assert_eq!(fs.read("/usr/lib/x.wasm", 100).unwrap(), b"img");
        assert_eq!(fs.read("/data/x.wasm", 100).unwrap(), b"data");
        assert_eq!(
            fs.read("/data/x.wasm", 2).unwrap_err(),
            ReadError::TooLarge(4)
        );
        assert!(matches!(fs.read("/nope", 100), Err(ReadError::NotFound(_))));
        assert!(matches!(
            fs.read("/../etc/hostname", 100),
            Err(ReadError::NotFound(_))
        ));
        assert!(
            fs.read("/leak", 100).is_err(),
            "a symlink out of the root must not be followed"
        );
        assert!(fs.read("/data", 100).is_err());
        assert!(
            fs.read("/usr", 100).is_err(),
            "a directory is not a program"
        );
        let id = |p: &str| fs.program(p, 100).unwrap().identity();
        let before = id("/data/x.wasm");
        assert_eq!(before, id("/data/x.wasm"));
        assert_ne!(before, id("/usr/lib/x.wasm"));
        std::fs::write(data.path().join("x.wasm"), b"changed").unwrap();
        assert_ne!(before, id("/data/x.wasm"), "a rewrite changes the identity");
        let none = Filesystem::new(None, &[]).unwrap();
        assert!(matches!(none.read("/x", 100), Err(ReadError::NotFound(_))));
    }

    #[test]
    fn duplicate_and_missing_directories_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let g = DirGrant::new(d.path().to_path_buf(), "/data", false).unwrap();
        let err = Filesystem::new(None, &[g.clone(), g]).unwrap_err();
        assert!(matches!(err, DirGrantError::Duplicate { .. }));
        let missing = DirGrant::new(d.path().join("nope"), "/x", true).unwrap();
        let err = Filesystem::new(None, &[missing]).unwrap_err();
        assert!(matches!(err, DirGrantError::HostPath { .. }));
    }
}
