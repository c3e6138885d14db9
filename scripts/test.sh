#!/usr/bin/env bash
# Runs the whole test suite the way CI does: installs what the tests need (busybox-static),
# builds the layerctl binary the end-to-end tests run, then `cargo test --workspace`.
# Privileged tests (root, overlayfs) skip when they cannot run, unless
# LAYERCTL_REQUIRE_PRIVILEGED=1, which makes them fail instead (CI sets it).
# Afterwards no mount of the tests may be left in /proc/self/mountinfo.
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
before=$(mktemp); after=$(mktemp); trap 'rm -f "$before" "$after"' EXIT
mounts() { awk '{print $5}' /proc/self/mountinfo | grep -E 'overlay|fuse|layerctl' | sort || true; }
mounts > "$before"
cargo build -p layerctl
cargo test --workspace "$@"
mounts > "$after"
if comm -13 "$before" "$after" | grep .; then
  echo "test.sh: the tests left the mounts above behind" >&2
  exit 1
fi
echo "test.sh: ok (LAYERCTL_REQUIRE_PRIVILEGED=$LAYERCTL_REQUIRE_PRIVILEGED)"
