//! Reading the files that a user, a topology or a requester names: topologies, model manifests,
//! model files, Wasm modules and signatures, keys, certificates.
//!
//! Invariant: every read of a path a user, topology or requester names is bounded and
//! non-blocking. A path is opened with `O_NONBLOCK` (a FIFO never blocks the open or the read),
//! the opened descriptor is `fstat`ed (what is read is what was checked, no time-of-check race),
//! anything but a regular file is refused by kind, a file larger than the caller's limit is
//! refused before it is read, and at most `limit + 1` bytes are ever read (a file that grows while
//! it is read is still bounded). Errors name the path and never carry the file's content.

pub mod paths;

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Topology files: hand-written YAML; the largest shipped one is a few KiB.
pub const TOPOLOGY_MAX: u64 = 4 << 20;
/// Model manifests (`manifest.yaml` next to a model): a few dozen lines.
pub const MANIFEST_MAX: u64 = 1 << 20;
/// Wasm operator modules (components). Ours are well under 10 MiB; 256 MiB leaves room for a
/// module with embedded weights or tables while still refusing `/dev/zero`-sized inputs before
/// Wasmtime's compiler (which needs several times the module's size) ever sees them.
pub const MODULE_MAX: u64 = 256 << 20;
/// ONNX model files: protobuf caps a single message (an ONNX file without external data) at 2 GiB.
pub const MODEL_MAX: u64 = 2 << 30;
/// Keys, seeds, signatures and PEM certificates: a few hundred bytes to a few KiB.
pub const KEY_MAX: u64 = 64 << 10;

/// Why a named file could not be read. Every message names the path and none carries content.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Nothing exists at the path.
    #[error("{}: does not exist", .path.display())]
    NotFound { path: PathBuf },
    /// Something exists at the path but it is not a regular file.
    #[error("{}: is {kind}, not a regular file", .path.display())]
    NotRegular {
        path: PathBuf,
        /// "a directory", "a FIFO", "a device" or "a socket".
        kind: &'static str,
    },
    /// The file is larger than the limit for its kind of file.
    #[error("{}: is larger than the limit of {limit} bytes", .path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    /// Any other failure (permission denied, an I/O error, text that is not UTF-8).
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl FileError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            FileError::NotFound { path }
            | FileError::NotRegular { path, .. }
            | FileError::TooLarge { path, .. }
            | FileError::Io { path, .. } => path,
        }
    }

    /// What is wrong, without the path: for callers whose message already names the file.
    pub fn reason(&self) -> String {
        match self {
            FileError::NotFound { .. } => "does not exist".to_owned(),
            FileError::NotRegular { kind, .. } => format!("is {kind}, not a regular file"),
            FileError::TooLarge { limit, .. } => {
                format!("is larger than the limit of {limit} bytes")
            }
            FileError::Io { source, .. } => source.to_string(),
        }
    }

    fn from_io(path: &Path, source: io::Error) -> FileError {
        if source.kind() == io::ErrorKind::NotFound {
            FileError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            FileError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// What a non-regular file is, in words for an error message (`None` for a regular file).
fn non_regular_kind(meta: &Metadata) -> Option<&'static str> {
    let file_type = meta.file_type();
    if file_type.is_file() {
        None
    } else if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_fifo() {
        Some("a FIFO")
    } else if file_type.is_socket() {
        Some("a socket")
    } else if file_type.is_char_device() || file_type.is_block_device() {
        Some("a device")
    } else {
        // `metadata` follows symbolic links, so nothing else is left; name it as a device
        // rather than claim it is readable.
        Some("a device")
    }
}

fn refuse_non_regular(path: &Path, meta: &Metadata) -> Result<(), FileError> {
    match non_regular_kind(meta) {
        None => Ok(()),
        Some(kind) => Err(FileError::NotRegular {
            path: path.to_path_buf(),
            kind,
        }),
    }
}

/// The metadata of `path` (symbolic links followed) if it is a regular file; a precise error if
/// it is missing or is a directory, FIFO, device or socket. Opens nothing.
pub fn check_regular(path: &Path) -> Result<Metadata, FileError> {
    let meta = std::fs::metadata(path).map_err(|e| FileError::from_io(path, e))?;
    refuse_non_regular(path, &meta)?;
    Ok(meta)
}

/// Opens `path` for reading without blocking and checks, on the opened descriptor, that it is a
/// regular file of at most `max_bytes` bytes.
fn open_regular(path: &Path, max_bytes: u64) -> Result<(File, Metadata), FileError> {
    // Checked before opening too, so a device is never opened (opening some has side effects).
    check_regular(path)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| FileError::from_io(path, e))?;
    // What counts is what was opened: the path may have been replaced since the check above.
    let meta = file.metadata().map_err(|e| FileError::from_io(path, e))?;
    refuse_non_regular(path, &meta)?;
    if meta.len() > max_bytes {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            limit: max_bytes,
        });
    }
    Ok((file, meta))
}

/// The bytes of the regular file at `path`, refused if it is larger than `max_bytes`.
pub fn read_bounded(path: &Path, max_bytes: u64) -> Result<Vec<u8>, FileError> {
    let (file, meta) = open_regular(path, max_bytes)?;
    // The size from fstat is at most `max_bytes`, so this reservation is bounded too.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| FileError::from_io(path, e))?;
    if bytes.len() as u64 > max_bytes {
        // The file grew between fstat and the read.
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            limit: max_bytes,
        });
    }
    Ok(bytes)
}

