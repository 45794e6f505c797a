//! Tests of the stage lifecycle as the worker drives it: a stage that records its calls, run
//! on the stage thread with its ticks on tokio's paused clock.

use std::sync::Mutex;

use super::*;
use panoptes_contracts::partition::PartitionSet;
use panoptes_contracts::stage::{FrameMeta, Payload, Stage};
use panoptes_contracts::tensor::Transform;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Start(&'static str),
    Item(&'static str, u64),
    Tick(&'static str, Instant),
    Forget(&'static str, String),
    Stop(&'static str),
}

type Log = Arc<Mutex<Vec<Call>>>;

fn calls(log: &Log) -> Vec<Call> {
    log.lock().map(|l| l.clone()).unwrap_or_default()
}

/// Records every call into the shared log and passes items on; a ticking one emits an
/// item of camera `cam` per tick (seq 1001, 1002, …).
struct Recorder {
    id: &'static str,
    log: Log,
    every: Option<Duration>,
    ticks: u64,
    refuse_start: bool,
}

impl Recorder {
    fn new(id: &'static str, log: &Log) -> Self {
        Self {
            id,
            log: log.clone(),
            every: None,
            ticks: 0,
            refuse_start: false,
        }
    }

    fn record(&self, call: Call) {
        if let Ok(mut log) = self.log.lock() {
            log.push(call);
        }
    }
}

impl Stage for Recorder {
    fn id(&self) -> &str {
        self.id
    }
    fn start(&mut self) -> Result<(), StageError> {
        self.record(Call::Start(self.id));
        match self.refuse_start {
            true => Err(StageError::Failed("no device".into())),
            false => Ok(()),
        }
    }
    fn process(&mut self, item: Item) -> Result<Item, StageError> {
        self.record(Call::Item(self.id, item.frame.seq));
        Ok(item)
    }
    fn tick_interval(&self) -> Option<Duration> {
        self.every
    }
    fn tick(&mut self, now: Instant) -> Vec<Item> {
        self.record(Call::Tick(self.id, now));
        self.ticks += 1;
        vec![item("cam", 1000 + self.ticks)]
    }
    fn forget(&mut self, camera: &CameraId) {
        self.record(Call::Forget(self.id, camera.to_string()));
    }
    fn stop(&mut self) {
        self.record(Call::Stop(self.id));
    }
}

fn item(camera: &str, seq: u64) -> Item {
    Item {
        frame: FrameMeta {
            camera: CameraId::new(camera).expect("camera id"),
            seq,
            capture_ts_ns: seq,
            width: 4,
            height: 4,
        },
        payload: Payload::Detections(Vec::new()),
        transform: Transform::IDENTITY,
        source: None,
        regions: None,
        span: tracing::Span::none(),
    }
}

/// `item(camera, seq)` as a stage of another process forwards it.
fn pending(camera: &str, seq: u64) -> Pending {
    Pending {
        camera: camera.into(),
        partition: 0,
        payload: panoptes_contracts::envelope::encode(&item(camera, seq)).expect("encode"),
        acker: None,
        _permit: None,
        span: tracing::Span::none(),
    }
}

/// Stage `a` → stage `b`, which publishes detections; reads items of stage `up`.
fn chain(a: Recorder, b: Recorder) -> (Chain, Arc<Slots>, mpsc::Receiver<Outbound>) {
    let mut graph = StageGraph::new();
    let a = graph.add(Box::new(a), None).expect("a");
    graph.add(Box::new(b), Some(a)).expect("b");
    chain_of(graph)
}

/// `graph` as the worker runs it, reading items of stage `up`, with its slots and where its
/// publications go.
fn chain_of(graph: StageGraph) -> (Chain, Arc<Slots>, mpsc::Receiver<Outbound>) {
    let (tx, rx) = mpsc::channel(64);
    let all = PartitionSet::all(1).expect("one partition");
    let chain = Chain::new(
        graph,
        Subjects::new("ns"),
        Arc::default(),
        Arc::new(Ownership::fixed(&all)),
        Input::Stage("up".into()),
        tx,
        None,
    );
    (chain, Arc::new(Slots::new(false)), rx)
}

/// The next message from the stage thread. Waits in real time (the thread is not on the
/// runtime's clock) and only yields meanwhile, so a paused clock does not move.
async fn next(rx: &mut mpsc::Receiver<Outbound>) -> Outbound {
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(out) = rx.try_recv() {
            return out;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "the stage thread sent nothing"
        );
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The camera and the subjects of one message's publications (`b` publishes detections).
fn published(out: Outbound) -> (String, Vec<String>) {
    let (camera, results) = match out {
        Outbound::Frame {
            pending, results, ..
        } => (pending.camera, results),
        Outbound::Emitted { camera, results } => (camera, results),
        _ => panic!("expected results"),
    };
    let subjects = results
        .into_iter()
        .map(|r| match r {
            Ok(p) if p.destination == Destination::Detections => p.subject,
            _ => panic!("expected detections"),
        })
        .collect();
    (camera, subjects)
}

#[tokio::test]
async fn stages_start_before_the_first_item_and_stop_after_the_last() {
    let log = Log::default();
    let (chain, slots, mut rx) = chain(Recorder::new("a", &log), Recorder::new("b", &log));
    // Frames wait before the thread exists: still no stage sees one before all started.
    slots.put(pending("cam", 1));
    slots.put(pending("cam", 2));
    let stages = chain.spawn(slots.clone()).await.expect("stages start");
    for _ in 0..2 {
        let subjects = vec!["ns.detections.cam".to_owned()];
        assert_eq!(published(next(&mut rx).await), ("cam".into(), subjects));
    }
    // Forgetting reaches only cameras the stages saw.
    slots.forget(vec!["cam".into(), "other".into()], false);
    slots.put(pending("cam", 3));
    next(&mut rx).await;
    stages.finish(&slots).await.expect("finish");
    use Call::*;
    assert_eq!(
        calls(&log),
        [
            Start("a"),
            Start("b"),
            Item("a", 1),
            Item("b", 1),
            Item("a", 2),
            Item("b", 2),
            Forget("a", "cam".into()),
            Forget("b", "cam".into()),
            Item("a", 3),
            Item("b", 3),
            Stop("b"),
            Stop("a"),
        ]
    );
}

#[tokio::test]
async fn a_stage_that_cannot_start_fails_the_worker_naming_it() {
    let log = Log::default();
    let b = Recorder {
        refuse_start: true,
        ..Recorder::new("b", &log)
    };
    let (chain, slots, _rx) = chain(Recorder::new("a", &log), b);
    slots.put(pending("cam", 1));
    let err = chain.spawn(slots).await.err().expect("b does not start");
    assert!(
        matches!(&err, WorkerError::StageStart { stage, .. } if stage == "b"),
        "{err}"
    );
    assert!(err.to_string().contains("no device"), "{err}");
    use Call::*;
    assert_eq!(calls(&log), [Start("a"), Start("b"), Stop("a")]);
}

#[tokio::test(start_paused = true)]
async fn ticks_follow_the_runtime_clock_and_their_items_reach_the_successor() {
    let log = Log::default();
    let every = Duration::from_secs(10);
    let a = Recorder {
        every: Some(every),
        ..Recorder::new("a", &log)
    };
    let (chain, slots, mut rx) = chain(a, Recorder::new("b", &log));
    let t0 = tokio::time::Instant::now();
    let mut stages = chain.spawn(slots.clone()).await.expect("stages start");
    stages.start_ticks(&slots);
    for _ in 0..2 {
        tokio::time::advance(every).await;
        let subjects = vec!["ns.detections.cam".to_owned()];
        assert_eq!(published(next(&mut rx).await), ("cam".into(), subjects));
    }
    stages.finish(&slots).await.expect("finish");
    let at = |k: u32| (t0 + every * k).into_std();
    use Call::*;
    assert_eq!(
        calls(&log),
        [
            Start("a"),
            Start("b"),
            Tick("a", at(1)),
            Item("b", 1001),
            Tick("a", at(2)),
            Item("b", 1002),
            Stop("b"),
            Stop("a"),
        ]
    );
}

/// Adds a box labelled `x` at `[x, x, x + 2, x + 2]` to each item's detections for `every`
/// and `odd` (odd seqs only); fails seq `fail_on`.
struct Boxes {
    id: &'static str,
    every: Option<f32>,
    odd: Option<f32>,
    fail_on: Option<u64>,
}

impl Stage for Boxes {
    fn id(&self) -> &str {
        self.id
    }
    fn process(&mut self, mut item: Item) -> Result<Item, StageError> {
        let seq = item.frame.seq;
        if self.fail_on == Some(seq) {
            return Err(StageError::Trap("deliberate".into()));
        }
        let boxed = |x: f32| panoptes_contracts::Detection {
            bbox: [x, x, x + 2.0, x + 2.0],
            polygon: None,
            label: "x".into(),
            score: 1.0,
            text: None,
            track: None,
        };
        if let Payload::Detections(d) = &mut item.payload {
            d.extend(self.every.map(boxed));
            if seq % 2 == 1 {
                d.extend(self.odd.map(boxed));
            }
        }
        Ok(item)
    }
}

#[tokio::test]
async fn a_shadow_is_compared_at_the_live_node_its_copies_lead_to_and_never_changes_live_results() {
    use panoptes_contracts::shadow::{ShadowMessage, ShadowOutcome};
    let log = Log::default();
    let mut graph = StageGraph::new();
    let a = graph
        .add(Box::new(Recorder::new("a", &log)), None)
        .expect("a");
    let b = graph
        .add(
            Box::new(Boxes {
                id: "b",
                every: Some(0.0),
                odd: None,
                fail_on: None,
            }),
            Some(a),
        )
        .expect("b");
    // The candidate for `a` adds a box on odd frames and traps on frame 5; a copy of `b`
    // follows it, and the comparison is at `b`.
    let candidate = Boxes {
        id: "a/shadow",
        every: None,
        odd: Some(50.0),
        fail_on: Some(5),
    };
    let candidate = crate::shadow::Shadow::new(
        vec![
            Box::new(candidate),
            Box::new(Boxes {
                id: "b/shadow",
                every: Some(0.0),
                odd: None,
                fail_on: None,
            }),
        ],
        1.0,
    );
    // One stage short of `b` is refused.
    let short = crate::shadow::Shadow::new(vec![Box::new(Recorder::new("c", &log))], 1.0);
    assert!(graph.shadow(a, b, short).is_err());
    graph.shadow(a, b, candidate).expect("shadow");
    let (chain, slots, mut rx) = chain_of(graph);
    let (reports_tx, mut reports) = mpsc::channel(64);
    let chain = chain.shadowing(&reports_tx);
    drop(reports_tx);
    let stages = chain.spawn(slots.clone()).await.expect("stages start");
    for seq in 1..=6 {
        slots.put(pending("cam", seq));
        // Live: every frame published, with the live stage's one box.
        let Outbound::Frame {
            results, seq: s, ..
        } = next(&mut rx).await
        else {
            panic!("expected a frame's results");
        };
        assert_eq!(s, Some(seq));
        let [Ok(publication)] = results.as_slice() else {
            panic!("expected one publication");
        };
        let message: panoptes_contracts::DetectionMessage =
            serde_json::from_slice(&publication.body).expect("detections");
        assert_eq!(message.detections.len(), 1, "{message:?}");
    }
    stages.finish(&slots).await.expect("finish");
    let mut outcomes = Vec::new();
    while let Ok((subject, body)) = reports.try_recv() {
        assert_eq!(subject, "ns.shadow.a.cam");
        let m: ShadowMessage = serde_json::from_slice(&body).expect("shadow/v1");
        assert_eq!(m.compared, "detections");
        outcomes.push((m.seq, m.outcome, m.added.len(), m.error.is_some()));
    }
    // A batch may be skipped if the candidate lagged; those it ran are judged right.
    assert!(!outcomes.is_empty());
    for (seq, outcome, added, error) in outcomes {
        let want = match seq {
            5 => (ShadowOutcome::Fault, 0, true),
            s if s % 2 == 1 => (ShadowOutcome::Differ, 1, false),
            _ => (ShadowOutcome::Agree, 0, false),
        };
        assert_eq!((outcome, added, error), want, "seq {seq}");
    }
}
