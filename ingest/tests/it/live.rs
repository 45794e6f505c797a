//! Live sources end to end: frames arrive at the configured size and rate, timestamps move
//! forward, status is reported, slow consumers get fresh frames, and stopping is prompt.

use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use panoptes_ingest::{Framerate, Ingest, RawFrame, SourceSpec, SourceStatus, TestPattern};

const DEADLINE: Duration = Duration::from_secs(15);

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// Starts `spec` with both callbacks feeding channels.
fn start(
    spec: &SourceSpec,
) -> (
    Ingest,
    mpsc::Receiver<RawFrame>,
    mpsc::Receiver<SourceStatus>,
) {
    let (ftx, frx) = mpsc::channel();
    let (stx, srx) = mpsc::channel();
    let ingest = Ingest::start(
        spec,
        move |f| {
            let _ = ftx.send(f);
        },
        move |s| {
            let _ = stx.send(s);
        },
    )
    .expect("ingest starts");
    (ingest, frx, srx)
}

fn recv_frames(rx: &mpsc::Receiver<RawFrame>, n: usize) -> Vec<RawFrame> {
    let deadline = Instant::now() + DEADLINE;
    let mut frames = Vec::new();
    while frames.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(f) => frames.push(f),
            Err(e) => panic!(
                "only {} of {n} frames within {DEADLINE:?}: {e}",
                frames.len()
            ),
        }
    }
    frames
}

fn wait_status(rx: &mpsc::Receiver<SourceStatus>, want: &SourceStatus) -> Vec<SourceStatus> {
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(s) if &s == want => return seen,
            Ok(s) => seen.push(s),
            Err(e) => panic!("no {want:?} within {DEADLINE:?} (saw {seen:?}): {e}"),
        }
    }
}

#[test]
fn live_test_pattern_delivers_frames_with_increasing_timestamps() {
    let pattern = TestPattern {
        text: "PANOPTES live".into(),
        width: 1280,
        height: 720,
        fps: Framerate::from(10),
        live: true,
        ..TestPattern::default()
    };
    let t0 = Instant::now();
    let started_ns = now_ns();
    let (ingest, frames_rx, status_rx) = start(&SourceSpec::TestPattern(pattern.clone()));
    let t_started = t0.elapsed();
    assert!(ingest.is_live());
    let frames = recv_frames(&frames_rx, 6);
    let t_frames = t0.elapsed();
    let early = wait_status(&status_rx, &SourceStatus::Playing);
    assert!(
        early.is_empty(),
        "unexpected status before Playing: {early:?}"
    );

    for f in &frames {
        assert_eq!((f.width, f.height, f.stride), (1280, 720, 1280 * 3));
        assert_eq!(f.data.len(), 1280 * 720 * 3);
        assert!(f.pts_ns.is_some(), "live videotestsrc stamps every buffer");
        // Sanity: capture times lie between starting the test and now.
        assert!(
            f.capture_ts_ns >= started_ns && f.capture_ts_ns <= now_ns(),
            "{f:?}"
        );
        assert!(
            panoptes_ingest::ink_bbox(f, pattern.background_rgb(), 0).is_some(),
            "text drawn"
        );
    }
    for w in frames.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        assert!(b.pts_ns > a.pts_ns, "pts must increase: {a:?} then {b:?}");
        assert!(
            b.capture_ts_ns > a.capture_ts_ns,
            "capture must increase: {a:?} then {b:?}"
        );
        // 10 fps: consecutive frames are 100 ms apart on the stream clock (allow drops).
        let dpts = b.pts_ns.unwrap_or(0) - a.pts_ns.unwrap_or(0);
        assert!(
            dpts % 100_000_000 == 0,
            "pts step {dpts} ns is not a multiple of 100 ms"
        );
        let dcap = b.capture_ts_ns - a.capture_ts_ns;
        assert!(
            dcap.abs_diff(dpts) < 20_000_000,
            "capture step {dcap} ns should track pts step {dpts} ns"
        );
    }
    let first = &frames[0];
    let last = &frames[frames.len() - 1];
    let span_ms = (last.capture_ts_ns - first.capture_ts_ns) as f64 / 1e6;
    let fps = (frames.len() - 1) as f64 / (span_ms / 1e3);
    let t_stop = Instant::now();
    ingest.stop();
    let stop = t_stop.elapsed();
    eprintln!(
        "live 1280x720@10: start() {t_started:?}, {} frames after {t_frames:?}, {fps:.2} fps \
         by capture ts, pull age of last frame {:.1} ms, stop() {stop:?}",
        frames.len(),
        (now_ns() - last.capture_ts_ns) as f64 / 1e6
    );
    assert!((8.0..=12.0).contains(&fps), "fps {fps:.2} should be ~10");
    assert!(stop < Duration::from_secs(2), "stop took {stop:?}");
}

