//! YUV 4:2:0 (NV12, I420) to packed RGB8, BT.601 or BT.709, limited or full range. The
//! `colorconvert` operator's kernel.
//!
//! Chroma is upsampled by repetition (each chroma sample covers a 2x2 block; odd sizes round the
//! chroma planes up), the way libyuv and most decoders' fast paths do it. The maths is f32:
//! `rgb = y * y_scale + y_offset + chroma_term`, rounded to nearest and saturated to 0..255.
//! Each chroma row's three terms are computed once, upsampled into per-pixel rows, and shared by
//! the two luma rows that use them, so the per-pixel loop is three loads, four multiply-adds and
//! three rounding conversions over contiguous slices, which LLVM vectorises on SSE2 and simd128
//! alike.

use crate::{MAX_SIDE, PreprocessError};

/// The YUV matrix (the luma weights `Kr`, `Kb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matrix {
    /// ITU-R BT.601 (SD video, JPEG): `Kr = 0.299`, `Kb = 0.114`.
    Bt601,
    /// ITU-R BT.709 (HD video): `Kr = 0.2126`, `Kb = 0.0722`.
    Bt709,
}

/// The code range of the YUV values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// "TV" range: luma 16..235, chroma 16..240 (what cameras and video codecs produce).
    Limited,
    /// "PC" range: 0..255 for both (JPEG).
    Full,
}

/// Where the chroma samples are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Luma plane, then one interleaved U/V plane.
    Nv12,
    /// Luma plane, then the U plane, then the V plane.
    I420,
}

impl Layout {
    fn name(self) -> &'static str {
        match self {
            Layout::Nv12 => "NV12",
            Layout::I420 => "I420",
        }
    }
}

/// Bytes of a `width x height` 4:2:0 frame: the luma plane plus two chroma planes of
/// `ceil(width / 2) x ceil(height / 2)`.
pub fn yuv420_len(width: u32, height: u32) -> usize {
    let (w, h) = (width as usize, height as usize);
    w * h + 2 * w.div_ceil(2) * h.div_ceil(2)
}

/// A YUV 4:2:0 to RGB8 converter for one matrix and range. Keeps its per-row scratch between
/// frames.
#[derive(Debug, Clone)]
pub struct YuvToRgb {
    /// Luma: `y * y_scale + y_offset`.
    y_scale: f32,
    y_offset: f32,
    /// Chroma: `c' = (c - 128) * c_scale`.
    c_scale: f32,
    /// `R = Y' + r_v V'`, `G = Y' - g_u U' - g_v V'`, `B = Y' + b_u U'`.
    r_v: f32,
    g_u: f32,
    g_v: f32,
    b_u: f32,
    /// Per-pixel chroma terms of the current chroma row: R, G and B, `width` each.
    terms: Vec<f32>,
}

impl YuvToRgb {
    pub fn new(matrix: Matrix, range: Range) -> Self {
        let (kr, kb) = match matrix {
            Matrix::Bt601 => (0.299f64, 0.114f64),
            Matrix::Bt709 => (0.2126, 0.0722),
        };
        let kg = 1.0 - kr - kb;
        let (y_scale, y_black, c_scale) = match range {
            Range::Limited => (255.0 / 219.0, 16.0, 255.0 / 224.0),
            Range::Full => (1.0, 0.0, 1.0),
        };
        Self {
            y_scale: y_scale as f32,
            y_offset: (-y_black * y_scale) as f32,
            c_scale: c_scale as f32,
            r_v: (2.0 * (1.0 - kr)) as f32,
            g_u: (2.0 * kb * (1.0 - kb) / kg) as f32,
            g_v: (2.0 * kr * (1.0 - kr) / kg) as f32,
            b_u: (2.0 * (1.0 - kb)) as f32,
            terms: Vec::new(),
        }
    }

