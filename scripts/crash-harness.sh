#!/usr/bin/env bash
# Long mode of the crash harness (tests/tests/crash_harness.rs): SIGKILLs layerctl at
# random moments during import, create, commit, rm, rmi and gc on every driver, then
# checks (repairing if needed) and verifies every committed image's tree.
#
#   scripts/crash-harness.sh [KILLS_PER_DRIVER] [SEED]
#
# Defaults: 70 kills per driver (210 on vfs + overlay2 + aufs), seed 1, larger images
# (LAYERCTL_CRASH_SCALE=10, 300 files in the base layer). Other knobs pass through the
# environment: LAYERCTL_CRASH_DRIVERS=vfs,overlay2  LAYERCTL_CRASH_SYNC=filesystem.
# Needs root (mounts). The summary lines are `[driver] seed S: N kills {...}`.
set -euo pipefail
cd "$(dirname "$0")/.."
export LAYERCTL_CRASH_KILLS="${1:-70}"
export LAYERCTL_CRASH_SEED="${2:-1}"
export LAYERCTL_CRASH_SCALE="${LAYERCTL_CRASH_SCALE:-10}"
set +e
cargo test -p layerctl-tests --test crash_harness -- --nocapture 2>&1 \
  | tee "${TMPDIR:-/tmp}/crash-harness-${LAYERCTL_CRASH_SEED}.log" \
  | grep -E '^\[[a-z0-9]+\] seed|^crash harness|^test result|panicked|FAILED'
rc=${PIPESTATUS[0]}
exit "$rc"
