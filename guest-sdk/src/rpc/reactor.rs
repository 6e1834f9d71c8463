//! A single-threaded executor whose only way to wait is `wasi:io/poll.poll`.
//!
//! Futures that wait for a WASI stream or any other [`Pollable`] register it here with the
//! waker of the task that waits ([`register`]). [`block_on`] runs the tasks until none can
//! progress, then blocks in one `poll` on every registered pollable, wakes the tasks whose
//! pollables are ready (forgetting those registrations: a task that still has to wait
//! registers again when it is polled) and runs them again. Nothing is ever polled in a
//! loop: the cell sleeps in the host until something it waits for happens.
//!
//! When no task can progress and no pollable is registered, nothing can ever wake a task:
//! [`block_on`] returns [`RpcError::Deadlock`] rather than sleeping forever.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::executor::{LocalPool, LocalSpawner};
use futures::task::{ArcWake, LocalSpawnExt as _};
use wasip2::io::poll::{Pollable, poll};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};

use super::RpcError;

/// One pollable some task waits for, with the wakers of the tasks waiting.
struct Registration {
    pollable: Rc<Pollable>,
    wakers: Vec<Waker>,
}

thread_local! {
    /// Every pollable a task waits for now.
    static REGISTERED: RefCell<Vec<Registration>> = const { RefCell::new(Vec::new()) };
    /// The pool of the running [`block_on`], for [`spawn`].
    static SPAWNER: RefCell<Option<LocalSpawner>> = const { RefCell::new(None) };
    /// Whether a [`block_on`] runs (they do not nest).
    static RUNNING: Cell<bool> = const { Cell::new(false) };
}

/// Wakes the task of `cx` once the pollable in `slot` is ready, making it with `subscribe`
/// the first time: a stream subscribes once and keeps its pollable.
pub(crate) fn wait_on(
    slot: &mut Option<Rc<Pollable>>,
    subscribe: impl FnOnce() -> Pollable,
    cx: &Context<'_>,
) {
    let pollable = slot.get_or_insert_with(|| Rc::new(subscribe()));
    register(pollable, cx.waker());
}

/// Wakes `waker` once `pollable` is ready (at the next time [`block_on`] waits).
pub(crate) fn register(pollable: &Rc<Pollable>, waker: &Waker) {
    REGISTERED.with_borrow_mut(|registered| {
        match registered
            .iter_mut()
            .find(|r| Rc::ptr_eq(&r.pollable, pollable))
        {
            Some(r) => {
                if !r.wakers.iter().any(|w| w.will_wake(waker)) {
                    r.wakers.push(waker.clone());
                }
            }
            None => registered.push(Registration {
                pollable: pollable.clone(),
                wakers: vec![waker.clone()],
            }),
        }
    });
}

/// Forgets `pollable`: nobody waits for it any more (its owner is about to drop it, which
/// must happen before the stream it belongs to is dropped).
pub(crate) fn deregister(pollable: &Rc<Pollable>) {
    // `try_with`: a thread-local being destroyed has nothing left to forget.
    let _ = REGISTERED.try_with(|registered| {
        if let Ok(mut registered) = registered.try_borrow_mut() {
            registered.retain(|r| !Rc::ptr_eq(&r.pollable, pollable));
        }
    });
}

/// Blocks in `wasi:io/poll.poll` until at least one registered pollable is ready, and wakes
/// the tasks waiting for the ready ones. False when nothing is registered.
fn block_in_poll() -> bool {
    let ready = REGISTERED.with_borrow_mut(|registered| {
        if registered.is_empty() {
            return None;
        }
        let pollables: Vec<&Pollable> = registered.iter().map(|r| &*r.pollable).collect();
        let mut ready = poll(&pollables);
        drop(pollables);
        // Take the ready ones out, from the back so that the other indices stay valid.
        ready.sort_unstable();
        ready.dedup();
        let mut taken = Vec::with_capacity(ready.len());
        for i in ready.into_iter().rev() {
            if let Ok(i) = usize::try_from(i)
                && i < registered.len()
            {
                taken.push(registered.swap_remove(i));
            }
        }
        Some(taken)
    });
    let Some(ready) = ready else {
        return false;
    };
    // Wake outside the borrow: a waker may run code that registers.
    for registration in ready {
        for waker in registration.wakers {
            waker.wake();
        }
    }
    true
}

