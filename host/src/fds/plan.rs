//! From flags, a table, systemd and `--fdctl` to one validated list of grants: the [`Plan`].
//!
//! [`plan`] does, in order, stopping at the first error:
//!
//! 1. parse every flag value, read and parse the `--fd-from` table, read the systemd
//!    variables: grant order is `--with-fd` flags, `--fd` flags (each in flag order), the
//!    table's forms, systemd's fds, then each `--fdctl` channel's fds;
//! 2. probe every numbered host fd a grant names (held? open how? what is it?) and check its
//!    options against it, before any wait on `--fdctl`, and check names and targets so far;
//! 3. receive the `--fdctl` fds, and probe and check them;
//! 4. check names and `--fd-map`s, and number the targets (below);
//! 5. only then take the fds: duplicate each numbered source (`F_DUPFD_CLOEXEC`), take the
//!    received ones as they are, and close the originals of `move=true` grants last, when
//!    every duplicate exists. An error before this step has taken nothing and closed nothing.
//!
//! # Numbering
//!
//! A grant's target, the fd number it has in a native cell, is, by precedence:
//!
//! 1. its `--fd-map NAME=TARGET` (which overrides a `target=` of the same grant);
//! 2. its `target=` (`:target` in a table);
//! 3. for a `--with-fd` grant, the lowest target from 4 up that no explicit target (1, 2)
//!    and no earlier `--with-fd` grant took, in flag order: 4, 5, 6… (3 is a native cell's RPC
//!    socket);
//! 4. for any other grant (`--fd`, table, systemd, `--fdctl`), the lowest from 10 up that
//!    nothing took yet, in grant order.
//!
//! Explicit targets must be distinct, at most [`MAX_TARGET`], and not [`RPC_TARGET`] (3).
//! Targets 0, 1 and 2 are never numbered automatically; asked for explicitly they are
//! accepted, and mean that the grant replaces that stdio stream of the cell (seed 003's
//! `(fd :name "stdin" :fd 0 :mode "r" :target 0)`).
//!
//! # Names
//!
//! A name is one or more of `A-Z a-z 0-9 _ -` and gives the cell `WW_FD_<NAME>`, uppercased
//! with `-` as `_`. Two grants whose names give the same variable (`db` and `DB`, `a-b` and
//! `a_b`) are duplicates. `--fd-map` names a grant exactly.
//!
//! # Defaults
//!
//! `mode`: what the fd's open mode allows (`O_RDONLY` → r, `O_WRONLY` → w, `O_RDWR` → rw).
//! `type`: from `fstat` (regular file → file, socket → socket, anything else → stream);
//! `type=stream` fits any fd, `file` and `socket` must match. `move`: false (systemd and
//! `--fdctl` fds are always moved: ww owns them). `cloexec`: true. `pathlink`: false.
//!
//! # Invariants
//!
//! - Every fd a [`Plan`] holds is an [`OwnedFd`] ww made (a duplicate) or received; dropping
//!   the plan, or a [`Grant`], closes it.
//! - No host fd that no grant names is touched: probed, duplicated or closed. The only fds
//!   closed are the originals of `move=true` grants (and systemd's, which are moved) and an
//!   `--fdctl inherit:N` channel, and only once the whole plan is valid.
//! - [`plan`] must run before ww opens fds of its own or starts threads: a grant names fds by
//!   number, and only inherited fds should answer.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use super::error::{FdError, FdErrorKind, Origin};
use super::host::{self, FdctlChannel, FdctlLimits, SystemdEnv};
use super::spec::{self, FdMap, GrantOptions, Kind, Mode};
use super::table;

/// A native cell's RPC socket: never a grant's target.
pub const RPC_TARGET: i32 = 3;
/// Where `--with-fd` numbering starts.
pub const WITH_FD_BASE: i32 = 4;
/// Where numbering of other grants starts.
pub const AUTO_BASE: i32 = 10;
/// The largest target (the usual soft `RLIMIT_NOFILE` is 1024).
pub const MAX_TARGET: i32 = 1023;

/// The fd flags of `ww run`, as text: what `cli`'s `FdArgs` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdFlags {
    /// `--with-fd NAME=FD`, in order.
    pub with_fd: Vec<String>,
    /// `--fd NAME=FD[,KEY=VALUE…]`, in order.
    pub fd: Vec<String>,
    /// `--fd-map NAME=TARGET`.
    pub fd_map: Vec<String>,
    /// `--fd-from @PATH|-`.
    pub fd_from: Option<String>,
    /// `--use-systemd-fds[=PREFIX]`: the prefix (`listen` when the flag has no value).
    pub use_systemd_fds: Option<String>,
    /// `--fdctl inherit:N|PATH`, in order.
    pub fdctl: Vec<String>,
}

/// What [`plan`] reads of the host besides the granted fds.
pub struct HostContext {
    /// The systemd socket-activation variables.
    pub systemd: SystemdEnv,
    /// ww's pid, for `LISTEN_PID`.
    pub pid: u32,
    /// Where `--fd-from -` reads; it consumes it.
    pub stdin: Box<dyn Read>,
    /// Bounds on each `--fdctl` channel.
    pub fdctl: FdctlLimits,
}

impl HostContext {
    /// This process: its environment, pid and stdin, default `--fdctl` bounds.
    pub fn from_process() -> HostContext {
        HostContext {
            systemd: SystemdEnv::from_process(),
            pid: std::process::id(),
            stdin: Box::new(std::io::stdin()),
            fdctl: FdctlLimits::default(),
        }
    }
}

/// One granted fd, ready to hand to a cell.
#[derive(Debug)]
pub struct Grant {
    name: String,
    fd: OwnedFd,
    target: i32,
    mode: Mode,
    kind: Kind,
    moved: bool,
    cloexec: bool,
    pathlink: bool,
    origin: Origin,
}

