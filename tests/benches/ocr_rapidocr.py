"""The OCR benchmark's Python half (driven by tests/benches/ocr.rs).

render DIR --frames N --seed S
    Renders N camera frames of signs and plates with Pillow into DIR (NNN.png) and their text
    lines into DIR/truth.json: 16:9 (960x540) and 4:3 (640x480) frames, DejaVu fonts of several
    faces, 20-60 px text, light or dark backgrounds with a gradient and noise, lines rotated by
    up to 3 degrees.

run DIR --rounds R
    Reads every frame with RapidOCR (rapidocr-onnxruntime, default settings, the way its README
    calls it: a BGR image from cv2.imread), R times after one warm-up pass, and prints JSON:
    {"fps": [per round], "texts": {"NNN.png": ["line", ...]}} (texts of the last round).
"""

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

FONTS = [
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansCondensed.ttf",
    "DejaVuSansCondensed-Bold.ttf",
]
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")

WORDS = (
    "GATE EXIT DOOR OPEN CLOSED TOTAL EUR PLATFORM Departures Arrivals Parking Loading Bay "
    "Entrance Staff Only Level Floor Tickets Information Lift Stairs Warehouse North South "
    "Delivery Zone Office Reception Security Garage Visitors Bus Stop Taxi Rank Terminal "
    "Check Baggage Claim Pharmacy Open24 Cafe Bakery Fire Assembly Point Danger Keep Clear"
).split()


def sign_line(rng):
    words = [rng.choice(WORDS) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.5:
        words.append(rng.choice(["B12", "7", "42.00", "A3", "15", "C", "2B", "108", "9:45"]))
    return " ".join(words)


def plate_line(rng):
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    digits = "0123456789"
    pick = lambda pool, n: "".join(rng.choice(pool) for _ in range(n))
    style = rng.randint(0, 2)
    if style == 0:
        return f"{pick(letters, 2)}-{pick(digits, 3)}-{pick(letters, 2)}"
    if style == 1:
        return f"{pick(letters, 1)} {pick(letters, 2)} {pick(digits, 4)}"
    return f"{pick(letters, 3)} {pick(digits, 3)}"


def render(out: Path, frames: int, seed: int):
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    truth = {}
    for i in range(frames):
        w, h = (960, 540) if i % 2 == 0 else (640, 480)
        dark = rng.random() < 0.5
        base = [rng.randint(10, 70) if dark else rng.randint(170, 240) for _ in range(3)]
        img = Image.new("RGB", (w, h), tuple(base))
        draw = ImageDraw.Draw(img)
        # A vertical gradient, so backgrounds are not flat.
        for y in range(0, h, 4):
            shade = int(25 * y / h) * (1 if dark else -1)
            draw.rectangle([0, y, w, y + 4], fill=tuple(max(0, min(255, c + shade)) for c in base))
        lines = []
        y = rng.randint(10, 40)
        for _ in range(rng.randint(1, 4)):
            text = plate_line(rng) if rng.random() < 0.3 else sign_line(rng)
            size = rng.randint(20, 60)
            font = ImageFont.truetype(str(FONT_DIR / rng.choice(FONTS)), size)
            left, top, right, bottom = font.getbbox(text)
            tw, th = right - left + 8, bottom - top + 8
            if tw >= w - 20 or y + th + 10 >= h:
                continue
            ink = tuple(rng.randint(200, 255) if dark else rng.randint(0, 60) for _ in range(3))
            layer = Image.new("RGBA", (tw, th), (0, 0, 0, 0))
            ImageDraw.Draw(layer).text((4 - left, 4 - top), text, font=font, fill=ink + (255,))
            angle = rng.uniform(-3.0, 3.0)
            layer = layer.rotate(angle, resample=Image.BICUBIC, expand=True)
            x = rng.randint(10, max(10, w - layer.width - 10))
            img.paste(layer, (x, y), layer)
            lines.append(text)
            y += layer.height + rng.randint(15, 60)
        img = img.filter(ImageFilter.GaussianBlur(0.6))
        # Sensor noise.
        noise = Image.effect_noise((w, h), 12).convert("RGB")
        img = Image.blend(img, noise, 0.06)
        name = f"{i:03}.png"
        img.save(out / name)
        truth[name] = lines
    (out / "truth.json").write_text(json.dumps(truth, indent=1))


def run(frames: Path, rounds: int):
    import cv2
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR()
    names = sorted(p.name for p in frames.glob("*.png"))
    images = [cv2.imread(str(frames / n)) for n in names]
    for img in images[:2]:
        engine(img)
    fps = []
    texts = {}
    for _ in range(rounds):
        started = time.perf_counter()
        for name, img in zip(names, images):
            result, _ = engine(img)
            texts[name] = [r[1] for r in result] if result else []
        fps.append(len(images) / (time.perf_counter() - started))
        print(f"rapidocr round: {fps[-1]:.2f} frames/s", file=sys.stderr)
    print(json.dumps({"fps": fps, "texts": texts}))


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render")
    r.add_argument("dir", type=Path)
    r.add_argument("--frames", type=int, default=24)
    r.add_argument("--seed", type=int, default=7)
    x = sub.add_parser("run")
    x.add_argument("dir", type=Path)
    x.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.command == "render":
        render(args.dir, args.frames, args.seed)
    else:
        run(args.dir, args.rounds)


if __name__ == "__main__":
    main()
