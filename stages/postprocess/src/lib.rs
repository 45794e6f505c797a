//! Postprocessors that turn model outputs into detections.
//!
//! Currently: [`db`], which turns the probability map from a DB text detector
//! (PaddleOCR PP-OCRv4 det) into rotated text boxes, and [`stage`], which runs it as a pipeline
//! stage and maps boxes back to original-frame pixels.

pub mod db;
mod geometry;
pub mod stage;
#[cfg(test)]
mod test_rng;

pub use db::{DbError, DbParams, DbPostProcessor, TextBox, db_postprocess};
pub use stage::{DbStage, PostprocessError};
