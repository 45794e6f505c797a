"""A frame-level rule: when more than `max` objects of a label are in the frame, add one
whole-frame detection labelled `alert` (its text says how many), so an output filtered on that
label (a webhook, MQTT) raises the alarm. Every detection passes through unchanged.

Config::

    label: person           # what to count (default: every detection)
    max: 4                  # more than this raises the alert
    alert: crowd            # the alert detection's label
"""

from panoptes_operator import Detection, Detections, InvalidConfig, InvalidInput, Operator


class CrowdAlert(Operator):
    def init(self, config):
        self.label = config.get("label")
        try:
            self.max = int(config["max"])
        except (KeyError, TypeError, ValueError):
            raise InvalidConfig("crowd_alert needs `max`: how many objects are still fine") from None
        self.alert = str(config.get("alert", "crowd"))

    def process(self, frame, input):
        if input.detections is None:
            raise InvalidInput("crowd_alert takes detections: put it after a postprocess stage")
        out = Detections(input.detections)
        count = sum(1 for d in out if self.label is None or d.label == self.label)
        if count > self.max:
            what = self.label or "objects"
            out.append(
                Detection(0.0, 0.0, float(frame.width), float(frame.height), 1.0, self.alert,
                          f"{count} {what} > {self.max}")
            )
        return out