    /// Converts a `width x height` frame in `layout` to packed RGB8 in `out` (replaced,
    /// `width * height * 3` bytes).
    pub fn convert(
        &mut self,
        layout: Layout,
        src: &[u8],
        width: u32,
        height: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), PreprocessError> {
        if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
            return Err(PreprocessError::Size {
                what: "source",
                width,
                height,
            });
        }
        let expected = yuv420_len(width, height);
        if src.len() != expected {
            return Err(PreprocessError::BufferSize {
                format: layout.name(),
                width,
                height,
                expected,
                actual: src.len(),
            });
        }
        let (w, h) = (width as usize, height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let (luma, chroma) = src.split_at(w * h);
        out.clear();
        out.resize(w * h * 3, 0);
        let mut terms = std::mem::take(&mut self.terms);
        terms.resize(3 * w, 0.0);
        let (r_terms, rest) = terms.split_at_mut(w);
        let (g_terms, b_terms) = rest.split_at_mut(w);

        // Two luma rows (one for an odd last row) per chroma row.
        let luma_pairs = luma.chunks(2 * w);
        let out_pairs = out.chunks_mut(2 * w * 3);
        for (cy, (luma_rows, out_rows)) in luma_pairs.zip(out_pairs).enumerate().take(ch) {
            match layout {
                Layout::Nv12 => {
                    let row = &chroma[cy * 2 * cw..(cy + 1) * 2 * cw];
                    let (uv, _) = row.as_chunks::<2>();
                    self.chroma_terms(uv.iter().map(|&[u, v]| (u, v)), r_terms, g_terms, b_terms);
                }
                Layout::I420 => {
                    let (u_plane, v_plane) = chroma.split_at(cw * ch);
                    let u = &u_plane[cy * cw..(cy + 1) * cw];
                    let v = &v_plane[cy * cw..(cy + 1) * cw];
                    self.chroma_terms(
                        u.iter().copied().zip(v.iter().copied()),
                        r_terms,
                        g_terms,
                        b_terms,
                    );
                }
            }
            for (y_row, rgb_row) in luma_rows
                .chunks_exact(w)
                .zip(out_rows.chunks_exact_mut(w * 3))
            {
                self.luma_row(y_row, r_terms, g_terms, b_terms, rgb_row);
            }
        }
        self.terms = terms;
        Ok(())
    }

    /// Computes one chroma row's R, G and B terms and repeats each for the two pixels it
    /// covers (one for the last pixel of an odd width). Pairs of pixels are written as `[f32; 2]`
    /// chunks so the loop has no bounds checks and vectorises.
    fn chroma_terms(
        &self,
        mut uv: impl Iterator<Item = (u8, u8)>,
        r: &mut [f32],
        g: &mut [f32],
        b: &mut [f32],
    ) {
        let (r2, r_last) = r.as_chunks_mut::<2>();
        let (g2, g_last) = g.as_chunks_mut::<2>();
        let (b2, b_last) = b.as_chunks_mut::<2>();
        let pairs = r2.iter_mut().zip(g2.iter_mut()).zip(b2.iter_mut());
        for (((r, g), b), (u, v)) in pairs.zip(uv.by_ref()) {
            let [rt, gt, bt] = self.terms(u, v);
            (*r, *g, *b) = ([rt; 2], [gt; 2], [bt; 2]);
        }
        if let (Some(r), Some(g), Some(b), Some((u, v))) = (
            r_last.first_mut(),
            g_last.first_mut(),
            b_last.first_mut(),
            uv.next(),
        ) {
            [*r, *g, *b] = self.terms(u, v);
        }
    }

    /// The R, G and B chroma terms of one (U, V) sample.
    #[inline(always)]
    fn terms(&self, u: u8, v: u8) -> [f32; 3] {
        let u = (f32::from(u) - 128.0) * self.c_scale;
        let v = (f32::from(v) - 128.0) * self.c_scale;
        [self.r_v * v, -(self.g_u * u + self.g_v * v), self.b_u * u]
    }

