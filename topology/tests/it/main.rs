//! The integration tests of `topology`, compiled as one test binary (one link of the heavy
//! dependencies instead of one per file); a module per area.

mod diagnostics;
mod examples;
mod fuzz;
mod graph;
mod operators;
mod plan;
mod schema;
