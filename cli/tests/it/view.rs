//! The web view in a real browser (Debian's chromium, headless, driven over WebDriver), on the
//! quickstart topology as `panoptes run` serves it: both cameras appear; the box of the
//! camera's known text is drawn where the text is (a screenshot's pixels against the frame
//! drawn); an analytics event published on NATS appears in the timeline within 2 s; malformed
//! and unknown-camera messages are skipped and counted while frames go on; a camera removed at
//! runtime disappears.

use std::time::Duration;

use panoptes::camera_cmd;
use panoptes::nats_args::NatsArgs;
use panoptes::runner::{Role, Running};
use panoptes::view_cmd::ViewOptions;
use panoptes_client::control::auth::Signer;
use panoptes_contracts::Subjects;
use panoptes_contracts::analytics::{ANALYTICS_SCHEMA, AnalyticsEvent, AnalyticsKind};
use panoptes_pipeline::nats_server::{NatsServer, NatsServerOptions};
use panoptes_tests::browser::{Browser, Rgba};
use panoptes_topology::TopologyFile;
use serde_json::Value;

/// Start-up builds the detector; a loaded machine takes its time.
const START: Duration = Duration::from_secs(180);
/// Polled state (every 500 ms) and the WebDriver round trips, with room for a busy machine.
const SETTLE: Duration = Duration::from_secs(20);

