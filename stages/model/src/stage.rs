//! The model stage: a pipeline stage that runs a [`Graph`] on the tensors of a batch of items
//! (frames of several cameras, or the crops of a cascade) in as few inference calls as the model
//! and the batch size allow, and hands each item back its own rows of the output.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use panoptes_contracts::batching::{BatchPolicy, BatchStats};
use panoptes_contracts::stage::{Item, Payload, Stage, StageError};
use panoptes_contracts::tensor::Tensor;

use crate::crops::Crops;
use crate::graph::{Graph, TensorView};

/// Tensor in, the graph's first output out; the transform passes through. With
/// [`ModelStage::with_crops`] the input is detections instead, and the model runs on crops of
/// the frame at their boxes (a cascade).
pub struct ModelStage {
    id: String,
    graph: Graph,
    policy: Option<BatchPolicy>,
    crops: Option<Crops>,
    /// Most rows per inference call.
    max_rows: usize,
    stats: Arc<BatchStats>,
}

/// One item's input rows: `n` rows of `trailing` shape.
pub(crate) struct Rows {
    pub n: usize,
    pub trailing: Vec<usize>,
    pub data: Vec<f32>,
}

impl ModelStage {
    /// One inference call per item, as many rows as the item has.
    pub fn new(id: impl Into<String>, graph: Graph) -> Self {
        let max_rows = fixed_batch(&graph).unwrap_or(usize::MAX);
        Self {
            id: id.into(),
            graph,
            policy: None,
            crops: None,
            max_rows,
            stats: Arc::new(BatchStats::new(1)),
        }
    }

    /// Batches frames of several cameras: the worker gathers frames by `policy`, and this stage
    /// runs their tensors together, at most `max_batch` rows per call (fewer when the model's
    /// batch axis is fixed).
    pub fn with_batching(mut self, policy: BatchPolicy) -> Self {
        self.max_rows = policy
            .max_batch
            .min(fixed_batch(&self.graph).unwrap_or(usize::MAX));
        self.stats = Arc::new(BatchStats::new(self.max_rows.min(256)));
        self.policy = Some(policy);
        self
    }

