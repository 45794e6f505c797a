//! Every example topology in `topologies/` validates (with the files setup fetches in place).

use std::path::PathBuf;

use panoptes_topology::TopologyFile;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

#[test]
fn example_topologies_validate() {
    let dir = repo().join("topologies");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("topologies/ exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            if let Err(d) = TopologyFile::load(&path) {
                panic!("{d}");
            }
            seen += 1;
        }
    }
    assert!(seen >= 1, "no topologies found in {}", dir.display());
}

/// The topologies in `topologies/` and the CLI tests' fixtures, written out with absolute paths
/// into another directory, load again into the same topology: what tools and tests that write
/// topologies of their own rely on.
#[test]
fn topologies_written_elsewhere_load_back_the_same() {
    let out = tempfile::tempdir().expect("temp dir");
    let mut seen = 0;
    for dir in [repo().join("topologies"), repo().join("cli/tests/fixtures")] {
        for entry in std::fs::read_dir(&dir).expect("directory exists") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            // Some fixtures are parts of topologies (cameras only) or refused on purpose.
            let Ok(topology) = TopologyFile::load(&path) else {
                continue;
            };
            let text = topology.to_text().expect("serializable");
            let written = out.path().join(path.file_name().expect("file name"));
            std::fs::write(&written, &text).expect("write");
            let again = TopologyFile::load(&written).unwrap_or_else(|d| {
                panic!("{} written as\n{text}\nis refused: {d}", path.display())
            });
            assert_eq!(
                serde_json::to_value(again.with_absolute_paths()).expect("json"),
                serde_json::to_value(topology.with_absolute_paths()).expect("json"),
                "{}",
                path.display()
            );
            seen += 1;
        }
    }
    assert!(seen >= 10, "only {seen} topologies loaded");
}
