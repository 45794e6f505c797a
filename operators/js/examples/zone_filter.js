// Keep the detections that matter: a score floor, the labels wanted, and only objects inside
// chosen areas of the frame, each relabelled by where it is. The same operator and config as
// operators/python/examples/zone_filter.py (see there for the keys).
import { Operator, InvalidConfig, InvalidInput } from "panoptes_operator";

function inside(x, y, polygon) {
  let hit = false;
  for (let i = 0, j = polygon.length - 1; i < polygon.length; j = i++) {
    const [x1, y1] = polygon[i];
    const [x2, y2] = polygon[j];
    if (y1 > y !== y2 > y && x < ((x2 - x1) * (y - y1)) / (y2 - y1) + x1) hit = !hit;
  }
  return hit;
}

export default class ZoneFilter extends Operator {
  init(config) {
    this.minScore = Number(config.min_score ?? 0);
    this.labels = config.labels ? new Set(config.labels.map(String)) : null;
    this.anchor = config.anchor ?? "bottom_center";
    if (this.anchor !== "bottom_center" && this.anchor !== "center") {
      throw new InvalidConfig(`anchor must be bottom_center or center, not ${this.anchor}`);
    }
    this.zones = (config.zones ?? []).map((z) => {
      if (!Array.isArray(z.polygon) || z.polygon.length < 3) {
        throw new InvalidConfig(`zone ${z.id} needs at least 3 corners`);
      }
      const units = z.units ?? "pixels";
      if (units !== "pixels" && units !== "normalized") {
        throw new InvalidConfig(`zone ${z.id}: units must be pixels or normalized`);
      }
      return { id: String(z.id), polygon: z.polygon.map(([x, y]) => [Number(x), Number(y)]), normalized: units === "normalized" };
    });
    this.relabel = config.relabel;
  }

  zoneOf(d, width, height) {
    const x = (d.x1 + d.x2) / 2;
    const y = this.anchor === "bottom_center" ? d.y2 : (d.y1 + d.y2) / 2;
    for (const z of this.zones) {
      const [px, py] = z.normalized ? [x / width, y / height] : [x, y];
      if (inside(px, py, z.polygon)) return z.id;
    }
    return null;
  }

  process(frame, input) {
    if (!input.detections) {
      throw new InvalidInput("zone_filter takes detections: put it after a postprocess stage");
    }
    const width = Math.max(frame.width, 1);
    const height = Math.max(frame.height, 1);
    const kept = [];
    for (const d of input.detections) {
      if (d.score < this.minScore) continue;
      if (this.labels && !this.labels.has(d.label)) continue;
      const zone = this.zones.length ? this.zoneOf(d, width, height) : "";
      if (zone === null) continue;
      if (this.relabel) {
        d.label = this.relabel.replaceAll("{zone}", zone).replaceAll("{label}", d.label);
      }
      kept.push(d);
    }
    return kept;
  }
}
