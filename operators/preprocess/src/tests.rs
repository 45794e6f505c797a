//! Checks the SIMD-backed letterbox against a deliberately naive scalar reference.

use super::*;

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Antialiased (PIL-style) separable bilinear resize in f64 with no intermediate rounding: for
/// each output pixel, a triangle filter widened by the downscale factor, centred on the
/// corresponding source point, weights normalised to sum to one.
fn reference_resize(src: &[u8], w: usize, h: usize, new_w: usize, new_h: usize) -> Vec<f64> {
    fn weights(in_size: usize, out_size: usize) -> Vec<Vec<(usize, f64)>> {
        let scale = in_size as f64 / out_size as f64;
        let support = scale.max(1.0);
        (0..out_size)
            .map(|o| {
                let center = (o as f64 + 0.5) * scale;
                let mut ws: Vec<(usize, f64)> = (0..in_size)
                    .map(|i| {
                        let d = ((i as f64 + 0.5 - center) / support).abs();
                        (i, if d < 1.0 { 1.0 - d } else { 0.0 })
                    })
                    .filter(|&(_, wt)| wt > 0.0)
                    .collect();
                let total: f64 = ws.iter().map(|&(_, wt)| wt).sum();
                for (_, wt) in &mut ws {
                    *wt /= total;
                }
                ws
            })
            .collect()
    }
    let wx = weights(w, new_w);
    let wy = weights(h, new_h);
    let mut out = vec![0.0; new_w * new_h * 3];
    for (oy, row_ws) in wy.iter().enumerate() {
        for (ox, col_ws) in wx.iter().enumerate() {
            for c in 0..3 {
                let mut acc = 0.0;
                for &(iy, a) in row_ws {
                    for &(ix, b) in col_ws {
                        acc += a * b * f64::from(src[(iy * w + ix) * 3 + c]);
                    }
                }
                out[(oy * new_w + ox) * 3 + c] = acc;
            }
        }
    }
    out
}

/// The letterboxed, normalised CHW tensor computed the slow way, in f64.
fn reference_letterbox(src: &[u8], w: u32, h: u32, dst_w: u32, dst_h: u32) -> Vec<f64> {
    let Fit { new_w, new_h } = fit(w, h, dst_w, dst_h);
    let (new_w, new_h, dst_w, dst_h) = (
        new_w as usize,
        new_h as usize,
        dst_w as usize,
        dst_h as usize,
    );
    let resized = reference_resize(src, w as usize, h as usize, new_w, new_h);
    let mut out = vec![0.0; 3 * dst_h * dst_w];
    for c in 0..3 {
        let (m, s) = (f64::from(MEAN[c]), f64::from(STD[c]));
        for y in 0..dst_h {
            for x in 0..dst_w {
                let v = if x < new_w && y < new_h {
                    resized[(y * new_w + x) * 3 + c]
                } else {
                    0.0
                };
                out[(c * dst_h + y) * dst_w + x] = (v / 255.0 - m) / s;
            }
        }
    }
    out
}

/// A smooth diagonal gradient with a different ramp per channel (no value repeats trivially).
fn gradient(w: u32, h: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            v.push((x * 255 / (w - 1).max(1)) as u8);
            v.push((y * 255 / (h - 1).max(1)) as u8);
            v.push(((x + y) * 255 / (w + h - 2).max(1)) as u8);
        }
    }
    v
}