    /// A cascade: the input is detections and the model runs on crops of the frame at their
    /// boxes (all crops of all items of a batch together). The boxes go along as the item's
    /// `regions`, so the next postprocessor can attach its result to each.
    pub fn with_crops(mut self, crops: Crops) -> Self {
        self.crops = Some(crops);
        self
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Counters of the inference calls this stage made (sizes in rows).
    pub fn stats(&self) -> Arc<BatchStats> {
        self.stats.clone()
    }

    fn wrong_input(item: &Item, expected: &'static str) -> StageError {
        StageError::WrongInput {
            expected,
            got: item.payload.kind(),
        }
    }

    /// The item's tensor as rows, taking its data out of the item.
    fn rows_of(&self, item: &mut Item) -> Result<Rows, StageError> {
        let Payload::Tensor(t) = &mut item.payload else {
            return Err(Self::wrong_input(item, "tensor"));
        };
        let rank = self.graph.inputs().first().map_or(0, |i| i.shape.len());
        let data = std::mem::take(&mut t.data);
        let shape = std::mem::take(&mut t.shape);
        if rank > 0 && shape.len() + 1 == rank {
            // No batch axis (`[C, H, W]` for an `[N, C, H, W]` model): one row.
            return Ok(Rows {
                n: 1,
                trailing: shape,
                data,
            });
        }
        match shape.split_first() {
            Some((&n, trailing)) => Ok(Rows {
                n,
                trailing: trailing.to_vec(),
                data,
            }),
            None => Err(StageError::InvalidInput(format!(
                "model `{}` needs a tensor with a batch axis, got a scalar",
                self.graph.name()
            ))),
        }
    }

    /// Runs rows `ranges` (item index, first row, row count) of `rows` in one call, returning
    /// the first output's rows in the same order and their trailing shape.
    fn run_chunk(
        &self,
        rows: &[Option<Rows>],
        items: &[Result<Item, StageError>],
        chunk: &[(usize, usize, usize)],
    ) -> Result<(Vec<usize>, Vec<f32>), String> {
        let total: usize = chunk.iter().map(|c| c.2).sum();
        let Some(first) = chunk.first().and_then(|c| rows[c.0].as_ref()) else {
            return Err("empty batch".into());
        };
        let row_len: usize = first.trailing.iter().product();
        let mut shape = Vec::with_capacity(first.trailing.len() + 1);
        shape.push(total);
        shape.extend_from_slice(&first.trailing);
        // One whole item: its data goes in as it is, without a copy.
        let owned;
        let data: &[f32] = match chunk {
            [(i, 0, n)] if rows[*i].as_ref().is_some_and(|r| r.n == *n) => {
                rows[*i].as_ref().map_or(&[][..], |r| r.data.as_slice())
            }
            _ => {
                let mut joined = Vec::with_capacity(total * row_len);
                for &(i, start, n) in chunk {
                    if let Some(r) = &rows[i] {
                        joined.extend_from_slice(&r.data[start * row_len..(start + n) * row_len]);
                    }
                }
                owned = joined;
                &owned
            }
        };
        // One span per inference call, in the trace of the first item of the chunk (a child of
        // its stage span) and linked to the stage span of every item in it, so each frame's
        // trace leads to the call that served it.
        let parent = chunk
            .iter()
            .find_map(|&(i, _, _)| items[i].as_ref().ok().map(|item| item.span.clone()))
            .unwrap_or_else(tracing::Span::none);
        let span = tracing::info_span!(
            target: "panoptes::trace",
            parent: &parent,
            "batch",
            stage = %self.id,
            model = %self.graph.name(),
            device = %self.graph.device(),
            backend = %self.graph.backend(),
            batch_size = total,
            items = chunk.len(),
        );
        for &(i, _, _) in chunk {
            if let Ok(item) = &items[i] {
                span.follows_from(item.span.id());
            }
        }
        let _entered = span.enter();
        let started = Instant::now();
        let out = self
            .graph
            .run_first_f32(TensorView::from_f32(&shape, data))
            .map_err(|e| e.to_string())?;
        let elapsed = started.elapsed();
        self.stats.record(total, elapsed);
        let labels = [
            ("stage", self.id.clone()),
            ("model", self.graph.name().to_owned()),
        ];
        metrics::histogram!(panoptes_contracts::meter::MODEL_BATCH_ROWS, &labels)
            .record(total as f64);
        metrics::histogram!(panoptes_contracts::meter::MODEL_SECONDS, &labels)
            .record(elapsed.as_secs_f64());
        match out.shape.split_first() {
            Some((&n, trailing)) if n == total => Ok((trailing.to_vec(), out.data)),
            _ => Err(format!(
                "model `{}` returned shape {:?} for a batch of {total}",
                self.graph.name(),
                out.shape
            )),
        }
    }
}

/// The model's batch size when its first input fixes it.
fn fixed_batch(graph: &Graph) -> Option<usize> {
    graph
        .inputs()
        .first()
        .and_then(|i| i.shape.first().copied().flatten())
        .filter(|n| *n > 0)
}

impl Stage for ModelStage {
    fn id(&self) -> &str {
        &self.id
    }

    fn model(&self) -> Option<&str> {
        Some(self.graph.name())
    }

    fn batching(&self) -> Option<BatchPolicy> {
        // A cascade batches the crops of whatever frames arrive together; its max_batch counts
        // crops, not frames, so it does not make the worker gather more frames.
        self.policy.filter(|_| self.crops.is_none())
    }

    fn process(&mut self, item: Item) -> Result<Item, StageError> {
        self.process_batch(vec![item])
            .pop()
            .unwrap_or_else(|| Err(StageError::Failed("no result".into())))
    }

