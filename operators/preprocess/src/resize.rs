//! Plain (aspect-changing) bilinear resize of packed RGB8 frames, to an RGB8 image or straight to
//! a normalised CHW tensor. The `resize` operator's kernel.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::{Normalize, PreprocessError, Transform, append_chw, check_size};

/// Reusable resize state for one output size: the resizer's scratch buffers (and the RGB8
/// scratch of the tensor path) survive between frames.
pub struct Resize {
    dst_w: u32,
    dst_h: u32,
    resizer: Resizer,
    options: ResizeOptions,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Resize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resize")
            .field("dst_w", &self.dst_w)
            .field("dst_h", &self.dst_h)
            .field("cpu_extensions", &self.resizer.cpu_extensions())
            .finish()
    }
}

impl Resize {
    /// Resizes to `dst_w x dst_h`, whatever the source's aspect ratio.
    pub fn new(dst_w: u32, dst_h: u32) -> Result<Self, PreprocessError> {
        check_size("destination", dst_w, dst_h)?;
        Ok(Self {
            dst_w,
            dst_h,
            resizer: Resizer::new(),
            // The same filter as the letterbox, so both operators agree on a frame of the same
            // aspect ratio.
            options: ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
            scratch: Vec::new(),
        })
    }

    /// The output size, `(width, height)`.
    pub fn size(&self) -> (u32, u32) {
        (self.dst_w, self.dst_h)
    }

    /// Which SIMD kernels fast_image_resize picked (`Simd128` inside Wasm).
    pub fn cpu_extensions(&self) -> fast_image_resize::CpuExtensions {
        self.resizer.cpu_extensions()
    }

    /// Shape of the tensors [`Resize::run_tensor`] produces: `[1, 3, dst_h, dst_w]`.
    pub fn tensor_shape(&self) -> [usize; 4] {
        [1, 3, self.dst_h as usize, self.dst_w as usize]
    }

    /// Maps the resized image's coordinates back to a `width x height` source.
    pub fn transform(&self, width: u32, height: u32) -> Transform {
        Transform {
            scale_x: self.dst_w as f32 / width as f32,
            scale_y: self.dst_h as f32 / height as f32,
            offset_x: 0.0,
            offset_y: 0.0,
        }
    }

    /// Resizes packed RGB8 `src` (`width x height`) into `out` (replaced, `dst_w * dst_h * 3`
    /// bytes).
    pub fn run(
        &mut self,
        src: &[u8],
        width: u32,
        height: u32,
        out: &mut Vec<u8>,
    ) -> Result<Transform, PreprocessError> {
        check_rgb8(src, width, height)?;
        let len = self.dst_w as usize * self.dst_h as usize * 3;
        out.clear();
        out.resize(len, 0);
        resize_rgb8(
            &mut self.resizer,
            &self.options,
            src,
            width,
            height,
            out,
            self.dst_w,
            self.dst_h,
        )?;
        Ok(self.transform(width, height))
    }

    /// Resizes packed RGB8 `src` and writes it normalised as a CHW tensor (see
    /// [`Resize::tensor_shape`]) into `out`, replacing its contents. [`Normalize::RAW`] keeps the
    /// 0..255 values.
    pub fn run_tensor(
        &mut self,
        src: &[u8],
        width: u32,
        height: u32,
        norm: &Normalize,
        out: &mut Vec<f32>,
    ) -> Result<Transform, PreprocessError> {
        check_rgb8(src, width, height)?;
        let len = self.dst_w as usize * self.dst_h as usize * 3;
        // Only grows; the resize overwrites every byte it is given.
        if self.scratch.len() < len {
            self.scratch.resize(len, 0);
        }
        let resized = &mut self.scratch[..len];
        resize_rgb8(
            &mut self.resizer,
            &self.options,
            src,
            width,
            height,
            resized,
            self.dst_w,
            self.dst_h,
        )?;
        let (w, h) = (self.dst_w as usize, self.dst_h as usize);
        out.clear();
        append_chw(resized, w, h, w, h, norm, out);
        Ok(self.transform(width, height))
    }
}

