//! Narrowing a capability before handing it on: [`attenuate`] (or
//! [`Session::attenuate`](super::Session::attenuate)) builds a policy ([`Attenuate`]) and
//! asks the node's Attenuator for a copy of the capability behind it, which the node's
//! membrane enforces: whoever receives the copy cannot get around it, even by calling it
//! through this cell.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use ww::rpc::counter;
//! # async fn f(session: ww::rpc::Session, counter: counter::Client) -> Result<(), ww::rpc::capnp::Error> {
//! // Only `get`, at most 5 calls a second, for a minute; and a way to take it back early.
//! let (reader, revoker) = session
//!     .attenuate(counter)
//!     .allow(["get"])
//!     .per_second(5)
//!     .expires_in(Duration::from_secs(60))
//!     .revocable()
//!     .await?;
//! # let _ = reader;
//! revoker.revoke().await?;
//! # Ok(()) }
//! ```
//!
//! A refused call fails with an exception whose kind says why
//! ([`capnp::ErrorKind::Unimplemented`]: not allowed, [`capnp::ErrorKind::Overloaded`]: rate
//! limited, [`capnp::ErrorKind::Disconnected`]: revoked or expired).

use std::fmt;
use std::time::Duration;

use capnp::capability::FromClientHook;
use capnp::traits::HasTypeId;

use super::schema::membrane_capnp::policy;
use super::schema::methods;
use super::{attenuator, revoker};

/// Starts narrowing `cap` with the node's `attenuator` (a cell's own session holds it:
/// [`Session::attenuator`](super::Session::attenuator)). Nothing is asked until the
/// [`Attenuate`] is [built](Attenuate::build) or made [revocable](Attenuate::revocable).
pub fn attenuate<C>(attenuator: &attenuator::Client, cap: C) -> Attenuate<C> {
    Attenuate::new(Some(attenuator.clone()), cap)
}

/// A method a policy allows, as given: by name (resolved through [`methods`] when built) or
/// by number.
#[derive(Debug, Clone)]
enum Allowed {
    /// A method of the capability's own interface, by its name in the schema.
    Name(String),
    /// Any interface's method: `(interface id, method ordinal)`.
    Id(u64, u16),
}

/// A capability `C` and the policy to narrow it with, built by [`attenuate`] or
/// [`Session::attenuate`](super::Session::attenuate); ask for the narrowed copy with
/// [`build`](Attenuate::build), or [`revocable`](Attenuate::revocable) for a [`Revoker`]
/// too.
///
/// Each limit left unset is no limit: without [`allow`](Attenuate::allow) or
/// [`allow_ids`](Attenuate::allow_ids) every method may be called.
#[must_use = "nothing is attenuated until it is built"]
pub struct Attenuate<C> {
    /// `None`: the session had no attenuator, which [`send`](Attenuate::send) reports.
    attenuator: Option<attenuator::Client>,
    cap: C,
    /// `None`: every method; `Some` (even empty): only these.
    allow: Option<Vec<Allowed>>,
    per_second: u32,
    expires_in: Option<Duration>,
}

impl<C> fmt::Debug for Attenuate<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attenuate")
            .field("allow", &self.allow)
            .field("per_second", &self.per_second)
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

impl<C> Attenuate<C> {
    /// `cap` with no limit yet; `attenuator` `None` fails when built.
    pub(crate) fn new(attenuator: Option<attenuator::Client>, cap: C) -> Attenuate<C> {
        Attenuate {
            attenuator,
            cap,
            allow: None,
            per_second: 0,
            expires_in: None,
        }
    }

    /// Allows the methods `names` of `C`'s interface (as the schema names them, e.g.
    /// `["get", "increment"]` for a Counter), and with the other `allow*` calls, only
    /// those: any other method fails with [`capnp::ErrorKind::Unimplemented`] ("not
    /// allowed"). An empty list allows no method at all.
    ///
    /// The names are looked up in [`methods::METHODS`] (every interface in
    /// `capnp/*.capnp`) when built: a name the interface does not have is an error then.
    /// For other interfaces, use [`allow_ids`](Attenuate::allow_ids).
    pub fn allow<I>(mut self, names: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let allow = self.allow.get_or_insert_with(Vec::new);
        allow.extend(names.into_iter().map(|name| Allowed::Name(name.into())));
        self
    }

