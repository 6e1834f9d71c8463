//! Images: resolving `IMAGE` and its `--layer`s into the one root a cell boots from.
//!
//! An image is a directory laid out like a small filesystem (`bin/main.wasm`, `etc/`,
//! `usr/lib/`, `boot/`, `svc/`) or a single `.wasm` file, which stands for an image whose only
//! file is `bin/main.wasm`. Layers stack per file: the first is the base, each later one
//! overlays it; directories merge, files replace, nothing is deleted. Only the union needs
//! `bin/main.wasm`.
//!
//! Architecture invariant: this module reads the host filesystem only under the paths it is
//! given, and never follows a symlink found inside a layer. A symlink is recreated as a
//! symlink in the merged root, where the cell's sandbox (cap-std under wasmtime-wasi)
//! refuses any that points outside the root.
//!
//! A merged image is held in use, for as long as its [`Image`] lives, by a shared `flock`
//! on its directory: [`remove_unused_merged`] (`ww cache clear`, `ww cache prune`) removes
//! only the ones nobody holds, the leftovers of a `ww` that was killed.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags};

/// Where the entrypoint lives inside an image.
pub const ENTRYPOINT: &str = "bin/main.wasm";

/// The prefix of a merged image's directory in ww's private one.
const MERGED_PREFIX: &str = "ww-image-";

