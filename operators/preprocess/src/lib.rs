//! Image kernels of the built-in operators: letterbox (here), [`resize`], [`normalize`],
//! [`color`] (NV12/I420 to RGB), [`crop`], and [`jpeg`] decoding (and the small JPEG previews
//! that people look at).
//!
//! Pure Rust with no Wasm dependencies: the same code runs natively (tests, benchmarks, the
//! reference the Wasm host is checked against) and inside the operator components, which only
//! add argument checking and the copying in and out of the guest.

pub mod color;
pub mod crop;
pub mod jpeg;
pub mod normalize;
pub mod resize;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

/// Largest accepted side of a source or destination image. Keeps every size computation far from
/// `usize` overflow on 32-bit Wasm and rejects absurd configurations early.
pub const MAX_SIDE: u32 = 16_384;

/// Maps coordinates of the output tensor back to the source frame: `src = (dst - offset) / scale`,
/// per axis. The one definition: the host's items (`panoptes_contracts::tensor::Transform`) and
/// the kernels here share it; the WIT `transform` record is its wire form.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    pub scale_x: f32,
    pub scale_y: f32,
    pub offset_x: f32,
    pub offset_y: f32,
}

impl Transform {
    pub const IDENTITY: Transform = Transform {
        scale_x: 1.0,
        scale_y: 1.0,
        offset_x: 0.0,
        offset_y: 0.0,
    };

    /// Maps a point of the output tensor to source-frame pixel coordinates.
    pub fn to_source(&self, x: f32, y: f32) -> (f32, f32) {
        (
            (x - self.offset_x) / self.scale_x,
            (y - self.offset_y) / self.scale_y,
        )
    }
}

/// Why a frame or a configuration was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PreprocessError {
    #[error(
        "pixel buffer has {actual} bytes, but a {width}x{height} {format} frame needs {expected} bytes"
    )]
    BufferSize {
        format: &'static str,
        width: u32,
        height: u32,
        expected: usize,
        actual: usize,
    },
    #[error("{what} size {width}x{height} is invalid: each side must be between 1 and {MAX_SIDE}")]
    Size {
        what: &'static str,
        width: u32,
        height: u32,
    },
    #[error("normalisation {what}[{channel}] = {value} is invalid: {reason}")]
    Normalization {
        what: &'static str,
        channel: usize,
        value: f32,
        reason: &'static str,
    },
    #[error("resize failed: {0}")]
    Resize(String),
    #[error("tensor of shape {shape:?} with {len} values is not usable: {reason}")]
    TensorShape {
        shape: Vec<usize>,
        len: usize,
        reason: &'static str,
    },
    #[error("corrupt or unsupported JPEG: {0}")]
    Jpeg(String),
    #[error("cannot encode JPEG: {0}")]
    JpegEncode(String),
    #[error(
        "image of {width}x{height} pixels is over the limit of {max_pixels} pixels; raise `max_pixels` if such images are expected"
    )]
    TooLarge {
        width: u64,
        height: u64,
        max_pixels: u64,
    },
}

impl PreprocessError {
    /// Whether the error is about the frame or tensor handed in (as opposed to the operator's
    /// configuration or an internal failure): operators report these as invalid input.
    pub fn is_input(&self) -> bool {
        match self {
            Self::BufferSize { .. }
            | Self::TensorShape { .. }
            | Self::Jpeg(_)
            | Self::TooLarge { .. } => true,
            Self::Size { what, .. } => *what == "source",
            Self::Normalization { .. } | Self::Resize(_) | Self::JpegEncode(_) => false,
        }
    }
}

/// Per-channel normalisation `(v / 255 - mean[c]) / std[c]`, evaluated as `v * scale[c] + bias[c]`
/// with `scale = 1 / (255 std)` and `bias = -mean / std` precomputed in f32.
///
/// The multiply-add form is what vectorises well; it differs from the textbook formula by at most a
/// few ulp. There is deliberately no fused multiply-add so native and Wasm builds agree bit for bit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    scale: [f32; 3],
    bias: [f32; 3],
}

