//! Frames as handed to the rest of the pipeline (packed RGB or a JPEG file), and the helper
//! that finds drawn text.

use gstreamer as gst;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use crate::IngestError;

/// What [`RawFrame::data`] holds; chosen by the [`Output`](crate::Output) the source was started
/// with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameFormat {
    /// Packed RGB: 3 bytes per pixel, rows back to back, no padding.
    Rgb,
    /// One complete JPEG file (baseline, 4:2:0, as `jpegenc` writes it), starting `FF D8`.
    Jpeg,
}

/// One picture from a source.
#[derive(Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// Size of the picture (for JPEG, what the file's header says: the encoder's input caps).
    pub width: u32,
    pub height: u32,
    pub format: FrameFormat,
    /// Bytes per row of `data`: `width * 3` for RGB because padding is removed; 0 for JPEG,
    /// which has no rows to address.
    pub stride: u32,
    /// Buffer presentation timestamp in the stream's time base, if the source set one.
    pub pts_ns: Option<u64>,
    /// Wall-clock capture time, UNIX epoch nanoseconds.
    ///
    /// Derived from the pipeline clock: `now_wall - (clock_now - (base_time + running_time))`,
    /// i.e. the wall time at which the pipeline clock showed this buffer's running time. For
    /// live sources that is when the source stamped the frame. It is never later than the
    /// moment the frame was pulled from the appsink, and equals the pull time when the buffer
    /// has no usable timestamp or runs ahead of the clock (non-live sources without sync).
    pub capture_ts_ns: u64,
    /// The pixels ([`FrameFormat::Rgb`]) or the JPEG file ([`FrameFormat::Jpeg`]).
    pub data: Vec<u8>,
}

impl std::fmt::Debug for RawFrame {
    // The pixel data would flood logs and assertion messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawFrame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("format", &self.format)
            .field("stride", &self.stride)
            .field("pts_ns", &self.pts_ns)
            .field("capture_ts_ns", &self.capture_ts_ns)
            .field("data_len", &self.data.len())
            .finish()
    }
}

impl RawFrame {
    /// The RGB value at (`x`, `y`), or `None` outside the frame and for JPEG frames (whose
    /// pixels exist only once decoded).
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        if self.format != FrameFormat::Rgb || x >= self.width || y >= self.height {
            return None;
        }
        let i = y as usize * self.stride as usize + x as usize * 3;
        let p = self.data.get(i..i + 3)?;
        Some([p[0], p[1], p[2]])
    }

    /// Copies an appsink sample into a frame: RGB packed (row padding dropped), or a JPEG file
    /// as it is.
    pub(crate) fn from_sample(
        sample: &gst::SampleRef,
        capture_ts_ns: u64,
    ) -> Result<Self, IngestError> {
        let caps = sample
            .caps()
            .ok_or_else(|| IngestError::Frame("sample has no caps".into()))?;
        if caps.structure(0).is_some_and(|s| s.name() == "image/jpeg") {
            return Self::jpeg_from_sample(sample, caps, capture_ts_ns);
        }
        let info = gst_video::VideoInfo::from_caps(caps)
            .map_err(|e| IngestError::Frame(format!("caps {caps} are not raw video: {e}")))?;
        if info.format() != gst_video::VideoFormat::Rgb {
            return Err(IngestError::Frame(format!(
                "expected RGB, got {:?}",
                info.format()
            )));
        }
        let buffer = sample
            .buffer()
            .ok_or_else(|| IngestError::Frame("sample has no buffer".into()))?;
        let vframe = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
            .map_err(|e| IngestError::Frame(format!("cannot map buffer: {e}")))?;

        let (width, height) = (info.width(), info.height());
        let row = width as usize * 3;
        let src_stride = usize::try_from(vframe.plane_stride()[0])
            .map_err(|_| IngestError::Frame("negative stride".into()))?;
        let plane = vframe
            .plane_data(0)
            .map_err(|e| IngestError::Frame(format!("cannot read plane: {e}")))?;
        let needed = src_stride * (height as usize).saturating_sub(1) + row;
        if src_stride < row || plane.len() < needed {
            return Err(IngestError::Frame(format!(
                "plane of {} bytes with stride {src_stride} too small for {width}x{height} RGB",
                plane.len()
            )));
        }
        let data = if src_stride == row {
            plane[..row * height as usize].to_vec()
        } else {
            let mut data = Vec::with_capacity(row * height as usize);
            for chunk in plane.chunks(src_stride).take(height as usize) {
                data.extend_from_slice(&chunk[..row]);
            }
            data
        };

        Ok(Self {
            width,
            height,
            format: FrameFormat::Rgb,
            stride: row as u32,
            pts_ns: buffer.pts().map(gst::ClockTime::nseconds),
            capture_ts_ns,
            data,
        })
    }

    /// A `jpegenc` sample: the file's bytes, its size from the caps the encoder set.
    fn jpeg_from_sample(
        sample: &gst::SampleRef,
        caps: &gst::CapsRef,
        capture_ts_ns: u64,
    ) -> Result<Self, IngestError> {
        let s = caps
            .structure(0)
            .ok_or_else(|| IngestError::Frame("JPEG caps are empty".into()))?;
        let dimension = |name: &str| {
            s.get::<i32>(name)
                .ok()
                .and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0)
                .ok_or_else(|| IngestError::Frame(format!("JPEG caps {caps} have no {name}")))
        };
        let (width, height) = (dimension("width")?, dimension("height")?);
        let buffer = sample
            .buffer()
            .ok_or_else(|| IngestError::Frame("sample has no buffer".into()))?;
        let map = buffer
            .map_readable()
            .map_err(|e| IngestError::Frame(format!("cannot map buffer: {e}")))?;
        if !map.starts_with(&[0xFF, 0xD8]) {
            return Err(IngestError::Frame(format!(
                "a {} byte buffer with JPEG caps does not start with a JPEG marker",
                map.len()
            )));
        }
        Ok(Self {
            width,
            height,
            format: FrameFormat::Jpeg,
            stride: 0,
            pts_ns: buffer.pts().map(gst::ClockTime::nseconds),
            capture_ts_ns,
            data: map.to_vec(),
        })
    }
}

