//! Plans: which stages one worker runs, in what order, reading what, and what it publishes
//! and forwards, for the whole topology and for `--stages` splits.

use std::path::PathBuf;

use panoptes_contracts::stage::Input;
use panoptes_topology::{Plan, PlanError, TopologyFile};

fn load(relative: &str) -> TopologyFile {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative);
    let text = std::fs::read_to_string(&path).expect("fixture");
    let base = path.parent().map(PathBuf::from).unwrap_or_default();
    TopologyFile::parse(&text, relative, &base, &|_: &str| None).unwrap_or_else(|d| panic!("{d}"))
}

fn only(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

/// Each step as `id<-input`, the input being a step's ID or the unit's input.
fn steps(plan: &Plan<'_>) -> Vec<String> {
    plan.steps
        .iter()
        .map(|s| {
            let from = match s.input {
                Some(i) => plan.steps[i].stage.id().to_owned(),
                None => format!("[{}]", plan.input),
            };
            format!("{}<-{from}", s.stage.id())
        })
        .collect()
}

#[test]
fn a_whole_topology_builds_each_stage_after_the_one_it_reads() {
    let t = load("tests/plans/fanout.yaml");
    let plan = Plan::new(&t, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plan.input, Input::Frames);
    assert_eq!(plan.name, "boxes_pre_detect");
    assert_eq!(
        steps(&plan),
        ["pre<-[frames]", "detect<-pre", "boxes<-detect"]
    );
    let sinks: Vec<(&str, &str)> = plan
        .sinks
        .iter()
        .map(|(step, sink)| (plan.steps[*step].stage.id(), sink.id.as_str()))
        .collect();
    assert_eq!(sinks, [("boxes", "alerts"), ("boxes", "out")]);
    assert!(plan.forwards.is_empty());
}

#[test]
fn a_split_forwards_what_the_other_process_reads_and_reads_what_it_forwards() {
    let t = load("../topologies/distributed.yaml");
    let first = Plan::new(&t, Some(&only(&["decode", "preprocess"]))).expect("plan");
    assert_eq!(first.input, Input::Frames);
    assert_eq!(first.name, "decode_preprocess");
    assert_eq!(steps(&first), ["decode<-[frames]", "preprocess<-decode"]);
    assert_eq!(first.forwards, [1]);

    let second = Plan::new(&t, Some(&only(&["detect", "text-boxes"]))).expect("plan");
    assert_eq!(second.input, Input::Stage("preprocess".into()));
    assert_eq!(second.name, "detect_text-boxes");
    assert_eq!(
        steps(&second),
        ["detect<-[preprocess]", "text-boxes<-detect"]
    );
    assert!(second.forwards.is_empty());
}

#[test]
fn selections_that_cannot_run_in_one_worker_are_refused_by_name() {
    let t = load("../topologies/distributed.yaml");
    let known = only(&["decode", "preprocess", "detect", "text-boxes"]);
    assert_eq!(
        Plan::new(&t, Some(&[])).err(),
        Some(PlanError::NoneSelected {
            known: known.clone()
        })
    );
    let err = Plan::new(&t, Some(&only(&["detect", "ocr"]))).err();
    assert_eq!(
        err,
        Some(PlanError::UnknownStage {
            id: "ocr".into(),
            known
        })
    );
    let err = Plan::new(&t, Some(&only(&["decode", "detect"])))
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some(
            "the stages of one worker must start from one input; these start from `frames` and `preprocess`: run them in separate workers"
        )
    );
}
