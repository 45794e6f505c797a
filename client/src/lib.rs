//! panoptes-client: what a program that talks to a Panoptes deployment over NATS needs, for
//! `panoptes subscribe`, `panoptes camera`, `panoptes operator`, tests, and people embedding
//! Panoptes. [`subscribe`] decodes detection and event messages; [`control`] holds the control
//! plane's request and reply bodies, the signed-request check and what a request may name;
//! [`keys`] reads, writes and uses the ed25519 keys that sign operator modules and control
//! requests.
//!
//! Invariant: nothing a requester sends is echoed back beyond what the reply types carry (no
//! file content, no environment value), and every request a serving process acts on passed
//! [`control::ControlGuard::admit`].

pub mod control;
pub mod keys;
pub mod subscribe;

pub use subscribe::*;
