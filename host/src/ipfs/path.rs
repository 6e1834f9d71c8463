//! Telling IPFS paths from local ones: `/ipfs/<cid>[/path]` and `/ipns/<name>[/path]`.
//!
//! Seed 000's fallback rule: a path that parses as an IPFS path is fetched from IPFS; any
//! other (including `/ipfs/` followed by something that is not a CID) is a local path.

use std::fmt;
use std::path::Path;

use cid::Cid;

/// An IPFS path: a root and the names walked below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpfsPath {
    /// What the path starts from.
    pub root: Root,
    /// The directory entries to walk from the root, in order (never empty, `.` or `..`).
    pub segments: Vec<String>,
}

/// Where an IPFS path starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// Immutable content: `/ipfs/<cid>`.
    Ipfs(Cid),
    /// A mutable name (a key's peer id or a DNSLink domain) the daemon resolves: `/ipns/<name>`.
    Ipns(String),
}

impl IpfsPath {
    /// Parses `path` as an IPFS path; `None` when it is not one (then it is a local path).
    pub fn parse(path: &str) -> Option<IpfsPath> {
        let rest = path.strip_prefix('/')?;
        let mut parts = rest.split('/');
        let namespace = parts.next()?;
        let root = parts.next()?;
        let segments: Vec<String> = parts.filter(|s| !s.is_empty()).map(str::to_owned).collect();
        if segments.iter().any(|s| s == "." || s == "..") {
            return None;
        }
        let root = match namespace {
            "ipfs" => Root::Ipfs(Cid::try_from(root).ok()?),
            "ipns" if valid_ipns_name(root) => Root::Ipns(root.to_owned()),
            _ => return None,
        };
        Some(IpfsPath { root, segments })
    }

    /// Parses a host path given on the command line (see [`IpfsPath::parse`]).
    pub fn from_path(path: &Path) -> Option<IpfsPath> {
        IpfsPath::parse(path.to_str()?)
    }

    /// This path with `more` segments appended.
    pub fn join(mut self, more: &[String]) -> IpfsPath {
        self.segments.extend(more.iter().cloned());
        self
    }
}

impl fmt::Display for IpfsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.root {
            Root::Ipfs(cid) => write!(f, "/ipfs/{cid}")?,
            Root::Ipns(name) => write!(f, "/ipns/{name}")?,
        }
        for segment in &self.segments {
            write!(f, "/{segment}")?;
        }
        Ok(())
    }
}

/// An IPNS name: a CID (a libp2p key), a base58 multihash peer id (`12D3Koo…`, `Qm…`), or a
/// DNS name (for DNSLink).
fn valid_ipns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    if Cid::try_from(name).is_ok() {
        return true;
    }
    let base58 = |c: char| c.is_ascii_alphanumeric() && !matches!(c, '0' | 'O' | 'I' | 'l');
    if (name.starts_with("12D3Koo") || name.starts_with("Qm")) && name.chars().all(base58) {
        return true;
    }
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    name.contains('.') && name.split('.').all(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V0: &str = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn";
    const V1: &str = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";

    #[test]
    fn parses_ipfs_paths() {
        let p = IpfsPath::parse(&format!("/ipfs/{V0}")).unwrap();
        assert_eq!(p.root, Root::Ipfs(Cid::try_from(V0).unwrap()));
        assert!(p.segments.is_empty());
        let p = IpfsPath::parse(&format!("/ipfs/{V1}/bin//main.wasm/")).unwrap();
        assert_eq!(p.segments, ["bin", "main.wasm"]);
        assert_eq!(p.to_string(), format!("/ipfs/{V1}/bin/main.wasm"));
    }

    #[test]
    fn parses_ipns_paths() {
        let p = IpfsPath::parse("/ipns/example.com/app").unwrap();
        assert_eq!(p.root, Root::Ipns("example.com".into()));
        assert_eq!(p.segments, ["app"]);
        let id = "12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf";
        assert!(IpfsPath::parse(&format!("/ipns/{id}")).is_some());
        assert!(IpfsPath::parse(&format!("/ipns/{V1}")).is_some());
    }

    #[test]
    fn anything_else_is_local() {
        for local in [
            "./bin/app",
            "examples/images/hello",
            "ipfs/QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn",
            "/ipfs",
            "/ipfs/",
            "/ipfs/not-a-cid",
            "/ipns/",
            "/ipns/no_dots_here",
            "/tmp/ipfs/x",
            &format!("/ipfs/{V0}/../etc"),
            &format!("/ipfs/{V0}/./x"),
        ] {
            assert_eq!(IpfsPath::parse(local), None, "{local}");
        }
    }
}