impl Normalize {
    /// Validates `mean` and `std` (finite; `std` non-zero) and precomputes the affine form.
    pub fn new(mean: [f32; 3], std: [f32; 3]) -> Result<Self, PreprocessError> {
        let mut scale = [0.0; 3];
        let mut bias = [0.0; 3];
        for c in 0..3 {
            if !mean[c].is_finite() {
                return Err(PreprocessError::Normalization {
                    what: "mean",
                    channel: c,
                    value: mean[c],
                    reason: "must be finite",
                });
            }
            if !std[c].is_finite() || std[c] == 0.0 {
                return Err(PreprocessError::Normalization {
                    what: "std",
                    channel: c,
                    value: std[c],
                    reason: "must be finite and non-zero",
                });
            }
            scale[c] = 1.0 / (255.0 * std[c]);
            bias[c] = -mean[c] / std[c];
            // A tiny std can overflow the precomputed factors even though the inputs were finite.
            if !scale[c].is_finite() || !bias[c].is_finite() {
                return Err(PreprocessError::Normalization {
                    what: "std",
                    channel: c,
                    value: std[c],
                    reason: "is too small (normalised values overflow f32)",
                });
            }
        }
        Ok(Self { scale, bias })
    }

    /// The normalised value of channel `c` (0 = R, 1 = G, 2 = B) for the 8-bit value `v`.
    ///
    /// This is the single definition the bulk loops reproduce exactly.
    ///
    /// # Panics
    /// If `c > 2`.
    #[inline(always)]
    pub fn apply(&self, c: usize, v: u8) -> f32 {
        f32::from(v) * self.scale[c] + self.bias[c]
    }

    /// The value padding pixels (black, 0) normalise to: `-mean / std`.
    pub fn padding(&self, c: usize) -> f32 {
        self.apply(c, 0)
    }

    /// No normalisation: values stay in 0..255 (`scale` exactly 1, `bias` exactly 0, so the
    /// result is the 8-bit value converted to f32, bit for bit).
    pub const RAW: Normalize = Normalize {
        scale: [1.0; 3],
        bias: [0.0; 3],
    };

    /// The same normalisation for a value already in f32 (0..255 scale): `v * scale + bias`.
    #[inline(always)]
    pub fn apply_f32(&self, c: usize, v: f32) -> f32 {
        v * self.scale[c] + self.bias[c]
    }
}

/// The resized region inside the destination: `new_w x new_h` at the top-left corner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    pub new_w: u32,
    pub new_h: u32,
}

/// Where a `width x height` image lands when letterboxed into `dst_w x dst_h`: scaled by
/// `min(dst_w / width, dst_h / height)`, rounded to whole pixels, at least one pixel per side.
pub fn fit(width: u32, height: u32, dst_w: u32, dst_h: u32) -> Fit {
    let scale = (f64::from(dst_w) / f64::from(width)).min(f64::from(dst_h) / f64::from(height));
    // The `as` casts saturate, and the clamp keeps the result inside the destination; the
    // limiting axis rounds to exactly dst_w / dst_h.
    let side = |src: u32, dst: u32| ((f64::from(src) * scale).round() as u32).clamp(1, dst);
    Fit {
        new_w: side(width, dst_w),
        new_h: side(height, dst_h),
    }
}

pub(crate) fn check_size(
    what: &'static str,
    width: u32,
    height: u32,
) -> Result<(), PreprocessError> {
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(PreprocessError::Size {
            what,
            width,
            height,
        });
    }
    Ok(())
}

/// Reusable letterbox + normalise state for one output geometry: the resizer and its scratch
/// buffers survive between frames, so the per-frame path allocates nothing once warmed up (apart
/// from growing `out`).
pub struct Letterbox {
    dst_w: u32,
    dst_h: u32,
    norm: Normalize,
    /// Padding per channel, normalised (default: black).
    pad: [f32; 3],
    /// Emit B, G, R planes instead of R, G, B (models trained on OpenCV images).
    bgr: bool,
    resizer: Resizer,
    options: ResizeOptions,
    resized: Vec<u8>,
    /// Shaped to the frame: the output is the resized frame padded only up to a multiple of
    /// this (see [`Letterbox::shaped_to_frame`]).
    multiple: Option<u32>,
    /// The output size of the last run (`dst_w x dst_h` until then).
    out_w: u32,
    out_h: u32,
}

