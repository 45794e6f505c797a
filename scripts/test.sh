#!/usr/bin/env bash
# Sets everything up (idempotent), checks formatting and lints, and runs the whole test suite.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
# shellcheck disable=SC1091
source "${PANOPTES_HOME:-$HOME/.cache/panoptes}/env.sh"
cd "$root"
echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --release --locked --all-targets -- -D warnings
echo "==> cargo clippy with the GPU execution providers (they compile; nothing here can run them)"
cargo clippy --release --locked --workspace --all-targets --features panoptes/cuda,panoptes/tensorrt,panoptes/openvino -- -D warnings
echo "==> cargo clippy for the Wasm operators (wasm32-wasip2)"
cargo clippy --release --locked --target wasm32-wasip2 -p panoptes-operator-sdk \
    -p panoptes-op-letterbox -p panoptes-op-resize -p panoptes-op-normalize \
    -p panoptes-op-colorconvert -p panoptes-op-crop -p panoptes-op-jpeg -p panoptes-op-onnx \
    -p panoptes-op-misbehave -p panoptes-op-zonefilter \
    -p panoptes-operator-sdk-stateful -p panoptes-op-tally -- -D warnings
echo "==> cargo test"
cargo test --release --locked