/// The waker of the future [`block_on`] runs itself: a flag.
struct Flag(AtomicBool);

impl ArcWake for Flag {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.store(true, Ordering::SeqCst);
    }
}

/// Clears the executor's thread-locals when [`block_on`] ends, even by a panic.
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        SPAWNER.set(None);
        RUNNING.set(false);
    }
}

/// Runs `future` to completion on this thread, together with every task [`spawn`]ed while
/// it runs, and returns its output.
///
/// The executor runs every task that can progress; when none can, it blocks in
/// `wasi:io/poll.poll` on every pollable a task waits for (a connection's streams, a
/// [`wait`](super::wait)ed pollable), so a waiting cell costs no CPU. When nothing can
/// progress and nothing is waited for, nothing could ever wake `future`: it returns
/// [`RpcError::Deadlock`] instead of hanging. Spawned tasks still running when `future`
/// completes are dropped (a connection's driver with them, which closes it).
///
/// Calls do not nest: inside a task, `.await` instead. A nested call returns
/// [`RpcError::Nested`].
pub fn block_on<F: Future>(future: F) -> Result<F::Output, RpcError> {
    if RUNNING.replace(true) {
        return Err(RpcError::Nested);
    }
    let running = Running;
    let mut pool = LocalPool::new();
    SPAWNER.set(Some(pool.spawner()));

    let flag = Arc::new(Flag(AtomicBool::new(true)));
    let waker = futures::task::waker(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    let result = loop {
        if flag.0.swap(false, Ordering::SeqCst)
            && let Poll::Ready(output) = future.as_mut().poll(&mut cx)
        {
            break Ok(output);
        }
        pool.run_until_stalled();
        if flag.0.load(Ordering::SeqCst) {
            continue;
        }
        // Nothing can progress until a pollable is ready.
        if !block_in_poll() {
            break Err(RpcError::Deadlock);
        }
    };
    // The tasks (and the streams they own) go first, then whatever they left registered.
    drop(pool);
    drop(running);
    REGISTERED.with_borrow_mut(Vec::clear);
    result
}

/// Runs `task` alongside the future of the running [`block_on`], until it completes or
/// that `block_on` returns.
///
/// # Panics
///
/// Outside [`block_on`] (there is no executor to run the task on).
pub fn spawn(task: impl Future<Output = ()> + 'static) {
    SPAWNER.with_borrow(|spawner| {
        spawner
            .as_ref()
            .expect("ww::rpc::spawn outside ww::rpc::block_on")
            .spawn_local(task)
            .expect("the executor of ww::rpc::block_on has stopped");
    });
}

/// Waits until `pollable` is ready, letting the other tasks of [`block_on`] run meanwhile.
///
/// Any WASI pollable works: a clock's
/// (`wasip2::clocks::monotonic_clock::subscribe_duration`), a child cell's
/// ([`crate::process::Child::pollable`] gives a borrowed one; subscribe anew for an owned
/// one), a stream's.
pub fn wait(pollable: Pollable) -> Wait {
    Wait {
        pollable: Rc::new(pollable),
    }
}

/// Waits for `duration` (a `wasi:clocks/monotonic-clock` pollable), letting the other tasks
/// of [`block_on`] run meanwhile.
pub fn sleep(duration: Duration) -> Wait {
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    wait(wasip2::clocks::monotonic_clock::subscribe_duration(nanos))
}

/// The future of [`wait`].
#[must_use = "a future does nothing unless awaited"]
pub struct Wait {
    pollable: Rc<Pollable>,
}

impl std::fmt::Debug for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wait").finish_non_exhaustive()
    }
}

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.pollable.ready() {
            Poll::Ready(())
        } else {
            register(&self.pollable, cx.waker());
            Poll::Pending
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        deregister(&self.pollable);
    }
}

/// A WASI stream error as an I/O error: a closed stream is a broken pipe.
fn io_error(error: StreamError) -> io::Error {
    crate::io::io_error(error)
}