/// Pixels the drawn box may sit off its place (line width, rounding, JPEG edges).
const SLACK: f64 = 4.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_in_a_browser() {
    let root = panoptes_tests::require_setup();
    panoptes_tests::gst();
    let dir = tempfile::tempdir().expect("temp dir");
    let nats = NatsServer::start(&NatsServerOptions::default()).expect("nats-server");
    // The quickstart as users run it, with camera control on (a key made here), so the test
    // removes a camera as an operator would.
    let key = dir.path().join("admin.key");
    let public = panoptes_client::keys::generate_key_files(&key).expect("keygen");
    let path = root.join("topologies/quickstart.yaml");
    let mut topology = TopologyFile::load(&path).unwrap_or_else(|d| panic!("{}", d.render(false)));
    topology.config.control.enabled = true;
    topology.config.control.keys = vec![public];
    let running = Running::start(&topology, Some(nats.url()), Role::All)
        .await
        .expect("start the quickstart");
    let options = ViewOptions {
        view_listen: "127.0.0.1:0".parse().expect("address"),
        view_token: None,
        view_max_fps: 5.0,
        view_max_total_fps: 12.0,
        jaeger_url: None,
    };
    let view = options
        .start_in_run(running.client.clone(), &topology)
        .await
        .expect("start the view");
    let browser = Browser::start(1400, 1000).await.expect("chromium");
    browser.goto(&view.url()).await.expect("open the view");

    let cameras = "return [...document.querySelectorAll('#cameras .camera')]\
                   .map(c => c.dataset.camera).join(',')";
    let both = format!("return (function() {{ {cameras} }})() === 'cam-alpha,cam-bravo'");
    assert!(
        browser.wait_for(&both, START).await.expect("script"),
        "the cameras shown: {}",
        browser.execute(cameras, Vec::new()).await.expect("script")
    );

    // A frame of cam-alpha with its text's box, as drawn.
    let drawn = "const h = window.panoptes.shown['cam-alpha'];\
                 return !!h && h.detections.some(d => d.label === 'text');";
    assert!(
        browser.wait_for(drawn, START).await.expect("script"),
        "no frame of cam-alpha drawn with a text box"
    );
    box_is_drawn_on_the_text(&browser).await;

    // An analytics event published by anyone appears in the timeline.
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let now = panoptes_contracts::time::now_ns();
    let event = AnalyticsEvent {
        schema: ANALYTICS_SCHEMA.to_owned(),
        id: "view-test-1".to_owned(),
        kind: AnalyticsKind::ZoneEnter,
        camera: "cam-alpha".to_owned(),
        stage: "analytics".to_owned(),
        zone: Some("loading-bay".to_owned()),
        line: None,
        direction: None,
        track_id: 7,
        label: "text".to_owned(),
        seq: 1,
        capture_ts_ns: now,
        ts_ns: now,
        dwell_ms: None,
        ended: false,
        point: [10.0, 10.0],
    };
    let subjects = Subjects::new("panoptes");
    client
        .publish(
            subjects.analytics_for("cam-alpha"),
            serde_json::to_vec(&event).expect("json").into(),
        )
        .await
        .expect("publish");
    client.flush().await.expect("flush");
    let listed = "return [...document.querySelectorAll('#timeline li')]\
                  .some(li => li.dataset.kind === 'zone_enter' && li.textContent.includes('loading-bay'))";
    assert!(
        browser
            .wait_for(listed, Duration::from_secs(2))
            .await
            .expect("script"),
        "the event was not in the timeline within 2 s"
    );
    if let Some(path) = std::env::var_os("PANOPTES_VIEW_SCREENSHOT") {
        let png = browser.screenshot().await.expect("screenshot");
        std::fs::write(&path, png).expect("write the screenshot");
    }

    // Bad input: skipped and counted; the page goes on drawing. (Detections of frames from
    // before the view started may have been counted as of unknown cameras already.)
    let counts = "const count = (s, r) => { const row = [...document.querySelectorAll('#skipped tbody tr')]\
                  .find(tr => tr.cells[0].textContent === s && tr.cells[1].textContent === r);\
                  return row ? Number(row.cells[2].textContent) : 0; };\
                  return [count('detections', 'malformed'), count('detections', 'unknown_camera')];";
    let before = browser.execute(counts, Vec::new()).await.expect("script");
    client
        .publish(subjects.detections_for("cam-alpha"), "{not json".into())
        .await
        .expect("publish");
    let ghost = serde_json::json!({
        "schema": "detections/v1.1", "camera": "ghost", "seq": 1, "capture_ts_ns": now,
        "published_ts_ns": now, "width": 10, "height": 10, "pipeline": "x", "detections": [],
    });
    client
        .publish(
            subjects.detections_for("ghost"),
            serde_json::to_vec(&ghost).expect("json").into(),
        )
        .await
        .expect("publish");
    client.flush().await.expect("flush");
    let counted = format!(
        "const now = (function() {{ {counts} }})(); return now[0] > {} && now[1] > {};",
        before[0], before[1]
    );
    assert!(
        browser.wait_for(&counted, SETTLE).await.expect("script"),
        "skipped messages not counted: {}",
        browser
            .execute(
                "return document.querySelector('#skipped').textContent",
                Vec::new()
            )
            .await
            .expect("script")
    );
    let seq = "return window.panoptes.shown['cam-alpha'].seq";
    let before = browser.execute(seq, Vec::new()).await.expect("script");
    let later = format!("{seq} > {before}");
    assert!(
        browser.wait_for(&later, SETTLE).await.expect("script"),
        "frames stopped after bad input (last seq {before})"
    );

    // A camera removed at runtime leaves the grid.
    let signer = Signer::read(&key).expect("read key");
    let replies = camera_cmd::request(
        &NatsArgs::url(nats.url()),
        Some(&signer),
        &subjects,
        "remove",
        serde_json::to_vec(&serde_json::json!({ "camera": "cam-bravo" })).expect("json"),
        Duration::from_secs(30),
        Some(1),
    )
    .await
    .expect("control request");
    assert!(
        replies.first().is_some_and(|r| r.ok),
        "remove refused: {replies:?}"
    );
    let only_alpha = format!("return (function() {{ {cameras} }})() === 'cam-alpha'");
    assert!(
        browser.wait_for(&only_alpha, SETTLE).await.expect("script"),
        "cam-bravo still shown: {}",
        browser.execute(cameras, Vec::new()).await.expect("script")
    );

    browser.close().await;
    view.stop().await;
    running.stop().await.expect("stop");
}