/// Failure to turn `IMAGE` and its layers into a bootable root.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ImageError {
    /// A layer path does not exist.
    #[error("image not found: {}", path.display())]
    #[diagnostic(
        code(ww::image::not_found),
        help(
            "IMAGE (and each --layer) is a directory holding bin/main.wasm or a .wasm file; \
             build the examples with `cargo xtask images`"
        )
    )]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },

    /// A layer is neither a directory nor a regular file.
    #[error("not an image: {} is neither a directory nor a file", path.display())]
    #[diagnostic(
        code(ww::image::not_an_image),
        help("pass a directory holding bin/main.wasm, or a .wasm file")
    )]
    NotAnImage {
        /// The path as given.
        path: PathBuf,
    },

    /// The union of the layers has no `bin/main.wasm`.
    #[error("no bin/main.wasm in the image; searched: {}", searched(layers))]
    #[diagnostic(
        code(ww::image::no_entrypoint),
        help(
            "put the cell's component at bin/main.wasm of the image or of one of its layers \
             (for the examples, run `cargo xtask images`)"
        )
    )]
    NoEntrypoint {
        /// Every layer that was searched, base first.
        layers: Vec<PathBuf>,
    },

    /// `bin/main.wasm` exists but is not a regular file.
    #[error("{} is not a file", path.display())]
    #[diagnostic(
        code(ww::image::entrypoint_not_a_file),
        help("bin/main.wasm must be a regular file holding a WebAssembly component or module")
    )]
    EntrypointNotAFile {
        /// The offending path.
        path: PathBuf,
    },

    /// A layer has a file where an earlier one has a directory, or the reverse.
    #[error(
        "layer {} has a {theirs} at {} where an earlier layer has a {ours}",
        layer.display(),
        path.display()
    )]
    #[diagnostic(
        code(ww::image::layer_conflict),
        help("layers merge directories and replace files, but never turn one into the other")
    )]
    Conflict {
        /// The layer that brought the conflicting entry.
        layer: PathBuf,
        /// The path inside the image.
        path: PathBuf,
        /// What the earlier layers have there.
        ours: &'static str,
        /// What this layer has there.
        theirs: &'static str,
    },

    /// The directory merged images are made in is not ww's alone.
    #[error("{} is not a private directory of ww's: {reason}", path.display())]
    #[diagnostic(
        code(ww::image::private_dir),
        help(
            "merged images are made in ww's state directory (WW_CACHE_DIR, else \
             $XDG_CACHE_HOME/ww or ~/.cache/ww), which must be owned by this user with mode \
             0700; fix its owner and mode, or point WW_CACHE_DIR elsewhere"
        )
    )]
    NotPrivate {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Layers must be merged, and ww has no private directory to merge them in.
    #[error("cannot merge layers: ww has no state directory to make the merged image in")]
    #[diagnostic(
        code(ww::image::no_private_dir),
        help(
            "set WW_CACHE_DIR (or HOME) to a directory of this user's that no cell is \
             granted; ww never merges images in the shared temporary directory"
        )
    )]
    NoPrivateDir,

    /// Reading a layer or writing the merged root failed.
    #[error("cannot {action} {}: {source}", path.display())]
    #[diagnostic(code(ww::image::io))]
    Io {
        /// What was being done (`read`, `merge`, …).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

fn searched(layers: &[PathBuf]) -> String {
    layers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImageError + use<> {
    let path = path.to_path_buf();
    move |source| ImageError::Io {
        action,
        path,
        source,
    }
}

/// The filesystem root of a loaded image.
#[derive(Debug)]
pub enum Root {
    /// A single `.wasm` file: there are no other files to show, so the cell gets no root.
    None,
    /// A single directory layer, used in place.
    InPlace(PathBuf),
    /// Several layers merged into a temporary directory inside ww's private one, removed on
    /// drop.
    Merged(tempfile::TempDir),
}

/// An image resolved from its layers, ready to boot.
#[derive(Debug)]
pub struct Image {
    name: String,
    layers: Vec<PathBuf>,
    root: Root,
    entrypoint: PathBuf,
    /// A shared lock on the merged root while this lives, so that no `ww` removes it.
    _in_use: Option<OwnedFd>,
}

impl Image {
    /// Resolves `base` and `layers` (in stacking order) into one image. Several layers are
    /// merged into a new directory inside `private`, a directory of ww's own (created 0700
    /// when missing, refused when others can reach it), never in the shared temporary
    /// directory: a cell granted that could rename or rewrite its siblings' image (and,
    /// through the hard links, the layers themselves). Without `private`, merging fails.
    pub fn load(
        base: &Path,
        layers: &[PathBuf],
        private: Option<&Path>,
    ) -> Result<Image, ImageError> {
        let all: Vec<PathBuf> = std::iter::once(base.to_path_buf())
            .chain(layers.iter().cloned())
            .collect();
        let kinds = all
            .iter()
            .map(|p| LayerKind::of(p))
            .collect::<Result<Vec<_>, _>>()?;
        let name = image_name(base);

        let (root, entrypoint) = match kinds.as_slice() {
            [LayerKind::File] => (Root::None, base.to_path_buf()),
            [LayerKind::Dir] => (Root::InPlace(base.to_path_buf()), base.join(ENTRYPOINT)),
            _ => {
                let private = private.ok_or(ImageError::NoPrivateDir)?;
                let dir = merge(&all, &kinds, private)?;
                let entrypoint = dir.path().join(ENTRYPOINT);
                (Root::Merged(dir), entrypoint)
            }
        };
        let in_use = match &root {
            Root::Merged(dir) => match lock(dir.path(), FlockOperation::LockShared) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    // Only `ww cache clear` could then take it from under this run.
                    tracing::warn!(dir = %dir.path().display(), "cannot mark the merged image as in use: {e}");
                    None
                }
            },
            _ => None,
        };

        match fs::symlink_metadata(&entrypoint) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Err(ImageError::EntrypointNotAFile { path: entrypoint }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ImageError::NoEntrypoint { layers: all });
            }
            Err(e) => return Err(io_err("read", &entrypoint)(e)),
        }

        tracing::debug!(image = %name, layers = all.len(), root = ?root, "image loaded");
        Ok(Image {
            name,
            layers: all,
            root,
            entrypoint,
            _in_use: in_use,
        })
    }

    /// The image's name: the base layer's file name without `.wasm`. It is the cell's `argv[0]`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The layers, base first.
    pub fn layers(&self) -> &[PathBuf] {
        &self.layers
    }

    /// The host directory to show the cell read-only at `/`, if the image has one.
    pub fn root(&self) -> Option<&Path> {
        match &self.root {
            Root::None => None,
            Root::InPlace(path) => Some(path),
            Root::Merged(dir) => Some(dir.path()),
        }
    }

    /// The host path of the entrypoint binary.
    pub fn entrypoint(&self) -> &Path {
        &self.entrypoint
    }

    /// Reads the entrypoint binary.
    pub fn read_entrypoint(&self) -> Result<Vec<u8>, ImageError> {
        fs::read(&self.entrypoint).map_err(io_err("read", &self.entrypoint))
    }
}

