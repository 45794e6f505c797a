//! The host's kernels for `panoptes:operator/kernel-operator@0.3.0` (`operators/wit-kernels/`):
//! pixel work run natively on the frame the host holds, its result kept on the host as a
//! `host-tensor` until the operator's output hands it to the next stage, so neither the pixels
//! nor the tensor cross into guest memory.

use std::time::Instant;

use panoptes_contracts::frame::PixelFormat as FrameFormat;
use panoptes_op_preprocess::{Letterbox, Normalize, PreprocessError};
use wasmtime::component::Resource;

use super::bindings::panoptes::operator::types::{self as wit, Tensor, TensorOutput, Transform};
use super::{FrameResource, HostState, no_pixels};

pub(crate) mod bindings {
    //! Host bindings of the `kernel-operator` world; its `types` are the 0.1.0 bindings'.
    wasmtime::component::bindgen!({
        world: "kernel-operator",
        path: "../../operators/wit-kernels",
        imports: { default: trappable },
        with: {
            "panoptes:operator/types@0.1.0": crate::instance::bindings::panoptes::operator::types,
            "panoptes:operator/kernels.host-tensor": crate::instance::kernels::HostTensor,
            "panoptes:operator/kernels.host-image": crate::instance::kernels::HostImage,
        },
    });
}

use bindings::panoptes::operator0_3_0::kernels::{
    self as k, ChannelOrder, JpegOptions, KernelOutput, LetterboxParams, LetterboxShape,
};

/// A tensor a kernel made, held in the instance's resource table.
#[derive(Debug)]
pub struct HostTensor {
    shape: Vec<u32>,
    data: Vec<f32>,
}

/// An image a kernel made (a decoded JPEG), held in the instance's resource table.
#[derive(Debug)]
pub struct HostImage {
    width: u32,
    height: u32,
    format: FrameFormat,
    pixels: Vec<u8>,
}

/// The letterbox kernel's reusable state (resizer and scratch buffers), kept per instance for
/// the parameters it was built with.
#[derive(Default)]
pub(crate) struct KernelState {
    letterbox: Option<(LetterboxParams, Letterbox)>,
    /// Bytes of the host tensors this instance holds: they count against its memory cap as
    /// its linear memory does, so a kernel cannot be used to allocate past the cap.
    held_bytes: usize,
}

impl std::fmt::Debug for KernelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelState")
            .field("letterbox", &self.letterbox.as_ref().map(|(p, _)| p))
            .finish()
    }
}

/// A kernel operator's output as any operator's: host tensors are moved out of the table.
pub(crate) fn into_output(
    state: &mut HostState,
    output: KernelOutput,
) -> wasmtime::Result<wit::Output> {
    match output {
        KernelOutput::Output(output) => Ok(output),
        KernelOutput::HostTensors(out) => {
            let mut tensors = Vec::with_capacity(out.tensors.len());
            for handle in out.tensors {
                let HostTensor { shape, data } = state.table.delete(handle)?;
                state.kernels.held_bytes = state.kernels.held_bytes.saturating_sub(bytes(&data));
                tensors.push(Tensor {
                    name: String::new(),
                    shape,
                    data,
                });
            }
            Ok(wit::Output::Tensors(TensorOutput {
                tensors,
                transforms: out.transforms,
            }))
        }
        KernelOutput::HostImage(handle) => {
            let image = state.table.delete(handle)?;
            state.kernels.held_bytes = state.kernels.held_bytes.saturating_sub(image.pixels.len());
            Ok(wit::Output::Image(wit::Image {
                width: image.width,
                height: image.height,
                format: super::wit_format(image.format),
                pixels: image.pixels,
            }))
        }
    }
}

impl HostState {
    /// Whether `wanted` more bytes of host results keep this instance within its memory cap;
    /// if not, the cap's failure is recorded (the call is then reported as a memory-limit
    /// failure, as a refused `memory.grow` is).
    fn within_cap(&mut self, wanted: usize) -> bool {
        let total = (self.limiter.reserved)
            .saturating_add(self.kernels.held_bytes)
            .saturating_add(wanted);
        if total > self.limiter.limit {
            self.limiter.exceeded = Some(total);
            return false;
        }
        true
    }
}

