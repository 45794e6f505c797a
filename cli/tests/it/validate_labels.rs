//! `panoptes validate` refuses labels of zones, lines and output filters that no stage of the
//! topology gives (they would never match), located in the file; the labels a model's manifest
//! lists and a postprocess stage's `label` are what stages give.

use std::process::{Command, Stdio};

use panoptes_tests::{repo_root, require_setup};

#[test]
fn labels_no_stage_gives_are_located() {
    require_setup();
    let fixture = repo_root().join("cli/tests/fixtures/labels.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_panoptes"))
        .args(["validate"])
        .arg(&fixture)
        .stdin(Stdio::null())
        .output()
        .expect("run panoptes validate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "validate accepted it:\n{stderr}");
    // The zone's second label (line 15) and the output filter's (line 42); `text`, which the
    // detector's manifest lists, passes in the zone and on the line.
    assert!(
        stderr.contains("no stage of this topology labels objects `persn`"),
        "{stderr}"
    );
    assert!(stderr.contains("labels.yaml:15:"), "{stderr}");
    assert!(
        stderr.contains("no stage of this topology labels objects `car`"),
        "{stderr}"
    );
    assert!(stderr.contains("labels.yaml:42:"), "{stderr}");
    assert!(!stderr.contains("`text`"), "{stderr}");
    assert!(
        stderr.contains("the labels its stages give: text"),
        "{stderr}"
    );

    // The worked example, whose zone, line and filters name what its detector gives, passes.
    let door = Command::new(env!("CARGO_BIN_EXE_panoptes"))
        .args(["validate"])
        .arg(repo_root().join("topologies/door.yaml"))
        .stdin(Stdio::null())
        .output()
        .expect("run panoptes validate");
    assert!(
        door.status.success(),
        "{}",
        String::from_utf8_lossy(&door.stderr)
    );
}
