//! The host's stdout and stderr as cells write to them: through one writer thread per
//! stream, never from the executor's thread.
//!
//! wasmtime-wasi's own streams for these write with `std::io` inside the host call, on the
//! executor's one thread: when ww's stdout is a pipe nobody reads (a supervisor that stopped
//! draining it), that write never returns and the whole node stops: every cell, its
//! deadline and its signal handling. Here every write is queued to a [`Sink`], whose thread
//! does the writing; a cell whose output is not taken waits for room in the queue, alone.
//!
//! What the host holds for this is bounded whatever cells do: the queue's bytes by
//! `QUEUED_BYTES` (shared by every writer), one blocking thread per host stream, and per
//! stream a cell opened one chunk of room taken ahead, the streams themselves bounded by the
//! cell's handle cap. A flush completes once the bytes are queued. One queue keeps the order
//! writes were made in, across cells and services, as writing in place did.
//!
//! A pipe to a parent (or a service's line buffer) is a [`Sink`] too, drained by a task:
//! every cell writing to it (a child inheriting it shares it) has a view of its own, so a
//! cell waiting for room holds nothing another cell needs, and what check-write granted one
//! cell no other can take. (wasmtime-wasi's shared stream locks itself while a cell waits,
//! and a second cell writing then traps.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// Bytes queued for one host stream, all writers together, before writers wait.
const QUEUED_BYTES: usize = 1 << 20;

/// The most the writer thread gathers into one write.
const BATCH: usize = 64 << 10;

/// The most a cell writes in one `write` (what `check-write` grants at once; WASI's
/// `blocking-write-and-flush` takes at most 4096 bytes).
const CHUNK: usize = 4096;

/// Which of the host's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostStream {
    /// ww's stdout.
    Stdout,
    /// ww's stderr.
    Stderr,
}

/// What the writer thread is asked to do.
enum Job {
    /// Write these bytes; the permit is the room they take in the queue.
    Write(Bytes, OwnedSemaphorePermit),
    /// Flush, then answer a thread that is not in the runtime ([`drain`]).
    Drain(std::sync::mpsc::Sender<()>),
}

static STDOUT: OnceLock<Arc<Sink>> = OnceLock::new();
static STDERR: OnceLock<Arc<Sink>> = OnceLock::new();

