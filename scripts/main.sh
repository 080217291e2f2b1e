#!/usr/bin/env bash
# The main job, end to end on this machine. For now (foundation): start a
# private containerd, drive the real containerd-shim-runc-v2 with this
# project's ttrpc client, and forward an event into containerd.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node --test --test-reporter=spec dist/test/e2e/ttrpc-conformance.test.js
