#!/usr/bin/env bash
# Sets everything up (idempotent) and runs the quickstart topology with its own local nats-server.
# Extra arguments go to `panoptes run` (e.g. --nats nats://host:4222).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
# shellcheck disable=SC1091
source "${PANOPTES_HOME:-$HOME/.cache/panoptes}/env.sh"
cd "$root"
exec cargo run --release --locked -p panoptes -- run topologies/quickstart.yaml "$@"
