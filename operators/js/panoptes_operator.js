// The panoptes operator SDK for JavaScript. `panoptes operator build op.js` puts this file, the
// operator's module and an entry that exports the `panoptes:operator` world's `init` and
// `process` into one module and builds it with componentize-js (npm). An operator module:
//
//   import { Operator, InvalidInput } from "panoptes_operator";   // optional: for editors
//
//   export default class MinScore extends Operator {
//     init(config) { this.minScore = Number(config.min_score ?? 0.5); }
//     process(frame, input) {
//       if (!input.detections) throw new InvalidInput("expects detections");
//       return input.detections.filter((d) => d.score >= this.minScore);
//     }
//   }
//
// Detections are plain objects { x1, y1, x2, y2, score, label, text? } in frame pixels. Return
// an array of them, an `Image`, or `Tensors`. Throw `InvalidConfig` from init, `InvalidInput`
// for a frame the operator cannot take, `OperatorError` (or anything else) for the rest: each
// fails that frame only. The component runs in the same sandbox as any operator.

class OperatorError extends Error {
  constructor(message) {
    super(message);
    this.name = "OperatorError";
  }
}

class InvalidConfig extends OperatorError {
  constructor(message) {
    super(message);
    this.name = "InvalidConfig";
  }
}

class InvalidInput extends OperatorError {
  constructor(message) {
    super(message);
    this.name = "InvalidInput";
  }
}

/** Base class: one instance per stream; `init(config)` once, then `process(frame, input)`. */
class Operator {
  init(config) {}
  process(frame, input) {
    throw new OperatorError("an operator must define process(frame, input)");
  }
}

/** Output: a new image (`format`: rgb8, nv12, i420 or jpeg) replacing the frame. */
class Image {
  constructor(width, height, pixels, format = "rgb8") {
    Object.assign(this, { width, height, pixels, format });
  }
}

/** Output: tensors ({ name, shape, data }) with how they map back to the frame. */
class Tensors {
  constructor(tensors, transforms = []) {
    Object.assign(this, { tensors, transforms });
  }
}

/** The frame of this call; pixels are copied in only when asked for. */
class Frame {
  constructor(frame) {
    this._frame = frame;
  }
  get camera() {
    return this._frame.camera();
  }
  get seq() {
    return Number(this._frame.seq());
  }
  get captureTsNs() {
    return this._frame.captureTsNs();
  }
  get width() {
    return this._frame.width();
  }
  get height() {
    return this._frame.height();
  }
  get format() {
    return this._frame.format();
  }
  get byteLen() {
    return Number(this._frame.byteLen());
  }
  pixels() {
    return this._frame.pixels();
  }
  read(offset, length) {
    try {
      return this._frame.read(BigInt(offset), BigInt(length));
    } catch (e) {
      throw new InvalidInput(String(e && e.payload !== undefined ? e.payload : e));
    }
  }
}

/** The stage's `config` as an object ({} when there is none). */
function parseConfig(text) {
  if (!text || !text.trim()) return {};
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new InvalidConfig(`config is not JSON: ${e.message}`);
  }
  if (value === null) return {};
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new InvalidConfig("config must be an object");
  }
  return value;
}

// The glue between an operator object and the world's bindings (names below are the entry's).
const __panoptes = {
  error(e) {
    if (e instanceof InvalidConfig) return { tag: "invalid-config", val: e.message };
    if (e instanceof InvalidInput) return { tag: "invalid-input", val: e.message };
    if (e instanceof OperatorError) return { tag: "internal", val: e.message };
    const name = e && e.name ? e.name : "Error";
    const message = e && e.message !== undefined ? e.message : String(e);
    return { tag: "internal", val: `${name}: ${message}` };
  },
  input(input) {
    switch (input.tag) {
      case "detections":
        return {
          detections: input.val.map((d) => ({
            x1: d.x1, y1: d.y1, x2: d.x2, y2: d.y2,
            score: d.score, label: d.label, text: d.text ?? undefined,
          })),
        };
      case "tensors":
        return { tensors: input.val.tensors, transform: input.val.transform };
      default:
        return { frameOnly: true };
    }
  },
  output(out) {
    if (out instanceof Image) {
      return {
        tag: "image",
        val: { width: out.width, height: out.height, format: out.format, pixels: out.pixels },
      };
    }
    if (out instanceof Tensors) {
      return { tag: "tensors", val: { tensors: out.tensors, transforms: out.transforms } };
    }
    if (Array.isArray(out)) {
      return {
        tag: "detections",
        val: out.map((d) => ({
          x1: Number(d.x1), y1: Number(d.y1), x2: Number(d.x2), y2: Number(d.y2),
          score: Number(d.score ?? 1), label: String(d.label ?? ""),
          text: d.text === undefined || d.text === null ? undefined : String(d.text),
        })),
      };
    }
    throw new OperatorError("process returned neither an array of detections, an Image nor Tensors");
  },
};