/// Waits, at most `limit`, until everything queued to the host's streams is written: what
/// cells and services wrote before ww ends reaches its stdout whole, unless nobody reads it
/// (ww then ends anyway). Call once no cell runs any more.
pub fn drain(limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    for sink in [STDOUT.get(), STDERR.get()].into_iter().flatten() {
        let (done, drained) = std::sync::mpsc::channel();
        if sink.jobs.send(Job::Drain(done)).is_err() {
            continue;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if drained.recv_timeout(left).is_err() {
            tracing::debug!("host output not drained: nobody reads it");
            return;
        }
    }
}

/// The queue to one host stream's writer thread.
pub struct Sink {
    jobs: mpsc::UnboundedSender<Job>,
    room: Arc<Semaphore>,
    /// Set once a write failed (the stream is closed): later writes are refused.
    broken: Arc<AtomicBool>,
}

impl Sink {
    /// The sink of `stream`, its thread started on first use. Not tied to any runtime, so
    /// every runtime of the process (tests start many) shares it.
    pub fn of(stream: HostStream) -> Arc<Sink> {
        match stream {
            HostStream::Stdout => STDOUT.get_or_init(|| Arc::new(Sink::start(stream))),
            HostStream::Stderr => STDERR.get_or_init(|| Arc::new(Sink::start(stream))),
        }
        .clone()
    }

    /// A sink into `writer` (a pipe's write end) holding at most `capacity` bytes queued,
    /// drained by a task of the current runtime. `writer` is dropped (the reader sees the
    /// end of the stream) once every holder of the sink has dropped it and the queue is
    /// written.
    pub fn pipe(
        mut writer: impl tokio::io::AsyncWrite + Send + Unpin + 'static,
        capacity: usize,
    ) -> Arc<Sink> {
        use tokio::io::AsyncWriteExt as _;
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        let broken = Arc::new(AtomicBool::new(false));
        let failed = broken.clone();
        tokio::spawn(async move {
            while let Some(job) = queue.recv().await {
                let result = match job {
                    Job::Write(bytes, _room) => writer.write_all(&bytes).await,
                    Job::Drain(done) => {
                        let result = writer.flush().await;
                        let _ = done.send(());
                        result
                    }
                };
                if result.is_err() {
                    // The reader is gone: nothing more can be written.
                    failed.store(true, Ordering::Relaxed);
                }
            }
            let _ = writer.shutdown().await;
        });
        Arc::new(Sink {
            jobs,
            room: Arc::new(Semaphore::new(capacity)),
            broken,
        })
    }

    fn start(stream: HostStream) -> Sink {
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        let broken = Arc::new(AtomicBool::new(false));
        let failed = broken.clone();
        let work = move || {
            // Writes queued meanwhile are gathered into one (up to BATCH bytes): cells write
            // in 4 KiB chunks, and one syscall per chunk halved the throughput of a pipe.
            let mut batch: Vec<u8> = Vec::with_capacity(BATCH);
            let mut next = queue.blocking_recv();
            while let Some(job) = next.take() {
                let result = match job {
                    Job::Write(bytes, room) => {
                        batch.clear();
                        batch.extend_from_slice(&bytes);
                        let mut rooms = vec![room];
                        while batch.len() < BATCH {
                            match queue.try_recv() {
                                Ok(Job::Write(more, room)) => {
                                    batch.extend_from_slice(&more);
                                    rooms.push(room);
                                }
                                Ok(other) => {
                                    next = Some(other);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        let result = write(stream, |out| write_all(out, &batch));
                        drop(rooms);
                        result
                    }
                    Job::Drain(done) => {
                        let result = write(stream, flush);
                        let _ = done.send(());
                        result
                    }
                };
                if let Err(e) = result
                    && !failed.swap(true, Ordering::Relaxed)
                {
                    tracing::debug!(stream = ?stream, error = %e, "host output lost");
                }
                if next.is_none() {
                    next = queue.blocking_recv();
                }
            }
        };
        let name = match stream {
            HostStream::Stdout => "ww-stdout",
            HostStream::Stderr => "ww-stderr",
        };
        if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(work) {
            // Without its thread the stream takes nothing: writes fail instead of waiting.
            tracing::warn!(stream = ?stream, error = %e, "cannot start the output thread");
            broken.store(true, Ordering::Relaxed);
        }
        Sink {
            jobs,
            room: Arc::new(Semaphore::new(QUEUED_BYTES)),
            broken,
        }
    }

    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed) || self.jobs.is_closed()
    }

    /// Queues `bytes` whole (one write under std's lock, so that the lines of different
    /// writers never interleave), waiting for room; `false` once the stream is broken.
    pub async fn write_all(&self, bytes: Bytes) -> bool {
        if self.is_broken() {
            return false;
        }
        let need = bytes.len().clamp(1, QUEUED_BYTES) as u32;
        let Ok(room) = self.room.clone().acquire_many_owned(need).await else {
            return false;
        };
        self.jobs.send(Job::Write(bytes, room)).is_ok()
    }
}

/// Writes all of `bytes`, waiting out a stream that would block (ww's stdout may be a
/// non-blocking descriptor it inherited): only this thread waits, and that is its job.
fn write_all(out: &mut dyn std::io::Write, mut bytes: &[u8]) -> std::io::Result<()> {
    use std::io::ErrorKind;
    while !bytes.is_empty() {
        match out.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Flushes `out`, waiting out a stream that would block, as [`write_all`].
fn flush(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    loop {
        match out.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            result => return result,
        }
    }
}

/// Runs `op` on the host stream.
fn write(
    stream: HostStream,
    op: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    match stream {
        HostStream::Stdout => op(&mut std::io::stdout().lock()),
        HostStream::Stderr => op(&mut std::io::stderr().lock()),
    }
}

impl IsTerminal for HostStream {
    fn is_terminal(&self) -> bool {
        match self {
            HostStream::Stdout => std::io::IsTerminal::is_terminal(&std::io::stdout()),
            HostStream::Stderr => std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }
}

impl StdoutStream for HostStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(CellOutput::new(Sink::of(*self)))
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASI 0.3 guests use this; ww runs preview 1 and 2.
        match self {
            HostStream::Stdout => Box::new(tokio::io::stdout()),
            HostStream::Stderr => Box::new(tokio::io::stderr()),
        }
    }
}

/// A pipe (or line buffer) as a cell's stdout or stderr: each cell that opens it gets a
/// view of its own on the one [`Sink`].
pub struct PipeOutput(pub Arc<Sink>);

impl IsTerminal for PipeOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PipeOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(CellOutput::new(self.0.clone()))
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASI 0.3 guests use this, and ww runs preview 1 and 2 only: were that to
        // change, this must become a writer into the sink rather than drop the bytes.
        Box::new(tokio::io::sink())
    }
}

/// One cell's stream to a sink, with room for one chunk taken ahead (what `check-write`
/// granted).
struct CellOutput {
    sink: Arc<Sink>,
    room: Option<OwnedSemaphorePermit>,
}

impl CellOutput {
    fn new(sink: Arc<Sink>) -> CellOutput {
        CellOutput { sink, room: None }
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CellOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if self.sink.is_broken() {
            return Err(StreamError::Closed);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        // WASI's contract: a write is at most what check-write granted.
        let room = match self.room.take() {
            Some(room) if bytes.len() <= CHUNK => room,
            _ => return Err(StreamError::trap("write exceeded what check-write granted")),
        };
        self.sink
            .jobs
            .send(Job::Write(bytes, room))
            .map_err(|_| StreamError::Closed)
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Queued is flushed: the queue is the host's, as a pipe's buffer is the kernel's,
        // and it is bounded and drained (at exit too, by `drain`). Waiting here for the
        // writer to reach the descriptor made every 4 KiB `blocking-write-and-flush` a
        // round trip through the writer's thread.
        if self.sink.is_broken() {
            return Err(StreamError::Closed);
        }
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        if self.sink.is_broken() {
            return Err(StreamError::Closed);
        }
        if self.room.is_none() {
            self.room = self
                .sink
                .room
                .clone()
                .try_acquire_many_owned(CHUNK as u32)
                .ok();
        }
        Ok(if self.room.is_some() { CHUNK } else { 0 })
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CellOutput {
    async fn ready(&mut self) {
        if self.room.is_none() && !self.sink.is_broken() {
            self.room = self
                .sink
                .room
                .clone()
                .acquire_many_owned(CHUNK as u32)
                .await
                .ok();
        }
    }
}
