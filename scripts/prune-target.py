#!/usr/bin/env python3
"""Removes build artifacts that the current tree no longer uses, so a target dir kept between
CI runs stays bounded (renamed or removed crates, old dependency versions, old feature sets).

It asks cargo, through the same commands `scripts/test.sh` runs (all fresh by then, so each
takes seconds), which units make up the build: every artifact cargo reports (`--message-format
json`) names its unit by the hash in its file name. Entries of `deps/`, `build/` and
`.fingerprint/` whose hash no current unit has are deleted; anything cargo needs again is
rebuilt, never used stale. Prints what it freed.
"""

import json
import os
import re
import shutil
import subprocess
import sys

WASM_OPERATORS = [
    "panoptes-operator-sdk", "panoptes-op-letterbox", "panoptes-op-resize",
    "panoptes-op-normalize", "panoptes-op-colorconvert", "panoptes-op-crop",
    "panoptes-op-jpeg", "panoptes-op-onnx", "panoptes-op-misbehave",
]
GPU = "panoptes/cuda,panoptes/tensorrt,panoptes/openvino"
COMMANDS = [
    ["cargo", "clippy", "--release", "--locked", "--all-targets"],
    ["cargo", "clippy", "--release", "--locked", "--workspace", "--all-targets", "--features", GPU],
    ["cargo", "clippy", "--release", "--locked", "--target", "wasm32-wasip2"]
    + [arg for p in WASM_OPERATORS for arg in ("-p", p)],
    ["cargo", "test", "--release", "--locked", "--no-run"],
    # The binary the quickstart runs.
    ["cargo", "build", "--release", "--locked", "-p", "panoptes"],
]
# What setup.sh builds: the operators' components, without debug info (scripts/build-operators.sh).
OPERATORS = (
    ["cargo", "build", "--release", "--target", "wasm32-wasip2"]
    + [arg for p in WASM_OPERATORS[1:] for arg in ("-p", p)],
    {"CARGO_PROFILE_RELEASE_DEBUG": "false", "CARGO_PROFILE_RELEASE_STRIP": "true"},
)
HASH = re.compile(r"-([0-9a-f]{16})(?:$|[._])")


def unit_hashes():
    keep = set()
    for cmd, env in [(c, {}) for c in COMMANDS] + [OPERATORS]:
        out = subprocess.run(cmd + ["--message-format", "json"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, env={**os.environ, **env})
        if out.returncode != 0:
            sys.exit(f"prune-target: {' '.join(cmd)} failed; nothing removed")
        for line in out.stdout.splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            paths = list(msg.get("filenames") or [])
            if msg.get("executable"):
                paths.append(msg["executable"])
            if msg.get("out_dir"):
                paths.append(os.path.dirname(msg["out_dir"]))
            for p in paths:
                m = HASH.search(os.path.basename(p))
                if m:
                    keep.add(m.group(1))
    return keep


def size(path):
    if os.path.isdir(path) and not os.path.islink(path):
        return sum(size(os.path.join(path, e)) for e in os.listdir(path))
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def main():
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    keep = unit_hashes()
    if len(keep) < 50:
        sys.exit(f"prune-target: only {len(keep)} units reported; nothing removed")
    freed = removed = 0
    for profile_dir in [os.path.join(target, "release"),
                        os.path.join(target, "wasm32-wasip2", "release")]:
        for sub in ("deps", "build", ".fingerprint"):
            d = os.path.join(profile_dir, sub)
            if not os.path.isdir(d):
                continue
            for entry in os.listdir(d):
                m = HASH.search(entry)
                if not m or m.group(1) in keep:
                    continue
                path = os.path.join(d, entry)
                freed += size(path)
                removed += 1
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.remove(path)
    print(f"prune-target: kept {len(keep)} units, removed {removed} stale entries "
          f"({freed / 2**30:.2f} GiB); target dir now {size(target) / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
