//! `counter-client`: pid0 of the `counter-client` image, which calls the Counter a peer
//! exports (`guests/counter`) over the network.
//!
//! Usage: `counter-client [COUNT]`, COUNT defaulting to 3.
//!
//! Its peers are the entries of its image's `/boot`, each named by a peer id (base58) and
//! holding the peer's multiaddrs; the node dials them at boot. The image itself has none: a user layers `boot/<peer-id>` on it
//! (`ww run -l my-peers examples/images/counter-client`). It takes the first peer id in
//! sorted order, connects to it ([`ww::net::connect`], with no addresses: the node already
//! dialed its boot peers and knows where they are), grafts onto the peer's membrane, takes
//! the export `counter` and calls `increment(1)` COUNT times, printing `counter = <value>`
//! after each.
//!
//! It exits 0 when every call succeeded. With no peer in `/boot` it says so on stderr and
//! exits 1; any other failure is one line on stderr naming the peer and what failed, and
//! exit 1. A COUNT that is not a number prints the usage on stderr and exits 2.

use std::fs;
use std::io::{self, Write};

use ww::rpc::{capnp, counter};

/// Where the image names the peers to dial at boot, one entry per peer id.
const BOOT: &str = "/boot";

/// The export the peer's Counter is found by.
const EXPORT: &str = "counter";

/// How many increments without an argument.
const DEFAULT_COUNT: u64 = 3;

/// Printed on stderr for bad arguments.
const USAGE: &str = "usage: counter-client [COUNT]   (increments to make, default 3)";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count = match args.as_slice() {
        [] => DEFAULT_COUNT,
        [count] => count.parse().unwrap_or_else(|_| usage()),
        _ => usage(),
    };
    let peers = boot_peers().unwrap_or_else(|e| fail(&e));
    let Some(peer) = peers.first() else {
        fail(&format!(
            "no peer to call: {BOOT} names none (layer an image holding boot/<peer-id> on \
             this one)"
        ));
    };
    ww::info!("calling the counter of peer {peer} {count} times");
    if let Err(e) = call(peer, count) {
        fail(&format!("peer {peer}: {e}"));
    }
}

/// The peer ids in [`BOOT`], sorted; none when it does not exist. Names starting with `.`
/// are skipped.
fn boot_peers() -> Result<Vec<String>, String> {
    let entries = match fs::read_dir(BOOT) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {BOOT}: {e}")),
    };
    let mut peers = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot read {BOOT}: {e}"))?;
        match entry.file_name().into_string() {
            Ok(name) if name.starts_with('.') => {}
            Ok(name) => peers.push(name),
            Err(name) => {
                return Err(format!("{BOOT}/{}: not a peer id", name.to_string_lossy()));
            }
        }
    }
    peers.sort();
    Ok(peers)
}

/// Connects to `peer`, grafts, and calls `increment(1)` on its export `counter` `count`
/// times, printing each value; what failed, otherwise.
fn call(peer: &str, count: u64) -> Result<(), String> {
    let done = ww::rpc::block_on(async {
        let membrane = ww::net::connect(peer, &[])
            .map_err(|e| e.to_string())?
            .spawn();
        let session = ww::rpc::graft(&membrane)
            .await
            .map_err(|e| format!("graft: {e}"))?;
        let counter: counter::Client = session
            .export(EXPORT)
            .ok_or_else(|| format!("the peer exports no `{EXPORT}`"))?;
        for _ in 0..count {
            let value = increment(&counter)
                .await
                .map_err(|e| format!("increment: {e}"))?;
            say(&format!("counter = {value}")).map_err(|e| format!("writing stdout: {e}"))?;
        }
        Ok(())
    });
    done.map_err(|e| e.to_string())?
}

/// One `increment(1)`: the new value.
async fn increment(counter: &counter::Client) -> Result<u64, capnp::Error> {
    let mut request = counter.increment_request();
    request.get().set_by(1);
    let reply = request.send().promise.await?;
    Ok(reply.get()?.get_value())
}

/// Prints one line on stdout, flushed.
fn say(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// Prints the usage on stderr and exits 2.
fn usage() -> ! {
    let _ = writeln!(io::stderr(), "{USAGE}");
    ww::exit(2);
}

/// Prints `counter-client: MESSAGE` on stderr and exits 1.
fn fail(message: &str) -> ! {
    let _ = writeln!(io::stderr(), "counter-client: {message}");
    ww::exit(1);
}
