//! What can go wrong while planning fd grants, and where it was said.
//!
//! Every error is an [`FdError`]: a typed [`FdErrorKind`] (what is wrong, with a help line)
//! plus an [`Origin`] (which flag and value, which table line and column, which systemd or
//! `--fdctl` fd). An error about a capability table carries the table's text and the span of
//! the offending form, so miette shows the line with a label under it.

use std::fmt;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode, SourceSpan};

/// Where a grant, a map or a problem came from: the thing an error message names.
#[derive(Clone)]
pub enum Origin {
    /// A command-line flag and its value as given, e.g. `--fd` and `db=3,mode=rw`.
    Flag {
        /// The flag, with its dashes.
        flag: &'static str,
        /// The value as given.
        value: String,
    },
    /// A place in a capability table (`--fd-from`).
    Table {
        /// The table's name: the path after `@`, or `<stdin>`.
        file: String,
        /// One-based line.
        line: usize,
        /// One-based column (in bytes).
        column: usize,
        /// The span of the form or value in `text`.
        span: SourceSpan,
        /// The whole table, for rendering the span.
        text: Arc<str>,
    },
    /// A systemd socket-activation environment variable (`LISTEN_FDS`…).
    SystemdEnv {
        /// The variable's name.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// An fd handed over by systemd socket activation.
    Systemd {
        /// The fd number (3 and up).
        fd: i32,
        /// The grant's name.
        name: String,
    },
    /// A `--fdctl` channel, and the index of the fd received over it (if the problem is
    /// about one fd).
    Fdctl {
        /// The `--fdctl` value as given.
        channel: String,
        /// Zero-based index of the received fd, if any.
        index: Option<usize>,
    },
}

impl Origin {
    /// The origin of a command-line flag's value.
    pub fn flag(flag: &'static str, value: &str) -> Origin {
        Origin::Flag {
            flag,
            value: value.to_owned(),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag { flag, value } => write!(f, "{flag} {value}"),
            Origin::Table {
                file, line, column, ..
            } => write!(f, "--fd-from {file}:{line}:{column}"),
            Origin::SystemdEnv { var, value } => write!(f, "{var}={value}"),
            Origin::Systemd { fd, name } => write!(f, "systemd fd {fd} ({name})"),
            Origin::Fdctl {
                channel,
                index: None,
            } => write!(f, "--fdctl {channel}"),
            Origin::Fdctl {
                channel,
                index: Some(i),
            } => write!(f, "--fdctl {channel} (received fd #{i})"),
        }
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The table's whole text is left out: Display says where, which is what matters.
        write!(f, "Origin({self})")
    }
}

/// What is wrong. Each variant's message names the value at fault; the [`FdError`] around it
/// names the flag or the table position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Diagnostic)]
pub enum FdErrorKind {
    /// A flag value does not have the expected shape.
    #[error("malformed value: expected {expected}")]
    #[diagnostic(
        code(ww::fd::syntax),
        help(
            "write --with-fd NAME=FD, --fd NAME=FD[,mode=r|w|rw][,type=stream|file|socket][,target=N][,move=BOOL][,cloexec=BOOL][,pathlink=BOOL], --fd-map NAME=TARGET, --fd-from @PATH|-, --fdctl inherit:N|PATH"
        )
    )]
    Syntax {
        /// The expected shape.
        expected: &'static str,
    },

    /// `--with-fd` was given options; only `--fd` takes them.
    #[error("--with-fd takes NAME=FD only, not options (`{options}`)")]
    #[diagnostic(
        code(ww::fd::with_fd_options),
        help("use --fd NAME=FD,KEY=VALUE… for a grant with options")
    )]
    WithFdOptions {
        /// The options as given.
        options: String,
    },

    /// A grant name that cannot become an environment variable suffix.
    #[error("bad grant name `{name}`")]
    #[diagnostic(
        code(ww::fd::name),
        help(
            "a name is one or more of A-Z a-z 0-9 _ -; the cell sees it as WW_FD_<NAME> (uppercased, - becomes _)"
        )
    )]
    BadName {
        /// The name as given.
        name: String,
    },

    /// A number (fd, target) that is not a non-negative integer in range.
    #[error("bad {what} `{value}`: expected a whole number from 0 to {max}")]
    #[diagnostic(
        code(ww::fd::number),
        help("fd numbers and targets are non-negative integers, e.g. fd=5 or target=12")
    )]
    BadNumber {
        /// What the number is (`fd`, `target`).
        what: &'static str,
        /// The value as given.
        value: String,
        /// The largest accepted value.
        max: i64,
    },

    /// An option key that is not one of the known keys.
    #[error("unknown key `{key}`")]
    #[diagnostic(
        code(ww::fd::unknown_key),
        help(
            "the keys are mode, type, target, move, cloexec and pathlink (and name, fd in a table)"
        )
    )]
    UnknownKey {
        /// The key as given.
        key: String,
    },

    /// An option given twice in one grant.
    #[error("key `{key}` is given twice")]
    #[diagnostic(code(ww::fd::duplicate_key), help("give each key once per grant"))]
    DuplicateKey {
        /// The key.
        key: String,
    },

    /// A required key (`name`, `fd`) is missing from a table form.
    #[error("missing `{key}`")]
    #[diagnostic(
        code(ww::fd::missing_key),
        help("each form needs a name and an fd, e.g. (fd :name \"db\" :fd 3)")
    )]
    MissingKey {
        /// The key.
        key: &'static str,
    },

    /// A mode other than r, w, rw.
    #[error("bad mode `{value}`")]
    #[diagnostic(code(ww::fd::mode), help("mode is r (read), w (write) or rw (both)"))]
    BadMode {
        /// The value as given.
        value: String,
    },

    /// A type other than stream, file, socket.
    #[error("bad type `{value}`")]
    #[diagnostic(code(ww::fd::bad_type), help("type is stream, file or socket"))]
    BadType {
        /// The value as given.
        value: String,
    },

    /// A boolean option that is not true or false.
    #[error("bad value `{value}` for `{key}`")]
    #[diagnostic(
        code(ww::fd::bool),
        help("write true or false (in a table also #t or #f)")
    )]
    BadBool {
        /// The key.
        key: String,
        /// The value as given.
        value: String,
    },

    /// The `--fd-from` value is neither `@PATH` nor `-`.
    #[error("expected @PATH or -")]
    #[diagnostic(
        code(ww::fd::fd_from),
        help("write --fd-from @caps.sexp to read a file, or --fd-from - to read standard input")
    )]
    FdFromSyntax,

    /// The capability table could not be read.
    #[error("cannot read the capability table: {reason}")]
    #[diagnostic(
        code(ww::fd::table_read),
        help("check the path after @ (or what is piped to standard input for -)")
    )]
    TableRead {
        /// Why.
        reason: String,
    },

    /// The table is not well-formed S-expressions.
    #[error("malformed S-expression: {message}")]
    #[diagnostic(
        code(ww::fd::table_syntax),
        help(
            "a table is (fd :name \"db\" :fd 3 …) forms, or (fd (name \"db\") (fd 3) …) forms, optionally inside one outer list"
        )
    )]
    TableSyntax {
        /// The parser's message.
        message: String,
    },

    /// The table is well-formed S-expressions but not a capability table.
    #[error("not a capability table entry: {message}")]
    #[diagnostic(
        code(ww::fd::table_shape),
        help(
            "a table is (fd :name \"db\" :fd 3 …) forms, or (fd (name \"db\") (fd 3) …) forms, optionally inside one outer list"
        )
    )]
    TableShape {
        /// What was expected.
        message: String,
    },

    /// Two grants have the same name (or names giving the same `WW_FD_` variable).
    #[error("grant name `{name}` is already used by {first} (both give {env})")]
    #[diagnostic(
        code(ww::fd::duplicate_name),
        help("give each grant a distinct name; names differing only in case or - vs _ collide")
    )]
    DuplicateName {
        /// The second name.
        name: String,
        /// Their common environment variable.
        env: String,
        /// Where the first one came from.
        first: String,
    },

    /// Two grants would land on the same target fd in the cell.
    #[error("target {target} is already taken by grant `{other}`")]
    #[diagnostic(
        code(ww::fd::duplicate_target),
        help("give each grant a distinct target=, or drop target= and let ww number it")
    )]
    DuplicateTarget {
        /// The contested target.
        target: i32,
        /// The grant that took it first.
        other: String,
    },

    /// Target 3 is the native cells' RPC socket.
    #[error("target {target} is reserved for the cell's RPC socket")]
    #[diagnostic(
        code(ww::fd::reserved_target),
        help("pick another target; 0-2 replace stdio, 4-9 are --with-fd's, 10 and up are free")
    )]
    ReservedTarget {
        /// The target.
        target: i32,
    },

    /// A target (explicit or numbered) above the limit.
    #[error("target {target} is above the largest target, {max}")]
    #[diagnostic(
        code(ww::fd::target_range),
        help("use targets from 0 to {max}, except 3")
    )]
    TargetTooLarge {
        /// The target.
        target: i32,
        /// The largest accepted target.
        max: i32,
    },

    /// `--fd-map` names a grant that no flag, table, systemd or `--fdctl` gave.
    #[error("no grant is named `{name}`")]
    #[diagnostic(
        code(ww::fd::map_unknown),
        help(
            "--fd-map NAME=TARGET renumbers an existing grant; grant NAME with --fd, --with-fd, --fd-from, --use-systemd-fds or --fdctl"
        )
    )]
    MapUnknown {
        /// The name.
        name: String,
    },

    /// Two `--fd-map` flags for one grant.
    #[error("grant `{name}` is mapped twice")]
    #[diagnostic(code(ww::fd::duplicate_map), help("give one --fd-map per grant"))]
    DuplicateMap {
        /// The name.
        name: String,
    },

    /// The parent process does not hold the fd.
    #[error("fd {fd} is not open in ww")]
    #[diagnostic(
        code(ww::fd::not_held),
        help(
            "ww can grant only fds it inherited; open it in the parent, e.g. `3<file` or `4<>socket` in the shell"
        )
    )]
    NotHeld {
        /// The fd number.
        fd: i32,
    },

    /// The fd's open mode does not allow the requested mode.
    #[error("mode={mode} needs {needs}, but fd {fd} is open {opened}")]
    #[diagnostic(
        code(ww::fd::mode_not_allowed),
        help(
            "ask for a mode the fd allows (r for a read-only fd, w for a write-only one), or open the fd for both"
        )
    )]
    ModeNotAllowed {
        /// The fd number (for a received fd, its number in ww).
        fd: i32,
        /// The requested mode.
        mode: &'static str,
        /// What the mode needs, in words.
        needs: &'static str,
        /// How the fd is open, in words.
        opened: &'static str,
    },

    /// `type=` names a kind the fd is not.
    #[error("type={kind}, but fd {fd} is {actual}")]
    #[diagnostic(
        code(ww::fd::type_mismatch),
        help(
            "type=file needs a regular file and type=socket a socket; type=stream fits any fd, and leaving type= out lets ww tell"
        )
    )]
    TypeMismatch {
        /// The fd number.
        fd: i32,
        /// The requested type.
        kind: &'static str,
        /// What the fd is, in words.
        actual: &'static str,
    },

    /// A directory or `O_PATH` fd: nothing to read or write.
    #[error("fd {fd} is {what}, which cannot be granted as an fd")]
    #[diagnostic(
        code(ww::fd::unusable),
        help("grant directories with --dir; an fd grant must be readable or writable")
    )]
    Unusable {
        /// The fd number.
        fd: i32,
        /// What it is.
        what: &'static str,
    },

    /// A system call on a granted fd failed (other than "not open").
    #[error("cannot {op} fd {fd}: {reason}")]
    #[diagnostic(
        code(ww::fd::os),
        help("the fd is open but unusable here; check the process's fd limit (ulimit -n)")
    )]
    Os {
        /// The operation.
        op: &'static str,
        /// The fd number.
        fd: i32,
        /// The system's message.
        reason: String,
    },

    /// A systemd socket-activation variable is malformed.
    #[error("bad systemd socket activation environment: {problem}")]
    #[diagnostic(
        code(ww::fd::systemd),
        help(
            "LISTEN_FDS is a count, LISTEN_PID ww's pid, LISTEN_FDNAMES colon-separated names, one per fd; as systemd sets them"
        )
    )]
    Systemd {
        /// What is wrong.
        problem: String,
    },

    /// The `--fdctl` channel failed: bind, accept, receive.
    #[error("{problem}")]
    #[diagnostic(
        code(ww::fd::fdctl),
        help(
            "--fdctl PATH: ww listens at PATH (which must not exist), accepts one connection and reads NAME lines with one fd each over SCM_RIGHTS until the peer closes; --fdctl inherit:N reads the same from an inherited connected Unix socket N"
        )
    )]
    Fdctl {
        /// What went wrong.
        problem: String,
    },
}

