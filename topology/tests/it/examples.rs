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
