//! Per-channel normalisation without resizing: an RGB8 frame to a `[1, 3, H, W]` f32 tensor, or
//! an `[N, 3, H, W]` f32 tensor of 0..255 values normalised in place. The `normalize` operator's
//! kernel.

use crate::resize::check_rgb8;
use crate::{Normalize, PreprocessError, append_chw};

/// Writes packed RGB8 `src` (`width x height`) as a normalised CHW tensor `[1, 3, height, width]`
/// into `out`, replacing its contents.
pub fn rgb8_to_tensor(
    src: &[u8],
    width: u32,
    height: u32,
    norm: &Normalize,
    out: &mut Vec<f32>,
) -> Result<(), PreprocessError> {
    check_rgb8(src, width, height)?;
    let (w, h) = (width as usize, height as usize);
    out.clear();
    append_chw(src, w, h, w, h, norm, out);
    Ok(())
}

/// Normalises an `[N, 3, H, W]` tensor of 0..255 values in place: `v * scale[c] + bias[c]`, the
/// same affine form (and so the same result, bit for bit) as for 8-bit pixels.
pub fn tensor_in_place(
    shape: &[usize],
    data: &mut [f32],
    norm: &Normalize,
) -> Result<(), PreprocessError> {
    let bad = |reason| PreprocessError::TensorShape {
        shape: shape.to_vec(),
        len: data.len(),
        reason,
    };
    let &[n, channels, h, w] = shape else {
        return Err(bad("expected rank 4, [N, 3, H, W]"));
    };
    if channels != 3 {
        return Err(bad("expected 3 channels (R, G, B) in dimension 1"));
    }
    let plane = h.checked_mul(w).ok_or_else(|| bad("size overflows"))?;
    let total = [n, 3, plane]
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad("size overflows"))?;
    if total != data.len() {
        return Err(bad("the shape does not match the number of values"));
    }
    if plane == 0 {
        return Ok(());
    }
    for (i, chunk) in data.chunks_exact_mut(plane).enumerate() {
        let c = i % 3;
        let (scale, bias) = (norm.scale[c], norm.bias[c]);
        // A plain multiply-add over a contiguous plane: vectorises to 4 lanes on SSE2 and simd128.
        for v in chunk {
            *v = *v * scale + bias;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    const STD: [f32; 3] = [0.229, 0.224, 0.225];

    #[test]
    fn frame_matches_the_textbook_formula() {
        let (w, h) = (7u32, 5u32);
        let src: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 256) as u8).collect();
        let norm = Normalize::new(MEAN, STD).unwrap();
        let mut out = Vec::new();
        rgb8_to_tensor(&src, w, h, &norm, &mut out).unwrap();
        assert_eq!(out.len(), 3 * 35);
        for y in 0..h as usize {
            for x in 0..w as usize {
                for c in 0..3 {
                    let v = src[(y * w as usize + x) * 3 + c];
                    let textbook = (f64::from(v) / 255.0 - f64::from(MEAN[c])) / f64::from(STD[c]);
                    let got = out[(c * h as usize + y) * w as usize + x];
                    assert!(
                        (f64::from(got) - textbook).abs() < 1e-5,
                        "{got} vs {textbook}"
                    );
                    assert_eq!(got, norm.apply(c, v));
                }
            }
        }
    }

    #[test]
    fn tensor_path_equals_frame_path_bit_for_bit() {
        let (w, h) = (6u32, 4u32);
        let src: Vec<u8> = (0..w * h * 3).map(|i| (i * 91 % 256) as u8).collect();
        let norm = Normalize::new(MEAN, STD).unwrap();
        let mut expected = Vec::new();
        rgb8_to_tensor(&src, w, h, &norm, &mut expected).unwrap();
        // The same image as a raw 0..255 tensor, twice (N = 2).
        let mut raw = Vec::new();
        rgb8_to_tensor(&src, w, h, &Normalize::RAW, &mut raw).unwrap();
        let mut data = [raw.clone(), raw].concat();
        tensor_in_place(&[2, 3, 4, 6], &mut data, &norm).unwrap();
        assert_eq!(&data[..72], &expected[..]);
        assert_eq!(&data[72..], &expected[..]);
    }

    #[test]
    fn rejects_bad_tensors_and_frames() {
        let norm = Normalize::RAW;
        let mut d = vec![0.0; 12];
        for (shape, reason) in [
            (&[3, 2, 2][..], "rank 4"),
            (&[1, 4, 1, 3][..], "3 channels"),
            (&[1, 3, 2, 3][..], "does not match"),
            (&[usize::MAX, 3, 2, 2][..], "overflows"),
        ] {
            let err = tensor_in_place(shape, &mut d, &norm).unwrap_err();
            assert!(err.is_input());
            assert!(err.to_string().contains(reason), "{err}");
        }
        tensor_in_place(&[0, 3, 2, 2], &mut [], &norm).unwrap();
        let err = rgb8_to_tensor(&[0; 5], 1, 2, &norm, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("needs 6 bytes"), "{err}");
    }
}
