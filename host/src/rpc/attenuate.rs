//! Attenuation: a cell narrows a capability before handing it on, and the host enforces it.
//!
//! `Attenuator.attenuate(cap, policy)` (`capnp/membrane.capnp`) puts `cap` behind a
//! [`Membrane`] of its own whose [`Policy`] is the one asked for (a rate, an expiry, a
//! revoker) and whose first wrapper carries the allow-list. The cell gets the wrapper and a
//! Revoker; whatever it hands the wrapper to can only call through the host, so the cell's
//! narrowing holds whoever holds the capability. Only the node's own cells get an
//! Attenuator (`rpc::node`).

use std::time::Duration;

use capnp::capability::Rc;
use tokio::sync::watch;
use tokio::time::Instant;

use super::membrane::{Membrane, MethodId, Policy, Tally};
use super::schema::membrane_capnp::{attenuator, revoker};

/// The most methods one allow-list may name.
pub const MAX_ALLOWED: u32 = 4096;

/// The most attenuated capabilities alive on a node at once (each is a membrane of a few
/// KiB, and the cell holding the Attenuator asks for them): past it, `attenuate` fails
/// OVERLOADED until some are released.
pub const MAX_ATTENUATIONS: usize = 16_384;

/// The Attenuator of a cell's session.
pub(crate) struct AttenuatorServer {
    /// Counts every attenuation alive on the node.
    pub(crate) alive: Tally,
}

impl attenuator::Server for AttenuatorServer {
    async fn attenuate(
        self: Rc<Self>,
        params: attenuator::AttenuateParams,
        mut results: attenuator::AttenuateResults,
    ) -> Result<(), capnp::Error> {
        if self.alive.count() >= MAX_ATTENUATIONS {
            return Err(capnp::Error::overloaded(format!(
                "attenuate: the node holds {MAX_ATTENUATIONS} attenuated capabilities; release \
                 some first"
            )));
        }
        let params = params.get()?;
        let cap: capnp::capability::Client = params.get_cap().get_as_capability()?;
        let policy = params.get_policy()?;
        let allow = if policy.has_allow() {
            let list = policy.get_allow()?;
            if list.len() > MAX_ALLOWED {
                return Err(capnp::Error::failed(format!(
                    "attenuate: the allow-list names {} methods; at most {MAX_ALLOWED}",
                    list.len()
                )));
            }
            Some(
                list.iter()
                    .map(|m| (m.get_interface_id(), m.get_method_id()))
                    .collect::<Vec<MethodId>>(),
            )
        } else {
            None
        };
        let per_second = match policy.get_per_second() {
            0 => None,
            n => Some(n),
        };
        let expires = match policy.get_expires_in_ms() {
            0 => None,
            // Past what an Instant can hold is never.
            ms => Instant::now().checked_add(Duration::from_millis(ms)),
        };
        let (revoke, revoked) = watch::channel(false);
        let membrane = Membrane::new(Policy {
            epoch: None,
            revoked: Some(revoked),
            expires,
            per_second,
            tally: vec![self.alive.clone()],
        });
        let narrowed = match allow {
            Some(allow) => membrane.wrap_allowing(cap, allow),
            None => membrane.wrap(cap),
        };
        tracing::debug!(
            per_second,
            expires_in_ms = policy.get_expires_in_ms(),
            "attenuated a capability"
        );
        let mut out = results.get();
        out.reborrow().init_cap().set_as_capability(narrowed.hook);
        out.set_revoker(capnp_rpc::new_client(RevokerServer { revoke }));
        Ok(())
    }
}

/// Revokes one attenuated capability.
struct RevokerServer {
    revoke: watch::Sender<bool>,
}

impl revoker::Server for RevokerServer {
    async fn revoke(
        self: Rc<Self>,
        _: revoker::RevokeParams,
        _: revoker::RevokeResults,
    ) -> Result<(), capnp::Error> {
        if !self.revoke.send_replace(true) {
            tracing::debug!("an attenuated capability was revoked");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::membrane::Membrane;
    use crate::rpc::schema::host_capnp::host;

    struct Nothing;
    impl host::Server for Nothing {}

    #[test]
    fn attenuations_past_the_node_s_bound_are_refused_overloaded() {
        crate::rpc::block_on_local(async {
            let alive = Tally::default();
            let attenuator: attenuator::Client = capnp_rpc::new_client(AttenuatorServer {
                alive: alive.clone(),
            });
            let attenuate = || {
                let mut request = attenuator.attenuate_request();
                let cap: host::Client = capnp_rpc::new_client(Nothing);
                request.get().init_cap().set_as_capability(cap.client.hook);
                request.get().init_policy().set_per_second(1);
                request.send().promise
            };
            let first = attenuate().await.expect("within the bound");
            assert_eq!(alive.count(), 1);
            // Fill the rest of the bound with membranes counted by the same tally.
            let held: Vec<host::Client> = (1..MAX_ATTENUATIONS)
                .map(|_| {
                    Membrane::new(Policy {
                        tally: vec![alive.clone()],
                        ..Policy::default()
                    })
                    .wrap(capnp_rpc::new_client(Nothing))
                })
                .collect();
            let e = attenuate().await.map(|_| ()).expect_err("past the bound");
            assert_eq!(e.kind, capnp::ErrorKind::Overloaded, "{e}");
            drop(held);
            drop(first);
            attenuate().await.expect("room again");
        });
    }
}
