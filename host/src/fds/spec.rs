//! The flag syntax: `--with-fd NAME=FD`, `--fd NAME=FD[,KEY=VALUE…]`, `--fd-map NAME=TARGET`,
//! and the option vocabulary shared with the capability table and `--fdctl`.
//!
//! Parsing here is pure text: whether an fd is open, or allows a mode, is checked later (see
//! [`super::host`]). What a parse returns renders back to the same value ([`FdSpec::render`]),
//! which the property tests hold it to.

use super::error::FdErrorKind;

/// The largest fd number accepted as a source (the kernel's own limit is lower).
pub const MAX_FD: i32 = i32::MAX;

/// How a grant may be used: read, write, or both. Checked against the fd's open mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `r`: read only.
    Read,
    /// `w`: write only.
    Write,
    /// `rw`: read and write.
    ReadWrite,
}

impl Mode {
    /// The spelling in flags, tables and `WW_FDS`: `r`, `w` or `rw`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Read => "r",
            Mode::Write => "w",
            Mode::ReadWrite => "rw",
        }
    }

    /// Parses `r`, `w` or `rw`.
    pub fn parse(value: &str) -> Result<Mode, FdErrorKind> {
        match value {
            "r" => Ok(Mode::Read),
            "w" => Ok(Mode::Write),
            "rw" => Ok(Mode::ReadWrite),
            _ => Err(FdErrorKind::BadMode {
                value: value.to_owned(),
            }),
        }
    }

    /// Whether the grant may read.
    pub fn reads(self) -> bool {
        matches!(self, Mode::Read | Mode::ReadWrite)
    }

    /// Whether the grant may write.
    pub fn writes(self) -> bool {
        matches!(self, Mode::Write | Mode::ReadWrite)
    }
}

/// What kind of object a grant is: a byte stream (pipe, tty, anything), a regular file
/// (seekable, usable as a file), or a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `stream`: read and write in order; fits any fd.
    Stream,
    /// `file`: a regular file.
    File,
    /// `socket`: a socket.
    Socket,
}

impl Kind {
    /// The spelling in flags, tables and `WW_FDS`: `stream`, `file` or `socket`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Stream => "stream",
            Kind::File => "file",
            Kind::Socket => "socket",
        }
    }

    /// Parses `stream`, `file` or `socket`.
    pub fn parse(value: &str) -> Result<Kind, FdErrorKind> {
        match value {
            "stream" => Ok(Kind::Stream),
            "file" => Ok(Kind::File),
            "socket" => Ok(Kind::Socket),
            _ => Err(FdErrorKind::BadType {
                value: value.to_owned(),
            }),
        }
    }
}

/// The options of one grant, as given: `None` is "not said" (the plan fills in defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantOptions {
    /// `mode=`; default: what the fd's open mode allows.
    pub mode: Option<Mode>,
    /// `type=`; default: from `fstat` (regular file → file, socket → socket, else stream).
    pub kind: Option<Kind>,
    /// `target=`; default: numbered (see [`super::plan`](mod@super::plan)).
    pub target: Option<i32>,
    /// `move=`; default false: ww duplicates the fd and leaves the original open.
    pub moved: Option<bool>,
    /// `cloexec=`; default true.
    pub cloexec: Option<bool>,
    /// `pathlink=`; default false.
    pub pathlink: Option<bool>,
}

/// The option keys `--fd` accepts, in the order [`FdSpec::render`] writes them.
pub const OPTION_KEYS: [&str; 6] = ["mode", "type", "target", "move", "cloexec", "pathlink"];

