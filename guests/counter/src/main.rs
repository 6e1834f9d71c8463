//! `counter`: pid0 of the `counter` service image, a Counter (`capnp/counter.capnp`) that
//! peers call over the network.
//!
//! It exports one capability through its membrane, a Counter named `counter`
//! ([`ww::rpc::export_for`], which chooses a session's exports from who grafts: here
//! everyone gets the same): whoever connects to this node and grafts (a peer through
//! `ww::net::connect`, or a local client of `ww run --rpc-socket`) finds it in the session's
//! exports, revoked when the node's epoch advances. Every client shares one value, which
//! starts at 0 and lives as long as the cell: `increment(by)` adds `by` (saturating at
//! `u64::MAX`) and returns the new value, `get` returns it, `fork` gives a new Counter
//! starting at it, and `watch(watcher)` calls `watcher.changed(value)` after every later
//! increment until such a call fails ([`counter::Counter`]).
//!
//! Once the export is in effect it prints `counter: serving` on stdout, then serves until
//! the node ends its connection, sleeping in `wasi:io/poll` between calls. It exits 1 with a
//! message on stderr when it cannot export (only pid0 may), when the connection fails, or
//! when the node ends it.

use std::io::{self, Write};
use std::rc::Rc;

use counter::Counter;
use ww::rpc::{Export, RpcError, capnp_rpc};

/// The name clients find the counter by.
const NAME: &str = "counter";

fn main() {
    let counter = Rc::new(Counter::new(0));
    let client: ww::rpc::counter::Client = capnp_rpc::new_client_from_rc(counter.clone());
    match serve(client) {
        Ok(()) => fail(&format!(
            "the node ended the connection (the counter was at {})",
            counter.value()
        )),
        Err(e) => fail(&e.to_string()),
    }
}

/// Exports `counter` and serves it until the connection ends.
fn serve(counter: ww::rpc::counter::Client) -> Result<(), RpcError> {
    ww::rpc::block_on(async {
        let exports = ww::rpc::export_for(move |caller| {
            ww::debug!("a graft by {caller}");
            vec![Export::new(NAME, counter.clone())]
        })?;
        let (node, driver) = exports.into_parts();
        // Once the host answers a call on the exporting connection, it serves the export;
        // only then say so. Meanwhile (and afterwards) the driver serves the calls.
        ww::rpc::spawn(async move {
            match ww::rpc::graft(&node).await {
                Ok(_) => {
                    ww::info!("serving a Counter as the export `{NAME}`");
                    announce();
                }
                Err(e) => fail(&format!("exporting: {e}")),
            }
        });
        driver.await?;
        Ok(())
    })?
}

/// Prints `counter: serving`, flushed, or exits 1 when stdout is gone.
fn announce() {
    let mut out = io::stdout().lock();
    if let Err(e) = writeln!(out, "counter: serving").and_then(|()| out.flush()) {
        fail(&format!("writing stdout: {e}"));
    }
}

/// Prints `counter: MESSAGE` on stderr and exits 1.
fn fail(message: &str) -> ! {
    let _ = writeln!(io::stderr(), "counter: {message}");
    ww::exit(1);
}