fn norm() -> Normalize {
    Normalize::new(MEAN, STD).unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn fit_keeps_aspect_ratio() {
    assert_eq!(
        fit(1280, 720, 640, 640),
        Fit {
            new_w: 640,
            new_h: 360
        }
    );
    assert_eq!(
        fit(720, 1280, 640, 640),
        Fit {
            new_w: 360,
            new_h: 640
        }
    );
    assert_eq!(
        fit(100, 100, 640, 320),
        Fit {
            new_w: 320,
            new_h: 320
        }
    );
    // Extreme aspect ratios still get at least one pixel.
    assert_eq!(
        fit(10_000, 1, 64, 64),
        Fit {
            new_w: 64,
            new_h: 1
        }
    );
}

#[test]
fn uniform_image_is_exact_constant_and_padding_is_minus_mean_over_std() {
    let (w, h, dst) = (64u32, 32u32, 48u32);
    let rgb = [200u8, 100, 7];
    let src: Vec<u8> = rgb
        .iter()
        .copied()
        .cycle()
        .take((w * h * 3) as usize)
        .collect();
    let mut out = Vec::new();
    let t = letterbox_normalize(&src, w, h, dst, dst, MEAN, STD, &mut out).unwrap();
    assert_eq!(out.len(), 3 * 48 * 48);
    let n = norm();
    let Fit { new_w, new_h } = fit(w, h, dst, dst);
    assert_eq!((new_w, new_h), (48, 24));
    for c in 0..3 {
        let plane = &out[c * 48 * 48..(c + 1) * 48 * 48];
        for y in 0..48usize {
            for x in 0..48usize {
                let v = plane[y * 48 + x];
                if y < 24 {
                    // Bilinear weights sum to one: a flat image stays flat, bit for bit.
                    assert_eq!(v, n.apply(c, rgb[c]), "c={c} x={x} y={y}");
                } else {
                    assert_eq!(v, -MEAN[c] / STD[c], "padding c={c} x={x} y={y}");
                }
            }
        }
        // The affine form agrees with the textbook formula to within rounding.
        let textbook = (f32::from(rgb[c]) / 255.0 - MEAN[c]) / STD[c];
        assert!((n.apply(c, rgb[c]) - textbook).abs() < 1e-6);
    }
    assert_eq!(
        t,
        Transform {
            scale_x: 0.75,
            scale_y: 0.75,
            offset_x: 0.0,
            offset_y: 0.0
        }
    );
}

#[test]
fn gradient_matches_reference_resize() {
    // One unit of 8-bit rounding after normalisation is 1 / (255 * std) ~ 0.0175; the integer
    // kernels round twice (after each pass), so allow up to two units.
    let tolerance = 2.0 / (255.0 * 0.224);
    for &(w, h, dw, dh) in &[
        (160u32, 90u32, 64u32, 64u32), // downscale, landscape: padding at the bottom
        (90, 160, 64, 64),             // downscale, portrait: padding on the right
        (37, 23, 100, 80),             // upscale, odd sizes
        (64, 64, 64, 64),              // identity (plain copy)
        (200, 50, 33, 47),             // both axes odd, strong downscale
    ] {
        let src = gradient(w, h);
        let mut lb = Letterbox::new(dw, dh, norm()).unwrap();
        let mut out = Vec::new();
        let t = lb.run(&src, w, h, &mut out).unwrap();
        assert_eq!(lb.output_shape(), [1, 3, dh as usize, dw as usize]);
        let reference = reference_letterbox(&src, w, h, dw, dh);
        let diff = max_abs_diff(&out, &reference);
        assert!(
            diff <= tolerance,
            "{w}x{h} -> {dw}x{dh}: max abs diff {diff} > {tolerance}"
        );
        let Fit { new_w, new_h } = fit(w, h, dw, dh);
        assert_eq!(t.scale_x, new_w as f32 / w as f32);
        assert_eq!(t.scale_y, new_h as f32 / h as f32);
    }
}

#[test]
fn transform_maps_output_corners_back_to_source() {
    let src = gradient(1280, 720);
    let mut out = Vec::new();
    let t = letterbox_normalize(&src, 1280, 720, 640, 640, MEAN, STD, &mut out).unwrap();
    assert_eq!(t.to_source(640.0, 360.0), (1280.0, 720.0));
    assert_eq!(t.to_source(0.0, 0.0), (0.0, 0.0));
}

#[test]
fn shaped_to_the_frame_pads_only_to_the_multiple() {
    let mut lb = Letterbox::new(640, 640, norm())
        .unwrap()
        .shaped_to_frame(32)
        .unwrap();
    assert_eq!(lb.output_shape(), [1, 3, 640, 640]);
    // 16:9 at 960x540: scaled to 640x360, padded to 640x384; the same pixels as a 640x384
    // letterbox, whose padding rows match.
    let src = gradient(960, 540);
    let (mut out, mut fixed) = (Vec::new(), Vec::new());
    let t = lb.run(&src, 960, 540, &mut out).unwrap();
    assert_eq!(lb.output_shape(), [1, 3, 384, 640]);
    assert_eq!(out.len(), 3 * 384 * 640);
    let tf = Letterbox::new(640, 384, norm())
        .unwrap()
        .run(&src, 960, 540, &mut fixed)
        .unwrap();
    assert_eq!((out, t), (fixed, tf));
    // 4:3 fills its multiple exactly; a portrait frame pads its width.
    lb.run(&gradient(640, 480), 640, 480, &mut Vec::new())
        .unwrap();
    assert_eq!(lb.output_shape(), [1, 3, 480, 640]);
    lb.run(&gradient(300, 1000), 300, 1000, &mut Vec::new())
        .unwrap();
    assert_eq!(lb.output_shape(), [1, 3, 640, 192]);
    // Limits that are not multiples are refused.
    for (w, m) in [(630, 32), (640, 0)] {
        let err = Letterbox::new(w, 640, norm()).unwrap().shaped_to_frame(m);
        assert!(err.is_err(), "{w} {m}");
    }
}

#[test]
fn reusing_the_letterbox_gives_identical_results_across_sizes() {
    let mut lb = Letterbox::new(64, 64, norm()).unwrap();
    let big = gradient(300, 200);
    let small = gradient(20, 30);
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    lb.run(&big, 300, 200, &mut a).unwrap();
    lb.run(&small, 20, 30, &mut b).unwrap();
    // Scratch left over from the larger frame must not leak into the smaller one.
    Letterbox::new(64, 64, norm())
        .unwrap()
        .run(&small, 20, 30, &mut c)
        .unwrap();
    assert_eq!(b, c);
    lb.run(&big, 300, 200, &mut c).unwrap();
    assert_eq!(a, c);
}

#[test]
fn rejects_bad_input() {
    let mut out = Vec::new();
    let err = letterbox_normalize(&[0; 10], 2, 2, 4, 4, MEAN, STD, &mut out).unwrap_err();
    assert_eq!(
        err,
        PreprocessError::BufferSize {
            format: "RGB8",
            width: 2,
            height: 2,
            expected: 12,
            actual: 10
        }
    );
    assert!(err.to_string().contains("needs 12 bytes"), "{err}");
    assert!(matches!(
        letterbox_normalize(&[], 0, 2, 4, 4, MEAN, STD, &mut out),
        Err(PreprocessError::Size { what: "source", .. })
    ));
    assert!(matches!(
        letterbox_normalize(&[0; 12], 2, 2, 4, MAX_SIDE + 1, MEAN, STD, &mut out),
        Err(PreprocessError::Size {
            what: "destination",
            ..
        })
    ));
    assert!(matches!(
        Normalize::new(MEAN, [0.5, 0.0, 0.5]),
        Err(PreprocessError::Normalization {
            what: "std",
            channel: 1,
            ..
        })
    ));
    assert!(matches!(
        Normalize::new([f32::NAN, 0.0, 0.0], STD),
        Err(PreprocessError::Normalization { what: "mean", .. })
    ));
    assert!(matches!(
        Normalize::new(MEAN, [1.0e-40, 1.0, 1.0]),
        Err(PreprocessError::Normalization { what: "std", .. })
    ));
}
