//! Guest SDK for stateful operators, world `panoptes:operator/stateful-operator@0.2.0`
//! (`operators/wit-stateful/`): an [`Operator`] that also implements [`Stateful`] keeps state
//! per camera that the host saves (NATS KV `<ns>-state`, every `snapshot_interval_ms` and at a
//! partition's hand-back) and restores on the camera's next owner, after a hot reload and
//! after a trap rebuilt the instance. Export it with [`export_stateful_operator!`].
//!
//! Invariant: everything a stateful operator needs to go on with a camera is in its
//! [`Stateful::snapshot`]; IDs it hands out come from the range [`Stateful::restore`] gave.
//!
//! ```ignore
//! use panoptes_operator_sdk::{Error, Frame, Input, Operator, Output};
//! use panoptes_operator_sdk_stateful::{IdRange, Stateful};
//!
//! #[derive(Default)]
//! struct Frames { seen: std::collections::BTreeMap<String, u64> }
//! impl Operator for Frames { /* init, process: self.seen[camera] += 1 */ }
//! impl Stateful for Frames {
//!     fn snapshot(&self, camera: &str) -> Option<Vec<u8>> {
//!         self.seen.get(camera).map(|n| n.to_le_bytes().to_vec())
//!     }
//!     fn restore(&mut self, camera: &str, state: Option<Vec<u8>>, _ids: IdRange) -> Result<(), String> {
//!         let n = match state {
//!             None => 0,
//!             Some(b) => u64::from_le_bytes(b.try_into().map_err(|_| "not 8 bytes")?),
//!         };
//!         self.seen.insert(camera.to_owned(), n);
//!         Ok(())
//!     }
//!     fn forget(&mut self, camera: &str) { self.seen.remove(camera); }
//! }
//! panoptes_operator_sdk_stateful::export_stateful_operator!(Frames);
//! ```

pub use panoptes_operator_sdk as sdk;
use panoptes_operator_sdk::Operator;

#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    //! Guest bindings of the stateful world; its types are the base SDK's.
    wit_bindgen::generate!({
        world: "panoptes:operator/stateful-operator@0.2.0",
        path: "../wit-stateful",
        pub_export_macro: true,
        export_macro_name: "__export_stateful_world",
        default_bindings_module: "panoptes_operator_sdk_stateful::bindings",
        with: {
            "panoptes:operator/types@0.1.0": panoptes_operator_sdk::bindings::panoptes::operator::types,
            "wasi:nn/tensor@0.2.0-rc-2024-10-28": panoptes_operator_sdk::bindings::wasi::nn::tensor,
            "wasi:nn/graph@0.2.0-rc-2024-10-28": panoptes_operator_sdk::bindings::wasi::nn::graph,
            "wasi:nn/inference@0.2.0-rc-2024-10-28": panoptes_operator_sdk::bindings::wasi::nn::inference,
            "wasi:nn/errors@0.2.0-rc-2024-10-28": panoptes_operator_sdk::bindings::wasi::nn::errors,
        },
    });
}

/// The IDs an operator may hand out for one camera during one tenure: `first..end`. No other
/// owner of the camera, before or after, gets any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub first: u64,
    pub end: u64,
}

/// Per-camera state that follows the camera. Calls come between frames, never during
/// [`Operator::process`].
pub trait Stateful: Operator {
    /// The state of `camera` as bytes only this operator reads back (put a version in them);
    /// `None` when it keeps nothing of the camera.
    fn snapshot(&self, camera: &str) -> Option<Vec<u8>>;

    /// A tenure of `camera` begins here, with what a previous owner's `snapshot` returned (if
    /// anything). An error refuses the state (another version's, say): the host reports it and
    /// calls again with `None`, which must succeed.
    fn restore(&mut self, camera: &str, state: Option<Vec<u8>>, ids: IdRange)
    -> Result<(), String>;

    /// `camera` went to another owner, or silent: drop what is kept of it.
    fn forget(&mut self, camera: &str);
}

#[doc(hidden)]
pub mod __private {
    //! What [`export_stateful_operator!`](crate::export_stateful_operator) expands to call;
    //! not a stable API.

    use std::cell::RefCell;

    use super::{IdRange, Stateful};
    use panoptes_operator_sdk::{Error, Frame, Input, Output};

