//! Operators that call the host's native kernels (world
//! `panoptes:operator/kernel-operator@0.3.0`, `operators/wit-kernels/`): implement
//! [`KernelOperator`], export it with [`export_kernel_operator!`](crate::export_kernel_operator).
//!
//! A kernel reads the frame the host holds and leaves its result on the host as a
//! [`HostTensor`]; returning it in [`KernelOutput::HostTensors`] hands it to the next stage.
//! Neither the pixels nor the tensor pass through the operator's memory, so the operator costs
//! what the native kernel costs. The operator still decides everything: its configuration, what
//! it accepts, which kernel runs with which parameters, and what it returns.
//!
//! ```ignore
//! use panoptes_operator_sdk::kernels::{self, KernelOperator, KernelOutput, LetterboxParams};
//!
//! impl KernelOperator for Detector {
//!     fn init(config: &str) -> Result<Self, Error> { /* parse it */ }
//!     fn process(&mut self, frame: &Frame, _input: Input) -> Result<KernelOutput, Error> {
//!         let (tensor, transform) = kernels::letterbox(frame, self.params)?;
//!         Ok(KernelOutput::host_tensors(vec![tensor], Some(transform)))
//!     }
//! }
//! panoptes_operator_sdk::export_kernel_operator!(Detector, accepts: [Rgb8]);
//! ```

use crate::{Error, Frame, Input, Transform};

#[doc(hidden)]
// The generated lowering glue takes one argument per flattened field.
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    //! Guest bindings of the `kernel-operator` world; its `types` are the crate's.
    wit_bindgen::generate!({
        world: "kernel-operator",
        path: "../wit-kernels",
        pub_export_macro: true,
        export_macro_name: "__export_kernel_operator_world",
        default_bindings_module: "panoptes_operator_sdk::kernels::bindings",
        with: {
            "panoptes:operator/types@0.1.0": crate::bindings::panoptes::operator::types,
        },
        generate_all,
    });
}

pub use bindings::panoptes::operator0_3_0::kernels::{
    ChannelOrder, ColorMatrix, ColorRange, CropParams, HostImage, HostTensor, HostTensorOutput,
    JpegOptions, KernelOutput, LetterboxParams, LetterboxShape, Normalization, convert_color, crop,
    decode_jpeg, letterbox, normalize, resize_image, resize_tensor,
};

impl Normalization {
    /// Per-channel (R, G, B) mean and standard deviation, as configurations give them.
    pub fn new(mean: [f32; 3], std: [f32; 3]) -> Self {
        let [m0, m1, m2] = mean;
        let [s0, s1, s2] = std;
        Self {
            mean: (m0, m1, m2),
            std: (s0, s1, s2),
        }
    }
}

/// An operator that calls the host's kernels: built once per instance from the stage's
/// `config`, then called for every frame (as [`Operator`](crate::Operator), with
/// [`KernelOutput`] as what a frame gives).
pub trait KernelOperator: Sized + 'static {
    /// Builds the operator from the stage's `config` (JSON; `{}` when the topology gives none).
    fn init(config: &str) -> Result<Self, Error>;

    /// Processes one frame; a returned error fails this frame only.
    fn process(&mut self, frame: &Frame, input: Input) -> Result<KernelOutput, Error>;
}

impl KernelOutput {
    /// Host tensors with one transform for all of them (`None`: coordinates unchanged).
    pub fn host_tensors(tensors: Vec<HostTensor>, transform: Option<Transform>) -> Self {
        KernelOutput::HostTensors(HostTensorOutput {
            tensors,
            transforms: transform.into_iter().collect(),
        })
    }
}

#[doc(hidden)]
pub mod __private {
    //! What [`export_kernel_operator!`](crate::export_kernel_operator) expands to call; not a
    //! stable API.

    use std::cell::RefCell;

    use super::{KernelOperator, KernelOutput};
    use crate::{Error, Frame, Input};

    /// The one live operator of this instance. Component instances are single-threaded.
    pub struct KernelSlot<T>(RefCell<Option<T>>);

    impl<T: KernelOperator> KernelSlot<T> {
        pub const fn new() -> Self {
            Self(RefCell::new(None))
        }

        pub fn init(&self, config: &str) -> Result<(), Error> {
            let op = T::init(config)?;
            *self.0.borrow_mut() = Some(op);
            Ok(())
        }

        pub fn process(&self, frame: &Frame, input: Input) -> Result<KernelOutput, Error> {
            let mut slot = self.0.borrow_mut();
            let op = slot
                .as_mut()
                .ok_or_else(|| Error::Internal("process was called before init".into()))?;
            op.process(frame, input)
        }
    }

    impl<T: KernelOperator> Default for KernelSlot<T> {
        fn default() -> Self {
            Self::new()
        }
    }
}

/// Exports a type implementing [`KernelOperator`] as the component's `init` and `process`,
/// optionally declaring the pixel formats it accepts, as
/// [`export_operator!`](crate::export_operator) does.
#[macro_export]
macro_rules! export_kernel_operator {
    ($ty:ty) => {
        $crate::__export_kernel_operator_glue!($ty);
    };
    ($ty:ty, accepts: [$($format:ident),* $(,)?]) => {
        $crate::__export_kernel_operator_glue!($ty);
        $crate::__accepts_section!($($format),*);
    };
}

/// The `init`/`process` export glue of [`export_kernel_operator!`]; not a stable API.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_kernel_operator_glue {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __PanoptesKernelOperator;

            thread_local! {
                static __PANOPTES_SLOT: $crate::kernels::__private::KernelSlot<$ty> =
                    const { $crate::kernels::__private::KernelSlot::new() };
            }

            impl $crate::kernels::bindings::Guest for __PanoptesKernelOperator {
                fn init(config: ::std::string::String) -> ::std::result::Result<(), $crate::Error> {
                    __PANOPTES_SLOT.with(|slot| slot.init(&config))
                }

                fn process(
                    frame: &$crate::Frame,
                    input: $crate::Input,
                ) -> ::std::result::Result<$crate::kernels::KernelOutput, $crate::Error> {
                    __PANOPTES_SLOT.with(|slot| slot.process(frame, input))
                }
            }

            $crate::kernels::bindings::__export_kernel_operator_world!(
                __PanoptesKernelOperator with_types_in $crate::kernels::bindings
            );
        };
    };
}
