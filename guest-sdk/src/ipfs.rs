//! IPFS through the node's daemon: read files and directories by path, add bytes.
//!
//! pid0 holds this capability; a child holds it only when its spawner passes it on with
//! [`Command::ipfs`](crate::process::Command::ipfs). Without it every function fails with
//! [`IpfsError::NotPermitted`].
//!
//! Paths are `/ipfs/<cid>[/path]` or `/ipns/<name>[/path]`. The host does not trust the
//! daemon: what [`cat`] and [`ls`] return was verified against its CID, and is cached by the
//! host, so reading an `/ipfs` path again needs no daemon.
//!
//! ```no_run
//! let path = ww::ipfs::add(b"hello\n")?; // "/ipfs/Qm…"
//! assert_eq!(ww::ipfs::cat(&path)?, b"hello\n");
//! for entry in ww::ipfs::ls("/ipfs/QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn")? {
//!     println!("{} {} {}", entry.name, entry.kind, entry.size);
//! }
//! # Ok::<(), ww::ipfs::IpfsError>(())
//! ```
//!
//! Each call blocks the cell until the host answers: at most the host's IPFS timeout per
//! block (`WW_IPFS_TIMEOUT`, default 60s) for content the daemon does not have.

use std::fmt;

use crate::bindings::ww::host::ipfs as raw;

/// The most bytes [`cat`] returns and [`add`] takes: 64 MiB.
pub const MAX_BYTES: u64 = 64 << 20;

/// The bytes of the file at `path` (at most [`MAX_BYTES`]).
pub fn cat(path: &str) -> Result<Vec<u8>, IpfsError> {
    Ok(raw::cat(path)?)
}

/// The entries of the directory at `path`, sorted by name.
pub fn ls(path: &str) -> Result<Vec<Entry>, IpfsError> {
    Ok(raw::ls(path)?.into_iter().map(Entry::from).collect())
}

/// Adds `data` (at most [`MAX_BYTES`]) to IPFS as one file, pinned on the daemon, and
/// returns its path, `/ipfs/<cid>`.
pub fn add(data: &[u8]) -> Result<String, IpfsError> {
    Ok(raw::add(data)?)
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    /// Its name within the directory.
    pub name: String,
    /// A file or a directory.
    pub kind: Kind,
    /// For a file, its size in bytes; for a directory, the total size of the files below it.
    pub size: u64,
}

impl From<raw::Entry> for Entry {
    fn from(entry: raw::Entry) -> Entry {
        Entry {
            name: entry.name,
            kind: match entry.kind {
                raw::Kind::File => Kind::File,
                raw::Kind::Directory => Kind::Directory,
            },
            size: entry.size,
        }
    }
}

/// What a directory entry is. Displayed as `file` or `directory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A file.
    File,
    /// A directory.
    Directory,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::File => "file",
            Kind::Directory => "directory",
        })
    }
}

/// Why an IPFS call failed.
///
/// Displayed as `not found: …`, `not permitted: …`, `unavailable: …` or `invalid: …`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IpfsError {
    /// The path does not lead anywhere: no such entry below its CID.
    NotFound(String),
    /// This cell does not hold the IPFS capability.
    NotPermitted(String),
    /// The daemon is unreachable, failed, or did not provide the content in time, or the
    /// host could not use its cache.
    Unavailable(String),
    /// The path is not an IPFS path, names a directory for [`cat`] or a file for [`ls`], is
    /// not UnixFS, is too large, or the daemon sent content that does not match its CID.
    Invalid(String),
}

impl fmt::Display for IpfsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpfsError::NotFound(what) => write!(f, "not found: {what}"),
            IpfsError::NotPermitted(why) => write!(f, "not permitted: {why}"),
            IpfsError::Unavailable(why) => write!(f, "unavailable: {why}"),
            IpfsError::Invalid(why) => write!(f, "invalid: {why}"),
        }
    }
}

impl std::error::Error for IpfsError {}

impl From<raw::Error> for IpfsError {
    fn from(error: raw::Error) -> IpfsError {
        match error {
            raw::Error::NotFound(what) => IpfsError::NotFound(what),
            raw::Error::NotPermitted(why) => IpfsError::NotPermitted(why),
            raw::Error::Unavailable(why) => IpfsError::Unavailable(why),
            raw::Error::Invalid(why) => IpfsError::Invalid(why),
        }
    }
}
