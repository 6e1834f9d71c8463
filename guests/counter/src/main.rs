//! `counter`: pid0 of the `counter` service image, a Counter (`capnp/counter.capnp`) that
//! peers call over the network.
//!
//! It exports one capability through its membrane, a Counter named `counter`
//! ([`ww::rpc::export_caps`]): whoever connects to this node and grafts (a peer through
//! `ww::net::connect`, or a local client of `ww run --rpc-socket`) finds it in the session's
//! exports, revoked when the node's epoch advances. Every client shares one value, which
//! starts at 0 and lives as long as the cell: `increment(by)` adds `by` (saturating at
//! `u64::MAX`) and returns the new value, `get` returns it.
//!
//! Once the export is in effect it prints `counter: serving` on stdout, then serves until
//! the node ends its connection, sleeping in `wasi:io/poll` between calls. It exits 1 with a
//! message on stderr when it cannot export (only pid0 may), when the connection fails, or
//! when the node ends it.

use std::cell::Cell;
use std::io::{self, Write};
use std::rc::Rc;

use ww::rpc::{Export, RpcError, capnp, capnp_rpc, counter};

/// The name clients find the counter by.
const NAME: &str = "counter";

fn main() {
    let value = Rc::new(Cell::new(0));
    let counter: counter::Client = capnp_rpc::new_client(Counter {
        value: value.clone(),
    });
    match serve(counter) {
        Ok(()) => fail(&format!(
            "the node ended the connection (the counter was at {})",
            value.get()
        )),
        Err(e) => fail(&e.to_string()),
    }
}

/// Exports `counter` and serves it until the connection ends.
fn serve(counter: counter::Client) -> Result<(), RpcError> {
    ww::rpc::block_on(async {
        let (node, driver) = ww::rpc::export_caps([Export::new(NAME, counter)])?.into_parts();
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

/// The Counter every client shares.
struct Counter {
    value: Rc<Cell<u64>>,
}

impl counter::Server for Counter {
    async fn increment(
        self: Rc<Self>,
        params: counter::IncrementParams,
        mut results: counter::IncrementResults,
    ) -> Result<(), capnp::Error> {
        let by = params.get()?.get_by();
        let value = self.value.get().saturating_add(by);
        self.value.set(value);
        ww::debug!("increment({by}) -> {value}");
        results.get().set_value(value);
        Ok(())
    }

    async fn get(
        self: Rc<Self>,
        _: counter::GetParams,
        mut results: counter::GetResults,
    ) -> Result<(), capnp::Error> {
        results.get().set_value(self.value.get());
        Ok(())
    }
}
