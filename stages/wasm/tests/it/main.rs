//! The integration tests of `stages/wasm`, compiled as one test binary (one link of the heavy
//! dependencies instead of one per file); a module per area.

mod builtin;
mod clock_waits;
mod common;
mod javascript;
mod letterbox;
mod nn;
mod python;
mod reload;
mod sandbox;
mod signature;
mod stateful;