    /// One row of pixels: luma plus the precomputed chroma terms, rounded and saturated.
    ///
    /// Blocks of 16 pixels are computed into three planar arrays first and interleaved into
    /// RGB after: a loop that stores the three channels interleaved directly does not vectorise
    /// (LLVM's cost model rejects stride-3 byte stores on SSE2 and simd128 alike).
    #[inline]
    fn luma_row(&self, y: &[u8], r: &[f32], g: &[f32], b: &[f32], out: &mut [u8]) {
        const BLOCK: usize = 16;
        let (ys, yo) = (self.y_scale, self.y_offset);
        let blocks = y
            .chunks_exact(BLOCK)
            .zip(r.chunks_exact(BLOCK))
            .zip(g.chunks_exact(BLOCK))
            .zip(b.chunks_exact(BLOCK))
            .zip(out.chunks_exact_mut(3 * BLOCK));
        for ((((y, r), g), b), out) in blocks {
            let (mut rr, mut gg, mut bb) = ([0u8; BLOCK], [0u8; BLOCK], [0u8; BLOCK]);
            for k in 0..BLOCK {
                let y = f32::from(y[k]) * ys + yo;
                rr[k] = to_u8(y + r[k]);
                gg[k] = to_u8(y + g[k]);
                bb[k] = to_u8(y + b[k]);
            }
            for (k, px) in out.chunks_exact_mut(3).enumerate() {
                px.copy_from_slice(&[rr[k], gg[k], bb[k]]);
            }
        }
        let done = y.len() / BLOCK * BLOCK;
        let (out, _) = out[3 * done..].as_chunks_mut::<3>();
        let tail = y[done..]
            .iter()
            .zip(&r[done..])
            .zip(&g[done..])
            .zip(&b[done..]);
        for (px, (((&y, &r), &g), &b)) in out.iter_mut().zip(tail) {
            let y = f32::from(y) * ys + yo;
            *px = [to_u8(y + r), to_u8(y + g), to_u8(y + b)];
        }
    }
}

