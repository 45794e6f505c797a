//! Keeping per-camera stage state across owners, on the stage thread: when a camera's tenure
//! here begins, its ID range is claimed and every stateful stage restores what the previous
//! owner saved; states are saved periodically, for a partition about to be released, and at
//! the end; a camera forgotten for silence takes its saved states with it.

use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::graph::StageGraph;
use crate::state::{StateStore, StateWrite};
use panoptes_contracts::camera::CameraId;
use panoptes_contracts::event::{Event, EventKind};
use panoptes_contracts::meter;
use panoptes_contracts::stage::IdRange;

pub(super) struct Keeper {
    /// `None` without JetStream: every tenure is the first (IDs restart with the process)
    /// and nothing is saved.
    store: Option<StateStore>,
    handle: Handle,
    writes: mpsc::UnboundedSender<StateWrite>,
    /// Graph nodes whose stages keep state.
    nodes: Vec<usize>,
}

impl Keeper {
    pub(super) fn new(
        store: Option<StateStore>,
        writes: mpsc::UnboundedSender<StateWrite>,
        graph: &StageGraph,
    ) -> Option<Self> {
        let nodes: Vec<usize> = graph
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.stage.snapshot_interval().is_some())
            .map(|(i, _)| i)
            .collect();
        if nodes.is_empty() {
            return None;
        }
        Some(Self {
            store,
            handle: Handle::current(),
            writes,
            nodes,
        })
    }

    /// `camera`'s tenure here begins: claims its ID range and restores each stateful stage
    /// from its saved state. Returns the events to report (a state that could not be used).
    pub(super) fn begin(&self, graph: &mut StageGraph, camera: &CameraId) -> Vec<Event> {
        let mut events = Vec::new();
        let ids = match &self.store {
            None => IdRange::of_tenure(0),
            Some(store) => match self.handle.block_on(store.claim(camera.as_str())) {
                Ok(ids) => ids,
                Err(e) => {
                    // No claim: a tenure far above any claimed one, picked at random, keeps
                    // a collision unlikely rather than impossible; said so in the log.
                    let tenure = (1u64 << 20)
                        + (panoptes_contracts::time::now_ns() ^ u64::from(std::process::id()))
                            % (1 << 20);
                    tracing::error!(camera = %camera, error = %e, tenure, "cannot claim a tenure; IDs come from a random range");
                    IdRange::of_tenure(tenure)
                }
            },
        };
        for &node in &self.nodes {
            let stage = &mut graph.nodes[node].stage;
            let saved = match &self.store {
                None => None,
                Some(store) => {
                    let key = store.key(stage.id(), camera.as_str());
                    match self.handle.block_on(store.load(&key)) {
                        Ok(saved) => saved,
                        Err(e) => {
                            events.push(
                                Event::new(
                                    camera.as_str(),
                                    EventKind::StateDiscarded,
                                    format!("saved state not read, starting afresh: {e}"),
                                )
                                .stage(stage.id()),
                            );
                            None
                        }
                    }
                }
            };
            if let Err(e) = stage.restore(camera, saved.as_deref(), ids) {
                metrics::counter!(meter::STATE_DISCARDED, "stage" => stage.id().to_owned())
                    .increment(1);
                tracing::warn!(camera = %camera, stage = stage.id(), error = %e, "saved state discarded");
                events.push(
                    Event::new(
                        camera.as_str(),
                        EventKind::StateDiscarded,
                        format!("saved state discarded, starting afresh: {e}"),
                    )
                    .stage(stage.id()),
                );
                if let Err(e) = stage.restore(camera, None, ids) {
                    tracing::error!(camera = %camera, stage = stage.id(), error = %e, "stage refused a fresh start");
                }
            }
        }
        events
    }

    /// Queues the states of `cameras` for saving.
    pub(super) fn save<'a>(&self, graph: &StageGraph, cameras: impl Iterator<Item = &'a str>) {
        let Some(store) = &self.store else {
            return;
        };
        for camera in cameras {
            let Ok(id) = CameraId::new(camera) else {
                continue;
            };
            for &node in &self.nodes {
                let stage = &graph.nodes[node].stage;
                if let Some(state) = stage.snapshot(&id) {
                    let key = store.key(stage.id(), camera);
                    let _ = self.writes.send(StateWrite::Save { key, state });
                }
            }
        }
    }

    /// `camera` went silent and is forgotten: its saved states go too.
    pub(super) fn remove(&self, graph: &StageGraph, camera: &str) {
        let Some(store) = &self.store else {
            return;
        };
        for &node in &self.nodes {
            let key = store.key(graph.nodes[node].stage.id(), camera);
            let _ = self.writes.send(StateWrite::Remove { key });
        }
    }

    /// Every state of `partition` is queued: its release goes on once they are written.
    pub(super) fn handed_off(&self, partition: u32) {
        let _ = self.writes.send(StateWrite::HandedOff(partition));
    }
}
