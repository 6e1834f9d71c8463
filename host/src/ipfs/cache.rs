//! Fetched content on disk, by CID: `<cache>/ipfs/<cid>` is a verified file or directory.
//!
//! An entry is built in a temporary directory beside it and renamed into place, so a
//! half-fetched entry is never seen; the directory is created 0700, and one that others can
//! write to (or that is not ours) is refused, since its files may be run.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use cid::Cid;

use super::IpfsError;

/// The on-disk cache of fetched IPFS content.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    /// Whether `dir` was created or checked (and how that failed), once.
    checked: Arc<OnceLock<Result<(), (&'static str, String)>>>,
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

    /// Builds the entry for `cid` with `build` (given a path to create) and moves it into
    /// place atomically. If another process stored it first, theirs is kept.
    pub fn put(
        &self,
        cid: &Cid,
        build: impl FnOnce(&Path) -> Result<(), IpfsError>,
    ) -> Result<PathBuf, IpfsError> {
        self.check()?;
        let tmp = tempfile::Builder::new()
            .prefix(".fetch-")
            .tempdir_in(&self.dir)
            .map_err(|source| IpfsError::Io {
                action: "create a directory in",
                path: self.dir.clone(),
                source,
            })?;
        let staged = tmp.path().join("entry");
        build(&staged)?;
        let entry = self.entry(cid);
        if let Err(source) = fs::rename(&staged, &entry)
            && self.get(cid).is_none()
        {
            return Err(IpfsError::Io {
                action: "store",
                path: entry,
                source,
            });
        }
        Ok(entry)
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
