//! The membrane: the one mechanism through which every capability crossing the node's
//! boundary passes, in both directions.
//!
//! A [`Membrane`] is a [`Policy`] (what revokes it, when it expires, how fast it may be
//! called) and the wrappers it has made. [`Membrane::wrap`] puts a capability behind a
//! [`Wrapper`]; a call on a wrapper is checked against the policy and copied to the
//! capability inside, and *every capability the call carries* is passed through the same
//! membrane on its way: the parameters' capabilities inward (wrapped in the reverse
//! direction), the results' capabilities outward (wrapped in the same direction), wherever
//! they sit in the message (fields, structs, lists) because the copy goes through the
//! message's capability table, not through a schema. A capability obtained by pipelining is
//! one of a call's results, so it is wrapped too: capnp-rpc resolves a pipelined call on a
//! local capability against the results the wrapper wrote. A wrapper passed back across the
//! membrane in the opposite direction is unwrapped, so the inside sees its own capability
//! again (and the outside its own), as in Cap'n Proto's C++ `capnp/membrane.h`, the design
//! this follows.
//!
//! When the policy ends (the session's epoch advanced, the revoker was called, the expiry
//! passed), every call through every wrapper of the membrane fails, calls in flight
//! included, and the wrappers drop what they hold, so that a connection a session dialed
//! (`Host.connect`) closes with it. Refusals are typed by the exception's kind
//! (`capnp/membrane.capnp` lists them): DISCONNECTED for revoked, expired and stale epoch,
//! OVERLOADED for the rate, UNIMPLEMENTED for a method outside the allow-list.
//!
//! Nothing else in the crate checks an epoch, a revoker, an expiry, a rate or an allow-list:
//! a session's capabilities are plain servers, made safe by being handed out through a
//! session's membrane (`rpc::node`), and an attenuated capability is a wrapper of a
//! membrane of its own (`rpc::attenuate`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Weak;

use capnp::capability::{
    DispatchCallResult, DynClientHook, FromClientHook, FromServer, Params, Promise, Rc, Results,
    Server,
};
use capnp::message;
use capnp::private::capability::{ParamsHook, PipelineHook, PipelineOp, RequestHook, ResultsHook};
use capnp::traits::{Imbue, ImbueMut};
use futures::FutureExt as _;
use futures::channel::oneshot;
use futures::future::{LocalBoxFuture, Shared};
use tokio::sync::watch;
use tokio::time::Instant;

use super::epoch::SessionEpoch;

/// The capability table a message's capabilities are copied into.
type CapTable = Vec<Option<Box<DynClientHook>>>;

/// A method of an interface, as Cap'n Proto numbers it: (interface id, method ordinal).
pub type MethodId = (u64, u16);

/// What a membrane enforces on every call through it.
#[derive(Default)]
pub struct Policy {
    /// The session's epoch: once the node's moves on, everything is revoked.
    pub epoch: Option<SessionEpoch>,
    /// Set to `true` by the revoker: everything is revoked.
    pub revoked: Option<watch::Receiver<bool>>,
    /// After this instant, everything is expired.
    pub expires: Option<Instant>,
    /// At most this many calls per second, through all wrappers of the membrane together
    /// (outward calls only: the inside calling what the outside passed in is not counted).
    pub per_second: Option<u32>,
    /// Counts that include this membrane for as long as it lives (the node counts its
    /// sessions and attenuations so).
    pub tally: Vec<Tally>,
}

/// A count of live membranes: each membrane made with it in its [`Policy::tally`] counts once
/// until it is dropped. Cheap to clone; every clone is the same count.
#[derive(Clone, Debug, Default)]
pub struct Tally(Rc<std::cell::Cell<usize>>);

impl Tally {
    /// The membranes alive that hold it.
    pub fn count(&self) -> usize {
        self.0.get()
    }
}

/// One membrane's place in a [`Tally`], given back when it drops.
struct Counted(Rc<std::cell::Cell<usize>>);

