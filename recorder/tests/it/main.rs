//! The integration tests of `panoptes-recorder`, one test binary; a module per area.

mod encoding;
mod retention;
