//! Fuzzes the fd and directory flag grammars (`ww::fds::spec`, `--dir` through
//! `ww::caps::DirGrant`'s `FromStr`): the first byte picks the grammar, the rest is the value.
//! A parsed `--fd` spec must render back to an equal one, as `FdSpec::render` promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ww::caps::DirGrant;
use ww::fds::host::FdctlChannel;
use ww::fds::spec::{self, GrantOptions};
use ww::fds::{Kind, Mode};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(value) = std::str::from_utf8(rest) else {
        return;
    };
    match selector % 8 {
        0 => {
            if let Ok(parsed) = spec::parse_fd(value) {
                let rendered = parsed.render();
                assert_eq!(
                    spec::parse_fd(&rendered).ok().as_ref(),
                    Some(&parsed),
                    "--fd {value:?} renders as {rendered:?}, which does not read back"
                );
            }
        }
        1 => {
            let _ = spec::parse_with_fd(value);
        }
        2 => {
            let _ = spec::parse_fd_map(value);
        }
        3 => {
            let _ = spec::parse_fdctl_line(value);
        }
        4 => {
            let _ = GrantOptions::parse_items(value.split(','));
            let _ = Mode::parse(value);
            let _ = Kind::parse(value);
        }
        5 => {
            let _ = FdctlChannel::parse(value);
        }
        _ => {
            let _ = value.parse::<DirGrant>();
        }
    }
});
