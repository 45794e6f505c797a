//! What a worker keeps and reports about cameras when things go wrong, on a real nats-server
//! and the real detector chain (letterbox Wasm → PP-OCRv4 det → DB):
//! - NATS killed and restarted under a lone live worker: every frame without results is
//!   reported in a `frames_lost` (or `frames_dropped`) event, exactly, and no lease is said to
//!   be lost to another worker;
//! - a durable worker stopped past its lease: the frames it held come back after newer ones
//!   were processed; they are dropped as late (acknowledged, `frames_late` events naming each),
//!   so each camera's results stay in order;
//! - camera-ID churn: a cap on tracked cameras refuses the excess (counted, rate-limited
//!   events), idle cameras are forgotten after a TTL, and so are their metric series.
//!
//! Nothing here asserts a time: waits poll the state they wait for, under a failure guard.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use panoptes_contracts::frame::{Frame, PixelBuffer, PixelFormat};
use panoptes_contracts::{CameraId, DetectionMessage, Event, EventKind, Subjects};
use panoptes_pipeline::camera_state::CameraLimits;
use panoptes_pipeline::worker::{Worker, WorkerStats};
use panoptes_tests::{ServerControls as _, WorkerProcesses, detector_topology, nats_server};
use panoptes_topology::Delivery;

/// Failure guard only: how long any wait may take before the test gives up.
const GUARD: Duration = Duration::from_secs(120);
const LEASE_TTL_MS: u64 = 1500;

/// One test at a time: each runs the detector, and two at once on 2 cores would overload the
/// workers into dropping frames, which is not what these tests are about.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn write_topology(dir: &Path, ns: &str, delivery: Delivery, ack_wait_ms: u64) -> PathBuf {
    let mut topology = detector_topology(160, 1);
    topology.config.namespace = ns.to_owned();
    topology.config.delivery = delivery;
    topology.config.partitions = 16;
    topology.config.workers.lease_ttl_ms = LEASE_TTL_MS;
    topology.config.workers.ack_wait_ms = ack_wait_ms;
    panoptes_tests::write_topology(dir, ns, &topology)
}

/// A 160×120 frame with a bright bar (text-like for the detector).
fn frame(cam: &str, seq: u64) -> bytes::Bytes {
    let (w, h) = (160u32, 120u32);
    let mut px = vec![40u8; (w * h * 3) as usize];
    for y in 50..62 {
        for x in 20..140 {
            let at = ((y * w + x) * 3) as usize;
            px[at..at + 3].copy_from_slice(&[230, 230, 230]);
        }
    }
    Frame {
        camera: CameraId::new(cam).expect("camera id"),
        seq,
        capture_ts_ns: panoptes_contracts::time::now_ns(),
        width: w,
        height: h,
        format: PixelFormat::Rgb8,
        pixels: PixelBuffer::from_vec(px),
    }
    .encode()
    .expect("encode frame")
}

fn start_workers(n: usize, topology: &Path, url: &str, dir: &Path) -> WorkerProcesses {
    WorkerProcesses::start(
        Path::new(env!("CARGO_BIN_EXE_panoptes")),
        n,
        topology,
        url,
        "info,panoptes_pipeline::lease=debug",
        dir,
    )
    .expect("spawn panoptes worker")
}

/// Waits until `members` workers share all 16 partitions; returns the pid holding each.
async fn wait_for_leases(
    js: &jetstream::Context,
    ns: &str,
    workers: &WorkerProcesses,
    members: usize,
) -> BTreeMap<u32, u32> {
    let start = Instant::now();
    loop {
        let (count, leases) = panoptes_tests::lease_holders(js, ns).await;
        let owners: BTreeSet<u32> = leases.values().copied().collect();
        if count == members && leases.len() == 16 && owners.len() == members {
            return leases;
        }
        assert!(
            start.elapsed() < GUARD,
            "workers did not take the partitions:\n{}",
            workers.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops workers with SIGTERM (they report what is still unreported) and waits for them.
fn drain(workers: &mut WorkerProcesses) {
    for child in &mut workers.children {
        if let Ok(None) = child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
    }
    for child in &mut workers.children {
        let _ = child.wait();
    }
}

/// Every message on `sub` until none came for `quiet`.
async fn until_quiet(
    sub: &mut async_nats::Subscriber,
    quiet: Duration,
) -> Vec<async_nats::Message> {
    let mut out = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(quiet, sub.next()).await {
        out.push(msg);
    }
    out
}

fn events_of(messages: &[async_nats::Message]) -> Vec<Event> {
    messages
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).expect("events/v1"))
        .collect()
}

/// What interrupts the lone live worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Disruption {
    /// nats-server killed (SIGKILL) and restarted after twice the lease TTL; frames are
    /// published throughout (the publisher reconnects at once, the worker later).
    NatsRestart,
    /// The worker stopped (SIGSTOP) for twice the lease TTL while frames are published, then
    /// continued: the frames the server kept for it arrive while its lease has lapsed.
    WorkerStall,
}

