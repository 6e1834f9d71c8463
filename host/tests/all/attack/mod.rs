//! The adversarial suite: each test attacks ww the way an untrusted cell, native program or
//! client would, and asserts that the attack fails, the host is unchanged, and ww still
//! serves. One file per attack surface:
//!
//! - `swap`: symlink and rename swaps of a grant, its ancestors and the merged image;
//! - `wasi`: mutating WASI calls through read-only grants and the image root, symlinks,
//!   hard links, `..`, and a child asking for more than its parent;
//! - `exhaust`: cells against the node's budget, cell and depth bounds, and its
//!   responsiveness (FIFOs, large compiles, signals);
//! - `jail`: a native program against host files, processes, devices, sockets, mounts,
//!   ptrace, and ww's own lifetime;
//! - `budget`: host state outside the node's budget (resource handles, compiled programs)
//!   and writes to a stdout nobody reads;
//! - `bounds`: peers that would make ww wait or hold without end: an IPFS daemon that never
//!   answers, a service that writes one endless line;
//! - `flood`: Cap'n Proto clients that announce huge messages, dribble them, pipeline calls
//!   and never read the replies, or open more connections than the socket serves, against
//!   ww's resident memory and its service to an honest client;
//! - `membrane`: clients and network peers against the session membrane: revocation of all
//!   a session reached (pipelined included), floods of grafts and of calls racing SIGHUP,
//!   unknown methods, bad and aliasing pointers, `--allow-peer` and `--peer-session info`.
//!
//! A test that needs a kernel feature this machine lacks calls `support::skip` with the
//! reason and returns: it is counted as skipped, never as passed.

mod bounds;
mod budget;
mod exhaust;
mod flood;
mod frames;
mod jail;
mod membrane;
mod swap;
mod wasi;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::support::Out;

/// One entry of a host tree, as [`snapshot`] records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    kind: &'static str,
    content: String,
    mtime: SystemTime,
}

/// A file's bytes or a symlink's target, short enough for a failure message: small ones
/// as text, larger ones by length and hash.
fn content(bytes: &[u8]) -> String {
    use std::hash::{Hash as _, Hasher as _};
    if bytes.len() <= 200 {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    format!("{} bytes, hash {:016x}", bytes.len(), hasher.finish())
}

/// Every entry under `dir` (not following symlinks), by path relative to it: its kind, its
/// bytes (a file's content, a symlink's target) and its modification time.
pub(super) fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let (kind, bytes) = if meta.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                ("symlink", target.into_os_string().into_encoded_bytes())
            } else if meta.is_dir() {
                ("dir", Vec::new())
            } else {
                ("file", std::fs::read(&path).unwrap())
            };
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let (content, mtime) = (content(&bytes), meta.modified().unwrap());
            out.insert(
                rel,
                Entry {
                    kind,
                    content,
                    mtime,
                },
            );
            if kind == "dir" {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    // The directory's own time too: creating or removing an entry changes it.
    let meta = std::fs::metadata(dir).unwrap();
    out.insert(
        PathBuf::from("."),
        Entry {
            kind: "dir",
            content: String::new(),
            mtime: meta.modified().unwrap(),
        },
    );
    out
}

/// Asserts that `dir` is exactly as `before` recorded it.
#[track_caller]
pub(super) fn assert_unchanged(dir: &Path, before: &BTreeMap<PathBuf, Entry>, out: &Out) {
    let after = snapshot(dir);
    assert!(
        after == *before,
        "{} changed:\nbefore {before:#?}\nafter {after:#?}\n{out:#?}",
        dir.display()
    );
}

/// The line a testbed step printed: `ok WHAT`, `ok WHAT = …` or `error: … (WHAT)`.
#[track_caller]
pub(super) fn step<'a>(out: &'a Out, what: &str) -> &'a str {
    let ok = format!("ok {what}");
    let failed = format!("({what})");
    out.stdout
        .lines()
        .find(|l| *l == ok || l.starts_with(&format!("{ok} = ")) || l.ends_with(&failed))
        .unwrap_or_else(|| panic!("no line for step {what:?}: {out:#?}"))
}
