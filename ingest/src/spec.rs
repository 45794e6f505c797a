//! What a source is: the user-facing description of where frames come from, and what ingest
//! makes of its pictures ([`Output`]).

use crate::IngestError;

/// Where frames come from.
///
/// Non-exhaustive because more kinds of source may come; match with a `_` arm.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SourceSpec {
    /// A synthetic solid-colour picture with text drawn by `textoverlay`.
    TestPattern(TestPattern),
    /// Escape hatch: a gst-launch description of the source part of a pipeline, ending where
    /// the caps would start (e.g. `"videotestsrc pattern=ball ! videoflip method=rotate-180"`).
    /// Ingest appends `! videoconvert ! video/x-raw,format=RGB ! appsink` ([`Output::Rgb`]) or
    /// `! videoconvert ! video/x-raw,format=I420,colorimetry=… ! jpegenc ! appsink`
    /// ([`Output::Jpeg`]); a description that ends in caps without a `format` leaves the choice
    /// to that tail, so a JPEG source needs no RGB conversion. The text is trusted pipeline syntax and is not
    /// escaped; do not build it from untrusted input.
    Pipeline(String),
    /// A recorded source (a file, an HLS stream): a description like [`Pipeline`](Self::Pipeline),
    /// played at its own speed (the appsink syncs to the clock) instead of as fast as it
    /// decodes, so it stands in for a camera. It is not live: a slow consumer throttles it.
    Recorded {
        description: String,
        /// Start over at the end instead of ending (the source must be seekable). Loops use
        /// segment seeks, so capture timestamps keep increasing while `pts_ns` starts again.
        looping: bool,
    },
}

/// What ingest hands on for each picture: packed RGB, or a JPEG file encoded inside the
/// GStreamer pipeline.
///
/// JPEG exists for the wire: a 1280x720 RGB frame is 2.76 MB, more than NATS's default
/// `max_payload` of 1 MiB, while the same picture as a JPEG is tens to a few hundred KB. The
/// pipeline encodes from I420 with `jpegenc` (libjpeg-turbo, SIMD), so a JPEG source need not
/// convert to RGB at all: the decoder's YUV is scaled, converted to JFIF's I420 (full range,
/// BT.601: what JPEG decoders assume) and encoded. That conversion is real work for the usual
/// limited-range BT.709 of H.264 cameras, about as much as the encoding itself (see
/// `cargo bench -p panoptes --bench ingest`); MJPEG sources are JFIF already.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Output {
    /// Packed RGB, 3 bytes per pixel ([`FrameFormat::Rgb`](crate::FrameFormat::Rgb)).
    #[default]
    Rgb,
    /// A baseline JPEG file of `quality` 1..=100 (libjpeg's scale; 85 is a good default)
    /// ([`FrameFormat::Jpeg`](crate::FrameFormat::Jpeg)).
    Jpeg { quality: u8 },
}

impl Output {
    /// Checks what `jpegenc` would otherwise clamp silently.
    pub fn validate(&self) -> Result<(), IngestError> {
        match *self {
            Output::Jpeg { quality } if !(1..=100).contains(&quality) => Err(
                IngestError::InvalidSpec(format!("JPEG quality {quality} must be within 1..=100")),
            ),
            _ => Ok(()),
        }
    }
}

/// A frame rate as a fraction (`num / den` frames per second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Framerate {
    pub num: u32,
    pub den: u32,
}

impl Framerate {
    pub const fn new(num: u32, den: u32) -> Self {
        Self { num, den }
    }
}

impl From<u32> for Framerate {
    fn from(fps: u32) -> Self {
        Self { num: fps, den: 1 }
    }
}

/// A synthetic source: `videotestsrc pattern=solid-color` with `textoverlay` text on top.
///
/// How textoverlay (GStreamer 1.22, `halignment`/`valignment=position`) places the text,
/// measured with [`render_still`](crate::render_still) + [`ink_bbox`](crate::ink_bbox):
/// - Horizontally the text is centred on `xpos * width` (within a pixel or two).
/// - Vertically the *line box* (ascent + descent), not the glyphs, is centred on
///   `ypos * height`, so the visible ink sits higher by a constant that depends on text and
///   font (29 px for "Hello" in "Sans Bold 48" at 1280 wide).
/// - Both are then clamped so the drawn rectangle (glyphs + outline + shadow) stays inside
///   the frame; at `xpos = ypos = 0` the ink starts at about (1, 1).
/// - The font scales with the frame width (textoverlay's `auto-resize`, 640 px basis): the
///   same pattern covers the same fraction of the frame at any resolution.
/// - Text wider than the frame wraps onto more lines.
/// - Text is white with a black outline and a half-transparent shadow down and right.
///
/// Use `render_still` to learn the exact box rather than predicting it.
#[derive(Debug, Clone, PartialEq)]
pub struct TestPattern {
    /// Plain text, drawn literally (it is markup-escaped for textoverlay); any UTF-8 except NUL.
    pub text: String,
    pub width: u32,
    pub height: u32,
    pub fps: Framerate,
    /// Pango font description, e.g. `"Sans Bold 48"`.
    pub font: String,
    /// Horizontal text centre as a fraction of the width, `0.0..=1.0`.
    pub xpos: f64,
    /// Vertical line-box centre as a fraction of the height, `0.0..=1.0`.
    pub ypos: f64,
    /// Background colour as `0xAARRGGBB` (alpha is ignored). Exact in [`Output::Rgb`] frames;
    /// in JPEG frames as close as JPEG allows (measured: 1 off).
    pub background: u32,
    /// Live sources timestamp by the clock and produce frames in real time.
    pub live: bool,
    /// How the text moves, if it does.
    pub motion: Option<Motion>,
    /// Further texts drawn on the same frames (same font), each with its own place and motion:
    /// scenes with several objects, e.g. two whose paths cross.
    pub overlays: Vec<Overlay>,
}