impl std::fmt::Debug for Letterbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Letterbox")
            .field("dst_w", &self.dst_w)
            .field("dst_h", &self.dst_h)
            .field("norm", &self.norm)
            .field("multiple", &self.multiple)
            .field("cpu_extensions", &self.resizer.cpu_extensions())
            .field("scratch_bytes", &self.resized.capacity())
            .finish()
    }
}

impl Letterbox {
    /// Output tensors will be `[1, 3, dst_h, dst_w]`, normalised with `norm`.
    pub fn new(dst_w: u32, dst_h: u32, norm: Normalize) -> Result<Self, PreprocessError> {
        check_size("destination", dst_w, dst_h)?;
        Ok(Self {
            dst_w,
            dst_h,
            pad: [norm.padding(0), norm.padding(1), norm.padding(2)],
            bgr: false,
            norm,
            resizer: Resizer::new(),
            options: ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
            resized: Vec::new(),
            multiple: None,
            out_w: dst_w,
            out_h: dst_h,
        })
    }

    /// Shapes the output to the frame (PaddleOCR's and RapidOCR's detector resize): the frame
    /// keeps its aspect ratio and fits within `dst_w x dst_h` as before, but the padding only
    /// rounds each side up to a multiple of `multiple`, so a 16:9 frame under a 640 limit
    /// becomes 640x384 instead of 640x640. For models with dynamic height and width; each
    /// frame aspect gives one output shape, and frames batch with those of the same shape.
    /// `dst_w` and `dst_h` must be multiples of `multiple`.
    pub fn shaped_to_frame(mut self, multiple: u32) -> Result<Self, PreprocessError> {
        if multiple == 0
            || !self.dst_w.is_multiple_of(multiple)
            || !self.dst_h.is_multiple_of(multiple)
        {
            return Err(PreprocessError::Resize(format!(
                "a frame-shaped output needs width and height ({}x{}) that are multiples of {multiple}",
                self.dst_w, self.dst_h
            )));
        }
        self.multiple = Some(multiple);
        Ok(self)
    }

    /// Pads with this 8-bit grey level instead of black (YOLO models are trained with 114).
    pub fn with_pad_value(mut self, value: u8) -> Self {
        self.pad = [0, 1, 2].map(|c| self.norm.apply(c, value));
        self
    }

    /// Emits the planes in B, G, R order.
    pub fn with_bgr(mut self, bgr: bool) -> Self {
        self.bgr = bgr;
        self
    }

    /// Shape of the tensor [`Letterbox::run`] produced last: `[1, 3, dst_h, dst_w]`, or when
    /// shaped to the frame, that frame's size (before any run: the limits).
    pub fn output_shape(&self) -> [usize; 4] {
        [1, 3, self.out_h as usize, self.out_w as usize]
    }

    /// Letterboxes packed RGB8 `src` (`width x height`) and writes the normalised CHW tensor
    /// (see [`Letterbox::output_shape`]) into `out`, replacing its contents.
    ///
    /// The image is resized with bilinear convolution keeping its aspect ratio, anchored at the
    /// top-left; the rest is black padding (which normalises to `-mean / std`).
    pub fn run(
        &mut self,
        src: &[u8],
        width: u32,
        height: u32,
        out: &mut Vec<f32>,
    ) -> Result<Transform, PreprocessError> {
        check_size("source", width, height)?;
        // Sides are at most MAX_SIDE, so this product fits in a 32-bit usize.
        let expected = width as usize * height as usize * 3;
        if src.len() != expected {
            return Err(PreprocessError::BufferSize {
                format: "RGB8",
                width,
                height,
                expected,
                actual: src.len(),
            });
        }

        let Fit { new_w, new_h } = fit(width, height, self.dst_w, self.dst_h);
        (self.out_w, self.out_h) = match self.multiple {
            Some(m) => (new_w.div_ceil(m) * m, new_h.div_ceil(m) * m),
            None => (self.dst_w, self.dst_h),
        };
        let resized_len = new_w as usize * new_h as usize * 3;
        // Only grows; stale contents are fully overwritten by the resize.
        if self.resized.len() < resized_len {
            self.resized.resize(resized_len, 0);
        }
        let resized = &mut self.resized[..resized_len];
        {
            let src_image = ImageRef::new(width, height, src, PixelType::U8x3)
                .map_err(|e| PreprocessError::Resize(e.to_string()))?;
            let mut dst_image = Image::from_slice_u8(new_w, new_h, resized, PixelType::U8x3)
                .map_err(|e| PreprocessError::Resize(e.to_string()))?;
            self.resizer
                .resize(&src_image, &mut dst_image, &self.options)
                .map_err(|e| PreprocessError::Resize(e.to_string()))?;
        }

        out.clear();
        append_chw_padded(
            resized,
            new_w as usize,
            new_h as usize,
            self.out_w as usize,
            self.out_h as usize,
            &self.norm,
            self.pad,
            out,
        );
        if self.bgr {
            swap_red_blue_planes(out);
        }

        Ok(Transform {
            scale_x: new_w as f32 / width as f32,
            scale_y: new_h as f32 / height as f32,
            offset_x: 0.0,
            offset_y: 0.0,
        })
    }
}