impl GrantOptions {
    /// Sets option `key` from its text `value`. Errors: an unknown key, a key already set, a
    /// bad value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), FdErrorKind> {
        fn once<T>(slot: &mut Option<T>, key: &str, value: T) -> Result<(), FdErrorKind> {
            if slot.is_some() {
                return Err(FdErrorKind::DuplicateKey {
                    key: key.to_owned(),
                });
            }
            *slot = Some(value);
            Ok(())
        }
        match key {
            "mode" => once(&mut self.mode, key, Mode::parse(value)?),
            "type" => once(&mut self.kind, key, Kind::parse(value)?),
            "target" => once(&mut self.target, key, parse_number("target", value)?),
            "move" => once(&mut self.moved, key, parse_bool(key, value)?),
            "cloexec" => once(&mut self.cloexec, key, parse_bool(key, value)?),
            "pathlink" => once(&mut self.pathlink, key, parse_bool(key, value)?),
            _ => Err(FdErrorKind::UnknownKey {
                key: key.to_owned(),
            }),
        }
    }

    /// Parses `KEY=VALUE` items (already split at commas) into options.
    pub fn parse_items<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, FdErrorKind> {
        let mut options = GrantOptions::default();
        for item in items {
            let (key, value) = item.split_once('=').ok_or(FdErrorKind::Syntax {
                expected: "KEY=VALUE options after NAME=FD, separated by commas",
            })?;
            options.set(key, value)?;
        }
        Ok(options)
    }

    /// The options that were given, as `(key, value)` text in [`OPTION_KEYS`] order.
    pub fn items(&self) -> Vec<(&'static str, String)> {
        let mut items = Vec::new();
        if let Some(mode) = self.mode {
            items.push(("mode", mode.as_str().to_owned()));
        }
        if let Some(kind) = self.kind {
            items.push(("type", kind.as_str().to_owned()));
        }
        if let Some(target) = self.target {
            items.push(("target", target.to_string()));
        }
        for (key, value) in [
            ("move", self.moved),
            ("cloexec", self.cloexec),
            ("pathlink", self.pathlink),
        ] {
            if let Some(value) = value {
                items.push((key, value.to_string()));
            }
        }
        items
    }
}

/// One grant as a flag or table entry says it: a name, a host fd number, options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdSpec {
    /// The grant's name (see [`valid_name`]).
    pub name: String,
    /// The fd number in ww (the parent).
    pub fd: i32,
    /// Options as given.
    pub options: GrantOptions,
}

impl FdSpec {
    /// Renders the spec as an `--fd` value: `NAME=FD[,KEY=VALUE…]`, options in
    /// [`OPTION_KEYS`] order. [`parse_fd`] reads it back to an equal spec.
    pub fn render(&self) -> String {
        let mut out = format!("{}={}", self.name, self.fd);
        for (key, value) in self.options.items() {
            out.push(',');
            out.push_str(key);
            out.push('=');
            out.push_str(&value);
        }
        out
    }
}

/// One `--fd-map NAME=TARGET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdMap {
    /// The grant it renumbers.
    pub name: String,
    /// The new target.
    pub target: i32,
}

/// Whether `name` is a grant name: one or more of `A-Z a-z 0-9 _ -`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks a grant name (see [`valid_name`]).
pub fn check_name(name: &str) -> Result<(), FdErrorKind> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(FdErrorKind::BadName {
            name: name.to_owned(),
        })
    }
}

/// The environment variable a grant named `name` gives the cell: `WW_FD_` and the name
/// uppercased, `-` becoming `_` (`db-main` → `WW_FD_DB_MAIN`).
pub fn env_key(name: &str) -> String {
    let mut key = String::with_capacity(6 + name.len());
    key.push_str("WW_FD_");
    key.extend(name.chars().map(|c| match c {
        '-' => '_',
        c => c.to_ascii_uppercase(),
    }));
    key
}

/// Parses a non-negative integer no larger than [`MAX_FD`]. `what` names it in the error.
pub fn parse_number(what: &'static str, value: &str) -> Result<i32, FdErrorKind> {
    let bad = || FdErrorKind::BadNumber {
        what,
        value: value.to_owned(),
        max: i64::from(MAX_FD),
    };
    // `i32::from_str` takes a leading `+`; a number here is digits only.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse::<i32>().map_err(|_| bad())
}

/// Parses `true` or `false`.
pub fn parse_bool(key: &str, value: &str) -> Result<bool, FdErrorKind> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(FdErrorKind::BadBool {
            key: key.to_owned(),
            value: value.to_owned(),
        }),
    }
}

/// Splits `NAME=REST` and checks the name.
fn name_and_rest<'a>(
    value: &'a str,
    expected: &'static str,
) -> Result<(&'a str, &'a str), FdErrorKind> {
    let (name, rest) = value
        .split_once('=')
        .ok_or(FdErrorKind::Syntax { expected })?;
    check_name(name)?;
    Ok((name, rest))
}

