//! Who may graft: `--allow-peer ID` and the image's `etc/allow-peers`.
//!
//! Without either, every peer that reaches a listen address may open /ww/0.1.0 streams and
//! graft (what it gets is pid0's choice, or `--peer-session`). With either, only the peers
//! named in the flags and the file together may: a stream from anyone else is dropped before
//! it reaches the membrane (`rpc::RpcServer::serve_peers`). The file has one base58 peer id
//! per line; `#` starts a comment, blank lines are skipped. It is a restriction the
//! operator asked for, so it fails closed: a line that is not a peer id, or a file that
//! cannot be read, is an error that stops the node, never a warning (an empty file allows
//! nobody).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use libp2p::PeerId;

/// Where in an image the allow-list is.
pub const FILE: &str = "etc/allow-peers";

/// The largest allow-list file read.
pub const MAX_FILE: u64 = 1 << 20;

/// Why the allow-list cannot be read.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum AllowError {
    /// `--allow-peer` is not a peer id.
    #[error("--allow-peer {id}: not a peer id: {reason}")]
    #[diagnostic(
        code(ww::net::allow_peer),
        help("a peer id is base58, as `ww keygen` prints it (12D3KooW…)")
    )]
    Flag {
        /// What was given.
        id: String,
        /// Why it is not one.
        reason: String,
    },

    /// A line of the file is not a peer id.
    #[error("{}:{line}: `{id}` is not a peer id: {reason}", path.display())]
    #[diagnostic(
        code(ww::net::allow_file),
        help(
            "etc/allow-peers lists who may graft, one base58 peer id per line (`#` starts a \
             comment); fix or remove the line: the node does not start with a list it cannot read"
        )
    )]
    Line {
        /// The file.
        path: PathBuf,
        /// Its line, from 1.
        line: usize,
        /// What the line says.
        id: String,
        /// Why it is not a peer id.
        reason: String,
    },

    /// The file cannot be read.
    #[error("cannot read {}: {reason}", path.display())]
    #[diagnostic(
        code(ww::net::allow_read),
        help("etc/allow-peers must be a readable regular file of at most 1 MiB")
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The peers allowed to graft: `None` when neither the flags nor the image restrict them.
pub fn allowed(
    flags: &[String],
    image: Option<&Path>,
) -> Result<Option<HashSet<PeerId>>, AllowError> {
    let mut allowed = HashSet::new();
    let mut restricted = false;
    for id in flags {
        restricted = true;
        let id = id.trim();
        allowed.insert(
            id.parse()
                .map_err(|e: libp2p::identity::ParseError| AllowError::Flag {
                    id: id.to_owned(),
                    reason: e.to_string(),
                })?,
        );
    }
    if let Some(root) = image {
        let path = root.join(FILE);
        if let Some(text) = read(&path)? {
            restricted = true;
            allowed.extend(parse(&path, &text)?);
        }
    }
    Ok(restricted.then_some(allowed))
}

/// The file's text, `None` when there is no such file.
fn read(path: &Path) -> Result<Option<String>, AllowError> {
    let failed = |reason: String| AllowError::Read {
        path: path.to_owned(),
        reason,
    };
    let meta = match path.symlink_metadata() {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(failed(e.to_string())),
    };
    if !meta.is_file() {
        return Err(failed("not a regular file".into()));
    }
    if meta.len() > MAX_FILE {
        return Err(failed(format!("{} bytes; at most {MAX_FILE}", meta.len())));
    }
    std::fs::read_to_string(path)
        .map(Some)
        .map_err(|e| failed(e.to_string()))
}

/// The peer ids of the file's lines.
fn parse(path: &Path, text: &str) -> Result<Vec<PeerId>, AllowError> {
    let mut peers = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let id = line.split('#').next().unwrap_or("").trim();
        if id.is_empty() {
            continue;
        }
        peers.push(
            id.parse()
                .map_err(|e: libp2p::identity::ParseError| AllowError::Line {
                    path: path.to_owned(),
                    line: i + 1,
                    id: id.to_owned(),
                    reason: e.to_string(),
                })?,
        );
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo";

    #[test]
    fn no_flag_and_no_file_restrict_nobody() {
        let dir = tempfile::tempdir().unwrap();
        assert!(allowed(&[], Some(dir.path())).unwrap().is_none());
        assert!(allowed(&[], None).unwrap().is_none());
    }

    #[test]
    fn flags_and_file_add_up_and_an_empty_file_allows_nobody() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join(FILE), "# nobody\n\n").unwrap();
        assert_eq!(
            allowed(&[], Some(dir.path())).unwrap(),
            Some(HashSet::new())
        );
        std::fs::write(
            dir.path().join(FILE),
            format!("  {ID}  # the counter node\n"),
        )
        .unwrap();
        let other = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let both = allowed(&[other.to_string()], Some(dir.path()))
            .unwrap()
            .unwrap();
        assert_eq!(both.len(), 2);
        assert!(both.contains(&other) && both.contains(&ID.parse().unwrap()));
    }

    #[test]
    fn a_bad_line_or_flag_fails_closed_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join(FILE), format!("{ID}\nnot-a-peer\n")).unwrap();
        let e = allowed(&[], Some(dir.path())).unwrap_err().to_string();
        assert!(
            e.contains("allow-peers:2: `not-a-peer` is not a peer id"),
            "{e}"
        );
        let e = allowed(&["12D3nope".into()], None).unwrap_err().to_string();
        assert!(e.starts_with("--allow-peer 12D3nope: not a peer id"), "{e}");
        std::fs::remove_file(dir.path().join(FILE)).unwrap();
        std::fs::create_dir(dir.path().join(FILE)).unwrap();
        let e = allowed(&[], Some(dir.path())).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
