//! A real IPFS node for the tests: js-ipfs 0.66.1 (the Kubo HTTP RPC API) from
//! `tests/ipfs-node/` (package.json + the committed package-lock.json), on 127.0.0.1, offline.
//!
//! `npm install` of the committed lock when `node_modules/` is missing (a few minutes,
//! once); a fresh repository under `target/ipfs-node/` made with `jsipfs init --profile
//! test` (no bootstrap peers, no mDNS), whose config is then rewritten so every address is
//! 127.0.0.1 with an OS-chosen port; then `jsipfs daemon --offline`. The API's multiaddr
//! is read from the repository's `api` file once the daemon says "Daemon is ready".
//! Dropping the [`IpfsNode`] stops the daemon.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use crate::util;

/// A running test node.
pub struct IpfsNode {
    daemon: Child,
    /// The HTTP RPC API, as a multiaddr (`/ip4/127.0.0.1/tcp/PORT/http`).
    pub api: String,
}

impl Drop for IpfsNode {
    fn drop(&mut self) {
        // SIGTERM lets js-ipfs close its repository; kill it if it lingers.
        let _ = Command::new("kill")
            .arg(self.daemon.id().to_string())
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.daemon.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// Installs (when needed) and starts the node; `Ok(None)`, after a warning, when node or
/// npm are missing.
pub fn start(root: &Path) -> Result<Option<IpfsNode>> {
    if !util::available("node", "--version") || !util::available("npm", "--version") {
        println!(
            "warning: `node` and `npm` are needed for the IPFS test node (Debian: apt-get \
             install nodejs npm): the IPFS tests will be skipped"
        );
        return Ok(None);
    }
    let dir = root.join("tests").join("ipfs-node");
    let jsipfs = dir.join("node_modules").join(".bin").join("jsipfs");
    if !jsipfs.exists() {
        println!("ipfs node: installing js-ipfs from package-lock.json (a few minutes, once)");
        // `npm install`, not `npm ci`: one optional dependency deep in js-ipfs's tree is a
        // GitHub tarball, which cannot be fetched here and so is absent from the lock file;
        // `npm ci` refuses such a lock, while `npm install` installs exactly the locked
        // versions and skips the optional one. `--no-save` leaves the lock file as it is.
        util::run(Command::new("npm").current_dir(&dir).args([
            "install",
            "--no-audit",
            "--no-fund",
            "--no-save",
        ]))
        .context("npm install in tests/ipfs-node failed")?;
    }
    let repo = root.join("target").join("ipfs-node");
    if repo.exists() {
        std::fs::remove_dir_all(&repo)
            .with_context(|| format!("cannot remove {}", repo.display()))?;
    }
    util::run(
        Command::new("node")
            .arg(&jsipfs)
            .args(["init", "--profile", "test"])
            .env("IPFS_PATH", &repo)
            .stdout(Stdio::null()),
    )
    .context("jsipfs init failed")?;
    local_addresses(&repo.join("config"))?;
    let mut daemon = Command::new("node")
        .arg(&jsipfs)
        .args(["daemon", "--offline"])
        .env("IPFS_PATH", &repo)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start jsipfs daemon")?;
    let stdout = daemon.stdout.take().context("no daemon stdout")?;
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut ready = Some(ready_tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("Daemon is ready")
                && let Some(tx) = ready.take()
            {
                let _ = tx.send(());
            }
        }
    });
    let mut node = IpfsNode {
        daemon,
        api: String::new(),
    };
    if ready_rx.recv_timeout(Duration::from_secs(120)).is_err() {
        bail!("the IPFS daemon did not become ready within 2 minutes");
    }
    let api = std::fs::read_to_string(repo.join("api"))
        .context("the daemon wrote no `api` file")?
        .trim()
        .to_owned();
    println!("ipfs node: js-ipfs daemon ready, API on {api}");
    node.api = api;
    Ok(Some(node))
}

/// Puts every listening address of the node's config on 127.0.0.1 with an OS-chosen port.
fn local_addresses(config: &PathBuf) -> Result<()> {
    let text = std::fs::read_to_string(config).context("no repository config")?;
    let mut json: serde_json::Value = serde_json::from_str(&text).context("bad config JSON")?;
    let local = serde_json::Value::String("/ip4/127.0.0.1/tcp/0".into());
    let addresses = json
        .get_mut("Addresses")
        .and_then(|a| a.as_object_mut())
        .context("config has no Addresses")?;
    for key in ["API", "Gateway", "RPC"] {
        addresses.insert(key.into(), local.clone());
    }
    addresses.insert("Swarm".into(), serde_json::Value::Array(vec![local]));
    std::fs::write(config, serde_json::to_vec_pretty(&json)?).context("cannot write config")?;
    Ok(())
}