impl Grant {
    /// The grant's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fd ww holds for it: a close-on-exec duplicate, or the received fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Takes the fd out (the rest of the grant is dropped).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// The fd number it has in a native cell.
    pub fn target(&self) -> i32 {
        self.target
    }

    /// What the cell may do with it; the host enforces it.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// What it is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether ww took the original over (`move=true`, systemd, `--fdctl`).
    pub fn moved(&self) -> bool {
        self.moved
    }

    /// Whether the cell's fd is close-on-exec (native cells).
    pub fn cloexec(&self) -> bool {
        self.cloexec
    }

    /// Whether the cell gets a path to it (native cells' jail).
    pub fn pathlink(&self) -> bool {
        self.pathlink
    }

    /// Where the grant was said.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The cell's variable for it: `WW_FD_<NAME>`.
    pub fn env_key(&self) -> String {
        spec::env_key(&self.name)
    }

    /// The `--fd-verbose` line:
    /// `grant fd name=db num=10 type=file mode=rw move=false cloexec=true`.
    pub fn verbose_line(&self) -> String {
        format!(
            "grant fd name={} num={} type={} mode={} move={} cloexec={}",
            self.name,
            self.target,
            self.kind.as_str(),
            self.mode.as_str(),
            self.moved,
            self.cloexec
        )
    }
}

/// The validated grants of one `ww run`, in grant order. Dropping it closes every fd in it.
#[derive(Debug, Default)]
pub struct Plan {
    grants: Vec<Grant>,
    warnings: Vec<String>,
}

impl Plan {
    /// The grants, in grant order.
    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }

    /// Takes the grants.
    pub fn into_grants(self) -> Vec<Grant> {
        self.grants
    }

    /// Whether there are no grants.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// Things ignored on the way (systemd variables meant for another process…); [`plan`]
    /// has logged them already.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The cell's environment: `WW_FD_<NAME>=<target>` for each grant, then `WW_FDS`. Empty
    /// when there are no grants.
    pub fn env(&self) -> Vec<(String, String)> {
        if self.grants.is_empty() {
            return Vec::new();
        }
        let mut env: Vec<(String, String)> = self
            .grants
            .iter()
            .map(|g| (g.env_key(), g.target.to_string()))
            .collect();
        env.push(("WW_FDS".to_owned(), self.ww_fds()));
        env
    }

    /// `WW_FDS`: `((db (fd 10) (mode "rw") (type "socket")) …)`, in grant order.
    pub fn ww_fds(&self) -> String {
        let entries: Vec<String> = self
            .grants
            .iter()
            .map(|g| {
                format!(
                    "({} (fd {}) (mode \"{}\") (type \"{}\"))",
                    g.name,
                    g.target,
                    g.mode.as_str(),
                    g.kind.as_str()
                )
            })
            .collect();
        format!("({})", entries.join(" "))
    }

    /// The `--fd-verbose` lines, one per grant.
    pub fn verbose_lines(&self) -> Vec<String> {
        self.grants.iter().map(Grant::verbose_line).collect()
    }
}

/// Where a grant's fd comes from.
#[derive(Debug)]
enum Source {
    /// A number ww inherited.
    Held(RawFd),
    /// An fd received over `--fdctl`.
    Received(OwnedFd),
}

/// A grant on its way to the plan.
#[derive(Debug)]
struct Entry {
    name: String,
    source: Source,
    options: GrantOptions,
    origin: Origin,
    with_fd: bool,
    moved: bool,
    checked: Option<(Mode, Kind)>,
}

impl Entry {
    fn new(spec: spec::FdSpec, origin: Origin, with_fd: bool) -> Entry {
        Entry {
            moved: spec.options.moved.unwrap_or(false),
            name: spec.name,
            source: Source::Held(spec.fd),
            options: spec.options,
            origin,
            with_fd,
            checked: None,
        }
    }

    fn meta(&self) -> Meta<'_> {
        Meta {
            name: &self.name,
            explicit: self.options.target,
            with_fd: self.with_fd,
            origin: &self.origin,
        }
    }
}

/// What numbering needs of a grant.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta<'a> {
    pub(crate) name: &'a str,
    pub(crate) explicit: Option<i32>,
    pub(crate) with_fd: bool,
    pub(crate) origin: &'a Origin,
}