/// Movement of a text: its centre moves `dx` widths and `dy` heights per second of stream
/// time (the frame's timestamp) and bounces off the edges, so where it is in every frame is
/// known: [`Motion::at`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Motion {
    pub dx: f64,
    pub dy: f64,
}

impl Motion {
    /// The `(xpos, ypos)` of a text that starts at `(x0, y0)`, `t_s` seconds into the stream:
    /// each coordinate runs along its line and reflects at 0 and 1 (a triangle wave).
    pub fn at(&self, (x0, y0): (f64, f64), t_s: f64) -> (f64, f64) {
        (bounce(x0 + self.dx * t_s), bounce(y0 + self.dy * t_s))
    }
}

fn bounce(u: f64) -> f64 {
    let m = u.rem_euclid(2.0);
    if m <= 1.0 { m } else { 2.0 - m }
}

/// A further text of a [`TestPattern`].
#[derive(Debug, Clone, PartialEq)]
pub struct Overlay {
    pub text: String,
    pub xpos: f64,
    pub ypos: f64,
    pub motion: Option<Motion>,
}

impl Default for TestPattern {
    fn default() -> Self {
        Self {
            text: String::new(),
            width: 1280,
            height: 720,
            fps: Framerate::from(10),
            font: "Sans Bold 48".to_owned(),
            xpos: 0.5,
            ypos: 0.5,
            background: 0xff30_3030,
            live: true,
            motion: None,
            overlays: Vec::new(),
        }
    }
}

impl TestPattern {
    /// The background as RGB bytes, as it appears in [`RawFrame::data`](crate::RawFrame).
    pub fn background_rgb(&self) -> [u8; 3] {
        let [_, r, g, b] = self.background.to_be_bytes();
        [r, g, b]
    }

    /// Checks everything GStreamer would otherwise reject late or silently clamp.
    pub fn validate(&self) -> Result<(), IngestError> {
        let bad = |msg: String| Err(IngestError::InvalidSpec(msg));
        if self.width == 0 || self.height == 0 {
            return bad(format!(
                "test pattern size {}x{} must be non-zero",
                self.width, self.height
            ));
        }
        // GStreamer caps carry sizes and fractions as gint.
        if i32::try_from(self.width).is_err() || i32::try_from(self.height).is_err() {
            return bad(format!(
                "test pattern size {}x{} is too large",
                self.width, self.height
            ));
        }
        let Framerate { num, den } = self.fps;
        if num == 0 || den == 0 || i32::try_from(num).is_err() || i32::try_from(den).is_err() {
            return bad(format!("test pattern framerate {num}/{den} is not usable"));
        }
        let texts = std::iter::once((self.text.as_str(), self.xpos, self.ypos, self.motion)).chain(
            self.overlays
                .iter()
                .map(|o| (o.text.as_str(), o.xpos, o.ypos, o.motion)),
        );
        for (text, xpos, ypos, motion) in texts {
            for (name, v) in [("xpos", xpos), ("ypos", ypos)] {
                if !(0.0..=1.0).contains(&v) {
                    return bad(format!("test pattern {name}={v} must be within 0..=1"));
                }
            }
            if let Some(Motion { dx, dy }) = motion
                && !(dx.is_finite() && dy.is_finite() && dx.abs() <= 10.0 && dy.abs() <= 10.0)
            {
                return bad(format!(
                    "test pattern motion ({dx}, {dy}) must be finite and at most 10 frames per second"
                ));
            }
            // Strings cross into C as NUL-terminated; an interior NUL would silently cut them.
            if text.contains('\0') {
                return bad("test pattern text contains a NUL character".to_owned());
            }
        }
        if self.font.contains('\0') {
            return bad("test pattern font contains a NUL character".to_owned());
        }
        Ok(())
    }
}
