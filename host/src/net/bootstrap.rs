//! The image's `boot/` directory: the peers a node dials at boot, and keeps dialing.
//!
//! Each file `boot/<peer-id>` names a peer by its base58 id; its lines are the peer's
//! multiaddrs, one per line (a trailing `/p2p/<peer-id>` is allowed when it is the same
//! peer). `#` starts a comment; blank lines are skipped. An empty file means "find it
//! through routing". Anything unparsable is a warning naming the file and line, never a
//! failed boot: a bad line is skipped, a bad file name skips the file.
//!
//! Their addresses go into the node's [`NetConfig::known`](super::NetConfig::known) when it
//! starts, so that a cell dialing a boot peer by id alone finds it; [`keep_connected`]
//! dials each peer until it answers, waiting [`FIRST_RETRY`] after the
//! first failure and twice as long after each next one, up to [`MAX_RETRY`]; once
//! connected, it dials again when the peer goes away.

use std::path::Path;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use super::{NetEvent, Network};

/// The wait before the second dial of a boot peer.
pub const FIRST_RETRY: Duration = Duration::from_millis(250);

/// The longest wait between dials of a boot peer.
pub const MAX_RETRY: Duration = Duration::from_secs(30);

/// The largest `boot/` file read; a longer one is skipped with a warning.
pub const MAX_FILE: u64 = 64 * 1024;

/// A peer to dial at boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootPeer {
    /// Its id (the file's name).
    pub peer: PeerId,
    /// Its addresses (the file's lines).
    pub addrs: Vec<Multiaddr>,
}

/// The peers of `root/boot/`, and a warning for everything skipped. No `boot/` directory
/// means no peers.
pub fn read(root: &Path) -> (Vec<BootPeer>, Vec<String>) {
    let dir = root.join("boot");
    let mut peers = Vec::new();
    let mut warnings = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (peers, warnings),
        Err(e) => {
            warnings.push(format!("boot/: cannot read it: {e}; no boot peers"));
            return (peers, warnings);
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        // The image is read-only and never followed out of: a symlink is not a boot file.
        match entry.path().symlink_metadata() {
            Ok(m) if m.is_file() && m.len() <= MAX_FILE => {}
            Ok(m) if m.is_file() => {
                warnings.push(format!(
                    "boot/{name}: {} bytes is more than a boot file may have ({MAX_FILE}); skipped",
                    m.len()
                ));
                continue;
            }
            Ok(_) => {
                warnings.push(format!("boot/{name}: not a regular file; skipped"));
                continue;
            }
            Err(e) => {
                warnings.push(format!("boot/{name}: {e}; skipped"));
                continue;
            }
        }
        let text = match std::fs::read(entry.path()) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => {
                warnings.push(format!("boot/{name}: cannot read it: {e}; skipped"));
                continue;
            }
        };
        match parse(&name, &text) {
            Ok((peer, skipped)) => {
                warnings.extend(skipped);
                peers.push(peer);
            }
            Err(warning) => warnings.push(warning),
        }
    }
    (peers, warnings)
}

/// One boot file: the peer, and a warning per line skipped; or why the whole file is.
pub fn parse(name: &str, text: &str) -> Result<(BootPeer, Vec<String>), String> {
    let peer: PeerId = name.parse().map_err(|e| {
        format!("boot/{name}: the file name is not a base58 peer id ({e}); skipped")
    })?;
    let mut addrs = Vec::new();
    let mut warnings = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let number = number + 1;
        let mut addr: Multiaddr = match line.parse() {
            Ok(addr) => addr,
            Err(e) => {
                warnings.push(format!(
                    "boot/{name}:{number}: `{line}` is not a multiaddr ({e}); line skipped"
                ));
                continue;
            }
        };
        if let Some(Protocol::P2p(id)) = addr.iter().last() {
            if id != peer {
                warnings.push(format!(
                    "boot/{name}:{number}: `{line}` names another peer ({id}); line skipped"
                ));
                continue;
            }
            addr.pop();
        }
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    Ok((BootPeer { peer, addrs }, warnings))
}

/// Dials each of `peers` from now on (a task each, on the current tokio runtime): until
/// connected, with backoff, and again whenever the peer goes away.
pub fn keep_connected(network: &Network, peers: Vec<BootPeer>) {
    for boot in peers {
        if boot.peer == network.peer_id() {
            tracing::warn!(peer = %boot.peer, "boot/: this node's own id; skipped");
            continue;
        }
        tokio::spawn(dial_forever(network.clone(), boot));
    }
}

async fn dial_forever(network: Network, boot: BootPeer) {
    let peer = boot.peer;
    let mut events = network.events();
    let mut wait = FIRST_RETRY;
    loop {
        match network.dial(peer, boot.addrs.clone()).await {
            Ok(()) => {
                tracing::info!(%peer, "connected to boot peer");
                wait = FIRST_RETRY;
                // Until it goes away.
                loop {
                    match events.recv().await {
                        Ok(NetEvent::Disconnected(gone)) if gone == peer => break,
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            if !network.is_connected(&peer) {
                                break;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
                tracing::warn!(%peer, "boot peer disconnected; dialing it again");
            }
            Err(super::NetError::Stopped) => return,
            Err(e) => {
                tracing::warn!(
                    %peer,
                    retry_in_ms = wait.as_millis() as u64,
                    "boot peer unreachable: {e}"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> PeerId {
        libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id()
    }

    #[test]
    fn lines_comments_and_p2p_suffixes() {
        let peer = id();
        let other = id();
        let text = format!(
            "# the counter\n/ip4/127.0.0.1/tcp/4001\n\n/ip4/127.0.0.1/udp/4001/quic-v1 # quic\n\
             /ip4/127.0.0.1/tcp/4001/p2p/{peer}\nnot an addr\n/ip4/10.0.0.1/tcp/1/p2p/{other}\n"
        );
        let (boot, warnings) = parse(&peer.to_string(), &text).unwrap();
        assert_eq!(boot.peer, peer);
        let addrs: Vec<String> = boot.addrs.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            addrs,
            ["/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.1/udp/4001/quic-v1"]
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with(&format!("boot/{peer}:6: `not an addr`")));
        assert!(warnings[1].contains(":7:") && warnings[1].contains("another peer"));
    }

    #[test]
    fn a_bad_name_skips_the_file_and_a_directory_reads_in_order() {
        let err = parse("README", "/ip4/127.0.0.1/tcp/1").unwrap_err();
        assert!(err.starts_with("boot/README: the file name is not a base58 peer id"));

        let root = tempfile::tempdir().unwrap();
        assert_eq!(read(root.path()), (vec![], vec![]));
        let boot = root.path().join("boot");
        std::fs::create_dir(&boot).unwrap();
        let (a, b) = (id(), id());
        std::fs::write(boot.join(a.to_string()), "/ip4/127.0.0.1/tcp/1\n").unwrap();
        std::fs::write(boot.join(b.to_string()), "").unwrap();
        std::fs::write(boot.join("notes.txt"), "hi").unwrap();
        std::fs::create_dir(boot.join("dir")).unwrap();
        let (peers, warnings) = read(root.path());
        let mut ids: Vec<PeerId> = peers.iter().map(|p| p.peer).collect();
        ids.sort_by_key(|p| p.to_string());
        let mut want = vec![a, b];
        want.sort_by_key(|p| p.to_string());
        assert_eq!(ids, want);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
    }
}
