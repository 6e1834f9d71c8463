//! Adding a local file or directory to IPFS (`/api/v0/add`, multipart), as `ipfs add -r`
//! does with its defaults (CIDv0, 256 KiB chunks).

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use cid::Cid;

use super::client::{CallError, Client};
use super::{IpfsError, Progress};

/// One part of the multipart body: bytes held in memory, or a file streamed from disk.
enum Piece {
    Bytes(Vec<u8>),
    File(PathBuf),
}

/// The multipart body, read piece by piece.
struct Body<'a> {
    pieces: std::vec::IntoIter<Piece>,
    current: Option<Box<dyn Read>>,
    progress: &'a Progress,
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(reader) = self.current.as_mut() {
                let n = reader.read(buf)?;
                if n > 0 {
                    self.progress.advance(n as u64);
                    return Ok(n);
                }
                self.current = None;
            }
            match self.pieces.next() {
                None => return Ok(0),
                Some(Piece::Bytes(b)) => self.current = Some(Box::new(io::Cursor::new(b))),
                Some(Piece::File(p)) => self.current = Some(Box::new(fs::File::open(p)?)),
            }
        }
    }
}

/// The parts for `path` (named `name` in IPFS) and their total size.
fn parts(path: &Path, name: &str, boundary: &str) -> Result<(Vec<Piece>, u64), IpfsError> {
    let mut pieces = Vec::new();
    let mut total = 0;
    collect(path, name, boundary, &mut pieces, &mut total)?;
    let end = format!("--{boundary}--\r\n").into_bytes();
    total += end.len() as u64;
    pieces.push(Piece::Bytes(end));
    Ok((pieces, total))
}

fn collect(
    path: &Path,
    name: &str,
    boundary: &str,
    pieces: &mut Vec<Piece>,
    total: &mut u64,
) -> Result<(), IpfsError> {
    let io = |source| IpfsError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(io)?;
    let header = |kind: &str| {
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\n\
             Content-Type: {kind}\r\n\r\n",
            encode(name)
        )
        .into_bytes()
    };
    if meta.is_dir() {
        let head = header("application/x-directory");
        *total += head.len() as u64 + 2;
        pieces.push(Piece::Bytes(head));
        pieces.push(Piece::Bytes(b"\r\n".to_vec()));
        let mut entries = fs::read_dir(path)
            .map_err(io)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let child = entry.path();
            let ty = entry.file_type().map_err(io)?;
            let Some(child_name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(path = %child.display(), "skipping a name that is not UTF-8");
                continue;
            };
            if ty.is_dir() || ty.is_file() {
                collect(
                    &child,
                    &format!("{name}/{child_name}"),
                    boundary,
                    pieces,
                    total,
                )?;
            } else {
                tracing::warn!(path = %child.display(), "skipping a symlink or special file");
            }
        }
    } else if meta.is_file() {
        let head = header("application/octet-stream");
        *total += head.len() as u64 + meta.len() + 2;
        pieces.push(Piece::Bytes(head));
        pieces.push(Piece::File(path.to_path_buf()));
        pieces.push(Piece::Bytes(b"\r\n".to_vec()));
    } else {
        return Err(IpfsError::Add {
            path: path.to_path_buf(),
            detail: "not a file or a directory".into(),
        });
    }
    Ok(())
}

/// Percent-encodes a part's file name as `encodeURIComponent` does (the daemon decodes it).
fn encode(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Adds `path` through `client`, returning the root's CID.
pub fn add(client: &Client, path: &Path, progress: &Progress) -> Result<Cid, IpfsError> {
    let add_error = |detail: String| IpfsError::Add {
        path: path.to_path_buf(),
        detail,
    };
    let canonical = fs::canonicalize(path).map_err(|source| IpfsError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let name = canonical
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("root")
        .to_owned();
    let boundary = format!("ww-export-{:016x}", rand_u64());
    let (pieces, total) = parts(&canonical, &name, &boundary)?;
    progress.set_length(total);
    let mut body = Body {
        pieces: pieces.into_iter(),
        current: None,
        progress,
    };
    let query = [("cid-version", "0"), ("pin", "true"), ("progress", "false")];
    let answer = client
        .add(&query, &boundary, &mut body, total)
        .map_err(|e| match e {
            CallError::Timeout(waited) => IpfsError::AddTimeout {
                path: path.to_path_buf(),
                endpoint: client.endpoint().multiaddr.clone(),
                waited,
            },
            e => add_error(format!("{} ({e})", client.endpoint().multiaddr)),
        })?;
    #[derive(serde::Deserialize)]
    struct Added {
        #[serde(rename = "Name")]
        name: String,
        #[serde(rename = "Hash")]
        hash: String,
    }
    let added: Vec<Added> = answer
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .map(serde_json::from_slice::<Added>)
        .collect::<Result<_, _>>()
        .map_err(|e| add_error(format!("unexpected answer from the daemon: {e}")))?;
    let root = added
        .iter()
        .rev()
        .find(|a| a.name == name)
        .or(added.last())
        .ok_or_else(|| add_error("the daemon added nothing".into()))?;
    Cid::try_from(root.hash.as_str())
        .map_err(|e| add_error(format!("the daemon answered a bad CID {}: {e}", root.hash)))
}

/// A boundary that does not occur in the content (in practice): random enough.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_names_as_encode_uri_component() {
        assert_eq!(encode("hello/bin/main.wasm"), "hello%2Fbin%2Fmain.wasm");
        assert_eq!(encode("a b\"c"), "a%20b%22c");
    }

    #[test]
    fn builds_one_part_per_entry_in_order() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("bin")).unwrap();
        fs::write(dir.path().join("bin/main.wasm"), b"\0asm").unwrap();
        fs::write(dir.path().join("a.txt"), b"hi").unwrap();
        let (pieces, total) = parts(dir.path(), "img", "B").unwrap();
        let mut body = Body {
            pieces: pieces.into_iter(),
            current: None,
            progress: &Progress::hidden(),
        };
        let mut text = String::new();
        body.read_to_string(&mut text).unwrap();
        assert_eq!(text.len() as u64, total);
        let names: Vec<&str> = text
            .split("filename=\"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap())
            .collect();
        assert_eq!(
            names,
            ["img", "img%2Fa.txt", "img%2Fbin", "img%2Fbin%2Fmain.wasm"]
        );
        assert!(text.ends_with("--B--\r\n"));
    }
}