/// Checks names, maps and explicit targets, and numbers every grant (see the module docs).
/// Returns each grant's target, in order.
pub(crate) fn layout(metas: &[Meta<'_>], maps: &[(FdMap, Origin)]) -> Result<Vec<i32>, FdError> {
    let mut by_env: HashMap<String, usize> = HashMap::new();
    for (i, m) in metas.iter().enumerate() {
        let env = spec::env_key(m.name);
        match by_env.entry(env) {
            MapEntry::Occupied(first) => {
                return Err(FdError::new(
                    FdErrorKind::DuplicateName {
                        name: m.name.to_owned(),
                        env: first.key().clone(),
                        first: metas[*first.get()].origin.to_string(),
                    },
                    m.origin.clone(),
                ));
            }
            MapEntry::Vacant(slot) => {
                slot.insert(i);
            }
        }
    }

    let mut mapped: HashMap<&str, (i32, &Origin)> = HashMap::new();
    for (map, origin) in maps {
        if !metas.iter().any(|m| m.name == map.name) {
            return Err(FdError::new(
                FdErrorKind::MapUnknown {
                    name: map.name.clone(),
                },
                origin.clone(),
            ));
        }
        if mapped
            .insert(map.name.as_str(), (map.target, origin))
            .is_some()
        {
            return Err(FdError::new(
                FdErrorKind::DuplicateMap {
                    name: map.name.clone(),
                },
                origin.clone(),
            ));
        }
    }

    let mut targets: Vec<Option<i32>> = vec![None; metas.len()];
    let mut taken: HashMap<i32, usize> = HashMap::new();
    for (i, m) in metas.iter().enumerate() {
        let explicit = match mapped.get(m.name) {
            Some((target, origin)) => Some((*target, *origin)),
            None => m.explicit.map(|t| (t, m.origin)),
        };
        let Some((target, origin)) = explicit else {
            continue;
        };
        if target == RPC_TARGET {
            return Err(FdError::new(
                FdErrorKind::ReservedTarget { target },
                origin.clone(),
            ));
        }
        if target > MAX_TARGET {
            return Err(FdError::new(
                FdErrorKind::TargetTooLarge {
                    target,
                    max: MAX_TARGET,
                },
                origin.clone(),
            ));
        }
        if let Some(&other) = taken.get(&target) {
            return Err(FdError::new(
                FdErrorKind::DuplicateTarget {
                    target,
                    other: metas[other].name.to_owned(),
                },
                origin.clone(),
            ));
        }
        taken.insert(target, i);
        targets[i] = Some(target);
    }

    // `--with-fd` grants first (4 up), then the rest (10 up), each in grant order.
    for with_fd_pass in [true, false] {
        let mut next = if with_fd_pass {
            WITH_FD_BASE
        } else {
            AUTO_BASE
        };
        for (i, m) in metas.iter().enumerate() {
            if m.with_fd != with_fd_pass || targets[i].is_some() {
                continue;
            }
            while taken.contains_key(&next) {
                next += 1;
            }
            if next > MAX_TARGET {
                return Err(FdError::new(
                    FdErrorKind::TargetTooLarge {
                        target: next,
                        max: MAX_TARGET,
                    },
                    m.origin.clone(),
                ));
            }
            taken.insert(next, i);
            targets[i] = Some(next);
        }
    }
    Ok(targets
        .into_iter()
        .map(|t| t.unwrap_or(AUTO_BASE))
        .collect())
}

/// Grants and maps, as parsed.
type Parsed = (Vec<Entry>, Vec<(FdMap, Origin)>);

/// Parses the text of `flags` (and the table) into entries and maps: step 1 without systemd.
fn parse_flags(flags: &FdFlags, stdin: &mut dyn Read) -> Result<Parsed, FdError> {
    let mut entries = Vec::new();
    for (flag, values, parse, with_fd) in [
        (
            "--with-fd",
            &flags.with_fd,
            spec::parse_with_fd as fn(&str) -> Result<spec::FdSpec, FdErrorKind>,
            true,
        ),
        ("--fd", &flags.fd, spec::parse_fd, false),
    ] {
        for value in values {
            let origin = Origin::flag(flag, value);
            let spec = parse(value).map_err(|k| FdError::new(k, origin.clone()))?;
            entries.push(Entry::new(spec, origin, with_fd));
        }
    }
    let maps = flags
        .fd_map
        .iter()
        .map(|value| {
            let origin = Origin::flag("--fd-map", value);
            spec::parse_fd_map(value)
                .map(|map| (map, origin.clone()))
                .map_err(|k| FdError::new(k, origin))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(value) = &flags.fd_from {
        let (name, text) = table::load(value, stdin)?;
        for entry in table::parse(&name, &text)? {
            entries.push(Entry::new(entry.spec, entry.origin, false));
        }
    }
    Ok((entries, maps))
}

/// Builds the plan: see the module docs for the steps, numbering and defaults.
pub fn plan(flags: &FdFlags, host: &mut HostContext) -> Result<Plan, FdError> {
    let (mut entries, maps) = parse_flags(flags, host.stdin.as_mut())?;
    let channels = flags
        .fdctl
        .iter()
        .map(|value| FdctlChannel::parse(value).map(|c| (c, value.as_str())))
        .collect::<Result<Vec<_>, _>>()?;

    let mut warnings = Vec::new();
    if let Some(prefix) = &flags.use_systemd_fds {
        let import = host::systemd_fds(&host.systemd, host.pid, prefix)?;
        for (name, fd) in import.fds {
            let origin = Origin::Systemd {
                fd,
                name: name.clone(),
            };
            let spec = spec::FdSpec {
                name,
                fd,
                options: GrantOptions::default(),
            };
            let mut entry = Entry::new(spec, origin, false);
            entry.moved = true;
            entries.push(entry);
        }
        warnings.extend(import.warnings);
    }
    for warning in &warnings {
        tracing::warn!("{warning}");
    }

    // Step 2: probe and check every numbered source, and the inherited channels.
    for entry in &mut entries {
        if let Source::Held(fd) = entry.source {
            let checked = host::probe_number(fd)
                .and_then(|probe| host::check(probe, &entry.options, fd))
                .map_err(|k| FdError::new(k, entry.origin.clone()))?;
            entry.checked = Some(checked);
        }
    }
    let mut inherited: Vec<RawFd> = Vec::new();
    for (channel, value) in &channels {
        let FdctlChannel::Inherit(fd) = channel else {
            continue;
        };
        let at = || Origin::flag("--fdctl", value);
        let problem = if inherited.contains(fd) {
            Some(format!("fd {fd} is given as --fdctl twice"))
        } else if entries
            .iter()
            .any(|e| matches!(e.source, Source::Held(n) if n == *fd))
        {
            Some(format!(
                "fd {fd} is the --fdctl channel; it cannot also be granted"
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(FdError::new(FdErrorKind::Fdctl { problem }, at()));
        }
        let probe = host::probe_number(*fd).map_err(|k| FdError::new(k, at()))?;
        if probe.object != host::Object::Socket {
            return Err(FdError::new(
                FdErrorKind::Fdctl {
                    problem: format!("fd {fd} is not a Unix socket"),
                },
                at(),
            ));
        }
        inherited.push(*fd);
    }
    if !channels.is_empty() {
        // Fail fast before waiting on a peer: maps may name grants still to come.
        let metas: Vec<Meta<'_>> = entries.iter().map(Entry::meta).collect();
        let known: Vec<(FdMap, Origin)> = maps
            .iter()
            .filter(|(m, _)| metas.iter().any(|meta| meta.name == m.name))
            .cloned()
            .collect();
        layout(&metas, &known)?;
    }

    // Step 3: receive.
    for (channel, value) in &channels {
        for received in host::receive(channel, value, &host.fdctl)? {
            let origin = Origin::Fdctl {
                channel: (*value).to_owned(),
                index: Some(received.index),
            };
            let number = received.fd.as_raw_fd();
            let checked = host::probe(received.fd.as_fd(), number)
                .and_then(|probe| host::check(probe, &received.options, number))
                .map_err(|k| FdError::new(k, origin.clone()))?;
            entries.push(Entry {
                name: received.name,
                source: Source::Received(received.fd),
                options: received.options,
                origin,
                with_fd: false,
                moved: true,
                checked: Some(checked),
            });
        }
    }

    // Step 4: names, maps, numbers.
    let metas: Vec<Meta<'_>> = entries.iter().map(Entry::meta).collect();
    let targets = layout(&metas, &maps)?;

    // Step 5: take the fds; close moved originals only once every duplicate exists.
    let mut grants = Vec::with_capacity(entries.len());
    let mut to_close: Vec<RawFd> = Vec::new();
    for (entry, target) in entries.into_iter().zip(targets) {
        let (mode, kind) = match entry.checked {
            Some(checked) => checked,
            None => {
                return Err(FdError::new(
                    FdErrorKind::Fdctl {
                        problem: "internal: a grant was not checked".into(),
                    },
                    entry.origin,
                ));
            }
        };
        let fd = match entry.source {
            Source::Held(n) => {
                if entry.moved && !to_close.contains(&n) {
                    to_close.push(n);
                }
                host::dup_number(n).map_err(|k| FdError::new(k, entry.origin.clone()))?
            }
            Source::Received(fd) => fd,
        };
        grants.push(Grant {
            name: entry.name,
            fd,
            target,
            mode,
            kind,
            moved: entry.moved,
            cloexec: entry.options.cloexec.unwrap_or(true),
            pathlink: entry.options.pathlink.unwrap_or(false),
            origin: entry.origin,
        });
    }
    for n in to_close {
        // SAFETY: `move=true` (or systemd socket activation) hands fd n to ww; ww holds no
        // handle on it but the duplicate just made.
        unsafe { host::close_number(n) };
    }
    Ok(Plan { grants, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fds::host::tests::send;
    use std::os::fd::IntoRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    /// Numbers the grants of `args` (`--with-fd V`, `--fd V`, `--fd-map V`, `--table TEXT`)
    /// without touching fds: `name=target` pairs, or the error's variant and origin.
    fn numbered(args: &[&str]) -> Result<String, String> {
        let mut entries: Vec<(spec::FdSpec, Origin, bool)> = Vec::new();
        let mut maps = Vec::new();
        for arg in args {
            let (flag, value) = arg.split_once(' ').unwrap_or((arg, ""));
            let origin = match flag {
                "--with-fd" => Origin::flag("--with-fd", value),
                "--fd-map" => Origin::flag("--fd-map", value),
                _ => Origin::flag("--fd", value),
            };
            match flag {
                "--with-fd" => entries.push((spec::parse_with_fd(value).unwrap(), origin, true)),
                "--fd" => entries.push((spec::parse_fd(value).unwrap(), origin, false)),
                "--fd-map" => maps.push((spec::parse_fd_map(value).unwrap(), origin)),
                "--table" => {
                    for e in table::parse("t", value).unwrap() {
                        entries.push((e.spec, e.origin, false));
                    }
                }
                _ => panic!("unknown test flag {flag}"),
            }
        }
        let metas: Vec<Meta<'_>> = entries
            .iter()
            .map(|(s, o, w)| Meta {
                name: &s.name,
                explicit: s.options.target,
                with_fd: *w,
                origin: o,
            })
            .collect();
        match layout(&metas, &maps) {
            Ok(targets) => Ok(metas
                .iter()
                .zip(targets)
                .map(|(m, t)| format!("{}={t}", m.name))
                .collect::<Vec<_>>()
                .join(" ")),
            Err(e) => Err(format!(
                "{} @ {}",
                format!("{:?}", e.kind())
                    .split([' ', '{'])
                    .next()
                    .unwrap_or_default(),
                e.origin()
            )),
        }
    }

    #[test]
    fn numbering_rules() {
        #[rustfmt::skip]
        let ok: &[(&[&str], &str)] = &[
            (&[], ""),
            // --with-fd: 4, 5, 6… in flag order.
            (&["--with-fd db=3", "--with-fd cache=4"], "db=4 cache=5"),
            (&["--with-fd cache=4", "--with-fd db=3"], "cache=4 db=5"),
            // --fd: 10 on.
            (&["--fd db=3", "--fd cache=4"], "db=10 cache=11"),
            (&["--with-fd a=5", "--fd b=6", "--with-fd c=7"], "a=4 b=10 c=5"),
            // Explicit target= wins, and numbering skips it.
            (&["--fd db=3,target=10", "--fd cache=4"], "db=10 cache=11"),
            (&["--fd a=3", "--fd b=4,target=10"], "a=11 b=10"),
            (&["--fd a=3,target=12", "--fd b=4", "--fd c=5", "--fd d=6"], "a=12 b=10 c=11 d=13"),
            (&["--with-fd a=3", "--fd b=4,target=4"], "a=5 b=4"),
            (&["--fd b=4,target=7"], "b=7"),
            // --fd-map wins, and overrides target=.
            (&["--fd db=3", "--fd-map db=10"], "db=10"),
            (&["--fd db=3", "--fd x=4", "--fd-map db=10"], "db=10 x=11"),
            (&["--fd db=3,target=20", "--fd-map db=30"], "db=30"),
            (&["--fd a=3,target=20", "--fd b=4", "--fd-map a=10"], "a=10 b=11"),
            (&["--with-fd a=3", "--with-fd b=4", "--fd-map a=20"], "a=20 b=4"),
            // target= freed by --fd-map can be used by another grant.
            (&["--fd a=3,target=20", "--fd b=4,target=30", "--fd-map a=30", "--fd-map b=20"], "a=30 b=20"),
            // stdio targets only when explicit.
            (&["--fd in=0,target=0", "--fd out=1,target=1", "--fd err=2,target=2"], "in=0 out=1 err=2"),
            (&["--fd in=0", "--fd-map in=0"], "in=0"),
            (&["--fd x=0"], "x=10"),
            // Tables number like --fd, after the flags.
            (&["--fd a=3", "--table (fd :name \"t1\" :fd 4) (fd (name \"t2\") (fd 5) (target 10))"], "a=11 t1=12 t2=10"),
            (&["--fd a=3,target=1023"], "a=1023"),
            // Names differing in case are fine for --fd-map only when exact.
            (&["--fd db=3", "--fd other=4", "--fd-map other=10"], "db=11 other=10"),
        ];
        for (args, want) in ok {
            assert_eq!(numbered(args), Ok(want.to_string()), "{args:?}");
        }
        // Many --with-fd run past 9 into the auto range; --fd grants then skip them.
        let many: Vec<String> = (0..8).map(|i| format!("--with-fd w{i}=0")).collect();
        let mut args: Vec<&str> = many.iter().map(String::as_str).collect();
        args.push("--fd x=0");
        assert_eq!(
            numbered(&args),
            Ok("w0=4 w1=5 w2=6 w3=7 w4=8 w5=9 w6=10 w7=11 x=12".into())
        );
    }

    #[test]
    fn numbering_errors() {
        #[rustfmt::skip]
        let bad: &[(&[&str], &str)] = &[
            (&["--fd db=3", "--fd db=4"], "DuplicateName @ --fd db=4"),
            (&["--with-fd db=3", "--fd DB=4"], "DuplicateName @ --fd DB=4"),
            (&["--fd a-b=3", "--fd a_b=4"], "DuplicateName @ --fd a_b=4"),
            (&["--fd db=3", "--table (fd :name \"db\" :fd 4)"], "DuplicateName @ --fd-from t:1:1"),
            (&["--fd a=3,target=10", "--fd b=4,target=10"], "DuplicateTarget @ --fd b=4,target=10"),
            (&["--fd a=3,target=10", "--fd b=4", "--fd-map b=10"], "DuplicateTarget @ --fd-map b=10"),
            (&["--fd a=3", "--fd b=4", "--fd-map a=12", "--fd-map b=12"], "DuplicateTarget @ --fd-map b=12"),
            (&["--fd a=3,target=3"], "ReservedTarget @ --fd a=3,target=3"),
            (&["--fd a=3", "--fd-map a=3"], "ReservedTarget @ --fd-map a=3"),
            (&["--fd a=3,target=1024"], "TargetTooLarge @ --fd a=3,target=1024"),
            (&["--fd a=3", "--fd-map a=99999"], "TargetTooLarge @ --fd-map a=99999"),
            (&["--fd a=3", "--fd-map b=10"], "MapUnknown @ --fd-map b=10"),
            (&["--fd db=3", "--fd-map DB=10"], "MapUnknown @ --fd-map DB=10"),
            (&["--fd a=3", "--fd-map a=10", "--fd-map a=11"], "DuplicateMap @ --fd-map a=11"),
        ];
        for (args, want) in bad {
            assert_eq!(numbered(args), Err(want.to_string()), "{args:?}");
        }
    }

    fn ctx() -> HostContext {
        HostContext {
            systemd: SystemdEnv {
                listen_fds: None,
                listen_pid: None,
                listen_fdnames: None,
                first_fd: 3,
            },
            pid: 4242,
            stdin: Box::new(std::io::empty()),
            fdctl: FdctlLimits {
                timeout: Duration::from_secs(5),
                ..FdctlLimits::default()
            },
        }
    }

    fn flags(with_fd: &[String], fd: &[String], fd_map: &[&str]) -> FdFlags {
        FdFlags {
            with_fd: with_fd.to_vec(),
            fd: fd.to_vec(),
            fd_map: fd_map.iter().map(|s| s.to_string()).collect(),
            ..FdFlags::default()
        }
    }

    fn err_of(flags: &FdFlags, host: &mut HostContext) -> FdError {
        match plan(flags, host) {
            Ok(p) => panic!("planned {p:?}"),
            Err(e) => e,
        }
    }

    fn is_open(fd: RawFd) -> bool {
        host::probe_number(fd).is_ok()
    }

    #[test]
    fn a_plan_of_real_fds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "").unwrap();
        let (reader, writer) = std::io::pipe().unwrap();
        let (sock, mut peer) = UnixStream::pair().unwrap();
        let log = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let r = reader.as_raw_fd();
        let s = sock.as_raw_fd();
        let l = log.as_raw_fd();
        let flags = flags(
            &[format!("input={r}")],
            &[
                format!("db={s},type=socket"),
                format!("logs={l},mode=w,cloexec=false,pathlink=true"),
                format!("db-ro={s},mode=r,type=stream,target=0"),
            ],
            &["logs=20"],
        );
        let p = plan(&flags, &mut ctx()).unwrap();
        let summary: Vec<String> = p
            .grants()
            .iter()
            .map(|g| {
                format!(
                    "{} {} {} {}",
                    g.name(),
                    g.target(),
                    g.mode().as_str(),
                    g.kind().as_str()
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                "input 4 r stream",
                "db 10 rw socket",
                "logs 20 w file",
                "db-ro 0 r stream"
            ]
        );
        assert_eq!(
            p.verbose_lines(),
            [
                "grant fd name=input num=4 type=stream mode=r move=false cloexec=true",
                "grant fd name=db num=10 type=socket mode=rw move=false cloexec=true",
                "grant fd name=logs num=20 type=file mode=w move=false cloexec=false",
                "grant fd name=db-ro num=0 type=stream mode=r move=false cloexec=true",
            ]
        );
        let env = p.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            env,
            [
                ("WW_FD_INPUT", "4"),
                ("WW_FD_DB", "10"),
                ("WW_FD_LOGS", "20"),
                ("WW_FD_DB_RO", "0"),
                (
                    "WW_FDS",
                    "((input (fd 4) (mode \"r\") (type \"stream\")) (db (fd 10) (mode \"rw\") (type \"socket\")) (logs (fd 20) (mode \"w\") (type \"file\")) (db-ro (fd 0) (mode \"r\") (type \"stream\")))"
                ),
            ]
        );
        assert!(p.grants()[2].pathlink() && !p.grants()[2].cloexec());
        // WW_FDS is itself S-expressions a cell can read.
        let fds = lexpr::from_str(&p.ww_fds()).unwrap();
        assert_eq!(fds.list_iter().unwrap().count(), 4);

        // The grants hold their own duplicates: the originals stay open (move=false), and the
        // duplicates work.
        for g in p.grants() {
            assert!(![r, s, l].contains(&g.fd().as_raw_fd()));
        }
        assert!(is_open(r) && is_open(s) && is_open(l));
        rustix::io::write(&writer, b"x").unwrap();
        let mut buf = [0u8; 1];
        rustix::io::read(p.grants()[0].fd(), &mut buf).unwrap();
        assert_eq!(&buf, b"x");
        std::io::Write::write_all(&mut peer, b"y").unwrap();
        rustix::io::read(p.grants()[1].fd(), &mut buf).unwrap();
        assert_eq!(&buf, b"y");

        // A grant's fd can be taken out; the rest close with the plan.
        let first = p.grants()[0].fd().as_raw_fd();
        let taken = p.into_grants().remove(0).into_fd();
        assert_eq!(taken.as_raw_fd(), first);
    }

    #[test]
    fn move_closes_the_original_after_dup() {
        let (reader, writer) = std::io::pipe().unwrap();
        let n = reader.into_raw_fd();
        let p = plan(&flags(&[], &[format!("in={n},move=true")], &[]), &mut ctx()).unwrap();
        assert!(p.grants()[0].moved());
        // The original is closed (unless a parallel test reused the number at once: then it
        // is not a pipe's read end that still delivers our byte).
        rustix::io::write(&writer, b"z").unwrap();
        let mut buf = [0u8; 1];
        rustix::io::read(p.grants()[0].fd(), &mut buf).unwrap();
        assert_eq!(&buf, b"z");
        assert_ne!(p.grants()[0].fd().as_raw_fd(), n);
    }

    #[test]
    fn nothing_is_taken_or_closed_when_validation_fails() {
        let (reader, _writer) = std::io::pipe().unwrap();
        let n = reader.as_raw_fd();
        // A valid move=true grant and an invalid one: the original must stay open.
        let e = err_of(
            &flags(
                &[],
                &[format!("a={n},move=true"), format!("b={n},mode=w")],
                &[],
            ),
            &mut ctx(),
        );
        assert!(
            matches!(e.kind(), FdErrorKind::ModeNotAllowed { .. }),
            "{e}"
        );
        assert!(is_open(n));
        let e = err_of(
            &flags(&[], &[format!("a={n},move=true")], &["nope=12"]),
            &mut ctx(),
        );
        assert!(matches!(e.kind(), FdErrorKind::MapUnknown { .. }), "{e}");
        assert!(is_open(n));
        drop(reader);
    }

    #[test]
    fn errors_about_real_fds_name_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "x").unwrap();
        let ro = std::fs::File::open(&path).unwrap();
        let wo = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let (reader, writer) = std::io::pipe().unwrap();
        let (sock, _peer) = UnixStream::pair().unwrap();
        let d = std::fs::File::open(dir.path()).unwrap();
        let (ro, wo, r, w, s, d) = (
            ro.as_raw_fd(),
            wo.as_raw_fd(),
            reader.as_raw_fd(),
            writer.as_raw_fd(),
            sock.as_raw_fd(),
            d.as_raw_fd(),
        );
        let unheld = 4321;
        assert!(!is_open(unheld));
        #[rustfmt::skip]
        let cases: Vec<(FdFlags, &str, String)> = vec![
            (flags(&[format!("db={unheld}")], &[], &[]), "NotHeld", format!("--with-fd db={unheld}: fd {unheld} is not open in ww")),
            (flags(&[], &[format!("db={unheld},mode=r")], &[]), "NotHeld", format!("--fd db={unheld},mode=r")),
            (flags(&[], &[format!("f={ro},mode=rw")], &[]), "ModeNotAllowed", format!("--fd f={ro},mode=rw: mode=rw needs reading and writing, but fd {ro} is open read-only")),
            (flags(&[], &[format!("f={ro},mode=w")], &[]), "ModeNotAllowed", format!("--fd f={ro},mode=w")),
            (flags(&[], &[format!("f={wo},mode=rw")], &[]), "ModeNotAllowed", format!("--fd f={wo},mode=rw")),
            (flags(&[], &[format!("f={wo},mode=r")], &[]), "ModeNotAllowed", format!("--fd f={wo},mode=r")),
            (flags(&[], &[format!("p={r},mode=w")], &[]), "ModeNotAllowed", format!("--fd p={r},mode=w")),
            (flags(&[], &[format!("p={w},mode=rw")], &[]), "ModeNotAllowed", format!("--fd p={w},mode=rw")),
            (flags(&[], &[format!("p={r},type=file")], &[]), "TypeMismatch", format!("--fd p={r},type=file: type=file, but fd {r} is neither")),
            (flags(&[], &[format!("s={s},type=file")], &[]), "TypeMismatch", format!("--fd s={s},type=file")),
            (flags(&[], &[format!("f={ro},type=socket")], &[]), "TypeMismatch", format!("--fd f={ro},type=socket")),
            (flags(&[], &[format!("d={d}")], &[]), "Unusable", format!("--fd d={d}: fd {d} is a directory")),
            (flags(&[], &["x=1,mode=q".into()], &[]), "BadMode", "--fd x=1,mode=q: bad mode `q`".into()),
            (flags(&["x=1,mode=r".into()], &[], &[]), "WithFdOptions", "--with-fd x=1,mode=r".into()),
            (flags(&[], &[], &["x"]), "Syntax", "--fd-map x: malformed value".into()),
            (flags(&[format!("a={r}")], &[format!("a={s}")], &[]), "DuplicateName", format!("--fd a={s}: grant name `a` is already used by --with-fd a={r}")),
            (flags(&[], &[format!("a={r},target=3")], &[]), "ReservedTarget", format!("--fd a={r},target=3")),
        ];
        for (flags, variant, message) in cases {
            let e = err_of(&flags, &mut ctx());
            assert!(
                format!("{:?}", e.kind()).starts_with(variant),
                "{flags:?}: {e}"
            );
            assert!(e.to_string().starts_with(&message), "{flags:?}: {e}");
            assert!(miette::Diagnostic::help(&e).is_some());
        }
    }

    #[test]
    fn a_table_from_a_file_and_from_stdin() {
        let (reader, _writer) = std::io::pipe().unwrap();
        let (sock, _peer) = UnixStream::pair().unwrap();
        let (r, s) = (reader.as_raw_fd(), sock.as_raw_fd());
        let text = format!(
            "(\n  (fd :name \"in\" :fd {r} :mode \"r\")\n  (fd (name \"db\") (fd {s}) (mode \"rw\") (type \"socket\") (target 12))\n)\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("caps.sexp");
        std::fs::write(&path, &text).unwrap();
        for (fd_from, stdin) in [
            (format!("@{}", path.display()), String::new()),
            ("-".to_owned(), text.clone()),
        ] {
            let mut host = ctx();
            host.stdin = Box::new(std::io::Cursor::new(stdin));
            let flags = FdFlags {
                fd_from: Some(fd_from),
                ..FdFlags::default()
            };
            let p = plan(&flags, &mut host).unwrap();
            assert_eq!(
                p.ww_fds(),
                "((in (fd 10) (mode \"r\") (type \"stream\")) (db (fd 12) (mode \"rw\") (type \"socket\")))"
            );
        }
        // A later error about a table grant points into the table.
        let bad = format!("(fd :name \"in\" :fd {r})\n  (fd :name \"out\" :fd {r} :mode \"w\")\n");
        let mut host = ctx();
        host.stdin = Box::new(std::io::Cursor::new(bad));
        let e = err_of(
            &FdFlags {
                fd_from: Some("-".into()),
                ..FdFlags::default()
            },
            &mut host,
        );
        assert!(
            matches!(e.kind(), FdErrorKind::ModeNotAllowed { .. }),
            "{e}"
        );
        assert!(e.to_string().starts_with("--fd-from <stdin>:2:3: "), "{e}");
        assert!(miette::Diagnostic::source_code(&e).is_some());
    }

    /// Places fresh fds at consecutive numbers from `start` (systemd hands over fds 3, 4…;
    /// tests use numbers nobody else uses). Returns the numbers; ownership goes with them.
    fn consecutive(start: RawFd, fds: Vec<OwnedFd>) -> Vec<RawFd> {
        fds.into_iter()
            .enumerate()
            .map(|(i, fd)| {
                let want = start + i as RawFd;
                let placed = rustix::io::fcntl_dupfd_cloexec(&fd, want).unwrap();
                assert_eq!(placed.as_raw_fd(), want, "fd {want} is taken");
                placed.into_raw_fd()
            })
            .collect()
    }

    #[test]
    fn systemd_socket_activation() {
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let (reader, writer) = std::io::pipe().unwrap();
        let numbers = consecutive(700, vec![a.into(), reader.into()]);
        let mut host = ctx();
        host.systemd = SystemdEnv {
            listen_fds: Some("2".into()),
            listen_pid: Some("4242".into()),
            listen_fdnames: Some("web:feed".into()),
            first_fd: 700,
        };
        let flags = FdFlags {
            fd: vec![],
            fd_map: vec!["web=11".into()],
            use_systemd_fds: Some("listen".into()),
            ..FdFlags::default()
        };
        let p = plan(&flags, &mut host).unwrap();
        assert_eq!(
            p.verbose_lines(),
            [
                "grant fd name=web num=11 type=socket mode=rw move=true cloexec=true",
                "grant fd name=feed num=10 type=stream mode=r move=true cloexec=true",
            ]
        );
        // Systemd's fds were moved: the originals are closed, the grants work.
        for n in &numbers {
            assert!(!is_open(*n), "fd {n} was moved");
        }
        std::io::Write::write_all(&mut a_peer, b"s").unwrap();
        let mut buf = [0u8; 1];
        rustix::io::read(p.grants()[0].fd(), &mut buf).unwrap();
        assert_eq!(&buf, b"s");
        rustix::io::write(&writer, b"t").unwrap();
        rustix::io::read(p.grants()[1].fd(), &mut buf).unwrap();
        assert_eq!(&buf, b"t");

        // Meant for another pid: ignored with a warning; a map to its names is then unknown.
        let (b, _b_peer) = UnixStream::pair().unwrap();
        let numbers = consecutive(720, vec![b.into()]);
        let mut host = ctx();
        host.systemd = SystemdEnv {
            listen_fds: Some("1".into()),
            listen_pid: Some("1".into()),
            listen_fdnames: None,
            first_fd: 720,
        };
        let flags = FdFlags {
            use_systemd_fds: Some("listen".into()),
            ..FdFlags::default()
        };
        let p = plan(&flags, &mut host).unwrap();
        assert!(p.is_empty() && p.env().is_empty());
        assert_eq!(p.warnings().len(), 1);
        assert!(is_open(numbers[0]), "an ignored systemd fd is not touched");
        let flags = FdFlags {
            fd_map: vec!["listen0=10".into()],
            ..flags
        };
        let e = err_of(&flags, &mut host);
        assert!(matches!(e.kind(), FdErrorKind::MapUnknown { .. }), "{e}");
        // SAFETY: the test placed it and owns it.
        unsafe { host::close_number(numbers[0]) };
    }

    #[test]
    fn fdctl_grants_join_the_plan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let (reader, writer) = std::io::pipe().unwrap();
        let (sock, _peer) = UnixStream::pair().unwrap();
        let (flag_r, _flag_w) = std::io::pipe().unwrap();
        let client_path = path.clone();
        let client = std::thread::spawn(move || {
            let stream = loop {
                match UnixStream::connect(&client_path) {
                    Ok(s) => break s,
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            };
            send(
                &stream,
                "feed\nctl,mode=r,target=30\n",
                &[reader.as_fd(), sock.as_fd()],
            );
        });
        let flags = FdFlags {
            fd: vec![format!("flag={}", flag_r.as_raw_fd())],
            fd_map: vec!["feed=40".into()],
            fdctl: vec![path.display().to_string()],
            ..FdFlags::default()
        };
        let p = plan(&flags, &mut ctx()).unwrap();
        client.join().unwrap();
        assert_eq!(
            p.verbose_lines(),
            [
                "grant fd name=flag num=10 type=stream mode=r move=false cloexec=true",
                "grant fd name=feed num=40 type=stream mode=r move=true cloexec=true",
                "grant fd name=ctl num=30 type=socket mode=r move=true cloexec=true",
            ]
        );
        rustix::io::write(&writer, b"f").unwrap();
        let mut buf = [0u8; 1];
        rustix::io::read(p.grants()[1].fd(), &mut buf).unwrap();
        assert_eq!(&buf, b"f");
    }

    #[test]
    fn fdctl_inherit_errors() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (reader, _writer) = std::io::pipe().unwrap();
        // The received name collides with a flag's.
        send(&theirs, "in\n", &[reader.as_fd()]);
        drop(theirs);
        let n = ours.into_raw_fd();
        let flags = FdFlags {
            fd: vec![format!("in={}", reader.as_raw_fd())],
            fdctl: vec![format!("inherit:{n}")],
            ..FdFlags::default()
        };
        let e = err_of(&flags, &mut ctx());
        assert!(matches!(e.kind(), FdErrorKind::DuplicateName { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("--fdctl inherit:{n} (received fd #0)")),
            "{e}"
        );

        // The channel granted as well, a channel that is not a socket, one that is not held.
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let c = ours.as_raw_fd();
        let r = reader.as_raw_fd();
        for (fd, fdctl, want) in [
            (
                vec![format!("x={c}")],
                vec![format!("inherit:{c}")],
                "cannot also be granted",
            ),
            (
                vec![],
                vec![format!("inherit:{c}"), format!("inherit:{c}")],
                "twice",
            ),
            (vec![], vec![format!("inherit:{r}")], "not a Unix socket"),
            (vec![], vec!["inherit:4322".to_owned()], "is not open in ww"),
            (vec![], vec!["inherit:x".to_owned()], "bad fd `x`"),
        ] {
            let flags = FdFlags {
                fd,
                fdctl,
                ..FdFlags::default()
            };
            let e = err_of(&flags, &mut ctx());
            assert!(e.to_string().contains(want), "{flags:?}: {e}");
            assert!(e.to_string().starts_with("--fdctl inherit:"), "{e}");
        }
        // A flag error is reported before any wait on a peer.
        let flags = FdFlags {
            fd: vec!["a=1".into(), "a=2".into()],
            fdctl: vec![dir_sock()],
            ..FdFlags::default()
        };
        let started = std::time::Instant::now();
        let e = err_of(&flags, &mut ctx());
        assert!(matches!(e.kind(), FdErrorKind::DuplicateName { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    fn dir_sock() -> String {
        std::env::temp_dir()
            .join(format!("ww-fdctl-never-{}.sock", std::process::id()))
            .display()
            .to_string()
    }

    #[test]
    fn no_flags_no_grants() {
        let p = plan(&FdFlags::default(), &mut ctx()).unwrap();
        assert!(p.is_empty());
        assert!(p.env().is_empty());
        assert_eq!(p.ww_fds(), "()");
    }
}
