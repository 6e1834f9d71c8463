//! File descriptors as capabilities: the host-side model of fd grants.
//!
//! A grant hands one host fd to a cell under a name. Grants come from `--with-fd NAME=FD`,
//! `--fd NAME=FD[,KEY=VALUE…]`, an `--fd-from @PATH|-` capability table, systemd socket
//! activation (`--use-systemd-fds[=PREFIX]`) and `--fdctl inherit:N|PATH`; `--fd-map
//! NAME=TARGET` renumbers one. [`plan()`] turns all of that into one validated [`Plan`]: each
//! grant's name, an [`std::os::fd::OwnedFd`] ww holds, its target fd number, mode, kind and
//! flags, plus the cell's environment (`WW_FD_<NAME>`, `WW_FDS`) and the `--fd-verbose` lines.
//!
//! - [`spec`]: the flag syntax and the option vocabulary ([`Mode`], [`Kind`]);
//! - [`table`]: the S-expression capability table;
//! - [`plan`](mod@plan): validation, numbering (precedence: `--fd-map`, then `target=`, then
//!   4, 5, 6… for `--with-fd`, then 10 up), defaults, the environment;
//! - [`host`]: what touches real fds: probing, duplicating, systemd, `--fdctl` (and its
//!   framing);
//! - [`error`]: [`FdError`], which names the flag and value or the table's line and column.
//!
//! Invariants (see [`plan`](mod@plan)): everything is validated before any fd is taken or
//! closed; every fd a plan holds is an `OwnedFd`, closed when the plan (or the grant) drops;
//! no host fd that no grant names is touched.

pub mod error;
pub mod host;
pub mod plan;
pub mod spec;
pub mod table;

pub use error::{FdError, FdErrorKind, Origin};
pub use plan::{FdFlags, Grant, HostContext, Plan, plan};
pub use spec::{Kind, Mode};
