//! `ww:host/ipfs`: `cat`, `ls` and `add` through the node's IPFS daemon.
//!
//! The capability is an [`Ipfs`] the cell was given (pid0 gets the node's; a child gets its
//! spawner's only when asked for); a cell without one gets `not-permitted`. `cat` and `ls`
//! go through [`Ipfs::fetch`], so what a cell reads was verified against its CID and is
//! cached. The IPFS client blocks (HTTP, waits up to `WW_IPFS_TIMEOUT` per answer, an `add`
//! at most that plus a second per MiB in all): each call runs on tokio's blocking pool, and
//! the cell awaits it, so the executor thread never blocks and a cell waiting on IPFS still
//! meets its deadline or can be killed; the blocking thread itself ends by that deadline.

use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use crate::bindings::ww::host::ipfs as wit;
use crate::ipfs::{Ipfs, IpfsError, IpfsPath};

/// The most bytes `cat` returns and `add` takes (the WIT documents it).
pub const MAX_BYTES: u64 = 64 << 20;

/// What the ipfs interface sees of a cell's store.
pub struct IpfsView<'a> {
    /// The node's IPFS, when the cell holds it.
    pub ipfs: Option<&'a Arc<Ipfs>>,
}

struct IpfsData;

impl HasData for IpfsData {
    type Data<'a> = IpfsView<'a>;
}

/// Adds `ww:host/ipfs` to `linker`, served from the view `get` makes of the store.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> IpfsView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, IpfsData>(linker, get)
}

impl IpfsView<'_> {
    /// Runs `call` with the cell's IPFS on the blocking pool.
    async fn blocking<R: Send + 'static>(
        &self,
        call: impl FnOnce(&Ipfs) -> Result<R, wit::Error> + Send + 'static,
    ) -> Result<R, wit::Error> {
        let ipfs = self.ipfs.cloned().ok_or_else(|| {
            wit::Error::NotPermitted("this cell holds no IPFS capability".to_owned())
        })?;
        tokio::task::spawn_blocking(move || call(&ipfs))
            .await
            .unwrap_or_else(|e| {
                Err(wit::Error::Unavailable(format!(
                    "the IPFS call failed: {e}"
                )))
            })
    }
}

impl wit::Host for IpfsView<'_> {
    async fn cat(&mut self, path: String) -> Result<Vec<u8>, wit::Error> {
        let parsed = parse(&path)?;
        self.blocking(move |ipfs| {
            // Pinned while it is read: no other `ww` evicts it meanwhile.
            let (local, _pin) = ipfs.fetch_pinned(&parsed).map_err(error_of)?;
            let meta = fs::metadata(&local).map_err(|e| io_error(&path, &e))?;
            if meta.is_dir() {
                return Err(wit::Error::Invalid(format!(
                    "{path} is a directory, not a file (ls lists it)"
                )));
            }
            if meta.len() > MAX_BYTES {
                return Err(too_large(&path, meta.len()));
            }
            fs::read(&local).map_err(|e| io_error(&path, &e))
        })
        .await
    }

    async fn ls(&mut self, path: String) -> Result<Vec<wit::Entry>, wit::Error> {
        let parsed = parse(&path)?;
        self.blocking(move |ipfs| {
            let (local, _pin) = ipfs.fetch_pinned(&parsed).map_err(error_of)?;
            if !local.is_dir() {
                return Err(wit::Error::Invalid(format!(
                    "{path} is a file, not a directory (cat prints it)"
                )));
            }
            let mut entries = Vec::new();
            for entry in fs::read_dir(&local).map_err(|e| io_error(&path, &e))? {
                let entry = entry.map_err(|e| io_error(&path, &e))?;
                let meta = entry.metadata().map_err(|e| io_error(&path, &e))?;
                let (kind, size) = if meta.is_dir() {
                    let size = tree_size(&entry.path()).map_err(|e| io_error(&path, &e))?;
                    (wit::Kind::Directory, size)
                } else {
                    (wit::Kind::File, meta.len())
                };
                entries.push(wit::Entry {
                    name: entry.file_name().to_string_lossy().into_owned(),
                    kind,
                    size,
                });
            }
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(entries)
        })
        .await
    }

    async fn add(&mut self, data: Vec<u8>) -> Result<String, wit::Error> {
        if data.len() as u64 > MAX_BYTES {
            return Err(too_large("the data to add", data.len() as u64));
        }
        self.blocking(move |ipfs| {
            // A private file (0600, removed when dropped) for the client to upload.
            let mut file = tempfile::Builder::new()
                .prefix("ww-ipfs-add-")
                .tempfile()
                .map_err(|e| io_error("a temporary file", &e))?;
            file.write_all(&data)
                .and_then(|()| file.flush())
                .map_err(|e| io_error("a temporary file", &e))?;
            // Errors name the daemon, never the host's temporary file.
            let cid = ipfs.add(file.path()).map_err(|e| match e {
                IpfsError::Add { detail, .. } => {
                    wit::Error::Unavailable(format!("failed to add to IPFS: {detail}"))
                }
                IpfsError::AddTimeout {
                    endpoint, waited, ..
                } => wit::Error::Unavailable(format!(
                    "failed to add to IPFS: the daemon at {endpoint} did not answer within {}s",
                    waited.as_secs_f64()
                )),
                IpfsError::Io { source, .. } => io_error("a temporary file", &source),
                e => error_of(e),
            })?;
            Ok(format!("/ipfs/{cid}"))
        })
        .await
    }
}

/// `path` as an IPFS path, or why it is not one.
fn parse(path: &str) -> Result<IpfsPath, wit::Error> {
    IpfsPath::parse(path).ok_or_else(|| {
        wit::Error::Invalid(format!(
            "`{path}` is not an IPFS path (/ipfs/<cid>[/path] or /ipns/<name>[/path])"
        ))
    })
}

/// The total size of the files below `dir` (cached content: no symlinks).
fn tree_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0u64;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total = total.saturating_add(if meta.is_dir() {
            tree_size(&entry.path())?
        } else {
            meta.len()
        });
    }
    Ok(total)
}

fn too_large(what: &str, bytes: u64) -> wit::Error {
    wit::Error::Invalid(format!(
        "{what} is too large: {bytes} bytes, more than the {} MiB cap",
        MAX_BYTES >> 20
    ))
}

fn io_error(what: &str, e: &std::io::Error) -> wit::Error {
    wit::Error::Unavailable(format!("cannot read {what} in the host's IPFS cache: {e}"))
}

/// The WIT error for a failure of [`Ipfs`], its message the host's own.
fn error_of(e: IpfsError) -> wit::Error {
    let message = e.to_string();
    match e {
        IpfsError::Resolve { .. } => wit::Error::NotFound(message),
        IpfsError::Mismatch { .. }
        | IpfsError::UnexpectedNode { .. }
        | IpfsError::NoExecutable { .. }
        | IpfsError::TooLarge { .. } => wit::Error::Invalid(message),
        IpfsError::BadEndpoint { .. }
        | IpfsError::Unreachable { .. }
        | IpfsError::Missing { .. }
        | IpfsError::Io { .. }
        | IpfsError::Add { .. }
        | IpfsError::AddTimeout { .. } => wit::Error::Unavailable(message),
    }
}
