//! The integration tests of `panoptes-tracker`, compiled as one test binary; a module per area.

mod scene;
mod stage;
mod state;
mod tracking;