/// Bounding box `[x1, y1, x2, y2]` (inclusive) of all pixels whose colour differs from
/// `background_rgb` by more than `tolerance` in any channel — for a test pattern, the area
/// `textoverlay` drew (glyphs plus their outline and shadow). `None` if nothing differs or
/// the frame's data is shorter than its size claims or is not RGB.
pub fn ink_bbox(frame: &RawFrame, background_rgb: [u8; 3], tolerance: u8) -> Option<[u32; 4]> {
    if frame.format != FrameFormat::Rgb {
        return None;
    }
    let (w, h, stride) = (
        frame.width as usize,
        frame.height as usize,
        frame.stride as usize,
    );
    if stride < w * 3 || frame.data.len() < stride * h.saturating_sub(1) + w * 3 {
        return None;
    }
    let differs = |p: &[u8]| {
        p.iter()
            .zip(background_rgb)
            .any(|(&a, b)| a.abs_diff(b) > tolerance)
    };
    let mut bbox: Option<[u32; 4]> = None;
    for y in 0..h {
        let row = &frame.data[y * stride..y * stride + w * 3];
        let first = row.chunks_exact(3).position(differs);
        let Some(first) = first else { continue };
        // A row with a first differing pixel always has a last one.
        let last = row.chunks_exact(3).rposition(differs).unwrap_or(first);
        let (x1, x2, y) = (first as u32, last as u32, y as u32);
        bbox = Some(match bbox {
            None => [x1, y, x2, y],
            Some([bx1, by1, bx2, _]) => [bx1.min(x1), by1, bx2.max(x2), y],
        });
    }
    bbox
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(width: u32, height: u32, rgb: [u8; 3]) -> RawFrame {
        RawFrame {
            width,
            height,
            format: FrameFormat::Rgb,
            stride: width * 3,
            pts_ns: None,
            capture_ts_ns: 0,
            data: rgb.repeat((width * height) as usize),
        }
    }

    fn paint(frame: &mut RawFrame, x: u32, y: u32, rgb: [u8; 3]) {
        let i = (y * frame.stride + x * 3) as usize;
        frame.data[i..i + 3].copy_from_slice(&rgb);
    }

    #[test]
    fn ink_bbox_finds_extremes_and_respects_tolerance() {
        let bg = [10, 20, 30];
        let mut f = solid(16, 9, bg);
        assert_eq!(ink_bbox(&f, bg, 0), None);
        paint(&mut f, 3, 2, [200, 20, 30]);
        paint(&mut f, 12, 7, [10, 20, 40]);
        paint(&mut f, 1, 5, [10, 25, 30]);
        assert_eq!(ink_bbox(&f, bg, 0), Some([1, 2, 12, 7]));
        // The last two differ by 10 and 5: tolerance is "more than", so 5 keeps two, 10 one.
        assert_eq!(ink_bbox(&f, bg, 5), Some([3, 2, 12, 7]));
        assert_eq!(ink_bbox(&f, bg, 10), Some([3, 2, 3, 2]));
        assert_eq!(ink_bbox(&f, bg, 255), None);
    }

    #[test]
    fn ink_bbox_rejects_short_data() {
        let mut f = solid(4, 4, [0; 3]);
        f.data.truncate(10);
        assert_eq!(ink_bbox(&f, [1; 3], 0), None);
    }

    #[test]
    fn from_sample_removes_row_padding() {
        crate::init().expect("gstreamer");
        let (w, h) = (5u32, 3u32);
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, w, h)
            .build()
            .expect("info");
        // GStreamer pads RGB rows to 4 bytes: 15 -> 16. This is what the copy must undo.
        assert_eq!(info.stride()[0], 16);
        let mut bytes = vec![0xEEu8; info.size()];
        for y in 0..h as usize {
            for x in 0..(w as usize * 3) {
                bytes[y * 16 + x] = (y * 15 + x) as u8;
            }
        }
        let mut buffer = gst::Buffer::from_mut_slice(bytes);
        buffer
            .get_mut()
            .expect("writable")
            .set_pts(gst::ClockTime::from_mseconds(40));
        let caps = info.to_caps().expect("caps");
        let sample = gst::Sample::builder().buffer(&buffer).caps(&caps).build();
        let frame = RawFrame::from_sample(&sample, 7).expect("frame");
        assert_eq!((frame.width, frame.height, frame.stride), (5, 3, 15));
        assert_eq!(frame.data, (0..45).collect::<Vec<u8>>());
        assert_eq!(frame.pts_ns, Some(40_000_000));
        assert_eq!(frame.capture_ts_ns, 7);
        assert_eq!(frame.pixel(1, 2), Some([33, 34, 35]));
        assert_eq!(frame.pixel(5, 0), None);
    }

    #[test]
    fn from_sample_rejects_non_rgb() {
        crate::init().expect("gstreamer");
        let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Gray8, 4, 4)
            .build()
            .expect("info");
        let buffer = gst::Buffer::from_mut_slice(vec![0u8; info.size()]);
        let caps = info.to_caps().expect("caps");
        let sample = gst::Sample::builder().buffer(&buffer).caps(&caps).build();
        let err = RawFrame::from_sample(&sample, 0).expect_err("gray is not RGB");
        assert!(err.to_string().contains("RGB"), "{err}");
    }
}
