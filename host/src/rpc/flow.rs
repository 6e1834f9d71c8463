//! Flow control under every Cap'n Proto connection: the byte stream a peer speaks on, framed
//! and bounded before capnp-rpc sees a byte of it.
//!
//! capnp's stream reader trusts a frame's segment table: it allocates the whole message as
//! soon as it has read the 8-byte header, so fifty peers announcing 65 MB each held 3.35 GB
//! of the node without sending anything more. capnp-rpc queues its outgoing messages without
//! bound, so a peer that pipelines calls and never reads the replies grows the node until it
//! goes away. This module owns both directions of the stream, for every connection the node
//! serves or dials (`--rpc-socket` clients, pid0's bridge, fd 3 of native cells, `/ww/0.1.0`
//! streams): [`split`] wraps the stream once, in `server::vat_network`.
//!
//! Reading, it parses the stream framing itself ([`parse_header`], a pure function) and
//! refuses a frame whose segment table announces more than [`MAX_SEGMENTS`] segments or more
//! words than the limit (`server::MAX_MESSAGE_WORDS`) from the header alone, before
//! allocating anything; that ends only that connection, with a warning that says why. A
//! frame's bytes are buffered as they arrive (the buffer grows with them, never to the
//! announced size up front) and capnp gets the frame only once it is whole. The bytes a frame
//! may take are reserved before its body is read: from the connection's own
//! [`CONNECTION_ALLOWANCE`] when it fits, otherwise from the node-wide [`Budget`] of
//! [`BUFFER_BUDGET`] bytes shared by all connections. The whole frame is reserved at once, so
//! two half-received frames can never wait on each other; when the budget is spent, the
//! connection stops reading (backpressure) until another frame's bytes are released.
//!
//! It also bounds the work a peer has in flight. Every `Call` and `Bootstrap` the peer sends
//! ([`classify`] reads the `rpc.capnp` message union of the whole frame) is in flight until
//! the `Return` for it has been written to the socket, or until the peer's `Finish` cancels
//! it; the budget a call's frame reserved stays reserved until the call is answered, because
//! capnp-rpc keeps the parameters that long. The writer accepts everything capnp-rpc writes,
//! so capnp-rpc's own queue stays empty, frames it to find the `Return`s, and counts what the
//! socket has not taken yet. With [`MAX_CALLS_IN_FLIGHT`] calls in flight, a new call is held
//! back (and the frames behind it) until one ends; the peer's other messages before it still
//! get through, so that its `Finish` can end one. With [`MAX_UNSENT_BYTES`] not yet taken by
//! the socket, the connection reads nothing until it falls back under. Other connections are
//! served meanwhile. The replies of the calls already in flight can still be written then, so
//! a connection's unsent bytes stay under [`MAX_UNSENT_BYTES`] plus the replies of
//! [`MAX_CALLS_IN_FLIGHT`] calls (a `ByteStream.read` replies with 64 KiB at most).
//!
//! Everything runs on the RPC system's thread (capnp-rpc is `!Send`): the reader, the writer
//! and the pump, the task that writes what the socket did not take at once ([`split`]'s
//! third part), share one `Rc<RefCell<_>>`.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use capnp::Word;
use capnp_rpc::rpc_capnp::{cap_descriptor, message, message_target};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

use super::server::{MAX_MESSAGE_WORDS, reader_options};

/// The most segments a frame may have: one less than the count capnp's own reader refuses
/// (512), so that every frame capnp would read is let through, and none it would refuse.
pub const MAX_SEGMENTS: usize = 511;

/// The longest segment table: the segment count, one size per segment, padded to a word.
pub const MAX_HEADER_BYTES: usize = header_bytes(MAX_SEGMENTS);

/// The largest frame a peer may send, segment table included.
pub const MAX_FRAME_BYTES: usize = MAX_HEADER_BYTES + MAX_MESSAGE_WORDS * 8;

/// The bytes of incoming frames all connections together may hold beyond their own
/// [`CONNECTION_ALLOWANCE`]: twice the largest frame (about 130 MiB), so one frame of the
/// largest size can always be received, however the rest is spent.
pub const BUFFER_BUDGET: usize = 2 * MAX_FRAME_BYTES;

// A frame larger than the whole budget would wait for it forever.
const _: () = assert!(MAX_FRAME_BYTES <= BUFFER_BUDGET);

/// The bytes of incoming frames each connection may hold without drawing on the node-wide
/// budget: enough for ordinary calls (a graft, a `Host.id`, a small write), so that a
/// connection's small calls are served even while others have spent the budget. Connections
/// are bounded elsewhere, so this is bounded too: 1 MiB for the 64 `--rpc-socket` clients,
/// 64 MiB for the 4,096 `/ww/0.1.0` streams `net` lets peers open at most (256 connections,
/// 16 streams each); the buffered readers this replaced held 8 KiB per connection.
pub const CONNECTION_ALLOWANCE: usize = 16 * 1024;

/// The most calls (and bootstrap requests) one connection may have in flight: received, and
/// not yet answered with a `Return` the socket took, nor cancelled by the peer's `Finish`.
pub const MAX_CALLS_IN_FLIGHT: usize = 1024;

/// The most bytes capnp-rpc may have written on one connection that the socket has not taken
/// yet, before the connection stops reading new frames.
pub const MAX_UNSENT_BYTES: usize = 8 << 20;

/// How long the bytes capnp-rpc wrote last (such as an `Abort`) are offered to the socket
/// once the connection has ended, before the socket is closed anyway.
pub const LINGER: Duration = Duration::from_secs(2);

/// The most dependencies [`classify`] records for one call: its target's promised answer
/// and the promised answers among its parameters' capabilities. More is no honest call's.
pub const MAX_DEPENDENCIES: usize = 16;

/// How much a connection reads from its socket at a time, ahead of the frame in hand.
const READ_CHUNK: usize = 16 * 1024;

/// The size a frame's buffer starts at; it doubles as bytes arrive, up to the frame's size.
const FIRST_BUFFER: usize = 4096;

/// The bytes of a segment table for `segments` segments: a word of count and first size,
/// then a size per further segment, padded to a whole word.
const fn header_bytes(segments: usize) -> usize {
    (4 + 4 * segments).next_multiple_of(8)
}

/// Why a frame is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The segment count is past [`MAX_SEGMENTS`].
    #[error("a Cap'n Proto frame of {segments} segments, more than the {MAX_SEGMENTS} allowed")]
    TooManySegments {
        /// The count the header announced.
        segments: u64,
    },

    /// The segments add up to more words than allowed.
    #[error("a Cap'n Proto frame of at least {words} words, more than the {limit} allowed")]
    TooLarge {
        /// The words announced so far (the rest of the table was not waited for).
        words: u64,
        /// The limit.
        limit: usize,
    },

    /// Reading the frame traverses more words than it holds: its pointers alias (several
    /// point at one object). Not valid Cap'n Proto, and no reader detects it: a copy of such
    /// a message (the membrane copies every call's parameters) is as large as the traversal
    /// limit allows, whatever the frame's size.
    #[error("a Cap'n Proto frame of {words} words whose pointers alias: reading it traverses more")]
    Aliased {
        /// The frame's size, segment table included.
        words: usize,
    },

    /// The frame could never be held, however much of the budget were free.
    #[error("a Cap'n Proto frame of {bytes} bytes, more than the whole budget of {budget}")]
    OverBudget {
        /// The frame's size.
        bytes: usize,
        /// The budget's size.
        budget: usize,
    },
}

