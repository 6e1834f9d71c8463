//! The filesystem capability: which host directories a cell holds, where it sees them, and
//! whether it may write there.
//!
//! Every directory a cell can reach is a preopen built here; there is no other path from a
//! cell to the host filesystem. Read-only is enforced by wasmtime-wasi's permission checks on
//! the preopen, not by anything the guest does.

use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

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

    /// Parses `HOST[::GUEST][:ro]`. Without `::GUEST` the guest path is the host path made
    /// absolute.
    fn from_str(value: &str) -> Result<DirGrant, DirGrantError> {
        let (rest, read_only) = match value.strip_suffix(":ro") {
            Some(rest) => (rest, true),
            None => (value, false),
        };
        let (host, guest) = match rest.split_once("::") {
            Some((host, guest)) => (host, Some(guest)),
            None => (rest, None),
        };
        if host.is_empty() {
            return Err(DirGrantError::EmptyHost {
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

/// Everything a cell can see of the host filesystem, in preopen order.
#[derive(Debug, Clone, Default)]
pub struct Filesystem {
    preopens: Vec<DirGrant>,
}

impl Filesystem {
    /// The image root (read-only at `/`, unless a grant claims `/`) plus `grants`, each checked:
    /// the host directory exists, and no two share a guest path.
    pub fn new(
        image_root: Option<&Path>,
        grants: &[DirGrant],
    ) -> Result<Filesystem, DirGrantError> {
        let mut preopens: Vec<DirGrant> = Vec::with_capacity(grants.len() + 1);
        for grant in grants {
            if preopens.iter().any(|p| p.guest == grant.guest) {
                return Err(DirGrantError::Duplicate {
                    guest: grant.guest.clone(),
                });
            }
            match std::fs::metadata(&grant.host) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(DirGrantError::HostPath {
                        host: grant.host.clone(),
                        reason: "not a directory".into(),
                    });
                }
                Err(e) => {
                    return Err(DirGrantError::HostPath {
                        host: grant.host.clone(),
                        reason: e.to_string(),
                    });
                }
            }
            preopens.push(grant.clone());
        }
        // The root comes first, as `ww:host/cell.directories` promises.
        if let Some(i) = preopens.iter().position(|p| p.guest == "/") {
            let root = preopens.remove(i);
            preopens.insert(0, root);
        }
        let root_granted = preopens.first().is_some_and(|p| p.guest == "/");
        if let (Some(root), false) = (image_root, root_granted) {
            preopens.insert(
                0,
                DirGrant {
                    host: root.to_path_buf(),
                    guest: "/".into(),
                    read_only: true,
                },
            );
        }
        Ok(Filesystem { preopens })
    }

    /// The directories, image root first when there is one.
    pub fn preopens(&self) -> &[DirGrant] {
        &self.preopens
    }

    /// The grants for a child, chosen from this filesystem: each `(path, at, read_only)`
    /// names a directory held here by the path it is seen at, where the child sees it
    /// (`None`: the same path), and whether to narrow it to read-only. A read-only
    /// directory stays read-only; a directory not held here is refused.
    pub fn attenuate<'a>(
        &self,
        requests: impl IntoIterator<Item = (&'a str, Option<&'a str>, bool)>,
    ) -> Result<Vec<DirGrant>, DirGrantError> {
        requests
            .into_iter()
            .map(|(path, at, read_only)| {
                let normalized = normalize_guest(path);
                let held = self
                    .preopens
                    .iter()
                    .find(|p| Some(p.guest.as_str()) == normalized.as_deref())
                    .ok_or_else(|| DirGrantError::NotHeld {
                        path: path.to_owned(),
                    })?;
                DirGrant::new(
                    held.host.clone(),
                    at.unwrap_or(path),
                    held.read_only || read_only,
                )
            })
            .collect()
    }

    /// Opens the file at `guest_path` as the cell would: through the directory that holds
    /// it (cap-std), so `..` and symlinks cannot lead outside what the cell holds.
    fn open(&self, guest_path: &str) -> Result<cap_std::fs::File, ReadError> {
        let not_found = || ReadError::NotFound(guest_path.to_owned());
        let path = normalize_guest(guest_path).ok_or_else(not_found)?;
        let (dir, rel) = self
            .preopens
            .iter()
            .filter_map(|p| relative_to(&path, &p.guest).map(|rel| (p, rel)))
            .max_by_key(|(p, _)| p.guest.len())
            .ok_or_else(not_found)?;
        if rel.is_empty() {
            return Err(ReadError::Io(format!("{guest_path} is a directory")));
        }
        let io = |e: std::io::Error| io_error(guest_path, e);
        // The one ambient step: opening a directory the cell was granted.
        let root = cap_std::fs::Dir::open_ambient_dir(&dir.host, cap_std::ambient_authority())
            .map_err(io)?;
        let file = root.open(rel).map_err(io)?;
        if file.metadata().map_err(io)?.is_dir() {
            return Err(ReadError::Io(format!("{guest_path} is a directory")));
        }
        Ok(file)
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
    pub fn apply(&self, builder: &mut WasiCtxBuilder) -> Result<(), DirGrantError> {
        for dir in &self.preopens {
            let perms = if dir.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            builder
                .preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(|e| DirGrantError::HostPath {
                    host: dir.host.clone(),
                    reason: format!("{e:#}"),
                })?;
        }
        Ok(())
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
        let d = tempfile::tempdir().unwrap();
        let g = DirGrant::new(d.path().to_path_buf(), "/data", false).unwrap();
        let fs = Filesystem::new(Some(Path::new("/img")), &[g]).unwrap();
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
        let fs = Filesystem::new(Some(Path::new("/img")), &[g]).unwrap();
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