    fn process_batch(&mut self, items: Vec<Item>) -> Vec<Result<Item, StageError>> {
        let mut items: Vec<Result<Item, StageError>> = items.into_iter().map(Ok).collect();
        let rows: Vec<Option<Rows>> = match &mut self.crops {
            Some(crops) => crops.cut(&mut items),
            None => {
                let mut rows = Vec::with_capacity(items.len());
                for slot in &mut items {
                    let r = match slot {
                        Ok(item) => self.rows_of(item),
                        Err(_) => {
                            rows.push(None);
                            continue;
                        }
                    };
                    match r {
                        Ok(r) => rows.push(Some(r)),
                        Err(e) => {
                            *slot = Err(e);
                            rows.push(None);
                        }
                    }
                }
                rows
            }
        };

        // Items whose rows have the same shape run together, in input order.
        let mut groups: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
        let mut group_of: HashMap<Vec<usize>, usize> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            let Some(r) = r else { continue };
            let g = *group_of.entry(r.trailing.clone()).or_insert_with(|| {
                groups.push((r.trailing.clone(), Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(i);
        }

        let mut outputs: Vec<Option<(Vec<usize>, Vec<f32>)>> =
            (0..items.len()).map(|_| None).collect();
        let mut failures: Vec<Option<String>> = vec![None; items.len()];
        let max_rows = self.max_rows.max(1);
        for (_, members) in &groups {
            // Cut the group's rows into calls of at most `max_rows`; an item may span calls.
            let mut chunks: Vec<Vec<(usize, usize, usize)>> = Vec::new();
            let mut current = Vec::new();
            let mut filled = 0;
            for &i in members {
                let n = rows[i].as_ref().map_or(0, |r| r.n);
                let mut start = 0;
                while start < n {
                    let take = (n - start).min(max_rows - filled);
                    current.push((i, start, take));
                    start += take;
                    filled += take;
                    if filled == max_rows {
                        chunks.push(std::mem::take(&mut current));
                        filled = 0;
                    }
                }
            }
            if !current.is_empty() {
                chunks.push(current);
            }
            for chunk in chunks {
                match self.run_chunk(&rows, &items, &chunk) {
                    Ok((trailing, data)) => {
                        let row_len: usize = trailing.iter().product();
                        let mut offset = 0;
                        for &(i, _, n) in &chunk {
                            let part = &data[offset * row_len..(offset + n) * row_len];
                            offset += n;
                            let out =
                                outputs[i].get_or_insert_with(|| (trailing.clone(), Vec::new()));
                            if out.0 != trailing {
                                failures[i] = Some(format!(
                                    "model `{}` gave rows of shape {:?} and {:?} for one item",
                                    self.graph.name(),
                                    out.0,
                                    trailing
                                ));
                            }
                            out.1.extend_from_slice(part);
                        }
                    }
                    Err(message) => {
                        for &(i, _, _) in &chunk {
                            failures[i] = Some(message.clone());
                        }
                    }
                }
            }
        }

        let empty_trailing = || -> Vec<usize> {
            self.graph
                .outputs()
                .first()
                .map(|o| o.shape.iter().skip(1).map(|d| d.unwrap_or(0)).collect())
                .unwrap_or_default()
        };
        items
            .into_iter()
            .zip(rows)
            .zip(outputs.into_iter().zip(failures))
            .map(|((item, rows), (output, failure))| {
                let mut item = item?;
                if let Some(message) = failure {
                    return Err(StageError::Failed(message));
                }
                let Some(rows) = rows else {
                    return Err(StageError::Failed("the item has no input rows".into()));
                };
                let (trailing, data) = output.unwrap_or_else(|| (empty_trailing(), Vec::new()));
                let mut shape = Vec::with_capacity(trailing.len() + 1);
                shape.push(rows.n);
                shape.extend(trailing);
                let tensor =
                    Tensor::new(shape, data).map_err(|e| StageError::Failed(e.to_string()))?;
                item.payload = Payload::Tensor(tensor);
                Ok(item)
            })
            .collect()
    }
}
