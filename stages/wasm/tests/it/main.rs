//! The integration tests of `stages/wasm`, compiled as one test binary (one link of the heavy
//! dependencies instead of one per file); a module per area.

mod builtin;
mod clock_waits;
mod common;
mod letterbox;
mod nn;
mod reload;
mod sandbox;
mod signature;
