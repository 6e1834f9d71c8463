//! [`std::io::Read`] and [`std::io::Write`] over WASI streams.
//!
//! Every stream a cell gets from `ww` is a `wasi:io` stream: a child's piped stdio
//! ([`crate::process::Child::take_stdin`] and its siblings), a file descriptor grant
//! ([`crate::fd::Fd::reader`], [`crate::fd::Fd::writer`]) and the cell's own stdio. A
//! [`StreamWriter`] and a [`StreamReader`] turn one into a `std` writer or reader;
//! [`ChildStdin`](crate::process::ChildStdin), [`FdWriter`](crate::fd::FdWriter) and the
//! other stream types of this crate are these two under other names.
//!
//! [`stdout`], [`stderr`] and [`stdin`] give the cell's own standard streams this way, the
//! fast path for bulk I/O:
//!
//! ```no_run
//! use std::io::{Read as _, Write as _};
//!
//! // Copies stdin to stdout in pieces of up to 64 KiB, the most the `ww` host passes at
//! // once.
//! let (mut input, mut output) = (ww::io::stdin(), ww::io::stdout());
//! let mut buf = vec![0; 64 * 1024];
//! loop {
//!     match input.read(&mut buf)? {
//!         0 => break,
//!         n => output.write_all(&buf[..n])?,
//!     }
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Rust `std`'s stdio on `wasm32-wasip2` reaches the same WASI streams through wasi-libc's
//! file descriptors. It does not split large writes: a 64 KiB write to
//! [`std::io::stdout`] reaches the host as one 64 KiB write, as through [`stdout`]. It does
//! add layers (`std`'s line buffer, wasi-libc's descriptor table) that cost time per call:
//! copying 512 MiB from stdin to stdout in 64 KiB pieces under `ww run` took about 30% less
//! time, and half the CPU time, through these than through `std`. `std` also passes on each
//! line of a write with newlines as it ends, which is what a person at a terminal wants and
//! a bulk writer does not. For a few lines, `println!` is as good.

use std::fmt;
use std::io;

use wasip2::io::streams::{InputStream, OutputStream, StreamError};

/// Writes to a WASI [`OutputStream`].
///
/// Each [`write`](io::Write::write) waits until the stream has room, writes as much of the
/// buffer as the stream permits at once (all of it when it fits; the `ww` host permits
/// 64 KiB) and waits until the host has passed the bytes on (to the pipe, the fd, the
/// terminal), as a Unix `write` does. So nothing is ever left in the host's buffer, where it
/// would be lost when the stream is dropped or the cell exits (even through
/// [`crate::exit`], which runs no destructors). Dropping the writer flushes once more and
/// then drops the stream, which closes it: a pipe's reader sees end of file once no other
/// writer holds it.
///
/// A stream whose reader is gone (a pipe whose child ended, a closed socket) fails writes
/// with [`io::ErrorKind::BrokenPipe`].
///
/// The writer does no buffering of its own: write in large pieces (or wrap it in a
/// [`std::io::BufWriter`]) for throughput.
pub struct StreamWriter {
    /// `None` only inside [`StreamWriter::into_stream`], which moves the stream out.
    stream: Option<OutputStream>,
}

impl fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamWriter").finish_non_exhaustive()
    }
}

impl StreamWriter {
    /// A writer to `stream`.
    pub fn new(stream: OutputStream) -> StreamWriter {
        StreamWriter {
            stream: Some(stream),
        }
    }

    /// The underlying WASI stream, e.g. to [`subscribe`](OutputStream::subscribe) to it.
    pub fn stream(&self) -> &OutputStream {
        self.stream
            .as_ref()
            .expect("a StreamWriter holds its stream until into_stream")
    }

    /// The underlying WASI stream, taken out. Nothing written through the writer is left
    /// buffered (every write waits for its bytes to pass), so dropping the stream loses
    /// nothing written so far.
    pub fn into_stream(mut self) -> OutputStream {
        self.stream
            .take()
            .expect("a StreamWriter holds its stream until into_stream")
    }
}