/// On a screenshot, the drawn box of each text detection of the frame shown has its colour on
/// its left, right and bottom edges (the label covers the top), and the frame's text (the
/// test pattern's white letters) lies inside the boxes.
async fn box_is_drawn_on_the_text(browser: &Browser) {
    let geometry = browser
        .execute(
            "const c = document.querySelector('.camera[data-camera=\"cam-alpha\"] canvas');\
             const r = c.getBoundingClientRect(); const h = window.panoptes.shown['cam-alpha'];\
             return { left: r.left, top: r.top, width: r.width, height: r.height,\
                      frame_width: h.width, frame_height: h.height, seq: h.seq,\
                      boxes: h.detections.filter(d => d.label === 'text').map(d => d.box),\
                      color: window.panoptes.colorOf('text') };",
            Vec::new(),
        )
        .await
        .expect("script");
    let shot = Rgba::from_png(&browser.screenshot().await.expect("screenshot")).expect("png");
    let num = |v: &Value| v.as_f64().expect("number");
    let (left, top) = (num(&geometry["left"]), num(&geometry["top"]));
    let (width, height) = (num(&geometry["width"]), num(&geometry["height"]));
    let sx = width / num(&geometry["frame_width"]);
    let sy = height / num(&geometry["frame_height"]);
    let hex = geometry["color"].as_str().expect("colour");
    let channel = |i: usize| u8::from_str_radix(&hex[1 + 2 * i..3 + 2 * i], 16).expect("hex");
    let color = [channel(0), channel(1), channel(2)];
    let like = |p: [u8; 3], c: [u8; 3]| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 40);
    let boxes: Vec<[f64; 4]> = geometry["boxes"]
        .as_array()
        .expect("boxes")
        .iter()
        .map(|b| {
            let v: Vec<f64> = b.as_array().expect("box").iter().map(num).collect();
            [
                left + v[0] * sx,
                top + v[1] * sy,
                left + v[2] * sx,
                top + v[3] * sy,
            ]
        })
        .collect();
    assert!(!boxes.is_empty(), "{geometry}");
    // Is the box colour within SLACK of (x, y) along the axis named?
    let near = |x: f64, y: f64, horizontal: bool| {
        (-(SLACK as i64)..=SLACK as i64).any(|d| {
            let (px, py) = if horizontal {
                (x.round() as i64 + d, y.round() as i64)
            } else {
                (x.round() as i64, y.round() as i64 + d)
            };
            shot.at(px, py).is_some_and(|p| like(p, color))
        })
    };
    for b in &boxes {
        let (mid_x, mid_y) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
        assert!(
            near(b[0], mid_y, true),
            "left edge of {b:?} not drawn ({geometry})"
        );
        assert!(
            near(b[2], mid_y, true),
            "right edge of {b:?} not drawn ({geometry})"
        );
        assert!(
            near(mid_x, b[3], false),
            "bottom edge of {b:?} not drawn ({geometry})"
        );
    }
    // The white text of the frame, found on the screenshot, is inside the drawn boxes.
    let (mut inside, mut outside) = (0usize, Vec::new());
    for y in top.ceil() as i64..(top + height).floor() as i64 {
        for x in left.ceil() as i64..(left + width).floor() as i64 {
            let Some(p) = shot.at(x, y) else { continue };
            if p.iter().all(|&c| c >= 200) {
                let (fx, fy) = (x as f64, y as f64);
                if boxes.iter().any(|b| {
                    fx >= b[0] - SLACK
                        && fx <= b[2] + SLACK
                        && fy >= b[1] - SLACK
                        && fy <= b[3] + SLACK
                }) {
                    inside += 1;
                } else {
                    outside.push((x, y));
                }
            }
        }
    }
    assert!(
        inside >= 100,
        "hardly any text inside the boxes ({inside} px): {geometry}"
    );
    assert!(
        outside.len() * 100 <= inside,
        "text outside the drawn boxes at {:?}… ({} px, {inside} inside): {geometry}",
        &outside[..outside.len().min(10)],
        outside.len()
    );
}
