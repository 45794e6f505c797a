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

/// `src = (dst - offset) / scale`, per axis: from tensor pixels to original-frame pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
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

    pub fn to_source(&self, [x, y]: [f32; 2]) -> [f32; 2] {
        [
            (x - self.offset_x) / self.scale_x,
            (y - self.offset_y) / self.scale_y,
        ]
    }
}