/// Rounds to nearest (ties to even) and saturates to 0..=255.
///
/// Adding 1.5 * 2^23 to a value in 0..=255 leaves its rounded integer in the low mantissa bits
/// (the sum's unit in the last place is exactly 1). Unlike `as u8` or `as i32`, whose
/// saturating semantics lower to scalar compare-and-select sequences on SSE2, this is a min, a
/// max, an add and a mask, all of which vectorise.
#[inline(always)]
fn to_u8(v: f32) -> u8 {
    const ROUND: f32 = 12_582_912.0;
    (v.clamp(0.0, 255.0) + ROUND).to_bits() as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published, rounded coefficients (e.g. Jack, "Video Demystified"), written out by hand:
    /// `(y, u, v) -> (r, g, b)` in f64 without the converter's code.
    fn textbook(matrix: Matrix, range: Range, y: u8, u: u8, v: u8) -> [f64; 3] {
        let (y, u, v) = (f64::from(y), f64::from(u) - 128.0, f64::from(v) - 128.0);
        let [r, g, b] = match (matrix, range) {
            (Matrix::Bt601, Range::Limited) => {
                let y = 1.164 * (y - 16.0);
                [y + 1.596 * v, y - 0.392 * u - 0.813 * v, y + 2.017 * u]
            }
            (Matrix::Bt709, Range::Limited) => {
                let y = 1.164 * (y - 16.0);
                [y + 1.793 * v, y - 0.213 * u - 0.533 * v, y + 2.112 * u]
            }
            (Matrix::Bt601, Range::Full) => [
                y + 1.402 * v,
                y - 0.344136 * u - 0.714136 * v,
                y + 1.772 * u,
            ],
            (Matrix::Bt709, Range::Full) => {
                [y + 1.5748 * v, y - 0.1873 * u - 0.4681 * v, y + 1.8556 * u]
            }
        };
        [r, g, b].map(|c| c.clamp(0.0, 255.0))
    }

    /// A frame's planes with every byte different enough to exercise all terms.
    fn planes(w: usize, h: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let y = (0..w * h).map(|i| (16 + (i * 37) % 220) as u8).collect();
        let u = (0..cw * ch).map(|i| (16 + (i * 53) % 225) as u8).collect();
        let v = (0..cw * ch).map(|i| (240 - (i * 29) % 225) as u8).collect();
        (y, u, v)
    }

    fn nv12(y: &[u8], u: &[u8], v: &[u8]) -> Vec<u8> {
        let mut out = y.to_vec();
        for (&u, &v) in u.iter().zip(v) {
            out.extend([u, v]);
        }
        out
    }

    #[test]
    fn matches_textbook_formulas_on_every_pixel_of_odd_frames() {
        for (w, h) in [(5usize, 3usize), (8, 2), (1, 1), (33, 17)] {
            let (y, u, v) = planes(w, h);
            let cw = w.div_ceil(2);
            let i420 = [y.clone(), u.clone(), v.clone()].concat();
            let nv12 = nv12(&y, &u, &v);
            for matrix in [Matrix::Bt601, Matrix::Bt709] {
                for range in [Range::Limited, Range::Full] {
                    let mut conv = YuvToRgb::new(matrix, range);
                    let (mut a, mut b) = (Vec::new(), Vec::new());
                    conv.convert(Layout::I420, &i420, w as u32, h as u32, &mut a)
                        .unwrap();
                    conv.convert(Layout::Nv12, &nv12, w as u32, h as u32, &mut b)
                        .unwrap();
                    assert_eq!(a, b, "NV12 and I420 of the same planes differ");
                    assert_eq!(a.len(), w * h * 3);
                    let mut worst = 0.0f64;
                    for py in 0..h {
                        for px in 0..w {
                            let c = (py / 2) * cw + px / 2;
                            let want = textbook(matrix, range, y[py * w + px], u[c], v[c]);
                            for k in 0..3 {
                                let got = f64::from(a[(py * w + px) * 3 + k]);
                                worst = worst.max((got - want[k]).abs());
                            }
                        }
                    }
                    // Rounding (0.5) plus the 3-4 digit textbook coefficients (< 0.2 here).
                    assert!(
                        worst <= 0.75,
                        "{matrix:?} {range:?} {w}x{h}: off by {worst}"
                    );
                }
            }
        }
    }

    #[test]
    fn known_colours() {
        let mut conv = YuvToRgb::new(Matrix::Bt601, Range::Limited);
        // 2x2 frames of one colour each: (Y, U, V) -> RGB, BT.601 limited range.
        for ((y, u, v), rgb) in [
            ((16, 128, 128), [0, 0, 0]),
            ((235, 128, 128), [255, 255, 255]),
            ((126, 128, 128), [128, 128, 128]),
            ((81, 90, 240), [255, 0, 0]),
            ((145, 54, 34), [0, 255, 0]),
            ((41, 240, 110), [0, 0, 255]),
        ] {
            let mut out = Vec::new();
            conv.convert(Layout::I420, &[y, y, y, y, u, v], 2, 2, &mut out)
                .unwrap();
            for px in out.chunks_exact(3) {
                for c in 0..3 {
                    assert!(
                        px[c].abs_diff(rgb[c]) <= 1,
                        "({y},{u},{v}) -> {px:?}, want {rgb:?}"
                    );
                }
            }
        }
        // Full range mid-grey is exact.
        let mut out = Vec::new();
        YuvToRgb::new(Matrix::Bt709, Range::Full)
            .convert(Layout::Nv12, &[77, 128, 128], 1, 1, &mut out)
            .unwrap();
        assert_eq!(out, [77, 77, 77]);
    }

    #[test]
    fn rejects_wrong_sizes() {
        let mut conv = YuvToRgb::new(Matrix::Bt601, Range::Limited);
        // 3x3: 9 luma + 2 x (2 x 2) chroma = 17 bytes.
        assert_eq!(yuv420_len(3, 3), 17);
        let err = conv
            .convert(Layout::Nv12, &[0; 16], 3, 3, &mut Vec::new())
            .unwrap_err();
        assert!(err.is_input());
        assert!(
            err.to_string().contains("3x3 NV12 frame needs 17 bytes"),
            "{err}"
        );
        assert!(
            conv.convert(Layout::I420, &[], 0, 3, &mut Vec::new())
                .is_err()
        );
    }
}
