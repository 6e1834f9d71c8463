//! IPFS: content-addressed images (`/ipfs/<cid>[/path]`, `/ipns/<name>[/path]`) and
//! `ww export`.
//!
//! - [`path`] tells IPFS paths from local ones (seed 000's fallback: anything that does not
//!   parse is local);
//! - [`endpoint`] reads `--ipfs` / `WW_IPFS`, a multiaddr of a Kubo HTTP RPC API;
//! - [`client`] speaks that API (`block/get`, `name/resolve`, `add`);
//! - [`unixfs`] verifies each block against its CID and decodes dag-pb and UnixFS;
//! - [`fetch`] rebuilds files and directories from verified blocks, within bounds;
//! - [`cache`] keeps them on disk by CID, so a second run needs no daemon, bounded in size;
//! - [`export`] adds a local file or directory.
//!
//! Architecture invariant: the daemon is not trusted. Every block is checked against its
//! CID before anything is decoded or written, and only verified content enters the cache.
//! This module uses nothing else in the crate.

pub mod cache;
pub mod client;
pub mod endpoint;
mod error;
pub mod export;
pub mod fetch;
pub mod path;
pub mod unixfs;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cid::Cid;

pub use cache::{Cache, Pin};
pub use client::Client;
pub use endpoint::Endpoint;
pub use error::IpfsError;
pub use path::{IpfsPath, Root};

/// A progress bar on stderr when it is a terminal; nothing otherwise.
pub struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    /// A bar (bytes) titled `what`, shown only when stderr is a terminal.
    pub fn on_terminal(what: &str) -> Progress {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return Progress::hidden();
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {msg} {bytes} ({bytes_per_sec}, {elapsed})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_message(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress(Some(bar))
    }

    /// No bar.
    pub fn hidden() -> Progress {
        Progress(None)
    }

    /// Counts `n` more bytes.
    pub fn advance(&self, n: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(n);
        }
    }

    /// The total, once known: the spinner becomes a bar.
    pub fn set_length(&self, total: u64) {
        if let Some(bar) = &self.0 {
            bar.set_length(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// Fetching and adding through one daemon, with one cache.
pub struct Ipfs {
    client: Client,
    cache: Cache,
}

impl Ipfs {
    /// IPFS through `endpoint` (waiting at most `timeout` per answer), caching in `cache_dir`.
    pub fn new(endpoint: Endpoint, timeout: Duration, cache_dir: &Path) -> Result<Ipfs, IpfsError> {
        Ok(Ipfs {
            client: Client::new(endpoint, timeout),
            cache: Cache::open(cache_dir)?,
        })
    }

    /// The same, with a cache of at most `max` bytes (default [`cache::DEFAULT_MAX`]).
    pub fn with_cache_max(self, max: u64) -> Ipfs {
        Ipfs {
            cache: self.cache.with_max(max),
            ..self
        }
    }

    /// A local path holding what `path` names: the cached entry of its CID (fetched and
    /// verified first if it is not cached), walked down its sub-path. An `/ipns` name is
    /// resolved by the daemon every time; an `/ipfs` path already cached needs no daemon.
    ///
    /// The entry may be evicted (by another `ww`) as soon as this returns: to use the path
    /// for longer than a moment, see [`Ipfs::fetch_pinned`].
    pub fn fetch(&self, path: &IpfsPath) -> Result<PathBuf, IpfsError> {
        self.fetch_pinned(path).map(|(local, _)| local)
    }

    /// Like [`Ipfs::fetch`], with a [`Pin`] that keeps the entry from eviction while it
    /// lives.
    pub fn fetch_pinned(&self, path: &IpfsPath) -> Result<(PathBuf, Pin), IpfsError> {
        let (cid, segments) = match &path.root {
            Root::Ipfs(cid) => (*cid, path.segments.clone()),
            Root::Ipns(name) => {
                let shown = path.to_string();
                let resolved = self.client.name_resolve(name).map_err(|e| {
                    fetch::call_error(&self.client, &shown, &format!("/ipns/{name}"), e)
                })?;
                match IpfsPath::parse(&resolved) {
                    Some(IpfsPath {
                        root: Root::Ipfs(cid),
                        segments,
                    }) => {
                        tracing::debug!(name = %name, to = %resolved, "resolved IPNS name");
                        (
                            cid,
                            segments.into_iter().chain(path.segments.clone()).collect(),
                        )
                    }
                    _ => {
                        return Err(IpfsError::Resolve {
                            path: shown,
                            detail: format!(
                                "the daemon resolved it to `{resolved}`, not an /ipfs path"
                            ),
                        });
                    }
                }
            }
        };
        let (root, pin) = self.root(&cid, &path.to_string())?;
        Ok((walk(&root, &cid, &segments)?, pin))
    }

    /// The cached entry for `cid`, pinned, fetching it first when missing.
    fn root(&self, cid: &Cid, shown: &str) -> Result<(PathBuf, Pin), IpfsError> {
        if let Some((entry, pin)) = self.cache.pin(cid) {
            tracing::debug!(cid = %cid, "IPFS content found in cache");
            return Ok((entry, pin));
        }
        let progress = Progress::on_terminal(&format!("fetching {shown}"));
        let (entry, pin) = self.cache.put(cid, |dest| {
            fetch::Fetch::new(&self.client, shown.to_owned(), &progress).write(cid, dest)
        })?;
        tracing::debug!(cid = %cid, entry = %entry.display(), "fetched and verified IPFS content");
        Ok((entry, pin))
    }

    /// Like [`Ipfs::new`], but the cache directory is created and checked only when first
    /// used (a failure then surfaces from [`Ipfs::fetch`]): for a client that may never be
    /// used, such as the one a cell holds.
    pub fn deferred(endpoint: Endpoint, timeout: Duration, cache_dir: &Path) -> Ipfs {
        Ipfs {
            client: Client::new(endpoint, timeout),
            cache: Cache::deferred(cache_dir),
        }
    }

    /// Adds a local file or directory, returning its root CID.
    pub fn add(&self, path: &Path) -> Result<Cid, IpfsError> {
        let progress = Progress::on_terminal(&format!("adding {}", path.display()));
        export::add(&self.client, path, &progress)
    }
}

/// Walks `segments` down from a cached entry (verified content ww wrote, with no symlinks).
fn walk(root: &Path, cid: &Cid, segments: &[String]) -> Result<PathBuf, IpfsError> {
    let mut here = root.to_path_buf();
    let mut shown = format!("/ipfs/{cid}");
    for segment in segments {
        if !here.is_dir() {
            return Err(IpfsError::Resolve {
                path: format!("/ipfs/{cid}/{}", segments.join("/")),
                detail: format!("{shown} is a file, not a directory"),
            });
        }
        here.push(segment);
        shown = format!("{shown}/{segment}");
        if std::fs::symlink_metadata(&here).is_err() {
            return Err(IpfsError::Resolve {
                path: format!("/ipfs/{cid}/{}", segments.join("/")),
                detail: format!("there is no {shown}"),
            });
        }
    }
    Ok(here)
}