#[test]
fn slow_consumer_gets_fresh_frames_not_a_backlog() {
    let pattern = TestPattern {
        text: "slow".into(),
        width: 640,
        height: 360,
        fps: Framerate::from(30),
        ..TestPattern::default()
    };
    let (tx, rx) = mpsc::channel();
    let ingest = Ingest::start(
        &SourceSpec::TestPattern(pattern),
        move |f: RawFrame| {
            let age_ms = (now_ns().saturating_sub(f.capture_ts_ns)) as f64 / 1e6;
            // A consumer ten times slower than the source.
            std::thread::sleep(Duration::from_millis(300));
            let _ = tx.send((f.pts_ns, age_ms));
        },
        |_| {},
    )
    .expect("ingest starts");
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    while got.len() < 6 {
        let left = deadline.saturating_duration_since(Instant::now());
        got.push(
            rx.recv_timeout(left)
                .expect("slow consumer still gets frames"),
        );
    }
    drop(ingest);
    eprintln!("slow consumer (pts ns, age at callback ms): {got:?}");
    // A live source cannot wait: frames in between were dropped.
    let skipped = got
        .windows(2)
        .filter(|w| w[1].0.unwrap_or(0) - w[0].0.unwrap_or(0) > 100_000_000)
        .count();
    assert!(skipped >= 3, "expected dropped frames: {got:?}");
    // With an unbounded queue the age would grow by ~270 ms per frame; with max-buffers=2 and
    // drop=true it stays around one consumer period.
    let (_, last_age) = got[got.len() - 1];
    assert!(last_age < 700.0, "frames are stale: {got:?}");
}

#[test]
fn non_live_pattern_is_paced_and_lossless() {
    let pattern = TestPattern {
        text: "file-like".into(),
        width: 320,
        height: 240,
        fps: Framerate::new(40, 2),
        live: false,
        ..TestPattern::default()
    };
    let t0 = Instant::now();
    let (ingest, frames_rx, _status) = start(&SourceSpec::TestPattern(pattern));
    assert!(!ingest.is_live());
    let frames = recv_frames(&frames_rx, 6);
    let elapsed = t0.elapsed();
    drop(ingest);
    let pts: Vec<u64> = frames.iter().filter_map(|f| f.pts_ns).collect();
    assert_eq!(pts, (0..6).map(|i| i * 50_000_000).collect::<Vec<_>>());
    // Synced to the clock at 20 fps rather than as fast as the CPU allows.
    assert!(elapsed >= Duration::from_millis(240), "{elapsed:?}");
}

#[test]
fn escape_hatch_pipeline_runs_to_eos() {
    let spec = SourceSpec::Pipeline(
        "videotestsrc num-buffers=3 pattern=ball ! videoscale ! video/x-raw,width=320,height=240"
            .into(),
    );
    let (ingest, frames_rx, status_rx) = start(&spec);
    assert!(!ingest.is_live());
    // Non-live: the source is throttled instead of dropping, so all three frames arrive even
    // though it produces them faster than the appsink queue holds.
    let frames = recv_frames(&frames_rx, 3);
    for f in &frames {
        assert_eq!((f.width, f.height, f.data.len()), (320, 240, 320 * 240 * 3));
    }
    wait_status(&status_rx, &SourceStatus::Eos);
    ingest.stop();
}

#[test]
fn runtime_errors_reach_on_status() {
    // identity fails the stream after three buffers, i.e. after start() has returned.
    let spec = SourceSpec::Pipeline(
        "videotestsrc is-live=true ! video/x-raw,width=64,height=64 ! identity error-after=3"
            .into(),
    );
    let (ingest, frames_rx, status_rx) = start(&spec);
    let early = wait_status(&status_rx, &SourceStatus::Playing);
    assert!(early.is_empty(), "{early:?}");
    let deadline = Instant::now() + DEADLINE;
    let error = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match status_rx
            .recv_timeout(left)
            .expect("an error status arrives")
        {
            SourceStatus::Error(e) => break e,
            _ => continue,
        }
    };
    eprintln!("runtime error status: {error}");
    assert!(
        error.contains("identity"),
        "error names the element: {error}"
    );
    assert!(frames_rx.try_iter().count() <= 3);
    ingest.stop();
}

