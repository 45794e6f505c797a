//! The host's kernels for `panoptes:operator/kernel-operator@0.3.0` (`operators/wit-kernels/`):
//! pixel work run natively on the frame the host holds, its result kept on the host as a
//! `host-tensor` or `host-image` until the operator's output hands it to the next stage, so
//! neither the pixels nor the result cross into guest memory.
//!
//! A kernel is the operator's work done for it, so it is held to the operator's limits: its
//! results count against the memory cap, and its time against the deadline (unlike `wasi:nn`
//! compute, which is credited back), so an operator cannot outrun the deadline by calling
//! kernels in a loop.

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
    self as k, ChannelOrder, ColorMatrix, ColorRange, CropParams, JpegOptions, KernelOutput,
    LetterboxParams, LetterboxShape, Normalization,
};
use panoptes_contracts::frame::PixelBuffer;
use panoptes_op_preprocess::color::{Layout, Matrix, Range, YuvToRgb};
use panoptes_op_preprocess::crop::{Crop, CropRegion};
use panoptes_op_preprocess::normalize;
use panoptes_op_preprocess::resize::Resize;

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
    /// The resizer for the last output size.
    resize: Option<Resize>,
    /// The cropper for the last parameters.
    crop: Option<(CropKey, Crop)>,
    /// The converter for the last matrix and range.
    color: Option<((ColorMatrix, ColorRange), YuvToRgb)>,
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

/// A batch of crops: its values, its shape and each crop's transform back to the frame.
type Crops = (Vec<f32>, Vec<u32>, Vec<Transform>);

/// What a crop's state was built for: size, aspect and normalisation.
type CropKey = (u32, u32, bool, Option<([f32; 3], [f32; 3])>);

/// The frame a kernel reads.
struct Source {
    pixels: PixelBuffer,
    width: u32,
    height: u32,
    format: FrameFormat,
    /// "frame N of camera C", for errors.
    at: String,
}

impl HostState {
    /// The frame's pixels for `kernel`, or the invalid-input error of a frame in none of
    /// `formats`. A stage that has only the frame's metadata traps, as `pixels` does.
    fn source(
        &self,
        frame: &Resource<FrameResource>,
        kernel: &str,
        formats: &[FrameFormat],
    ) -> wasmtime::Result<Result<Source, wit::Error>> {
        let frame = self.table.get(frame)?;
        let at = format!("frame {} of camera {}", frame.seq, frame.camera);
        if !formats.contains(&frame.format) {
            let wanted: Vec<String> = formats.iter().map(|f| format!("{f:?}")).collect();
            return Ok(Err(wit::Error::InvalidInput(format!(
                "{at}: {kernel} needs a {} frame, got {:?}",
                wanted.join(" or "),
                frame.format
            ))));
        }
        let Some(pixels) = frame.pixels.clone() else {
            return Err(no_pixels(frame));
        };
        Ok(Ok(Source {
            pixels,
            width: frame.width,
            height: frame.height,
            format: frame.format,
            at,
        }))
    }

    /// The memory cap's error if `bytes` more of host results would take the instance past it.
    fn over_cap(&mut self, bytes: usize, what: &str) -> Option<wit::Error> {
        (!self.within_cap(bytes)).then(|| {
            wit::Error::Internal(format!(
                "{what} would take the operator past its memory cap of {} bytes",
                self.limiter.limit
            ))
        })
    }

    fn push_tensor(
        &mut self,
        shape: Vec<u32>,
        data: Vec<f32>,
    ) -> wasmtime::Result<Resource<HostTensor>> {
        self.kernels.held_bytes = self.kernels.held_bytes.saturating_add(bytes(&data));
        Ok(self.table.push(HostTensor { shape, data })?)
    }

    fn push_image(
        &mut self,
        width: u32,
        height: u32,
        pixels: Vec<u8>,
    ) -> wasmtime::Result<Resource<HostImage>> {
        self.kernels.held_bytes = self.kernels.held_bytes.saturating_add(pixels.len());
        Ok(self.table.push(HostImage {
            width,
            height,
            format: FrameFormat::Rgb8,
            pixels,
        })?)
    }

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

/// A kernel's failure on a frame: the frame's fault (named) or the host's.
fn kernel_error(at: &str, e: PreprocessError) -> wit::Error {
    if e.is_input() {
        wit::Error::InvalidInput(format!("{at}: {e}"))
    } else {
        wit::Error::Internal(e.to_string())
    }
}

fn norm_of(n: Option<Normalization>) -> Result<Normalize, wit::Error> {
    let Some(n) = n else {
        return Ok(Normalize::RAW);
    };
    let ((m0, m1, m2), (s0, s1, s2)) = (n.mean, n.std);
    Normalize::new([m0, m1, m2], [s0, s1, s2])
        .map_err(|e| wit::Error::InvalidConfig(format!("invalid normalization: {e}")))
}

fn transform(t: panoptes_op_preprocess::Transform) -> Transform {
    Transform {
        scale_x: t.scale_x,
        scale_y: t.scale_y,
        offset_x: t.offset_x,
        offset_y: t.offset_y,
    }
}

fn shape_of(dims: [usize; 4]) -> Vec<u32> {
    // Every side is at most MAX_SIDE and a batch at most the memory cap's worth: all fit.
    dims.iter()
        .map(|&d| u32::try_from(d).unwrap_or(u32::MAX))
        .collect()
}

/// Runs a kernel body that parses or decodes hostile data, turning a panic into this frame's
/// failure rather than the worker's.
fn guarded<T>(
    at: &str,
    body: impl FnOnce() -> Result<T, PreprocessError>,
) -> Result<T, wit::Error> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(kernel_error(at, e)),
        Err(_) => Err(wit::Error::InvalidInput(format!(
            "{at}: the kernel failed on this frame"
        ))),
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

