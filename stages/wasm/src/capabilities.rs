//! What an operator may reach beyond pure computation. Nothing by default; a topology grants
//! each capability per stage, and the host builds the instance's WASI context from it.

use std::path::PathBuf;

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// Capabilities granted to one operator stage. The default grants nothing: no clock (clocks
/// read zero), no environment, no files, no network, no models; guest output is kept only to
/// explain traps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Capabilities {
    /// Real wall and monotonic clocks. Timed waits (sleep) stay denied either way: a guest
    /// blocked in the host cannot be interrupted by its deadline.
    pub clock: bool,
    /// Environment variables the guest sees.
    pub env: Vec<(String, String)>,
    /// Host directories the guest sees (preopened), read-only unless `writable`.
    pub dirs: Vec<DirGrant>,
    /// Forward what the guest prints to the host log (one line per log record).
    pub logs: bool,
    /// Names of models (declared in the topology) the operator may load through `wasi:nn`.
    pub models: Vec<String>,
}

/// One preopened directory.
#[derive(Debug, Clone, PartialEq)]
pub struct DirGrant {
    pub host: PathBuf,
    /// The path the guest opens it by, e.g. `/data`.
    pub guest: String,
    pub writable: bool,
}

impl Capabilities {
    /// Adds the granted directories to a WASI context; an error names the directory.
    pub(crate) fn preopen(&self, builder: &mut WasiCtxBuilder) -> Result<(), String> {
        for dir in &self.dirs {
            let perms = if dir.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            builder
                .preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(|e| {
                    format!(
                        "cannot grant directory {} as {}: {e:#}",
                        dir.host.display(),
                        dir.guest
                    )
                })?;
        }
        Ok(())
    }
}
