//! `ww run --rpc-socket PATH`: the node's membrane on a Unix socket, for local clients.
//!
//! The socket is created with mode 0600 and never exists with looser permissions: ww binds
//! it inside a fresh directory of mode 0700 next to PATH (so nobody else can reach it there),
//! sets the socket's mode to 0600, then renames it to PATH, refusing to replace anything
//! (`renameat2(RENAME_NOREPLACE)`). When the `RpcSocket` drops, PATH is removed, if it is
//! still this socket.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixListener as StdListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::RpcError;
use super::server::RpcServer;

/// A listening Unix socket at a path, removed on drop.
#[derive(Debug)]
pub struct RpcSocket {
    path: PathBuf,
    listener: Option<StdListener>,
    /// The socket file's device and inode, to remove only our own file.
    file: (u64, u64),
}

impl RpcSocket {
    /// Creates the socket at `path` (which must not exist), mode 0600, listening.
    pub fn bind(path: &Path) -> Result<RpcSocket, RpcError> {
        let bind_error = |source: std::io::Error| RpcError::Bind {
            path: path.to_owned(),
            source,
        };
        if path.symlink_metadata().is_ok() {
            return Err(RpcError::Exists {
                path: path.to_owned(),
            });
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let private = tempfile::Builder::new()
            .prefix(".ww-rpc-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(parent)
            .map_err(bind_error)?;
        let staged = private.path().join("s");
        let listener = StdListener::bind(&staged).map_err(bind_error)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
            .map_err(bind_error)?;
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &staged,
            rustix::fs::CWD,
            path,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(|e| match e {
            rustix::io::Errno::EXIST => RpcError::Exists {
                path: path.to_owned(),
            },
            e => bind_error(e.into()),
        })?;
        let meta = path.symlink_metadata().map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        // `private` is empty now; dropping it removes it.
        Ok(RpcSocket {
            path: path.to_owned(),
            listener: Some(listener),
            file: (meta.dev(), meta.ino()),
        })
    }

    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts connections, from a task on the current tokio runtime, and hands each to
    /// `server`, until the server stops. Call once; later calls do nothing.
    pub fn serve(&mut self, server: RpcServer) -> Result<(), RpcError> {
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        let listener =
            tokio::net::UnixListener::from_std(listener).map_err(|source| RpcError::Bind {
                path: self.path.clone(),
                source,
            })?;
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        if server.serve(stream).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        // Out of fds, most likely: wait rather than spin.
                        tracing::warn!("--rpc-socket: cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(())
    }
}

impl Drop for RpcSocket {
    fn drop(&mut self) {
        if let Ok(meta) = self.path.symlink_metadata()
            && (meta.dev(), meta.ino()) == self.file
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