    fn normalize(
        &mut self,
        frame: Resource<FrameResource>,
        normalization: Option<Normalization>,
    ) -> wasmtime::Result<Result<Resource<HostTensor>, wit::Error>> {
        self.normalize_kernel(&frame, normalization)
    }

    fn resize_image(
        &mut self,
        frame: Resource<FrameResource>,
        width: u32,
        height: u32,
    ) -> wasmtime::Result<Result<Resource<HostImage>, wit::Error>> {
        let src = match self.source(&frame, "resize", &[FrameFormat::Rgb8])? {
            Ok(src) => src,
            Err(e) => return Ok(Err(e)),
        };
        let bytes = (width as usize)
            .saturating_mul(height as usize)
            .saturating_mul(3);
        if let Some(e) = self.over_cap(bytes, "the resized image") {
            return Ok(Err(e));
        }
        let mut out = Vec::new();
        let result = self.resizer(width, height).and_then(|resize| {
            guarded(&src.at, || {
                resize.run(src.pixels.as_slice(), src.width, src.height, &mut out)
            })
        });
        if let Err(e) = result {
            return Ok(Err(e));
        }
        Ok(Ok(self.push_image(width, height, out)?))
    }

    fn resize_tensor(
        &mut self,
        frame: Resource<FrameResource>,
        width: u32,
        height: u32,
        normalization: Option<Normalization>,
    ) -> wasmtime::Result<Result<(Resource<HostTensor>, Transform), wit::Error>> {
        let src = match self.source(&frame, "resize", &[FrameFormat::Rgb8])? {
            Ok(src) => src,
            Err(e) => return Ok(Err(e)),
        };
        let norm = match norm_of(normalization) {
            Ok(norm) => norm,
            Err(e) => return Ok(Err(e)),
        };
        let bytes = (width as usize)
            .saturating_mul(height as usize)
            .saturating_mul(12);
        if let Some(e) = self.over_cap(bytes, "the resized tensor") {
            return Ok(Err(e));
        }
        let mut data = Vec::new();
        let result = self.resizer(width, height).and_then(|resize| {
            let t = guarded(&src.at, || {
                resize.run_tensor(
                    src.pixels.as_slice(),
                    src.width,
                    src.height,
                    &norm,
                    &mut data,
                )
            })?;
            Ok((t, resize.tensor_shape()))
        });
        let (t, shape) = match result {
            Ok(done) => done,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok((self.push_tensor(shape_of(shape), data)?, transform(t))))
    }

    fn convert_color(
        &mut self,
        frame: Resource<FrameResource>,
        matrix: ColorMatrix,
        range: ColorRange,
    ) -> wasmtime::Result<Result<Resource<HostImage>, wit::Error>> {
        let formats = [FrameFormat::Nv12, FrameFormat::I420];
        let src = match self.source(&frame, "colorconvert", &formats)? {
            Ok(src) => src,
            Err(e) => return Ok(Err(e)),
        };
        let layout = if src.format == FrameFormat::Nv12 {
            Layout::Nv12
        } else {
            Layout::I420
        };
        if !matches!(&self.kernels.color, Some((k, _)) if *k == (matrix, range)) {
            let convert = YuvToRgb::new(
                match matrix {
                    ColorMatrix::Bt601 => Matrix::Bt601,
                    ColorMatrix::Bt709 => Matrix::Bt709,
                },
                match range {
                    ColorRange::Limited => Range::Limited,
                    ColorRange::Full => Range::Full,
                },
            );
            self.kernels.color = Some(((matrix, range), convert));
        }
        let bytes = (src.width as usize) * (src.height as usize) * 3;
        if let Some(e) = self.over_cap(bytes, "the converted image") {
            return Ok(Err(e));
        }
        let mut out = Vec::new();
        let result = match self.kernels.color.as_mut() {
            Some((_, convert)) => guarded(&src.at, || {
                convert.convert(
                    layout,
                    src.pixels.as_slice(),
                    src.width,
                    src.height,
                    &mut out,
                )
            }),
            None => Err(wit::Error::Internal("colour converter missing".into())),
        };
        if let Err(e) = result {
            return Ok(Err(e));
        }
        Ok(Ok(self.push_image(src.width, src.height, out)?))
    }

