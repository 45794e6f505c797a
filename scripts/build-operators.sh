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
    "panoptes-op-zonefilter:panoptes_op_zonefilter:zonefilter"
    "panoptes-op-tally:panoptes_op_tally:tally"
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

# Builds `out` with the command after `--` unless its stamp says `want` was built already.
# The command writes to $tmp; the result is moved over `out` only when it succeeds.
build_if_changed() {
    local out="$1" want="$2" stamp
    shift 3
    stamp="$(dirname "$out")/.$(basename "$out" .wasm).stamp"
    if [[ -f "$out" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return
    fi
    tmp="$(dirname "$out")/.$(basename "$out").tmp"
    "$@"
    mv -f "$tmp" "$out"
    echo "$want" >"$stamp"
    echo "$out ($(wc -c <"$out") bytes)"
}

# Python operators, through componentize-py (installed by scripts/setup.sh): the same build as
# `panoptes operator build` (cli/src/operator_build.rs), done here because the CLI is not built
# yet. Each is rebuilt only when its source, the SDK or the WIT changed (about 5 s each).
python_operators=(
    # Test fixture: the Rust misbehave's faults, for the sandbox tests.
    "operators/python/fixtures/misbehave.py:misbehave-py"
    "operators/python/examples/zone_filter.py:zone_filter"
    "operators/python/examples/plate_text.py:plate_text"
    "operators/python/examples/crowd_alert.py:crowd_alert"
    "operators/python/examples/tally.py:tally-py"
)
componentize="${PANOPTES_COMPONENTIZE_PY:-${PANOPTES_HOME:-$HOME/.cache/panoptes}/venv/bin/componentize-py}"
if [[ ! -x "$componentize" ]]; then
    echo "error: $componentize is missing: run scripts/setup.sh (it installs componentize-py)" >&2
    exit 1
fi
py_digest=$(cat operators/wit/operator.wit operators/wit/deps/wasi-nn/wasi-nn.wit operators/wit-stateful/operator.wit \
    operators/python/panoptes_operator/*.py "$componentize" | sha256sum | cut -c1-16)
componentize_py() {
    local source="$1" work
    work=$(mktemp -d)
    printf 'import panoptes_operator._world as _world\nimport %s as _operator\n\nWitWorld = _world.world_for(_operator)\n' \
        "$(basename "$source" .py)" >"$work/panoptes_entry.py"
    # A class that defines snapshot keeps per-camera state: the stateful world (0.2.0).
    local wit=operators/wit world=operator
    if grep -q '^[[:space:]]*def snapshot(' "$source"; then
        wit=operators/wit-stateful world=stateful-operator
    fi
    "$componentize" -d "$wit" -w "$world" componentize \
        -p operators/python -p "$(dirname "$source")" -p "$work" panoptes_entry -o "$tmp" >/dev/null
    rm -rf "$work"
}
for op in "${python_operators[@]}"; do
    IFS=: read -r source name <<<"$op"
    build_if_changed "operators/dist/$name.wasm" "$py_digest $(sha256sum "$source" | cut -c1-16)" \
        -- componentize_py "$source"
done

# JavaScript operators, through componentize-js (installed by scripts/setup.sh): bundled with
# the SDK by operators/js/bundle.mjs, as `panoptes operator build` does.
js_operators=(
    "operators/js/fixtures/misbehave.js:misbehave-js"
    "operators/js/examples/zone_filter.js:zone_filter-js"
)
componentize_js="${PANOPTES_COMPONENTIZE_JS:-${PANOPTES_HOME:-$HOME/.cache/panoptes}/node/node_modules/.bin/componentize-js}"
if [[ ! -x "$componentize_js" ]]; then
    echo "error: $componentize_js is missing: run scripts/setup.sh (it installs componentize-js)" >&2
    exit 1
fi
js_digest=$(cat operators/wit/operator.wit operators/js/panoptes_operator.js operators/js/bundle.mjs \
    operators/js/package-lock.json | sha256sum | cut -c1-16)
componentize_js() {
    local source="$1" work
    work=$(mktemp -d)
    node operators/js/bundle.mjs operators/js/panoptes_operator.js "$source" "$work/bundle.js"
    "$componentize_js" "$work/bundle.js" --wit operators/wit -n operator -d http -d fetch-event \
        -o "$tmp" >/dev/null
    rm -rf "$work"
}
for op in "${js_operators[@]}"; do
    IFS=: read -r source name <<<"$op"
    build_if_changed "operators/dist/$name.wasm" "$js_digest $(sha256sum "$source" | cut -c1-16)" \
        -- componentize_js "$source"
done