/// A frame's segment table, read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// How many segments.
    pub segments: usize,
    /// The segment table's size in bytes, padding included.
    pub header_bytes: usize,
    /// The segments' total size in words.
    pub body_words: usize,
}

impl FrameHeader {
    /// The whole frame's size in bytes.
    pub fn total_bytes(&self) -> usize {
        self.header_bytes + self.body_words * 8
    }
}

/// What [`parse_header`] made of the bytes it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The table is not whole: it takes `needed` bytes in all (more may turn out to be
    /// needed once the segment count is known).
    Incomplete {
        /// The bytes the table takes, as far as can be told.
        needed: usize,
    },
    /// The table is whole.
    Complete(FrameHeader),
}

/// Parses the segment table at the start of `bytes` (the stream framing of capnp's
/// `serialize`: a little-endian `u32` segment count minus one, a `u32` size in words per
/// segment, padding to a word). A frame of more than [`MAX_SEGMENTS`] segments or more than
/// `max_words` words is refused as soon as the bytes given show it, before the table is
/// whole. Pure: allocates nothing, reads nothing past the table.
pub fn parse_header(bytes: &[u8], max_words: usize) -> Result<Header, FrameError> {
    let Some(first) = le_u32(bytes, 0) else {
        return Ok(Header::Incomplete { needed: 8 });
    };
    let segments = u64::from(first) + 1;
    if segments > MAX_SEGMENTS as u64 {
        return Err(FrameError::TooManySegments { segments });
    }
    // At most MAX_SEGMENTS, so it fits.
    let segments = segments as usize;
    let needed = header_bytes(segments);
    let mut words: u64 = 0;
    for i in 0..segments {
        let Some(size) = le_u32(bytes, 4 + 4 * i) else {
            break;
        };
        // At most 511 sizes below 2^32: no overflow.
        words += u64::from(size);
        if words > max_words as u64 {
            return Err(FrameError::TooLarge {
                words,
                limit: max_words,
            });
        }
    }
    if bytes.len() < needed {
        return Ok(Header::Incomplete { needed });
    }
    Ok(Header::Complete(FrameHeader {
        segments,
        header_bytes: needed,
        // At most max_words, a usize.
        body_words: words as usize,
    }))
}

/// The little-endian `u32` at `at`, if `bytes` reach that far.
fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// What a whole frame says, as far as flow control cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A call: question `question`, which waits on the answers in `depends_on` (its
    /// target's promised answer and those among its parameters' capabilities, at most
    /// [`MAX_DEPENDENCIES`]).
    Call {
        /// The question's id.
        question: u32,
        /// The questions whose answers it is pipelined on.
        depends_on: Vec<u32>,
    },
    /// A bootstrap request, answered like a call.
    Bootstrap {
        /// The question's id.
        question: u32,
    },
    /// The sender is done with question `question`: it cancels the call if unanswered.
    Finish {
        /// The question's id.
        question: u32,
    },
    /// The answer to question `answer`.
    Return {
        /// The question's id.
        answer: u32,
    },
    /// Anything else, or no RPC message at all (capnp-rpc deals with that).
    Other,
}

/// Reads the `rpc.capnp` message union of a whole frame (segment table included), under the
/// server's reader limits, without copying it. Pure.
pub fn classify(frame: &[Word]) -> Kind {
    classify_message(frame).unwrap_or(Kind::Other)
}

fn classify_message(frame: &[Word]) -> capnp::Result<Kind> {
    let mut bytes = Word::words_to_bytes(frame);
    let message =
        capnp::serialize::read_message_from_flat_slice_no_alloc(&mut bytes, reader_options())?;
    let root: message::Reader<'_> = message.get_root()?;
    Ok(match root.which()? {
        message::Call(call) => {
            let call = call?;
            // The id first: what follows may run into the reader's limits.
            let question = call.get_question_id();
            let mut depends_on = Vec::new();
            if let Ok(target) = call.get_target()
                && let Ok(message_target::PromisedAnswer(Ok(promised))) = target.which()
            {
                depends_on.push(promised.get_question_id());
            }
            if let Ok(params) = call.get_params()
                && let Ok(caps) = params.get_cap_table()
            {
                for cap in caps.iter() {
                    if depends_on.len() >= MAX_DEPENDENCIES {
                        break;
                    }
                    if let Ok(cap_descriptor::ReceiverAnswer(Ok(promised))) = cap.which() {
                        depends_on.push(promised.get_question_id());
                    }
                }
            }
            depends_on.sort_unstable();
            depends_on.dedup();
            Kind::Call {
                question,
                depends_on,
            }
        }
        message::Bootstrap(bootstrap) => Kind::Bootstrap {
            question: bootstrap?.get_question_id(),
        },
        message::Finish(finish) => Kind::Finish {
            question: finish?.get_question_id(),
        },
        message::Return(ret) => Kind::Return {
            answer: ret?.get_answer_id(),
        },
        _ => Kind::Other,
    })
}

/// Refuses a whole frame (segment table included) whose reading would traverse more words
/// than it holds: pointers that alias. A message written by any Cap'n Proto library is a
/// tree, each object reached by one pointer, so reading all of it traverses at most its own
/// words; an attacker's message whose pointers alias is read as many times its size (48 KiB
/// became 32 MiB), which whoever copies it allocates, outside the buffer budget. Any other
/// fault of the message is left to capnp-rpc. Pure; costs one traversal of the frame, bounded
/// by its size.
pub fn check_aliasing(frame: &[Word]) -> Result<(), FrameError> {
    let mut bytes = Word::words_to_bytes(frame);
    let mut options = reader_options();
    options.traversal_limit_in_words(Some(frame.len()));
    let traversed = capnp::serialize::read_message_from_flat_slice_no_alloc(&mut bytes, options)
        .and_then(|message| {
            message
                .get_root::<capnp::any_pointer::Reader<'_>>()?
                .target_size()
        });
    match traversed {
        Err(e) if e.kind == capnp::ErrorKind::ReadLimitExceeded => {
            Err(FrameError::Aliased { words: frame.len() })
        }
        _ => Ok(()),
    }
}

/// The limits one connection is held to. [`Limits::default`] is the node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest frame, in words after the segment table: [`MAX_MESSAGE_WORDS`].
    pub max_frame_words: usize,
    /// [`CONNECTION_ALLOWANCE`].
    pub allowance: usize,
    /// [`MAX_CALLS_IN_FLIGHT`].
    pub max_calls_in_flight: usize,
    /// [`MAX_UNSENT_BYTES`].
    pub max_unsent_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame_words: MAX_MESSAGE_WORDS,
            allowance: CONNECTION_ALLOWANCE,
            max_calls_in_flight: MAX_CALLS_IN_FLIGHT,
            max_unsent_bytes: MAX_UNSENT_BYTES,
        }
    }
}

/// The bytes incoming frames may hold beyond their connections' allowances, shared by the
/// connections given clones of it. [`Budget::node`] is the one every connection of the node
/// draws on.
#[derive(Debug, Clone)]
pub struct Budget {
    semaphore: Arc<Semaphore>,
    bytes: usize,
}

/// The node's budget: one per process, as one `ww` runs one node.
static NODE_BUDGET: LazyLock<Budget> = LazyLock::new(|| Budget::new(BUFFER_BUDGET));

