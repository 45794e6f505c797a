//! Turns a [`SourceSpec`] into a GStreamer pipeline that ends in an `appsink` of the chosen
//! [`Output`]: packed RGB, or JPEG encoded by `jpegenc` from I420.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::{IngestError, Output, SourceSpec, TestPattern};

/// The colorimetry of JFIF's YCbCr, which every JPEG decoder assumes: full range (1), BT.601
/// matrix (4), transfer and primaries unspecified (0). jpegenc copies its I420 planes into the
/// file as they are, so I420 in the usual video colorimetry (limited range, BT.709 for HD)
/// would decode with washed-out, shifted colours (measured: #305070 came back as #3a5572).
const JFIF_COLORIMETRY: &str = "1:4:0:0";

/// Name of the appsink the escape-hatch description gets appended; unusual enough not to
/// collide with names chosen inside a user description.
const SINK_NAME: &str = "panoptes_ingest_appsink";

/// Buffers the appsink queues for the frame thread. Small so memory stays bounded (a 1080p
/// RGB frame is ~6 MB) and, for live sources where old ones are dropped, so a slow consumer
/// sees fresh frames.
const MAX_QUEUED: u32 = 2;

pub(crate) struct Built {
    pub pipeline: gst::Pipeline,
    pub appsink: gst_app::AppSink,
}

/// Builds (but does not start) the pipeline for `spec` producing `output`. `num_buffers`
/// limits a test pattern source, for rendering single stills.
pub(crate) fn build(
    spec: &SourceSpec,
    output: Output,
    num_buffers: Option<i32>,
) -> Result<Built, IngestError> {
    crate::init()?;
    output.validate()?;
    match spec {
        SourceSpec::TestPattern(p) => build_test_pattern(p, output, num_buffers),
        SourceSpec::Pipeline(desc) => build_from_description(desc, output),
        SourceSpec::Recorded { description, .. } => {
            let built = build_from_description(description, output)?;
            // Real-time pacing; the appsink still prerolls, so the pipeline stays non-live
            // and can be seeked (an `identity sync=true` in the description could not).
            built.appsink.set_sync(true);
            Ok(built)
        }
    }
}

fn make(factory: &'static str, package: &'static str) -> Result<gst::Element, IngestError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| IngestError::MissingElement {
            element: factory,
            package,
        })
}

fn build_test_pattern(
    p: &TestPattern,
    output: Output,
    num_buffers: Option<i32>,
) -> Result<Built, IngestError> {
    p.validate()?;
    // validate() guarantees these fit in gint.
    let (w, h) = (p.width as i32, p.height as i32);
    let fps = gst::Fraction::new(p.fps.num as i32, p.fps.den as i32);

    let src = make("videotestsrc", "gstreamer1.0-plugins-base")?;
    src.set_property("is-live", p.live);
    src.set_property_from_str("pattern", "solid-color");
    src.set_property("foreground-color", p.background);
    if let Some(n) = num_buffers {
        src.set_property("num-buffers", n);
    }

    // Drawing in RGB keeps the background colour exact (no YUV round trip) and makes the
    // final videoconvert a passthrough for RGB output. (For JPEG output it converts to JFIF's
    // I420: drawing in I420 directly would not do, as videotestsrc paints its solid colour in
    // limited range whatever colorimetry the caps ask for.)
    let src_caps = gst::Caps::builder("video/x-raw")
        .field("format", "RGB")
        .field("width", w)
        .field("height", h)
        .field("framerate", fps)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build();
    let capsfilter = make("capsfilter", "libgstreamer1.0-0")?;
    capsfilter.set_property("caps", &src_caps);

    // Properties are set on the element, never spliced into a launch string, so quotes or
    // `!` in the text cannot alter the pipeline. textoverlay parses its `text` property as
    // Pango markup (a stray `&` or `<` makes it draw nothing), so the text is escaped to be
    // drawn literally.
    let mut overlays = vec![text_overlay(&p.text, &p.font, (p.xpos, p.ypos), p.motion)?];
    for o in &p.overlays {
        overlays.push(text_overlay(&o.text, &p.font, (o.xpos, o.ypos), o.motion)?);
    }

    let convert = make("videoconvert", "gstreamer1.0-plugins-base")?;
    let raw_caps = match output {
        Output::Rgb => gst::Caps::builder("video/x-raw").field("format", "RGB"),
        Output::Jpeg { .. } => gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("colorimetry", JFIF_COLORIMETRY),
    }
    .field("width", w)
    .field("height", h)
    .build();
    // A live videotestsrc already paces itself, so syncing would only add latency; a
    // non-live one would otherwise spin a core producing frames as fast as possible.
    let sync = !p.live && num_buffers.is_none();
    let mut elements = vec![src, capsfilter];
    elements.extend(overlays);
    elements.push(convert);
    let appsink = match output {
        Output::Rgb => appsink(Some(&raw_caps), sync),
        Output::Jpeg { quality } => {
            // The raw caps pin jpegenc's input to the pattern's size and JFIF's I420, as the
            // description tail below does for other sources.
            let raw_filter = make("capsfilter", "libgstreamer1.0-0")?;
            raw_filter.set_property("caps", &raw_caps);
            elements.push(raw_filter);
            elements.push(jpeg_encoder(quality)?);
            appsink(Some(&gst::Caps::new_empty_simple("image/jpeg")), sync)
        }
    };
    elements.push(appsink.clone().upcast());

    let pipeline = gst::Pipeline::new();
    pipeline
        .add_many(&elements)
        .and_then(|()| gst::Element::link_many(&elements))
        .map_err(|e| IngestError::Start {
            reason: format!("cannot assemble test pattern pipeline: {e}"),
        })?;
    Ok(Built { pipeline, appsink })
}