/// What one layer is on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LayerKind {
    Dir,
    File,
}

impl LayerKind {
    fn of(path: &Path) -> Result<LayerKind, ImageError> {
        // The layer path itself is the user's, so following a symlink here is what they asked.
        match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => Ok(LayerKind::Dir),
            Ok(meta) if meta.is_file() => Ok(LayerKind::File),
            Ok(_) => Err(ImageError::NotAnImage {
                path: path.to_path_buf(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ImageError::NotFound {
                path: path.to_path_buf(),
            }),
            Err(e) => Err(io_err("read", path)(e)),
        }
    }
}

fn image_name(base: &Path) -> String {
    let canonical = fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    let name = canonical
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".to_owned());
    name.strip_suffix(".wasm")
        .map(str::to_owned)
        .unwrap_or(name)
}

/// Merges the layers into a fresh temporary directory inside `private`, per file, later
/// layers winning.
fn merge(
    layers: &[PathBuf],
    kinds: &[LayerKind],
    private: &Path,
) -> Result<tempfile::TempDir, ImageError> {
    ensure_private(private)?;
    let dir = tempfile::Builder::new()
        .prefix(MERGED_PREFIX)
        .tempdir_in(private)
        .map_err(io_err("create a directory in", private))?;
    for (layer, kind) in layers.iter().zip(kinds) {
        match kind {
            LayerKind::Dir => merge_dir(layer, layer, dir.path())?,
            LayerKind::File => {
                let bin = dir.path().join("bin");
                ensure_dir(layer, Path::new("bin"), &bin)?;
                place_file(
                    layer,
                    Path::new(ENTRYPOINT),
                    layer,
                    &dir.path().join(ENTRYPOINT),
                )?;
            }
        }
    }
    Ok(dir)
}

/// Creates `dir` (and its parents) with mode 0700 if missing, then checks that it is a real
/// directory (not a symlink), owned by this process's user, that nobody else can enter.
fn ensure_private(dir: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err("create", dir))?;
    let not_private = |reason: String| ImageError::NotPrivate {
        path: dir.to_path_buf(),
        reason,
    };
    let meta = fs::symlink_metadata(dir).map_err(io_err("read", dir))?;
    if !meta.is_dir() {
        return Err(not_private("it is not a directory (a symlink?)".into()));
    }
    let uid = rustix::process::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(not_private(format!(
            "it is owned by uid {}, not by ww's uid {uid}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(not_private(format!(
            "its mode is {:o}; others can reach it",
            meta.mode() & 0o777
        )));
    }
    Ok(())
}

fn merge_dir(layer: &Path, src: &Path, dst: &Path) -> Result<(), ImageError> {
    let entries = fs::read_dir(src).map_err(io_err("read", src))?;
    for entry in entries {
        let entry = entry.map_err(io_err("read", src))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let rel = from.strip_prefix(layer).unwrap_or(&from);
        let ty = entry.file_type().map_err(io_err("read", &from))?;
        if ty.is_dir() {
            ensure_dir(layer, rel, &to)?;
            merge_dir(layer, &from, &to)?;
        } else if ty.is_symlink() {
            replace_with_symlink(layer, rel, &from, &to)?;
        } else if ty.is_file() {
            place_file(layer, rel, &from, &to)?;
        } else {
            tracing::warn!(path = %from.display(), "skipping a special file in an image layer");
        }
    }
    Ok(())
}

