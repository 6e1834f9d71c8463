//! The Counter of `capnp/counter.capnp`, as the `counter` image serves it (and testbed's
//! `rpc-membrane` mode): one value shared by every client of one [`Counter`], which `fork`
//! copies into a new, independent Counter, and watchers told of every increment.
//!
//! Serve it with `capnp_rpc::new_client(Counter::new(0))`. Its watchers are called on
//! tasks of [`ww::rpc::block_on`] ([`ww::rpc::spawn`]): serve it there.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures::future::join_all;
use ww::rpc::{capnp, capnp_rpc, counter, watcher};

/// A Counter: `increment(by)` adds `by` (saturating at `u64::MAX`) and returns the new
/// value, `get` returns it, `fork` gives a new Counter starting at it, and `watch` adds a
/// watcher that is told each later value until a call on it fails.
pub struct Counter {
    value: Cell<u64>,
    /// The watchers, each with a number of its own, by which a failed one is dropped.
    watchers: RefCell<Vec<(u64, watcher::Client)>>,
    /// The number the next watcher gets.
    next_watcher: Cell<u64>,
}

impl Counter {
    /// A Counter at `value`, with no watcher.
    pub fn new(value: u64) -> Counter {
        Counter {
            value: Cell::new(value),
            watchers: RefCell::new(Vec::new()),
            next_watcher: Cell::new(0),
        }
    }

    /// The value now.
    pub fn value(&self) -> u64 {
        self.value.get()
    }

    /// Tells every watcher `value` on a task of its own, so that the increment's reply
    /// does not wait for them (a slow or hung watcher must not stall the counter), and
    /// drops each watcher whose call fails.
    fn notify(self: &Rc<Self>, value: u64) {
        let watchers = self.watchers.borrow().clone();
        if watchers.is_empty() {
            return;
        }
        let this = self.clone();
        ww::rpc::spawn(async move {
            let calls = watchers.into_iter().map(|(id, watcher)| async move {
                let mut request = watcher.changed_request();
                request.get().set_value(value);
                (id, request.send().promise.await)
            });
            for (id, result) in join_all(calls).await {
                if let Err(e) = result {
                    ww::debug!("dropping watcher {id}: {e}");
                    this.watchers.borrow_mut().retain(|(other, _)| *other != id);
                }
            }
        });
    }
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
        self.notify(value);
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

    async fn fork(
        self: Rc<Self>,
        _: counter::ForkParams,
        mut results: counter::ForkResults,
    ) -> Result<(), capnp::Error> {
        let fork: counter::Client = capnp_rpc::new_client(Counter::new(self.value.get()));
        results.get().set_counter(fork);
        Ok(())
    }

    async fn watch(
        self: Rc<Self>,
        params: counter::WatchParams,
        _: counter::WatchResults,
    ) -> Result<(), capnp::Error> {
        let watcher = params.get()?.get_watcher()?;
        let id = self.next_watcher.get();
        self.next_watcher.set(id.wrapping_add(1));
        self.watchers.borrow_mut().push((id, watcher));
        Ok(())
    }
}
