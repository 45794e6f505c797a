//! The edges between stages: every input names a stage (or `frames`), no stage reads itself,
//! there are no cycles, each stage takes what its input gives, and every branch ends in
//! detections.

use std::collections::HashMap;

use super::{Checker, Flow, StageInfo};
use crate::config::FRAMES;
use crate::diagnostic::Diagnostic;
use crate::schema_check::did_you_mean;

impl Checker<'_> {
    pub(super) fn edges(&mut self, infos: &[StageInfo<'_>]) {
        // The first stage with an ID wins; a duplicate is reported on its own.
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, s) in infos.iter().enumerate() {
            index.entry(s.id).or_insert(i);
        }
        let mut parent: Vec<Option<usize>> = vec![None; infos.len()];
        let mut known = vec![true; infos.len()];
        for (i, s) in infos.iter().enumerate() {
            if s.input == FRAMES {
                continue;
            }
            match index.get(s.input) {
                Some(&p) if p == i => {
                    known[i] = false;
                    self.out.push(
                        Diagnostic::at(
                            s.input_span.unwrap_or(s.id_span),
                            format!("stage `{}` reads its own output", s.id),
                        )
                        .label("a stage cannot be its own input"),
                    );
                }
                Some(&p) => parent[i] = Some(p),
                None => {
                    known[i] = false;
                    let names: Vec<&str> = std::iter::once(FRAMES)
                        .chain(infos.iter().map(|s| s.id))
                        .collect();
                    let mut d = Diagnostic::at(
                        s.input_span.unwrap_or(s.id_span),
                        format!(
                            "stage `{}` reads from `{}`, which is not a stage",
                            s.id, s.input
                        ),
                    )
                    .label("unknown input");
                    d = match did_you_mean(s.input, names.iter().copied()) {
                        Some(best) => d.help(format!("did you mean `{best}`?")),
                        None => d.help(format!(
                            "inputs are `frames` or a stage ID: {}",
                            names.join(", ")
                        )),
                    };
                    self.out.push(d);
                }
            }
        }
        // Cycles: follow inputs from each stage; reaching it again is a loop no frame enters.
        let mut reported = vec![false; infos.len()];
        for start in 0..infos.len() {
            let mut seen = vec![start];
            let mut at = start;
            while let Some(p) = parent[at] {
                if p == start {
                    if !seen.iter().any(|i| reported[*i]) {
                        for i in &seen {
                            reported[*i] = true;
                        }
                        let names: Vec<&str> = seen.iter().rev().map(|i| infos[*i].id).collect();
                        let s = &infos[start];
                        self.out.push(
                            Diagnostic::at(
                                s.input_span.unwrap_or(s.id_span),
                                format!(
                                    "stages form a cycle: {} → {}",
                                    names.join(" → "),
                                    names[0]
                                ),
                            )
                            .label("this input closes the cycle")
                            .help(
                                "one stage in the cycle must read `frames` or a stage outside it",
                            ),
                        );
                    }
                    break;
                }
                if seen.contains(&p) || seen.len() > infos.len() {
                    break;
                }
                seen.push(p);
                at = p;
            }
        }
        if reported.iter().any(|r| *r) || known.iter().any(|k| !k) {
            return;
        }
        // What each stage produces, in dependency order (parents first, no cycles left).
        let mut produces: Vec<Option<Flow>> = vec![None; infos.len()];
        let mut has_child = vec![false; infos.len()];
        for p in parent.iter().flatten() {
            has_child[*p] = true;
        }
        let mut order = Vec::new();
        let mut done = vec![false; infos.len()];
        for i in 0..infos.len() {
            let mut chain = vec![i];
            let mut at = i;
            while let Some(p) = parent[at] {
                chain.push(p);
                at = p;
            }
            for &c in chain.iter().rev() {
                if !done[c] {
                    done[c] = true;
                    order.push(c);
                }
            }
        }
        // An analytics stage watches tracks: a tracker must come before it.
        for (i, s) in infos.iter().enumerate() {
            if s.kind != Some("analytics") || !known[i] {
                continue;
            }
            let mut at = parent[i];
            let mut tracked = false;
            let mut hops = 0;
            while let Some(p) = at
                && hops <= infos.len()
            {
                if infos[p].kind == Some("tracker") {
                    tracked = true;
                    break;
                }
                at = parent[p];
                hops += 1;
            }
            if !tracked && s.input != FRAMES {
                self.out.push(
                    Diagnostic::at(
                        s.input_span.unwrap_or(s.kind_span),
                        format!("stage `{}` (analytics) needs tracked detections, but no tracker comes before it", s.id),
                    )
                    .label("no tracker upstream")
                    .help(format!("add a stage `kind: tracker` reading `{}` and let `{}` read it", s.input, s.id)),
                );
            }
        }
        for i in order {
            let s = &infos[i];
            let input = match parent[i] {
                None => Flow::Frames,
                Some(p) => match produces[p] {
                    Some(f) => f,
                    None => continue,
                },
            };
            let Some(kind) = s.kind else { continue };
            let (accepts, output): (&[Flow], Option<Flow>) = match kind {
                "operator" => (&[Flow::Frames, Flow::Tensors, Flow::Detections], s.emits),
                "model" if s.crops => (&[Flow::Detections], Some(Flow::Tensors)),
                "model" => (&[Flow::Tensors], Some(Flow::Tensors)),
                "postprocess" => (&[Flow::Tensors], Some(Flow::Detections)),
                "tracker" | "analytics" => (&[Flow::Detections], Some(Flow::Detections)),
                "sink" => (&[Flow::Detections], Some(Flow::Nothing)),
                _ => continue,
            };
            produces[i] = output;
            if !accepts.contains(&input) {
                let want: Vec<&str> = accepts.iter().map(|f| f.name()).collect();
                // An operator's output is what its `emits` says, so the fix may be there.
                let operator = parent[i]
                    .map(|p| &infos[p])
                    .filter(|p| p.kind == Some("operator"))
                    .map(|p| p.id);
                let hint = match (kind, input, operator) {
                    ("model", Flow::Frames, Some(op)) => format!(
                        "`{op}` emits frames: put an operator that makes tensors (e.g. letterbox) between them"
                    ),
                    ("model", Flow::Frames, None) => {
                        "put an operator (e.g. letterbox) before it to make a tensor".to_owned()
                    }
                    ("model", Flow::Detections, Some(op)) => format!(
                        "to run it on the boxes `{op}` found, give it `crops:`; if `{op}` makes tensors, set its `emits: tensors`"
                    ),
                    ("model", Flow::Detections, None) => {
                        "to run it on the boxes found so far, give it `crops:`".to_owned()
                    }
                    ("postprocess", Flow::Frames, _) => {
                        "a model stage must come before it".to_owned()
                    }
                    ("postprocess", Flow::Detections, Some(op)) => {
                        format!("`{op}` emits detections already: read them with a tracker or sink")
                    }
                    ("tracker" | "analytics" | "sink", Flow::Frames | Flow::Tensors, Some(op)) => {
                        format!(
                            "put model and postprocess stages after `{op}`, or give it `emits: detections` if it makes them itself"
                        )
                    }
                    (_, Flow::Nothing, _) => {
                        "a sink publishes; nothing can read from it".to_owned()
                    }
                    _ => "check the order of the stages or their `input`".to_owned(),
                };
                self.out.push(
                    Diagnostic::at(
                        s.input_span.unwrap_or(s.kind_span),
                        format!(
                            "stage `{}` ({kind}) takes {}, but its input `{}` gives {}",
                            s.id,
                            want.join(" or "),
                            s.input,
                            input.name()
                        ),
                    )
                    .label("mismatched input")
                    .help(hint),
                );
            }
            if let Some(flow @ (Flow::Tensors | Flow::Frames)) = output
                && !has_child[i]
            {
                let span = match kind {
                    "operator" => s.emits_span.unwrap_or(s.kind_span),
                    _ => s.kind_span,
                };
                let help = match flow {
                    Flow::Frames => {
                        "follow it with an operator that takes frames (e.g. letterbox); every branch must end in detections"
                    }
                    _ => {
                        "end every branch with a postprocess, tracker or sink stage, or an operator with `emits: detections`"
                    }
                };
                self.out.push(
                    Diagnostic::at(
                        span,
                        format!(
                            "stage `{}` ends a branch but produces {}, which nothing publishes",
                            s.id,
                            flow.name()
                        ),
                    )
                    .label("last stage of its branch")
                    .help(help),
                );
            }
        }
    }
}
