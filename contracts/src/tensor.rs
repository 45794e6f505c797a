//! Dense f32 tensors passed between in-process stages, and the geometric transform that maps a
//! tensor's pixel coordinates back to the original frame.

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Debug, thiserror::Error)]
#[error("tensor shape {shape:?} needs {expected} values, got {actual}")]
pub struct ShapeMismatch {
    pub shape: Vec<usize>,
    pub expected: usize,
    pub actual: usize,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, ShapeMismatch> {
        let expected = shape.iter().product::<usize>();
        if expected != data.len() {
            return Err(ShapeMismatch {
                shape,
                expected,
                actual: data.len(),
            });
        }
        Ok(Self { shape, data })
    }
}

/// `src = (dst - offset) / scale`, per axis: from tensor pixels to original-frame pixels. Defined
/// once, beside the kernels that make it.
pub use panoptes_op_preprocess::Transform;
