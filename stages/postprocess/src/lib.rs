//! Postprocessors that turn model outputs into detections, each usable on its own and as a
//! pipeline stage ([`from_config`] makes the stage a topology declares, [`build`] the one a kind
//! and params name):
//!
//! - [`db`]: the probability map of a DB text detector (PaddleOCR PP-OCRv4 det) into rotated
//!   text boxes ([`DbStage`]).
//! - [`yolo`]: YOLO-family outputs (v5, v8, YOLOX layouts) into boxes, with NMS.
//! - [`topk`]: classifier scores into the `k` best labels, per cascade region or for the frame.
//! - [`ctc`]: CTC greedy decoding of text recognisers (PP-OCR rec) into text, per region.
//!
//! Stages map boxes back to original-frame pixels with the item's transform and clamp them to
//! the frame. After a crop stage (`item.regions`), row `i` of the tensor belongs to region `i`:
//! `topk` and `ctc` attach their result to those regions.

mod common;
pub mod ctc;
pub mod db;
mod geometry;
pub mod stage;
#[cfg(test)]
mod test_rng;
pub mod topk;
pub mod yolo;

pub use common::InputError;
pub use ctc::{CtcDecoder, CtcError, CtcParams, CtcStage, CtcText};
pub use db::{DbError, DbParams, DbPostProcessor, TextBox, db_postprocess};
pub use stage::{DbStage, PostprocessError, Postprocessor, build, from_config};
pub use topk::{Softmax, TopkError, TopkParams, TopkStage};
pub use yolo::{YoloBox, YoloDecoder, YoloError, YoloLayout, YoloParams, YoloStage, iou, nms};
