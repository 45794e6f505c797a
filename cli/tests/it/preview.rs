//! Previews (`preview/v1`) against a real nats-server and a real GStreamer camera: an ingest
//! node makes none while nobody subscribes, makes them once someone does (each the named
//! frame, scaled down and encoded), probes with empty requests nobody answers, and stops again
//! when the subscriber leaves.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use panoptes_contracts::frame::Frame;
use panoptes_contracts::preview::PreviewMeta;
use panoptes_contracts::{Subjects, headers};
use panoptes_ingest::cameras::CameraSet;
use panoptes_op_preprocess::jpeg::{JpegOptions, dimensions, thumbnail};
use panoptes_topology::TopologyFile;

/// Only guards against a hang; every wait below normally ends within seconds.
const PATIENCE: Duration = Duration::from_secs(60);

/// The camera's frames as they arrive: how many, and the latest few by seq.
#[derive(Default)]
struct Frames {
    count: AtomicU64,
    recent: Mutex<BTreeMap<u64, Bytes>>,
}

async fn frames_after(frames: &Frames, n: u64) {
    let start = frames.count.load(Ordering::SeqCst);
    tokio::time::timeout(PATIENCE, async {
        while frames.count.load(Ordering::SeqCst) < start + n {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the camera keeps publishing frames");
}

async fn previews_made(set: &CameraSet) -> u64 {
    set.list().await.iter().map(|c| c.previews).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_are_made_only_while_someone_listens_and_show_their_frame() {
    let root = panoptes_tests::require_setup();
    panoptes_tests::gst();
    let nats = panoptes_tests::nats_server();
    let client = panoptes::connect(nats.url()).await.expect("connect");
    let ns = "previewtest";
    let subjects = Subjects::new(ns);
    let path = root.join("topologies/quickstart.yaml");
    let topology = TopologyFile::load(&path).unwrap_or_else(|d| panic!("{}", d.render(false)));
    let cam = topology.config.cameras[0].clone();
    let config = cam.preview;
    assert!(config.enabled(), "previews are on by default");

    let frames = Arc::new(Frames::default());
    let mut frame_sub = client
        .subscribe(format!("{ns}.frames.{}", cam.id))
        .await
        .expect("subscribe frames");
    let kept = frames.clone();
    let reader = tokio::spawn(async move {
        while let Some(m) = frame_sub.next().await {
            let seq = m
                .headers
                .as_ref()
                .and_then(|h| h.get(headers::SEQ))
                .and_then(|v| v.as_str().parse::<u64>().ok())
                .expect("frames carry their seq");
            let mut recent = kept.recent.lock().expect("lock");
            recent.insert(seq, m.payload);
            while recent.len() > 64 {
                recent.pop_first();
            }
            drop(recent);
            kept.count.fetch_add(1, Ordering::SeqCst);
        }
    });
    client.flush().await.expect("flush");

    let set = CameraSet::new(
        client.clone(),
        subjects.clone(),
        topology.base_dir.clone(),
        None,
    );
    set.add(&cam).await.expect("start the camera");

    // Nobody listens: 30 frames (3 s at 10 fps, past the first probes) and no preview.
    frames_after(&frames, 30).await;
    assert_eq!(
        previews_made(&set).await,
        0,
        "no preview while nobody listens"
    );

    // Someone listens: previews arrive, each the named frame scaled down, and probes too.
    let watcher = panoptes::connect(nats.url())
        .await
        .expect("connect watcher");
    let mut previews = watcher
        .subscribe(subjects.preview_for(&cam.id))
        .await
        .expect("subscribe previews");
    watcher.flush().await.expect("flush");
    let (mut shown, mut probes) = (0, 0);
    tokio::time::timeout(PATIENCE, async {
        while shown < 3 || probes < 1 {
            let m = previews.next().await.expect("subscription open");
            if m.payload.is_empty() {
                assert!(m.reply.is_some(), "a probe is a request");
                probes += 1;
                continue;
            }
            let headers = m.headers.as_ref().expect("previews carry headers");
            let meta =
                PreviewMeta::read(&cam.id, |n| headers.get(n).map(|v| v.as_str()), &m.payload)
                    .expect("a preview/v1 message");
            assert_eq!(
                (meta.frame_width, meta.frame_height),
                (cam.width, cam.height)
            );
            let (w, h) = dimensions(&m.payload, &JpegOptions::default()).expect("a JPEG");
            assert_eq!(
                (w, h),
                (config.width, cam.height * config.width / cam.width)
            );
            // The preview may overtake its frame: wait for the frame to be read too.
            let frame = loop {
                if let Some(f) = frames.recent.lock().expect("lock").get(&meta.seq).cloned() {
                    break f;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let frame = Frame::decode(frame, None).expect("a frame/v1");
            let (expected, _, _) = thumbnail(
                frame.pixels.as_slice(),
                frame.width,
                frame.height,
                config.width,
                config.quality,
            )
            .expect("thumbnail");
            assert!(
                m.payload.as_ref() == expected.as_slice(),
                "preview of seq {} is that frame, scaled and encoded",
                meta.seq
            );
            shown += 1;
        }
    })
    .await
    .expect("previews arrive while someone listens");
    assert!(previews_made(&set).await >= 3);

    // The listener leaves: the next probe finds nobody, and previews stop.
    previews.unsubscribe().await.expect("unsubscribe");
    watcher.flush().await.expect("flush");
    tokio::time::timeout(PATIENCE, async {
        loop {
            let before = previews_made(&set).await;
            // 30 frames are 3 s: more than a probe period and several preview periods.
            frames_after(&frames, 30).await;
            if previews_made(&set).await == before {
                break;
            }
        }
    })
    .await
    .expect("previews stop once nobody listens");

    set.remove(&cam.id).await.expect("the camera was running");
    reader.abort();
}
