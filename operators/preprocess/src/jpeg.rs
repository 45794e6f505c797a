//! JPEG (baseline and progressive) to packed RGB8, with zune-jpeg. The `jpeg` operator's kernel.
//!
//! Frames come from cameras and third-party publishers, so the bytes are hostile until decoded:
//! the header is read first and the image refused before anything is allocated for its pixels
//! when it is larger than `max_pixels`, when its size is not the one the frame declares
//! ([`decode_rgb8_sized`]), or when the file is too short to hold an image of that size at all (a
//! few KB claiming 8K); a damaged file is an error, never a panic (zune-jpeg is fuzzed for that,
//! and the tests here feed it truncated and bit-flipped files).

use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

use crate::{MAX_SIDE, PreprocessError};

/// Default decoded-size cap: 8K UHD (7680 x 4320), about 100 MB of RGB8.
pub const DEFAULT_MAX_PIXELS: u64 = 7680 * 4320;

/// How to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegOptions {
    /// Largest `width * height` accepted.
    pub max_pixels: u64,
    /// Refuse damaged files (truncated data, stray markers) instead of decoding what can be
    /// decoded and filling the rest with grey, as browsers do.
    pub strict: bool,
}

impl Default for JpegOptions {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
            strict: true,
        }
    }
}

/// Reads only the header: `(width, height)`.
pub fn dimensions(data: &[u8], options: &JpegOptions) -> Result<(u32, u32), PreprocessError> {
    let mut decoder = decoder(data, options);
    header(&mut decoder, data.len(), options)
}

/// Like [`decode_rgb8`], for an image whose size is declared elsewhere (a frame's `width` and
/// `height`): a header claiming any other size is refused before anything is allocated.
pub fn decode_rgb8_sized(
    data: &[u8],
    options: &JpegOptions,
    expected: (u32, u32),
    out: &mut Vec<u8>,
) -> Result<(), PreprocessError> {
    decode(data, options, Some(expected), out).map(|_| ())
}

/// Decodes `data` to packed RGB8 in `out` (replaced, `width * height * 3` bytes) and returns
/// `(width, height)`. Greyscale and CMYK files are converted to RGB.
pub fn decode_rgb8(
    data: &[u8],
    options: &JpegOptions,
    out: &mut Vec<u8>,
) -> Result<(u32, u32), PreprocessError> {
    decode(data, options, None, out)
}

fn decode(
    data: &[u8],
    options: &JpegOptions,
    expected: Option<(u32, u32)>,
    out: &mut Vec<u8>,
) -> Result<(u32, u32), PreprocessError> {
    let mut decoder = decoder(data, options);
    let (width, height) = header(&mut decoder, data.len(), options)?;
    if let Some((w, h)) = expected
        && (w, h) != (width, height)
    {
        return Err(PreprocessError::Jpeg(format!(
            "the frame says {w}x{h} but the JPEG is {width}x{height}"
        )));
    }
    // At most MAX_SIDE^2 * 3 bytes (checked in `header`), which fits a 32-bit usize.
    let len = width as usize * height as usize * 3;
    out.clear();
    out.resize(len, 0);
    decoder
        .decode_into(out)
        .map_err(|e| PreprocessError::Jpeg(e.to_string()))?;
    Ok((width, height))
}

fn decoder<'a>(data: &'a [u8], options: &JpegOptions) -> JpegDecoder<ZCursor<&'a [u8]>> {
    let opts = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(MAX_SIDE as usize)
        .set_max_height(MAX_SIDE as usize)
        .set_strict_mode(options.strict);
    JpegDecoder::new_with_options(ZCursor::new(data), opts)
}

