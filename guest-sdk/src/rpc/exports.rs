//! Exporting named capabilities: [`export_caps`] (the same for everyone), [`export_for`]
//! (chosen per graft from the [`Caller`]) and [`export_with`] (chosen by a future, for
//! choices that need calls of their own), all through one membrane, [`ExportsMembrane`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use capnp::capability::FromClientHook;

use super::{Caller, Connection, RpcError, export, membrane};

/// A capability exported through a membrane, with the name clients find it by (`Export` in
/// `capnp/membrane.capnp`).
#[derive(Clone)]
pub struct Export {
    /// The name, e.g. `counter`.
    pub name: String,
    /// The capability, untyped: cast it to the interface its name promises
    /// ([`Session::export`](super::Session::export) does).
    pub cap: capnp::capability::Client,
}

impl Export {
    /// `cap` (any typed client, e.g. a [`counter::Client`](super::counter::Client)) under
    /// `name`.
    pub fn new(name: impl Into<String>, cap: impl FromClientHook) -> Export {
        Export {
            name: name.into(),
            cap: capnp::capability::Client::new(cap.into_client_hook()),
        }
    }
}

impl fmt::Debug for Export {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Export")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Exports `exports` as [`export`] does, through a membrane made for them: each graft on it
/// gives a session holding these capabilities by name, and nothing else, whoever grafts
/// ([`export_for`] chooses per caller).
///
/// The node hands that session on as the membrane gave it, with every export wrapped in
/// the node's epoch guard, so advancing the epoch revokes what earlier sessions got (their
/// calls fail with [`capnp::ErrorKind::Disconnected`]; the client grafts again). The epoch
/// and status are the node's. This membrane gives no host and no executor: a local client
/// of `ww run --rpc-socket` gets none, a network peer only the node's public host (its id,
/// addresses and peers). A client takes an export with
/// [`Session::export`](super::Session::export); give each a distinct name (a client finds
/// the first one of a name).
///
/// Only pid0 may export; the host refuses any other cell ([`RpcError::Connect`]). Keep the
/// connection's [`Driver`](super::Driver) running for as long as the capabilities are to be
/// served:
///
/// ```no_run
/// use std::cell::Cell;
/// use std::rc::Rc;
///
/// use ww::rpc::{Export, capnp, capnp_rpc, counter};
///
/// struct Counter(Cell<u64>);
///
/// impl counter::Server for Counter {
///     async fn increment(
///         self: Rc<Self>,
///         params: counter::IncrementParams,
///         mut results: counter::IncrementResults,
///     ) -> Result<(), capnp::Error> {
///         let value = self.0.get().saturating_add(params.get()?.get_by());
///         self.0.set(value);
///         results.get().set_value(value);
///         Ok(())
///     }
/// }
///
/// let counter: counter::Client = capnp_rpc::new_client(Counter(Cell::new(0)));
/// let (_node, driver) = ww::rpc::export_caps([Export::new("counter", counter)])?.into_parts();
/// ww::rpc::block_on(driver)??; // serves until the host ends the connection
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn export_caps(exports: impl IntoIterator<Item = Export>) -> Result<Connection, RpcError> {
    let exports: Vec<Export> = exports.into_iter().collect();
    export_for(move |_| exports.clone())
}

/// Exports as [`export_caps`] does, with the exports chosen for each graft by `choose`
/// from who grafts: the node tells ([`Caller`]), a client cannot pretend.
///
/// ```no_run
/// use ww::rpc::{Caller, Export, capnp_rpc, counter};
/// # fn counter() -> counter::Client { unimplemented!() }
/// # fn admin() -> counter::Client { unimplemented!() }
///
/// let (public, admin) = (counter(), admin());
/// let connection = ww::rpc::export_for(move |caller| {
///     let mut exports = vec![Export::new("counter", public.clone())];
///     if *caller == Caller::Socket {
///         exports.push(Export::new("admin", admin.clone()));
///     }
///     exports
/// })?;
/// # Ok::<(), ww::rpc::RpcError>(())
/// ```
pub fn export_for(
    choose: impl Fn(&Caller) -> Vec<Export> + 'static,
) -> Result<Connection, RpcError> {
    export_with(move |caller| std::future::ready(Ok(choose(&caller))))
}

/// Exports as [`export_for`] does, with the exports of each graft given by a future: for
/// choices that call capabilities first (e.g. attenuate one for this caller,
/// [`Session::attenuate`](super::Session::attenuate)). A graft whose future fails fails
/// with its error: the client gets no session.
///
/// The connection's driver serves other calls while a future waits; a future must not
/// wait for a graft on this membrane itself.
pub fn export_with<F, Fut>(choose: F) -> Result<Connection, RpcError>
where
    F: Fn(Caller) -> Fut + 'static,
    Fut: Future<Output = Result<Vec<Export>, capnp::Error>> + 'static,
{
    export(membrane_with(choose))
}

/// The membrane of [`export_with`], not exported yet.
pub(crate) fn membrane_with<F, Fut>(choose: F) -> membrane::Client
where
    F: Fn(Caller) -> Fut + 'static,
    Fut: Future<Output = Result<Vec<Export>, capnp::Error>> + 'static,
{
    capnp_rpc::new_client(ExportsMembrane {
        choose: Box::new(move |caller| Box::pin(choose(caller))),
    })
}

/// What an [`ExportsMembrane`] asks for each graft's exports.
type Choose =
    Box<dyn Fn(Caller) -> Pin<Box<dyn Future<Output = Result<Vec<Export>, capnp::Error>>>>>;

/// The membrane of [`export_caps`], [`export_for`] and [`export_with`]: every graft is a
/// session of the exports chosen for its caller, and nothing else.
struct ExportsMembrane {
    choose: Choose,
}

impl membrane::Server for ExportsMembrane {
    async fn graft(
        self: Rc<Self>,
        params: membrane::GraftParams,
        mut results: membrane::GraftResults,
    ) -> Result<(), capnp::Error> {
        let caller = Caller::of_graft(&params)?;
        // Done with the request before waiting: capnp-rpc may then release its message.
        drop(params);
        let exports = (self.choose)(caller).await?;
        let len = u32::try_from(exports.len())
            .map_err(|_| capnp::Error::failed("too many exports for one message".into()))?;
        let mut list = results.get().init_session().init_exports(len);
        for (i, export) in (0..len).zip(&exports) {
            let mut out = list.reborrow().get(i);
            out.set_name(export.name.as_str());
            out.init_cap().set_as_capability(export.cap.hook.add_ref());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use futures::executor::block_on;

    use super::super::{Session, counter, exports_of};
    use super::*;

    /// A Counter for the tests.
    struct Counter(Cell<u64>);

    impl counter::Server for Counter {
        async fn increment(
            self: Rc<Self>,
            params: counter::IncrementParams,
            mut results: counter::IncrementResults,
        ) -> Result<(), capnp::Error> {
            let value = self.0.get().saturating_add(params.get()?.get_by());
            self.0.set(value);
            results.get().set_value(value);
            Ok(())
        }
    }

    /// Grafts onto `membrane` (locally, without a host) as the node would for `caller`
    /// (`None`: leaves it unset) and reads the session's exports as `graft` does.
    fn graft_as(
        membrane: &membrane::Client,
        caller: Option<&Caller>,
    ) -> Result<Vec<Export>, capnp::Error> {
        let mut request = membrane.graft_request();
        if let Some(caller) = caller {
            let mut out = request.get().init_caller();
            match caller {
                Caller::Socket => out.set_socket(()),
                Caller::Peer(id) => out.set_peer(id.as_str()),
                Caller::Cell => out.set_cell(()),
                Caller::Unknown => {}
            }
        }
        block_on(async {
            let reply = request.send().promise.await?;
            exports_of(reply.get()?.get_session()?)
        })
    }

    /// The names of `exports`, in order.
    fn names(exports: &[Export]) -> Vec<&str> {
        exports.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn exports_reach_the_session_by_name() -> Result<(), capnp::Error> {
        let counter: counter::Client = capnp_rpc::new_client(Counter(Cell::new(u64::MAX - 1)));
        let other: counter::Client = capnp_rpc::new_client(Counter(Cell::new(0)));
        let exports = vec![Export::new("counter", counter), Export::new("other", other)];
        let membrane = membrane_with(move |_| std::future::ready(Ok(exports.clone())));
        let exports = graft_as(&membrane, None)?;
        assert_eq!(names(&exports), ["counter", "other"]);

        let session = Session {
            epoch: 0,
            host: None,
            executor: None,
            status: capnp_rpc::new_client(Unused),
            exports,
            attenuator: None,
        };
        assert!(session.export::<counter::Client>("missing").is_none());
        let counter: counter::Client = session
            .export("counter")
            .ok_or_else(|| capnp::Error::failed("no counter".into()))?;
        let increment = |by| {
            let mut request = counter.increment_request();
            request.get().set_by(by);
            block_on(async {
                let reply = request.send().promise.await?;
                Ok::<_, capnp::Error>(reply.get()?.get_value())
            })
        };
        assert_eq!(increment(1)?, u64::MAX);
        assert_eq!(increment(1)?, u64::MAX, "saturates");
        Ok(())
    }

    #[test]
    fn no_exports_is_an_empty_list() -> Result<(), capnp::Error> {
        let membrane = membrane_with(|_| std::future::ready(Ok(Vec::new())));
        assert!(graft_as(&membrane, None)?.is_empty());
        Ok(())
    }

    #[test]
    fn each_graft_chooses_from_its_caller() -> Result<(), capnp::Error> {
        let counter: counter::Client = capnp_rpc::new_client(Counter(Cell::new(0)));
        let seen = Rc::new(RefCell::new(Vec::new()));
        let choose = {
            let seen = seen.clone();
            move |caller: Caller| {
                let mut exports = vec![Export::new("counter", counter.clone())];
                if caller == Caller::Socket {
                    exports.push(Export::new("admin", counter.clone()));
                }
                seen.borrow_mut().push(caller);
                std::future::ready(Ok(exports))
            }
        };
        let membrane = membrane_with(choose);
        let peer = Caller::Peer("12D3KooWpeer".to_owned());
        assert_eq!(
            names(&graft_as(&membrane, Some(&Caller::Socket))?),
            ["counter", "admin"]
        );
        assert_eq!(names(&graft_as(&membrane, Some(&peer))?), ["counter"]);
        assert_eq!(
            names(&graft_as(&membrane, Some(&Caller::Cell))?),
            ["counter"]
        );
        assert_eq!(names(&graft_as(&membrane, None)?), ["counter"]);
        assert_eq!(
            *seen.borrow(),
            [Caller::Socket, peer, Caller::Cell, Caller::Unknown]
        );
        Ok(())
    }

    #[test]
    fn a_failed_choice_fails_the_graft() {
        let membrane =
            membrane_with(|_| std::future::ready(Err(capnp::Error::overloaded("busy".into()))));
        let refused = graft_as(&membrane, Some(&Caller::Socket));
        assert!(
            refused.is_err_and(|e| e.kind == capnp::ErrorKind::Overloaded),
            "the graft fails as the choice did"
        );
    }

    /// A capability the tests never call.
    struct Unused;

    impl super::super::status_poller::Server for Unused {}
}