    /// Allows the methods `(interface id, method ordinal)` (e.g. of an interface outside
    /// `capnp/*.capnp`), and with the other `allow*` calls, only those, as
    /// [`allow`](Attenuate::allow) does.
    pub fn allow_ids(mut self, ids: impl IntoIterator<Item = (u64, u16)>) -> Self {
        let allow = self.allow.get_or_insert_with(Vec::new);
        allow.extend(
            ids.into_iter()
                .map(|(interface, method)| Allowed::Id(interface, method)),
        );
        self
    }

    /// At most `calls` calls a second (a bucket of `calls`, refilled continuously); a call
    /// past it fails with [`capnp::ErrorKind::Overloaded`] ("rate limited"). 0: unlimited.
    pub fn per_second(mut self, calls: u32) -> Self {
        self.per_second = calls;
        self
    }

    /// Every call fails with [`capnp::ErrorKind::Disconnected`] ("expired") once `after`
    /// has passed since the node made the copy. Rounded up to a whole millisecond, so a
    /// zero duration expires at once rather than meaning "never" as the schema's zero does.
    pub fn expires_in(mut self, after: Duration) -> Self {
        self.expires_in = Some(after);
        self
    }
}

impl<C: FromClientHook + HasTypeId> Attenuate<C> {
    /// The narrowed copy of the capability.
    ///
    /// Fails when the session has no attenuator (only a cell's own session holds one), when
    /// a name given to [`allow`](Attenuate::allow) is not a method of `C`'s interface, or
    /// as the node's `Attenuator.attenuate` does.
    pub async fn build(self) -> Result<C, capnp::Error> {
        Ok(self.send().await?.0)
    }

    /// The narrowed copy of the capability and a [`Revoker`] that takes it back; fails as
    /// [`build`](Attenuate::build) does.
    pub async fn revocable(self) -> Result<(C, Revoker), capnp::Error> {
        let (cap, client) = self.send().await?;
        Ok((cap, Revoker { client }))
    }

    /// Asks the attenuator: the copy and its revoker.
    async fn send(self) -> Result<(C, revoker::Client), capnp::Error> {
        let attenuator = self.attenuator.clone().ok_or_else(|| {
            capnp::Error::failed(
                "attenuate: this session holds no attenuator (the node gives one to its own \
                 cells' sessions only)"
                    .into(),
            )
        })?;
        let allow = self.resolve()?;
        let mut request = attenuator.attenuate_request();
        {
            let mut params = request.get();
            params
                .reborrow()
                .init_cap()
                .set_as_capability(self.cap.into_client_hook());
            encode(
                params.init_policy(),
                allow.as_deref(),
                self.per_second,
                self.expires_in,
            )?;
        }
        let reply = request.send().promise.await?;
        let reply = reply.get()?;
        Ok((reply.get_cap().get_as_capability()?, reply.get_revoker()?))
    }