/// The fewest bytes a JPEG of `width` x `height` can have. Every 8x8 block of the
/// full-resolution component carries its DC coefficient as a Huffman code of at least one bit
/// (zune-jpeg decodes Huffman-coded files only), so a file shorter than one bit per block is
/// truncated or its header is forged: decoding it would allocate for the claimed size and fill
/// it with nothing.
pub fn min_file_len(width: u64, height: u64) -> u64 {
    (width.div_ceil(8) * height.div_ceil(8)).div_ceil(8)
}

fn header(
    decoder: &mut JpegDecoder<ZCursor<&[u8]>>,
    data_len: usize,
    options: &JpegOptions,
) -> Result<(u32, u32), PreprocessError> {
    decoder
        .decode_headers()
        .map_err(|e| PreprocessError::Jpeg(e.to_string()))?;
    let (w, h) = decoder
        .dimensions()
        .ok_or_else(|| PreprocessError::Jpeg("no frame header".into()))?;
    let (w, h) = (w as u64, h as u64);
    if w == 0 || h == 0 || w > u64::from(MAX_SIDE) || h > u64::from(MAX_SIDE) {
        return Err(PreprocessError::Jpeg(format!(
            "image size {w}x{h} is out of range (1..={MAX_SIDE} per side)"
        )));
    }
    if w * h > options.max_pixels {
        return Err(PreprocessError::TooLarge {
            width: w,
            height: h,
            max_pixels: options.max_pixels,
        });
    }
    let needed = min_file_len(w, h);
    if (data_len as u64) < needed {
        return Err(PreprocessError::Jpeg(format!(
            "{data_len} bytes cannot hold a {w}x{h} JPEG (it needs at least {needed}): the file \
             is truncated or its header is wrong"
        )));
    }
    // Both sides are at most MAX_SIDE.
    Ok((w as u32, h as u32))
}

