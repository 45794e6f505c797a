//! Whether each model stage's model takes the tensor its input stage produces, where the
//! producing operator's configuration tells the shape (the built-in `letterbox` and `resize`).

use panoptes_model::Graph;
use panoptes_topology::{Diagnostic, OperatorStage, StageConfig, TopologyFile};

use super::stage_path;

/// The tensor an operator stage hands the next stage, where its configuration tells:
/// `[1, 3, height, width]` from the built-in `letterbox` (640×640 unless configured) and from
/// the built-in `resize` with `"output": "tensor"`. `None` for anything else (an operator of the
/// user's own declares no shapes; only running it could tell). The second value is the
/// multiple a frame-shaped letterbox (`shape: frame`) rounds to: then height and width are
/// only the limits, and each frame's tensor has its own.
fn operator_tensor_shape(op: &OperatorStage) -> Option<([usize; 4], Option<usize>)> {
    let size = |key: &str, default: Option<u64>| match op.config.get(key) {
        Some(v) => v.as_u64(),
        None => default,
    };
    let mut varies = None;
    let (width, height) = match op.wasm.file_stem()?.to_str()? {
        "letterbox" => {
            if op.config.get("shape").and_then(|v| v.as_str()) == Some("frame") {
                varies = Some(usize::try_from(size("multiple", Some(32))?).ok()?);
            }
            (size("width", Some(640))?, size("height", Some(640))?)
        }
        "resize" if op.config.get("output").and_then(|v| v.as_str()) == Some("tensor") => {
            (size("width", None)?, size("height", None)?)
        }
        _ => return None,
    };
    let shape = [
        1,
        3,
        usize::try_from(height).ok()?,
        usize::try_from(width).ok()?,
    ];
    Some((shape, varies))
}

/// Model stages of model `name` whose input stage produces a tensor (see
/// [`operator_tensor_shape`]) that the model's first input does not take, so that every frame
/// would fail in the model at run time. The model's dimensions are the file's where it fixes
/// them, else the manifest's, which may also ask for sizes that are a multiple of a number.
/// Reported at the model stage's `model`, with the producing stage's `config` beside it.
pub(super) fn model_input_mismatches(
    t: &TopologyFile,
    name: &str,
    graph: &Graph,
    manifest: Option<&panoptes_model::ModelManifest>,
) -> Vec<Diagnostic> {
    let Some(input) = graph.inputs().first() else {
        return Vec::new();
    };
    let spec = manifest.and_then(|m| m.inputs.first());
    // Each axis: its fixed size, or the manifest's name for it ("?" where nothing names it).
    let dims: Vec<Result<usize, String>> = input
        .shape
        .iter()
        .enumerate()
        .map(|(k, d)| {
            let declared = spec.and_then(|s| s.shape.get(k));
            match (d, declared) {
                (Some(n), _) => Ok(*n),
                (None, Some(panoptes_model::Dim::Fixed(n))) => Ok(*n),
                (None, Some(panoptes_model::Dim::Dynamic(s))) => Err(s.clone()),
                (None, None) => Err("?".to_owned()),
            }
        })
        .collect();
    let multiple = spec
        .and_then(|s| s.resize.as_ref())
        .and_then(|r| r.multiple_of)
        .filter(|m| *m > 1);
    let (_, h_axis, w_axis) = spec
        .and_then(|s| s.layout)
        .unwrap_or(panoptes_model::Layout::Nchw)
        .axes();
    let shown = |dims: &[Result<usize, String>]| {
        let parts: Vec<String> = dims
            .iter()
            .map(|d| match d {
                Ok(n) => n.to_string(),
                Err(s) => s.clone(),
            })
            .collect();
        format!("[{}]", parts.join(", "))
    };
    let inputs = t.stage_inputs();
    let mut out = Vec::new();
    for (i, stage) in t.stages.iter().enumerate() {
        let StageConfig::Model(m) = stage else {
            continue;
        };
        // Cascade stages cut their own crops to the model's size.
        if m.model != name || m.crops.is_some() {
            continue;
        }
        let Some(from) = inputs.get(i) else { continue };
        let Some((j, StageConfig::Operator(op))) =
            t.stages.iter().enumerate().find(|(_, s)| s.id() == *from)
        else {
            continue;
        };
        let Some((produced, varies)) = operator_tensor_shape(op) else {
            continue;
        };
        // The batch axis is the stage's to fill; every other axis must take what arrives. A
        // frame-shaped tensor needs free height and width, in multiples of the letterbox's.
        let fits = dims.len() == produced.len()
            && dims
                .iter()
                .zip(produced)
                .enumerate()
                .skip(1)
                .all(|(k, (want, got))| {
                    let side = k == h_axis || k == w_axis;
                    match (want, varies) {
                        (Ok(_), Some(_)) if side => false,
                        (Ok(n), _) => *n == got,
                        (Err(_), Some(step)) if side => multiple.is_none_or(|m| step % m == 0),
                        (Err(_), _) => match multiple {
                            Some(m) if side => got % m == 0,
                            _ => true,
                        },
                    }
                });
        if fits {
            continue;
        }
        let operator = op
            .wasm
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        let mut produced_text = shown(&produced.map(Ok::<usize, String>));
        if let Some(step) = varies {
            produced_text = format!(
                "tensors shaped to each frame (up to {produced_text}, sides in multiples of {step})"
            );
        }
        let multiple_text = multiple
            .map(|m| format!(" (dynamic height and width in multiples of {m})"))
            .unwrap_or_default();
        let mut d = t
            .diagnostic_at(
                &stage_path(i, "model"),
                format!(
                    "model `{name}` takes input `{}` of shape {}{multiple_text}, but stage `{}` ({operator}) produces {produced_text}: every frame would fail in stage `{}`",
                    input.name,
                    shown(&dims),
                    op.id,
                    m.id
                ),
            )
            .label(format!("takes {}", shown(&dims)))
            .help(format!(
                "make `{}`'s `width` and `height` what the model takes, or use a model exported for {}x{}",
                op.id, produced[3], produced[2]
            ));
        let config = if op.config.is_null() {
            "wasm"
        } else {
            "config"
        };
        if let Some(span) = t.diagnostic_at(&stage_path(j, config), "").span {
            d = d.related(span, format!("stage `{}` produces {produced_text}", op.id));
        }
        out.push(d);
    }
    out
}
