"""Licence-plate text after the OCR cascade: readings normalised to what plates print
(upper case, no spaces, dashes or dots), look-alike characters swapped where the plate format
needs a letter or a digit (O/0, I/1, Z/2, S/5, B/8, G/6), and readings that are no plate dropped
or kept as they were.

Config::

    format: "LLDDLLL"       # L: a letter, D: a digit, A: either; one format or a list
    min_length: 4           # without a format: readings shorter than this are no plate
    label: plate            # the label of readings that are plates
    keep_others: false      # keep detections that are no plate (unchanged)
"""

from panoptes_operator import Detections, InvalidConfig, InvalidInput, Operator

TO_DIGIT = {"O": "0", "Q": "0", "D": "0", "I": "1", "L": "1", "Z": "2", "S": "5", "B": "8", "G": "6"}
TO_LETTER = {v: k for k, v in reversed(list(TO_DIGIT.items()))}


def normalise(text):
    return "".join(c for c in text.upper() if c.isalnum())


def fit(text, fmt):
    """`text` read as format `fmt` (look-alikes swapped), or None when it cannot be."""
    if len(text) != len(fmt):
        return None
    out = []
    for c, want in zip(text, fmt):
        if want == "D":
            c = c if c.isdigit() else TO_DIGIT.get(c, "")
            if not c:
                return None
        elif want == "L":
            c = c if c.isalpha() else TO_LETTER.get(c, "")
            if not c:
                return None
        elif not c.isalnum():
            return None
        out.append(c)
    return "".join(out)


class PlateText(Operator):
    def init(self, config):
        fmt = config.get("format", [])
        self.formats = [fmt] if isinstance(fmt, str) else list(fmt)
        for f in self.formats:
            if not f or set(f) - set("LDA"):
                raise InvalidConfig(f"plate format {f!r}: use L (letter), D (digit), A (either)")
        self.min_length = int(config.get("min_length", 4))
        self.label = str(config.get("label", "plate"))
        self.keep_others = bool(config.get("keep_others", False))

    def read(self, text):
        text = normalise(text)
        if not self.formats:
            return text if len(text) >= self.min_length else None
        for f in self.formats:
            plate = fit(text, f)
            if plate is not None:
                return plate
        return None

    def process(self, frame, input):
        if input.detections is None:
            raise InvalidInput("plate_text takes detections with text: put it after a ctc stage")
        out = Detections()
        for d in input.detections:
            plate = self.read(d.text) if d.text else None
            if plate is not None:
                d.text, d.label = plate, self.label
                out.append(d)
            elif self.keep_others:
                out.append(d)
        return out