impl Budget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Budget {
        Budget {
            semaphore: Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))),
            bytes,
        }
    }

    /// The node-wide budget of [`BUFFER_BUDGET`] bytes.
    pub fn node() -> Budget {
        NODE_BUDGET.clone()
    }

    /// The bytes not reserved now.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }
}

/// Bytes a frame reserved: from its connection's allowance, or from the budget.
#[derive(Debug)]
struct Held {
    bytes: usize,
    /// `None`: the bytes came from the connection's allowance.
    permit: Option<OwnedSemaphorePermit>,
}

/// A call the peer has in flight.
#[derive(Debug, Default)]
struct Call {
    /// What the call's frame reserved, until the call is answered.
    held: Option<Held>,
    /// capnp-rpc wrote its `Return` (the socket may not have taken it yet).
    answered: bool,
    /// The peer sent `Finish` for it.
    finished: bool,
    /// Calls in flight pipelined on this one's answer: they keep it running in capnp-rpc
    /// even after a `Finish`.
    dependents: usize,
    /// The calls in flight this one is pipelined on.
    parents: Vec<u32>,
}

/// A whole frame capnp-rpc wrote, on its way to the socket.
struct OutFrame {
    frame: FrameBuf,
    written: usize,
    /// The question it answers, if it is a `Return`.
    answer: Option<u32>,
}

/// What the reader, the writer and the pump of one connection share.
struct Conn {
    /// Who the peer is, for logs.
    label: String,
    limits: Limits,
    budget: Budget,
    /// What is left of the connection's own allowance.
    allowance: usize,
    calls: HashMap<u32, Call>,
    outbox: VecDeque<OutFrame>,
    /// Bytes in `outbox` the socket has not taken.
    unsent: usize,
    /// capnp-rpc is done writing.
    closed: bool,
    /// Writing to the socket failed: the connection is over.
    failed: Option<io::ErrorKind>,
    /// The reader is waiting for calls or unsent bytes to fall back under the limits.
    stalled: bool,
    reader: Option<Waker>,
    pump: Option<Waker>,
    /// The socket's write side, until the pump closes it.
    sink: Option<Sink>,
}

impl Conn {
    /// Reserves `bytes` for a frame from the connection's allowance, if they fit in it.
    fn take_allowance(&mut self, bytes: usize) -> Option<Held> {
        let left = self.allowance.checked_sub(bytes)?;
        self.allowance = left;
        Some(Held {
            bytes,
            permit: None,
        })
    }

    fn release(&mut self, held: Held) {
        if held.permit.is_none() {
            self.allowance += held.bytes;
        }
        // A permit returns its bytes to the budget as it drops.
    }

    /// Whether the connection must wait before going on: before reading any frame while too
    /// many bytes are unsent, and, with `call`, before handing capnp a new call while too
    /// many are in flight. If so, the reader is woken when that changes.
    fn must_wait(&mut self, waker: &Waker, call: bool) -> bool {
        let calls = self.calls.len();
        let unsent = self.unsent;
        let too_many = call && calls >= self.limits.max_calls_in_flight;
        if !too_many && unsent < self.limits.max_unsent_bytes {
            if self.stalled {
                self.stalled = false;
                tracing::debug!(peer = %self.label, calls, unsent, "Cap'n Proto peer read again");
            }
            return false;
        }
        if !self.stalled {
            self.stalled = true;
            tracing::debug!(
                peer = %self.label,
                calls,
                unsent,
                max_calls = self.limits.max_calls_in_flight,
                max_unsent = self.limits.max_unsent_bytes,
                "Cap'n Proto peer has too much in flight: not reading it until it drains"
            );
        }
        self.reader = Some(waker.clone());
        true
    }

    fn wake_reader(&mut self) {
        if let Some(waker) = self.reader.take() {
            waker.wake();
        }
    }

    fn wake_pump(&mut self) {
        if let Some(waker) = self.pump.take() {
            waker.wake();
        }
    }

    /// A whole incoming frame of `kind`, which reserved `held`: what to release once capnp
    /// has read it (nothing if a call keeps it).
    fn incoming(&mut self, kind: Kind, held: Held) -> Option<Held> {
        match kind {
            Kind::Call {
                question,
                depends_on,
            } => self.call(question, &depends_on, held),
            Kind::Bootstrap { question } => self.call(question, &[], held),
            Kind::Finish { question } => {
                self.finish(question);
                Some(held)
            }
            Kind::Return { .. } | Kind::Other => Some(held),
        }
    }

    fn call(&mut self, question: u32, depends_on: &[u32], held: Held) -> Option<Held> {
        if self.calls.contains_key(&question) {
            // capnp-rpc ends the connection over a question id in use; count it once.
            return Some(held);
        }
        let mut parents = Vec::new();
        for parent in depends_on {
            if let Some(call) = self.calls.get_mut(parent) {
                call.dependents += 1;
                parents.push(*parent);
            }
        }
        self.calls.insert(
            question,
            Call {
                held: Some(held),
                parents,
                ..Call::default()
            },
        );
        None
    }

    /// The peer's `Finish`: an unanswered call nothing is pipelined on is cancelled by
    /// capnp-rpc, which never answers it then.
    fn finish(&mut self, question: u32) {
        let Some(call) = self.calls.get_mut(&question) else {
            return;
        };
        call.finished = true;
        if !call.answered && call.dependents == 0 {
            self.forget(question);
        }
    }

    /// capnp-rpc wrote the `Return` for `answer`: its parameters are gone.
    fn answered(&mut self, answer: u32) {
        let Some(call) = self.calls.get_mut(&answer) else {
            return;
        };
        call.answered = true;
        if let Some(held) = call.held.take() {
            self.release(held);
        }
    }

    /// The socket took the `Return` for `answer`: the call is over.
    fn delivered(&mut self, answer: u32) {
        if self.calls.contains_key(&answer) {
            self.forget(answer);
        }
    }

    /// Drops a call from the books, and with it the cancelled calls only it kept running.
    fn forget(&mut self, question: u32) {
        let mut gone = vec![question];
        while let Some(question) = gone.pop() {
            let Some(call) = self.calls.remove(&question) else {
                continue;
            };
            if let Some(held) = call.held {
                self.release(held);
            }
            for parent in call.parents {
                if let Some(p) = self.calls.get_mut(&parent) {
                    p.dependents = p.dependents.saturating_sub(1);
                    if p.finished && !p.answered && p.dependents == 0 {
                        gone.push(parent);
                    }
                }
            }
        }
        self.wake_reader();
    }

    /// Writing to the socket failed: nothing more will be sent.
    fn fail(&mut self, kind: io::ErrorKind) {
        self.failed = Some(kind);
        self.outbox.clear();
        self.unsent = 0;
        self.wake_reader();
    }
}

/// A frame's bytes, 8-byte aligned (capnp reads segments in place only when they are), grown
/// as they arrive.
struct FrameBuf {
    words: Vec<Word>,
    /// Bytes filled.
    len: usize,
    /// The frame's size in bytes, a multiple of 8.
    total: usize,
}

impl FrameBuf {
    /// An empty buffer for a frame of `total` bytes; nothing is allocated yet.
    fn new(total: usize) -> FrameBuf {
        FrameBuf {
            words: Vec::new(),
            len: 0,
            total,
        }
    }

    /// A buffer for a frame of `total` bytes, allocated at once: for frames capnp-rpc wrote,
    /// which it holds whole already.
    fn exact(total: usize) -> FrameBuf {
        FrameBuf {
            words: Word::allocate_zeroed_vec(total.div_ceil(8)),
            len: 0,
            total,
        }
    }

