//! A topology's file paths made absolute, so it can be written out and read from another
//! directory (tools and tests that write topologies of their own).

use std::path::{Path, PathBuf};

use crate::TopologyFile;
use crate::config::{SourceConfig, StageConfig, Topology};
use crate::outputs::OutputConfig;

impl TopologyFile {
    /// The topology with every relative file path (NATS credentials and TLS files, control
    /// keys and directories, models, camera files and devices, operator modules, signers,
    /// granted directories and shadows, output CAs) resolved against its directory.
    pub fn with_absolute_paths(&self) -> Topology {
        let base = std::path::absolute(&self.base_dir).unwrap_or_else(|_| self.base_dir.clone());
        let mut t = self.config.clone();
        let abs = |p: &mut PathBuf| absolute(&base, p);
        let opt = |p: &mut Option<PathBuf>| {
            if let Some(p) = p {
                absolute(&base, p);
            }
        };
        if let Some(auth) = &mut t.nats.auth {
            opt(&mut auth.credentials);
            opt(&mut auth.nkey);
        }
        if let Some(tls) = &mut t.nats.tls {
            opt(&mut tls.ca);
            opt(&mut tls.cert);
            opt(&mut tls.key);
        }
        t.control.keys.iter_mut().for_each(abs);
        t.control.allow_dirs.iter_mut().for_each(abs);
        for model in t.models.values_mut() {
            opt(&mut model.file);
            opt(&mut model.manifest);
        }
        for camera in &mut t.cameras {
            match &mut camera.source {
                SourceConfig::File(f) => abs(&mut f.path),
                SourceConfig::V4l2(v) => abs(&mut v.device),
                SourceConfig::Rtsp(_) | SourceConfig::Http(_) | SourceConfig::TestPattern(_) => {}
            }
        }
        for stage in &mut t.stages {
            if let StageConfig::Operator(op) = stage {
                abs(&mut op.wasm);
                opt(&mut op.signed_by);
                for dir in &mut op.grants.dirs {
                    abs(&mut dir.host);
                }
                if let Some(shadow) = &mut op.shadow {
                    abs(&mut shadow.wasm);
                }
            }
        }
        for output in &mut t.outputs {
            match output {
                OutputConfig::Webhook(w) => opt(&mut w.ca),
                OutputConfig::Mqtt(m) => opt(&mut m.ca),
            }
        }
        t
    }

    /// [`with_absolute_paths`](Self::with_absolute_paths) as topology text (JSON, which every
    /// YAML reader takes), ready to be written anywhere and loaded again.
    pub fn to_text(&self) -> Result<String, serde_json::Error> {
        let mut value = serde_json::to_value(self.with_absolute_paths())?;
        // An absent setting serializes as `null`, which the reader takes as "given, empty".
        drop_nulls(&mut value);
        serde_json::to_string_pretty(&value)
    }
}

fn absolute(base: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        *p = base.join(&*p);
    }
}

fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}