/// Parses a `--with-fd NAME=FD` value. It takes no options.
pub fn parse_with_fd(value: &str) -> Result<FdSpec, FdErrorKind> {
    let (name, rest) = name_and_rest(value, "NAME=FD")?;
    if let Some((fd, options)) = rest.split_once(',') {
        // Say "use --fd" when the number is fine; else the number is the problem.
        parse_number("fd", fd)?;
        return Err(FdErrorKind::WithFdOptions {
            options: options.to_owned(),
        });
    }
    Ok(FdSpec {
        name: name.to_owned(),
        fd: parse_number("fd", rest)?,
        options: GrantOptions::default(),
    })
}

/// Parses an `--fd NAME=FD[,KEY=VALUE…]` value.
pub fn parse_fd(value: &str) -> Result<FdSpec, FdErrorKind> {
    let (name, rest) = name_and_rest(value, "NAME=FD[,KEY=VALUE…]")?;
    let mut parts = rest.split(',');
    let fd = parse_number("fd", parts.next().unwrap_or_default())?;
    Ok(FdSpec {
        name: name.to_owned(),
        fd,
        options: GrantOptions::parse_items(parts)?,
    })
}

/// Parses an `--fd-map NAME=TARGET` value.
pub fn parse_fd_map(value: &str) -> Result<FdMap, FdErrorKind> {
    let (name, target) = name_and_rest(value, "NAME=TARGET")?;
    Ok(FdMap {
        name: name.to_owned(),
        target: parse_number("target", target)?,
    })
}

