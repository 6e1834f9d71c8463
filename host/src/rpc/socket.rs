//! `ww run --rpc-socket PATH`: the node's membrane on a Unix socket, for local clients.
//!
//! The socket is created with mode 0600 and never exists with looser permissions: ww binds
//! it inside a fresh directory of mode 0700 next to PATH (so nobody else can reach it there),
//! sets the socket's mode to 0600, then renames it to PATH, refusing to replace anything
//! (`renameat2(RENAME_NOREPLACE)`). When the `RpcSocket` drops, PATH is removed, if it is
//! still this socket.
//!
//! At most [`MAX_CONNECTIONS`] clients are served at a time. A connection past that is
//! accepted and closed at once (the client reads end of stream at its first read, and a
//! debug line is logged): a client learns it was refused instead of waiting in the kernel's
//! backlog for a slot that may never free, and nothing of it is kept. Only the node's own
//! user can connect (mode 0600), so filling the slots is denying the node to oneself.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::UnixListener as StdListener;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::RpcError;
use super::node::Caller;
use super::server::RpcServer;

/// The most `--rpc-socket` clients served at once; each also has its own flow limits
/// (`rpc::flow`).
pub const MAX_CONNECTIONS: usize = 64;

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
    /// `server`, until the server stops; past [`MAX_CONNECTIONS`] at once, a new connection
    /// is closed as soon as it is accepted. Call once; later calls do nothing.
    pub fn serve(&mut self, server: RpcServer) -> Result<(), RpcError> {
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        let listener =
            tokio::net::UnixListener::from_std(listener).map_err(|source| RpcError::Bind {
                path: self.path.clone(),
                source,
            })?;
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            tracing::debug!(
                                max = MAX_CONNECTIONS,
                                "--rpc-socket: refused a connection: too many clients"
                            );
                            drop(stream);
                            continue;
                        };
                        if server
                            .serve(
                                Client {
                                    stream,
                                    _slot: slot,
                                },
                                Caller::Socket,
                            )
                            .is_err()
                        {
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

/// A client's connection, holding its slot until the connection is dropped.
struct Client {
    stream: UnixStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Client {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Client {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
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
