//! On-disk cache of compiled components, keyed by the module's SHA-256 and the engine's
//! compatibility hash, so a worker restart deserialises (~40 µs) instead of compiling (~5 ms+).
//!
//! Cache failures never fail a load: a bad or unreadable entry is recompiled and overwritten.

use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Bumped when the cache layout changes, so old entries are simply ignored.
const FORMAT: &str = "v1";

/// Where the compiled form of `module` for `engine` lives under `dir`.
pub(crate) fn entry_path(dir: &Path, module: &[u8], engine: &Engine) -> PathBuf {
    // sha2's digest output formats itself as lowercase hex (`LowerHex`).
    let module_hash = format!("{:x}", Sha256::digest(module));
    // `precompile_compatibility_hash` only implements `Hash`; feed it to SHA-256 so the key is
    // stable across processes (std's hasher makes no such promise).
    let mut engine_hasher = Sha256Hasher(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut engine_hasher);
    // The first 8 bytes (16 hex digits) are plenty to tell engine configurations apart; the
    // precision cuts the digest's `LowerHex` output there.
    let engine_hash = format!("{:.16x}", engine_hasher.0.finalize());
    dir.join(format!("{module_hash}-{engine_hash}-{FORMAT}.cwasm"))
}

/// Loads a cached component, or `None` (logged) if absent or unusable.
///
/// The entry is read into memory rather than mapped (`deserialize_file`): a mapped file that
/// anyone truncates or rewrites in place would crash this process with SIGBUS the next time the
/// code runs. Entries are small, so the copy costs little next to a compilation.
pub(crate) fn read(engine: &Engine, path: &Path) -> Option<Component> {
    // Bounded and non-blocking like every read of a configured path: compiled code is a few
    // times the module's size, so four module limits.
    let bytes = match panoptes_files::read_bounded(path, 4 * panoptes_files::MODULE_MAX) {
        Ok(bytes) => bytes,
        Err(panoptes_files::FileError::NotFound { .. }) => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e,
                "cannot read compiled-module cache entry; recompiling");
            return None;
        }
    };
    // SAFETY: `deserialize` trusts the bytes to be wasmtime's own output. Entries are only
    // written by `write` below, under a name that includes the engine's compatibility hash, in a
    // private directory (see `EngineOptions::cache_dir`); wasmtime still checks the header and
    // version and rejects incompatible or truncated artifacts.
    match unsafe { Component::deserialize(engine, &bytes) } {
        Ok(component) => Some(component),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %format!("{e:#}"),
                "ignoring unusable compiled-module cache entry; recompiling");
            None
        }
    }
}

/// Stores a compiled component atomically (temp file + rename), so concurrent workers never see
/// a partial entry. Errors are logged, not returned: the cache is an optimisation.
pub(crate) fn write(path: &Path, component: &Component) {
    if let Err(e) = try_write(path, component) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write compiled-module cache entry");
    }
}

fn try_write(path: &Path, component: &Component) -> Result<(), String> {
    let dir = path
        .parent()
        .ok_or_else(|| "cache entry has no parent directory".to_string())?;
    create_private_dir(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let bytes = component
        .serialize()
        .map_err(|e| format!("cannot serialise compiled module: {e:#}"))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .suffix(".cwasm")
        .tempfile_in(dir)
        .map_err(|e| format!("cannot create a temporary file in {}: {e}", dir.display()))?;
    tmp.write_all(&bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.path().display()))?;
    tmp.persist(path)
        .map_err(|e| format!("cannot rename into place: {e}"))?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        // Cached entries are executable code: keep other users out.
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Adapts SHA-256 to `std::hash::Hasher` so any `Hash` value can feed it.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        // Only `finalize` on the inner digest is used.
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_name_is_lowercase_hex_of_module_and_engine() {
        let engine = Engine::default();
        let path = entry_path(Path::new("/cache"), b"module a", &engine);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("UTF-8 name");
        let (module_hash, rest) = name.split_once('-').expect("module hash");
        let (engine_hash, rest) = rest.split_once('-').expect("engine hash");
        // SHA-256 of "module a", so the key is the digest itself and not some other encoding.
        assert_eq!(
            module_hash,
            "fb503059c9f88e93bf9c14aca0ab8b6cccb9da910e6296da024bdd41987cec17"
        );
        // The engine part is the first 16 digits of its full digest.
        let mut hasher = Sha256Hasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        let full = format!("{:x}", hasher.0.finalize());
        assert_eq!(full.len(), 64);
        assert_eq!(Some(engine_hash), full.get(..16));
        assert_eq!(rest, "v1.cwasm");
    }

    #[test]
    fn entry_depends_on_module_bytes() {
        let engine = Engine::default();
        let dir = Path::new("/cache");
        let a = entry_path(dir, b"module a", &engine);
        let b = entry_path(dir, b"module b", &engine);
        assert_ne!(a, b);
        assert_eq!(a, entry_path(dir, b"module a", &engine));
        assert!(a.starts_with(dir));
        assert!(a.to_string_lossy().ends_with("-v1.cwasm"));
    }
}
