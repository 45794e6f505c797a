//! The integration tests of `stages/model`, compiled as one test binary (one link of the heavy
//! dependencies instead of one per file); a module per area.

mod batching;
mod graph;
mod manifest;
mod ppocr_det;