/// Parses one `--fdctl` line: `NAME[,KEY=VALUE…]` (no fd number: the fd comes with the
/// message). `move` is not an option here: a received fd is always ww's own.
pub fn parse_fdctl_line(line: &str) -> Result<(String, GrantOptions), FdErrorKind> {
    let mut parts = line.split(',');
    let name = parts.next().unwrap_or_default();
    check_name(name)?;
    let options = GrantOptions::parse_items(parts)?;
    if options.moved.is_some() {
        return Err(FdErrorKind::UnknownKey { key: "move".into() });
    }
    Ok((name.to_owned(), options))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a parse gives, as short text: the rendered spec or the error's variant name.
    fn outcome(r: Result<FdSpec, FdErrorKind>) -> String {
        match r {
            Ok(spec) => spec.render(),
            Err(e) => format!("{e:?}")
                .split([' ', '{', '('])
                .next()
                .unwrap_or_default()
                .to_owned(),
        }
    }

    #[test]
    fn fd_flag_cases() {
        let cases: &[(&str, &str)] = &[
            ("db=3", "db=3"),
            ("db=3,mode=rw", "db=3,mode=rw"),
            ("db=3,mode=r", "db=3,mode=r"),
            ("db=3,mode=w", "db=3,mode=w"),
            // Options come back in canonical order.
            (
                "x-1_Y=0,pathlink=true,cloexec=false,move=true,target=12,type=socket,mode=w",
                "x-1_Y=0,mode=w,type=socket,target=12,move=true,cloexec=false,pathlink=true",
            ),
            ("db=3,type=stream", "db=3,type=stream"),
            ("db=3,type=file", "db=3,type=file"),
            ("db=2147483647", "db=2147483647"),
            // Errors, one per rule.
            ("db", "Syntax"),
            ("", "Syntax"),
            ("=3", "BadName"),
            ("d b=3", "BadName"),
            ("db.x=3", "BadName"),
            ("dé=3", "BadName"),
            ("db=", "BadNumber"),
            ("db=-1", "BadNumber"),
            ("db=+3", "BadNumber"),
            ("db=3x", "BadNumber"),
            ("db=2147483648", "BadNumber"),
            ("db=3,", "Syntax"),
            ("db=3,mode", "Syntax"),
            ("db=3,mode=x", "BadMode"),
            ("db=3,mode=", "BadMode"),
            ("db=3,mode=RW", "BadMode"),
            ("db=3,type=pipe", "BadType"),
            ("db=3,target=x", "BadNumber"),
            ("db=3,target=-4", "BadNumber"),
            ("db=3,move=yes", "BadBool"),
            ("db=3,cloexec=1", "BadBool"),
            ("db=3,pathlink=TRUE", "BadBool"),
            ("db=3,colour=red", "UnknownKey"),
            ("db=3,=x", "UnknownKey"),
            ("db=3,mode=r,mode=w", "DuplicateKey"),
            ("db=3,move=true,move=true", "DuplicateKey"),
        ];
        for (input, want) in cases {
            assert_eq!(outcome(parse_fd(input)), *want, "--fd {input}");
        }
    }

    #[test]
    fn with_fd_flag_cases() {
        let cases: &[(&str, &str)] = &[
            ("db=3", "db=3"),
            ("cache=0", "cache=0"),
            ("db=3,mode=r", "WithFdOptions"),
            ("db=x,mode=r", "BadNumber"),
            ("db", "Syntax"),
            ("db=", "BadNumber"),
            ("a!=3", "BadName"),
        ];
        for (input, want) in cases {
            assert_eq!(outcome(parse_with_fd(input)), *want, "--with-fd {input}");
        }
    }

    #[test]
    fn fd_map_cases() {
        assert_eq!(
            parse_fd_map("listen0=10"),
            Ok(FdMap {
                name: "listen0".into(),
                target: 10
            })
        );
        for (input, want) in [
            ("db", "Syntax"),
            ("db=", "BadNumber"),
            ("db=ten", "BadNumber"),
            ("=10", "BadName"),
            ("d:b=10", "BadName"),
        ] {
            let got = format!("{:?}", parse_fd_map(input).unwrap_err());
            assert!(got.starts_with(want), "--fd-map {input}: {got}");
        }
    }

    #[test]
    fn fdctl_lines() {
        assert_eq!(
            parse_fdctl_line("db,mode=r"),
            Ok((
                "db".into(),
                GrantOptions {
                    mode: Some(Mode::Read),
                    ..Default::default()
                }
            ))
        );
        assert!(matches!(
            parse_fdctl_line("db,move=true"),
            Err(FdErrorKind::UnknownKey { .. })
        ));
        assert!(matches!(
            parse_fdctl_line(""),
            Err(FdErrorKind::BadName { .. })
        ));
        assert!(matches!(
            parse_fdctl_line("db=3"),
            Err(FdErrorKind::BadName { .. })
        ));
    }

    #[test]
    fn env_keys() {
        assert_eq!(env_key("db"), "WW_FD_DB");
        assert_eq!(env_key("db-main_2"), "WW_FD_DB_MAIN_2");
        assert_eq!(env_key("Listen0"), "WW_FD_LISTEN0");
    }

    pub(crate) fn name_strategy() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-]{1,12}"
    }

    pub(crate) fn options_strategy() -> impl Strategy<Value = GrantOptions> {
        let mode = prop_oneof![Just(Mode::Read), Just(Mode::Write), Just(Mode::ReadWrite)];
        let kind = prop_oneof![Just(Kind::Stream), Just(Kind::File), Just(Kind::Socket)];
        (
            proptest::option::of(mode),
            proptest::option::of(kind),
            proptest::option::of(0..=i32::MAX),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
        )
            .prop_map(
                |(mode, kind, target, moved, cloexec, pathlink)| GrantOptions {
                    mode,
                    kind,
                    target,
                    moved,
                    cloexec,
                    pathlink,
                },
            )
    }

    pub(crate) fn spec_strategy() -> impl Strategy<Value = FdSpec> {
        (name_strategy(), 0..=i32::MAX, options_strategy()).prop_map(|(name, fd, options)| FdSpec {
            name,
            fd,
            options,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_flag_values_never_panic(s in ".{0,40}") {
            let _ = parse_fd(&s);
            let _ = parse_with_fd(&s);
            let _ = parse_fd_map(&s);
            let _ = parse_fdctl_line(&s);
        }

        #[test]
        fn flag_shaped_values_never_panic(s in "[a-z]{0,3}=[0-9a-z=,+-]{0,30}") {
            let _ = parse_fd(&s);
            let _ = parse_with_fd(&s);
            let _ = parse_fd_map(&s);
        }

        #[test]
        fn fd_values_round_trip(spec in spec_strategy()) {
            prop_assert_eq!(parse_fd(&spec.render()), Ok(spec));
        }

        #[test]
        fn with_fd_values_round_trip(name in name_strategy(), fd in 0..=i32::MAX) {
            let spec = FdSpec { name, fd, options: GrantOptions::default() };
            prop_assert_eq!(parse_with_fd(&spec.render()), Ok(spec));
        }
    }
}
