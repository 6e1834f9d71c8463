//! The connection's outgoing side: Cap'n Proto writes into a buffer, a pump passes it on.
//!
//! capnp-rpc flushes after every message. Over a WASI stream a flush completes only once
//! the host has taken the bytes, a round trip through the host's scheduler; waiting for it
//! after every message would let one message through per round trip, however many calls are
//! in flight. So the writer Cap'n Proto sees ([`Writer`]) only appends to a buffer, and its
//! flush completes at once; the [`Pump`], polled by the connection's driver, passes the
//! whole buffer on whenever the stream takes more (`check-write`, `write`, `flush`, wait for
//! the flush), so that the messages queued meanwhile go together. Writes wait while the
//! buffer holds [`LIMIT`] bytes or more: memory stays bounded when the host reads slowly.

use std::cell::RefCell;
use std::io;
use std::mem;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use wasip2::io::poll::Pollable;
use wasip2::io::streams::OutputStream;

use super::reactor::{deregister, wait_on};

/// Writes wait while the buffer holds this many bytes.
const LIMIT: usize = 1 << 20;

/// What the writer and the pump share.
#[derive(Default)]
struct Shared {
    /// Bytes written and not yet taken by the pump.
    buffer: Vec<u8>,
    /// The writer is gone: once the buffer is passed on, the pump is done.
    closed: bool,
    /// Why the stream failed; every later write fails with it.
    failed: Option<(io::ErrorKind, String)>,
    /// The pump, waiting for bytes.
    pump: Option<Waker>,
    /// The writer, waiting for room.
    writer: Option<Waker>,
}

/// The writer half: what Cap'n Proto writes to.
pub(crate) struct Writer {
    shared: Rc<RefCell<Shared>>,
}

/// The pump half: owns the stream.
pub(crate) struct Pump {
    shared: Rc<RefCell<Shared>>,
    /// Bytes taken from the buffer, passed on from `sent` onwards.
    sending: Vec<u8>,
    sent: usize,
    /// A flush was requested and has not been seen to complete.
    flushing: bool,
    /// The stream's pollable, made once; dropped before the stream (WASI requires it).
    pollable: Option<Rc<Pollable>>,
    stream: OutputStream,
}

/// A writer and the pump that passes what it writes on to `stream`.
pub(crate) fn outgoing(stream: OutputStream) -> (Writer, Pump) {
    let shared = Rc::new(RefCell::new(Shared::default()));
    (
        Writer {
            shared: shared.clone(),
        },
        Pump {
            shared,
            sending: Vec::new(),
            sent: 0,
            flushing: false,
            pollable: None,
            stream,
        },
    )
}

fn failure(failed: &(io::ErrorKind, String)) -> io::Error {
    io::Error::new(failed.0, failed.1.clone())
}

impl futures::io::AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut shared = self.shared.borrow_mut();
        if let Some(failed) = &shared.failed {
            return Poll::Ready(Err(failure(failed)));
        }
        if shared.buffer.len() >= LIMIT {
            shared.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        shared.buffer.extend_from_slice(buf);
        if let Some(pump) = shared.pump.take() {
            pump.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }

    /// Complete at once: the pump passes the bytes on as the stream takes them.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &self.shared.borrow().failed {
            Some(failed) => Poll::Ready(Err(failure(failed))),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let mut shared = self.shared.borrow_mut();
        shared.closed = true;
        if let Some(pump) = shared.pump.take() {
            pump.wake();
        }
    }
}

impl Pump {
    /// Waits for the stream's pollable.
    fn wait(&mut self, cx: &Context<'_>) {
        wait_on(&mut self.pollable, || self.stream.subscribe(), cx);
    }

    fn fail(&mut self, error: io::Error) -> Poll<io::Result<()>> {
        let mut shared = self.shared.borrow_mut();
        shared.failed = Some((error.kind(), error.to_string()));
        if let Some(writer) = shared.writer.take() {
            writer.wake();
        }
        Poll::Ready(Err(error))
    }

    /// Passes the buffer on until it is empty and the writer gone (`Ready(Ok)`), or the
    /// stream fails (`Ready(Err)`, and every later write fails).
    pub(crate) fn poll_pump(&mut self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        loop {
            // Nothing may be written while a flush is in progress.
            if self.flushing {
                match self.stream.check_write() {
                    Ok(0) => {
                        self.wait(cx);
                        return Poll::Pending;
                    }
                    Ok(_) => self.flushing = false,
                    Err(e) => return self.fail(crate::io::io_error(e)),
                }
            }
            if self.sent == self.sending.len() {
                let mut shared = self.shared.borrow_mut();
                if shared.buffer.is_empty() {
                    if shared.closed {
                        return Poll::Ready(Ok(()));
                    }
                    shared.pump = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                // Take everything written meanwhile; give the writer the spent buffer to
                // fill, which keeps its capacity.
                self.sending.clear();
                mem::swap(&mut self.sending, &mut shared.buffer);
                self.sent = 0;
                if let Some(writer) = shared.writer.take() {
                    writer.wake();
                }
            }
            let room = match self.stream.check_write() {
                Ok(0) => {
                    self.wait(cx);
                    return Poll::Pending;
                }
                Ok(room) => usize::try_from(room).unwrap_or(usize::MAX),
                Err(e) => return self.fail(crate::io::io_error(e)),
            };
            let end = self.sending.len().min(self.sent.saturating_add(room));
            if let Err(e) = self.stream.write(&self.sending[self.sent..end]) {
                return self.fail(crate::io::io_error(e));
            }
            self.sent = end;
            if let Err(e) = self.stream.flush() {
                return self.fail(crate::io::io_error(e));
            }
            self.flushing = true;
        }
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        if let Some(pollable) = self.pollable.take() {
            deregister(&pollable);
        }
    }
}