/// Streams the regular file at `path` through `each`, a chunk at a time, for files too large to
/// hold (hashing a model); refused like [`read_bounded`] past `max_bytes`. Returns the length.
pub fn read_chunked(
    path: &Path,
    max_bytes: u64,
    mut each: impl FnMut(&[u8]),
) -> Result<u64, FileError> {
    let (file, _) = open_regular(path, max_bytes)?;
    let mut file = file.take(max_bytes.saturating_add(1));
    let mut buf = vec![0u8; 1 << 16];
    let mut total: u64 = 0;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FileError::from_io(path, e)),
        };
        total += n as u64;
        if total > max_bytes {
            return Err(FileError::TooLarge {
                path: path.to_path_buf(),
                limit: max_bytes,
            });
        }
        each(&buf[..n]);
    }
    Ok(total)
}

/// The UTF-8 text of the regular file at `path`, refused if it is larger than `max_bytes`.
/// Text that is not UTF-8 is an [`FileError::Io`] error of kind `InvalidData` naming the byte
/// offset, never the bytes.
pub fn read_to_string_bounded(path: &Path, max_bytes: u64) -> Result<String, FileError> {
    let bytes = read_bounded(path, max_bytes)?;
    String::from_utf8(bytes).map_err(|e| FileError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "is not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;

    fn mkfifo(path: &Path) {
        let c = CString::new(path.as_os_str().as_bytes()).expect("path has no NUL");
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        assert_eq!(rc, 0, "mkfifo: {}", io::Error::last_os_error());
    }

    #[test]
    fn reads_a_regular_file_within_its_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.yaml");
        std::fs::write(&path, b"name: x\n").expect("write");
        assert_eq!(read_bounded(&path, 8).expect("read"), b"name: x\n");
        assert_eq!(
            read_to_string_bounded(&path, 100).expect("read"),
            "name: x\n"
        );
        assert!(check_regular(&path).expect("regular").is_file());
    }

    #[test]
    fn refuses_a_file_over_its_limit_by_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big");
        std::fs::write(&path, vec![b'x'; 9]).expect("write");
        let err = read_bounded(&path, 8).expect_err("too large");
        assert!(matches!(err, FileError::TooLarge { limit: 8, .. }), "{err}");
        assert!(
            err.to_string().contains("larger than the limit of 8 bytes"),
            "{err}"
        );
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fifo");
        mkfifo(&path);
        // No writer ever opens the FIFO: a blocking open would hang this test forever.
        let err = read_bounded(&path, 1024).expect_err("fifo");
        assert!(
            matches!(err, FileError::NotRegular { kind: "a FIFO", .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!("{}: is a FIFO, not a regular file", path.display())
        );
        let err = check_regular(&path).expect_err("fifo");
        assert!(
            matches!(err, FileError::NotRegular { kind: "a FIFO", .. }),
            "{err}"
        );
    }

    #[test]
    fn directories_devices_and_sockets_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read_bounded(dir.path(), 1024).expect_err("dir");
        assert!(
            matches!(
                err,
                FileError::NotRegular {
                    kind: "a directory",
                    ..
                }
            ),
            "{err}"
        );
        let err = read_bounded(Path::new("/dev/zero"), 1024).expect_err("device");
        assert!(
            matches!(
                err,
                FileError::NotRegular {
                    kind: "a device",
                    ..
                }
            ),
            "{err}"
        );
        let sock = dir.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        let err = read_bounded(&sock, 1024).expect_err("socket");
        assert!(
            matches!(
                err,
                FileError::NotRegular {
                    kind: "a socket",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn chunked_reads_see_every_byte_and_stop_at_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("data");
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let mut seen = Vec::new();
        let n = read_chunked(&path, 200_000, |c| seen.extend_from_slice(c)).expect("read");
        assert_eq!(n, 200_000);
        assert_eq!(seen, data);
        let err = read_chunked(&path, 199_999, |_| {}).expect_err("too large");
        assert!(matches!(err, FileError::TooLarge { .. }), "{err}");
        let err = read_chunked(Path::new("/dev/zero"), 1 << 20, |_| {}).expect_err("device");
        assert_eq!(err.reason(), "is a device, not a regular file");
    }

    #[test]
    fn a_missing_file_is_not_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing");
        let err = read_bounded(&path, 1024).expect_err("missing");
        assert!(matches!(err, FileError::NotFound { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("{}: does not exist", path.display())
        );
        assert_eq!(err.path(), path);
    }

    #[test]
    fn text_that_is_not_utf8_is_refused_without_its_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bin");
        let mut f = File::create(&path).expect("create");
        f.write_all(b"secret\xff\xfe").expect("write");
        drop(f);
        let err = read_to_string_bounded(&path, 1024).expect_err("not utf8");
        let message = err.to_string();
        assert!(message.contains("offset 6"), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn an_unreadable_file_is_an_io_error_naming_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("private");
        std::fs::write(&path, b"top secret").expect("write");
        // Running as root ignores permissions; then there is nothing to check here.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o000))
            .expect("chmod");
        if File::open(&path).is_ok() {
            return;
        }
        let err = read_bounded(&path, 1024).expect_err("unreadable");
        assert!(matches!(err, FileError::Io { .. }), "{err}");
        assert!(
            err.to_string().starts_with(&path.display().to_string()),
            "{err}"
        );
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
