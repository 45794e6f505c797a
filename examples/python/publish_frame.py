#!/usr/bin/env python3
"""Publish frames to Panoptes from a program of your own.

A third-party publisher written only from the wire contract in docs/nats.md ("Frames"):
it renders a picture (dark background, light text) or loads one, and publishes it as N frames
of one camera on `<ns>.frames.<camera>`. Any worker running a topology then processes them like
frames from its own cameras; results arrive on `<ns>.detections.<camera>`.

Needs pyarrow, nats-py and Pillow (`scripts/setup.sh` installs them into its venv):

    ~/.cache/panoptes/venv/bin/python examples/python/publish_frame.py \
        --nats nats://127.0.0.1:4222 --camera dock-3 --count 10 --text "GATE 42"

It prints one JSON line when done: what was published and, for a rendered picture, where the
text was drawn (`[x1, y1, x2, y2]` in frame pixels), to compare with the detections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time

import nats
import pyarrow as pa
from PIL import Image, ImageDraw, ImageFont

# --- The wire contract (docs/nats.md, "Frames") ------------------------------------------------

FRAME_SCHEMA = pa.schema(
    [
        pa.field("camera", pa.string(), nullable=False),
        pa.field("seq", pa.uint64(), nullable=False),
        pa.field("capture_ts_ns", pa.uint64(), nullable=False),
        pa.field("width", pa.uint32(), nullable=False),
        pa.field("height", pa.uint32(), nullable=False),
        pa.field("format", pa.string(), nullable=False),
        pa.field("pixels", pa.binary(), nullable=False),
    ],
    # Required: a frame without this tag is refused (a `frame_error` event says so).
    metadata={"panoptes.schema": "frame/v1"},
)
CAMERA_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MAX_SIDE = 16384


def encode_frame(camera: str, seq: int, capture_ts_ns: int, image: Image.Image) -> bytes:
    """One frame as an Arrow IPC stream: the schema, one record batch of one row, the end."""
    rgb = image.convert("RGB")
    width, height = rgb.size
    pixels = rgb.tobytes()  # packed RGB, rows top to bottom, no padding
    assert len(pixels) == width * height * 3
    batch = pa.record_batch(
        [
            pa.array([camera], pa.string()),
            pa.array([seq], pa.uint64()),
            pa.array([capture_ts_ns], pa.uint64()),
            pa.array([width], pa.uint32()),
            pa.array([height], pa.uint32()),
            pa.array(["rgb8"], pa.string()),
            pa.array([pixels], pa.binary()),
        ],
        schema=FRAME_SCHEMA,
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, FRAME_SCHEMA) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def frame_headers(camera: str, seq: int, capture_ts_ns: int) -> dict[str, str]:
    """The informational headers (optional: workers read the payload; routers read these)."""
    return {
        "Panoptes-Camera": camera,
        "Panoptes-Seq": str(seq),
        "Panoptes-Capture-Ts-Ns": str(capture_ts_ns),
        "Panoptes-Schema": "frame/v1",
    }


# --- The picture ------------------------------------------------------------------------------


def render(width: int, height: int, text: str, font_path: str | None, size: int):
    """A dark picture with `text` in light letters, centred; returns it and the text's box."""
    image = Image.new("RGB", (width, height), (32, 48, 64))
    draw = ImageDraw.Draw(image)
    if font_path:
        font = ImageFont.truetype(font_path, size)
    else:
        font = ImageFont.load_default(size=size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = (width - (right - left)) // 2 - left
    y = (height - (bottom - top)) // 2 - top
    draw.text((x, y), text, font=font, fill=(240, 240, 240))
    box = draw.textbbox((x, y), text, font=font)
    return image, [box[0], box[1], box[2], box[3]]


# --- Publishing -------------------------------------------------------------------------------


async def publish(args: argparse.Namespace, image: Image.Image) -> int:
    subject = f"{args.namespace}.frames.{args.camera}"
    nc = await nats.connect(args.nats, connect_timeout=5, max_reconnect_attempts=0)
    try:
        interval = 1.0 / args.fps if args.fps > 0 else 0.0
        for i in range(args.count):
            seq = args.first_seq + i
            # Wall-clock time of capture, in nanoseconds since the Unix epoch.
            ts = time.time_ns()
            payload = encode_frame(args.camera, seq, ts, image)
            headers = frame_headers(args.camera, seq, ts)
            # The server refuses (and disconnects) a message over its max_payload, headers
            # included: say so before sending.
            header_len = sum(len(k) + len(v) + 4 for k, v in headers.items()) + 12
            if nc.max_payload and len(payload) + header_len > nc.max_payload:
                raise SystemExit(
                    f"frame {seq} is {len(payload) + header_len} bytes, over the server's "
                    f"max_payload of {nc.max_payload}: send a smaller picture or raise max_payload"
                )
            await nc.publish(subject, payload, headers=headers)
            if interval and i + 1 < args.count:
                await asyncio.sleep(interval)
        await nc.flush()
    finally:
        await nc.close()
    return len(payload)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nats", default="nats://127.0.0.1:4222", help="NATS server URL")
    p.add_argument("--namespace", default="panoptes", help="the topology's namespace")
    p.add_argument("--camera", required=True, help="camera ID: letters, digits, - and _")
    p.add_argument("--count", type=int, default=10, help="frames to publish")
    p.add_argument("--fps", type=float, default=5.0, help="frames per second (0: no pause)")
    p.add_argument("--first-seq", type=int, default=1, help="sequence number of the first frame")
    p.add_argument("--image", help="a picture file to send instead of rendered text")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--text", default="PANOPTES 17", help="text to render")
    p.add_argument("--font", help="a TrueType font file (default: Pillow's built-in font)")
    p.add_argument("--font-size", type=int, default=64)
    args = p.parse_args()

    if not CAMERA_ID.match(args.camera):
        p.error("--camera must be 1-128 ASCII letters, digits, '-' or '_' (one NATS token)")
    if args.count < 1 or args.first_seq < 0:
        p.error("--count must be at least 1 and --first-seq not negative")
    text_box = None
    if args.image:
        image = Image.open(args.image)
    else:
        image, text_box = render(args.width, args.height, args.text, args.font, args.font_size)
    width, height = image.size
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        p.error(f"the picture is {width}x{height}; frames are 1..{MAX_SIDE} pixels per side")

    payload_len = asyncio.run(publish(args, image))
    print(
        json.dumps(
            {
                "published": args.count,
                "camera": args.camera,
                "subject": f"{args.namespace}.frames.{args.camera}",
                "first_seq": args.first_seq,
                "width": width,
                "height": height,
                "payload_bytes": payload_len,
                "text_box": text_box,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
