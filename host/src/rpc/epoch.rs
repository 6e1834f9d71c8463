//! The membrane's epoch: the generation of the capabilities a node has handed out.
//!
//! An [`Epoch`] is a counter the node owns. Every session handed to a client is issued in the
//! epoch current at its graft and remembers it in a [`SessionEpoch`], which the session's
//! membrane ([`super::membrane`]) checks before every call and races every call against. A
//! stale call fails with a `capnp::Error` of kind
//! [`Disconnected`](capnp::ErrorKind::Disconnected) whose description starts with
//! `stale epoch`. No capability checks the epoch itself.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

/// The generation of a node's capabilities. Cheap to clone (`Send`); every clone is the
/// same counter.
#[derive(Clone, Debug)]
pub struct Epoch {
    seq: Arc<watch::Sender<u64>>,
}

impl Default for Epoch {
    fn default() -> Epoch {
        Epoch::new()
    }
}

impl Epoch {
    /// A counter at epoch 0.
    pub fn new() -> Epoch {
        let (seq, _) = watch::channel(0);
        Epoch { seq: Arc::new(seq) }
    }

    /// The epoch now.
    pub fn current(&self) -> u64 {
        *self.seq.borrow()
    }

    /// Moves to the next epoch, revoking every session issued before; returns the new one.
    pub fn advance(&self) -> u64 {
        let mut now = 0;
        self.seq.send_modify(|seq| {
            *seq = seq.saturating_add(1);
            now = *seq;
        });
        tracing::info!(
            epoch = now,
            "membrane epoch advanced; earlier sessions are revoked"
        );
        now
    }

    /// Waits until the epoch differs from `since`, and returns it.
    pub async fn changed(&self, since: u64) -> u64 {
        let mut rx = self.seq.subscribe();
        match rx.wait_for(|seq| *seq != since).await {
            Ok(seq) => *seq,
            // The sender lives in `self`: it cannot be gone.
            Err(_) => std::future::pending().await,
        }
    }

    /// Advances the epoch each time `ww` receives SIGHUP, from a task on the current tokio
    /// runtime. Registering the handler replaces SIGHUP's default action (ending `ww`).
    pub fn advance_on_sighup(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup())?;
        let epoch = self.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                epoch.advance();
            }
        });
        Ok(())
    }

    /// The epoch of a session grafted now.
    pub fn issue(&self) -> SessionEpoch {
        SessionEpoch {
            issued: self.current(),
            now: self.seq.subscribe(),
        }
    }
}

/// The epoch a session was issued in, and a view of the node's epoch to compare it with.
#[derive(Clone, Debug)]
pub struct SessionEpoch {
    issued: u64,
    now: watch::Receiver<u64>,
}

impl SessionEpoch {
    /// The epoch the session was issued in.
    pub fn issued(&self) -> u64 {
        self.issued
    }

    /// `Ok` while the session is current; the stale-epoch error once the node moved on.
    pub fn check(&self) -> Result<(), capnp::Error> {
        let now = *self.now.borrow();
        if now == self.issued {
            Ok(())
        } else {
            Err(stale(self.issued, now))
        }
    }

    /// Resolves, with the stale-epoch error, once the node's epoch leaves the session's.
    pub(crate) fn revoked(&self) -> impl Future<Output = capnp::Error> + 'static {
        let issued = self.issued;
        let mut now = self.now.clone();
        async move {
            match now.wait_for(|seq| *seq != issued).await {
                Ok(seq) => stale(issued, *seq),
                // The node is gone, and with it every capability: never revoke from here.
                Err(_) => std::future::pending().await,
            }
        }
    }
}

/// The error every call on a stale session's capability fails with.
pub fn stale(issued: u64, now: u64) -> capnp::Error {
    capnp::Error::disconnected(format!(
        "stale epoch: session of epoch {issued}, membrane at epoch {now}; graft again"
    ))
}

/// Whether `error` is the stale-epoch error, here or as a Rust client receives it (where
/// capnp-rpc prefixes the description with `remote exception: `). Clients should act on the
/// kind, DISCONNECTED; the description is for people.
pub fn is_stale(error: &capnp::Error) -> bool {
    error.kind == capnp::ErrorKind::Disconnected && error.extra.contains("stale epoch: ")
}

#[cfg(test)]
mod tests {
    use capnp::capability::Rc;

    use super::*;
    use crate::rpc::block_on_local as block_on;
    use crate::rpc::membrane::{Membrane, Policy};
    use crate::rpc::schema::host_capnp::host;

    /// A Host whose `id` answers and whose `addrs` never does.
    struct Probe;

    impl host::Server for Probe {
        async fn id(
            self: Rc<Self>,
            _: host::IdParams,
            mut results: host::IdResults,
        ) -> Result<(), capnp::Error> {
            results.get().set_peer_id("probe");
            Ok(())
        }

        async fn addrs(
            self: Rc<Self>,
            _: host::AddrsParams,
            _: host::AddrsResults,
        ) -> Result<(), capnp::Error> {
            std::future::pending().await
        }
    }

    /// A session's membrane issued now.
    fn session(epoch: &Epoch) -> Membrane {
        Membrane::new(Policy {
            epoch: Some(epoch.issue()),
            ..Policy::default()
        })
    }

    #[test]
    fn a_session_capability_is_revoked_by_an_advance_even_mid_call() {
        block_on(async {
            let epoch = Epoch::new();
            let membrane = session(&epoch);
            let client: host::Client = membrane.wrap(capnp_rpc::new_client(Probe));
            let id = client.id_request().send().promise.await.expect("current");
            assert_eq!(id.get().unwrap().get_peer_id().unwrap(), "probe");
            let pending = client.addrs_request().send().promise;

            assert_eq!(epoch.advance(), 1);
            let err = pending.await.err().expect("an in-flight call fails");
            assert_eq!(err.kind, capnp::ErrorKind::Disconnected);
            assert!(is_stale(&err), "{err}");
            let err = client
                .id_request()
                .send()
                .promise
                .await
                .err()
                .expect("stale");
            assert!(
                err.extra
                    .starts_with("stale epoch: session of epoch 0, membrane at epoch 1; graft"),
                "{err}"
            );

            // A session issued now works.
            let fresh: host::Client = session(&epoch).wrap(capnp_rpc::new_client(Probe));
            assert!(fresh.id_request().send().promise.await.is_ok());
        });
    }

    #[test]
    fn changed_waits_for_an_advance() {
        block_on(async {
            let epoch = Epoch::new();
            assert_eq!(epoch.changed(5).await, 0);
            let waiter = epoch.clone();
            let task = tokio::task::spawn_local(async move { waiter.changed(0).await });
            tokio::task::yield_now().await;
            epoch.advance();
            assert_eq!(task.await.unwrap(), 1);
            assert!(!is_stale(&capnp::Error::disconnected("gone".into())));
        });
    }
}
