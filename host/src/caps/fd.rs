//! `ww:host/fd`: host file descriptors a WebAssembly cell holds by name.
//!
//! The cell never sees a host fd number or an fd it was not granted: it gets streams (and,
//! for a file, reads and writes at offsets) through the grant, and the host checks the
//! grant's mode before every one. Each stream works on its own duplicate of the granted fd,
//! closed with the stream; the granted fd itself is closed when the last cell holding it
//! ends.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::pipe::{AsyncReadStream, AsyncWriteStream};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

use crate::bindings::ww::host::fd as wit;
use crate::fds::{Grant, Kind, Mode};

/// Bytes an output stream over a grant accepts before it must be flushed.
const WRITE_BUDGET: usize = 64 * 1024;
/// The most one `read-at` returns, so a guest cannot make the host allocate at will.
const MAX_READ_AT: u64 = 16 << 20;

/// One fd grant a cell holds.
#[derive(Debug, Clone)]
pub struct FdCap {
    name: String,
    fd: Arc<OwnedFd>,
    mode: Mode,
    kind: Kind,
    target: i32,
}

impl FdCap {
    /// The name it is held under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it allows.
    pub fn mode(&self) -> Mode {
        self.mode
    }
}

/// A refused request to pass grants on to a child.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FdPassError {
    /// The spawner holds no grant by that name.
    #[error("`{0}` is not a file descriptor this cell holds")]
    NotHeld(String),
    /// The child would get a mode the spawner's grant does not allow.
    #[error("`{name}` is held {held}; it cannot be passed on {asked}")]
    Wider {
        /// The grant.
        name: String,
        /// Its mode.
        held: &'static str,
        /// The mode asked for.
        asked: &'static str,
    },
    /// Two grants would have the same name in the child.
    #[error("two file descriptors would be named `{0}` in the child")]
    Duplicate(String),
}

/// The fd grants of one cell, in grant order.
#[derive(Debug, Clone, Default)]
pub struct FdGrants {
    grants: Vec<FdCap>,
}

impl FdGrants {
    /// The grants of a validated plan, taking ownership of their fds.
    pub fn from_grants(grants: Vec<Grant>) -> FdGrants {
        let grants = grants
            .into_iter()
            .map(|g| FdCap {
                name: g.name().to_owned(),
                mode: g.mode(),
                kind: g.kind(),
                target: g.target(),
                fd: Arc::new(g.into_fd()),
            })
            .collect();
        FdGrants { grants }
    }

    /// The grants, in order.
    pub fn iter(&self) -> impl Iterator<Item = &FdCap> {
        self.grants.iter()
    }

    fn get(&self, name: &str) -> Option<&FdCap> {
        self.grants.iter().find(|g| g.name == name)
    }

    /// The grants for a child: each `(name, child_name, mode)` names a grant held here, the
    /// name the child holds it under (`None`: the same), and a mode that may only narrow the
    /// held one (`None`: the same).
    pub fn attenuate<'a>(
        &self,
        passes: impl IntoIterator<Item = (&'a str, Option<&'a str>, Option<Mode>)>,
    ) -> Result<FdGrants, FdPassError> {
        let mut child = FdGrants::default();
        for (name, child_name, mode) in passes {
            let held = self
                .get(name)
                .ok_or_else(|| FdPassError::NotHeld(name.to_owned()))?;
            let mode = mode.unwrap_or(held.mode);
            if (mode.reads() && !held.mode.reads()) || (mode.writes() && !held.mode.writes()) {
                return Err(FdPassError::Wider {
                    name: name.to_owned(),
                    held: held.mode.as_str(),
                    asked: mode.as_str(),
                });
            }
            let child_name = child_name.unwrap_or(name);
            if child.get(child_name).is_some() {
                return Err(FdPassError::Duplicate(child_name.to_owned()));
            }
            child.grants.push(FdCap {
                name: child_name.to_owned(),
                mode,
                ..held.clone()
            });
        }
        Ok(child)
    }
}

/// The resource behind a guest's `grant` handle.
pub struct FdHandle(FdCap);

/// What the fd interface sees of a cell's store.
pub struct FdView<'a> {
    /// The cell's resource table.
    pub table: &'a mut ResourceTable,
    /// The cell's grants.
    pub grants: &'a FdGrants,
}

struct FdData;

impl HasData for FdData {
    type Data<'a> = FdView<'a>;
}

/// Adds `ww:host/fd` to `linker`, served from the view `get` makes of the store.
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> FdView<'_>,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, FdData>(linker, get)
}

impl wit::Host for FdView<'_> {
    fn get(&mut self, name: String) -> Option<Resource<FdHandle>> {
        let cap = self.grants.get(&name)?.clone();
        self.table.push(FdHandle(cap)).ok()
    }

    fn names(&mut self) -> Vec<String> {
        self.grants.iter().map(|g| g.name.clone()).collect()
    }
}

fn mode_of(mode: Mode) -> wit::Mode {
    match mode {
        Mode::Read => wit::Mode::Read,
        Mode::Write => wit::Mode::Write,
        Mode::ReadWrite => wit::Mode::ReadWrite,
    }
}

/// The host's mode for a WIT mode.
pub fn mode_from_wit(mode: wit::Mode) -> Mode {
    match mode {
        wit::Mode::Read => Mode::Read,
        wit::Mode::Write => Mode::Write,
        wit::Mode::ReadWrite => Mode::ReadWrite,
    }
}

impl FdCap {
    fn check(&self, reads: bool) -> Result<(), wit::Error> {
        let allowed = if reads {
            self.mode.reads()
        } else {
            self.mode.writes()
        };
        if allowed {
            Ok(())
        } else {
            Err(wit::Error::NotPermitted(format!(
                "`{}` is granted {}; it cannot be {}",
                self.name,
                self.mode.as_str(),
                if reads { "read" } else { "written" }
            )))
        }
    }

