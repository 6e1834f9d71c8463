//! A cell's standard streams: the host's own, pipes to its parent, nothing, or a service's
//! line-prefixed output.
//!
//! A child that inherits a stream gets its parent's stream itself (which may be a pipe), as
//! a Unix child would: a pipe reaches end of stream only when every cell holding its write
//! end has ended.

use std::io::Write as _;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt as _, BufReader, DuplexStream};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::cli::{AsyncStdinStream, AsyncStdoutStream, StdinStream, StdoutStream};
use wasmtime_wasi::p2::pipe::{AsyncReadStream, AsyncWriteStream};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

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
            stdout: Arc::new(wasmtime_wasi::cli::stdout()),
            stderr: Arc::new(wasmtime_wasi::cli::stderr()),
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
                        Arc::new(AsyncStdoutStream::new(PIPE_CAPACITY, child))
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
    /// copied to the host's with a `[name] ` prefix. Must be called inside the runtime.
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

fn prefix_lines(name: &str, to_stderr: bool) -> Output {
    let (child, parent): (DuplexStream, DuplexStream) = tokio::io::duplex(PIPE_CAPACITY);
    let prefix = format!("[{name}] ");
    tokio::spawn(async move {
        let mut reader = BufReader::new(parent);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if !line.ends_with(b"\n") {
                line.push(b'\n');
            }
            // One write per line, so lines of different services never interleave.
            let mut out = Vec::with_capacity(prefix.len() + line.len());
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(&line);
            let _ = if to_stderr {
                std::io::stderr().lock().write_all(&out)
            } else {
                std::io::stdout().lock().write_all(&out)
            };
        }
    });
    Arc::new(AsyncStdoutStream::new(PIPE_CAPACITY, child))
}
