//! Guest SDK for panoptes Wasm operators: implement [`Operator`], export it with
//! [`export_operator!`], build with `cargo build --release --target wasm32-wasip2`.
//!
//! ```ignore
//! use panoptes_operator_sdk::{Error, Frame, Input, Operator, Output};
//!
//! struct Brightness { threshold: u8 }
//!
//! impl Operator for Brightness {
//!     fn init(config: &str) -> Result<Self, Error> {
//!         Ok(Self { threshold: panoptes_operator_sdk::config::<u8>(config)? })
//!     }
//!     fn process(&mut self, frame: &Frame, _input: Input) -> Result<Output, Error> {
//!         let bright = frame.pixels().iter().filter(|&&p| p > self.threshold).count();
//!         Ok(Output::Detections(vec![/* ... */]))
//!     }
//! }
//! panoptes_operator_sdk::export_operator!(Brightness);
//! ```
//!
//! ## Declaring the frames an operator accepts
//!
//! `export_operator!(Ty, accepts: [Rgb8, Jpeg])` declares the pixel formats ([`PixelFormat`]'s
//! variants: `Rgb8`, `Nv12`, `I420`, `Jpeg`) of the frames the operator can work with, so the
//! host can check a topology without running it (`panoptes validate` refuses a JPEG camera whose
//! frames reach an operator that does not accept `Jpeg`). `accepts: []` declares an operator
//! that reads no frame (it takes tensors, like `onnx`); plain `export_operator!(Ty)` declares
//! nothing, and the host gives such an operator the benefit of the doubt.
//!
//! The declaration is a Wasm custom section of the core module, [`ACCEPTS_SECTION`]
//! (`panoptes:accepts`), kept inside the component. Its encoding, version 1, is ASCII text: `v1`,
//! then, for a non-empty list, one space and the frame/v1 format names (`rgb8`, `nv12`, `i420`,
//! `jpeg`) joined by commas, each at most once: `v1 rgb8,jpeg`; `v1` alone is the empty list.
//! One section per component; a reader that meets another version refuses it rather than guess.
//! The host's reader is `panoptes_wasm::accepts`.
//!
//! The world is `panoptes:operator/model-operator@0.1.0`: an operator that never calls [`nn`]
//! does not import `wasi:nn` (unused imports are dropped when the component is made), so it
//! is a plain `operator` component.

#[doc(hidden)]
// The generated lowering glue takes one argument per flattened field.
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    //! Guest bindings generated from `operators/wit`.
    wit_bindgen::generate!({
        world: "model-operator",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_operator_world",
        default_bindings_module: "panoptes_operator_sdk::bindings",
        generate_all,
    });
}

pub mod kernels;
pub mod nn;

pub use bindings::panoptes::operator::types::{
    Detection, Error, Frame, Image, Input, Output, PixelFormat, Tensor, TensorInput, TensorOutput,
    Transform,
};

/// An operator: built once per instance from the stage's `config`, then called for every frame.
///
/// Instances are single-threaded and may be rebuilt by the host at any time (after a trap, or a
/// hot reload), so keep only state that `init` can recreate.
pub trait Operator: Sized + 'static {
    /// Builds the operator from the stage's `config` (JSON; `{}` when the topology gives none).
    fn init(config: &str) -> Result<Self, Error>;

    /// Processes one frame. `input` is what the previous stage produced (or
    /// [`Input::Frame`] when the frame itself is the input). A returned error fails this frame
    /// only; a panic traps and the host rebuilds the instance.
    fn process(&mut self, frame: &Frame, input: Input) -> Result<Output, Error>;
}

/// Parses an operator's JSON configuration into `T`, treating an empty string as `{}`.
/// Errors are [`Error::InvalidConfig`] with serde's message (which names the field).
pub fn config<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, Error> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    serde_json::from_str(json).map_err(|e| Error::InvalidConfig(e.to_string()))
}

impl Tensor {
    /// A tensor after checking that `data` has exactly `product(shape)` values.
    pub fn new(name: impl Into<String>, shape: &[usize], data: Vec<f32>) -> Result<Self, Error> {
        let len = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if len != Some(data.len()) {
            return Err(Error::Internal(format!(
                "tensor shape {shape:?} does not hold {} values",
                data.len()
            )));
        }
        let shape = shape
            .iter()
            .map(|&d| u32::try_from(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Error::Internal(format!("tensor shape {shape:?} is too large")))?;
        Ok(Self {
            name: name.into(),
            shape,
            data,
        })
    }

    /// The shape as `usize`s.
    pub fn dims(&self) -> Vec<usize> {
        self.shape.iter().map(|&d| d as usize).collect()
    }
}

impl Transform {
    pub const IDENTITY: Transform = Transform {
        scale_x: 1.0,
        scale_y: 1.0,
        offset_x: 0.0,
        offset_y: 0.0,
    };
}

impl Output {
    /// Tensors with one transform for all of them (`None`: coordinates unchanged).
    pub fn tensors(tensors: Vec<Tensor>, transform: Option<Transform>) -> Self {
        Output::Tensors(TensorOutput {
            tensors,
            transforms: transform.into_iter().collect(),
        })
    }
}

#[doc(hidden)]
pub mod __private {
    //! What [`export_operator!`](crate::export_operator) expands to call; not a stable API.

    use std::cell::RefCell;

    use super::{Error, Frame, Input, Operator, Output};

    /// The one live operator of this instance. Component instances are single-threaded.
    pub struct Slot<T>(RefCell<Option<T>>);

    impl<T: Operator> Slot<T> {
        pub const fn new() -> Self {
            Self(RefCell::new(None))
        }

