//! Scheduling: what the stage thread does next. Frames wait in per-camera slots (live: the
//! newest per camera; durable: every frame, in order) and leave as batches across cameras, as
//! large and as long-waited-for as the [`Batcher`] allows; chores for the stages (ticks due,
//! cameras to forget) wake the thread between batches.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Instant;

use async_nats::jetstream::message::Acker;
use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use crate::batch::{Activity, Batcher};

/// One frame (or forwarded item) between intake and publication.
pub(super) struct Pending {
    pub(super) camera: String,
    pub(super) partition: u32,
    pub(super) payload: Bytes,
    /// Durable delivery: acknowledges the message once its results are out.
    pub(super) acker: Option<Acker>,
    /// Durable delivery: bounds the frames held in the worker.
    pub(super) _permit: Option<OwnedSemaphorePermit>,
    /// The frame's span in this worker, continuing the publisher's trace.
    pub(super) span: tracing::Span,
}

/// Work for the stages besides frames, done before the frames taken with it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Chores {
    /// Cameras forgotten by the intake (idle): the stages drop what they keep of them.
    pub(super) forget: Vec<String>,
    /// Some partition changed hands: the stages drop the cameras that went with it.
    pub(super) moved: bool,
    /// Graph nodes whose tick is due, with the time it fell due; one per node, the latest.
    pub(super) ticks: Vec<(usize, Instant)>,
    /// Partitions about to be released: their cameras' stage states are saved first.
    pub(super) hand_offs: Vec<u32>,
    /// The periodic save of every camera's stage state is due.
    pub(super) save: bool,
}

impl Chores {
    fn is_empty(&self) -> bool {
        self.forget.is_empty()
            && !self.moved
            && self.ticks.is_empty()
            && self.hand_offs.is_empty()
            && !self.save
    }
}

/// What [`Slots::take`] hands the stage thread: chores first, then a batch of frames (one per
/// camera; empty when only chores woke it).
pub(super) struct Work {
    pub(super) chores: Chores,
    pub(super) frames: Vec<Pending>,
}

/// Pending frames per camera, served round-robin across cameras. Live: at most one per
/// camera (the newest); durable: a queue per camera (bounded by the intake's permits).
pub(super) struct Slots {
    inner: Mutex<SlotsInner>,
    ready: Condvar,
    newest_only: bool,
}

#[derive(Default)]
struct SlotsInner {
    pending: HashMap<String, VecDeque<Pending>>,
    order: VecDeque<String>,
    activity: Activity,
    chores: Chores,
    closed: bool,
}

impl SlotsInner {
    fn pop(&mut self) -> Option<Pending> {
        while let Some(camera) = self.order.pop_front() {
            let Some(queue) = self.pending.get_mut(&camera) else {
                continue;
            };
            let Some(next) = queue.pop_front() else {
                continue;
            };
            if queue.is_empty() {
                self.pending.remove(&camera);
            } else {
                // More of this camera wait; it goes to the back of the round.
                self.order.push_back(camera);
            }
            return Some(next);
        }
        None
    }
}

