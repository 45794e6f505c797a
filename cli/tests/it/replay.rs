//! Replay (`retain:` and `panoptes replay`) against a real nats-server, real GStreamer frames and
//! the real text detector: 100 frames are kept with their detections; replayed through the
//! same stages they agree frame for frame; replayed with the zone filter's candidate config
//! (left half of the frame only) exactly the boxes in the right half are reported lost, frame
//! by frame, in the report users read. Nothing is published on the live subjects meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use panoptes::nats_args::NatsArgs;
use panoptes::replay_cmd::{Candidate, ReplayArgs, replay_with};
use panoptes::runner::{Role, Running};
use panoptes_contracts::DetectionMessage;
use panoptes_replay::compare::DEFAULT_IOU;
use panoptes_replay::read::Range;
use panoptes_topology::TopologyFile;
use time::OffsetDateTime;

/// Only guards against a hang.
const PATIENCE: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_agrees_with_itself_and_reports_a_changed_operator_frame_by_frame() {
    let root = panoptes_tests::require_setup();
    panoptes_tests::gst();
    let nats = panoptes_tests::nats_server();
    let path = root.join("cli/tests/fixtures/replay.yaml");
    let topology = TopologyFile::load(&path).unwrap_or_else(|d| panic!("{}", d.render(false)));
    let ns = topology.namespace.clone();
    let client = panoptes::connect(nats.url()).await.expect("connect");

    // Live: run until 100 frames have results, then stop.
    let from = OffsetDateTime::now_utc();
    let mut live = client
        .subscribe(format!("{ns}.detections.*"))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let running = Running::start(&topology, Some(nats.url()), Role::All)
        .await
        .expect("start the topology");
    tokio::time::timeout(PATIENCE, async {
        let mut n = 0;
        while n < 100 {
            live.next().await.expect("subscription open");
            n += 1;
        }
    })
    .await
    .expect("100 frames processed live");
    running.stop().await.expect("stop");
    let to = OffsetDateTime::now_utc();
    let range = Range { from, to };

    // Nothing a replay does reaches the live subjects.
    let leaked = Arc::new(AtomicU64::new(0));
    let mut watch = client
        .subscribe(format!("{ns}.>"))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let counter = leaked.clone();
    let watcher = tokio::spawn(async move {
        while let Some(m) = watch.next().await {
            eprintln!("live subject during the replay: {}", m.subject);
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });

    // The same stages: every frame agrees.
    let same = replay_with(
        &client,
        &topology,
        range,
        None,
        None,
        Candidate::default(),
        DEFAULT_IOU,
    )
    .await
    .expect("replay");
    eprintln!("unchanged:\n{same}");
    assert!(same.compared >= 100, "{same}");
    assert_eq!(same.without_result, 0, "{same}");
    assert_eq!(same.agreement(), 1.0, "{same}\n{:?}", same.differing);
    assert!(same.differing.is_empty());

    // The candidate keeps the left half only: exactly the boxes centred in the right half are
    // lost, frame by frame, and nothing is added. Through the command's own path, report and all.
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("report.json");
    let args = ReplayArgs {
        topology: path.clone(),
        nats: NatsArgs::url(nats.url()),
        last: None,
        from: Some(from.format(&time::format_description::well_known::Rfc3339).expect("time")),
        to: Some(to.format(&time::format_description::well_known::Rfc3339).expect("time")),
        cameras: Some(vec!["door".into()]),
        stage: Some("zone".into()),
        wasm: None,
        config: Some(
            r#"{"anchor":"center","zones":[{"id":"all","units":"normalized","polygon":[[0,0],[0.5,0],[0.5,1],[0,1]]}]}"#
                .into(),
        ),
        model: None,
        report: Some(report.clone()),
        iou: DEFAULT_IOU,
    };
    panoptes::replay_cmd::run(args)
        .await
        .expect("replay with the candidate");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("the report")).expect("JSON");

    // What the stored detections say the candidate must drop.
    let js = async_nats::jetstream::new(client.clone());
    let stream = panoptes_replay::retain::open(&js, &ns)
        .await
        .expect("stream");
    let stored: std::collections::BTreeMap<(String, u64), Vec<DetectionMessage>> =
        panoptes_replay::read::detections(&stream, &ns, range, None)
            .await
            .expect("stored detections");
    let right_half = |d: &panoptes_contracts::Detection| (d.bbox[0] + d.bbox[2]) / 2.0 >= 160.0;
    let expected: Vec<(u64, usize)> = stored
        .iter()
        .map(|((_, seq), ms)| {
            let n = ms
                .iter()
                .flat_map(|m| &m.detections)
                .filter(|d| right_half(d))
                .count();
            (*seq, n)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    let differing = report["differing"].as_array().expect("differing frames");
    let found: Vec<(u64, usize)> = differing
        .iter()
        .map(|f| {
            assert_eq!(f["added"].as_array().map(Vec::len), Some(0), "{f}");
            assert_eq!(f["text_changes"].as_array().map(Vec::len), Some(0), "{f}");
            assert_eq!(f["no_result"], false, "{f}");
            for lost in f["lost"].as_array().expect("lost") {
                let x = (lost["box"][0].as_f64().unwrap_or(0.0)
                    + lost["box"][2].as_f64().unwrap_or(0.0))
                    / 2.0;
                assert!(x >= 160.0, "a box in the left half was lost: {lost}");
            }
            (
                f["seq"].as_u64().expect("seq"),
                f["lost"].as_array().map_or(0, Vec::len),
            )
        })
        .collect();
    let compared = report["compared"].as_u64().expect("compared");
    assert!(
        !expected.is_empty() && (expected.len() as u64) < compared,
        "the moving sign crosses the middle: {} of {compared} frames have text on the right",
        expected.len()
    );
    // Frames compared are those replayed with a stored result: all of them here.
    assert_eq!(found, expected, "lost boxes per frame");
    assert_eq!(
        report["lost_by_label"]["text"].as_u64(),
        Some(expected.iter().map(|(_, n)| *n as u64).sum())
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    watcher.abort();
    assert_eq!(
        leaked.load(Ordering::SeqCst),
        0,
        "the replay published on live subjects"
    );
}
