//! The integration tests of `ingest`, compiled as one test binary (one link of the heavy
//! dependencies instead of one per file); a module per area.

mod jpeg;
mod live;
mod still;