fn same_letterbox(a: &LetterboxParams, b: &LetterboxParams) -> bool {
    let shape = |s: &LetterboxShape| match s {
        LetterboxShape::Fixed => None,
        LetterboxShape::Frame(m) => Some(*m),
    };
    (a.width, a.height, a.mean, a.std, a.pad, a.channels)
        == (b.width, b.height, b.mean, b.std, b.pad, b.channels)
        && shape(&a.shape) == shape(&b.shape)
}

fn build_letterbox(params: &LetterboxParams) -> Result<Letterbox, PreprocessError> {
    let (m0, m1, m2) = params.mean;
    let (s0, s1, s2) = params.std;
    let letterbox = Letterbox::new(
        params.width,
        params.height,
        Normalize::new([m0, m1, m2], [s0, s1, s2])?,
    )?
    .with_pad_value(params.pad)
    .with_bgr(params.channels == ChannelOrder::Bgr);
    match params.shape {
        LetterboxShape::Fixed => Ok(letterbox),
        LetterboxShape::Frame(multiple) => letterbox.shaped_to_frame(multiple),
    }
}

impl k::Host for HostState {
    fn letterbox(
        &mut self,
        frame: Resource<FrameResource>,
        params: LetterboxParams,
    ) -> wasmtime::Result<Result<(Resource<HostTensor>, Transform), wit::Error>> {
        let started = Instant::now();
        let frame = self.table.get(&frame)?;
        let where_ = format!("frame {} of camera {}", frame.seq, frame.camera);
        if frame.format != FrameFormat::Rgb8 {
            return Ok(Err(wit::Error::InvalidInput(format!(
                "{where_}: letterbox needs rgb8 pixels, got {:?}; convert first",
                frame.format
            ))));
        }
        let Some(pixels) = frame.pixels.clone() else {
            return Err(no_pixels(frame));
        };
        let (width, height) = (frame.width, frame.height);
        // The most the tensor can take (a frame-shaped one is at most the limits).
        let wanted = (params.width as usize)
            .saturating_mul(params.height as usize)
            .saturating_mul(3 * std::mem::size_of::<f32>());
        if !self.within_cap(wanted) {
            return Ok(Err(wit::Error::Internal(format!(
                "a {}x{} letterbox tensor would take the operator past its memory cap of {} bytes",
                params.width, params.height, self.limiter.limit
            ))));
        }
        let reuse = matches!(&self.kernels.letterbox, Some((p, _)) if same_letterbox(p, &params));
        if !reuse {
            match build_letterbox(&params) {
                Ok(letterbox) => self.kernels.letterbox = Some((params, letterbox)),
                Err(e) => {
                    return Ok(Err(wit::Error::InvalidConfig(format!(
                        "invalid letterbox parameters: {e}"
                    ))));
                }
            }
        }
        let Some((_, letterbox)) = self.kernels.letterbox.as_mut() else {
            return Ok(Err(wit::Error::Internal("letterbox state missing".into())));
        };
        let mut data = Vec::new();
        let result = letterbox.run(pixels.as_slice(), width, height, &mut data);
        let shape = letterbox.output_shape().map(|d| d as u32).to_vec();
        self.credit_kernel_time(started.elapsed());
        let t = match result {
            Ok(t) => t,
            Err(e @ (PreprocessError::BufferSize { .. } | PreprocessError::Size { .. })) => {
                return Ok(Err(wit::Error::InvalidInput(format!("{where_}: {e}"))));
            }
            Err(e) => return Ok(Err(wit::Error::Internal(e.to_string()))),
        };
        self.kernels.held_bytes = self.kernels.held_bytes.saturating_add(bytes(&data));
        let tensor = self.table.push(HostTensor { shape, data })?;
        Ok(Ok((
            tensor,
            Transform {
                scale_x: t.scale_x,
                scale_y: t.scale_y,
                offset_x: t.offset_x,
                offset_y: t.offset_y,
            },
        )))
    }

