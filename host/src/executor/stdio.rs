//! A cell's standard streams: the host's own, pipes to its parent, nothing, or a service's
//! line-prefixed output.
//!
//! A child that inherits a stream gets its parent's stream itself (which may be a pipe), as
//! a Unix child would: a pipe reaches end of stream only when every cell holding its write
//! end has ended.
//!
//! Nothing here writes to the host's stdout or stderr on the executor's thread: those may be
//! pipes nobody reads, and a write blocked there would stop the node (see
//! [`super::host_output`]).

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt as _, BufReader, DuplexStream};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::cli::{AsyncStdinStream, StdinStream, StdoutStream};
use wasmtime_wasi::p2::pipe::{AsyncReadStream, AsyncWriteStream};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

use super::host_output::{HostStream, PipeOutput, Sink};

/// Bytes buffered in one pipe between cells.
const PIPE_CAPACITY: usize = 64 * 1024;

/// A readable standard stream, shareable between a cell and the children it passes it to.
pub type Input = Arc<dyn StdinStream + Sync>;
/// A writable standard stream, shareable likewise.
pub type Output = Arc<dyn StdoutStream + Sync>;

/// The three standard streams of a cell.
#[derive(Clone)]
pub struct Stdio {
    stdin: Input,
    stdout: Output,
    stderr: Output,
    /// Pipes and line buffers made for these streams (not inherited ones), each holding at
    /// most [`crate::executor::budget::STREAM_COST`].
    own_buffers: u8,
}

/// What a spawner asks for one of its child's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The spawner's own stream.
    Inherit,
    /// A pipe whose other end the spawner gets.
    Pipe,
    /// Nothing.
    Null,
}

/// The spawner's ends of a child's piped streams.
#[derive(Default)]
pub struct ParentEnds {
    /// Writes to the child's stdin.
    pub stdin: Option<DynOutputStream>,
    /// Reads the child's stdout.
    pub stdout: Option<DynInputStream>,
    /// Reads the child's stderr.
    pub stderr: Option<DynInputStream>,
}

impl Stdio {
    /// The `ww` process's own stdio.
    pub fn host() -> Stdio {
        Stdio {
            stdin: Arc::new(HostStdin),
            stdout: Arc::new(HostStream::Stdout),
            stderr: Arc::new(HostStream::Stderr),
            own_buffers: 0,
        }
    }

    /// What the buffers made for these streams may hold, for the node's budget.
    pub fn buffered_bytes(&self) -> u64 {
        u64::from(self.own_buffers) * crate::executor::budget::STREAM_COST
    }

    /// A child's streams, as the spawner holding `self` asks, and the spawner's ends of the
    /// pipes among them.
    pub fn for_child(
        &self,
        stdin: Request,
        stdout: Request,
        stderr: Request,
    ) -> (Stdio, ParentEnds) {
        let mut ends = ParentEnds::default();
        let child_stdin: Input = match stdin {
            Request::Inherit => self.stdin.clone(),
            Request::Null => Arc::new(tokio::io::empty()),
            Request::Pipe => {
                let (child, parent) = tokio::io::duplex(PIPE_CAPACITY);
                ends.stdin = Some(Box::new(AsyncWriteStream::new(PIPE_CAPACITY, parent)));
                Arc::new(AsyncStdinStream::new(child))
            }
        };
        let output =
            |request: Request, inherited: &Output, end: &mut Option<DynInputStream>| -> Output {
                match request {
                    Request::Inherit => inherited.clone(),
                    Request::Null => Arc::new(tokio::io::empty()),
                    Request::Pipe => {
                        let (child, parent) = tokio::io::duplex(PIPE_CAPACITY);
                        *end = Some(Box::new(AsyncReadStream::new(parent)));
                        // A view per cell: a child inheriting this pipe must not share
                        // one locked stream with it (see host_output).
                        Arc::new(PipeOutput(Sink::pipe(child, PIPE_CAPACITY)))
                    }
                }
            };
        let child_stdout = output(stdout, &self.stdout, &mut ends.stdout);
        let child_stderr = output(stderr, &self.stderr, &mut ends.stderr);
        let own_buffers = [stdin, stdout, stderr]
            .iter()
            .filter(|r| **r == Request::Pipe)
            .count() as u8;
        let stdio = Stdio {
            stdin: child_stdin,
            stdout: child_stdout,
            stderr: child_stderr,
            own_buffers,
        };
        (stdio, ends)
    }