impl Counted {
    fn new(tally: &Tally) -> Counted {
        tally.0.set(tally.0.get().saturating_add(1));
        Counted(tally.0.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// The error of a call on a revoked capability.
pub fn revoked() -> capnp::Error {
    capnp::Error::disconnected("revoked: this capability was revoked by whoever granted it".into())
}

/// The error of a call on an expired capability.
pub fn expired() -> capnp::Error {
    capnp::Error::disconnected("expired: this capability's expiry has passed".into())
}

/// A token bucket: `rate` calls per second, `rate` at once.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        Bucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: Instant::now(),
        }
    }

    /// Takes one call's token, or refuses with OVERLOADED.
    fn take(&mut self) -> Result<(), capnp::Error> {
        let now = Instant::now();
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(capnp::Error::overloaded(format!(
                "rate limited: this capability allows {} calls per second; retry later",
                self.rate
            )))
        }
    }
}

/// The state every wrapper of one membrane shares.
struct Inner {
    policy: Policy,
    bucket: Option<RefCell<Bucket>>,
    /// The membrane's live wrappers by their identity (`Wrapper::as_ptr`), to unwrap one
    /// that comes back across in the other direction and to empty them all on revocation.
    wrappers: RefCell<HashMap<usize, Weak<Wrapper>>>,
    /// Resolves, with the reason, once the policy ends: made once, raced by every call in
    /// flight (a clone each) and by the task that empties the wrappers. `None` when the
    /// policy cannot end.
    ended: Option<Shared<LocalBoxFuture<'static, capnp::Error>>>,
    /// Dropped with the membrane: ends the task that empties the wrappers on revocation.
    _alive: Option<oneshot::Sender<()>>,
    /// Its places in the counts of [`Policy::tally`].
    _counted: Vec<Counted>,
}

/// A membrane: a policy and the capabilities wrapped through it. Cheap to clone; every clone
/// is the same membrane. Lives on the RPC system's thread.
#[derive(Clone)]
pub struct Membrane {
    inner: Rc<Inner>,
}

impl Membrane {
    /// A membrane enforcing `policy`. When the policy can end (an epoch, a revoker or an
    /// expiry), a task on the current `LocalSet` empties every wrapper the moment it does,
    /// so revoked capabilities let go of what they hold without waiting for a call.
    pub fn new(policy: Policy) -> Membrane {
        let ends = policy.epoch.is_some() || policy.revoked.is_some() || policy.expires.is_some();
        let (alive, dropped) = oneshot::channel::<()>();
        let bucket = policy
            .per_second
            .map(|rate| RefCell::new(Bucket::new(rate)));
        let ended = ends.then(|| ended(&policy).boxed_local().shared());
        let counted = policy.tally.iter().map(Counted::new).collect();
        let membrane = Membrane {
            inner: Rc::new(Inner {
                policy,
                bucket,
                wrappers: RefCell::default(),
                ended: ended.clone(),
                _alive: ends.then_some(alive),
                _counted: counted,
            }),
        };
        if let Some(ended) = ended {
            let weak = Rc::downgrade(&membrane.inner);
            tokio::task::spawn_local(async move {
                tokio::select! {
                    _ = ended => {
                        if let Some(inner) = weak.upgrade() {
                            Membrane { inner }.empty();
                        }
                    }
                    // The membrane is gone, and every wrapper with it.
                    _ = dropped => {}
                }
            });
        }
        membrane
    }

    /// `cap` behind this membrane, outward: handed to whoever is outside it.
    pub fn wrap<C: FromClientHook>(&self, cap: C) -> C {
        C::new(self.pass(cap.into_client_hook(), false))
    }

    /// An untyped capability crossing this membrane outward, as [`Membrane::wrap`].
    pub fn pass_out(&self, cap: Box<DynClientHook>) -> Box<DynClientHook> {
        self.pass(cap, false)
    }

    /// `cap` behind this membrane, outward, callable only on the methods in `allow` (the
    /// capabilities its methods return are not narrowed further: allowing a method grants
    /// what it returns).
    pub fn wrap_allowing<C: FromClientHook>(&self, cap: C, allow: Vec<MethodId>) -> C {
        C::new(self.wrapper(cap.into_client_hook(), false, Some(Rc::from(allow))))
    }

