//! The layout's rules, checked: every crate of the workspace is in ARCHITECTURE.md's crate table
//! with its invariant, every library says what it owns in its first lines, and no source file
//! grows past 800 lines (a file that long is doing more than one job).

use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The workspace members, read from the root manifest's `members = [...]`.
fn members() -> Vec<String> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("root Cargo.toml");
    let start = manifest.find("members = [").expect("a members list");
    let end = start
        + manifest[start..]
            .find(']')
            .expect("the end of the members list");
    manifest[start..end]
        .lines()
        .skip(1)
        .filter_map(|l| {
            let l = l.trim().trim_end_matches(',');
            l.strip_prefix('"')?.strip_suffix('"').map(str::to_owned)
        })
        .collect()
}

fn package_name(member: &str) -> String {
    let manifest = std::fs::read_to_string(root().join(member).join("Cargo.toml"))
        .unwrap_or_else(|e| panic!("{member}/Cargo.toml: {e}"));
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("name = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{member}/Cargo.toml has no package name"))
        .to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != "dist" && !name.to_string_lossy().starts_with('.') {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_crate_is_in_architecture_md() {
    let architecture =
        std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let missing: Vec<String> = members()
        .iter()
        .map(|m| package_name(m))
        // The built-in operator components share one row (`panoptes-op-*`).
        .filter(|name| {
            let listed = architecture.contains(&format!("`{name}`"))
                || (name.starts_with("panoptes-op-") && architecture.contains("`panoptes-op-*`"));
            !listed
        })
        .collect();
    assert!(
        missing.is_empty(),
        "crates missing from ARCHITECTURE.md's crate table: {missing:?}"
    );
    assert!(
        members().len() > 10,
        "members list not read: {:?}",
        members()
    );
}

#[test]
fn every_library_opens_with_what_it_owns() {
    let mut bare = Vec::new();
    for member in members() {
        let lib = root().join(&member).join("src/lib.rs");
        let Ok(text) = std::fs::read_to_string(&lib) else {
            continue;
        };
        if !text.trim_start().starts_with("//!") {
            bare.push(member);
        }
    }
    assert!(bare.is_empty(), "lib.rs without a crate doc: {bare:?}");
}

#[test]
fn no_source_file_passes_800_lines() {
    let mut files = Vec::new();
    for member in members() {
        rust_files(&root().join(member), &mut files);
    }
    assert!(files.len() > 100, "source files not found: {}", files.len());
    let mut long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).ok()?.lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    long.sort();
    assert!(long.is_empty(), "files over {MAX_LINES} lines: {long:#?}");
}