#[test]
fn text_with_quotes_and_unicode_streams() {
    let pattern = TestPattern {
        text: r#"He said "hi" ! 'bye' & <b>x</b> \ ; Grüße — 日本"#.into(),
        width: 640,
        height: 360,
        font: "Sans 20".into(),
        ..TestPattern::default()
    };
    let (ingest, frames_rx, _status) = start(&SourceSpec::TestPattern(pattern.clone()));
    let frames = recv_frames(&frames_rx, 2);
    assert!(panoptes_ingest::ink_bbox(&frames[1], pattern.background_rgb(), 0).is_some());
    drop(ingest);
}

#[test]
fn ingest_can_move_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Ingest>();
    assert_send_sync::<RawFrame>();
}

/// A moving scene: two texts, one sweeping right, one falling, their paths crossing. In every
/// frame each text sits where [`Motion::at`] says for the frame's timestamp: its ink box is the
/// one a still rendered at that position has (to a pixel), so tests know each frame's truth.
#[test]
fn moving_texts_are_where_their_motion_puts_them_in_every_frame() {
    use panoptes_ingest::{Motion, Overlay};
    let (w, h) = (640u32, 360u32);
    let right = (Motion { dx: 0.25, dy: 0.0 }, (0.2, 0.3), "RIGHT");
    let down = (Motion { dx: 0.0, dy: 0.2 }, (0.7, 0.15), "DOWN");
    let base = TestPattern {
        width: w,
        height: h,
        fps: Framerate::from(10),
        font: "Sans Bold 20".into(),
        live: true,
        ..TestPattern::default()
    };
    let pattern = TestPattern {
        text: right.2.into(),
        xpos: right.1.0,
        ypos: right.1.1,
        motion: Some(right.0),
        overlays: vec![Overlay {
            text: down.2.into(),
            xpos: down.1.0,
            ypos: down.1.1,
            motion: Some(down.0),
        }],
        ..base.clone()
    };
    let (ingest, frames_rx, _status) = start(&SourceSpec::TestPattern(pattern.clone()));
    let frames = recv_frames(&frames_rx, 12);
    drop(ingest);
    // Where one text alone at `at` draws (a still, rendered once per position).
    let still_box = |text: &str, at: (f64, f64)| {
        let still = panoptes_ingest::render_still(&TestPattern {
            text: text.into(),
            xpos: at.0,
            ypos: at.1,
            ..base.clone()
        })
        .expect("still");
        panoptes_ingest::ink_bbox(&still, base.background_rgb(), 0).expect("ink")
    };
    let mut moved = [0u32; 2];
    let mut first: Option<[[u32; 4]; 2]> = None;
    for f in &frames {
        let t = f.pts_ns.expect("live frames are stamped") as f64 / 1e9;
        let boxes = [right, down].map(|(motion, start, text)| still_box(text, motion.at(start, t)));
        // The two texts are apart in these 1.2 s (RIGHT crosses DOWN's column at x=0.7 only
        // after 2 s), so each one's pixels are its own: the frame holds exactly both boxes.
        for (i, b) in boxes.iter().enumerate() {
            // Blank the other text so the ink box is this one's alone.
            let mut masked = f.clone();
            let other = boxes[1 - i];
            for y in other[1]..=other[3] {
                let row = y as usize * masked.stride as usize;
                for x in other[0]..=other[2] {
                    let p = row + x as usize * 3;
                    masked.data[p..p + 3].copy_from_slice(&base.background_rgb());
                }
            }
            let ink =
                panoptes_ingest::ink_bbox(&masked, base.background_rgb(), 0).expect("text drawn");
            for k in 0..4 {
                assert!(
                    ink[k].abs_diff(b[k]) <= 1,
                    "text {i} at t={t:.3}s: drawn at {ink:?}, expected {b:?}"
                );
            }
        }
        if let Some(first) = first {
            moved = [0, 1].map(|i| {
                first[i][0]
                    .abs_diff(boxes[i][0])
                    .max(first[i][1].abs_diff(boxes[i][1]))
            });
        } else {
            first = Some(boxes);
        }
    }
    // 1.1 s between the first and last frame: 0.275 widths (176 px) right, 0.22 heights
    // (79 px) down.
    assert!(moved[0] > 150 && moved[1] > 60, "{moved:?}");
}