    fn remaining(&self) -> usize {
        self.total - self.len
    }

    fn is_complete(&self) -> bool {
        self.len == self.total
    }

    /// Room for up to `want` more bytes (at least one, unless complete), growing the buffer
    /// by doubling, never past the frame's size.
    fn spare(&mut self, want: usize) -> &mut [u8] {
        let room = self.words.len() * 8 - self.len;
        if room == 0 && !self.is_complete() {
            let grown = (self.words.len() * 8 * 2)
                .max(FIRST_BUFFER)
                .max(self.len + want.min(self.remaining()))
                .min(self.total);
            self.words
                .resize(grown.div_ceil(8), capnp::word(0, 0, 0, 0, 0, 0, 0, 0));
        }
        let end = (self.words.len() * 8).min(self.len + want).min(self.total);
        let len = self.len;
        &mut Word::words_to_bytes_mut(&mut self.words)[len..end]
    }

    fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Copies as much of `bytes` as the frame still takes; how much that was.
    fn extend(&mut self, mut bytes: &[u8]) -> usize {
        let mut copied = 0;
        while !bytes.is_empty() && !self.is_complete() {
            let room = self.spare(bytes.len());
            let n = room.len().min(bytes.len());
            room[..n].copy_from_slice(&bytes[..n]);
            self.advance(n);
            bytes = &bytes[n..];
            copied += n;
        }
        copied
    }

    fn bytes(&self) -> &[u8] {
        &Word::words_to_bytes(&self.words)[..self.len]
    }

    /// The whole words filled.
    fn words(&self) -> &[Word] {
        &self.words[..self.len / 8]
    }
}

/// The socket's read side, with what was read ahead of the frame in hand.
struct Source<R> {
    inner: R,
    /// [`READ_CHUNK`] bytes once the first read needs them; `ahead[pos..end]` is unread.
    ahead: Vec<u8>,
    pos: usize,
    end: usize,
}

impl<R: AsyncRead + Unpin> Source<R> {
    fn buffered(&self) -> usize {
        self.end - self.pos
    }

    /// Reads ahead unless bytes are waiting already: `false` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.buffered() > 0 {
            return Poll::Ready(Ok(true));
        }
        if self.ahead.is_empty() {
            self.ahead = vec![0; READ_CHUNK];
        }
        let mut buf = ReadBuf::new(&mut self.ahead);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        (self.pos, self.end) = (0, n);
        Poll::Ready(Ok(n > 0))
    }

    /// Up to `max` of the bytes read ahead.
    fn take(&mut self, max: usize) -> &[u8] {
        let n = max.min(self.buffered());
        let start = self.pos;
        self.pos += n;
        &self.ahead[start..start + n]
    }

    /// Reads straight into `dst` (nothing may be waiting ahead): the bytes read, 0 at end of
    /// stream.
    fn poll_direct(&mut self, cx: &mut Context<'_>, dst: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut buf = ReadBuf::new(dst);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf))?;
        Poll::Ready(Ok(buf.filled().len()))
    }
}

/// Waiting for the budget to hold a frame.
type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>>>>;

enum ReadState {
    /// Between frames.
    Idle,
    /// Reading a segment table.
    Header(Vec<u8>),
    /// Waiting for the budget to hold a frame of `total` bytes whose table is `head`.
    Reserving {
        head: Vec<u8>,
        total: usize,
        acquire: Acquire,
    },
    /// Reading a frame's body.
    Body { frame: FrameBuf, held: Held },
    /// A whole frame of `kind`; a call waits here while too many are in flight, so that the
    /// peer's other messages (a `Finish` that cancels one) still get through before it.
    Whole {
        frame: FrameBuf,
        held: Held,
        kind: Kind,
    },
    /// Handing a whole frame to capnp, from `pos`.
    Handing {
        frame: FrameBuf,
        pos: usize,
        /// Released once capnp has read it all; `None` if a call keeps it.
        held: Option<Held>,
    },
    /// The peer sent a frame it may not: nothing more is read.
    Refused(FrameError),
}

/// The read side of a connection under flow control, as capnp-rpc reads it: whole frames
/// only, within the limits.
pub struct FlowReader<R> {
    source: Source<R>,
    state: ReadState,
    conn: Rc<RefCell<Conn>>,
}

impl<R> std::fmt::Debug for FlowReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowReader")
            .field("peer", &self.conn.borrow().label)
            .finish_non_exhaustive()
    }
}

/// The write side of a connection under flow control, as capnp-rpc writes it: every write is
/// accepted and queued, whole frame by whole frame; a flush writes what the socket takes and
/// leaves the rest to the pump.
pub struct FlowWriter {
    conn: Rc<RefCell<Conn>>,
    /// The segment table of the frame being written, until it is whole.
    head: Vec<u8>,
    frame: Option<FrameBuf>,
}

impl std::fmt::Debug for FlowWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowWriter")
            .field("peer", &self.conn.borrow().label)
            .finish_non_exhaustive()
    }
}

/// Wraps `stream` for a Cap'n Proto connection with the peer `label` names (in logs): the
/// reader and writer to give capnp-rpc, and the pump that writes to the socket, to be spawned
/// on the same thread (it ends once the writer is dropped and its last bytes are out, or
/// after [`LINGER`]).
pub fn split<S>(
    stream: S,
    label: String,
    limits: Limits,
    budget: Budget,
) -> (
    FlowReader<tokio::io::ReadHalf<S>>,
    FlowWriter,
    impl Future<Output = ()>,
)
where
    S: AsyncRead + AsyncWrite + 'static,
{
    let (read, write) = tokio::io::split(stream);
    let conn = Rc::new(RefCell::new(Conn {
        label,
        allowance: limits.allowance,
        limits,
        budget,
        calls: HashMap::new(),
        outbox: VecDeque::new(),
        unsent: 0,
        closed: false,
        failed: None,
        stalled: false,
        reader: None,
        pump: None,
        sink: Some(Box::pin(write)),
    }));
    let reader = FlowReader {
        source: Source {
            inner: read,
            ahead: Vec::new(),
            pos: 0,
            end: 0,
        },
        state: ReadState::Idle,
        conn: conn.clone(),
    };
    let writer = FlowWriter {
        conn: conn.clone(),
        head: Vec::new(),
        frame: None,
    };
    (reader, writer, pump(conn))
}

impl<R: AsyncRead + Unpin> FlowReader<R> {
    fn refuse(&mut self, error: FrameError) -> io::Error {
        tracing::warn!(
            peer = %self.conn.borrow().label,
            %error,
            "refused a Cap'n Proto frame from its header; ending the connection"
        );
        self.state = ReadState::Refused(error.clone());
        io::Error::new(io::ErrorKind::InvalidData, error)
    }

    /// Starts the body of a frame of `total` bytes whose table is `head`: reserves its
    /// bytes, or starts waiting for the budget.
    fn reserve(&mut self, head: Vec<u8>, total: usize) -> Result<(), io::Error> {
        let mut conn = self.conn.borrow_mut();
        if let Some(held) = conn.take_allowance(total) {
            drop(conn);
            self.state = body(head, total, held);
            return Ok(());
        }
        let budget = conn.budget.clone();
        let label = conn.label.clone();
        drop(conn);
        let Some(permits) = u32::try_from(total).ok().filter(|_| total <= budget.bytes) else {
            return Err(self.refuse(FrameError::OverBudget {
                bytes: total,
                budget: budget.bytes,
            }));
        };
        if budget.available() < total {
            tracing::debug!(
                peer = %label,
                bytes = total,
                available = budget.available(),
                "the Cap'n Proto buffer budget is spent: waiting to read a frame"
            );
        }
        self.state = ReadState::Reserving {
            head,
            total,
            acquire: Box::pin(budget.semaphore.acquire_many_owned(permits)),
        };
        Ok(())
    }
}