/// A `textoverlay` drawing `text` centred at `at` (fractions of the frame); with `motion`, a
/// probe on its input moves it for each frame by the frame's timestamp, before it draws.
fn text_overlay(
    text: &str,
    font: &str,
    at: (f64, f64),
    motion: Option<crate::Motion>,
) -> Result<gst::Element, IngestError> {
    let overlay = make("textoverlay", "gstreamer1.0-x")?;
    overlay.set_property("text", gst::glib::markup_escape_text(text).as_str());
    overlay.set_property("font-desc", font);
    overlay.set_property_from_str("halignment", "position");
    overlay.set_property_from_str("valignment", "position");
    overlay.set_property("xpos", at.0);
    overlay.set_property("ypos", at.1);
    if let Some(motion) = motion {
        let pad = overlay
            .static_pad("video_sink")
            .ok_or_else(|| IngestError::Start {
                reason: "textoverlay has no video_sink pad".to_owned(),
            })?;
        let weak = overlay.downgrade();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(pts) = info.buffer().and_then(|b| b.pts())
                && let Some(overlay) = weak.upgrade()
            {
                let (x, y) = motion.at(at, pts.nseconds() as f64 / 1e9);
                overlay.set_property("xpos", x);
                overlay.set_property("ypos", y);
            }
            gst::PadProbeReturn::Ok
        });
    }
    Ok(overlay)
}

/// `jpegenc` at `quality` (already validated to 1..=100).
fn jpeg_encoder(quality: u8) -> Result<gst::Element, IngestError> {
    let enc = make("jpegenc", "gstreamer1.0-plugins-good")?;
    enc.set_property("quality", i32::from(quality));
    Ok(enc)
}

fn appsink(caps: Option<&gst::Caps>, sync: bool) -> gst_app::AppSink {
    let sink = gst_app::AppSink::builder()
        .max_buffers(MAX_QUEUED)
        // Decided once liveness is known, see `Ingest::start`; lossless until then.
        .drop(false)
        .sync(sync)
        // The last-sample property would pin one more frame in memory for nothing.
        .enable_last_sample(false)
        .build();
    if let Some(caps) = caps {
        sink.set_caps(Some(caps));
    }
    sink
}

/// The chain ingest appends to a description for `output`, ending in the named appsink.
fn description_tail(output: Output) -> String {
    match output {
        Output::Rgb => format!("videoconvert ! video/x-raw,format=RGB ! appsink name={SINK_NAME}"),
        // A quality is a number (validated), so splicing it cannot change the pipeline.
        Output::Jpeg { quality } => format!(
            "videoconvert ! video/x-raw,format=I420,colorimetry={JFIF_COLORIMETRY} ! jpegenc quality={quality} ! image/jpeg ! appsink name={SINK_NAME}"
        ),
    }
}

fn build_from_description(desc: &str, output: Output) -> Result<Built, IngestError> {
    let trimmed = desc.trim();
    let invalid = |reason: &str| IngestError::Parse {
        description: desc.to_owned(),
        reason: reason.to_owned(),
    };
    if trimmed.is_empty() {
        return Err(invalid("description is empty"));
    }
    if trimmed.contains('\0') {
        return Err(invalid("description contains a NUL character"));
    }
    if trimmed.ends_with('!') {
        return Err(invalid(
            "description must end with an element, not `!` (ingest appends the link itself)",
        ));
    }
    // Parsing the whole chain at once (instead of a bin plus ghost pads) keeps gst-launch's
    // delayed linking, which sources with dynamic pads such as uridecodebin need.
    let full = format!("{trimmed} ! {}", description_tail(output));
    let element =
        gst::parse::launch_full(&full, None, gst::ParseFlags::FATAL_ERRORS).map_err(|e| {
            IngestError::Parse {
                description: desc.to_owned(),
                reason: e.message().to_owned(),
            }
        })?;
    let pipeline = element
        .downcast::<gst::Pipeline>()
        .map_err(|_| invalid("description did not produce a pipeline"))?;
    let appsink = pipeline
        .by_name(SINK_NAME)
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| {
            invalid("appended appsink not found (does the description reuse its name?)")
        })?;
    appsink.set_max_buffers(MAX_QUEUED);
    appsink.set_drop(false);
    // Unknown liveness: deliver as fast as the source produces. Put a live source (or
    // `identity sync=true`) in the description for real-time pacing.
    appsink.set_sync(false);
    appsink.set_enable_last_sample(false);
    Ok(Built { pipeline, appsink })
}