    fn decode_jpeg(
        &mut self,
        frame: Resource<FrameResource>,
        options: JpegOptions,
    ) -> wasmtime::Result<Result<Resource<HostImage>, wit::Error>> {
        let started = Instant::now();
        let frame = self.table.get(&frame)?;
        let where_ = format!("frame {} of camera {}", frame.seq, frame.camera);
        if frame.format != FrameFormat::Jpeg {
            return Ok(Err(wit::Error::InvalidInput(format!(
                "{where_}: decode-jpeg needs a jpeg frame, got {:?}",
                frame.format
            ))));
        }
        let Some(file) = frame.pixels.clone() else {
            return Err(no_pixels(frame));
        };
        let (width, height) = (frame.width, frame.height);
        // The frame's declared size; a file of any other size is refused from its header.
        let wanted = (width as usize)
            .saturating_mul(height as usize)
            .saturating_mul(3);
        if !self.within_cap(wanted) {
            return Ok(Err(wit::Error::Internal(format!(
                "{where_}: a {width}x{height} decoded image would take the operator past its \
                 memory cap of {} bytes",
                self.limiter.limit
            ))));
        }
        let options = panoptes_op_preprocess::jpeg::JpegOptions {
            max_pixels: options.max_pixels,
            strict: options.strict,
        };
        let mut pixels = Vec::new();
        // Hostile bytes, decoded outside the sandbox: the decoder returns errors for damaged
        // files, and a panic it might still have is this frame's failure, not the worker's.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            panoptes_op_preprocess::jpeg::decode_rgb8_sized(
                file.as_slice(),
                &options,
                (width, height),
                &mut pixels,
            )
        }));
        self.credit_kernel_time(started.elapsed());
        match decoded {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.is_input() => {
                return Ok(Err(wit::Error::InvalidInput(format!("{where_}: {e}"))));
            }
            Ok(Err(e)) => return Ok(Err(wit::Error::Internal(e.to_string()))),
            Err(_) => {
                return Ok(Err(wit::Error::InvalidInput(format!(
                    "{where_}: the JPEG decoder failed on this file"
                ))));
            }
        }
        self.kernels.held_bytes = self.kernels.held_bytes.saturating_add(pixels.len());
        let image = self.table.push(HostImage {
            width,
            height,
            format: FrameFormat::Rgb8,
            pixels,
        })?;
        Ok(Ok(image))
    }
}

impl k::HostHostImage for HostState {
    fn width(&mut self, image: Resource<HostImage>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&image)?.width)
    }

    fn height(&mut self, image: Resource<HostImage>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&image)?.height)
    }

    fn format(&mut self, image: Resource<HostImage>) -> wasmtime::Result<wit::PixelFormat> {
        Ok(super::wit_format(self.table.get(&image)?.format))
    }

    fn drop(&mut self, image: Resource<HostImage>) -> wasmtime::Result<()> {
        let image = self.table.delete(image)?;
        self.kernels.held_bytes = self.kernels.held_bytes.saturating_sub(image.pixels.len());
        Ok(())
    }
}

impl k::HostHostTensor for HostState {
    fn shape(&mut self, tensor: Resource<HostTensor>) -> wasmtime::Result<Vec<u32>> {
        Ok(self.table.get(&tensor)?.shape.clone())
    }

    fn drop(&mut self, tensor: Resource<HostTensor>) -> wasmtime::Result<()> {
        let tensor = self.table.delete(tensor)?;
        self.kernels.held_bytes = self.kernels.held_bytes.saturating_sub(bytes(&tensor.data));
        Ok(())
    }
}

/// Links the `kernels` interface (every component may import it; the `types` it uses are
/// linked with the 0.1.0 world).
pub(crate) fn add_to_linker(
    linker: &mut wasmtime::component::Linker<HostState>,
) -> wasmtime::Result<()> {
    k::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(linker, |state| state)
}

fn bytes(data: &[f32]) -> usize {
    std::mem::size_of_val(data)
}
