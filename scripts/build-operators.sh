#!/usr/bin/env bash
# Builds every Wasm operator component (release, wasm32-wasip2) and copies each one to
# operators/dist/<name>.wasm, where the host and its tests look for them. Safe to re-run.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

target_dir="${CARGO_TARGET_DIR:-target}"
# cargo resolves a relative CARGO_TARGET_DIR against the working directory, which is the repo root.
case "$target_dir" in
    /*) ;;
    *) target_dir="$repo_root/$target_dir" ;;
esac
export CARGO_TARGET_DIR="$target_dir"

# Operator crates: package name -> artifact name (the cdylib file stem) -> dist name.
# Add new operators here.
operators=(
    "panoptes-op-letterbox:panoptes_op_letterbox:letterbox"
    "panoptes-op-resize:panoptes_op_resize:resize"
    "panoptes-op-normalize:panoptes_op_normalize:normalize"
    "panoptes-op-colorconvert:panoptes_op_colorconvert:colorconvert"
    "panoptes-op-crop:panoptes_op_crop:crop"
    "panoptes-op-jpeg:panoptes_op_jpeg:jpeg"
    "panoptes-op-onnx:panoptes_op_onnx:onnx"
    # Test fixture for fault isolation and sandbox tests; not meant for topologies.
    "panoptes-op-misbehave:panoptes_op_misbehave:misbehave"
)

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo "error: the wasm32-wasip2 target is not installed; run: rustup target add wasm32-wasip2" >&2
    exit 1
fi

packages=()
for op in "${operators[@]}"; do
    packages+=(-p "${op%%:*}")
done

# No debug info in shipped operators: it triples the module size, and every load hashes the file.
CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=true \
    cargo build --release --target wasm32-wasip2 "${packages[@]}"

mkdir -p operators/dist

# A second build of the test fixture, told apart by its label, for the hot-reload tests. Built
# before the final build of the normal one so both end up in dist with the right content.
CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=true PANOPTES_FIXTURE_TAG=v2 \
    cargo build --release --target wasm32-wasip2 -p panoptes-op-misbehave
cp "$target_dir/wasm32-wasip2/release/panoptes_op_misbehave.wasm" "operators/dist/.misbehave-v2.wasm.tmp"
mv -f "operators/dist/.misbehave-v2.wasm.tmp" "operators/dist/misbehave-v2.wasm"
echo "operators/dist/misbehave-v2.wasm ($(wc -c <"operators/dist/misbehave-v2.wasm") bytes)"
CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=true \
    cargo build --release --target wasm32-wasip2 -p panoptes-op-misbehave

for op in "${operators[@]}"; do
    IFS=: read -r package artifact name <<<"$op"
    src="$target_dir/wasm32-wasip2/release/$artifact.wasm"
    if [[ ! -f "$src" ]]; then
        echo "error: $package built but $src is missing" >&2
        exit 1
    fi
    # Copy through a temp file so a concurrent reader never sees a half-written module.
    cp "$src" "operators/dist/.$name.wasm.tmp"
    mv -f "operators/dist/.$name.wasm.tmp" "operators/dist/$name.wasm"
    echo "operators/dist/$name.wasm ($(wc -c <"operators/dist/$name.wasm") bytes)"
done