    /// Streams for a service named `name`: no stdin, and each line of its stdout and stderr
    /// copied to the host's with a `[name] ` prefix, a line longer than [`MAX_LINE`] cut
    /// into several. Must be called inside the runtime.
    pub fn prefixed(name: &str) -> Stdio {
        Stdio {
            stdin: Arc::new(tokio::io::empty()),
            stdout: prefix_lines(name, false),
            stderr: prefix_lines(name, true),
            own_buffers: 2,
        }
    }

    /// Gives these streams to a cell being built.
    pub fn apply(&self, builder: &mut WasiCtxBuilder) {
        builder
            .stdin(self.stdin.clone())
            .stdout(self.stdout.clone())
            .stderr(self.stderr.clone());
    }
}

/// The host's stdin, shared by every cell that inherits it.
///
/// One reader, created on first use (inside the runtime), reads ahead in 64 KiB chunks on
/// the blocking pool while cells consume earlier ones, instead of one blocking read per
/// request; all cells read from that one stream, so no byte is read twice or lost between
/// them.
struct HostStdin;

impl HostStdin {
    fn shared() -> &'static AsyncStdinStream {
        static SHARED: std::sync::OnceLock<AsyncStdinStream> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| AsyncStdinStream::new(tokio::io::stdin()))
    }
}

impl wasmtime_wasi::cli::IsTerminal for HostStdin {
    fn is_terminal(&self) -> bool {
        std::io::IsTerminal::is_terminal(&std::io::stdin())
    }
}

impl StdinStream for HostStdin {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        Self::shared().async_stream()
    }

    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::InputStream> {
        Self::shared().p2_stream()
    }
}

/// The most bytes of a service's output one prefixed line carries (its newline aside).
///
/// A longer line is cut: its first `MAX_LINE` bytes end a line of their own (ww adds the
/// newline) and the rest goes on as a new `[name] ` line, cut again as often as needed; no
/// marker is added, so the bytes are the service's own. A newline right after a cut ends
/// the line just cut (a line of exactly `MAX_LINE` bytes stays one line). So a service that
/// never writes a newline costs the host at most this much memory per stream, and its
/// output keeps reaching the host's streams instead of piling up until the service ends.
pub const MAX_LINE: usize = 64 * 1024;

/// A stream whose lines are copied to the host's stdout (or stderr) with `[name] ` before
/// each. Must be called inside the runtime.
fn prefix_lines(name: &str, to_stderr: bool) -> Output {
    let (child, parent): (DuplexStream, DuplexStream) = tokio::io::duplex(PIPE_CAPACITY);
    let prefix = format!("[{name}] ");
    let service = name.to_owned();
    tokio::spawn(async move {
        // Through tokio's handles, never `std::io` here: a host stdout nobody reads must
        // stop this service's output, not the executor's thread.
        let mut out = ServiceOutput {
            sink: Sink::of(if to_stderr {
                HostStream::Stderr
            } else {
                HostStream::Stdout
            }),
            service,
        };
        copy_prefixed(parent, prefix.as_bytes(), &mut out).await;
    });
    Arc::new(PipeOutput(Sink::pipe(child, PIPE_CAPACITY)))
}

/// Where [`copy_prefixed`] puts each line.
trait Lines {
    /// Takes one whole line.
    fn line(&mut self, line: &[u8]) -> impl std::future::Future<Output = ()> + Send;
}

/// A service's lines, each queued whole to the host's stream: one write under std's lock,
/// so the lines of different services never interleave.
struct ServiceOutput {
    sink: Arc<Sink>,
    service: String,
}

impl Lines for ServiceOutput {
    async fn line(&mut self, line: &[u8]) {
        // A line that cannot be written is lost, and the service's output still drained:
        // the host's stream failing must not stop the service.
        if !self.sink.write_all(Bytes::copy_from_slice(line)).await {
            tracing::debug!(service = %self.service, "service output lost");
        }
    }
}