    fn crop(
        &mut self,
        frame: Resource<FrameResource>,
        boxes: Vec<(f32, f32, f32, f32)>,
        params: CropParams,
    ) -> wasmtime::Result<Result<(Resource<HostTensor>, Vec<Transform>), wit::Error>> {
        let src = match self.source(&frame, "crop", &[FrameFormat::Rgb8])? {
            Ok(src) => src,
            Err(e) => return Ok(Err(e)),
        };
        let result = self.crop_kernel(&src, &boxes, params);
        let (data, shape, transforms) = match result {
            Ok(done) => done,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok((self.push_tensor(shape, data)?, transforms)))
    }

    fn decode_jpeg(
        &mut self,
        frame: Resource<FrameResource>,
        options: JpegOptions,
    ) -> wasmtime::Result<Result<Resource<HostImage>, wit::Error>> {
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

impl HostState {
    fn normalize_kernel(
        &mut self,
        frame: &Resource<FrameResource>,
        n: Option<Normalization>,
    ) -> wasmtime::Result<Result<Resource<HostTensor>, wit::Error>> {
        let src = match self.source(frame, "normalize", &[FrameFormat::Rgb8])? {
            Ok(src) => src,
            Err(e) => return Ok(Err(e)),
        };
        let norm = match norm_of(n) {
            Ok(norm) => norm,
            Err(e) => return Ok(Err(e)),
        };
        let len = (src.width as usize) * (src.height as usize) * 3;
        if let Some(e) = self.over_cap(len * 4, "a normalized tensor of the frame") {
            return Ok(Err(e));
        }
        let mut data = Vec::new();
        let result = guarded(&src.at, || {
            normalize::rgb8_to_tensor(
                src.pixels.as_slice(),
                src.width,
                src.height,
                &norm,
                &mut data,
            )
        });
        if let Err(e) = result {
            return Ok(Err(e));
        }
        let shape = vec![1, 3, src.height, src.width];
        Ok(Ok(self.push_tensor(shape, data)?))
    }

    /// The crops of `boxes`: their values, the batch's shape and each crop's transform.
    fn crop_kernel(
        &mut self,
        src: &Source,
        boxes: &[(f32, f32, f32, f32)],
        params: CropParams,
    ) -> Result<Crops, wit::Error> {
        let norm = norm_of(params.normalization)?;
        let expected = (src.width as usize) * (src.height as usize) * 3;
        if src.pixels.len() != expected {
            return Err(kernel_error(
                &src.at,
                PreprocessError::BufferSize {
                    format: "RGB8",
                    width: src.width,
                    height: src.height,
                    expected,
                    actual: src.pixels.len(),
                },
            ));
        }
        let mut regions = Vec::with_capacity(boxes.len());
        for &(x1, y1, x2, y2) in boxes {
            let region =
                CropRegion::new([x1, y1, x2, y2], src.width, src.height).ok_or_else(|| {
                    wit::Error::InvalidInput(format!(
                        "{}: box [{x1}, {y1}, {x2}, {y2}] has nothing inside the {}x{} frame",
                        src.at, src.width, src.height
                    ))
                })?;
            regions.push(region);
        }
        let per_crop = 3 * (params.width as usize) * (params.height as usize);
        let bytes = regions.len().saturating_mul(per_crop).saturating_mul(4);
        if let Some(e) = self.over_cap(bytes, "the crops") {
            return Err(e);
        }
        let arr = |(a, b, c): (f32, f32, f32)| [a, b, c];
        let key: CropKey = (
            params.width,
            params.height,
            params.keep_aspect,
            params.normalization.map(|n| (arr(n.mean), arr(n.std))),
        );
        if !matches!(&self.kernels.crop, Some((k, _)) if *k == key) {
            let crop = Crop::new(params.width, params.height, params.keep_aspect, norm)
                .map_err(|e| wit::Error::InvalidConfig(format!("invalid crop size: {e}")))?;
            self.kernels.crop = Some((key, crop));
        }
        let Some((_, crop)) = self.kernels.crop.as_mut() else {
            return Err(wit::Error::Internal("crop state missing".into()));
        };
        let mut data = Vec::with_capacity(regions.len() * per_crop);
        let mut transforms = Vec::with_capacity(regions.len());
        for region in &regions {
            // Rows within the frame: the region is clamped to it, and the buffer's size checked.
            let rows = src
                .pixels
                .as_slice()
                .get(region.row_range(src.width))
                .ok_or_else(|| wit::Error::Internal("crop rows outside the frame".into()))?;
            let t = guarded(&src.at, || crop.append(rows, src.width, region, &mut data))?;
            transforms.push(transform(t));
        }
        Ok((data, shape_of(crop.output_shape(regions.len())), transforms))
    }

    /// The resizer for `width` x `height`, built when the size changes.
    fn resizer(&mut self, width: u32, height: u32) -> Result<&mut Resize, wit::Error> {
        if self.kernels.resize.as_ref().map(Resize::size) != Some((width, height)) {
            let resize = Resize::new(width, height)
                .map_err(|e| wit::Error::InvalidConfig(format!("invalid resize size: {e}")))?;
            self.kernels.resize = Some(resize);
        }
        self.kernels
            .resize
            .as_mut()
            .ok_or_else(|| wit::Error::Internal("resize state missing".into()))
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