impl io::Write for StreamWriter {
    /// Writes as much of `buf` as the stream has room for, at least one byte, waiting for
    /// room when there is none, and returns once the host has passed those bytes on.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let stream = self.stream();
        let room = loop {
            match stream.check_write() {
                Ok(0) => stream.subscribe().block(),
                Ok(room) => break room,
                Err(e) => return Err(io_error(e)),
            }
        };
        let n = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        stream.write(&buf[..n]).map_err(io_error)?;
        // Wait until the bytes are passed on: dropping the stream (or exiting) discards
        // anything the host still buffers.
        stream.blocking_flush().map_err(io_error)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream().blocking_flush().map_err(io_error)
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        if let Some(stream) = &self.stream {
            // Nothing to report a failure to: a closed stream has nothing left to lose.
            let _ = stream.blocking_flush();
        }
    }
}

/// Reads from a WASI [`InputStream`].
///
/// Each [`read`](io::Read::read) blocks until there are bytes and returns up to the
/// buffer's length of them (the `ww` host returns at most 64 KiB at once); it returns 0
/// (end of file) once the stream is closed: at the end of a file, or once every writer of a
/// pipe or socket is gone.
pub struct StreamReader {
    stream: InputStream,
}

impl fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReader").finish_non_exhaustive()
    }
}

impl StreamReader {
    /// A reader of `stream`.
    pub fn new(stream: InputStream) -> StreamReader {
        StreamReader { stream }
    }

    /// The underlying WASI stream, e.g. to [`subscribe`](InputStream::subscribe) to it.
    pub fn stream(&self) -> &InputStream {
        &self.stream
    }

    /// The underlying WASI stream, taken out.
    pub fn into_stream(self) -> InputStream {
        self.stream
    }
}

impl io::Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        loop {
            match self.stream.blocking_read(len) {
                // A blocking read returns at least one byte unless the stream ended; should
                // a host return none anyway, that is not end of file: ask again.
                Ok(bytes) if bytes.is_empty() => continue,
                Ok(bytes) => {
                    let n = bytes.len().min(buf.len());
                    buf[..n].copy_from_slice(&bytes[..n]);
                    return Ok(n);
                }
                Err(StreamError::Closed) => return Ok(0),
                Err(e) => return Err(io_error(e)),
            }
        }
    }
}

/// A writer to the cell's standard output (`wasi:cli/stdout`); see the [module](self) docs
/// for when to prefer it to [`std::io::stdout`].
///
/// It bypasses `std`'s buffer: [`flush`](io::Write::flush) [`std::io::stdout`] before
/// switching to it, or what `std` still buffers comes out after. Each call returns a new
/// handle on the same stream.
pub fn stdout() -> StreamWriter {
    StreamWriter::new(wasip2::cli::stdout::get_stdout())
}

/// A writer to the cell's standard error (`wasi:cli/stderr`), as [`stdout`] is to standard
/// output.
pub fn stderr() -> StreamWriter {
    StreamWriter::new(wasip2::cli::stderr::get_stderr())
}

/// A reader of the cell's standard input (`wasi:cli/stdin`); see the [module](self) docs
/// for when to prefer it to [`std::io::stdin`].
///
/// It bypasses `std`'s buffer: do not mix it with [`std::io::stdin`] on the same input, or
/// bytes `std` has read ahead are skipped. Each call returns a new handle on the same
/// stream.
pub fn stdin() -> StreamReader {
    StreamReader::new(wasip2::cli::stdin::get_stdin())
}

/// A WASI stream error as an I/O error: a closed stream is a broken pipe.
pub(crate) fn io_error(error: StreamError) -> io::Error {
    match error {
        StreamError::Closed => io::ErrorKind::BrokenPipe.into(),
        StreamError::LastOperationFailed(e) => io::Error::other(e.to_debug_string()),
    }
}
