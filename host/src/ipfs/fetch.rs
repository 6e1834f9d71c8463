//! Rebuilding a UnixFS file or directory from verified blocks.
//!
//! Every block is fetched raw (`block/get`), checked against its CID, then decoded; only
//! then is anything written. Bounds: [`MAX_BYTES`] fetched, [`MAX_BLOCKS`] blocks and
//! [`MAX_DEPTH`] levels of links per fetch.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cid::Cid;

use super::client::{CallError, Client};
use super::unixfs::{self, BlockError, Link, Node};
use super::{IpfsError, Progress};

/// At most this many bytes of blocks per fetch (1 GiB).
pub const MAX_BYTES: u64 = 1 << 30;
/// At most this many blocks per fetch.
pub const MAX_BLOCKS: u64 = 100_000;
/// At most this deep a tree of links (directories and file chunks).
pub const MAX_DEPTH: usize = 64;

/// One fetch of one IPFS path.
pub struct Fetch<'a> {
    client: &'a Client,
    /// The path being fetched, for messages.
    path: String,
    bytes: u64,
    blocks: u64,
    progress: &'a Progress,
}

impl<'a> Fetch<'a> {
    /// A fetch of `path` (named in errors) through `client`.
    pub fn new(client: &'a Client, path: String, progress: &'a Progress) -> Fetch<'a> {
        Fetch {
            client,
            path,
            bytes: 0,
            blocks: 0,
            progress,
        }
    }

    /// Writes the file or directory `cid` names at `dest` (which must not exist).
    pub fn write(&mut self, cid: &Cid, dest: &Path) -> Result<(), IpfsError> {
        self.entry(cid, dest, 0)
    }

    fn entry(&mut self, cid: &Cid, dest: &Path, depth: usize) -> Result<(), IpfsError> {
        self.depth(depth)?;
        match self.block(cid)? {
            Node::Directory(links) => {
                fs::create_dir(dest).map_err(self.io("create", dest))?;
                let mut seen = HashSet::new();
                for Link { cid, name } in links {
                    if !safe_name(&name) || !seen.insert(name.clone()) {
                        return Err(IpfsError::UnexpectedNode {
                            path: self.path.clone(),
                            what: format!(
                                "a directory entry named {name:?} (empty, unsafe or repeated)"
                            ),
                        });
                    }
                    self.entry(&cid, &dest.join(&name), depth + 1)?;
                }
                fs::set_permissions(dest, fs::Permissions::from_mode(0o755))
                    .map_err(self.io("write", dest))?;
            }
            Node::File {
                data,
                children,
                mode,
                ..
            } => {
                let mut file = fs::File::create(dest).map_err(self.io("create", dest))?;
                let mut head = Vec::new();
                self.file(&data, &children, &mut file, &mut head, depth, dest)?;
                file.flush().map_err(self.io("write", dest))?;
                let executable = head.starts_with(b"\x7fELF") || head.starts_with(b"#!");
                let mode = match mode {
                    Some(mode) => mode & 0o755,
                    None if executable => 0o755,
                    None => 0o644,
                };
                fs::set_permissions(dest, fs::Permissions::from_mode(mode))
                    .map_err(self.io("write", dest))?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn file(
        &mut self,
        data: &[u8],
        children: &[Link],
        out: &mut fs::File,
        head: &mut Vec<u8>,
        depth: usize,
        dest: &Path,
    ) -> Result<(), IpfsError> {
        if head.len() < 4 {
            head.extend(data.iter().take(4 - head.len()));
        }
        out.write_all(data).map_err(self.io("write", dest))?;
        for child in children {
            self.depth(depth + 1)?;
            match self.block(&child.cid)? {
                Node::File { data, children, .. } => {
                    self.file(&data, &children, out, head, depth + 1, dest)?
                }
                Node::Directory(_) => {
                    return Err(IpfsError::UnexpectedNode {
                        path: self.path.clone(),
                        what: format!("a directory ({}) among a file's chunks", child.cid),
                    });
                }
            }
        }
        Ok(())
    }

    /// Fetches, verifies and decodes one block.
    fn block(&mut self, cid: &Cid) -> Result<Node, IpfsError> {
        self.blocks += 1;
        if self.blocks > MAX_BLOCKS {
            return Err(self.too_large(format!("{MAX_BLOCKS} blocks")));
        }
        let bytes = self
            .client
            .block_get(&cid.to_string())
            .map_err(|e| call_error(self.client, &self.path, &cid.to_string(), e))?;
        self.bytes += bytes.len() as u64;
        self.progress.advance(bytes.len() as u64);
        if self.bytes > MAX_BYTES {
            return Err(self.too_large("1 GiB".to_owned()));
        }
        let checked = unixfs::verify(cid, &bytes).and_then(|()| unixfs::decode(cid, &bytes));
        checked.map_err(|e| match e {
            BlockError::Mismatch => IpfsError::Mismatch {
                path: self.path.clone(),
                cid: cid.to_string(),
                endpoint: self.client.endpoint().multiaddr.clone(),
            },
            e @ (BlockError::UnsupportedHash(_) | BlockError::Malformed(_)) => {
                IpfsError::UnexpectedNode {
                    path: self.path.clone(),
                    what: format!("{cid}: {e}"),
                }
            }
            BlockError::Unexpected(what) => IpfsError::UnexpectedNode {
                path: self.path.clone(),
                what: format!("{cid} is {what}"),
            },
        })
    }

    fn depth(&self, depth: usize) -> Result<(), IpfsError> {
        if depth > MAX_DEPTH {
            return Err(self.too_large(format!("{MAX_DEPTH} levels of links")));
        }
        Ok(())
    }

    fn too_large(&self, limit: String) -> IpfsError {
        IpfsError::TooLarge {
            path: self.path.clone(),
            limit,
        }
    }

    fn io(
        &self,
        action: &'static str,
        path: &Path,
    ) -> impl FnOnce(std::io::Error) -> IpfsError + use<> {
        let path = path.to_path_buf();
        move |source| IpfsError::Io {
            action,
            path,
            source,
        }
    }
}

/// The error for a failed call while fetching `path`, asking for `what`.
pub fn call_error(client: &Client, path: &str, what: &str, e: CallError) -> IpfsError {
    let endpoint = client.endpoint().multiaddr.clone();
    match e {
        CallError::Unreachable(detail) => IpfsError::Unreachable {
            path: path.to_owned(),
            endpoint,
            detail,
        },
        e => IpfsError::Missing {
            path: path.to_owned(),
            endpoint,
            what: what.to_owned(),
            detail: e.to_string(),
        },
    }
}

/// Whether a directory entry's name is safe to create on the host: one non-empty
/// component, not `.` or `..`, without `/` or NUL.
fn safe_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

#[cfg(test)]
mod tests {
    use super::safe_name;

    #[test]
    fn entry_names_stay_in_their_directory() {
        assert!(safe_name("main.wasm"));
        assert!(safe_name("..."));
        for bad in ["", ".", "..", "a/b", "/etc", "a\0b"] {
            assert!(!safe_name(bad), "{bad:?}");
        }
    }
}
