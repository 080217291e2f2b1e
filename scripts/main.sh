#!/usr/bin/env bash
# The main job, end to end on this machine: install what is missing, start a
# private containerd with runtime io.containerd.kata.v2, import a locally
# built busybox image, run a container in its own VM and print its output.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node dist/tools/main-job.js
