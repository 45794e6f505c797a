//! The model stage: a pipeline stage that runs a [`Graph`] on the tensor an operator made.

use panoptes_pipeline::stage::{Item, Payload, Stage, StageError};

use crate::graph::Graph;

/// Tensor in, the graph's first output out; the transform passes through.
pub struct ModelStage {
    id: String,
    graph: Graph,
}

impl ModelStage {
    pub fn new(id: impl Into<String>, graph: Graph) -> Self {
        Self {
            id: id.into(),
            graph,
        }
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }
}

impl Stage for ModelStage {
    fn id(&self) -> &str {
        &self.id
    }

    fn model(&self) -> Option<&str> {
        Some(self.graph.name())
    }

    fn process(&mut self, mut item: Item) -> Result<Item, StageError> {
        let Payload::Tensor(input) = &item.payload else {
            return Err(StageError::WrongInput {
                expected: "tensor",
                got: item.payload.kind(),
            });
        };
        let output = self
            .graph
            .run_f32(input)
            .map_err(|e| StageError::Failed(e.to_string()))?;
        item.payload = Payload::Tensor(output);
        Ok(item)
    }
}