/// The state that reads the body of a frame of `total` bytes, its table `head` in place.
fn body(head: Vec<u8>, total: usize, held: Held) -> ReadState {
    let mut frame = FrameBuf::new(total);
    frame.extend(&head);
    ReadState::Body { frame, held }
}

fn eof_in_frame() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the peer closed the connection in the middle of a frame",
    )
}

impl<R: AsyncRead + Unpin> futures::io::AsyncRead for FlowReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                ReadState::Handing { frame, pos, held } => {
                    let bytes = frame.bytes();
                    let n = buf.len().min(bytes.len() - *pos);
                    buf[..n].copy_from_slice(&bytes[*pos..*pos + n]);
                    *pos += n;
                    if *pos == bytes.len() {
                        if let Some(held) = held.take() {
                            this.conn.borrow_mut().release(held);
                        }
                        this.state = ReadState::Idle;
                    }
                    return Poll::Ready(Ok(n));
                }
                ReadState::Idle => {
                    let mut conn = this.conn.borrow_mut();
                    if let Some(kind) = conn.failed {
                        return Poll::Ready(Err(io::Error::new(
                            kind,
                            "writing to the peer failed",
                        )));
                    }
                    if conn.must_wait(cx.waker(), false) {
                        return Poll::Pending;
                    }
                    drop(conn);
                    this.state = ReadState::Header(Vec::with_capacity(8));
                }
                ReadState::Header(head) => {
                    let max_words = this.conn.borrow().limits.max_frame_words;
                    match parse_header(head, max_words) {
                        Err(error) => return Poll::Ready(Err(this.refuse(error))),
                        Ok(Header::Complete(header)) => {
                            let head = std::mem::take(head);
                            this.reserve(head, header.total_bytes())?;
                        }
                        Ok(Header::Incomplete { needed }) => {
                            if !ready!(this.source.poll_fill(cx))? {
                                return Poll::Ready(if head.is_empty() {
                                    // End of stream between frames: capnp-rpc's clean end.
                                    Ok(0)
                                } else {
                                    Err(eof_in_frame())
                                });
                            }
                            head.extend_from_slice(this.source.take(needed - head.len()));
                        }
                    }
                }
                ReadState::Reserving {
                    head,
                    total,
                    acquire,
                } => {
                    let Poll::Ready(permit) = acquire.as_mut().poll(cx) else {
                        // Meanwhile, notice a peer that hangs up: read ahead (the read-ahead
                        // buffer, no more) while nothing waits there.
                        if this.source.buffered() == 0 && !ready!(this.source.poll_fill(cx))? {
                            return Poll::Ready(Err(eof_in_frame()));
                        }
                        return Poll::Pending;
                    };
                    let permit =
                        permit.map_err(|_| io::Error::other("the buffer budget was closed"))?;
                    let held = Held {
                        bytes: *total,
                        permit: Some(permit),
                    };
                    this.state = body(std::mem::take(head), *total, held);
                }
                ReadState::Body { frame, .. } if frame.is_complete() => {
                    if let ReadState::Body { frame, held } =
                        std::mem::replace(&mut this.state, ReadState::Idle)
                    {
                        if let Err(error) = check_aliasing(frame.words()) {
                            let label = this.conn.borrow().label.clone();
                            tracing::warn!(
                                peer = %label,
                                %error,
                                "refused a Cap'n Proto frame whose pointers alias; ending the \
                                 connection"
                            );
                            this.conn.borrow_mut().release(held);
                            this.state = ReadState::Refused(error.clone());
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                error,
                            )));
                        }
                        let kind = classify(frame.words());
                        this.state = ReadState::Whole { frame, held, kind };
                    }
                }
                ReadState::Whole { kind, .. } => {
                    let call = matches!(kind, Kind::Call { .. } | Kind::Bootstrap { .. });
                    if call && this.conn.borrow_mut().must_wait(cx.waker(), true) {
                        return Poll::Pending;
                    }
                    if let ReadState::Whole { frame, held, kind } =
                        std::mem::replace(&mut this.state, ReadState::Idle)
                    {
                        let held = this.conn.borrow_mut().incoming(kind, held);
                        this.state = ReadState::Handing {
                            frame,
                            pos: 0,
                            held,
                        };
                    }
                }
                ReadState::Body { frame, .. } => {
                    let remaining = frame.remaining();
                    if this.source.buffered() == 0 && remaining >= READ_CHUNK {
                        // A large body: straight into the frame, never past its end.
                        let n = ready!(this.source.poll_direct(cx, frame.spare(remaining)))?;
                        if n == 0 {
                            return Poll::Ready(Err(eof_in_frame()));
                        }
                        frame.advance(n);
                    } else {
                        if !ready!(this.source.poll_fill(cx))? {
                            return Poll::Ready(Err(eof_in_frame()));
                        }
                        frame.extend(this.source.take(remaining));
                    }
                }
                ReadState::Refused(error) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        error.clone(),
                    )));
                }
            }
        }
    }
}

impl FlowWriter {
    /// A whole frame capnp-rpc wrote: noted if it answers a call, queued for the pump.
    fn push(&mut self, frame: FrameBuf) {
        let answer = match classify(frame.words()) {
            Kind::Return { answer } => Some(answer),
            _ => None,
        };
        let mut conn = self.conn.borrow_mut();
        if let Some(answer) = answer {
            conn.answered(answer);
        }
        conn.unsent += frame.total;
        // No need to wake the pump: capnp-rpc flushes after every message, and the flush
        // writes (or wakes the pump for what the socket does not take).
        conn.outbox.push_back(OutFrame {
            frame,
            written: 0,
            answer,
        });
    }

    fn close(&mut self) {
        let mut conn = self.conn.borrow_mut();
        conn.closed = true;
        conn.wake_pump();
    }
}

impl futures::io::AsyncWrite for FlowWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(kind) = this.conn.borrow().failed {
            return Poll::Ready(Err(io::Error::new(kind, "writing to the peer failed")));
        }
        let mut rest = buf;
        loop {
            if let Some(frame) = this.frame.take_if(|f| f.is_complete()) {
                this.push(frame);
            }
            if rest.is_empty() {
                return Poll::Ready(Ok(buf.len()));
            }
            match &mut this.frame {
                Some(frame) => {
                    let n = frame.extend(rest);
                    rest = &rest[n..];
                }
                None => match parse_header(&this.head, usize::MAX) {
                    // Only capnp-rpc writes here: a table it cannot have written.
                    Err(error) => {
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, error)));
                    }
                    Ok(Header::Complete(header)) => {
                        let mut frame = FrameBuf::exact(header.total_bytes());
                        frame.extend(&this.head);
                        this.head.clear();
                        this.frame = Some(frame);
                    }
                    Ok(Header::Incomplete { needed }) => {
                        let n = (needed - this.head.len()).min(rest.len());
                        this.head.extend_from_slice(&rest[..n]);
                        rest = &rest[n..];
                    }
                },
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Write what the socket takes now, saving the pump a turn; queued is as good as
        // flushed for the rest, which the pump writes (the reader counts it meanwhile).
        let mut conn = self.conn.borrow_mut();
        match drain(&mut conn, cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                conn.fail(e.kind());
                conn.wake_pump();
                Poll::Ready(Err(e))
            }
            Poll::Pending => {
                // The socket will wake this task, not the pump: have the pump poll it again.
                conn.wake_pump();
                Poll::Ready(Ok(()))
            }
        }
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().close();
        Poll::Ready(Ok(()))
    }
}