/// A JPEG for people to look at: packed RGB8 `src` (`width x height`) scaled down, aspect ratio
/// kept, to at most `max_width` wide (never up), encoded at `quality` (1–100). Returns the file
/// and its size. Previews and the view's tiles; models never see these.
pub fn thumbnail(
    src: &[u8],
    width: u32,
    height: u32,
    max_width: u32,
    quality: u8,
) -> Result<(Vec<u8>, u32, u32), PreprocessError> {
    crate::resize::check_rgb8(src, width, height)?;
    let (w, h) = if width > max_width.max(1) {
        let h = (u64::from(height) * u64::from(max_width) / u64::from(width)).max(1);
        (max_width, u32::try_from(h).unwrap_or(1))
    } else {
        (width, height)
    };
    let scaled;
    let pixels = if (w, h) == (width, height) {
        src
    } else {
        let mut out = Vec::new();
        crate::resize::Resize::new(w, h)?.run(src, width, height, &mut out)?;
        scaled = out;
        scaled.as_slice()
    };
    let side = |v: u32| {
        u16::try_from(v)
            .map_err(|_| PreprocessError::JpegEncode(format!("{w}x{h} is too large for JPEG")))
    };
    let mut file = Vec::with_capacity(pixels.len() / 10);
    jpeg_encoder::Encoder::new(&mut file, quality.clamp(1, 100))
        .encode(pixels, side(w)?, side(h)?, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| PreprocessError::JpegEncode(e.to_string()))?;
    Ok((file, w, h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

    /// A smooth image (JPEG's best case), so a high-quality encode decodes close to it.
    fn smooth(w: u32, h: u32) -> Vec<u8> {
        let mut v = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                v.push((x * 255 / w.max(2)) as u8);
                v.push((y * 255 / h.max(2)) as u8);
                v.push((128 + (x as i32 - y as i32) / 4).clamp(0, 255) as u8);
            }
        }
        v
    }

    fn encode(
        pixels: &[u8],
        w: u16,
        h: u16,
        color: ColorType,
        quality: u8,
        sampling: SamplingFactor,
        progressive: bool,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = Encoder::new(&mut out, quality);
        enc.set_sampling_factor(sampling);
        enc.set_progressive(progressive);
        enc.encode(pixels, w, h, color).unwrap();
        out
    }

    fn max_diff(a: &[u8], b: &[u8]) -> u8 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn decodes_what_an_independent_encoder_wrote() {
        let opts = JpegOptions::default();
        for (w, h, sampling, progressive, bound) in [
            // Measured: 3 (4:4:4, quality 100: rounding in both codecs), 9 and 6 (4:2:0, where
            // the chroma's 2x2 averaging and upsampling lose detail on top).
            (64u16, 48u16, SamplingFactor::R_4_4_4, false, 4u8),
            (33, 17, SamplingFactor::R_4_2_0, false, 12),
            (80, 41, SamplingFactor::R_4_2_0, true, 12),
        ] {
            let src = smooth(u32::from(w), u32::from(h));
            let file = encode(&src, w, h, ColorType::Rgb, 100, sampling, progressive);
            assert_eq!(
                dimensions(&file, &opts).unwrap(),
                (u32::from(w), u32::from(h))
            );
            let mut out = vec![7; 5];
            let size = decode_rgb8(&file, &opts, &mut out).unwrap();
            assert_eq!(size, (u32::from(w), u32::from(h)));
            let diff = max_diff(&out, &src);
            eprintln!("{w}x{h} {sampling:?} progressive={progressive}: max abs diff {diff}");
            assert!(diff <= bound, "{w}x{h}: max abs diff {diff} > {bound}");
        }
    }

    #[test]
    fn greyscale_becomes_grey_rgb() {
        let grey: Vec<u8> = (0..32 * 16).map(|i| (i % 251) as u8).collect();
        let file = encode(
            &grey,
            32,
            16,
            ColorType::Luma,
            100,
            SamplingFactor::R_4_4_4,
            false,
        );
        let mut out = Vec::new();
        decode_rgb8(&file, &JpegOptions::default(), &mut out).unwrap();
        assert_eq!(out.len(), 32 * 16 * 3);
        for (px, &g) in out.chunks_exact(3).zip(&grey) {
            assert!(px[0] == px[1] && px[1] == px[2], "{px:?}");
            assert!(px[0].abs_diff(g) <= 3, "{px:?} vs {g}");
        }
    }

    #[test]
    fn size_cap_is_checked_from_the_header() {
        let file = encode(
            &smooth(64, 64),
            64,
            64,
            ColorType::Rgb,
            90,
            SamplingFactor::R_4_2_0,
            false,
        );
        let small = JpegOptions {
            max_pixels: 64 * 63,
            ..JpegOptions::default()
        };
        let err = decode_rgb8(&file, &small, &mut Vec::new()).unwrap_err();
        assert!(matches!(
            err,
            PreprocessError::TooLarge {
                width: 64,
                height: 64,
                ..
            }
        ));
        assert!(err.is_input());
        assert!(err.to_string().contains("max_pixels"), "{err}");

        // A header claiming 16000 x 16000 over 2 KB of data: refused before any pixel buffer
        // exists.
        let huge = claiming(&file, 16000, 16000);
        let mut out = Vec::new();
        let err = decode_rgb8(&huge, &JpegOptions::default(), &mut out).unwrap_err();
        assert!(
            matches!(err, PreprocessError::TooLarge { width: 16000, .. }),
            "{err}"
        );
        assert_eq!(out.capacity(), 0);
    }

    /// A real file with its baseline frame header rewritten to claim `w` x `h`.
    fn claiming(file: &[u8], w: u16, h: u16) -> Vec<u8> {
        let mut forged = file.to_vec();
        let sof = forged
            .windows(2)
            .position(|m| m == [0xFF, 0xC0])
            .expect("baseline SOF0");
        forged[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
        forged[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
        forged
    }

    #[test]
    fn a_short_file_claiming_a_large_image_is_refused_before_allocating() {
        let file = encode(
            &smooth(64, 64),
            64,
            64,
            ColorType::Rgb,
            90,
            SamplingFactor::R_4_2_0,
            false,
        );
        // 8K UHD is within the default `max_pixels`, but a couple of KB cannot hold it.
        let forged = claiming(&file, 7680, 4320);
        assert!(forged.len() < 4096, "{}", forged.len());
        for strict in [true, false] {
            let opts = JpegOptions {
                strict,
                ..JpegOptions::default()
            };
            let mut out = Vec::new();
            let err = decode_rgb8(&forged, &opts, &mut out).unwrap_err();
            assert!(err.is_input(), "{err}");
            assert!(
                err.to_string().contains("cannot hold a 7680x4320 JPEG"),
                "{err}"
            );
            assert_eq!(
                out.capacity(),
                0,
                "nothing allocated for the claimed pixels"
            );
        }
        // The bound is far below what real files take: the genuine file passes it easily.
        assert!(min_file_len(64, 64) * 20 < file.len() as u64);
    }

    #[test]
    fn a_header_that_is_not_the_frame_size_is_refused_before_allocating() {
        let file = encode(
            &smooth(64, 48),
            64,
            48,
            ColorType::Rgb,
            90,
            SamplingFactor::R_4_2_0,
            false,
        );
        let mut out = Vec::new();
        decode_rgb8_sized(&file, &JpegOptions::default(), (64, 48), &mut out).unwrap();
        assert_eq!(out.len(), 64 * 48 * 3);
        let mut out = Vec::new();
        let err =
            decode_rgb8_sized(&file, &JpegOptions::default(), (32, 24), &mut out).unwrap_err();
        assert!(err.is_input(), "{err}");
        assert!(
            err.to_string()
                .contains("the frame says 32x24 but the JPEG is 64x48"),
            "{err}"
        );
        assert_eq!(out.capacity(), 0);
    }

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let file = encode(
            &smooth(48, 40),
            48,
            40,
            ColorType::Rgb,
            85,
            SamplingFactor::R_4_2_0,
            false,
        );
        let opts = JpegOptions::default();
        let mut out = Vec::new();
        for garbage in [
            &b""[..],
            b"\xFF\xD8",
            b"not a jpeg at all",
            &file[..file.len() / 2],
        ] {
            let err = decode_rgb8(garbage, &opts, &mut out).unwrap_err();
            assert!(err.is_input(), "{err}");
        }
        // Truncated files decode (partly grey) when not strict.
        let lenient = JpegOptions {
            strict: false,
            ..opts
        };
        decode_rgb8(&file[..file.len() * 3 / 4], &lenient, &mut out).unwrap();
        // Every single-byte corruption, everywhere in the file: an error or an image, never a
        // panic.
        let mut errors = 0;
        for i in 0..file.len() {
            for flip in [0xFFu8, 0x10] {
                let mut bad = file.clone();
                bad[i] ^= flip;
                for o in [opts, lenient] {
                    if decode_rgb8(&bad, &o, &mut out).is_err() {
                        errors += 1;
                    }
                }
            }
        }
        assert!(errors > 0);
    }

    #[test]
    fn thumbnails_scale_down_keeping_the_aspect_ratio_and_decode_back() {
        let (w, h) = (1280u32, 720u32);
        let src: Vec<u8> = (0..w * h * 3).map(|i| (i % 251) as u8).collect();
        let (file, tw, th) = thumbnail(&src, w, h, 640, 70).expect("encodes");
        assert_eq!((tw, th), (640, 360));
        assert_eq!(
            dimensions(&file, &JpegOptions::default()).expect("a JPEG"),
            (640, 360)
        );
        let (_, sw, sh) = thumbnail(&src[..320 * 180 * 3], 320, 180, 640, 70).expect("encodes");
        assert_eq!((sw, sh), (320, 180), "never scaled up");
        assert!(
            thumbnail(&src[..10], w, h, 640, 70).is_err(),
            "a short buffer is refused"
        );
    }
}