    fn file(&self) -> Result<std::fs::File, wit::Error> {
        if self.kind != Kind::File {
            return Err(wit::Error::Unsupported(format!(
                "`{}` is not a file",
                self.name
            )));
        }
        self.dup()
    }

    fn dup(&self) -> Result<std::fs::File, wit::Error> {
        let fd = self
            .fd
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| wit::Error::Io(format!("`{}`: {e}", self.name)))?;
        Ok(std::fs::File::from(fd))
    }
}

impl wit::HostGrant for FdView<'_> {
    fn name(&mut self, handle: Resource<FdHandle>) -> String {
        self.cap(&handle)
            .map(|c| c.name.clone())
            .unwrap_or_default()
    }

    fn mode(&mut self, handle: Resource<FdHandle>) -> wit::Mode {
        self.cap(&handle)
            .map(|c| mode_of(c.mode))
            .unwrap_or(wit::Mode::Read)
    }

    fn kind(&mut self, handle: Resource<FdHandle>) -> wit::Kind {
        match self.cap(&handle).map(|c| c.kind) {
            Ok(Kind::File) => wit::Kind::File,
            Ok(Kind::Socket) => wit::Kind::Socket,
            _ => wit::Kind::Stream,
        }
    }

    fn target(&mut self, handle: Resource<FdHandle>) -> i32 {
        self.cap(&handle).map(|c| c.target).unwrap_or(-1)
    }

    fn input(
        &mut self,
        handle: Resource<FdHandle>,
    ) -> Result<Resource<DynInputStream>, wit::Error> {
        let cap = self.cap(&handle)?;
        cap.check(true)?;
        let file = tokio::fs::File::from_std(cap.dup()?);
        let stream: DynInputStream = Box::new(AsyncReadStream::new(file));
        self.table
            .push(stream)
            .map_err(|e| wit::Error::Io(e.to_string()))
    }

    fn output(
        &mut self,
        handle: Resource<FdHandle>,
    ) -> Result<Resource<DynOutputStream>, wit::Error> {
        let cap = self.cap(&handle)?;
        cap.check(false)?;
        let file = tokio::fs::File::from_std(cap.dup()?);
        let stream: DynOutputStream = Box::new(AsyncWriteStream::new(WRITE_BUDGET, file));
        self.table
            .push(stream)
            .map_err(|e| wit::Error::Io(e.to_string()))
    }

    fn read_at(
        &mut self,
        handle: Resource<FdHandle>,
        len: u64,
        offset: u64,
    ) -> Result<Vec<u8>, wit::Error> {
        let cap = self.cap(&handle)?;
        cap.check(true)?;
        let file = cap.file()?;
        let mut buf = vec![0u8; len.min(MAX_READ_AT) as usize];
        let n = file
            .read_at(&mut buf, offset)
            .map_err(|e| wit::Error::Io(format!("`{}`: {e}", cap.name)))?;
        buf.truncate(n);
        Ok(buf)
    }

    fn write_at(
        &mut self,
        handle: Resource<FdHandle>,
        data: Vec<u8>,
        offset: u64,
    ) -> Result<u64, wit::Error> {
        let cap = self.cap(&handle)?;
        cap.check(false)?;
        let file = cap.file()?;
        file.write_all_at(&data, offset)
            .map_err(|e| wit::Error::Io(format!("`{}`: {e}", cap.name)))?;
        Ok(data.len() as u64)
    }

    fn size(&mut self, handle: Resource<FdHandle>) -> Result<u64, wit::Error> {
        let cap = self.cap(&handle)?;
        let file = cap.file()?;
        let meta = file
            .metadata()
            .map_err(|e| wit::Error::Io(format!("`{}`: {e}", cap.name)))?;
        Ok(meta.len())
    }

    fn drop(&mut self, handle: Resource<FdHandle>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

impl FdView<'_> {
    fn cap(&self, handle: &Resource<FdHandle>) -> Result<FdCap, wit::Error> {
        self.table
            .get(handle)
            .map(|h| h.0.clone())
            .map_err(|e| wit::Error::Io(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants() -> FdGrants {
        let (r, w) = rustix::pipe::pipe().unwrap();
        let cap = |name: &str, fd: OwnedFd, mode| FdCap {
            name: name.into(),
            fd: Arc::new(fd),
            mode,
            kind: Kind::Stream,
            target: 10,
        };
        FdGrants {
            grants: vec![cap("in", r, Mode::Read), cap("out", w, Mode::ReadWrite)],
        }
    }

    #[test]
    fn attenuation_keeps_or_narrows_modes() {
        let child = grants()
            .attenuate([("in", None, None), ("out", Some("log"), Some(Mode::Write))])
            .unwrap();
        let got: Vec<_> = child.iter().map(|g| (g.name(), g.mode())).collect();
        assert_eq!(got, [("in", Mode::Read), ("log", Mode::Write)]);
    }

    #[test]
    fn attenuation_refuses_what_is_not_held_or_wider() {
        let g = grants();
        assert_eq!(
            g.attenuate([("db", None, None)]).unwrap_err(),
            FdPassError::NotHeld("db".into())
        );
        assert!(matches!(
            g.attenuate([("in", None, Some(Mode::ReadWrite))])
                .unwrap_err(),
            FdPassError::Wider { .. }
        ));
        assert!(matches!(
            g.attenuate([("in", None, None), ("out", Some("in"), None)])
                .unwrap_err(),
            FdPassError::Duplicate(_)
        ));
    }
}
