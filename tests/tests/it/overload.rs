//! Overload with live delivery: eight cameras publish far faster than the detector runs. The
//! worker keeps the newest frame per camera, so memory stays bounded however many frames arrive,
//! every frame is accounted for (processed, dropped, ...), the drop events add up to the drop
//! counter, and each camera's newest frame is the one that gets processed.
//!
//! In-process: a real nats-server, the worker of a letterbox (Wasm) → PP-OCRv4 det (ONNX
//! Runtime, one thread) → DB topology started through `Running::start` with leased partitions,
//! and this test as the publisher and the observer. Nothing here asserts a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use panoptes::runner::{Role, Running};
use panoptes_contracts::frame::{Frame, PixelBuffer, PixelFormat};
use panoptes_contracts::{CameraId, DetectionMessage, Event, EventKind};
use panoptes_pipeline::worker::StatsSnapshot;
use panoptes_tests::nats_server;
use panoptes_topology::TopologyFile;

const NS: &str = "overload";
const CAMERAS: usize = 8;
/// Frames per camera in the burst: 1,600 frames, ~1.5 GB, far more than any bounded queue of
/// the worker holds (see [`memory_bound`]), published in a few seconds while the detector does
/// a few frames/s on its one thread (2.5-4/s measured during the burst on 2 cores).
const FRAMES: u64 = 200;
const W: u32 = 640;
const H: u32 = 480;
const FRAME_BYTES: u64 = W as u64 * H as u64 * 3;
/// Failure guard only: how long any wait may take before the test gives up.
const GUARD: Duration = Duration::from_secs(180);
/// The worker's counters are taken as final once unchanged this long (nothing is published
/// then, so any frame still inside would have moved a counter by now).
const SETTLE: Duration = Duration::from_secs(2);
/// Camera used only to see the worker serve before the burst.
const WARMUP: &str = "warmup";
/// Camera whose single frame keeps the stage thread busy during a flush round.
const BLOCKER: &str = "blocker";

fn write_topology(dir: &Path) -> PathBuf {
    let mut topology = panoptes_tests::detector_topology(640, 1);
    topology.config.namespace = NS.to_owned();
    panoptes_tests::write_topology(dir, "overload", &topology)
}

fn camera(i: usize) -> String {
    format!("cam-{i}")
}

/// A `w`×`h` picture with a bright bar (text-like for the detector) whose place depends on `i`.
fn pixels(i: usize, w: u32, h: u32) -> PixelBuffer {
    let mut px = vec![40u8; (w * h * 3) as usize];
    let top = (i as u32 * 37) % (h - h / 10).max(1);
    for y in top..(top + h / 15).min(h) {
        for x in w / 8..w - w / 8 {
            let at = ((y * w + x) * 3) as usize;
            px[at..at + 3].copy_from_slice(&[230, 230, 230]);
        }
    }
    PixelBuffer::from_vec(px)
}

/// One encoded frame: the Arrow IPC encoding copies the shared pixels once, as a real
/// publisher's encoder does per frame.
fn encode(cam: &str, seq: u64, w: u32, h: u32, px: &PixelBuffer) -> Bytes {
    Frame {
        camera: CameraId::new(cam).expect("camera id"),
        seq,
        capture_ts_ns: panoptes_contracts::time::now_ns(),
        width: w,
        height: h,
        format: PixelFormat::Rgb8,
        pixels: px.clone(),
    }
    .encode()
    .expect("encode frame")
}

/// This process's resident set, from /proc/self/status (`VmRSS: N kB`).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS in /proc/self/status")
}

/// Samples RSS every 5 ms on a plain thread (the async runtime is busy during the burst) and
/// keeps the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_bytes()));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::spawn(move || {
                let mut samples = 0;
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                    samples += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                samples
            })
        };
        Self { stop, peak, thread }
    }

    /// The peak RSS and the number of samples.
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.thread.join().expect("sampler thread");
        (self.peak.load(Ordering::Relaxed).max(rss_bytes()), samples)
    }
}

/// The bound on RSS growth during the burst. Frames alive at once in this process, at most:
/// - publisher side: the outbound command channel of `panoptes::connect` (capacity 64 messages,
///   as ingest nodes use) plus the frame being encoded and those in the connection's write path;
/// - worker side: the subscription channel (64 messages, the worker's connection is made by
///   `connect_with` with the same capacity), the intake channel between subscription and stage
///   thread (`mpsc::channel(64)` in `Worker::run`), one slot per camera (10 cameras here), the
///   frame being processed and the read buffer holding the next message;
///
/// so 64 + 64 + 64 + 10 + a handful ≈ 208 frames (192 MB at 921,600 bytes each). On top of that
/// 200 MB of slack for what is not a frame: ONNX Runtime's arena growing past the warm-up call,
/// per-thread malloc arenas keeping freed frame-sized blocks, the Wasm instance's linear memory
/// (the letterbox output 640×640×3 f32 = 4.9 MB), the model output (1.6 MB) and DB buffers.
/// A worker that queued every frame it could not process would need the whole burst:
/// 1,600 frames = 1.47 GB, several times this bound (checked below).
fn memory_bound() -> u64 {
    208 * FRAME_BYTES + 200 * (1 << 20)
}