/// Reads `input` to its end, handing `out` each line with `prefix` before it and a
/// newline after it, never more than [`MAX_LINE`] bytes of input to a line: a longer one is
/// cut there and goes on as a new line. A last line without a newline gets one.
///
/// Memory is bounded by the reader's buffer and one line, whatever `input` holds.
async fn copy_prefixed(
    input: impl tokio::io::AsyncRead + Unpin,
    prefix: &[u8],
    out: &mut impl Lines,
) {
    let mut reader = BufReader::with_capacity(PIPE_CAPACITY, input);
    // The line being gathered, prefix included: at most prefix + MAX_LINE + newline.
    let mut line = Vec::with_capacity(prefix.len() + MAX_LINE + 1);
    line.extend_from_slice(prefix);
    // Whether the last line was cut at MAX_LINE: a newline right after it ends that line
    // (already ended), not an empty one, however the input was split into reads.
    let mut cut = false;
    loop {
        let buf = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(buf) => buf,
        };
        if std::mem::take(&mut cut) && buf[0] == b'\n' {
            reader.consume(1);
            continue;
        }
        let room = MAX_LINE - (line.len() - prefix.len());
        let window = &buf[..buf.len().min(room)];
        let (taken, ended) = match window.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => {
                cut = window.len() == room;
                (window.len(), cut)
            }
        };
        line.extend_from_slice(&buf[..taken]);
        reader.consume(taken);
        if ended {
            if cut {
                line.push(b'\n');
            }
            out.line(&line).await;
            line.truncate(prefix.len());
        }
    }
    if line.len() > prefix.len() {
        line.push(b'\n');
        out.line(&line).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines `input` is copied as, fed in `chunk`-byte reads.
    fn lines(input: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let (mut tx, rx) = tokio::io::duplex(chunk);
        let input = input.to_vec();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let feed = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt as _;
                for piece in input.chunks(chunk) {
                    tx.write_all(piece).await.unwrap();
                }
            });
            let mut out = Lines(Vec::new());
            copy_prefixed(rx, b"[s] ", &mut out).await;
            feed.await.unwrap();
            out.0
        })
    }

    /// Each line it is given.
    struct Lines(Vec<Vec<u8>>);

    impl super::Lines for Lines {
        async fn line(&mut self, line: &[u8]) {
            self.0.push(line.to_vec());
        }
    }

    fn line(body: &[u8]) -> Vec<u8> {
        [b"[s] ".as_slice(), body, b"\n"].concat()
    }

    #[test]
    fn prefixes_each_line_and_ends_the_last() {
        for chunk in [1, 3, 4096] {
            assert_eq!(
                lines(b"a\nbc\n\nlast", chunk),
                [line(b"a"), line(b"bc"), line(b""), line(b"last")],
                "chunk {chunk}"
            );
        }
        assert!(lines(b"", 16).is_empty());
    }

    #[test]
    fn cuts_a_long_line_and_goes_on() {
        let long = vec![b'x'; 2 * MAX_LINE + 10];
        for chunk in [7, 4096, 3 * MAX_LINE] {
            let mut input = long.clone();
            input.extend_from_slice(b"\nnext\n");
            let out = lines(&input, chunk);
            assert_eq!(
                out,
                [
                    line(&long[..MAX_LINE]),
                    line(&long[..MAX_LINE]),
                    line(&long[..10]),
                    line(b"next"),
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn a_line_of_exactly_the_maximum_is_one_line() {
        let mut input = vec![b'y'; MAX_LINE];
        input.push(b'\n');
        input.extend_from_slice(&input.clone());
        for chunk in [1000, MAX_LINE, MAX_LINE + 1] {
            let out = lines(&input, chunk);
            let whole = line(&input[..MAX_LINE]);
            assert_eq!(out, [whole.clone(), whole], "chunk {chunk}");
        }
        // Only the one newline right after the cut is its end: an empty line stays.
        let mut input = vec![b'y'; MAX_LINE];
        input.extend_from_slice(b"\n\n");
        assert_eq!(lines(&input, 4096), [line(&input[..MAX_LINE]), line(b"")]);
    }
}