    /// `Ok` while the policy holds; the reason once it ended (checked in the order stale
    /// epoch, revoked, expired).
    fn check(&self) -> Result<(), capnp::Error> {
        let policy = &self.inner.policy;
        if let Some(epoch) = &policy.epoch {
            epoch.check()?;
        }
        if policy.revoked.as_ref().is_some_and(|r| *r.borrow()) {
            return Err(revoked());
        }
        if policy.expires.is_some_and(|at| Instant::now() >= at) {
            return Err(expired());
        }
        Ok(())
    }

    /// Drops what every wrapper of the membrane holds: it is revoked.
    fn empty(&self) {
        // Collected first: dropping a capability may drop wrappers, which unregister.
        let wrappers: Vec<Weak<Wrapper>> = self.inner.wrappers.borrow().values().cloned().collect();
        for wrapper in wrappers {
            if let Some(wrapper) = wrapper.upgrade() {
                let held = wrapper.inner.borrow_mut().take();
                drop(held);
            }
        }
    }

    /// `cap` crossing this membrane: outward when `!reverse`, inward when `reverse`. A
    /// wrapper of this membrane crossing back the other way is unwrapped.
    fn pass(&self, cap: Box<DynClientHook>, reverse: bool) -> Box<DynClientHook> {
        let cap = cap.get_resolved().unwrap_or(cap);
        let ptr = cap.get_ptr();
        let known = self
            .inner
            .wrappers
            .borrow()
            .get(&ptr)
            .and_then(Weak::upgrade);
        // A narrowed wrapper is never unwrapped: what came in as the narrowed capability
        // would go out again as the whole one (through a method that returns what it was
        // given). It crosses as any capability does, and comes back out as itself.
        if let Some(wrapper) = known
            && wrapper.reverse != reverse
            && wrapper.allow.is_none()
            && let Some(inside) = wrapper.inner.borrow().as_ref()
        {
            return inside.add_ref();
        }
        self.wrapper(cap, reverse, None)
    }

    /// A new wrapper of `cap`, registered with the membrane.
    fn wrapper(
        &self,
        cap: Box<DynClientHook>,
        reverse: bool,
        allow: Option<Rc<[MethodId]>>,
    ) -> Box<DynClientHook> {
        let wrapper = Rc::new(Wrapper {
            membrane: self.inner.clone(),
            inner: RefCell::new(Some(cap)),
            reverse,
            allow,
        });
        let ptr = Rc::as_ptr(&wrapper) as usize;
        self.inner
            .wrappers
            .borrow_mut()
            .insert(ptr, Rc::downgrade(&wrapper));
        let client: AnyWrapped = capnp_rpc::new_client_from_rc(wrapper);
        client.into_client_hook()
    }

    /// Whether a call of `method` through `wrapper` may go in now.
    fn admit(&self, wrapper: &Wrapper, method: MethodId) -> Result<(), capnp::Error> {
        if let Err(e) = self.check() {
            self.empty();
            return Err(e);
        }
        if wrapper.reverse {
            return Ok(());
        }
        if let Some(allow) = &wrapper.allow
            && !allow.contains(&method)
        {
            let (interface, method) = method;
            return Err(capnp::Error::unimplemented(format!(
                "not allowed: method {method} of interface {interface:#018x} is outside this \
                 capability's allow-list"
            )));
        }
        if let Some(bucket) = &self.inner.bucket {
            bucket.borrow_mut().take()?;
        }
        Ok(())
    }
}

