//! Snapshots of the diagnostics for broken topologies in `tests/broken/`: each must point at
//! the right line and column with a useful message. Review changes with `cargo insta review`
//! (or INSTA_UPDATE=always and `git diff`).

use std::path::Path;

use panoptes_topology::TopologyFile;

/// The only variable the broken files may rely on; everything else is unset.
fn env(name: &str) -> Option<String> {
    (name == "CAMERA_URL").then(|| "rtsp://10.0.0.7/stream".to_owned())
}

#[test]
fn broken_topologies_are_reported_at_their_lines() {
    insta::glob!("../broken", "*.yaml", |path| {
        let text = std::fs::read_to_string(path).expect("readable");
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let base = path.parent().unwrap_or(Path::new("."));
        let err = match TopologyFile::parse(&text, &format!("broken/{name}"), base, &env) {
            Ok(_) => panic!("broken/{name} was accepted"),
            Err(e) => e,
        };
        // Every diagnostic names a place in the file, apart from none.
        for d in &err.items {
            assert!(
                d.span.is_some(),
                "broken/{name}: unlocated diagnostic {d:?}"
            );
        }
        insta::assert_snapshot!(err.render(false));
    });
}

#[test]
fn at_least_fifteen_broken_topologies() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken");
    let n = std::fs::read_dir(dir)
        .expect("tests/broken exists")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        })
        .count();
    assert!(n >= 15, "only {n} broken topologies");
}

/// A camera added at runtime is checked as a topology's cameras are, on its own.
#[test]
fn a_single_camera_is_checked_like_a_topologys() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ok = TopologyFile::parse_camera(
        "id: gate\nsource: { rtsp: { url: \"${CAMERA_URL}\", transport: udp } }\nreconnect: { initial_ms: 100 }\n",
        "camera",
        base,
        &env,
    )
    .expect("a valid camera");
    assert_eq!(ok.id, "gate");
    assert_eq!(ok.reconnect.initial_ms, 100);
    assert_eq!(ok.reconnect.max_ms, 30_000, "defaults apply to the rest");
    for (text, expected) in [
        (
            "id: bad cam\nsource: { test_pattern: { text: x } }\n",
            "camera ID",
        ),
        ("id: a\nsource: { rtsp: { url: \"http://x/y\" } }\n", "rtsp"),
        (
            "id: a\nsource: { file: { path: missing.mp4 } }\n",
            "missing.mp4",
        ),
        (
            "id: a\nsource: { test_pattern: { text: x } }\nfsp: 5\n",
            "fps",
        ),
        (
            "id: a\nsource: { test_pattern: { text: x } }\nreconnect: { initial_ms: 0 }\n",
            "initial_ms",
        ),
        ("- id: a\n", "a list"),
    ] {
        let err = match TopologyFile::parse_camera(text, "camera", base, &env) {
            Ok(c) => panic!("accepted {text:?}: {c:?}"),
            Err(e) => e.render(false),
        };
        assert!(err.contains(expected), "{text:?}: {err}");
        assert!(err.contains("camera:"), "the origin is named: {err}");
    }
}