/// [`futures::io::AsyncRead`] over a WASI [`InputStream`], driven by [`block_on`].
///
/// A read takes what the stream has (`read`, which never blocks); when it has nothing yet,
/// the task waits for the stream's pollable. End of stream reads as 0 bytes.
pub struct AsyncInputStream {
    /// The stream's pollable, made once; dropped before the stream (WASI requires it).
    pollable: Option<Rc<Pollable>>,
    stream: InputStream,
}

impl std::fmt::Debug for AsyncInputStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncInputStream").finish_non_exhaustive()
    }
}

impl AsyncInputStream {
    /// An async reader of `stream`.
    pub fn new(stream: InputStream) -> AsyncInputStream {
        AsyncInputStream {
            pollable: None,
            stream,
        }
    }

    fn wait(&mut self, cx: &Context<'_>) {
        wait_on(&mut self.pollable, || self.stream.subscribe(), cx);
    }
}

impl futures::io::AsyncRead for AsyncInputStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        match self.stream.read(len) {
            Ok(bytes) if bytes.is_empty() => {
                self.wait(cx);
                Poll::Pending
            }
            Ok(bytes) => {
                let n = bytes.len().min(buf.len());
                buf[..n].copy_from_slice(&bytes[..n]);
                Poll::Ready(Ok(n))
            }
            Err(StreamError::Closed) => Poll::Ready(Ok(0)),
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }
}

impl Drop for AsyncInputStream {
    fn drop(&mut self) {
        if let Some(pollable) = self.pollable.take() {
            deregister(&pollable);
        }
    }
}

/// [`futures::io::AsyncWrite`] over a WASI [`OutputStream`], driven by [`block_on`].
///
/// A write passes as much as the stream permits (`check-write`, then `write`); when it
/// permits nothing, the task waits for the stream's pollable. A flush requests one
/// (`flush`) and completes once the stream accepts writes again, which `wasi:io` promises
/// only after everything written before has been passed on.
pub struct AsyncOutputStream {
    /// The stream's pollable, made once; dropped before the stream (WASI requires it).
    pollable: Option<Rc<Pollable>>,
    /// A flush was requested and has not been seen to complete.
    flushing: bool,
    stream: OutputStream,
}

impl std::fmt::Debug for AsyncOutputStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncOutputStream").finish_non_exhaustive()
    }
}

impl AsyncOutputStream {
    /// An async writer to `stream`.
    pub fn new(stream: OutputStream) -> AsyncOutputStream {
        AsyncOutputStream {
            pollable: None,
            flushing: false,
            stream,
        }
    }

    fn wait(&mut self, cx: &Context<'_>) {
        wait_on(&mut self.pollable, || self.stream.subscribe(), cx);
    }

    /// Completes a requested flush: ready once `check-write` permits a write again.
    fn poll_flushed(&mut self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        match self.stream.check_write() {
            Ok(0) => {
                self.wait(cx);
                Poll::Pending
            }
            Ok(_) => {
                self.flushing = false;
                Poll::Ready(Ok(()))
            }
            Err(e) => {
                self.flushing = false;
                Poll::Ready(Err(io_error(e)))
            }
        }
    }
}

impl futures::io::AsyncWrite for AsyncOutputStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        match self.stream.check_write() {
            Ok(0) => {
                self.wait(cx);
                Poll::Pending
            }
            Ok(room) => {
                let n = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
                // Whatever flush was pending has completed, or the stream would permit
                // nothing.
                self.flushing = false;
                match self.stream.write(&buf[..n]) {
                    Ok(()) => Poll::Ready(Ok(n)),
                    Err(e) => Poll::Ready(Err(io_error(e))),
                }
            }
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.flushing {
            if let Err(e) = self.stream.flush() {
                return Poll::Ready(Err(io_error(e)));
            }
            self.flushing = true;
        }
        self.poll_flushed(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The stream closes when dropped; what matters before is that nothing is lost.
        self.poll_flush(cx)
    }
}

impl Drop for AsyncOutputStream {
    fn drop(&mut self) {
        if let Some(pollable) = self.pollable.take() {
            deregister(&pollable);
        }
    }
}