/// Everything the observer connection saw, shared with the tasks reading the subscriptions.
#[derive(Default)]
struct Seen {
    detections: Vec<DetectionMessage>,
    drop_events: Vec<Event>,
    other_events: Vec<Event>,
}

type Shared = Arc<Mutex<Seen>>;

fn lock(seen: &Shared) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits until the worker's counters have not moved for [`SETTLE`] and every processed frame's
/// detection message has arrived; returns the counters then.
async fn settle(running: &Running, seen: &Shared) -> StatsSnapshot {
    let start = Instant::now();
    let mut last = running.worker_stats();
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = running.worker_stats();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= SETTLE && lock(seen).detections.len() as u64 >= now.processed {
            return now;
        }
        assert!(
            start.elapsed() < GUARD,
            "the worker did not settle: {now:?}, {} detections",
            lock(seen).detections.len()
        );
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_drops_old_frames_with_bounded_memory_and_exact_counts() {
    let _machine = crate::whole_machine();
    let server = nats_server();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_topology(dir.path());
    let topology = TopologyFile::load(&path).unwrap_or_else(|e| panic!("{e}"));

    // The observer: default capacities (thousands of messages), so it does not drop small
    // detection and event messages itself.
    let observer = async_nats::connect(server.url()).await.expect("connect");
    let seen: Shared = Arc::default();
    let mut detections = observer
        .subscribe(format!("{NS}.detections.*"))
        .await
        .expect("subscribe detections");
    let mut events = observer
        .subscribe(format!("{NS}.events.*"))
        .await
        .expect("subscribe events");
    observer.flush().await.expect("flush");
    let readers = [
        tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Some(msg) = detections.next().await {
                    let m: DetectionMessage =
                        serde_json::from_slice(&msg.payload).expect("detections/v1");
                    lock(&seen).detections.push(m);
                }
            }
        }),
        tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Some(msg) = events.next().await {
                    let e: Event = serde_json::from_slice(&msg.payload).expect("events/v1");
                    let mut seen = lock(&seen);
                    if e.kind == EventKind::FramesDropped {
                        seen.drop_events.push(e);
                    } else {
                        seen.other_events.push(e);
                    }
                }
            }
        }),
    ];

    let running = Running::start(
        &topology,
        Some(server.url()),
        Role::Worker {
            partitions: None,
            stages: None,
        },
    )
    .await
    .expect("start the worker");
    // The publisher connects as ingest nodes do (64-message outbound channel).
    let publisher = panoptes::connect(server.url()).await.expect("connect");
    let mut published: BTreeMap<String, Vec<u64>> = BTreeMap::new();

    // Warm-up: one camera, a frame every 100 ms until the worker holds its leases and the first
    // detection comes back (frames before the leases are skipped, not lost).
    let warm_px = pixels(99, W, H);
    let start = Instant::now();
    let mut seq = 0;
    while lock(&seen).detections.is_empty() {
        assert!(start.elapsed() < GUARD, "the worker never served a frame");
        seq += 1;
        publisher
            .publish(
                format!("{NS}.frames.{WARMUP}"),
                encode(WARMUP, seq, W, H, &warm_px),
            )
            .await
            .expect("publish");
        published.entry(WARMUP.into()).or_default().push(seq);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publisher.flush().await.expect("flush");
    let warm = settle(&running, &seen).await;
    let rss_before = rss_bytes();
    eprintln!(
        "warm-up: {seq} frames, served after {:.1} s; {warm:?}; RSS {:.1} MiB",
        start.elapsed().as_secs_f64(),
        mib(rss_before)
    );

    // The burst: every camera's frames 1..=FRAMES, back to back, as fast as NATS takes them.
    let cams: Vec<String> = (0..CAMERAS).map(camera).collect();
    let px: Vec<PixelBuffer> = (0..CAMERAS).map(|i| pixels(i, W, H)).collect();
    let sampler = RssSampler::start();
    let burst_start = Instant::now();
    for seq in 1..=FRAMES {
        for (cam, px) in cams.iter().zip(&px) {
            publisher
                .publish(format!("{NS}.frames.{cam}"), encode(cam, seq, W, H, px))
                .await
                .expect("publish");
            published.entry(cam.clone()).or_default().push(seq);
        }
    }
    publisher.flush().await.expect("flush");
    let burst = burst_start.elapsed();
    let after_burst = settle(&running, &seen).await;
    let (rss_peak, samples) = sampler.finish();
    let burst_frames = (CAMERAS as u64) * FRAMES;
    let in_burst = |f: fn(&StatsSnapshot) -> u64| f(&after_burst) - f(&warm);
    eprintln!(
        "burst: {burst_frames} frames ({:.0} MiB) in {:.2} s = {:.0} frames/s offered; worker: received {}, processed {} ({:.1}/s over the burst and drain), dropped {}, failed {}, skipped {}, handed back {}, passes {}",
        mib(burst_frames * FRAME_BYTES),
        burst.as_secs_f64(),
        burst_frames as f64 / burst.as_secs_f64(),
        in_burst(|s| s.received),
        in_burst(|s| s.processed),
        in_burst(|s| s.processed) as f64 / (burst + SETTLE).as_secs_f64(),
        in_burst(|s| s.dropped),
        in_burst(|s| s.failed),
        in_burst(|s| s.skipped),
        in_burst(|s| s.handed_back),
        in_burst(|s| s.batches),
    );
    let growth = rss_peak.saturating_sub(rss_before);
    eprintln!(
        "memory: RSS {:.1} MiB after warm-up, peak {:.1} MiB during burst and drain ({samples} samples): growth {:.1} MiB = {:.0} frames' worth; bound {:.1} MiB",
        mib(rss_before),
        mib(rss_peak),
        mib(growth),
        growth as f64 / FRAME_BYTES as f64,
        mib(memory_bound())
    );

    // (a) Every burst frame reached the worker: its intake drains the subscription into the
    // per-camera slots fast enough that neither the server (slow consumer: pending bytes over
    // max_pending) nor the client (full subscription channel) discards any.
    let server_log =
        std::fs::read_to_string(server.store_dir().join("nats.log")).unwrap_or_default();
    let slow: Vec<&str> = server_log
        .lines()
        .filter(|l| l.contains("Slow Consumer"))
        .collect();
    assert_eq!(
        in_burst(|s| s.received),
        burst_frames,
        "the worker did not receive every burst frame; server slow-consumer lines: {slow:?}"
    );
    assert!(
        slow.is_empty(),
        "nats-server reported slow consumers: {slow:?}"
    );
    // (d) The newest frame wins: every camera's last burst frame was processed.
    {
        let seen = lock(&seen);
        for cam in &cams {
            assert!(
                seen.detections
                    .iter()
                    .any(|m| &m.camera == cam && m.seq == FRAMES),
                "{cam}'s last frame {FRAMES} was not processed; processed seqs: {:?}",
                seen.detections
                    .iter()
                    .filter(|m| &m.camera == cam)
                    .map(|m| m.seq)
                    .collect::<Vec<_>>()
            );
        }
    }
    // (e) Memory is bounded: growth stays far below what queueing the burst would take.
    assert!(
        memory_bound() * 3 < burst_frames * FRAME_BYTES,
        "the burst is too small to tell a bounded worker from one that queues everything"
    );
    assert!(
        growth < memory_bound(),
        "RSS grew {:.1} MiB during the burst (bound {:.1} MiB)",
        mib(growth),
        mib(memory_bound())
    );

    // Flush of the drop reports. `DropReporter` emits a camera's `frames_dropped` event at its
    // first drop and then at the first drop at least 1 s after the previous event, carrying the
    // count since then; the drops after a camera's last event stay unreported until its next
    // drop. So: wait 1.1 s, make exactly one more drop per camera, and every camera's count is
    // reported in full. One drop per camera: the blocker's frame occupies the stage thread (a
    // full detector pass) while each camera sends two small frames, the second replacing the
    // first. Retried if the stage thread happened to take a first frame before its second came.
    let blocker_px = pixels(7, W, H);
    let small_px = pixels(3, 64, 48);
    let mut flushed = false;
    let mut before = after_burst;
    for round in 0..3u64 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let blocker_seq = round + 1;
        publisher
            .publish(
                format!("{NS}.frames.{BLOCKER}"),
                encode(BLOCKER, blocker_seq, W, H, &blocker_px),
            )
            .await
            .expect("publish");
        published
            .entry(BLOCKER.into())
            .or_default()
            .push(blocker_seq);
        publisher.flush().await.expect("flush");
        for step in 1..=2 {
            for cam in &cams {
                let seq = FRAMES + round * 2 + step;
                publisher
                    .publish(
                        format!("{NS}.frames.{cam}"),
                        encode(cam, seq, 64, 48, &small_px),
                    )
                    .await
                    .expect("publish");
                published.entry(cam.clone()).or_default().push(seq);
            }
        }
        publisher.flush().await.expect("flush");
        let after = settle(&running, &seen).await;
        let drops = after.dropped - before.dropped;
        eprintln!("flush round {round}: {drops} drops (want one per camera)");
        before = after;
        if drops == CAMERAS as u64 {
            flushed = true;
            break;
        }
    }

    let summary = running.stop().await.expect("stop");
    let s = summary.worker;
    for r in readers {
        r.abort();
    }
    let total_published: u64 = published.values().map(|v| v.len() as u64).sum();
    eprintln!("final: published {total_published}, worker {s:?}");
    let seen = lock(&seen);

    // (a) again over the whole run, (b) every received frame is accounted for exactly once.
    assert_eq!(s.received, total_published, "frames lost before the worker");
    assert_eq!(
        s.received,
        s.processed + s.dropped + s.failed + s.skipped + s.handed_back,
        "a frame is counted twice or not at all: {s:?}"
    );
    assert_eq!(s.failed, 0, "frames failed: {:?}", seen.other_events);
    // A frame processed and then found on a partition the worker no longer holds counts as
    // processed (or failed) *and* handed back, so the identity above holds only without
    // handovers; with the only worker holding every partition there are none, and no frames
    // were published while a partition had no owner.
    assert_eq!(
        s.handed_back, 0,
        "the only worker lost a lease during the run"
    );
    assert_eq!(s.lost, 0, "frames counted as lost in a handover");
    // (c) Overload dropped frames, and every processed frame published its detections once.
    assert!(s.dropped > 0, "nothing was dropped: no overload happened");
    assert_eq!(seen.detections.len() as u64, s.processed);
    let mut per_frame: BTreeMap<(&str, u64), usize> = BTreeMap::new();
    for m in &seen.detections {
        *per_frame.entry((m.camera.as_str(), m.seq)).or_default() += 1;
    }
    assert!(
        per_frame.values().all(|&n| n == 1),
        "a frame's detections were published twice"
    );

    // Per camera: what it published minus what was processed was dropped (nothing was skipped,
    // handed back or failed for the burst cameras: the worker held every partition by then).
    let mut dropped_per_camera = BTreeMap::new();
    for cam in &cams {
        let processed = seen.detections.iter().filter(|m| &m.camera == cam).count() as u64;
        let sent = published[cam].len() as u64;
        dropped_per_camera.insert(cam.clone(), sent - processed);
        // (d) after the flush too: the camera's newest frame was processed.
        let newest = published[cam].last().copied().expect("published frames");
        assert!(
            per_frame.contains_key(&(cam.as_str(), newest)),
            "{cam}'s newest frame {newest} was not processed"
        );
    }
    let mut reported = BTreeMap::<String, u64>::new();
    let mut first_counts = BTreeMap::<String, u64>::new();
    for e in &seen.drop_events {
        let count = e.count.expect("frames_dropped carries a count");
        *reported.entry(e.camera.clone()).or_default() += count;
        first_counts.entry(e.camera.clone()).or_insert(count);
    }
    eprintln!(
        "drops per camera (published − processed): {dropped_per_camera:?}\nreported by frames_dropped events: {reported:?} ({} events)",
        seen.drop_events.len()
    );
    let burst_cams_dropped: u64 = dropped_per_camera.values().sum();
    let others_dropped = s.dropped - burst_cams_dropped;
    for cam in &cams {
        let dropped = dropped_per_camera[cam];
        let got = reported.get(cam).copied().unwrap_or(0);
        // Never more reported than dropped, and the first drop is reported at once (count 1).
        assert!(
            got <= dropped,
            "{cam}: events report {got} > {dropped} dropped"
        );
        if dropped > 0 {
            assert_eq!(first_counts.get(cam), Some(&1), "{cam}: first event");
        }
        if flushed {
            assert_eq!(
                got, dropped,
                "{cam}: events report {got} of {dropped} drops"
            );
        }
    }
    // The warm-up and blocker cameras' drops (if any) are in the counter, not in the check
    // above; the sum over the burst cameras is exact after a successful flush.
    assert!(
        flushed,
        "no flush round made exactly one drop per camera; reported {reported:?} of {dropped_per_camera:?}"
    );
    eprintln!(
        "drop events: sum over burst cameras {} = their drops {burst_cams_dropped}; worker dropped {} in all ({others_dropped} on the warm-up/blocker cameras)",
        cams.iter()
            .map(|c| reported.get(c).copied().unwrap_or(0))
            .sum::<u64>(),
        s.dropped
    );
}
