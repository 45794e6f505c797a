"""Keep the detections that matter: a score floor, the labels wanted, and only objects inside
chosen areas of the frame, each relabelled by where it is.

Config (every key optional)::

    min_score: 0.6              # drop detections that score lower
    labels: [text]              # keep only these labels (default: all)
    anchor: bottom_center       # the point tested against zones: bottom_center (where an
                                # object stands) or center
    zones:                      # keep only objects inside one of these (default: anywhere)
      - id: lane
        units: normalized       # or pixels (the default)
        polygon: [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]
    relabel: "{zone}/{label}"   # the new label; {zone} is the first zone containing the anchor

Put it after a postprocess stage (before a tracker, so tracks follow only what it keeps).
"""

from panoptes_operator import Detections, InvalidConfig, InvalidInput, Operator


def inside(x, y, polygon):
    """Even-odd rule: whether (x, y) lies in the polygon."""
    hit = False
    n = len(polygon)
    for i in range(n):
        (x1, y1), (x2, y2) = polygon[i], polygon[(i + 1) % n]
        if (y1 > y) != (y2 > y) and x < (x2 - x1) * (y - y1) / (y2 - y1) + x1:
            hit = not hit
    return hit


class ZoneFilter(Operator):
    def init(self, config):
        try:
            self.min_score = float(config.get("min_score", 0.0))
            labels = config.get("labels")
            self.labels = None if labels is None else set(str(l) for l in labels)
            self.anchor = config.get("anchor", "bottom_center")
            if self.anchor not in ("bottom_center", "center"):
                raise InvalidConfig(f"anchor must be bottom_center or center, not {self.anchor!r}")
            self.zones = []
            for z in config.get("zones", []):
                polygon = [(float(x), float(y)) for x, y in z["polygon"]]
                if len(polygon) < 3:
                    raise InvalidConfig(f"zone {z.get('id')!r} needs at least 3 corners")
                units = z.get("units", "pixels")
                if units not in ("pixels", "normalized"):
                    raise InvalidConfig(f"zone {z.get('id')!r}: units must be pixels or normalized")
                self.zones.append((str(z["id"]), polygon, units == "normalized"))
            self.relabel = config.get("relabel")
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidConfig(f"zone_filter config: {type(e).__name__}: {e}") from None

    def zone_of(self, d, width, height):
        x, y = d.bottom_center if self.anchor == "bottom_center" else d.center
        for zone_id, polygon, normalized in self.zones:
            px, py = (x / width, y / height) if normalized else (x, y)
            if inside(px, py, polygon):
                return zone_id
        return None

    def process(self, frame, input):
        if input.detections is None:
            raise InvalidInput("zone_filter takes detections: put it after a postprocess stage")
        width, height = max(frame.width, 1), max(frame.height, 1)
        kept = Detections()
        for d in input.detections:
            if d.score < self.min_score:
                continue
            if self.labels is not None and d.label not in self.labels:
                continue
            zone = self.zone_of(d, width, height) if self.zones else ""
            if zone is None:
                continue
            if self.relabel:
                d.label = self.relabel.format(zone=zone, label=d.label)
            kept.append(d)
        return kept