    /// The allowed methods by number, names looked up in `C`'s interface; `None`: every
    /// method.
    fn resolve(&self) -> Result<Option<Vec<(u64, u16)>>, capnp::Error> {
        let Some(allow) = &self.allow else {
            return Ok(None);
        };
        let interface = C::TYPE_ID;
        allow
            .iter()
            .map(|allowed| match allowed {
                Allowed::Id(interface, method) => Ok((*interface, *method)),
                Allowed::Name(name) => methods::method_id(interface, name)
                    .map(|method| (interface, method))
                    .ok_or_else(|| unknown_method(interface, name)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

/// The error for a name `allow` cannot find in the interface `interface`.
fn unknown_method(interface: u64, name: &str) -> capnp::Error {
    capnp::Error::failed(match methods::interface_name(interface) {
        Some(known) => format!("attenuate: interface {known} has no method `{name}`"),
        None => format!(
            "attenuate: cannot allow `{name}`: interface {interface:#018x} is not in \
             capnp/*.capnp (allow its methods by number with allow_ids)"
        ),
    })
}

/// Writes a policy: `allow` `None` leaves the list unset (every method).
fn encode(
    mut policy: policy::Builder<'_>,
    allow: Option<&[(u64, u16)]>,
    per_second: u32,
    expires_in: Option<Duration>,
) -> Result<(), capnp::Error> {
    if let Some(allow) = allow {
        let len = u32::try_from(allow.len())
            .map_err(|_| capnp::Error::failed("attenuate: too many allowed methods".into()))?;
        let mut list = policy.reborrow().init_allow(len);
        for (i, (interface, method)) in (0..len).zip(allow) {
            let mut out = list.reborrow().get(i);
            out.set_interface_id(*interface);
            out.set_method_id(*method);
        }
    }
    policy.set_per_second(per_second);
    policy.set_expires_in_ms(expires_in.map_or(0, millis_rounded_up));
    Ok(())
}

/// `after` in whole milliseconds, rounded up, at least 1 (0 would mean "never"), saturating.
fn millis_rounded_up(after: Duration) -> u64 {
    let millis = after.as_nanos().div_ceil(1_000_000).max(1);
    u64::try_from(millis).unwrap_or(u64::MAX)
}

/// Takes back a capability made [revocable](Attenuate::revocable), and everything obtained
/// through it.
#[derive(Clone)]
pub struct Revoker {
    client: revoker::Client,
}

impl Revoker {
    /// Revokes: every call on the capability (and on what it gave) fails with
    /// [`capnp::ErrorKind::Disconnected`] ("revoked") from now on, including calls in
    /// flight. Revoking twice is harmless.
    pub async fn revoke(&self) -> Result<(), capnp::Error> {
        self.client.revoke_request().send().promise.await?;
        Ok(())
    }

    /// The `Revoker` capability, e.g. to hand the power to revoke on (as an export).
    pub fn client(&self) -> revoker::Client {
        self.client.clone()
    }
}

impl fmt::Debug for Revoker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revoker").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;

    use futures::executor::block_on;

    use super::super::{counter, host, membrane, watcher};
    use super::*;

    /// A policy as the attenuator received it.
    #[derive(Debug, Default, PartialEq)]
    struct Received {
        allow: Option<Vec<(u64, u16)>>,
        per_second: u32,
        expires_in_ms: u64,
    }

    /// An Attenuator that records each policy and hands the capability back as it is, with
    /// a Revoker that counts its calls.
    #[derive(Default)]
    struct Fake {
        policies: RefCell<Vec<Received>>,
        revoked: Rc<Cell<u32>>,
    }

    impl attenuator::Server for Fake {
        async fn attenuate(
            self: Rc<Self>,
            params: attenuator::AttenuateParams,
            mut results: attenuator::AttenuateResults,
        ) -> Result<(), capnp::Error> {
            let params = params.get()?;
            let policy = params.get_policy()?;
            let allow = if policy.has_allow() {
                let list = policy.get_allow()?;
                Some(
                    list.iter()
                        .map(|m| (m.get_interface_id(), m.get_method_id()))
                        .collect(),
                )
            } else {
                None
            };
            self.policies.borrow_mut().push(Received {
                allow,
                per_second: policy.get_per_second(),
                expires_in_ms: policy.get_expires_in_ms(),
            });
            let cap: capnp::capability::Client = params.get_cap().get_as_capability()?;
            let mut results = results.get();
            results.reborrow().init_cap().set_as_capability(cap.hook);
            results.set_revoker(capnp_rpc::new_client(FakeRevoker(self.revoked.clone())));
            Ok(())
        }
    }

    struct FakeRevoker(Rc<Cell<u32>>);

    impl revoker::Server for FakeRevoker {
        async fn revoke(
            self: Rc<Self>,
            _: revoker::RevokeParams,
            _: revoker::RevokeResults,
        ) -> Result<(), capnp::Error> {
            self.0.set(self.0.get() + 1);
            Ok(())
        }
    }

    /// A Counter that answers `get` with 7.
    struct Seven;

    impl counter::Server for Seven {
        async fn get(
            self: Rc<Self>,
            _: counter::GetParams,
            mut results: counter::GetResults,
        ) -> Result<(), capnp::Error> {
            results.get().set_value(7);
            Ok(())
        }
    }

    /// A fake attenuator, its client, and a Counter to narrow.
    fn fixture() -> (Rc<Fake>, attenuator::Client, counter::Client) {
        let fake = Rc::new(Fake::default());
        let client: attenuator::Client = capnp_rpc::new_client_from_rc(fake.clone());
        (fake, client, capnp_rpc::new_client(Seven))
    }

    /// The Counter's type id, as its schema gives it.
    const COUNTER: u64 = <counter::Client as HasTypeId>::TYPE_ID;

    #[test]
    fn the_table_numbers_methods_as_the_schemas_do() {
        assert_eq!(methods::method_id(COUNTER, "increment"), Some(0));
        assert_eq!(methods::method_id(COUNTER, "get"), Some(1));
        assert_eq!(methods::method_id(COUNTER, "fork"), Some(2));
        assert_eq!(methods::method_id(COUNTER, "watch"), Some(3));
        assert_eq!(methods::method_id(COUNTER, "nope"), None);
        assert_eq!(
            methods::method_id(<watcher::Client as HasTypeId>::TYPE_ID, "changed"),
            Some(0)
        );
        assert_eq!(
            methods::method_id(<membrane::Client as HasTypeId>::TYPE_ID, "graft"),
            Some(0)
        );
        assert_eq!(
            methods::method_id(<host::Client as HasTypeId>::TYPE_ID, "id"),
            Some(0)
        );
        assert_eq!(methods::interface_name(COUNTER), Some("Counter"));
        assert_eq!(methods::interface_name(1), None);
    }

    #[test]
    fn names_and_limits_reach_the_policy() -> Result<(), capnp::Error> {
        let (fake, attenuator, counter) = fixture();
        let narrowed = block_on(
            attenuate(&attenuator, counter)
                .allow(["get", "increment"])
                .allow_ids([(0x1234, 9)])
                .per_second(5)
                .expires_in(Duration::from_millis(1500))
                .build(),
        )?;
        assert_eq!(
            *fake.policies.borrow(),
            [Received {
                allow: Some(vec![(COUNTER, 1), (COUNTER, 0), (0x1234, 9)]),
                per_second: 5,
                expires_in_ms: 1500,
            }]
        );
        // What came back is the capability, typed.
        let value = block_on(async {
            let reply = narrowed.get_request().send().promise.await?;
            Ok::<_, capnp::Error>(reply.get()?.get_value())
        })?;
        assert_eq!(value, 7);
        Ok(())
    }

    #[test]
    fn unset_limits_are_the_schemas_zeroes() -> Result<(), capnp::Error> {
        let (fake, attenuator, counter) = fixture();
        block_on(attenuate(&attenuator, counter.clone()).build())?;
        block_on(
            attenuate(&attenuator, counter.clone())
                .allow(Vec::<String>::new())
                .build(),
        )?;
        block_on(
            attenuate(&attenuator, counter)
                .expires_in(Duration::from_nanos(1))
                .build(),
        )?;
        assert_eq!(
            *fake.policies.borrow(),
            [
                Received::default(),
                Received {
                    allow: Some(Vec::new()),
                    ..Received::default()
                },
                Received {
                    expires_in_ms: 1,
                    ..Received::default()
                },
            ],
            "no allow: unset; allow([]): an empty list; a tiny expiry: 1 ms, not never"
        );
        Ok(())
    }

    #[test]
    fn an_unknown_name_fails_naming_the_method_and_interface() {
        let (fake, attenuator, counter) = fixture();
        let refused = block_on(
            attenuate(&attenuator, counter)
                .allow(["get", "reset"])
                .build(),
        );
        let message = refused.err().map(|e| e.extra).unwrap_or_default();
        assert!(message.contains("`reset`"), "{message}");
        assert!(message.contains("Counter"), "{message}");
        assert!(fake.policies.borrow().is_empty(), "nothing was asked");
    }

    #[test]
    fn a_session_without_an_attenuator_says_so() {
        let counter: counter::Client = capnp_rpc::new_client(Seven);
        let refused = block_on(Attenuate::new(None, counter).allow(["get"]).build());
        let message = refused.err().map(|e| e.extra).unwrap_or_default();
        assert!(message.contains("no attenuator"), "{message}");
    }

    #[test]
    fn the_revoker_revokes() -> Result<(), capnp::Error> {
        let (fake, attenuator, counter) = fixture();
        let (_, revoker) = block_on(attenuate(&attenuator, counter).revocable())?;
        block_on(revoker.revoke())?;
        block_on(revoker.client().revoke_request().send().promise)?;
        assert_eq!(fake.revoked.get(), 2);
        Ok(())
    }
}
