//! The operations of the `fs` and `seq` modes: filesystem calls a test combines into an attack.
//!
//! Each operation prints one line and never exits: `ok OP ARGS` (with ` = RESULT` when it
//! has one) on success, `error: KIND (OP ARGS)` on failure, where KIND is the
//! [`io::ErrorKind`] and, when known, the WASI errno name (`PermissionDenied/EPERM`), or the
//! `wasi:filesystem` error code for the operations std has no call for (`not-permitted`).
//!
//! Operations on paths go through std (wasi-libc over `wasi:filesystem`), so they reach the
//! host exactly as an ordinary program's would. `symlink` and `set-times` have no std call
//! on this target and go straight to `wasi:filesystem` through the preopen that holds the
//! path.

use std::cell::RefCell;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, Write};
use std::time::{Duration, Instant, SystemTime};

use wasip2::filesystem::preopens::get_directories;
use wasip2::filesystem::types::{Descriptor, ErrorCode, NewTimestamp, PathFlags};

use crate::say;

thread_local! {
    /// What `find` found last: `$FOUND` in a later operation's arguments stands for it.
    static FOUND: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The time `set-times` and `set-times-fd` set: far in the past, so a change shows.
const OLD: u64 = 1_000_000_000;

/// One operation's outcome: a result to print after `=`, or nothing.
type Outcome = Result<Option<String>, Failure>;

/// Why an operation failed.
enum Failure {
    /// Through std: its kind and errno.
    Io(io::Error),
    /// Straight through `wasi:filesystem`.
    Wasi(ErrorCode),
    /// A usage error, or a path in no preopened directory.
    Usage(String),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Io(e)
    }
}

impl From<ErrorCode> for Failure {
    fn from(e: ErrorCode) -> Failure {
        Failure::Wasi(e)
    }
}

/// Whether `name` is an operation (so `seq` can tell operations from a final mode).
pub fn is_op(name: &str) -> bool {
    matches!(
        name,
        "mkdir"
            | "rename"
            | "symlink"
            | "link"
            | "unlink"
            | "rmdir"
            | "create"
            | "open-create"
            | "open-trunc"
            | "open-write"
            | "truncate"
            | "set-size-ro"
            | "write"
            | "append"
            | "read"
            | "readlink"
            | "set-times"
            | "set-times-fd"
            | "stat"
            | "lstat"
            | "ls"
            | "find"
            | "flip"
            | "echo"
    )
}

/// Runs one operation (`args[0]` is its name) and prints its line.
pub fn run(args: &[&str]) {
    let args: Vec<String> = args.iter().map(|a| substitute(a)).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let what = args.join(" ");
    match op(&args) {
        Ok(None) => say(&format!("ok {what}")),
        Ok(Some(result)) => say(&format!("ok {what} = {result}")),
        Err(Failure::Io(e)) => say(&format!("error: {} ({what})", io_kind(&e))),
        Err(Failure::Wasi(e)) => say(&format!("error: {} ({what})", e.name())),
        Err(Failure::Usage(why)) => say(&format!("error: usage: {why} ({what})")),
    }
}

/// `$FOUND` replaced by what `find` found last (left as is when nothing was found, so the
/// operation fails on a path that does not exist).
fn substitute(arg: &str) -> String {
    FOUND.with(|found| match &*found.borrow() {
        Some(path) => arg.replace("$FOUND", path),
        None => arg.to_owned(),
    })
}

fn op(args: &[&str]) -> Outcome {
    match args {
        ["mkdir", path] => done(fs::create_dir(path)),
        ["rename", from, to] => done(fs::rename(from, to)),
        ["symlink", target, link] => {
            let (dir, rel) = preopen_of(link)?;
            dir.symlink_at(target, &rel)?;
            Ok(None)
        }
        ["link", from, to] => done(fs::hard_link(from, to)),
        ["unlink", path] => done(fs::remove_file(path)),
        ["rmdir", path] => done(fs::remove_dir(path)),
        ["create", path] => open(path, OpenOptions::new().write(true).create_new(true)),
        ["open-create", path] => open(path, OpenOptions::new().write(true).create(true)),
        ["open-trunc", path] => open(path, OpenOptions::new().write(true).truncate(true)),
        ["open-write", path] => open(path, OpenOptions::new().write(true)),
        ["truncate", path, len] => {
            let file = OpenOptions::new().write(true).open(path)?;
            done(file.set_len(number(len)?))
        }
        ["set-size-ro", path, len] => done(File::open(path)?.set_len(number(len)?)),
        ["write", path, text] => done(fs::write(path, text)),
        ["append", path, text] => {
            let mut file = OpenOptions::new().append(true).open(path)?;
            done(file.write_all(text.as_bytes()))
        }
        ["read", path] => Ok(Some(escape(&fs::read(path)?))),
        ["readlink", path] => Ok(Some(fs::read_link(path)?.display().to_string())),
        ["set-times", path] => {
            let (dir, rel) = preopen_of(path)?;
            let old = || {
                NewTimestamp::Timestamp(wasip2::clocks::wall_clock::Datetime {
                    seconds: OLD,
                    nanoseconds: 0,
                })
            };
            dir.set_times_at(PathFlags::SYMLINK_FOLLOW, &rel, old(), old())?;
            Ok(None)
        }
        ["set-times-fd", path] => {
            // Opened for reading only: the descriptor's own permission check is all that
            // stands between it and the file's times.
            let old = SystemTime::UNIX_EPOCH + Duration::from_secs(OLD);
            let times = FileTimes::new().set_accessed(old).set_modified(old);
            done(File::open(path)?.set_times(times))
        }
        ["stat", path] => Ok(Some(describe(&fs::metadata(path)?))),
        ["lstat", path] => Ok(Some(describe(&fs::symlink_metadata(path)?))),
        ["ls", path] => {
            let mut names = Vec::new();
            for entry in fs::read_dir(path)? {
                let entry = entry?;
                let mut name = entry.file_name().to_string_lossy().into_owned();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    name.push('/');
                }
                names.push(name);
            }
            names.sort();
            Ok(Some(names.join(" ")))
        }
        ["find", dir, inner] => {
            let mut names: Vec<String> = fs::read_dir(dir)?
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            let found = names
                .into_iter()
                .map(|name| format!("{}/{name}", dir.trim_end_matches('/')))
                .find(|path| fs::symlink_metadata(format!("{path}/{inner}")).is_ok())
                .ok_or_else(|| Failure::Io(io::ErrorKind::NotFound.into()))?;
            FOUND.with(|f| *f.borrow_mut() = Some(found.clone()));
            Ok(Some(found))
        }
        ["flip", link, target, ms] => flip(link, target, number(ms)?),
        ["echo", ..] => Ok(None),
        _ => Err(Failure::Usage(
            "unknown operation or wrong arguments".into(),
        )),
    }
}

