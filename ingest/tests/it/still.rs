//! Single rendered stills: where textoverlay puts text, and that awkward input is handled.

use panoptes_ingest::{IngestError, SourceSpec, TestPattern, ink_bbox, render_still};

fn pattern(text: &str, xpos: f64, ypos: f64) -> TestPattern {
    TestPattern {
        text: text.into(),
        xpos,
        ypos,
        background: 0xff20_4060,
        live: false,
        ..TestPattern::default()
    }
}

fn bbox(p: &TestPattern) -> [u32; 4] {
    let frame = render_still(p).expect("still renders");
    assert_eq!((frame.width, frame.height), (p.width, p.height));
    assert_eq!(
        frame.pixel(0, 0),
        Some(p.background_rgb()),
        "background is exact"
    );
    let b = ink_bbox(&frame, p.background_rgb(), 0).expect("text was drawn");
    assert!(b[0] <= b[2] && b[1] <= b[3], "ordered box {b:?}");
    assert!(b[2] < p.width && b[3] < p.height, "box {b:?} inside frame");
    b
}

fn centre(b: [u32; 4]) -> (f64, f64) {
    (f64::from(b[0] + b[2]) / 2.0, f64::from(b[1] + b[3]) / 2.0)
}

#[test]
fn text_box_follows_xpos_ypos() {
    let t = std::time::Instant::now();
    let mid = bbox(&pattern("Hello", 0.5, 0.5));
    let first = t.elapsed();
    let t = std::time::Instant::now();
    let tl = bbox(&pattern("Hello", 0.25, 0.3));
    let second = t.elapsed();
    let br = bbox(&pattern("Hello", 0.75, 0.8));
    eprintln!("render_still: first {first:?}, next {second:?}");
    eprintln!("bbox mid {mid:?} tl {tl:?} br {br:?}");
    let mut rises = Vec::new();
    for (b, x, y) in [(mid, 0.5, 0.5), (tl, 0.25, 0.3), (br, 0.75, 0.8)] {
        let (cx, cy) = centre(b);
        // Horizontally the text is centred on xpos * width (outline/shadow: a few pixels).
        assert!(
            (cx - x * 1280.0).abs() <= 6.0,
            "x centre {cx} for xpos {x}: {b:?}"
        );
        // Vertically the line box is centred, so the ink sits a constant amount higher.
        rises.push(y * 720.0 - cy);
    }
    eprintln!("ink centre above ypos*height by {rises:?} px");
    for r in &rises {
        assert!((r - rises[0]).abs() <= 1.0, "constant offset: {rises:?}");
        assert!((0.0..f64::from(mid[3] - mid[1])).contains(r), "{rises:?}");
    }
    // Same text, same size, just moved.
    assert_eq!(mid[2] - mid[0], tl[2] - tl[0]);
    assert_eq!(mid[3] - mid[1], br[3] - br[1]);
    assert!(tl[0] < mid[0] && mid[0] < br[0]);
    assert!(tl[1] < mid[1] && mid[1] < br[1]);
}

#[test]
fn text_is_clamped_inside_the_frame_at_the_edges() {
    let b = bbox(&pattern("Corner", 0.0, 0.0));
    let e = bbox(&pattern("Corner", 1.0, 1.0));
    eprintln!("bbox at (0,0) {b:?}, at (1,1) {e:?}");
    assert!(b[0] <= 4 && b[1] <= 4, "{b:?}");
    assert!(e[2] >= 1280 - 10 && e[3] >= 720 - 10, "{e:?}");
    assert_eq!(b[2] - b[0], e[2] - e[0], "clamping moves, never crops");
}

#[test]
fn quotes_markup_and_unicode_are_plain_text() {
    let awkward = bbox(&pattern(
        r#"a "quoted" ! 'x' & <b>y</b> ; \n Grüße 日本"#,
        0.5,
        0.5,
    ));
    let plain = bbox(&pattern("x", 0.5, 0.5));
    eprintln!("awkward {awkward:?} vs plain {plain:?}");
    assert!(awkward[2] - awkward[0] > 4 * (plain[2] - plain[0]));
    // `<b>y</b>` must be drawn literally, i.e. wider than `y` alone.
    let tagged = bbox(&pattern("<b>y</b>", 0.5, 0.5));
    let bare = bbox(&pattern("y", 0.5, 0.5));
    assert!(
        tagged[2] - tagged[0] > 3 * (bare[2] - bare[0]),
        "{tagged:?} vs {bare:?}"
    );
}

#[test]
fn odd_width_frames_are_packed_without_padding() {
    // 321 * 3 = 963 bytes per row; GStreamer pads RGB rows to 964.
    let p = TestPattern {
        width: 321,
        height: 101,
        text: String::new(),
        background: 0xff10_2030,
        ..TestPattern::default()
    };
    let frame = render_still(&p).expect("still renders");
    assert_eq!(frame.stride, 963);
    assert_eq!(frame.data.len(), 963 * 101);
    // Leftover padding would shift later rows and make channels disagree.
    assert_eq!(ink_bbox(&frame, [0x10, 0x20, 0x30], 0), None);
}

#[test]
fn invalid_specs_are_rejected_before_starting() {
    for (p, needle) in [
        (pattern("x", 1.5, 0.5), "xpos"),
        (pattern("x", 0.5, f64::NAN), "ypos"),
        (
            TestPattern {
                width: 0,
                ..pattern("x", 0.5, 0.5)
            },
            "size",
        ),
        (pattern("nul\0byte", 0.5, 0.5), "NUL"),
        (
            TestPattern {
                fps: panoptes_ingest::Framerate::new(10, 0),
                ..pattern("x", 0.5, 0.5)
            },
            "framerate",
        ),
    ] {
        match render_still(&p) {
            Err(e @ IngestError::InvalidSpec(_)) => {
                assert!(
                    e.to_string().contains(needle),
                    "{e} should mention {needle}"
                )
            }
            other => panic!("expected InvalidSpec for {p:?}, got {other:?}"),
        }
    }
}

#[test]
fn bad_escape_hatch_descriptions_name_the_problem() {
    let start = |d: &str| {
        panoptes_ingest::Ingest::start(&SourceSpec::Pipeline(d.into()), |_| {}, |_| {})
            .expect_err("must fail")
    };

    let e = start("nosuchelement_panoptes pattern=ball");
    eprintln!("unknown element: {e}");
    assert!(matches!(e, IngestError::Parse { .. }), "{e:?}");
    assert!(e.to_string().contains("nosuchelement_panoptes"), "{e}");

    let e = start("videotestsrc no-such-property=3");
    eprintln!("unknown property: {e}");
    assert!(matches!(e, IngestError::Parse { .. }), "{e:?}");
    assert!(e.to_string().contains("no-such-property"), "{e}");

    let e = start("videotestsrc !");
    eprintln!("trailing link: {e}");
    assert!(matches!(e, IngestError::Parse { .. }), "{e:?}");

    let e = start("   ");
    assert!(e.to_string().contains("empty"), "{e}");

    let e = start("filesrc location=/nonexistent/panoptes.mp4 ! decodebin");
    eprintln!("missing file: {e}");
    assert!(matches!(e, IngestError::Start { .. }), "{e:?}");
    assert!(e.to_string().contains("/nonexistent/panoptes.mp4"), "{e}");
}