    /// The one live operator of this instance. Component instances are single-threaded.
    pub struct Slot<T>(RefCell<Option<T>>);

    impl<T: Stateful> Slot<T> {
        pub const fn new() -> Self {
            Self(RefCell::new(None))
        }

        pub fn init(&self, config: &str) -> Result<(), Error> {
            *self.0.borrow_mut() = Some(T::init(config)?);
            Ok(())
        }

        fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R, String> {
            let mut slot = self.0.borrow_mut();
            let op = slot
                .as_mut()
                .ok_or_else(|| "called before init".to_owned())?;
            Ok(f(op))
        }

        pub fn process(&self, frame: &Frame, input: Input) -> Result<Output, Error> {
            self.with(|op| op.process(frame, input))
                .map_err(Error::Internal)?
        }

        pub fn snapshot(&self, camera: &str) -> Option<Vec<u8>> {
            self.with(|op| op.snapshot(camera)).ok().flatten()
        }

        pub fn restore(
            &self,
            camera: &str,
            state: Option<Vec<u8>>,
            first: u64,
            end: u64,
        ) -> Result<(), String> {
            self.with(|op| op.restore(camera, state, IdRange { first, end }))?
        }

        pub fn forget(&self, camera: &str) {
            let _ = self.with(|op| op.forget(camera));
        }
    }

    impl<T: Stateful> Default for Slot<T> {
        fn default() -> Self {
            Self::new()
        }
    }
}

/// Exports a type implementing [`Operator`] and [`Stateful`] as a
/// `panoptes:operator/stateful-operator@0.2.0` component, optionally declaring the pixel
/// formats it accepts (as [`panoptes_operator_sdk::export_operator!`] does):
///
/// ```ignore
/// panoptes_operator_sdk_stateful::export_stateful_operator!(Tally, accepts: [Rgb8, Jpeg]);
/// ```
#[macro_export]
macro_rules! export_stateful_operator {
    ($ty:ty) => {
        $crate::__export_stateful_glue!($ty);
    };
    ($ty:ty, accepts: [$($format:ident),* $(,)?]) => {
        $crate::__export_stateful_glue!($ty);

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            const __PANOPTES_ACCEPTS_TEXT: &str = $crate::sdk::__accepts_text!($($format),*);
            #[unsafe(link_section = "panoptes:accepts")]
            #[used]
            static __PANOPTES_ACCEPTS: [u8; __PANOPTES_ACCEPTS_TEXT.len()] =
                $crate::sdk::__private::section_bytes(__PANOPTES_ACCEPTS_TEXT);
        };
    };
}

/// The export glue of [`export_stateful_operator!`]; not a stable API.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_stateful_glue {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __PanoptesStatefulOperator;

            thread_local! {
                static __PANOPTES_SLOT: $crate::__private::Slot<$ty> =
                    const { $crate::__private::Slot::new() };
            }

            impl $crate::bindings::Guest for __PanoptesStatefulOperator {
                fn init(
                    config: ::std::string::String,
                ) -> ::std::result::Result<(), $crate::sdk::Error> {
                    __PANOPTES_SLOT.with(|slot| slot.init(&config))
                }

                fn process(
                    frame: &$crate::sdk::Frame,
                    input: $crate::sdk::Input,
                ) -> ::std::result::Result<$crate::sdk::Output, $crate::sdk::Error> {
                    __PANOPTES_SLOT.with(|slot| slot.process(frame, input))
                }

                fn snapshot(
                    camera: ::std::string::String,
                ) -> ::std::option::Option<::std::vec::Vec<u8>> {
                    __PANOPTES_SLOT.with(|slot| slot.snapshot(&camera))
                }

                fn restore(
                    camera: ::std::string::String,
                    state: ::std::option::Option<::std::vec::Vec<u8>>,
                    first_id: u64,
                    end_id: u64,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    __PANOPTES_SLOT.with(|slot| slot.restore(&camera, state, first_id, end_id))
                }

                fn forget(camera: ::std::string::String) {
                    __PANOPTES_SLOT.with(|slot| slot.forget(&camera))
                }
            }

            $crate::bindings::__export_stateful_world!(
                __PanoptesStatefulOperator with_types_in $crate::bindings
            );
        };
    };
}