/// Resolves, with the reason, once `policy` ends; never when it cannot.
fn ended(policy: &Policy) -> impl Future<Output = capnp::Error> + 'static {
    let epoch = policy.epoch.as_ref().map(SessionEpoch::revoked);
    let revoker = policy.revoked.clone();
    let expires = policy.expires;
    async move {
        let epoch = async {
            match epoch {
                Some(revoked) => revoked.await,
                None => std::future::pending().await,
            }
        };
        let revoker = async {
            match revoker {
                Some(mut rx) => match rx.wait_for(|revoked| *revoked).await {
                    Ok(_) => revoked(),
                    // The revoker is gone without revoking: it never will.
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        let expiry = async {
            match expires {
                Some(at) => {
                    tokio::time::sleep_until(at).await;
                    expired()
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            e = epoch => e,
            e = revoker => e,
            e = expiry => e,
        }
    }
}

/// One capability behind a membrane, in one direction.
pub struct Wrapper {
    /// The membrane lives as long as any of its wrappers (it holds them weakly).
    membrane: Rc<Inner>,
    /// The capability inside; `None` once the membrane was revoked.
    inner: RefCell<Option<Box<DynClientHook>>>,
    /// Inward (made for a capability the outside passed in) rather than outward.
    reverse: bool,
    /// The methods callable on this capability, when narrowed.
    allow: Option<Rc<[MethodId]>>,
}

impl Drop for Wrapper {
    fn drop(&mut self) {
        if let Ok(mut wrappers) = self.membrane.wrappers.try_borrow_mut() {
            wrappers.remove(&(self as *const Wrapper as usize));
        }
    }
}

/// The dispatch of a [`Wrapper`] (what capnp-rpc's local client calls).
#[derive(Clone)]
pub struct Dispatch(Rc<Wrapper>);

impl std::ops::Deref for Dispatch {
    type Target = Wrapper;
    fn deref(&self) -> &Wrapper {
        &self.0
    }
}

impl Server for Dispatch {
    fn dispatch_call(
        self,
        interface_id: u64,
        method_id: u16,
        params: Params<capnp::any_pointer::Owned>,
        mut results: Results<capnp::any_pointer::Owned>,
    ) -> DispatchCallResult {
        let failed = |e| DispatchCallResult::new(Promise::err(e), false);
        let membrane = Membrane {
            inner: self.0.membrane.clone(),
        };
        if let Err(e) = membrane.admit(&self.0, (interface_id, method_id)) {
            return failed(e);
        }
        let Some(target) = self.0.inner.borrow().as_ref().map(|c| c.add_ref()) else {
            return failed(revoked());
        };
        let reverse = self.0.reverse;
        let staged = params
            .get()
            .and_then(|from| Staged::new(from, |cap| membrane.pass(cap, !reverse)));
        drop(params);
        let staged = match staged {
            Ok(staged) => staged,
            Err(e) => return failed(e),
        };
        // The staged message is the inner call's parameters, and the inner call writes its
        // results into a message of the membrane's own: no request, response or pipeline of
        // capnp-rpc's in between, and one copy each way.
        let written = Rc::new(RefCell::new(None));
        let inner_results = Box::new(CallResults {
            staged: Some(Staged::empty()),
            written: written.clone(),
        });
        let inner = target.call(interface_id, method_id, Box::new(staged), inner_results);
        let ended = membrane.inner.ended.clone();
        let call = async move {
            inner.await?;
            let Some(mut answer) = written.borrow_mut().take() else {
                return Err(capnp::Error::failed(
                    "the capability behind the membrane answered without results".into(),
                ));
            };
            answer.pass(|cap| membrane.pass(cap, reverse));
            answer.copy_to(results.get())
        };
        let promise = match ended {
            None => Promise::from_future(call),
            Some(ended) => Promise::from_future(async move {
                tokio::select! {
                    biased;
                    done = call => done,
                    e = ended => Err(e),
                }
            }),
        };
        DispatchCallResult::new(promise, false)
    }

    /// The wrapper's own: two wrappers of one capability (two sessions', or two
    /// directions') must stay two, or capnp-rpc would give them one export id on a
    /// connection and let one session reach the other's.
    fn as_ptr(&self) -> usize {
        Rc::as_ptr(&self.0) as usize
    }
}

/// An untyped client of a [`Wrapper`].
struct AnyWrapped {
    hook: Box<DynClientHook>,
}

impl FromClientHook for AnyWrapped {
    fn new(hook: Box<DynClientHook>) -> Self {
        AnyWrapped { hook }
    }
    fn into_client_hook(self) -> Box<DynClientHook> {
        self.hook
    }
    fn as_client_hook(&self) -> &DynClientHook {
        self.hook.as_ref()
    }
}

impl FromServer<Wrapper> for AnyWrapped {
    type Dispatch = Dispatch;
    fn from_server(wrapper: Rc<Wrapper>) -> Dispatch {
        Dispatch(wrapper)
    }
}

/// Copies the message at `from` to `to`, every capability in it replaced by what `pass`
/// makes of it: [`Staged::new`], then [`Staged::copy_to`]. No schema is needed, so a
/// capability anywhere in the message crosses. `from` is traversed once, so its reader's
/// traversal limit holds as it would for the capability itself.
pub fn copy_through(
    from: capnp::any_pointer::Reader<'_>,
    to: capnp::any_pointer::Builder<'_>,
    pass: impl Fn(Box<DynClientHook>) -> Box<DynClientHook>,
) -> capnp::Result<()> {
    Staged::new(from, pass)?.copy_to(to)
}

/// A message copied into one of the membrane's own, which collected its capabilities into
/// a table, each passed through the membrane.
pub struct Staged {
    message: message::Builder<message::HeapAllocator>,
    caps: CapTable,
}

/// The first segment of a staged message, in words: most calls are a few words, and a large
/// one grows the message (the allocator doubles). Not sized from `from.target_size()`: that
/// would traverse a peer's message twice, and one near the size limit would fail its
/// reader's traversal limit the second time.
const FIRST_SEGMENT_WORDS: u32 = 64;

impl Staged {
    /// `from`, copied, its capabilities passed through `pass`.
    pub fn new(
        from: capnp::any_pointer::Reader<'_>,
        pass: impl Fn(Box<DynClientHook>) -> Box<DynClientHook>,
    ) -> capnp::Result<Staged> {
        let allocator = message::HeapAllocator::new().first_segment_words(FIRST_SEGMENT_WORDS);
        let mut message = message::Builder::new(allocator);
        let mut caps: CapTable = Vec::new();
        {
            let mut root: capnp::any_pointer::Builder = message.init_root();
            root.imbue_mut(&mut caps);
            root.set_as(from)?;
        }
        let caps = caps.into_iter().map(|cap| cap.map(&pass)).collect();
        Ok(Staged { message, caps })
    }

    /// An empty message, for a call's results to be written into.
    fn empty() -> Staged {
        let allocator = message::HeapAllocator::new().first_segment_words(FIRST_SEGMENT_WORDS);
        Staged {
            message: message::Builder::new(allocator),
            caps: Vec::new(),
        }
    }

    /// Passes every capability of the message through `pass`.
    fn pass(&mut self, pass: impl Fn(Box<DynClientHook>) -> Box<DynClientHook>) {
        for cap in &mut self.caps {
            if let Some(hook) = cap.take() {
                *cap = Some(pass(hook));
            }
        }
    }

    /// Copies the staged message, with its passed capabilities, to `to`.
    pub fn copy_to(&self, mut to: capnp::any_pointer::Builder<'_>) -> capnp::Result<()> {
        let mut reader: capnp::any_pointer::Reader = self.message.get_root_as_reader()?;
        reader.imbue(&self.caps);
        to.set_as(reader)
    }
}

/// A staged message is the parameters of the call the membrane makes.
impl ParamsHook for Staged {
    fn get(&self) -> capnp::Result<capnp::any_pointer::Reader<'_>> {
        let mut reader: capnp::any_pointer::Reader = self.message.get_root_as_reader()?;
        reader.imbue(&self.caps);
        Ok(reader)
    }
}

/// The results of the call the membrane makes: written into a staged message, which goes to
/// `written` when the callee lets go of them (when its call completes).
struct CallResults {
    staged: Option<Staged>,
    written: Rc<RefCell<Option<Staged>>>,
}

impl Drop for CallResults {
    fn drop(&mut self) {
        if let Some(staged) = self.staged.take() {
            *self.written.borrow_mut() = Some(staged);
        }
    }
}

/// What a callee may not do with the membrane's results: hand its answer to another call.
fn no_tail_call() -> capnp::Error {
    capnp::Error::unimplemented("a capability behind a membrane cannot make a tail call".into())
}

impl ResultsHook for CallResults {
    fn get(&mut self) -> capnp::Result<capnp::any_pointer::Builder<'_>> {
        let Some(staged) = self.staged.as_mut() else {
            return Err(capnp::Error::failed("the results were already sent".into()));
        };
        let mut root: capnp::any_pointer::Builder = staged.message.get_root()?;
        root.imbue_mut(&mut staged.caps);
        Ok(root)
    }

    /// Calls pipelined on the membrane's results wait for the whole answer: there is nothing
    /// to set early.
    fn set_pipeline(&mut self) -> capnp::Result<()> {
        Ok(())
    }

    fn allow_cancellation(&self) {}

    fn tail_call(self: Box<Self>, _: Box<dyn RequestHook>) -> Promise<(), capnp::Error> {
        Promise::err(no_tail_call())
    }

    fn direct_tail_call(
        self: Box<Self>,
        _: Box<dyn RequestHook>,
    ) -> (Promise<(), capnp::Error>, Box<dyn PipelineHook>) {
        (Promise::err(no_tail_call()), Box::new(BrokenPipeline))
    }
}

/// The pipeline of a refused tail call: every capability on it is broken.
struct BrokenPipeline;

impl PipelineHook for BrokenPipeline {
    fn add_ref(&self) -> Box<dyn PipelineHook> {
        Box::new(BrokenPipeline)
    }

    fn get_pipelined_cap(&self, _: &[PipelineOp]) -> Box<DynClientHook> {
        capnp_rpc::new_broken_cap(no_tail_call()).hook
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::rpc::block_on_local as block_on;
    use crate::rpc::epoch::{Epoch, is_stale};
    use crate::rpc::schema::counter_capnp::{counter, watcher};

    /// A Counter whose `fork` gives a new one and `watch` keeps the watcher to call.
    struct Counter {
        value: Cell<u64>,
        watchers: Watchers,
    }

    /// The watchers a Counter was given.
    type Watchers = Rc<RefCell<Vec<watcher::Client>>>;

    fn counter() -> counter::Client {
        watched(Watchers::default())
    }

    fn watched(watchers: Watchers) -> counter::Client {
        capnp_rpc::new_client(Counter {
            value: Cell::new(0),
            watchers,
        })
    }

    impl counter::Server for Counter {
        async fn increment(
            self: Rc<Self>,
            params: counter::IncrementParams,
            mut results: counter::IncrementResults,
        ) -> Result<(), capnp::Error> {
            let value = self.value.get() + params.get()?.get_by();
            self.value.set(value);
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

        async fn fork(
            self: Rc<Self>,
            _: counter::ForkParams,
            mut results: counter::ForkResults,
        ) -> Result<(), capnp::Error> {
            results.get().set_counter(capnp_rpc::new_client(Counter {
                value: Cell::new(self.value.get()),
                watchers: Watchers::default(),
            }));
            Ok(())
        }

        async fn watch(
            self: Rc<Self>,
            params: counter::WatchParams,
            _: counter::WatchResults,
        ) -> Result<(), capnp::Error> {
            self.watchers
                .borrow_mut()
                .push(params.get()?.get_watcher()?);
            Ok(())
        }
    }

    /// A Watcher counting its calls.
    struct Watcher(Rc<Cell<u32>>);

    impl watcher::Server for Watcher {
        async fn changed(
            self: Rc<Self>,
            _: watcher::ChangedParams,
            _: watcher::ChangedResults,
        ) -> Result<(), capnp::Error> {
            self.0.set(self.0.get() + 1);
            Ok(())
        }
    }

    async fn get(counter: &counter::Client) -> Result<u64, capnp::Error> {
        Ok(counter
            .get_request()
            .send()
            .promise
            .await?
            .get()?
            .get_value())
    }

    async fn fork(counter: &counter::Client) -> Result<counter::Client, capnp::Error> {
        counter
            .fork_request()
            .send()
            .promise
            .await?
            .get()?
            .get_counter()
    }

    #[test]
    fn an_epoch_advance_revokes_results_and_pipelined_capabilities() {
        block_on(async {
            let epoch = Epoch::new();
            let membrane = Membrane::new(Policy {
                epoch: Some(epoch.issue()),
                ..Policy::default()
            });
            let outside = membrane.wrap(counter());
            let forked = fork(&outside).await.expect("fork");
            assert_eq!(get(&forked).await.expect("a result works"), 0);
            let pipelined = outside.fork_request().send().pipeline.get_counter();
            assert_eq!(get(&pipelined).await.expect("a pipelined result works"), 0);
            let later = outside.fork_request().send().pipeline.get_counter();

            epoch.advance();
            for cap in [&outside, &forked, &pipelined, &later] {
                let e = get(cap).await.expect_err("revoked");
                assert!(is_stale(&e), "{e}");
            }
        });
    }

    #[test]
    fn capabilities_passed_in_are_revoked_with_the_membrane() {
        block_on(async {
            let (revoke, revoked) = watch::channel(false);
            let membrane = Membrane::new(Policy {
                revoked: Some(revoked),
                ..Policy::default()
            });
            let kept = Watchers::default();
            let outside = membrane.wrap(watched(kept.clone()));
            let calls = Rc::new(Cell::new(0));
            let watcher: watcher::Client = capnp_rpc::new_client(Watcher(calls.clone()));
            let mut request = outside.watch_request();
            request.get().set_watcher(watcher.clone());
            request.send().promise.await.expect("watch");

            // What the inside holds is the outside's watcher behind the membrane.
            let Some(held) = kept.borrow().first().cloned() else {
                panic!("the counter kept no watcher")
            };
            held.changed_request()
                .send()
                .promise
                .await
                .expect("current");
            assert_eq!(calls.get(), 1);
            revoke.send_replace(true);
            let e = held
                .changed_request()
                .send()
                .promise
                .await
                .map(|_| ())
                .expect_err("revoked");
            assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "{e}");
            assert!(e.extra.contains("revoked: "), "{e}");
            assert_eq!(calls.get(), 1, "the call did not reach the outside");
            // Other capabilities are not affected.
            assert!(watcher.changed_request().send().promise.await.is_ok());
        });
    }

    #[test]
    fn a_wrapper_crossing_back_is_unwrapped_unless_narrowed() {
        block_on(async {
            let membrane = Membrane::new(Policy::default());
            let inside = counter();
            let outside = membrane.wrap(inside.clone());
            // Crossing inward, the outside's wrapper becomes the inside's own capability.
            let back = membrane.pass(outside.clone().into_client_hook(), true);
            assert_eq!(back.get_ptr(), inside.client.hook.get_ptr());
            // A narrowed capability passed in stays narrowed, and comes back out as itself.
            let narrowed = membrane.wrap_allowing(inside.clone(), vec![(0, 0)]);
            let passed_in = membrane.pass(narrowed.clone().into_client_hook(), true);
            assert_ne!(passed_in.get_ptr(), inside.client.hook.get_ptr());
            let back_out = membrane.pass(passed_in, false);
            assert_eq!(back_out.get_ptr(), narrowed.client.hook.get_ptr());
            // Two wraps of one capability are two wrappers.
            let again = membrane.wrap(inside.clone());
            assert_ne!(again.client.hook.get_ptr(), outside.client.hook.get_ptr());
        });
    }

    #[test]
    fn a_tally_counts_a_membrane_while_anything_it_wrapped_lives() {
        block_on(async {
            let tally = Tally::default();
            let wrapped = Membrane::new(Policy {
                tally: vec![tally.clone()],
                ..Policy::default()
            })
            .wrap(counter());
            // The membrane handle is gone; its wrapper keeps it, and its count.
            assert_eq!(tally.count(), 1);
            get(&wrapped).await.expect("a call");
            drop(wrapped);
            assert_eq!(tally.count(), 0);
        });
    }

    #[test]
    fn allow_list_rate_and_expiry_refuse_by_kind() {
        block_on(async {
            let membrane = Membrane::new(Policy {
                per_second: Some(3),
                expires: Some(Instant::now() + std::time::Duration::from_millis(300)),
                ..Policy::default()
            });
            let get_only = membrane.wrap_allowing(
                counter(),
                vec![(<counter::Client as capnp::traits::HasTypeId>::TYPE_ID, 1)],
            );
            let mut increment = get_only.increment_request();
            increment.get().set_by(1);
            let e = increment
                .send()
                .promise
                .await
                .map(|_| ())
                .expect_err("not allowed");
            assert_eq!(e.kind, capnp::ErrorKind::Unimplemented, "{e}");
            for _ in 0..3 {
                get(&get_only).await.expect("within the rate");
            }
            let e = get(&get_only).await.expect_err("past the rate");
            assert_eq!(e.kind, capnp::ErrorKind::Overloaded, "{e}");
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            let e = get(&get_only).await.expect_err("expired");
            assert_eq!(e.kind, capnp::ErrorKind::Disconnected, "{e}");
            assert!(e.extra.contains("expired: "), "{e}");
        });
    }
}
