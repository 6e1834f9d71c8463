//! The `net-*` modes: the network through [`ww::net`].

use ww::rpc::counter;

use crate::{error, say};

/// The export `net-call` calls.
const COUNTER: &str = "counter";

/// `net-id`: prints the node's peer id.
pub fn id() -> ! {
    match ww::net::id() {
        Ok(id) => say(&id),
        Err(e) => error(&format_args!("net-id: {e}")),
    }
    ww::exit(0);
}

/// `net-addrs`: prints each address the node listens on, one a line.
pub fn addrs() -> ! {
    match ww::net::addrs() {
        Ok(addrs) => {
            for addr in addrs {
                say(&addr);
            }
        }
        Err(e) => error(&format_args!("net-addrs: {e}")),
    }
    ww::exit(0);
}

/// `net-call PEER [ADDR...]`: connects to PEER, grafts, calls `increment(1)` on its export
/// `counter` and prints `counter = V`.
pub fn call(peer: &str, addrs: &[&str]) -> ! {
    let value = ww::rpc::block_on(async {
        let membrane = ww::net::connect(peer, addrs)
            .map_err(|e| e.to_string())?
            .spawn();
        let session = ww::rpc::graft(&membrane)
            .await
            .map_err(|e| format!("graft: {e}"))?;
        let counter: counter::Client = session
            .export(COUNTER)
            .ok_or_else(|| format!("the peer exports no `{COUNTER}`"))?;
        let mut request = counter.increment_request();
        request.get().set_by(1);
        let increment = async {
            let reply = request.send().promise.await?;
            Ok::<_, ww::rpc::capnp::Error>(reply.get()?.get_value())
        };
        increment.await.map_err(|e| format!("increment: {e}"))
    });
    match value {
        Ok(Ok(value)) => say(&format!("counter = {value}")),
        Ok(Err(e)) => error(&format_args!("net-call: {peer}: {e}")),
        Err(e) => error(&format_args!("net-call: {peer}: {e}")),
    }
    ww::exit(0);
}

/// `net-denied`: prints `denied: <error>` when [`ww::net::id`] fails (a cell without the
/// network capability), `allowed` when it answers.
pub fn denied() -> ! {
    let line = match ww::net::id() {
        Ok(_) => "allowed".to_owned(),
        Err(e) => format!("denied: {e}"),
    };
    say(&line);
    ww::exit(0);
}