impl Slots {
    pub(super) fn new(newest_only: bool) -> Self {
        Self {
            inner: Mutex::default(),
            ready: Condvar::new(),
            newest_only,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotsInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores a frame; live delivery returns the one of its camera it replaced.
    pub(super) fn put(&self, pending: Pending) -> Option<Pending> {
        let mut inner = self.lock();
        let camera = pending.camera.clone();
        inner.activity.saw(&camera, Instant::now());
        let queue = inner.pending.entry(camera.clone()).or_default();
        let replaced = if self.newest_only {
            queue.pop_front()
        } else {
            None
        };
        let was_empty = queue.is_empty();
        queue.push_back(pending);
        if was_empty {
            inner.order.push_back(camera);
        }
        self.ready.notify_one();
        replaced
    }

    /// `node`'s tick fell due at `now`. A tick still waiting for the thread is moved to the
    /// later time rather than repeated: a busy thread catches up with one call.
    pub(super) fn tick(&self, node: usize, now: Instant) {
        let mut inner = self.lock();
        match inner.chores.ticks.iter_mut().find(|(n, _)| *n == node) {
            Some(due) => due.1 = now,
            None => inner.chores.ticks.push((node, now)),
        }
        self.ready.notify_one();
    }

    /// `partition` is about to be released: its cameras' states are to be saved.
    pub(super) fn hand_off(&self, partition: u32) {
        let mut inner = self.lock();
        inner.chores.hand_offs.push(partition);
        self.ready.notify_one();
    }

    /// The periodic save of stage states fell due.
    pub(super) fn save_states(&self) {
        let mut inner = self.lock();
        inner.chores.save = true;
        self.ready.notify_one();
    }

    /// Cameras the intake forgot, and whether a partition changed hands, for the stages.
    pub(super) fn forget(&self, cameras: Vec<String>, moved: bool) {
        if cameras.is_empty() && !moved {
            return;
        }
        let mut inner = self.lock();
        inner.chores.forget.extend(cameras);
        inner.chores.moved |= moved;
        self.ready.notify_one();
    }

    /// The next work: waits for a frame or a chore, then takes the chores and the frames
    /// pending, one per camera, up to the size `batcher` chose, keeping the batch open for
    /// more while `batcher` allows it and another active camera may still deliver. `None`
    /// once closed and drained.
    pub(super) fn take(&self, batcher: &Batcher) -> Option<Work> {
        let mut inner = self.lock();
        let mut batch: Vec<Pending> = Vec::new();
        let opened = loop {
            if let Some(first) = inner.pop() {
                batch.push(first);
                break Instant::now();
            }
            if !inner.chores.is_empty() {
                return Some(Work {
                    chores: std::mem::take(&mut inner.chores),
                    frames: batch,
                });
            }
            if inner.closed {
                return None;
            }
            inner = self
                .ready
                .wait(inner)
                .unwrap_or_else(PoisonError::into_inner);
        };
        let max = batcher.size_limit();
        let mut deferred = Vec::new();
        while batch.len() < max {
            if let Some(next) = inner.pop() {
                // One frame per camera per pass keeps each camera's frames in order.
                if batch.iter().any(|b| b.camera == next.camera) {
                    deferred.push(next);
                    if inner.order.is_empty() {
                        break;
                    }
                    continue;
                }
                batch.push(next);
                continue;
            }
            if inner.closed {
                break;
            }
            let now = Instant::now();
            let deadline = opened + batcher.wait_budget(batch.len());
            // Only cameras outside the batch can add to it.
            if now >= deadline || inner.activity.active(now) <= batch.len() {
                break;
            }
            inner = self
                .ready
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        // Back at the front of their queues, still first in line.
        for p in deferred.into_iter().rev() {
            let camera = p.camera.clone();
            let inner = &mut *inner;
            let queue = inner.pending.entry(camera.clone()).or_default();
            if queue.is_empty() {
                inner.order.push_front(camera);
            }
            queue.push_front(p);
        }
        Some(Work {
            chores: std::mem::take(&mut inner.chores),
            frames: batch,
        })
    }

    /// Forgets cameras not heard from for a while in the batch-closing activity.
    pub(super) fn prune(&self, now: Instant) {
        self.lock().activity.prune(now);
    }

    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use panoptes_contracts::batching::BatchPolicy;

    fn batcher(max_batch: usize, max_wait_ms: u64) -> Batcher {
        Batcher::new(BatchPolicy {
            max_batch,
            max_wait: Duration::from_millis(max_wait_ms),
            latency_target: None,
            adaptive: false,
        })
    }

    /// The frames of the next work; empty once closed.
    fn take_batch(slots: &Slots, batcher: &Batcher) -> Vec<Pending> {
        slots.take(batcher).map(|w| w.frames).unwrap_or_default()
    }

    fn cameras(batch: &[Pending]) -> Vec<&str> {
        batch.iter().map(|p| p.camera.as_str()).collect()
    }

    fn frame(camera: &str, payload: &'static [u8]) -> Pending {
        Pending {
            camera: camera.to_owned(),
            partition: 0,
            payload: Bytes::from_static(payload),
            acker: None,
            _permit: None,
            span: tracing::Span::none(),
        }
    }

    #[test]
    fn pending_frames_batch_at_once_up_to_max_batch() {
        let slots = Slots::new(true);
        for cam in ["a", "b", "c"] {
            slots.put(frame(cam, b"f"));
        }
        // Every active camera is already in the batch: it closes instead of waiting a minute
        // for a fourth frame.
        assert_eq!(
            cameras(&take_batch(&slots, &batcher(4, 60_000))),
            ["a", "b", "c"]
        );
        for cam in ["a", "b", "c"] {
            slots.put(frame(cam, b"f"));
        }
        assert_eq!(cameras(&take_batch(&slots, &batcher(2, 0))), ["a", "b"]);
        assert_eq!(cameras(&take_batch(&slots, &batcher(2, 0))), ["c"]);
    }

    #[test]
    fn a_batch_waits_for_an_active_camera_within_max_wait() {
        let slots = Arc::new(Slots::new(true));
        slots.put(frame("a", b"1"));
        slots.put(frame("b", b"1"));
        assert_eq!(take_batch(&slots, &batcher(2, 0)).len(), 2);
        // Both cameras are active; only `a` has a frame. `b` delivers while the batch waits.
        slots.put(frame("a", b"2"));
        let late = {
            let slots = slots.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                slots.put(frame("b", b"2"));
            })
        };
        let batch = take_batch(&slots, &batcher(4, 60_000));
        late.join().expect("join");
        assert_eq!(cameras(&batch), ["a", "b"]);
        // Without a wait the batch closes with what is there.
        slots.put(frame("a", b"3"));
        assert_eq!(cameras(&take_batch(&slots, &batcher(4, 0))), ["a"]);
    }

    #[test]
    fn durable_slots_keep_every_frame_in_order_one_per_camera_per_batch() {
        let slots = Slots::new(false);
        for payload in [b"1", b"2", b"3"] {
            assert!(
                slots.put(frame("a", payload)).is_none(),
                "nothing is replaced"
            );
        }
        assert!(slots.put(frame("b", b"1")).is_none());
        let payloads = |batch: &[Pending]| -> Vec<(String, Vec<u8>)> {
            batch
                .iter()
                .map(|p| (p.camera.clone(), p.payload.to_vec()))
                .collect()
        };
        let first = take_batch(&slots, &batcher(8, 0));
        assert_eq!(
            payloads(&first),
            [("a".into(), b"1".to_vec()), ("b".into(), b"1".to_vec())]
        );
        assert_eq!(
            payloads(&take_batch(&slots, &batcher(8, 0))),
            [("a".into(), b"2".to_vec())]
        );
        assert_eq!(
            payloads(&take_batch(&slots, &batcher(8, 0))),
            [("a".into(), b"3".to_vec())]
        );
        slots.close();
        assert!(slots.take(&batcher(8, 0)).is_none());
    }

    #[test]
    fn closing_ends_a_waiting_batch() {
        let slots = Arc::new(Slots::new(true));
        let closer = {
            let slots = slots.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                slots.close();
            })
        };
        assert!(slots.take(&batcher(4, 10)).is_none());
        closer.join().expect("join");
    }

    #[test]
    fn chores_wake_the_thread_without_frames_and_coalesce() {
        let slots = Slots::new(true);
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        slots.tick(2, t0);
        slots.tick(2, t1);
        slots.forget(Vec::new(), false);
        slots.forget(vec!["a".into()], false);
        let work = slots.take(&batcher(4, 0)).expect("chores");
        assert!(work.frames.is_empty());
        assert_eq!(
            work.chores,
            Chores {
                forget: vec!["a".into()],
                moved: false,
                ticks: vec![(2, t1)],
                ..Chores::default()
            }
        );
        // Chores come with the next batch, taken before its frames are processed.
        slots.put(frame("b", b"1"));
        slots.forget(Vec::new(), true);
        let work = slots.take(&batcher(4, 0)).expect("frames");
        assert_eq!(cameras(&work.frames), ["b"]);
        assert!(work.chores.moved);
        slots.close();
        assert!(slots.take(&batcher(4, 0)).is_none());
    }
}
