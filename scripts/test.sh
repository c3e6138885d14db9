#!/usr/bin/env bash
# Runs the whole test suite the way CI does: installs what the tests need (busybox-static),
# then `cargo test --workspace` (which builds the layerctl binary the end-to-end tests run:
# layerctl-tests' own src/bin/layerctl-e2e.rs).
# Privileged tests (root, overlayfs) skip when they cannot run, unless
# LAYERCTL_REQUIRE_PRIVILEGED=1, which makes them fail instead (CI sets it).
# Afterwards no mount of the tests may be left: scripts/no-mount-leaks.sh runs the build and
# the tests in a mount namespace of their own (as root) and compares its table before and
# after, so only this run's mounts count (another run or a benchmark on this machine does not).
# Usage: ./scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
# busybox-static: the busybox fixture; zstd and GNU tar: the fidelity test checks its
# hand-made inputs with the real tools; fonts-dejavu-core: the font `layerctl bench`
# draws its PNG chart text with (the bench test checks the chart); skopeo, umoci,
# containers-storage: the save test has real clients read its archives; runc: the
# `run` test's external OCI runtime.
need=()
for p in busybox-static zstd tar fonts-dejavu-core skopeo umoci containers-storage runc; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ "$(id -u)" = 0 ] && [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
export LAYERCTL_REQUIRE_PRIVILEGED=${LAYERCTL_REQUIRE_PRIVILEGED:-0}
scripts/no-mount-leaks.sh cargo test --workspace "$@"
echo "test.sh: ok (LAYERCTL_REQUIRE_PRIVILEGED=$LAYERCTL_REQUIRE_PRIVILEGED)"
