//! Wasm operators inside a running worker, over a real nats-server with real camera pipelines:
//! a trapping, an endless-loop and a memory-hogging operator fail only their own cameras' frames
//! (each reported on `events` with its cause) while another camera keeps publishing; and an
//! operator stage's module is swapped by a control message without restarting the worker.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt as _;
use panoptes::nats_args::NatsArgs;
use panoptes::runner::{Role, Running};
use panoptes_client::control::ReloadRequest;
use panoptes_client::control::auth::Signer;
use panoptes_contracts::event::{Event, EventKind};
use panoptes_contracts::{DetectionMessage, Subjects};
use panoptes_tests::repo_root;
use panoptes_topology::TopologyFile;

/// `tests/fixtures/misbehave.yaml`: four cameras, one of them fine, and the misbehaving
/// operator faulting on the others.
fn misbehave() -> TopologyFile {
    let path = repo_root().join("tests/fixtures/misbehave.yaml");
    TopologyFile::load(&path).unwrap_or_else(|d| panic!("{d}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_frames_fail_alone_and_are_reported() {
    let _machine = crate::shared_machine();
    let topology = misbehave();
    let running = Running::start(&topology, None, Role::All)
        .await
        .expect("start");
    let client = panoptes::connect(&running.nats_url).await.expect("connect");
    let mut detections = client.subscribe("panoptes.detections.*").await.unwrap();
    let mut events = client.subscribe("panoptes.events.*").await.unwrap();

    let mut ok_frames = 0u32;
    // camera → the stage-failure messages seen for it.
    let mut failures: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let expected = [
        ("cam-trap", "deliberate trap"),
        ("cam-spin", "time limit of 100ms"),
        ("cam-hog", "over its limit of 50331648 bytes"),
    ];
    let done = |ok: u32, failures: &BTreeMap<String, Vec<String>>| {
        ok >= 10
            && expected.iter().all(|(cam, cause)| {
                failures
                    .get(*cam)
                    .is_some_and(|m| m.iter().filter(|m| m.contains(cause)).count() >= 2)
            })
    };
    let collect = async {
        while !done(ok_frames, &failures) {
            tokio::select! {
                Some(msg) = detections.next() => {
                    let m: DetectionMessage = serde_json::from_slice(&msg.payload).unwrap();
                    assert_eq!(m.camera, "cam-ok", "a faulty camera published detections");
                    assert_eq!(m.detections[0].label, "ok v1");
                    ok_frames += 1;
                }
                Some(msg) = events.next() => {
                    let e: Event = serde_json::from_slice(&msg.payload).unwrap();
                    if e.kind == EventKind::FrameError {
                        assert_eq!(e.stage.as_deref(), Some("probe"), "{e:?}");
                        assert!(e.seq.is_some(), "the event names the frame: {e:?}");
                        failures.entry(e.camera.clone()).or_default().push(e.message);
                    }
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), collect)
        .await
        .unwrap_or_else(|_| {
            let first: BTreeMap<_, _> = failures
                .iter()
                .map(|(cam, m)| (cam, (m.len(), m[0].lines().next().unwrap_or(""))))
                .collect();
            panic!("timed out: {ok_frames} ok frames; failures (count, first): {first:#?}")
        });
    assert!(
        !failures.contains_key("cam-ok"),
        "the healthy camera failed: {failures:?}"
    );
    let summary = running.stop().await.expect("stop");
    assert!(summary.worker.failed >= 6, "{summary:?}");
    assert!(summary.worker.processed >= 10, "{summary:?}");
}

/// The label `misbehave` gives its detections: `ok v1` or `ok v2` by build.
async fn next_labels(
    sub: &mut async_nats::Subscriber,
    want: &str,
    cameras: &[&str],
    last_seq: &mut BTreeMap<String, u64>,
) {
    let mut seen = BTreeSet::new();
    while seen.len() < cameras.len() {
        let msg = sub.next().await.expect("detections");
        let m: DetectionMessage = serde_json::from_slice(&msg.payload).unwrap();
        if let Some(prev) = last_seq.insert(m.camera.clone(), m.seq) {
            assert!(m.seq > prev, "{}: seq {} after {prev}", m.camera, m.seq);
        }
        if m.detections[0].label == want {
            seen.insert(m.camera);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_message_swaps_the_module_without_a_restart() {
    let _machine = crate::shared_machine();
    let dist = repo_root().join("operators/dist");
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("probe.wasm");
    std::fs::copy(dist.join("misbehave.wasm"), &module).unwrap();
    let key = dir.path().join("admin.key");
    panoptes_client::keys::generate_key_files(&key).unwrap();
    let signer = Signer::read(&key).unwrap();
    // The fixture's cameras cam-ok and cam-trap, renamed, with the copied module and no faults
    // to start with; control on, with the key made here.
    let mut topology = misbehave();
    topology.config.control.enabled = true;
    topology.config.control.keys = vec![dir.path().join("admin.key.pub")];
    topology.config.cameras.truncate(2);
    for (camera, id) in topology.config.cameras.iter_mut().zip(["cam-a", "cam-b"]) {
        camera.id = id.to_owned();
    }
    for stage in &mut topology.config.stages {
        if let panoptes_topology::StageConfig::Operator(op) = stage {
            op.wasm = module.clone();
            op.config = serde_json::json!({});
            op.timeout_ms = None;
            op.memory_mib = None;
        }
    }

    let running = Running::start(&topology, None, Role::All)
        .await
        .expect("start");
    let client = panoptes::connect(&running.nats_url).await.expect("connect");
    let mut sub = client.subscribe("panoptes.detections.*").await.unwrap();
    let subjects = Subjects::new("panoptes");
    let nats = NatsArgs::url(&running.nats_url);
    let cameras = ["cam-a", "cam-b"];
    let mut last_seq = BTreeMap::new();

    let steps = async {
        next_labels(&mut sub, "ok v1", &cameras, &mut last_seq).await;

        // Replace the file (atomically, as a deploy would), then ask the worker to reload.
        let staged = dir.path().join(".probe.wasm.new");
        std::fs::copy(dist.join("misbehave-v2.wasm"), &staged).unwrap();
        std::fs::rename(&staged, &module).unwrap();
        let request = ReloadRequest {
            stage: "probe".into(),
            wasm: None,
            promote: false,
        };
        let replies = panoptes::operator_cmd::reload(
            &nats,
            Some(&signer),
            &subjects,
            &request,
            Duration::from_secs(30),
            Some(1),
        )
        .await
        .unwrap();
        assert_eq!(replies.len(), 1, "{replies:?}");
        assert!(replies[0].ok, "{replies:?}");
        assert_eq!(replies[0].outcome.as_deref(), Some("swapped"));
        next_labels(&mut sub, "ok v2", &cameras, &mut last_seq).await;

        // A broken module is refused with its path; the running one stays.
        let junk = dir.path().join("junk.wasm");
        std::fs::write(&junk, b"\0asm\x0d\0\x01\0garbage").unwrap();
        let replies = panoptes::operator_cmd::reload(
            &nats,
            Some(&signer),
            &subjects,
            &ReloadRequest {
                stage: "probe".into(),
                wasm: Some(junk.clone()),
                promote: false,
            },
            Duration::from_secs(30),
            Some(1),
        )
        .await
        .unwrap();
        assert!(!replies[0].ok, "{replies:?}");
        let error = replies[0].error.clone().unwrap_or_default();
        assert!(error.contains("junk.wasm"), "{error}");

        // Unknown stage.
        let replies = panoptes::operator_cmd::reload(
            &nats,
            Some(&signer),
            &subjects,
            &ReloadRequest {
                stage: "nope".into(),
                wasm: None,
                promote: false,
            },
            Duration::from_secs(30),
            Some(1),
        )
        .await
        .unwrap();
        assert!(!replies[0].ok);
        assert!(
            replies[0].error.as_deref().unwrap_or("").contains("probe"),
            "{replies:?}"
        );
        next_labels(&mut sub, "ok v2", &cameras, &mut last_seq).await;
    };
    tokio::time::timeout(Duration::from_secs(120), steps)
        .await
        .expect("timed out");
    let summary = running.stop().await.expect("stop");
    assert_eq!(
        summary.worker.failed, 0,
        "no frame failed across the swap: {summary:?}"
    );
}