/// `flip LINK TARGET MS`: for MS milliseconds, over and over, moves the directory LINK
/// aside, puts a symlink to TARGET in its place, then puts the directory back. Prints how
/// many swaps it made; stops at the first failure.
fn flip(link: &str, target: &str, ms: u64) -> Outcome {
    let aside = format!("{link}.aside");
    let (dir, rel) = preopen_of(link)?;
    let deadline = Instant::now() + Duration::from_millis(ms);
    let mut swaps = 0u64;
    while Instant::now() < deadline {
        fs::rename(link, &aside)?;
        dir.symlink_at(target, &rel)?;
        fs::remove_file(link)?;
        fs::rename(&aside, link)?;
        swaps += 1;
    }
    Ok(Some(format!("{swaps} swaps")))
}

fn done(result: io::Result<()>) -> Outcome {
    result?;
    Ok(None)
}

fn open(path: &str, options: &OpenOptions) -> Outcome {
    options.open(path)?;
    Ok(None)
}

fn number(value: &str) -> Result<u64, Failure> {
    value
        .parse()
        .map_err(|_| Failure::Usage(format!("{value}: not a number")))
}

/// `file LEN mtime=SECS`, `dir …` or `symlink …`.
fn describe(meta: &fs::Metadata) -> String {
    let kind = if meta.is_symlink() {
        "symlink"
    } else if meta.is_dir() {
        "dir"
    } else {
        "file"
    };
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    format!("{kind} {} mtime={mtime}", meta.len())
}

/// Bytes as one printable line: UTF-8 with newlines and other controls escaped.
fn escape(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).escape_debug().to_string()
}

/// The preopen holding `path` (the longest guest path that is a prefix of it) and the rest
/// of the path inside it.
fn preopen_of(path: &str) -> Result<(Descriptor, String), Failure> {
    let inside = |dir: &str| -> Option<String> {
        let rest = if dir == "/" {
            path.strip_prefix('/')
        } else {
            let rest = path.strip_prefix(dir)?;
            if rest.is_empty() {
                Some(rest)
            } else {
                rest.strip_prefix('/')
            }
        }?;
        Some(if rest.is_empty() {
            ".".into()
        } else {
            rest.into()
        })
    };
    get_directories()
        .into_iter()
        .filter_map(|(dir, at)| inside(&at).map(|rel| (at.len(), dir, rel)))
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, dir, rel)| (dir, rel))
        .ok_or_else(|| Failure::Usage(format!("{path}: in no preopened directory")))
}

/// `Kind/ERRNO` for an I/O error from std, the errno named when wasi-libc gave one.
fn io_kind(e: &io::Error) -> String {
    let kind = format!("{:?}", e.kind());
    match e.raw_os_error().map(errno_name) {
        Some(name) => format!("{kind}/{name}"),
        None => kind,
    }
}

/// The WASI errno's name (wasi-libc numbers).
fn errno_name(errno: i32) -> String {
    let name = match errno {
        2 => "EACCES",
        8 => "EBADF",
        20 => "EEXIST",
        28 => "EINVAL",
        29 => "EIO",
        31 => "EISDIR",
        32 => "ELOOP",
        37 => "ENAMETOOLONG",
        44 => "ENOENT",
        54 => "ENOTDIR",
        55 => "ENOTEMPTY",
        58 => "ENOTSUP",
        63 => "EPERM",
        69 => "EROFS",
        75 => "EXDEV",
        76 => "ENOTCAPABLE",
        other => return format!("E{other}"),
    };
    name.into()
}
