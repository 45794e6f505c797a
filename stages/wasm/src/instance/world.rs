//! Which world a compiled operator implements (`operator`/`model-operator` 0.1.0, which the
//! stateful 0.2.0 world extends, or `kernel-operator` 0.3.0), and its exports by world.

use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre, Resource};

use super::bindings::{ModelOperator, ModelOperatorPre};
use super::kernels::bindings::{KernelOperator, KernelOperatorPre};
use super::{FrameResource, HostState, Input, Output, kernels, wit};

/// A compiled operator ready to instantiate, by the world it implements.
pub(crate) enum OperatorPre {
    /// `operator` / `model-operator` (0.1.0), also the base of `stateful-operator` (0.2.0).
    Plain(ModelOperatorPre<HostState>),
    /// `kernel-operator` (0.3.0): calls the host's kernels.
    Kernel(KernelOperatorPre<HostState>),
}

impl OperatorPre {
    pub(crate) fn new(pre: InstancePre<HostState>) -> wasmtime::Result<Self> {
        match ModelOperatorPre::new(pre.clone()) {
            Ok(plain) => Ok(Self::Plain(plain)),
            Err(plain_error) => match KernelOperatorPre::new(pre) {
                Ok(kernel) => Ok(Self::Kernel(kernel)),
                // Most components target the plain world: its mismatch says most.
                Err(_) => Err(plain_error),
            },
        }
    }

    pub(super) fn instance_pre(&self) -> &InstancePre<HostState> {
        match self {
            Self::Plain(pre) => pre.instance_pre(),
            Self::Kernel(pre) => pre.instance_pre(),
        }
    }
}

/// A live instance's exports, by world.
pub(super) enum Bindings {
    Plain(ModelOperator),
    Kernel(KernelOperator),
}

impl Bindings {
    pub(super) fn new(
        pre: &OperatorPre,
        store: &mut Store<HostState>,
        instance: &Instance,
    ) -> wasmtime::Result<Self> {
        Ok(match pre {
            OperatorPre::Plain(_) => Self::Plain(ModelOperator::new(store, instance)?),
            OperatorPre::Kernel(_) => Self::Kernel(KernelOperator::new(store, instance)?),
        })
    }

    pub(super) fn call_init(
        &self,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), wit::Error>> {
        match self {
            Self::Plain(b) => b.call_init(store, config),
            Self::Kernel(b) => b.call_init(store, config),
        }
    }

    pub(super) fn call_process(
        &self,
        store: &mut Store<HostState>,
        frame: Resource<FrameResource>,
        input: &Input,
    ) -> wasmtime::Result<Result<Output, wit::Error>> {
        match self {
            Self::Plain(b) => b.call_process(store, frame, input),
            Self::Kernel(b) => match b.call_process(&mut *store, frame, input)? {
                Ok(output) => kernels::into_output(store.data_mut(), output).map(Ok),
                Err(e) => Ok(Err(e)),
            },
        }
    }
}
