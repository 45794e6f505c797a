//! Labels named by zones, lines and output filters against the labels the topology's stages can
//! give: a label no stage gives never matches, so it is almost always a typo.

use std::collections::BTreeSet;

use panoptes_topology::{Diagnostic, FRAMES, PathSeg, Postprocessor, StageConfig, TopologyFile};

/// What the detection stages of `t` can label objects with; `None` when that cannot be known
/// without running them (an operator that hands detections on, labels in a model's metadata,
/// numbered classes).
pub(super) fn producible(t: &TopologyFile) -> Option<BTreeSet<String>> {
    let inputs = t.stage_inputs();
    let index = |id: &str| t.stages.iter().position(|s| s.id() == id);
    let mut labels = BTreeSet::new();
    for (i, stage) in t.stages.iter().enumerate() {
        match stage {
            StageConfig::Postprocess(p) => match (p.postprocessor, &p.label) {
                // `label` replaces the class names; for `ctc` it labels whole-frame readings,
                // and regions keep the label another stage gave them.
                (_, Some(label)) => {
                    labels.insert(label.clone());
                }
                (Postprocessor::Db | Postprocessor::Ctc, None) => {
                    labels.insert("text".to_owned());
                }
                (Postprocessor::Yolo | Postprocessor::Topk, None) => {
                    labels.extend(model_labels(t, &inputs, i)?);
                }
            },
            // An operator that reads another stage's detections may label them as it likes
            // (a relabeller, an alert rule); one reading frames or tensors gives none unless a
            // tracker or analytics stage reads it, which only detections would satisfy.
            StageConfig::Operator(_) => {
                let input = inputs[i];
                if input != FRAMES
                    && let Some(j) = index(input)
                    && matches!(
                        t.stages[j],
                        StageConfig::Postprocess(_)
                            | StageConfig::Tracker(_)
                            | StageConfig::Analytics(_)
                            | StageConfig::Operator(_)
                    )
                    && !matches!(t.stages[j], StageConfig::Operator(_) if inputs[j] == FRAMES)
                {
                    return None;
                }
            }
            StageConfig::Tracker(_) | StageConfig::Analytics(_) | StageConfig::Sink(_) => {
                let input = inputs[i];
                if input != FRAMES
                    && let Some(j) = index(input)
                    && matches!(t.stages[j], StageConfig::Operator(_))
                {
                    return None;
                }
            }
            StageConfig::Model(_) => {}
        }
    }
    Some(labels)
}

/// The class names of the model stage nearest upstream of stage `i`, from its manifest.
fn model_labels(t: &TopologyFile, inputs: &[&str], mut i: usize) -> Option<Vec<String>> {
    let model = loop {
        let input = inputs[i];
        if input == FRAMES {
            return None;
        }
        i = t.stages.iter().position(|s| s.id() == input)?;
        if let StageConfig::Model(m) = &t.stages[i] {
            break m;
        }
    };
    let resolved = panoptes_model::build::resolve_model(t, &model.model).ok()?;
    resolved.manifest?.labels_without_model().ok()?
}

/// Every label of a zone, line or output filter that no stage gives, located.
pub fn unknown_labels(t: &TopologyFile) -> Vec<Diagnostic> {
    let Some(known) = producible(t) else {
        return Vec::new();
    };
    let listed = known.iter().cloned().collect::<Vec<_>>().join(", ");
    let mut out = Vec::new();
    let mut check = |label: &str, path: Vec<PathSeg>| {
        if !known.contains(label) {
            out.push(
                t.diagnostic_at(
                    &path,
                    format!("no stage of this topology labels objects `{label}`"),
                )
                .label("never matches")
                .help(format!(
                    "the labels its stages give: {listed} (a model's class names from its \
                     manifest, or a postprocess stage's `label`)"
                )),
            );
        }
    };
    for (c, cam) in t.cameras.iter().enumerate() {
        for (key, places) in [
            (
                "zones",
                cam.zones.iter().map(|z| &z.labels).collect::<Vec<_>>(),
            ),
            ("lines", cam.lines.iter().map(|l| &l.labels).collect()),
        ] {
            for (p, labels) in places.into_iter().enumerate() {
                for (k, label) in labels.iter().enumerate() {
                    check(
                        label,
                        vec![
                            "cameras".into(),
                            c.into(),
                            key.into(),
                            p.into(),
                            "labels".into(),
                            k.into(),
                        ],
                    );
                }
            }
        }
    }
    for (o, output) in t.outputs.iter().enumerate() {
        for (k, label) in output.filter().labels.iter().enumerate() {
            check(
                label,
                vec![
                    "outputs".into(),
                    o.into(),
                    "filter".into(),
                    "labels".into(),
                    k.into(),
                ],
            );
        }
    }
    out
}