        pub fn init(&self, config: &str) -> Result<(), Error> {
            let op = T::init(config)?;
            *self.0.borrow_mut() = Some(op);
            Ok(())
        }

        pub fn process(&self, frame: &Frame, input: Input) -> Result<Output, Error> {
            let mut slot = self.0.borrow_mut();
            let op = slot
                .as_mut()
                .ok_or_else(|| Error::Internal("process was called before init".into()))?;
            op.process(frame, input)
        }
    }

    impl<T: Operator> Default for Slot<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    /// `text`'s bytes as the array a `link_section` static needs (a `&str` cannot be one: the
    /// section would hold a pointer, not the text). `N` must be `text.len()`.
    pub const fn section_bytes<const N: usize>(text: &str) -> [u8; N] {
        let bytes = text.as_bytes();
        assert!(bytes.len() == N, "section length differs from its text");
        let mut out = [0u8; N];
        let mut i = 0;
        while i < N {
            out[i] = bytes[i];
            i += 1;
        }
        out
    }
}

/// The custom section in which [`export_operator!`] declares the pixel formats an operator
/// accepts (encoding: see the crate docs). The host reads the same name.
pub const ACCEPTS_SECTION: &str = "panoptes:accepts";

/// Exports a type implementing [`Operator`] as the component's `init` and `process`, optionally
/// declaring the pixel formats of the frames it accepts:
///
/// ```ignore
/// panoptes_operator_sdk::export_operator!(JpegOperator, accepts: [Rgb8, Jpeg]);
/// ```
///
/// The names are [`PixelFormat`]'s variants; an unknown one does not compile. Without
/// `accepts`, nothing is declared (see the crate docs).
///
/// The export glue exists only on `wasm32`; on the host the operator still compiles, so its
/// logic can be unit-tested and linted natively.
#[macro_export]
macro_rules! export_operator {
    ($ty:ty) => {
        $crate::__export_operator_glue!($ty);
    };
    ($ty:ty, accepts: [$($format:ident),* $(,)?]) => {
        $crate::__export_operator_glue!($ty);
        $crate::__accepts_section!($($format),*);
    };
}

/// The `panoptes:accepts` custom section for a list of [`PixelFormat`] variant names; not a
/// stable API.
#[doc(hidden)]
#[macro_export]
macro_rules! __accepts_section {
    ($($format:ident),*) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            const __PANOPTES_ACCEPTS_TEXT: &str = $crate::__accepts_text!($($format),*);

            // A custom section of the core module: wasm-ld keeps sections of this kind (even
            // stripped), and the component embeds the module whole, so the host finds it
            // without running anything. `#[used]` keeps the unreferenced static.
            #[unsafe(link_section = "panoptes:accepts")]
            #[used]
            static __PANOPTES_ACCEPTS: [u8; __PANOPTES_ACCEPTS_TEXT.len()] =
                $crate::__private::section_bytes(__PANOPTES_ACCEPTS_TEXT);
        };
    };
}

/// The `init`/`process` export glue of [`export_operator!`]; not a stable API.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_operator_glue {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __PanoptesOperator;

            thread_local! {
                static __PANOPTES_SLOT: $crate::__private::Slot<$ty> =
                    const { $crate::__private::Slot::new() };
            }

            impl $crate::bindings::Guest for __PanoptesOperator {
                fn init(config: ::std::string::String) -> ::std::result::Result<(), $crate::Error> {
                    __PANOPTES_SLOT.with(|slot| slot.init(&config))
                }

                fn process(
                    frame: &$crate::Frame,
                    input: $crate::Input,
                ) -> ::std::result::Result<$crate::Output, $crate::Error> {
                    __PANOPTES_SLOT.with(|slot| slot.process(frame, input))
                }
            }

            $crate::bindings::__export_operator_world!(
                __PanoptesOperator with_types_in $crate::bindings
            );
        };
    };
}

/// The `panoptes:accepts` text (version 1) for a list of [`PixelFormat`] variant names: `v1`,
/// then ` ` and the frame/v1 names joined by `,`. Not a stable API.
#[doc(hidden)]
#[macro_export]
macro_rules! __accepts_text {
    () => {
        "v1"
    };
    ($first:ident $(, $rest:ident)*) => {
        concat!(
            "v1 ",
            $crate::__pixel_format_name!($first)
            $(, ",", $crate::__pixel_format_name!($rest))*
        )
    };
}

/// The frame/v1 name of a [`PixelFormat`] variant, at compile time. Not a stable API.
#[doc(hidden)]
#[macro_export]
macro_rules! __pixel_format_name {
    (Rgb8) => {
        "rgb8"
    };
    (Nv12) => {
        "nv12"
    };
    (I420) => {
        "i420"
    };
    (Jpeg) => {
        "jpeg"
    };
    ($other:ident) => {
        compile_error!(concat!(
            "unknown pixel format `",
            stringify!($other),
            "` in `accepts`: use Rgb8, Nv12, I420 or Jpeg"
        ))
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn accepts_text_is_version_1() {
        assert_eq!(crate::__accepts_text!(), "v1");
        assert_eq!(crate::__accepts_text!(Rgb8), "v1 rgb8");
        assert_eq!(crate::__accepts_text!(Rgb8, Jpeg), "v1 rgb8,jpeg");
        assert_eq!(
            crate::__accepts_text!(Rgb8, Nv12, I420, Jpeg),
            "v1 rgb8,nv12,i420,jpeg"
        );
    }

    #[test]
    fn section_bytes_copy_the_text() {
        const TEXT: &str = crate::__accepts_text!(Nv12, I420);
        const BYTES: [u8; TEXT.len()] = crate::__private::section_bytes(TEXT);
        assert_eq!(&BYTES, b"v1 nv12,i420");
    }
}
