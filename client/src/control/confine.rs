//! What a control request may name: files only inside the directories the topology allows
//! (`control.allow_dirs`), hosts only those it lists (`control.allow_hosts`). A refusal reads
//! the same whether or not the named file exists, so requests cannot probe the filesystem.

use std::path::{Component, Path, PathBuf};

use panoptes_topology::ControlConfig;

/// The directories and hosts control requests may name.
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    /// Canonical paths.
    dirs: Vec<PathBuf>,
    /// Lower-case; `None`: any host.
    hosts: Option<Vec<String>>,
}

impl Confinement {
    /// From the topology's `control` section; directories resolve against `base_dir`. A
    /// directory that does not exist allows nothing (and is logged), it is not an error: it
    /// may be created later, and then a restart picks it up.
    pub fn from_config(control: &ControlConfig, base_dir: &Path) -> Self {
        let dirs = control
            .allow_dirs
            .iter()
            .filter_map(|d| {
                let full = resolve(base_dir, d);
                match std::fs::canonicalize(&full) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::warn!(dir = %full.display(), error = %e, "control.allow_dirs entry unusable; it allows nothing");
                        None
                    }
                }
            })
            .collect();
        let hosts = control
            .allow_hosts
            .as_ref()
            .map(|h| h.iter().map(|h| h.to_ascii_lowercase()).collect());
        Self { dirs, hosts }
    }

    /// Adds a directory the caller trusts (e.g. where a stage's own module lives).
    pub fn with_dir(mut self, dir: &Path) -> Self {
        if let Ok(c) = std::fs::canonicalize(dir) {
            self.dirs.push(c);
        }
        self
    }

    /// `path` (relative to `base_dir`) if it lies inside an allowed directory, following
    /// symlinks; the error names the path as the request gave it and nothing about the file.
    pub fn path(&self, base_dir: &Path, path: &Path, what: &str) -> Result<PathBuf, String> {
        let refused = || {
            format!(
                "{what} `{}` is outside the directories the topology's control.allow_dirs allows{}",
                path.display(),
                if self.dirs.is_empty() {
                    " (it allows none)"
                } else {
                    ""
                }
            )
        };
        let full = resolve(base_dir, path);
        if full.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(refused());
        }
        // Missing files are judged by where they would be, existing ones by where they are.
        let real = std::fs::canonicalize(&full).unwrap_or_else(|_| full.clone());
        if !self.dirs.iter().any(|d| real.starts_with(d)) {
            return Err(refused());
        }
        Ok(real)
    }

    /// Whether a camera URL's host is allowed.
    pub fn url(&self, url: &str) -> Result<(), String> {
        let Some(hosts) = &self.hosts else {
            return Ok(());
        };
        let parsed = url::Url::parse(url).map_err(|e| format!("camera URL is invalid: {e}"))?;
        let host = parsed
            .host_str()
            .map(|h| {
                h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_ascii_lowercase()
            })
            .ok_or_else(|| "camera URL has no host".to_owned())?;
        if hosts
            .iter()
            .any(|h| h.trim_start_matches('[').trim_end_matches(']') == host)
        {
            Ok(())
        } else {
            Err(format!(
                "camera host `{host}` is not in the topology's control.allow_hosts"
            ))
        }
    }
}

fn resolve(base_dir: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_or_escaping_are_refused_alike() {
        let root = tempfile::tempdir().expect("dir");
        let allowed = root.path().join("videos");
        std::fs::create_dir(&allowed).expect("mkdir");
        std::fs::write(allowed.join("a.mp4"), b"x").expect("write");
        std::fs::write(root.path().join("secret"), b"x").expect("write");
        std::os::unix::fs::symlink(root.path().join("secret"), allowed.join("link"))
            .expect("symlink");
        let control = ControlConfig {
            allow_dirs: vec![PathBuf::from("videos")],
            ..ControlConfig::default()
        };
        let c = Confinement::from_config(&control, root.path());
        let base = root.path();
        assert!(c.path(base, Path::new("videos/a.mp4"), "file").is_ok());
        assert!(
            c.path(base, Path::new("videos/missing.mp4"), "file")
                .is_ok()
        );
        let outside = c
            .path(base, Path::new("secret"), "file")
            .expect_err("outside");
        let missing = c
            .path(base, Path::new("no-such-file"), "file")
            .expect_err("outside");
        assert_eq!(
            outside.replace("secret", "X"),
            missing.replace("no-such-file", "X"),
            "an existing and a missing file outside are refused with the same words"
        );
        assert!(c.path(base, Path::new("videos/../secret"), "file").is_err());
        assert!(c.path(base, Path::new("videos/link"), "file").is_err());
        assert!(c.path(base, Path::new("/etc/shadow"), "file").is_err());
        let none = Confinement::from_config(&ControlConfig::default(), base);
        let e = none
            .path(base, Path::new("videos/a.mp4"), "file")
            .expect_err("nothing allowed");
        assert!(e.contains("allows none"), "{e}");
    }

    #[test]
    fn hosts_are_matched_when_listed() {
        let any = Confinement::default();
        assert!(any.url("http://169.254.169.254/latest").is_ok());
        let control = ControlConfig {
            allow_hosts: Some(vec!["Cam1.example".into(), "[::1]".into()]),
            ..ControlConfig::default()
        };
        let c = Confinement::from_config(&control, Path::new("."));
        assert!(c.url("rtsp://user:pw@cam1.example:554/s").is_ok());
        assert!(c.url("rtsp://[::1]:8554/s").is_ok());
        let e = c
            .url("http://169.254.169.254/latest")
            .expect_err("not listed");
        assert!(e.contains("169.254.169.254"), "{e}");
        assert!(c.url("http://cam1.example.evil.net/").is_err());
    }
}