/// What already stands at `path` in the merged root.
fn existing(path: &Path) -> Result<Option<&'static str>, ImageError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(Some("directory")),
        Ok(_) => Ok(Some("file")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

fn ensure_dir(layer: &Path, rel: &Path, to: &Path) -> Result<(), ImageError> {
    match existing(to)? {
        Some("directory") => Ok(()),
        Some(ours) => Err(ImageError::Conflict {
            layer: layer.to_path_buf(),
            path: rel.to_path_buf(),
            ours,
            theirs: "directory",
        }),
        None => fs::create_dir(to).map_err(io_err("merge", to)),
    }
}

/// Makes room for a file-like entry at `to`, refusing to replace a directory.
fn clear_for_file(layer: &Path, rel: &Path, to: &Path) -> Result<(), ImageError> {
    match existing(to)? {
        Some("directory") => Err(ImageError::Conflict {
            layer: layer.to_path_buf(),
            path: rel.to_path_buf(),
            ours: "directory",
            theirs: "file",
        }),
        Some(_) => fs::remove_file(to).map_err(io_err("merge", to)),
        None => Ok(()),
    }
}

fn place_file(layer: &Path, rel: &Path, from: &Path, to: &Path) -> Result<(), ImageError> {
    clear_for_file(layer, rel, to)?;
    // A hard link costs nothing and the cell sees the root read-only; copy across devices.
    if fs::hard_link(from, to).is_err() {
        fs::copy(from, to).map_err(io_err("merge", from))?;
    }
    Ok(())
}

fn replace_with_symlink(
    layer: &Path,
    rel: &Path,
    from: &Path,
    to: &Path,
) -> Result<(), ImageError> {
    clear_for_file(layer, rel, to)?;
    let target = fs::read_link(from).map_err(io_err("read", from))?;
    std::os::unix::fs::symlink(&target, to).map_err(io_err("merge", to))
}

/// Merged images in a private directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Merged {
    /// How many.
    pub images: u64,
    /// Their files' bytes that removing them would free: files hard-linked elsewhere (most
    /// of a merged image is hard links into its layers) are not counted.
    pub bytes: u64,
    /// How many a running `ww` holds.
    pub in_use: u64,
}

/// The merged images in `private` (ww's private directory); none if it is missing.
pub fn merged(private: &Path) -> io::Result<Merged> {
    sweep_merged(private, false)
}

/// Removes the merged images in `private` that no running `ww` holds; what was removed
/// (`in_use`: how many were kept because a `ww` holds them).
pub fn remove_unused_merged(private: &Path) -> io::Result<Merged> {
    sweep_merged(private, true)
}

fn sweep_merged(private: &Path, remove: bool) -> io::Result<Merged> {
    let mut found = Merged::default();
    let dir = match rustix::fs::open(
        private,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(dir) => dir,
        Err(rustix::io::Errno::NOENT) => return Ok(found),
        Err(e) => return Err(e.into()),
    };
    // The same check as for merging: removal only ever happens in a directory of ours.
    ensure_private(private).map_err(|e| io::Error::other(e.to_string()))?;
    for entry in rustix::fs::Dir::read_from(&dir)? {
        let entry = entry?;
        let Ok(name) = std::str::from_utf8(entry.file_name().to_bytes()) else {
            continue;
        };
        if !name.starts_with(MERGED_PREFIX) {
            continue;
        }
        match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {}
            _ => continue,
        }
        let path = private.join(name);
        // Held by a running `ww` when the exclusive lock is refused.
        let held = match lock(&path, FlockOperation::NonBlockingLockExclusive) {
            Ok(lock) => Some(lock),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let Some(lock) = held else {
            found.in_use += 1;
            continue;
        };
        found.images += 1;
        found.bytes += freed_size(&path)?;
        if remove {
            // Never follows the symlinks a merged image holds; under the lock, so no `ww`
            // starts using it meanwhile (a new one gets a directory of its own anyway).
            fs::remove_dir_all(&path)?;
        }
        drop(lock);
    }
    Ok(found)
}

