//! The node's identity: an ed25519 key, in a file in libp2p's protobuf encoding.
//!
//! `--identity PATH` loads the key at PATH, creating it (mode 0600, never a looser window:
//! written to a private temporary file beside it, then linked into place without replacing
//! anything) when PATH does not exist. Without `--identity` a node has a new key per run.
//! `ww keygen PATH` creates a key and prints its peer id.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use libp2p::identity::{KeyType, Keypair};

use super::NetError;

/// Key files are tiny; anything larger is not one.
const MAX_KEY_FILE: u64 = 4096;

/// A new random ed25519 key.
pub fn generate() -> Keypair {
    Keypair::generate_ed25519()
}

/// The key at `path`, created when the path does not exist; whether it was created.
pub fn load_or_create(path: &Path) -> Result<(Keypair, bool), NetError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok((load(path)?, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((create(path)?, true)),
        Err(e) => Err(error(path, e.to_string())),
    }
}

/// Reads the key at `path`. A file others may read works, with a warning.
pub fn load(path: &Path) -> Result<Keypair, NetError> {
    let file = std::fs::File::open(path).map_err(|e| error(path, e.to_string()))?;
    let metadata = file.metadata().map_err(|e| error(path, e.to_string()))?;
    if !metadata.is_file() {
        return Err(error(path, "not a regular file".into()));
    }
    if metadata.len() > MAX_KEY_FILE {
        return Err(error(
            path,
            format!("{} bytes is too large for a key file", metadata.len()),
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE)
        .read_to_end(&mut bytes)
        .map_err(|e| error(path, e.to_string()))?;
    let keypair = parse(&bytes).map_err(|reason| error(path, reason))?;
    let mode = metadata.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            "the identity file is readable by others (mode {:o}); chmod 600 it",
            mode & 0o777
        );
    }
    Ok(keypair)
}

/// The ed25519 key in a key file's `bytes` (libp2p's protobuf encoding), or why they are
/// not one. Public for the fuzz targets (`fuzz/`): these bytes come from a file.
pub fn parse(bytes: &[u8]) -> Result<Keypair, String> {
    let keypair = Keypair::from_protobuf_encoding(bytes)
        .map_err(|e| format!("not a libp2p private key (protobuf-encoded): {e}"))?;
    if keypair.key_type() != KeyType::Ed25519 {
        return Err(format!(
            "a {:?} key; ww uses ed25519 keys",
            keypair.key_type()
        ));
    }
    Ok(keypair)
}

/// Writes a new key to `path`, which must not exist.
pub fn create(path: &Path) -> Result<Keypair, NetError> {
    let keypair = generate();
    let bytes = keypair
        .to_protobuf_encoding()
        .map_err(|e| error(path, e.to_string()))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // tempfile creates with mode 0600.
    let mut file = tempfile::NamedTempFile::new_in(parent).map_err(|e| {
        error(
            path,
            format!("cannot create a file in {}: {e}", parent.display()),
        )
    })?;
    file.write_all(&bytes)
        .and_then(|()| file.as_file().sync_all())
        .map_err(|e| error(path, e.to_string()))?;
    file.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            NetError::IdentityExists {
                path: path.display().to_string(),
            }
        } else {
            error(path, e.error.to_string())
        }
    })?;
    tracing::info!(path = %path.display(), peer = %keypair.public().to_peer_id(), "created an identity");
    Ok(keypair)
}

fn error(path: &Path, reason: String) -> NetError {
    NetError::Identity {
        path: path.display().to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_is_private_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let (created, fresh) = load_or_create(&path).unwrap();
        assert!(fresh);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (loaded, fresh) = load_or_create(&path).unwrap();
        assert!(!fresh);
        assert_eq!(created.public().to_peer_id(), loaded.public().to_peer_id());
        // Never overwritten.
        let err = create(&path).unwrap_err();
        assert!(matches!(err, NetError::IdentityExists { .. }), "{err}");
        assert_eq!(
            load(&path).unwrap().public().to_peer_id(),
            created.public().to_peer_id()
        );
    }

    #[test]
    fn garbage_is_not_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        std::fs::write(&path, b"hello").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("not a libp2p private key"), "{err}");
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("not a regular file") || err.contains("directory"),
            "{err}"
        );
        let big = dir.path().join("big.key");
        std::fs::write(&big, vec![0u8; 5000]).unwrap();
        assert!(load(&big).unwrap_err().to_string().contains("too large"));
    }
}
