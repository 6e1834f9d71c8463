//! `--ipfs`, and turning `/ipfs` and `/ipns` IMAGE and `--layer` paths into local ones (in
//! ww's cache) before the image is loaded.

use std::path::{Path, PathBuf};

use miette::Report;
use ww::ipfs::client::DEFAULT_TIMEOUT;
use ww::ipfs::{Endpoint, Ipfs, IpfsError, IpfsPath, Pin};

/// The IPFS daemon to talk to.
#[derive(Debug, Clone, clap::Args)]
pub struct IpfsArgs {
    /// The IPFS daemon's HTTP RPC endpoint, a multiaddr (default
    /// /dns4/localhost/tcp/5001/http). WW_IPFS overrides it.
    #[arg(long = "ipfs", value_name = "MULTIADDR")]
    pub ipfs: Option<String>,
}

impl IpfsArgs {
    /// A client of the chosen daemon, with ww's IPFS cache (capped by `WW_IPFS_CACHE_MAX`).
    pub fn connect(&self) -> Result<Ipfs, Report> {
        let (endpoint, timeout) = self.endpoint()?;
        let max = super::cache::ipfs_max()?;
        Ok(Ipfs::new(endpoint, timeout, &cache_dir()?)?.with_cache_max(max))
    }

    /// The same, touching nothing until used (the cache is created and checked then): for
    /// pid0's IPFS capability, which most runs never use.
    pub fn deferred(&self) -> Result<Ipfs, Report> {
        let (endpoint, timeout) = self.endpoint()?;
        let max = super::cache::ipfs_max()?;
        Ok(Ipfs::deferred(endpoint, timeout, &cache_dir()?).with_cache_max(max))
    }

    /// The endpoint (`--ipfs`, `WW_IPFS`) and the timeout per answer (`WW_IPFS_TIMEOUT`).
    fn endpoint(&self) -> Result<(Endpoint, std::time::Duration), Report> {
        let env = std::env::var("WW_IPFS").ok();
        let endpoint = Endpoint::choose(self.ipfs.as_deref(), env.as_deref())?;
        let timeout = match std::env::var("WW_IPFS_TIMEOUT") {
            Ok(value) => ww::units::parse_duration(&value).map_err(|e| {
                miette::miette!(
                    code = "ww::ipfs::timeout",
                    help = "write a duration such as 500ms, 10s or 2m",
                    "bad WW_IPFS_TIMEOUT `{value}`: {e}"
                )
            })?,
            Err(_) => DEFAULT_TIMEOUT,
        };
        Ok((endpoint, timeout))
    }

    /// Replaces each `/ipfs/…` or `/ipns/…` in `image` and `layers` by the local path of its
    /// fetched, verified and cached content. Other paths are left alone (they are local).
    /// The pins keep that content from eviction (by any `ww`) while the run holds them.
    pub fn localize(
        &self,
        image: &mut PathBuf,
        layers: &mut [PathBuf],
    ) -> Result<Vec<Pin>, Report> {
        let mut ipfs = None;
        let mut pins = Vec::new();
        let only_layer = layers.is_empty();
        for (i, path) in std::iter::once(&mut *image)
            .chain(layers.iter_mut())
            .enumerate()
        {
            let Some(parsed) = IpfsPath::from_path(path) else {
                continue;
            };
            if ipfs.is_none() {
                ipfs = Some(self.connect()?);
            }
            let Some(client) = ipfs.as_ref() else {
                continue;
            };
            let (local, pin) = client.fetch_pinned(&parsed)?;
            pins.push(pin);
            tracing::debug!(from = %parsed, to = %local.display(), "IPFS path fetched");
            if i == 0 && only_layer && local.is_dir() && !runnable(&local) {
                return Err(IpfsError::NoExecutable {
                    path: parsed.to_string(),
                }
                .into());
            }
            *path = local;
        }
        Ok(pins)
    }
}

/// Whether a directory image has something to run: bin/main.wasm, or a bin/ for a native
/// program (whose choice is the native module's).
fn runnable(dir: &Path) -> bool {
    dir.join("bin/main.wasm").is_file() || dir.join("bin").is_dir()
}

/// `ipfs/` in ww's state directory (`$WW_CACHE_DIR`, else under XDG or ~/.cache, as for
/// compiled programs).
pub(super) fn cache_dir() -> Result<PathBuf, super::NoStateDir> {
    Ok(super::state_dir()?.join("ipfs"))
}