/// Opens the directory `dir` (not a symlink) and locks it with `operation`.
fn lock(dir: &Path, operation: FlockOperation) -> io::Result<OwnedFd> {
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    rustix::fs::flock(&fd, operation)?;
    Ok(fd)
}

/// The bytes of the files under `path` that have no other link, not following symlinks.
fn freed_size(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = fs::symlink_metadata(path)?;
    if meta.is_file() {
        return Ok(if meta.nlink() == 1 { meta.len() } else { 0 });
    }
    if !meta.is_dir() {
        return Ok(0);
    }
    let mut total = 0;
    for entry in fs::read_dir(path)? {
        total += freed_size(&entry?.path())?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One private directory for the merged images of this test process (never removed: a
    /// static is not dropped; it is small and under the temporary directory).
    fn private() -> PathBuf {
        static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
        DIR.get_or_init(|| tempfile::tempdir().unwrap())
            .path()
            .join("images")
    }

    #[test]
    fn merged_images_live_only_in_a_private_directory() {
        use std::os::unix::fs::PermissionsExt as _;
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write(a.path(), ENTRYPOINT, "x");
        write(b.path(), "etc/b", "b");
        let image = Image::load(a.path(), &[b.path().to_path_buf()], Some(&private())).unwrap();
        let root = image.root().unwrap();
        assert_eq!(root.parent(), Some(private().as_path()));
        let mode = fs::metadata(private()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // A directory others can enter, or a symlink in its place, is refused.
        let shared = tempfile::tempdir().unwrap();
        fs::set_permissions(shared.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let err =
            Image::load(a.path(), &[b.path().to_path_buf()], Some(shared.path())).unwrap_err();
        assert!(matches!(err, ImageError::NotPrivate { .. }), "{err}");
        let link = shared.path().join("link");
        std::os::unix::fs::symlink(private(), &link).unwrap();
        let err = Image::load(a.path(), &[b.path().to_path_buf()], Some(&link)).unwrap_err();
        assert!(matches!(err, ImageError::NotPrivate { .. }), "{err}");
        let err = Image::load(a.path(), &[b.path().to_path_buf()], None).unwrap_err();
        assert!(matches!(err, ImageError::NoPrivateDir), "{err}");
        // A single layer needs no merging, and no private directory.
        assert!(Image::load(a.path(), &[], None).is_ok());
    }

    #[test]
    fn only_merged_images_nobody_holds_are_removed() {
        let state = tempfile::tempdir().unwrap();
        let private = state.path().join("images");
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "keep", "keep");
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write(a.path(), ENTRYPOINT, "x");
        write(b.path(), "etc/b", "b");
        let running = Image::load(a.path(), &[b.path().to_path_buf()], Some(&private)).unwrap();
        // A leftover of a killed `ww`, holding a symlink out and a file of its own, and a
        // symlink named like a merged image.
        let stray = private.join("ww-image-stray");
        write(&stray, "etc/own", "12345");
        std::os::unix::fs::symlink(outside.path(), stray.join("out")).unwrap();
        std::os::unix::fs::symlink(outside.path(), private.join("ww-image-link")).unwrap();

        let found = merged(&private).unwrap();
        assert_eq!((found.images, found.in_use), (1, 1));
        // Only the stray's own file counts: the running image's files are hard links.
        assert_eq!(found.bytes, 5);
        let removed = remove_unused_merged(&private).unwrap();
        assert_eq!((removed.images, removed.in_use), (1, 1));
        assert!(!stray.exists());
        assert!(running.root().unwrap().join(ENTRYPOINT).is_file());
        assert!(outside.path().join("keep").is_file());
        assert!(fs::symlink_metadata(private.join("ww-image-link")).is_ok());
        drop(running);
        assert_eq!(merged(&private).unwrap(), Merged::default());
    }

    fn write(root: &Path, rel: &str, data: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }

    #[test]
    fn single_directory_is_used_in_place() {
        let a = tempfile::tempdir().unwrap();
        write(a.path(), ENTRYPOINT, "x");
        let image = Image::load(a.path(), &[], Some(&private())).unwrap();
        assert_eq!(image.root(), Some(a.path()));
        assert_eq!(image.entrypoint(), a.path().join(ENTRYPOINT));
    }

    #[test]
    fn single_file_has_no_root_and_drops_the_extension() {
        let a = tempfile::tempdir().unwrap();
        write(a.path(), "hello.wasm", "x");
        let image = Image::load(&a.path().join("hello.wasm"), &[], Some(&private())).unwrap();
        assert_eq!(image.root(), None);
        assert_eq!(image.name(), "hello");
    }

    #[test]
    fn layers_merge_directories_and_replace_files() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write(a.path(), "etc/one", "a1");
        write(a.path(), "etc/two", "a2");
        write(b.path(), "etc/two", "b2");
        write(b.path(), ENTRYPOINT, "wasm");
        let image = Image::load(a.path(), &[b.path().to_path_buf()], Some(&private())).unwrap();
        let root = image.root().unwrap();
        assert_ne!(root, a.path());
        assert_eq!(fs::read_to_string(root.join("etc/one")).unwrap(), "a1");
        assert_eq!(fs::read_to_string(root.join("etc/two")).unwrap(), "b2");
        assert_eq!(fs::read_to_string(image.entrypoint()).unwrap(), "wasm");
        // Nothing in a layer changes.
        assert_eq!(fs::read_to_string(a.path().join("etc/two")).unwrap(), "a2");
    }

    #[test]
    fn merged_root_is_removed_on_drop() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write(a.path(), ENTRYPOINT, "x");
        write(b.path(), "etc/x", "y");
        let image = Image::load(a.path(), &[b.path().to_path_buf()], Some(&private())).unwrap();
        let root = image.root().unwrap().to_path_buf();
        assert!(root.exists());
        drop(image);
        assert!(!root.exists());
    }

    #[test]
    fn a_file_layer_supplies_the_entrypoint() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write(a.path(), "etc/motd", "hi");
        write(b.path(), "app.wasm", "wasm");
        let image = Image::load(a.path(), &[b.path().join("app.wasm")], Some(&private())).unwrap();
        assert_eq!(fs::read_to_string(image.entrypoint()).unwrap(), "wasm");
        assert_eq!(
            image.name(),
            a.path().file_name().unwrap().to_str().unwrap()
        );
    }

    #[test]
    fn missing_entrypoint_names_every_layer() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write(a.path(), "etc/x", "");
        let err = Image::load(a.path(), &[b.path().to_path_buf()], Some(&private())).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ImageError::NoEntrypoint { .. }));
        assert!(msg.contains(&a.path().display().to_string()), "{msg}");
        assert!(msg.contains(&b.path().display().to_string()), "{msg}");
    }

    #[test]
    fn file_over_directory_is_a_conflict() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write(a.path(), "etc/x/y", "");
        write(b.path(), "etc/x", "");
        let err = Image::load(a.path(), &[b.path().to_path_buf()], Some(&private())).unwrap_err();
        assert!(matches!(err, ImageError::Conflict { .. }), "{err}");
    }

    #[test]
    fn symlinks_are_recreated_not_followed() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        write(a.path(), ENTRYPOINT, "x");
        fs::create_dir_all(b.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", b.path().join("etc/leak")).unwrap();
        let image = Image::load(a.path(), &[b.path().to_path_buf()], Some(&private())).unwrap();
        let leak = image.root().unwrap().join("etc/leak");
        assert!(
            fs::symlink_metadata(&leak)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_link(leak).unwrap(), Path::new("/etc/hostname"));
    }

    #[test]
    fn missing_layer_is_not_found() {
        let err =
            Image::load(Path::new("/definitely/not/here"), &[], Some(&private())).unwrap_err();
        assert!(matches!(err, ImageError::NotFound { .. }));
    }
}