/// Runs a lone live worker through `disruption` and checks that every frame without a
/// detection message is reported in an event (lost, dropped, or failed), exactly, and that the
/// worker never claims another worker took its leases. Returns the per-camera report.
async fn lone_worker_through(disruption: Disruption, ns: &'static str) -> String {
    let mut server = nats_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let topology = write_topology(dir.path(), ns, Delivery::Live, 4000);
    // Reconnects within 10 ms of the server's return, ahead of the worker (whose delay grows to
    // 1 s), so the first frames after a restart are published before the worker is back.
    let client = async_nats::ConnectOptions::new()
        .reconnect_delay_callback(|_| Duration::from_millis(10))
        .connect(server.url())
        .await
        .expect("connect");
    let js = jetstream::new(client.clone());
    let mut detections = client
        .subscribe(format!("{ns}.detections.*"))
        .await
        .expect("subscribe");
    let mut events = client
        .subscribe(format!("{ns}.events.*"))
        .await
        .expect("subscribe");
    let mut workers = start_workers(1, &topology, server.url(), dir.path());
    wait_for_leases(&js, ns, &workers, 1).await;

    let cams: Vec<String> = (0..4).map(|i| format!("cam-{i}")).collect();
    let publish = |seqs: std::ops::RangeInclusive<u64>, pace: Duration| {
        let (client, cams) = (client.clone(), cams.clone());
        async move {
            for seq in seqs {
                for cam in &cams {
                    // While the server is down the client keeps what is published and sends it
                    // once it is back.
                    client
                        .publish(format!("{ns}.frames.{cam}"), frame(cam, seq))
                        .await
                        .expect("publish");
                }
                tokio::time::sleep(pace).await;
            }
        }
    };
    // Before: every frame processed, the worker idle, nothing in flight.
    publish(1..=6, Duration::from_millis(125)).await;
    client.flush().await.expect("flush");
    let mut seen: BTreeSet<(String, u64)> = BTreeSet::new();
    while seen.len() < 4 * 6 {
        let msg = tokio::time::timeout(GUARD, detections.next())
            .await
            .unwrap_or_else(|_| panic!("no detections before the disruption:\n{}", workers.logs()))
            .expect("subscription open");
        let m: DetectionMessage = serde_json::from_slice(&msg.payload).expect("detections/v1");
        seen.insert((m.camera, m.seq));
    }

    // Down for twice the lease TTL; frames every 60 ms from the start of it until 2.6 s after
    // it (the worker counts frames that never reached it when the next one does).
    let down = Duration::from_millis(2 * LEASE_TTL_MS);
    const LAST: u64 = 100;
    match disruption {
        Disruption::NatsRestart => {
            server.pause();
            // Published while the server is down (kept by the client), then on.
            let during = tokio::spawn(publish(7..=LAST, Duration::from_millis(60)));
            tokio::time::sleep(down).await;
            server.resume().expect("nats-server restarts");
            during.await.expect("publisher");
        }
        Disruption::WorkerStall => {
            let pid = workers.pids()[0].to_string();
            let stop = Command::new("kill").args(["-STOP", &pid]).status();
            assert!(stop.is_ok_and(|s| s.success()), "kill -STOP");
            let during = tokio::spawn(publish(7..=LAST, Duration::from_millis(60)));
            tokio::time::sleep(down).await;
            let cont = Command::new("kill").args(["-CONT", &pid]).status();
            assert!(cont.is_ok_and(|s| s.success()), "kill -CONT");
            during.await.expect("publisher");
        }
    }
    client.flush().await.expect("flush");
    let after: Vec<DetectionMessage> = until_quiet(&mut detections, Duration::from_secs(3))
        .await
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).expect("detections/v1"))
        .collect();
    drain(&mut workers);
    let events = events_of(&until_quiet(&mut events, Duration::from_secs(1)).await);
    let logs = workers.logs();

    for m in after {
        seen.insert((m.camera, m.seq));
    }
    let mut total_missing = 0;
    let mut report = Vec::new();
    for cam in &cams {
        let missing: Vec<u64> = (7..=LAST)
            .filter(|s| !seen.contains(&(cam.clone(), *s)))
            .collect();
        let counted = |kind: EventKind| -> u64 {
            events
                .iter()
                .filter(|e| &e.camera == cam && e.kind == kind)
                .map(|e| e.count.unwrap_or(1))
                .sum()
        };
        let (lost, dropped, failed) = (
            counted(EventKind::FramesLost),
            counted(EventKind::FramesDropped),
            counted(EventKind::FrameError),
        );
        assert_eq!(
            missing.len() as u64,
            lost + dropped + failed,
            "{disruption:?}, {cam}: missing {missing:?}, reported lost {lost}, dropped {dropped}, failed {failed}; events {events:#?}\n{logs}"
        );
        assert!(
            seen.contains(&(cam.clone(), LAST)) || dropped > 0,
            "{cam} did not resume:\n{logs}"
        );
        total_missing += missing.len();
        report.push(format!(
            "{cam}: {} missing = {lost} lost + {dropped} dropped + {failed} failed",
            missing.len()
        ));
    }
    assert!(
        total_missing > 0,
        "{disruption:?}: no frame was lost, so nothing was tested:\n{logs}"
    );
    assert!(
        !logs.contains("lease lost to another worker"),
        "a lone worker blamed another worker for its leases:\n{logs}"
    );
    if disruption == Disruption::WorkerStall {
        assert!(
            logs.contains("frames lost while the partition's lease had lapsed"),
            "no frame arrived while the lease had lapsed, so that case was not tested:\n{logs}"
        );
    }
    report.join("; ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_under_a_lone_worker_reports_every_lost_frame() {
    let _serial = SERIAL.lock().await;
    let report = lone_worker_through(Disruption::NatsRestart, "restart").await;
    eprintln!("after a nats-server restart: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_arriving_while_a_lease_has_lapsed_are_reported_lost() {
    let _serial = SERIAL.lock().await;
    let report = lone_worker_through(Disruption::WorkerStall, "stall").await;
    eprintln!("after the worker stalled past its lease: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_durable_worker_cannot_reorder_a_camera() {
    const NS: &str = "order";
    let _serial = SERIAL.lock().await;
    let server = nats_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let topology = write_topology(dir.path(), NS, Delivery::Durable, 3000);
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client.clone());
    let mut events = client
        .subscribe(format!("{NS}.events.*"))
        .await
        .expect("subscribe");
    let mut workers = start_workers(2, &topology, server.url(), dir.path());
    let leases = wait_for_leases(&js, NS, &workers, 2).await;
    let start = Instant::now();
    loop {
        let consumers = match js.get_stream(format!("{NS}-frames")).await {
            Ok(mut s) => s.info().await.map(|i| i.state.consumer_count).unwrap_or(0),
            Err(_) => 0,
        };
        if consumers == 16 {
            break;
        }
        assert!(start.elapsed() < GUARD, "no consumers:\n{}", workers.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Two cameras of the worker that will stall, one of the other.
    let victim_pid = workers.pids()[0];
    let owner = |cam: &str| leases[&panoptes_contracts::partition::partition_of(cam, 16)];
    let names = (0..).map(|i| format!("cam-{i}"));
    let stalled: Vec<String> = names
        .clone()
        .filter(|c| owner(c) == victim_pid)
        .take(2)
        .collect();
    let other: Vec<String> = names.filter(|c| owner(c) != victim_pid).take(1).collect();
    let cams: Vec<String> = stalled.iter().chain(&other).cloned().collect();

    let publish = |cams: Vec<String>, seqs: std::ops::RangeInclusive<u64>, pace: Duration| {
        let js = js.clone();
        async move {
            for seq in seqs {
                for cam in &cams {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Nats-Msg-Id", format!("{cam}:{seq}").as_str());
                    js.publish_with_headers(format!("{NS}.frames.{cam}"), headers, frame(cam, seq))
                        .await
                        .expect("publish")
                        .await
                        .expect("JetStream stored the frame");
                }
                tokio::time::sleep(pace).await;
            }
        }
    };
    publish(cams.clone(), 1..=4, Duration::from_millis(125)).await;
    // A burst the stalling worker cannot finish at once: it holds pulled, unacknowledged frames
    // when it stops.
    publish(stalled.clone(), 5..=40, Duration::ZERO).await;
    let status = Command::new("kill")
        .args(["-STOP", &victim_pid.to_string()])
        .status()
        .expect("kill -STOP");
    assert!(status.success());
    let mut held = 0;
    let frames = js.get_stream(format!("{NS}-frames")).await.expect("stream");
    for cam in &stalled {
        let p = panoptes_contracts::partition::partition_of(cam, 16);
        let mut consumer: jetstream::consumer::PullConsumer = frames
            .get_consumer(&panoptes_pipeline::durable::consumer_name(
                "preprocess_detect_text-boxes",
                p,
            ))
            .await
            .expect("consumer");
        held += consumer.info().await.expect("info").num_ack_pending;
    }
    assert!(
        held > 0,
        "the stalled worker held no frames:\n{}",
        workers.logs()
    );
    // The other worker takes the partitions over after the lease TTL and serves newer frames;
    // ack_wait after their delivery, the stalled worker's frames are delivered again.
    publish(cams.clone(), 41..=60, Duration::from_millis(125)).await;

    // Until every frame has a stored detection message or a `frames_late` event.
    let detections = js
        .get_stream(format!("{NS}-detections"))
        .await
        .expect("detections stream");
    let mut late: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let expected = |cam: &str| -> BTreeSet<u64> {
        if stalled.iter().any(|c| c == cam) {
            (1..=60).collect()
        } else {
            (1..=4).chain(41..=60).collect()
        }
    };
    let start = Instant::now();
    let stored = loop {
        while let Ok(Some(msg)) =
            tokio::time::timeout(Duration::from_millis(200), events.next()).await
        {
            let e: Event = serde_json::from_slice(&msg.payload).expect("events/v1");
            if e.kind == EventKind::FramesLate {
                late.entry(e.camera.clone())
                    .or_default()
                    .insert(e.seq.expect("a late event names its frame"));
            }
        }
        let stored = panoptes_tests::read_detections(&detections).await;
        let complete = cams.iter().all(|cam| {
            let done: BTreeSet<u64> = stored
                .iter()
                .filter(|m| &m.camera == cam)
                .map(|m| m.seq)
                .chain(late.get(cam).into_iter().flatten().copied())
                .collect();
            done == expected(cam)
        });
        if complete {
            break stored;
        }
        assert!(
            start.elapsed() < GUARD,
            "frames neither processed nor reported late; late {late:?}:\n{}",
            workers.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // Settle: a straggler would show up as a second message or out of order.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stored_again = panoptes_tests::read_detections(&detections).await;
    assert_eq!(
        stored_again.len(),
        stored.len(),
        "detections after completion"
    );
    let logs = workers.logs();
    for cam in &cams {
        let order: Vec<u64> = stored
            .iter()
            .filter(|m| &m.camera == cam)
            .map(|m| m.seq)
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{cam}'s results out of order (or twice): {order:?}; late {late:?}\n{logs}"
        );
    }
    let total_late: usize = late.values().map(BTreeSet::len).sum();
    assert!(
        total_late > 0,
        "no frame came back late, so nothing was tested (held {held}):\n{logs}"
    );
    assert!(
        other.iter().all(|c| !late.contains_key(c)),
        "the other worker's camera had late frames: {late:?}"
    );
    eprintln!(
        "durable, worker stopped holding {held} frames: late {late:?}; every other frame stored once, in order"
    );
    let _ = Command::new("kill")
        .args(["-KILL", &victim_pid.to_string()])
        .status();
    drain(&mut workers);
}

/// The cameras named `<prefix>…` that have a series on the page.
fn cameras_with_series(page: &str, prefix: &str) -> BTreeSet<String> {
    let needle = format!("camera=\"{prefix}");
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let at = l.find(&needle)? + "camera=\"".len();
            let rest = &l[at..];
            Some(rest[..rest.find('"')?].to_owned())
        })
        .collect()
}

/// Polls `stats` until `done` holds.
async fn wait_for(stats: &WorkerStats, what: &str, done: impl Fn(&WorkerStats) -> bool) {
    let start = Instant::now();
    while !done(stats) {
        assert!(start.elapsed() < GUARD, "{what}: {:?}", stats.snapshot());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_churn_is_capped_and_idle_cameras_are_forgotten() {
    const NS: &str = "churn";
    const CAP: usize = 16;
    let _serial = SERIAL.lock().await;
    let server = nats_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_topology(dir.path(), NS, Delivery::Live, 4000);
    let topology = panoptes_topology::TopologyFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let idle = Duration::from_secs(2);

    // The binary's /metrics endpoint, with the TTL as its idle timeout.
    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        probe.local_addr().expect("addr")
    };
    panoptes::telemetry::serve_metrics_with(addr, idle).expect("serve /metrics");
    let addr = addr.to_string();

    let (built, _unit) = panoptes::registry::build_part(&topology, None).expect("stages");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let mut events = client
        .subscribe(format!("{NS}.events.*"))
        .await
        .expect("subscribe");
    let worker = Worker::with_graph(client.clone(), Subjects::new(NS), built.graph).with_limits(
        CameraLimits {
            max_cameras: CAP,
            idle_ttl: idle,
        },
    );
    let stats: Arc<WorkerStats> = worker.stats();
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(worker.run(cancel.clone()));

    // Warm up (the first frame loads the model) until a frame is processed, then wait for the
    // warm-up camera to be forgotten: nothing is tracked.
    let start = Instant::now();
    while stats.snapshot().processed == 0 {
        client
            .publish(format!("{NS}.frames.warmup"), frame("warmup", 1))
            .await
            .expect("publish");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(start.elapsed() < GUARD, "the worker does not serve");
    }
    wait_for(&stats, "the warm-up camera is not forgotten", |s| {
        s.snapshot().cameras == 0
    })
    .await;
    let before = stats.snapshot();

    // 40 made-up cameras, one frame each, in one burst: the first CAP are served, the rest
    // refused.
    for i in 0..40 {
        let cam = format!("junk-{i}");
        client
            .publish(format!("{NS}.frames.{cam}"), frame(&cam, 1))
            .await
            .expect("publish");
    }
    client.flush().await.expect("flush");
    let mut peak = 0;
    let start = Instant::now();
    loop {
        let s = stats.snapshot();
        peak = peak.max(s.cameras);
        if s.received - before.received == 40
            && s.processed + s.failed + s.dropped + s.refused
                == before.processed + before.failed + before.dropped + before.refused + 40
        {
            break;
        }
        assert!(start.elapsed() < GUARD, "the burst was not handled: {s:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = stats.snapshot();
    assert_eq!(s.refused - before.refused, 40 - CAP as u64, "{s:?}");
    assert!(peak <= CAP as u64, "tracked {peak} cameras, over the cap");
    let served = cameras_with_series(&panoptes_tests::scrape(&addr).await, "junk-");
    assert!(
        served.len() <= CAP,
        "refused cameras got metric series: {served:?}"
    );

    // Every refusal reported, in rate-limited events (not one per frame).
    let mut refused_events = Vec::new();
    let start = Instant::now();
    while refused_events
        .iter()
        .map(|e: &Event| e.count.unwrap_or(0))
        .sum::<u64>()
        < 40 - CAP as u64
    {
        let msg = tokio::time::timeout(GUARD, events.next())
            .await
            .expect("frames_refused events")
            .expect("subscription open");
        let e: Event = serde_json::from_slice(&msg.payload).expect("events/v1");
        if e.kind == EventKind::FramesRefused {
            refused_events.push(e);
        }
        assert!(start.elapsed() < GUARD);
    }
    assert_eq!(
        refused_events
            .iter()
            .map(|e| e.count.unwrap_or(0))
            .sum::<u64>(),
        40 - CAP as u64
    );
    assert!(
        refused_events.len() < 40 - CAP,
        "one event per refused frame: {refused_events:?}"
    );

    // Idle for the TTL: forgotten, in the worker and on /metrics.
    wait_for(&stats, "idle cameras are not forgotten", |s| {
        s.snapshot().cameras == 0
    })
    .await;
    let start = Instant::now();
    loop {
        let left = cameras_with_series(&panoptes_tests::scrape(&addr).await, "junk-");
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < GUARD,
            "metric series of idle cameras are never removed: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Room again: new cameras are served, none refused.
    let before = stats.snapshot();
    for i in 0..CAP {
        let cam = format!("fresh-{i}");
        client
            .publish(format!("{NS}.frames.{cam}"), frame(&cam, 1))
            .await
            .expect("publish");
    }
    client.flush().await.expect("flush");
    wait_for(&stats, "new cameras after the old ones expired", |s| {
        let s = s.snapshot();
        s.processed + s.failed + s.dropped
            == before.processed + before.failed + before.dropped + CAP as u64
    })
    .await;
    assert_eq!(stats.snapshot().refused, before.refused);

    cancel.cancel();
    let end = task.await.expect("join").expect("worker");
    eprintln!(
        "camera churn: cap {CAP}, peak tracked {peak}, {} refused in {} events, idle cameras and their series forgotten after {idle:?}; final {end:?}",
        end.refused,
        refused_events.len()
    );
}
