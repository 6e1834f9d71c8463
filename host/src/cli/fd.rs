//! The fd-grant flags of `ww run`, flattened into its arguments. The rules (syntax,
//! validation, numbering, the cell's environment) live in the library, `ww::fds`.

use ww::fds::{self, FdError, FdFlags, HostContext, Plan};

/// `--with-fd`, `--fd`, `--fd-map`, `--fd-from`, `--fd-verbose`, `--use-systemd-fds`,
/// `--fdctl`. See README.md, "File descriptors".
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FdArgs {
    /// Grant host fd FD as NAME (repeatable); the cell gets them at 4, 5, 6… in flag order.
    #[arg(long = "with-fd", value_name = "NAME=FD")]
    pub with_fd: Vec<String>,

    /// Grant host fd FD as NAME with options (repeatable): mode=r|w|rw, type=stream|file|socket,
    /// target=N, move=BOOL, cloexec=BOOL, pathlink=BOOL. Targets are numbered from 10.
    #[arg(long = "fd", value_name = "NAME=FD[,KEY=VALUE]...")]
    pub fd: Vec<String>,

    /// Give grant NAME the fd number TARGET in the cell, over any target= (repeatable).
    #[arg(long = "fd-map", value_name = "NAME=TARGET")]
    pub fd_map: Vec<String>,

    /// Read grants from a capability table of S-expressions: @PATH, or - for stdin.
    #[arg(long = "fd-from", value_name = "@PATH|-", allow_hyphen_values = true)]
    pub fd_from: Option<String>,

    /// Log one line per fd grant.
    #[arg(long = "fd-verbose")]
    pub fd_verbose: bool,

    /// Grant systemd's socket-activation fds (LISTEN_FDS), named by LISTEN_FDNAMES or
    /// PREFIX0, PREFIX1… (default prefix: listen).
    #[arg(
        long = "use-systemd-fds",
        value_name = "PREFIX",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "listen"
    )]
    pub use_systemd_fds: Option<String>,

    /// Receive fds over a Unix socket before the cell starts: inherit:N (an inherited,
    /// connected socket) or PATH (ww listens there for one peer) (repeatable).
    #[arg(long = "fdctl", value_name = "inherit:N|PATH")]
    pub fdctl: Vec<String>,
}

impl FdArgs {
    /// The flags as the library takes them.
    pub fn flags(&self) -> FdFlags {
        FdFlags {
            with_fd: self.with_fd.clone(),
            fd: self.fd.clone(),
            fd_map: self.fd_map.clone(),
            fd_from: self.fd_from.clone(),
            use_systemd_fds: self.use_systemd_fds.clone(),
            fdctl: self.fdctl.clone(),
        }
    }

    /// Validates every grant against this process's fds and environment and takes the fds.
    /// Call it before ww opens fds of its own or starts threads. With `--fd-verbose`, the
    /// caller prints [`Plan::verbose_lines`].
    pub fn plan(&self) -> Result<Plan, FdError> {
        fds::plan(&self.flags(), &mut HostContext::from_process())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::FdArgs;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        fds: FdArgs,
        image: Option<String>,
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("ww").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn flags_reach_the_library_in_order() {
        let cli = parse(&[
            "--with-fd",
            "a=3",
            "--fd",
            "b=4,mode=r",
            "--with-fd",
            "c=5",
            "--fd-map",
            "b=12",
            "--fd-from",
            "-",
            "--fd-verbose",
            "--fdctl",
            "inherit:7",
            "image",
        ]);
        let flags = cli.fds.flags();
        assert_eq!(flags.with_fd, ["a=3", "c=5"]);
        assert_eq!(flags.fd, ["b=4,mode=r"]);
        assert_eq!(flags.fd_map, ["b=12"]);
        assert_eq!(flags.fd_from.as_deref(), Some("-"));
        assert_eq!(flags.fdctl, ["inherit:7"]);
        assert!(cli.fds.fd_verbose);
        assert_eq!(flags.use_systemd_fds, None);
        assert_eq!(cli.image.as_deref(), Some("image"));
    }

    #[test]
    fn use_systemd_fds_takes_an_optional_prefix_after_equals_only() {
        let cli = parse(&["--use-systemd-fds", "image"]);
        assert_eq!(cli.fds.use_systemd_fds.as_deref(), Some("listen"));
        assert_eq!(cli.image.as_deref(), Some("image"));
        let cli = parse(&["--use-systemd-fds=sock", "image"]);
        assert_eq!(cli.fds.use_systemd_fds.as_deref(), Some("sock"));
    }

    #[test]
    fn no_fd_flags_plan_nothing() {
        let plan = parse(&["image"]).fds.plan().unwrap();
        assert!(plan.is_empty() && plan.env().is_empty());
    }
}
