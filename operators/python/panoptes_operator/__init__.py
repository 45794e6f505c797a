"""Write panoptes operators in Python.

An operator is a class with ``init(config)`` and ``process(frame, input)``::

    from panoptes_operator import Operator, Detections, InvalidInput

    class MinScore(Operator):
        def init(self, config):
            self.min_score = float(config.get("min_score", 0.5))

        def process(self, frame, input):
            if input.detections is None:
                raise InvalidInput("expects detections")
            return Detections(d for d in input.detections if d.score >= self.min_score)

``panoptes operator build min_score.py -o min_score.wasm`` turns the file into a Wasm component
of the ``panoptes:operator`` world (through componentize-py); a topology runs it as a
``kind: operator`` stage, in the same sandbox as an operator written in Rust: no files, network,
environment or clock unless the topology grants them, a memory cap and a deadline per call.

Errors: raise :class:`InvalidConfig` from ``init``, :class:`InvalidInput` for a frame the
operator cannot take, :class:`OperatorError` for anything else; each fails that frame only
(or, from ``init``, the stage's start). Any other exception is reported as an internal error
with its type and message. Exiting the interpreter (``os.abort()``, a crash) traps: the frame
fails and the host rebuilds the instance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, List, Optional, Sequence, Union

__all__ = [
    "Operator",
    "Frame",
    "Input",
    "Detection",
    "Detections",
    "Tensor",
    "Transform",
    "Tensors",
    "Image",
    "Output",
    "OperatorError",
    "InvalidConfig",
    "InvalidInput",
    "parse_config",
]


class OperatorError(Exception):
    """Something went wrong inside the operator: this frame fails."""

    kind = "internal"


class InvalidConfig(OperatorError):
    """The stage's ``config`` is unusable: the stage does not start."""

    kind = "invalid-config"


class InvalidInput(OperatorError):
    """This frame (or what earlier stages made of it) cannot be processed."""

    kind = "invalid-input"


@dataclass
class Detection:
    """One object: an axis-aligned box in frame pixels, a score, a label, maybe text."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float = 1.0
    label: str = ""
    text: Optional[str] = None

    @property
    def width(self) -> float:
        return max(0.0, self.x2 - self.x1)

    @property
    def height(self) -> float:
        return max(0.0, self.y2 - self.y1)

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)

    @property
    def bottom_center(self) -> tuple[float, float]:
        """Where the object stands: the middle of the box's lower edge."""
        return ((self.x1 + self.x2) / 2.0, self.y2)


@dataclass
class Transform:
    """Maps output coordinates back to the frame: ``src = (dst - offset) / scale``."""

    scale_x: float = 1.0
    scale_y: float = 1.0
    offset_x: float = 0.0
    offset_y: float = 0.0


@dataclass
class Tensor:
    """A dense row-major f32 tensor."""

    shape: List[int]
    data: List[float]
    name: str = ""


@dataclass
class Input:
    """What the stage hands over besides the frame: exactly one of ``frame_only``,
    ``detections`` or ``tensors`` (with ``transform``) is set."""

    frame_only: bool = False
    detections: Optional[List[Detection]] = None
    tensors: Optional[List[Tensor]] = None
    transform: Optional[Transform] = None


class Detections(list):
    """Output: detections in frame pixels (a list of :class:`Detection`)."""


@dataclass
class Tensors:
    """Output: tensors for the next stage, with how they map back to the frame (none, one for
    all, or one per batch entry of the first tensor)."""

    tensors: List[Tensor]
    transforms: List[Transform] = field(default_factory=list)


@dataclass
class Image:
    """Output: a new image that replaces the frame for the stages after this one.
    ``format`` is ``rgb8``, ``nv12``, ``i420`` or ``jpeg``."""

    width: int
    height: int
    pixels: bytes
    format: str = "rgb8"


Output = Union[Detections, Tensors, Image, Sequence[Detection]]


class Frame:
    """The frame of this call. Metadata costs nothing; pixels are copied in only when asked
    for (:meth:`pixels`, :meth:`read`)."""

    __slots__ = ("_frame",)

    def __init__(self, frame: Any) -> None:
        self._frame = frame

    @property
    def camera(self) -> str:
        return self._frame.camera()

    @property
    def seq(self) -> int:
        return self._frame.seq()

    @property
    def capture_ts_ns(self) -> int:
        return self._frame.capture_ts_ns()

    @property
    def width(self) -> int:
        return self._frame.width()

    @property
    def height(self) -> int:
        return self._frame.height()

    @property
    def format(self) -> str:
        return _FORMAT_NAMES[self._frame.format().value]

    @property
    def byte_len(self) -> int:
        return self._frame.byte_len()

    def pixels(self) -> bytes:
        """The whole pixel buffer (``rgb8``: width × height × 3 bytes, row-major)."""
        return self._frame.pixels()

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``; :class:`InvalidInput` outside the buffer."""
        from componentize_py_types import Err

        try:
            return self._frame.read(offset, length)
        except Err as e:
            raise InvalidInput(str(e.value)) from None


class Operator:
    """Base class of an operator. The host makes one instance per stream, calls :meth:`init`
    once with the stage's ``config`` (parsed JSON; ``{}`` when there is none), then
    :meth:`process` per frame."""

    def init(self, config: dict) -> None:
        pass

    def process(self, frame: Frame, input: Input) -> Output:
        raise NotImplementedError("an operator must define process(frame, input)")

    # State that follows the camera (world ``panoptes:operator/stateful-operator@0.2.0``): an
    # operator that defines ``snapshot`` is built for that world and must define all three.
    # The host saves each camera's snapshot (NATS KV) periodically and when the camera's
    # partition is handed back, and restores it on the camera's next owner, after a hot reload
    # and after a crash of the interpreter:
    #
    #   def snapshot(self, camera: str) -> Optional[bytes]
    #       the camera's state, or None when nothing is kept of it;
    #   def restore(self, camera: str, state: Optional[bytes], ids: range) -> None
    #       a tenure of the camera begins with a previous owner's state (or None); IDs handed
    #       out for it come from ``ids``; raise to refuse a state (the host reports it and
    #       calls again with None);
    #   def forget(self, camera: str) -> None
    #       the camera went elsewhere or silent.


def parse_config(text: str) -> dict:
    """The stage's ``config`` as a dict; :class:`InvalidConfig` if it is not a JSON object."""
    if not text or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise InvalidConfig(f"config is not JSON: {e}") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidConfig(f"config must be an object, not {type(value).__name__}")
    return value


_FORMAT_NAMES = ("rgb8", "nv12", "i420", "jpeg")
