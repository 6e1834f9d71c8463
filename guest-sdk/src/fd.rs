//! File descriptors granted to the cell by name.
//!
//! The host grants fds to a cell under names (`ww run --fd db=3,mode=rw`, `--with-fd`,
//! `--fd-from`, systemd socket activation, `--fdctl`); a child gets those its spawner passes
//! on with [`Command::fd`](crate::process::Command::fd) and its variants. A cell never sees a
//! host fd number: it reaches a grant by name, with [`fd()`](crate::fd()), and uses it as a
//! stream ([`Fd::reader`], [`Fd::writer`]) or, for a regular file, at offsets
//! ([`Fd::read_at`], [`Fd::write_at`], [`Fd::size`]).
//!
//! ```no_run
//! use std::io::{Read as _, Write as _};
//!
//! let db = ww::fd("db").expect("no fd named db");
//! println!("{} {} {}", db.name(), db.mode(), db.kind()); // e.g. `db rw socket`
//! db.writer()?.write_all(b"PING\r\n")?;
//! let mut reply = [0u8; 64];
//! let n = db.reader()?.read(&mut reply)?;
//! println!("{}", String::from_utf8_lossy(&reply[..n]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The host enforces each grant's [`Mode`] on every use: a grant that only reads gives no
//! writer, and the reverse; a refusal is an [`FdError::NotPermitted`]. Offsets work only on a
//! grant of [`Kind::File`]; on any other the operations fail with [`FdError::Unsupported`].

use std::fmt;
use std::io;

use crate::bindings::ww::host::fd as raw;
use crate::io::{StreamReader, StreamWriter};

/// The grant this cell holds under `name`, or `None` when it holds none by that name.
///
/// Each call returns a new handle on the same grant.
pub fn fd(name: &str) -> Option<Fd> {
    raw::get(name).map(|raw| Fd { raw })
}

/// The names of every grant this cell holds, in grant order.
pub fn names() -> Vec<String> {
    raw::names()
}

/// What a grant allows.
///
/// Displayed as `r`, `w` or `rw`, as `ww run --fd …,mode=` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Reading only.
    Read,
    /// Writing only.
    Write,
    /// Reading and writing.
    ReadWrite,
}

impl Mode {
    /// The mode as `ww run --fd …,mode=` spells it: `r`, `w` or `rw`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Read => "r",
            Mode::Write => "w",
            Mode::ReadWrite => "rw",
        }
    }

    /// Whether the mode allows reading.
    pub fn reads(self) -> bool {
        matches!(self, Mode::Read | Mode::ReadWrite)
    }

    /// Whether the mode allows writing.
    pub fn writes(self) -> bool {
        matches!(self, Mode::Write | Mode::ReadWrite)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Mode {
    type Err = UnknownMode;

    /// Parses `r`, `w` or `rw`.
    fn from_str(s: &str) -> Result<Mode, UnknownMode> {
        match s {
            "r" => Ok(Mode::Read),
            "w" => Ok(Mode::Write),
            "rw" => Ok(Mode::ReadWrite),
            _ => Err(UnknownMode(s.to_owned())),
        }
    }
}

/// A string that is not a [`Mode`]; displayed as `unknown mode `X` (expected r, w or rw)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnknownMode(pub String);

impl fmt::Display for UnknownMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown mode `{}` (expected r, w or rw)", self.0)
    }
}

impl std::error::Error for UnknownMode {}

impl From<raw::Mode> for Mode {
    fn from(mode: raw::Mode) -> Mode {
        match mode {
            raw::Mode::Read => Mode::Read,
            raw::Mode::Write => Mode::Write,
            raw::Mode::ReadWrite => Mode::ReadWrite,
        }
    }
}

impl From<Mode> for raw::Mode {
    fn from(mode: Mode) -> raw::Mode {
        match mode {
            Mode::Read => raw::Mode::Read,
            Mode::Write => raw::Mode::Write,
            Mode::ReadWrite => raw::Mode::ReadWrite,
        }
    }
}

/// What a grant is on the host.
///
/// Displayed as `stream`, `file` or `socket`, as `ww run --fd …,type=` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A pipe, terminal or character device: a stream of bytes.
    Stream,
    /// A regular file: a stream, and bytes at offsets.
    File,
    /// A socket: a stream of bytes.
    Socket,
}

impl Kind {
    /// The kind as `ww run --fd …,type=` spells it: `stream`, `file` or `socket`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Stream => "stream",
            Kind::File => "file",
            Kind::Socket => "socket",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<raw::Kind> for Kind {
    fn from(kind: raw::Kind) -> Kind {
        match kind {
            raw::Kind::Stream => Kind::Stream,
            raw::Kind::File => Kind::File,
            raw::Kind::Socket => Kind::Socket,
        }
    }
}

/// Why a grant refused an operation.
///
/// Displayed as `not permitted: …`, `unsupported: …` or `io: …`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FdError {
    /// The grant's mode does not allow it (a write to a grant that only reads, say).
    NotPermitted(String),
    /// The grant's kind does not support it (offsets on a stream or socket, say).
    Unsupported(String),
    /// The host's operation failed.
    Io(String),
}

