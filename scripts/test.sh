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
echo "==> cargo test"
cargo test --release --locked
