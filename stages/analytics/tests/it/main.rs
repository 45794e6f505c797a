//! The integration tests of `panoptes-analytics`, compiled as one test binary; a module per area.

mod scene;