impl fmt::Display for FdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdError::NotPermitted(why) => write!(f, "not permitted: {why}"),
            FdError::Unsupported(why) => write!(f, "unsupported: {why}"),
            FdError::Io(why) => write!(f, "io: {why}"),
        }
    }
}

impl std::error::Error for FdError {}

impl From<raw::Error> for FdError {
    fn from(error: raw::Error) -> FdError {
        match error {
            raw::Error::NotPermitted(why) => FdError::NotPermitted(why),
            raw::Error::Unsupported(why) => FdError::Unsupported(why),
            raw::Error::Io(why) => FdError::Io(why),
        }
    }
}

impl From<FdError> for io::Error {
    /// A refusal as an I/O error: [`io::ErrorKind::PermissionDenied`] for
    /// [`FdError::NotPermitted`], [`io::ErrorKind::Unsupported`] for
    /// [`FdError::Unsupported`], [`io::ErrorKind::Other`] for [`FdError::Io`]; the message is
    /// the [`FdError`] itself.
    fn from(error: FdError) -> io::Error {
        let kind = match error {
            FdError::NotPermitted(_) => io::ErrorKind::PermissionDenied,
            FdError::Unsupported(_) => io::ErrorKind::Unsupported,
            FdError::Io(_) => io::ErrorKind::Other,
        };
        io::Error::new(kind, error)
    }
}

/// One file descriptor granted to this cell; get it with [`fd()`](crate::fd()).
pub struct Fd {
    raw: raw::Grant,
}

impl fmt::Debug for Fd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fd")
            .field("name", &self.name())
            .field("mode", &self.mode())
            .field("kind", &self.kind())
            .field("target", &self.target())
            .finish()
    }
}

impl Fd {
    /// The name it was granted under.
    pub fn name(&self) -> String {
        self.raw.name()
    }

    /// What it allows.
    pub fn mode(&self) -> Mode {
        self.raw.mode().into()
    }

    /// What it is on the host.
    pub fn kind(&self) -> Kind {
        self.raw.kind().into()
    }

    /// The fd number it was granted at, as in the cell's `WW_FD_<NAME>` variable. A
    /// WebAssembly cell cannot use the number itself; it names the grant to native cells
    /// and to people.
    pub fn target(&self) -> i32 {
        self.raw.target()
    }

    /// A reader of the grant's bytes; needs a mode that reads.
    ///
    /// Each reader works on its own duplicate of the host fd; for a file that shares the
    /// file's position with every other reader and writer of it.
    pub fn reader(&self) -> Result<FdReader, FdError> {
        Ok(StreamReader::new(self.raw.input()?))
    }

    /// A writer to the grant; needs a mode that writes.
    ///
    /// Each writer works on its own duplicate of the host fd; for a file that shares the
    /// file's position with every other reader and writer of it.
    pub fn writer(&self) -> Result<FdWriter, FdError> {
        Ok(StreamWriter::new(self.raw.output()?))
    }

    /// Up to `len` bytes of a file grant at `offset`: fewer at the file's end, none past it.
    /// Needs a mode that reads and a grant of [`Kind::File`]. The host returns at most
    /// 16 MiB at once.
    pub fn read_at(&self, len: u64, offset: u64) -> Result<Vec<u8>, FdError> {
        Ok(self.raw.read_at(len, offset)?)
    }

    /// Writes all of `data` at `offset` of a file grant and returns how many bytes that is.
    /// Needs a mode that writes and a grant of [`Kind::File`]. The file's position is left
    /// alone.
    pub fn write_at(&self, data: &[u8], offset: u64) -> Result<u64, FdError> {
        Ok(self.raw.write_at(data, offset)?)
    }

    /// The size in bytes of a file grant; needs a grant of [`Kind::File`].
    pub fn size(&self) -> Result<u64, FdError> {
        Ok(self.raw.size()?)
    }
}

/// Reads a grant as a stream; see [`Fd::reader`].
///
/// A [`StreamReader`]: reads block until there are bytes; they return 0 (end of file) at
/// the end of a file, or once the other end of a pipe or socket is closed.
pub type FdReader = StreamReader;

/// Writes to a grant as a stream; see [`Fd::writer`].
///
/// A [`StreamWriter`]: each write waits for room, writes and waits until the host has
/// passed the bytes on to the fd, as with a Unix file descriptor, so nothing is left
/// buffered when the writer is dropped. A closed peer (a pipe or socket whose reader is
/// gone) fails writes with [`io::ErrorKind::BrokenPipe`].
pub type FdWriter = StreamWriter;
