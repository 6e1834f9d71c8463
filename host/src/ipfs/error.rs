//! What can go wrong fetching from or adding to IPFS, with the seeds' messages.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// A failure to fetch, verify, cache or add IPFS content.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum IpfsError {
    /// `--ipfs` or `WW_IPFS` is not an endpoint ww can use.
    #[error("bad IPFS endpoint `{value}`: {why}")]
    #[diagnostic(
        code(ww::ipfs::endpoint),
        help(
            "pass --ipfs (or set WW_IPFS) to a multiaddr such as /ip4/127.0.0.1/tcp/5001/http \
             or /dns4/localhost/tcp/5001/http"
        )
    )]
    BadEndpoint {
        /// The value given.
        value: String,
        /// What is wrong with it.
        why: String,
    },

    /// The daemon could not be reached at all.
    #[error(
        "failed to get IPFS path {path}: the IPFS daemon at {endpoint} is unreachable ({detail})"
    )]
    #[diagnostic(
        code(ww::ipfs::unreachable),
        help(
            "start the IPFS daemon (`ipfs daemon`), or point ww at a running one with \
             --ipfs MULTIADDR or WW_IPFS (a path already in ww's cache needs no daemon)"
        )
    )]
    Unreachable {
        /// The IPFS path being fetched.
        path: String,
        /// The daemon's endpoint.
        endpoint: String,
        /// The transport error.
        detail: String,
    },

    /// The daemon did not provide the content (it answered with an error, or not in time).
    #[error(
        "failed to get IPFS path {path}: the daemon at {endpoint} did not provide {what} ({detail})"
    )]
    #[diagnostic(
        code(ww::ipfs::missing),
        help(
            "the content may be missing from the network: check the CID, make sure a node \
             that has it is reachable (or `ipfs pin add` it on yours); WW_IPFS_TIMEOUT \
             (default 60s) is how long ww waits for each block"
        )
    )]
    Missing {
        /// The IPFS path being fetched.
        path: String,
        /// The daemon's endpoint.
        endpoint: String,
        /// The block or name asked for.
        what: String,
        /// The daemon's answer, or the timeout.
        detail: String,
    },

    /// A block's bytes do not hash to its CID: the daemon sent something else.
    #[error(
        "content for {cid} (in {path}) does not match its CID: the IPFS daemon at {endpoint} returned other bytes"
    )]
    #[diagnostic(
        code(ww::ipfs::mismatch),
        help(
            "nothing from it was used; the daemon is not trusted, and this one is faulty or \
             malicious: check it, or use another with --ipfs"
        )
    )]
    Mismatch {
        /// The IPFS path being fetched.
        path: String,
        /// The block whose bytes were wrong.
        cid: String,
        /// The daemon's endpoint.
        endpoint: String,
    },

    /// The content is not a UnixFS file or directory ww can use.
    #[error("unexpected node type at {path}: {what}")]
    #[diagnostic(
        code(ww::ipfs::node_type),
        help(
            "ww runs UnixFS files and directories (dag-pb nodes with raw or file leaves, as \
             `ipfs add` and `ww export` make them)"
        )
    )]
    UnexpectedNode {
        /// The IPFS path being fetched.
        path: String,
        /// What was found instead.
        what: String,
    },

    /// A path below a CID (or an IPNS name) does not lead anywhere.
    #[error("failed to resolve path {path}: {detail}")]
    #[diagnostic(
        code(ww::ipfs::resolve),
        help("check the path: `ipfs ls` the CID to see its entries")
    )]
    Resolve {
        /// The path being resolved.
        path: String,
        /// Why it failed.
        detail: String,
    },

    /// A directory image holds nothing to run.
    #[error(
        "no executable found in IPFS directory {path}: no bin/main.wasm, and no bin/ for a native program"
    )]
    #[diagnostic(
        code(ww::ipfs::no_executable),
        help(
            "an image directory holds bin/main.wasm (or bin/{{os}}_{{arch}}/<program>); name \
             the file itself (/ipfs/<cid>/path/to/file.wasm) or add the missing layer with --layer"
        )
    )]
    NoExecutable {
        /// The IPFS path.
        path: String,
    },

    /// The content exceeds ww's bounds.
    #[error("IPFS path {path} is too large: more than {limit}")]
    #[diagnostic(
        code(ww::ipfs::too_large),
        help("ww fetches at most 1 GiB, 100000 blocks and 64 levels of nesting per path")
    )]
    TooLarge {
        /// The IPFS path being fetched.
        path: String,
        /// Which bound.
        limit: String,
    },

    /// Reading or writing ww's IPFS cache failed.
    #[error("cannot {action} {}: {source}", path.display())]
    #[diagnostic(
        code(ww::ipfs::io),
        help(
            "ww keeps fetched IPFS content under $WW_CACHE_DIR/ipfs (else $XDG_CACHE_HOME/ww/ipfs, else ~/.cache/ww/ipfs); check that it is writable and yours"
        )
    )]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// The daemon took an `add` (the connection, perhaps the whole upload) and did not
    /// answer it in time.
    #[error(
        "failed to add {} to IPFS: the daemon at {endpoint} did not answer within {}s",
        path.display(),
        waited.as_secs_f64()
    )]
    #[diagnostic(
        code(ww::ipfs::add_timeout),
        help(
            "check that an IPFS daemon (not some other server) listens there and is healthy \
             (`ipfs id`, its log); ww waits WW_IPFS_TIMEOUT (default 60s) for its answer \
             once the upload is sent, and that plus 1s per MiB uploaded for the whole add: \
             raise WW_IPFS_TIMEOUT for a slow daemon"
        )
    )]
    AddTimeout {
        /// The local path being exported.
        path: PathBuf,
        /// The daemon's endpoint.
        endpoint: String,
        /// The deadline that passed.
        waited: Duration,
    },

    /// `ww export` failed at the daemon.
    #[error("failed to add {} to IPFS: {detail}", path.display())]
    #[diagnostic(
        code(ww::ipfs::add),
        help(
            "make sure an IPFS daemon is running and writable (`ipfs daemon`), or pass --ipfs \
             MULTIADDR or WW_IPFS"
        )
    )]
    Add {
        /// The local path being exported.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}
