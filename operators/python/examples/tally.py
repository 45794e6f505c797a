"""Counts, per camera, the frames it saw and the detections of each label for the camera's
whole life, across workers: the counts are the camera's state (world
``panoptes:operator/stateful-operator@0.2.0``), which the host saves and restores on the
camera's next owner. Passes its input detections through and adds one whole-frame box labelled
``label`` (default ``tally``) whose text is the counts as JSON. The Python twin of the Rust
``operators/tally``, with the same state format, so either can take over from the other.

Config::

    label: tally            # the summary box's label
"""

import json

from panoptes_operator import Detection, Detections, InvalidInput, Operator

STATE_VERSION = 1


class Tally(Operator):
    def init(self, config):
        self.label = str(config.get("label", "tally"))
        self.cameras = {}

    def process(self, frame, input):
        if input.tensors is not None:
            raise InvalidInput("tally counts frames and detections, not tensors")
        detections = list(input.detections or [])
        counts = self.cameras.setdefault(frame.camera, {"frames": 0, "labels": {}})
        counts["frames"] += 1
        for d in detections:
            counts["labels"][d.label] = counts["labels"].get(d.label, 0) + 1
        text = json.dumps(counts, separators=(",", ":"), sort_keys=True)
        box = Detection(0, 0, frame.width, frame.height, 1.0, self.label, text)
        return Detections(detections + [box])

    def snapshot(self, camera):
        counts = self.cameras.get(camera)
        if counts is None:
            return None
        return json.dumps({"version": STATE_VERSION, "counts": counts}).encode()

    def restore(self, camera, state, ids):
        counts = {"frames": 0, "labels": {}}
        if state is not None:
            saved = json.loads(state)
            if saved.get("version") != STATE_VERSION:
                raise ValueError(
                    f"tally state version {saved.get('version')} "
                    f"(this build reads {STATE_VERSION})"
                )
            counts = saved["counts"]
        self.cameras[camera] = counts

    def forget(self, camera):
        self.cameras.pop(camera, None)