/// Checks that `src` is a whole packed RGB8 `width x height` frame.
pub(crate) fn check_rgb8(src: &[u8], width: u32, height: u32) -> Result<(), PreprocessError> {
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
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn resize_rgb8(
    resizer: &mut Resizer,
    options: &ResizeOptions,
    src: &[u8],
    width: u32,
    height: u32,
    dst: &mut [u8],
    dst_w: u32,
    dst_h: u32,
) -> Result<(), PreprocessError> {
    let src_image = ImageRef::new(width, height, src, PixelType::U8x3)
        .map_err(|e| PreprocessError::Resize(e.to_string()))?;
    let mut dst_image = Image::from_slice_u8(dst_w, dst_h, dst, PixelType::U8x3)
        .map_err(|e| PreprocessError::Resize(e.to_string()))?;
    resizer
        .resize(&src_image, &mut dst_image, options)
        .map_err(|e| PreprocessError::Resize(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Letterbox, fit};

    fn pattern(w: u32, h: u32) -> Vec<u8> {
        (0..w * h * 3).map(|i| ((i * 7) ^ (i / 97)) as u8).collect()
    }

    #[test]
    fn same_aspect_ratio_agrees_with_the_letterbox() {
        // 1280x720 -> 640x360 is the letterbox's resized region for a 640x640 output, so the
        // two operators must produce the same pixels there.
        let src = pattern(1280, 720);
        let mut r = Resize::new(640, 360).unwrap();
        let mut tensor = Vec::new();
        let norm = Normalize::new([0.5; 3], [0.5; 3]).unwrap();
        let t = r.run_tensor(&src, 1280, 720, &norm, &mut tensor).unwrap();
        assert_eq!(t.scale_x, 0.5);
        assert_eq!(t.scale_y, 0.5);
        let mut lb = Vec::new();
        Letterbox::new(640, 640, norm)
            .unwrap()
            .run(&src, 1280, 720, &mut lb)
            .unwrap();
        assert_eq!(fit(1280, 720, 640, 640).new_h, 360);
        for c in 0..3 {
            let ours = &tensor[c * 640 * 360..(c + 1) * 640 * 360];
            let theirs = &lb[c * 640 * 640..c * 640 * 640 + 640 * 360];
            assert_eq!(ours, theirs, "channel {c}");
        }
    }

    #[test]
    fn image_and_raw_tensor_hold_the_same_values() {
        let src = pattern(97, 61);
        let mut r = Resize::new(40, 50).unwrap();
        let mut image = Vec::new();
        let t = r.run(&src, 97, 61, &mut image).unwrap();
        assert_eq!(image.len(), 40 * 50 * 3);
        assert_eq!(t.to_source(40.0, 50.0), (97.0, 61.0));
        let mut tensor = Vec::new();
        r.run_tensor(&src, 97, 61, &Normalize::RAW, &mut tensor)
            .unwrap();
        assert_eq!(r.tensor_shape(), [1, 3, 50, 40]);
        for (i, px) in image.chunks_exact(3).enumerate() {
            for c in 0..3 {
                assert_eq!(tensor[c * 2000 + i], f32::from(px[c]));
            }
        }
    }

    #[test]
    fn flat_image_stays_flat_and_upscaling_works() {
        let src: Vec<u8> = [10u8, 128, 250].repeat(5 * 3);
        let mut out = Vec::new();
        Resize::new(17, 9)
            .unwrap()
            .run(&src, 5, 3, &mut out)
            .unwrap();
        assert!(out.chunks_exact(3).all(|p| p == [10, 128, 250]));
    }

    #[test]
    fn rejects_wrong_buffer_and_sizes() {
        let mut r = Resize::new(8, 8).unwrap();
        let err = r.run(&[0; 11], 2, 2, &mut Vec::new()).unwrap_err();
        assert!(err.is_input());
        assert!(
            err.to_string().contains("2x2 RGB8 frame needs 12 bytes"),
            "{err}"
        );
        assert!(Resize::new(0, 8).is_err());
        assert!(!Resize::new(0, 8).unwrap_err().is_input());
    }
}
