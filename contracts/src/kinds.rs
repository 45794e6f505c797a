//! The kinds a topology names that more than one crate acts on, as typed values: the topology
//! reads them, model manifests name them, and the crate that implements a kind matches on them.
//! Adding a postprocessor is a variant here and a module in `panoptes-postprocess`.

use serde::{Deserialize, Serialize};

// The postprocessor of a postprocess stage or a model manifest. (A plain comment: a doc comment
// would become a description in the topology's JSON Schema.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Postprocessor {
    /// DB text boxes from a PP-OCR detection probability map.
    Db,
    /// CTC text recognition: the string of each cropped box, charset from the model metadata.
    Ctc,
    /// YOLO-family boxes with NMS (v5/v8 and YOLOX grid layouts; `params.layout`).
    Yolo,
    /// Classifier top-k labels (`params.k`).
    Topk,
}

impl Postprocessor {
    /// The name a topology or manifest uses.
    pub const fn name(self) -> &'static str {
        match self {
            Postprocessor::Db => "db",
            Postprocessor::Ctc => "ctc",
            Postprocessor::Yolo => "yolo",
            Postprocessor::Topk => "topk",
        }
    }
}

impl std::fmt::Display for Postprocessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