/// A fd-grant problem, with where it was said. See the module docs.
#[derive(Debug)]
pub struct FdError(Box<Inner>);

#[derive(Debug)]
struct Inner {
    kind: FdErrorKind,
    at: Origin,
    source_code: Option<NamedSource<Arc<str>>>,
    span: Option<SourceSpan>,
}

impl FdError {
    /// An error of `kind` at `at`.
    pub fn new(kind: FdErrorKind, at: Origin) -> FdError {
        let (source_code, span) = match &at {
            Origin::Table {
                file, span, text, ..
            } => (Some(NamedSource::new(file, text.clone())), Some(*span)),
            _ => (None, None),
        };
        FdError(Box::new(Inner {
            kind,
            at,
            source_code,
            span,
        }))
    }

    /// What is wrong.
    pub fn kind(&self) -> &FdErrorKind {
        &self.0.kind
    }

    /// Where it was said.
    pub fn origin(&self) -> &Origin {
        &self.0.at
    }
}

impl fmt::Display for FdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.at, self.0.kind)
    }
}

impl std::error::Error for FdError {}

impl Diagnostic for FdError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.0.kind.code()
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.0.kind.help()
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.0.source_code.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.0.span?;
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(
            Some("here".to_owned()),
            span,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_errors_name_the_flag_and_value() {
        let e = FdError::new(
            FdErrorKind::BadMode { value: "x".into() },
            Origin::flag("--fd", "db=3,mode=x"),
        );
        assert_eq!(e.to_string(), "--fd db=3,mode=x: bad mode `x`");
        assert!(e.help().is_some());
        assert!(e.source_code().is_none());
    }

    #[test]
    fn table_errors_carry_a_span_and_render_it() {
        let text: Arc<str> = Arc::from("(fd :name \"db\" :fd 3 :colour 1)\n");
        let e = FdError::new(
            FdErrorKind::UnknownKey {
                key: "colour".into(),
            },
            Origin::Table {
                file: "caps.sexp".into(),
                line: 1,
                column: 22,
                span: (21, 7).into(),
                text,
            },
        );
        assert_eq!(
            e.to_string(),
            "--fd-from caps.sexp:1:22: unknown key `colour`"
        );
        let labels: Vec<_> = e.labels().into_iter().flatten().collect();
        assert_eq!(labels.len(), 1);
        assert_eq!(labels[0].offset(), 21);
        let mut out = String::new();
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
            .render_report(&mut out, &e)
            .unwrap();
        assert!(out.contains("caps.sexp:1:22"), "{out}");
        assert!(out.contains(":colour"), "{out}");
    }
}