impl Drop for FlowWriter {
    fn drop(&mut self) {
        self.close();
    }
}

/// The socket's write side.
type Sink = Pin<Box<dyn AsyncWrite>>;

/// Writes queued frames to the socket until it takes no more (`Pending`) or all are written
/// and flushed, noting each `Return` the socket takes.
fn drain(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    if let Some(kind) = conn.failed {
        return Poll::Ready(Err(kind.into()));
    }
    let Some(mut sink) = conn.sink.take() else {
        return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
    };
    let polled = drain_into(conn, &mut sink, cx);
    conn.sink = Some(sink);
    polled
}

fn drain_into(conn: &mut Conn, sink: &mut Sink, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    loop {
        let Some(front) = conn.outbox.front_mut() else {
            return sink.as_mut().poll_flush(cx);
        };
        let bytes = &front.frame.bytes()[front.written..];
        let n = match ready!(sink.as_mut().poll_write(cx, bytes))? {
            0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            n => n,
        };
        front.written += n;
        let done = front.written == front.frame.total;
        conn.unsent = conn.unsent.saturating_sub(n);
        if done
            && let Some(out) = conn.outbox.pop_front()
            && let Some(answer) = out.answer
        {
            conn.delivered(answer);
        }
        if conn.stalled {
            conn.wake_reader();
        }
    }
}

/// Writes what the socket did not take when capnp-rpc flushed, and notes each `Return` it
/// takes; ends once capnp-rpc is done and everything is written, when writing fails, or
/// after [`LINGER`] past the end, then closes the socket's write side.
async fn pump(conn: Rc<RefCell<Conn>>) {
    let mut linger = None;
    let outcome = std::future::poll_fn(|cx| {
        let mut conn = conn.borrow_mut();
        match drain(&mut conn, cx) {
            Poll::Ready(Ok(())) if conn.closed => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) | Poll::Pending => {
                // Woken by the socket, or by the writer when it queues (or tried itself and
                // took the socket's wakeup).
                conn.pump = Some(cx.waker().clone());
                lingered(&conn, &mut linger, cx)
            }
        }
    })
    .await;
    if let Err(e) = outcome {
        tracing::debug!(peer = %conn.borrow().label, "writing to the Cap'n Proto peer: {e}");
        conn.borrow_mut().fail(e.kind());
    }
    let sink = conn.borrow_mut().sink.take();
    if let Some(mut sink) = sink {
        let _ = tokio::time::timeout(
            LINGER,
            std::future::poll_fn(|cx| sink.as_mut().poll_shutdown(cx)),
        )
        .await;
    }
}

