#!/usr/bin/env bash
# Runs COMMAND [ARG...] and fails when it leaves a mount behind (scripts/test.sh runs the
# test suite through it).
#
# Which mounts count: only those COMMAND could have made. As root, COMMAND runs in a
# mount namespace of its own (`unshare --mount --propagation private`): every mount a
# test makes (overlay, FUSE, tmpfs, bind; below the harness's temp roots or anywhere
# else) is made there, and no mount made outside it after it started (a second test run
# on this machine, a benchmark, the admin) enters it. So the namespace's table before and
# after COMMAND differs exactly by the mounts COMMAND left, of any fstype. A leftover is
# also gone from the machine once COMMAND's processes have exited (the namespace dies
# with them), so a failed run does not break the next one.
#
# Without root (or where unshare is refused, e.g. a container without CAP_SYS_ADMIN)
# there is no namespace: the check falls back to the machine's table, restricted to
# mounts below the roots the tests use ($TMPDIR or /tmp, /var/tmp, this checkout's
# target/); a mount made there by someone else during the run is then reported too.
#
# Exit: COMMAND's status when it failed (leftovers are still listed), else 1 when it
# left mounts (listed on stderr: mount point, fstype, source), else 0.
# Usage: scripts/no-mount-leaks.sh COMMAND [ARG...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ "${1:-}" = --in-namespace ]; then
  shift
  scope=namespace
elif [ "$(id -u)" = 0 ] && unshare --mount --propagation private true 2>/dev/null; then
  # The marker is an argument, not an environment variable, so a nested use (a test of
  # this script run by the suite) makes its own namespace too.
  exec unshare --mount --propagation private "$here/no-mount-leaks.sh" --in-namespace "$@"
else
  scope=paths
fi
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 2; }

# Mount point, fstype and source of each mount (mountinfo fields 5, and the two after
# the " - " separator), sorted; in `paths` scope only those below the tests' roots.
roots=("${TMPDIR:-/tmp}" /tmp /var/tmp "$(cd "$here/.." && pwd)/target")
snapshot() {
  awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { print $5 " " $(i + 1) " " $(i + 2); break } }' \
    /proc/self/mountinfo |
    if [ "$scope" = paths ]; then
      while read -r point rest; do
        for r in "${roots[@]}"; do
          case "$point/" in "${r%/}"/*) echo "$point $rest"; break ;; esac
        done
      done
    else
      cat
    fi | sort
}

before=$(snapshot)
set +e
"$@"
rc=$?
set -e
after=$(snapshot)
left=$(comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | grep . || true)
if [ -n "$left" ]; then
  printf '%s\n' "$left" >&2
  echo "no-mount-leaks.sh: the command left the mounts above behind ($scope scope)" >&2
  [ "$rc" -ne 0 ] || rc=1
fi
exit "$rc"