/// Appends `resized` (HWC, `new_w x new_h`, `new_w <= dst_w`, `new_h <= dst_h`) to `out` as CHW
/// `3 x dst_h x dst_w`, normalised, padding the right and bottom. `out` grows with `extend` so no
/// element is written twice; appending (rather than replacing) lets crops fill one batch tensor.
pub(crate) fn append_chw(
    resized: &[u8],
    new_w: usize,
    new_h: usize,
    dst_w: usize,
    dst_h: usize,
    norm: &Normalize,
    out: &mut Vec<f32>,
) {
    let pad = [norm.padding(0), norm.padding(1), norm.padding(2)];
    append_chw_padded(resized, new_w, new_h, dst_w, dst_h, norm, pad, out);
}

/// Turns CHW planes R, G, B (one image) into B, G, R.
pub fn swap_red_blue_planes(chw: &mut [f32]) {
    let plane = chw.len() / 3;
    let (red, rest) = chw.split_at_mut(plane);
    red.swap_with_slice(&mut rest[plane..2 * plane]);
}

/// [`append_chw`] with the padding value per channel given (in normalised units).
#[allow(clippy::too_many_arguments)]
pub(crate) fn append_chw_padded(
    resized: &[u8],
    new_w: usize,
    new_h: usize,
    dst_w: usize,
    dst_h: usize,
    norm: &Normalize,
    pad: [f32; 3],
    out: &mut Vec<f32>,
) {
    debug_assert!(new_w <= dst_w && new_h <= dst_h && resized.len() >= new_w * new_h * 3);
    out.reserve(3 * dst_h * dst_w);
    // `as_chunks` yields `[u8; 3]` pixels, so the inner loop has no bounds checks and LLVM can
    // vectorise the strided load, the widening and the multiply-add.
    let (pixels, _) = resized.as_chunks::<3>();
    for c in 0..3 {
        let scale = norm.scale[c];
        let bias = norm.bias[c];
        let pad = pad[c];
        for row in pixels.chunks_exact(new_w).take(new_h) {
            out.extend(row.iter().map(|px| f32::from(px[c]) * scale + bias));
            out.extend(std::iter::repeat_n(pad, dst_w - new_w));
        }
        out.extend(std::iter::repeat_n(pad, (dst_h - new_h) * dst_w));
    }
}

/// One-shot form of [`Letterbox::run`]; prefer a long-lived [`Letterbox`] per stream so scratch
/// buffers are reused.
#[allow(clippy::too_many_arguments)]
pub fn letterbox_normalize(
    src: &[u8],
    width: u32,
    height: u32,
    dst_w: u32,
    dst_h: u32,
    mean: [f32; 3],
    std: [f32; 3],
    out: &mut Vec<f32>,
) -> Result<Transform, PreprocessError> {
    let norm = Normalize::new(mean, std)?;
    Letterbox::new(dst_w, dst_h, norm)?.run(src, width, height, out)
}

#[cfg(test)]
mod tests;