/// `Pending`, unless the connection is over and its last bytes have had [`LINGER`] to go out
/// already: then the pump gives up on them.
fn lingered(
    conn: &Conn,
    linger: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    if conn.closed {
        let sleep = linger.get_or_insert_with(|| Box::pin(tokio::time::sleep(LINGER)));
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
    }
    Poll::Pending
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use capnp_rpc::rpc_capnp::message;
    use futures::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};

    use super::*;

    /// A frame of one RPC message, as capnp writes it.
    fn rpc_frame(build: impl FnOnce(message::Builder<'_>)) -> Vec<u8> {
        let mut message = capnp::message::Builder::new_default();
        build(message.init_root());
        capnp::serialize::write_message_to_words(&message)
    }

    fn call(question: u32, on: Option<u32>) -> Vec<u8> {
        rpc_frame(|m| {
            let mut call = m.init_call();
            call.set_question_id(question);
            match on {
                Some(answer) => call
                    .reborrow()
                    .init_target()
                    .init_promised_answer()
                    .set_question_id(answer),
                None => call.reborrow().init_target().set_imported_cap(0),
            }
            call.init_params();
        })
    }

    fn finish(question: u32) -> Vec<u8> {
        rpc_frame(|m| m.init_finish().set_question_id(question))
    }

    fn ret(answer: u32) -> Vec<u8> {
        rpc_frame(|m| m.init_return().set_answer_id(answer))
    }

    /// A frame of `words` words of zeros after a one-segment table: no RPC message.
    fn blob(words: u32) -> Vec<u8> {
        let mut frame = vec![0u8; 8 + 8 * words as usize];
        frame[4..8].copy_from_slice(&words.to_le_bytes());
        frame
    }

    #[test]
    fn a_frame_whose_pointers_alias_is_refused_and_a_tree_is_not() {
        // A tree spread over many segments (far pointers everywhere) traverses its words.
        let mut tree = capnp::message::Builder::new(
            capnp::message::HeapAllocator::new()
                .first_segment_words(1)
                .allocation_strategy(capnp::message::AllocationStrategy::FixedSize),
        );
        {
            let mut list = tree
                .init_root::<capnp::any_pointer::Builder<'_>>()
                .initn_as::<capnp::data_list::Builder<'_>>(8);
            for i in 0..8 {
                list.set(i, &[i as u8; 24]);
            }
        }
        assert!(tree.get_segments_for_output().len() > 1);
        let frame = capnp::serialize::write_message_to_words(&tree);
        assert_eq!(check_aliasing(&words_of(&frame)), Ok(()));

        // Two elements at one blob: refused.
        let mut message = capnp::message::Builder::new_default();
        message
            .init_root::<capnp::any_pointer::Builder<'_>>()
            .initn_as::<capnp::data_list::Builder<'_>>(2)
            .set(0, &[7; 64]);
        let mut frame = capnp::serialize::write_message_to_words(&message);
        // Segment table (8 bytes), root pointer, then the list's two pointers.
        let first = u64::from_le_bytes(frame[16..24].try_into().unwrap());
        assert_eq!(first & 3, 1);
        let offset = ((first as u32 as i32) >> 2) - 1;
        let aliased = (first & !0xffff_ffff) | u64::from((offset << 2) as u32 | 1);
        frame[24..32].copy_from_slice(&aliased.to_le_bytes());
        assert_eq!(
            check_aliasing(&words_of(&frame)),
            Err(FrameError::Aliased {
                words: frame.len() / 8
            })
        );
    }

    fn words_of(bytes: &[u8]) -> Vec<Word> {
        let mut words = Word::allocate_zeroed_vec(bytes.len().div_ceil(8));
        Word::words_to_bytes_mut(&mut words)[..bytes.len()].copy_from_slice(bytes);
        words
    }

    fn table(sizes: &[u32]) -> Vec<u8> {
        let mut bytes = (sizes.len() as u32 - 1).to_le_bytes().to_vec();
        for size in sizes {
            bytes.extend_from_slice(&size.to_le_bytes());
        }
        bytes.resize(bytes.len().next_multiple_of(8), 0);
        bytes
    }

    #[test]
    fn a_header_is_parsed_as_its_bytes_come() {
        assert_eq!(parse_header(&[], 100), Ok(Header::Incomplete { needed: 8 }));
        assert_eq!(
            parse_header(&[0, 0], 100),
            Ok(Header::Incomplete { needed: 8 })
        );
        let one = table(&[3]);
        assert_eq!(
            parse_header(&one[..5], 100),
            Ok(Header::Incomplete { needed: 8 })
        );
        assert_eq!(
            parse_header(&one, 100),
            Ok(Header::Complete(FrameHeader {
                segments: 1,
                header_bytes: 8,
                body_words: 3
            }))
        );
        let three = table(&[1, 2, 3]);
        assert_eq!(three.len(), 16);
        assert_eq!(
            parse_header(&three[..8], 100),
            Ok(Header::Incomplete { needed: 16 })
        );
        let Ok(Header::Complete(header)) = parse_header(&three, 100) else {
            panic!("three segments");
        };
        assert_eq!((header.body_words, header.total_bytes()), (6, 16 + 48));
        // Bytes past the table are not the table's business.
        let mut longer = one.clone();
        longer.extend_from_slice(&[0xff; 100]);
        assert_eq!(parse_header(&longer, 100), parse_header(&one, 100));
    }

    #[test]
    fn a_header_over_the_limits_is_refused_before_it_is_whole() {
        // The count alone.
        assert_eq!(
            parse_header(&(MAX_SEGMENTS as u32).to_le_bytes(), usize::MAX),
            Err(FrameError::TooManySegments {
                segments: MAX_SEGMENTS as u64 + 1
            })
        );
        assert_eq!(
            parse_header(&u32::MAX.to_le_bytes(), usize::MAX),
            Err(FrameError::TooManySegments { segments: 1 << 32 })
        );
        assert!(matches!(
            parse_header(&table(&vec![0; MAX_SEGMENTS]), 0),
            Ok(Header::Complete(FrameHeader {
                header_bytes: MAX_HEADER_BYTES,
                ..
            }))
        ));
        // One segment at, then past, the limit.
        assert!(matches!(
            parse_header(&table(&[100]), 100),
            Ok(Header::Complete(_))
        ));
        assert_eq!(
            parse_header(&table(&[101]), 100),
            Err(FrameError::TooLarge {
                words: 101,
                limit: 100
            })
        );
        // The sum, while the rest of the table has not come.
        let many = table(&[60, 50, 0, 0, 0]);
        assert_eq!(
            parse_header(&many[..12], 100),
            Err(FrameError::TooLarge {
                words: 110,
                limit: 100
            })
        );
        // The server's own limit.
        let limit = table(&[MAX_MESSAGE_WORDS as u32 + 1]);
        assert!(matches!(
            parse_header(&limit, MAX_MESSAGE_WORDS),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn frames_are_classified_by_their_rpc_message() {
        let of = |bytes: &[u8]| classify(&words_of(bytes));
        assert_eq!(
            of(&call(7, None)),
            Kind::Call {
                question: 7,
                depends_on: vec![]
            }
        );
        assert_eq!(
            of(&call(8, Some(7))),
            Kind::Call {
                question: 8,
                depends_on: vec![7]
            }
        );
        let with_caps = rpc_frame(|m| {
            let mut call = m.init_call();
            call.set_question_id(9);
            call.reborrow()
                .init_target()
                .init_promised_answer()
                .set_question_id(3);
            let mut caps = call.init_params().init_cap_table(40);
            for i in 0..40 {
                caps.reborrow()
                    .get(i)
                    .init_receiver_answer()
                    .set_question_id(i % 20);
            }
        });
        let Kind::Call {
            question: 9,
            depends_on,
        } = of(&with_caps)
        else {
            panic!("a call");
        };
        assert!(depends_on.contains(&3) && depends_on.len() <= MAX_DEPENDENCIES);
        assert_eq!(of(&finish(4)), Kind::Finish { question: 4 });
        assert_eq!(of(&ret(5)), Kind::Return { answer: 5 });
        assert_eq!(
            of(&rpc_frame(|m| m.init_bootstrap().set_question_id(6))),
            Kind::Bootstrap { question: 6 }
        );
        assert_eq!(
            of(&rpc_frame(|m| m.init_abort().set_reason("no"))),
            Kind::Other
        );
        assert_eq!(of(&blob(4)), Kind::Other);
        assert_eq!(of(&[0xff; 64]), Kind::Other);
        assert_eq!(of(&[]), Kind::Other);
    }

    #[test]
    fn a_frame_buffer_grows_with_its_bytes_not_to_its_size() {
        let mut frame = FrameBuf::new(64 << 20);
        assert_eq!(frame.words.capacity(), 0);
        frame.extend(&[1; 10]);
        assert!(frame.words.len() * 8 <= FIRST_BUFFER);
        frame.extend(&vec![2; 100_000]);
        assert_eq!(frame.len, 100_010);
        assert!(
            frame.words.len() * 8 <= 2 * 100_010,
            "{}",
            frame.words.len()
        );
        let mut small = FrameBuf::new(24);
        assert_eq!(small.extend(&[3; 100]), 24);
        assert!(small.is_complete() && small.words.len() == 3);
    }

    /// Runs `test` on a current-thread runtime in a local set, as the RPC system runs.
    fn local<F: Future>(test: F) -> F::Output {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        tokio::task::LocalSet::new().block_on(&runtime, async {
            tokio::time::timeout(Duration::from_secs(20), test)
                .await
                .expect("the test hung")
        })
    }

    /// A connection under flow control (its pump spawned) and the peer's end of it.
    fn connect(
        limits: Limits,
        budget: &Budget,
        room: usize,
    ) -> (
        FlowReader<tokio::io::ReadHalf<DuplexStream>>,
        FlowWriter,
        DuplexStream,
    ) {
        let (ours, theirs) = tokio::io::duplex(room);
        let (reader, writer, pump) = split(ours, "test".into(), limits, budget.clone());
        tokio::task::spawn_local(pump);
        (reader, writer, theirs)
    }

    async fn read_frame<R: AsyncRead + Unpin>(reader: &mut FlowReader<R>, len: usize) -> Vec<u8> {
        let mut frame = vec![0; len];
        reader.read_exact(&mut frame).await.expect("a frame");
        frame
    }

    /// Whether a read would block for a while.
    async fn blocks<R: AsyncRead + Unpin>(reader: &mut FlowReader<R>) -> bool {
        let mut byte = [0];
        tokio::time::timeout(Duration::from_millis(100), reader.read(&mut byte))
            .await
            .is_err()
    }

    fn limits() -> Limits {
        Limits {
            max_frame_words: 1 << 20,
            allowance: 1 << 20,
            max_calls_in_flight: 1024,
            max_unsent_bytes: 1 << 20,
        }
    }

    #[test]
    fn a_frame_is_handed_over_only_once_whole() {
        local(async {
            let budget = Budget::new(1 << 20);
            let (mut reader, _writer, mut peer) = connect(limits(), &budget, 1 << 20);
            let first = call(1, None);
            let big = blob(5000);
            peer.write_all(&first).await.unwrap();
            peer.write_all(&big[..20_000]).await.unwrap();
            assert_eq!(read_frame(&mut reader, first.len()).await, first);
            assert!(blocks(&mut reader).await, "half a frame was handed over");
            // The rest a byte at a time for a while, then in one go.
            for byte in &big[20_000..20_100] {
                peer.write_all(&[*byte]).await.unwrap();
            }
            peer.write_all(&big[20_100..]).await.unwrap();
            peer.write_all(&finish(1)).await.unwrap();
            drop(peer);
            assert_eq!(read_frame(&mut reader, big.len()).await, big);
            assert_eq!(read_frame(&mut reader, finish(1).len()).await, finish(1));
            // A clean end between frames.
            let mut rest = Vec::new();
            assert_eq!(reader.read_to_end(&mut rest).await.unwrap(), 0);
        });
    }

    #[test]
    fn an_oversize_header_ends_the_connection_before_any_body_is_read() {
        local(async {
            let budget = Budget::new(1 << 20);
            let (mut reader, _writer, mut peer) = connect(limits(), &budget, 1 << 20);
            peer.write_all(&table(&[1 << 20, 1])).await.unwrap();
            peer.write_all(&[0; 4096]).await.unwrap();
            let mut byte = [0];
            let error = reader.read(&mut byte).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
            assert!(
                error.to_string().contains("more than the 1048576 allowed"),
                "{error}"
            );
            // And it stays ended.
            assert!(reader.read(&mut byte).await.is_err());
            assert_eq!(budget.available(), 1 << 20);
        });
    }

    #[test]
    fn a_spent_budget_stops_reading_until_a_frame_is_released() {
        local(async {
            let budget = Budget::new(3000);
            let tight = Limits {
                allowance: 200,
                ..limits()
            };
            let (mut a, _wa, mut peer_a) = connect(tight, &budget, 1 << 16);
            let (mut b, _wb, mut peer_b) = connect(tight, &budget, 1 << 16);
            let (mut c, _wc, mut peer_c) = connect(tight, &budget, 1 << 16);
            let frame = blob(250); // 2008 bytes
            peer_a.write_all(&frame).await.unwrap();
            peer_b.write_all(&frame).await.unwrap();
            // A small call fits a connection's own allowance, budget or not.
            let small = call(1, None);
            assert!(small.len() <= 200);
            peer_c.write_all(&small).await.unwrap();

            let mut head = [0; 8];
            a.read_exact(&mut head).await.unwrap();
            assert!(budget.available() < frame.len());
            assert!(blocks(&mut b).await, "two frames held past the budget");
            assert_eq!(read_frame(&mut c, small.len()).await, small);
            // A's frame read to its end releases its bytes, and B goes on.
            let mut rest = vec![0; frame.len() - 8];
            a.read_exact(&mut rest).await.unwrap();
            assert_eq!(read_frame(&mut b, frame.len()).await, frame);
            // Frames read whole are released; nothing leaks.
            assert_eq!(budget.available(), 3000);
        });
    }

    #[test]
    fn a_peer_that_hangs_up_while_waiting_for_the_budget_is_let_go() {
        local(async {
            let budget = Budget::new(3000);
            let none = Limits {
                allowance: 0,
                ..limits()
            };
            let (mut a, _wa, mut peer_a) = connect(none, &budget, 1 << 16);
            let (mut b, _wb, mut peer_b) = connect(none, &budget, 1 << 16);
            peer_a.write_all(&table(&[250])).await.unwrap();
            peer_b.write_all(&table(&[250])).await.unwrap();
            assert!(blocks(&mut a).await);
            assert!(blocks(&mut b).await, "two frames held past the budget");
            drop(peer_b);
            let error = b.read(&mut [0]).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
            drop(b);
            assert_eq!(budget.available(), 3000 - 2008);
            drop(peer_a);
            assert!(a.read(&mut [0]).await.is_err());
            drop(a);
            assert_eq!(budget.available(), 3000);
        });
    }

    #[test]
    fn a_connection_with_too_many_calls_in_flight_waits_for_a_return() {
        local(async {
            let budget = Budget::new(1 << 20);
            let two = Limits {
                max_calls_in_flight: 2,
                ..limits()
            };
            let (mut reader, mut writer, mut peer) = connect(two, &budget, 1 << 20);
            for q in 0..3 {
                peer.write_all(&call(q, None)).await.unwrap();
            }
            let len = call(0, None).len();
            read_frame(&mut reader, len).await;
            read_frame(&mut reader, len).await;
            assert!(blocks(&mut reader).await, "a third call went through");
            // A Return, written in pieces as capnp does, reaches the peer and frees a slot.
            let answer = ret(0);
            writer.write_all(&answer[..8]).await.unwrap();
            writer.write_all(&answer[8..]).await.unwrap();
            writer.flush().await.unwrap();
            let mut got = vec![0; answer.len()];
            peer.read_exact(&mut got).await.unwrap();
            assert_eq!(got, answer);
            assert_eq!(read_frame(&mut reader, len).await, call(2, None));
        });
    }

    #[test]
    fn a_finish_cancels_a_call_unless_another_is_pipelined_on_it() {
        local(async {
            let budget = Budget::new(1 << 20);
            let two = Limits {
                max_calls_in_flight: 2,
                ..limits()
            };
            let (mut reader, _writer, mut peer) = connect(two, &budget, 1 << 20);
            let in_flight = |reader: &FlowReader<_>| {
                let mut calls: Vec<u32> = reader.conn.borrow().calls.keys().copied().collect();
                calls.sort_unstable();
                calls
            };
            let mut exchange = async |frames: &[Vec<u8>]| {
                for frame in frames {
                    peer.write_all(frame).await.unwrap();
                }
                for frame in frames {
                    assert_eq!(&read_frame(&mut reader, frame.len()).await, frame);
                }
            };
            // Two calls in flight; the Finish of the first gets through all the same, and
            // cancels it.
            exchange(&[call(0, None), call(1, None), finish(0), call(2, None)]).await;
            // Call 3 is pipelined on 2's answer: finishing 2 does not end it then.
            exchange(&[finish(1), call(3, Some(2)), finish(2)]).await;
            // Finishing 3 cancels it, and 2 with it.
            exchange(&[finish(3)]).await;
            exchange(&[call(4, None), call(5, None)]).await;
            assert_eq!(in_flight(&reader), [4, 5]);
            peer.write_all(&call(6, None)).await.unwrap();
            assert!(blocks(&mut reader).await, "a third call went through");
        });
    }

    #[test]
    fn unsent_bytes_stop_reading_until_the_socket_takes_them() {
        local(async {
            let budget = Budget::new(1 << 20);
            let small = Limits {
                max_unsent_bytes: 4096,
                ..limits()
            };
            // The socket takes 64 bytes until the peer reads.
            let (mut reader, mut writer, peer) = connect(small, &budget, 64);
            let reply = blob(1000);
            writer.write_all(&reply).await.unwrap();
            writer.flush().await.unwrap();
            let (mut peer_reads, mut peer_writes) = tokio::io::split(peer);
            tokio::task::spawn_local(async move {
                peer_writes.write_all(&call(0, None)).await.unwrap();
                peer_writes
            });
            assert!(blocks(&mut reader).await, "read on past the unsent limit");
            let mut got = vec![0; reply.len()];
            let (read, frame) = futures::join!(
                peer_reads.read_exact(&mut got),
                read_frame(&mut reader, call(0, None).len())
            );
            read.unwrap();
            assert_eq!((got, frame), (reply, call(0, None)));
        });
    }

    #[test]
    fn the_pump_gives_up_on_a_peer_that_never_reads_once_the_connection_ends() {
        local(async {
            let budget = Budget::new(1 << 20);
            let (ours, mut theirs) = tokio::io::duplex(64);
            let (reader, mut writer, pump) = split(ours, "test".into(), limits(), budget);
            writer.write_all(&blob(100)).await.unwrap();
            drop((reader, writer));
            pump.await;
            // The stream is closed: the peer reads what got through, then the end.
            let mut rest = Vec::new();
            theirs.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest.len(), 64);
        });
    }
}
