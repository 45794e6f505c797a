//! Process-wide named models: declared up front, loaded once on first use, and shared (every
//! stage and Wasm instance that asks for a name gets a clone of the same [`Graph`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use panoptes_files::{FileError, MODEL_MAX};
use sha2::{Digest as _, Sha256};

use crate::ModelError;
use crate::graph::{Graph, GraphOptions};

struct Declared {
    path: PathBuf,
    sha256: Option<String>,
    opts: GraphOptions,
    /// Locked while this model loads, so concurrent first users wait for one load instead of
    /// each loading their own copy; other models stay available meanwhile.
    graph: Mutex<Option<Graph>>,
}

/// Named models, `Send + Sync`; share it as `Arc<ModelRegistry>`.
///
/// A failed load is not remembered: the next [`get`](Self::get) tries again and, while the
/// cause persists, reports the same error.
#[derive(Default)]
pub struct ModelRegistry {
    models: Mutex<BTreeMap<String, Arc<Declared>>>,
}

impl ModelRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares (or re-declares) a model without loading it. Handles already given out for an
    /// earlier declaration of the name keep working; later `get`s load the new one.
    pub fn declare(
        &self,
        name: impl Into<String>,
        path: impl Into<PathBuf>,
        sha256: Option<String>,
        opts: GraphOptions,
    ) {
        let declared = Arc::new(Declared {
            path: path.into(),
            sha256,
            opts,
            graph: Mutex::new(None),
        });
        self.lock().insert(name.into(), declared);
    }

    /// The model called `name`, loaded on first use (after checking its sha256, if declared).
    pub fn get(&self, name: &str) -> Result<Graph, ModelError> {
        let declared = {
            let models = self.lock();
            match models.get(name) {
                Some(d) => Arc::clone(d),
                None => {
                    let known: Vec<String> = models.keys().map(|k| format!("`{k}`")).collect();
                    return Err(ModelError::UnknownModel {
                        name: name.to_owned(),
                        known: if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        },
                    });
                }
            }
        };
        let mut graph = declared
            .graph
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(g) = graph.as_ref() {
            return Ok(g.clone());
        }
        let loaded = load_checked(
            name,
            &declared.path,
            declared.sha256.as_deref(),
            &declared.opts,
        )?;
        *graph = Some(loaded.clone());
        Ok(loaded)
    }

    /// Declared names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Declared>>> {
        // The map is only ever replaced whole per entry, so a panic elsewhere cannot leave it
        // half-updated: a poisoned lock is safe to keep using.
        self.models.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Loads a model after checking the file's sha256 (when one is declared); the one path by
/// which declared models are loaded, shared or not.
pub fn load_checked(
    name: &str,
    path: &Path,
    sha256: Option<&str>,
    opts: &GraphOptions,
) -> Result<Graph, ModelError> {
    if let Some(want) = sha256 {
        check_sha256(name, path, want)?;
    }
    Graph::load(name, path, opts)
}

fn check_sha256(model: &str, path: &Path, want: &str) -> Result<(), ModelError> {
    let got = sha256_file(path).map_err(|e| model_file_error(model, path, &e))?;
    if got.eq_ignore_ascii_case(want.trim()) {
        Ok(())
    } else {
        Err(ModelError::Checksum {
            model: model.to_owned(),
            path: path.display().to_string(),
            expected: want.to_owned(),
            actual: got,
        })
    }
}

/// A model file that cannot be used, as the error naming the model: missing (with the hint to
/// fetch it), not a regular file (a FIFO, a directory, a device: said as such), too large.
pub(crate) fn model_file_error(model: &str, path: &Path, e: &FileError) -> ModelError {
    match e {
        FileError::NotFound { .. } => ModelError::MissingFile {
            model: model.to_owned(),
            path: path.display().to_string(),
        },
        other => ModelError::Read {
            model: model.to_owned(),
            path: path.display().to_string(),
            message: other.reason(),
        },
    }
}

/// Checks, without opening it, that a model file is a regular file within [`MODEL_MAX`]; the
/// backends then read it by path.
pub(crate) fn check_model_file(model: &str, path: &Path) -> Result<(), ModelError> {
    let meta =
        panoptes_files::check_regular(path).map_err(|e| model_file_error(model, path, &e))?;
    if meta.len() > MODEL_MAX {
        let e = FileError::TooLarge {
            path: path.to_owned(),
            limit: MODEL_MAX,
        };
        return Err(model_file_error(model, path, &e));
    }
    Ok(())
}

/// Lower-case hex sha256 of a file (a model or a module), read in chunks without holding it:
/// model files are tens of MB. Non-regular files and files past [`MODEL_MAX`] are refused.
pub fn sha256_file(path: &Path) -> Result<String, FileError> {
    let mut hasher = Sha256::new();
    panoptes_files::read_chunked(path, MODEL_MAX, |chunk| hasher.update(chunk))?;
    // sha2's digest output formats itself as lowercase hex (`LowerHex`).
    Ok(format!("{:x}", hasher.finalize()))
}
